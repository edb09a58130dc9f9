"""TLS to backends: what a backend's connections trust and present.

Verification is on by default (the system's CAs, the URL's host name). Per
backend a CA bundle replaces the system's, ``server_name`` replaces the URL's
host for SNI and the certificate's name check (a backend reached by address
whose certificate names a service), and a client certificate is presented to
a backend behind an mTLS sidecar. ``verify: false`` exists for a lab only.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True, slots=True)
class BackendTLS:
    ca_file: str | None = None  # PEM bundle trusted instead of the system's CAs
    server_name: str | None = None  # SNI and the name the certificate must carry
    cert_file: str | None = None  # client certificate chain (PEM), with key_file
    key_file: str | None = None
    verify: bool = True


def client_context(tls: BackendTLS) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


def _request_class(server_name: str) -> type[aiohttp.ClientRequest]:
    class Named(aiohttp.ClientRequest):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["server_hostname"] = server_name
            super().__init__(*args, **kwargs)

    return Named


def session_options(tls: BackendTLS | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments for the TCPConnector and the ClientSession of one backend."""
    if tls is None:
        return {}, {}
    session: dict[str, Any] = {}
    if tls.server_name is not None:
        session["request_class"] = _request_class(tls.server_name)
    return {"ssl": client_context(tls)}, session
