"""gRPC's own validation (gateway/grpc/validate.py) against the HTTP schema's, as a property.

For a chat, completion or embedding request said both ways (the OpenAI JSON body
and the protobuf message), both edges must agree: both accept it, as the same
internal request (model, messages, sampling, choices), or both refuse it. The
generated values straddle every bound (lengths, counts, int32/int64 edges,
doubles just outside a range); values one wire cannot carry (an int beyond
int32 in ``max_tokens``, NaN in JSON) are not generated.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.grpc import validate
from gateway.grpc.status import Refusal
from gateway.http import embeddings as http_embeddings
from gateway.http.schema import BadRequest, parse_request
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions.request import GenerationRequest, Kind, Residency

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
ROLES = st.sampled_from(validate.ROLES) | st.sampled_from(["", "robot", "User"])


def near(*bounds: float) -> st.SearchStrategy[float]:
    """Doubles at, just inside and just outside each bound, or anywhere finite."""
    edges = [b + d for b in bounds for d in (-1e-9, 0.0, 1e-9)]
    return st.sampled_from(edges) | st.floats(allow_nan=False, allow_infinity=False)


def text(most: int) -> st.SearchStrategy[str]:
    lengths = st.sampled_from([0, 1, most - 1, most, most + 1])
    short = st.text(min_size=1, max_size=8)
    return lengths.flatmap(lambda n: st.text(min_size=n, max_size=n)) | short


def ints(low: int, high: int, lo: int, hi: int) -> st.SearchStrategy[int]:
    """Ints the wire holds (``lo..hi``), often at the rule's bounds ``low..high``."""
    edges = [v for b in (low, high) for v in (b - 1, b, b + 1) if lo <= v <= hi]
    return st.sampled_from(edges) | st.integers(lo, hi)


def absent_or(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | values


# Each field: (a valid value or none, any value the wire holds).
SAMPLING_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "max_tokens": (st.integers(1, 4096), ints(1, 2**31 - 1, *INT32)),
    "temperature": (st.floats(0.0, 2.0), near(0.0, 2.0)),
    "top_p": (st.floats(0.0, 1.0), near(0.0, 1.0)),
    "presence_penalty": (st.floats(-2.0, 2.0), near(-2.0, 2.0)),
    "frequency_penalty": (st.floats(-2.0, 2.0), near(-2.0, 2.0)),
    "seed": (st.integers(-5, 5), ints(*INT64, *INT64)),
    "stop": (
        st.lists(st.text(max_size=4), max_size=4),
        st.sampled_from([0, 1, 4, 5, 6]).flatmap(
            lambda n: st.lists(st.text(max_size=4), min_size=n, max_size=n)
        ),
    ),
}
COMMON_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "model": (st.text(min_size=1, max_size=8), text(256)),
    "user": (st.text(max_size=8), text(256)),
    **SAMPLING_FIELDS,
}


REQUIRED = frozenset({"model", "messages", "prompt"})


def one_fault(
    fields: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]],
) -> st.SearchStrategy[dict[str, Any]]:
    """A request valid but for at most one field, which takes any value its wire holds
    (a field with one fault shows a bound one edge applies and the other does not)."""

    def draw(fault: str | None) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                name: anything
                if name == fault
                else (valid if name in REQUIRED else absent_or(valid))
                for name, (valid, anything) in fields.items()
            }
        )

    return st.sampled_from([None, *fields]).flatmap(draw)


def sampling_of(case: dict[str, Any]) -> dict[str, Any]:
    return {k: case[k] for k in SAMPLING_FIELDS if case.get(k) is not None}


def identity() -> dict[str, Any]:
    return {
        "request_id": "0123456789abcdef0123456789abcdef",
        "tenant": "t",
        "residency": Residency(),
        "key_digest": "k",
    }


def without_key(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "key_digest"}


def http_body(case: dict[str, Any], **rest: Any) -> bytes:
    body: dict[str, Any] = {"model": case["model"], **sampling_of(case), **rest}
    if case["user"] is not None:
        body["user"] = case["user"]
    return orjson.dumps(body)


def routing(case: dict[str, Any]) -> pb.Routing:
    return pb.Routing(user=case["user"] or "")


def verdicts(http: Any, grpc: Any) -> tuple[GenerationRequest | str, GenerationRequest | str]:
    """Each edge's request, or the refusal's message."""
    out: list[GenerationRequest | str] = []
    for call, refused in ((http, BadRequest), (grpc, Refusal)):
        try:
            out.append(call())
        except refused as exc:
            out.append(f"refused: {exc}")
    return out[0], out[1]


def agree(h: GenerationRequest | str, g: GenerationRequest | str) -> None:
    assert isinstance(h, str) == isinstance(g, str), f"HTTP {h!r} but gRPC {g!r}"
    if isinstance(h, GenerationRequest) and isinstance(g, GenerationRequest):
        assert (h.model, h.messages, h.prompt, h.sampling, h.choices) == (
            g.model,
            g.messages,
            g.prompt,
            g.sampling,
            g.choices,
        )


fast = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


PART_TYPES = st.sampled_from(["text", "image_url"]) | st.sampled_from(["", "t" * 64, "t" * 65])
MESSAGE = st.tuples(
    ROLES, st.text(max_size=6), st.lists(st.tuples(PART_TYPES, st.text(max_size=4)), max_size=2)
)
MESSAGES: st.SearchStrategy[list[Any]] = st.lists(MESSAGE, min_size=1, max_size=3) | st.just([])
VALID_MESSAGE = st.tuples(
    st.sampled_from(validate.ROLES),
    st.text(max_size=6),
    st.lists(st.tuples(st.sampled_from(["text", "image_url"]), st.text(max_size=4)), max_size=2),
)
EXTRA_NAMES = ["top_k", "min_p", "metadata", "store", "guided_json", "functions", "function_call"]
EXTRA = st.dictionaries(
    st.sampled_from(EXTRA_NAMES),
    st.none() | st.sampled_from(["auto", "none", 0, 2, [], {"a": 1}]),
    max_size=3,
)
CHAT_FIELDS = {
    **COMMON_FIELDS,
    "messages": (st.lists(VALID_MESSAGE, min_size=1, max_size=3), MESSAGES),
    "extra": (EXTRA, EXTRA),
}


def http_message(role: str, content: str, parts: list[tuple[str, str]]) -> dict[str, Any]:
    """The gRPC message as OpenAI JSON: ``content`` then the parts (inference.proto)."""
    if not parts:
        return {"role": role, "content": content}
    listed = [{"type": "text", "text": content}] if content else []
    return {"role": role, "content": listed + [{"type": t, "text": x} for t, x in parts]}


def grpc_message(role: str, content: str, parts: list[tuple[str, str]]) -> pb.Message:
    listed = [pb.ContentPart(type=t, text=x) for t, x in parts]
    return pb.Message(role=role, content=content, parts=listed)


@fast
@given(one_fault(CHAT_FIELDS))
def test_chat_verdicts_agree(case: dict[str, Any]) -> None:
    messages = [http_message(*m) for m in case["messages"]]
    extra = case["extra"] or {}
    h, g = verdicts(
        lambda: parse_request(
            Kind.CHAT, http_body(case, messages=messages, **extra), session=None, **identity()
        ),
        lambda: validate.generation_request(
            pb.ChatRequest(
                model=case["model"],
                messages=[grpc_message(*m) for m in case["messages"]],
                sampling=pb.Sampling(**sampling_of(case)),
                routing=routing(case),
                extra_json=orjson.dumps(extra).decode() if extra else "",
            ),
            stream=False,
            **identity(),
        ),
    )
    agree(h, g)
    if isinstance(h, GenerationRequest) and isinstance(g, GenerationRequest):
        # the same capabilities asked (routing refuses both for the same reason)
        assert list(h.needs) == list(g.needs), (h.needs, g.needs)


@fast
@given(one_fault({**COMMON_FIELDS, "prompt": (st.text(max_size=6), st.text(max_size=6))}))
def test_completion_verdicts_agree(case: dict[str, Any]) -> None:
    h, g = verdicts(
        lambda: parse_request(
            Kind.COMPLETION, http_body(case, prompt=case["prompt"]), session=None, **identity()
        ),
        lambda: validate.generation_request(
            pb.CompletionRequest(
                model=case["model"],
                prompt=case["prompt"],
                sampling=pb.Sampling(**sampling_of(case)),
                routing=routing(case),
            ),
            stream=False,
            **identity(),
        ),
    )
    agree(h, g)


@fast
@given(
    st.fixed_dictionaries(
        {
            "model": text(256),
            "user": st.none() | text(256),
            "inputs": st.sampled_from([0, 1, 2, 2047, 2048, 2049]),
            "dimensions": st.none() | ints(1, 65536, 0, 2**32 - 1),
        }
    )
)
def test_embedding_verdicts_agree(case: dict[str, Any]) -> None:
    inputs = ["x"] * case["inputs"]
    body: dict[str, Any] = {"model": case["model"], "input": inputs}
    message = pb.EmbedRequest(model=case["model"], input=inputs, routing=routing(case))
    if case["user"] is not None:
        body["user"] = case["user"]
    if case["dimensions"] is not None:
        body["dimensions"] = message.dimensions = case["dimensions"]
    h, g = verdicts(
        lambda: http_embeddings.parse(orjson.dumps(body), **without_key(identity()))[0],
        lambda: validate.embed_request(message, **identity()),
    )
    agree(h, g)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_double_json_cannot_carry_is_refused_by_grpc(value: float) -> None:
    request = pb.ChatRequest(
        model="m",
        messages=[pb.Message(role="user", content="hi")],
        sampling=pb.Sampling(temperature=value),
    )
    with pytest.raises(Refusal, match=r"^sampling\.temperature: "):
        validate.generation_request(request, stream=False, **identity())
