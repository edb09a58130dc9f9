"""The emulators' deterministic text: continuation property and chat rendering."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from emulators import text

CONTEXTS = [
    "",
    "one",
    "two words",
    "exactly three words",
    "user: tell me a story about a fox\nassistant:",
    "trailing whitespace \n\t ",
    "x" * 5000 + " long last word",
]


def test_vocabulary_is_256_distinct_lowercase_words() -> None:
    assert len(text.VOCABULARY) == 256
    assert len(set(text.VOCABULARY)) == 256
    assert all(word.isalpha() and word.islower() for word in text.VOCABULARY)


def test_tokens_are_single_words_with_a_leading_space() -> None:
    for token in text.generate("user: hi\nassistant:", 50):
        assert token.startswith(" ")
        assert token[1:] in text.VOCABULARY


def test_golden_values_pin_the_function() -> None:
    # Other processes (gateway, subprocess emulators, other test runs) must
    # agree on the text; a change here breaks recorded expectations.
    assert text.generate("user: hi\nassistant:", 4) == [" shell", " zephyr", " bamboo", " lagoon"]


def test_same_text_in_another_process_with_another_hash_seed() -> None:
    code = "from emulators import text; print(text.expected_text('a b c', 20))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.rstrip("\n") == text.expected_text("a b c", 20)


@pytest.mark.parametrize("context", CONTEXTS)
def test_generate_equals_iterated_next_token(context: str) -> None:
    grown, tokens = context, []
    for _ in range(40):
        token = text.next_token(grown)
        tokens.append(token)
        grown += token
    assert text.generate(context, 40) == tokens


@pytest.mark.parametrize("context", CONTEXTS)
def test_continuation_from_any_prefix_is_the_tail(context: str) -> None:
    full = text.generate(context, 30)
    for k in range(31):
        prefix = "".join(full[:k])
        assert text.generate(context + prefix, 30 - k) == full[k:]
        assert text.expected_text(context + prefix, 30 - k) == "".join(full[k:])


def test_render_chat_layout() -> None:
    messages = [("system", "be brief"), ("user", "hi")]
    assert text.render_chat(messages, False) == "system: be brief\nuser: hi\nassistant:"


def test_render_chat_continue_final_appends_the_prefix() -> None:
    messages = [("system", "be brief"), ("user", "tell me something")]
    prompt = text.render_chat(messages, False)
    full = text.generate(prompt, 12)
    for k in (0, 1, 5, 12):
        prefix = "".join(full[:k])
        continued = text.render_chat([*messages, ("assistant", prefix)], True)
        assert continued == prompt + prefix
        assert text.generate(continued, 12 - k) == full[k:]


def test_render_chat_continue_final_needs_an_assistant_message() -> None:
    with pytest.raises(ValueError):
        text.render_chat([("user", "hi")], True)
    with pytest.raises(ValueError):
        text.render_chat([], True)


def test_count_tokens_counts_words() -> None:
    assert text.count_tokens("") == 0
    assert text.count_tokens("user: hi there\nassistant:") == 4
    assert text.count_tokens("".join(text.generate("x", 9))) == 9
