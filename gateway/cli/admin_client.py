"""The CLI's client of the admin API.

Synchronous on purpose: the CLI does one request at a time and exits. Errors
become :class:`AdminError` with one line fit for a terminal — never a
traceback, never the token.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9090"


class AdminError(Exception):
    """One line for the terminal."""


def checked_url(url: str) -> str:
    """``url`` without a trailing ``/`` when it is an http(s) URL with a host and
    a valid port; else AdminError naming what is wrong (urllib's own error,
    "unknown url type", does not say what a URL should look like)."""
    parsed = urllib.parse.urlsplit(url.strip())
    hint = f"bad admin URL {url!r}: expected http://HOST:PORT, e.g. {DEFAULT_URL}"
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise AdminError(hint)
    try:
        parsed.port  # noqa: B018 - raises ValueError when the port is not a number 0-65535
    except ValueError:
        raise AdminError(hint) from None
    return url.strip().rstrip("/")


class AdminClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 10.0):
        self.url = checked_url(url or os.environ.get("MERIDIAN_ADMIN_URL") or DEFAULT_URL)
        self.token = token or os.environ.get("MERIDIAN_ADMIN_TOKEN") or ""
        self.timeout = timeout

    def get(self, path: str, **query: Any) -> Any:
        params = {k: str(v) for k, v in query.items() if v is not None}
        suffix = "?" + urllib.parse.urlencode(params) if params else ""
        return self._call("GET", path + suffix, None)

    def send(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, path, body)

    def _call(self, method: str, path: str, body: Any) -> Any:
        try:
            data = None if body is None else json.dumps(body, allow_nan=False).encode()
        except ValueError:  # NaN or infinity: not JSON, and never a sensible setting
            raise AdminError("refusing to send a value that is not a finite number") from None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("x-meridian-actor", os.environ.get("USER") or "admin")  # audit log
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise AdminError(f"{exc.code}: {_message(exc.code, exc.read())}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: bad URL
            reason = getattr(exc, "reason", exc)
            raise AdminError(f"cannot reach the admin API at {self.url}: {reason}") from None
        return json.loads(payload) if payload else None


def _message(status: int, payload: bytes) -> str:
    """The error's one line, without a status the server already put in front of it
    (aiohttp's plain-text errors read ``404: Not Found``)."""
    try:
        body = json.loads(payload)
        message = str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = payload.decode("utf-8", "replace")[:200]
    message = " ".join(message.split()).removeprefix(f"{status}: ")
    return message or "error"
