"""``meridian config check``: every problem of a config file in one pass, and
what it would change against a running gateway.

:func:`problems` reports the schema errors pydantic finds and the
cross-reference errors (unknown region, model or version, a name defined
twice) together, each as ``FILE:LINE: field: message``: ``Config``'s own
cross-reference validator only runs once every field is valid, so on its own
an unknown region shows only after the schema errors are fixed.

:func:`summary` is the part of a config an operator changes at run time
(backends, tenants and their keys and limits, models, regions), in a form
safe to show: API keys appear as a short fingerprint of their digest, never
the digest. :func:`diff` compares two summaries line by line.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.config.model import Config, ConfigError, _line_of, parse

_WHERE = re.compile(r"^(?P<file>.*?):(?P<line>\d+): ")


def problems(path: str | Path) -> tuple[Config | None, list[str]]:
    """The validated config (None when it has problems) and every problem, in line order."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{p}: cannot read: {exc}"]
    try:
        return parse(text, str(p)), []
    except ConfigError as exc:
        found = str(exc).splitlines()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None, found  # parse() already said where the YAML breaks
    if isinstance(data, dict):
        for loc, message in references(data):
            line = f"{p}:{_line_of(node, loc)}: {'.'.join(map(str, loc))}: {message}"
            if line not in found:
                found.append(line)
    return None, sorted(found, key=_line_number)


def _line_number(problem: str) -> tuple[int, str]:
    """Sort key: the line, then the field and message (stable across runs)."""
    match = _WHERE.match(problem)
    return (int(match["line"]), problem[match.end() :]) if match else (0, problem)


def _names(data: dict[str, Any], section: str) -> list[tuple[int, str]]:
    items = data.get(section)
    if not isinstance(items, list):
        return []
    return [
        (i, item["name"])
        for i, item in enumerate(items)
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    ]


def references(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-reference problems of the raw YAML mapping, whatever else is wrong with it:
    the same rules as ``Config._references``, each problem with its place."""
    out: list[tuple[tuple[Any, ...], str]] = []
    for section in ("regions", "models", "backends", "tenants"):
        seen: set[str] = set()
        for i, name in _names(data, section):
            if name in seen:
                out.append(((section, i, "name"), f"{name!r} is defined twice"))
            seen.add(name)
    regions = {name for _, name in _names(data, "regions")}
    versions: dict[str, set[str]] = {}
    for item in data.get("models") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            v = item.get("versions")
            versions[item["name"]] = set(v) if isinstance(v, dict) else set()
    backends = data.get("backends")
    for i, b in enumerate(backends if isinstance(backends, list) else []):
        if not isinstance(b, dict):
            continue
        region, model, version = b.get("region"), b.get("model"), b.get("version")
        if isinstance(region, str) and regions and region not in regions:
            out.append((("backends", i, "region"), f"unknown region {region!r}"))
        if isinstance(model, str) and versions and model not in versions:
            out.append((("backends", i, "model"), f"unknown model {model!r}"))
        elif (
            isinstance(model, str)
            and isinstance(version, str)
            and versions.get(model)
            and version not in versions[model]
        ):
            out.append((("backends", i, "version"), f"model {model!r} has no version {version!r}"))
    return out


def _fingerprint(ref: str) -> str:
    return hashlib.sha256(ref.encode()).hexdigest()[:12]


def summary(config: Config) -> dict[str, dict[str, Any]]:
    """What a reload can change, keyed by kind then name (JSON-safe, no secrets)."""
    return {
        "backends": {
            b.name: {
                "model": f"{b.model}@{b.version}",
                "region": b.region,
                "provider": str(getattr(b.provider, "value", b.provider)),
                "url": b.url,
                # Every field a price has (per token or per hour), only those set.
                "price": b.price.model_dump(exclude_defaults=True),
            }
            for b in config.backends
        },
        "tenants": {
            t.name: {
                "keys": sorted(_fingerprint(k.ref) for k in t.api_keys),
                "limits": None if t.limits is None else t.limits.model_dump(exclude_none=True),
                "residency": None if t.residency is None else sorted(t.residency),
                "models": None if t.models is None else sorted(t.models),
            }
            for t in config.tenants
        },
        "models": {m.name: dict(m.versions) for m in config.models},
        "regions": {r.name: {"tags": sorted(r.tags), "dial": r.dial} for r in config.regions},
    }


def diff(running: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    """One line per change from ``running`` to ``new``: ``+``, ``-`` or ``~`` then what."""
    lines: list[str] = []
    for kind in ("regions", "models", "backends", "tenants"):
        old, now = running.get(kind, {}), new.get(kind, {})
        noun = kind.removesuffix("s")
        for name in sorted(now.keys() - old.keys()):
            lines.append(f"+ {noun} {name}")
        for name in sorted(old.keys() - now.keys()):
            lines.append(f"- {noun} {name}")
        for name in sorted(old.keys() & now.keys()):
            if old[name] == now[name]:
                continue
            if not isinstance(old[name], dict) or not isinstance(now[name], dict):
                lines.append(f"~ {noun} {name}: {old[name]} → {now[name]}")
                continue
            for field in sorted(old[name].keys() | now[name].keys()):
                before, after = old[name].get(field), now[name].get(field)
                if before == after:
                    continue
                if field == "keys":
                    added = len(set(after or ()) - set(before or ()))
                    removed = len(set(before or ()) - set(after or ()))
                    lines.append(f"~ {noun} {name}: keys +{added} -{removed}")
                else:
                    lines.append(f"~ {noun} {name}: {field} {before} → {after}")
    return lines
