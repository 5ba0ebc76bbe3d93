"""MemoryCache: the conformance suite on a fake clock, plus what only an in-process LRU has.

The partitioned in-process cache (one MemoryCache per collection) runs the suite too.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.cache_conformance")

import gateway.caches.memory as memory_module  # noqa: E402
from gateway.caches.base import (  # noqa: E402
    DROPPED,
    KEPT,
    LATE,
    MISS,
    STORED,
    CacheBackend,
    End,
    Entry,
    Fill,
)
from gateway.caches.memory import (  # noqa: E402
    ENTRY_OVERHEAD_BYTES,
    INTENT_SWEEP_MIN_KEYS,
    MemoryCache,
    approximate_size,
)
from gateway.caches.partitioned import PartitionedMemoryCache  # noqa: E402
from tests.cache_conformance import (  # noqa: E402
    GEN,
    LONG_TTL_S,
    CacheBackendConformance,
    absent_entry,
    assert_same_entry,
    begin,
    document_entry,
    end,
    fast_thread_switching,
    fill,
    token_of,
)


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingRepr(dict[str, Any]):
    """A document that counts how often it is turned into text."""

    reprs = 0

    def __repr__(self) -> str:
        CountingRepr.reprs += 1
        return super().__repr__()


class TestMemoryCache(CacheBackendConformance):
    """The shared suite, with time moved by a fake timer instead of sleeping."""

    model_examples = 200

    @pytest.fixture
    def backend(self) -> Iterator[MemoryCache]:
        self.clock = FakeClock()
        cache = MemoryCache(timer=self.clock)
        yield cache
        cache.close()

    def advance(self, backend: CacheBackend, seconds: float) -> None:
        self.clock.advance(seconds)


class TestBoundedMemoryCache(TestMemoryCache):
    """The shared suite with a byte bound (sizes are computed, entries are charged)."""

    model_examples = 60

    @pytest.fixture
    def backend(self) -> Iterator[MemoryCache]:
        self.clock = FakeClock()
        cache = MemoryCache(max_bytes=10**8, timer=self.clock)
        yield cache
        cache.close()


class TestPartitionedMemoryCache(CacheBackendConformance):
    """The shared suite on partitions: ``users`` has its own cache, the rest shares one."""

    model_examples = 60

    @pytest.fixture
    def backend(self) -> Iterator[PartitionedMemoryCache]:
        self.clock = FakeClock()
        cache = PartitionedMemoryCache(
            MemoryCache(timer=self.clock),
            {"users": MemoryCache(timer=self.clock), "model": MemoryCache(timer=self.clock)},
        )
        yield cache
        cache.close()

    def advance(self, backend: CacheBackend, seconds: float) -> None:
        self.clock.advance(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def stored(cache: CacheBackend, key: str, entry: Entry, ttl_s: float = LONG_TTL_S) -> None:
    """Fill ``key`` as a reader that found it missing would."""
    fill(cache, key, entry, token_of(cache, key), ttl_s)


# ------------------------------------------------------------------------------------------
# The single-key hot path
# ------------------------------------------------------------------------------------------


def test_is_a_cache_backend() -> None:
    backend: CacheBackend = MemoryCache()  # checked by mypy
    partitioned: CacheBackend = PartitionedMemoryCache(MemoryCache(), {})
    assert backend.name == partitioned.name == "memory"
    assert backend.shares_documents is True


def test_get_hit_returns_the_stored_entry_itself(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    entry = document_entry(GEN)
    stored(cache, "users:k", entry)
    assert cache.get("users:k") is entry  # stored as given: the gateway copies on the way out
    assert cache.get_many(["users:k"])[0] is entry


def test_get_miss_and_expiry(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    assert cache.get("users:k") is MISS
    stored(cache, "users:k", document_entry(GEN), ttl_s=1.0)
    clock.advance(0.999)
    assert isinstance(cache.get("users:k"), Entry)
    clock.advance(0.001)  # expires_at is exclusive, as in cachetools
    assert cache.get("users:k") is MISS
    stored(cache, "users:j", document_entry(GEN), ttl_s=1.0)
    clock.advance(1.0)
    assert cache.get_many(["users:j"]) == [MISS]
    assert cache.stats()["expirations"] == 2


# ------------------------------------------------------------------------------------------
# Tokens: one process-wide version
# ------------------------------------------------------------------------------------------


def test_the_token_is_the_process_wide_version(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    first = cache.read_token("users:a", MISS)
    stored(cache, "users:a", document_entry(GEN))
    cache.get_many(["users:a", "users:b"])
    assert cache.read_token("users:b", MISS) == first  # reads and fills change nothing
    cache.invalidate_many(["users:a"])
    second = cache.read_token("users:b", MISS)
    assert second > first  # any key's change moves it...
    fill(cache, "users:b", document_entry(GEN), first)  # ...but only refuses fills of that key
    assert cache.get("users:b") is not MISS
    token = begin(cache, "users:c", "a1")
    assert token == cache.read_token("users:c", MISS) > second


def test_a_floor_lasts_floor_ttl_then_is_forgotten(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock, floor_ttl_s=10.0)
    token = token_of(cache, "users:k")
    cache.invalidate_many(["users:k"])
    clock.advance(9.9)  # longer than any fill may take (the gateway's fill deadline is below)
    fill(cache, "users:k", document_entry(GEN), token)
    assert cache.get("users:k") is MISS
    clock.advance(0.2)
    cache.invalidate_many(["users:other"])  # changes are forgotten as new ones come in
    assert list(cache._changes) == ["users:other"]  # bounded: no change is kept forever


def test_eviction_of_an_entry_never_forgets_a_change(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=3, timer=clock)
    stale = token_of(cache, "users:k")  # a reader, before it reads DynamoDB (the old copy)
    written = document_entry(GEN + 1)
    assert end(cache, "users:k", "a1", begin(cache, "users:k", "a1"), written) == STORED
    for i in range(5):  # push the written entry out of the LRU
        stored(cache, f"users:{i}", document_entry(GEN))
    assert cache.get("users:k") is MISS
    assert cache.stats()["evictions"] >= 1

    fill(cache, "users:k", document_entry(GEN), stale)  # the old copy, read before the write

    assert cache.get("users:k") is MISS
    fresh = document_entry(GEN + 1)
    stored(cache, "users:k", fresh)
    assert cache.get("users:k") is fresh


def test_intents_are_never_evicted(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=2, timer=clock)
    stored(cache, "users:writing", document_entry(GEN))
    stale = token_of(cache, "users:writing")
    token = begin(cache, "users:writing", "a1")
    for i in range(10):
        stored(cache, f"users:{i}", document_entry(GEN))
    assert cache.get("users:writing") is MISS  # the entry was evicted, not the intent
    assert cache.stats()["writes_in_flight"] == 1
    fill(cache, "users:writing", document_entry(GEN), stale)  # from before the write
    assert cache.get("users:writing") is MISS
    written = document_entry(GEN + 1)
    assert end(cache, "users:writing", "a1", token, written) == STORED  # still known alone
    assert cache.get("users:writing") is written
    assert cache.stats()["writes_in_flight"] == 0


def test_an_evicted_higher_generation_still_keeps_a_lower_save_out(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=2, timer=clock)
    token = begin(cache, "users:k", "a1", ordered=True)
    stored(cache, "users:k", document_entry(GEN + 9))  # a later save's copy, read meanwhile
    for i in range(3):
        stored(cache, f"users:{i}", document_entry(GEN))
    assert cache.get("users:k") is MISS  # evicted

    assert end(cache, "users:k", "a1", token, document_entry(GEN + 5)) == KEPT

    assert cache.get("users:k") is MISS  # never the older save's copy


def test_dead_intents_are_swept(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    dead = INTENT_SWEEP_MIN_KEYS + 10  # sweeps (nothing expired): next at twice as many
    cache.begin_write([f"users:dead{i}" for i in range(dead)], "a1", 1.0)
    assert cache.stats()["writes_in_flight"] == dead
    clock.advance(2.0)  # their writers never came back

    cache.begin_write([f"users:live{i}" for i in range(dead + 1)], "a2", 1.0)

    assert cache.stats()["writes_in_flight"] == dead + 1
    assert end(cache, "users:dead0", "a1", 0, document_entry(GEN)) == LATE


def test_a_dead_intent_drops_the_entry_it_covered_on_the_next_touch(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    stored(cache, "users:k", document_entry(GEN))
    cache.begin_write(["users:k"], "a1", 1.0)
    cache.begin_write(["users:k"], "a2", 60.0)  # a live writer keeps the record going
    clock.advance(2.0)
    assert cache.get("users:k") is not MISS  # reads never touch intents (nothing expired)
    token = token_of(cache, "users:k")  # a reader's token does: a1's writer is dead...
    assert cache.get("users:k") is MISS  # ...so what it covered is dropped
    reread = document_entry(GEN + 1)
    fill(cache, "users:k", reread, token)  # a2 in flight: stored, but only until its deadline
    assert cache.get("users:k") is reread
    clock.advance(58.0)
    assert cache.get("users:k") is MISS


# ------------------------------------------------------------------------------------------
# Sizes: computed outside the lock, once
# ------------------------------------------------------------------------------------------


def test_sizes_are_computed_while_the_lock_is_not_held(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repr of a big document must never stall every other thread's hits."""
    cache = MemoryCache(max_bytes=10**9, timer=clock)
    held: list[bool] = []
    original = memory_module.approximate_size

    def checking(key: str, entry: Entry) -> int:
        held.append(cache._lock.locked())
        return original(key, entry)

    monkeypatch.setattr(memory_module, "approximate_size", checking)
    big = document_entry(GEN, document={"_id": "big", "text": "x" * 100_000})

    stored(cache, "users:big", big)
    token = begin(cache, "users:big", "a1")
    assert end(cache, "users:big", "a1", token, big) == STORED
    cache.put_many([("users:copy", big, LONG_TTL_S)])

    assert held == [False, False, False]  # one size per fill, end and put: none under the lock
    assert cache.get("users:big") is big and cache.get("users:copy") is big


def test_size_is_estimated_once_at_insert_and_never_on_hits(clock: FakeClock) -> None:
    document = CountingRepr({"_id": "k", "text": "hello"})
    CountingRepr.reprs = 0
    unbounded = MemoryCache(timer=clock)
    stored(unbounded, "k", document_entry(GEN, document=document))
    unbounded.get("k")
    assert CountingRepr.reprs == 0

    bounded = MemoryCache(max_bytes=10**6, timer=clock)
    stored(bounded, "k", document_entry(GEN, document=document))
    for _ in range(100):
        bounded.get("k")
        bounded.get_many(["k", "k"])
    begin(bounded, "k", "a1")  # an intent shortens the entry's life without measuring it again
    assert CountingRepr.reprs == 1


# ------------------------------------------------------------------------------------------
# Bounds and counters
# ------------------------------------------------------------------------------------------


def test_lru_eviction_at_max_items_counts_evictions(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=3, timer=clock)
    for key in ("a", "b", "c"):
        stored(cache, key, document_entry(GEN))
    cache.get("a")  # now b is the least recently used

    stored(cache, "d", document_entry(GEN))
    stored(cache, "e", document_entry(GEN))

    assert [cache.get(key) is MISS for key in "abcde"] == [False, True, True, False, False]
    assert cache.stats() == {
        "evictions": 2,
        "expirations": 0,
        "errors": 0,
        "items": 3,
        "writes_in_flight": 0,
    }


def test_expired_entries_pushed_out_count_as_expirations(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=2, timer=clock)
    stored(cache, "a", document_entry(GEN), ttl_s=1.0)
    stored(cache, "b", document_entry(GEN))
    clock.advance(2.0)
    stored(cache, "c", document_entry(GEN))  # pushes out a, which had expired
    assert cache.stats()["evictions"] == 0
    assert cache.stats()["expirations"] == 1


def test_max_bytes_bounds_the_approximate_size(clock: FakeClock) -> None:
    entry = document_entry(GEN, document={"_id": "doc", "text": "x" * 1000})
    one = approximate_size("users:0", entry)
    assert one > 1000 + ENTRY_OVERHEAD_BYTES
    cache = MemoryCache(max_bytes=3 * one + one // 2, timer=clock)

    for i in range(10):
        stored(cache, f"users:{i}", entry)

    held = [i for i in range(10) if cache.get(f"users:{i}") is not MISS]
    assert held == [7, 8, 9]
    assert cache.stats()["evictions"] == 7


def test_max_items_still_bounds_when_max_bytes_is_set(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=2, max_bytes=10**9, timer=clock)
    for key in "abc":
        stored(cache, key, document_entry(GEN))
    token = begin(cache, "c", "a1")
    assert end(cache, "c", "a1", token, document_entry(GEN + 1)) == STORED  # evicts nothing
    assert [cache.get(key) is MISS for key in "abc"] == [True, False, False]
    assert cache.stats()["evictions"] == 1


def test_entry_larger_than_max_bytes_is_not_stored_and_drops_the_older(
    clock: FakeClock,
) -> None:
    cache = MemoryCache(max_bytes=2000, timer=clock)
    stored(cache, "users:small", document_entry(GEN))
    stored(cache, "users:k", document_entry(GEN))
    big = document_entry(GEN + 1, document={"big": "x" * 5000})
    token = begin(cache, "users:k", "a1")
    end(cache, "users:k", "a1", token, big)
    assert cache.get("users:k") is MISS
    stored(cache, "users:new", big)
    assert cache.get("users:new") is MISS
    assert cache.get("users:small") is not MISS


def test_clear_forgets_everything_and_voids_every_token(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=1, timer=clock)
    stored(cache, "a", document_entry(GEN))
    stored(cache, "b", document_entry(GEN))
    before = token_of(cache, "c")
    token = begin(cache, "w", "a1")

    cache.clear()

    assert cache.get_many(["a", "b"]) == [MISS, MISS]
    assert cache.stats() == {
        "evictions": 1,
        "expirations": 0,
        "errors": 0,
        "items": 0,
        "writes_in_flight": 0,
    }
    fill(cache, "c", document_entry(GEN), before)  # taken before the clear: void
    assert cache.get("c") is MISS
    assert end(cache, "w", "a1", token, document_entry(GEN)) == LATE
    stored(cache, "c", document_entry(GEN))
    assert cache.get("c") is not MISS


def test_delete_prefix_does_not_count_expired_entries(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    stored(cache, "users:old", document_entry(GEN), ttl_s=1.0)
    stored(cache, "users:new", document_entry(GEN))
    clock.advance(2.0)
    assert cache.delete_prefix("users:") == 1
    assert cache.stats()["items"] == 0


def test_put_and_discard_are_a_plain_store(clock: FakeClock) -> None:
    """The tiered backend's front tier: no rules, no changes (it guards its fills itself)."""
    cache = MemoryCache(timer=clock)
    token = token_of(cache, "users:k")
    begin(cache, "users:w", "a1")
    entry = document_entry(GEN)
    cache.put_many([("users:k", entry, LONG_TTL_S), ("users:w", entry, 1.0)])
    assert cache.get("users:k") is entry and cache.get("users:w") is entry
    assert cache.read_token("users:k", entry) == token + 1  # only the begin changed anything
    cache.discard_many(["users:k", "users:never"])
    assert cache.get("users:k") is MISS
    fill(cache, "users:k", entry, token)  # neither the put nor the discard was a change
    assert cache.get("users:k") is entry
    clock.advance(1.0)
    assert cache.get("users:w") is MISS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_items": 0},
        {"max_items": -1},
        {"max_bytes": 0},
        {"max_bytes": -5},
        {"floor_ttl_s": 0.0},
        {"floor_ttl_s": float("nan")},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"max_|floor_ttl_s"):
        MemoryCache(**kwargs)


# ------------------------------------------------------------------------------------------
# Partitions
# ------------------------------------------------------------------------------------------


def test_partitions_bound_and_count_each_collection(clock: FakeClock) -> None:
    shared, users = MemoryCache(max_items=2, timer=clock), MemoryCache(max_items=5, timer=clock)
    cache = PartitionedMemoryCache(shared, {"users": users})
    for i in range(5):
        stored(cache, f"users:{i}", document_entry(GEN))
        stored(cache, f"orders:{i}", document_entry(GEN))
    assert all(cache.get(f"users:{i}") is not MISS for i in range(5))  # not pushed out
    assert [cache.get(f"orders:{i}") is MISS for i in range(5)] == [True] * 3 + [False] * 2
    stats = cache.stats()
    assert stats["evictions"] == 3 and stats["items"] == 7
    assert stats["partitions"]["users"]["items"] == 5
    assert stats["partitions"]["*"]["evictions"] == 3
    keys = ["orders:9", "users:9"]
    tokens = cache.begin_write(keys, "a1", 60.0)
    outcomes = cache.end_write(
        [
            End(key, "a1", token, document_entry(GEN + 1), LONG_TTL_S)
            for key, token in zip(keys, tokens, strict=True)
        ]
    )
    assert outcomes == [STORED, STORED]
    assert cache.delete_prefix("") == 2 + 5  # each partition still at its bound
    cache.put_many([("users:x", document_entry(GEN), 60.0)])
    cache.discard_many(["users:x"])
    cache.clear()
    assert cache.get_many(["users:x", "orders:9"]) == [MISS, MISS]


# ------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [None, 20_000])
def test_thread_safety_smoke(max_bytes: int | None) -> None:
    """8 threads mix every operation on a small, full cache; nothing raises or breaks bounds,
    and once they are done every key obeys the rules again."""
    clock = FakeClock()
    cache = MemoryCache(max_items=50, max_bytes=max_bytes, timer=clock)
    keys = [f"users:{i}" for i in range(80)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        try:
            for step in range(1500):
                if seed == 0:
                    clock.advance(0.001)  # one thread moves time: entries and intents expire
                key = rng.choice(keys)
                entry = document_entry(GEN + rng.randrange(20), rng.choice("ab"))
                choice = rng.randrange(9)
                intent = f"{seed:x}{step:x}"
                if choice == 0:
                    token = cache.read_token(key, cache.get(key))
                    cache.fill_many(
                        [Fill(key, entry, LONG_TTL_S, token), Fill(key, absent_entry(), 0.01, 0)]
                    )
                elif choice == 1:
                    tokens = cache.begin_write([key], intent, rng.choice([0.002, LONG_TTL_S]))
                    ttl = rng.choice([0.0, 0.002, LONG_TTL_S])
                    written = rng.choice([entry, None])
                    outcomes = cache.end_write([End(key, intent, tokens[0], written, ttl)])
                    assert outcomes[0] in (STORED, DROPPED, LATE)
                elif choice == 2:
                    cache.begin_write([key, rng.choice(keys)], intent, 0.005)  # never ends
                elif choice == 3:
                    cache.invalidate_many([key, rng.choice(keys)])
                elif choice == 4 and step % 100 == 0:
                    cache.delete_prefix("users:1")
                elif choice == 5:
                    results = cache.get_many(rng.sample(keys, 10))
                    assert len(results) == 10
                    assert all(r is MISS or isinstance(r, Entry) for r in results)
                elif choice == 6:
                    assert cache.stats()["items"] <= 50
                else:
                    result = cache.get(key)
                    assert result is MISS or isinstance(result, Entry)
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    with fast_thread_switching():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    # Every key obeys the rules afterwards: once the abandoned intents are dead, a lone writer
    # stores and a fill from before the write is refused.
    clock.advance(1.0)
    stale = cache.read_token("users:0", MISS)
    final = document_entry(GEN + 100)
    tokens = cache.begin_write(keys, "f1", LONG_TTL_S)
    assert cache.stats()["writes_in_flight"] == len(keys)
    outcomes = cache.end_write(
        [End(key, "f1", token, final, LONG_TTL_S) for key, token in zip(keys, tokens, strict=True)]
    )
    assert outcomes == [STORED] * len(keys)
    cache.fill_many([Fill(key, absent_entry(), LONG_TTL_S, stale) for key in keys])
    results = cache.get_many(keys)
    assert all(result is MISS or result is final for result in results)
    assert_same_entry(results[-1], final)
