"""What the edge does not cost per request (issue 22): structural, not timed."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.security.keys import KeyRing, Tenant


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
