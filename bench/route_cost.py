"""Cost of one routing decision, in microseconds (docs/design.md §8, issue 3).

Runs the real router over a snapshot of N backends in several regions, with
live signals (warm estimates, in-flight counts, some unavailable), for a mix
of requests: unrestricted and EU-only, short and long prompts, with and
without a self-hosted pool (prefix affinity). Prints per-plan p50/p99 and the
mean. ``python -m bench.route_cost --backends 50``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from failover.executor import Attempt
from failover.health import BackendHealth
from regions.errors import BackendError, FailureClass
from regions.inventory import BackendSpec, Price, ProviderKind, Region
from regions.request import GenerationRequest, Kind, Message, Residency
from routing.router import Router
from routing.snapshot import RoutingSnapshot

REGIONS = [
    Region("aws:us-east-1", frozenset({"US"})),
    Region("aws:eu-west-1", frozenset({"EU", "IE"})),
    Region("gcp:europe-west4", frozenset({"EU", "NL"})),
    Region("gcp:us-central1", frozenset({"US"})),
    Region("onprem:fra1", frozenset({"EU", "DE"})),
]
KINDS = [ProviderKind.SAGEMAKER, ProviderKind.VERTEX, ProviderKind.VLLM]


def world(n: int, rng: random.Random) -> tuple[RoutingSnapshot, BackendHealth]:
    """N backends over five regions, with the real health registry as the signal
    source (breakers, ejection, estimates), warmed with samples; ~10% held open."""
    backends = []
    for i in range(n):
        region = REGIONS[i % len(REGIONS)]
        kind = ProviderKind.VLLM if region.cloud == "onprem" else KINDS[i % 2]
        backends.append(
            BackendSpec(
                f"b{i}",
                "m",
                "v1" if i % 4 else "v2",
                region,
                kind,
                "http://x",
                "s",
                price=Price(rng.uniform(0.05, 1), rng.uniform(0.1, 3)),
            )
        )
    snap = RoutingSnapshot.build(1, {"m": {"v1": 90, "v2": 10}}, tuple(backends))
    health = BackendHealth(clock=lambda: 0.0)
    health.track(backends)
    for spec in backends:
        for _ in range(rng.randint(0, 30)):
            permit = health.admit(spec, 0.0)
            if permit is None:
                break
            start = rng.uniform(0, 5)
            attempt = Attempt(spec, start, permit=permit)
            attempt.first_token = start + rng.uniform(0.05, 0.4)
            attempt.tokens = 50
            attempt.ended = attempt.first_token + 1.0
            ok = rng.random() > 0.1
            attempt.failure = None if ok else BackendError(FailureClass.SERVER, "500")
            health.attempt_finished(attempt)
    return snap, health


def requests(rng: random.Random) -> list[GenerationRequest]:
    eu = Residency(frozenset({"EU"}))
    out = []
    for i in range(200):
        prompt = "You are helpful. " * rng.choice([1, 10, 100]) + f"question {i}"
        out.append(
            GenerationRequest(
                Kind.CHAT,
                "m",
                str(i),
                messages=(Message("user", prompt),),
                residency=eu if i % 2 else Residency(),
                affinity_key=f"user-{i}",
            )
        )
    return out


def measure(n: int, rounds: int = 20) -> list[float]:
    rng = random.Random(42)
    snap, signals = world(n, rng)  # signals: the real BackendHealth
    router = Router(random.Random(1))
    reqs = requests(rng)
    samples = []
    for _ in range(rounds):
        for req in reqs:
            t0 = time.perf_counter_ns()
            router.plan(snap, req, signals=signals, now=0.0, cost_weight=0.5)
            samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backends", type=int, nargs="+", default=[10, 50, 200])
    args = p.parse_args()
    print(f"{'backends':>8} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8}")
    for n in args.backends:
        s = sorted(measure(n))
        p50, p99 = s[len(s) // 2], s[int(len(s) * 0.99)]
        print(f"{n:>8} {p50:>8.1f} {p99:>8.1f} {statistics.fmean(s):>8.1f}")


if __name__ == "__main__":
    main()
