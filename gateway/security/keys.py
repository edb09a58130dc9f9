"""API keys to tenants, without keeping any key in memory in clear.

Presented keys are hashed (SHA-256) and looked up by digest; the final
comparison is constant-time. Because the lookup is keyed by a digest the
attacker cannot steer, timing reveals nothing about stored keys.

A key may carry a name (what logs call it: never the key, never its digest)
and an expiry. A tenant rotates by holding two keys at once: both work until
the old one expires or is removed. An expired key is refused; the operator's
log says which key of which tenant, the client only that its key expired.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from regions.request import UNRESTRICTED, Residency


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    residency: Residency = UNRESTRICTED
    models: frozenset[str] | None = None
    cost_weight: float | None = None
    explain: bool = False
    key: str = ""  # the name of the API key the caller presented, "" when it has none


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One tenant API key, by its SHA-256 hex digest."""

    digest: str
    tenant: Tenant
    name: str = ""
    expires: datetime | None = None  # timezone-aware; refused from this instant on


class KeyExpired(Exception):
    """A known key past its expiry; ``str()`` is safe to show the client."""

    def __init__(self, key: ApiKey) -> None:
        super().__init__("The API key has expired; ask for a new one.")
        self.key = key


log = logging.getLogger("meridian.security")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class KeyRing:
    def __init__(
        self,
        entries: Iterable[ApiKey | tuple[str, Tenant]],
        identities: Iterable[tuple[str, Tenant]] = (),  # certificate SAN → tenant
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        keys = (e if isinstance(e, ApiKey) else ApiKey(*e) for e in entries)
        # Each key's own Tenant value carries the key's name, for the access log.
        self._by_digest: Mapping[str, ApiKey] = {
            k.digest: replace(k, tenant=replace(k.tenant, key=k.name)) for k in keys
        }
        self._by_identity: Mapping[str, Tenant] = dict(identities)
        self._clock = clock

    def tenant(self, name: str) -> Tenant | None:
        keyed = (k.tenant for k in self._by_digest.values())
        every = (*keyed, *self._by_identity.values())
        return next((t for t in every if t.name == name), None)

    def identified(self, identities: Iterable[str]) -> tuple[Tenant, str] | None:
        """The tenant a verified client certificate's SANs name, and which SAN, or None."""
        for identity in identities:
            tenant = self._by_identity.get(identity)
            if tenant is not None:
                return tenant, identity
        return None

    def authenticate(self, authorization: str | None) -> tuple[Tenant, str] | None:
        """The tenant and key digest for an ``Authorization: Bearer`` value, or None
        for a missing, unknown or expired key (an expired one is logged)."""
        try:
            return self.check(authorization)
        except KeyExpired:
            return None

    def check(self, authorization: str | None) -> tuple[Tenant, str] | None:
        """:meth:`authenticate`, but an expired key raises :class:`KeyExpired`."""
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        # Constant time in the key's content: the lookup hashes and compares the
        # digest of the presented key, never the key, and which stored entry it
        # probes (and how far a string comparison on a hash match gets) depends
        # on that digest, which a caller cannot steer towards a stored one without
        # a SHA-256 preimage. The one compare_digest then confirms the entry found;
        # timing tells at most whether the key exists, which the answer tells anyway.
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found.digest, digest):
            return None
        if found.expires is not None and self._clock() >= found.expires:
            name = found.name or "(unnamed)"
            when = found.expires.isoformat()
            log.info("tenant %s presented key %s, expired at %s", found.tenant.name, name, when)
            raise KeyExpired(found)
        return found.tenant, digest


def secret_digest(secret: str) -> str:
    """The SHA-256 hex digest of a secret read from an ``env:`` variable, without the
    whitespace around it: a secret file, ``echo`` or a mounted Secret Manager value
    often ends in a newline, and a presented key is stripped the same way, so the
    two would never match; raises ValueError for a blank value."""
    stripped = secret.strip()
    if not stripped:
        raise ValueError("is empty")
    return hashlib.sha256(stripped.encode("utf-8", "surrogateescape")).hexdigest()


def bearer_matches(authorization: str | None, token_digest: str | None) -> bool:
    """Constant-time check of an admin bearer token against its SHA-256 digest."""
    if token_digest is None or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).hexdigest()
    return hmac.compare_digest(digest, token_digest)
