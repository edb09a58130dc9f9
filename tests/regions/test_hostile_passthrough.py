"""Pass-through forwards the answer, not whatever else the upstream wrote (issue 20, item 8).

Before: the model rewrite matched only compact ``"model":"…"`` (a backend
writing ``"model": "…"`` leaked its served name), and upstream ``event:``,
``id:`` and ``retry:`` lines and text after the finish reason reached clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import GLOBAL_KEY, MODEL, SERVED, GatewayFactory, gateway_config
from tests.hostile_backend import DONE, HostileBackend, Script, chunk, sse, usage_chunk

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}


@pytest.fixture
async def hostiles() -> AsyncIterator[list[HostileBackend]]:
    started: list[HostileBackend] = []
    yield started
    for backend in started:
        await backend.stop()


async def play(gateways: GatewayFactory, hostiles: list[HostileBackend], script: Script) -> bytes:
    hostile = HostileBackend(script)
    hostiles.append(hostile)
    await hostile.start()
    gw = await gateways(
        gateway_config(
            [("hostile", "aws:eu-west-1", "v1", hostile.url)],
            failover={"health_checks": {"enabled": False}, "hedge": False},
        )
    )
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status == 200
        return await resp.read()


def spaced(obj: Any) -> bytes:
    """JSON as a pretty-printing server writes it: spaces after every colon."""
    return b"data: " + orjson.dumps(obj).replace(b'":', b'" :  ') + b"\n\n"


def client_view(raw: bytes) -> tuple[str, list[str], set[str]]:
    text, finishes, models = "", [], set()
    assert raw.endswith(DONE)
    for event in raw.split(b"\n\n")[:-2]:
        assert event.startswith(b"data: {"), event  # nothing but data lines
        obj = orjson.loads(event[6:])
        models.add(obj["model"])
        for choice in obj["choices"]:
            text += (choice.get("delta") or {}).get("content") or ""
            if choice.get("finish_reason"):
                finishes.append(choice["finish_reason"])
    return text, finishes, models


async def test_a_spaced_model_member_is_rewritten(
    gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    events = [chunk("", role=True), chunk("Hello"), chunk(" there", "stop"), usage_chunk(3, 2)]
    raw = await play(gateways, hostiles, Script([*(spaced(e) for e in events), DONE]))
    assert SERVED.encode() not in raw
    assert client_view(raw) == ("Hello there", ["stop"], {MODEL})


async def test_whatever_model_name_the_upstream_writes_the_client_sees_its_own(
    gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    events = [chunk("Hi", "stop", model='internal/secret-7b\\"x'), usage_chunk(1, 1)]
    raw = await play(gateways, hostiles, Script([*(sse(e) for e in events), DONE]))
    assert b"secret" not in raw
    assert client_view(raw)[2] == {MODEL}


async def test_event_id_and_retry_lines_do_not_reach_the_client(
    gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    def framed(obj: Any, n: int) -> bytes:
        data = orjson.dumps(obj)
        return b"event: message\nid: %d\nretry: 1\ndata: " % n + data + b"\n\n"

    events = [chunk("", role=True), chunk("a"), chunk("b", "stop"), usage_chunk(1, 2)]
    script = [b"retry: 5\n\n", *(framed(e, i) for i, e in enumerate(events)), DONE]
    raw = await play(gateways, hostiles, Script(script))
    for line in raw.split(b"\n"):
        assert not line.startswith((b"event:", b"id:", b"retry:")), raw
    assert client_view(raw) == ("ab", ["stop"], {MODEL})


async def test_text_and_finishes_after_the_finish_reason_do_not_reach_the_client(
    gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    events = [
        chunk("", role=True),
        chunk("one"),
        chunk(" two", "stop"),
        chunk(" INJECTED"),
        chunk(" MORE", "length"),
        usage_chunk(3, 2),
        chunk(" AFTER-USAGE"),
    ]
    raw = await play(gateways, hostiles, Script([*(sse(e) for e in events), DONE]))
    assert b"INJECTED" not in raw and b"MORE" not in raw and b"AFTER" not in raw
    assert client_view(raw) == ("one two", ["stop"], {MODEL})


async def test_a_chunk_without_the_members_every_chunk_has_is_written_whole(
    gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    """Bare ``{"choices": [...]}`` chunks (no id, no model) forwarded as they are
    would give the client chunks without the stream's id and the model's name:
    the gateway writes them itself."""
    bare = [
        {"choices": [{"index": 0, "delta": {"content": "one"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": " two"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
    ]
    raw = await play(
        gateways, hostiles, Script([sse(chunk("", role=True)), *(sse(e) for e in bare), DONE])
    )
    assert client_view(raw) == ("one two", ["stop"], {MODEL})
    for event in raw.split(b"\n\n")[:-2]:
        obj = orjson.loads(event[6:])
        assert {"id", "object", "created", "model"} <= obj.keys(), obj
        assert obj["id"] == "chatcmpl-upstream"  # one id for the whole stream
