"""An aiohttp server that speaks vLLM's OpenAI-compatible wire protocol.

It stands in for a self-hosted vLLM server in ``meridian demo``, the tests and
the benchmark, so it copies what the gateway and the stock ``openai`` client
see from real vLLM (reference/protocols.md §5): SSE ``data: {json}`` events, a
role chunk first, ``finish_reason`` on the last content chunk, the
``choices: []`` usage chunk, ``[DONE]``, vLLM's error bodies, ``/v1/models``
and the ``vllm:`` Prometheus gauges the router reads for load.

The text is :mod:`regions.emulators.text`, a pure function of the prompt, so a
stream resumed with ``continue_final_message`` continues exactly where the
interrupted one stopped. Faults (:mod:`regions.emulators.faults`) are taken
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
import uuid
from dataclasses import asdict, dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from regions.emulators import text
from regions.emulators.faults import Faults

log = logging.getLogger(__name__)

_YIELD_EVERY = 16  # with no inter-token delay, let other streams run this often
_SSE_DONE = b"data: [DONE]\n\n"


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


class _RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclass(slots=True)
class _Job:
    chat: bool
    model: str
    context: str
    max_tokens: int
    finish_reason: str
    stream: bool
    include_usage: bool
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one request is served: its timing and where an injected stall or reset hits."""

    ttft: float
    itl: float
    stall_at: int | None = None
    reset_at: int | None = None


def error_response(
    status: int,
    message: str,
    *,
    err_type: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    """vLLM's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    if err_type is None:
        err_type = _error_type(status)
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    headers = {}
    if retry_after is not None:
        # Whole seconds as RFC 9110 wants; fractions kept for fast tests (the
        # gateway and the openai client both parse a float).
        headers["Retry-After"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        )
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _error_type(status: int) -> str:
    """vLLM-style error type from the status: 429 -> ``TooManyRequestsError``."""
    try:
        phrase = "".join(c for c in HTTPStatus(status).phrase if c.isalnum())
    except ValueError:
        return "HTTPError"
    return phrase if phrase.endswith("Error") else phrase + "Error"


def _opt(payload: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = payload.get(key)
    if value is None:
        return default
    # bool is an int: reject it where a number is expected, as pydantic does.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _RequestError(400, f"'{key}' must be of type {kind.__name__}", key)
    return value


def _content(value: Any, index: int) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _RequestError(400, "only text content parts are supported", "messages")
            if not isinstance(part.get("text"), str):
                raise _RequestError(400, f"messages[{index}]: text part without text", "messages")
            parts.append(part["text"])
        return "\n".join(parts)
    raise _RequestError(400, f"messages[{index}].content must be a string or a list", "messages")


def _chat_context(payload: dict[str, Any]) -> str:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _RequestError(400, "'messages' must be a non-empty list", "messages")
    pairs: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _RequestError(400, f"messages[{i}] must be an object with a role", "messages")
        pairs.append((message["role"], _content(message.get("content"), i)))
    continue_final = _opt(payload, "continue_final_message", bool, False)
    if continue_final and _opt(payload, "add_generation_prompt", bool, True):
        raise _RequestError(
            400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        )
    if continue_final and pairs[-1][0] != "assistant":
        raise _RequestError(400, "continue_final_message needs a final assistant message")
    return text.render_chat(pairs, continue_final)


def _prompt(payload: dict[str, Any]) -> str:
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise _RequestError(400, "'prompt' must be a non-empty string", "prompt")
    return prompt


def _parse_job(payload: Any, chat: bool, config: EmulatorConfig) -> _Job:
    """Validate a request body the way vLLM does; raise _RequestError otherwise."""
    if not isinstance(payload, dict):
        raise _RequestError(400, "request body must be a JSON object")
    model = payload.get("model")
    if model is None:
        model = config.served_models[0]
    elif not isinstance(model, str):
        raise _RequestError(400, "'model' must be a string", "model")
    elif model not in config.served_models:
        raise _RequestError(404, f"The model `{model}` does not exist.", "model")
    stream = _opt(payload, "stream", bool, False)
    options = _opt(payload, "stream_options", dict, None)
    if options is not None and not stream:
        raise _RequestError(400, "Stream options can only be defined when `stream=True`.")
    include_usage = _opt(options or {}, "include_usage", bool, False)
    if _opt(payload, "n", int, 1) != 1:
        raise _RequestError(400, "the emulator supports only n=1", "n")
    limit = _opt(payload, "max_completion_tokens", int, None) if chat else None
    if limit is None:
        limit = _opt(payload, "max_tokens", int, None)
    if limit is not None and limit < 1:
        raise _RequestError(400, f"max_tokens must be at least 1, got {limit}.", "max_tokens")
    context = _chat_context(payload) if chat else _prompt(payload)
    prompt_tokens = text.count_tokens(context)
    room = config.max_model_len - prompt_tokens
    if room <= 0 or (limit is not None and limit > room):
        asked = prompt_tokens + (limit or 0)
        raise _RequestError(
            400,
            f"This model's maximum context length is {config.max_model_len} tokens. "
            f"However, you requested {asked} tokens ({prompt_tokens} in the input, "
            f"{limit or 0} in the output). Please reduce the length of the input.",
        )
    # No client limit: stop at default_max_tokens as if the model emitted EOS.
    if limit is not None:
        max_tokens, reason = limit, "length"
    else:
        max_tokens, reason = min(config.default_max_tokens, room), "stop"
    return _Job(chat, model, context, max_tokens, reason, stream, include_usage, prompt_tokens)


def _usage(job: _Job, completion: int) -> dict[str, int]:
    total = job.prompt_tokens + completion
    return {
        "prompt_tokens": job.prompt_tokens,
        "total_tokens": total,
        "completion_tokens": completion,
    }


class _Frames:
    """One request's SSE chunks as byte fragments around the token's JSON string.

    Field order and nulls follow vLLM: chat chunks are dumped with
    ``exclude_unset`` (``"usage": null`` only with include_usage, ``stop_reason``
    only on the finishing chunk); completion chunks with ``exclude_unset=False``
    (every field present).
    """

    __slots__ = ("envelope", "first", "head", "last", "tail")

    def __init__(self, job: _Job, request_id: str, created: int) -> None:
        obj = "chat.completion.chunk" if job.chat else "text_completion"
        envelope = orjson.dumps(
            {"id": request_id, "object": obj, "created": created, "model": job.model}
        )
        self.envelope = b"data: " + envelope[:-1]
        reason = orjson.dumps(job.finish_reason)
        end = (b',"usage":null' if job.include_usage or not job.chat else b"") + b"}\n\n"
        if job.chat:
            self.first = (
                self.envelope
                + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                + b'"logprobs":null,"finish_reason":null}]'
                + end
            )
            self.head = self.envelope + b',"choices":[{"index":0,"delta":{"content":'
            self.tail = b'},"logprobs":null,"finish_reason":null}]' + end
            self.last = (
                b'},"logprobs":null,"finish_reason":' + reason + b',"stop_reason":null}]' + end
            )
        else:
            self.first = b""
            self.head = self.envelope + b',"choices":[{"index":0,"text":'
            self.tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]' + end
            self.last = (
                b',"logprobs":null,"finish_reason":' + reason + b',"stop_reason":null}]' + end
            )

    def usage(self, job: _Job, completion: int) -> bytes:
        return (
            self.envelope
            + b',"choices":[],"usage":'
            + orjson.dumps(_usage(job, completion))
            + b"}\n\n"
        )


class VllmEmulator:
    """One emulated vLLM server; start several for several backends."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        if not self.config.served_models:
            raise ValueError("an emulator needs at least one served model")
        self.faults = Faults()
        self.stats = EmulatorStats()
        self._slots = asyncio.Semaphore(self.config.max_num_seqs)
        self._finished: dict[str, int] = {}
        self._inflight: set[asyncio.Transport] = set()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._closing = False
        self._created = int(time.time())
        model = self.config.served_models[0]
        escaped = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        self._labels = f'engine="0",model_name="{escaped}"'

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("emulator not started")
        return self._url

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", partial(self._generate, chat=True))
        app.router.add_post("/v1/completions", partial(self._generate, chat=False))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/_emulator/faults", self._get_faults)
        app.router.add_post("/_emulator/faults", self._set_faults)
        app.router.add_delete("/_emulator/faults", self._clear_faults)
        app.router.add_get("/_emulator/stats", self._stats)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        runner = web.AppRunner(
            self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self._url = f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        """Stop at once: in-flight requests are aborted (a stalled stream never ends)."""
        if self._runner is None:
            return
        self._closing = True
        try:
            for transport in list(self._inflight):
                transport.abort()
            await self._runner.cleanup()
        finally:
            self._runner, self._url, self._closing = None, None, False

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
        try:
            job = _parse_job(payload, chat, self.config)
        except _RequestError as exc:
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
        self, request: web.Request, job: _Job, plan: _Plan
    ) -> tuple[web.StreamResponse, bool]:
        """Serve SSE; True when it ended normally with ``[DONE]``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        request_id = ("chatcmpl-" if job.chat else "cmpl-") + uuid.uuid4().hex
        frames = _Frames(job, request_id, int(time.time()))
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
            await response.write(_SSE_DONE)
            return response, True
        except ConnectionError:
            # The client went away between two writes (before the handler was
            # cancelled): aiohttp's final write_eof fails quietly on this too.
            if not self._closing:
                stats.disconnects += 1
        return response, False

    async def _complete(
        self, request: web.Request, job: _Job, plan: _Plan
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
        content = "".join(tokens)
        head = {"created": int(time.time()), "model": job.model}
        choice: dict[str, Any] = {"index": 0}
        if job.chat:
            body = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", **head}
            choice["message"] = {"role": "assistant", "content": content, "tool_calls": []}
        else:
            body = {"id": "cmpl-" + uuid.uuid4().hex, "object": "text_completion", **head}
            choice["text"] = content
        choice.update(logprobs=None, finish_reason=job.finish_reason, stop_reason=None)
        body["choices"] = [choice]
        body["usage"] = {**_usage(job, len(tokens)), "prompt_tokens_details": None}
        return web.Response(body=orjson.dumps(body), content_type="application/json"), True

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

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _json(self.faults.as_dict())

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValueError) as exc:
            return error_response(400, str(exc), err_type="BadRequestError")
        return _json(self.faults.as_dict())

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return _json(self.faults.as_dict())

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(asdict(self.stats))


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
