"""The Vertex adapter against the Vertex emulator, and token refresh off the event loop."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from google.auth.credentials import AnonymousCredentials, Credentials

from emulators import text
from emulators.vertex import VertexEmulator, VertexEmulatorConfig
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage
from regions.inventory import BackendSpec, ProviderKind, Region, VertexOptions
from regions.request import GenerationRequest, Kind, Message, Sampling
from regions.vertex import VertexProvider, regional_host, route_url
from regions.vertex_auth import EMULATOR_TOKEN, GoogleCredentials
from tests.conftest import wait_for

SERVED = "meta-llama/Llama-3.1-8B-Instruct"
MESSAGES = (Message("user", "hello"),)
CHAT_CONTEXT = text.render_chat([("user", "hello")], False)

Make = Callable[..., Awaitable[VertexEmulator]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    started: list[VertexEmulator] = []

    async def start(**config: Any) -> VertexEmulator:
        config.setdefault("project", "proj")
        config.setdefault("location", "europe-west4")
        emulator = VertexEmulator(VertexEmulatorConfig(**config))
        await emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.stop()


def spec(url: str, route: str = "chat_completions", **options: Any) -> BackendSpec:
    options.setdefault("project", "proj")
    options.setdefault("location", "europe-west4")
    options.setdefault("endpoint_id", "1234567890")
    options.setdefault("emulator_credentials", True)
    return BackendSpec(
        name="vx",
        model="m",
        version="v1",
        region=Region("gcp:europe-west4", frozenset({"EU"})),
        kind=ProviderKind.VERTEX,
        url=url,
        served_model=SERVED,
        vertex=VertexOptions(route=route, **options),  # type: ignore[arg-type]
    )


def request(kind: Kind = Kind.CHAT, max_tokens: int = 6) -> GenerationRequest:
    return GenerationRequest(
        kind=kind,
        model="m",
        request_id="r1",
        messages=MESSAGES if kind is Kind.CHAT else (),
        prompt="" if kind is Kind.CHAT else "Once upon a time",
        sampling=Sampling(max_tokens=max_tokens),
    )


async def collect(provider: VertexProvider, req: GenerationRequest) -> list[Event]:
    return [event async for event in provider.stream(req)]


def joined(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenDelta))


@pytest.mark.parametrize(
    ("route", "kind"),
    [
        ("chat_completions", Kind.CHAT),
        ("stream_raw_predict", Kind.CHAT),
        ("stream_raw_predict", Kind.COMPLETION),
    ],
)
async def test_routes_stream_the_expected_text_with_passthrough(
    make: Make, http: aiohttp.ClientSession, route: str, kind: Kind
) -> None:
    emu = await make(tokens=(EMULATOR_TOKEN,))
    provider = VertexProvider(spec(emu.url, route), http)
    events = await collect(provider, request(kind))
    context = CHAT_CONTEXT if kind is Kind.CHAT else "Once upon a time"
    assert joined(events) == text.expected_text(context, 6)
    assert [e.reason for e in events if isinstance(e, Finish)] == ["length"]
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.completion_tokens == 6 and usage.raw and usage.raw.startswith(b"data: ")
    assert provider.passthrough(kind)
    assert all(e.raw is not None for e in events if isinstance(e, TokenDelta))
    path = "/chat/completions" if route == "chat_completions" else ":streamRawPredict"
    assert emu.stats.last_path.endswith(path)
    assert emu.stats.last_request is not None and emu.stats.last_request["model"] == SERVED


def test_urls_follow_vertex_paths() -> None:
    options = VertexOptions(project="p", location="us-central1", endpoint_id="42")
    host = regional_host("us-central1")
    assert host == "https://us-central1-aiplatform.googleapis.com"
    assert regional_host("global") == "https://aiplatform.googleapis.com"
    assert route_url(host, options) == (
        f"{host}/v1beta1/projects/p/locations/us-central1/endpoints/42/chat/completions"
    )
    raw = VertexOptions(
        project="p", location="us-central1", endpoint_id="42", route="stream_raw_predict"
    )
    assert (
        route_url(host, raw)
        == f"{host}/v1/projects/p/locations/us-central1/endpoints/42:streamRawPredict"
    )


async def test_completion_on_the_chat_route_is_refused_before_sending(
    make: Make, http: aiohttp.ClientSession
) -> None:
    emu = await make()
    provider = VertexProvider(spec(emu.url), http)
    assert not provider.passthrough(Kind.COMPLETION)
    with pytest.raises(BackendError, match="chat only") as info:
        await collect(provider, request(Kind.COMPLETION))
    assert info.value.failure is FailureClass.SERVER
    assert emu.stats.requests == 0


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (429, FailureClass.OVERLOADED),
        (503, FailureClass.SERVER),
        (500, FailureClass.SERVER),
        (504, FailureClass.TIMEOUT),
        (400, FailureClass.CLIENT),
        (403, FailureClass.SERVER),
    ],
)
async def test_google_errors_map_to_failure_classes(
    make: Make, http: aiohttp.ClientSession, status: int, failure: FailureClass
) -> None:
    emu = await make()
    emu.faults.update({"status": status, "retry_after": 3})
    provider = VertexProvider(spec(emu.url), http)
    with pytest.raises(BackendError) as info:
        await collect(provider, request())
    assert info.value.failure is failure and info.value.status == status
    assert info.value.retry_after == 3.0
    if status == 429:
        assert "RESOURCE_EXHAUSTED" in info.value.message
        assert "Rate of traffic exceeds capacity" in info.value.message


@pytest.mark.parametrize(
    ("options", "config", "status"),
    [
        ({"emulator_credentials": False}, {"tokens": (EMULATOR_TOKEN,)}, 401),  # wrong token
        ({}, {"tokens": ("someone-else",)}, 401),
        ({"endpoint_id": "999"}, {}, 404),
        ({"project": "theirs"}, {}, 403),
    ],
)
async def test_misconfiguration_is_server_class(
    make: Make,
    http: aiohttp.ClientSession,
    options: dict[str, Any],
    config: dict[str, Any],
    status: int,
) -> None:
    emu = await make(**config)
    creds = GoogleCredentials.static("not-the-token") if "emulator_credentials" in options else None
    provider = VertexProvider(spec(emu.url, **options), http, creds)
    with pytest.raises(BackendError) as info:
        await collect(provider, request())
    assert info.value.status == status
    assert info.value.failure is FailureClass.SERVER


async def test_anonymous_credentials_send_no_header(
    make: Make, http: aiohttp.ClientSession
) -> None:
    emu = await make()
    provider = VertexProvider(spec(emu.url), http, GoogleCredentials(AnonymousCredentials()))
    with pytest.raises(BackendError, match="UNAUTHENTICATED") as info:
        await collect(provider, request())
    assert info.value.failure is FailureClass.SERVER


async def test_reset_mid_stream_is_stream_broken(make: Make, http: aiohttp.ClientSession) -> None:
    emu = await make()
    emu.faults.update({"reset_after_tokens": 2})
    provider = VertexProvider(spec(emu.url), http)
    got: list[Event] = []
    with pytest.raises(BackendError) as info:
        async for event in provider.stream(request()):
            got.append(event)
    assert info.value.failure is FailureClass.STREAM_BROKEN
    assert joined(got) == text.expected_text(CHAT_CONTEXT, 2)


@pytest.mark.parametrize(
    ("route", "kind"), [("chat_completions", Kind.CHAT), ("stream_raw_predict", Kind.COMPLETION)]
)
async def test_resumption_continues_exactly(
    make: Make, http: aiohttp.ClientSession, route: str, kind: Kind
) -> None:
    emu = await make()
    provider = VertexProvider(spec(emu.url, route), http)
    full = joined(await collect(provider, request(kind, 8)))
    prefix = " ".join(full.split(" ")[:4])
    assert prefix + joined(await collect(provider, request(kind, 5).resumed(prefix))) == full


async def test_closing_early_aborts_the_upstream(make: Make, http: aiohttp.ClientSession) -> None:
    emu = await make(itl_s=0.02)
    provider = VertexProvider(spec(emu.url), http)
    stream = provider.stream(request(max_tokens=200))
    async for event in stream:
        if isinstance(event, TokenDelta) and event.text:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await wait_for(lambda: emu.stats.disconnects == 1 and emu.stats.running == 0)


class FakeCredentials(Credentials):
    """Expiring credentials whose refresh is counted and gated."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def refresh(self, request: Any) -> None:
        self.entered.set()
        self.gate.wait(5)
        self.threads.add(threading.get_ident())
        self.refreshes += 1
        self.token = f"tok-{self.refreshes}"
        self.expiry = _utcnow() + datetime.timedelta(hours=1)

    def expire_in(self, seconds: float) -> None:
        self.expiry = _utcnow() + datetime.timedelta(seconds=seconds)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


async def test_token_refresh_is_single_flight_and_off_the_loop() -> None:
    fake = FakeCredentials()
    creds = GoogleCredentials(fake, refresh=lambda c: c.refresh(None))
    waiters = [asyncio.ensure_future(creds.headers()) for _ in range(20)]
    await wait_for(fake.entered.is_set)
    fake.gate.set()
    headers = await asyncio.gather(*waiters)
    assert {h["authorization"] for h in headers} == {"Bearer tok-1"}
    assert fake.refreshes == 1
    assert threading.get_ident() not in fake.threads


async def test_stale_token_is_used_while_refreshing_behind() -> None:
    fake = FakeCredentials()
    fake.gate.set()
    creds = GoogleCredentials(fake, refresh=lambda c: c.refresh(None))
    assert (await creds.headers())["authorization"] == "Bearer tok-1"
    fake.expire_in(60)  # inside google-auth's 3 min 45 s refresh threshold: STALE
    assert (await creds.headers())["authorization"] == "Bearer tok-1"
    await wait_for(lambda: fake.refreshes == 2)
    assert (await creds.headers())["authorization"] == "Bearer tok-2"
    fake.expire_in(-1)  # expired: INVALID, callers wait for the new token
    assert (await creds.headers())["authorization"] == "Bearer tok-3"
    await creds.close()


async def test_application_default_loads_in_a_thread() -> None:
    threads: list[int] = []

    def load() -> Credentials:
        threads.append(threading.get_ident())
        fake = FakeCredentials()
        fake.gate.set()
        return fake

    creds = GoogleCredentials(load=load, refresh=lambda c: c.refresh(None))
    assert (await creds.headers())["authorization"] == "Bearer tok-1"
    assert threads and threads[0] != threading.get_ident()


async def test_failed_credentials_are_a_server_side_failure() -> None:
    def load() -> Credentials:
        from google.auth.exceptions import DefaultCredentialsError

        raise DefaultCredentialsError("no ADC here")

    with pytest.raises(BackendError, match="no ADC here") as info:
        await GoogleCredentials(load=load).headers()
    assert info.value.failure is FailureClass.SERVER


async def test_a_refused_token_is_refreshed_once_and_the_request_sent_again(
    make: Make, http: aiohttp.ClientSession
) -> None:
    """A token revoked (or judged expired by a skewed clock) before its local
    expiry: the 401 refreshes it at once and the same request succeeds."""
    fake = FakeCredentials()
    fake.gate.set()
    creds = GoogleCredentials(fake, refresh=lambda c: c.refresh(None))
    emu = await make(tokens=("tok-2",))  # tok-1, still fresh here, was revoked
    provider = VertexProvider(spec(emu.url, emulator_credentials=False), http, creds)
    assert joined(await collect(provider, request())) == text.expected_text(CHAT_CONTEXT, 6)
    assert fake.refreshes == 2 and emu.stats.requests == 2 and emu.stats.last_token == "tok-2"


async def test_a_token_refused_again_after_its_refresh_is_a_server_failure(
    make: Make, http: aiohttp.ClientSession
) -> None:
    fake = FakeCredentials()
    fake.gate.set()
    creds = GoogleCredentials(fake, refresh=lambda c: c.refresh(None))
    emu = await make(tokens=("never",))
    provider = VertexProvider(spec(emu.url, emulator_credentials=False), http, creds)
    with pytest.raises(BackendError, match="UNAUTHENTICATED") as info:
        await collect(provider, request())
    assert info.value.failure is FailureClass.SERVER and info.value.status == 401
    assert fake.refreshes == 2 and emu.stats.requests == 2  # one refresh, one retry


async def test_concurrent_401s_share_one_refresh(make: Make, http: aiohttp.ClientSession) -> None:
    fake = FakeCredentials()
    fake.gate.set()
    creds = GoogleCredentials(fake, refresh=lambda c: c.refresh(None))
    await creds.headers()  # tok-1
    fake.gate.clear()
    fake.entered.clear()
    emu = await make(tokens=("tok-2",))
    provider = VertexProvider(spec(emu.url, emulator_credentials=False), http, creds)
    streams = [asyncio.ensure_future(collect(provider, request())) for _ in range(5)]
    await wait_for(lambda: emu.stats.requests == 5 and fake.entered.is_set())
    fake.gate.set()
    for events in await asyncio.gather(*streams):
        assert joined(events) == text.expected_text(CHAT_CONTEXT, 6)
    assert fake.refreshes == 2 and emu.stats.requests == 10


async def test_static_credentials_are_not_refreshed(
    make: Make, http: aiohttp.ClientSession
) -> None:
    emu = await make(tokens=("other",))
    provider = VertexProvider(spec(emu.url), http)  # the emulator's static token
    with pytest.raises(BackendError, match="UNAUTHENTICATED"):
        await collect(provider, request())
    assert emu.stats.requests == 1


async def test_nothing_deployed_is_failed_precondition_and_fails_over(
    make: Make, http: aiohttp.ClientSession
) -> None:
    """400 is usually the client's fault (INVALID_ARGUMENT), but 400
    FAILED_PRECONDITION on an endpoint with no model deployed is the backend's:
    another backend may serve the same request."""
    emu = await make(undeployed=("1234567890",))
    provider = VertexProvider(spec(emu.url), http)
    with pytest.raises(BackendError, match="FAILED_PRECONDITION") as info:
        await collect(provider, request())
    assert info.value.status == 400 and info.value.failure is FailureClass.SERVER
