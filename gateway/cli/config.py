"""``meridian config check FILE [--against ADMIN_URL]`` and ``meridian config reload``.

``check`` validates the whole file without serving it: every problem in one
pass, each as ``FILE:LINE: field: message`` (exit 2 if any, 0 if none). With
``--against`` it also prints what the file would change on that gateway
(``+``/``-``/``~`` backends, tenants, keys, limits, models, regions).
``reload`` asks the gateway to re-read its own file (``POST /admin/v1/reload``):
exit 0 when applied, 2 when refused (its problems on stderr; nothing changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.cli.admin_client import AdminClient
from gateway.config.check import diff, problems, summary


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    config = sub.add_parser("config", help="check a config file, reload the running one")
    verbs = config.add_subparsers(dest="verb", required=True, metavar="VERB")
    check = verbs.add_parser("check", help="every problem of a config file, at once")
    check.add_argument("file")
    check.add_argument(
        "--against", metavar="ADMIN_URL", help="also show what it would change on that gateway"
    )
    check.add_argument("--token", help="admin token for --against (env MERIDIAN_ADMIN_TOKEN)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=run_check)
    reload = verbs.add_parser("reload", parents=[common], help="the gateway re-reads its file")
    reload.set_defaults(func=run_reload)


def run_check(args: argparse.Namespace) -> int:
    config, found = problems(args.file)
    if config is None:
        if args.json:
            print(json.dumps({"ok": False, "problems": found}, indent=2))
        for line in found:
            print(line, file=sys.stderr)
        return 2
    changes: list[str] | None = None
    if args.against is not None:
        running = AdminClient(args.against, args.token).get("/admin/v1/config")
        changes = diff(running, summary(config))
    if args.json:
        print(json.dumps({"ok": True, "problems": [], "changes": changes}, indent=2))
        return 0
    print(f"{args.file}: ok")
    if changes is not None:
        print("\n".join(changes) if changes else "no change against the running gateway")
    return 0


def run_reload(args: argparse.Namespace) -> int:
    body = AdminClient(args.admin_url, args.token).send("POST", "/admin/v1/reload")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0 if body["applied"] else 2
    if not body["applied"]:
        print(f"meridian: reload of {body['path']} refused, nothing changed:", file=sys.stderr)
        for line in body["problems"]:
            print(line, file=sys.stderr)
        return 2
    print(f"reloaded {body['path']}  revision {body['revision']}")
    for line in body["changes"] or ["no change"]:
        print(line)
    if body["restart_needed"]:
        print(f"not applied, need a restart: {', '.join(body['restart_needed'])}")
    return 0
