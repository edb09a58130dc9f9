"""The SageMaker emulator as AWS's own client sees it: boto3 against real loopback HTTP.

boto3 is synchronous, so its calls run in a thread while the emulator serves
on the test's loop. What boto3 parses is fed to our payload decoder too, so
boto3 and the adapter are shown to agree on the same bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import boto3
import orjson
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from emulators import text
from emulators.sagemaker import (
    COMPONENT_NAME_MISSING,
    SageMakerEmulator,
    SageMakerEmulatorConfig,
)
from regions.events import Finish, TokenDelta
from regions.sagemaker_payloads import PayloadDecoder

PROMPT = text.render_chat([("user", "hello")], False)
CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "stream": True}
GENERATE = {
    "inputs": "Once upon",
    "parameters": {"max_new_tokens": 6, "details": True},  # as the adapter asks
    "stream": True,
}

Factory = Callable[..., Awaitable[SageMakerEmulator]]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    started: list[SageMakerEmulator] = []

    async def start(**config: Any) -> SageMakerEmulator:
        emulator = SageMakerEmulator(SageMakerEmulatorConfig(**config))
        await emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.stop()


def client(url: str, **config: Any) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": 1}, **config),
    )


def stream(url: str, endpoint: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    """invoke_endpoint_with_response_stream, read to the end (in a worker thread)."""
    resp = client(url).invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=orjson.dumps(body), ContentType="application/json", **params
    )
    parts = [event["PayloadPart"]["Bytes"] for event in resp["Body"]]
    return {**resp, "parts": parts}


def decoded(parts: list[bytes], chat: bool) -> tuple[str, str | None]:
    decoder = PayloadDecoder(chat)
    events = [e for part in parts for e in decoder.feed(part)] + decoder.close()
    text_ = "".join(e.text for e in events if isinstance(e, TokenDelta))
    return text_, next((e.reason for e in events if isinstance(e, Finish)), None)


@pytest.mark.parametrize(
    ("endpoint", "body", "content_type", "context"),
    [
        ("llm-vllm", CHAT, "text/event-stream", PROMPT),
        ("llm-tgi", CHAT, "text/event-stream", PROMPT),
        ("llm-lmi", CHAT, "application/jsonlines", PROMPT),
        ("llm-tgi", GENERATE, "text/event-stream", "Once upon"),
        ("llm-lmi", GENERATE, "application/jsonlines", "Once upon"),
        (
            "llm-vllm",
            {"prompt": "Once upon", "max_tokens": 6, "stream": True},
            "text/event-stream",
            "Once upon",
        ),
    ],
)
async def test_boto3_parses_every_container_stream(
    make: Factory, endpoint: str, body: dict[str, Any], content_type: str, context: str
) -> None:
    emu = await make(max_part_bytes=9)  # lines split across many PayloadParts
    resp = await asyncio.to_thread(stream, emu.url, endpoint, body, Accept=content_type)
    assert resp["ContentType"] == content_type
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert len(resp["parts"]) > 12 and max(len(p) for p in resp["parts"]) <= 9
    assert decoded(resp["parts"], "messages" in body) == (text.expected_text(context, 6), "length")
    assert emu.stats.last_headers["X-Amzn-SageMaker-Accept"] == content_type
    assert emu.stats.last_headers["signing-region"] == "us-east-1"


def _lines(parts: list[bytes], sse_prefix: bytes = b"") -> list[dict[str, Any]]:
    joined = b"".join(parts)
    sep = b"\n\n" if sse_prefix else b"\n"
    out = []
    for line in joined.split(sep):
        line = line.strip()
        if line and line != sse_prefix + b"[DONE]":
            out.append(orjson.loads(line.removeprefix(sse_prefix)))
    return out


async def test_container_payloads_follow_their_output_formatters(make: Factory) -> None:
    """Shapes from the containers' own source (cited in emulators.containers):
    TGI's StreamResponse (index from 1, StreamDetails with input_length); LMI's
    jsonlines (log_prob, details with inputs, its finish reasons) and LMI chat
    chunks (no model, no role-only chunk, finish_reason eos_token/length)."""
    emu = await make(default_max_tokens=3)
    tgi = _lines((await asyncio.to_thread(stream, emu.url, "llm-tgi", GENERATE))["parts"], b"data:")
    assert [e["index"] for e in tgi] == list(range(1, 7))
    assert tgi[-1]["details"] == {
        "finish_reason": "length",
        "generated_tokens": 6,
        "seed": None,
        "input_length": text.count_tokens("Once upon"),
    }
    lmi = _lines((await asyncio.to_thread(stream, emu.url, "llm-lmi", GENERATE))["parts"])
    assert set(lmi[0]["token"]) == {"id", "text", "log_prob"} and "details" not in lmi[0]
    assert lmi[-1]["details"] == {
        "finish_reason": "length",
        "generated_tokens": 6,
        "inputs": "Once upon",
    }
    bare = {**GENERATE, "parameters": {"max_new_tokens": 2}}  # no details asked: none sent
    last = _lines((await asyncio.to_thread(stream, emu.url, "llm-lmi", bare))["parts"])[-1]
    assert "details" not in last and last["generated_text"] == text.expected_text("Once upon", 2)
    chat = {"messages": [{"role": "user", "content": "hello"}], "stream": True}  # natural stop
    chunks = _lines((await asyncio.to_thread(stream, emu.url, "llm-lmi", chat))["parts"])
    assert all("model" not in c and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {
        "content": text.generate(PROMPT, 3)[0],
        "role": "assistant",
    }
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "eos_token"]
    assert decoded(
        (await asyncio.to_thread(stream, emu.url, "llm-lmi", chat))["parts"], chat=True
    ) == (text.expected_text(PROMPT, 3), "stop")
    tgi_chat = {**chat, "stream_options": {"include_usage": True}}
    parts = (await asyncio.to_thread(stream, emu.url, "llm-tgi", tgi_chat))["parts"]
    events = _lines(parts, b"data:")
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == "" for e in events)
    assert all(c["delta"]["role"] == "assistant" for e in events for c in e["choices"])
    assert [c["finish_reason"] for e in events for c in e["choices"]] == [None] * 3 + ["stop"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4
    assert b"".join(parts).endswith(b"data:[DONE]\n\n")
    assert decoded(parts, chat=True) == (text.expected_text(PROMPT, 3), "stop")


async def test_natural_stop_ends_with_tgi_special_eos(make: Factory) -> None:
    emu = await make(default_max_tokens=4)
    body = {"inputs": "Once", "parameters": {"details": True}, "stream": True}
    resp = await asyncio.to_thread(stream, emu.url, "llm-tgi", body)
    last = orjson.loads(resp["parts"][-1].removeprefix(b"data:"))
    assert last["token"] == {"id": 2, "text": "</s>", "logprob": -0.1, "special": True}
    assert last["details"]["finish_reason"] == "eos_token"
    assert last["generated_text"] == text.expected_text("Once", 4)
    assert decoded(resp["parts"], chat=False) == (text.expected_text("Once", 4), "stop")


@pytest.mark.parametrize(
    ("faults", "code", "message"),
    [
        ({"stream_error": "ModelStreamError"}, "ModelStreamError", "allotted time"),
        ({"stream_error": "InternalStreamFailure"}, "InternalStreamFailure", "Internal stream"),
        ({"stream_error": "error"}, "InternalServerException", "unmodeled"),
    ],
)
async def test_exception_frames_raise_event_stream_error(
    make: Factory, faults: dict[str, Any], code: str, message: str
) -> None:
    emu = await make()
    emu.faults.update({**faults, "stream_error_after_tokens": 2})

    def run() -> tuple[list[bytes], EventStreamError]:
        resp = client(emu.url).invoke_endpoint_with_response_stream(
            EndpointName="llm-tgi", Body=orjson.dumps(GENERATE)
        )
        seen: list[bytes] = []
        with pytest.raises(EventStreamError) as info:
            for event in resp["Body"]:
                seen.append(event["PayloadPart"]["Bytes"])
        return seen, info.value

    seen, error = await asyncio.to_thread(run)
    assert len(seen) == 2  # two tokens arrived before the failure
    assert error.response["Error"]["Code"] == code
    assert message in error.response["Error"]["Message"]
    # boto3 drops ModelStreamError's ErrorCode (docs/design.md §10); it is on the wire
    assert "ErrorCode" not in error.response["Error"]


@pytest.mark.parametrize(
    ("faults", "code", "status", "extra"),
    [
        ({"status": 429}, "ModelNotReadyException", 429, {}),
        ({"status": 503}, "ServiceUnavailable", 503, {}),
        ({"status": 500}, "InternalFailure", 500, {}),
        ({"error_code": "ThrottlingException"}, "ThrottlingException", 400, {}),
        ({"status": 502}, "ModelError", 424, {"OriginalStatusCode": 502}),
        (
            {"error_code": "ModelError", "original_status": 429},
            "ModelError",
            424,
            {"OriginalStatusCode": 429},
        ),
    ],
)
async def test_error_responses_parse_as_aws_errors(
    make: Factory, faults: dict[str, Any], code: str, status: int, extra: dict[str, Any]
) -> None:
    emu = await make()
    emu.faults.update({**faults, "times": 1})
    with pytest.raises(ClientError) as info:
        await asyncio.to_thread(stream, emu.url, "llm-vllm", CHAT)
    response = info.value.response
    assert response["Error"]["Code"] == code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    for key, value in extra.items():
        assert response[key] == value
    assert emu.faults.status is None and emu.faults.error_code is None  # `times` used up
    assert (await asyncio.to_thread(stream, emu.url, "llm-vllm", CHAT))["parts"]


async def test_container_rejections_are_model_errors(make: Factory) -> None:
    emu = await make()
    with pytest.raises(ClientError) as info:
        await asyncio.to_thread(stream, emu.url, "llm-tgi", {"inputs": "", "stream": True})
    assert info.value.response["Error"]["Code"] == "ModelError"
    assert info.value.response["OriginalStatusCode"] == 422
    assert "Received client error (422)" in info.value.response["Error"]["Message"]


async def test_validation_errors_for_endpoint_variant_and_component(make: Factory) -> None:
    emu = await make(inference_components=("ic-llama",))
    cases = [
        ({"EndpointName": "nope"}, "Endpoint nope of account"),
        ({"EndpointName": "llm-vllm", "TargetVariant": "Blue"}, "variant"),
        ({"EndpointName": "llm-vllm"}, COMPONENT_NAME_MISSING),
        ({"EndpointName": "llm-vllm", "InferenceComponentName": "ic-other"}, "ic-other"),
    ]
    for params, message in cases:

        def call(params: dict[str, Any] = params) -> Any:
            return client(emu.url).invoke_endpoint_with_response_stream(
                Body=orjson.dumps(CHAT), **params
            )

        with pytest.raises(ClientError) as info:
            await asyncio.to_thread(call)
        assert info.value.response["Error"]["Code"] == "ValidationError"
        assert message in info.value.response["Error"]["Message"]
    resp = await asyncio.to_thread(
        stream,
        emu.url,
        "llm-vllm",
        CHAT,
        InferenceComponentName="ic-llama",
        TargetVariant="AllTraffic",
        CustomAttributes="tenant=a",
    )
    assert resp["parts"]
    assert emu.stats.last_headers["X-Amzn-SageMaker-Inference-Component"] == "ic-llama"
    assert emu.stats.last_headers["X-Amzn-SageMaker-Custom-Attributes"] == "tenant=a"
    assert emu.stats.last_headers["X-Amzn-SageMaker-Target-Variant"] == "AllTraffic"


async def test_unsigned_requests_are_refused(make: Factory) -> None:
    emu = await make()
    unsigned = boto3.client(
        "sagemaker-runtime",
        endpoint_url=emu.url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
    )
    with pytest.raises(ClientError) as info:
        await asyncio.to_thread(unsigned.invoke_endpoint, EndpointName="llm-vllm", Body=b"{}")
    assert info.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        ("llm-tgi", {"inputs": "Once upon", "parameters": {"max_new_tokens": 3}}, "tgi"),
        ("llm-lmi", {"inputs": "Once upon", "parameters": {"max_new_tokens": 3}}, "lmi"),
        ("llm-vllm", {"prompt": "Once upon", "max_tokens": 3}, "vllm"),
    ],
)
async def test_invoke_endpoint_non_streaming(
    make: Factory, endpoint: str, body: dict[str, Any], expected: str
) -> None:
    emu = await make()

    def call() -> Any:
        resp = client(emu.url).invoke_endpoint(EndpointName=endpoint, Body=orjson.dumps(body))
        return orjson.loads(resp["Body"].read())

    answer = await asyncio.to_thread(call)
    want = text.expected_text("Once upon", 3)
    if expected == "tgi":
        assert answer == [{"generated_text": want}]
    elif expected == "lmi":
        assert answer == {"generated_text": want}
    else:
        assert answer["choices"][0]["text"] == want and answer["usage"]["completion_tokens"] == 3


async def test_resumed_chat_continues_exactly(make: Factory) -> None:
    """A final assistant message (TGI/LMI) or continue_final_message (vLLM) continues."""
    emu = await make()
    full = text.generate(PROMPT, 6)
    prefix = "".join(full[:2])
    messages = [*CHAT["messages"], {"role": "assistant", "content": prefix}]  # type: ignore[misc]
    body = {"messages": messages, "max_tokens": 4, "stream": True}
    for endpoint, extra in (
        ("llm-tgi", {}),
        ("llm-lmi", {}),
        ("llm-vllm", {"continue_final_message": True, "add_generation_prompt": False}),
    ):
        resp = await asyncio.to_thread(stream, emu.url, endpoint, {**body, **extra})
        assert decoded(resp["parts"], chat=True)[0] == "".join(full[2:]), endpoint


async def test_faults_over_http_accept_sagemaker_fields(make: Factory) -> None:
    emu = await make()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            emu.url + "/_emulator/faults",
            json={
                "stream_error": "ModelStreamError",
                "stream_error_code": "StreamBroken",
                "times": 1,
            },
        ) as r:
            assert r.status == 200
            assert (await r.json())["stream_error_code"] == "StreamBroken"
        async with http.post(emu.url + "/_emulator/faults", json={"stream_error": "nope"}) as r:
            assert r.status == 400
        async with http.post(emu.url + "/_emulator/faults", json={"bogus": 1}) as r:
            assert r.status == 400
        async with http.delete(emu.url + "/_emulator/faults") as r:
            assert (await r.json())["stream_error"] is None
        async with http.get(emu.url + "/_emulator/stats") as r:
            assert (await r.json())["requests"] == 0
