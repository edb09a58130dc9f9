"""Hot reload: re-read the config file and apply it as one new snapshot.

SIGHUP, ``POST /admin/v1/reload`` and ``meridian config reload`` all call
:meth:`Reloader.reload`:

* the file is validated whole (``gateway.config.check.problems``); a config
  with any problem is refused, logged, and nothing changes;
* a valid one is applied in one step on the event loop: ``runtime.config``,
  the key ring (tenants and keys), the providers dict and the routing
  snapshot (backends, models, prices, regions: a new config base for the
  snapshot composer, ``gateway.control.snapshots``, which keeps the
  discovered backends and the store's overlay, so the store's splits, dials
  and drains keep applying) are swapped together; tenant limits change for new requests;
* new backends get an adapter and join; a removed backend (or the old
  adapter of one whose address or provider changed) takes no new streams,
  streams already running on it finish, then it closes. Executions keep the
  providers dict they started with, so no stream in flight is cut;
* sections bound to listeners or process state (``listen``, ``store``,
  ``limits``, ``timeouts``, ``failover``, ``shutdown``, ``discovery``,
  ``replication``) are not applied: the answer names them as needing a
  restart;
* each applied reload is a store commit (action ``config.reload``), so the
  audit log records who reloaded and what changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from failover.health_check import HealthCheckPolicy
from failover.probing import Prober
from gateway.app.runtime import Runtime, backend_specs, keyring_from, snapshot_from
from gateway.config.check import diff, problems, summary
from gateway.config.model import Config, ConfigError
from gateway.security.admin_tokens import admin_tokens_from
from regions.discovery import TrackedProvider
from regions.provider import Provider
from regions.registry import build_provider
from regions.tasks import BackgroundTasks

if TYPE_CHECKING:
    pass

log = logging.getLogger("meridian.reload")

RESTART_SECTIONS = (
    "listen",
    "store",
    "limits",
    "timeouts",
    "failover",
    "shutdown",
    "discovery",
    "replication",
)


class _Counted(TrackedProvider):
    """A static backend's adapter, counting its streams so a reload that removes it
    can wait for them; anything else an adapter offers is the adapter's own."""

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


@dataclass
class Outcome:
    applied: bool
    problems: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    revision: int | None = None

    def body(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "problems": self.problems,
            "changes": self.changes,
            "restart_needed": self.restart_needed,
            "revision": self.revision,
        }


class Reloader:
    """One gateway's reloads; ``Gateway.start`` makes it when it knows its config file."""

    def __init__(
        self,
        runtime: Runtime,
        path: str,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.rt = runtime
        self.path = path
        self._environ = os.environ if environ is None else environ
        self._lock = asyncio.Lock()
        self._tasks = BackgroundTasks()
        self._retiring: dict[str, Provider] = {}
        # Static adapters counted, so a removed one can wait for its streams to finish.
        static = {s.name for s in backend_specs(runtime.config)}
        runtime.providers = {
            n: p if n not in static or isinstance(p, TrackedProvider) else _Counted(n, p)
            for n, p in runtime.providers.items()
        }

    async def reload(self, actor: str = "reload") -> Outcome:
        async with self._lock:  # two reloads at once would interleave their swaps
            outcome = await self._reload(actor)
        if outcome.applied:
            log.info(
                "config reload by %s: %s%s",
                actor,
                "; ".join(outcome.changes) or "no change",
                f" (not applied, need a restart: {', '.join(outcome.restart_needed)})"
                if outcome.restart_needed
                else "",
            )
        else:
            log.error(
                "config reload by %s refused, nothing changed: %s",
                actor,
                "; ".join(outcome.problems),
            )
        return outcome

    async def _reload(self, actor: str) -> Outcome:
        new, found = problems(self.path)
        if new is None:
            return Outcome(False, problems=found)
        try:
            keyring = keyring_from(new, self._environ)
            admin_digest = new.admin.token.digests(self._environ) if new.admin.token else None
            admin_tokens = admin_tokens_from(new.admin, self._environ)
        except ConfigError as exc:
            return Outcome(False, problems=[f"{self.path}: {exc}"])
        old = self.rt.config
        restart = [s for s in RESTART_SECTIONS if getattr(old, s) != getattr(new, s)]
        if self.rt.limiter is None and any(t.limits is not None for t in new.tenants):
            restart.append("tenant limits (no tenant had limits at start)")
        changes = diff(summary(old), summary(new))
        applied = new.model_copy(update={s: getattr(old, s) for s in RESTART_SECTIONS})
        old_specs = {s.name: s for s in backend_specs(old)}
        new_specs = {s.name: s for s in backend_specs(applied)}
        changed = [n for n, s in new_specs.items() if old_specs.get(n) not in (None, s)]
        removed = [n for n in old_specs if n not in new_specs] + changed
        added = [n for n in new_specs if n not in old_specs] + changed
        built: dict[str, Provider] = {}
        pool = self.rt.pool
        assert pool is not None, "build_runtime always makes the pool"
        try:
            for name in added:
                built[name] = _Counted(name, build_provider(new_specs[name], pool))
        except LookupError as exc:
            for provider in built.values():
                await provider.close()
            return Outcome(False, problems=[f"{self.path}: backend {name}: {exc}"])
        # One step, no await: a request sees the old world or the new one.
        rt = self.rt
        retiring = {n: rt.providers[n] for n in removed if n in rt.providers}
        providers = {n: p for n, p in rt.providers.items() if n not in retiring}
        providers.update(built)
        rt.health.track(new_specs[n] for n in added)
        rt.config = applied
        rt.keyring = keyring
        rt.admin_digest = admin_digest
        rt.admin_tokens = admin_tokens
        rt.providers = providers
        rt.snapshots.config(snapshot_from(applied))
        self._limits(applied)
        for name, provider in retiring.items():
            self._tasks.spawn(self._retire(name, provider))
        await self._reprobe(providers)
        revision = await self._audit(actor, changes, restart)
        return Outcome(True, changes=changes, restart_needed=restart, revision=revision)

    def _limits(self, config: Config) -> None:
        """New quotas for new requests; tickets already issued settle as before."""
        limiter = self.rt.limiter
        if limiter is None:
            return  # limits were off at start; turning them on needs a restart
        from gateway.control.limits import TenantLimiter
        from gateway.store.lease import TenantShare

        fresh = TenantLimiter.from_config(config, limiter._store, limiter._metrics, lambda: False)
        quotas = {} if fresh is None else fresh._quotas
        limiter._quotas = dict(quotas)
        for name, quota in quotas.items():
            share = limiter._shares.get(name)
            if share is None or share.quota != quota:
                limiter._shares[name] = TenantShare(name, quota, limiter.settings)

    async def _reprobe(self, providers: dict[str, Provider]) -> None:
        """Active health checks over the new static backends (the old prober's dict is stale)."""
        hc = self.rt.config.failover.health_checks
        if self.rt.prober is None or not hc.enabled:
            return
        await self.rt.prober.stop()
        static = {s.name for s in backend_specs(self.rt.config)}
        self.rt.prober = Prober(
            {n: p for n, p in providers.items() if n in static},
            self.rt.health,
            HealthCheckPolicy(
                interval_s=hc.interval_s,
                timeout_s=hc.timeout_s,
                unhealthy_threshold=hc.unhealthy_threshold,
                healthy_threshold=hc.healthy_threshold,
            ),
        )
        self.rt.prober.start()

    async def _retire(self, name: str, provider: Provider) -> None:
        self._retiring[name] = provider
        try:
            await self._wait_and_close(name, provider)
        finally:
            self._retiring.pop(name, None)

    async def _wait_and_close(self, name: str, provider: Provider) -> None:
        if isinstance(provider, TrackedProvider):
            left = await provider.retire(self.rt.policy.timeouts.total + 1.0)
        else:  # not one of ours (discovery's own retire it); never cut a stream
            return
        if left:
            log.warning("config reload: %s closed with %d streams still running", name, left)
        else:
            log.info("config reload: %s retired, its streams finished", name)

    async def _audit(self, actor: str, changes: list[str], restart: list[str]) -> int | None:
        control = self.rt.control
        if control is None:
            return None
        note = "; ".join(changes) or "no change"
        if restart:
            note += f" (need a restart: {', '.join(restart)})"
        try:
            commit = await control.write(
                {"reload/last": {"at": time.time(), "changes": len(changes)}},
                actor=actor,
                action="config.reload",
                note=note[:1000],
            )
        except Exception as exc:  # the reload is applied; a store outage only loses the entry
            log.warning("config reload: not in the audit log: %s", exc)
            return None
        return int(commit.revision)

    async def stop(self) -> None:
        """Close the adapters still retiring (Gateway.stop: streams have ended by then)."""
        retiring = list(self._retiring.values())  # cancelled retirements forget theirs
        await self._tasks.stop()
        for provider in retiring:
            await provider.close()


_RELOADERS: dict[int, Reloader] = {}

# False in `serve --workers N` workers: a POST /admin/v1/reload would reach one
# of them; SIGHUP to the parent, which forwards it, reaches every worker.
ADMIN_RELOAD = True


def register(reloader: Reloader) -> None:
    _RELOADERS[id(reloader.rt)] = reloader


def unregister(runtime: Runtime) -> None:
    _RELOADERS.pop(id(runtime), None)


def reloader_of(runtime: Runtime) -> Reloader | None:
    return _RELOADERS.get(id(runtime))
