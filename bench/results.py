"""What a benchmark run produced, as plain data: per-run records, the
gateway-versus-direct comparisons derived from them, the memory probe, the
workers runs, and the verdicts on the targets of docs/design.md §8.

Everything here is computed from the records, never measured, so the JSON
output and the printed tables cannot disagree. A verdict is PASS, FAIL or
n/a; n/a always says why (no nginx, the probe skipped, too few cores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.scenarios import IDLE_RSS, IDLE_STREAMS, WORKERS, Target
from bench.stats import Distribution


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One (scenario, contender, concurrency) run over its measured window."""

    scenario: str
    # "direct", "gateway", "nginx", "aiohttp" (bench.floor), "relay" (bench.relay), "litellm"
    contender: str
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
    workers: int = 1  # gateway worker processes (meridian serve --workers)

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
    """A target and the figure it was judged on. ``unjudged`` says why there is no
    verdict (n/a) although a figure may be shown, e.g. too few cores to judge it."""

    target: Target
    value: float | None
    unjudged: str | None = None
    # Why this fails whatever the value: the figure is not for what the target asks.
    shortfall: str | None = None
    note: str | None = None  # how the figure was obtained, when that is not plain

    @property
    def met(self) -> bool | None:
        if self.unjudged is not None:
            return None
        if self.shortfall is not None:
            return False
        return None if self.value is None else self.target.met(self.value)

    @property
    def word(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.met]

    @property
    def reason(self) -> str | None:
        """Why this is n/a, or fails whatever its value, or how its figure was obtained."""
        if self.met is None:
            return self.unjudged or "no figure"
        return self.shortfall or self.note

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.describe(),
            "metric": self.target.metric,
            "label": self.target.label,
            "value": self.value,
            "met": self.met,
            "verdict": self.word,
            "reason": self.reason,
        }


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
    fd_limit: int | None = None  # the gateway's open-file limit (soft RLIMIT_NOFILE)

    @property
    def fd_capped(self) -> bool:
        """Whether the open-file limit was below what ``requested`` streams need."""
        need = FDS_PER_STREAM * self.requested + FD_HEADROOM
        return self.fd_limit is not None and self.fd_limit < need

    @property
    def per_stream(self) -> float | None:
        return (self.rss_open - self.rss_before) / self.open if self.open else None


@dataclass(frozen=True, slots=True)
class IdleRss:
    """The gateway's RSS once ready, before any load, and its verdict."""

    source: str  # whose figure: the memory probe's gateway, or a scenario stack's
    rss: int | None
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Workers:
    """The throughput scenario through the gateway alone at each ``--workers`` count."""

    pinning: str
    usable_cores: int
    runs: tuple[RunRecord, ...]
    verdict: Verdict

    def ratio(self, run: RunRecord) -> float | None:
        """``run``'s chunks/s over the fewest workers' at the same concurrency."""
        base = _fewest_workers(self.runs, run.concurrency)
        return None if base is None else _ratio(run.chunks_per_s, base.chunks_per_s)


@dataclass(slots=True)
class Report:
    meta: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    idle_streams: IdleStreams | None = None
    idle_streams_verdict: Verdict | None = None
    idle_rss: IdleRss | None = None
    workers: Workers | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        extra = self.workers.runs if self.workers is not None else ()
        return sum(r.errors for r in (*self.runs, *extra))

    def verdicts(self) -> list[tuple[str, Verdict]]:
        """Every target judged in this run, with where its figure is."""
        out = [
            (f"{c.scenario}/{c.contender}/c={c.concurrency}", v)
            for c in self.comparisons
            for v in c.verdicts
        ]
        if self.idle_rss is not None:
            out.append((f"memory/idle ({self.idle_rss.source})", self.idle_rss.verdict))
        if self.idle_streams_verdict is not None:
            out.append(("memory/idle open streams", self.idle_streams_verdict))
        if self.workers is not None:
            out.append(("workers/throughput/gateway", self.workers.verdict))
        return out

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for run, raw in zip(self.runs, out["runs"], strict=True):
            _run_json(run, raw)
        for comp, raw in zip(self.comparisons, out["comparisons"], strict=True):
            raw["verdicts"] = [v.to_json() for v in comp.verdicts]
        if self.idle_streams is not None:
            out["idle_streams"]["per_stream"] = self.idle_streams.per_stream
        if self.idle_streams_verdict is not None:
            out["idle_streams_verdict"] = self.idle_streams_verdict.to_json()
        if self.idle_rss is not None:
            out["idle_rss"]["verdict"] = self.idle_rss.verdict.to_json()
        if self.workers is not None:
            raw_workers = out["workers"]
            raw_workers["verdict"] = self.workers.verdict.to_json()
            for run, raw in zip(self.workers.runs, raw_workers["runs"], strict=True):
                _run_json(run, raw)
                raw["chunks_x_fewest_workers"] = self.workers.ratio(run)
        out["targets"] = [{"where": where, **v.to_json()} for where, v in self.verdicts()]
        return out


_PER_WORK = ("proxy", "emulator", "loadgen")  # processes whose CPU is divided by the work done
FDS_PER_STREAM = 2  # the gateway's: one socket to the client, one upstream
FD_HEADROOM = 1024  # the gateway's other files (listeners, logs, modules it imports late)
# A probe capped by the open-file limit is judged on its RSS extrapolated to the
# target's streams only when it held at least this share of them.
EXTRAPOLATE_FROM = 0.9
_MIB = 1024 * 1024
# A process (or the load: emulator plus load generator) that keeps this share of
# its cores busy is taken to be what limited a run.
SATURATED = 0.9


def _run_json(run: RunRecord, raw: dict[str, Any]) -> None:
    raw["cores"] = {p: run.cores(p) for p in run.cpu_s}
    raw["rss_per_stream"] = run.rss_per_stream
    raw["cpu_ms_per_request"] = {p: run.cpu_ms_per_request(p) for p in _PER_WORK}
    raw["cpu_us_per_chunk"] = {p: run.cpu_us_per_chunk(p) for p in _PER_WORK}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _diff(a: Distribution | None, b: Distribution | None, attr: str) -> float | None:
    if a is None or b is None:
        return None
    value: float = getattr(a, attr) - getattr(b, attr)
    return value


def _missing(metric: str, base: RunRecord | None, nginx: RunRecord | None, absent: str) -> str:
    """Why a comparison has no figure for ``metric``."""
    if metric == "cpu_per_request_x_nginx":
        return absent if nginx is None else "no CPU figure for nginx or the gateway"
    if base is None:
        return "no direct run (--gateway-only)"
    return "no requests completed in the window"


def compare(
    runs: list[RunRecord],
    targets: dict[str, tuple[Target, ...]],
    nginx_absent: str = "nginx did not run",
) -> list[Comparison]:
    """Each proxy run against the direct run (and nginx's) of the same scenario and
    concurrency, the gateway's judged on the targets defined there. ``nginx_absent``
    says why there is no nginx figure when nginx did not run."""
    direct = {(r.scenario, r.concurrency): r for r in runs if r.contender == "direct"}
    nginx = {(r.scenario, r.concurrency): r for r in runs if r.contender == "nginx"}
    out = []
    for run in runs:
        if run.contender == "direct":
            continue
        base = direct.get((run.scenario, run.concurrency))
        ref = nginx.get((run.scenario, run.concurrency))
        values = {
            "added_ttft_p50_ms": _diff(run.ttft_ms, base.ttft_ms if base else None, "p50"),
            "added_ttft_p99_ms": _diff(run.ttft_ms, base.ttft_ms if base else None, "p99"),
            "chunks_pct_of_direct": (
                100.0 * run.chunks_per_s / base.chunks_per_s
                if base is not None and base.chunks_per_s
                else None
            ),
            "cpu_per_request_x_nginx": (
                _ratio(run.cpu_ms_per_request("proxy"), ref.cpu_ms_per_request("proxy"))
                if ref is not None and run.contender != "nginx"
                else None
            ),
        }
        verdicts = tuple(
            Verdict(
                t,
                values[t.metric],
                None
                if values[t.metric] is not None
                else _missing(t.metric, base, ref, nginx_absent),
            )
            for t in targets.get(run.scenario, ())
            if t.concurrency == run.concurrency and run.contender == "gateway"
        )
        x_nginx = values.pop("cpu_per_request_x_nginx")
        if base is None and x_nginx is None and not verdicts:
            continue  # nothing to compare this run with
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


def idle_rss(
    runs: list[RunRecord], probe: IdleStreams | None, workers: int, target: Target = IDLE_RSS
) -> IdleRss | None:
    """The idle-RSS verdict: on the memory probe's gateway before it opened any stream,
    else on the first scenario stack's gateway before its load; None without a gateway."""
    rss: int | None
    if probe is not None:
        source, rss = "memory probe's gateway", probe.rss_before
    else:
        first = next((r for r in runs if r.proxy_rss_idle and r.contender == "gateway"), None)
        if first is None:
            return None
        source, rss = f"{first.scenario} stack's gateway", first.proxy_rss_idle
    unjudged = (
        None
        if workers == 1
        else f"the target is for one worker; this RSS is {workers} workers and their supervisor"
    )
    value = None if rss is None else rss / _MIB
    return IdleRss(source, rss, Verdict(target, value, unjudged))


def idle_streams_verdict(
    probe: IdleStreams | None, skipped: str, target: Target = IDLE_STREAMS
) -> Verdict:
    """The idle-open-streams verdict; ``skipped`` says why when the probe did not run.

    A probe that opened fewer streams than the target's fails it (its RSS is for
    fewer), unless the gateway's open-file limit is what stopped it: then, from
    :data:`EXTRAPOLATE_FROM` of the streams on, the RSS before plus the measured
    cost per stream times the target's streams is judged, and says so; below, n/a.
    """
    want = target.concurrency or 0
    if probe is None:
        return Verdict(target, None, skipped)
    value = probe.rss_open / _MIB
    if probe.requested < want:
        held = f"the probe held {probe.requested:,} streams; the target is for {want:,}"
        return Verdict(target, value, f"{held} (--idle-streams {want})")
    if probe.open >= want:
        return Verdict(target, value)
    if not probe.fd_capped:
        return Verdict(target, value, shortfall=f"only {probe.open:,} of {want:,} streams opened")
    capped = (
        f"{probe.open:,} of {want:,} open: the open-file limit ({probe.fd_limit:,},"
        f" {FDS_PER_STREAM} a stream) caps the gateway"
    )
    per_stream = probe.per_stream
    if per_stream is None or probe.open < EXTRAPOLATE_FROM * want:
        return Verdict(target, value, capped)
    estimate = (probe.rss_before + per_stream * want) / _MIB
    note = f"{capped}; extrapolated at {per_stream / 1024:.1f} KiB a stream"
    return Verdict(target, estimate, note=note)


def _fewest_workers(runs: tuple[RunRecord, ...], concurrency: int) -> RunRecord | None:
    same = [r for r in runs if r.concurrency == concurrency]
    return min(same, key=lambda r: r.workers) if same else None


def workers_verdict(
    runs: tuple[RunRecord, ...],
    usable_cores: int,
    load_cores: int | None,
    target: Target = WORKERS,
) -> Verdict:
    """``target.workers`` workers' chunks/s over one worker's, at the target's concurrency.

    Judged only where the gateway can be the bottleneck: a core per worker and at
    least one more for the emulator and load generator (``load_cores``: how many
    they were pinned to, None when not pinned), the one worker keeping its core
    busy, and the load not keeping its cores busy in the run with more workers.
    """
    at = {r.workers: r for r in runs if r.concurrency == target.concurrency}
    one, many = at.get(1), at.get(target.workers)
    if one is None or many is None:
        return Verdict(
            target,
            None,
            f"needs runs with 1 and {target.workers} workers at c={target.concurrency}"
            f" (--workers 1,{target.workers}, --concurrency including {target.concurrency})",
        )
    value = _ratio(many.chunks_per_s, one.chunks_per_s)
    need = target.workers + 1
    if usable_cores < need:
        return Verdict(
            target,
            value,
            f"needs ≥ {need} cores (one per worker, one for the load), this machine has"
            f" {usable_cores}",
        )
    load = (many.cores("emulator") or 0.0) + (many.cores("loadgen") or 0.0)
    if load_cores is not None and load >= SATURATED * load_cores:
        return Verdict(
            target,
            value,
            f"the emulator and load generator were the limit ({load:.2f} of their"
            f" {load_cores} cores busy)",
        )
    busy = one.cores("proxy")
    if busy is not None and busy < SATURATED:
        return Verdict(target, value, f"one worker was not the limit ({busy:.2f} cores busy)")
    return Verdict(target, value)
