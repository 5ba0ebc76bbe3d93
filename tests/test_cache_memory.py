"""MemoryCache: the conformance suite on a fake clock, plus what only an in-process LRU has."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.cache_conformance")

from gateway.caches.base import MISS, CacheBackend, Entry, Kind, Put  # noqa: E402
from gateway.caches.memory import (  # noqa: E402
    ENTRY_OVERHEAD_BYTES,
    QUARANTINE_SWEEP_MIN_ITEMS,
    MemoryCache,
    approximate_size,
)
from tests.cache_conformance import (  # noqa: E402
    GEN,
    LONG_TTL_S,
    CacheBackendConformance,
    absent_entry,
    document_entry,
    fast_thread_switching,
    put,
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

    @pytest.fixture
    def backend(self) -> Iterator[MemoryCache]:
        self.clock = FakeClock()
        cache = MemoryCache(timer=self.clock)
        yield cache
        cache.close()

    def advance(self, backend: CacheBackend, seconds: float) -> None:
        self.clock.advance(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def fill(cache: MemoryCache, key: str, entry: Entry, ttl_s: float = LONG_TTL_S) -> None:
    cache.fill_many([Put(key, entry, ttl_s)])


# ------------------------------------------------------------------------------------------
# The single-key hot path
# ------------------------------------------------------------------------------------------


def test_is_a_cache_backend() -> None:
    backend: CacheBackend = MemoryCache()  # checked by mypy
    assert backend.name == "memory"


def test_get_hit_returns_the_stored_entry_itself(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    entry = document_entry(GEN)
    fill(cache, "users:k", entry)
    assert cache.get("users:k") is entry  # stored as given: the gateway copies on the way out
    assert cache.get_many(["users:k"])[0] is entry


def test_get_miss_expiry_and_quarantine(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    assert cache.get("users:k") is MISS
    fill(cache, "users:k", document_entry(GEN), ttl_s=1.0)
    clock.advance(0.999)
    assert isinstance(cache.get("users:k"), Entry)
    clock.advance(0.001)  # expires_at is exclusive, as in cachetools
    assert cache.get("users:k") is MISS

    cache.quarantine_many(["users:k"], 1.0)
    marker = cache.get("users:k")
    assert isinstance(marker, Entry) and marker.kind is Kind.QUARANTINE
    clock.advance(1.0)
    assert cache.get("users:k") is MISS
    assert cache.stats()["expirations"] == 2


def test_quarantine_marker_carries_the_wall_clock() -> None:
    cache = MemoryCache(wall_clock=lambda: 1234.5)
    cache.quarantine_many(["users:k"], LONG_TTL_S)
    assert cache.get("users:k") == Entry(Kind.QUARANTINE, 0, stored_at=1234.5)


def test_a_later_quarantine_never_shortens_an_earlier_one(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    cache.quarantine_many(["users:k"], 10.0)
    cache.quarantine_many(["users:k"], 1.0)
    clock.advance(5.0)
    assert cache.get("users:k") is not MISS


def test_quarantine_without_positive_ttl_only_drops_the_entry(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    fill(cache, "users:k", document_entry(GEN))
    cache.quarantine_many(["users:k"], 0.0)
    assert cache.get("users:k") is MISS
    fill(cache, "users:k", document_entry(GEN))
    assert cache.get("users:k") is not MISS


# ------------------------------------------------------------------------------------------
# Bounds and counters
# ------------------------------------------------------------------------------------------


def test_lru_eviction_at_max_items_counts_evictions(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=3, timer=clock)
    for key in ("a", "b", "c"):
        fill(cache, key, document_entry(GEN))
    cache.get("a")  # now b is the least recently used

    fill(cache, "d", document_entry(GEN))
    fill(cache, "e", document_entry(GEN))

    assert [cache.get(key) is MISS for key in "abcde"] == [False, True, True, False, False]
    assert cache.stats() == {"evictions": 2, "expirations": 0, "errors": 0, "items": 3}


def test_expired_entries_pushed_out_count_as_expirations(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=2, timer=clock)
    fill(cache, "a", document_entry(GEN), ttl_s=1.0)
    fill(cache, "b", document_entry(GEN))
    clock.advance(2.0)
    fill(cache, "c", document_entry(GEN))  # pushes out a, which had expired
    assert cache.stats()["evictions"] == 0
    assert cache.stats()["expirations"] == 1


def test_quarantine_markers_are_never_evicted(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=2, timer=clock)
    cache.quarantine_many(["users:writing"], LONG_TTL_S)
    for i in range(10):
        fill(cache, f"users:{i}", document_entry(GEN))
    fill(cache, "users:writing", document_entry(GEN - 1))  # a read from before the write
    marker = cache.get("users:writing")
    assert isinstance(marker, Entry) and marker.kind is Kind.QUARANTINE


def test_dead_quarantine_markers_are_swept(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    dead = QUARANTINE_SWEEP_MIN_ITEMS + 10  # sweeps (nothing expired): next at twice as many
    cache.quarantine_many([f"users:dead{i}" for i in range(dead)], 1.0)
    clock.advance(2.0)  # their writers never came back

    cache.quarantine_many([f"users:live{i}" for i in range(dead + 1)], 1.0)

    assert cache.stats()["items"] == dead + 1
    assert cache.stats()["expirations"] == dead


def test_max_bytes_bounds_the_approximate_size(clock: FakeClock) -> None:
    entry = document_entry(GEN, document={"_id": "doc", "text": "x" * 1000})
    one = approximate_size("users:0", entry)
    assert one > 1000 + ENTRY_OVERHEAD_BYTES
    cache = MemoryCache(max_bytes=3 * one + one // 2, timer=clock)

    for i in range(10):
        fill(cache, f"users:{i}", entry)

    held = [i for i in range(10) if cache.get(f"users:{i}") is not MISS]
    assert held == [7, 8, 9]
    assert cache.stats()["evictions"] == 7


def test_max_items_still_bounds_when_max_bytes_is_set(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=2, max_bytes=10**9, timer=clock)
    for key in "abc":
        fill(cache, key, document_entry(GEN))
    fill(cache, "c", document_entry(GEN + 1))  # replacing a key evicts nothing
    assert [cache.get(key) is MISS for key in "abc"] == [True, False, False]
    assert cache.stats()["evictions"] == 1


def test_entry_larger_than_max_bytes_is_not_stored_and_drops_the_older(
    clock: FakeClock,
) -> None:
    cache = MemoryCache(max_bytes=2000, timer=clock)
    fill(cache, "users:small", document_entry(GEN))
    fill(cache, "users:k", document_entry(GEN))
    cache.write_many([put("users:k", document_entry(GEN + 1, document={"big": "x" * 5000}))])
    assert cache.get("users:k") is MISS
    assert cache.get("users:small") is not MISS


def test_size_is_estimated_once_at_insert_and_never_on_hits(clock: FakeClock) -> None:
    document = CountingRepr({"_id": "k", "text": "hello"})
    CountingRepr.reprs = 0
    unbounded = MemoryCache(timer=clock)
    fill(unbounded, "k", document_entry(GEN, document=document))
    unbounded.get("k")
    assert CountingRepr.reprs == 0

    bounded = MemoryCache(max_bytes=10**6, timer=clock)
    fill(bounded, "k", document_entry(GEN, document=document))
    for _ in range(100):
        bounded.get("k")
        bounded.get_many(["k", "k"])
    assert CountingRepr.reprs == 1


def test_clear_forgets_everything_but_the_counters(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=1, timer=clock)
    fill(cache, "a", document_entry(GEN))
    fill(cache, "b", document_entry(GEN))
    cache.quarantine_many(["q"], LONG_TTL_S)
    cache.clear()
    assert cache.get_many(["a", "b", "q"]) == [MISS, MISS, MISS]
    assert cache.stats() == {"evictions": 1, "expirations": 0, "errors": 0, "items": 0}


def test_delete_prefix_does_not_count_expired_entries(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    fill(cache, "users:old", document_entry(GEN), ttl_s=1.0)
    fill(cache, "users:new", document_entry(GEN))
    clock.advance(2.0)
    assert cache.delete_prefix("users:") == 1
    assert cache.stats()["items"] == 0


@pytest.mark.parametrize(
    "kwargs", [{"max_items": 0}, {"max_items": -1}, {"max_bytes": 0}, {"max_bytes": -5}]
)
def test_bad_bounds_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="max_"):
        MemoryCache(**kwargs)


# ------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [None, 20_000])
def test_thread_safety_smoke(max_bytes: int | None) -> None:
    """8 threads mix every operation on a small, full cache; nothing raises or breaks bounds."""
    cache = MemoryCache(max_items=50, max_bytes=max_bytes)
    keys = [f"users:{i}" for i in range(80)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        try:
            for step in range(2000):
                key = rng.choice(keys)
                entry = document_entry(GEN + rng.randrange(20), rng.choice("ab"))
                choice = rng.randrange(9)
                if choice == 0:
                    cache.fill_many([put(key, entry), put(rng.choice(keys), absent_entry())])
                elif choice == 1:
                    cache.write_many([put(key, entry, rng.choice([0.0, 0.001, LONG_TTL_S]))])
                elif choice == 2:
                    cache.quarantine_many([key], rng.choice([0.001, 1.0]))
                elif choice == 3:
                    cache.delete_many([key, rng.choice(keys)])
                elif choice == 4 and step % 100 == 0:
                    cache.delete_prefix("users:1")
                elif choice == 5:
                    results = cache.get_many(rng.sample(keys, 10))
                    assert len(results) == 10
                    assert all(r is MISS or isinstance(r, Entry) for r in results)
                elif choice == 6:
                    stats = cache.stats()
                    assert stats["items"] <= 50 + len(keys)  # entries + quarantine markers
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
    # Every key still obeys the rules afterwards: a fresh write wins over whatever is there.
    final = document_entry(GEN + 100)
    cache.write_many([put(key, final) for key in keys])
    results = cache.get_many(keys)
    assert all(result is MISS or result is final for result in results)
    assert results[-1] is final
