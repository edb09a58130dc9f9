"""The access log: one structured line per request, refused ones included, off the loop."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config.model import ConfigError, parse
from gateway.config.observability import AccessLogConfig
from gateway.observe.access_log import (
    AccessLog,
    format_json,
    format_logfmt,
    valid_request_id,
)
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    runtime_of,
    wait_for,
)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def post(
    s: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any] | bytes,
    *,
    key: str | None = GLOBAL_KEY,
    request_id: str | None = None,
) -> tuple[int, Mapping[str, str]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if request_id is not None:
        headers["x-request-id"] = request_id
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with s.post(url + "/v1/chat/completions", headers=headers, **kwargs) as r:
        await r.read()
        return r.status, r.headers


def chat(model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 4,
        **extra,
    }


async def test_every_request_is_one_json_line_and_the_clients_request_id_is_kept(
    emulators: EmulatorFactory, gateways: GatewayFactory, tmp_path: Path
) -> None:
    em = await emulators()
    path = tmp_path / "access.log"
    gw = await gateways(
        gateway_config(
            [
                (
                    "fra",
                    "onprem:fra1",
                    "v1",
                    em.url,
                    {"price": {"input_per_m": 1, "output_per_m": 2}},
                )
            ],
            observability={"access_log": {"destination": str(path)}},
        )
    )
    async with aiohttp.ClientSession() as s:
        status, headers = await post(s, gw.http_url, chat(), request_id="my-trace-123")
        assert status == 200 and headers["x-request-id"] == "my-trace-123"
        status, _ = await post(s, gw.http_url, chat(stream=True), request_id="two")
        assert status == 200
        assert (await post(s, gw.http_url, chat(), key="sk-wrong", request_id="bad-key"))[0] == 401
        assert (await post(s, gw.http_url, chat("nope"), request_id="no-model"))[0] == 404
        assert (await post(s, gw.http_url, b"{", request_id="bad-body"))[0] == 400
    await wait_for(lambda: len(lines(path)) == 5)
    by_id = {line["request_id"]: line for line in lines(path)}
    ok = by_id["my-trace-123"]
    assert ok["tenant"] == "global" and ok["model"] == MODEL and ok["version"] == "v1"
    assert ok["backend"] == "fra" and ok["region"] == "onprem:fra1"
    assert ok["status"] == 200 and ok["reason"] == "ok" and ok["attempts"] == 1
    assert ok["hedged"] is False and ok["resumed"] == 0 and ok["stream"] is False
    assert ok["ttft_ms"] > 0 and ok["duration_ms"] >= ok["ttft_ms"]
    assert ok["completion_tokens"] == 4 and ok["prompt_tokens"] > 0
    expected = (ok["prompt_tokens"] * 1 + ok["completion_tokens"] * 2) / 1e6
    assert ok["cost_usd"] == pytest.approx(expected)
    assert ok["residency"] == "any" and ok["client"] == "127.0.0.1"
    assert by_id["two"]["stream"] is True and by_id["two"]["status"] == 200
    assert by_id["bad-key"]["status"] == 401 and by_id["bad-key"]["tenant"] == ""
    assert by_id["bad-key"]["reason"] == "invalid_api_key"
    assert by_id["no-model"]["status"] == 404 and by_id["no-model"]["model"] == "other"
    assert by_id["bad-body"]["status"] == 400 and by_id["bad-body"]["tenant"] == "global"
    text = path.read_text()
    assert GLOBAL_KEY not in text and "sk-wrong" not in text  # never a key


@pytest.mark.parametrize("presented", ["has space", "x" * 129, "a\u00e9b", ""])
async def test_an_unusable_client_request_id_is_replaced(
    emulators: EmulatorFactory, gateways: GatewayFactory, presented: str
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        status, headers = await post(s, gw.http_url, chat(), request_id=presented)
    assert status == 200
    assert headers["x-request-id"] != presented and valid_request_id(headers["x-request-id"])


async def test_sampling_and_the_per_tenant_switch_keep_every_refusal(
    emulators: EmulatorFactory, gateways: GatewayFactory, tmp_path: Path
) -> None:
    em = await emulators()
    sampled, off = tmp_path / "sampled.log", tmp_path / "off.log"
    gw_sampled = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)],
            observability={"access_log": {"destination": str(sampled), "sample": 0.0}},
        )
    )
    gw_off = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)],
            observability={
                "access_log": {
                    "destination": str(off),
                    "tenants_off": ["global"],
                    "format": "logfmt",
                }
            },
        )
    )
    async with aiohttp.ClientSession() as s:
        for gw in (gw_sampled, gw_off):
            assert (await post(s, gw.http_url, chat(), request_id="served"))[0] == 200
            assert (await post(s, gw.http_url, chat("nope"), request_id="refused"))[0] == 404
            assert (await post(s, gw.http_url, chat(), key=None, request_id="nokey"))[0] == 401
    await wait_for(lambda: len(lines(sampled)) == 2)
    assert {line["request_id"] for line in lines(sampled)} == {"refused", "nokey"}
    # The switched-off tenant's lines are gone, the unauthenticated one stays (logfmt).
    await wait_for(lambda: off.exists() and "nokey" in off.read_text())
    text = off.read_text()
    assert "request_id=nokey" in text and "status=401" in text
    assert "served" not in text and "refused" not in text
    assert runtime_of(gw_off).access_log is not None


def test_a_writer_that_falls_behind_drops_and_counts_lines_never_blocks() -> None:
    entered, release = threading.Event(), threading.Event()

    class Stuck(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            entered.set()
            release.wait(10)

    logger = logging.getLogger("meridian.access")
    handler = Stuck()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    drops: list[int] = []
    access = AccessLog(AccessLogConfig(queue=1), on_drop=lambda: drops.append(1))
    try:
        access.write({"request_id": "1"})
        assert entered.wait(5)  # the writer holds line 1
        access.write({"request_id": "2"})  # queued
        access.write({"request_id": "3"})  # full: dropped, at once
        assert access.dropped == 1 and drops == [1]
    finally:
        release.set()
        access.close()
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class CountingSink(io.StringIO):
    """A real text sink that counts the writer's calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_records_of_one_loop_turn_reach_the_writer_as_one_batch_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = CountingSink()
    monkeypatch.setattr(sys, "stdout", sink)
    access = AccessLog(AccessLogConfig(destination="stdout"))
    records = [{"request_id": str(i), "status": 200, "ttft_ms": 1.5} for i in range(50)]
    try:
        for record in records:
            access.write(record)
        await wait_for(lambda: sink.getvalue().count("\n") == 50)
        # One wake of the thread, one write and one flush, the lines as they always were.
        assert sink.writes == 1 and sink.flushes == 1 and access.wakes == 1
        assert sink.getvalue() == "".join(format_json(r) + "\n" for r in records)
    finally:
        access.close()


async def test_the_log_destination_keeps_one_record_per_line_from_one_wake() -> None:
    logger = logging.getLogger("meridian.access")
    handler = Collect()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    access = AccessLog(AccessLogConfig(format="logfmt"))
    try:
        for i in range(3):
            access.write({"request_id": str(i), "status": 200})
        await wait_for(lambda: len(handler.messages) == 3)
        assert handler.messages == [f"request_id={i} status=200" for i in range(3)]
        assert access.wakes == 1
    finally:
        access.close()
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_close_writes_what_the_loop_has_not_handed_over_yet(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access = AccessLog(AccessLogConfig(destination=str(path)))
    for i in range(5):
        access.write({"request_id": str(i)})
    access.close()  # before the batch's timer: still every line
    assert [line["request_id"] for line in lines(path)] == ["0", "1", "2", "3", "4"]


async def test_the_loops_batch_counts_toward_the_bound() -> None:
    entered, release = threading.Event(), threading.Event()

    class Stuck(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            entered.set()
            release.wait(10)

    logger = logging.getLogger("meridian.access")
    handler = Stuck()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    drops: list[int] = []
    access = AccessLog(AccessLogConfig(queue=2), on_drop=lambda: drops.append(1))
    try:
        access.write({"request_id": "1"})  # a bound this small hands each line at once
        await wait_for(entered.is_set)  # the writer holds line 1
        access.write({"request_id": "2"})
        access.write({"request_id": "3"})
        access.write({"request_id": "4"})  # two wait: dropped, at once
        assert access.dropped == 1 and drops == [1]
    finally:
        release.set()
        access.close()
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_a_request_id_is_one_plain_token() -> None:
    assert valid_request_id("my-trace-123") and valid_request_id("a" * 128)
    for bad in (None, "", "a" * 129, "abc\n", "a b", "a\u00e9", "a,b"):
        assert not valid_request_id(bad), bad


def test_logfmt_quotes_what_would_split_a_field() -> None:
    line = format_logfmt({"a": "x y", "b": 'q"', "c": None, "d": True, "e": 0.5})
    assert line == 'a="x y" b="q\\"" c= d=true e=0.5'


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("access_log: {tenants_off: [nobody]}", "unknown tenant 'nobody'"),
        ("slo: {no-such-model: {availability: 0.99}}", "unknown model 'no-such-model'"),
    ],
)
def test_observability_names_only_configured_tenants_and_models(section: str, message: str) -> None:
    text = f"""
regions: [{{name: "aws:us-east-1", tags: [US]}}]
models: [{{name: m, versions: {{v1: 100}}}}]
backends: [{{name: a, model: m, version: v1, region: "aws:us-east-1", provider: vllm,
             url: "http://127.0.0.1:1", served_model: s}}]
tenants: [{{name: t, api_keys: ["env:K"]}}]
observability: {{{section}}}
"""
    with pytest.raises(ConfigError) as caught:
        parse(text, "m.yaml")
    assert str(caught.value).startswith("m.yaml:7: observability.")
    assert message in str(caught.value)
