"""Every command of docs/cli.md, given bad input: one line on stderr, never a
traceback, and the exit code docs/cli.md gives (issue 19)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app.server import Gateway
from gateway.cli.main import main
from tests.conftest import ADMIN_TOKEN, MODEL, EmulatorFactory, GatewayFactory, gateway_config

MERIDIAN = [sys.executable, "-m", "gateway.cli.main"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
NOWHERE = "http://127.0.0.1:1"

# (args, exit code, words in the one line); "{admin}" is the test gateway's admin URL.
CASES: list[tuple[tuple[str, ...], int, str]] = [
    (("--bogus", "status"), 2, "unrecognized arguments"),
    ((), 2, "required: COMMAND"),
    (("serve",), 2, "required: --config"),
    (("serve", "--config", "/nonexistent.yaml"), 2, "cannot read"),
    (("serve", "--config", "x.yaml", "--workers", "0"), 2, "--workers"),
    (("demo", "--http", "localhost"), 2, "expected HOST:PORT"),
    (("demo", "--admin", "127.0.0.1:99999"), 2, "expected HOST:PORT"),
    (("demo", "--grpc", "nohost"), 2, "expected HOST:PORT"),
    (("demo", "--redis", "localhost:6379"), 1, "redis:// or rediss://"),
    (("emulate", "vllm"), 2, "required: --port"),
    (("emulate", "vllm", "--port", "99999"), 2, "expected a port"),
    (("emulate", "tgi", "--port", "0"), 2, "invalid choice"),
    (("emulate", "sagemaker", "--port", "0", "--endpoint", "x"), 1, "NAME=vllm|tgi|lmi"),
    (("emulate", "vllm", "--port", "0", "--endpoint", "x"), 1, "sagemaker and vertex"),
    (("config",), 2, "required: VERB"),
    (("config", "check", "/nonexistent.yaml"), 2, "/nonexistent.yaml: cannot read"),
    (("config", "check", "/nonexistent.yaml", "--against", "notaurl"), 2, "cannot read"),
    (("config", "reload"), 1, "409: this gateway was not started from a config file"),
    (("completion", "zsh"), 2, "invalid choice"),
    (("status", "--admin-url", "notaurl"), 1, "bad admin URL 'notaurl'"),
    (("status", "--admin-url", "127.0.0.1:9090"), 1, "expected http://HOST:PORT"),
    (("status", "--admin-url", "http://h:99999"), 1, "bad admin URL"),
    (("status", "--admin-url", NOWHERE), 1, "cannot reach the admin API"),
    (("status", "--token", "wrong"), 1, "401: admin token required"),
    (("top", "--interval", "nan"), 1, "bad --interval"),
    (("top", "--interval", "0"), 1, "bad --interval"),
    (("top", "--once", "--admin-url", NOWHERE), 1, "cannot reach"),
    (("audit", "--limit", "-1"), 1, "bad --limit"),
    (("audit", "--limit", "many"), 2, "invalid int value"),
    (("usage", "--window", "2w"), 2, "argument --window: expected a window from 1m to 24h"),
    (("usage", "--window", "0s"), 2, "argument --window"),
    (("usage", "--admin-url", NOWHERE), 1, "cannot reach"),
    (("weights",), 2, "required: VERB"),
    (("weights", "show", "nope"), 1, "404: unknown model 'nope'"),
    (("weights", "set", MODEL, "v1=-5"), 1, "bad weight 'v1=-5'"),
    (("weights", "set", MODEL), 2, "required: VERSION=WEIGHT"),
    (("region", "drain", "mars:base"), 1, "404: unknown region"),
    (("region", "undrain", "mars:base"), 1, "404: unknown region"),
    (("region", "dial", "aws:us-east-1", "150"), 1, "bad dial '150'"),
    (("region", "list", "--admin-url", NOWHERE), 1, "cannot reach"),
    (("canary", "--help", "x"), 0, ""),  # argparse prints the help and exits 0
    (("canary", "start", MODEL), 2, "required: --to"),
    (("canary", "start", MODEL, "--to", "v2", "--interval", "soon"), 1, "bad interval 'soon'"),
    (("canary", "start", MODEL, "--to", "v2", "--max-error-delta", "inf"), 1, "finite"),
    (("canary", "start", MODEL, "--to", "v2", "--min-requests", "x"), 2, "invalid int"),
    (("canary", "status", MODEL), 1, "404: no canary has run"),
    (("canary", "promote", MODEL), 1, "404: no canary has run"),
    (("canary", "abort", MODEL), 1, "404: no canary has run"),
    (("shadow", "start", MODEL, "--to", "v2", "--share", "150"), 1, "bad share"),
    (("shadow", "start", MODEL, "--to", "v2", "--duration=-1m"), 1, "bad interval"),
    (("shadow", "status", "nope"), 1, "404"),
    (("shadow", "stop", "nope"), 1, "404"),
    (("replicate", "foo", "--to", "x"), 2, "expected MODEL@VERSION"),
    (("replicate", f"{MODEL}@v1"), 2, "required: --to"),
    (("replicas", "nope"), 1, "404: unknown model 'nope'"),
    (("route", "explain", MODEL, "--max-tokens", "-5"), 1, "bad --max-tokens -5"),
    (("route", "explain", MODEL, "--tenant", "nobody"), 1, "404"),
    (("route", "explain", "nope"), 1, "404: The model `nope` does not exist"),
    (("key", "hash", "sk-in-the-shell-history"), 2, "never as an argument"),
]


def _commands_in_docs() -> set[str]:
    """``meridian WORD [VERB]`` of the synopsis block at the top of docs/cli.md."""
    block = DOCS.read_text().split("```")[1]
    found: set[str] = set()
    for line in block.splitlines():
        match = re.match(r"meridian (\w+)(?: ([a-z|]+))?", line.strip())
        if match is None:
            continue
        verbs = (
            match[2].split("|") if match[2] and match[1] not in ("emulate", "completion") else [""]
        )
        found |= {f"{match[1]} {v}".strip() for v in verbs}
    return found


def _command_of(args: tuple[str, ...]) -> str:
    words = [a for a in args if not a.startswith("-")]
    if not words:
        return ""
    with_verb = {"weights", "region", "canary", "shadow", "route", "config", "key"}
    return " ".join(words[:2]) if words[0] in with_verb and len(words) > 1 else words[0]


def test_every_documented_command_has_a_bad_input_case() -> None:
    documented = _commands_in_docs()
    assert {"serve", "demo", "status", "canary start", "route explain"} <= documented
    covered = {_command_of(args) for args, _, _ in CASES}
    assert documented - covered == set()


@pytest.fixture
async def gateway(emulators: EmulatorFactory, gateways: GatewayFactory) -> Gateway:
    em = await emulators()
    return await gateways(
        gateway_config(
            [("us-v1", "aws:us-east-1", "v1", em.url), ("us-v2", "aws:us-east-1", "v2", em.url)],
            versions={"v1": 100, "v2": 0},
        )
    )


@pytest.fixture
def no_grpc_noise(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRPC_VERBOSITY", "NONE")  # main() sets it when unset; keep it scoped
    yield


@pytest.mark.parametrize(("args", "code", "words"), CASES, ids=lambda v: repr(v)[:60])
async def test_bad_input_is_one_line_with_the_documented_exit(
    gateway: Gateway,
    capsys: pytest.CaptureFixture[str],
    no_grpc_noise: None,
    args: tuple[str, ...],
    code: int,
    words: str,
) -> None:
    argv = list(args)
    local = ("serve", "demo", "emulate", "completion", "key")
    if len(args) > 1 and args[0] not in local and args[:2] != ("config", "check"):
        if "--admin-url" not in args:
            argv.append(f"--admin-url={gateway.admin_url}")
        if "--token" not in args:
            argv.append(f"--token={ADMIN_TOKEN}")

    def call() -> int:
        try:
            return main(argv)
        except SystemExit as exc:  # argparse: usage errors, --help
            if isinstance(exc.code, int):
                return exc.code
            print(exc.code, file=sys.stderr)  # what the interpreter prints for SystemExit(str)
            return 1

    got = await asyncio.to_thread(call)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert got == code, err
    if code:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(("meridian", "/")), err
        assert words in lines[0]


def _busy() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def _config(tmp_path: Path, http: str, admin: str, grpc: str) -> Path:
    path = tmp_path / "meridian.yaml"
    path.write_text(
        f"""
listen: {{http: "{http}", admin: "{admin}", grpc: "{grpc}"}}
admin: {{token: "sha256:{"0" * 64}"}}
regions: [{{name: "onprem:fra1", tags: [EU]}}]
models: [{{name: m, versions: {{v1: 100}}}}]
backends:
  - {{name: b, model: m, version: v1, region: "onprem:fra1", provider: vllm,
     url: "http://127.0.0.1:1", served_model: m}}
tenants: [{{name: t, api_keys: ["sha256:{"1" * 64}"]}}]
"""
    )
    return path


@pytest.mark.parametrize("listener", ["http", "admin", "grpc"])
def test_busy_port_is_one_error_line_and_no_asyncio_noise(tmp_path: Path, listener: str) -> None:
    busy = _busy()
    port = busy.getsockname()[1]
    taken = f"127.0.0.1:{port}"
    addresses = {"http": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": "127.0.0.1:0"}
    addresses[listener] = taken
    try:
        config = _config(tmp_path, **addresses)
        serve = subprocess.run(
            [*MERIDIAN, "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        demo = subprocess.run(
            [*MERIDIAN, "demo", *(f"--{k}={v}" for k, v in addresses.items())],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        busy.close()
    for run in (serve, demo):
        assert run.returncode == 1, run.stderr
        errors = [line for line in run.stderr.splitlines() if " INFO " not in line]
        assert len(errors) == 1 and errors[0].startswith("meridian: "), run.stderr
        assert str(port) in errors[0]


@pytest.mark.timeout(60)
async def test_top_exits_130_on_ctrl_c(gateway: Gateway) -> None:
    master, slave = os.openpty()  # a terminal: rich draws the live table at once
    proc = await asyncio.create_subprocess_exec(
        *MERIDIAN,
        "top",
        f"--admin-url={gateway.admin_url}",
        f"--token={ADMIN_TOKEN}",
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    try:
        drawn = await asyncio.wait_for(asyncio.to_thread(os.read, master, 4096), 30)
        assert drawn  # the first frame is on the screen
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        os.close(master)
    assert proc.returncode == 130 and b"Traceback" not in err
