"""Edge checks every front end shares: who is calling, and where their request may run.

Draining, body limits and wire-format validation stay in the front ends
(``gateway/http/``, ``gateway/grpc/``); what is decided here is the same for
both: the caller behind an API key or a verified client certificate, and the
tenant's residency policy narrowed by the request's tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.http.schema import BadRequest
from gateway.observe.access_log import KEY_NAME
from gateway.security.keys import KeyRing, Tenant
from gateway.security.tls import identified
from regions.request import Residency
from routing.plan import ResidencyViolation

RESIDENCY_HEADER = "x-meridian-residency"
_MAX_TAGS = 16
_MAX_TAG_CHARS = 64


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: Tenant
    key_digest: str


class Authenticator:
    """Reads the key ring through a getter: a reload swaps it whole."""

    __slots__ = ("_keyring",)

    def __init__(self, keyring: Callable[[], KeyRing]) -> None:
        self._keyring = keyring

    def authenticate(
        self, authorization: str | None, identities: tuple[str, ...] = ()
    ) -> Caller | None:
        """By API key when one is sent, else by the verified client certificate's SANs.

        Raises KeyExpired for a known key past its expiry (its message is for the client)."""
        if authorization or not identities:
            found = self._keyring().check(authorization)
        else:
            found = identified(self._keyring(), identities)  # logs the SANs it refuses
        KEY_NAME.set("" if found is None else found[0].key)  # for the access log
        return None if found is None else Caller(*found)


def residency(caller: Caller, narrowing: str | None) -> Residency:
    """The tenant's policy, narrowed by the request's tags (``EU,DE``); never widened.

    Raises BadRequest for a narrowing that names no tag (``,``) or too many, and
    ResidencyViolation when the tags fall outside the policy; its message
    names only the request's tags and the key's own policy, so the tenant
    may read it."""
    policy = caller.tenant.residency
    if not narrowing:
        return policy
    asked = frozenset(t.strip() for t in narrowing.split(",") if t.strip())
    if not asked:
        raise BadRequest(
            f"{RESIDENCY_HEADER} names no jurisdiction tag; send e.g. 'EU' or 'EU,DE', "
            "or leave the header out",
            RESIDENCY_HEADER,
        )
    if len(asked) > _MAX_TAGS or max(len(t) for t in asked) > _MAX_TAG_CHARS:
        raise BadRequest(
            f"{RESIDENCY_HEADER}: at most {_MAX_TAGS} tags of at most {_MAX_TAG_CHARS} characters",
            RESIDENCY_HEADER,
        )
    narrowed = policy.narrow(asked)
    if not narrowed.allowed:
        message = (
            f"{RESIDENCY_HEADER} [{','.join(sorted(asked))}] is outside this key's "
            f"residency policy [{policy.describe()}]; it can only narrow it"
        )
        raise ResidencyViolation(message, public=message)
    return narrowed
