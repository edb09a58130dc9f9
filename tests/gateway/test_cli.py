"""The ``meridian`` command: one-line errors, non-zero exits, a real serve process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import GLOBAL_KEY, MODEL, sha

MERIDIAN = [sys.executable, "-m", "gateway.cli.main"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MERIDIAN, *args], capture_output=True, text=True, timeout=30, env=env)


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions:\n  - name: nowhere\n")
    result = run("serve", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("meridian: config rejected:")
    assert "Traceback" not in result.stderr
    assert f"{bad}:2: regions.0.name" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run("serve", "--config", str(tmp_path / "none.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_unknown_command_exits_non_zero() -> None:
    result = run("frobnicate")
    assert result.returncode != 0 and "invalid choice" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, path: str, deadline: float) -> bytes:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                return c.recv(4096)
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


@pytest.mark.timeout(60)
def test_serve_process_answers_then_drains_on_sigterm(tmp_path: Path) -> None:
    emu_port, http_port, admin_port = _free_port(), _free_port(), _free_port()
    emulator = subprocess.Popen([*MERIDIAN, "emulate", "vllm", "--port", str(emu_port)])
    config = tmp_path / "meridian.yaml"
    config.write_text(
        f"""
listen: {{http: "127.0.0.1:{http_port}", admin: "127.0.0.1:{admin_port}", grpc: null}}
admin: {{token: "env:TEST_ADMIN"}}
regions: [{{name: "onprem:fra1", tags: [EU]}}]
models: [{{name: {MODEL}, versions: {{v1: 100}}}}]
backends:
  - {{name: fra, model: {MODEL}, version: v1, region: "onprem:fra1", provider: vllm,
      url: "http://127.0.0.1:{emu_port}", served_model: meta-llama/Llama-3.1-8B-Instruct}}
tenants: [{{name: t, api_keys: ["{sha(GLOBAL_KEY)}"]}}]
"""
    )
    env = {**os.environ, "TEST_ADMIN": "secret"}
    gateway = subprocess.Popen(
        [*MERIDIAN, "serve", "--config", str(config)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        _wait_http(emu_port, "/health", deadline)
        # The listeners accept before the gateway is ready: wait for a 200, not any answer.
        while b" 200 " not in _wait_http(http_port, "/readyz", deadline):
            assert time.monotonic() < deadline, "/readyz never answered 200"
            time.sleep(0.05)
        body = f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":3}}'
        with socket.create_connection(("127.0.0.1", http_port), timeout=5) as c:
            c.sendall(
                (
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    f"Authorization: Bearer {GLOBAL_KEY}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
                ).encode()
            )
            answer = b""
            while chunk := c.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"x-meridian-backend: fra" in answer.lower()
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=20) == 0
        assert "draining" in (gateway.stderr.read() if gateway.stderr else "")
    finally:
        for proc in (gateway, emulator):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
