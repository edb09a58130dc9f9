"""What a benchmark run produced, as plain data: per-run records, the
gateway-versus-direct comparisons derived from them, and the memory probe.

Everything here is computed from the records, never measured, so the JSON
output and the printed tables cannot disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.scenarios import Target
from bench.stats import Distribution


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One (scenario, contender, concurrency) run over its measured window."""

    scenario: str
    contender: str  # "direct", "gateway", "nginx" or "litellm"
    concurrency: int
    window_s: float
    requests_per_s: float
    chunks_per_s: float
    chunks_per_request: float
    ttft_ms: Distribution | None
    e2e_ms: Distribution | None
    errors: int
    error_kinds: dict[str, int]
    error_samples: list[str]
    # "loadgen", "emulator", for proxies "proxy"; "other" is the rest of the
    # machine's busy time (other processes); "steal" the hypervisor's.
    cpu_s: dict[str, float]
    proxy_rss_idle: int | None  # bytes, before any load on this stack
    proxy_rss_peak: int | None  # bytes, highest sample during the window

    def cores(self, process: str) -> float | None:
        """Average cores used by ``process`` over the window."""
        cpu = self.cpu_s.get(process)
        return None if cpu is None or self.window_s <= 0 else cpu / self.window_s

    def cpu_ms_per_request(self, process: str) -> float | None:
        """CPU milliseconds ``process`` spent per request completed in the window."""
        cpu = self.cpu_s.get(process)
        done = self.requests_per_s * self.window_s
        return None if cpu is None or done <= 0 else 1000.0 * cpu / done

    def cpu_us_per_chunk(self, process: str) -> float | None:
        """CPU microseconds ``process`` spent per chunk delivered in the window."""
        cpu = self.cpu_s.get(process)
        chunks = self.chunks_per_s * self.window_s
        return None if cpu is None or chunks <= 0 else 1e6 * cpu / chunks

    @property
    def rss_per_stream(self) -> float | None:
        """Bytes of proxy RSS above idle, per open stream."""
        if self.proxy_rss_peak is None or self.proxy_rss_idle is None:
            return None
        return (self.proxy_rss_peak - self.proxy_rss_idle) / self.concurrency


@dataclass(frozen=True, slots=True)
class Verdict:
    target: Target
    value: float | None

    @property
    def met(self) -> bool | None:
        return None if self.value is None else self.target.met(self.value)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A proxy against the direct connection, same scenario and concurrency."""

    scenario: str
    contender: str
    concurrency: int
    added_ttft_p50_ms: float | None
    added_ttft_p99_ms: float | None
    chunks_pct_of_direct: float | None
    verdicts: tuple[Verdict, ...] = ()
    # This proxy's CPU per request / nginx's, same scenario and concurrency (if nginx ran).
    cpu_per_request_x_nginx: float | None = None


@dataclass(frozen=True, slots=True)
class IdleStreams:
    """Gateway RSS with ``open`` streams held open while the upstream sends nothing."""

    requested: int
    open: int  # upstream connections the gateway actually had open
    rss_before: int
    rss_open: int

    @property
    def per_stream(self) -> float | None:
        return (self.rss_open - self.rss_before) / self.open if self.open else None


@dataclass(slots=True)
class Report:
    meta: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    idle_streams: IdleStreams | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for run, raw in zip(self.runs, out["runs"], strict=True):
            raw["cores"] = {p: run.cores(p) for p in run.cpu_s}
            raw["rss_per_stream"] = run.rss_per_stream
            raw["cpu_ms_per_request"] = {p: run.cpu_ms_per_request(p) for p in _PER_WORK}
            raw["cpu_us_per_chunk"] = {p: run.cpu_us_per_chunk(p) for p in _PER_WORK}
        for comp, raw in zip(self.comparisons, out["comparisons"], strict=True):
            raw["verdicts"] = [
                {
                    "target": v.target.describe(),
                    "metric": v.target.metric,
                    "value": v.value,
                    "met": v.met,
                }
                for v in comp.verdicts
            ]
        if self.idle_streams is not None:
            out["idle_streams"]["per_stream"] = self.idle_streams.per_stream
        return out


_PER_WORK = ("proxy", "emulator", "loadgen")  # processes whose CPU is divided by the work done


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _diff(a: Distribution | None, b: Distribution | None, attr: str) -> float | None:
    if a is None or b is None:
        return None
    value: float = getattr(a, attr) - getattr(b, attr)
    return value


def compare(runs: list[RunRecord], targets: dict[str, tuple[Target, ...]]) -> list[Comparison]:
    """Each proxy run against the direct run of the same scenario and concurrency."""
    direct = {(r.scenario, r.concurrency): r for r in runs if r.contender == "direct"}
    nginx = {(r.scenario, r.concurrency): r for r in runs if r.contender == "nginx"}
    out = []
    for run in runs:
        base = direct.get((run.scenario, run.concurrency))
        if run.contender == "direct" or base is None:
            continue
        values = {
            "added_ttft_p50_ms": _diff(run.ttft_ms, base.ttft_ms, "p50"),
            "added_ttft_p99_ms": _diff(run.ttft_ms, base.ttft_ms, "p99"),
            "chunks_pct_of_direct": (
                100.0 * run.chunks_per_s / base.chunks_per_s if base.chunks_per_s else None
            ),
        }
        ref = nginx.get((run.scenario, run.concurrency))
        x_nginx = (
            _ratio(run.cpu_ms_per_request("proxy"), ref.cpu_ms_per_request("proxy"))
            if ref is not None and run.contender != "nginx"
            else None
        )
        verdicts = tuple(
            Verdict(t, values[t.metric])
            for t in targets.get(run.scenario, ())
            if t.concurrency == run.concurrency and run.contender == "gateway"
        )
        out.append(
            Comparison(
                run.scenario,
                run.contender,
                run.concurrency,
                **values,
                verdicts=verdicts,
                cpu_per_request_x_nginx=x_nginx,
            )
        )
    return out
