"""Prefix affinity: consistent hashing with bounded loads over a pool's servers.

Requests that share a prompt prefix (a system prompt, a few-shot header, a
conversation so far) should land on the server whose KV cache already holds
it. The key is a hash of the prompt's first blocks (``prefix_key``); servers
sit on a ring at ``vnodes`` points each. A key belongs to the first server
clockwise from it, unless that server is at capacity::

    capacity = ceil(c · (in_flight_total + 1) / n)

(Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with Bounded Loads",
SODA 2018; HAProxy ``hash-balance-factor``, c = 1.25 as in brpc and SGLang's
``prefix_hash``). Overflow walks clockwise, so it too lands on the same
successors and keeps some locality, and no server ever takes more than
c × the average load.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence

BLOCK_CHARS = 64
MAX_BLOCKS = 32


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def prefix_key(text: str, model: str) -> int:
    """Hash of the block-aligned prefix (at most MAX_BLOCKS × BLOCK_CHARS characters).

    Aligning to blocks makes prompts that share their first blocks share a
    key even when their tails differ; a prompt shorter than one block is its
    own key.
    """
    usable = min(len(text), BLOCK_CHARS * MAX_BLOCKS)
    aligned = usable - usable % BLOCK_CHARS if usable >= BLOCK_CHARS else usable
    return _h64(model.encode() + b"\x00" + text[:aligned].encode("utf-8", "surrogatepass"))


CONVERSATION_CHARS = BLOCK_CHARS * MAX_BLOCKS


def split_key(
    *,
    session: str | None,
    user: str | None,
    key_digest: str,
    opening: Sequence[str],
    request_id: str,
) -> str:
    """The key a request's version split (canary) and shadow share are sticky by.

    ``x-meridian-session``, else the body's ``user``, else the conversation:
    a hash of the API key and the conversation's opening (the chat messages up
    to the first user message, or a completion's prompt), so every turn of one
    conversation gets the same version while an application with one API key
    still spreads its conversations over the split. A request with no text at
    all is its own key. Never the API key alone: one key is often one whole
    application, which would then see all of one version or all of the other.
    """
    if session:
        return session  # as before: a session keeps its version across an upgrade
    if user:
        return user
    text = "\x00".join(opening)[:CONVERSATION_CHARS]
    if not text:
        return f"r:{request_id}"
    digest = hashlib.blake2b(digest_size=8)
    digest.update(key_digest.encode())
    digest.update(b"\x00")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return f"c:{digest.hexdigest()}"


def opening_of(messages: Sequence[tuple[str, str]], prompt: str) -> list[str]:
    """The texts that identify a conversation: (role, text) messages up to and
    including the first user message; else the prompt."""
    if not messages:
        return [prompt] if prompt else []
    out: list[str] = []
    for role, text in messages:
        out.append(f"{role}:{text}")
        if role == "user":
            break
    return out


class Ring:
    """An immutable hash ring of server names."""

    __slots__ = ("_names", "_points")

    def __init__(self, servers: Iterable[str], vnodes: int = 64) -> None:
        points = sorted(
            (_h64(f"{name}#{i}".encode()), name) for name in set(servers) for i in range(vnodes)
        )
        self._points = [p for p, _ in points]
        self._names = [n for _, n in points]

    def walk(self, key: int) -> Iterable[str]:
        """Distinct servers in clockwise order from ``key``."""
        if not self._points:
            return
        start = bisect.bisect_left(self._points, key)
        seen: set[str] = set()
        n = len(self._points)
        for i in range(n):
            name = self._names[(start + i) % n]
            if name not in seen:
                seen.add(name)
                yield name


def pick_bounded(
    ring: Ring,
    key: int,
    eligible: Sequence[str],
    load: Callable[[str], int],
    c: float = 1.25,
) -> str | None:
    """The server for ``key`` among ``eligible`` whose load stays within the bound."""
    allowed = set(eligible)
    if not allowed:
        return None
    total = sum(load(s) for s in allowed)
    capacity = math.ceil(c * (total + 1) / len(allowed))
    for name in ring.walk(key):
        if name in allowed and load(name) < capacity:
            return name
    return None
