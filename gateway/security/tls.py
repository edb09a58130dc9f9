"""TLS on the listeners: HTTP and admin (aiohttp over ``ssl``) and gRPC (grpcio).

Each listener takes a PEM certificate chain and key (``listen.tls.<listener>``).
Only TLS 1.2 and 1.3 are spoken, TLS 1.2 with forward-secret AEAD suites
only; ALPN offers ``http/1.1`` on the HTTP listeners and gRPC negotiates
``h2`` itself (grpc-core: TLS 1.2 minimum).

Rotation: the files are watched (their mtime, size and inode, every
``poll_s``). A changed pair is first loaded into a scratch context, so a
half-written or mismatched pair is logged and ignored (the old certificate
stays in force until the files are whole again); a good pair is loaded into
the live context, which only new handshakes consult, so connections and
streams in flight keep the session they negotiated. gRPC asks for the
current pair on every new handshake (grpcio's dynamic server credentials).

``client_ca`` makes the listener require a client certificate issued by that
CA (mTLS). Neither Python's ``ssl`` nor grpcio can ask for a client
certificate without verifying it at the handshake (no verify callback;
grpcio's only choices are "require and verify" and "do not ask"), so a
connection without one or with one from another CA fails the handshake; on
the HTTP and admin listeners the reason is logged (:class:`_Handshake`), on
gRPC only grpc-core knows it. The HTTP listener, whose certificates are
identities, leaves the validity dates out of the handshake
(``X509_V_FLAG_NO_CHECK_TIME``) and checks the whole chain again, dates
included, for every request (:class:`ClientCheck`, cryptography's
verifier): an expired certificate there is a 401 and a log line naming the
certificate and the reason, never an identity. Nothing is told to the client
beyond the refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from pydantic import Field, model_validator

from gateway.config.base import Strict
from gateway.security.keys import KeyRing, Tenant
from regions.tls import BackendTLS

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.x509.verification import VerificationError

# grpcio and cryptography (~16 MiB of idle RSS) are imported where a listener's TLS
# needs them: a gateway without client_ca or a gRPC TLS listener never loads them.

log = logging.getLogger("meridian.tls")

# TLS 1.2 suites: ECDHE key exchange and AEAD ciphers only (TLS 1.3's are all of that kind).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1:!SHA256:!SHA384"


class ListenerTLS(Strict):
    cert: str = Field(min_length=1)  # PEM chain: the leaf first, then intermediates
    key: str = Field(min_length=1)  # PEM private key
    client_ca: str | None = None  # PEM bundle: require client certificates it issued
    min_version: Literal["1.2", "1.3"] = "1.2"
    poll_s: float = Field(5.0, gt=0)  # how often the files are checked for a rotation


class ListenTLS(Strict):
    http: ListenerTLS | None = None
    admin: ListenerTLS | None = None
    grpc: ListenerTLS | None = None

    @model_validator(mode="after")
    def _grpc_version(self) -> ListenTLS:
        if self.grpc is not None and self.grpc.min_version != "1.2":
            # grpcio has no knob for it: refused here rather than silently ignored
            raise ValueError("grpc.min_version: grpcio speaks TLS 1.2 and 1.3, cannot refuse 1.2")
        return self


class BackendTLSConfig(Strict):
    """``backends[].tls``: what the gateway trusts and presents to one backend."""

    ca_file: str | None = None  # PEM bundle trusted instead of the system's CAs
    server_name: str | None = Field(None, min_length=1)  # SNI and the name checked
    cert: str | None = None  # client certificate chain (PEM), for an mTLS sidecar
    key: str | None = None
    verify: bool = True  # false: a lab only; never with a CA or a name to check

    @model_validator(mode="after")
    def _pairs(self) -> BackendTLSConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        if not self.verify and (self.ca_file or self.server_name):
            raise ValueError("verify: false checks nothing: drop ca_file and server_name")
        return self


def backend_tls(cfg: BackendTLSConfig | None) -> BackendTLS | None:
    if cfg is None:
        return None
    return BackendTLS(cfg.ca_file, cfg.server_name, cfg.cert, cfg.key, cfg.verify)


def _signature(*paths: str | None) -> tuple[tuple[int, int, int], ...]:
    out = []
    for p in paths:
        if p is None:
            continue
        try:
            st = os.stat(p)
        except OSError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (1.1.0+): the handshake leaves the dates to ClientCheck
_NO_CHECK_TIME = 0x200000


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CertificateRefused(Exception):
    """A client certificate its listener's CA does not vouch for now; ``str()`` is what the
    client may read (the reason is in the log only)."""

    def __init__(self) -> None:
        super().__init__("The client certificate is not accepted.")


def _is_ca(_policy: object, _cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is None or not ext.ca:
        raise ValueError("an issuer must be a CA (basicConstraints CA:TRUE)")


class ClientCheck:
    """A listener's client certificates verified against its ``client_ca`` at the current time.

    The handshake has already checked the chain (signatures, CA constraints, key
    usage, proof of the key) with the dates left out; this verification is the
    whole chain again with the dates, by cryptography's verifier. Its end-entity
    extension policy is permissive (OpenSSL accepted the leaf's extensions, and
    the Web PKI rules refuse common private-CA leaves); issuers must still be CAs.
    """

    def __init__(self, what: str, ca_file: str, *, clock: Callable[[], datetime] = _utcnow) -> None:
        from cryptography import x509
        from cryptography.x509.verification import Criticality, ExtensionPolicy, Store

        self.what, self.ca_file = what, ca_file
        self._store = Store(x509.load_pem_x509_certificates(Path(ca_file).read_bytes()))
        self._clock = clock
        ca_policy = ExtensionPolicy.permit_all().require_present(
            x509.BasicConstraints, Criticality.AGNOSTIC, _is_ca
        )
        self._policies = (ca_policy, ExtensionPolicy.permit_all())

    def connection(self, tls: Any) -> None:
        """Verify a connection's client certificate now; raises CertificateRefused.

        A success holds while the clock stays inside the verified chain's common
        validity window (nothing else in it changes with time), so it is kept on
        the connection's SSLObject with this check (a rotated bundle is a new
        check): further requests on the connection cost a comparison."""
        now = self._clock()
        seen = getattr(tls, "verified", None)
        if seen is not None and seen[0] is self and seen[1] <= now < seen[2]:
            return
        chain = _peer_chain(tls)
        if not chain:  # the handshake requires one: never reached, never a pass
            log.warning("listen.tls.%s: a connection without a client certificate", self.what)
            raise CertificateRefused
        window = self.verify(chain, now)
        with contextlib.suppress(AttributeError):  # an SSLObject not made by _Handshake
            tls.verified = (self, *window)

    def verify(self, chain: list[bytes], now: datetime | None = None) -> tuple[datetime, datetime]:
        """``chain``: DER, the leaf first. The window in which the verified chain is
        valid; raises CertificateRefused, logging why."""
        from cryptography import x509
        from cryptography.x509.verification import PolicyBuilder, VerificationError

        leaf, *rest = (x509.load_der_x509_certificate(der) for der in chain)
        now = self._clock() if now is None else now
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(ca_policy=self._policies[0], ee_policy=self._policies[1])
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, rest)
        except VerificationError as exc:
            log.info(
                "listen.tls.%s: client certificate %s (serial %x) refused: %s",
                self.what,
                leaf.subject.rfc4514_string() or "(no subject)",
                leaf.serial_number,
                self._reason(leaf, now, exc),
            )
            raise CertificateRefused from None
        return (
            max(c.not_valid_before_utc for c in verified.chain),
            min(c.not_valid_after_utc for c in verified.chain),
        )

    def _reason(self, leaf: x509.Certificate, now: datetime, exc: VerificationError) -> str:
        if now >= leaf.not_valid_after_utc:
            return f"expired at {leaf.not_valid_after_utc.isoformat()}"
        if now < leaf.not_valid_before_utc:
            return f"not valid before {leaf.not_valid_before_utc.isoformat()}"
        detail = str(exc).split(" (encountered processing", 1)[0]
        return f"no valid chain to {self.ca_file} now ({detail})"


class _ServerContext(ssl.SSLContext):
    """A listener's context: which listener it is, and its ClientCheck (HTTP with client_ca)."""

    listener = ""
    client_check: ClientCheck | None = None


class _Handshake(ssl.SSLObject):
    """Logs why a handshake refused the client's certificate (asyncio and uvloop call
    ``do_handshake`` until it completes or fails; only the failure is logged), and
    keeps the last ClientCheck verdict of its connection."""

    verified: tuple[ClientCheck, datetime, datetime] | None = None

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLCertVerificationError as exc:
            log.info(
                "listen.tls.%s: client certificate refused at the handshake: %s",
                getattr(self.context, "listener", "?"),
                exc.verify_message,
            )
            raise
        except ssl.SSLError as exc:
            if exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
                log.info(
                    "listen.tls.%s: no client certificate: refused at the handshake",
                    getattr(self.context, "listener", "?"),
                )
            raise


def server_context(
    cfg: ListenerTLS,
    alpn: tuple[str, ...] = ("http/1.1",),
    *,
    what: str = "",
    dates_in_app: bool = False,
) -> ssl.SSLContext:
    """A server context for ``cfg``; raises OSError/ssl.SSLError naming what is wrong.

    ``dates_in_app``: with ``client_ca``, the handshake skips the validity dates and
    the context carries a :class:`ClientCheck` that every request must pass
    (:func:`http_identities`); only for a listener whose every authenticated
    request goes through it."""
    ctx = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.listener = what
    ctx.sslobject_class = _Handshake
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if cfg.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_alpn_protocols(list(alpn))
    ctx.load_cert_chain(cfg.cert, cfg.key)
    if cfg.client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=cfg.client_ca)
        if dates_in_app:
            ctx.client_check = ClientCheck(what, cfg.client_ca)
            ctx.verify_flags |= _NO_CHECK_TIME
    return ctx


class TLSError(OSError):
    """A listener's certificate, key or CA cannot be used; one line naming the file."""


def _loaded(what: str, cfg: ListenerTLS, alpn: tuple[str, ...]) -> ssl.SSLContext:
    try:
        # the HTTP listener's certificates are identities: every request checks them
        return server_context(cfg, alpn, what=what, dates_in_app=what == "http")
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TLSError(
            f"listen.tls.{what}: cannot load {cfg.cert} / {cfg.key}"
            f"{' / ' + cfg.client_ca if cfg.client_ca else ''}: {exc}"
        ) from None


class ServerCert:
    """One HTTP/admin listener's live context, reloaded in place when its files change."""

    def __init__(self, what: str, cfg: ListenerTLS, alpn: tuple[str, ...] = ("http/1.1",)):
        self.what, self.cfg, self._alpn = what, cfg, alpn
        self._seen = _signature(cfg.cert, cfg.key, cfg.client_ca)
        self.context = _loaded(what, cfg, alpn)
        self.rotations = 0

    def poll(self) -> bool:
        """Reload if the files changed and are a usable pair; True when reloaded."""
        now = _signature(self.cfg.cert, self.cfg.key, self.cfg.client_ca)
        if now == self._seen:
            return False
        try:
            _loaded(self.what, self.cfg, self._alpn)  # whole and matching, or keep the old
        except TLSError as exc:
            log.warning("%s; keeping the certificate in force", exc)
            return False
        self._seen = now
        # new handshakes read these; sessions already negotiated are untouched
        self.context.load_cert_chain(self.cfg.cert, self.cfg.key)
        if self.cfg.client_ca is not None:
            self.context.load_verify_locations(cafile=self.cfg.client_ca)
            if isinstance(self.context, _ServerContext) and self.context.client_check:
                # the request-time check follows the new bundle at once (a removed CA too)
                self.context.client_check = ClientCheck(self.what, self.cfg.client_ca)
        self.rotations += 1
        log.info("listen.tls.%s: certificate reloaded from %s", self.what, self.cfg.cert)
        return True


@dataclass
class _Pair:
    signature: tuple[tuple[int, int, int], ...]
    config: Any  # grpc.ServerCertificateConfiguration


class GrpcCert:
    """gRPC server credentials whose certificate grpc-core asks for on each handshake."""

    def __init__(self, cfg: ListenerTLS) -> None:
        import grpc

        self.cfg = cfg
        self._lock = threading.Lock()  # grpc-core calls the fetcher from its own threads
        _loaded("grpc", cfg, ("h2",))  # the same checks, one line, before binding
        self._pair = self._read()
        self.rotations = 0
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._pair.config, self._fetch, require_client_authentication=cfg.client_ca is not None
        )

    def _read(self) -> _Pair:
        import grpc

        cfg = self.cfg
        sig = _signature(cfg.cert, cfg.key, cfg.client_ca)
        ca = Path(cfg.client_ca).read_bytes() if cfg.client_ca else None
        pair = (Path(cfg.key).read_bytes(), Path(cfg.cert).read_bytes())
        return _Pair(sig, grpc.ssl_server_certificate_configuration([pair], ca))

    def _fetch(self) -> Any:
        """grpc-core's question before a handshake: a new configuration, or None to keep it."""
        cfg = self.cfg
        with self._lock:
            if _signature(cfg.cert, cfg.key, cfg.client_ca) == self._pair.signature:
                return None
            try:
                _loaded("grpc", cfg, ("h2",))
                pair = self._read()
            except (TLSError, OSError) as exc:
                log.warning("%s; keeping the certificate in force", exc)
                return None
            self._pair = pair
            self.rotations += 1
        log.info("listen.tls.grpc: certificate reloaded from %s", cfg.cert)
        return pair.config


class Watcher:
    """Polls every HTTP/admin listener's files and reloads them on change."""

    def __init__(self) -> None:
        self.certs: list[ServerCert] = []
        self._task: asyncio.Task[None] | None = None

    def context(self, what: str, cfg: ListenerTLS | None) -> ssl.SSLContext | None:
        if cfg is None:
            return None
        cert = ServerCert(what, cfg)
        self.certs.append(cert)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return cert.context

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(min(c.cfg.poll_s for c in self.certs))
            for cert in self.certs:
                try:
                    cert.poll()
                except Exception:  # one bad poll must not end the watching
                    log.exception("listen.tls.%s: reloading the certificate failed", cert.what)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def http_identities(transport: asyncio.BaseTransport | None) -> tuple[str, ...]:
    """The URI and DNS SANs of the client certificate the handshake verified (else ());
    raises CertificateRefused where the listener's :class:`ClientCheck` refuses it now."""
    if transport is None:
        return ()
    tls = transport.get_extra_info("ssl_object")
    check = getattr(getattr(tls, "context", None), "client_check", None)
    if isinstance(check, ClientCheck):
        check.connection(tls)  # before anything reads the certificate
    cert = transport.get_extra_info("peercert")  # {} unless verified against client_ca
    if not cert:
        return ()
    return tuple(str(v) for kind, v in cert.get("subjectAltName", ()) if kind in ("URI", "DNS"))


def _peer_chain(tls: Any) -> list[bytes]:
    """The certificates the client sent, DER, leaf first: public from Python 3.13
    (``get_unverified_chain``), on the private ``_sslobj`` before; without it the
    leaf alone (its intermediates must then be in client_ca: stricter, never laxer)."""
    get = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    chain = get() if get is not None else None
    if not chain:
        leaf = tls.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]


def grpc_identities(context: Any) -> tuple[str, ...]:
    """The same for a gRPC call: grpc-core's peer_uri/peer_dns of a verified certificate."""
    auth = context.auth_context() or {}
    return tuple(
        v.decode("utf-8", "replace") for k in ("peer_uri", "peer_dns") for v in auth.get(k, ())
    )


def identified(keyring: KeyRing, identities: tuple[str, ...]) -> tuple[Tenant, str] | None:
    """The tenant a verified certificate names, and the key name the access log shows
    (``cert:<SAN>``); a certificate naming none is logged, the client told only 401."""
    found = keyring.identified(identities)
    if found is None:
        log.info("client certificate %s maps to no tenant: refused", ", ".join(identities))
        return None
    return found[0], f"cert:{found[1]}"


def redis_url(url: str, ca_file: str | None) -> str:
    """``rediss://`` with ``store.ca_file``: the URL naming the CA bundle for redis-py
    (its ``ssl_ca_certs`` query argument), so every connection made from it verifies
    the server against that CA; any other URL is returned unchanged."""
    if ca_file is None or not url.startswith("rediss://") or "ssl_ca_certs=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}ssl_ca_certs={quote(ca_file, safe='/')}"


def identity_clash(tenants: Iterable[Any]) -> str | None:
    """A config problem (``@tenants.N.identities: …``) where two tenants claim one SAN."""
    owner: dict[str, str] = {}
    for i, tenant in enumerate(tenants):
        for identity in tenant.identities:
            if owner.setdefault(identity, tenant.name) != tenant.name:
                return f"@tenants.{i}.identities: {identity!r} is tenant {owner[identity]!r}'s"
    return None
