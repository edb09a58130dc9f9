"""``meridian shadow`` and the shadow gate of ``meridian canary``, against a real gateway.

The CLI's ``main`` runs in a thread (its admin client is synchronous) against
an in-process gateway whose emulators answer for real; the controller's gate
is driven with an embedded store and an injected clock, as in test_canary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.app.server import Gateway
from gateway.canary.codec import to_doc
from gateway.canary.controller import CanaryController
from gateway.canary.plan import Canary, CanaryPlan, Phase, Thresholds
from gateway.cli import shadow as cli_shadow
from gateway.cli.main import main
from gateway.shadow.compare import Side, compare, fields
from gateway.shadow.plan import ShadowPlan, ShadowThresholds, shadow_key
from gateway.shadow.plan import to_doc as shadow_doc
from gateway.store import EmbeddedStore
from gateway.store.state import ControlState, canary_key
from tests.conftest import ADMIN_TOKEN, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.gateway.control_kit import admin, chat


class Cli:
    def __init__(self, gw: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
        self.flags = [f"--admin-url={gw.admin_url}", f"--token={ADMIN_TOKEN}"]
        self.capsys = capsys

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*args, *self.flags])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
async def gateway(emulators: EmulatorFactory, gateways: GatewayFactory) -> Gateway:
    p, c = await emulators(), await emulators()
    config = gateway_config(
        [("p", "aws:us-east-1", "v1", p.url), ("c", "aws:us-east-1", "v2", c.url)],
        versions={"v1": 100, "v2": 0},
        store={"counts_flush_s": 0.02},
    )
    return await gateways(config)


async def _pairs(gw: Gateway, n: int) -> None:
    async with aiohttp.ClientSession() as s, asyncio.timeout(10):
        while (await admin(s, gw, "GET", f"/admin/v1/shadow/{MODEL}"))[1]["summary"]["pairs"] < n:
            await asyncio.sleep(0.01)


async def test_start_status_stop_and_the_canary_gate(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(gateway, capsys)
    code, out, err = await cli("canary", "start", MODEL, "--to", "v2", "--require-shadow")
    assert code == 1 and out == "" and "no shadow of 'test-model' has run" in err
    assert len(err.splitlines()) == 1

    code, out, _ = await cli(
        "shadow", "start", MODEL, "--to", "v2", "--share", "100%", "--min-pairs", "4", "--json"
    )
    started = json.loads(out)
    assert code == 0 and started["verdict"] == "pending" and started["active"] is True
    assert started["plan"]["share"] == 100.0 and started["plan"]["thresholds"]["min_pairs"] == 4

    code, _, err = await cli("canary", "start", MODEL, "--to", "v2", "--require-shadow")
    assert code == 1 and "has not passed (pending: 0 of 4 pairs compared)" in err
    code, _, _ = await cli("shadow", "status", MODEL, "--check", "--json")
    assert code == 4  # pending

    async with aiohttp.ClientSession() as s:
        for _ in range(4):
            assert (await chat(s, gateway, stream=True))[0] == 200
    await _pairs(gateway, 4)
    code, out, _ = await cli("shadow", "status", MODEL, "--check")
    assert code == 0
    for words in ("shadow → v2 at 100%", "compared 4", "TTFT p95", "agreement 1.000", "PASS"):
        assert words in out, out

    code, out, _ = await cli("canary", "start", MODEL, "--to", "v2", "--require-shadow")
    assert code == 0 and "requires a passing shadow" in out and "at 5%" in out

    code, out, _ = await cli("shadow", "stop", MODEL, "--json")
    stopped = json.loads(out)
    assert code == 0 and stopped["active"] is False and stopped["verdict"] == "pass"
    code, out, _ = await cli("shadow", "status", MODEL)
    assert code == 0 and "stopped" in out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("start", MODEL, "--to", "v2", "--share", "150"), "bad share '150'"),
        (("start", MODEL, "--to", "v2", "--share", "lots"), "bad share 'lots'"),
        (("start", MODEL, "--to", "v2", "--duration", "soon"), "bad interval 'soon'"),
        (("start", MODEL, "--to", "v2", "--max-concurrent", "0"), "--max-concurrent"),
        (("start", MODEL, "--to", "v2", "--min-agreement", "2"), "--min-agreement"),
        (("start", MODEL, "--to", "v9"), "has no version 'v9'"),
        (("start", "nope", "--to", "v2"), "unknown model 'nope'"),
        (("status", MODEL), "no shadow has run for 'test-model'"),
        (("stop", MODEL), "no shadow has run"),
    ],
)
async def test_bad_input_is_one_line(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], words: str
) -> None:
    code, out, err = await Cli(gateway, capsys)("shadow", *args)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("meridian: ") and words in err


async def test_a_second_start_while_running_is_refused(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(gateway, capsys)
    assert (await cli("shadow", "start", MODEL, "--to", "v2"))[0] == 0
    code, _, err = await cli("shadow", "start", MODEL, "--to", "v2")
    assert code == 1 and err.strip() == (
        "meridian: 409: a shadow of 'test-model' to v2 is running; stop it first"
    )


# -- the gate in the controller ---------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[EmbeddedStore]:
    s = EmbeddedStore()
    await s.open()
    yield s
    await s.close()


async def test_a_gated_canary_does_not_advance_without_a_passing_shadow(
    store: EmbeddedStore,
) -> None:
    now = [1000.0]
    state = [ControlState()]

    async def write(changes: Any, **kw: Any) -> Any:
        commit = await store.commit(changes, **kw)
        state[0] = ControlState.parse(await store.load())
        return commit

    plan = CanaryPlan("m", "v1", "v2", (10, 50), 10.0, Thresholds(min_requests=5), True)
    canary = Canary.start(plan, "r", now[0], "ann")
    await write({canary_key("m"): to_doc(canary)}, actor="ann", action="canary.start")
    ctl = CanaryController(store, lambda: state[0], write, "me", clock=lambda: now[0])
    await store.add_counts(canary.window, {"v1|req": 50, "v2|req": 50})  # a healthy step

    now[0] = 1010.0
    await ctl.tick()
    held = state[0].canaries["m"]
    assert held.phase is Phase.PROGRESSING and held.weight == 10
    assert held.last.startswith("hold: shadow gate: no shadow of 'm' has run")

    shadow = ShadowPlan("m", "v2", "s1", 900.0, thresholds=ShadowThresholds(min_pairs=3))
    await write({shadow_key("m"): shadow_doc(shadow)}, actor="ann", action="shadow.start")
    ok = Side(False, " a b", 0.01, 0.001, 2)
    for _ in range(3):
        await store.add_counts(shadow.window, fields(compare(ok, ok)))
    now[0] = 1020.0
    await ctl.tick()
    moved = state[0].canaries["m"]
    assert moved.weight == 50 and moved.phase is Phase.PROGRESSING
    assert (await store.audit())[-1].action == "canary.advance"


@pytest.mark.parametrize(("verdict", "code"), [("pass", 0), ("fail", 3), ("pending", 4)])
def test_status_check_exit_codes_gate_a_pipeline(
    verdict: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"verdict": verdict, "reasons": []}
    assert cli_shadow.show(argparse.Namespace(json=True, check=True), body) == code
    assert cli_shadow.show(argparse.Namespace(json=True, check=False), body) == 0
    assert json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")["verdict"] == verdict
