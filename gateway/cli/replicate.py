"""``meridian replicate MODEL@VERSION --to REGION[,REGION...]``: copy weights, then follow.

The job runs inside the gateway replica behind ``--admin-url`` (why: see
docs/replication.md); this command starts it, draws one progress bar per
region from the job's live progress, and ends with a summary table. The exit
status is 0 only if every region ended ``verified``. Ctrl-C cancels the job
(finished files stay verified, a new run resumes from them); ``--detach``
leaves it running and prints its id. ``meridian replicas MODEL`` shows the
resulting status per region.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from gateway.cli.admin_client import AdminClient
from regions.replication.status import human_bytes

if TYPE_CHECKING:
    from rich.progress import TaskID

POLL_S = 0.5


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    rep = sub.add_parser(
        "replicate", parents=[common], help="copy a model version's weights to regions, verified"
    )
    rep.add_argument("target", metavar="MODEL@VERSION")
    rep.add_argument("--to", required=True, metavar="REGION[,REGION...]", help="destinations")
    rep.add_argument("--from", dest="source", metavar="REGION", help="copy from this region")
    rep.add_argument("--reverify", action="store_true", help="re-hash every destination file")
    rep.add_argument("--detach", action="store_true", help="start the job and return")
    rep.set_defaults(func=run_replicate)


def _usage(message: str) -> int:
    print(f"meridian: {message}", file=sys.stderr)
    return 2


def run_replicate(args: argparse.Namespace) -> int:
    model, at, version = args.target.partition("@")
    if not at or not model or not version or "@" in version:
        return _usage(f"expected MODEL@VERSION, got {args.target!r}")
    regions = [r.strip() for r in args.to.split(",")]
    if not all(regions):
        return _usage(f"--to: expected REGION[,REGION...], got {args.to!r}")
    client = AdminClient(args.admin_url, args.token)
    body: dict[str, Any] = {"model": model, "version": version, "to": regions}
    if args.source:
        body["from"] = args.source
    if args.reverify:
        body["reverify"] = True
    job = client.send("POST", "/admin/v1/replications", body)
    path = f"/admin/v1/replications/{job['job']}"
    if args.detach:
        if args.json:
            print(json.dumps(job, indent=2))
        else:
            print(
                f"started {job['job']} on {job['replica']}; follow with: meridian replicas {model}"
            )
        return 0
    try:
        job = _follow(client, path, job, quiet=args.json)
    except KeyboardInterrupt:
        job = client.send("DELETE", path)
        if job["state"] == "cancelled":
            print("interrupted: the job is cancelled; verified files stay, a new run resumes")
            _summary(job)
            return 130
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        _summary(job)
    return 0 if job["state"] == "done" else 1


def _follow(client: AdminClient, path: str, job: dict[str, Any], *, quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if quiet:
        while job["state"] == "running":
            time.sleep(POLL_S)
            job = client.get(path)
        return job
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bars:
        tasks: dict[str, TaskID] = {}
        while True:
            for r in job["regions"]:
                label = (
                    f"{r['region']:<20} {r['status']:<8} {r['files_done']}/{r['files_total']} files"
                )
                if r["region"] not in tasks:
                    tasks[r["region"]] = bars.add_task(label, total=None)
                total = r["bytes_total"] or None
                bars.update(
                    tasks[r["region"]], description=label, total=total, completed=r["bytes_done"]
                )
            if job["state"] != "running":
                return job
            time.sleep(POLL_S)
            job = client.get(path)


def _summary(job: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = (
        f"{job['model']}@{job['version']} from {job['source']} — job {job['job']}: {job['state']}"
    )
    table = Table(
        "region",
        "result",
        "copied",
        "kept",
        "repaired",
        "bytes copied",
        "time",
        "rate",
        "reason",
        title=title,
    )
    for r in job["regions"]:
        took = (r["finished"] or time.time()) - r["started"]
        rate = r["bytes_copied"] / took if took > 0 else 0.0
        result = r["status"]
        colour = "green" if result == "verified" else "red"
        table.add_row(
            r["region"],
            f"[{colour}]{result}[/]",
            str(r["files_copied"]),
            str(r["files_kept"]),
            str(r["files_repaired"]),
            human_bytes(r["bytes_copied"]),
            f"{took:.1f}s",
            f"{human_bytes(rate)}/s",
            r["reason"] if result != "verified" else "",
        )
    console.print(table)
    if job.get("manifest_built"):
        console.print("the source had no manifest: one was built and published there")
    if job.get("error"):
        console.print(f"[red]error:[/] {job['error']}")
