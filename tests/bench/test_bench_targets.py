"""The verdicts on issue 22's targets, as pure functions of the figures a run produced.

Each case builds the run records by hand, so the thresholds and the n/a reasons
are checked without starting a process.
"""

from __future__ import annotations

import io
import os

import orjson
import pytest
from rich.console import Console

from bench.__main__ import options_from, parse_args
from bench.procs import Pinning
from bench.report import render, verdict_line
from bench.results import (
    Comparison,
    IdleStreams,
    Report,
    RunRecord,
    Verdict,
    Workers,
    compare,
    idle_rss,
    idle_streams_verdict,
    workers_verdict,
)
from bench.runner import workers_pinning
from bench.scenarios import IDLE_RSS, IDLE_STREAMS, LATENCY, SCENARIOS, THROUGHPUT, WORKERS
from bench.stats import Distribution

MIB = 1024 * 1024
TARGETS = {s.name: s.targets for s in SCENARIOS.values()}


def run(
    contender: str,
    concurrency: int = 200,
    *,
    scenario: str = "latency",
    ttft_ms: float = 20.0,
    chunks_per_s: float = 1000.0,
    requests_per_s: float = 100.0,
    cpu: dict[str, float] | None = None,
    workers: int = 1,
    rss_idle: int | None = None,
) -> RunRecord:
    """A 10 s window; ``cpu`` in CPU seconds over it."""
    proxy = contender != "direct"
    return RunRecord(
        scenario=scenario,
        contender=contender,
        concurrency=concurrency,
        window_s=10.0,
        requests_per_s=requests_per_s,
        chunks_per_s=chunks_per_s,
        chunks_per_request=66.0,
        ttft_ms=Distribution.of([ttft_ms] * 5),
        e2e_ms=Distribution.of([ttft_ms + 300.0] * 5),
        errors=0,
        error_kinds={},
        error_samples=[],
        cpu_s=dict(cpu or {"proxy": 2.0} if proxy else {}),
        proxy_rss_idle=(rss_idle or 60 * MIB) if proxy else None,
        proxy_rss_peak=80 * MIB if proxy else None,
        workers=workers,
    )


def verdicts(
    comparisons: list[Comparison], contender: str = "gateway", concurrency: int = 200
) -> dict[tuple[str, int | None], Verdict]:
    (comp,) = [c for c in comparisons if (c.contender, c.concurrency) == (contender, concurrency)]
    return {(v.target.metric, v.target.concurrency): v for v in comp.verdicts}


# --- added TTFT p50 at 200 streams, CPU per request against nginx -------------------


@pytest.mark.parametrize(("gateway_ttft", "met"), [(29.0, True), (30.0, True), (30.5, False)])
def test_added_ttft_p50_is_judged_at_200_streams(gateway_ttft: float, met: bool) -> None:
    runs = [run("direct"), run("gateway", ttft_ms=gateway_ttft)]
    v = verdicts(compare(runs, TARGETS))[("added_ttft_p50_ms", 200)]
    assert v.value == pytest.approx(gateway_ttft - 20.0)
    assert v.met is met and v.reason is None


def test_the_one_millisecond_target_stays_at_10_streams() -> None:
    runs = [run("direct", 10), run("gateway", 10, ttft_ms=21.5)]
    judged = verdicts(compare(runs, TARGETS), concurrency=10)
    assert judged[("added_ttft_p50_ms", 10)].met is False
    assert ("added_ttft_p50_ms", 200) not in judged
    assert ("cpu_per_request_x_nginx", 200) not in judged


@pytest.mark.parametrize(("gateway_cpu", "met"), [(1.8, True), (1.9, False)])
def test_cpu_per_request_is_judged_against_nginx(gateway_cpu: float, met: bool) -> None:
    runs = [
        run("direct"),
        run("gateway", cpu={"proxy": gateway_cpu}),
        run("nginx", cpu={"proxy": 1.0}),
    ]
    comparisons = compare(runs, TARGETS)
    v = verdicts(comparisons)[("cpu_per_request_x_nginx", 200)]
    assert v.value == pytest.approx(gateway_cpu)
    assert v.met is met
    assert not verdicts(comparisons, "nginx")  # nginx is the reference, not judged


def test_cpu_per_request_without_nginx_is_na_and_says_why() -> None:
    runs = [run("direct"), run("gateway")]
    v = verdicts(compare(runs, TARGETS, "nginx did not run (--no-nginx)"))[
        ("cpu_per_request_x_nginx", 200)
    ]
    assert v.met is None and v.word == "n/a"
    assert v.reason == "nginx did not run (--no-nginx)"


def test_cpu_target_is_per_scenario() -> None:
    runs = [
        run("direct", scenario="throughput"),
        run("gateway", scenario="throughput", cpu={"proxy": 9.0}),
        run("nginx", scenario="throughput", cpu={"proxy": 1.0}),
    ]
    judged = verdicts(compare(runs, TARGETS))
    assert set(judged) == {("chunks_pct_of_direct", 200)}


def test_without_a_direct_run_the_direct_targets_are_na() -> None:
    runs = [run("gateway", cpu={"proxy": 1.0}), run("nginx", cpu={"proxy": 1.0})]
    judged = verdicts(compare(runs, TARGETS))
    assert judged[("added_ttft_p50_ms", 200)].reason == "no direct run (--gateway-only)"
    assert judged[("cpu_per_request_x_nginx", 200)].met is True


# --- memory ------------------------------------------------------------------------


def probe(
    requested: int, opened: int, before_mib: float, open_mib: float, fd_limit: int = 1 << 20
) -> IdleStreams:
    return IdleStreams(requested, opened, int(before_mib * MIB), int(open_mib * MIB), fd_limit)


@pytest.mark.parametrize(("before_mib", "met"), [(59.9, True), (60.0, True), (60.2, False)])
def test_idle_rss_is_the_probes_gateway_before_any_stream(before_mib: float, met: bool) -> None:
    result = idle_rss([run("gateway", rss_idle=10 * MIB)], probe(200, 200, before_mib, 70), 1)
    assert result is not None
    assert result.source == "memory probe's gateway"
    assert result.verdict.value == pytest.approx(before_mib, abs=1e-6)
    assert result.verdict.met is met


def test_idle_rss_without_the_probe_is_the_first_gateway_stack() -> None:
    runs = [run("direct"), run("gateway", rss_idle=50 * MIB), run("gateway", rss_idle=70 * MIB)]
    result = idle_rss(runs, None, 1)
    assert result is not None
    assert result.source == "latency stack's gateway"
    assert result.verdict.met is True
    assert idle_rss([run("direct")], None, 1) is None  # no gateway ran


def test_idle_rss_of_several_workers_is_na() -> None:
    result = idle_rss([], probe(200, 200, 199.0, 210.0), 2)
    assert result is not None
    assert result.verdict.met is None
    assert result.verdict.value == pytest.approx(199.0)
    assert "one worker" in (result.verdict.reason or "")


@pytest.mark.parametrize(("open_mib", "met"), [(462.0, True), (500.0, True), (501.0, False)])
def test_ten_thousand_idle_streams_in_500_mib(open_mib: float, met: bool) -> None:
    v = idle_streams_verdict(probe(10_000, 10_000, 60.0, open_mib), "unused")
    assert v.met is met and v.reason is None


def test_a_probe_that_opened_fewer_streams_fails_and_says_how_many() -> None:
    v = idle_streams_verdict(probe(10_000, 9_985, 60.0, 420.0), "unused")
    assert v.met is False
    assert v.reason == "only 9,985 of 10,000 streams opened"


def test_a_probe_the_open_file_limit_stopped_is_judged_on_its_extrapolated_rss() -> None:
    # 20,000 files, two a stream: 9,985 streams held with the gateway's own files
    held = probe(10_000, 9_985, 60.0, 60.0 + 9_985 * 40 / 1024, fd_limit=20_000)
    assert held.fd_capped
    v = idle_streams_verdict(held, "unused")
    assert v.value == pytest.approx(60.0 + 10_000 * 40 / 1024)
    assert v.met is True
    assert v.reason == (
        "9,985 of 10,000 open: the open-file limit (20,000, 2 a stream) caps the gateway;"
        " extrapolated at 40.0 KiB a stream"
    )
    heavy = probe(10_000, 9_985, 60.0, 60.0 + 9_985 * 50 / 1024, fd_limit=20_000)
    assert idle_streams_verdict(heavy, "unused").met is False  # 548 MiB at 10,000


def test_a_probe_the_open_file_limit_stopped_far_short_is_na() -> None:
    v = idle_streams_verdict(probe(10_000, 500, 60.0, 80.0, fd_limit=1_024), "unused")
    assert v.met is None
    assert v.value == pytest.approx(80.0)
    assert (
        v.reason == "500 of 10,000 open: the open-file limit (1,024, 2 a stream) caps the gateway"
    )


def test_a_smaller_or_skipped_probe_is_na() -> None:
    small = idle_streams_verdict(probe(200, 200, 60.0, 68.0), "unused")
    assert small.met is None
    assert small.reason == (
        "the probe held 200 streams; the target is for 10,000 (--idle-streams 10000)"
    )
    skipped = idle_streams_verdict(None, "probe skipped (--idle-streams 0)")
    assert skipped.met is None and skipped.reason == "probe skipped (--idle-streams 0)"


# --- workers -----------------------------------------------------------------------


def workers_runs(
    one: float, two: float, *, one_busy: float = 1.0, load: float = 0.5
) -> tuple[RunRecord, ...]:
    """Throughput runs at 1 and 2 workers; ``load``: emulator + loadgen cores of the second."""
    half = load * 10.0 / 2  # CPU seconds each over the 10 s window
    return (
        run("gateway", scenario="throughput", chunks_per_s=one, cpu={"proxy": one_busy * 10}),
        run(
            "gateway",
            scenario="throughput",
            chunks_per_s=two,
            cpu={"proxy": 20.0, "emulator": half, "loadgen": half},
            workers=2,
        ),
    )


@pytest.mark.parametrize(("two", "met"), [(75_000.0, True), (68_000.0, True), (60_000.0, False)])
def test_two_workers_are_judged_where_the_gateway_is_the_limit(two: float, met: bool) -> None:
    v = workers_verdict(workers_runs(40_000.0, two), usable_cores=4, load_cores=2)
    assert v.value == pytest.approx(two / 40_000.0)
    assert v.met is met and v.reason is None


def test_two_workers_on_two_cores_are_na_with_the_ratio_shown() -> None:
    v = workers_verdict(workers_runs(40_000.0, 36_000.0), usable_cores=2, load_cores=None)
    assert v.met is None
    assert v.value == pytest.approx(0.9)
    assert v.reason is not None
    assert v.reason.startswith("needs ≥ 3 cores")
    assert v.reason.endswith("this machine has 2")


def test_a_saturated_load_makes_the_workers_ratio_na() -> None:
    runs = workers_runs(40_000.0, 50_000.0, load=0.95)
    v = workers_verdict(runs, usable_cores=3, load_cores=1)
    assert v.met is None
    assert v.reason == "the emulator and load generator were the limit (0.95 of their 1 cores busy)"


def test_one_worker_that_was_not_the_limit_makes_the_ratio_na() -> None:
    v = workers_verdict(workers_runs(40_000.0, 50_000.0, one_busy=0.6), 4, 2)
    assert v.met is None
    assert v.reason == "one worker was not the limit (0.60 cores busy)"


def test_the_workers_ratio_needs_both_counts() -> None:
    v = workers_verdict(workers_runs(1.0, 2.0)[1:], usable_cores=4, load_cores=2)
    assert v.met is None and v.value is None
    assert (v.reason or "").startswith("needs runs with 1 and 2 workers at c=200")


def test_the_workers_ratio_is_over_the_fewest_workers() -> None:
    runs = workers_runs(40_000.0, 70_000.0)
    workers = Workers("pinned", 4, runs, workers_verdict(runs, 4, 2))
    assert [workers.ratio(r) for r in runs] == [1.0, 1.75]


# --- options, JSON and the printed lines ------------------------------------------


def test_workers_1_2_runs_the_matrix_at_one_and_the_workers_runs_at_both() -> None:
    options = options_from(parse_args(["--workers", "2,1", "--max-tokens", "32"]))
    assert options.workers == 1
    assert options.workers_scaling == (1, 2)
    assert options.workers_scenario.name == THROUGHPUT.name
    assert options.workers_scenario.upstream.max_tokens == 32
    single = options_from(parse_args(["--workers", "2"]))
    assert (single.workers, single.workers_scaling) == (2, ())


def test_several_workers_counts_refuse_direct_only() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--workers", "1,2", "--direct-only"])


def sample_report() -> Report:
    runs = [run("direct", ttft_ms=20.0), run("gateway", ttft_ms=24.0, cpu={"proxy": 3.0})]
    report = Report(meta={"cpus": 2, "python": "3.11", "duration_s": 10, "warmup_s": 1})
    report.runs = runs
    report.comparisons = compare(runs, TARGETS, "nginx did not run (--no-nginx)")
    report.idle_streams = probe(10_000, 10_000, 59.0, 450.0)
    report.idle_rss = idle_rss(runs, report.idle_streams, 1)
    report.idle_streams_verdict = idle_streams_verdict(report.idle_streams, "unused")
    wruns = workers_runs(40_000.0, 36_000.0)
    report.workers = Workers("not pinned", 2, wruns, workers_verdict(wruns, 2, None))
    return report


def test_the_json_carries_every_verdict() -> None:
    out = orjson.loads(orjson.dumps(sample_report().to_json()))
    targets = {(t["where"], t["label"], t["target"]): t for t in out["targets"]}
    p50 = targets[("latency/gateway/c=200", "added TTFT p50", "≤ 10 ms @ c=200")]
    assert (p50["verdict"], p50["value"], p50["met"]) == ("PASS", pytest.approx(4.0), True)
    cpu = targets[("latency/gateway/c=200", "CPU/req × nginx", "≤ 1.8× @ c=200")]
    assert (cpu["verdict"], cpu["reason"]) == ("n/a", "nginx did not run (--no-nginx)")
    idle = targets[("memory/idle (memory probe's gateway)", "idle RSS", "≤ 60 MiB")]
    assert idle["verdict"] == "PASS"
    held = targets[("memory/idle open streams", "RSS", "≤ 500 MiB @ c=10000")]
    assert held["verdict"] == "PASS"
    scaling = targets[("workers/throughput/gateway", "chunks/s × 1 worker", WORKERS.describe())]
    assert scaling["verdict"] == "n/a" and scaling["value"] == pytest.approx(0.9)
    assert out["workers"]["verdict"] == {k: v for k, v in scaling.items() if k != "where"}
    assert [r["chunks_x_fewest_workers"] for r in out["workers"]["runs"]] == [1.0, 0.9]
    assert out["comparisons"][0]["verdicts"][0]["verdict"] in ("PASS", "FAIL", "n/a")


def test_every_verdict_is_printed_beside_its_figure() -> None:
    buffer = io.StringIO()
    render(sample_report(), Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()
    assert "PASS added TTFT p50 ≤ 10 ms @ c=200" in text
    assert "n/a CPU/req × nginx ≤ 1.8× @ c=200: nginx did not run (--no-nginx)" in text
    assert "PASS idle RSS ≤ 60 MiB" in text
    assert "PASS RSS ≤ 500 MiB @ c=10000" in text
    assert "n/a chunks/s × 1 worker ≥ 1.7× @ c=200, 2 workers: needs ≥ 3 cores" in text
    assert "targets: " in text and "does not change the exit status" in text


def test_verdict_line_says_why_a_figure_fails_whatever_its_value() -> None:
    v = Verdict(IDLE_STREAMS, 420.0, shortfall="only 9,985 of 10,000 streams opened")
    assert verdict_line(v) == (
        "[red]FAIL[/] RSS ≤ 500 MiB @ c=10000: only 9,985 of 10,000 streams opened"
    )
    assert verdict_line(Verdict(IDLE_RSS, 59.0)) == "[green]PASS[/] idle RSS ≤ 60 MiB"
    assert LATENCY.targets[0].describe() == "≤ 1 ms @ c=10"


def test_workers_runs_are_pinned_only_with_a_core_per_worker_and_one_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    pin, line, load = workers_pinning((1, 2), pin=True)
    assert pin is None and load is None
    assert line == "not pinned: 2 workers and their load need 3 cores, 2 usable"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    pin, line, load = workers_pinning((1, 2), pin=True)
    assert pin == Pinning(proxy=frozenset({0, 1}), load=frozenset({2, 3}))
    assert load == 2
    assert line == "pinned: N workers on the first N of CPU 0,1, load on CPU 2,3"
    assert workers_pinning((1, 2), pin=False)[0] is None
