from __future__ import annotations

import asyncio

import pytest

from failover.watchdog import Watchdog
from regions.errors import BackendError, FailureClass


def dog(first: float = 10.0, idle: float = 10.0, total: float = 100.0) -> Watchdog:
    loop = asyncio.get_running_loop()
    return Watchdog(first_token=first, idle=idle, total_deadline=loop.time() + total, loop=loop)


async def test_first_token_timeout_raises_timeout_failure() -> None:
    with pytest.raises(BackendError) as info, dog(first=0.05):
        await asyncio.Event().wait()
    assert info.value.failure is FailureClass.TIMEOUT
    assert "first-token" in info.value.message


async def test_idle_gap_after_first_token() -> None:
    with pytest.raises(BackendError, match="idle"), dog(first=0.01, idle=0.05) as w:
        w.first_token()
        for _ in range(5):  # progress keeps it alive past several idle periods
            await asyncio.sleep(0.02)
            w.progress()
        await asyncio.Event().wait()


async def test_paused_consumer_is_not_cut() -> None:
    with dog(first=0.01, idle=0.03) as w:
        w.first_token()
        w.pause()
        await asyncio.sleep(0.1)  # simulated slow client: longer than the idle timeout
        w.resume()


async def test_outer_cancellation_is_not_swallowed() -> None:
    async def guarded() -> None:
        with dog():
            await asyncio.Event().wait()

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
