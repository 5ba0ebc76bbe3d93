"""One conformance suite for every `CacheBackend` (see ``gateway/caches/base.py``).

A backend binds it in a few lines::

    class TestMyCache(CacheBackendConformance):
        @pytest.fixture
        def backend(self) -> Iterator[MyCache]:
            cache = MyCache(...)  # fresh and empty
            yield cache
            cache.close()

and, if its clock can be faked, overrides ``advance`` (the default really sleeps, which is what
a server with its own clock, like Redis, needs: the TTL tests use ``short_ttl_s`` and then
advance by ``past_short_ttl_s``; both are class attributes a binding may shorten).

The rules are checked twice: by short deterministic sequences of calls, one rule each, and by
a model-based test that replays random sequences of reads, fills, write intents, write ends
and invalidations on the backend *and* on `gateway.caches.base.Model`, comparing every answer.
Tokens are opaque: each side uses the tokens it handed out itself (the memory backend's come
from a process-wide counter, Redis's are record versions), so only observable results are
compared. A floor (`Kind.FLOOR`, which record-returning backends like Redis hand out) reads as
a miss, as it does for the gateway.

Everything is compared by value *and type*, never by identity, so the suite holds for backends
that serialize entries to bytes as well as for in-process ones. Only the protocol's methods are
used. pytest rewrites the asserts of this module only if it is registered with
``pytest.register_assert_rewrite("tests.cache_conformance")`` before it is imported.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.caches.base import (
    DROPPED,
    KEPT,
    LATE,
    MISS,
    NO_RECORD,
    STORED,
    CacheBackend,
    End,
    Entry,
    Fill,
    Kind,
    Miss,
    Model,
    Outcome,
)

#: A realistic generation: microseconds since the epoch (see ``gateway/revisions.py``).
GEN = 1_732_500_000_000_000
#: Long enough that nothing expires during a test (entries and intents alike).
LONG_TTL_S = 600.0
#: The TTL of expiry tests, and how far they then move the clock (class attributes override).
SHORT_TTL_S = 0.3
PAST_SHORT_TTL_S = 0.4
STORED_AT = 1_732_500_000.123456

#: Keys a backend must keep apart and give back unchanged.
UNUSUAL_KEYS = [
    "users:plain",
    "users:with space",
    "users:a:b:c",
    "users:",
    "users:ünïcødé ✓ 日本語",
    "users:emoji 🎉",
    "users:" + unicodedata.normalize("NFC", "é"),
    "users:" + unicodedata.normalize("NFD", "é"),  # same text, other code points: another key
    "users:new\nline\ttab",
    "users:*?[glob]\\{x}",
    "users:" + "x" * 2048,
    "users:" + "é" * 1024,  # 2048 UTF-8 bytes
]


def rev_of(generation: int, token: str = "a") -> str:
    """A revision in the gateway's format; ``token`` (one hex digit) tells revisions apart."""
    return f"{generation}-{token * 32}"


def document_entry(
    generation: int,
    token: str = "a",
    *,
    document: dict[str, Any] | None = None,
    stored_at: float = STORED_AT,
) -> Entry:
    """A ``Kind.DOCUMENT`` entry whose document records its generation and token."""
    rev = rev_of(generation, token)
    if document is None:
        document = {"_id": "doc", "_rev": rev, "generation": Decimal(generation), "token": token}
    return Entry(Kind.DOCUMENT, generation, rev, document, stored_at)


def absent_entry(generation: int = 0, *, stored_at: float = STORED_AT) -> Entry:
    """A negative entry: generation 0 from a read, higher for a delete's tombstone."""
    return Entry(Kind.ABSENT, generation, None, None, stored_at)


def fill(
    backend: CacheBackend, key: str, entry: Entry, token: int, ttl_s: float = LONG_TTL_S
) -> None:
    """One fill (a read's result, with the token the reader took before reading)."""
    backend.fill_many([Fill(key, entry, ttl_s, token)])


def token_of(backend: CacheBackend, key: str) -> int:
    """What a reader does before reading DynamoDB: look ``key`` up, take its token."""
    return backend.read_token(key, backend.get(key))


def begin(
    backend: CacheBackend,
    key: str,
    intent: str,
    ttl_s: float = LONG_TTL_S,
    *,
    ordered: bool = False,
) -> int:
    """Register ``intent`` on ``key`` (``ordered``: a single conditional save); the writer's
    token."""
    tokens = backend.begin_write([key], intent, ttl_s, ordered)
    assert len(tokens) == 1 and type(tokens[0]) is int, tokens
    return tokens[0]


def end(
    backend: CacheBackend,
    key: str,
    intent: str,
    token: int,
    entry: Entry | None,
    ttl_s: float = LONG_TTL_S,
) -> Outcome:
    """End one write; its outcome."""
    outcomes = backend.end_write([End(key, intent, token, entry, ttl_s)])
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def answer(result: Entry | Miss) -> Entry | Miss:
    """What a reader makes of ``result``: a floor (a record without an entry) is a miss."""
    if result is MISS:
        return MISS
    assert isinstance(result, Entry), f"neither an Entry nor MISS: {result!r}"
    if result.kind is Kind.FLOOR:
        assert result.document is None, result
        return MISS
    return result


def rich_document(rev: str) -> dict[str, Any]:
    """Every kind of value a decoded DynamoDB document can hold, nested."""
    return {
        "_id": "rich ✓",
        "_rev": rev,
        "string": "héllo ✓ 日本",
        "empty_string": "",
        "none": None,
        "true": True,
        "false": False,
        "integer": Decimal("42"),
        "trailing_zero": Decimal("1.10"),
        "negative_fraction": Decimal("-0.000001"),
        "negative_zero": Decimal("-0"),
        "thirty_eight_digits": Decimal("9" * 38),
        "tiny": Decimal("1E-130"),
        "huge": Decimal("9.9E+125"),
        "binary": Binary(b"\x00\xff\x80 bytes"),
        "empty_binary": Binary(b""),
        "string_set": {"a", "b", "with space", "ü"},
        "number_set": {Decimal("1"), Decimal("2.50"), Decimal("-3E+10")},
        "binary_set": {Binary(b"\x01"), Binary(b"\x02\x03")},
        "list": [Decimal("1"), "two", None, True, [Binary(b"x"), {"deep": {"s"}}]],
        "map": {"nested": {"list": [], "map": {}, "set": {Decimal("7")}, "": "empty key"}},
        "empty_list": [],
        "empty_map": {},
        "unicode key ✓": "value",
    }


@contextmanager
def fast_thread_switching(interval_s: float = 1e-5) -> Iterator[None]:
    """Make the interpreter switch threads far more often, so that races show up in tests."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


# ------------------------------------------------------------------------------------------
# Comparisons by value and type
# ------------------------------------------------------------------------------------------


def assert_same_value(actual: Any, expected: Any, path: str = "document") -> None:
    """``actual`` equals ``expected`` with the same types all the way down (Decimals digit
    for digit, so ``1.10`` is not ``1.1``)."""
    assert type(actual) is type(expected), (
        f"{path}: {type(actual).__name__} {actual!r} != {type(expected).__name__} {expected!r}"
    )
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for name, value in expected.items():
            assert_same_value(actual[name], value, f"{path}[{name!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_same_value(got, want, f"{path}[{index}]")
    elif isinstance(expected, (set, frozenset)):
        assert _typed_reprs(actual) == _typed_reprs(expected), f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, Decimal):
        assert actual.as_tuple() == expected.as_tuple(), f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, Binary):
        assert type(actual.value) is type(expected.value), f"{path}: {actual!r} != {expected!r}"
        assert actual.value == expected.value, f"{path}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _typed_reprs(values: Any) -> set[tuple[str, str]]:
    return {(type(value).__name__, repr(value)) for value in values}


def assert_same_entry(actual: Entry | Miss, expected: Entry) -> None:
    """``actual`` is an Entry whose every field but the backend's own ``ver`` equals
    ``expected``'s, with the same types."""
    assert isinstance(actual, Entry), f"expected {expected!r}, got {actual!r}"
    assert type(actual.kind) is Kind and actual.kind is expected.kind, (actual.kind, expected.kind)
    assert type(actual.generation) is int, f"generation is a {type(actual.generation).__name__}"
    assert actual.generation == expected.generation, (actual.generation, expected.generation)
    assert type(actual.rev) is type(expected.rev) and actual.rev == expected.rev, (
        actual.rev,
        expected.rev,
    )
    assert type(actual.stored_at) is float, f"stored_at is a {type(actual.stored_at).__name__}"
    assert actual.stored_at == expected.stored_at, (actual.stored_at, expected.stored_at)
    assert type(actual.ver) is int, f"ver is a {type(actual.ver).__name__}"
    assert_same_value(actual.document, expected.document)


def assert_answer(actual: Entry | Miss, expected: Entry | Miss, context: object = "") -> None:
    """``actual`` answers like ``expected``: both misses (a floor is one), or the same entry."""
    if expected is MISS:
        assert answer(actual) is MISS, f"expected a miss, got {actual!r} {context}"
    else:
        assert isinstance(expected, Entry)
        assert answer(actual) is not MISS, f"expected {expected!r}, got {actual!r} {context}"
        assert_same_entry(actual, expected)


# ------------------------------------------------------------------------------------------
# A fake DynamoDB, so that tests replay what can really happen
# ------------------------------------------------------------------------------------------


@dataclass
class Write:
    """A write in flight: what it writes, whether DynamoDB applied it, its two tokens."""

    kind: str  # "save" (ordered: a conditional save), "put" (a batch put) or "delete"
    entry: Entry
    backend_token: int = NO_RECORD
    model_token: int = NO_RECORD
    applied: bool | None = None  # None: not yet sent; False: refused (its condition failed)


class FakeTable:
    """Documents by key, as DynamoDB holds them. Saves get generations from a clock, so a
    save that began later has a higher one; a conditional save never goes below the stored
    generation (``revisions.py``), so saves apply in generation order. A delete leaves a
    tombstone (generation 0). ``stored_at`` numbers the applied writes of a key (its
    version), so that readers can tell an older copy from a newer one."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.items = {key: absent_entry(0, stored_at=0.0) for key in keys}
        self._clock = itertools.count(GEN + 1)
        self._lock = threading.Lock()

    def new_write(self, kind: str, key: str) -> Write:
        with self._lock:
            generation = next(self._clock)
        if kind == "delete":
            return Write(kind, absent_entry(0))
        document = {"_id": key, "_rev": rev_of(generation, "c"), "generation": generation}
        return Write(kind, Entry(Kind.DOCUMENT, generation, rev_of(generation, "c"), document))

    def apply(self, key: str, write: Write) -> None:
        """DynamoDB applies ``write`` (or refuses a save whose generation is too low)."""
        with self._lock:
            current = self.items[key]
            if write.kind == "save" and current.generation >= write.entry.generation:
                write.applied = False
                return
            version = current.stored_at + 1.0
            write.entry = Entry(
                write.entry.kind,
                write.entry.generation,
                write.entry.rev,
                write.entry.document,
                version,
            )
            self.items[key] = write.entry
            write.applied = True

    def read(self, key: str) -> Entry:
        with self._lock:
            return self.items[key]


# ------------------------------------------------------------------------------------------
# The model-based test's steps
# ------------------------------------------------------------------------------------------

#: Keys, intents and reader slots of the model-based test.
MODEL_KEYS = 2
MODEL_INTENTS = ("0a1b2c3d", "4e5f6071", "8293a4b5")
MODEL_READERS = 2
#: The model's clock never moves: every TTL is long, so nothing expires on either side.
MODEL_NOW = 0.0
_WRITE_KINDS = ("save", "save", "save", "save", "put", "delete")

#: (operation, key index, choice, variant). ``begin`` starts a write of a key with an intent
#: not in flight there (the variant picks a save, ordered, a put or a delete); ``begin2`` is
#: a batch put of both keys; ``apply`` is DynamoDB applying the ``choice``-th write not yet
#: applied, ``end`` the end of the ``choice``-th write in flight (last variant and an even
#: choice: the outcome is unknown, so no entry); ``stray`` ends an intent the key does not
#: have (late); ``read`` takes reader ``choice``'s token and reads DynamoDB, ``fill`` stores
#: what it read, ``load`` does both at once. Weights favour what makes writes interact.
_model_steps = st.tuples(
    st.sampled_from(
        ["read"] * 2
        + ["load"] * 3
        + ["fill"] * 2
        + ["begin"] * 6
        + ["begin2"]
        + ["apply"] * 6
        + ["end"] * 6
        + ["stray", "invalidate"]
    ),
    st.integers(0, MODEL_KEYS - 1),
    st.integers(0, 5),
    st.integers(0, len(_WRITE_KINDS) - 1),
)


# ------------------------------------------------------------------------------------------
# The suite
# ------------------------------------------------------------------------------------------


class CacheBackendConformance:
    """What every cache backend must do; subclasses provide a ``backend`` fixture."""

    short_ttl_s = SHORT_TTL_S
    past_short_ttl_s = PAST_SHORT_TTL_S
    #: Examples of the model-based test (a binding whose calls are slow may lower it).
    model_examples = 60
    #: Whether a token taken from a hit while a write is in flight is the record's current
    #: one. False for a tiered instance serving its own copy during its own write: that copy
    #: keeps the version it was read with, so such a (distrusting) reader's fill is refused,
    #: which is safe but not what `Model` does; the model-based test then skips such readers.
    hit_tokens_during_writes = True

    def advance(self, backend: CacheBackend, seconds: float) -> None:
        """Let ``seconds`` pass on ``backend``'s clock. Override to move a fake timer."""
        time.sleep(seconds)

    def lookup(self, backend: CacheBackend, key: str) -> Entry | Miss:
        """What a reader gets for ``key`` (a floor is a miss), checking that ``get`` and
        ``get_many`` agree."""
        single = backend.get(key)
        many = backend.get_many([key])
        assert len(many) == 1, many
        result = answer(single)
        if result is MISS:
            assert answer(many[0]) is MISS, (single, many)
        else:
            assert isinstance(result, Entry)
            assert_same_entry(many[0], result)
        return result

    # -- reads -----------------------------------------------------------------------------

    def test_miss_on_empty_backend(self, backend: CacheBackend) -> None:
        assert backend.get("users:nobody") is MISS
        assert backend.get_many(["users:nobody"]) == [MISS]
        assert backend.get_many([]) == []

    def test_get_many_answers_in_order_with_a_miss_per_unknown_key(
        self, backend: CacheBackend
    ) -> None:
        one, two = document_entry(GEN + 1), document_entry(GEN + 2)
        backend.fill_many(
            [Fill("users:1", one, LONG_TTL_S, NO_RECORD), Fill("users:2", two, LONG_TTL_S, 0)]
        )

        results = backend.get_many(["users:2", "users:x", "users:1", "users:2", "users:x"])

        assert len(results) == 5
        assert_same_entry(results[0], two)
        assert results[1] is MISS
        assert_same_entry(results[2], one)
        assert_same_entry(results[3], two)
        assert results[4] is MISS

    # -- fills and tokens ------------------------------------------------------------------

    def test_fill_with_no_record_token_on_an_empty_backend_stores(
        self, backend: CacheBackend
    ) -> None:
        entry = document_entry(GEN)
        fill(backend, "users:k", entry, NO_RECORD)
        assert_same_entry(self.lookup(backend, "users:k"), entry)

    def test_read_token_is_an_int_and_a_miss_token_fills(self, backend: CacheBackend) -> None:
        token = token_of(backend, "users:k")
        assert type(token) is int
        absent = absent_entry()
        fill(backend, "users:k", absent, token)
        assert_same_entry(self.lookup(backend, "users:k"), absent)

    def test_a_token_taken_from_a_hit_fills_when_nothing_changed(
        self, backend: CacheBackend
    ) -> None:
        fill(backend, "users:k", document_entry(GEN, "a"), NO_RECORD)
        token = token_of(backend, "users:k")  # a hit: e.g. an entry the gateway distrusts
        fresher = document_entry(GEN, "b", stored_at=STORED_AT + 1)
        fill(backend, "users:k", fresher, token)
        assert_same_entry(self.lookup(backend, "users:k"), fresher)

    def test_changes_of_other_keys_do_not_refuse_a_fill(self, backend: CacheBackend) -> None:
        token = token_of(backend, "users:k")
        token_other = begin(backend, "users:other", "a1")
        assert end(backend, "users:other", "a1", token_other, document_entry(GEN)) == STORED
        backend.invalidate_many(["users:third"])
        entry = document_entry(GEN + 1)
        fill(backend, "users:k", entry, token)
        assert_same_entry(self.lookup(backend, "users:k"), entry)

    @pytest.mark.parametrize(
        "change",
        [
            "write stored",
            "save stored",
            "write failed",
            "write in flight",
            "save in flight",
            "invalidate",
            "delete_prefix",
        ],
    )
    def test_a_fill_whose_token_predates_a_change_is_refused(
        self, backend: CacheBackend, change: str
    ) -> None:
        old = document_entry(GEN)
        fill(backend, "users:k", old, NO_RECORD)
        token = token_of(backend, "users:k")  # the reader, before it reads DynamoDB
        expected: Entry | Miss = MISS
        if change == "invalidate":
            backend.invalidate_many(["users:k"])
        elif change == "delete_prefix":
            assert backend.delete_prefix("users:") == 1
        else:
            writer = begin(backend, "users:k", "a1", ordered=change.startswith("save"))
            if change.endswith("stored"):
                expected = document_entry(GEN + 1, "b")
                assert end(backend, "users:k", "a1", writer, expected) == STORED
            elif change == "write failed":
                assert end(backend, "users:k", "a1", writer, None) == DROPPED
            else:
                expected = old  # served while the write is in flight

        fill(backend, "users:k", document_entry(GEN, "c"), token)  # what it read: too old

        assert_answer(self.lookup(backend, "users:k"), expected, change)

    @pytest.mark.parametrize("ordered", [False, True])
    def test_a_fill_during_a_write_is_stored_until_the_write_ends(
        self, backend: CacheBackend, ordered: bool
    ) -> None:
        writer = begin(backend, "users:k", "a1", ordered=ordered)
        during = token_of(backend, "users:k")  # a reader that missed during the write
        read = document_entry(GEN, "c", stored_at=STORED_AT + 1)  # DynamoDB's answer then

        fill(backend, "users:k", read, during)

        assert_same_entry(self.lookup(backend, "users:k"), read)
        written = document_entry(GEN + 1, "b")
        assert end(backend, "users:k", "a1", writer, written) == STORED  # the end replaces it
        assert_same_entry(self.lookup(backend, "users:k"), written)
        fill(backend, "users:k", read, during)  # taken before the end: too old now
        assert_same_entry(self.lookup(backend, "users:k"), written)
        after = document_entry(GEN + 1, "b", stored_at=STORED_AT + 2)
        fill(backend, "users:k", after, token_of(backend, "users:k"))  # a reader after it
        assert_same_entry(self.lookup(backend, "users:k"), after)

    def test_a_failed_write_drops_a_fill_made_during_it(self, backend: CacheBackend) -> None:
        writer = begin(backend, "users:k", "a1")
        fill(backend, "users:k", document_entry(GEN), token_of(backend, "users:k"))
        assert_same_entry(self.lookup(backend, "users:k"), document_entry(GEN))
        assert end(backend, "users:k", "a1", writer, None) == DROPPED
        assert self.lookup(backend, "users:k") is MISS

    def test_a_fill_during_a_write_lives_no_longer_than_the_intent(
        self, backend: CacheBackend
    ) -> None:
        begin(backend, "users:k", "a1", self.short_ttl_s)  # a writer that never ends
        read = document_entry(GEN)
        fill(backend, "users:k", read, token_of(backend, "users:k"))
        assert_same_entry(self.lookup(backend, "users:k"), read)

        self.advance(backend, self.past_short_ttl_s)

        assert self.lookup(backend, "users:k") is MISS

    def test_fill_many_decides_each_key_on_its_own(self, backend: CacheBackend) -> None:
        stale = token_of(backend, "users:b")
        backend.invalidate_many(["users:b"])
        fresh = token_of(backend, "users:a")
        a, b, c = document_entry(GEN + 1), document_entry(GEN + 2), absent_entry()
        backend.fill_many(
            [
                Fill("users:a", a, LONG_TTL_S, fresh),
                Fill("users:b", b, LONG_TTL_S, stale),
                Fill("users:c", c, LONG_TTL_S, token_of(backend, "users:c")),
            ]
        )
        assert_same_entry(self.lookup(backend, "users:a"), a)
        assert self.lookup(backend, "users:b") is MISS
        assert_same_entry(self.lookup(backend, "users:c"), c)

    def test_fill_many_applies_fills_of_one_key_in_order(self, backend: CacheBackend) -> None:
        first, second = document_entry(GEN + 1), document_entry(GEN + 2)
        backend.fill_many(
            [Fill("users:k", first, LONG_TTL_S, 0), Fill("users:k", second, LONG_TTL_S, 0)]
        )
        assert_same_entry(self.lookup(backend, "users:k"), second)
        backend.fill_many([])

    @pytest.mark.parametrize("ttl_s", [0.0, -1.0])
    def test_a_fill_without_positive_ttl_stores_nothing_and_changes_nothing(
        self, backend: CacheBackend, ttl_s: float
    ) -> None:
        fill(backend, "users:new", document_entry(GEN), NO_RECORD, ttl_s)
        assert self.lookup(backend, "users:new") is MISS
        old = document_entry(GEN)
        fill(backend, "users:k", old, NO_RECORD)
        token = token_of(backend, "users:k")
        fill(backend, "users:k", document_entry(GEN + 1), token, ttl_s)
        assert_same_entry(self.lookup(backend, "users:k"), old)  # Model.fill: refused, no change
        newer = document_entry(GEN + 2)
        fill(backend, "users:k", newer, token)  # and the token still holds
        assert_same_entry(self.lookup(backend, "users:k"), newer)
        # During an ordered write, such a fill does not count as a generation in place either.
        writer = begin(backend, "users:k", "a1", ordered=True)
        fill(backend, "users:k", document_entry(GEN + 9), token_of(backend, "users:k"), ttl_s)
        written = document_entry(GEN + 5)
        assert end(backend, "users:k", "a1", writer, written) == STORED
        assert_same_entry(self.lookup(backend, "users:k"), written)

    # -- unordered writes (deletes, batches): stored only by a writer that was alone -----------

    @pytest.mark.parametrize("before", ["empty", "cached", "tombstone"])
    @pytest.mark.parametrize("ordered", [False, True])
    def test_a_lone_writer_stores_and_a_later_get_returns_it(
        self, backend: CacheBackend, before: str, ordered: bool
    ) -> None:
        if before == "cached":
            fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        elif before == "tombstone":
            fill(backend, "users:k", absent_entry(), NO_RECORD)
        token = begin(backend, "users:k", "a1", ordered=ordered)
        written = document_entry(GEN + 1, "b")

        assert end(backend, "users:k", "a1", token, written) == STORED

        assert_same_entry(self.lookup(backend, "users:k"), written)

    def test_a_delete_stores_its_tombstone(self, backend: CacheBackend) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        token = begin(backend, "users:k", "a1")
        tombstone = absent_entry(0)
        assert end(backend, "users:k", "a1", token, tombstone) == STORED
        assert_same_entry(self.lookup(backend, "users:k"), tombstone)

    def test_writers_one_after_the_other_both_store(self, backend: CacheBackend) -> None:
        first, second = document_entry(GEN + 1, "b"), document_entry(GEN + 2, "c")
        token = begin(backend, "users:k", "a1")
        assert end(backend, "users:k", "a1", token, first) == STORED
        token = begin(backend, "users:k", "a2")
        assert end(backend, "users:k", "a2", token, second) == STORED
        assert_same_entry(self.lookup(backend, "users:k"), second)

    @pytest.mark.parametrize("first_to_end", ["first", "second"])
    @pytest.mark.parametrize("kinds", ["unordered", "ordered and unordered"])
    def test_overlapping_writers_both_drop(
        self, backend: CacheBackend, first_to_end: str, kinds: str
    ) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        first_ordered = kinds != "unordered"
        writers = [
            ("a1", begin(backend, "users:k", "a1", ordered=first_ordered), document_entry(GEN + 1)),
            ("a2", begin(backend, "users:k", "a2"), document_entry(GEN + 2, "c")),
        ]
        if first_to_end == "second":
            writers.reverse()
        for intent, token, written in writers:
            # Nobody here knows in which order DynamoDB applied them: neither may be kept.
            assert end(backend, "users:k", intent, token, written) == DROPPED
        assert self.lookup(backend, "users:k") is MISS

    @pytest.mark.parametrize("save_ordered", [True, False])
    def test_a_save_ending_after_a_concurrent_delete_leaves_no_stale_tombstone(
        self, backend: CacheBackend, save_ordered: bool
    ) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        save = begin(backend, "users:k", "5a5e", ordered=save_ordered)
        delete = begin(backend, "users:k", "de1e7e")
        assert end(backend, "users:k", "de1e7e", delete, absent_entry(0)) == DROPPED
        assert self.lookup(backend, "users:k") is MISS  # not the tombstone
        assert end(backend, "users:k", "5a5e", save, document_entry(GEN + 2, "b")) == DROPPED
        assert self.lookup(backend, "users:k") is MISS
        recreated = document_entry(GEN + 2, "b")  # DynamoDB's answer, read afterwards
        fill(backend, "users:k", recreated, token_of(backend, "users:k"))
        assert_same_entry(self.lookup(backend, "users:k"), recreated)

    # -- ordered writes (single conditional saves): the highest generation wins ---------------

    @pytest.mark.parametrize("first_to_end", ["lower", "higher"])
    def test_overlapping_saves_leave_the_highest_generation(
        self, backend: CacheBackend, first_to_end: str
    ) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        low = ("a1", begin(backend, "users:k", "a1", ordered=True), document_entry(GEN + 1))
        high = ("a2", begin(backend, "users:k", "a2", ordered=True), document_entry(GEN + 2))
        assert_same_entry(self.lookup(backend, "users:k"), document_entry(GEN))
        if first_to_end == "lower":
            expected = [(low, STORED), (high, STORED)]
        else:
            expected = [(high, STORED), (low, KEPT)]  # DynamoDB applied them in that order
        for (intent, token, written), outcome in expected:
            assert end(backend, "users:k", intent, token, written) == outcome, intent
        assert_same_entry(self.lookup(backend, "users:k"), document_entry(GEN + 2))

    def test_a_save_keeps_a_higher_generation_in_place(self, backend: CacheBackend) -> None:
        writer = begin(backend, "users:k", "a1", ordered=True)
        newer = document_entry(GEN + 5)  # read during the save: a later save's document
        fill(backend, "users:k", newer, token_of(backend, "users:k"))
        assert end(backend, "users:k", "a1", writer, document_entry(GEN + 5, "b")) == KEPT
        assert_same_entry(self.lookup(backend, "users:k"), newer)  # equal generation: kept too
        writer = begin(backend, "users:k", "a2", ordered=True)
        assert end(backend, "users:k", "a2", writer, document_entry(GEN + 1)) == KEPT
        assert_same_entry(self.lookup(backend, "users:k"), newer)

    def test_a_save_that_began_after_a_delete_ended_is_newer_whatever_its_generation(
        self, backend: CacheBackend
    ) -> None:
        fill(backend, "users:k", document_entry(GEN + 100), NO_RECORD)
        delete = begin(backend, "users:k", "de1e7e")
        assert end(backend, "users:k", "de1e7e", delete, absent_entry(0)) == STORED
        save = begin(backend, "users:k", "5a5e", ordered=True)
        recreated = document_entry(GEN + 1)  # generations restart from the clock
        assert end(backend, "users:k", "5a5e", save, recreated) == STORED
        assert_same_entry(self.lookup(backend, "users:k"), recreated)

    @pytest.mark.parametrize("unordered", ["invalidate", "write", "write in flight"])
    def test_a_save_drops_after_anything_generations_cannot_order(
        self, backend: CacheBackend, unordered: str
    ) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        save = begin(backend, "users:k", "5a5e", ordered=True)
        if unordered == "invalidate":
            backend.invalidate_many(["users:k"])
        else:
            other = begin(backend, "users:k", "ba7c4")
            if unordered == "write":
                assert end(backend, "users:k", "ba7c4", other, absent_entry(0)) == DROPPED
        assert end(backend, "users:k", "5a5e", save, document_entry(GEN + 9)) == DROPPED
        assert self.lookup(backend, "users:k") is MISS

    def test_a_read_from_before_a_kept_save_landed_cannot_fill(self, backend: CacheBackend) -> None:
        """A save is in flight; two readers take the same token; one reads the saved document
        and fills; the save ends KEPT (equal generation); the other reader, which read the old
        document before the save landed, must not put it back (found by review)."""
        writer = begin(backend, "users:k", "a1", ordered=True)
        before, after = token_of(backend, "users:k"), token_of(backend, "users:k")
        saved = document_entry(GEN + 2)
        fill(backend, "users:k", saved, after)
        assert end(backend, "users:k", "a1", writer, saved) == KEPT
        fill(backend, "users:k", document_entry(GEN + 1), before)
        assert_same_entry(self.lookup(backend, "users:k"), saved)

    def test_intent_ids_are_letters_and_digits(self, backend: CacheBackend) -> None:
        for bad in ("w-1", "a:b", "x|y", "a,b", ""):
            with pytest.raises(ValueError, match="intent id"):
                backend.begin_write(["users:k"], bad, LONG_TTL_S)

    def test_a_read_after_a_kept_save_may_still_fill(self, backend: CacheBackend) -> None:
        fill(backend, "users:k", document_entry(GEN + 5), NO_RECORD)
        writer = begin(backend, "users:k", "a1", ordered=True)
        assert end(backend, "users:k", "a1", writer, document_entry(GEN + 1)) == KEPT
        reread = document_entry(GEN + 5, "b", stored_at=STORED_AT + 1)
        fill(backend, "users:k", reread, token_of(backend, "users:k"))
        assert_same_entry(self.lookup(backend, "users:k"), reread)

    # -- ends that drop ----------------------------------------------------------------------

    @pytest.mark.parametrize("ordered", [False, True])
    def test_an_end_without_an_entry_drops(self, backend: CacheBackend, ordered: bool) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        before = token_of(backend, "users:k")
        token = begin(backend, "users:k", "a1", ordered=ordered)
        assert end(backend, "users:k", "a1", token, None) == DROPPED
        assert self.lookup(backend, "users:k") is MISS
        fill(backend, "users:k", document_entry(GEN), before)  # read before the write: refused
        assert self.lookup(backend, "users:k") is MISS
        after = document_entry(GEN + 1)
        fill(backend, "users:k", after, token_of(backend, "users:k"))
        assert_same_entry(self.lookup(backend, "users:k"), after)

    @pytest.mark.parametrize("ttl_s", [0.0, -1.0])
    @pytest.mark.parametrize("ordered", [False, True])
    def test_an_end_without_positive_ttl_drops(
        self, backend: CacheBackend, ttl_s: float, ordered: bool
    ) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        token = begin(backend, "users:k", "a1", ordered=ordered)
        assert end(backend, "users:k", "a1", token, document_entry(GEN + 1), ttl_s) == DROPPED
        assert self.lookup(backend, "users:k") is MISS

    @pytest.mark.parametrize("ordered", [False, True])
    def test_an_end_whose_intent_expired_is_late_and_drops(
        self, backend: CacheBackend, ordered: bool
    ) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        token = begin(backend, "users:k", "a1", self.short_ttl_s, ordered=ordered)
        self.advance(backend, self.past_short_ttl_s)

        assert end(backend, "users:k", "a1", token, document_entry(GEN + 1)) == LATE

        assert self.lookup(backend, "users:k") is MISS
        after = document_entry(GEN + 1)
        fill(backend, "users:k", after, token_of(backend, "users:k"))
        assert_same_entry(self.lookup(backend, "users:k"), after)

    def test_an_end_without_a_begin_or_ended_twice_is_late(self, backend: CacheBackend) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        assert end(backend, "users:k", "0bad", NO_RECORD, document_entry(GEN + 1)) == LATE
        assert self.lookup(backend, "users:k") is MISS
        assert end(backend, "users:new", "0bad", NO_RECORD, document_entry(GEN + 1)) == LATE
        assert self.lookup(backend, "users:new") is MISS

        token = begin(backend, "users:k", "a1")
        written = document_entry(GEN + 2)
        assert end(backend, "users:k", "a1", token, written) == STORED
        assert end(backend, "users:k", "a1", token, written) == LATE
        assert self.lookup(backend, "users:k") is MISS

    # -- intents ---------------------------------------------------------------------------

    def test_the_entry_stays_served_between_begin_and_end(self, backend: CacheBackend) -> None:
        old = document_entry(GEN)
        fill(backend, "users:k", old, NO_RECORD)
        token = begin(backend, "users:k", "a1")
        # Reads never wait on writes: the write has not returned, the old copy is still right.
        assert_same_entry(self.lookup(backend, "users:k"), old)
        second = begin(backend, "users:k", "a2", ordered=True)
        assert_same_entry(self.lookup(backend, "users:k"), old)
        assert end(backend, "users:k", "a1", token, document_entry(GEN + 1)) == DROPPED
        assert self.lookup(backend, "users:k") is MISS
        assert end(backend, "users:k", "a2", second, document_entry(GEN + 2)) == DROPPED

    @pytest.mark.parametrize("ordered", [False, True])
    def test_after_begin_the_entry_lives_no_longer_than_the_intent(
        self, backend: CacheBackend, ordered: bool
    ) -> None:
        old = document_entry(GEN)
        assert end(backend, "users:k", "a0", begin(backend, "users:k", "a0"), old) == STORED
        before = token_of(backend, "users:k")  # (the token of a written entry: not NO_RECORD)
        # A writer that never ends.
        begin(backend, "users:k", "a1", self.short_ttl_s, ordered=ordered)
        assert_same_entry(self.lookup(backend, "users:k"), old)

        self.advance(backend, self.past_short_ttl_s)

        assert self.lookup(backend, "users:k") is MISS
        after = token_of(backend, "users:k")  # a reader after the deadline
        fill(backend, "users:k", old, before)  # read before the write: refused
        assert self.lookup(backend, "users:k") is MISS
        reread = document_entry(GEN + 1)  # what the later reader got from DynamoDB: kept
        fill(backend, "users:k", reread, after)
        assert_same_entry(self.lookup(backend, "users:k"), reread)

    def test_begin_never_revives_an_expired_entry(self, backend: CacheBackend) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD, self.short_ttl_s)
        self.advance(backend, self.past_short_ttl_s)
        token = begin(backend, "users:k", "a1")
        assert self.lookup(backend, "users:k") is MISS
        assert end(backend, "users:k", "a1", token, None) == DROPPED
        assert self.lookup(backend, "users:k") is MISS

    def test_writes_of_several_keys_answer_in_order(self, backend: CacheBackend) -> None:
        keys = ["users:a", "users:b", "users:c"]
        tokens = backend.begin_write(keys, "a1", LONG_TTL_S)
        assert len(tokens) == 3 and all(type(token) is int for token in tokens)
        other = begin(backend, "users:b", "a2")  # b gets a concurrent writer
        written = [document_entry(GEN + i) for i in range(3)]

        outcomes = backend.end_write(
            [
                End(key, "a1", token, entry, LONG_TTL_S)
                for key, token, entry in zip(keys, tokens, written, strict=True)
            ]
        )

        assert outcomes == [STORED, DROPPED, STORED]
        a, b, c = (self.lookup(backend, key) for key in keys)
        assert_same_entry(a, written[0])
        assert b is MISS
        assert_same_entry(c, written[2])
        assert end(backend, "users:b", "a2", other, document_entry(GEN + 5)) == DROPPED
        assert backend.begin_write([], "a3", LONG_TTL_S) == []
        assert backend.end_write([]) == []

    def test_an_invalidation_keeps_the_intents(self, backend: CacheBackend) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        token = begin(backend, "users:k", "a1")
        backend.invalidate_many(["users:k"])
        assert self.lookup(backend, "users:k") is MISS
        read = document_entry(GEN, "c")
        fill(backend, "users:k", read, token_of(backend, "users:k"))  # allowed during a write
        assert_same_entry(self.lookup(backend, "users:k"), read)
        # The invalidation changed the record: the writer is no longer known to be alone.
        assert end(backend, "users:k", "a1", token, document_entry(GEN + 1)) == DROPPED
        assert self.lookup(backend, "users:k") is MISS

    # -- invalidations: floors, not holes ----------------------------------------------------

    def test_an_invalidation_leaves_a_floor_after_the_entry_expired(
        self, backend: CacheBackend
    ) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD, self.short_ttl_s)
        token = token_of(backend, "users:k")
        backend.invalidate_many(["users:k"])
        self.advance(backend, self.past_short_ttl_s)  # the entry's TTL is over; the floor's not

        fill(backend, "users:k", document_entry(GEN), token)

        assert self.lookup(backend, "users:k") is MISS

    def test_an_invalidation_of_an_unknown_key_leaves_a_floor(
        self, backend: CacheBackend
    ) -> None:
        token = token_of(backend, "users:k")
        backend.invalidate_many(["users:k", "users:other"])
        fill(backend, "users:k", document_entry(GEN), token)
        assert self.lookup(backend, "users:k") is MISS
        fresh = document_entry(GEN + 1)
        fill(backend, "users:k", fresh, token_of(backend, "users:k"))
        assert_same_entry(self.lookup(backend, "users:k"), fresh)
        backend.invalidate_many([])

    def test_invalidate_drops_only_those_keys(self, backend: CacheBackend) -> None:
        kept = document_entry(GEN)
        backend.fill_many(
            [
                Fill("users:a", document_entry(GEN), LONG_TTL_S, 0),
                Fill("users:b", absent_entry(), LONG_TTL_S, 0),
                Fill("users:c", kept, LONG_TTL_S, 0),
            ]
        )
        backend.invalidate_many(["users:a", "users:b", "users:never-there"])
        assert [answer(r) for r in backend.get_many(["users:a", "users:b"])] == [MISS, MISS]
        assert_same_entry(self.lookup(backend, "users:c"), kept)

    # -- delete_prefix -----------------------------------------------------------------------

    def test_delete_prefix_drops_only_that_prefix_and_leaves_floors(
        self, backend: CacheBackend
    ) -> None:
        doomed = ["users:1", "users:2", "users:", "users:2:sub"]
        kept = ["users2:1", "xusers:1", "Users:1", "user:1", "other:users:1"]
        backend.fill_many([Fill(key, document_entry(GEN), LONG_TTL_S, 0) for key in doomed + kept])
        tokens = {key: token_of(backend, key) for key in doomed + kept}

        assert backend.delete_prefix("users:") == len(doomed)

        assert [answer(r) for r in backend.get_many(doomed)] == [MISS] * len(doomed)
        for result in backend.get_many(kept):
            assert_same_entry(result, document_entry(GEN))
        # Reads from before the deletion: refused under the prefix, accepted elsewhere.
        newer = document_entry(GEN + 1)
        backend.fill_many([Fill(key, newer, LONG_TTL_S, tokens[key]) for key in doomed + kept])
        assert [answer(r) for r in backend.get_many(doomed)] == [MISS] * len(doomed)
        for result in backend.get_many(kept):
            assert_same_entry(result, newer)

    def test_delete_prefix_matches_glob_characters_literally(self, backend: CacheBackend) -> None:
        special = ["t*:1", "t?:1", "t[ab]:1", "t\\:1", "t{x}:1"]
        lookalike = ["tx:1", "ta:1", "tb:1", "t[ab]x:1"]
        backend.fill_many(
            [Fill(key, document_entry(GEN), LONG_TTL_S, 0) for key in special + lookalike]
        )

        for key in special:
            assert backend.delete_prefix(key[:-1]) == 1, key

        assert [answer(r) for r in backend.get_many(special)] == [MISS] * len(special)
        for key, result in zip(lookalike, backend.get_many(lookalike), strict=True):
            assert answer(result) is not MISS, key

    def test_delete_prefix_without_match_returns_zero(self, backend: CacheBackend) -> None:
        assert backend.delete_prefix("users:") == 0
        fill(backend, "users:1", document_entry(GEN), NO_RECORD)
        assert backend.delete_prefix("orders:") == 0
        assert_same_entry(self.lookup(backend, "users:1"), document_entry(GEN))
        backend.invalidate_many(["users:1"])
        assert backend.delete_prefix("users:") == 0  # a floor is not an entry

    # -- TTL -------------------------------------------------------------------------------

    def test_a_fill_expires_after_its_ttl(self, backend: CacheBackend) -> None:
        entry = document_entry(GEN)
        backend.fill_many(
            [
                Fill("users:short", entry, self.short_ttl_s, NO_RECORD),
                Fill("users:long", entry, LONG_TTL_S, NO_RECORD),
            ]
        )
        assert_same_entry(self.lookup(backend, "users:short"), entry)

        self.advance(backend, self.past_short_ttl_s)

        assert self.lookup(backend, "users:short") is MISS
        assert_same_entry(self.lookup(backend, "users:long"), entry)
        refill = document_entry(GEN + 1)
        fill(backend, "users:short", refill, token_of(backend, "users:short"))
        assert_same_entry(self.lookup(backend, "users:short"), refill)

    def test_a_written_entry_expires_after_its_ttl(self, backend: CacheBackend) -> None:
        token = begin(backend, "users:k", "a1")
        tombstone = absent_entry(0)
        assert end(backend, "users:k", "a1", token, tombstone, self.short_ttl_s) == STORED
        assert_same_entry(self.lookup(backend, "users:k"), tombstone)
        self.advance(backend, self.past_short_ttl_s)
        assert self.lookup(backend, "users:k") is MISS

    # -- values and keys -------------------------------------------------------------------

    def test_document_entry_round_trips_exactly(self, backend: CacheBackend) -> None:
        rev = rev_of(GEN, "f")
        entry = Entry(Kind.DOCUMENT, GEN, rev, rich_document(rev), STORED_AT)
        fill(backend, "users:rich", entry, NO_RECORD)
        assert_same_entry(self.lookup(backend, "users:rich"), entry)
        token = begin(backend, "users:written", "a1", ordered=True)
        assert end(backend, "users:written", "a1", token, entry) == STORED
        assert_same_entry(self.lookup(backend, "users:written"), entry)

    @pytest.mark.parametrize(
        "generation", [0, -5, 2**60, 2**60 + 1, 9_999_999_999_999_999, 10**30]
    )
    def test_generations_round_trip_exactly(self, backend: CacheBackend, generation: int) -> None:
        # A store that kept generations as doubles would merge 2**60 and 2**60 + 1.
        entry = document_entry(generation)
        fill(backend, "users:k", entry, NO_RECORD)
        assert_same_entry(self.lookup(backend, "users:k"), entry)

    @pytest.mark.parametrize(("low", "high"), [(2**60, 2**60 + 1), (-5, 3), (9, 10), (99, 100)])
    def test_saves_compare_generations_exactly(
        self, backend: CacheBackend, low: int, high: int
    ) -> None:
        fill(backend, "users:k", document_entry(high), NO_RECORD)
        token = begin(backend, "users:k", "a1", ordered=True)
        assert end(backend, "users:k", "a1", token, document_entry(low)) == KEPT
        backend.invalidate_many(["users:k"])
        fill(backend, "users:k", document_entry(low), token_of(backend, "users:k"))
        token = begin(backend, "users:k", "a2", ordered=True)
        assert end(backend, "users:k", "a2", token, document_entry(high)) == STORED
        assert_same_entry(self.lookup(backend, "users:k"), document_entry(high))

    @pytest.mark.parametrize("key", UNUSUAL_KEYS, ids=lambda key: f"{len(key)}:{key[:16]!r}")
    def test_unusual_key_round_trips(self, backend: CacheBackend, key: str) -> None:
        entry = document_entry(GEN, document={"_id": key, "_rev": rev_of(GEN)})
        token = token_of(backend, key)
        fill(backend, key, entry, token)
        assert_same_entry(self.lookup(backend, key), entry)
        backend.invalidate_many([key])
        assert self.lookup(backend, key) is MISS
        fill(backend, key, entry, token)
        assert self.lookup(backend, key) is MISS
        writer = begin(backend, key, "a1")
        assert end(backend, key, "a1", writer, entry) == STORED
        assert_same_entry(self.lookup(backend, key), entry)

    def test_unusual_keys_are_kept_apart(self, backend: CacheBackend) -> None:
        entries = [
            document_entry(GEN + i, document={"_id": key, "_rev": rev_of(GEN + i)})
            for i, key in enumerate(UNUSUAL_KEYS)
        ]
        backend.fill_many(
            [Fill(key, e, LONG_TTL_S, 0) for key, e in zip(UNUSUAL_KEYS, entries, strict=True)]
        )
        for result, entry in zip(backend.get_many(UNUSUAL_KEYS), entries, strict=True):
            assert_same_entry(result, entry)

    def test_get_many_of_500_keys(self, backend: CacheBackend) -> None:
        keys = [f"users:{i}" for i in range(500)]
        stored = {key: document_entry(GEN + i) for i, key in enumerate(keys) if i % 3}
        backend.fill_many([Fill(key, entry, LONG_TTL_S, 0) for key, entry in stored.items()])

        results = backend.get_many(keys)

        assert len(results) == len(keys)
        for key, result in zip(keys, results, strict=True):
            if key in stored:
                assert_same_entry(result, stored[key])
            else:
                assert result is MISS, key

    # -- the rules under concurrency -----------------------------------------------------------

    def test_concurrent_readers_and_writers_leave_no_stale_entry(
        self, backend: CacheBackend
    ) -> None:
        """Writers (intent, a fake DynamoDB, end) and readers (get; on a miss: token, read,
        fill) race on two keys. A read never answers older than a write acknowledged before it
        started, and once everyone is done the cache holds DynamoDB's copy or nothing."""
        run = uuid.uuid4().hex[:8]
        keys = [f"hot:{run}:{i}" for i in range(2)]
        table = FakeTable(keys)
        acknowledged = dict.fromkeys(keys, 0.0)  # the highest version a finished write applied
        ack_lock = threading.Lock()
        errors: list[BaseException] = []
        writers_n, readers_n, rounds = 3, 3, 40
        start = threading.Barrier(writers_n + readers_n)

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            start.wait()
            try:
                for n in range(rounds):
                    key = rng.choice(keys)
                    intent = f"{seed:02x}{n:04x}"
                    write = table.new_write(rng.choice(_WRITE_KINDS), key)
                    write.backend_token = begin(
                        backend, key, intent, ordered=write.kind == "save"
                    )
                    table.apply(key, write)  # DynamoDB
                    unknown = rng.random() < 0.15  # e.g. a timeout: the outcome is unknown
                    written = write.entry if write.applied and not unknown else None
                    end(backend, key, intent, write.backend_token, written)
                    if write.applied:
                        with ack_lock:
                            acknowledged[key] = max(acknowledged[key], write.entry.stored_at)
            except BaseException as error:  # re-raised below, in the test's thread
                errors.append(error)

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            start.wait()
            try:
                for _ in range(rounds * 2):
                    key = rng.choice(keys)
                    with ack_lock:
                        floor = acknowledged[key]
                    seen = backend.get(key)
                    hit = answer(seen)
                    if hit is not MISS:
                        assert isinstance(hit, Entry)
                        assert hit.stored_at >= floor, (key, hit, floor)
                        continue
                    token = backend.read_token(key, seen)
                    fill(backend, key, table.read(key), token)  # DynamoDB's answer
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers_n)]
        threads += [threading.Thread(target=reader, args=(100 + i,)) for i in range(readers_n)]
        with fast_thread_switching():
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        assert errors == []
        for key in keys:
            result = self.lookup(backend, key)
            if result is not MISS:
                assert_same_entry(result, table.read(key))

    # -- the model ---------------------------------------------------------------------------

    def test_the_rules_match_the_model(self, backend: CacheBackend) -> None:
        @settings(
            max_examples=self.model_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
        )
        @given(steps=st.lists(_model_steps, min_size=20, max_size=60))
        def replay(steps: list[tuple[str, int, int, int]]) -> None:
            self.check_against_model(backend, steps)

        replay()

    def test_an_older_fill_after_a_newer_one_is_not_kept_past_the_write(
        self, backend: CacheBackend
    ) -> None:
        # Found by the model test: during a save, a reader fills the saved copy (read after
        # DynamoDB applied it), then a reader with the same token fills the copy it read
        # before; the save's end must store its copy, not keep the older one in place.
        steps = [("read", 0, 0, 0), ("begin", 0, 0, 0), ("read", 0, 0, 0), ("apply", 0, 0, 0)]
        steps += [("load", 0, 1, 0), ("fill", 0, 0, 0), ("end", 0, 0, 0)]
        self.check_against_model(backend, steps)

    def check_against_model(
        self, backend: CacheBackend, steps: Sequence[tuple[str, int, int, int]]
    ) -> None:
        """Apply ``steps`` to ``backend`` and to `Model`, against a fake DynamoDB: every
        answer, outcome and fill must agree, and a key no write is in flight on must read as
        DynamoDB's copy or as a miss."""
        run = uuid.uuid4().hex[:12]  # fresh keys for every example
        keys = [f"model:{run}:{i}" for i in range(MODEL_KEYS)]
        table = FakeTable(keys)
        model = Model()
        now = MODEL_NOW
        # slot -> (key, the backend's token, the model's token, what it read from DynamoDB)
        readers: dict[int, tuple[str, int, int, Entry]] = {}
        writes: dict[tuple[str, str], Write] = {}  # (key, intent) -> a write in flight
        for n, (operation, index, choice, variant) in enumerate(steps):
            key = keys[index]
            where = f"at step {n} of {list(steps)}"
            in_flight = sorted(writes)
            if operation in ("read", "load"):
                seen = backend.get(key)
                assert_answer(seen, model.get(key, now), where)
                slot = choice % MODEL_READERS
                written_now = any(key_ == key for key_, _ in writes)
                if answer(seen) is not MISS and written_now and not self.hit_tokens_during_writes:
                    readers.pop(slot, None)
                    continue
                readers[slot] = (
                    key,
                    backend.read_token(key, seen),
                    model.token(key, now),
                    table.read(key),
                )
                if operation == "load":  # a reader that fills right away
                    _, backend_token, model_token, read = readers.pop(slot)
                    fill(backend, key, read, backend_token)
                    model.fill(key, read, LONG_TTL_S, model_token, now)
            elif operation == "fill":
                if choice % MODEL_READERS not in readers:
                    continue
                key, backend_token, model_token, read = readers[choice % MODEL_READERS]
                fill(backend, key, read, backend_token)
                model.fill(key, read, LONG_TTL_S, model_token, now)
            elif operation in ("begin", "begin2"):
                batch = [key] if operation == "begin" else keys
                free = [
                    intent
                    for intent in MODEL_INTENTS
                    if not any((key_, intent) in writes for key_ in batch)
                ]
                if not free:
                    continue
                intent = free[choice % len(free)]
                kind = _WRITE_KINDS[variant] if operation == "begin" else "put"
                ordered = kind == "save"
                tokens = backend.begin_write(batch, intent, LONG_TTL_S, ordered)
                assert len(tokens) == len(batch), (tokens, where)
                for key_, token in zip(batch, tokens, strict=True):
                    write = writes[key_, intent] = table.new_write(kind, key_)
                    write.backend_token = token
                    write.model_token = model.begin(key_, intent, LONG_TTL_S, now, ordered)
            elif operation == "apply":
                waiting = [pair for pair in in_flight if writes[pair].applied is None]
                if waiting:
                    key, intent = waiting[choice % len(waiting)]
                    table.apply(key, writes[key, intent])
            elif operation in ("end", "stray"):
                if operation == "end":
                    if not in_flight:
                        continue
                    key, intent = in_flight[choice % len(in_flight)]
                    write = writes.pop((key, intent))
                    if write.applied is None:
                        table.apply(key, write)  # DynamoDB applied it before answering
                else:  # an intent this key does not have (never begun, or already ended)
                    idle = [i for i in MODEL_INTENTS if (key, i) not in writes] or ["57a7"]
                    intent = idle[choice % len(idle)]
                    write = table.new_write("put", key)
                    write.applied = False
                unknown = variant == len(_WRITE_KINDS) - 1 and choice % 2 == 0
                written = write.entry if write.applied and not unknown else None
                outcome = end(backend, key, intent, write.backend_token, written)
                expected = model.end(key, intent, write.model_token, written, LONG_TTL_S, now)
                assert outcome == expected, (key, intent, outcome, expected, where)
            else:
                backend.invalidate_many([key])
                model.invalidate(key, now)
            writing = {key_ for key_, _ in writes}
            for key_, result in zip(keys, backend.get_many(keys), strict=True):
                expected_answer = model.get(key_, now)
                assert_answer(result, expected_answer, (key_, where))
                if key_ not in writing and expected_answer is not MISS:
                    # Safety, of the model itself: no write in flight, no stale copy.
                    assert_answer(result, table.read(key_), ("stale", key_, where))

    # -- housekeeping ----------------------------------------------------------------------

    def test_stats_has_evictions_and_errors(self, backend: CacheBackend) -> None:
        fill(backend, "users:k", document_entry(GEN), NO_RECORD)
        backend.get_many(["users:k", "users:x"])
        stats = backend.stats()
        assert isinstance(stats["evictions"], int)
        assert stats["errors"] == 0

    def test_name_and_settings(self, backend: CacheBackend) -> None:
        assert isinstance(backend.name, str) and backend.name
        assert isinstance(backend.shares_documents, bool)
        assert isinstance(backend.floor_ttl_s, float) and backend.floor_ttl_s > 0
