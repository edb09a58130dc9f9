"""What goes inside SageMaker invocations: container request bodies and stream payloads.

SageMaker passes the body to the container and wraps the container's streamed
bytes in ``PayloadPart`` events whose boundaries are arbitrary: a JSON object or
an SSE line may be split across parts (reference/protocols.md §1.4). So the
decoder buffers bytes (at most one line, ``max_line_bytes``: a longer one is a
broken stream) and works on complete lines, and accepts every framing
the three containers use:

- ``vllm``: OpenAI SSE (``data: {chunk}`` ... ``data: [DONE]``), chat or
  completion depending on the body, exactly what vLLM's ``/invocations`` does;
  with ``n`` above 1 (or a batch of prompts) each chunk carries one choice's
  ``index``, and the answer is finished when every choice has its finish
  reason (a choice's finish before then is forwarded as content).
- ``tgi``: chat requests use TGI's Messages API (OpenAI ``chat.completion.chunk``
  SSE, ``[DONE]``); completion requests use generate (SSE of
  ``{"token": {...}, "generated_text", "details"}``, the last event carrying
  ``details.finish_reason``).
- ``lmi``: DJL LMI rolling batch, JSON lines by default: ``{"token": {...}}``
  per line, the last with ``details``; an error mid-stream is a final token
  ``id: -1`` with ``finish_reason: "error"``. Chat requests answer with
  ``chat.completion.chunk`` objects, one per line. ``data:``-prefixed lines
  (LMI's ``sse`` output formatter) are accepted too.

The end of a stream is judged from the payload — a finish reason (or
``[DONE]`` after one) — because SageMaker sends no end-of-stream event.

Resumption (``request.assistant_prefix``), per container:

- ``vllm``: chat appends the prefix as a final assistant message with
  ``continue_final_message: true, add_generation_prompt: false``; completion
  appends it to the prompt.
- ``tgi`` / ``lmi`` generate: the prefix is appended to ``inputs`` (exact).
- ``tgi`` / ``lmi`` chat: the prefix is a final assistant message; whether the
  model continues it rather than starting a new turn depends on the
  container's chat template (TGI and LMI expose no ``continue_final_message``).
"""

from __future__ import annotations

from typing import Any

import orjson

from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage, starts_answer
from regions.inventory import Container
from regions.openai_chunks import broken, count_member, parse_chunk, whole_chunk
from regions.openai_compat import build_body as openai_body
from regions.request import GenerationRequest, Kind
from regions.sse import MAX_EVENT_BYTES, Delimited

ACCEPT: dict[Container, str] = {
    "vllm": "text/event-stream",
    "tgi": "text/event-stream",
    "lmi": "application/jsonlines",
    "tei": "application/json",  # never streamed: embeddings only (regions.sagemaker_tei)
}
"""The streaming ``X-Amzn-SageMaker-Accept`` value each container answers with."""

_DONE = b"[DONE]"
_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}
"""TGI/LMI finish reasons → OpenAI's. TGI's ``FinishReason`` is length,
eos_token, stop_sequence (router/src/lib.rs; its Messages API turns only
eos_token into "stop"); LMI's are length, eos_token, stop_sequence
(djl_python/rolling_batch/rolling_batch.py), also on its chat chunks."""
_BROKEN = frozenset({"error", "abort"})
"""LMI's finish reasons for a generation that did not end: ``error`` (the
rolling batch raised, djl_python/rolling_batch/rolling_batch.py) and ``abort``
(vLLM aborted the request, rolling_batch_vllm_utils.py)."""


def build_body(request: GenerationRequest, container: Container, served_model: str) -> bytes:
    """The streaming request body for ``container`` (see the module docstring)."""
    if container == "vllm":
        return orjson.dumps(openai_body(request, served_model))
    if request.kind is Kind.CHAT:
        return orjson.dumps(_chat_body(request, container, served_model))
    return orjson.dumps(
        {
            "inputs": request.prompt + request.assistant_prefix,
            "parameters": _generate_parameters(request, container),
            "stream": True,
        }
    )


def _chat_body(request: GenerationRequest, container: Container, model: str) -> dict[str, Any]:
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    if request.assistant_prefix:
        messages.append({"role": "assistant", "content": request.assistant_prefix})
    body: dict[str, Any] = {"model": model, "messages": messages, **request.sampling.as_openai()}
    body["stream"] = True
    if container == "tgi":
        body["stream_options"] = {"include_usage": True}
    return body


def _generate_parameters(request: GenerationRequest, container: Container) -> dict[str, Any]:
    """TGI/LMI generate parameters. TGI rejects ``temperature: 0`` and ``top_p: 1``
    (both must be strictly inside their ranges), so those mean greedy/unset."""
    s = request.sampling
    params: dict[str, Any] = {"details": True}
    if s.max_tokens is not None:
        params["max_new_tokens"] = s.max_tokens
    if s.temperature is not None and s.temperature > 0:
        params["temperature"] = s.temperature
        params["do_sample"] = True
    elif s.temperature is not None:
        params["do_sample"] = False
    if s.top_p is not None and 0 < s.top_p < 1:
        params["top_p"] = s.top_p
    if s.seed is not None:
        params["seed"] = s.seed
    if s.stop:
        params["stop" if container == "tgi" else "stop_sequences"] = list(s.stop)
    if container == "tgi":
        params["return_full_text"] = False
    return params


class PayloadDecoder:
    """Container bytes, split anywhere, in; token events out.

    ``passthrough`` keeps each OpenAI chunk's SSE bytes in ``raw`` (only
    meaningful for the vLLM container, whose chunks are what the client's
    OpenAI API would send); otherwise ``raw`` is None and empty deltas (the
    role chunk) are dropped.
    """

    __slots__ = (
        "_chat",
        "_choices",
        "_lines",
        "_passthrough",
        "_unfinished",
        "_usage_seen",
        "decoded",
        "done",
        "finished",
        "started",
    )

    def __init__(
        self,
        chat: bool,
        passthrough: bool = False,
        max_line_bytes: int = MAX_EVENT_BYTES,
        choices: int = 1,
    ) -> None:
        self._chat = chat
        self._passthrough = passthrough
        self._choices = choices
        self._unfinished = set(range(choices))
        # CR, CRLF or LF: SSE allows each, and in JSON lines a raw CR can only end one.
        self._lines = Delimited(b"\n", max_line_bytes, "a payload line", line_ends=True)
        self._usage_seen = False
        self.started = False  # the answer's first event came out (reads may be paced after it)
        self.decoded = 0  # events out so far (a paced read that merged none: regions.pacing)
        self.finished = False
        self.done = False

    def feed(self, data: bytes) -> list[Event]:
        """Events of the complete lines so far; a line over the limit is STREAM_BROKEN."""
        events: list[Event] = []
        if self.done:
            return events  # after [DONE]: nothing more is read, nor buffered
        for line in self._lines.feed(data):
            if not self.done:
                self._line(line, events)
        if events:
            self.decoded += len(events)
            if not self.started:
                self.started = any(starts_answer(event) for event in events)
        return events

    def close(self) -> list[Event]:
        """The stream's bytes ended: flush an unterminated last line, check it finished."""
        events: list[Event] = []
        tail = self._lines.take_rest()
        if tail and not self.done:
            try:
                self._line(tail, events)
            except BackendError:
                # A line cut by the end of the stream: after a finish reason only
                # the usage can be lost, which is no reason to fail the answer.
                if not self.finished:
                    raise BackendError(
                        FailureClass.STREAM_BROKEN, "stream ended before a finish reason"
                    ) from None
        if not self.finished:
            raise BackendError(FailureClass.STREAM_BROKEN, "stream ended before a finish reason")
        return events

    def _line(self, line: bytes, out: list[Event]) -> None:
        if not line or line.startswith((b":", b"event:", b"id:", b"retry:")):
            return
        sse = line.startswith(b"data:")
        data = line[5:].lstrip(b" ") if sse else line
        if data == _DONE:
            if not self.finished:
                raise BackendError(FailureClass.STREAM_BROKEN, "[DONE] before a finish reason")
            self.done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise BackendError(FailureClass.STREAM_BROKEN, "malformed payload line") from None
        if not isinstance(obj, dict):
            raise BackendError(FailureClass.STREAM_BROKEN, "payload line is not a JSON object")
        if "choices" in obj:
            whole = self._passthrough and sse and whole_chunk(obj)
            raw = b"data: " + data + b"\n\n" if whole else None
            self._openai(obj, raw, out)
        elif "token" in obj:
            self._token(obj, out)
        elif "error" in obj:
            error = obj["error"]
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            raise BackendError(FailureClass.STREAM_BROKEN, f"container error: {message[:300]}")

    def _openai(self, chunk: dict[str, Any], raw: bytes | None, out: list[Event]) -> None:
        parsed = parse_chunk(chunk, self._chat, self._choices)
        if parsed.choice and parsed.usage is not None:
            raw = None  # re-encoded, so a client that did not ask for usage does not get it
        skipped = False
        if parsed.choice:
            if self.finished or parsed.at not in self._unfinished:
                skipped = True  # text or a second finish after the finish reason: not the answer
            else:
                if parsed.text or raw is not None:
                    out.append(TokenDelta(parsed.text, raw, False, parsed.progress))
                if parsed.reason in _BROKEN:
                    raise BackendError(
                        FailureClass.STREAM_BROKEN,
                        f"container reported a generation error (finish_reason {parsed.reason})",
                    )
                if parsed.reason and len(self._unfinished) > 1:
                    # n > 1 (vLLM): one choice is done, the answer is not; its finish
                    # chunk went out as content, and one Finish ends the answer.
                    self._unfinished.discard(parsed.at)
                elif parsed.reason:
                    self.finished = True
                    reason = _FINISH.get(parsed.reason, parsed.reason)
                    out.append(Finish(reason, b"" if raw is not None else None))
        if parsed.usage is not None and self.finished and not self._usage_seen:
            # Usage describes a finished answer: one before the finish is not taken.
            self._usage_seen = True
            # A usage-only chunk forwards its bytes; usage riding on a content
            # chunk (TGI) is re-encoded, as that chunk was.
            usage_raw = None if raw is None or skipped or parsed.choice else raw
            out.append(Usage(*parsed.usage, usage_raw))

    def _token(self, obj: dict[str, Any], out: list[Event]) -> None:
        token = obj["token"]
        if token is None:
            token = {}
        details = obj.get("details")
        if not isinstance(token, dict) or not isinstance(details, dict | None):
            raise broken("token or details is not an object")
        reason = details.get("finish_reason") if details else None
        if reason is not None and not isinstance(reason, str):
            raise broken("finish_reason is not a string")
        if reason in _BROKEN:
            # LMI's error token carries the exception text as ``error_msg``
            message = token.get("error_msg")
            detail = f": {message[:300]}" if isinstance(message, str) and message else ""
            raise BackendError(
                FailureClass.STREAM_BROKEN,
                f"container reported a generation error (finish_reason {reason}){detail}",
            )
        text = token.get("text")
        if text is not None and not isinstance(text, str):
            raise broken("the token text is not a string")
        if self.finished:
            return  # tokens after the finish reason are not the answer
        # TGI marks special tokens ``special``, LMI ``special_token`` (djl_python/request_io.py)
        if text and not (token.get("special") or token.get("special_token")):
            out.append(TokenDelta(text))
        if reason is not None and details:
            self.finished = True
            out.append(Finish(_FINISH.get(reason, reason)))
            # TGI's StreamDetails carries input_length; LMI only a prefill list
            # (with decoder_input_details), else the prompt size is unknown: 0
            prefill = details.get("prefill")
            prompt = count_member(details, "input_length")
            prompt = prompt or (len(prefill) if isinstance(prefill, list) else 0)
            if not self._usage_seen:
                self._usage_seen = True
                out.append(Usage(prompt, count_member(details, "generated_tokens")))
