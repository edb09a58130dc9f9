"""Deterministic "model output" for the emulators: a pure function of the context.

The emulators must produce text the tests can predict exactly, and the gateway's
mid-stream resumption needs one property above all: a stream *continued* from a
prefix must be the tail of the uninterrupted stream. So the next token depends
only on the trailing context, never on where generation started:

    next token = VOCABULARY[blake2b(last 3 whitespace-separated words) mod 256]

Each token is a single vocabulary word with a leading space, so appending a
token shifts that 3-word window by exactly one word. Hence, for any context
``P`` and ``k <= n``::

    generate(P + "".join(generate(P, n)[:k]), n - k) == generate(P, n)[k:]

Chat requests are rendered by :func:`render_chat`, built so that sending the
already-streamed text as a final assistant message (vLLM's
``continue_final_message``) yields exactly ``P + prefix``: the property above
then carries over to chat resumption.

blake2b rather than ``hash()``: Python salts ``str`` hashes per process, and the
gateway, the emulators and the tests may run in different processes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence

_WORDS = (
    "amber anchor apple arrow aspen atlas autumn badge baker bamboo banner barley basin "
    "beacon berry birch bison blade bloom border boulder branch breeze brick bridge brook "
    "bronze bucket cabin cactus camel canal candle canyon carbon cargo castle cedar cellar "
    "chalk charm cherry cider cinder circle citrus clover cobalt comet copper coral cotton "
    "crane crater crystal cypress dawn delta desert dune eagle ember engine falcon feather "
    "fern fiber field flame flint forest fossil fountain fox garden garnet glacier granite "
    "grove harbor hazel heron hollow honey horizon island ivory jade jasmine jungle kernel "
    "kettle lagoon lantern laurel lemon lilac linen lotus lumber magnet maple marble meadow "
    "mercury mesa meteor mint mirror mist moss mountain nectar needle nickel oak oasis "
    "ocean olive onyx orbit orchid otter paddle palm panda paper pearl pebble pepper pine "
    "planet plume pollen pond poplar prairie prism quartz quill rabbit raven reef ribbon "
    "ridge river robin rocket saddle saffron salmon sand satin scarlet shadow shell signal "
    "silver slate smoke sparrow spice spring spruce stone storm summit sunset swan tablet "
    "thistle thunder tide timber topaz torch tower trail tulip tundra valley velvet violet "
    "walnut willow winter wren yarrow zephyr acorn alder basil beetle blossom bramble brass "
    "canopy caramel cobble cricket dahlia denim drift elm fable fig firefly frost gale "
    "ginger glade gravel gull harvest heather hive ink iris jasper juniper kelp kite lark "
    "lava lichen lime loom lynx mango marsh melon mica moth nutmeg ochre opal orca owl "
    "pansy peach pecan petal pigeon plum puffin quince rain reed rust sage shore sky snow "
    "sorrel spark sprout "
)
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())
"""256 lowercase words; a token is one of them with a leading space."""

START_WORD = "<s>"
"""Pads the 3-word window when the context has fewer than three words."""

_WINDOW = 3
_TOKENS: tuple[str, ...] = tuple(" " + word for word in VOCABULARY)


def _pick(window: Sequence[str]) -> int:
    digest = hashlib.blake2b(" ".join(window).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % len(_TOKENS)


def _last_words(context: str) -> list[str]:
    """The trailing window of ``context``, padded at the front with START_WORD.

    ``rsplit`` with a bound scans from the end, so this costs O(window), not
    O(len(context)): prompts can be long.
    """
    words = context.rsplit(None, _WINDOW)[-_WINDOW:]
    return [START_WORD] * (_WINDOW - len(words)) + words


def render_chat(messages: Sequence[tuple[str, str]], continue_final: bool) -> str:
    """The prompt text of a chat, in the emulator's (trivial) chat template.

    Without ``continue_final`` the rendering ends with an open ``assistant:``
    turn (vLLM's ``add_generation_prompt``). With it, the final message must be
    the assistant's and its content follows ``assistant:`` directly, so
    ``render_chat(msgs + [("assistant", p)], True) == render_chat(msgs, False) + p``.
    """
    if not continue_final:
        return "\n".join(f"{role}: {content}" for role, content in messages) + "\nassistant:"
    if not messages or messages[-1][0] != "assistant":
        raise ValueError("continue_final requires a final assistant message")
    return render_chat(messages[:-1], continue_final=False) + messages[-1][1]


def next_token(context: str) -> str:
    """The token the emulated model emits after ``context``."""
    return _TOKENS[_pick(_last_words(context))]


def iter_tokens(context: str) -> Iterator[str]:
    """The endless token stream after ``context``, computed lazily.

    Equivalent to calling :func:`next_token` on the growing string, but keeps
    only the 3-word window: every token is exactly one word, so the window
    shifts by one per token and the context is never copied. Lazy so a server
    streaming a huge ``max_tokens`` never computes tokens nobody reads.
    """
    a, b, c = _last_words(context)
    while True:
        index = _pick((a, b, c))
        yield _TOKENS[index]
        a, b, c = b, c, VOCABULARY[index]


def generate(context: str, n: int) -> list[str]:
    """``n`` tokens, each computed from ``context`` plus the tokens before it."""
    return list(itertools.islice(iter_tokens(context), n))


def expected_text(context: str, n: int) -> str:
    """The text of :func:`generate`, as a client would reassemble it."""
    return "".join(generate(context, n))


def count_tokens(text: str) -> int:
    """The emulator's "tokenizer": one token per whitespace-separated word."""
    return len(text.split())
