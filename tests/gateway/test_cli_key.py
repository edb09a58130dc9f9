"""``meridian key hash``: a key on stdin to the ``sha256:`` line the config takes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.config.model import parse
from tests.conftest import sha

MERIDIAN = [sys.executable, "-m", "gateway.cli.main", "key", "hash"]
KEY = "sk-live-7Qe9"


def meridian(*args: str, stdin: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MERIDIAN, *args],
        input=stdin.decode("latin-1"),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("stdin", [KEY.encode(), f"{KEY}\n".encode(), f"  {KEY}\r\n".encode()])
def test_prints_the_digest_the_config_takes(stdin: bytes) -> None:
    done = meridian(stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert done.stdout == sha(KEY) + "\n" and KEY not in done.stdout + done.stderr
    line = done.stdout.strip()
    config = f"""
listen: {{http: "127.0.0.1:0", admin: "127.0.0.1:0", grpc: null}}
regions: [{{name: "aws:us-east-1", tags: [US]}}]
models: [{{name: m, versions: {{v1: 100}}}}]
backends: [{{name: b, model: m, version: v1, region: "aws:us-east-1", provider: vllm,
  url: "http://127.0.0.1:1", served_model: s}}]
tenants: [{{name: t, api_keys: ["{line}"]}}]
"""
    assert parse(config).tenants[0].api_keys[0].ref == line


@pytest.mark.parametrize(
    ("stdin", "words"), [(b"", "no key on stdin"), (b" \n\n", "no key"), (b"a b\n", "one key")]
)
def test_no_key_or_two_is_one_line_and_exit_1(stdin: bytes, words: str) -> None:
    done = meridian(stdin=stdin)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and words in done.stderr


def test_a_key_given_as_an_argument_is_refused_and_never_echoed() -> None:
    done = meridian(KEY, stdin=b"")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "stdin" in done.stderr
    assert KEY not in done.stderr
