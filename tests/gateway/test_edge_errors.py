"""Errors at the client edge (issue 20): each one a clear 4xx, never a 5xx or a traceback."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from typing import Any

import aiohttp
import grpc
import pytest
from multidict import CIMultiDict

from emulators.vllm import VllmEmulator
from failover.executor import Execution
from gateway.app.build import pipeline as build_pipeline
from gateway.app.server import Gateway
from gateway.cli.admin_client import AdminClient, AdminError
from gateway.cli.main import main as cli_main
from gateway.http.schema import parse_request
from regions.request import UNRESTRICTED, Kind
from tests.conftest import (
    ADMIN_TOKEN,
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    runtime_of,
    wait_for,
)
from tests.gateway.control_kit import admin
from tests.gateway.test_grpc_helpers import auth as grpc_auth
from tests.gateway.test_grpc_helpers import chat as grpc_chat
from tests.gateway.test_grpc_helpers import stub, trailers

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
RESIDENCY = "x-meridian-residency"


def chat_body(extra: str = "") -> bytes:
    return (
        f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}]{extra}}}'
    ).encode()


async def one_backend(
    emulators: EmulatorFactory, gateways: GatewayFactory, **config: Any
) -> tuple[VllmEmulator, Gateway]:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)], **config))
    return em, gw


async def post(
    gw: Gateway,
    body: bytes,
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.http_url + path,
            data=body,
            headers={**AUTH, "Content-Type": "application/json", **(headers or {})},
        ) as resp,
    ):
        payload = await resp.json(content_type=None)
        return resp.status, payload.get("error", payload)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info is not None]


def requests_counted(gw: Gateway, status: str) -> float:
    assert gw.runtime is not None
    total = 0.0
    for metric in gw.runtime.metrics.requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["status"] == status:
                total += sample.value
    return total


# -- item 4: integers beyond 64 bits ------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (', "max_tokens": 1' + "0" * 30, "max_tokens"),
        (', "max_completion_tokens": 1' + "0" * 30, "max_completion_tokens"),
        (f', "seed": {2**64}', "seed"),
        (f', "seed": {-(2**63) - 1}', "seed"),
        (', "max_tokens": 1' + "0" * 400, "max_tokens"),
    ],
)
async def test_integers_beyond_64_bits_are_400_naming_the_field(  # type: ignore[no-untyped-def]
    emulators, gateways, caplog, extra, param
) -> None:
    em, gw = await one_backend(emulators, gateways)
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = chat_body(extra)
        if path == "/v1/completions":
            body = f'{{"model": "{MODEL}", "prompt": "hi"{extra}}}'.encode()
        status, err = await post(gw, body, path=path)
        assert status == 400, err
        assert err["param"] == param
        assert err["code"] == "invalid_request_error"
        assert str(err["message"]).startswith(f"{param}: ")
    assert em.stats.requests == 0
    assert not tracebacks(caplog)


async def test_largest_seed_still_serves(emulators, gateways) -> None:  # type: ignore[no-untyped-def]
    em, gw = await one_backend(emulators, gateways)
    status, body = await post(gw, chat_body(f', "seed": {2**63 - 1}, "max_tokens": 2'))
    assert status == 200, body
    assert em.stats.requests == 1


async def test_a_fault_is_counted_500_and_a_client_leaving_499(emulators, gateways) -> None:  # type: ignore[no-untyped-def]
    _, gw = await one_backend(emulators, gateways)
    rt = gw.runtime
    assert rt is not None
    pipeline = build_pipeline(rt)
    caller = pipeline.authenticate(AUTH["Authorization"])
    assert caller is not None

    def execution() -> Execution:
        gen = parse_request(
            Kind.CHAT,
            chat_body(),
            request_id="r",
            tenant=caller.tenant.name,
            residency=UNRESTRICTED,
            session=None,
            key_digest=caller.key_digest,
        )
        return pipeline.execution(gen, pipeline.plan(gen, caller))

    with pytest.raises(TypeError):
        async with pipeline.serving(execution()):
            raise TypeError("a bug below the edge")
    with pytest.raises(asyncio.CancelledError):
        async with pipeline.serving(execution()):
            raise asyncio.CancelledError
    assert requests_counted(gw, "500") == 1
    assert requests_counted(gw, "499") == 1


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


# -- item 9: a routing refusal tells the tenant its class, not the topology ---------


async def test_routing_refusal_hides_topology_from_the_tenant_and_logs_it(
    emulators: EmulatorFactory, gateways: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    em = await emulators()
    rows = [
        ("fra-v1", "onprem:fra1", "v1", em.url),
        ("ire-v1", "aws:eu-west-1", "v1", em.url),
        ("iad-v1", "aws:us-east-1", "v1", em.url),
    ]
    gw = await gateways(gateway_config(rows, listen={"grpc": "127.0.0.1:0"}))
    rt = runtime_of(gw)
    async with aiohttp.ClientSession() as s:
        for region in ("onprem:fra1", "aws:eu-west-1"):
            status, _ = await admin(s, gw, "POST", f"/admin/v1/regions/{region}/drain")
            assert status == 200
        await wait_for(lambda: rt.snapshot.dial("aws:eu-west-1") == 0)
        async with s.post(
            gw.http_url + "/v1/chat/completions",
            data=chat_body(),
            headers={"Authorization": f"Bearer {EU_KEY}"},
        ) as resp:
            err = (await resp.json())["error"]
            request_id = resp.headers["x-request-id"]
        assert resp.status == 503 and err["code"] == "no_backend_available"
        _, explained = await admin(s, gw, "GET", f"/admin/v1/route/explain?model={MODEL}&tenant=eu")
    async with stub(gw) as grpc_stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_stub.Chat(grpc_chat(), metadata=grpc_auth(EU_KEY))
    said = [err["message"], caught.value.details() or ""]
    for message in said:
        for secret in ("fra", "ire", "iad", "eu-west", "us-east", "drained", "residency"):
            assert secret not in message, message
    assert request_id in err["message"]
    grpc_id = trailers(caught.value)["x-request-id"]
    assert grpc_id in said[1]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for rid in (request_id, grpc_id):
        assert f"request {rid} of tenant eu refused (no_backend_available)" in logged
    assert "fra-v1 region drained" in logged and "iad-v1 outside residency" in logged
    # the operator's explanation keeps every detail
    assert "fra-v1 region drained" in explained["error"]["message"]


async def test_unknown_model_still_names_the_model(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    status, err = await post(gw, chat_body().replace(MODEL.encode(), b"gpt-9"))
    assert status == 404 and "`gpt-9` does not exist" in str(err["message"])


# -- item 11: the smaller ones ----------------------------------------------------------


@pytest.mark.parametrize("method", ["Chat", "StreamChat", "Complete", "ListModels"])
async def test_malformed_protobuf_is_invalid_argument(
    emulators: EmulatorFactory, gateways: GatewayFactory, method: str
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], listen={"grpc": "127.0.0.1:0"})
    )
    path = f"/meridian.v1.Inference/{method}"
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        # a broken tag, a truncated field, invalid UTF-8 in field 1 (a string,
        # ``model``, except in ListModelsRequest, where it is an unknown field)
        samples = [b"\xff\xff\xff", b"\x0a\x05ab"]
        if method != "ListModels":
            samples.append(b"\x0a\x02\xc3\x28")
        for garbage in samples:
            if method in ("StreamChat", "Complete"):
                call: Any = channel.unary_stream(path)(garbage, metadata=grpc_auth())
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in call:
                        pass
            else:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary(path)(garbage, metadata=grpc_auth())
            err = caught.value
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            assert "Error" not in (err.details() or "")  # no Python class name
            assert "is not a valid meridian.v1." in (err.details() or "")
            assert trailers(err)["meridian-error-code"] == "invalid_request_error"
    assert em.stats.requests == 0


async def test_admin_404_and_413_are_json_and_the_cli_says_them_once(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.admin_url + "/admin/v1/nothing", headers=auth) as resp:
            assert resp.status == 404 and resp.content_type == "application/json"
            assert (await resp.json())["error"]["message"] == "Not Found"
        big = b'{"split": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        async with s.put(gw.admin_url + f"/admin/v1/weights/{MODEL}", data=big, headers=auth) as r:
            assert r.status == 413 and r.content_type == "application/json"
            assert (await r.json())["error"]["code"] == "request_too_large"
    client = AdminClient(gw.admin_url, ADMIN_TOKEN)
    with pytest.raises(AdminError) as caught:
        await asyncio.to_thread(client.get, "/admin/v1/nothing")
    assert str(caught.value) == "404: Not Found"


@pytest.mark.parametrize(
    "args",
    [
        ["canary", "start", MODEL, "--to", "v2", "--max-error-delta", "nan"],
        ["canary", "start", MODEL, "--to", "v2", "--max-ttft-ratio", "inf"],
        ["canary", "start", MODEL, "--to", "v2", "--interval", "9" * 400],
        ["shadow", "start", MODEL, "--to", "v2", "--max-error-delta", "nan"],
    ],
)
def test_cli_refuses_non_finite_numbers_in_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens there: a refusal that names the option was decided before sending.
    code = cli_main([*args, "--admin-url", "http://127.0.0.1:9", "--token", "t"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("meridian: bad "), err


async def test_shadow_numbers_are_refused_like_a_canarys(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    rows = [("a", "onprem:fra1", "v1", em.url), ("b", "onprem:fra1", "v2", em.url)]
    gw = await gateways(gateway_config(rows, versions={"v1": 100, "v2": 0}))
    async with aiohttp.ClientSession() as s:
        for field, value in (("duration_s", 1e308), ("share", 1e300), ("min_pairs", 1e12)):
            body = {"candidate": "v2", field: value}
            status, payload = await admin(s, gw, "POST", f"/admin/v1/shadow/{MODEL}", body)
            assert status == 400, payload
            assert "finite number of sensible size" in payload["error"]["message"]


async def test_replica_of_no_backend_is_refused_and_detail_is_capped(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    path = f"/admin/v1/replicas/{MODEL}/v1"
    async with aiohttp.ClientSession() as s:
        status, err = await admin(s, gw, "PUT", f"{path}/aws:us-east-1", {"status": "verified"})
        assert status == 404 and err["error"]["code"] == "unknown_backend"
        status, err = await admin(
            s, gw, "PUT", f"{path}/onprem:fra1", {"status": "x", "detail": [1]}
        )
        assert status == 400 and "detail must be a string" in err["error"]["message"]
        huge = {"status": "copying", "detail": "d" * 900_000}
        status, _ = await admin(s, gw, "PUT", f"{path}/onprem:fra1", huge)
        assert status == 200
        _, audit = await admin(s, gw, "GET", "/admin/v1/audit?limit=10")
    assert len(json.dumps(audit)) < 10_000
    assert [e["action"] for e in audit["entries"]] == ["replica.set"]


async def _raw(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = gw.http_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def _head(lines: list[str]) -> bytes:
    return (
        "\r\n".join(["POST /v1/chat/completions HTTP/1.1", "Host: x", *lines]) + "\r\n\r\n"
    ).encode()


async def test_expect_100_continue_checks_the_key_first(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    body = chat_body(', "max_tokens": 2')
    length = f"Content-Length: {len(body)}"
    for auth_line in ("Authorization: Bearer sk-wrong", "X-No-Auth: 1"):
        reader, writer = await _raw(gw)
        writer.write(_head([auth_line, "Expect: 100-continue", length]))
        async with asyncio.timeout(5):
            status_line = await reader.readline()
            assert status_line.startswith(b"HTTP/1.1 401"), status_line
            assert await reader.read() != b""  # the JSON error, then the connection closes
        writer.close()
    reader, writer = await _raw(gw)
    writer.write(_head([f"Authorization: Bearer {GLOBAL_KEY}", "Expect: 100-continue", length]))
    async with asyncio.timeout(5):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
        writer.write(body)
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    assert em.stats.requests == 1


async def test_duplicate_authorization_headers_are_refused(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    headers = CIMultiDict(
        [("Authorization", f"Bearer {GLOBAL_KEY}"), ("Authorization", "Bearer x")]
    )
    async with aiohttp.ClientSession() as s:
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
            async with s.request(
                method, gw.http_url + path, data=chat_body(), headers=headers
            ) as r:
                assert r.status == 400
                assert "exactly one Authorization" in (await r.json())["error"]["message"]
    assert em.stats.requests == 0


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        (["Content-Length: 100"], b"408"),  # the body stops after one byte
        (["Content-Length: 100000"], b"413"),
    ],
)
async def test_connection_closes_promptly_after_408_and_413(
    emulators: EmulatorFactory, gateways: GatewayFactory, lines: list[str], status: bytes
) -> None:
    em, gw = await one_backend(
        emulators, gateways, limits={"max_body_bytes": 4096, "body_timeout_s": 0.3}
    )
    reader, writer = await _raw(gw)
    writer.write(_head([f"Authorization: Bearer {GLOBAL_KEY}", *lines]) + b"{")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        answered = loop.time()
        assert head.startswith(b"HTTP/1.1 " + status), head
        assert b"connection: close" in head.lower()
        await reader.read()  # the error body, then EOF
    assert loop.time() - answered < 2.0  # was 10 s (aiohttp's lingering time)
    writer.close()
    assert em.stats.requests == 0


async def test_empty_residency_header_is_a_clear_400(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    for value in (",", " , ,"):
        status, err = await post(gw, chat_body(), {"x-meridian-residency": value})
        assert status == 400, err
        assert err["param"] == "x-meridian-residency"
        assert "names no jurisdiction tag" in str(err["message"])
    status, err = await post(
        gw, chat_body(), {"x-meridian-residency": ",".join("ABCDEFGHIJKLMNOPQ")}
    )
    assert status == 400 and "at most 16 tags" in str(err["message"])
    assert em.stats.requests == 0


@pytest.mark.parametrize(
    ("content", "param", "says"),
    [
        ("5", "messages.0.content", "a valid string or a valid array"),
        ('[{"type": "text", "text": 5}]', "messages.0.content.0.text", "a valid string"),
        # Other part types (image_url...) pass through to the backend: only text is checked.
        ('[{"type": "text"}]', "messages.0.content.0", "a text part needs its text"),
    ],
)
async def test_content_part_errors_name_the_json_path(
    emulators: EmulatorFactory, gateways: GatewayFactory, content: str, param: str, says: str
) -> None:
    _, gw = await one_backend(emulators, gateways)
    body = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": {content}}}]}}'
    status, err = await post(gw, body.encode())
    assert status == 400
    assert err["param"] == param
    assert str(err["message"]).startswith(f"{param}: ") and says in str(err["message"])


async def test_the_gateways_400_and_the_models_400_share_one_code(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    _, ours = await post(gw, chat_body(', "stream": "yes"'))
    em.faults.update({"status": 400})
    status, theirs = await post(gw, chat_body())
    assert status == 400
    assert ours["code"] == theirs["code"] == "invalid_request_error"
    assert ours["type"] == theirs["type"] == "invalid_request_error"


# -- found by tests/gateway/test_hostile_clients.py ---------------------------------


@pytest.mark.parametrize("key", [GLOBAL_KEY, EU_KEY])
@pytest.mark.parametrize("name", ["x-meridian-residency", "x-meridian-session"])
async def test_headers_that_are_not_utf8_are_400(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    name: str,
    key: str,
) -> None:
    em, gw = await one_backend(emulators, gateways)
    reader, writer = await _raw(gw)
    body = chat_body()
    lines = [f"Authorization: Bearer {key}", f"Content-Length: {len(body)}", "Connection: close"]
    writer.write(_head(lines)[:-2] + f"{name}: \xe9t\xe9\r\n\r\n".encode("latin-1") + body)
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert f"the {name} header is not valid UTF-8".encode() in answer
    assert em.stats.requests == 0
    assert not tracebacks(caplog)


async def test_two_residency_headers_are_refused(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    headers = CIMultiDict([*AUTH.items(), (RESIDENCY, "EU"), (RESIDENCY, "US")])
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", data=chat_body(), headers=headers) as r,
    ):
        err = (await r.json())["error"]
    assert r.status == 400 and err["param"] == RESIDENCY
    assert em.stats.requests == 0


async def test_a_malformed_request_head_logs_no_traceback(
    emulators: EmulatorFactory, gateways: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _, gw = await one_backend(emulators, gateways)
    for bad in ("Content-Type: a\r\nContent-Type: b", "X-Bad\x01: 1", "Content-Length: -1"):
        reader, writer = await _raw(gw)
        writer.write(_head([bad]))
        async with asyncio.timeout(5):
            assert (await reader.read()).split(b" ", 2)[1] == b"400"
        writer.close()
    assert not [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]


async def test_http_level_refusals_are_json_with_a_code(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with aiohttp.ClientSession() as s:
        for method, path, status, code in (
            ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
            ("POST", "/v1/nothing", 404, "not_found"),
        ):
            async with s.request(method, gw.http_url + path, headers=AUTH) as r:
                err = (await r.json())["error"]
            assert (r.status, err["code"], err["type"]) == (status, code, "invalid_request_error")
            assert len(r.headers["x-request-id"]) == 32
    reader, writer = await _raw(gw)
    writer.write(_head([f"Authorization: Bearer {GLOBAL_KEY}", "Expect: x", "Content-Length: 2"]))
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 417") and b'"code":"expectation_failed"' in answer


async def test_grpc_duplicate_authorization_is_invalid_argument(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], listen={"grpc": "127.0.0.1:0"})
    )
    twice = (*grpc_auth(), ("authorization", "Bearer sk-other"))
    async with stub(gw) as s:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.Chat(grpc_chat(), metadata=twice)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exactly one authorization" in (caught.value.details() or "")
    assert em.stats.requests == 0


async def test_route_explain_bounds_max_tokens_as_the_api_does(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with aiohttp.ClientSession() as s:
        for value in ("0", "-5", "9" * 30, "x"):
            path = f"/admin/v1/route/explain?model={MODEL}&max_tokens={value}"
            status, body = await admin(s, gw, "GET", path)
            assert status == 400 and body["error"]["param"] == "max_tokens", (value, body)
        status, body = await admin(
            s, gw, "GET", f"/admin/v1/route/explain?model={MODEL}&max_tokens=5"
        )
        assert status == 200 and body["candidates"]


async def test_route_explain_parses_residency_as_the_api_does(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    base = f"/admin/v1/route/explain?model={MODEL}&residency="
    async with aiohttp.ClientSession() as s:
        status, body = await admin(s, gw, "GET", base + "%2C")
        assert status == 400 and body["error"]["param"] == "x-meridian-residency", body
        status, body = await admin(s, gw, "GET", base + "DE,%20")
        assert status == 200 and body["residency"] == "DE", body


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decode_is_400(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    encoding: str,
) -> None:
    em, gw = await one_backend(emulators, gateways)
    status, err = await post(gw, b"\x1f\x8bnot compressed", {"Content-Encoding": encoding})
    assert status == 400, err
    assert err["code"] == "invalid_request_error"
    assert str(err["message"]).startswith("the request body could not be read")
    good = gzip.compress(chat_body(', "max_tokens": 2'))
    status, _ = await post(gw, good, {"Content-Encoding": "gzip"})
    assert status == 200
    assert em.stats.requests == 1
    assert not tracebacks(caplog)


async def test_broken_chunked_framing_is_400(
    emulators: EmulatorFactory, gateways: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    em, gw = await one_backend(emulators, gateways)
    reader, writer = await _raw(gw)
    head = [f"Authorization: Bearer {GLOBAL_KEY}", "Transfer-Encoding: chunked"]
    writer.write(_head(head) + b'5\r\n{"mod\r\nzz\r\nmore\r\n0\r\n\r\n')
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.split(b" ", 2)[1] == b"400", answer
    assert em.stats.requests == 0
    assert not tracebacks(caplog)
