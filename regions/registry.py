"""Provider kinds to adapter factories: the one place a new provider is plugged in.

A factory gets the backend's spec and a :class:`SessionPool` (one pooled
aiohttp session per upstream host, shared by every backend on that host) and
returns a :class:`regions.provider.Provider`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import StreamReader

from regions.body_reader import BodyReader
from regions.inventory import BackendSpec, ProviderKind
from regions.openai_compat import IDENTITY, OpenAICompatProvider
from regions.provider import Provider
from regions.sse import MAX_EVENT_BYTES
from regions.tls import BackendTLS, session_options

UPSTREAM_HEADERS: Mapping[str, str] = MappingProxyType(
    {"User-Agent": "meridian", "Accept": "*/*", **IDENTITY}
)
"""Sent with every backend request, as the session's defaults: with all three of
aiohttp's automatic headers given, it adds none per request (a ``skip_auto_headers``
set instead costs a sorted copy and a merge of the request's headers each time)."""


class _UpstreamHandler(ResponseHandler):
    """aiohttp's client protocol, its responses' bodies read by a :class:`BodyReader`.

    ``BodyReader`` resumes the protocol only when it is paused, where aiohttp's
    reader resumed it after every read, feeding the parser an empty chunk and
    resuming the transport each time (about 5 k instructions a read).

    A response whose reading is paused before its reader could be adopted keeps
    aiohttp's own reader. aiohttp's reader pauses on its count of HTTP chunks
    outside the parser's body callback (a first read of over 16,384 chunks,
    before ``feed_data`` here runs), and the parser then holds the next read's
    bytes after its first piece with the protocol unpaused: only a resume after
    every read, as aiohttp's reader does, gives them back (helper-47's review;
    tests/regions/test_review_body_reader.py).
    """

    __slots__ = ()

    def feed_data(self, data: tuple[RawResponseMessage, StreamReader], size: int = 0) -> None:
        """A response's head (once per response, after the parser's first read of it)."""
        if not self._reading_paused:
            BodyReader.adopt(data[1])
        super().feed_data(data, size)


def _upstream_handler(loop: asyncio.AbstractEventLoop) -> ResponseHandler:
    return _UpstreamHandler(loop)  # once per connection


class SessionPool:
    """Keep-alive connection pools, one per upstream host."""

    def __init__(self, connect_timeout: float, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._connect_timeout = connect_timeout
        self.max_event_bytes = max_event_bytes  # the providers' cap on one upstream event
        self._sessions: dict[tuple[str, BackendTLS | None], aiohttp.ClientSession] = {}

    def for_url(
        self, url: str, max_concurrency: int = 256, tls: BackendTLS | None = None
    ) -> aiohttp.ClientSession:
        key = (urlsplit(url).netloc, tls)  # one pool per host and TLS setting
        session = self._sessions.get(key)
        if session is None:
            connector_tls, session_tls = session_options(tls)  # regions.tls
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=max_concurrency * 2,
                keepalive_timeout=30.0,
                ttl_dns_cache=60,
                **connector_tls,
            )
            # A private attribute (pinned by tests/regions/test_upstream_request_cost.py):
            # the protocol every connection of this connector is made with.
            connector._factory = functools.partial(_upstream_handler, asyncio.get_running_loop())
            session = self._sessions[key] = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                headers=UPSTREAM_HEADERS,
                auto_decompress=False,  # see IDENTITY; adapters need not repeat it per request
                **session_tls,
            )
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


Factory = Callable[[BackendSpec, SessionPool], Provider]


def _openai_compat(spec: BackendSpec, pool: SessionPool) -> Provider:
    session = pool.for_url(spec.url, spec.max_concurrency, spec.tls)
    return OpenAICompatProvider(spec, session, max_event_bytes=pool.max_event_bytes)


def _sagemaker(spec: BackendSpec, pool: SessionPool) -> Provider:
    from regions.sagemaker import SageMakerProvider  # botocore loads only when used

    session = pool.for_url(spec.url, spec.max_concurrency, spec.tls)
    return SageMakerProvider(spec, session, max_event_bytes=pool.max_event_bytes)


def _vertex(spec: BackendSpec, pool: SessionPool) -> Provider:
    from regions.vertex import VertexProvider  # google-auth loads only when used

    session = pool.for_url(spec.url, spec.max_concurrency, spec.tls)
    return VertexProvider(spec, session, max_event_bytes=pool.max_event_bytes)


FACTORIES: Mapping[ProviderKind, Factory] = MappingProxyType(
    {
        ProviderKind.VLLM: _openai_compat,
        ProviderKind.TGI: _openai_compat,
        ProviderKind.OPENAI: _openai_compat,
        ProviderKind.SAGEMAKER: _sagemaker,
        ProviderKind.VERTEX: _vertex,
    }
)


def build_provider(spec: BackendSpec, pool: SessionPool) -> Provider:
    factory = FACTORIES.get(spec.kind)
    if factory is None:
        raise LookupError(f"provider {spec.kind.value} is not available in this build")
    return factory(spec, pool)
