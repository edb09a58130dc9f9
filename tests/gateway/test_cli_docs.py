"""docs/cli.md shows what the commands print: a few documented commands run
against ``meridian demo`` (in process, on free ports) and their output is
compared with the docs, modulo revisions; plus ``--version`` and the bash
completion script (issue 19 item 5)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.cli.completion import script
from gateway.cli.demo import ADMIN_TOKEN, Demo
from gateway.cli.main import main, parser

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

# Documented commands whose output does not depend on load, time or ids.
CHECKED = [
    "meridian weights set llama-3.1-8b-instruct v3=10",
    "meridian weights set llama-3.1-8b-instruct v1=0 v2=0",
    "meridian status --token wrong",
    "meridian status --admin-url http://127.0.0.1:1",
    "meridian status --admin-url 127.0.0.1:9090",
    "meridian demo --http localhost",
    "meridian region drain aws:eu-west-1",
    "meridian region drain aws:nowhere",
    "meridian region undrain aws:eu-west-1",
    "meridian region dial aws:eu-west-1 250",
    "meridian canary start llama-3.1-8b-instruct --to v2 --steps 50,25",
    "meridian canary start llama-3.1-8b-instruct --to v2 --require-shadow",
    "meridian weights set llama-3.1-8b-instruct v1=90 v2=10",
    "meridian usage --window 2w",  # `meridian usage` itself shows the clock and the traffic
]


def documented() -> dict[str, list[str]]:
    """``$ meridian …`` lines of docs/cli.md's examples → the lines shown under them
    (the first time each command appears)."""
    shown: dict[str, list[str]] = {}
    for block in DOCS.read_text().split("```")[1::2]:
        command: str | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                command = line[2:].split("  #")[0].strip()
                if command in shown:
                    command = None
                else:
                    shown[command] = []
            elif command is not None and line.strip() and line != "…":
                shown[command].append(line)
    return shown


def _masked(lines: list[str]) -> list[str]:
    return [re.sub(r"revision \d+", "revision N", line.rstrip()) for line in lines]


def test_the_checked_commands_are_documented() -> None:
    assert set(CHECKED) <= set(documented())


@pytest.mark.timeout(60)
async def test_documented_output_is_what_the_commands_print(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = Demo("127.0.0.1:0", "127.0.0.1:0", None)
    gateway = await demo.start()
    monkeypatch.setenv("MERIDIAN_ADMIN_URL", gateway.admin_url)
    monkeypatch.setenv("MERIDIAN_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    docs = documented()
    try:
        for command in CHECKED:

            def call(argv: list[str] = command.split()[1:]) -> None:
                try:
                    main(argv)
                except SystemExit as exc:  # argparse's usage error
                    assert exc.code == 2

            await asyncio.to_thread(call)
            captured = capsys.readouterr()
            printed = (captured.out + captured.err).splitlines()
            assert _masked(printed) == _masked(docs[command]), command
    finally:
        await demo.stop()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert re.fullmatch(r"meridian \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_commands_verbs_and_options() -> None:
    def complete(*words: str) -> set[str]:
        line = " ".join(f"'{w}'" for w in ("meridian", *words))
        program = (
            f"{script(parser())}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; _meridian; "
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        run = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        return set(run.stdout.split())

    assert complete("can") == {"canary"}
    assert complete("config", "") == {"check", "reload", "--help"}
    assert "--require-shadow" in complete("canary", "start", "m", "--re")
    assert complete("emulate", "v") == {"vllm", "vertex"}
