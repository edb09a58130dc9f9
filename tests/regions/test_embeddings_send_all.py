"""regions.embeddings.send_all: a translated batch's native requests, bounded, in order, all or nothing."""

from __future__ import annotations

import asyncio

import pytest

from regions.embeddings import SEND_CONCURRENCY, batches, send_all
from regions.errors import BackendError, FailureClass


async def test_answers_keep_the_order_of_the_bodies_not_of_their_arrival() -> None:
    release = {i: asyncio.Event() for i in range(3)}

    async def send(body: bytes) -> bytes:
        await release[int(body)].wait()
        return b"answer-" + body

    task = asyncio.ensure_future(send_all([b"0", b"1", b"2"], send))
    for i in (2, 0, 1):  # finish out of order
        release[i].set()
        await asyncio.sleep(0)
    assert await task == [b"answer-0", b"answer-1", b"answer-2"]


async def test_at_most_send_concurrency_in_flight() -> None:
    flying = 0
    most = 0
    gate = asyncio.Event()

    async def send(body: bytes) -> bytes:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        await gate.wait()
        flying -= 1
        return body

    task = asyncio.ensure_future(send_all([b"x"] * 20, send))
    for _ in range(1000):  # loop turns, not time: each lets the waiting sends start
        if flying == SEND_CONCURRENCY:
            break
        await asyncio.sleep(0)
    gate.set()
    assert len(await task) == 20
    assert most == SEND_CONCURRENCY


@pytest.mark.parametrize("failure", [BackendError(FailureClass.SERVER, "down"), ValueError("x")])
async def test_the_first_failure_cancels_the_rest_and_is_raised_alone(failure: Exception) -> None:
    cancelled: list[bytes] = []
    never = asyncio.Event()

    async def send(body: bytes) -> bytes:
        if body == b"bad":
            raise failure
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(body)
            raise
        return body

    with pytest.raises(type(failure)) as caught:
        await send_all([b"a", b"bad", b"c"], send)
    assert caught.value is failure
    assert sorted(cancelled) == [b"a", b"c"]


def test_batches_respect_the_count_and_the_budget() -> None:
    assert batches(["aa", "b", "cccc", "d"], 2, len, 4) == [["aa", "b"], ["cccc"], ["d"]]
    assert batches(["x" * 9, "y"], 10, len, 4) == [["x" * 9], ["y"]]  # too big: alone
