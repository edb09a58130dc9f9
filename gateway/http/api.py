"""The OpenAI-compatible HTTP API: the edge stage of the pipeline.

``serve`` is the whole request path in order (DESIGN.md §3): authenticate,
read and validate, narrow residency, route, execute until a first token, then
stream (or collect). Response headers wait for the first token, so a request
that no backend could serve gets a real error status. Each stage lives in its
own module; this one only sequences them and turns their errors into OpenAI
error responses.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from failover.executor import Execution, ExecutionFailed
from gateway.http.body import BodyRejected, read_body
from gateway.http.chunks import ChunkWriter
from gateway.http.errors import error_response
from gateway.http.schema import BadRequest, parse_request
from gateway.http.streaming import collect, stream
from gateway.runtime import Runtime
from regions.request import GenerationRequest, Kind
from routing.plan import RoutingError

RUNTIME = web.AppKey("runtime", Runtime)
_RESIDENCY_HEADER = "x-meridian-residency"


def routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, Kind.CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, Kind.COMPLETION)


async def serve(request: web.Request, kind: Kind) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    request_id = uuid.uuid4().hex
    headers = {"x-request-id": request_id}
    if rt.lifecycle.draining:
        return error_response(
            503, "the gateway is shutting down", "shutting_down", retry_after=1, headers=headers
        )
    auth = rt.keyring.authenticate(request.headers.get("Authorization"))
    if auth is None:
        return error_response(
            401, "Incorrect or missing API key.", "invalid_api_key", headers=headers
        )
    tenant, digest = auth
    try:
        body = await read_body(request, rt.config.limits)
        residency = tenant.residency
        if narrowing := request.headers.get(_RESIDENCY_HEADER):
            asked = _tags(narrowing)
            residency = residency.narrow(asked)
            if not residency.allowed:
                return error_response(
                    403,
                    f"{_RESIDENCY_HEADER} [{','.join(sorted(asked))}] is outside this key's "
                    f"residency policy [{tenant.residency.describe()}]; it can only narrow it",
                    "residency_violation",
                    headers=headers,
                )
        gen = parse_request(
            kind,
            body,
            request_id=request_id,
            tenant=tenant.name,
            residency=residency,
            session=request.headers.get("x-meridian-session"),
            key_digest=digest,
        )
        snapshot = rt.snapshot
        plan = rt.router.plan(snapshot, gen, tenant.models)
    except BodyRejected as exc:
        return error_response(exc.status, exc.message, exc.code, headers=headers)
    except BadRequest as exc:
        return error_response(400, exc.message, "invalid_request", param=exc.param, headers=headers)
    except RoutingError as exc:
        return error_response(
            exc.status, exc.message, exc.code, retry_after=exc.retry_after, headers=headers
        )
    with rt.lifecycle.tracking():
        return await _execute(
            request,
            rt,
            gen,
            plan.version,
            Execution(gen, plan, rt.providers, rt.timeouts, rt.metrics),
            headers,
        )


async def _execute(
    request: web.Request,
    rt: Runtime,
    gen: GenerationRequest,
    version: str,
    execution: Execution,
    headers: dict[str, str],
) -> web.StreamResponse:
    started = time.monotonic()
    in_flight = rt.metrics.in_flight.labels(gen.model)
    in_flight.inc()
    status = 200
    try:
        try:
            head = await execution.start()
        except ExecutionFailed as exc:
            status = exc.status
            headers["x-meridian-attempts"] = str(len(execution.attempts))
            return error_response(
                exc.status, exc.message, exc.code, retry_after=exc.retry_after, headers=headers
            )
        attempt = execution.attempts[-1]
        backend = attempt.backend
        rt.metrics.ttft.labels(gen.model, backend.name, backend.region.name).observe(
            time.monotonic() - started
        )
        headers.update(
            {
                "x-meridian-backend": backend.name,
                "x-meridian-region": backend.region.name,
                "x-meridian-version": version,
                "x-meridian-attempts": str(len(execution.attempts)),
            }
        )
        writer = ChunkWriter(gen.kind, gen.request_id, gen.model)
        passthrough = rt.providers[backend.name].passthrough(gen.kind)
        if gen.stream:
            result = await stream(
                request,
                execution,
                head,
                writer,
                headers,
                passthrough=passthrough,
                served_model=backend.served_model,
                lifecycle=rt.lifecycle,
                buffer_bytes=rt.config.limits.stream_buffer_bytes,
            )
        else:
            result = await collect(execution, head, writer, headers)
        status = result.status
        return result.response
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        in_flight.dec()
        serving = execution.attempts[-1] if execution.attempts else None
        name = serving.backend.name if serving else ""
        region = serving.backend.region.name if serving else ""
        rt.metrics.requests.labels(gen.model, version, name, region, str(status)).inc()
        if serving is not None:
            rt.metrics.duration.labels(gen.model, name, region).observe(time.monotonic() - started)
            if execution.usage is not None:
                rt.metrics.tokens.labels(gen.model, name, "prompt").inc(
                    execution.usage.prompt_tokens
                )
                rt.metrics.tokens.labels(gen.model, name, "completion").inc(
                    execution.usage.completion_tokens
                )


def _tags(header: str) -> frozenset[str]:
    return frozenset(t.strip() for t in header.split(",") if t.strip())


async def list_models(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    auth = rt.keyring.authenticate(request.headers.get("Authorization"))
    if auth is None:
        return error_response(401, "Incorrect or missing API key.", "invalid_api_key")
    tenant, _ = auth
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "meridian"}
        for name in sorted(rt.snapshot.models)
        if tenant.models is None or name in tenant.models
    ]
    return web.json_response({"object": "list", "data": data}, dumps=_dumps)


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
    }
    return web.json_response(detail, status=200 if ready else 503, dumps=_dumps)


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
        return error_response(exc.status, exc.reason, None)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        request.app.logger.exception("unhandled error")
        return error_response(500, "internal error", "internal_error")
