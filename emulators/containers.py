"""The model container behind a provider's front door: what it accepts, what it writes, and when.

SageMaker endpoints (:mod:`emulators.sagemaker`) run one of three generation
containers or TEI (embeddings only), and Vertex endpoints
(:mod:`emulators.vertex`) a vLLM one; this module is the part they share
(reference/protocols.md §1, §3):

- what a container accepts: :func:`parse_request` (TGI/LMI ``inputs``, or an
  OpenAI body) and :func:`parse_openai`, raising :class:`BadRequest` (the
  container's own 4xx, which each front door wraps its own way);
  :func:`embedding` answers an OpenAI embeddings body the vLLM container gets
  at ``/invocations``, and :func:`rich` picks the bodies it answers as the vLLM
  emulator does (tools, JSON output, logprobs, ``n``, batches, content parts:
  :mod:`emulators.openai_tools`);
- what it writes: :class:`ContainerStream`, the payload formats — ``vllm``
  (OpenAI SSE, its envelope, usage and ``[DONE]`` from
  :mod:`emulators.openai_wire`), ``tgi`` (generate SSE, or Messages
  API chunks) and ``lmi`` (JSON lines);
- when: :func:`play` writes a stream on a fixed token schedule, with
  :class:`Playback` (from :func:`fault_timing` and the faults) saying where a
  stall, reset or in-stream error cuts it.

Text comes from :mod:`emulators.text`, so a resumed stream can be
checked exactly; TGI and LMI continue a final assistant message (the emulated
chat template allows it), vLLM needs ``continue_final_message`` as the real one
does. The front doors keep auth, routing, error shapes and framing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from emulators import embeddings, openai_tools, text
from emulators.faults import Faults
from emulators.openai_wire import SSE_DONE, CompletionJob, RequestError, chunk_envelope, usage
from regions.inventory import Container


class BadRequest(Exception):
    """The container's own 4xx (SageMaker wraps it in a ModelError, Vertex in a Google error)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(slots=True)
class Job(CompletionJob):
    """One generation: ``openai`` selects the OpenAI schema over TGI/LMI generate;
    ``details``: the generate request asked for them (``parameters.details``)."""

    openai: bool
    details: bool = False


def _limit(payload: Mapping[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(400, f"`{key}` must be a positive integer")
    return value


def _budget(limit: int | None, default: int) -> tuple[int, str]:
    """Tokens to generate and the finish reason: without a limit the emulated
    model stops at ``default`` as if it emitted EOS."""
    return (limit, "length") if limit is not None else (default, "stop")


def embedding(container: Container, payload: Any, served_model: str) -> bytes | None:
    """The vLLM container's answer to an embeddings body, or None for any other body.

    vLLM's SageMaker-style ``/invocations`` (vllm/entrypoints/sagemaker/api_router.py)
    tries each request type the model serves in order, generation first
    (``get_generate_invocation_types``), then ``EmbeddingRequest``
    (vllm/entrypoints/pooling/factories.py ``get_pooling_invocation_types``): a
    body with ``input`` and neither ``messages`` nor ``prompt`` is an embedding,
    answered as :mod:`emulators.embeddings` (vLLM's ``EmbeddingResponse``).
    TGI and LMI (generation containers) take no such body. TEI's ``/invocations``
    is its ``embed`` handler for every body (:func:`emulators.embeddings.tei_answer`).
    """
    if container == "tei":
        if len(orjson.dumps(payload)) > embeddings.TEI_PAYLOAD_LIMIT:
            # axum's DefaultBodyLimit rejection: plain text, 413
            raise BadRequest(413, "Failed to buffer the request body: length limit exceeded")
        try:
            return orjson.dumps(embeddings.tei_answer(payload))
        except RequestError as exc:
            raise BadRequest(exc.status, exc.message) from None
    if container != "vllm" or not isinstance(payload, dict) or "input" not in payload:
        return None
    if "messages" in payload or "prompt" in payload:
        return None
    model = payload.get("model")
    if model not in (None, "", served_model):
        raise BadRequest(404, f"The model `{model}` does not exist.")
    try:
        return orjson.dumps(embeddings.answer(payload, served_model))
    except RequestError as exc:
        raise BadRequest(exc.status, exc.message) from None


def rich(container: Container, payload: Any, served_model: str) -> dict[str, Any] | None:
    """``payload`` when the vLLM container answers it the way :mod:`emulators.openai_tools`
    does (it asks more than text), else None; a model it does not serve is its 404."""
    if container != "vllm" or not isinstance(payload, dict) or not openai_tools.rich(payload):
        return None
    if payload.get("model") not in (None, "", served_model):
        raise BadRequest(404, f"The model `{payload.get('model')}` does not exist.")
    return payload


def parse_openai(
    payload: Mapping[str, Any], served_model: str, default_max_tokens: int, implicit_continue: bool
) -> Job:
    """An OpenAI chat (``messages``) or completion (``prompt``) body, as vLLM reads it.

    ``implicit_continue``: a final assistant message is continued without
    ``continue_final_message`` (TGI and LMI chat here).
    """
    model = payload.get("model")
    if model not in (None, "", served_model):
        raise BadRequest(404, f"The model `{model}` does not exist.")
    stream = payload.get("stream") is True
    options = payload.get("stream_options") or {}
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    chat = "messages" in payload
    limit = _limit(payload, "max_completion_tokens") if chat else None
    limit = limit if limit is not None else _limit(payload, "max_tokens")
    if chat:
        messages = payload["messages"]
        if not isinstance(messages, list) or not messages:
            raise BadRequest(400, "`messages` must be a non-empty list")
        pairs: list[tuple[str, str]] = []
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise BadRequest(400, "each message needs a role")
            if not isinstance(m.get("content") or "", str):
                raise BadRequest(400, "only string message content is supported")
            pairs.append((m["role"], m.get("content") or ""))
        explicit = payload.get("continue_final_message") is True
        if explicit and payload.get("add_generation_prompt", True) is not False:
            raise BadRequest(
                400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        final = pairs[-1][0] == "assistant"
        if explicit and not final:
            raise BadRequest(400, "continue_final_message needs a final assistant message")
        context = text.render_chat(pairs, explicit or (implicit_continue and final))
    else:
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise BadRequest(400, "`prompt` must be a non-empty string")
        context = prompt
    max_tokens, reason = _budget(limit, default_max_tokens)
    prompt_tokens = text.count_tokens(context)
    return Job(
        chat, served_model, context, max_tokens, reason, stream, include_usage, prompt_tokens, True
    )


def parse_request(
    container: Container, payload: Any, served_model: str, default_max_tokens: int
) -> Job:
    """A body as ``container`` reads it: TGI/LMI take ``inputs`` (generate) or OpenAI."""
    if not isinstance(payload, dict):
        raise BadRequest(400, "request body must be a JSON object")
    if container == "vllm" or "inputs" not in payload:
        return parse_openai(payload, served_model, default_max_tokens, container != "vllm")
    inputs = payload["inputs"]
    if not isinstance(inputs, str) or not inputs:
        raise BadRequest(422, "`inputs` must be a non-empty string")
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(422, "`parameters` must be an object")
    limit = _limit(params, "max_new_tokens")
    max_tokens, reason = _budget(limit, default_max_tokens)
    stream = payload.get("stream") is True
    prompt_tokens = text.count_tokens(inputs)
    details = params.get("details") is True
    return Job(
        False,
        served_model,
        inputs,
        max_tokens,
        reason,
        stream,
        False,
        prompt_tokens,
        False,
        details,
    )


_TOKEN_IDS = {" " + word: i + 3 for i, word in enumerate(text.VOCABULARY)}
_TGI_FINGERPRINT = "3.3.6-native"  # TGI's "{version}-{docker_label or native}"
LMI_ERROR = "exception occurred during rolling batch inference"
"""LMI's own ``error_msg`` (djl_python/rolling_batch/rolling_batch.py)."""


class ContainerStream:
    """One request's bytes as its container writes them: ``first()``, each
    ``token(i)``, then ``end(sent)``; or ``complete()`` when not streaming.

    The shapes follow each container's own source:

    - ``vllm``: vLLM's chunk shapes as SSE, usage and ``[DONE]``
      (:mod:`emulators.openai_wire`).
    - TGI chat (the Messages API, text-generation-inference ``router/src/chat.rs``
      ``create_event_from_stream_token``, ``router/src/lib.rs`` ``ChatCompletionChunk``):
      ``id`` empty, ``system_fingerprint``, the role on every delta, the EOS token
      (special) as an empty delta with ``finish_reason`` "stop", usage (when asked)
      on its own chunk with no choices, then ``[DONE]``.
    - TGI generate (text-generation-inference ``router/src/server.rs``
      ``generate_stream``, ``router/src/lib.rs`` ``StreamResponse``): ``data:{json}``
      events whose ``index`` counts from 1, ``token`` ``{id, text, logprob,
      special}``, the last with ``generated_text`` and, when the request asked
      for ``details``, ``StreamDetails`` ``{finish_reason, generated_tokens,
      seed, input_length}``; a natural stop ends with the EOS token, ``special``.
    - LMI generate (djl-serving ``djl_python/output_formatter.py``
      ``_jsonlines_output_formatter``, ``request_io.py`` ``Token.as_dict``): one
      ``{"token": {id, text, log_prob}}`` per line, the last with
      ``generated_text`` and, when asked, ``details`` ``{finish_reason,
      generated_tokens, inputs}``; LMI's finish reasons (``eos_token``,
      ``length``), an EOS token with no text (vLLM's, ``rolling_batch_vllm_utils.py``).
    - LMI chat (``_jsonlines_chat_output_formatter``): one ``chat.completion.chunk``
      per line without ``model`` or usage, no role-only chunk (the first token's
      delta carries the role), LMI's own finish reasons.
    """

    def __init__(self, container: Container, job: Job) -> None:
        self.job = job
        self.container = container
        self.tokens = text.generate(job.context, job.max_tokens)
        if job.openai:
            native = container != "vllm" and job.chat
            self.style: str = f"{container}_chat" if native else "openai"
        else:
            self.style = container
        self.sse = container != "lmi"
        self._envelope = chunk_envelope(job.chat, job.model)

    @property
    def content_type(self) -> str:
        return "text/event-stream" if self.sse else "application/jsonlines"

    @property
    def _native_reason(self) -> str:
        """TGI's and LMI's name for this job's finish: eos_token or length."""
        return "eos_token" if self.job.finish_reason == "stop" else "length"

    def _frame(self, obj: Any) -> bytes:
        data = orjson.dumps(obj)
        if not self.sse:
            return data + b"\n"
        return (b"data:" if self.style.startswith("tgi") else b"data: ") + data + b"\n\n"

    def _chunk(self, text_: str | None, reason: str | None, role: bool = False) -> bytes:
        if self.job.chat:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text_ is not None:
                delta["content"] = text_
            choice: dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text_ or ""}
        choice.update(logprobs=None, finish_reason=reason)
        return self._frame({**self._envelope, "choices": [choice]})

    def _lmi_chat(self, text_: str, reason: str | None, first: bool) -> bytes:
        delta = {"content": text_, **({"role": "assistant"} if first else {})}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return self._frame(
            {
                "id": self._envelope["id"],
                "object": "chat.completion.chunk",
                "created": self._envelope["created"],
                "choices": [choice],
            }
        )

    def _tgi_chat(self, text_: str | None, reason: str | None, used: int | None = None) -> bytes:
        """TGI's ``ChatCompletionChunk`` (``object`` from its ``CompletionType`` tag): the
        role on every delta, ``usage`` null but on its own final chunk."""
        chunk: dict[str, Any] = {
            "object": "chat.completion.chunk",
            "id": "",
            "created": self._envelope["created"],
            "model": self.job.model,
            "system_fingerprint": _TGI_FINGERPRINT,
            "choices": [],
            "usage": None,
        }
        if used is not None:
            chunk["usage"] = usage(self.job.prompt_tokens, used)
        else:
            delta = {"role": "assistant", "content": text_}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            chunk["choices"] = [choice]
        return self._frame(chunk)

    def _final(self, generated: int) -> dict[str, Any]:
        """The last event's ``generated_text`` and (when asked) ``details``."""
        final: dict[str, Any] = {"generated_text": "".join(self.tokens)}
        if not self.job.details:
            return final
        details: dict[str, Any] = {
            "finish_reason": self._native_reason,
            "generated_tokens": generated,
        }
        if self.style == "tgi":
            details.update(seed=None, input_length=self.job.prompt_tokens)
        else:
            details["inputs"] = self.job.context
        return {**final, "details": details}

    def first(self) -> bytes:
        return self._chunk("", None, role=True) if self.style == "openai" and self.job.chat else b""

    def token(self, i: int) -> bytes:
        tok, last = self.tokens[i], i == len(self.tokens) - 1
        eos = self.job.finish_reason == "stop"
        if self.style == "openai":
            return self._chunk(tok, self.job.finish_reason if last else None)
        if self.style == "lmi_chat":
            return self._lmi_chat(tok, self._native_reason if last and not eos else None, i == 0)
        if self.style == "tgi_chat":
            return self._tgi_chat(tok, "length" if last and not eos else None)
        final = self._final(len(self.tokens)) if last and not eos else {}
        if self.style == "tgi":
            token = {"id": _TOKEN_IDS[tok], "text": tok, "logprob": -0.5, "special": False}
            body = {"index": i + 1, "token": token, "generated_text": None, "details": None}
            return self._frame({**body, **final})
        return self._frame(
            {"token": {"id": _TOKEN_IDS[tok], "text": tok, "log_prob": -0.5}, **final}
        )

    def end(self, sent: int) -> bytes:
        if self.style == "openai":
            out = b""
            if self.job.include_usage:
                used = usage(self.job.prompt_tokens, sent)
                out = self._frame({**self._envelope, "choices": [], "usage": used})
            return out + (SSE_DONE if self.sse else b"")
        if self.style == "tgi_chat":
            # the EOS token is special: no content, finish_reason eos_token formatted "stop"
            stopped = self.job.finish_reason == "stop"
            out = self._tgi_chat("", "stop") if stopped else b""
            if self.job.include_usage:
                out += self._tgi_chat(None, None, used=sent + (1 if stopped else 0))
            return out + b"data:[DONE]\n\n"
        if self.job.finish_reason != "stop":
            return b""
        if self.style == "lmi_chat":
            return self._lmi_chat("", "eos_token", sent == 0)
        final = self._final(sent + 1)
        if self.style == "tgi":
            eos = {"id": 2, "text": "</s>", "logprob": -0.1, "special": True}
            return self._frame({"index": sent + 1, "token": eos, **final})
        return self._frame({"token": {"id": 2, "text": "", "log_prob": -0.1}, **final})

    def error(self, sent: int) -> bytes:
        """The container's own report of a generation that failed after ``sent`` tokens.

        LMI: ``stop_on_any_exception`` (djl_python/rolling_batch/rolling_batch.py)
        ends the request with ``Token(-1, "", log_prob=-1, special_token=True,
        error_msg=...)`` and finish reason ``error``, which the jsonlines formatters
        write as the last line (``details`` holds the reason even when not asked
        for, ``get_details_dict``). TGI: ``ErrorResponse`` ``{error, error_type}``
        as an SSE event (router/src/lib.rs, infer ``error_type`` "generation").
        vLLM: its error body ``{"error": {...}}`` as an SSE event."""
        if self.style == "lmi_chat":
            return self._lmi_chat("", "error", sent == 0)
        if self.style == "lmi":
            token = {
                "id": -1,
                "text": "",
                "log_prob": -1,
                "special_token": True,
                "error_msg": LMI_ERROR,
            }
            details: dict[str, Any] = {"finish_reason": "error"}
            if self.job.details:
                details.update(generated_tokens=sent + 1, inputs=self.job.context)
            final = {"generated_text": "".join(self.tokens[:sent]), "details": details}
            return self._frame({"token": token, **final})
        if self.container == "tgi":
            event = {
                "error": "Request failed during generation: emulated",
                "error_type": "generation",
            }
            return b"data:" + orjson.dumps(event) + b"\n\n"
        body = {"message": "emulated", "type": "InternalServerError", "param": None, "code": 500}
        return b"data: " + orjson.dumps({"error": body}) + b"\n\n"

    def complete(self) -> bytes:
        """The non-streaming answer: OpenAI objects, TGI's ``[{generated_text}]``, LMI's object."""
        generated = "".join(self.tokens)
        if self.style == "tgi":
            return orjson.dumps([{"generated_text": generated}])
        if self.style == "lmi":
            return orjson.dumps({"generated_text": generated})
        job, n = self.job, len(self.tokens)
        choice: dict[str, Any] = {"index": 0}
        if job.chat:
            choice["message"] = {"role": "assistant", "content": generated}
        else:
            choice["text"] = generated
        reason = self._native_reason if self.style == "lmi_chat" else job.finish_reason
        choice.update(logprobs=None, finish_reason=reason)
        used = usage(job.prompt_tokens, n)
        obj = "chat.completion" if job.chat else "text_completion"
        envelope = {**self._envelope, "object": obj}
        if self.style == "lmi_chat":
            del envelope["model"]  # _json_chat_output_formatter sends none
        return orjson.dumps({**envelope, "choices": [choice], "usage": used})


def fault_timing(ttft: float, itl: float, fault: Faults | None) -> tuple[float, float]:
    """The first-token delay and inter-token interval after the faults' overrides."""
    if fault is not None:
        ttft = fault.ttft_s if fault.ttft_s is not None else ttft
        itl = fault.itl_s if fault.itl_s is not None else itl
        itl = fault.drip_interval_s if fault.drip_interval_s is not None else itl
    return ttft, itl


@dataclass(slots=True)
class Playback:
    """How one stream is played: timing, where faults cut it, and what it has sent."""

    ttft: float
    itl: float
    stall_at: int | None = None
    reset_at: int | None = None
    error_at: int | None = None
    error: bytes = b""
    """Bytes written (already framed) at ``error_at`` before the body ends."""
    sent: int = 0

    @classmethod
    def of(cls, ttft: float, itl: float, fault: Faults | None) -> Playback:
        if fault is None:
            return cls(ttft, itl)
        return cls(ttft, itl, fault.stall_after_tokens, fault.reset_after_tokens)


async def play(
    request: web.Request,
    response: web.StreamResponse,
    stream: ContainerStream,
    playback: Playback,
    frame: Callable[[bytes], bytes],
) -> bool:
    """Write ``stream`` on a fixed token schedule (no drift), ``frame`` wrapping each
    write; True when it ended normally, False when a fault cut it."""
    loop = asyncio.get_running_loop()
    if playback.ttft > 0:
        await asyncio.sleep(playback.ttft)
    due = loop.time()
    pending = stream.first()
    for i in range(len(stream.tokens) + 1):
        if i == playback.stall_at:
            await asyncio.Event().wait()  # until the client leaves or the emulator stops
        if i == playback.reset_at:
            reset_connection(request)
            return False
        if i == playback.error_at:
            await response.write(frame(pending) + playback.error)
            await response.write_eof()
            return False
        if i == len(stream.tokens):
            break
        if i and playback.itl > 0:
            due += playback.itl
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await response.write(frame(pending + stream.token(i)))
        pending = b""
        playback.sent += 1
    await response.write(frame(stream.end(playback.sent)))
    await response.write_eof()
    return True


def reset_connection(request: web.Request) -> None:
    """Abort the TCP connection (RST): the client sees a broken stream."""
    if request.transport is not None:
        request.transport.abort()
