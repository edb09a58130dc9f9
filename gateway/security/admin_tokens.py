"""Scoped admin tokens: several named bearer tokens, each with a role.

Roles are ordered: ``viewer`` reads (status, metrics, route explain, usage
and every other GET), ``operator`` also steers traffic (weights, drains,
dials, canaries, shadows), ``admin`` also changes the fleet itself
(replication, replica status, reload, the store's primary). Each admin
route's required role is in :data:`ROUTE_ROLES`; a route missing from it
needs ``admin`` (a new route is closed until someone decides otherwise, and
tests/gateway/test_admin_roles.py fails until they do).

Tokens are kept as SHA-256 digests only. A presented token is hashed and
compared, constant-time, against every stored digest, so neither the match
nor its position leaks through timing. The legacy single ``admin.token``
is an ``admin``-role token without a name: its writes keep the actor the
client names (``x-meridian-actor``), while a named token's writes are
recorded under the token's name, which the client cannot choose.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.config.model import Admin


class Role(enum.IntEnum):
    viewer = 1
    operator = 2
    admin = 3


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    name: str | None  # None: the legacy unnamed admin.token
    role: Role


# The request key holding the AdminIdentity that authenticated it.
IDENTITY: web.RequestKey[AdminIdentity] = web.RequestKey("admin_identity", AdminIdentity)

V, OP, A = Role.viewer, Role.operator, Role.admin

# (method, route pattern) → the least role that may call it. HEAD is GET.
ROUTE_ROLES: Mapping[tuple[str, str], Role] = {
    ("GET", "/metrics"): V,
    ("GET", "/admin/v1/status"): V,
    ("GET", "/admin/v1/route/explain"): V,
    ("GET", "/admin/v1/weights/{model}"): V,
    ("GET", "/admin/v1/regions"): V,
    ("GET", "/admin/v1/canary/{model}"): V,
    ("GET", "/admin/v1/replicas/{model}"): V,
    ("GET", "/admin/v1/audit"): V,
    ("GET", "/admin/v1/replications"): V,
    ("GET", "/admin/v1/replications/{job}"): V,
    ("GET", "/admin/v1/shadow/{model}"): V,
    ("GET", "/admin/v1/store"): V,
    ("GET", "/admin/v1/usage"): V,
    # the whole config: tenants, backends and key digests are an operator's business
    ("GET", "/admin/v1/config"): OP,
    ("PUT", "/admin/v1/weights/{model}"): OP,
    ("POST", "/admin/v1/regions/{region}/drain"): OP,
    ("POST", "/admin/v1/regions/{region}/undrain"): OP,
    ("PUT", "/admin/v1/regions/{region}/dial"): OP,
    ("POST", "/admin/v1/canary/{model}"): OP,
    ("POST", "/admin/v1/canary/{model}/promote"): OP,
    ("POST", "/admin/v1/canary/{model}/abort"): OP,
    ("POST", "/admin/v1/shadow/{model}"): OP,
    ("POST", "/admin/v1/shadow/{model}/stop"): OP,
    ("PUT", "/admin/v1/replicas/{model}/{version}/{region}"): A,
    ("POST", "/admin/v1/replications"): A,
    ("DELETE", "/admin/v1/replications/{job}"): A,
    ("POST", "/admin/v1/reload"): A,
    ("POST", "/admin/v1/store/primary"): A,
}

# Routes that answer without a token (load balancers' health checks).
OPEN_ROUTES = frozenset({("GET", "/healthz")})


def route_key(request: web.Request) -> tuple[str, str] | None:
    """The request's (method, route pattern), or None where no route matched."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return method, resource.canonical


def required_role(request: web.Request) -> Role:
    key = route_key(request)
    if key is None:
        return Role.viewer  # no such route: any valid token learns only the 404
    return ROUTE_ROLES.get(key, Role.admin)


class AdminTokens:
    """Digests of the admin tokens and who each one is."""

    def __init__(self, entries: Iterable[tuple[str, AdminIdentity]] = ()) -> None:
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, authorization: str | None) -> AdminIdentity | None:
        if not authorization or not self._entries:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        found: AdminIdentity | None = None
        for stored, identity in self._entries:  # every digest compared: no early exit
            if hmac.compare_digest(stored, digest):
                found = identity
        return found


def admin_tokens_from(admin: Admin, environ: Mapping[str, str]) -> AdminTokens:
    """The config's admin tokens; raises ConfigError if an ``env:`` variable is unset."""
    entries: list[tuple[str, AdminIdentity]] = []
    if admin.token is not None:
        entries.append((admin.token.digests(environ), AdminIdentity(None, Role.admin)))
    for t in admin.tokens:
        entries.append((t.token.digests(environ), AdminIdentity(t.name, Role[t.role])))
    return AdminTokens(entries)


def refusal(request: web.Request, tokens: AdminTokens) -> tuple[int, str, str] | None:
    """Why this request may not proceed (status, message, code), or None; on success
    the caller's identity is stored under :data:`IDENTITY`."""
    key = route_key(request)
    if key in OPEN_ROUTES:
        return None
    identity = tokens.authenticate(request.headers.get("Authorization"))
    if identity is None:
        return 401, "admin token required", "invalid_admin_token"
    need = required_role(request)
    if identity.role < need:
        return (
            403,
            f"this token's role is {identity.role.name}; this needs the {need.name} role",
            "insufficient_role",
        )
    request[IDENTITY] = identity
    return None


def token_actor(request: web.Request) -> str | None:
    """The audit actor a named token imposes, or None (legacy token: the client's)."""
    identity = request.get(IDENTITY)
    return None if identity is None else identity.name
