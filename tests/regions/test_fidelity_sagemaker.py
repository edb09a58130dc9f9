"""SageMaker behaviour checked against what AWS itself sends, read by AWS's own client.

The texts and codes are AWS's, quoted in the emulator with their sources
(``emulators.sagemaker``); here boto3 parses the emulator's answer and
the adapter must class it as the misconfiguration it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from regions.errors import BackendError, FailureClass
from regions.inventory import BackendSpec, ProviderKind, Region, SageMakerOptions
from regions.request import GenerationRequest, Kind, Message, Sampling
from regions.sagemaker import SageMakerProvider
from regions.sagemaker_errors import response_error

# AWS's message, as botocore reported it from real endpoints (langchain-ai/langchain#14344).
AWS_TEXT = (
    "Inference Component Name header is required for endpoints to which you plan to "
    "deploy inference components. Please include Inference Component Name header or "
    "consider using SageMaker models."
)
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}


@pytest.fixture
async def emulator() -> AsyncIterator[SageMakerEmulator]:
    emu = SageMakerEmulator(SageMakerEmulatorConfig(inference_components=("ic-llama",)))
    await emu.start()
    yield emu
    await emu.stop()


def _boto3_stream(url: str, **params: Any) -> Any:
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": 1}),
    )
    return client.invoke_endpoint_with_response_stream(
        EndpointName="llm-vllm", Body=orjson.dumps(CHAT), **params
    )


async def test_missing_component_header_is_aws_validation_error(
    emulator: SageMakerEmulator,
) -> None:
    with pytest.raises(ClientError) as info:
        await asyncio.to_thread(_boto3_stream, emulator.url)
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"] == AWS_TEXT
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    async with aiohttp.ClientSession() as http:
        url = f"{emulator.url}/endpoints/llm-vllm/invocations-response-stream"
        auth = (
            "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/sagemaker/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
        )
        headers = {"Authorization": auth, "X-Amz-Date": "20260101T000000Z"}
        async with http.post(url, data=b"{}", headers=headers) as resp:
            body = orjson.loads(await resp.read())
    assert body == {"ErrorCode": "INFERENCE_COMPONENT_NAME_MISSING", "Message": AWS_TEXT}


def test_missing_component_is_a_backend_misconfiguration() -> None:
    """The raw AWS answer (body as quoted in BerriAI/litellm PR #37766) fails
    over: the client's request is fine, the backend lacks its component name."""
    body = orjson.dumps({"ErrorCode": "INFERENCE_COMPONENT_NAME_MISSING", "Message": AWS_TEXT})
    error = response_error(400, {"x-amzn-ErrorType": "ValidationError:http://x/"}, body)
    assert error.failure is FailureClass.SERVER
    plain = orjson.dumps({"message": "1 validation error detected: Value at 'body'"})
    assert response_error(400, {"x-amzn-ErrorType": "ValidationError"}, plain).failure is (
        FailureClass.CLIENT
    )


async def test_adapter_without_component_fails_over(emulator: SageMakerEmulator) -> None:
    spec = BackendSpec(
        name="sm",
        model="m",
        version="v1",
        region=Region("aws:us-east-1", frozenset({"US"})),
        kind=ProviderKind.SAGEMAKER,
        url=emulator.url,
        served_model="m",
        sagemaker=SageMakerOptions(
            endpoint_name="llm-vllm", region="us-east-1", emulator_credentials=True
        ),
    )
    request = GenerationRequest(
        kind=Kind.CHAT,
        model="m",
        request_id="r" * 32,
        messages=(Message("user", "hi"),),
        sampling=Sampling(max_tokens=3),
    )
    async with aiohttp.ClientSession() as http:
        provider = SageMakerProvider(spec, http)
        with pytest.raises(BackendError) as info:
            async for _ in provider.stream(request):
                pass
    assert info.value.failure is FailureClass.SERVER
    assert info.value.status == 400
    assert "Inference Component Name header is required" in info.value.message


async def test_model_errors_read_as_aws_writes_them() -> None:
    """ModelError's message ends with AWS's CloudWatch pointer; a container that
    never answered (OriginalStatusCode 0) carries AWS's timeout text."""
    emu = SageMakerEmulator(SageMakerEmulatorConfig())
    await emu.start()
    try:
        emu.faults.update({"error_code": "ModelError", "original_status": 0})
        with pytest.raises(ClientError) as info:
            await asyncio.to_thread(_boto3_stream, emu.url)
    finally:
        await emu.stop()
    response = info.value.response
    assert response["Error"]["Code"] == "ModelError" and response["OriginalStatusCode"] == 0
    assert response["OriginalMessage"].startswith(
        "Your invocation timed out while waiting for a response from container primary."
    )
    message = response["Error"]["Message"]
    assert message.startswith("Received server error (0) from primary with message")
    assert "#logEventViewer:group=/aws/sagemaker/Endpoints/llm-vllm in account" in message
    assert message.endswith("for more information.")
    assert response["LogStreamArn"].endswith(":log-group:/aws/sagemaker/Endpoints/llm-vllm")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    failure = response_error(424, {"x-amzn-ErrorType": "ModelError"}, orjson.dumps(response))
    assert failure.failure is FailureClass.TIMEOUT
