"""The last state a replica applied, kept on local disk for a start without the store.

Fail-static covers a running replica: it keeps the snapshot it has. A replica
that *starts* while Redis is away has none, and the config's defaults may be
badly wrong by then (a drained region back in rotation, a rolled-back version
at its old weight). With ``store.snapshot_path`` set, every state a replica
applies is written there (atomically, off the event loop), and a start that
cannot reach the store serves that state until the store answers.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import orjson

from gateway.store.base import Loaded, decode_entries

log = logging.getLogger("meridian.store")


def save(path: str, loaded: Loaded) -> None:
    """Write ``loaded`` to ``path`` atomically (never a half-written file)."""
    target = Path(path)
    data = orjson.dumps({"revision": loaded.revision, "entries": loaded.entries})
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str) -> Loaded | None:
    """The saved state, or None when there is none or it cannot be read."""
    try:
        raw = orjson.loads(Path(path).read_bytes())
        entries = {k: orjson.dumps(v) for k, v in dict(raw["entries"]).items()}
        return Loaded(int(raw["revision"]), decode_entries(entries))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("state cache %s unreadable, ignored: %s", path, exc)
        return None
