"""The SageMaker adapter against the SageMaker emulator over real loopback HTTP.

Every container format and request kind, PayloadParts split at tiny sizes,
each error mapped to its failure class, in-stream exceptions, resumption per
container, cancellation, and a signature checked with botocore itself.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from emulators import text
from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage
from regions.eventstream import payload_part
from regions.inventory import BackendSpec, ProviderKind, Region, SageMakerOptions
from regions.request import GenerationRequest, Kind, Message, Sampling
from regions.sagemaker import SageMakerProvider
from regions.sagemaker_auth import AwsCredentials
from regions.sagemaker_errors import error_code
from tests.conftest import wait_for

SERVED = "meta-llama/Llama-3.1-8B-Instruct"
MESSAGES = (Message("system", "be brief"), Message("user", "hello"))
CHAT_CONTEXT = text.render_chat([("system", "be brief"), ("user", "hello")], False)

Make = Callable[..., Awaitable[SageMakerEmulator]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    started: list[SageMakerEmulator] = []

    async def start(**config: Any) -> SageMakerEmulator:
        emulator = SageMakerEmulator(SageMakerEmulatorConfig(**config))
        await emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.stop()


def spec(url: str, container: str = "vllm", **options: Any) -> BackendSpec:
    options.setdefault("endpoint_name", f"llm-{container}")
    options.setdefault("region", "eu-west-1")
    options.setdefault("emulator_credentials", True)
    return BackendSpec(
        name="sm",
        model="m",
        version="v1",
        region=Region("aws:eu-west-1", frozenset({"EU"})),
        kind=ProviderKind.SAGEMAKER,
        url=url,
        served_model=SERVED,
        sagemaker=SageMakerOptions(container=container, **options),  # type: ignore[arg-type]
    )


def request(kind: Kind = Kind.CHAT, max_tokens: int | None = 6, **kw: Any) -> GenerationRequest:
    return GenerationRequest(
        kind=kind,
        model="m",
        request_id="0123456789abcdef0123456789abcdef",
        messages=MESSAGES if kind is Kind.CHAT else (),
        prompt="" if kind is Kind.CHAT else "Once upon a time",
        sampling=Sampling(max_tokens=max_tokens),
        **kw,
    )


async def collect(provider: SageMakerProvider, req: GenerationRequest) -> list[Event]:
    return [event async for event in provider.stream(req)]


def joined(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenDelta))


@pytest.mark.parametrize("container", ["vllm", "tgi", "lmi"])
@pytest.mark.parametrize("kind", [Kind.CHAT, Kind.COMPLETION])
async def test_every_container_and_kind_streams_the_expected_text(
    make: Make, http: aiohttp.ClientSession, container: str, kind: Kind
) -> None:
    emu = await make(max_part_bytes=3)
    provider = SageMakerProvider(spec(emu.url, container), http)
    events = await collect(provider, request(kind))
    context = CHAT_CONTEXT if kind is Kind.CHAT else "Once upon a time"
    assert joined(events) == text.expected_text(context, 6)
    finishes = [e for e in events if isinstance(e, Finish)]
    assert [f.reason for f in finishes] == ["length"]
    usage = [e for e in events if isinstance(e, Usage)]
    if not (container == "lmi" and kind is Kind.CHAT):  # LMI chat sends no usage
        assert usage and usage[0].completion_tokens == 6
    assert provider.passthrough(kind) is (container == "vllm")
    raws = [e.raw for e in events if isinstance(e, TokenDelta)]
    if container == "vllm":
        assert all(r is not None and r.startswith(b"data: {") for r in raws)
    else:
        assert all(r is None for r in raws)
    assert emu.stats.completed == 1


async def test_routing_headers_and_signing_scope(make: Make, http: aiohttp.ClientSession) -> None:
    emu = await make(inference_components=("ic-1",), variants=("Blue", "Green"))
    provider = SageMakerProvider(
        spec(
            emu.url,
            "tgi",
            target_variant="Green",
            inference_component="ic-1",
            custom_attributes="tenant=acme",
        ),
        http,
    )
    await collect(provider, request())
    headers = emu.stats.last_headers
    assert headers["X-Amzn-SageMaker-Target-Variant"] == "Green"
    assert headers["X-Amzn-SageMaker-Inference-Component"] == "ic-1"
    assert headers["X-Amzn-SageMaker-Custom-Attributes"] == "tenant=acme"
    assert headers["X-Amzn-SageMaker-Accept"] == "text/event-stream"
    assert headers["X-Amzn-SageMaker-Inference-Id"] == "0123456789abcdef0123456789abcdef"
    assert headers["signing-region"] == "eu-west-1"


async def test_signature_verifies_with_botocore(http: aiohttp.ClientSession) -> None:
    """Recompute the SigV4 signature from what arrived on the wire."""
    seen: dict[str, Any] = {}

    async def capture(req: web.Request) -> web.StreamResponse:
        seen.update(headers=dict(req.headers), body=await req.read(), url=str(req.url))
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(req)
        chunk = (
            b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n'
        )
        await resp.write(payload_part(chunk))
        return resp

    app = web.Application()
    app.router.add_post("/endpoints/{name}/invocations-response-stream", capture)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    creds = AwsCredentials.static("AKIDEXAMPLE", "secret-key", "session-token")
    try:
        provider = SageMakerProvider(spec(url, "vllm"), http, creds)
        assert joined(await collect(provider, request())) == "x"
    finally:
        await runner.cleanup()
    headers = seen["headers"]
    assert headers["X-Amz-Security-Token"] == "session-token"
    auth = headers["Authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "content-type", "x-amzn-sagemaker-accept"} <= set(signed)
    lower = {k.lower(): v for k, v in headers.items()}
    replay = AWSRequest(
        method="POST",
        url=seen["url"],
        data=seen["body"],
        headers={name: lower[name] for name in signed},
    )
    replay.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(
        ReadOnlyCredentials("AKIDEXAMPLE", "secret-key", "session-token"), "sagemaker", "eu-west-1"
    )
    signature = signer.signature(
        signer.string_to_sign(replay, signer.canonical_request(replay)), replay
    )
    assert auth.endswith(f"Signature={signature}")
    assert "/eu-west-1/sagemaker/aws4_request" in auth


@pytest.mark.parametrize(
    ("faults", "failure", "status"),
    [
        ({"status": 429, "retry_after": 2}, FailureClass.OVERLOADED, 429),  # ModelNotReady
        ({"error_code": "ThrottlingException"}, FailureClass.OVERLOADED, 400),
        ({"status": 503}, FailureClass.SERVER, 503),  # ServiceUnavailable
        ({"status": 500}, FailureClass.SERVER, 500),  # InternalFailure
        ({"status": 530}, FailureClass.SERVER, 530),  # InternalDependencyException
        ({"status": 400}, FailureClass.CLIENT, 400),  # ValidationError
        ({"error_code": "ModelError", "original_status": 400}, FailureClass.CLIENT, 424),
        ({"error_code": "ModelError", "original_status": 429}, FailureClass.OVERLOADED, 424),
        ({"error_code": "ModelError", "original_status": 0}, FailureClass.TIMEOUT, 424),
        ({"status": 502}, FailureClass.SERVER, 424),  # ModelError, container said 502
    ],
)
async def test_error_responses_map_to_failure_classes(
    make: Make,
    http: aiohttp.ClientSession,
    faults: dict[str, Any],
    failure: FailureClass,
    status: int,
) -> None:
    emu = await make()
    emu.faults.update(faults)
    provider = SageMakerProvider(spec(emu.url, "tgi"), http)
    with pytest.raises(BackendError) as info:
        await collect(provider, request())
    assert info.value.failure is failure
    assert info.value.status == status
    assert info.value.message.startswith("SageMaker ")
    if "retry_after" in faults:
        assert info.value.retry_after == 2.0


async def test_unknown_endpoint_is_a_misconfiguration(
    make: Make, http: aiohttp.ClientSession
) -> None:
    emu = await make()
    provider = SageMakerProvider(spec(emu.url, "tgi", endpoint_name="missing"), http)
    with pytest.raises(BackendError, match="not found") as info:
        await collect(provider, request())
    assert info.value.failure is FailureClass.SERVER  # not the client's fault


@pytest.mark.parametrize(
    ("stream_error", "detail"),
    [
        ("ModelStreamError", "ModelStreamError (ModelInvocationTimeExceeded)"),
        ("InternalStreamFailure", "InternalStreamFailure"),
        ("error", "InternalServerException"),
    ],
)
async def test_in_stream_exceptions_break_the_stream_after_tokens(
    make: Make, http: aiohttp.ClientSession, stream_error: str, detail: str
) -> None:
    emu = await make()
    emu.faults.update({"stream_error": stream_error, "stream_error_after_tokens": 2})
    provider = SageMakerProvider(spec(emu.url, "vllm"), http)
    got: list[Event] = []
    with pytest.raises(BackendError) as info:
        async for event in provider.stream(request()):
            got.append(event)
    assert info.value.failure is FailureClass.STREAM_BROKEN
    assert detail in info.value.message  # the ErrorCode botocore would have dropped
    assert joined(got) == text.expected_text(CHAT_CONTEXT, 2)


@pytest.mark.parametrize("container", ["vllm", "tgi", "lmi"])
@pytest.mark.parametrize("kind", [Kind.CHAT, Kind.COMPLETION])
async def test_the_containers_own_error_is_a_broken_stream(
    make: Make, http: aiohttp.ClientSession, container: str, kind: Kind
) -> None:
    """The container reports the failure inside a PayloadPart (LMI: a last token
    with finish_reason error; TGI and vLLM: an error event): not a normal end,
    so the executor fails over or resumes."""
    emu = await make()
    emu.faults.update({"stream_error": "container", "stream_error_after_tokens": 2})
    provider = SageMakerProvider(spec(emu.url, container), http)
    got: list[Event] = []
    with pytest.raises(BackendError) as info:
        async for event in provider.stream(request(kind)):
            got.append(event)
    assert info.value.failure is FailureClass.STREAM_BROKEN
    assert not [e for e in got if isinstance(e, Finish)]
    context = CHAT_CONTEXT if kind is Kind.CHAT else "Once upon a time"
    assert joined(got) == text.expected_text(context, 2)
    if container == "lmi" and kind is Kind.COMPLETION:
        assert "exception occurred during rolling batch inference" in info.value.message


async def test_reset_mid_stream_is_stream_broken(make: Make, http: aiohttp.ClientSession) -> None:
    emu = await make()
    emu.faults.update({"reset_after_tokens": 3})
    provider = SageMakerProvider(spec(emu.url, "lmi"), http)
    with pytest.raises(BackendError) as info:
        await collect(provider, request(Kind.COMPLETION))
    assert info.value.failure is FailureClass.STREAM_BROKEN


async def test_corrupt_frames_are_stream_broken(http: aiohttp.ClientSession) -> None:
    async def garbage(req: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x00\x00\x20" + b"\x01" * 40)

    app = web.Application()
    app.router.add_post("/endpoints/{name}/invocations-response-stream", garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        provider = SageMakerProvider(spec(f"http://127.0.0.1:{runner.addresses[0][1]}"), http)
        with pytest.raises(BackendError, match="invalid event stream") as info:
            await collect(provider, request())
    finally:
        await runner.cleanup()
    assert info.value.failure is FailureClass.STREAM_BROKEN


async def test_nothing_listening_is_connect(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = SageMakerProvider(spec(f"http://127.0.0.1:{port}"), http)
    with pytest.raises(BackendError) as info:
        await collect(provider, request())
    assert info.value.failure is FailureClass.CONNECT


@pytest.mark.parametrize(
    ("container", "kind"),
    [
        ("vllm", Kind.CHAT),
        ("vllm", Kind.COMPLETION),
        ("tgi", Kind.COMPLETION),
        ("lmi", Kind.COMPLETION),
        ("tgi", Kind.CHAT),
        ("lmi", Kind.CHAT),
    ],
)
async def test_resumption_continues_exactly(
    make: Make, http: aiohttp.ClientSession, container: str, kind: Kind
) -> None:
    emu = await make()
    provider = SageMakerProvider(spec(emu.url, container), http)
    full = joined(await collect(provider, request(kind, max_tokens=8)))
    words = full.split(" ")
    prefix = " ".join(words[:4])  # 3 tokens, each " word"
    resumed = request(kind, max_tokens=5).resumed(prefix)
    assert prefix + joined(await collect(provider, resumed)) == full


async def test_closing_early_aborts_the_upstream(make: Make, http: aiohttp.ClientSession) -> None:
    emu = await make(itl_s=0.02, default_max_tokens=200)
    provider = SageMakerProvider(spec(emu.url, "tgi"), http)
    stream = provider.stream(request(max_tokens=None))
    async for event in stream:
        if isinstance(event, TokenDelta) and event.text:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await wait_for(lambda: emu.stats.disconnects == 1 and emu.stats.running == 0)
    assert emu.stats.completed == 0


class FakeSource:
    """A refreshable botocore credentials stand-in that records its threads."""

    def __init__(self) -> None:
        self.loads = 0
        self.advisory = False
        self.mandatory = False
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def refresh_needed(self, within: int | None = None) -> bool:
        return self.mandatory if within else self.advisory

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        self.entered.set()
        self.gate.wait(5)
        self.threads.add(threading.get_ident())
        self.loads += 1
        self.advisory = self.mandatory = False
        return ReadOnlyCredentials(f"AKID{self.loads}", "secret", None)


async def test_credentials_load_once_off_the_loop() -> None:
    source = FakeSource()
    creds = AwsCredentials(lambda: source)
    waiters = [asyncio.ensure_future(creds.frozen()) for _ in range(20)]
    await wait_for(source.entered.is_set)
    source.gate.set()
    results = await asyncio.gather(*waiters)
    assert {r.access_key for r in results} == {"AKID1"}
    assert source.loads == 1
    assert threading.get_ident() not in source.threads


async def test_advisory_refresh_runs_behind_mandatory_refresh_waits() -> None:
    source = FakeSource()
    source.gate.set()
    creds = AwsCredentials(lambda: source)
    assert (await creds.frozen()).access_key == "AKID1"
    source.advisory = True  # within botocore's advisory window: keep serving
    assert (await creds.frozen()).access_key == "AKID1"
    await wait_for(lambda: source.loads == 2)
    assert (await creds.frozen()).access_key == "AKID2"
    source.advisory = source.mandatory = True  # about to expire: wait for fresh ones
    assert (await creds.frozen()).access_key == "AKID3"
    await creds.close()


async def test_missing_credentials_are_a_server_side_failure(
    make: Make, http: aiohttp.ClientSession
) -> None:
    emu = await make()
    provider = SageMakerProvider(spec(emu.url), http, AwsCredentials(lambda: None))
    with pytest.raises(BackendError, match="no AWS credentials") as info:
        await collect(provider, request())
    assert info.value.failure is FailureClass.SERVER
    assert emu.stats.requests == 0


def test_error_code_follows_botocore_rules() -> None:
    assert (
        error_code({"x-amzn-ErrorType": "ModelError:http://x/"}, {"__type": "Other"})
        == "ModelError"
    )
    assert (
        error_code({}, {"__type": "com.amazon.coral#ThrottlingException"}) == "ThrottlingException"
    )
    assert error_code({}, {"code": "ValidationError"}) == "ValidationError"
    assert error_code({}, {}) == ""
