"""Hot reload (issue 19 item 2): `meridian config reload` adds a tenant and a
backend to a running gateway, removes one, and cuts no stream in flight; a bad
reload changes nothing; SIGHUP reloads instead of killing the process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.app.server import Gateway
from gateway.cli.main import main
from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    SERVED,
    EmulatorFactory,
    gateway_config,
    sha,
)

NEW_KEY = "sk-test-newcomer"
MERIDIAN = [sys.executable, "-m", "gateway.cli.main"]


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data))


def _data(backends: list[tuple[str, str]], tenants: list[tuple[str, str]]) -> dict[str, Any]:
    config = gateway_config([(n, "onprem:fra1", "v1", url) for n, url in backends])
    data: dict[str, Any] = json.loads(config.model_dump_json(exclude_defaults=True))
    data["listen"] = {"http": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": None}
    data["admin"] = {"token": sha(ADMIN_TOKEN)}
    data["tenants"] = [{"name": n, "api_keys": [sha(k)]} for n, k in tenants]
    for b in data["backends"]:
        b.setdefault("served_model", SERVED)
    return data


async def _cli(gw: Gateway, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    flags = [f"--admin-url={gw.admin_url}", f"--token={ADMIN_TOKEN}"]
    code = await asyncio.to_thread(main, [*args, *flags])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def _stream(s: aiohttp.ClientSession, gw: Gateway, started: asyncio.Event) -> tuple[int, str]:
    """A streamed chat: (chunks with content, the backend that served it)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["max_tokens"] = 40
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with s.post(f"{gw.http_url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
        chunks, done = 0, False
        async for raw in r.content:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert "error" not in event, event
                if event["choices"] and event["choices"][0]["delta"].get("content"):
                    chunks += 1
                    started.set()
        assert done
        return chunks, r.headers["x-meridian-backend"]


async def _ask(s: aiohttp.ClientSession, gw: Gateway, key: str) -> tuple[int, str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {key}"}
    async with s.post(f"{gw.http_url}/v1/chat/completions", json=body, headers=headers) as r:
        return r.status, r.headers.get("x-meridian-backend", "")


@pytest.mark.timeout(60)
async def test_reload_adds_tenant_and_backend_with_streams_in_flight_none_cut(
    emulators: EmulatorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = await emulators(itl_s=0.02)
    new = await emulators()
    path = tmp_path / "meridian.yaml"
    _write(path, _data([("old", old.url)], [("global", GLOBAL_KEY)]))
    from gateway.config.model import load

    gw = Gateway(load(path), config_path=str(path))
    await gw.start()
    try:
        async with aiohttp.ClientSession() as s:
            assert (await _ask(s, gw, NEW_KEY))[0] == 401
            events = [asyncio.Event() for _ in range(4)]
            streams = [asyncio.create_task(_stream(s, gw, e)) for e in events]
            for e in events:
                await asyncio.wait_for(e.wait(), 10)  # every stream is running on "old"
            # The new file: "old" removed, "new" added, a tenant with its key added.
            _write(
                path,
                _data([("new", new.url)], [("global", GLOBAL_KEY), ("newcomer", NEW_KEY)]),
            )
            code, out = await _cli(gw, capsys, "config", "reload")
            assert code == 0, out
            assert "+ backend new" in out and "- backend old" in out and "+ tenant newcomer" in out
            assert not all(t.done() for t in streams)  # the reload did not wait for them
            assert await _ask(s, gw, NEW_KEY) == (200, "new")  # new key, new backend
            assert await _ask(s, gw, GLOBAL_KEY) == (200, "new")  # "old" takes no new streams
            for chunks, backend in await asyncio.gather(*streams):
                assert (chunks, backend) == (40, "old")  # none cut
            code, out = await _cli(gw, capsys, "audit", "--json")
            entry = json.loads(out)["entries"][-1]
            assert entry["action"] == "config.reload" and "+ tenant newcomer" in entry["note"]

            # A bad file is refused whole: nothing changes.
            good = path.read_text()
            path.write_text(good.replace("newcomer", "newcomer\n  bogus: 1", 1) + "x: [\n")
            code, out = await _cli(gw, capsys, "config", "reload")
            assert code == 2 and "refused, nothing changed" in out
            path.write_text(
                yaml.safe_dump(
                    {**yaml.safe_load(good), "tenants": [{"name": "global", "api_keys": []}]}
                )
            )
            revision = gw.runtime.snapshot.revision if gw.runtime else None
            code, out = await _cli(gw, capsys, "config", "reload")
            assert code == 2 and "tenants.0" in out
            assert await _ask(s, gw, NEW_KEY) == (200, "new")
            assert gw.runtime is not None and gw.runtime.snapshot.revision == revision
    finally:
        await gw.stop(grace=0.5)


async def test_config_check_against_a_running_gateway_lists_the_changes(
    emulators: EmulatorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    em = await emulators()
    path = tmp_path / "meridian.yaml"
    _write(path, _data([("a", em.url)], [("global", GLOBAL_KEY)]))
    from gateway.config.model import load

    gw = Gateway(load(path), config_path=str(path))
    await gw.start()
    try:
        data = _data([("a", em.url), ("b", em.url)], [("global", GLOBAL_KEY), ("t2", NEW_KEY)])
        data["tenants"][0]["limits"] = {"requests_per_min": 60}
        data["tenants"][0]["api_keys"].append(sha("sk-another"))
        other = tmp_path / "next.yaml"
        _write(other, data)
        code = await asyncio.to_thread(
            main,
            ["config", "check", str(other), f"--against={gw.admin_url}", f"--token={ADMIN_TOKEN}"],
        )
        out = capsys.readouterr().out
        assert code == 0
        assert out.splitlines()[1:] == [
            "+ backend b",
            "+ tenant t2",
            "~ tenant global: keys +1 -0",
            "~ tenant global: limits None → {'requests_per_min': 60}",
        ]
    finally:
        await gw.stop(grace=0.5)


def test_sighup_reloads_and_does_not_kill(tmp_path: Path) -> None:
    path = tmp_path / "meridian.yaml"
    _write(path, _data([("a", "http://127.0.0.1:1")], [("global", GLOBAL_KEY)]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*MERIDIAN, "serve", "--config", str(path)], stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stderr is not None
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any("meridian serving" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stderr.readline())
        _write(
            path, _data([("a", "http://127.0.0.1:1")], [("global", GLOBAL_KEY), ("t2", NEW_KEY)])
        )
        proc.send_signal(signal.SIGHUP)
        while not any("config reload by SIGHUP" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stderr.readline())
        assert "+ tenant t2" in lines[-1]
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_reload_changes_limits_for_new_requests_and_names_what_needs_a_restart(
    emulators: EmulatorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    em = await emulators()
    path = tmp_path / "meridian.yaml"
    data = _data([("a", em.url)], [("global", GLOBAL_KEY)])
    data["tenants"][0]["limits"] = {"requests_per_min": 1000}
    _write(path, data)
    from gateway.config.model import load

    gw = Gateway(load(path), config_path=str(path))
    await gw.start()
    try:
        async with aiohttp.ClientSession() as s:
            assert [(await _ask(s, gw, GLOBAL_KEY))[0] for _ in range(3)] == [200, 200, 200]
            data["tenants"][0]["limits"] = {"requests_per_min": 1}
            data["listen"]["http"] = "127.0.0.1:1"  # a listener: not reloaded
            _write(path, data)
            code, out = await _cli(gw, capsys, "config", "reload")
            assert code == 0, out
            assert "~ tenant global: limits" in out
            assert "not applied, need a restart: listen" in out
            assert (await _ask(s, gw, GLOBAL_KEY))[0] == 429  # the new limit, at once
            assert gw.runtime is not None and gw.runtime.config.listen.http == "127.0.0.1:0"
    finally:
        await gw.stop(grace=0.5)


def test_sighup_does_not_kill_the_demo() -> None:
    proc = subprocess.Popen(
        [*MERIDIAN, "demo", "--http=127.0.0.1:0", "--admin=127.0.0.1:0", "--grpc="],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C stops the demo." not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        proc.send_signal(signal.SIGHUP)
        while "SIGHUP: the demo has no config file to reload" not in proc.stderr.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_backend_a_reload_adds_has_its_breaker_series_at_once(
    emulators: EmulatorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.config.model import load
    from tests.gateway.test_metrics_requests import scrape

    first, second = await emulators(), await emulators()
    path = tmp_path / "meridian.yaml"
    _write(path, _data([("first", first.url)], [("global", GLOBAL_KEY)]))
    gw = Gateway(load(path), config_path=str(path))
    await gw.start()
    try:
        _write(
            path, _data([("first", first.url), ("second", second.url)], [("global", GLOBAL_KEY)])
        )
        code, out = await _cli(gw, capsys, "config", "reload")
        assert code == 0, out
        async with aiohttp.ClientSession() as s:
            samples = await scrape(s, gw.admin_url)
        breakers = {
            labels.get("backend"): v for n, labels, v in samples if n == "meridian_breaker_state"
        }
        assert breakers.get("second") == 0  # closed, before any request or change
    finally:
        await gw.stop(grace=0.5)


def test_a_reload_collects_what_the_frozen_start_up_left_behind() -> None:
    """serve freezes start-up's objects; what a reload retires must still be freed."""
    import gc
    import weakref

    from gateway.app.reload import refreeze

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    gc.freeze()
    try:
        del a, b
        gc.collect()
        assert gone() is not None  # frozen: a collection does not see it
        refreeze()
        assert gone() is None
        assert gc.get_freeze_count() > 0  # frozen again
    finally:
        gc.unfreeze()


def test_a_serving_process_freezes_its_start_up_heap_and_collects_less_often() -> None:
    import subprocess
    import sys

    probe = (
        "import gc; from gateway.app.server import GC_THRESHOLDS, settle_heap; settle_heap();"
        "print(gc.get_threshold() == GC_THRESHOLDS, gc.get_freeze_count() > 10_000)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
