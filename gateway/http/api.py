"""The OpenAI-compatible HTTP API: the edge stage of the pipeline.

``serve`` is the whole request path in order (docs/design.md §3): authenticate,
read and validate, narrow residency, route, execute until a first token, then
stream (or collect). Response headers wait for the first token, so a request
that no backend could serve gets a real error status. Each stage lives in its
own module; this one only sequences them and turns their errors into OpenAI
error responses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

import orjson
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.typedefs import Handler

from failover.executor import ExecutionFailed
from gateway.app.lifecycle import Lifecycle
from gateway.app.runtime import Runtime
from gateway.http.body import BodyRejected, read_body
from gateway.http.chunks import ChunkWriter
from gateway.http.embeddings import embeddings
from gateway.http.errors import INVALID_REQUEST, error_response
from gateway.http.refusal import refuse
from gateway.http.responses import responses
from gateway.http.schema import BadRequest, parse_request
from gateway.http.streaming import collect, stream
from gateway.observe import tracing
from gateway.observe.access_log import valid_request_id
from gateway.pipeline.core import RESIDENCY_HEADER, Caller, Pipeline
from gateway.security.keys import KeyExpired
from gateway.security.tls import CertificateRefused, http_identities
from regions.request import Kind
from routing.plan import RoutingError

RUNTIME = web.AppKey("runtime", Runtime)
PIPELINE = web.AppKey("pipeline", Pipeline)  # the one gateway.app.build made over RUNTIME

log = logging.getLogger("meridian.http")

SESSION_HEADER = "x-meridian-session"
# What admit() refused, as the metrics' and access log's reason.
_ADMIT_REASON = {400: INVALID_REQUEST, 401: "invalid_api_key", 503: "shutting_down"}


def routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions, expect_handler=expect_continue)
    app.router.add_post("/v1/completions", completions, expect_handler=expect_continue)
    app.router.add_post("/v1/embeddings", embeddings, expect_handler=expect_continue)
    app.router.add_post("/v1/responses", responses, expect_handler=expect_continue)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, Kind.CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, Kind.COMPLETION)


def text_header(request: web.Request, name: str) -> str | None:
    """A header the gateway reads as text: at most one, and UTF-8. aiohttp hands
    other bytes over as lone surrogates, which nothing downstream can encode; two
    residency headers would leave one narrowing silently ignored."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"send at most one {name} header", name)
    if not values:
        return None
    try:
        values[0].encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"the {name} header is not valid UTF-8", name) from None
    return values[0]


def admit(
    request: web.Request, pipeline: Pipeline, headers: dict[str, str]
) -> Caller | web.Response:
    """The checks that need no body: draining (503), one valid API key (400/401)."""
    if pipeline.lifecycle.draining:
        return shutting_down(headers)
    presented = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(presented) > 1:
        # Two keys: which one a proxy on the way honoured is anyone's guess.
        return error_response(
            400, "send exactly one Authorization header", INVALID_REQUEST, headers=headers
        )
    try:
        caller = pipeline.authenticate(
            presented[0] if presented else None, http_identities(request.transport)
        )
    except KeyExpired as exc:
        return error_response(401, str(exc), "invalid_api_key", headers=headers)
    except CertificateRefused as exc:  # even with a good key: the listener requires the cert
        return error_response(401, str(exc), "invalid_client_certificate", headers=headers)
    if caller is None:
        return error_response(
            401, "Incorrect or missing API key.", "invalid_api_key", headers=headers
        )
    return caller


def admitted(
    request: web.Request,
    pipeline: Pipeline,
    headers: dict[str, str],
    request_id: str,
    *,
    client: str,
    arrived: float,
) -> Caller | web.Response:
    """:func:`admit`, its refusal counted and logged like every other request's."""
    caller = admit(request, pipeline, headers)
    if isinstance(caller, web.Response):
        reason = _ADMIT_REASON.get(caller.status, "")
        pipeline.refused(request_id, caller.status, reason, client=client, arrived=arrived)
    return caller


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: the client waits for our word before sending the
    body, so refuse (auth, draining, a declared size over the limit) before it."""
    rt = request.app[RUNTIME]
    headers = {"x-request-id": uuid.uuid4().hex}
    refusal: web.Response | None = None
    admitted = admit(request, request.app[PIPELINE], headers)
    if isinstance(admitted, web.Response):
        refusal = admitted
    elif request.version != HttpVersion11:
        return None  # HTTP/1.0 has no 100 Continue: the body simply follows
    elif request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        expectation = "the only expectation supported is 100-continue"
        refusal = error_response(417, expectation, "expectation_failed", headers=headers)
    elif (request.content_length or 0) > rt.config.limits.max_body_bytes:
        big = BodyRejected.too_large(rt.config.limits)
        refusal = error_response(big.status, big.message, big.code, headers=headers)
    if refusal is not None:
        refusal.force_close()  # the body may follow anyway: do not read it as a request
        return refusal
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not part of the response
    return None


def new_request_id() -> str:
    """128 random bits in 32 hex digits, as ``uuid4().hex`` but without building a UUID
    (a quarter of its cost); unique as a UUID4 is, by its randomness."""
    return os.urandom(16).hex()


def request_id_of(request: web.Request) -> str:
    """The client's ``x-request-id`` when it is one plain, short token; else a new one."""
    given = request.headers.getall("x-request-id", [])
    return given[0] if len(given) == 1 and valid_request_id(given[0]) else new_request_id()


async def serve(request: web.Request, kind: Kind) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    arrived = time.monotonic()
    pipeline = request.app[PIPELINE]
    request_id = request_id_of(request)
    headers = {"x-request-id": request_id}
    client = request.remote or ""
    tracing.begin(
        rt.tracing, request.headers.get("traceparent"), request.headers.get("tracestate"), arrived
    )
    caller = admitted(request, pipeline, headers, request_id, client=client, arrived=arrived)
    if isinstance(caller, web.Response):
        return caller
    tenant = caller.tenant.name
    model = ""
    try:
        body = await read_body(request, rt.config.limits)
        gen = parse_request(
            kind,
            body,
            request_id=request_id,
            tenant=caller.tenant.name,
            residency=pipeline.residency(caller, text_header(request, RESIDENCY_HEADER)),
            session=text_header(request, SESSION_HEADER),
            key_digest=caller.key_digest,
        )
        model = gen.model
        plan = pipeline.plan(gen, caller)
    except (BodyRejected, BadRequest, RoutingError) as exc:
        return refuse(
            pipeline, exc, request_id, tenant, headers, model=model, client=client, arrived=arrived
        )
    execution = pipeline.execution(gen, plan)
    async with pipeline.serving(execution, client=client, arrived=arrived) as outcome:
        outcome.request_bytes = len(body)  # cross-region transfer (config cost)
        try:
            head = await execution.start()
        except ExecutionFailed as exc:
            outcome.status = exc.status
            outcome.reason = exc.code
            headers["x-meridian-attempts"] = str(len(execution.attempts))
            return error_response(
                exc.status, exc.message, exc.code, retry_after=exc.retry_after, headers=headers
            )
        except asyncio.CancelledError:
            if not cut_by_drain(rt.lifecycle):
                raise
            outcome.status = 503
            return shutting_down(headers)
        # From arrival: the TTFT a client sees includes the edge, parsing and routing.
        pipeline.first_token(execution, time.monotonic() - arrived)
        serving = execution.serving
        assert serving is not None  # start() returned: an attempt is serving
        backend = serving.backend
        headers.update(
            {
                "x-meridian-backend": backend.name,
                "x-meridian-region": backend.region.name,
                "x-meridian-version": plan.version,
                "x-meridian-attempts": str(len(execution.attempts)),
            }
        )
        if caller.tenant.explain:
            headers["x-meridian-route"] = plan.explain()[:4000]
        writer = ChunkWriter(gen.kind, gen.request_id, gen.model)
        if gen.stream:
            result = await stream(
                request,
                execution,
                head,
                writer,
                headers,
                passthrough=pipeline.passthrough(execution),
                served_model=backend.served_model,
                lifecycle=rt.lifecycle,
                buffer_bytes=rt.config.limits.stream_buffer_bytes,
            )
        else:
            try:
                result = await collect(execution, head, writer, headers)
            except asyncio.CancelledError:
                if not cut_by_drain(rt.lifecycle):
                    raise
                outcome.status = 503
                return shutting_down(headers)
        outcome.status = result.status
        outcome.response_bytes = sent_bytes(result.response)
        return result.response


def sent_bytes(response: web.StreamResponse) -> int:
    """The body bytes of an answer: a stream's as written, a whole body's before it goes."""
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return len(response.body)
    return response.body_length


def cut_by_drain(lifecycle: Lifecycle) -> bool:
    """Whether the cancellation being handled is the drain's cut at the end of the
    grace period (then it is taken back, so the handler can still answer)."""
    task = asyncio.current_task()
    if not lifecycle.cutting or task is None:
        return False
    task.uncancel()
    return True


def shutting_down(headers: dict[str, str]) -> web.Response:
    """The answer of a request cut by the drain before its response started: no
    first token yet, or a non-stream answer still being generated."""
    response = error_response(
        503, "the gateway is shutting down", "shutting_down", retry_after=1, headers=headers
    )
    response.force_close()
    return response


async def list_models(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = admit(request, request.app[PIPELINE], {"x-request-id": uuid.uuid4().hex})
    if isinstance(caller, web.Response):
        return caller
    tenant = caller.tenant
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "meridian"}
        for name in sorted(rt.snapshot.models)
        if tenant.models is None or name in tenant.models
    ]
    return web.json_response({"object": "list", "data": data}, dumps=_dumps)


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}``: the model object, or OpenAI's 404 for a model this key
    may not use (the same answer as for one that does not exist)."""
    rt = request.app[RUNTIME]
    headers = {"x-request-id": uuid.uuid4().hex}
    caller = admit(request, request.app[PIPELINE], headers)
    if isinstance(caller, web.Response):
        return caller
    name = request.match_info["model"]
    allowed = caller.tenant.models
    if name not in rt.snapshot.models or (allowed is not None and name not in allowed):
        message = f"The model `{name[:256]}` does not exist."
        return error_response(404, message, "model_not_found", param="model", headers=headers)
    model = {"id": name, "object": "model", "created": 0, "owned_by": "meridian"}
    return web.json_response(model, dumps=_dumps, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app.get(RUNTIME)
    ready = rt is not None and rt.lifecycle.ready and not rt.lifecycle.draining
    detail = {
        "ready": ready,
        "draining": bool(rt and rt.lifecycle.draining),
        "revision": rt.snapshot.revision if rt else None,
        "in_flight": rt.lifecycle.in_flight if rt else 0,
        # fail-static: "degraded" (store unreachable) still serves, so still ready
        "control_plane": rt.control.status if rt and rt.control else None,
    }
    return web.json_response(detail, status=200 if ready else 503, dumps=_dumps)


def http_code(exc: web.HTTPException) -> str:
    """The error code for an HTTP-level refusal: its reason phrase in snake case, or
    the API's own code for the same refusal (a body over the size limit)."""
    if exc.status == 413:
        return BodyRejected.too_large_code
    return "_".join(exc.reason.lower().replace("-", " ").split()) or "http_error"


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown routes, wrong methods and unexpected faults in OpenAI's error shape, no traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        request_id = uuid.uuid4().hex
        headers = {"x-request-id": request_id}
        code = http_code(exc)
        pipeline = request.app.get(PIPELINE)
        if pipeline is not None and request.path.startswith("/v1/"):
            # A client's refusal by aiohttp itself (unknown route, wrong method): counted
            # and logged like the API's own; the admin listener's are not client requests.
            pipeline.refused(request_id, exc.status, code, client=request.remote or "")
        response = error_response(exc.status, exc.reason, code, headers=headers)
        if exc.status in (408, 413):
            response.force_close()
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        request_id = uuid.uuid4().hex
        request.app.logger.exception("unhandled error (request %s)", request_id)
        return error_response(
            500,
            f"internal error (request id {request_id})",
            "internal_error",
            headers={"x-request-id": request_id},
        )
