"""The control-plane store (docs/design.md §5): interface, implementations, state model.

``open_store`` picks the implementation from the ``store:`` config section.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.config import ConfigError, StoreConfig
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
from gateway.store.embedded import EmbeddedStore
from gateway.store.quota import Quota, Verdict
from gateway.store.redis_store import RedisStore

__all__ = [
    "AuditEntry",
    "Changed",
    "Commit",
    "Doc",
    "EmbeddedStore",
    "HealthHold",
    "Loaded",
    "Notice",
    "Quota",
    "RedisStore",
    "Store",
    "StoreConflict",
    "StoreUnavailable",
    "Subscription",
    "Verdict",
    "open_store",
]


def open_store(config: StoreConfig, environ: Mapping[str, str] | None = None) -> Store:
    """The configured store, not yet opened; ``env:NAME`` URLs are read from the environment."""
    if config.kind == "embedded":
        return EmbeddedStore(config.path)
    url = config.url or ""
    if url.startswith("env:"):
        env = os.environ if environ is None else environ
        url = env.get(url[4:], "")
        if not url:
            raise ConfigError(f"environment variable {config.url[4:]} is not set")  # type: ignore[index]
    return RedisStore(url, prefix=config.prefix)
