"""What the load generator learns from one SSE response, at the least cost per read.

The client must not become the bottleneck it is trying to measure, so after
the first content token it does no parsing at all: it counts occurrences of
``data:`` in each read (``bytes.count`` in C) and looks for ``[DONE]``. Only
the events up to the first content token are split and JSON-decoded, because
that is where TTFT is defined:

- **first content** is the first SSE event whose ``choices[0].delta.content``
  (chat) or ``choices[0].text`` (completions) is a non-empty string. vLLM's
  first event carries only ``{"role": "assistant"}``; it is not a token and is
  skipped, like AIPerf's "first non-empty response".
- **chunks** are SSE ``data:`` events other than the terminal ``[DONE]``
  (role, content, finish and usage events all count).
- times are those of the read (``iter_any``) in which the event arrived.

Pattern matches may straddle two reads, so each read is scanned together with
the previous read's last bytes (``_carry``); matches lying wholly inside the
carry were counted already and are subtracted.
"""

from __future__ import annotations

import orjson

_DATA = b"data:"
_DONE = b"[DONE]"
_CARRY = len(_DONE) - 1  # enough to complete any straddling b"data:" or b"[DONE]"
_MAX_HEAD = 64 * 1024  # give up looking for content after this much (error bodies)


def has_content(event: bytes) -> bool:
    """Whether one SSE event (without its blank-line terminator) carries a token."""
    for line in event.split(b"\n"):
        if not line.startswith(_DATA):
            continue
        payload = line[len(_DATA) :].strip()
        if not payload.startswith(b"{"):
            continue
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not choices or not isinstance(choices[0], dict):
            continue
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str) and text:
            return True
    return False


class StreamMeter:
    """Follows one streaming response: chunk count, first-content time, [DONE] time."""

    __slots__ = ("_carry", "_head", "chunks", "done_at", "first_content_at", "searching")

    def __init__(self) -> None:
        self._carry = b""
        self._head = b""
        self.chunks = 0
        self.first_content_at: float | None = None
        self.done_at: float | None = None
        self.searching = True  # still looking for the first content event

    def feed(self, data: bytes, now: float) -> int:
        """Account for one read arriving at ``now``; returns the chunks it added."""
        carry = self._carry
        buf = carry + data if carry else data
        new = buf.count(_DATA) - (carry.count(_DATA) if carry else 0)
        if self.done_at is None and _DONE in buf:
            self.done_at = now
            new -= 1  # the [DONE] event is a terminator, not a chunk
        self._carry = buf[-_CARRY:]
        if self.searching:
            self._search(data, now)
        self.chunks += new
        return new  # -1 when [DONE]'s "data:" was counted by the previous read

    def _search(self, data: bytes, now: float) -> None:
        head = self._head + data
        if b"\r" in head:
            head = head.replace(b"\r\n", b"\n")
        events = head.split(b"\n\n")
        self._head = events.pop()  # the unfinished tail
        for event in events:
            if has_content(event):
                self.first_content_at = now
                self.searching = False
                self._head = b""
                return
        if len(self._head) > _MAX_HEAD:
            self.searching = False
            self._head = b""
