"""Added time to first token over gRPC: ``python -m bench.grpc_ttft``.

The same closed-loop workload (``--concurrency`` open streams, default 10, for
``--duration`` seconds after a warm-up) goes, one path after the other, to:

1. ``direct``: HTTP straight to the emulated vLLM upstream (the ceiling);
2. ``gateway-http``: the gateway's OpenAI-compatible HTTP API, for reference;
3. ``gateway-grpc``: the gateway's ``meridian.v1.Inference/StreamChat``.

The upstream, the gateway and each load generator are separate processes
(``bench.procs``, ``bench.loadgen``), so a client's scheduling delays do not
land in the gateway's numbers. TTFT is measured from sending the request to
receiving the first chunk with text (for HTTP the first SSE event with
content, for gRPC the first ``ChatChunk`` with ``text``). The gRPC client
multiplexes its streams over one channel (one HTTP/2 connection), as an
internal service would; the HTTP clients use one connection per stream.

"Added" is a difference of percentiles of independent runs (``bench.stats``),
and includes the difference between the two client libraries (aiohttp vs
grpcio). The target is docs/design.md §8's: p50 ≤ 1 ms, p99 ≤ 5 ms at 10 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from time import perf_counter

import yaml

from bench.loadgen import LoadJob, run_in_process
from bench.procs import Child, cpu_seconds, free_port, wait_http_ok
from bench.runner import PROMPT, request_body
from bench.scenarios import LATENCY
from bench.stack import GATEWAY_MODEL, Upstream, gateway_config, start_stack
from bench.stats import Distribution

_READY_S = 30.0


@dataclass(slots=True)
class GrpcJob:
    address: str
    key: str
    max_tokens: int
    concurrency: int
    warmup_s: float
    duration_s: float


@dataclass(slots=True)
class GrpcResult:
    ttft_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PathResult:
    """One path's TTFT and the gateway's CPU per request over the measured window."""

    ttft: Distribution | None
    errors: dict[str, int]
    gateway_cpu_ms: float | None  # per request; None for the direct path


class _CpuWindow:
    """The gateway's CPU seconds between the load generator's t0 and t1 marks."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.at: dict[str, float] = {}

    def mark(self, which: str) -> None:
        if self.pid is not None:
            self.at[which] = cpu_seconds(self.pid)

    def per_request_ms(self, requests: int) -> float | None:
        if self.pid is None or requests <= 0 or len(self.at) < 2:
            return None
        return (self.at["end"] - self.at["start"]) * 1000.0 / requests


async def _grpc_load(job: GrpcJob, notify: Callable[[str], None]) -> GrpcResult:
    import grpc

    from meridian_proto.meridian.v1 import inference_pb2 as pb
    from meridian_proto.meridian.v1 import inference_pb2_grpc as pb_grpc

    result = GrpcResult()
    request = pb.ChatRequest(
        model=GATEWAY_MODEL,
        messages=[pb.Message(role="user", content=PROMPT)],
        sampling=pb.Sampling(max_tokens=job.max_tokens),
        include_usage=True,  # as the HTTP runs: the same events on every path
    )
    metadata = (("authorization", f"Bearer {job.key}"),)
    t0 = perf_counter() + job.warmup_s
    t1 = t0 + job.duration_s
    loop = asyncio.get_running_loop()
    loop.call_later(job.warmup_s, notify, "start")
    loop.call_later(job.warmup_s + job.duration_s, notify, "end")
    async with grpc.aio.insecure_channel(job.address) as channel:
        stub = pb_grpc.InferenceStub(channel)

        async def worker() -> None:
            while perf_counter() < t1:
                sent = perf_counter()
                first: float | None = None
                try:
                    async for chunk in stub.StreamChat(request, metadata=metadata):
                        if first is None and chunk.text:
                            first = perf_counter()
                except grpc.aio.AioRpcError as exc:
                    name = exc.code().name
                    result.errors[name] = result.errors.get(name, 0) + 1
                    continue
                if first is not None and t0 <= sent < t1:
                    result.ttft_ms.append((first - sent) * 1000.0)

        await asyncio.gather(*(worker() for _ in range(job.concurrency)))
    return result


def _grpc_child(job: GrpcJob, conn: Connection) -> None:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_grpc_load(job, lambda which: conn.send(("mark", which))))
            conn.send(("result", result))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_grpc(job: GrpcJob, on_mark: Callable[[str], None]) -> GrpcResult:
    """Run the gRPC load in a fresh process (like ``bench.loadgen``)."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_grpc_child, args=(job, sender), daemon=True)
    proc.start()
    sender.close()
    deadline = time.monotonic() + job.warmup_s + job.duration_s + 60.0
    try:
        while receiver.poll(max(0.0, deadline - time.monotonic())):
            kind, payload = receiver.recv()
            if kind == "mark":
                on_mark(payload)
            elif kind == "result":
                result: GrpcResult = payload
                return result
            else:
                raise RuntimeError(f"the gRPC load generator failed:\n{payload}")
        raise RuntimeError("the gRPC load generator did not finish in time")
    finally:
        receiver.close()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()


@dataclass(frozen=True, slots=True)
class _Gateway:
    child: Child
    http_url: str
    grpc_address: str
    key: str


def _start_gateway(workdir: Path, emu_port: int, env: dict[str, str]) -> _Gateway:
    """The gateway (``meridian serve``) with its gRPC listener on, in front of the emulator."""
    http, admin, grpc_port = free_port(), free_port(), free_port()
    key = "sk-bench-" + secrets.token_urlsafe(18)
    config = gateway_config(http, admin, emu_port, key)
    config["listen"]["grpc"] = f"127.0.0.1:{grpc_port}"
    path = workdir / "gateway-grpc.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    meridian = str(Path(sys.executable).parent / "meridian")
    child = Child("gateway", [meridian, "serve", "--config", str(path)], workdir / "gw.log", env)
    wait_http_ok(child, f"http://127.0.0.1:{http}/readyz", _READY_S)
    return _Gateway(child, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}", key)


def measure(args: argparse.Namespace) -> dict[str, PathResult]:
    upstream = Upstream(args.ttft_ms, args.itl_ms, args.max_tokens)
    env = dict(os.environ, MERIDIAN_ADMIN_TOKEN=secrets.token_urlsafe(24), PYTHONUNBUFFERED="1")
    out: dict[str, PathResult] = {}
    with (
        tempfile.TemporaryDirectory(prefix="meridian-grpc-bench-") as tmp,
        start_stack(upstream, Path(tmp), gateway=False, litellm=False) as stack,
    ):
        gw = _start_gateway(Path(tmp), stack.emulator_port, env)
        try:
            direct = stack.endpoints[0]
            auth = {"Authorization": f"Bearer {gw.key}"}
            paths = [
                ("direct", direct.url, direct.model, direct.headers, None),
                ("gateway-http", gw.http_url + "/v1/chat/completions", GATEWAY_MODEL, auth, gw),
            ]
            for name, url, model, headers, via in paths:
                job = LoadJob(
                    url=url,
                    headers={"Content-Type": "application/json", **headers},
                    body=request_body(model, upstream.max_tokens),
                    concurrency=args.concurrency,
                    warmup_s=args.warmup,
                    duration_s=args.duration,
                )
                cpu = _CpuWindow(via.child.pid if via else None)
                res = run_in_process(job, cpu.mark, lambda: None)
                out[name] = PathResult(
                    Distribution.of(res.ttft_ms), dict(res.errors), cpu.per_request_ms(res.started)
                )
            cpu = _CpuWindow(gw.child.pid)
            grpc_res = run_grpc(
                GrpcJob(
                    gw.grpc_address,
                    gw.key,
                    upstream.max_tokens,
                    args.concurrency,
                    args.warmup,
                    args.duration,
                ),
                cpu.mark,
            )
            out["gateway-grpc"] = PathResult(
                Distribution.of(grpc_res.ttft_ms),
                grpc_res.errors,
                cpu.per_request_ms(len(grpc_res.ttft_ms)),
            )
        finally:
            gw.child.stop()
    return out


def render(results: dict[str, PathResult], c: int) -> str:
    base = results["direct"].ttft
    lines = [f"time to first token at {c} concurrent streams (ms)", ""]
    lines.append(
        f"{'path':<14}{'n':>6}{'p50':>8}{'p99':>8}{'+p50':>8}{'+p99':>8}{'gw CPU/req':>12}  errors"
    )
    for name, r in results.items():
        if r.ttft is None:
            lines.append(f"{name:<14}{'no samples':>16}  {r.errors}")
            continue
        added = ("", "")
        if base is not None and name != "direct":
            added = (f"{r.ttft.p50 - base.p50:+.2f}", f"{r.ttft.p99 - base.p99:+.2f}")
        cpu = "" if r.gateway_cpu_ms is None else f"{r.gateway_cpu_ms:.2f} ms"
        lines.append(
            f"{name:<14}{r.ttft.n:>6}{r.ttft.p50:>8.2f}{r.ttft.p99:>8.2f}"
            f"{added[0]:>8}{added[1]:>8}{cpu:>12}  {r.errors or ''}"
        )
    grpc_dist = results["gateway-grpc"].ttft
    if base is not None and grpc_dist is not None:
        p50, p99 = grpc_dist.p50 - base.p50, grpc_dist.p99 - base.p99
        verdict = "met" if p50 <= 1.0 and p99 <= 5.0 else "missed"
        lines += ["", f"added TTFT over gRPC: p50 {p50:+.2f} ms, p99 {p99:+.2f} ms "]
        lines[-1] += f"(target p50 <= 1 ms, p99 <= 5 ms: {verdict})"
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    up = LATENCY.upstream
    p = argparse.ArgumentParser(prog="python -m bench.grpc_ttft", description=__doc__)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per path")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--ttft-ms", type=float, default=up.ttft_ms, help="upstream TTFT")
    p.add_argument("--itl-ms", type=float, default=up.itl_ms, help="upstream inter-token gap")
    p.add_argument("--max-tokens", type=int, default=up.max_tokens)
    args = p.parse_args(argv)
    started = time.monotonic()
    results = measure(args)
    print(render(results, args.concurrency))
    print(
        f"\n({time.monotonic() - started:.0f} s; upstream TTFT {args.ttft_ms:g} ms, "
        f"ITL {args.itl_ms:g} ms, {args.max_tokens} tokens)"
    )
    return 1 if any(r.errors for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
