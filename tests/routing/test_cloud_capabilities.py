"""What SageMaker and Vertex backends inherit from their container or route (routing.capabilities)."""

from __future__ import annotations

import pytest

from regions.inventory import (
    BackendSpec,
    Container,
    ProviderKind,
    Region,
    SageMakerOptions,
    VertexOptions,
    VertexRoute,
)
from routing.capabilities import ALL, missing, provided

REGION = Region("aws:us-east-1", frozenset({"US"}))


def sagemaker(container: Container, declared: frozenset[str] | None = None) -> BackendSpec:
    options = SageMakerOptions("e", "us-east-1", container)
    return BackendSpec(
        "sm",
        "m",
        "v1",
        REGION,
        ProviderKind.SAGEMAKER,
        "http://x",
        "s",
        sagemaker=options,
        capabilities=declared,
    )


def vertex(route: VertexRoute) -> BackendSpec:
    options = VertexOptions("p", "europe-west4", "1", route)
    return BackendSpec(
        "vx", "m", "v1", REGION, ProviderKind.VERTEX, "http://x", "s", vertex=options
    )


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (sagemaker("vllm"), ALL),
        (sagemaker("tgi"), frozenset()),
        (sagemaker("lmi"), frozenset()),
        (vertex("stream_raw_predict"), ALL),
        (vertex("chat_completions"), ALL - {"multiple_choices", "embeddings"}),
    ],
    ids=["sagemaker-vllm", "sagemaker-tgi", "sagemaker-lmi", "vertex-raw", "vertex-chat"],
)
def test_inherited_from_the_container_or_route(
    backend: BackendSpec, expected: frozenset[str]
) -> None:
    assert provided(backend) == expected


def test_a_declaration_narrows_a_vllm_endpoint_to_embeddings_only() -> None:
    """An embedding model on SageMaker's vLLM container: nothing a generation asks."""
    embedder = sagemaker("vllm", frozenset({"embeddings"}))
    assert missing(embedder, {"embeddings": "input"}) is None
    assert missing(embedder, {"multiple_choices": "n"}) == "multiple_choices"
    assert missing(sagemaker("tgi", frozenset({"embeddings"})), {"embeddings": "input"})
