"""An aiohttp server that speaks vLLM's OpenAI-compatible wire protocol.

It stands in for a self-hosted vLLM server in ``meridian demo``, the tests and
the benchmark, so it copies what the gateway and the stock ``openai`` client
see from real vLLM (reference/protocols.md §5): SSE ``data: {json}`` events, a
role chunk first, ``finish_reason`` on the last content chunk, the
``choices: []`` usage chunk, ``[DONE]``, vLLM's error bodies, ``/v1/models``
and the ``vllm:`` Prometheus gauges the router reads for load. The wire format
itself (validation, error bodies, chunk bytes) is
:mod:`emulators.openai_wire`; this module is the server around it:
routes, timing, faults, stats and metrics.

The text is :mod:`emulators.text`, a pure function of the prompt, so a
stream resumed with ``continue_final_message`` continues exactly where the
interrupted one stopped. Faults (:mod:`emulators.faults`) are taken
per request when it arrives.

A request's life: parse and validate -> take faults -> wait for one of
``max_num_seqs`` slots (counted as *waiting*) -> *running*: sleep ``ttft_s``,
then one token per ``itl_s`` on a fixed schedule (no drift at 200 streams) ->
usage chunk, ``[DONE]``. The handler is cancelled when the client goes away
(``handler_cancellation``), which is how a stalled stream notices a disconnect.
Per token the only new work is serialising the token: the rest of each chunk
is pre-serialised once per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from emulators import embeddings, openai_tools, text
from emulators.faults import Faults
from emulators.openai_wire import (
    SSE_DONE,
    CompletionJob,
    RequestError,
    StreamFrames,
    chunk_envelope,
    completion_body,
    error_response,
    parse_job,
)
from emulators.server import EmulatorServer

log = logging.getLogger(__name__)

_YIELD_EVERY = 16  # with no inter-token delay, let other streams run this often


@dataclass
class EmulatorConfig:
    """One server's shape.

    ``default_max_tokens`` stands in for the model reaching EOS: a request
    without a limit stops there with ``finish_reason="stop"``, one cut by its
    own ``max_tokens`` ends with ``"length"``. ``max_num_seqs`` is vLLM's batch
    size: requests beyond it queue and show as ``num_requests_waiting``, the
    load signal the router reads. ``max_model_len`` is larger than real models'
    so long test streams pass; lower it to test context-length errors.
    ``name`` only labels log lines.
    """

    served_models: tuple[str, ...] = ("meta-llama/Llama-3.1-8B-Instruct",)
    ttft_s: float = 0.0
    itl_s: float = 0.0
    default_max_tokens: int = 32
    max_num_seqs: int = 256
    name: str = "vllm"
    max_model_len: int = 1 << 20


@dataclass
class EmulatorStats:
    """What the emulator saw, for tests to assert on (also ``GET /_emulator/stats``).

    ``last_request`` is the last generation body as parsed JSON, so a test can
    check what the gateway actually sent (model, continue_final_message...).
    ``disconnects`` counts clients that left mid-request; injected resets and
    :meth:`VllmEmulator.stop` are not counted. ``tokens_sent`` grows live, per
    token written, so a test can watch backpressure stop a stream.
    """

    requests: int = 0
    completed: int = 0
    disconnects: int = 0
    running: int = 0
    waiting: int = 0
    last_request: dict[str, Any] | None = None
    prompt_tokens: int = 0
    tokens_sent: int = 0


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one request is served: its timing and where an injected stall or reset hits."""

    ttft: float
    itl: float
    stall_at: int | None = None
    reset_at: int | None = None


class VllmEmulator(EmulatorServer):
    """One emulated vLLM server; start several for several backends."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or EmulatorConfig()
        if not self.config.served_models:
            raise ValueError("an emulator needs at least one served model")
        self.faults = Faults()
        self.stats = EmulatorStats()
        self._slots = asyncio.Semaphore(self.config.max_num_seqs)
        self._finished: dict[str, int] = {}
        self._created = int(time.time())
        model = self.config.served_models[0]
        escaped = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        self._labels = f'engine="0",model_name="{escaped}"'

    client_max_size = 32 * 1024 * 1024

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", partial(self._generate, chat=True))
        app.router.add_post("/v1/completions", partial(self._generate, chat=False))
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)

    def bad_request(self, message: str) -> web.Response:
        return error_response(400, message, err_type="BadRequestError")

    # -- generation -------------------------------------------------------------

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return error_response(400, f"invalid JSON body: {exc}", err_type="BadRequestError")
        if isinstance(payload, dict):
            stats.last_request = payload
        fault = self.faults.take()
        if fault is not None and fault.status is not None:
            message = f"emulated fault: HTTP {fault.status}"
            return error_response(fault.status, message, retry_after=fault.retry_after)
        if openai_tools.rich(payload) and isinstance(payload, dict):
            # Tools, JSON output, logprobs, n, batches, content parts: vLLM's way.
            model = payload.get("model") or self.config.served_models[0]
            if model not in self.config.served_models:
                message = f"The model `{model}` does not exist."
                return error_response(404, message, err_type="NotFoundError", param="model")
            reset = fault.reset_after_tokens if fault is not None else None
            response, produced = await openai_tools.respond(
                request, payload, chat, str(model), self.config.default_max_tokens, reset
            )
            stats.tokens_sent += produced
            stats.completed += 1
            return response
        try:
            job = parse_job(
                payload,
                chat,
                served_models=self.config.served_models,
                default_max_tokens=self.config.default_max_tokens,
                max_model_len=self.config.max_model_len,
            )
        except RequestError as exc:
            err_type = "NotFoundError" if exc.status == 404 else "BadRequestError"
            return error_response(exc.status, exc.message, err_type=err_type, param=exc.param)
        stats.prompt_tokens += job.prompt_tokens
        transport = request.transport
        if transport is not None:
            self._inflight.add(transport)
        stats.waiting += 1
        acquired = False
        try:
            await self._slots.acquire()
            acquired = True
            stats.waiting -= 1
            stats.running += 1
            serve = self._stream if job.stream else self._complete
            response, done = await serve(request, job, self._plan(fault))
        except asyncio.CancelledError:
            if not self._closing:
                stats.disconnects += 1
            raise
        finally:
            if acquired:
                stats.running -= 1
                self._slots.release()
            else:
                stats.waiting -= 1
            if transport is not None:
                self._inflight.discard(transport)
        if done:
            stats.completed += 1
            self._finished[job.finish_reason] = self._finished.get(job.finish_reason, 0) + 1
        return response

    def _plan(self, fault: Faults | None) -> _Plan:
        config = self.config
        if fault is None:
            return _Plan(config.ttft_s, config.itl_s)
        ttft = fault.ttft_s if fault.ttft_s is not None else config.ttft_s
        itl = next(v for v in (fault.drip_interval_s, fault.itl_s, config.itl_s) if v is not None)
        return _Plan(ttft, itl, fault.stall_after_tokens, fault.reset_after_tokens)

    async def _stream(
        self, request: web.Request, job: CompletionJob, plan: _Plan
    ) -> tuple[web.StreamResponse, bool]:
        """Serve SSE; True when it ended normally with ``[DONE]``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        frames = StreamFrames(job, chunk_envelope(job.chat, job.model))
        tokens = text.iter_tokens(job.context)
        last = job.max_tokens - 1
        stats, loop = self.stats, asyncio.get_running_loop()
        try:
            await response.prepare(request)
            if plan.ttft > 0:
                await asyncio.sleep(plan.ttft)
            due, itl = loop.time(), plan.itl
            for i in range(job.max_tokens + 1):
                if i == plan.stall_at:
                    await asyncio.Event().wait()  # until the client leaves or stop()
                if i == plan.reset_at:
                    _reset(request)
                    return response, False
                if i > last:
                    break
                if i:
                    if itl > 0:
                        due += itl
                        delay = due - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    elif not i % _YIELD_EVERY:
                        await asyncio.sleep(0)
                chunk = (
                    frames.head
                    + orjson.dumps(next(tokens))
                    + (frames.last if i == last else frames.tail)
                )
                await response.write(frames.first + chunk if i == 0 else chunk)
                stats.tokens_sent += 1
            if job.include_usage:
                await response.write(frames.usage(job, job.max_tokens))
            await response.write(SSE_DONE)
            return response, True
        except ConnectionError:
            # The client went away between two writes (before the handler was
            # cancelled): aiohttp's final write_eof fails quietly on this too.
            if not self._closing:
                stats.disconnects += 1
        return response, False

    async def _complete(
        self, request: web.Request, job: CompletionJob, plan: _Plan
    ) -> tuple[web.StreamResponse, bool]:
        cut = min((x for x in (plan.stall_at, plan.reset_at) if x is not None), default=None)
        produced = job.max_tokens if cut is None else min(cut, job.max_tokens)
        delay = (plan.ttft + plan.itl * (produced - 1)) if produced else 0.0
        if delay > 0:
            await asyncio.sleep(delay)  # the simulated compute of the whole answer
        if produced == plan.stall_at:
            await asyncio.Event().wait()
        if produced == plan.reset_at:
            _reset(request)
            return web.Response(), False
        tokens = text.generate(job.context, job.max_tokens)
        self.stats.tokens_sent += len(tokens)
        body = completion_body(job, tokens)
        return web.Response(body=body, content_type="application/json"), True

    async def _embeddings(self, request: web.Request) -> web.Response:
        """vLLM's embed task (emulators.embeddings)."""
        self.stats.requests += 1
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return error_response(400, f"invalid JSON body: {exc}", err_type="BadRequestError")
        if isinstance(payload, dict):
            self.stats.last_request = payload
        fault = self.faults.take()
        if fault is not None and fault.status is not None:
            message = f"emulated fault: HTTP {fault.status}"
            return error_response(fault.status, message, retry_after=fault.retry_after)
        model = payload.get("model") if isinstance(payload, dict) else None
        if model is not None and model not in self.config.served_models:
            message = f"The model `{model}` does not exist."
            return error_response(404, message, err_type="NotFoundError", param="model")
        try:
            body = embeddings.answer(payload, str(model or self.config.served_models[0]))
        except RequestError as exc:
            return error_response(exc.status, exc.message, err_type="BadRequestError")
        self.stats.completed += 1
        return _json(body)

    # -- introspection and control -------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": model,
                "object": "model",
                "created": self._created,
                "owned_by": "vllm",
                "root": model,
                "parent": None,
                "max_model_len": self.config.max_model_len,
            }
            for model in self.config.served_models
        ]
        return _json({"object": "list", "data": data})

    async def _health(self, request: web.Request) -> web.Response:
        # A 503 fault means "engine dead": make the health check agree.
        return web.Response(status=503 if self.faults.status == 503 else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        stats, labels = self.stats, self._labels
        finished = {"stop": 0, "length": 0, **self._finished, "abort": stats.disconnects}
        families: list[tuple[str, str, list[tuple[str, float]]]] = [
            ("vllm:num_requests_running", "gauge", [("", stats.running)]),
            ("vllm:num_requests_waiting", "gauge", [("", stats.waiting)]),
            ("vllm:kv_cache_usage_perc", "gauge", [("", stats.running / self.config.max_num_seqs)]),
            ("vllm:prompt_tokens", "counter", [("", stats.prompt_tokens)]),
            ("vllm:generation_tokens", "counter", [("", stats.tokens_sent)]),
            (
                "vllm:request_success",
                "counter",
                [(f'finished_reason="{r}",', n) for r, n in finished.items()],
            ),
        ]
        lines: list[str] = []
        for name, kind, samples in families:
            # prometheus_client's layout: TYPE names the family, counters' samples end in _total.
            sample = name + "_total" if kind == "counter" else name
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{sample}{{{extra}{labels}}} {float(v)!r}" for extra, v in samples)
        return web.Response(
            body=("\n".join(lines) + "\n").encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


def _reset(request: web.Request) -> None:
    """Abort the TCP connection (RST): the client sees a broken stream, no [DONE]."""
    if request.transport is not None:
        request.transport.abort()


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def serve_forever(host: str, port: int, config: EmulatorConfig) -> None:
    """Run one emulator until cancelled (``meridian emulate vllm --port N``)."""
    emulator = VllmEmulator(config)
    url = await emulator.start(host, port)
    log.info("%s emulator serving %s at %s", config.name, ", ".join(config.served_models), url)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
