"""Vertex behaviour checked against Google's own client libraries.

google-auth's ``AuthorizedSession`` is the reference for what a 401 means: it
refreshes the credentials and sends the request again. Run against the
emulator, it must see the same 401 the adapter sees, and recover the same way.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.auth.credentials import Credentials
from google.auth.transport.requests import AuthorizedSession

from emulators.vertex import VertexEmulator, VertexEmulatorConfig

PATH = "/v1beta1/projects/proj/locations/europe-west4/endpoints/1234567890/chat/completions"
CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


class Rotating(Credentials):
    """Tokens tok-1, tok-2, ... one per refresh, each valid for an hour locally."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = f"tok-{self.refreshes}"
        self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + (
            datetime.timedelta(hours=1)
        )


@pytest.fixture
async def emulator() -> AsyncIterator[VertexEmulator]:
    emu = VertexEmulator(VertexEmulatorConfig(tokens=("tok-2",)))
    await emu.start()
    yield emu
    await emu.stop()


async def test_authorized_session_refreshes_on_the_emulators_401(emulator: VertexEmulator) -> None:
    creds = Rotating()
    creds.refresh(None)  # tok-1: fresh locally, revoked at the server

    def call() -> Any:
        with AuthorizedSession(creds) as session:
            return session.post(emulator.url + PATH, json=CHAT, timeout=10)

    resp = await asyncio.to_thread(call)
    assert resp.status_code == 200
    assert creds.refreshes == 2 and emulator.stats.requests == 2


async def test_401_bodies_are_googles(emulator: VertexEmulator) -> None:
    def call(headers: dict[str, str]) -> Any:
        import requests

        return requests.post(emulator.url + PATH, json=CHAT, headers=headers, timeout=10)

    missing = (await asyncio.to_thread(call, {})).json()["error"]
    assert missing["status"] == "UNAUTHENTICATED" and missing["code"] == 401
    assert missing["message"].startswith("Request is missing required authentication credential.")
    assert missing["message"].endswith(
        "See https://developers.google.com/identity/sign-in/web/devconsole-project."
    )
    refused = (await asyncio.to_thread(call, {"Authorization": "Bearer tok-1"})).json()["error"]
    assert refused["message"].startswith("Request had invalid authentication credentials.")
