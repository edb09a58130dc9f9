"""The nginx reference contender and the CPU accounting around it.

nginx is optional (``make bench-deps`` installs it): without it the bench
skips that contender with a note, so the tests that need the binary skip with
the same reason rather than fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.procs import Pinning, pinning
from bench.results import RunRecord, compare
from bench.runner import Options, decide_pinning
from bench.stack import nginx_argv, nginx_bin, write_nginx_config

NGINX = nginx_bin()
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (optional; `make bench-deps` installs it)"
)


@needs_nginx
def test_the_config_the_bench_writes_passes_nginx_t(tmp_path: Path) -> None:
    assert NGINX is not None
    config = write_nginx_config(port=18181, upstream_port=18182, workdir=tmp_path)
    argv = [*nginx_argv(NGINX, config), "-t"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr


def test_the_config_is_a_pass_through_with_upstream_keepalive(tmp_path: Path) -> None:
    text = write_nginx_config(port=18181, upstream_port=18182, workdir=tmp_path).read_text()
    for directive in (
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "server 127.0.0.1:18182;",
        "listen 127.0.0.1:18181;",
        "worker_processes 1;",
    ):
        assert directive in text
    assert "keepalive 1024;" in text
    assert str(tmp_path) in text  # nothing written outside the run's directory


def _options(*, pin: bool = True, workers: int = 1) -> Options:
    return Options(
        scenarios=(), concurrency=(1,), duration_s=1.0, warmup_s=0.0, pin=pin, workers=workers
    )


def test_pinning_is_said_and_skipped_when_it_cannot_help() -> None:
    none, line = decide_pinning(_options(pin=False))
    assert none is None and "--no-pin" in line
    none, line = decide_pinning(_options(workers=2))
    assert none is None and "--workers 2" in line
    pin, line = decide_pinning(_options())
    if pinning() is None:
        assert pin is None and "fewer than two" in line
    else:
        assert isinstance(pin, Pinning) and not pin.proxy & pin.load
        assert line.startswith("pinned:")


def _run(contender: str, proxy_cpu_s: float | None) -> RunRecord:
    cpu = {"loadgen": 0.5, "emulator": 0.25}
    if proxy_cpu_s is not None:
        cpu["proxy"] = proxy_cpu_s
    return RunRecord(
        scenario="latency",
        contender=contender,
        concurrency=200,
        window_s=10.0,
        requests_per_s=100.0,
        chunks_per_s=5000.0,
        chunks_per_request=50.0,
        ttft_ms=None,
        e2e_ms=None,
        errors=0,
        error_kinds={},
        error_samples=[],
        cpu_s=cpu,
        proxy_rss_idle=None,
        proxy_rss_peak=None,
    )


def test_cpu_per_request_and_chunk_and_the_ratio_to_nginx() -> None:
    direct, gateway, nginx = _run("direct", None), _run("gateway", 2.0), _run("nginx", 0.5)
    # 2 s over 1000 requests and 50,000 chunks
    assert gateway.cpu_ms_per_request("proxy") == pytest.approx(2.0)
    assert gateway.cpu_us_per_chunk("proxy") == pytest.approx(40.0)
    assert direct.cpu_ms_per_request("proxy") is None
    assert direct.cpu_ms_per_request("loadgen") == pytest.approx(0.5)
    by_contender = {c.contender: c for c in compare([direct, gateway, nginx], {})}
    assert by_contender["gateway"].cpu_per_request_x_nginx == pytest.approx(4.0)
    assert by_contender["nginx"].cpu_per_request_x_nginx is None
