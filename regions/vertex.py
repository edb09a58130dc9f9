"""Adapter for Vertex AI endpoints serving OpenAI-compatible containers (vLLM, TGI).

Two routes (reference/protocols.md §3.1), chosen per backend:

- ``chat_completions``: the OpenAI-compatible chat route of self-deployed
  Model Garden endpoints,
  ``POST /v1beta1/projects/{p}/locations/{l}/endpoints/{e}/chat/completions``.
  Chat only: a completion request fails with SERVER (misrouted, another
  backend may serve it) — give completion traffic ``stream_raw_predict``.
- ``stream_raw_predict``: ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:streamRawPredict``,
  whose body goes to the custom container unchanged; here a vLLM container
  that picks chat or completion from the body, as its ``/invocations`` does.

Embeddings (route ``stream_raw_predict`` only) go to ``:rawPredict`` on the
same endpoint, the one-answer form of the raw route: the body reaches the
container and its response comes back unchanged (google-cloud-aiplatform's
``Endpoint.raw_predict``, google/cloud/aiplatform/models.py), so the client's
OpenAI embeddings body reaches vLLM, whose ``/invocations``-style dispatch by
body shape serves it as an ``EmbeddingRequest`` (``regions.sagemaker``), and
its ``EmbeddingResponse`` is checked by ``regions.embeddings``. The third
route, ``predict_embeddings``, serves embeddings only: ``:predict`` on Google's
own embedding models, translated both ways by ``regions.vertex_embeddings``.

Both stream the container's OpenAI SSE back unchanged, so both are
pass-through for the APIs they serve, and they share the SageMaker vLLM
decoder (:class:`regions.sagemaker_payloads.PayloadDecoder`), which reads
each of several choices (``n``, on ``stream_raw_predict``). The host is a
dedicated endpoint's (``options.dedicated_dns``; the shared regional host does
not stream, gateway/config/model.py refuses it): the backend's ``url`` is
``https://{dns}``, or an emulator, proxy or Private Service Connect address
sent ``Host: {dns}``; with ``discover_dns`` the name is read from the endpoint
resource at first use. Tokens come from google-auth, refreshed off the loop
(``regions.vertex_auth``). Resumption is vLLM's ``continue_final_message``.

Errors are google.rpc.Status bodies ``{"error": {"code", "message", "status"}}``
(§3.3): 429/RESOURCE_EXHAUSTED → OVERLOADED; 504/DEADLINE_EXCEEDED → TIMEOUT;
400 INVALID_ARGUMENT, OUT_OF_RANGE, 413 → CLIENT; 401/403 (our credentials),
404 (wrong endpoint) and 400 FAILED_PRECONDITION (nothing deployed) → SERVER,
as a misconfigured backend; 500/503 → SERVER.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from regions import embeddings, vertex_embeddings
from regions.errors import BackendError, FailureClass
from regions.events import Event
from regions.inventory import BackendSpec, VertexOptions
from regions.openai_compat import (
    IDENTITY,
    body_pieces,
    build_body,
    check_identity,
    classify_status,
    drain,
    parse_retry_after,
    read_capped,
)
from regions.provider import Probe
from regions.request import GenerationRequest, Kind
from regions.sagemaker_payloads import PayloadDecoder
from regions.sse import MAX_EVENT_BYTES
from regions.trace_context import trace_headers
from regions.transport_errors import TRANSPORT_ERRORS
from regions.vertex_auth import EMULATOR_TOKEN, GoogleCredentials

_CLIENT_STATUSES = frozenset({"INVALID_ARGUMENT", "OUT_OF_RANGE"})


def regional_host(location: str) -> str:
    """Vertex's API host for ``location``; ``global`` has no regional prefix."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def route_url(base: str, options: VertexOptions) -> str:
    resource = (
        f"projects/{quote(options.project, safe='')}/locations/{quote(options.location, safe='')}"
        f"/endpoints/{quote(options.endpoint_id, safe='')}"
    )
    if options.route == "chat_completions":
        return f"{base}/v1beta1/{resource}/chat/completions"
    return f"{base}/v1/{resource}:streamRawPredict"


class VertexProvider:
    """One Vertex AI endpoint."""

    def __init__(
        self,
        spec: BackendSpec,
        session: aiohttp.ClientSession,
        credentials: GoogleCredentials | None = None,
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if spec.vertex is None:
            raise ValueError(f"backend {spec.name}: provider vertex needs vertex options")
        self.spec = spec
        self.options: VertexOptions = spec.vertex
        self._session = session
        self._max_event_bytes = max_event_bytes
        self._url = self._route_url(spec.url)
        self._host = _host_override(spec.url, self.options.dedicated_dns)
        self._resolved = not self.options.discover_dns or self.options.dedicated_dns is not None
        self._resolving: asyncio.Lock | None = None
        if credentials is None:
            credentials = (
                GoogleCredentials.static(EMULATOR_TOKEN)
                if self.options.emulator_credentials
                else GoogleCredentials.application_default()
            )
        self._credentials = credentials

    def _route_url(self, base: str) -> str:
        if self.options.route == "predict_embeddings":
            return vertex_embeddings.predict_url(base, self.options, self.spec.served_model)
        return route_url(base, self.options)

    def passthrough(self, kind: Kind) -> bool:
        if self.options.route == "predict_embeddings":
            return False
        return self.options.route == "stream_raw_predict" or kind is Kind.CHAT

    async def probe(self) -> Probe:
        """Vertex has no cheap per-endpoint health call on the prediction API and
        a probe prediction costs tokens; live traffic (breaker, outlier
        detection) judges these endpoints."""
        return Probe(healthy=True)

    async def close(self) -> None:
        """The session is shared per host and closed by its owner."""
        await self._credentials.close()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        if self.options.route == "chat_completions" and request.kind is not Kind.CHAT:
            raise BackendError(
                FailureClass.SERVER,
                f"backend {self.spec.name} serves chat only (route chat_completions)",
            )
        if self.options.route == "predict_embeddings" and request.kind is not Kind.EMBEDDING:
            raise BackendError(
                FailureClass.SERVER,
                f"backend {self.spec.name} serves embeddings only (route predict_embeddings)",
            )
        if not self._resolved:
            await self._discover_dns()
        headers = await self._credentials.headers()
        if self._host is not None:
            headers["Host"] = self._host
        headers["Content-Type"] = "application/json"
        headers.update(IDENTITY)
        headers.update(trace_headers())  # W3C trace context (regions.trace_context)
        if request.kind is Kind.EMBEDDING:
            async for event in self._embed(request, headers):
                yield event
            return
        body = orjson.dumps(build_body(request, self.spec.served_model))
        headers["Accept"] = "text/event-stream"
        decoder = PayloadDecoder(
            request.kind is Kind.CHAT,
            self.passthrough(request.kind),
            self._max_event_bytes,
            request.choices,
        )
        with TRANSPORT_ERRORS:
            async with await self._post(self._url, body, headers) as resp:
                if resp.status != 200:
                    raise response_error(resp.status, resp.headers, await _read(resp))
                check_identity(resp)
                async for piece in body_pieces(resp, decoder):
                    for event in decoder.feed(piece):
                        yield event
                    if decoder.done:
                        await drain(resp)
                        return
                for event in decoder.close():
                    yield event

    async def _embed(
        self, request: GenerationRequest, headers: dict[str, str]
    ) -> AsyncIterator[Event]:
        """One ``:rawPredict`` with the client's embeddings body, or ``:predict`` with
        its translation (module docstring)."""
        if request.body is None:
            raise BackendError(FailureClass.SERVER, "an embedding request without its body")
        headers["Accept"] = "application/json"
        if self.options.route == "predict_embeddings":
            client = request.body
            async for event in embeddings.translated(
                vertex_embeddings.request_bodies(client, self.spec.name, self.spec.served_model),
                lambda body, budget: self._predict(body, headers, budget),
                lambda parts: vertex_embeddings.answer(parts, client),
            ):
                yield event
            return
        body = embeddings.body(dict(request.body), self.spec.served_model)
        url = self._url.removesuffix(":streamRawPredict") + ":rawPredict"  # same endpoint
        with TRANSPORT_ERRORS:
            async with await self._post(url, body, headers) as resp:
                if resp.status != 200:
                    raise response_error(resp.status, resp.headers, await _read(resp))
                check_identity(resp)
                async for event in embeddings.events(resp, request.choices):
                    yield event

    async def _predict(
        self, body: bytes, headers: dict[str, str], budget: embeddings.ReadBudget
    ) -> bytes:
        """One ``:predict`` answer's body (route ``predict_embeddings``)."""
        with TRANSPORT_ERRORS:
            async with await self._post(self._url, body, headers) as resp:
                if resp.status != 200:
                    raise response_error(resp.status, resp.headers, await _read(resp))
                check_identity(resp)
                return await embeddings.read_whole(resp, budget)

    async def _discover_dns(self) -> None:
        """Read the endpoint resource's ``dedicatedEndpointDns`` once (the lookup goes
        to the backend's url, the regional management host), then send predictions
        there: to ``https://{dns}``, or, when the url is an emulator or proxy, to the
        url with ``Host: {dns}``. The format may carry a scheme
        (aiplatform_v1/types/endpoint.py documents ``https://{endpoint_id}.{region}-{uid}
        .prediction.vertexai.goog``); the SDK prepends ``https://`` to the value."""
        if self._resolving is None:
            self._resolving = asyncio.Lock()
        async with self._resolving:
            if self._resolved:
                return
            o = self.options
            url = (
                f"{self.spec.url}/v1/projects/{quote(o.project, safe='')}/locations/"
                f"{quote(o.location, safe='')}/endpoints/{quote(o.endpoint_id, safe='')}"
            )
            headers = {**await self._credentials.headers(), **IDENTITY}
            try:
                async with self._session.get(url, headers=headers) as resp:
                    payload = await _read(resp)
                    if resp.status != 200:
                        raise response_error(resp.status, resp.headers, payload)
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise BackendError(FailureClass.CONNECT, f"endpoint lookup: {exc!r}") from None
            try:
                resource: Any = orjson.loads(payload)
            except orjson.JSONDecodeError:
                resource = None
            dns = resource.get("dedicatedEndpointDns") if isinstance(resource, dict) else None
            if not isinstance(dns, str) or not dns:
                raise BackendError(
                    FailureClass.SERVER,
                    f"endpoint {o.endpoint_id} has no dedicatedEndpointDns: not a dedicated "
                    "endpoint, and the shared regional host does not stream",
                )
            dns = dns.removeprefix("https://").strip("/")
            if _shared(self.spec.url):
                self._url = self._route_url(f"https://{dns}")
            else:
                self._host = _host_override(self.spec.url, dns)
            self._resolved = True

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """The response; a 401 refreshes the token and sends once more
        (``regions.vertex_auth``: as google-auth's AuthorizedSession)."""
        resp = await self._session.post(
            url, data=body, headers=headers, auto_decompress=False, allow_redirects=False
        )
        if resp.status != 401 or not self._credentials.refreshable:
            return resp
        await _read(resp)  # bounded; frees the connection for the retry
        resp.release()
        retry = await self._credentials.refreshed(headers) or {}
        return await self._session.post(
            url,
            data=body,
            headers={**headers, **retry},
            auto_decompress=False,
            allow_redirects=False,
        )


def _host_override(url: str, dns: str | None) -> str | None:
    """The ``Host`` a dedicated endpoint needs when ``url`` connects elsewhere
    (an emulator, a proxy, a Private Service Connect address)."""
    if dns is None or URL(url).host == dns:
        return None
    return dns


def _shared(url: str) -> bool:
    host = URL(url).host or ""
    return host == "aiplatform.googleapis.com" or host.endswith("-aiplatform.googleapis.com")


def classify(status: int, rpc_status: str) -> FailureClass:
    """A Vertex error's failure class from its HTTP status and google.rpc status."""
    if status == 429 or rpc_status == "RESOURCE_EXHAUSTED":
        return FailureClass.OVERLOADED
    if status == 504 or rpc_status == "DEADLINE_EXCEEDED":
        return FailureClass.TIMEOUT
    if rpc_status in _CLIENT_STATUSES:
        return FailureClass.CLIENT
    if rpc_status == "FAILED_PRECONDITION":
        return FailureClass.SERVER  # e.g. no model deployed on the endpoint
    return classify_status(status)


def response_error(status: int, headers: Mapping[str, str], payload: bytes) -> BackendError:
    try:
        parsed: Any = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        parsed = {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        error = {}
    rpc_status = str(error.get("status") or "")
    message = str(error.get("message") or "")
    name = rpc_status or "error"
    return BackendError(
        classify(status, rpc_status),
        f"Vertex {name} (HTTP {status})" + (f": {message[:300]}" if message else ""),
        status=status,
        retry_after=parse_retry_after(headers.get("Retry-After")),
    )


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await read_capped(resp)
    except (aiohttp.ClientError, ConnectionError):
        return b""
