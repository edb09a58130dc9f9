"""The lab's results as rich tables (one per scenario) and as JSON."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_HIDDEN = {"errors"}


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ", ".join(_cell(x) for x in v) or "–"
    return str(v)


def render(results: dict[str, Any], console: Console) -> None:
    meta = results.get("lab", {})
    console.print(
        f"[bold]geo lab[/bold]: {meta.get('regions')} · {meta.get('replicas')} gateway replica(s)"
        f" per region · primary {meta.get('primary')} · read endpoint field:"
        f" {meta.get('read_field') or 'none in this config (every replica reads the primary)'}"
        f" · leases.expected_replicas {meta.get('leases_expected_replicas') or '–'}"
        f" · code {meta.get('code')}"
    )
    for name, res in results.get("scenarios", {}).items():
        rows = res.get("rows", [])
        if not rows:
            continue
        cols = [c for c in rows[0] if c not in _HIDDEN]
        for r in rows[1:]:
            cols += [c for c in r if c not in cols and c not in _HIDDEN]
        table = Table(title=name, title_justify="left", show_lines=False)
        for c in cols:
            table.add_column(c.replace("_", " "), overflow="fold")
        for r in rows:
            table.add_row(*(_cell(r.get(c)) for c in cols))
        console.print(table)
        for note in res.get("notes", []):
            console.print(f"  [dim]{note}[/dim]")
        for r in rows:
            for e in r.get("errors", []) or []:
                console.print(f"  [yellow]{r['region']}: {e}[/yellow]")
    targets = [t for res in results.get("scenarios", {}).values() for t in res.get("targets", [])]
    if targets:
        table = Table(title="issue 15 targets", title_justify="left")
        table.add_column("target", overflow="fold")
        table.add_column("measured")
        table.add_column("holds")
        for t in targets:
            verdict = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "–"}[t["holds"]]
            table.add_row(t["target"], t["measured"], verdict)
        console.print(table)
