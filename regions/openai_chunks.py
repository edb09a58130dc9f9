"""OpenAI stream chunks, from untrusted bytes: the shape check and the SSE parser.

:func:`parse_chunk` checks one ``chat.completion.chunk`` / ``text_completion``
object (anything unexpected is STREAM_BROKEN, counted against the backend);
:class:`StreamParser` turns one stream's SSE bytes into events, a whole upstream
read at a time, with the fast path for the stream's constant envelope. The
adapters (``regions.openai_compat``, SageMaker's vLLM payloads) read with them.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage
from regions.sse import SseSplitter, event_data

_DONE = b"[DONE]"
_MAX_COUNT = 1 << 53  # a token count beyond this is not a count


def broken(why: str) -> BackendError:
    return BackendError(FailureClass.STREAM_BROKEN, f"malformed upstream chunk: {why}")


class Chunk(NamedTuple):
    """What one OpenAI stream chunk says, its shape checked.

    ``choice`` is whether it carried a choice (a content chunk) rather than
    none (the usage chunk). ``usage`` is (prompt, completion) when present.
    """

    text: str
    reason: str | None
    usage: tuple[int, int] | None
    choice: bool
    at: int = 0  # the choice's index
    progress: bool = False  # no text, but tool-call arguments, reasoning or logprobs


def parse_chunk(obj: object, chat: bool, allowed: int = 1) -> Chunk:
    """An OpenAI ``chat.completion.chunk`` / ``text_completion`` object, checked.

    Any JSON value can arrive here; every member the gateway reads must have
    the type the API gives it, or the stream is broken (STREAM_BROKEN, counted
    against the backend). Members the gateway does not read are not checked.
    ``allowed`` is how many choices the request asked for: a chunk carries one
    choice, whose index must be below it.
    """
    if not isinstance(obj, dict):
        raise broken("not a JSON object")
    error = obj.get("error")
    if error is not None:
        message = error.get("message", "") if isinstance(error, dict) else error
        raise BackendError(FailureClass.STREAM_BROKEN, f"upstream error: {str(message)[:300]}")
    text, reason, choice, progress = "", None, False, False
    choices = obj.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise broken("choices is not a list")
    index = 0
    if choices:
        first = choices[0]
        if not isinstance(first, dict):
            raise broken("a choice is not an object")
        index = first.get("index", 0)
        if len(choices) > 1 or not isinstance(index, int) or not 0 <= index < allowed:
            # A choice the client did not ask for is not this answer, and
            # forwarded as it is it would reach the client.
            raise broken("more than one choice" if allowed == 1 else "a choice not asked for")
        if chat:
            delta = first.get("delta")
            if delta is not None and not isinstance(delta, dict):
                raise broken("delta is not an object")
            content = delta.get("content") if delta else None
            # tool_calls, reasoning_content, refusal…: the answer, without text
            progress = delta is not None and any(
                value for key, value in delta.items() if key not in ("role", "content")
            )
        else:
            content = first.get("text")
        progress = progress or bool(first.get("logprobs"))
        if content is not None:
            if not isinstance(content, str):
                raise broken("the text is not a string")
            text = content
        finish = first.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise broken("finish_reason is not a string")
        reason = finish or None
        choice = True
    usage = obj.get("usage")
    counts = None
    if usage is not None:
        if not isinstance(usage, dict):
            raise broken("usage is not an object")
        if usage:
            counts = (
                count_member(usage, "prompt_tokens"),
                count_member(usage, "completion_tokens"),
            )
    return Chunk(text, reason, counts, choice, index, progress)


def count_member(obj: dict[str, Any], name: str) -> int:
    """A token count member: absent or null is 0, anything but a count is a broken stream."""
    value = obj.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNT:
        raise broken(f"{name} is not a token count")
    return value


class _Progress:
    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = False


class StreamParser:
    """One stream's SSE bytes → events, a whole upstream read at a time (no
    generator per event: the adapter's loop yields what :meth:`feed` returns).

    With several choices the stream is finished when each has its finish reason:
    the earlier ones are forwarded as content, and one Finish ends the answer.

    A failure met inside a read does not cost the events before it in that read
    (they reach the client, and a resumption continues after them): :meth:`feed`
    returns them and keeps the failure in ``failure`` for the caller to raise.

    Fast path: a plain content chunk (text only, no finish, no usage) is the
    stream's constant envelope around one JSON string. The first one is parsed
    in full and its bytes before and after the string are kept
    (:func:`_template`); a later chunk with exactly those bytes around a plain
    JSON string needs no JSON parse, and yields what the full parse would.
    """

    __slots__ = (
        "_chat",
        "_choices",
        "_cut",
        "_end",
        "_head",
        "_least",
        "_splitter",
        "_tail",
        "done",
        "failure",
        "progress",
        "unfinished",
        "usage_seen",
    )

    def __init__(self, chat: bool, choices: int, max_event_bytes: int) -> None:
        self._chat = chat
        self._choices = choices
        self._splitter = SseSplitter(max_event_bytes)
        # The learnt envelope as an event carries it: ``data: `` and the bytes up to
        # the text's opening quote, and from its closing quote on (see _template).
        self._head: bytes | None = None
        self._tail = b""
        self._cut = 0  # len(_head)
        self._end = 0  # -len(_tail): _tail holds the closing quote, so never 0 once learnt
        self._least = 0  # len(_head) + len(_tail): the two quotes are distinct bytes
        self.progress = _Progress()
        self.usage_seen = False
        self.unfinished = set(range(choices))
        self.done = False  # [DONE] arrived
        self.failure: Exception | None = None

    def feed(self, piece: bytes) -> list[Event]:
        out: list[Event] = []
        events = self._splitter.feed(piece)  # an event over the cap: raised, nothing taken
        last = len(events) - 1
        for index, event in enumerate(events):
            prefix = self._head  # learnt from an earlier event, perhaps of this same read
            # A line break can only be inside the string, where _templated refuses it.
            if (
                prefix is not None
                and event.startswith(prefix)
                and event.endswith(self._tail)
                and len(event) >= self._least
            ):
                middle = event[self._cut : self._end]
                if _plain_breaker(middle) is None:  # _templated's usual case, inline
                    try:
                        text: str | None = middle.decode()
                    except UnicodeDecodeError:
                        text = None
                else:
                    text = _templated(middle)
                if text is not None:
                    # Learnt only with one choice, which stays unfinished until the finish.
                    if not self.progress.finished:
                        out.append(TokenDelta(text, event + b"\n\n", index < last))
                    continue
            try:
                if self._event(event, index < last, out):
                    break
            except Exception as exc:  # after the events before it, raised by the caller
                self.failure = exc
                break
        return out

    def _event(self, event: bytes, more: bool, out: list[Event]) -> bool:
        """Parse one event into ``out``; True at ``[DONE]``."""
        data = event_data(event)
        if data is None:
            return False
        progress = self.progress
        if data == _DONE:
            if not progress.finished:
                raise BackendError(FailureClass.STREAM_BROKEN, "[DONE] before a finish reason")
            self.done = True
            return True
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise broken("not JSON") from None
        chunk = parse_chunk(obj, self._chat, self._choices)
        raw = _forwardable(event, data) if whole_chunk(obj) else None
        unfinished = self.unfinished
        if chunk.choice:
            if progress.finished or chunk.at not in unfinished:
                return False  # text or a second finish after the finish reason: not the answer
            if chunk.reason and len(unfinished) > 1:
                unfinished.discard(chunk.at)
                out.append(TokenDelta(chunk.text, raw, more, chunk.progress))
                return False
            more = more and not chunk.reason
            if chunk.reason and chunk.usage is not None:
                # Usage on the finish chunk (TGI's Messages API): re-encoded, so
                # a client that did not ask for usage does not get it. Usage on
                # earlier content chunks would be a running count: ignored.
                progress.finished = self.usage_seen = True
                out.append(TokenDelta(chunk.text, None, more))
                out.append(Finish(chunk.reason, None))
                out.append(Usage(*chunk.usage, None))
                return False
            out.append(TokenDelta(chunk.text, raw, more, chunk.progress))
            if chunk.reason:
                progress.finished = True
                out.append(Finish(chunk.reason, b"" if raw is not None else None))
            elif (
                self._head is None
                and raw is not None
                and chunk.text
                and not chunk.progress
                and chunk.usage is None
                and self._choices == 1
            ):
                found = _template(data, chunk.text, self._chat)
                if found is not None:
                    head, tail = found
                    self._head, self._tail = b"data: " + head + b'"', b'"' + tail
                    self._cut = len(self._head)
                    self._end = -len(self._tail)
                    self._least = self._cut + len(self._tail)
        elif chunk.usage is not None and progress.finished and not self.usage_seen:
            # Usage describes a finished answer: one reported before the finish
            # (a stream that then breaks) would be counted beside the resumption's.
            self.usage_seen = True
            out.append(Usage(*chunk.usage, raw))
        return False

    def end(self) -> None:
        """The body ended without ``[DONE]``: fine after a finish reason."""
        if not self.progress.finished:
            # some servers end without [DONE]; a finish reason is the real end
            raise BackendError(FailureClass.STREAM_BROKEN, "stream ended before a finish reason")


_PLAIN_BREAKERS = re.compile(rb'["\\\x00-\x1f]')
"""What a JSON string's content may hold only escaped (quote, backslash) or not at all."""
_plain_breaker = _PLAIN_BREAKERS.search


def _templated(middle: bytes) -> str | None:
    """The text of an event between the learnt envelope's quotes, when that is the
    content of one JSON string; else None (then the event takes the full parse,
    which also refuses what is malformed)."""
    if _PLAIN_BREAKERS.search(middle) is None:
        try:
            return middle.decode()
        except UnicodeDecodeError:
            return None
    try:
        text = orjson.loads(b'"' + middle + b'"')  # escapes: one string, or not this shape
    except orjson.JSONDecodeError:
        return None
    return text if isinstance(text, str) else None


def _template(data: bytes, text: str, chat: bool) -> tuple[bytes, bytes] | None:
    """The bytes around a plain content chunk's text string (``data`` parsed to a
    chunk whose text is ``text`` and nothing else), or None if they cannot be told
    apart. The string is the last ``"content":`` (``"text":``) member; the split
    is proved by parsing the chunk again with an empty string in its place: the
    text must be gone (not a shadowed duplicate member) and nothing else changed."""
    key = b'"content":' if chat else b'"text":'
    at = data.rfind(key)
    if at < 0:
        return None
    start = at + len(key)
    if data[start : start + 1] != b'"':
        return None  # whitespace or another value after the colon: not worth a template
    end = start + 1
    while True:
        end = data.find(b'"', end)
        if end < 0:
            return None
        backslashes = len(data[start + 1 : end]) - len(data[start + 1 : end].rstrip(b"\\"))
        if backslashes % 2 == 0:
            break
        end += 1
    head, tail = data[:start], data[end + 1 :]
    try:
        if orjson.loads(data[start : end + 1]) != text:
            return None
        emptied = orjson.loads(head + b'""' + tail)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(emptied, dict) or not whole_chunk(emptied):
        return None
    try:
        again = parse_chunk(emptied, chat)
    except BackendError:
        return None
    if again != Chunk("", None, None, True, 0, False):
        return None
    return head, tail


def whole_chunk(obj: dict[str, Any]) -> bool:
    """Whether a chunk's bytes can go to the client as they are: it carries the
    ``id`` and ``model`` the gateway promises (one id per stream, the logical
    model name, rewritten in place). A chunk without them is written by the
    gateway itself, with both."""
    return isinstance(obj.get("id"), str) and isinstance(obj.get("model"), str)


def _forwardable(event: bytes, data: bytes) -> bytes:
    """The event as the client may see it: its data and nothing else.

    An upstream's ``event:``, ``id:`` and ``retry:`` lines would steer the
    client's SSE parser (event type, ``Last-Event-ID``, reconnect delay), so
    an event that is anything but one ``data: `` line is rebuilt from its data;
    newlines in parsed JSON can only be whitespace between tokens.
    """
    if event.startswith(b"data: ") and event.find(10) < 0:  # one line
        return event + b"\n\n"
    return b"data: " + data.replace(b"\n", b" ") + b"\n\n"
