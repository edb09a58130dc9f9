"""An aiohttp server that speaks Vertex AI's prediction routes, for tests and the demo.

Vertex endpoints here serve a vLLM container behind Google's front door
(reference/protocols.md §3), so the container half — request parsing and the
OpenAI SSE it streams, deterministic text from :mod:`emulators.text`, tools,
JSON output, logprobs and ``n`` as :mod:`emulators.openai_tools` writes them,
embeddings — is the vLLM container of :mod:`emulators.containers`, the one the
SageMaker emulator runs too. Google's half is this module:

- ``POST /{v1,v1beta1}/projects/{p}/locations/{l}/endpoints/{e}/chat/completions``
  (the OpenAI-compatible chat route of Model Garden deployments);
- ``POST /{v1,v1beta1}/projects/{p}/locations/{l}/endpoints/{e}:streamRawPredict``
  and ``:rawPredict`` (the raw body to the container; chat, completion or an
  embedding by body, :func:`emulators.containers.embedding`);
- ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:predict``:
  Google's text-embedding models (``publisher_models``), on the shared
  regional host as on any (:func:`emulators.embeddings.vertex_answer`), and
  ``.../endpoints/{e}:predict`` answering the same way on an endpoint;
- a bearer-token check (401 UNAUTHENTICATED without one, or with a token not
  in ``tokens`` when that is set), the project and location in the path
  checked against the config, 404 for unknown endpoints;
- dedicated endpoints, the default (Model Garden deployments are dedicated):
  they answer on their own host,
  ``{endpoint}.{location}-{project_number}.prediction.vertexai.goog``, read
  from the ``Host`` header; a prediction sent through the shared domain
  (``{location}-aiplatform.googleapis.com``) gets Google's 400
  FAILED_PRECONDITION. A request to the emulator's bare address (an IP, as a
  Private Service Connect forwarding rule is reached) is served. ``GET`` on
  the endpoint resource returns its ``dedicatedEndpointDns``;
- errors as google.rpc.Status bodies ``{"error": {"code", "message", "status"}}``,
  including the overload message custom endpoints really send.

Faults are the shared :class:`Faults`, taken per request on arrival; a
``status`` fault answers with Google's error for that status.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from emulators import embeddings, openai_tools
from emulators.containers import (
    BadRequest,
    ContainerStream,
    Playback,
    embedding,
    fault_timing,
    parse_openai,
    play,
    reset_connection,
    rich,
)
from emulators.faults import Faults
from emulators.openai_wire import RequestError
from emulators.server import EmulatorServer

log = logging.getLogger(__name__)

_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEPLOYED_MODEL_ID = "4242424242424242424"
_SEE = " See https://developers.google.com/identity/sign-in/web/devconsole-project."
_MISSING_CREDENTIAL = (
    "Request is missing required authentication credential. Expected OAuth 2 access "
    "token, login cookie or other valid authentication credential." + _SEE
)
"""Google's 401 text for no token (GoogleCloudPlatform/generative-ai#454, from aiplatform)."""
_INVALID_CREDENTIAL = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential." + _SEE
)
"""Google's 401 text for a refused token (googleapis/java-aiplatform#1056, PredictionService)."""


@dataclass
class VertexEmulatorConfig:
    endpoints: tuple[str, ...] = ("1234567890",)
    project: str | None = None
    """When set, requests for other projects get 403 PERMISSION_DENIED."""
    location: str | None = None
    """When set, requests for other locations get 400 INVALID_ARGUMENT."""
    tokens: tuple[str, ...] | None = None
    """Accepted bearer tokens; None accepts any non-empty token."""
    undeployed: tuple[str, ...] = ()
    """Endpoints that exist with no model deployed: 400 FAILED_PRECONDITION."""
    project_number: str = "123456789012"
    shared: tuple[str, ...] = ()
    """Endpoints that are not dedicated: served on the shared domain too."""
    served_model: str = "meta-llama/Llama-3.1-8B-Instruct"
    publisher_models: tuple[str, ...] = ("text-embedding-005", "gemini-embedding-001")
    """Google's embedding models ``:predict`` serves."""
    max_instances: int = 250
    """Instances per ``:predict`` (text-embedding-005's limit)."""
    ttft_s: float = 0.0
    itl_s: float = 0.0
    default_max_tokens: int = 32
    name: str = "vertex"


@dataclass
class VertexEmulatorStats:
    requests: int = 0
    completed: int = 0
    disconnects: int = 0
    running: int = 0
    generation_tokens: int = 0
    last_request: dict[str, Any] | None = None
    last_path: str = ""
    last_token: str = ""
    last_host: str = ""


def google_error(
    status: int, message: str, retry_after: float | None = None, rpc: str | None = None
) -> web.Response:
    """A google.rpc.Status error body, as Google's JSON APIs send it; ``rpc``
    overrides the canonical code the HTTP status implies."""
    body = {"error": {"code": status, "message": message, "status": rpc or _rpc_status(status)}}
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        )
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers=headers,
        content_type="application/json",
        charset="UTF-8",
    )


def _rpc_status(status: int) -> str:
    if status in _RPC_STATUS:
        return _RPC_STATUS[status]
    return "FAILED_PRECONDITION" if 400 <= status < 500 else "UNKNOWN"


class _Reject(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


class VertexEmulator(EmulatorServer):
    """One emulated Vertex AI regional API host."""

    def __init__(self, config: VertexEmulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or VertexEmulatorConfig()
        self.faults = Faults()
        self.stats = VertexEmulatorStats()

    client_max_size = 8 * 1024 * 1024

    def add_routes(self, app: web.Application) -> None:
        base = "/{version:v1|v1beta1}/projects/{project}/locations/{location}/endpoints"
        app.router.add_post(base + "/{endpoint}/chat/completions", self._chat_route)
        app.router.add_post(base + "/{endpoint_method}", self._method_route)
        app.router.add_get(base + "/{endpoint}", self._get_endpoint)
        publisher = "/{version:v1|v1beta1}/projects/{project}/locations/{location}/publishers"
        app.router.add_post(publisher + "/google/models/{model_method}", self._publisher_route)

    def bad_request(self, message: str) -> web.Response:
        return google_error(400, message)

    # -- prediction routes ---------------------------------------------------------

    async def _chat_route(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, request.match_info["endpoint"], chat_only=True)

    async def _method_route(self, request: web.Request) -> web.StreamResponse:
        endpoint, _, method = request.match_info["endpoint_method"].partition(":")
        if method not in ("streamRawPredict", "rawPredict", "predict"):
            self.stats.requests += 1
            return google_error(404, f"Method {method or '(none)'} not found on endpoints.")
        if method == "predict":
            return await self._serve(request, endpoint, chat_only=False, predict=True)
        return await self._serve(request, endpoint, chat_only=False, raw=method == "rawPredict")

    async def _publisher_route(self, request: web.Request) -> web.Response:
        """``:predict`` on a Google embedding model: auth, project, location, model,
        faults, then :func:`emulators.embeddings.vertex_answer`."""
        stats, config, info = self.stats, self.config, request.match_info
        stats.requests += 1
        stats.last_path = request.path
        stats.last_host = request.host
        model, _, method = info["model_method"].partition(":")
        resource = f"projects/{info['project']}/locations/{info['location']}"
        token = _bearer(request)
        if not token:
            return google_error(401, _MISSING_CREDENTIAL)
        if config.tokens is not None and token not in config.tokens:
            return google_error(401, _INVALID_CREDENTIAL)
        stats.last_token = token
        if config.project is not None and info["project"] != config.project:
            message = (
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/{resource}/publishers/google/models/{model}' "
                "(or it may not exist)."
            )
            return google_error(403, message)
        if config.location is not None and info["location"] != config.location:
            message = f"Location {info['location']} does not match this host ({config.location})."
            return google_error(400, message)
        if method != "predict":
            return google_error(404, f"Method {method or '(none)'} not found on models.")
        if model not in config.publisher_models:
            # the emulator's own text: a model the location does not serve
            return google_error(
                404, f"Publisher Model `{resource}/publishers/google/models/{model}` not found."
            )
        raw = await request.read()
        fault = self.faults.take()
        if fault is not None and fault.status is not None:
            message = _fault_message(fault.status, model)
            return google_error(fault.status, message, fault.retry_after)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return google_error(400, "Invalid JSON payload received.")
        if isinstance(payload, dict):
            stats.last_request = payload
        try:
            # Google's "Get text embeddings": gemini-embedding-001 takes one instance
            most = 1 if model.startswith("gemini-embedding-") else config.max_instances
            answer = embeddings.vertex_answer(payload, most)
        except RequestError as exc:
            return google_error(exc.status, exc.message)
        ttft, _ = fault_timing(self.config.ttft_s, self.config.itl_s, fault)
        return await self._embedding(request, orjson.dumps(answer), ttft, fault)

    def dedicated_dns(self, endpoint: str, location: str) -> str:
        """The endpoint's ``dedicatedEndpointDns``, in the form Google's own
        FAILED_PRECONDITION message quotes (no scheme)."""
        return f"{endpoint}.{location}-{self.config.project_number}.prediction.vertexai.goog"

    async def _get_endpoint(self, request: web.Request) -> web.Response:
        """The endpoint resource (REST ``projects.locations.endpoints.get``), with the
        fields google-cloud-aiplatform reads: ``dedicatedEndpointEnabled`` and
        ``dedicatedEndpointDns`` (aiplatform_v1/types/endpoint.py)."""
        self.stats.requests += 1
        info = request.match_info
        if not _bearer(request):
            return google_error(401, _MISSING_CREDENTIAL)
        endpoint, location = info["endpoint"], info["location"]
        resource = f"projects/{info['project']}/locations/{location}/endpoints/{endpoint}"
        if endpoint not in self.config.endpoints:
            return google_error(404, f"Endpoint `{resource}` not found.")
        body: dict[str, Any] = {
            "name": f"projects/{self.config.project_number}/locations/{location}"
            f"/endpoints/{endpoint}",
            "displayName": endpoint,
        }
        if endpoint not in self.config.shared:
            body["dedicatedEndpointEnabled"] = True
            body["dedicatedEndpointDns"] = self.dedicated_dns(endpoint, location)
        return web.json_response(body)

    async def _serve(
        self,
        request: web.Request,
        endpoint: str,
        *,
        chat_only: bool,
        raw: bool = False,
        predict: bool = False,
    ) -> web.StreamResponse:
        try:
            stream, fault = await self._admit(request, endpoint, chat_only, predict)
        except _Reject as reject:
            return reject.response
        ttft, itl = fault_timing(self.config.ttft_s, self.config.itl_s, fault)
        if isinstance(stream, bytes):
            return await self._embedding(request, stream, ttft, fault)
        if isinstance(stream, dict):
            # Tools, JSON output, logprobs, n...: the vLLM container's way. The raw
            # routes hand back the container's bytes, streamed or whole as it wrote them.
            reset = fault.reset_after_tokens if fault is not None else None
            chat, model = "messages" in stream, self.config.served_model
            response, produced = await openai_tools.respond(
                request, stream, chat, model, self.config.default_max_tokens, reset
            )
            self.stats.completed += 1
            self.stats.generation_tokens += produced
            return response
        if raw or not stream.job.stream:
            return await self._complete(request, stream, ttft, itl, fault)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        response.enable_chunked_encoding()
        transport = request.transport
        if transport is not None:
            self._inflight.add(transport)
        self.stats.running += 1
        playback = Playback.of(ttft, itl, fault)
        try:
            await response.prepare(request)
            if await play(request, response, stream, playback, _identity):
                self.stats.completed += 1
        except asyncio.CancelledError:
            if not self._closing:
                self.stats.disconnects += 1
            raise
        except ConnectionError:
            if not self._closing:
                self.stats.disconnects += 1
        finally:
            self.stats.running -= 1
            self.stats.generation_tokens += playback.sent
            if transport is not None:
                self._inflight.discard(transport)
        return response

    async def _admit(
        self, request: web.Request, endpoint: str, chat_only: bool, predict: bool = False
    ) -> tuple[ContainerStream | bytes | dict[str, Any], Faults | None]:
        """The container's work — a stream, a whole embedding answer, or a body
        :mod:`emulators.openai_tools` answers — and the faults. ``predict``: the
        endpoint serves a Google-format embedding model (``:predict``)."""
        stats, config, info = self.stats, self.config, request.match_info
        stats.requests += 1
        stats.last_path = request.path
        stats.last_host = request.host
        token = _bearer(request)
        if not token:
            raise _Reject(google_error(401, _MISSING_CREDENTIAL))
        if config.tokens is not None and token not in config.tokens:
            raise _Reject(google_error(401, _INVALID_CREDENTIAL))
        stats.last_token = token
        resource = f"projects/{info['project']}/locations/{info['location']}/endpoints/{endpoint}"
        if config.project is not None and info["project"] != config.project:
            # Google's form, as its API answers a project the caller may not use
            # (quoted in songquanpeng/one-api PR #1621)
            message = (
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/{resource}' (or it may not exist)."
            )
            raise _Reject(google_error(403, message))
        if config.location is not None and info["location"] != config.location:
            message = f"Location {info['location']} does not match this host ({config.location})."
            raise _Reject(google_error(400, message))
        if endpoint in config.undeployed:
            # The code is Google's (400 FAILED_PRECONDITION, "Generative AI on Vertex AI
            # inference API errors" table); no source was found for the message text,
            # so this one is the emulator's own.
            message = f"Endpoint `{resource}` has no deployed model to serve the request."
            raise _Reject(google_error(400, message, rpc="FAILED_PRECONDITION"))
        if endpoint not in config.endpoints:
            raise _Reject(google_error(404, f"Endpoint `{resource}` not found."))
        self._check_host(request, endpoint, info["location"], resource)
        raw = await request.read()
        fault = self.faults.take()
        if fault is not None and fault.status is not None:
            message = _fault_message(fault.status, endpoint)
            raise _Reject(google_error(fault.status, message, fault.retry_after))
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Reject(google_error(400, "Invalid JSON payload received.")) from None
        if not isinstance(payload, dict):
            raise _Reject(google_error(400, "Invalid JSON payload: expected an object."))
        stats.last_request = payload
        if chat_only and "messages" not in payload:
            raise _Reject(google_error(400, "chat/completions requires `messages`."))
        if predict:
            try:
                predicted = embeddings.vertex_answer(payload, config.max_instances)
            except RequestError as exc:
                raise _Reject(google_error(exc.status, exc.message)) from None
            return orjson.dumps(predicted), fault
        try:
            answer = embedding("vllm", payload, config.served_model)
            if answer is not None:
                return answer, fault
            asked = rich("vllm", payload, config.served_model)
            if asked is not None:
                return asked, fault
            job = parse_openai(payload, config.served_model, config.default_max_tokens, False)
        except BadRequest as exc:
            raise _Reject(google_error(400 if exc.status < 500 else 500, exc.message)) from None
        return ContainerStream("vllm", job), fault

    async def _embedding(
        self, request: web.Request, answer: bytes, ttft: float, fault: Faults | None
    ) -> web.Response:
        """An embedding is answered whole: vLLM on either raw route, or ``:predict``."""
        if ttft > 0:
            await asyncio.sleep(ttft)
        if fault is not None and fault.reset_after_tokens is not None:
            reset_connection(request)
            return web.Response()
        self.stats.completed += 1
        return web.Response(body=answer, content_type="application/json")

    async def _complete(
        self,
        request: web.Request,
        stream: ContainerStream,
        ttft: float,
        itl: float,
        fault: Faults | None,
    ) -> web.Response:
        delay = ttft + itl * max(len(stream.tokens) - 1, 0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is not None and fault.reset_after_tokens is not None:
            reset_connection(request)
            return web.Response()
        self.stats.completed += 1
        self.stats.generation_tokens += len(stream.tokens)
        return web.Response(body=stream.complete(), content_type="application/json")

    def _check_host(
        self, request: web.Request, endpoint: str, location: str, resource: str
    ) -> None:
        """Dedicated endpoints answer on their own host only; see the module docstring."""
        host = (request.host or "").rsplit(":", 1)[0].lower()
        if endpoint in self.config.shared:
            return
        dns = self.dedicated_dns(endpoint, location)
        if host.endswith("aiplatform.googleapis.com"):
            # Google's text and code, as its API returns them (gRPC FailedPrecondition,
            # quoted in github.com/yanolja/ogem issue #110); the field doc in
            # aiplatform_v1/types/endpoint.py: "you won't be able to send request to
            # the shared DNS {region}-aiplatform.googleapis.com".
            message = (
                "Dedicated Endpoint cannot be accessed through the shared Vertex AI domain "
                f"aiplatform.googleapis.com. Please access the endpoint using its dedicated "
                f"domain name '{dns}'"
            )
            raise _Reject(google_error(400, message, rpc="FAILED_PRECONDITION"))
        if host.endswith(".prediction.vertexai.goog") and host != dns:
            # No Google text found for a dedicated host that names another endpoint.
            raise _Reject(google_error(404, f"Endpoint `{resource}` not found."))


def _fault_message(status: int, endpoint: str) -> str:
    if status == 429:
        return (
            "Rate of traffic exceeds capacity. Ramp your traffic up more slowly. "
            f"endpoint_id: {endpoint}, deployed_model_id: {_DEPLOYED_MODEL_ID}."
        )
    if status == 503:
        return "The service is currently unavailable."
    return f"emulated fault: HTTP {status}"


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def _identity(data: bytes) -> bytes:
    return data


async def serve_forever(host: str, port: int, config: VertexEmulatorConfig) -> None:
    """Run one emulator until cancelled (``meridian emulate vertex --port N``)."""
    emulator = VertexEmulator(config)
    url = await emulator.start(host, port)
    log.info(
        "%s emulator serving endpoints %s at %s", config.name, ", ".join(config.endpoints), url
    )
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
