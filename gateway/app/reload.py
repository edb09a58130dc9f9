"""Hot reload: re-read the config file and apply it as one new snapshot.

SIGHUP, ``POST /admin/v1/reload`` and ``meridian config reload`` all call
:meth:`Reloader.reload`:

* the file is validated whole (``gateway.config.check.problems``); a config
  with any problem is refused, logged, and nothing changes;
* a valid one is applied in one step on the event loop: the config,
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
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from failover.health import BackendHealth
from gateway.app.runtime import backend_specs, keyring_from, snapshot_from
from gateway.config.check import diff, problems, summary
from gateway.config.model import Config, ConfigError
from gateway.security.admin_tokens import AdminTokens, admin_tokens_from
from gateway.security.keys import KeyRing
from regions.discovery.tracked import TrackedProvider
from regions.inventory import BackendSpec
from regions.provider import Provider
from regions.registry import SessionPool, build_provider
from regions.tasks import BackgroundTasks
from routing.snapshot import RoutingSnapshot

if TYPE_CHECKING:
    from gateway.control.limits import TenantLimiter
    from gateway.control.plane import ControlPlane

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


@dataclass(frozen=True, slots=True)
class Applied:
    """What one reload swaps, together (``apply`` assigns it in one step)."""

    config: Config
    keyring: KeyRing
    admin_digest: str | None
    admin_tokens: AdminTokens
    providers: dict[str, Provider]


def counted(providers: Mapping[str, Provider], config: Config) -> dict[str, Provider]:
    """The static backends' adapters counted, so a reload that removes one can wait
    for its streams to finish (discovery's are tracked already)."""
    static = {s.name for s in backend_specs(config)}
    return {
        n: p if n not in static or isinstance(p, TrackedProvider) else _Counted(n, p)
        for n, p in providers.items()
    }


class Reloader:
    """One gateway's reloads; the composition root makes it (``gateway.app.build.reloader``)
    when the gateway knows its config file, giving it what a reload reads and swaps:
    the current config and providers, ``apply`` (config, keys and providers in one
    step) and ``snapshot`` (the snapshot composer's config base); the pool new
    adapters join, the health registry that tracks them, and, when configured, the
    tenant limiter, the active health checks' restart and the control plane's audit log."""

    def __init__(
        self,
        path: str,
        environ: Mapping[str, str] | None = None,
        *,
        config: Callable[[], Config],
        providers: Callable[[], Mapping[str, Provider]],
        apply: Callable[[Applied], None],
        snapshot: Callable[[RoutingSnapshot], object],
        pool: SessionPool,
        health: BackendHealth,
        retire_after_s: float,
        limiter: Callable[[], TenantLimiter | None] = lambda: None,
        reprobe: Callable[[Mapping[str, Provider]], Awaitable[None]] | None = None,
        control: Callable[[], ControlPlane | None] = lambda: None,
        track: Callable[[list[BackendSpec]], None] = lambda _added: None,
    ) -> None:
        self.path = path
        self._environ = os.environ if environ is None else environ
        self._config = config
        self._providers = providers
        self._apply = apply
        self._snapshot = snapshot
        self._pool = pool
        self._health = health
        self._retire_after_s = retire_after_s
        self._limiter = limiter
        self._reprobe = reprobe
        self._control = control
        self._track = track
        self._lock = asyncio.Lock()
        self._tasks = BackgroundTasks()
        self._retiring: dict[str, Provider] = {}

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
        old = self._config()
        restart = [s for s in RESTART_SECTIONS if getattr(old, s) != getattr(new, s)]
        if self._limiter() is None and any(t.limits is not None for t in new.tenants):
            restart.append("tenant limits (no tenant had limits at start)")
        changes = diff(summary(old), summary(new))
        applied = new.model_copy(update={s: getattr(old, s) for s in RESTART_SECTIONS})
        old_specs = {s.name: s for s in backend_specs(old)}
        new_specs = {s.name: s for s in backend_specs(applied)}
        changed = [n for n, s in new_specs.items() if old_specs.get(n) not in (None, s)]
        removed = [n for n in old_specs if n not in new_specs] + changed
        added = [n for n in new_specs if n not in old_specs] + changed
        built: dict[str, Provider] = {}
        try:
            for name in added:
                built[name] = _Counted(name, build_provider(new_specs[name], self._pool))
        except LookupError as exc:
            for provider in built.values():
                await provider.close()
            return Outcome(False, problems=[f"{self.path}: backend {name}: {exc}"])
        # One step, no await: a request sees the old world or the new one.
        current = self._providers()
        retiring = {n: current[n] for n in removed if n in current}
        providers = {n: p for n, p in current.items() if n not in retiring}
        providers.update(built)
        self._health.track(new_specs[n] for n in added)
        self._apply(Applied(applied, keyring, admin_digest, admin_tokens, providers))
        self._track([new_specs[n] for n in added])  # their series (and new models'), from the start
        self._snapshot(snapshot_from(applied))
        self._limits(applied)
        for name, provider in retiring.items():
            self._tasks.spawn(self._retire(name, provider))
        if not retiring:
            refreeze()  # the old config's objects (else once the retired adapters close)
        if self._reprobe is not None:  # the old checks' dict is stale
            static = {s.name for s in new_specs.values()}
            await self._reprobe({n: p for n, p in providers.items() if n in static})
        revision = await self._audit(actor, changes, restart)
        return Outcome(True, changes=changes, restart_needed=restart, revision=revision)

    def _limits(self, config: Config) -> None:
        """New quotas for new requests; tickets already issued settle as before."""
        limiter = self._limiter()
        if limiter is None:
            return  # limits were off at start; turning them on needs a restart
        from gateway.control.limits import TenantLimiter  # loaded with the limiter
        from gateway.store.lease import TenantShare

        fresh = TenantLimiter.from_config(config, limiter._store, limiter._metrics, lambda: False)
        quotas = {} if fresh is None else fresh._quotas
        limiter._quotas = dict(quotas)
        for name, quota in quotas.items():
            share = limiter._shares.get(name)
            if share is None or share.quota != quota:
                limiter._shares[name] = TenantShare(name, quota, limiter.settings)

    async def _retire(self, name: str, provider: Provider) -> None:
        self._retiring[name] = provider
        try:
            await self._wait_and_close(name, provider)
        finally:
            self._retiring.pop(name, None)
        if not self._retiring:
            refreeze()

    async def _wait_and_close(self, name: str, provider: Provider) -> None:
        if isinstance(provider, TrackedProvider):
            left = await provider.retire(self._retire_after_s)
        else:  # not one of ours (discovery's own retire it); never cut a stream
            return
        if left:
            log.warning("config reload: %s closed with %d streams still running", name, left)
        else:
            log.info("config reload: %s retired, its streams finished", name)

    async def _audit(self, actor: str, changes: list[str], restart: list[str]) -> int | None:
        control = self._control()
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


def register(runtime: object, reloader: Reloader) -> None:
    """``reloader`` is the one of ``runtime`` (the admin API finds it by its runtime)."""
    _RELOADERS[id(runtime)] = reloader


def unregister(runtime: object) -> None:
    _RELOADERS.pop(id(runtime), None)


def reloader_of(runtime: object) -> Reloader | None:
    return _RELOADERS.get(id(runtime))


def refreeze() -> None:
    """Collect what a reload left behind, then freeze again (``serve`` froze start-up).

    Frozen objects are never collected: an old config or adapter held in a
    reference cycle would stay for the life of the process, once per reload."""
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()
        gc.freeze()
