"""The operator CLI against running gateways: every command, --json, bad input.

One test drives two real ``meridian serve`` processes sharing a real Redis
(propagation measured across processes, a write refused while Redis is
down, reconvergence after it returns); the others run the CLI's ``main`` in
a thread against an in-process gateway, which is the same code minus the
interpreter start-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app.server import Gateway
from gateway.cli.main import main
from tests.conftest import (
    ADMIN_TOKEN,
    MODEL,
    SERVED,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)
from tests.redis_server import RedisServer, free_port

MERIDIAN = [sys.executable, "-m", "gateway.cli.main"]


async def run(*args: str) -> tuple[int, str, str]:
    """A real ``meridian`` process."""
    proc = await asyncio.create_subprocess_exec(
        *MERIDIAN, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def _readyz(s: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
        return dict(await r.json())


async def _until(s: aiohttp.ClientSession, port: int, ok: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ok(await _readyz(s, port)):
                return
        except (aiohttp.ClientError, ValueError):
            pass
        assert time.monotonic() < deadline, f"gateway on {port} never got there"
        await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
async def test_serve_processes_share_redis(
    emulators: EmulatorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    em1, em2 = await emulators(), await emulators()
    ports = [(free_port(), free_port()) for _ in range(2)]
    procs = []
    env = {**os.environ, "TEST_ADMIN": ADMIN_TOKEN}
    for i, (http, adm) in enumerate(ports):
        config = tmp_path / f"gw{i}.yaml"
        config.write_text(
            f"""
listen: {{http: "127.0.0.1:{http}", admin: "127.0.0.1:{adm}", grpc: null}}
admin: {{token: "env:TEST_ADMIN"}}
store: {{kind: redis, url: "{redis_server.url}", prefix: cli, resync_s: 0.5}}
regions: [{{name: "aws:us-east-1", tags: [US]}}, {{name: "aws:eu-west-1", tags: [EU]}}]
models: [{{name: {MODEL}, versions: {{v1: 100, v2: 0}}}}]
backends:
  - {{name: us, model: {MODEL}, version: v1, region: "aws:us-east-1", provider: vllm,
      url: "{em1.url}", served_model: {SERVED}}}
  - {{name: eu, model: {MODEL}, version: v2, region: "aws:eu-west-1", provider: vllm,
      url: "{em2.url}", served_model: {SERVED}}}
tenants: [{{name: t, api_keys: ["sha256:{"0" * 64}"]}}]
"""
        )
        procs.append(
            await asyncio.create_subprocess_exec(
                *MERIDIAN, "serve", "--config", str(config), env=env, stderr=subprocess.DEVNULL
            )
        )
    admin = [f"--admin-url=http://127.0.0.1:{adm}" for _, adm in ports]
    token = f"--token={ADMIN_TOKEN}"
    try:
        async with aiohttp.ClientSession() as s:
            for http, _ in ports:
                await _until(s, http, lambda d: d["ready"] and d["control_plane"] == "ok")
            code, out, err = await run("weights", "set", MODEL, "v1=50", "v2=50", admin[0], token)
            assert code == 0 and "v1 100 → 50, v2 0 → 50" in out, err
            await _until(s, ports[1][0], lambda d: d["revision"] == 1)
            code, out, _ = await run("weights", "show", MODEL, "--json", admin[1], token)
            assert code == 0 and json.loads(out)["split"] == {"v1": 50, "v2": 50}

            delays = []
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            for i in range(20):
                sent = time.perf_counter()
                async with s.put(
                    f"http://127.0.0.1:{ports[i % 2][1]}/admin/v1/weights/{MODEL}",
                    json={"split": {"v1": 100 - i, "v2": i}},
                    headers=headers,
                ) as r:
                    revision = (await r.json())["revision"]
                other = ports[(i + 1) % 2][0]
                await _until(s, other, lambda d, rev=revision: d["revision"] >= rev)
                delays.append(time.perf_counter() - sent)
            p99 = statistics.quantiles(delays, n=100, method="inclusive")[98]
            print(
                f"\nweights propagation between 2 serve processes over 20 changes "
                f"(admin call to the peer's /readyz, polled): p50 "
                f"{statistics.median(delays) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
            )
            assert p99 < 1.0

            redis_server.kill()
            for http, _ in ports:
                await _until(s, http, lambda d: d["control_plane"] == "degraded" and d["ready"])
            code, out, err = await run("weights", "set", MODEL, "v1=1", admin[0], token)
            assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
            assert err.startswith("meridian: 503: change refused: the control-plane store")
            code, out, _ = await run("status", admin[1], token)
            assert code == 0 and "degraded" in out
            redis_server.restart()
            for http, _ in ports:
                await _until(s, http, lambda d: d["control_plane"] == "ok")
            code, out, err = await run("weights", "set", MODEL, "v2=1", admin[1], token)
            assert code == 0, err
            await _until(s, ports[0][0], lambda d: d["revision"] == 22)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await proc.wait()


@pytest.fixture
async def gateway(
    emulators: EmulatorFactory, gateways: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no truncated cells to assert on
    em1, em2 = await emulators(), await emulators()
    rows = [("us", "aws:us-east-1", "v1", em1.url), ("eu", "aws:eu-west-1", "v2", em2.url)]
    return await gateways(gateway_config(rows, versions={"v1": 100, "v2": 0}))


class Cli:
    def __init__(self, gw: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
        self.flags = [f"--admin-url={gw.admin_url}", f"--token={ADMIN_TOKEN}"]
        self.capsys = capsys

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*args, *self.flags])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


async def test_every_command_as_table_and_json(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(gateway, capsys)
    code, out, _ = await cli("status")
    assert code == 0 and "us" in out and "control plane ok" in out
    code, out, _ = await cli("top", "--once")
    assert code == 0 and "aws:eu-west-1" in out
    code, out, _ = await cli("status", "--json")
    assert json.loads(out)["control_plane"]["status"] == "ok"
    code, out, _ = await cli("weights", "show", MODEL)
    assert code == 0 and "from config" in out
    code, out, _ = await cli("weights", "set", MODEL, "v1=90", "v2=10")
    assert code == 0 and "v1 100 → 90, v2 0 → 10" in out
    code, out, _ = await cli("weights", "show", MODEL, "--json")
    assert json.loads(out)["split"] == {"v1": 90, "v2": 10}
    code, out, _ = await cli("region", "drain", "aws:us-east-1")
    assert code == 0 and "drained aws:us-east-1: dial 100 → 0" in out
    code, out, _ = await cli("region", "list", "--json")
    assert {r["name"] for r in json.loads(out)["regions"] if r["drained"]} == {"aws:us-east-1"}
    code, out, _ = await cli("region", "undrain", "aws:us-east-1", "--json")
    assert json.loads(out)["dial"] == 100
    code, out, _ = await cli("region", "dial", "aws:us-east-1", "25%")
    assert code == 0 and "dial of aws:us-east-1: 100 → 25" in out
    code, out, _ = await cli("region", "dial", "aws:us-east-1", "100", "--json")
    assert json.loads(out)["dial_before"] == 25
    code, out, _ = await cli("replicas", MODEL)
    assert code == 0 and "verified" in out
    code, out, _ = await cli("replicas", MODEL, "--json")
    assert len(json.loads(out)["replicas"]) == 2
    code, out, _ = await cli(
        "canary", "start", MODEL, "--to", "v2", "--steps", "10,50,100", "--interval", "1h"
    )
    assert code == 0 and "v1 → v2: progressing, step 1/3 at 10%" in out
    code, out, _ = await cli("canary", "status", MODEL, "--json")
    body = json.loads(out)
    assert body["phase"] == "progressing" and body["window"]["candidate"]["requests"] == 0
    code, out, _ = await cli("canary", "promote", MODEL)
    assert code == 0 and "promoted" in out
    code, out, _ = await cli("canary", "start", MODEL, "--to", "v1", "--json")
    assert json.loads(out)["plan"]["stable"] == "v2"
    code, out, _ = await cli("canary", "abort", MODEL)
    assert code == 0 and "aborted" in out and "at 0%" in out
    code, out, _ = await cli("audit", "--limit", "50")
    assert code == 0 and "canary.abort" in out and "weights.set" in out
    code, out, _ = await cli("audit", "--json")
    actors = {e["actor"] for e in json.loads(out)["entries"]}
    assert actors == {os.environ.get("USER") or "admin"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("weights", "set", MODEL, "v1=-5"), "bad weight 'v1=-5'"),
        (("weights", "set", MODEL, "v1=ten"), "bad weight 'v1=ten'"),
        (("weights", "set", MODEL, "v1=0", "v2=0"), "must not all be 0"),
        (("weights", "set", MODEL, "v1=1", "v1=2"), "given twice"),
        (("weights", "set", MODEL, "v9=10"), "400: model 'test-model' has no version 'v9'"),
        (("weights", "set", "nope", "v1=10"), "404: unknown model 'nope'"),
        (("weights", "show", "nope"), "404: unknown model 'nope'"),
        (("region", "drain", "mars:base"), "404: unknown region 'mars:base'"),
        (("region", "dial", "aws:us-east-1", "150"), "bad dial '150'"),
        (("region", "dial", "aws:us-east-1", "half"), "bad dial 'half'"),
        (("region", "dial", "mars:base", "50"), "404: unknown region 'mars:base'"),
        (("canary", "start", MODEL, "--to", "v9"), "has no version 'v9'"),
        (("canary", "start", MODEL, "--to", "v2", "--interval", "soon"), "bad interval 'soon'"),
        (("canary", "start", MODEL, "--to", "v2", "--steps", "50,25"), "steps must increase"),
        (("canary", "status", MODEL), "404: no canary has run"),
        (("canary", "abort", MODEL), "404: no canary has run"),
        (("replicas", "nope"), "404: unknown model 'nope'"),
    ],
)
async def test_bad_input_is_one_line_and_non_zero(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], words: str
) -> None:
    code, out, err = await Cli(gateway, capsys)(*args)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("meridian: ") and words in err


async def test_wrong_token_and_no_gateway(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(
        main, ["status", f"--admin-url={gateway.admin_url}", "--token=wrong"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == "meridian: 401: admin token required"
    code = await asyncio.to_thread(
        main, ["top", "--once", f"--admin-url=http://127.0.0.1:{free_port()}"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the admin API" in err and len(err.splitlines()) == 1
