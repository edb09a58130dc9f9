"""Adapter for SageMaker real-time endpoints: InvokeEndpointWithResponseStream over aiohttp.

The gateway always streams upstream, so this speaks only
``POST /endpoints/{name}/invocations-response-stream`` (reference/protocols.md
§1.1), SigV4-signed with botocore (signing name ``sagemaker``) and sent over
the shared keep-alive pool: thousands of streams need no threads. The pieces:

- ``regions.sagemaker_auth``: credentials from the boto3 chain, resolved and
  refreshed off the event loop; the signature.
- ``regions.eventstream``: the binary frames, decoded by botocore's
  ``EventStreamBuffer`` so in-stream exceptions keep their ``ErrorCode``.
- ``regions.sagemaker_payloads``: the container's bytes inside the frames
  (vLLM, TGI or DJL LMI), across arbitrary part boundaries; resumption.
- ``regions.sagemaker_errors``: error responses to failure classes.

Failures: error responses as ``sagemaker_errors`` says; an exception or error
frame (``ModelStreamError``, ``InternalStreamFailure``) is STREAM_BROKEN, so the
executor fails over before the first token and resumes after it; so is a body
that ends without a finish reason or inside a frame. Connection failures are
CONNECT. Closing the iterator closes the upstream connection (aiohttp does not
return a half-read connection to the pool).

Only the vLLM container's chunks are OpenAI SSE for the client's API, so only
it is a pass-through backend; TGI's and LMI's events are re-encoded. With
``n`` above 1 (vLLM only) the decoder takes each choice's chunks until every
choice has its finish reason.

Embeddings are one answer, so they go to ``InvokeEndpoint``
(``POST /endpoints/{name}/invocations``; botocore's sagemaker-runtime model
names its headers: ``Accept`` here, not the streaming call's
``X-Amzn-SageMaker-Accept``), with the client's OpenAI embeddings body. Only
the vLLM container takes it: vLLM's SageMaker ``/invocations``
(vllm/entrypoints/sagemaker/api_router.py) validates the body against each
request type the model serves and hands an ``EmbeddingRequest`` to its
embeddings handler, whose ``EmbeddingResponse`` SageMaker returns unchanged
(``regions.embeddings`` checks it). The container's refusals arrive as
ModelError 424 with its status, classified by ``sagemaker_errors``. The
``tei`` container (Hugging Face text-embeddings-inference) serves embeddings
only, in its native format: ``regions.sagemaker_tei`` translates both ways.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
from yarl import URL

from regions import embeddings, sagemaker_tei
from regions.errors import BackendError, FailureClass
from regions.events import Event
from regions.eventstream import FrameDecoder, FrameError
from regions.inventory import BackendSpec, SageMakerOptions
from regions.openai_compat import IDENTITY, body_pieces, check_identity, drain, read_capped
from regions.provider import Probe
from regions.request import GenerationRequest, Kind
from regions.sagemaker_auth import AwsCredentials, sign
from regions.sagemaker_errors import response_error
from regions.sagemaker_payloads import ACCEPT, PayloadDecoder, build_body
from regions.sse import MAX_EVENT_BYTES
from regions.trace_context import trace_headers
from regions.transport_errors import TRANSPORT_ERRORS


def stream_url(base: str, endpoint_name: str) -> str:
    return f"{base}/endpoints/{quote(endpoint_name, safe='')}/invocations-response-stream"


def invoke_url(base: str, endpoint_name: str) -> str:
    return f"{base}/endpoints/{quote(endpoint_name, safe='')}/invocations"


class SageMakerProvider:
    """One SageMaker endpoint (or one inference component on it)."""

    def __init__(
        self,
        spec: BackendSpec,
        session: aiohttp.ClientSession,
        credentials: AwsCredentials | None = None,
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if spec.sagemaker is None:
            raise ValueError(f"backend {spec.name}: provider sagemaker needs sagemaker options")
        self.spec = spec
        self.options: SageMakerOptions = spec.sagemaker
        self._session = session
        self._max_event_bytes = max_event_bytes
        self._url = stream_url(spec.url, self.options.endpoint_name)
        self._yarl = URL(self._url, encoded=True)  # signed as-is: no re-quoting
        self._invoke_url = invoke_url(spec.url, self.options.endpoint_name)
        self._invoke_yarl = URL(self._invoke_url, encoded=True)
        if credentials is None:
            credentials = (
                AwsCredentials.emulator()
                if self.options.emulator_credentials
                else AwsCredentials.from_chain(self.options.profile)
            )
        self._credentials = credentials
        self._headers = _static_headers(self.options)

    def passthrough(self, kind: Kind) -> bool:
        return self.options.container == "vllm"

    async def probe(self) -> Probe:
        """No cheap data-plane health call exists (``/ping`` is the container's,
        not the runtime API's), and a probe invocation would cost tokens; the
        breaker and outlier detection judge these endpoints from live traffic."""
        return Probe(healthy=True)

    async def close(self) -> None:
        """The session is shared per host and closed by its owner."""
        await self._credentials.close()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        if request.kind is Kind.EMBEDDING:
            async for event in self._embed(request):
                yield event
            return
        options = self.options
        if options.container == "tei":
            # routing.capabilities gives this container embeddings only
            raise BackendError(
                FailureClass.SERVER, f"backend {self.spec.name} serves embeddings only (tei)"
            )
        body = build_body(request, options.container, self.spec.served_model)
        frozen = await self._credentials.frozen()
        headers = sign(
            frozen,
            options.region,
            self._url,
            body,
            {
                **self._headers,
                "X-Amzn-SageMaker-Inference-Id": request.request_id[:64],
                **trace_headers(),  # W3C trace context, signed with the rest
            },
        )
        decoder = PayloadDecoder(
            request.kind is Kind.CHAT,
            self.passthrough(request.kind),
            self._max_event_bytes,
            request.choices,
        )
        with TRANSPORT_ERRORS:
            # Accept-Encoding is sent unsigned, as aiohttp's own default is.
            async with self._session.post(
                self._yarl,
                data=body,
                headers={**headers, **IDENTITY},
                auto_decompress=False,
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    raise response_error(resp.status, resp.headers, await _read(resp))
                check_identity(resp)
                async for event in _events(resp, decoder):
                    yield event

    async def _embed(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """InvokeEndpoint with the client's embeddings body, or TEI's translation of
        it in batches TEI takes (module docstring)."""
        if self.options.container not in ("vllm", "tei") or request.body is None:
            # routing.capabilities gives embeddings to the vLLM and TEI containers only
            raise BackendError(
                FailureClass.SERVER,
                f"backend {self.spec.name}: container {self.options.container} has no embeddings",
            )
        headers = {k: v for k, v in self._headers.items() if k != "X-Amzn-SageMaker-Accept"}
        headers["Accept"] = "application/json"
        headers["X-Amzn-SageMaker-Inference-Id"] = request.request_id[:64]
        if self.options.container == "tei":
            client = request.body
            async for event in embeddings.translated(
                sagemaker_tei.request_bodies(client, self.spec.name),
                lambda body, budget: self._invoke_tei(body, headers, budget),
                lambda parts: sagemaker_tei.answer(parts, client),
            ):
                yield event
            return
        body = embeddings.body(dict(request.body), self.spec.served_model)
        async with self._invoke(body, headers) as resp:
            if resp.status != 200:
                raise response_error(resp.status, resp.headers, await _read(resp))
            check_identity(resp)
            async for event in embeddings.events(resp, request.choices):
                yield event

    async def _invoke_tei(
        self, body: bytes, headers: dict[str, str], budget: embeddings.ReadBudget
    ) -> bytes:
        async with self._invoke(body, headers) as resp:
            if resp.status != 200:
                raise sagemaker_tei.error(resp.status, resp.headers, await _read(resp))
            check_identity(resp)
            return await embeddings.read_whole(resp, budget)

    @contextlib.asynccontextmanager
    async def _invoke(
        self, body: bytes, headers: dict[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One signed InvokeEndpoint; transport failures as failure classes."""
        frozen = await self._credentials.frozen()
        signed = sign(
            frozen, self.options.region, self._invoke_url, body, {**headers, **trace_headers()}
        )
        with TRANSPORT_ERRORS:
            async with self._session.post(
                self._invoke_yarl,
                data=body,
                headers={**signed, **IDENTITY},
                auto_decompress=False,
                allow_redirects=False,
            ) as resp:
                yield resp


def _static_headers(options: SageMakerOptions) -> dict[str, str]:
    """The per-endpoint request headers (botocore's names for the streaming call)."""
    headers = {
        "Content-Type": "application/json",
        "X-Amzn-SageMaker-Accept": ACCEPT[options.container],
    }
    if options.target_variant:
        headers["X-Amzn-SageMaker-Target-Variant"] = options.target_variant
    if options.inference_component:
        headers["X-Amzn-SageMaker-Inference-Component"] = options.inference_component
    if options.custom_attributes:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = options.custom_attributes
    return headers


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await read_capped(resp)
    except (aiohttp.ClientError, ConnectionError):
        return b""


async def _events(resp: aiohttp.ClientResponse, decoder: PayloadDecoder) -> AsyncIterator[Event]:
    """Frames → payload bytes → events; after ``[DONE]`` the rest of the body is
    drained (bounded) so the connection can be reused, and ignored."""
    frames = FrameDecoder()
    async for piece in body_pieces(resp, decoder):
        try:
            decoded = frames.feed(piece)
        except FrameError as exc:
            raise BackendError(FailureClass.STREAM_BROKEN, str(exc)) from None
        for frame in decoded:
            if frame.kind != "event":
                raise BackendError(FailureClass.STREAM_BROKEN, f"in-stream {frame.failure}")
            if frame.name == "PayloadPart":
                for event in decoder.feed(frame.payload):
                    yield event
                if decoder.done:
                    await drain(resp)
                    return
    if frames.pending:
        raise BackendError(FailureClass.STREAM_BROKEN, "stream cut inside an event-stream frame")
    for event in decoder.close():
        yield event
