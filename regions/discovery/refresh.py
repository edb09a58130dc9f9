"""The periodic refresher: sources in, one vetted inventory out.

Each round asks every source at once, then merges what they found:

1. a source that fails (``DiscoveryError``, or anything unexpected) keeps
   its **last good listing**, marked stale: an API outage never empties the
   inventory, it only freezes that source's part of it;
2. every address a source read from a cloud API passes the
   :class:`~regions.discovery.netpolicy.NetworkPolicy` (no SSRF through
   discovery), and every backend the :class:`~regions.discovery.base.Catalog`
   (configured regions, models, versions; static backend names are reserved);
3. two sources claiming one name: the first (in source order) wins.

The result goes to ``apply`` every round, changed or not, so the consumer
(``gateway.control.discovery``) owns the diff against what is live and can
retry what it could not take last time (a server not yet answering its
health check). Refusals are logged when they first appear and when they
clear, not every round.

Rounds are serialised: ``refresh()`` (tests, an admin trigger) and the
periodic loop never overlap. The loop's interval is jittered ±10% so a fleet
of gateways does not call the cloud APIs in lockstep.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from regions.discovery.base import Catalog, DiscoveryError, Found, Listing, Refused, Source
from regions.discovery.netpolicy import NetworkPolicy
from regions.tasks import stop_tasks

log = logging.getLogger("meridian.discovery")


@dataclass(frozen=True, slots=True)
class Inventory:
    """One round's outcome: the accepted backends (sorted by name), everything
    refused with its reason, and the sources serving a stale listing."""

    found: tuple[Found, ...] = ()
    refused: tuple[Refused, ...] = ()
    stale: tuple[str, ...] = ()
    at: float = 0.0


Apply = Callable[[Inventory], Awaitable[None]]


class Refresher:
    def __init__(
        self,
        sources: Sequence[Source],
        catalog: Catalog,
        policy: NetworkPolicy,
        apply: Apply,
        *,
        interval_s: float = 30.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = tuple(sources)
        self.catalog = catalog
        self.policy = policy
        self._apply = apply
        self.interval_s = interval_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._last: dict[str, Listing] = {}
        self._errors: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._refused: frozenset[Refused] = frozenset()
        self.inventory = Inventory()
        self.rounds = 0

    # -- one round -------------------------------------------------------------

    async def refresh(self) -> Inventory:
        async with self._lock:
            listings = await asyncio.gather(
                *(self._ask(s) for s in self.sources), return_exceptions=False
            )
            inventory = self.merge(listings)
            self._log_refusals(inventory.refused)
            self.inventory = inventory
            self.rounds += 1
            try:
                await self._apply(inventory)
            except Exception:
                log.exception("discovery: applying the inventory failed; keeping the live one")
            return inventory

    async def _ask(self, source: Source) -> tuple[str, Listing, bool]:
        """(source name, listing, stale): a failed source answers with its last good."""
        try:
            listing = await source.discover()
        except DiscoveryError as exc:
            return self._stale(source.name, str(exc))
        except Exception as exc:
            log.exception("discovery source %s failed unexpectedly", source.name)
            return self._stale(source.name, f"{type(exc).__name__}: {exc}")
        if source.name in self._errors:
            log.info("discovery source %s recovered", source.name)
            del self._errors[source.name]
        self._last[source.name] = listing
        return source.name, listing, False

    def _stale(self, name: str, error: str) -> tuple[str, Listing, bool]:
        if self._errors.get(name) != error:
            log.warning(
                "discovery source %s failed, keeping its last good listing: %s", name, error
            )
        self._errors[name] = error
        return name, self._last.get(name, Listing()), True

    def merge(self, listings: Sequence[tuple[str, Listing, bool]]) -> Inventory:
        """Vet and merge listings (pure: no I/O, no logging)."""
        found: dict[str, Found] = {}
        refused: list[Refused] = []
        for source, listing, _stale in listings:
            refused.extend(listing.refused)
            for item in listing.found:
                name = item.spec.name
                why = None
                if item.address is not None:
                    why = self.policy.refusal(item.address)
                    why = None if why is None else f"address refused: {why}"
                why = why or self.catalog.why_not(item.spec)
                if why is None and name in found:
                    why = f"also discovered by an earlier source; {source}'s entry ignored"
                if why is None:
                    found[name] = item
                else:
                    refused.append(Refused(name, why))
        return Inventory(
            tuple(found[n] for n in sorted(found)),
            tuple(sorted(refused, key=lambda r: (r.name, r.reason))),
            tuple(name for name, _, stale in listings if stale),
            self._clock(),
        )

    def _log_refusals(self, refused: tuple[Refused, ...]) -> None:
        now = frozenset(refused)
        for r in sorted(now - self._refused, key=lambda r: r.name):
            level = logging.WARNING if r.reason.startswith("address refused") else logging.INFO
            log.log(level, "discovery: not routing to %s: %s", r.name, r.reason)
        for r in sorted(self._refused - now, key=lambda r: r.name):
            log.info("discovery: %s no longer refused (%s)", r.name, r.reason)
        self._refused = now

    def status(self) -> dict[str, object]:
        """For the admin API and ``meridian status``."""
        inv = self.inventory
        return {
            "rounds": self.rounds,
            "at": inv.at,
            "backends": [
                {"name": f.spec.name, "url": f.spec.url, "detail": f.detail} for f in inv.found
            ],
            "refused": [{"name": r.name, "reason": r.reason} for r in inv.refused],
            "errors": dict(self._errors),
        }

    # -- the loop --------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="discovery-refresher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks((task,))
        for source in self.sources:
            try:
                await source.close()
            except Exception:
                log.exception("closing discovery source %s", source.name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s * self._rng.uniform(0.9, 1.1))
            try:
                await self.refresh()
            except Exception:  # a bug must not end discovery for the process's life
                log.exception("discovery round failed")
