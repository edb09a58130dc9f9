"""API keys to tenants, without keeping any key in memory in clear.

Presented keys are hashed (SHA-256) and looked up by digest; the final
comparison is constant-time. Because the lookup is keyed by a digest the
attacker cannot steer, timing reveals nothing about stored keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from regions.request import UNRESTRICTED, Residency


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    residency: Residency = UNRESTRICTED
    models: frozenset[str] | None = None
    cost_weight: float | None = None
    explain: bool = False


class KeyRing:
    def __init__(
        self,
        entries: Iterable[tuple[str, Tenant]],
        identities: Iterable[tuple[str, Tenant]] = (),  # certificate SAN → tenant
    ) -> None:
        self._by_digest: Mapping[str, Tenant] = dict(entries)
        self._by_identity: Mapping[str, Tenant] = dict(identities)

    def tenant(self, name: str) -> Tenant | None:
        every = (*self._by_digest.values(), *self._by_identity.values())
        return next((t for t in every if t.name == name), None)

    def identified(self, identities: Iterable[str]) -> tuple[Tenant, str] | None:
        """The tenant a verified client certificate's SANs name, and which SAN, or None."""
        for identity in identities:
            tenant = self._by_identity.get(identity)
            if tenant is not None:
                return tenant, identity
        return None

    def authenticate(self, authorization: str | None) -> tuple[Tenant, str] | None:
        """The tenant and key digest for an ``Authorization: Bearer`` value, or None."""
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        tenant = self._by_digest.get(digest)
        if tenant is None:
            return None
        for stored in self._by_digest:
            if hmac.compare_digest(stored, digest):
                return tenant, digest
        return None


def bearer_matches(authorization: str | None, token_digest: str | None) -> bool:
    """Constant-time check of an admin bearer token against its SHA-256 digest."""
    if token_digest is None or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).hexdigest()
    return hmac.compare_digest(digest, token_digest)
