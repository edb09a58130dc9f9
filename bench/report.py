"""Prints a :class:`~bench.results.Report` as tables: one per scenario with the
raw figures, one with CPU per request and per chunk, one with the
proxy-versus-direct ratios and the §8 targets beside them, one with gateway
memory and its targets, and one with the workers runs and theirs. Every
verdict is printed beside the figure it judged: PASS, FAIL, or n/a with why."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.results import Comparison, Report, RunRecord, Verdict, Workers

_MIB = 1024 * 1024


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _size(value: float | None, unit: int, suffix: str) -> str:
    return "-" if value is None else f"{value / unit:.1f} {suffix}"


_NOISY_CORES = 0.25  # other processes plus hypervisor steal above this taint a run


def _noise(run: RunRecord) -> float:
    return (run.cores("other") or 0.0) + (run.cores("steal") or 0.0)


def _busy(other: float | None, steal: float | None) -> str:
    text = f"{_num(other, '.2f')}/{_num(steal, '.2f')}"
    return f"[yellow]{text}[/]" if (other or 0.0) + (steal or 0.0) > _NOISY_CORES else text


def _rates_table(runs: list[RunRecord]) -> Table:
    table = Table(title="throughput and CPU over the measured window", title_justify="left")
    for name in ("scenario", "contender", "c", "req/s", "chunks/s", "chunks\n/req", "errors"):
        table.add_column(name, justify="left" if name in ("scenario", "contender") else "right")
    for name in ("proxy", "emulator", "loadgen", "other/steal"):
        table.add_column(f"{name}\ncores", justify="right", no_wrap=True)
    table.add_column("proxy RSS\npeak", justify="right", no_wrap=True)
    for r in runs:
        table.add_row(
            r.scenario,
            r.contender,
            str(r.concurrency),
            _num(r.requests_per_s),
            _num(r.chunks_per_s, ".0f"),
            _num(r.chunks_per_request),
            f"[red]{r.errors}[/]" if r.errors else "0",
            _num(r.cores("proxy"), ".2f"),
            _num(r.cores("emulator"), ".2f"),
            _num(r.cores("loadgen"), ".2f"),
            _busy(r.cores("other"), r.cores("steal")),
            _size(r.proxy_rss_peak, _MIB, "MiB"),
        )
    return table


def _cpu_table(runs: list[RunRecord], comparisons: list[Comparison]) -> Table:
    table = Table(
        title="CPU per unit of work over the measured window (utime+stime from /proc)",
        title_justify="left",
    )
    for name in ("scenario", "contender", "c"):
        table.add_column(name, justify="left" if name != "c" else "right")
    for name in ("proxy", "emulator", "loadgen"):
        table.add_column(f"{name}\nms/req", justify="right")
        table.add_column(f"{name}\nµs/chunk", justify="right")
    table.add_column("proxy ms/req\n× nginx", justify="right")
    x_nginx = {
        (c.scenario, c.contender, c.concurrency): c.cpu_per_request_x_nginx for c in comparisons
    }
    for r in runs:
        cells = [r.scenario, r.contender, str(r.concurrency)]
        for name in ("proxy", "emulator", "loadgen"):
            cells += [
                _num(r.cpu_ms_per_request(name), ".3f"),
                _num(r.cpu_us_per_chunk(name), ".1f"),
            ]
        cells.append(_num(x_nginx.get((r.scenario, r.contender, r.concurrency)), ".2f"))
        table.add_row(*cells)
    return table


def _latency_table(runs: list[RunRecord]) -> Table:
    table = Table(title="latency (ms) of requests sent in the window", title_justify="left")
    for name in ("scenario", "contender", "c", "n"):
        table.add_column(name, justify="left" if name in ("scenario", "contender") else "right")
    for metric in ("TTFT", "E2E"):
        for p in ("p50", "p90", "p99"):
            table.add_column(f"{metric} {p}", justify="right")
    for r in runs:
        cells = [r.scenario, r.contender, str(r.concurrency), str(r.ttft_ms.n if r.ttft_ms else 0)]
        for dist in (r.ttft_ms, r.e2e_ms):
            cells += [
                _num(getattr(dist, p) if dist else None, ".2f") for p in ("p50", "p90", "p99")
            ]
        table.add_row(*cells)
    return table


_MARKS = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}


def verdict_line(v: Verdict) -> str:
    """``PASS added TTFT p50 ≤ 1 ms @ c=10``; n/a and a FAIL whatever the figure say why."""
    line = f"{_MARKS[v.met]} {escape(v.target.label)} {escape(v.target.describe())}"
    return line if v.reason is None else f"{line}: {escape(v.reason)}"


def _targets_column(table: Table) -> None:
    table.add_column("targets (docs/design.md §8)", min_width=24)


def _comparison_table(comparisons: list[Comparison]) -> Table:
    table = Table(title="proxy vs direct (same scenario, same concurrency)", title_justify="left")
    for name in ("scenario", "contender", "c"):
        table.add_column(name, justify="left" if name != "c" else "right")
    for name in (
        "added TTFT\np50 ms",
        "added TTFT\np99 ms",
        "chunks/s\n% of direct",
        "CPU/req\n× nginx",
    ):
        table.add_column(name, justify="right")
    _targets_column(table)
    for c in comparisons:
        table.add_row(
            c.scenario,
            c.contender,
            str(c.concurrency),
            _num(c.added_ttft_p50_ms, ".2f"),
            _num(c.added_ttft_p99_ms, ".2f"),
            _num(c.chunks_pct_of_direct, ".1f"),
            _num(c.cpu_per_request_x_nginx, ".2f"),
            "\n".join(verdict_line(v) for v in c.verdicts) or "-",
        )
    return table


def _memory_table(report: Report) -> Table:
    table = Table(title="gateway memory (VmRSS)", title_justify="left")
    for name in ("what", "streams", "RSS", "per stream"):
        table.add_column(name, justify="left" if name == "what" else "right")
    _targets_column(table)
    base = report.idle_rss
    if base is not None:
        table.add_row(
            f"ready, before any load ({base.source})",
            "0",
            _size(base.rss, _MIB, "MiB"),
            "",
            verdict_line(base.verdict),
        )
    for r in report.runs:
        if r.contender != "gateway":
            continue
        table.add_row(
            f"{r.scenario}: idle -> peak while streaming",
            str(r.concurrency),
            f"{_size(r.proxy_rss_idle, _MIB, 'MiB')} -> {_size(r.proxy_rss_peak, _MIB, 'MiB')}",
            _size(r.rss_per_stream, 1024, "KiB"),
            "",
        )
    idle = report.idle_streams
    verdict = report.idle_streams_verdict
    if idle is not None or verdict is not None:
        table.add_row(
            "idle open streams (upstream silent)",
            "-" if idle is None else f"{idle.open}/{idle.requested}",
            "-"
            if idle is None
            else f"{_size(idle.rss_before, _MIB, 'MiB')} -> {_size(idle.rss_open, _MIB, 'MiB')}",
            "-" if idle is None else _size(idle.per_stream, 1024, "KiB"),
            "" if verdict is None else verdict_line(verdict),
        )
    return table


def _workers_table(workers: Workers) -> Table:
    runs = workers.runs
    scenario = runs[0].scenario if runs else "-"
    table = Table(
        title=f"gateway workers ({scenario} scenario, gateway only; {workers.pinning})",
        title_justify="left",
    )
    for name in ("workers", "c", "req/s", "chunks/s", "errors"):
        table.add_column(name, justify="right")
    for name in ("gateway", "emulator", "loadgen", "other/steal"):
        table.add_column(f"{name}\ncores", justify="right", no_wrap=True)
    table.add_column("chunks/s\n× fewest", justify="right")
    _targets_column(table)
    judged = workers.verdict.target
    for r in runs:
        at_target = r.workers == judged.workers and r.concurrency == judged.concurrency
        table.add_row(
            str(r.workers),
            str(r.concurrency),
            _num(r.requests_per_s),
            _num(r.chunks_per_s, ".0f"),
            f"[red]{r.errors}[/]" if r.errors else "0",
            _num(r.cores("proxy"), ".2f"),
            _num(r.cores("emulator"), ".2f"),
            _num(r.cores("loadgen"), ".2f"),
            _busy(r.cores("other"), r.cores("steal")),
            _num(workers.ratio(r), ".2f"),
            verdict_line(workers.verdict) if at_target else "",
        )
    if not any(r.workers == judged.workers for r in runs):
        table.add_row(*[""] * 10, verdict_line(workers.verdict))
    return table


def _summary(report: Report) -> str:
    verdicts = [v for _, v in report.verdicts()]
    counts = {word: sum(v.word == word for v in verdicts) for word in ("PASS", "FAIL", "n/a")}
    return "targets: " + ", ".join(f"{n} {word}" for word, n in counts.items())


def render(report: Report, console: Console) -> None:
    meta = report.meta
    console.print(
        f"[bold]Meridian bench[/]  {meta['cpus']} CPUs, Python {meta['python']};"
        f" window {meta['duration_s']}s after {meta['warmup_s']}s warm-up."
        " Load generator, proxy and emulator share these CPUs."
    )
    if "pinning" in meta:
        console.print(f"CPU affinity: {meta['pinning']}.", markup=False)
    if report.runs:
        console.print(_rates_table(report.runs))
        console.print(_cpu_table(report.runs, report.comparisons))
        console.print(_latency_table(report.runs))
    if report.comparisons:
        console.print(_comparison_table(report.comparisons))
    if any(r.contender == "gateway" for r in report.runs) or report.idle_rss:
        console.print(_memory_table(report))
    if report.workers is not None:
        console.print(_workers_table(report.workers))
    for run in report.runs:
        for sample in run.error_samples:
            where = f"{run.scenario}/{run.contender}/c={run.concurrency}"
            console.print(f"[red]error[/] {where}: {escape(sample)}")
    noisy = [r for r in report.runs if _noise(r) > _NOISY_CORES]
    if noisy:
        console.print(
            f"[yellow]warning[/]: other processes and hypervisor steal took more than"
            f" {_NOISY_CORES} cores during {len(noisy)} of {len(report.runs)} runs (column"
            " 'other/steal'); those figures measure a shared machine, rerun when it is quiet."
        )
    for note in report.notes:
        console.print(f"note: {note}")
    if report.verdicts():
        console.print(f"{_summary(report)} (a missed target does not change the exit status)")
