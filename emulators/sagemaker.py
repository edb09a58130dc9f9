"""An aiohttp server that speaks the SageMaker Runtime data plane, for tests and the demo.

It serves ``POST /endpoints/{name}/invocations`` and
``/invocations-response-stream`` the way AWS does (reference/protocols.md §1):
real event-stream frames with correct CRCs (``regions.eventstream``), the
streaming response headers, rest-json errors with ``x-amzn-ErrorType``,
container failures wrapped as ``ModelError`` 424 with ``OriginalStatusCode``,
and in-stream ``ModelStreamError`` / ``InternalStreamFailure`` frames. The
stock boto3 client parses it (tests/regions/test_sagemaker_emulator.py).

Each endpoint runs one container whose payload format it copies: ``vllm``
(OpenAI SSE; tools, JSON output, logprobs and ``n`` as the vLLM emulator
answers them; an OpenAI embeddings body gets vLLM's ``EmbeddingResponse``),
``tgi`` (generate SSE, or Messages API chunks) or ``lmi`` (JSON lines). The
containers — what they accept, the bytes they stream and their
token schedule — are :mod:`emulators.containers`, shared with the
Vertex emulator; this module is SageMaker's front door around them: auth,
endpoints, variants and inference components, AWS error shapes, and the
event-stream framing of the container's bytes. Signatures are not verified,
but a request must carry an ``Authorization`` header shaped like SigV4, which
catches an adapter that forgot to sign.

Faults are :class:`SageMakerFaults`: the shared :class:`Faults` plus
SageMaker's own error shapes (an error code, ModelError's original status, an
in-stream exception after N tokens), taken per request on arrival.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from emulators import openai_tools
from emulators.containers import (
    BadRequest,
    ContainerStream,
    Playback,
    embedding,
    fault_timing,
    parse_request,
    play,
    reset_connection,
    rich,
)
from emulators.faults import Faults
from emulators.server import EmulatorServer
from regions.eventstream import error_frame, exception_frame, payload_part
from regions.inventory import Container

log = logging.getLogger(__name__)

_SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=[^/\s]+/\d{8}/([a-z0-9-]+)/sagemaker/aws4_request,\s*"
    r"SignedHeaders=[a-z0-9;-]+,\s*Signature=[0-9a-f]{64}$"
)
_ERROR_STATUS = {
    "ValidationError": 400,
    "ThrottlingException": 400,
    "ModelError": 424,
    "ModelNotReadyException": 429,
    "InternalFailure": 500,
    "ServiceUnavailable": 503,
    "InternalDependencyException": 530,
}
_CODE_FOR_STATUS = {v: k for k, v in _ERROR_STATUS.items() if k != "ThrottlingException"}
_STREAM_ERRORS = ("ModelStreamError", "InternalStreamFailure", "error", "container")
_ACCOUNT = "123456789012"


@dataclass
class SageMakerEmulatorConfig:
    endpoints: dict[str, Container] = field(
        default_factory=lambda: {"llm-vllm": "vllm", "llm-tgi": "tgi", "llm-lmi": "lmi"}
    )
    served_model: str = "meta-llama/Llama-3.1-8B-Instruct"
    ttft_s: float = 0.0
    itl_s: float = 0.0
    default_max_tokens: int = 32
    max_part_bytes: int | None = None
    """Split container writes into PayloadParts of at most this many bytes."""
    variants: tuple[str, ...] = ("AllTraffic",)
    inference_components: tuple[str, ...] = ()
    """When set, requests must name one of them (an endpoint with components)."""
    name: str = "sagemaker"


@dataclass
class SageMakerFaults(Faults):
    """:class:`Faults` plus SageMaker's own failure shapes.

    - ``error_code``: answer with this error (``ThrottlingException``,
      ``ModelError``...), at ``status`` or the code's usual status. A bare
      ``status`` picks SageMaker's error for it (429 ModelNotReadyException,
      503 ServiceUnavailable, 400 ValidationError, 500 InternalFailure, 530
      InternalDependencyException); any other status is a ModelError whose
      container answered with that status.
    - ``original_status``: ModelError's ``OriginalStatusCode``.
    - ``stream_error``: ``ModelStreamError``, ``InternalStreamFailure``,
      ``error`` (an unmodeled error frame) or ``container`` (the container's
      own in-stream error in a PayloadPart: LMI's ``finish_reason: error``
      token, TGI's error event), after ``stream_error_after_tokens``.
    - ``stream_error_code``: the ModelStreamError ``ErrorCode`` (default
      ``ModelInvocationTimeExceeded``).
    """

    error_code: str | None = None
    original_status: int | None = None
    stream_error: str | None = None
    stream_error_code: str | None = None
    stream_error_after_tokens: int | None = None

    def take(self) -> SageMakerFaults | None:
        snapshot = super().take()  # dataclasses.replace keeps the subclass
        return snapshot if isinstance(snapshot, SageMakerFaults) else None

    def update(self, data: Mapping[str, Any]) -> None:
        """As :meth:`Faults.update`, all-or-nothing, with the extra fields."""
        if not isinstance(data, Mapping):
            raise ValueError("faults must be a JSON object")
        extra = {k: _check_extra(k, v) for k, v in data.items() if k in _EXTRA}
        super().update({k: v for k, v in data.items() if k not in _EXTRA})
        for key, value in extra.items():
            setattr(self, key, value)


_EXTRA = frozenset(
    {
        "error_code",
        "original_status",
        "stream_error",
        "stream_error_code",
        "stream_error_after_tokens",
    }
)


def _check_extra(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in ("original_status", "stream_error_after_tokens"):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100_000:
            raise ValueError(f"fault {key!r} must be a non-negative integer")
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"fault {key!r} must be a non-empty string")
    if key == "stream_error" and value not in _STREAM_ERRORS:
        raise ValueError(f"fault 'stream_error' must be one of {', '.join(_STREAM_ERRORS)}")
    return value


@dataclass
class SageMakerEmulatorStats:
    requests: int = 0
    completed: int = 0
    disconnects: int = 0
    running: int = 0
    generation_tokens: int = 0
    last_request: dict[str, Any] | None = None
    last_headers: dict[str, str] = field(default_factory=dict)
    """The last request's ``X-Amzn-SageMaker-*`` headers, plus ``signing-region``."""


def aws_error(
    code: str,
    message: str,
    status: int | None = None,
    retry_after: float | None = None,
    lowercase: bool = True,
    **extra: Any,
) -> web.Response:
    """A rest-json error: botocore reads the code from ``x-amzn-ErrorType``.
    ``lowercase=False`` leaves out the ``message`` member (for bodies AWS sends
    with ``Message`` only)."""
    headers = {
        "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.sagemaker/",
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    if retry_after is not None:
        headers["Retry-After"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        )
    return web.Response(
        status=status or _ERROR_STATUS.get(code, 400),
        body=orjson.dumps({"message": message, **extra} if lowercase else extra),
        content_type="application/json",
        headers=headers,
    )


COMPONENT_NAME_MISSING = (
    "Inference Component Name header is required for endpoints to which you plan to "
    "deploy inference components. Please include Inference Component Name header or "
    "consider using SageMaker models."
)
"""AWS's text, as botocore reports it from real endpoints for both InvokeEndpoint
and InvokeEndpointWithResponseStream (github.com/langchain-ai/langchain issues
#14344 and #16150, aws-samples/amazon-kendra-langchain-extensions#64)."""


def component_name_missing() -> web.Response:
    """A request without ``X-Amzn-SageMaker-Inference-Component`` to an endpoint
    hosting inference components: 400 ``ValidationError`` whose body carries
    ``ErrorCode``/``Message`` (the raw body quoted in BerriAI/litellm PR #37766:
    ``{"ErrorCode":"INFERENCE_COMPONENT_NAME_MISSING","Message":...}``)."""
    return aws_error(
        "ValidationError",
        COMPONENT_NAME_MISSING,
        400,
        lowercase=False,
        ErrorCode="INFERENCE_COMPONENT_NAME_MISSING",
        Message=COMPONENT_NAME_MISSING,
    )


_TIMED_OUT = (
    "Your invocation timed out while waiting for a response from container primary. Review "
    "the latency metrics for each container in Amazon CloudWatch, resolve the issue, and try "
    "again."
)
"""AWS's OriginalMessage for a container that did not answer (OriginalStatusCode 0), as
botocore reported it (aws-samples/host-yolov8-on-sagemaker-endpoint#21,
RamVegiraju/SageMaker-Deployment#3)."""


def model_error(original: int, original_message: str, endpoint: str) -> web.Response:
    """A container failure as SageMaker reports it: 424 with the container's status.

    The body's members are botocore's ``ModelError`` shape plus ``ErrorCode``,
    as a real body quoted in opensearch-project/ml-commons' connector tests
    shows (``{"ErrorCode":"CLIENT_ERROR_FROM_MODEL","LogStreamArn":...,
    "Message":"Received client error (404) from primary with message ...``);
    the message ends with the CloudWatch pointer AWS appends ("See https://...
    in account ... for more information.", aws/amazon-sagemaker-examples#1407)."""
    kind = "client" if 400 <= original < 500 else "server"
    if original == 0 and original_message == "emulated fault":
        original_message = _TIMED_OUT
    region = "us-east-1"
    logs = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logEventViewer:group=/aws/sagemaker/Endpoints/{endpoint}"
    )
    message = (
        f'Received {kind} error ({original}) from primary with message "{original_message}". '
        f"See {logs} in account {_ACCOUNT} for more information."
    )
    return aws_error(
        "ModelError",
        message,
        424,
        lowercase=False,
        Message=message,
        OriginalStatusCode=original,
        OriginalMessage=original_message,
        ErrorCode=f"{kind.upper()}_ERROR_FROM_MODEL",
        LogStreamArn=f"arn:aws:logs:{region}:{_ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{endpoint}",
    )


def _fault_error(fault: SageMakerFaults, endpoint: str) -> web.Response:
    code = fault.error_code or _CODE_FOR_STATUS.get(fault.status or 0, "ModelError")
    if code != "ModelError":
        return aws_error(code, f"emulated fault: {code}", fault.status, fault.retry_after)
    original = fault.original_status
    if original is None:
        original = 500 if fault.status in (None, *_CODE_FOR_STATUS) else fault.status
    return model_error(original or 0, "emulated fault", endpoint)


def _stream_error(fault: SageMakerFaults) -> bytes:
    kind = fault.stream_error or "ModelStreamError"
    if kind == "error":
        return error_frame("InternalServerException", "emulated unmodeled error")
    if kind == "ModelStreamError":
        message = (
            "Your model primary did not complete sending the inference response "
            "in the allotted time."
        )
        return exception_frame(
            kind, message, fault.stream_error_code or "ModelInvocationTimeExceeded"
        )
    return exception_frame(kind, "Internal stream failure (emulated)")


class _Reject(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


@dataclass(slots=True)
class _Work:
    stream: ContainerStream | None
    fault: SageMakerFaults | None
    variant: str
    answer: bytes | None = None
    """A whole JSON answer (an embedding) instead of a generation."""
    rich: dict[str, Any] | None = None
    """A body the vLLM container answers as :mod:`emulators.openai_tools` does."""


class SageMakerEmulator(EmulatorServer):
    """One emulated SageMaker Runtime (all endpoints of one region)."""

    def __init__(self, config: SageMakerEmulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or SageMakerEmulatorConfig()
        self.faults = SageMakerFaults()
        self.stats = SageMakerEmulatorStats()

    client_max_size = 6 * 1024 * 1024  # SageMaker's 6 MB payload cap
    faults: SageMakerFaults

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/endpoints/{name}/invocations", self._invoke)
        app.router.add_post("/endpoints/{name}/invocations-response-stream", self._invoke_stream)

    def bad_request(self, message: str) -> web.Response:
        return aws_error("ValidationError", message)

    # -- the runtime API -----------------------------------------------------------

    async def _admit(self, request: web.Request) -> _Work:
        """Auth, endpoint, routing headers, faults, body: the work, or _Reject."""
        self.stats.requests += 1
        name = request.match_info["name"]
        if "Authorization" not in request.headers:
            raise _Reject(
                aws_error(
                    "MissingAuthenticationTokenException", "Missing Authentication Token", 403
                )
            )
        auth = _SIGV4.match(request.headers["Authorization"])
        if auth is None or "X-Amz-Date" not in request.headers:
            message = "Authorization header requires a SigV4 Credential, SignedHeaders, Signature"
            raise _Reject(aws_error("IncompleteSignatureException", message, 403))
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-amzn-sag")}
        self.stats.last_headers = {**headers, "signing-region": auth.group(1)}
        container = self.config.endpoints.get(name)
        if container is None:
            # AWS's text (aws/amazon-sagemaker-examples issues #293 and #559)
            message = f"Endpoint {name} of account {_ACCOUNT} not found."
            raise _Reject(aws_error("ValidationError", message))
        variant = request.headers.get("X-Amzn-SageMaker-Target-Variant")
        if variant is not None and variant not in self.config.variants:
            message = f'The variant(s) "[{variant}]" are not present in the endpoint {name}.'
            raise _Reject(aws_error("ValidationError", message))
        component = request.headers.get("X-Amzn-SageMaker-Inference-Component")
        if self.config.inference_components and component is None:
            raise _Reject(component_name_missing())
        if self.config.inference_components and component not in self.config.inference_components:
            # No AWS text found for a component name the endpoint does not host:
            # this message is the emulator's own (see component_name_missing).
            message = f"Inference Component {component} not found for endpoint {name}."
            raise _Reject(aws_error("ValidationError", message))
        raw = await request.read()
        fault = self.faults.take()
        if fault is not None and (fault.status is not None or fault.error_code is not None):
            raise _Reject(_fault_error(fault, name))
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Reject(model_error(400, "invalid JSON body", name)) from None
        if isinstance(payload, dict):
            self.stats.last_request = payload
        variant = variant or self.config.variants[0]
        try:
            answer = embedding(container, payload, self.config.served_model)
            if answer is not None:
                return _Work(None, fault, variant, answer)
            asked = rich(container, payload, self.config.served_model)
            if asked is not None:
                return _Work(None, fault, variant, rich=asked)
            job = parse_request(
                container, payload, self.config.served_model, self.config.default_max_tokens
            )
        except BadRequest as exc:
            raise _Reject(model_error(exc.status, exc.message, name)) from None
        return _Work(ContainerStream(container, job), fault, variant)

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        try:
            work = await self._admit(request)
        except _Reject as reject:
            return reject.response
        if work.rich is not None:
            return await self._rich(request, work, stream=False)
        ttft, itl = fault_timing(self.config.ttft_s, self.config.itl_s, work.fault)
        tokens = len(work.stream.tokens) if work.stream is not None else 1
        delay = ttft + itl * max(tokens - 1, 0)
        if delay > 0:
            await asyncio.sleep(delay)
        if work.fault is not None and work.fault.reset_after_tokens is not None:
            reset_connection(request)
            return web.Response()
        self.stats.completed += 1
        if work.stream is None:
            body = work.answer or b""
        else:
            self.stats.generation_tokens += tokens
            body = work.stream.complete()
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"x-Amzn-Invoked-Production-Variant": work.variant},
        )

    async def _invoke_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            work = await self._admit(request)
        except _Reject as reject:
            return reject.response
        if work.rich is not None:
            return await self._rich(request, work, stream=True)
        if work.stream is None:
            # vLLM answers an embedding whole, even here: SageMaker frames its bytes.
            self.stats.completed += 1
            return await self._whole_in_parts(request, work.variant, work.answer or b"")
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amzn-SageMaker-Content-Type": work.stream.content_type,
                "x-Amzn-Invoked-Production-Variant": work.variant,
                "x-amzn-RequestId": str(uuid.uuid4()),
            }
        )
        response.enable_chunked_encoding()
        transport = request.transport
        if transport is not None:
            self._inflight.add(transport)
        self.stats.running += 1
        ttft, itl = fault_timing(self.config.ttft_s, self.config.itl_s, work.fault)
        playback = Playback.of(ttft, itl, work.fault)
        if work.fault is not None and work.fault.stream_error is not None:
            playback.error_at = work.fault.stream_error_after_tokens or 0
            if work.fault.stream_error == "container":
                playback.error = self._parts(work.stream.error(playback.error_at))
            else:
                playback.error = _stream_error(work.fault)
        try:
            await response.prepare(request)
            if await play(request, response, work.stream, playback, self._parts):
                self.stats.completed += 1
        except asyncio.CancelledError:
            if not self._closing:
                self.stats.disconnects += 1
            raise
        except ConnectionError:
            # The client left between two writes, before the handler was cancelled.
            if not self._closing:
                self.stats.disconnects += 1
        finally:
            self.stats.running -= 1
            self.stats.generation_tokens += playback.sent
            if transport is not None:
                self._inflight.discard(transport)
        return response

    async def _rich(self, request: web.Request, work: _Work, stream: bool) -> web.StreamResponse:
        """Tools, JSON output, logprobs, ``n``...: the vLLM container's answer, from
        :mod:`emulators.openai_tools`. The streaming call carries its SSE bytes in
        PayloadParts; InvokeEndpoint returns the container's body as it is (a
        stream too, when the body asks one), and a body that does not ask to
        stream is framed whole on the streaming call. As in the vLLM emulator,
        these answers are not paced and of the stream faults only
        ``reset_after_tokens`` applies (``status`` and ``error_code`` refuse them
        on arrival)."""
        payload = work.rich or {}
        reset = work.fault.reset_after_tokens if work.fault is not None else None
        chat, model = "messages" in payload, self.config.served_model
        limit = self.config.default_max_tokens
        variant = {"x-Amzn-Invoked-Production-Variant": work.variant}
        if stream and payload.get("stream"):
            headers = {
                **variant,
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amzn-SageMaker-Content-Type": "text/event-stream",
                "x-amzn-RequestId": str(uuid.uuid4()),
            }
            response, produced = await openai_tools.respond(
                request, payload, chat, model, limit, reset, headers=headers, frame=self._parts
            )
        else:
            sse = {**variant, "Content-Type": "text/event-stream; charset=utf-8"}
            response, produced = await openai_tools.respond(
                request, payload, chat, model, limit, reset, headers=sse
            )
            if isinstance(response, web.Response):  # a whole answer, not sent yet
                body = response.body if isinstance(response.body, bytes) else b""
                if stream:
                    response = await self._whole_in_parts(request, work.variant, body)
                else:
                    response.headers.update(variant)
        self.stats.completed += 1
        self.stats.generation_tokens += produced
        return response

    async def _whole_in_parts(
        self, request: web.Request, variant: str, body: bytes
    ) -> web.StreamResponse:
        """A container's whole body on the streaming call, in PayloadParts."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amzn-SageMaker-Content-Type": "application/json",
                "x-Amzn-Invoked-Production-Variant": variant,
                "x-amzn-RequestId": str(uuid.uuid4()),
            }
        )
        await response.prepare(request)
        await response.write(self._parts(body))
        await response.write_eof()
        return response

    def _parts(self, data: bytes) -> bytes:
        """Container bytes as PayloadPart frames, split at ``max_part_bytes``."""
        if not data:
            return b""
        size = self.config.max_part_bytes
        if not size:
            return payload_part(data)
        return b"".join(payload_part(data[i : i + size]) for i in range(0, len(data), size))


async def serve_forever(host: str, port: int, config: SageMakerEmulatorConfig) -> None:
    """Run one emulator until cancelled (``meridian emulate sagemaker --port N``)."""
    emulator = SageMakerEmulator(config)
    url = await emulator.start(host, port)
    endpoints = ", ".join(f"{n} ({c})" for n, c in config.endpoints.items())
    log.info("%s emulator serving endpoints %s at %s", config.name, endpoints, url)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
