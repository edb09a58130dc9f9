"""``python -m bench --workers N``: the gateway it starts must accept the flag."""

from __future__ import annotations

from pathlib import Path

from bench.procs import family
from bench.stack import Upstream, start_stack


def test_a_stack_with_two_workers_starts(tmp_path: Path) -> None:
    # --workers needs a store the workers share: the bench's config names one
    upstream = Upstream(ttft_ms=0, itl_ms=0, max_tokens=1)
    with start_stack(upstream, tmp_path, gateway=True, litellm=False, workers=2) as stack:
        gateway = stack.endpoint("gateway")
        assert gateway is not None and gateway.pid is not None
        assert len(family(gateway.pid)) >= 3  # the parent and its two workers
