"""Child processes of the benchmark: start, wait for readiness, observe, stop.

Every process under test runs in its own session (process group), so stopping
it also stops anything it forked (``meridian serve --workers N``) and nothing
else. Output goes to a log file, never a pipe nobody drains (a full pipe
would stall the child mid-benchmark); its tail is shown when a start fails.

CPU time and memory come from ``/proc`` and cover the process and all its
descendants: ``utime + stime`` from ``/proc/PID/stat`` (clock ticks) and
``VmRSS`` from ``/proc/PID/status``. Whole-machine busy and steal time come
from ``/proc/stat``, to show what else was running.

With two or more usable cores the processes are pinned (:class:`Pinning`):
the proxy under test on one core, the upstream emulator and the load
generator on another, so the proxy's CPU per request is not inflated by
competing with its own load for a core. A child is pinned before it execs
(inherited by anything it forks).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_POLL_S = 0.05


class StartError(RuntimeError):
    """A child process exited or never became ready; the message holds its log tail."""


_ISSUED: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago and that this process has not handed out.

    The kernel picks it, but a port is only reserved while bound: a child given one may not
    have bound it yet when the next is picked, and Linux hands the same port out again
    (about 125 repeats in 2000 picks on one address). Ports already given are skipped.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if (host, port) not in _ISSUED:
            _ISSUED.add((host, port))
            return port


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which cores the proxy under test gets, and which its load (emulator + client) gets."""

    proxy: frozenset[int]
    load: frozenset[int]

    def describe(self) -> str:
        return (
            f"pinned: proxy on CPU {_cpus(self.proxy)}, emulator and load generator"
            f" on CPU {_cpus(self.load)}"
        )


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def pinning() -> Pinning | None:
    """One core for the proxy, another for its load, if this process may use two or more."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return None
    return Pinning(proxy=frozenset(usable[:1]), load=frozenset(usable[1:2]))


class Child:
    """One started process, its log file, and how to stop it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        cpus: frozenset[int] | None = None,
    ):
        self.name = name
        self.log_path = log_path

        def pin() -> None:  # runs in the child between fork and exec
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        with log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=log_path.parent,
                start_new_session=True,
                preexec_fn=pin if cpus is not None else None,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL it if still there after ``grace_s``."""
        if self.popen.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout=grace_s)

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group was created by start_new_session, so its id is our child's pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


def wait_http_ok(child: Child, url: str, deadline_s: float) -> None:
    """Poll ``GET url`` until it answers 200; fail fast if the child exits."""
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartError(
                f"{child.name} exited with status {child.popen.returncode} before it was ready;"
                f" log {child.log_path}:\n{child.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(_POLL_S)
    raise StartError(
        f"{child.name} not ready at {url} within {deadline_s:.0f}s ({last});"
        f" log {child.log_path}:\n{child.log_tail()}"
    )


def _parents() -> dict[int, int]:
    """pid -> ppid for every process visible in /proc."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        out[int(entry.name)] = int(fields[1])
    return out


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found = [pid]
    for p in found:
        found.extend(children.get(p, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds consumed so far by ``pid`` and its descendants."""
    ticks = 0
    for p in family(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_bytes()
        except OSError:
            continue
        # Fields after "(comm)": state is field 3, utime 14 and stime 15 (1-based).
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks * _TICK_S


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine, summed over CPUs, from /proc/stat.

    Busy is user + nice + system + irq + softirq; a benchmark compares it with
    its own processes' time to see whether something else used the CPUs.
    """
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq) * _TICK_S, steal * _TICK_S


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants (sum of VmRSS)."""
    total = 0
    for p in family(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total
