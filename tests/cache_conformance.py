"""One conformance suite for every `CacheBackend` (see ``gateway/caches/base.py``).

A backend binds it in a few lines::

    class TestMyCache(CacheBackendConformance):
        @pytest.fixture
        def backend(self) -> Iterator[MyCache]:
            cache = MyCache(...)  # fresh and empty
            yield cache
            cache.close()

and, if its clock can be faked, overrides ``advance`` (the default really sleeps, which is what
a server with its own clock, like Redis, needs: the TTL tests use ``SHORT_TTL_S`` and then
advance by ``PAST_SHORT_TTL_S``).

Everything is compared by value *and type*, never by identity, so the suite holds for backends
that serialize entries to bytes as well as for in-process ones. Only the protocol's methods are
used. pytest rewrites the asserts of this module only if it is registered with
``pytest.register_assert_rewrite("tests.cache_conformance")`` before it is imported.
"""

from __future__ import annotations

import random
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.caches.base import (
    MISS,
    CacheBackend,
    Entry,
    Kind,
    Miss,
    Put,
    fill_allowed,
    write_decision,
)

#: A realistic generation: microseconds since the epoch (see ``gateway/revisions.py``).
GEN = 1_732_500_000_000_000
#: Long enough that nothing expires during a test.
LONG_TTL_S = 600.0
#: The TTL of expiry tests, and how far they then move the clock.
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


def put(key: str, entry: Entry, ttl_s: float = LONG_TTL_S) -> Put:
    """A `Put` with a TTL long enough to outlast the test unless given."""
    return Put(key, entry, ttl_s)


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
    """``actual`` is an Entry whose every field equals ``expected``'s, with the same types."""
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
    assert_same_value(actual.document, expected.document)


def assert_quarantined(actual: Entry | Miss, generation: int | None = None) -> None:
    """``actual`` is a quarantine marker (its ``stored_at`` is the backend's own clock) that
    remembers ``generation``, the highest generation it displaced (when given)."""
    assert isinstance(actual, Entry), f"expected a quarantine marker, got {actual!r}"
    assert actual.kind is Kind.QUARANTINE, actual
    if generation is not None:
        assert actual.generation == generation, actual
    assert actual.document is None, actual
    assert type(actual.stored_at) is float, actual


# ------------------------------------------------------------------------------------------
# The suite
# ------------------------------------------------------------------------------------------

#: One step of the model-based test: (operation, key index, kind, generation offset, token).
_steps = st.tuples(
    st.sampled_from(["fill", "write", "quarantine", "delete"]),
    st.integers(0, 1),
    st.sampled_from([Kind.DOCUMENT, Kind.ABSENT]),
    st.integers(0, 3),
    st.sampled_from("ab"),
)


class CacheBackendConformance:
    """What every cache backend must do; subclasses provide a ``backend`` fixture."""

    def advance(self, backend: CacheBackend, seconds: float) -> None:
        """Let ``seconds`` pass on ``backend``'s clock. Override to move a fake timer."""
        time.sleep(seconds)

    def get(self, backend: CacheBackend, key: str) -> Entry | Miss:
        """The single result of ``get_many([key])``."""
        results = backend.get_many([key])
        assert len(results) == 1, results
        return results[0]

    # -- reads -----------------------------------------------------------------------------

    def test_miss_on_empty_backend(self, backend: CacheBackend) -> None:
        assert backend.get_many(["users:nobody"]) == [MISS]
        assert backend.get_many([]) == []

    def test_get_many_answers_in_order_with_a_miss_per_unknown_key(
        self, backend: CacheBackend
    ) -> None:
        one, two = document_entry(GEN + 1), document_entry(GEN + 2)
        backend.fill_many([put("users:1", one), put("users:2", two)])

        results = backend.get_many(["users:2", "users:x", "users:1", "users:2", "users:x"])

        assert len(results) == 5
        assert_same_entry(results[0], two)
        assert results[1] is MISS
        assert_same_entry(results[2], one)
        assert_same_entry(results[3], two)
        assert results[4] is MISS

    # -- fill ------------------------------------------------------------------------------

    def test_fill_then_get(self, backend: CacheBackend) -> None:
        entry = document_entry(GEN)
        backend.fill_many([put("users:k", entry)])
        assert_same_entry(self.get(backend, "users:k"), entry)

    def test_fill_refused_over_equal_generation(self, backend: CacheBackend) -> None:
        first = document_entry(GEN, "a")
        backend.fill_many([put("users:k", first)])
        backend.fill_many([put("users:k", document_entry(GEN, "b", stored_at=STORED_AT + 1))])
        assert_same_entry(self.get(backend, "users:k"), first)

    def test_fill_refused_over_newer_generation(self, backend: CacheBackend) -> None:
        newer = document_entry(GEN + 1)
        backend.fill_many([put("users:k", newer)])
        backend.fill_many([put("users:k", document_entry(GEN))])
        assert_same_entry(self.get(backend, "users:k"), newer)

    def test_fill_accepted_over_older_generation(self, backend: CacheBackend) -> None:
        newer = document_entry(GEN + 1)
        backend.fill_many([put("users:k", document_entry(GEN))])
        backend.fill_many([put("users:k", newer)])
        assert_same_entry(self.get(backend, "users:k"), newer)

    def test_fill_refused_over_quarantine(self, backend: CacheBackend) -> None:
        backend.quarantine_many(["users:k"], LONG_TTL_S)
        backend.fill_many([put("users:k", document_entry(GEN + 1))])
        assert_quarantined(self.get(backend, "users:k"))

    def test_fill_many_decides_each_key_on_its_own(self, backend: CacheBackend) -> None:
        newer, older = document_entry(GEN + 5), document_entry(GEN + 1)
        backend.fill_many([put("users:a", newer), put("users:b", older)])

        fresh_b = document_entry(GEN + 6)
        new_c = document_entry(GEN + 2)
        backend.fill_many([put("users:a", older), put("users:b", fresh_b), put("users:c", new_c)])

        a, b, c = backend.get_many(["users:a", "users:b", "users:c"])
        assert_same_entry(a, newer)
        assert_same_entry(b, fresh_b)
        assert_same_entry(c, new_c)

    def test_fill_many_applies_puts_of_one_key_in_order(self, backend: CacheBackend) -> None:
        low, high = document_entry(GEN + 1), document_entry(GEN + 2)
        backend.fill_many([put("users:up", low), put("users:up", high)])
        backend.fill_many([put("users:down", high), put("users:down", low)])
        assert_same_entry(self.get(backend, "users:up"), high)
        assert_same_entry(self.get(backend, "users:down"), high)

    # -- write -----------------------------------------------------------------------------

    def test_write_replaces_older(self, backend: CacheBackend) -> None:
        newer = document_entry(GEN + 1)
        backend.fill_many([put("users:k", document_entry(GEN))])
        backend.write_many([put("users:k", newer)])
        assert_same_entry(self.get(backend, "users:k"), newer)

    def test_write_on_empty_backend_stores(self, backend: CacheBackend) -> None:
        entry = document_entry(GEN)
        backend.write_many([put("users:k", entry)])
        assert_same_entry(self.get(backend, "users:k"), entry)

    def test_write_replaces_quarantine(self, backend: CacheBackend) -> None:
        backend.fill_many([put("users:k", document_entry(GEN))])
        backend.quarantine_many(["users:k"], LONG_TTL_S)
        written = document_entry(GEN + 1)
        backend.write_many([put("users:k", written)])
        assert_same_entry(self.get(backend, "users:k"), written)

    def test_quarantine_remembers_the_displaced_generation(self, backend: CacheBackend) -> None:
        """A write delayed past a newer write and the next writer's marker must not bring the
        older document back: the marker keeps it out and is replaced only by a newer write."""
        backend.write_many([put("users:k", document_entry(GEN + 2))])
        backend.quarantine_many(["users:k"], LONG_TTL_S)
        assert_quarantined(self.get(backend, "users:k"), GEN + 2)
        backend.write_many([put("users:k", document_entry(GEN + 1))])  # the delayed older write
        assert_quarantined(self.get(backend, "users:k"), GEN + 2)
        newest = document_entry(GEN + 3)
        backend.write_many([put("users:k", newest)])
        assert_same_entry(self.get(backend, "users:k"), newest)

    def test_write_keeps_newer(self, backend: CacheBackend) -> None:
        newer = document_entry(GEN + 2)
        backend.write_many([put("users:k", newer)])
        backend.write_many([put("users:k", document_entry(GEN + 1))])
        assert_same_entry(self.get(backend, "users:k"), newer)

    def test_write_of_equal_generation_and_other_rev_drops_the_entry(
        self, backend: CacheBackend
    ) -> None:
        backend.write_many([put("users:k", document_entry(GEN, "a"))])
        backend.write_many([put("users:k", document_entry(GEN, "b"))])
        assert self.get(backend, "users:k") is MISS

    def test_write_of_equal_generation_and_same_rev_keeps_the_entry(
        self, backend: CacheBackend
    ) -> None:
        first = document_entry(GEN, "a")
        backend.write_many([put("users:k", first)])
        backend.write_many([put("users:k", document_entry(GEN, "a", stored_at=STORED_AT + 9))])
        assert_same_entry(self.get(backend, "users:k"), first)

    # -- negative entries ------------------------------------------------------------------

    def test_negative_fill_is_stored(self, backend: CacheBackend) -> None:
        absent = absent_entry()
        backend.fill_many([put("users:gone", absent)])
        assert_same_entry(self.get(backend, "users:gone"), absent)

    def test_document_fill_replaces_negative_fill(self, backend: CacheBackend) -> None:
        backend.fill_many([put("users:k", absent_entry())])
        created = document_entry(GEN)
        backend.fill_many([put("users:k", created)])
        assert_same_entry(self.get(backend, "users:k"), created)

    def test_negative_fill_never_replaces_a_document(self, backend: CacheBackend) -> None:
        entry = document_entry(GEN)
        backend.fill_many([put("users:k", entry)])
        backend.fill_many([put("users:k", absent_entry())])
        assert_same_entry(self.get(backend, "users:k"), entry)

    def test_tombstone_replaces_the_document_and_refuses_a_stale_fill(
        self, backend: CacheBackend
    ) -> None:
        backend.fill_many([put("users:k", document_entry(GEN))])
        tombstone = absent_entry(GEN + 1)
        backend.write_many([put("users:k", tombstone)])

        backend.fill_many([put("users:k", document_entry(GEN))])  # a read from before the delete

        assert_same_entry(self.get(backend, "users:k"), tombstone)

    def test_recreated_document_replaces_the_tombstone(self, backend: CacheBackend) -> None:
        backend.write_many([put("users:k", absent_entry(GEN + 1))])
        recreated = document_entry(GEN + 2)
        backend.write_many([put("users:k", recreated)])
        assert_same_entry(self.get(backend, "users:k"), recreated)

    # -- quarantine ------------------------------------------------------------------------

    def test_quarantine_hides_the_entry(self, backend: CacheBackend) -> None:
        backend.fill_many([put("users:k", document_entry(GEN)), put("users:other", absent_entry())])
        backend.quarantine_many(["users:k", "users:new"], LONG_TTL_S)

        k, new, other = backend.get_many(["users:k", "users:new", "users:other"])

        assert_quarantined(k)
        assert_quarantined(new)
        assert_same_entry(other, absent_entry())

    def test_quarantine_expires(self, backend: CacheBackend) -> None:
        backend.fill_many([put("users:k", document_entry(GEN))])
        backend.quarantine_many(["users:k"], SHORT_TTL_S)
        assert_quarantined(self.get(backend, "users:k"))

        self.advance(backend, PAST_SHORT_TTL_S)

        assert self.get(backend, "users:k") is MISS
        refill = document_entry(GEN)
        backend.fill_many([put("users:k", refill)])
        assert_same_entry(self.get(backend, "users:k"), refill)

    # -- delete ----------------------------------------------------------------------------

    def test_delete_many_forgets_only_those_keys(self, backend: CacheBackend) -> None:
        kept = document_entry(GEN)
        backend.fill_many(
            [
                put("users:a", document_entry(GEN)),
                put("users:b", absent_entry()),
                put("users:c", kept),
            ]
        )
        backend.quarantine_many(["users:q"], LONG_TTL_S)

        backend.delete_many(["users:a", "users:b", "users:q", "users:never-there"])

        assert backend.get_many(["users:a", "users:b", "users:q"]) == [MISS, MISS, MISS]
        assert_same_entry(self.get(backend, "users:c"), kept)
        backend.delete_many([])

    def test_delete_lets_an_older_fill_in(self, backend: CacheBackend) -> None:
        backend.write_many([put("users:k", document_entry(GEN + 1))])
        backend.delete_many(["users:k"])
        older = document_entry(GEN)
        backend.fill_many([put("users:k", older)])
        assert_same_entry(self.get(backend, "users:k"), older)

    def test_delete_prefix_removes_only_that_prefix_and_counts(self, backend: CacheBackend) -> None:
        doomed = ["users:1", "users:2", "users:", "users:2:sub"]
        kept = ["users2:1", "xusers:1", "Users:1", "user:1", "other:users:1"]
        backend.fill_many([put(key, document_entry(GEN)) for key in doomed + kept])

        assert backend.delete_prefix("users:") == len(doomed)

        assert backend.get_many(doomed) == [MISS] * len(doomed)
        for key, result in zip(kept, backend.get_many(kept), strict=True):
            assert isinstance(result, Entry), key

    def test_delete_prefix_counts_quarantined_keys(self, backend: CacheBackend) -> None:
        backend.fill_many([put("orders:1", document_entry(GEN))])
        backend.quarantine_many(["orders:2"], LONG_TTL_S)
        assert backend.delete_prefix("orders:") == 2
        assert backend.get_many(["orders:1", "orders:2"]) == [MISS, MISS]

    def test_delete_prefix_matches_glob_characters_literally(self, backend: CacheBackend) -> None:
        special = ["t*:1", "t?:1", "t[ab]:1", "t\\:1", "t{x}:1"]
        lookalike = ["tx:1", "ta:1", "tb:1", "t[ab]x:1"]
        backend.fill_many([put(key, document_entry(GEN)) for key in special + lookalike])

        for key in special:
            assert backend.delete_prefix(key[:-1]) == 1, key

        assert backend.get_many(special) == [MISS] * len(special)
        for key, result in zip(lookalike, backend.get_many(lookalike), strict=True):
            assert isinstance(result, Entry), key

    def test_delete_prefix_without_match_returns_zero(self, backend: CacheBackend) -> None:
        assert backend.delete_prefix("users:") == 0
        backend.fill_many([put("users:1", document_entry(GEN))])
        assert backend.delete_prefix("orders:") == 0
        assert isinstance(self.get(backend, "users:1"), Entry)

    # -- TTL -------------------------------------------------------------------------------

    def test_fill_expires_after_its_ttl(self, backend: CacheBackend) -> None:
        entry = document_entry(GEN)
        backend.fill_many([put("users:short", entry, SHORT_TTL_S), put("users:long", entry)])
        assert_same_entry(self.get(backend, "users:short"), entry)

        self.advance(backend, PAST_SHORT_TTL_S)

        assert self.get(backend, "users:short") is MISS
        assert_same_entry(self.get(backend, "users:long"), entry)

    def test_write_expires_after_its_ttl(self, backend: CacheBackend) -> None:
        backend.write_many([put("users:k", absent_entry(GEN), SHORT_TTL_S)])
        self.advance(backend, PAST_SHORT_TTL_S)
        assert self.get(backend, "users:k") is MISS

    def test_expired_entry_does_not_refuse_a_fill(self, backend: CacheBackend) -> None:
        backend.fill_many([put("users:k", document_entry(GEN + 5), SHORT_TTL_S)])
        self.advance(backend, PAST_SHORT_TTL_S)
        older = document_entry(GEN)
        backend.fill_many([put("users:k", older)])
        assert_same_entry(self.get(backend, "users:k"), older)

    @pytest.mark.parametrize("ttl_s", [0.0, -1.0])
    def test_entry_without_positive_ttl_is_not_stored(
        self, backend: CacheBackend, ttl_s: float
    ) -> None:
        backend.fill_many([put("users:f", document_entry(GEN), ttl_s)])
        backend.write_many([put("users:w", document_entry(GEN), ttl_s)])
        assert backend.get_many(["users:f", "users:w"]) == [MISS, MISS]

    def test_write_without_positive_ttl_still_removes_the_older_entry(
        self, backend: CacheBackend
    ) -> None:
        backend.fill_many([put("users:k", document_entry(GEN))])
        backend.write_many([put("users:k", document_entry(GEN + 1), 0.0)])
        assert self.get(backend, "users:k") is MISS

    # -- values and keys -------------------------------------------------------------------

    def test_document_entry_round_trips_exactly(self, backend: CacheBackend) -> None:
        rev = rev_of(GEN, "f")
        entry = Entry(Kind.DOCUMENT, GEN, rev, rich_document(rev), STORED_AT)
        backend.fill_many([put("users:rich", entry)])
        assert_same_entry(self.get(backend, "users:rich"), entry)

    def test_generations_one_apart_are_told_apart(self, backend: CacheBackend) -> None:
        # A store that kept generations as 32-bit floats, or compared them as text of varying
        # length, would see these as equal or in the wrong order.
        low, high = document_entry(9_999_999_999_999_999), document_entry(10_000_000_000_000_000)
        backend.fill_many([put("users:k", low)])
        backend.fill_many([put("users:k", high)])
        backend.fill_many([put("users:k", low)])
        assert_same_entry(self.get(backend, "users:k"), high)

    @pytest.mark.parametrize("key", UNUSUAL_KEYS, ids=lambda key: f"{len(key)}:{key[:16]!r}")
    def test_unusual_key_round_trips(self, backend: CacheBackend, key: str) -> None:
        entry = document_entry(GEN, document={"_id": key, "_rev": rev_of(GEN)})
        backend.fill_many([put(key, entry)])
        assert_same_entry(self.get(backend, key), entry)
        backend.delete_many([key])
        assert self.get(backend, key) is MISS

    def test_unusual_keys_are_kept_apart(self, backend: CacheBackend) -> None:
        entries = [
            document_entry(GEN + i, document={"_id": key, "_rev": rev_of(GEN + i)})
            for i, key in enumerate(UNUSUAL_KEYS)
        ]
        backend.fill_many([put(key, e) for key, e in zip(UNUSUAL_KEYS, entries, strict=True)])
        for result, entry in zip(backend.get_many(UNUSUAL_KEYS), entries, strict=True):
            assert_same_entry(result, entry)

    def test_get_many_of_500_keys(self, backend: CacheBackend) -> None:
        keys = [f"users:{i}" for i in range(500)]
        stored = {key: document_entry(GEN + i) for i, key in enumerate(keys) if i % 3}
        backend.fill_many([put(key, entry) for key, entry in stored.items()])

        results = backend.get_many(keys)

        assert len(results) == len(keys)
        for key, result in zip(keys, results, strict=True):
            if key in stored:
                assert_same_entry(result, stored[key])
            else:
                assert result is MISS, key

    # -- concurrency and rules -------------------------------------------------------------

    def test_concurrent_fills_and_writes_end_with_the_highest_generation(
        self, backend: CacheBackend
    ) -> None:
        threads_n, puts_per_thread = 8, 60
        start = threading.Barrier(threads_n)
        put_generations: list[int] = []
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            # Rising and disjoint per thread: the threads race for the top at the same time,
            # and the highest generation is put once, so nothing heals a lost update.
            mine = [GEN + seed + threads_n * i for i in range(puts_per_thread)]
            put_generations.extend(mine)
            start.wait()
            try:
                for generation in mine:
                    # One rev per generation, as DynamoDB would have it: nothing is dropped.
                    puts = [put("users:hot", document_entry(generation, "c"))]
                    if rng.random() < 0.5:
                        backend.fill_many(puts)
                    else:
                        backend.write_many(puts)
            except BaseException as error:  # re-raised below, in the test's thread
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads_n)]
        with fast_thread_switching():
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        assert errors == []
        # Whatever the interleaving, the highest generation any thread put must win.
        highest = max(put_generations)
        assert_same_entry(self.get(backend, "users:hot"), document_entry(highest, "c"))

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[
            HealthCheck.differing_executors,
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
        ],
    )
    @given(steps=st.lists(_steps, max_size=25))
    def test_compare_and_set_rules_match_the_model(
        self, backend: CacheBackend, steps: list[tuple[str, int, Kind, int, str]]
    ) -> None:
        keys = [f"model:{uuid.uuid4().hex}:{i}" for i in range(2)]  # fresh keys per example
        model: dict[str, Entry] = {}
        for operation, index, kind, offset, token in steps:
            key = keys[index]
            if kind is Kind.DOCUMENT:
                entry = document_entry(GEN + offset, token)
            else:
                entry = absent_entry(0 if offset == 0 else GEN + offset)
            current: Entry | Miss = model.get(key, MISS)
            if operation == "fill":
                backend.fill_many([put(key, entry)])
                if fill_allowed(current, entry):
                    model[key] = entry
            elif operation == "write":
                backend.write_many([put(key, entry)])
                decision = write_decision(current, entry)
                if decision == "store":
                    model[key] = entry
                elif decision == "drop":
                    model.pop(key, None)
            elif operation == "quarantine":
                backend.quarantine_many([key], LONG_TTL_S)
                displaced = 0 if current is MISS else current.generation
                model[key] = Entry(Kind.QUARANTINE, displaced)
            else:
                backend.delete_many([key])
                model.pop(key, None)

            for key_, result in zip(keys, backend.get_many(keys), strict=True):
                expected = model.get(key_, MISS)
                if expected is MISS:
                    assert result is MISS, (steps, key_, result)
                elif expected.kind is Kind.QUARANTINE:
                    assert_quarantined(result, expected.generation)
                else:
                    assert_same_entry(result, expected)

    # -- housekeeping ----------------------------------------------------------------------

    def test_stats_has_evictions_and_errors(self, backend: CacheBackend) -> None:
        backend.fill_many([put("users:k", document_entry(GEN))])
        backend.get_many(["users:k", "users:x"])
        stats = backend.stats()
        assert isinstance(stats["evictions"], int)
        assert stats["errors"] == 0

    def test_name_is_a_string(self, backend: CacheBackend) -> None:
        assert isinstance(backend.name, str) and backend.name
