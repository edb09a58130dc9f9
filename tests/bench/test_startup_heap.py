"""A serving gateway keeps its start-up heap out of the cyclic collector's way."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Iterator

import pytest

from gateway.app.server import Gateway
from tests.conftest import EmulatorFactory, gateway_config, wait_for


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process's own heap goes back to the collector


async def test_serving_freezes_what_start_up_made(
    emulators: EmulatorFactory, unfrozen: None
) -> None:
    em = await emulators()
    gw = Gateway(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    assert gc.get_freeze_count() == 0
    serving = asyncio.create_task(gw.serve_until_signalled())
    try:
        await wait_for(lambda: gc.get_freeze_count() > 0 or serving.done(), timeout=20.0)
        assert gw.http_url  # frozen once it listens
        assert gc.get_freeze_count() > 10_000  # the imports and the runtime, not a handful
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler serve_until_signalled installed
        await asyncio.wait_for(serving, 20.0)
