"""deploy/: the SLO rules pass ``promtool test rules``; the dashboard queries real series."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTALL = DEPLOY / "install-promtool.sh"


def promtool() -> str:
    """promtool from PATH or .venv/bin, else installed by deploy/install-promtool.sh
    (what ``make slo-rules-test`` runs); a machine where it cannot be had fails
    the test, saying why, rather than skipping it."""
    found = shutil.which("promtool")
    if found:
        return found
    done = subprocess.run(
        [str(INSTALL), str(ROOT / ".venv" / "bin")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0 and os.access(path, os.X_OK), (
        f"promtool is needed for the SLO rule tests and {INSTALL.relative_to(ROOT)} could "
        f"not install it: {done.stderr.strip()}"
    )
    return path


def test_the_slo_rules_and_alerts_pass_promtool() -> None:
    tool = promtool()
    rules = DEPLOY / "prometheus"
    check = subprocess.run(
        [tool, "check", "rules", "meridian.rules.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [tool, "test", "rules", "meridian.rules.test.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout + test.stderr


_NAME = re.compile(r"\b(meridian_[a-z_]+)")


def dashboard_exprs() -> list[str]:
    board = json.loads((DEPLOY / "grafana" / "meridian.json").read_text())
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(board)
    assert exprs, "the dashboard has no queries"
    return exprs


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule promtool checks."""
    tool = promtool()
    rules = [
        {
            "record": f"dashboard:query{i}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$model", ".+"),
        }
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run(
        [tool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def dashboard_metrics() -> set[str]:
    names = {m for expr in dashboard_exprs() for m in _NAME.findall(expr)}
    recorded = (DEPLOY / "prometheus" / "meridian.rules.yml").read_text()
    # Recording rules' outputs (meridian:...) are checked by promtool; raw series here.
    return {n for n in names if f"record: {n}" not in recorded}


async def test_every_dashboard_query_names_a_series_a_gateway_exposes(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    async with aiohttp.ClientSession() as s:
        for stream in (False, True):
            async with s.post(
                gw.http_url + "/v1/chat/completions",
                json={**body, "stream": stream},
                headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
            ) as r:
                assert r.status == 200
                await r.read()
        async with s.get(
            gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as r:
            text = await r.text()
    exposed = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    wanted = dashboard_metrics()
    assert wanted - exposed == set(), (
        f"the dashboard queries series nobody exposes: {wanted - exposed}"
    )
    rules = set(_NAME.findall((DEPLOY / "prometheus" / "meridian.rules.yml").read_text()))
    assert rules - exposed == set(), f"the rules read series nobody exposes: {rules - exposed}"
