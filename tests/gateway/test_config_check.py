"""`meridian config check` (issue 19 item 1): schema and cross-reference
problems in one pass, each with its line; exit 0 or 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.config.check import diff, problems, summary
from tests.conftest import gateway_config

BAD = """\
listen: {http: "127.0.0.1:0", admin: nope}
regions: [{name: "onprem:fra1", tags: [EU]}]
models: [{name: m, versions: {v1: 100}}]
backends:
  - {name: b, model: m, version: v9, region: "onprem:mars", provider: vllm,
     url: "http://127.0.0.1:1", served_model: m}
  - {name: b, model: m, version: v1, region: "onprem:fra1", provider: vllm,
     url: "http://127.0.0.1:1", served_model: m, bogus: 1}
  - {name: c, model: nope, version: v1, region: "onprem:fra1", provider: vllm,
     url: "http://127.0.0.1:1", served_model: m}
tenants: [{name: t, api_keys: ["sha256:{KEY}"]}]
""".replace("{KEY}", "0" * 64)


def test_schema_and_cross_reference_problems_come_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    config, found = problems(path)
    assert config is None
    assert found == [
        f"{path}:1: listen.admin: expected HOST:PORT, got 'nope'",
        f"{path}:5: backends.0.region: unknown region 'onprem:mars'",
        f"{path}:5: backends.0.version: model 'm' has no version 'v9'",
        f"{path}:7: backends.1.name: 'b' is defined twice",
        f"{path}:8: backends.1.bogus: Extra inputs are not permitted",
        f"{path}:9: backends.2.model: unknown model 'nope'",
    ]


def test_cross_reference_problems_all_at_once_when_the_schema_is_fine(tmp_path: Path) -> None:
    text = BAD.replace("admin: nope", 'admin: "127.0.0.1:0"').replace(", bogus: 1", "")
    path = tmp_path / "refs.yaml"
    path.write_text(text)
    _, found = problems(path)
    assert [line.split(": ", 1)[1] for line in found] == [
        "backends.0.region: unknown region 'onprem:mars'",
        "backends.0.version: model 'm' has no version 'v9'",
        "backends.1.name: 'b' is defined twice",
        "backends.2.model: unknown model 'nope'",
    ]


def test_the_cli_exits_2_with_every_problem_and_0_when_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["config", "check", str(bad)]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 6
    good = tmp_path / "good.yaml"
    fixed = BAD.replace("admin: nope", 'admin: "127.0.0.1:0"').replace(", bogus: 1", "")
    good.write_text(
        fixed.replace("name: b, model: m, version: v1", "name: b2, model: m, version: v1")
        .replace('version: v9, region: "onprem:mars"', 'version: v1, region: "onprem:fra1"')
        .replace("model: nope", "model: m")
    )
    assert main(["config", "check", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"


def test_diff_names_what_changes() -> None:
    running: dict[str, dict[str, Any]] = {
        "backends": {"a": {"url": "http://a"}, "gone": {"url": "http://g"}},
        "tenants": {"t": {"keys": ["k1"], "limits": None}},
        "models": {"m": {"v1": 100}},
        "regions": {},
    }
    new: dict[str, dict[str, Any]] = {
        "backends": {"a": {"url": "http://a2"}, "b": {"url": "http://b"}},
        "tenants": {"t": {"keys": ["k1", "k2"], "limits": {"requests_per_min": 5}}},
        "models": {"m": {"v1": 90, "v2": 10}},
        "regions": {},
    }
    assert diff(running, new) == [
        "~ model m: v1 100 → 90",
        "~ model m: v2 None → 10",
        "+ backend b",
        "- backend gone",
        "~ backend a: url http://a → http://a2",
        "~ tenant t: keys +1 -0",
        "~ tenant t: limits None → {'requests_per_min': 5}",
    ]


@pytest.mark.parametrize(
    ("before", "after", "line"),
    [
        ({"per_hour": 3.6}, {"per_hour": 4.0}, "{'per_hour': 3.6} → {'per_hour': 4.0}"),
        (
            {"per_hour": 3.6},
            {"per_hour": 3.6, "tokens_per_s": 900.0, "input_ratio": 0.1},
            "{'per_hour': 3.6} → {'per_hour': 3.6, 'tokens_per_s': 900.0, 'input_ratio': 0.1}",
        ),
        (
            {"input_per_m": 1.0, "output_per_m": 2.0},
            {"per_hour": 3.6},
            "{'input_per_m': 1.0, 'output_per_m': 2.0} → {'per_hour': 3.6}",
        ),
    ],
)
def test_a_price_change_of_any_kind_is_listed(
    before: dict[str, float], after: dict[str, float], line: str
) -> None:
    def config(price: dict[str, float]) -> dict[str, dict[str, Any]]:
        return summary(gateway_config([("a", "onprem:fra1", "v1", "http://a", {"price": price})]))

    assert diff(config(before), config(after)) == [f"~ backend a: price {line}"]
