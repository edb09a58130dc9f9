"""Active health checks and load scraping: one background task per gateway.

Every backend whose adapter can ``probe()`` is checked on a jittered interval
(so a fleet of gateways does not probe in lockstep); the verdict needs
consecutive passes or failures to flip (``failover.health_check``), and a
probe that also reports queue depth (vLLM's ``num_requests_waiting``) feeds
the router's load estimate.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

from failover.health import BackendHealth
from failover.health_check import HealthCheckPolicy, HealthState
from regions.provider import Probe, Provider
from regions.tasks import stop_tasks

log = logging.getLogger("meridian.probing")


class Prober:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        health: BackendHealth,
        policy: HealthCheckPolicy,
        rng: random.Random | None = None,
    ) -> None:
        self._providers = providers
        self._health = health
        self._policy = policy
        self._rng = rng or random.Random()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for name, provider in self._providers.items():
            if getattr(provider, "probe", None) is not None:
                self._tasks.append(asyncio.create_task(self._loop(name, provider)))

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks.clear()

    async def _loop(self, name: str, provider: Provider) -> None:
        state = HealthState(self._policy, self._rng)
        # Start at a random point of the interval so gateways spread out.
        await asyncio.sleep(self._rng.uniform(0, self._policy.interval_s))
        while True:
            result = await self.check(provider)
            if state.record(result.healthy):
                log.warning(
                    "backend %s is now %s", name, "healthy" if state.healthy else "unhealthy"
                )
            self._health.probed(name, state.healthy, result.queue_depth, passed=result.healthy)
            await asyncio.sleep(state.next_delay())

    async def check(self, provider: Provider) -> Probe:
        try:
            async with asyncio.timeout(self._policy.timeout_s):
                return await provider.probe()
        except (TimeoutError, OSError):
            return Probe(healthy=False)
