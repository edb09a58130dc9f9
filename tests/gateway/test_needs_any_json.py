"""``needs`` reads the raw body of every route, where only chat validates ``messages``:
any JSON there is ignored, never a 500 (found by test_hostile_clients, seed 1)."""

from __future__ import annotations

import pytest

from gateway.http.schema import needs
from regions.request import Kind


@pytest.mark.parametrize(
    "messages",
    [[None], True, 7, "hi", [1, "x"], [{"role": "user", "content": [None, 3, "x"]}]],
)
def test_messages_of_any_shape_ask_for_nothing(messages: object) -> None:
    body = {"model": "m", "prompt": "hi", "messages": messages}
    assert needs(body, Kind.COMPLETION) == {}


def test_a_real_image_part_still_asks_for_vision() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
    assert needs(body, Kind.CHAT) == {"vision": "messages.0.content.0"}
