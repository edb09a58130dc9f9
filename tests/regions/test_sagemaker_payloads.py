"""Container payloads inside SageMaker streams: request bodies and decoding across any split."""

from __future__ import annotations

import re

import orjson
import pytest

from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage
from regions.request import GenerationRequest, Kind, Message, Sampling
from regions.sagemaker_payloads import PayloadDecoder, build_body

TGI_GENERATE = (
    b'data:{"index":0,"token":{"id":5,"text":" a","logprob":-1,"special":false},'
    b'"generated_text":null,"details":null}\n\n'
    b'data:{"index":1,"token":{"id":6,"text":" b\xc3\xa9","logprob":-1,"special":false},'
    b'"generated_text":null,"details":null}\n\n'
    b'data:{"index":2,"token":{"id":2,"text":"</s>","logprob":-1,"special":true},'
    b'"generated_text":" a b\xc3\xa9","details":{"finish_reason":"eos_token","generated_tokens":3}}\n\n'
)
LMI_LINES = (
    b'{"token":{"id":5,"text":" a","log_prob":-1}}\n'
    b'{"token":{"id":6,"text":" b","log_prob":-1},"generated_text":" a b",'
    b'"details":{"finish_reason":"length","generated_tokens":2,"inputs":"x"}}\n'
)
OPENAI_SSE = (
    b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
    b'"delta":{"content":" a"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
    b'"delta":{"content":" b"},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[],'
    b'"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}\n\n'
    b"data: [DONE]\n\n"
)


def decode(data: bytes, step: int, chat: bool = True, passthrough: bool = False) -> list[Event]:
    decoder = PayloadDecoder(chat, passthrough)
    events: list[Event] = []
    for i in range(0, len(data), step):
        events += decoder.feed(data[i : i + step])
    return events + decoder.close()


def summary(events: list[Event]) -> tuple[str, str | None, tuple[int, int] | None]:
    text = "".join(e.text for e in events if isinstance(e, TokenDelta))
    finish = next((e.reason for e in events if isinstance(e, Finish)), None)
    usage = next(
        ((e.prompt_tokens, e.completion_tokens) for e in events if isinstance(e, Usage)), None
    )
    return text, finish, usage


@pytest.mark.parametrize(
    ("data", "chat", "expected"),
    [
        (TGI_GENERATE, False, (" a bé", "stop", (0, 3))),
        (LMI_LINES, False, (" a b", "length", (0, 2))),
        (OPENAI_SSE, True, (" a b", "stop", (4, 2))),
        (OPENAI_SSE.replace(b"\n\n", b"\r\n\r\n"), True, (" a b", "stop", (4, 2))),
        (OPENAI_SSE.replace(b"\n", b"\r"), True, (" a b", "stop", (4, 2))),
        (LMI_LINES.replace(b"\n", b"\r"), False, (" a b", "length", (0, 2))),
        (
            OPENAI_SSE.replace(b"data: ", b"").replace(b"\n\n", b"\n"),
            True,
            (" a b", "stop", (4, 2)),
        ),
        (b"data:" + LMI_LINES.replace(b"\n", b"\n\ndata:")[:-5], False, (" a b", "length", (0, 2))),
    ],
    ids=[
        "tgi-generate",
        "lmi-jsonlines",
        "openai-sse",
        "crlf",
        "cr-only",
        "lmi-cr-only",
        "lmi-chat-lines",
        "lmi-sse",
    ],
)
def test_every_format_parses_at_every_split(
    data: bytes, chat: bool, expected: tuple[str, str, tuple[int, int]]
) -> None:
    for step in range(1, len(data) + 1):
        assert summary(decode(data, step, chat)) == expected, step


def test_passthrough_keeps_each_openai_event_bytes() -> None:
    events = decode(OPENAI_SSE, 7, passthrough=True)
    forwarded = b"".join(e.raw or b"" for e in events if isinstance(e, TokenDelta | Finish))
    usage = next(e for e in events if isinstance(e, Usage))
    assert forwarded + (usage.raw or b"") == OPENAI_SSE.removesuffix(b"data: [DONE]\n\n")
    assert isinstance(events[0], TokenDelta) and events[0].text == ""  # the role chunk
    assert [type(e).__name__ for e in events] == [
        "TokenDelta",
        "TokenDelta",
        "TokenDelta",
        "Finish",
        "Usage",
    ]


def test_started_comes_with_the_first_token_not_the_role_chunk() -> None:
    """``started`` tells the body's reader when its reads may be paced (regions.pacing):
    the role chunk (``content: ""``) is not the answer's start, the first text is."""
    role, token = OPENAI_SSE.split(b"\n\n")[:2]
    decoder = PayloadDecoder(True, passthrough=True)
    assert decoder.feed(role + b"\n\n") and not decoder.started
    assert decoder.feed(token[:20]) == [] and not decoder.started  # half an event
    assert decoder.feed(token[20:] + b"\n\n") and decoder.started


def test_without_passthrough_raw_is_none_and_role_chunk_dropped() -> None:
    events = decode(OPENAI_SSE, 11)
    assert all(getattr(e, "raw", None) is None for e in events)
    assert [e.text for e in events if isinstance(e, TokenDelta)] == [" a", " b"]


def test_usage_on_the_final_content_chunk() -> None:
    chunk: dict[str, object] = {
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "length"}]
    }
    chunk["usage"] = {"prompt_tokens": 2, "completion_tokens": 1}
    events = decode(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n", 5)
    assert summary(events) == ("x", "length", (2, 1))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (OPENAI_SSE[:200], "ended before a finish reason"),
        (b"data: [DONE]\n\n", "[DONE] before a finish reason"),
        (b"data: {not json\n\n", "malformed"),
        (b'data: {"error":{"message":"engine dead"}}\n\n', "engine dead"),
        (b'data:{"error":"Request failed","error_type":"generation"}\n\n', "Request failed"),
        (
            b'{"token":{"id":-1,"text":"","log_prob":-1},"details":{"finish_reason":"error"}}\n',
            "generation error",
        ),
    ],
)
def test_broken_payloads_are_stream_broken(data: bytes, message: str) -> None:
    with pytest.raises(BackendError, match=re.escape(message)) as info:
        decode(data, 3)
    assert info.value.failure is FailureClass.STREAM_BROKEN


def test_an_unterminated_last_line_still_counts() -> None:
    assert summary(decode(LMI_LINES.rstrip(b"\n"), 4, chat=False)) == (" a b", "length", (0, 2))


def chat_request(**kwargs: object) -> GenerationRequest:
    return GenerationRequest(
        kind=Kind.CHAT,
        model="m",
        request_id="r",
        messages=(Message("user", "hi"),),
        sampling=Sampling(max_tokens=5, temperature=0.0, stop=("\n",)),
        **kwargs,  # type: ignore[arg-type]
    )


def completion_request(**kwargs: object) -> GenerationRequest:
    return GenerationRequest(
        kind=Kind.COMPLETION,
        model="m",
        request_id="r",
        prompt="Once",
        sampling=Sampling(max_tokens=5, temperature=0.7, top_p=1.0, seed=3, stop=("x",)),
        **kwargs,  # type: ignore[arg-type]
    )


def test_vllm_body_is_openai_with_continue_final_message() -> None:
    body = orjson.loads(build_body(chat_request(assistant_prefix=" so"), "vllm", "served"))
    assert body["model"] == "served" and body["stream"] is True
    assert body["messages"][-1] == {"role": "assistant", "content": " so"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["stream_options"] == {"include_usage": True}
    completion = orjson.loads(build_body(completion_request(assistant_prefix=" so"), "vllm", "s"))
    assert completion["prompt"] == "Once so"


@pytest.mark.parametrize("container", ["tgi", "lmi"])
def test_generate_bodies_append_the_prefix_to_inputs(container: str) -> None:
    body = orjson.loads(build_body(completion_request(assistant_prefix=" upon"), container, "s"))  # type: ignore[arg-type]
    assert body["inputs"] == "Once upon" and body["stream"] is True
    params = body["parameters"]
    assert params["max_new_tokens"] == 5 and params["details"] is True
    assert params["temperature"] == 0.7 and params["do_sample"] is True
    assert "top_p" not in params  # TGI rejects top_p == 1.0
    stop_key = "stop" if container == "tgi" else "stop_sequences"
    assert params[stop_key] == ["x"]


@pytest.mark.parametrize("container", ["tgi", "lmi"])
def test_chat_bodies_end_with_the_assistant_prefix(container: str) -> None:
    body = orjson.loads(build_body(chat_request(assistant_prefix=" so"), container, "s"))  # type: ignore[arg-type]
    assert body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": " so"},
    ]
    assert "continue_final_message" not in body
    assert body["temperature"] == 0.0 and body["max_tokens"] == 5


def _choice_chunk(index: int, content: str, finish: str | None = None) -> bytes:
    choice = {"index": index, "delta": {"content": content}, "finish_reason": finish}
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


TWO_CHOICES = (
    _choice_chunk(0, " a")
    + _choice_chunk(1, " x")
    + _choice_chunk(0, " b", "stop")
    + _choice_chunk(0, " late")  # after its own finish: not the answer
    + _choice_chunk(1, " y", "length")
    + b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("step", [1, 7, len(TWO_CHOICES)])
def test_several_choices_end_when_every_choice_has_finished(step: int) -> None:
    """vLLM's n > 1 on SageMaker/Vertex: each choice's chunks pass through, the first
    choice's finish is content, one Finish ends the answer after the last."""
    decoder = PayloadDecoder(True, passthrough=True, choices=2)
    events: list[Event] = []
    for i in range(0, len(TWO_CHOICES), step):
        events += decoder.feed(TWO_CHOICES[i : i + step])
    events += decoder.close()
    deltas = [e for e in events if isinstance(e, TokenDelta)]
    assert [e.text for e in deltas] == [" a", " x", " b", " y"]
    assert all(e.raw for e in deltas)
    assert [e.reason for e in events if isinstance(e, Finish)] == ["length"]
    assert isinstance(events[-1], Finish)


def test_a_choice_not_asked_for_is_a_broken_stream() -> None:
    decoder = PayloadDecoder(True, passthrough=True, choices=2)
    with pytest.raises(BackendError) as caught:
        decoder.feed(_choice_chunk(2, " z"))
    assert caught.value.failure is FailureClass.STREAM_BROKEN
    with pytest.raises(BackendError):
        PayloadDecoder(True, passthrough=True).feed(_choice_chunk(1, " z"))


def test_several_choices_cut_before_the_last_finish_are_broken() -> None:
    decoder = PayloadDecoder(True, passthrough=True, choices=2)
    decoder.feed(_choice_chunk(0, " a", "stop") + _choice_chunk(1, " x"))
    with pytest.raises(BackendError) as caught:
        decoder.close()
    assert "before a finish reason" in str(caught.value)
