"""The Redis store: many gateway replicas in many regions share one Redis.

Layout under ``PREFIX`` (default ``meridian``)::

    PREFIX:state            hash  key → document JSON
    PREFIX:revision         int   bumped once per commit
    PREFIX:audit            list  append-only audit entries (JSON)
    PREFIX:events           channel  {"type": "changed", "revision": N} | {"type": "hold", ...}
    PREFIX:counts:NAME      hash  canary counters (HINCRBY from every replica)
    PREFIX:lease:NAME       string  the lease holder, with a TTL
    PREFIX:limit:TENANT:…   tenant-limit counters and stream leases

Writes go through the ``COMMIT`` script (``gateway.store.lua``), so the
expectation check, the write, the revision, the audit entries and the
notice are one atomic step. A load reads the revision and the state hash in
one MULTI, so it is a consistent view.

Every call has a short socket timeout and at most one immediate retry (which
is what replaces a pooled connection that died with a restarted server);
connection failures become :class:`StoreUnavailable` with the URL (never its
password) in the message. Run Redis with AOF persistence in production: a
Redis that restarts empty hands every replica the config's defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.store import lua
from gateway.store.base import (
    COUNTS_TTL_S,
    AuditEntry,
    Changed,
    Commit,
    Doc,
    HealthHold,
    Loaded,
    Notice,
    StoreConflict,
    StoreUnavailable,
    decode_entries,
    encode,
)
from gateway.store.quota import Quota, Verdict, minute

Arg = bytes | str | int | float
_WINDOWS_AT_ONCE = 64  # HGETALLs per pipelined round trip when summing windows


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    netloc = f"{parts.username}:***@{netloc}" if parts.username else f":***@{netloc}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class _RedisSubscription:
    def __init__(self, store: RedisStore, pubsub: PubSub) -> None:
        self._store = store
        self._pubsub = pubsub

    async def next(self, wait_s: float) -> Notice | None:
        try:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
        except (RedisError, OSError) as exc:
            raise self._store.unavailable(exc) from None
        if message is None:
            return None
        try:
            data = orjson.loads(message["data"])
            if data.get("type") == "changed":
                return Changed(int(data["revision"]))
            if data.get("type") == "hold":
                return HealthHold(
                    str(data["backend"]),
                    float(data["until"]),
                    str(data["origin"]),
                    str(data["reason"]),
                )
        except (ValueError, KeyError, TypeError):
            pass
        return None

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]


class RedisStore:
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "meridian",
        timeout_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.where = redact(url)
        self.prefix = prefix
        self._clock = clock
        self._client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            decode_responses=False,
            # an idle subscription is PINGed, so a connection a NAT or load
            # balancer dropped in silence fails and is rebuilt, not waited on
            health_check_interval=10,
        )
        self._state = f"{prefix}:state"
        self._revision = f"{prefix}:revision"
        self._audit = f"{prefix}:audit"
        self._channel = f"{prefix}:events"
        self._commit = self._client.register_script(lua.COMMIT)
        self._renew = self._client.register_script(lua.RENEW)
        self._release = self._client.register_script(lua.RELEASE)
        self._admit = self._client.register_script(lua.ADMIT)

    def unavailable(self, exc: BaseException) -> BaseException:
        """The store error to raise for ``exc``, or a cancellation it hides.

        redis-py wraps its reads in ``asyncio.timeout``; on Python 3.11 a task
        cancelled mid-read can surface as a redis TimeoutError instead of
        CancelledError. Reporting that as "unavailable" would swallow the
        cancel and leave a stopping loop running forever."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return asyncio.CancelledError()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreUnavailable(f"redis at {self.where} is unreachable ({reason})")

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None

    def script(self, source: str) -> Callable[[list[str], list[Arg]], Awaitable[Any]]:
        """Another module's server-side script (``gateway.store.lease``), run with this
        store's timeouts and errors."""
        registered = self._client.register_script(source)

        async def run(keys: list[str], args: list[Arg]) -> Any:
            return await self._call(registered(keys=keys, args=args))

        return run

    async def open(self) -> None:
        await self._call(self._client.ping())

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()

    async def ping(self, timeout_s: float) -> None:
        # The deadline is the probe's own, shorter than the socket timeout and
        # its retry: a server that accepts and then answers nothing (stopped,
        # swapping, stuck in a slow command) is what this catches.
        try:
            async with asyncio.timeout(timeout_s):
                await self._client.ping()
        except TimeoutError:
            raise StoreUnavailable(
                f"redis at {self.where} did not answer a PING within {timeout_s:g} s"
            ) from None
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None

    async def subscribe(self) -> _RedisSubscription:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
        except (RedisError, OSError) as exc:
            await _RedisSubscription(self, pubsub).close()
            raise self.unavailable(exc) from None
        return _RedisSubscription(self, pubsub)

    # -- documents ------------------------------------------------------------

    async def load(self) -> Loaded:
        async def read() -> Loaded:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(self._revision)
                pipe.hgetall(self._state)
                revision, state = await pipe.execute()
            return Loaded(
                int(revision or 0), decode_entries({k.decode(): v for k, v in state.items()})
            )

        result: Loaded = await self._call(read())
        return result

    async def revision(self) -> int:
        return int(await self._call(self._client.get(self._revision)) or 0)

    async def commit(
        self,
        changes: Mapping[str, Doc | None],
        *,
        actor: str,
        action: str,
        note: str = "",
        expect: Mapping[str, Doc | None] | None = None,
    ) -> Commit:
        payload = {
            "actor": actor,
            "action": action,
            "note": note,
            "at": repr(float(self._clock())),
            "changes": [[k, False if v is None else encode(v)] for k, v in changes.items()],
            "expect": [[k, False if v is None else encode(v)] for k, v in (expect or {}).items()],
        }
        keys = [self._state, self._revision, self._audit]
        args: list[Arg] = [self._channel, orjson.dumps(payload)]
        out = await self._call(self._commit(keys=keys, args=args))
        if int(out[0]) < 0:
            raise StoreConflict(f"{out[1].decode()} changed concurrently")
        entries = tuple(AuditEntry.from_json(orjson.loads(e)) for e in out[1:])
        return Commit(int(out[0]), entries)

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        rows = await self._call(self._client.lrange(self._audit, -limit, -1))
        return [AuditEntry.from_json(orjson.loads(r)) for r in rows]

    async def publish(self, hold: HealthHold) -> None:
        message = orjson.dumps({"type": "hold", **hold.as_json()})
        await self._call(self._client.publish(self._channel, message))

    # -- canary counters and the controller's lease --------------------------

    async def add_counts(
        self, name: str, counts: Mapping[str, int], ttl_s: float = COUNTS_TTL_S
    ) -> None:
        key = f"{self.prefix}:counts:{name}"

        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for field, n in counts.items():
                    if n:
                        pipe.hincrby(key, field, n)
                pipe.expire(key, max(1, math.ceil(ttl_s)))
                await pipe.execute()

        await self._call(write())

    async def read_counts(self, name: str) -> dict[str, int]:
        raw = await self._call(self._client.hgetall(f"{self.prefix}:counts:{name}"))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def sum_counts(self, names: Sequence[str]) -> dict[str, int]:
        async def read() -> dict[bytes, int]:
            sums: dict[bytes, int] = {}
            for i in range(0, len(names), _WINDOWS_AT_ONCE):
                async with self._client.pipeline(transaction=False) as pipe:
                    for name in names[i : i + _WINDOWS_AT_ONCE]:
                        pipe.hgetall(f"{self.prefix}:counts:{name}")
                    for window in await pipe.execute():
                        for f, v in window.items():
                            sums[f] = sums.get(f, 0) + int(v)
            return sums

        raw: dict[bytes, int] = await self._call(read())
        return {f.decode(): n for f, n in raw.items()}

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        key, ms = f"{self.prefix}:lease:{name}", max(1, int(ttl_s * 1000))
        if await self._call(self._client.set(key, holder, nx=True, px=ms)):
            return True
        return bool(await self._call(self._renew(keys=[key], args=[holder, ms])))

    async def release_lease(self, name: str, holder: str) -> None:
        await self._call(self._release(keys=[f"{self.prefix}:lease:{name}"], args=[holder]))

    # -- tenant limits (atomic across replicas) ---------------------------------

    def _limit_keys(self, tenant: str, now: float) -> list[str]:
        index, _ = minute(now)
        base = f"{self.prefix}:limit:{tenant}"
        return [
            f"{base}:req:{index}",
            f"{base}:req:{index - 1}",
            f"{base}:tok:{index}",
            f"{base}:tok:{index - 1}",
            f"{base}:streams",
        ]

    async def admit(self, tenant: str, quota: Quota, stream_id: str, now: float) -> Verdict:
        _, elapsed = minute(now)
        args: list[Arg] = [
            repr(now),
            repr(elapsed),
            quota.requests_per_min or 0,
            quota.tokens_per_min or 0,
            quota.concurrent_streams or 0,
            stream_id,
            repr(quota.lease_s),
        ]
        out = await self._call(self._admit(keys=self._limit_keys(tenant, now), args=args))
        if int(out[0]) == 1:
            return Verdict(True)
        return Verdict(False, out[1].decode(), int(out[2]), float(out[3]))

    async def release(self, tenant: str, stream_id: str, tokens: int, now: float) -> None:
        keys = self._limit_keys(tenant, now)

        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zrem(keys[4], stream_id)
                if tokens > 0:
                    pipe.incrby(keys[2], tokens)
                    pipe.expire(keys[2], 130)
                await pipe.execute()

        await self._call(write())
