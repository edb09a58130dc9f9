"""``meridian usage`` at the terminal: the --window argument and the table, whatever
the names and input."""

from __future__ import annotations

import argparse
import io

import pytest
from rich.console import Console

from gateway.cli.main import main
from gateway.cli.usage import render, window


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("3600s", 3600), ("60", 60), ("1d", 86400)]
)
def test_a_window_in_seconds_minutes_hours_or_a_day(text: str, seconds: int) -> None:
    assert window(text) == seconds


@pytest.mark.parametrize(
    "text", ["0", "0s", "59s", "1e9", "-5m", "1h30m", "25h", "١h", "٣٦٠٠", "3600.0", "", "h"]
)
def test_a_bad_window_is_refused_naming_what_it_must_be(text: str) -> None:
    # Unicode digits are refused as by the admin API (which refuses "٣٦٠٠"), not
    # read as a number the user may not have meant.
    with pytest.raises(argparse.ArgumentTypeError, match="from 1m to 24h"):
        window(text)


@pytest.mark.parametrize("argv", [["--window", "١h"], ["--window=-5m"], ["--window", "1h30m"]])
def test_a_bad_window_is_a_usage_error_before_any_call(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["usage", "--admin-url", "http://127.0.0.1:9", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --window" in err and "Traceback" not in err


def test_names_are_shown_as_they_are_never_as_markup() -> None:
    row = {"requests": 1, "prompt_tokens": 2, "completion_tokens": 3, "spend_usd": 0.5}
    body = {
        "from": 0,
        "to": 3600,
        "rows": [
            {"tenant": "[/]", "model": "[red]m[/red]", **row},
            {"tenant": "acme", "model": "meta/llama-3", **row},
        ],
        "totals": row,
    }
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render(body))
    text = out.getvalue()
    assert "[/]" in text and "[red]m[/red]" in text and "meta/llama-3" in text
