"""Random tokens (revisions, write intents, query epochs): unique per draw, in every process,
whatever the application seeds."""

from __future__ import annotations

import os
import random
import re

import pytest

from gateway import tokens
from gateway.revisions import RevisionMaker, parse_generation, random_token
from gateway.tokens import random_hex

TOKEN = re.compile(r"\A[0-9a-f]{32}\Z")


def test_a_token_is_32_hex_digits_and_a_revision_parses() -> None:
    tokens = {random_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(TOKEN.match(token) for token in tokens)  # leading zeros kept
    assert parse_generation(RevisionMaker().make(1795581320239695)) == 1795581320239695


def test_a_write_intent_token_has_the_digits_asked_for() -> None:
    tokens = {random_hex(16) for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(re.fullmatch(r"[0-9a-f]{16}", token) for token in tokens)


@pytest.mark.parametrize("digits", [0, 1, 15, -2])
def test_an_odd_or_empty_length_is_refused(digits: int) -> None:
    with pytest.raises(ValueError, match="even number"):
        random_hex(digits)


def test_seeding_the_applications_random_does_not_repeat_tokens() -> None:
    state = random.getstate()
    try:
        random.seed(42)
        first = [random_token() for _ in range(3)]
        random.seed(42)
        second = [random_token() for _ in range(3)]
    finally:
        random.setstate(state)
    assert not set(first) & set(second)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_other_tokens_than_its_parent() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first tokens, to the parent; never returns into pytest
        try:
            os.write(write_end, "".join(random_token() for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    assert len(child) == 128
    parent = "".join(random_token() for _ in range(4))
    # Without a new seed in the child, both would draw the same next tokens.
    assert {child[i : i + 32] for i in range(0, 128, 32)}.isdisjoint(
        parent[i : i + 32] for i in range(0, 128, 32)
    )


def test_a_copy_of_the_process_made_without_fork_draws_other_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two environments restored from one memory snapshot share the generator's state.
    snapshot = tokens._TOKENS.getstate()
    monkeypatch.setattr(tokens, "_clock_ns", lambda: 1_795_700_000_000_000_001)
    first = [random_hex(16), random_hex(32)]
    tokens._TOKENS.setstate(snapshot)
    monkeypatch.setattr(tokens, "_clock_ns", lambda: 1_795_700_000_000_000_002)
    second = [random_hex(16), random_hex(32)]
    assert not set(first) & set(second)
    # The clock only tells the copies apart: the same state at the same instant repeats.
    tokens._TOKENS.setstate(snapshot)
    monkeypatch.setattr(tokens, "_clock_ns", lambda: 1_795_700_000_000_000_001)
    assert [random_hex(16), random_hex(32)] == first
