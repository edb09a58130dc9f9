"""What the edge does not cost per request (issue 22): structural, not timed."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.http.api import request_id_of
from gateway.http.schema import MODELLED, needs
from gateway.observe.access_log import valid_request_id
from gateway.security.keys import KeyRing, Tenant
from regions.request import Kind
from routing.capabilities import HARMLESS_FIELDS, STRUCTURED_FIELDS


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The pairs the key ring handed to compare_digest."""
    pairs: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        pairs.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # read at call time
    return pairs


def test_a_key_is_checked_by_one_comparison_however_many_keys_the_ring_holds(
    compared: list[tuple[str, str]],
) -> None:
    ring = KeyRing([(_digest(f"sk-{i}"), Tenant(f"t{i}")) for i in range(50)])
    found = ring.check("Bearer sk-49")
    assert found is not None and found[0].name == "t49"
    assert compared == [(_digest("sk-49"), _digest("sk-49"))]


def test_an_unknown_key_is_refused_without_comparing_it_to_every_key(
    compared: list[tuple[str, str]],
) -> None:
    ring = KeyRing([(_digest(f"sk-{i}"), Tenant(f"t{i}")) for i in range(50)])
    assert ring.check("Bearer sk-unknown") is None
    assert len(compared) <= 1
    assert ring.check("Bearer sk-7") is not None


class _Recording(dict[str, Any]):
    """A JSON object that records the fields looked up in it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.append(key)
        return super().get(key, default)


def test_needs_of_a_plain_body_looks_up_none_of_the_fields_it_lacks() -> None:
    # The common request: only modelled fields, so none of the capability checks of
    # the others (tools, response_format, logprobs, vLLM's guided_*...) is run.
    body = _Recording(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": 2,
        }
    )
    assert needs(body, Kind.CHAT) == {}
    assert set(body.asked) <= MODELLED


def test_the_fields_needs_skips_for_a_plain_body_are_none_of_the_plain_ones() -> None:
    # Each field a capability check reads alone asks something: so a body whose fields
    # are all modelled or harmless could not have asked anything through them.
    asking: dict[str, Any] = {
        "tools": [{"type": "function"}],
        "functions": [{"name": "f"}],
        "tool_choice": "auto",
        "function_call": "auto",
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        **{name: {} for name in STRUCTURED_FIELDS},
    }
    for name, value in asking.items():
        assert name not in MODELLED | HARMLESS_FIELDS
        assert needs({"model": "m", name: value}, Kind.CHAT), name


def test_a_request_id_is_32_hex_digits_made_without_a_uuid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_uuid() -> uuid.UUID:
        raise AssertionError("uuid4 on the request path")

    monkeypatch.setattr(uuid, "uuid4", no_uuid)
    request = make_mocked_request("POST", "/v1/chat/completions")
    ids = {request_id_of(request) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 and valid_request_id(i) for i in ids)
    given = make_mocked_request("POST", "/", headers={"x-request-id": "client-id-1"})
    assert request_id_of(given) == "client-id-1"
