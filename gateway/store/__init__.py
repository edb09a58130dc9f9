"""The control-plane store (docs/design.md §5): interface, implementations, state model.

``open_store`` picks the implementation from the ``store:`` config section.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.config.model import ConfigError, StoreConfig
from gateway.security.tls import redis_url
from gateway.store.base import (
    AuditEntry,
    Changed,
    Commit,
    Doc,
    HealthHold,
    Loaded,
    Notice,
    Store,
    StoreConflict,
    StoreUnavailable,
    Subscription,
)
from gateway.store.quota import Quota, Verdict

if TYPE_CHECKING:
    from gateway.store.embedded import EmbeddedStore
    from gateway.store.redis_store import RedisStore
    from gateway.store.replicated import ReplicatedStore

__all__ = [
    "AuditEntry",
    "Changed",
    "Commit",
    "Doc",
    "EmbeddedStore",
    "HealthHold",
    "Loaded",
    "MemoryStore",
    "Notice",
    "Quota",
    "RedisStore",
    "ReplicatedStore",
    "Store",
    "StoreConflict",
    "StoreUnavailable",
    "Subscription",
    "Verdict",
    "open_store",
]


def __getattr__(name: str) -> Any:
    """The Redis stores on first use: redis-py (and the OpenTelemetry SDK it
    imports) costs ~9 MiB of RSS a gateway on the embedded store never uses; SQLite
    (~1.6 MiB) on first use, which a gateway without ``store.path`` never makes."""
    if name == "EmbeddedStore":
        from gateway.store.embedded import EmbeddedStore

        return EmbeddedStore
    if name == "MemoryStore":
        from gateway.store.memory import MemoryStore

        return MemoryStore
    if name == "RedisStore":
        from gateway.store.redis_store import RedisStore

        return RedisStore
    if name == "ReplicatedStore":
        from gateway.store.replicated import ReplicatedStore

        return ReplicatedStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(config: StoreConfig, environ: Mapping[str, str] | None = None) -> Store:
    """The configured store, not yet opened; ``env:NAME`` URLs are read from the environment."""
    if config.kind == "embedded":
        if config.path is None or config.path == ":memory:":
            from gateway.store.memory import MemoryStore

            return MemoryStore()  # what SQLite's in-memory database did, without SQLite
        from gateway.store.embedded import EmbeddedStore

        return EmbeddedStore(config.path)
    from gateway.store.redis_store import RedisStore
    from gateway.store.replicated import ReplicatedStore

    env = os.environ if environ is None else environ
    url = redis_url(_resolve(config.url or "", env), config.ca_file)
    if config.read_url:  # reads near, writes far (gateway.store.replicated)
        read_url = redis_url(_resolve(config.read_url, env), config.ca_file)
        return ReplicatedStore(url, read_url, prefix=config.prefix)
    return RedisStore(url, prefix=config.prefix)


def _resolve(url: str, env: Mapping[str, str]) -> str:
    """An ``env:NAME`` URL from the environment, stripped as gateway.security.keys
    strips a secret: a mounted secret or ``echo`` adds a newline, and whitespace
    before ``rediss://`` would leave the connection without ``store.ca_file``."""
    if not url.startswith("env:"):
        return url
    name = url[4:]
    if name not in env:
        raise ConfigError(f"environment variable {name} is not set")
    value = env[name].strip()
    if not value:
        raise ConfigError(f"environment variable {name} is empty")
    return value
