"""``POST /v1/embeddings``: the same edge, routing, limits and failover as generations.

The body is validated for what the gateway reads (``model``, ``input`` as a
string, strings, token ids or lists of them, ``encoding_format`` float or
base64, ``dimensions``, ``user``) and otherwise passed through whole. The
request asks the ``embeddings`` capability, so routing sends it only to
backends with an embeddings endpoint inside its residency (a 400 naming
``input`` when none has one). The backend's body goes back to the client
with ``model`` rewritten to the logical name; ``usage`` is the backend's.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Literal

import orjson
from aiohttp import web
from pydantic import Field, ValidationError, model_validator

from failover.executor import ExecutionFailed
from gateway.http.body import BodyRejected, read_body
from gateway.http.errors import error_response
from gateway.http.refusal import refuse
from gateway.http.schema import BadRequest, _Body, _first_error, load_object
from gateway.pipeline.core import RESIDENCY_HEADER
from regions.events import TokenDelta
from regions.request import GenerationRequest, Kind
from routing.plan import RoutingError

log = logging.getLogger("meridian.http")

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


class EmbeddingBody(_Body):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1, le=65536)
    user: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _inputs(self) -> EmbeddingBody:
        if isinstance(self.input, list):
            if not self.input:
                raise ValueError("input: send at least one input")
            if not isinstance(self.input[0], int) and len(self.input) > MAX_INPUTS:
                raise ValueError(f"input: at most {MAX_INPUTS} inputs")
        return self

    def count(self) -> int:
        if isinstance(self.input, list) and not isinstance(self.input[0], int):
            return len(self.input)
        return 1

    def text(self) -> str:
        if isinstance(self.input, str):
            return self.input
        return "".join(p for p in self.input if isinstance(p, str))


def parse(body: bytes, **fields: object) -> tuple[GenerationRequest, int]:
    try:
        parsed = EmbeddingBody.model_validate_json(body)
    except ValidationError as exc:
        raise _first_error(exc) from None
    raw = load_object(body)
    request = GenerationRequest(
        kind=Kind.EMBEDDING,
        model=parsed.model,
        prompt=parsed.text(),
        body=raw,
        needs={"embeddings": "input"},
        unresumable="an embedding is one answer",
        choices=parsed.count(),
        **fields,  # type: ignore[arg-type]
    )
    return request, parsed.count()


async def embeddings(request: web.Request) -> web.StreamResponse:
    # api.py registers this handler: its edge helpers are imported when it runs.
    from gateway.http.api import (
        PIPELINE,
        RUNTIME,
        admitted,
        cut_by_drain,
        shutting_down,
        text_header,
    )

    rt = request.app[RUNTIME]
    arrived = time.monotonic()
    pipeline = request.app[PIPELINE]
    request_id = uuid.uuid4().hex
    headers = {"x-request-id": request_id}
    client = request.remote or ""
    caller = admitted(request, pipeline, headers, request_id, client=client, arrived=arrived)
    if isinstance(caller, web.Response):
        return caller
    model = ""
    try:
        body = await read_body(request, rt.config.limits)
        gen, _ = parse(
            body,
            request_id=request_id,
            tenant=caller.tenant.name,
            residency=pipeline.residency(caller, text_header(request, RESIDENCY_HEADER)),
            affinity_key=caller.key_digest,
        )
        model = gen.model
        plan = pipeline.plan(gen, caller)
    except (BodyRejected, BadRequest, RoutingError) as exc:
        tenant = caller.tenant.name
        return refuse(
            pipeline, exc, request_id, tenant, headers, model=model, client=client, arrived=arrived
        )
    execution = pipeline.execution(gen, plan)
    async with pipeline.serving(execution, client=client) as outcome:
        outcome.request_bytes = len(body)  # cross-region transfer (config cost)
        started = time.monotonic()
        try:
            head = await execution.start()
        except ExecutionFailed as exc:
            outcome.status = exc.status
            outcome.reason = exc.code
            return error_response(
                exc.status, exc.message, exc.code, retry_after=exc.retry_after, headers=headers
            )
        except asyncio.CancelledError:
            if not cut_by_drain(rt.lifecycle):
                raise
            outcome.status = 503
            return shutting_down(headers)
        pipeline.first_token(execution, time.monotonic() - started)
        async for _ in execution.events():
            pass  # the usage after the answer, for accounting
        raw = next(e.raw for e in head if isinstance(e, TokenDelta) and e.raw)
        answer = orjson.loads(raw)
        answer["model"] = gen.model
        serving = execution.serving
        if serving is not None:
            headers["x-meridian-backend"] = serving.backend.name
            headers["x-meridian-region"] = serving.backend.region.name
        outcome.status = 200
        sent = orjson.dumps(answer)
        outcome.response_bytes = len(sent)
        return web.Response(body=sent, content_type="application/json", headers=headers)
