"""Cross-region transfer: bytes each way between the gateway's region and the backend's, per GB."""

from __future__ import annotations

import contextlib
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from failover.failure import ExecutionFailed
from gateway.app.build import build
from gateway.config.cost import CostConfig
from gateway.http.schema import parse_request
from gateway.observe.metrics import Metrics
from gateway.observe.transfer import TransferPricing
from gateway.pipeline.core import Pipeline
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions.inventory import Region
from regions.request import Kind
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.gateway.test_grpc_helpers import auth, grpc_config, stub
from tests.gateway.test_metrics_requests import scrape, total

HERE = "aws:us-east-1"
AWS_EU = Region("aws:eu-west-1", frozenset({"EU"}))
GCP = Region("gcp:europe-west4", frozenset({"EU"}))
LOCAL = Region(HERE, frozenset({"US"}))


def pricing(**fields: object) -> TransferPricing:
    return TransferPricing(CostConfig.model_validate({"region": HERE, **fields}))


def test_same_region_and_unknown_gateway_region_count_nothing() -> None:
    assert pricing(transfer_per_gb=0.02).price(LOCAL, 10_000, 50_000) is None
    unknown = TransferPricing(CostConfig(transfer_per_gb=0.02))
    assert unknown.price(AWS_EU, 10_000, 50_000) is None


def test_bytes_each_way_at_the_default_price_per_gb() -> None:
    t = pricing(transfer_per_gb=0.02).price(AWS_EU, 1_000_000, 3_000_000)
    assert t is not None
    assert t[:4] == (HERE, "aws:eu-west-1", 1_000_000, 3_000_000)
    assert t.usd == pytest.approx(4e6 * 0.02 / 1e9)


def test_a_cloud_pair_is_priced_in_the_direction_the_bytes_flow() -> None:
    p = pricing(transfer_per_gb=0.02, transfer_pairs={"aws->gcp": 0.09, "gcp->aws": 0.12})
    t = p.price(GCP, 1_000_000_000, 2_000_000_000)
    assert t is not None
    assert t.usd == pytest.approx(1 * 0.09 + 2 * 0.12)  # request out of AWS, response out of GCP
    free = pricing(transfer_pairs={"aws->aws": 0.0}).price(AWS_EU, 10, 10)
    assert free is not None and free.usd == 0.0  # counted in bytes even when free


def test_metrics_count_bytes_by_direction_and_spend_by_tenant() -> None:
    metrics = Metrics()
    t = pricing(transfer_per_gb=0.5).price(AWS_EU, 2_000, 8_000)
    assert t is not None
    metrics.transferred("acme", t)
    text = generate_latest(metrics.registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    out = (("from_region", HERE), ("to_region", "aws:eu-west-1"))
    back = (("from_region", "aws:eu-west-1"), ("to_region", HERE))
    assert samples[("meridian_transfer_bytes_total", out)] == 2_000
    assert samples[("meridian_transfer_bytes_total", back)] == 8_000
    spend = (("backend_region", "aws:eu-west-1"), ("gateway_region", HERE), ("tenant", "acme"))
    assert samples[("meridian_transfer_spend_usd_total", spend)] == pytest.approx(1e4 * 0.5 / 1e9)


async def serve_one(pipeline: Pipeline, request_bytes: int, response_bytes: int) -> None:
    """What a front end does for one chat request, telling the pipeline its bytes."""
    caller = pipeline.authenticate(f"Bearer {GLOBAL_KEY}")
    assert caller is not None
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    request = parse_request(
        Kind.CHAT,
        body,
        request_id="transfer-1",
        tenant=caller.tenant.name,
        residency=caller.tenant.residency,
        session=None,
        key_digest=caller.key_digest,
    )
    execution = pipeline.execution(request, pipeline.plan(request, caller))
    async with pipeline.serving(execution) as outcome:
        # As a front end would: the body it read, then what it answered (set first here,
        # so a request that fails still reports the bytes of its error answer).
        outcome.request_bytes, outcome.response_bytes = request_bytes, response_bytes
        await execution.start()
        async with contextlib.aclosing(execution.events()) as events:
            async for _ in events:
                pass


async def test_a_served_request_counts_its_bytes_and_their_price(
    emulators: EmulatorFactory, tmp_path: Path
) -> None:
    em = await emulators()
    log = tmp_path / "access.log"
    config = gateway_config(
        [("fra", "onprem:fra1", "v1", em.url)],
        cost={"region": HERE, "transfer_per_gb": 0.5, "transfer_pairs": {"onprem->aws": 0.1}},
        observability={"access_log": {"destination": str(log)}},
    )
    built = await build(config)
    try:
        await serve_one(built.pipeline, 2_000_000, 6_000_000)
    finally:
        await built.runtime.close()
    text = generate_latest(built.runtime.metrics.registry).decode()
    got = {
        (s.name, s.labels.get("from_region"), s.labels.get("to_region")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "meridian_transfer_bytes_total"
    }
    name = "meridian_transfer_bytes_total"
    assert got == {(name, HERE, "onprem:fra1"): 2e6, (name, "onprem:fra1", HERE): 6e6}
    usd = (2e6 * 0.5 + 6e6 * 0.1) / 1e9  # out of AWS at the default, back at the pair's rate
    line = orjson.loads(log.read_text().splitlines()[-1])
    assert line["transfer_bytes"] == 8_000_000
    assert line["transfer_usd"] == pytest.approx(usd)
    assert line["cost_usd"] == 0  # token spend apart (this backend is free)


async def test_without_the_gateway_region_nothing_is_counted(emulators: EmulatorFactory) -> None:
    em = await emulators()
    built = await build(
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], cost={"transfer_per_gb": 0.5})
    )
    try:
        await serve_one(built.pipeline, 2_000_000, 6_000_000)
    finally:
        await built.runtime.close()
    text = generate_latest(built.runtime.metrics.registry).decode()
    assert "meridian_transfer_bytes_total{" not in text


async def test_a_request_no_backend_answered_counts_no_transfer(emulators: EmulatorFactory) -> None:
    """The error body is the gateway's own: nothing came from the backend's region."""
    em = await emulators()
    em.faults.update({"status": 400})  # a client error from the model: no retry
    built = await build(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)],
            cost={"region": HERE, "transfer_per_gb": 0.5},
        )
    )
    try:
        with pytest.raises(ExecutionFailed):
            await serve_one(built.pipeline, 2_000_000, 6_000_000)
    finally:
        await built.runtime.close()
    text = generate_latest(built.runtime.metrics.registry).decode()
    assert "meridian_transfer_bytes_total{" not in text


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "asked"),
    [
        ("/v1/chat/completions", {"messages": HI, "stream": False}),
        ("/v1/chat/completions", {"messages": HI, "stream": True}),
        ("/v1/embeddings", {"input": ["the sea", "the sky"]}),
        ("/v1/responses", {"input": "hi", "stream": False}),
        ("/v1/responses", {"input": "hi", "stream": True}),
    ],
)
async def test_each_http_route_reports_the_bytes_it_moved(
    emulators: EmulatorFactory, gateways: GatewayFactory, path: str, asked: dict[str, object]
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)], cost={"region": HERE, "transfer_per_gb": 1.0}
        )
    )
    body = orjson.dumps({"model": MODEL, **asked})
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gw.http_url + path,
            data=body,
            headers={"Authorization": f"Bearer {GLOBAL_KEY}", "Content-Type": "application/json"},
        ) as r:
            assert r.status == 200
            answer = await r.read()
        samples = await scrape(s, gw.admin_url)
    sent = total(samples, "meridian_transfer_bytes_total", from_region=HERE)
    received = total(samples, "meridian_transfer_bytes_total", to_region=HERE)
    assert sent == len(body)
    if asked.get("stream"):  # as written to the wire: the chunked framing's few bytes per chunk too
        assert len(answer) <= received <= 1.1 * len(answer)
    else:
        assert received == len(answer)


async def test_each_grpc_call_reports_the_bytes_it_moved(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        grpc_config(
            [("fra", "onprem:fra1", "v1", em.url)], cost={"region": HERE, "transfer_per_gb": 1.0}
        )
    )
    moved: list[tuple[int, int]] = []  # (request, reply) bytes of each call, as the client saw them
    async with stub(gw) as s:
        streamed = pb.ChatRequest(model=MODEL, messages=[pb.Message(role="user", content="hi")])
        chunks = [c async for c in s.StreamChat(streamed, metadata=auth())]
        moved.append((streamed.ByteSize(), sum(c.ByteSize() for c in chunks)))
        reply = await s.Chat(streamed, metadata=auth())
        moved.append((streamed.ByteSize(), reply.ByteSize()))  # the whole reply, not its text
        embed = pb.EmbedRequest(model=MODEL, input=["the sea", "the sky"])
        vectors = await s.Embed(embed, metadata=auth())
        moved.append((embed.ByteSize(), vectors.ByteSize()))  # the reply, not the backend's JSON
    async with aiohttp.ClientSession() as session:
        samples = await scrape(session, gw.admin_url)
    assert total(samples, "meridian_transfer_bytes_total", from_region=HERE) == sum(
        m[0] for m in moved
    )
    assert total(samples, "meridian_transfer_bytes_total", to_region=HERE) == sum(
        m[1] for m in moved
    )
