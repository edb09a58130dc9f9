"""The control plane's admin API on the embedded store: validation, effects, audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from gateway.app.server import Gateway
from tests.conftest import EmulatorFactory, GatewayFactory, gateway_config
from tests.gateway.control_kit import admin, chat

W = "/admin/v1/weights/test-model"


async def _two_versions(emulators: EmulatorFactory, gateways: GatewayFactory, **kw: Any) -> Gateway:
    em1, em2 = await emulators(), await emulators()
    rows = [("us", "aws:us-east-1", "v1", em1.url), ("eu", "aws:eu-west-1", "v2", em2.url)]
    return await gateways(gateway_config(rows, versions={"v1": 100, "v2": 0}, **kw))


async def test_weights_are_validated_and_a_refusal_changes_nothing(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    gw = await _two_versions(emulators, gateways)
    async with aiohttp.ClientSession() as s:
        status, body = await admin(s, gw, "GET", W)
        assert status == 200 and body["split"] == {"v1": 100, "v2": 0}
        assert body["source"] == "config"
        bad = [
            ({"split": {"v1": -1, "v2": 10}}, 400, "non-negative integer"),
            ({"split": {"v1": 1.5}}, 400, "non-negative integer"),
            ({"split": {"v1": True}}, 400, "non-negative integer"),
            ({"split": {"v1": 2**64}}, 400, "non-negative integer"),
            ({"split": {"v9": 10}}, 400, "has no version 'v9'"),
            ({"split": {"v1": 0, "v2": 0}}, 400, "must not all be 0"),
            ({"split": {}}, 400, "expected"),
            ([1, 2], 400, "JSON object"),
        ]
        for payload, code, words in bad:
            status, err = await admin(s, gw, "PUT", W, payload)
            assert status == code and words in err["error"]["message"], (payload, err)
            assert "\n" not in err["error"]["message"]
        status, err = await admin(s, gw, "PUT", "/admin/v1/weights/nope", {"split": {"v1": 1}})
        assert status == 404 and "unknown model 'nope'" in err["error"]["message"]
        status, body = await admin(s, gw, "GET", W)
        assert body["revision"] == 0 and body["source"] == "config"

        status, body = await admin(s, gw, "PUT", W, {"split": {"v2": 100}}, actor="ann")
        assert status == 200 and body["split"] == {"v1": 0, "v2": 100} and body["changed"]
        assert body["old"] == {"v1": 100, "v2": 0} and body["source"] == "store"
        status, _, _ = await chat(s, gw)
        assert status == 200
        _, headers, _ = await chat(s, gw)
        assert headers["x-meridian-version"] == "v2"
        _, audit = await admin(s, gw, "GET", "/admin/v1/audit")
        (entry,) = audit["entries"]
        assert entry["actor"] == "ann" and entry["action"] == "weights.set"
        assert entry["old"] is None and entry["new"] == {"v1": 0, "v2": 100}
        status, err = await admin(s, gw, "GET", "/admin/v1/audit?limit=0")
        assert status == 400


async def test_drain_and_undrain_a_region(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em1, em2 = await emulators(), await emulators()
    rows = [("us", "aws:us-east-1", "v1", em1.url), ("eu", "aws:eu-west-1", "v1", em2.url)]
    gw = await gateways(gateway_config(rows))
    async with aiohttp.ClientSession() as s:
        status, err = await admin(s, gw, "POST", "/admin/v1/regions/mars:base/drain")
        assert status == 404 and "unknown region 'mars:base'" in err["error"]["message"]
        status, body = await admin(s, gw, "POST", "/admin/v1/regions/aws:us-east-1/drain")
        assert status == 200 and body["dial"] == 0 and body["dial_before"] == 100
        assert body["changed"]
        _, again = await admin(s, gw, "POST", "/admin/v1/regions/aws:us-east-1/drain")
        assert not again["changed"] and again["revision"] == body["revision"]
        for _ in range(10):
            _, headers, _ = await chat(s, gw)
            assert headers["x-meridian-region"] == "aws:eu-west-1"
        _, regions = await admin(s, gw, "GET", "/admin/v1/regions")
        drained = {r["name"]: r["drained"] for r in regions["regions"]}
        assert drained["aws:us-east-1"] and not drained["aws:eu-west-1"]
        status, body = await admin(s, gw, "POST", "/admin/v1/regions/aws:us-east-1/undrain")
        assert status == 200 and body["dial"] == 100
        dial = "/admin/v1/regions/aws:us-east-1/dial"
        for bad in (101, -1, "50", True, None):
            status, err = await admin(s, gw, "PUT", dial, {"dial": bad})
            assert (
                status == 400 and "dial must be an integer from 0 to 100" in err["error"]["message"]
            )
        status, body = await admin(s, gw, "PUT", dial, {"dial": 0})  # dialled all the way down
        assert status == 200 and body["dial_before"] == 100 and body["changed"]
        for _ in range(10):
            _, headers, _ = await chat(s, gw)
            assert headers["x-meridian-region"] == "aws:eu-west-1"
        _, regions = await admin(s, gw, "GET", "/admin/v1/regions")
        assert {r["name"]: r["dial"] for r in regions["regions"]}["aws:us-east-1"] == 0
        status, _ = await admin(s, gw, "PUT", dial, {"dial": 100})
        assert status == 200
        _, status_body = await admin(s, gw, "GET", "/admin/v1/status")
        assert status_body["control_plane"]["status"] == "ok"
        assert {b["weight"] for b in status_body["backends"]} == {100}


async def test_replica_status_gates_routing(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em1, em2 = await emulators(), await emulators()
    rows = [("us", "aws:us-east-1", "v1", em1.url), ("eu", "aws:eu-west-1", "v1", em2.url)]
    gw = await gateways(gateway_config(rows))
    path = "/admin/v1/replicas/test-model"
    async with aiohttp.ClientSession() as s:
        _, body = await admin(s, gw, "GET", path)
        assert [(r["region"], r["status"], r["ready"]) for r in body["replicas"]] == [
            ("aws:eu-west-1", "verified", True),
            ("aws:us-east-1", "verified", True),
        ]
        status, body = await admin(
            s, gw, "PUT", f"{path}/v1/aws:us-east-1", {"status": "copying", "detail": "3/7"}
        )
        assert status == 200
        row = next(r for r in body["replicas"] if r["region"] == "aws:us-east-1")
        assert row == {**row, "status": "copying", "ready": False, "source": "store"}
        for _ in range(5):
            _, headers, _ = await chat(s, gw)
            assert headers["x-meridian-region"] == "aws:eu-west-1"
        status, _ = await admin(s, gw, "PUT", f"{path}/v3/aws:us-east-1", {"status": "x"})
        assert status == 400
        status, _ = await admin(s, gw, "PUT", f"{path}/v1/aws:us-east-1", {"status": "Bad!"})
        assert status == 400


async def test_canary_validation_abort_and_conflicts(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    gw = await _two_versions(emulators, gateways)
    c = "/admin/v1/canary/test-model"
    async with aiohttp.ClientSession() as s:
        status, err = await admin(s, gw, "GET", c)
        assert status == 404
        for payload, words in [
            ({"to": "v9"}, "has no version 'v9'"),
            ({"to": "v1"}, "already the stable one"),
            ({"to": "v2", "steps": [50, 25]}, "steps must increase"),
            ({"to": "v2", "steps": [0, 50]}, "between 1 and 100"),
            ({"to": "v2", "steps": "5,25"}, "list of integer"),
            ({"to": "v2", "interval_s": 0}, "interval must be positive"),
            ({"to": "v2", "min_requests": 1e300}, "min_requests must be a finite number"),
            ({"to": "v2", "max_error_delta": 1e300}, "max_error_delta must be a finite"),
            ({}, "'to') is required"),
        ]:
            status, err = await admin(s, gw, "POST", c, payload)
            assert status == 400 and words in err["error"]["message"], (payload, err)
        plan = {"to": "v2", "steps": [10, 50, 100], "interval_s": 3600}
        status, body = await admin(s, gw, "POST", c, plan, actor="cy")
        assert status == 200 and body["phase"] == "progressing" and body["weight"] == 10
        assert body["plan"]["stable"] == "v1"
        _, weights = await admin(s, gw, "GET", W)
        assert weights["split"] == {"v1": 90, "v2": 10} and weights["canary"]["weight"] == 10
        status, err = await admin(s, gw, "POST", c, plan)
        assert status == 409 and "already progressing" in err["error"]["message"]
        status, err = await admin(s, gw, "PUT", W, {"split": {"v1": 1}})
        assert status == 409 and "promote or abort it first" in err["error"]["message"]
        status, body = await admin(s, gw, "POST", c + "/abort", actor="dee")
        assert status == 200 and body["phase"] == "aborted" and body["weight"] == 0
        assert gw.runtime is not None
        assert dict(gw.runtime.snapshot.models["test-model"].split) == {"v1": 100, "v2": 0}
        status, err = await admin(s, gw, "POST", c + "/promote")
        assert status == 409 and "already aborted" in err["error"]["message"]
        _, audit = await admin(s, gw, "GET", "/admin/v1/audit")
        actions = [(e["actor"], e["action"]) for e in audit["entries"]]
        assert ("cy", "canary.start") in actions and ("dee", "canary.abort") in actions


async def test_the_embedded_store_survives_a_restart(
    emulators: EmulatorFactory, gateways: GatewayFactory, tmp_path: Path
) -> None:
    em1, em2 = await emulators(), await emulators()
    rows = [("us", "aws:us-east-1", "v1", em1.url), ("eu", "aws:eu-west-1", "v2", em2.url)]
    store = {"path": str(tmp_path / "state.db")}
    config = gateway_config(rows, versions={"v1": 100, "v2": 0}, store=store)
    first = await gateways(config)
    async with aiohttp.ClientSession() as s:
        status, _ = await admin(s, first, "PUT", W, {"split": {"v1": 30, "v2": 70}})
        assert status == 200
        await first.stop(grace=0.1)
        second = await gateways(config)
        _, body = await admin(s, second, "GET", W)
    assert body["split"] == {"v1": 30, "v2": 70} and body["revision"] == 1
