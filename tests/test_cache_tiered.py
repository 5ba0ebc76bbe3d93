"""TieredCache: the conformance suite, then what only two coherent instances can show.

Every test runs on the session's throw-away redis-server (flushed per test) with a key prefix
of its own. Two `TieredCache` instances on one prefix stand for two gateway processes: each has
its own memory tier, listener thread and pub/sub connection. Nothing is patched except, in the
fill-race tests, a pause inserted between a reader's Redis read and its memory fill.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

pytest.register_assert_rewrite("tests.cache_conformance")

from gateway.caches.base import MISS, Entry, Kind  # noqa: E402
from gateway.caches.errors import CacheUnavailable  # noqa: E402
from gateway.caches.memory import MemoryCache  # noqa: E402
from gateway.caches.redis_cache import RedisCache  # noqa: E402
from gateway.caches.tiered import REGISTRY_SUFFIX, TieredCache  # noqa: E402
from gateway.errors import ConfigError  # noqa: E402
from tests.cache_conformance import (  # noqa: E402
    GEN,
    CacheBackendConformance,
    assert_quarantined,
    assert_same_entry,
    document_entry,
    fast_thread_switching,
    put,
)
from tests.servers import RedisServer  # noqa: E402

_prefixes = itertools.count(1)
#: Generous for a loaded CI machine (the Redis socket timeout of every instance).
TEST_TIMEOUT_S = 0.2
#: Short, so that tests which wait for a lease to run out stay quick.
LEASE_S = 0.3
#: Bounded polls (for conditions, never for speed).
WAIT_S = 10.0


def fresh_prefix() -> str:
    return f"tiered{next(_prefixes)}:"


def make_tiered(url: str, prefix: str, lease_s: float = LEASE_S) -> TieredCache:
    redis_cache = RedisCache(url, key_prefix=prefix, timeout_s=TEST_TIMEOUT_S)
    return TieredCache(MemoryCache(max_items=10_000), redis_cache, lease_s=lease_s)


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def wait_registry_complete(cache: TieredCache) -> None:
    """Until a write no longer waits for a registry younger than a member's lifetime."""

    def probe() -> bool:
        before = cache.stats()["registry_waits"]
        cache.delete_many(["probe:registry"])
        return cache.stats()["registry_waits"] == before

    assert wait_until(probe), "the registry never became complete"


def load_into_memory(cache: TieredCache, key: str) -> Entry:
    """Read ``key`` until the reader holds it in its memory tier; the entry."""
    for _ in range(100):
        assert cache.wait_healthy(WAIT_S)
        entry = cache.get(key)
        local = cache.memory.get(key)
        if isinstance(local, Entry):
            assert isinstance(entry, Entry)
            return local
    raise AssertionError(f"{key!r} never reached the memory tier")


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test server, for looking behind the caches' backs."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@contextmanager
def two_instances(url: str, lease_s: float = LEASE_S) -> Iterator[tuple[TieredCache, TieredCache]]:
    """Two healthy instances on one prefix, with a complete registry."""
    prefix = fresh_prefix()
    a, b = make_tiered(url, prefix, lease_s), make_tiered(url, prefix, lease_s)
    try:
        assert a.wait_healthy(WAIT_S) and b.wait_healthy(WAIT_S)
        wait_registry_complete(a)
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def pair(redis_url: str) -> Iterator[tuple[TieredCache, TieredCache]]:
    """Two healthy instances on one prefix (lease `LEASE_S`), with a complete registry."""
    with two_instances(redis_url) as instances:
        yield instances


class TestTieredCache(CacheBackendConformance):
    """The shared suite on one instance (time really passes, keys get a fresh prefix).

    The instance is in its steady state: healthy, with a registry old enough that writes do
    not wait for it (a brand-new registry holds the first writes for up to 1.25 leases, longer
    than the suite's short TTLs).
    """

    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[TieredCache]:
        cache = make_tiered(redis_url, fresh_prefix())
        assert cache.wait_healthy(WAIT_S)
        wait_registry_complete(cache)
        yield cache
        cache.close()


# ------------------------------------------------------------------------------------------
# Coherence across instances
# ------------------------------------------------------------------------------------------


def test_memory_hits_are_served_while_healthy(pair: tuple[TieredCache, TieredCache]) -> None:
    a, b = pair
    entry = document_entry(GEN)
    a.write_many([put("users:k", entry)])
    load_into_memory(b, "users:k")
    reads_before = b.stats()["redis_reads"]
    for _ in range(20):
        assert_same_entry(b.get("users:k"), entry)
        assert_same_entry(b.get_many(["users:k"])[0], entry)
    stats = b.stats()
    assert stats["healthy"] is True
    assert stats["memory_hits"] >= 40 - 2  # a renewal gap may send a read or two to Redis
    assert stats["redis_reads"] - reads_before <= 2


@pytest.mark.parametrize("operation", ["write", "quarantine", "delete", "delete_prefix"])
def test_a_write_evicts_the_other_instances_copy_before_it_returns(
    pair: tuple[TieredCache, TieredCache], operation: str
) -> None:
    a, b = pair
    received_before = b.stats()["invalidations_received"]
    for i in range(50):
        key = f"users:{operation}:{i}"
        old = document_entry(GEN + i)
        a.write_many([put(key, old)])
        assert_same_entry(load_into_memory(b, key), old)

        if operation == "write":
            new = document_entry(GEN + i + 1, "b")
            a.write_many([put(key, new)])
            assert_same_entry(b.get(key), new)
        elif operation == "quarantine":
            a.quarantine_many([key], 60.0)
            assert_quarantined(b.get(key), GEN + i)
        elif operation == "delete":
            a.delete_many([key])
            assert b.get(key) is MISS
        else:
            assert a.delete_prefix(key) == 1
            assert b.get(key) is MISS
    assert b.stats()["invalidations_received"] - received_before >= 50
    assert a.stats()["acks_received"] >= 50


def test_concurrent_readers_never_see_a_generation_older_than_an_acknowledged_write(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    """Linearizability of the memory tier, as a stress loop: a read that starts after A's
    ``write_many`` returned must answer that write's generation or a newer one, on B (through
    pub/sub) as on A (locally), while B's readers keep refilling their memory tier."""
    a, b = pair
    key = "users:hot"
    acknowledged = [GEN]
    a.write_many([put(key, document_entry(GEN))])
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader(cache: TieredCache, many: bool) -> None:
        try:
            while not stop.is_set():
                floor = acknowledged[0]
                entry = cache.get_many([key])[0] if many else cache.get(key)
                assert isinstance(entry, Entry) and entry.kind is Kind.DOCUMENT, entry
                assert entry.generation >= floor, (entry.generation, floor)
                reads[0] += 1
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=reader, args=(cache, many))
        for cache in (a, b, b)
        for many in (False, True)
    ]
    with fast_thread_switching():
        for thread in threads:
            thread.start()
        try:
            for generation in range(GEN + 1, GEN + 201):
                a.write_many([put(key, document_entry(generation))])
                acknowledged[0] = generation
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert errors == []
    assert reads[0] > 200
    assert b.stats()["memory_hits"] > 0  # the memory tier was really in play


# ------------------------------------------------------------------------------------------
# The fill race
# ------------------------------------------------------------------------------------------


def _hold_fills(monkeypatch: pytest.MonkeyPatch, cache: TieredCache) -> tuple[Any, Any]:
    """Make ``cache``'s next memory fill stop between its Redis read and the fill itself.

    Returns (read_done, go): the reader sets ``read_done`` after Redis answered, and fills
    only once ``go`` is set.
    """
    read_done, go = threading.Event(), threading.Event()
    original = cache._fill_local

    def held(*args: Any) -> None:
        read_done.set()
        assert go.wait(WAIT_S)
        original(*args)

    monkeypatch.setattr(cache, "_fill_local", held)
    return read_done, go


@pytest.mark.parametrize("invalidation", ["write", "delete_prefix"])
def test_an_invalidation_between_the_redis_read_and_the_fill_wins(
    pair: tuple[TieredCache, TieredCache], monkeypatch: pytest.MonkeyPatch, invalidation: str
) -> None:
    a, b = pair
    key = "users:race"
    old = document_entry(GEN)
    a.write_many([put(key, old)])
    read_done, go = _hold_fills(monkeypatch, b)
    answers: list[Any] = []
    reader = threading.Thread(target=lambda: answers.append(b.get(key)))
    reader.start()
    try:
        assert read_done.wait(WAIT_S)  # B read `old` from Redis and has not filled it yet
        skipped_before = b.stats()["local_fills_skipped"]
        new = document_entry(GEN + 1)
        if invalidation == "write":
            a.write_many([put(key, new)])  # returns once B applied the invalidation
        else:
            a.delete_prefix("users:")
        assert b.stats()["invalidations_received"] >= 1
    finally:
        go.set()
        reader.join()
    assert_same_entry(answers[0], old)  # a read concurrent with the write: either is right
    assert b.memory.get(key) is MISS  # but the old copy never reached B's memory
    assert b.stats()["local_fills_skipped"] == skipped_before + 1
    monkeypatch.undo()
    if invalidation == "write":
        assert_same_entry(b.get(key), new)
        assert_same_entry(load_into_memory(b, key), new)
    else:
        assert b.get(key) is MISS


def test_a_fill_read_before_a_reconnect_is_not_kept(
    pair: tuple[TieredCache, TieredCache], monkeypatch: pytest.MonkeyPatch, raw: redis.Redis
) -> None:
    """Invalidations published while B's subscription was down are lost to B: a read made
    before B reconnected must not fill its memory afterwards."""
    a, b = pair
    key = "users:reconnect"
    a.write_many([put(key, document_entry(GEN))])
    read_done, go = _hold_fills(monkeypatch, b)
    reader = threading.Thread(target=b.get, args=(key,))
    reader.start()
    try:
        assert read_done.wait(WAIT_S)
        connects = b.stats()["connects"]
        raw.client_kill_filter(_type="pubsub")
        assert wait_until(lambda: b.stats()["connects"] > connects)
        assert b.wait_healthy(WAIT_S)
    finally:
        go.set()
        reader.join()
    assert b.memory.get(key) is MISS
    assert b.stats()["local_fills_skipped"] >= 1


# ------------------------------------------------------------------------------------------
# Leases: a paused Redis, failures, reconnects
# ------------------------------------------------------------------------------------------


def test_a_paused_redis_stops_memory_hits_once_the_lease_ran_out(
    pair: tuple[TieredCache, TieredCache], redis_server: RedisServer
) -> None:
    a, b = pair
    entry = document_entry(GEN)
    a.write_many([put("users:k", entry)])
    load_into_memory(b, "users:k")

    redis_server.pause()
    try:
        paused_at = time.monotonic()
        # B's last lease came from a registration sent before the pause: it ends by then.
        time.sleep(max(0.0, paused_at + LEASE_S * 1.05 - time.monotonic()))
        assert not b.healthy
        with pytest.raises(CacheUnavailable):
            b.get("users:k")  # to Redis (paused), never to the memory copy
        with pytest.raises(CacheUnavailable):
            b.get_many(["users:k"])
        assert b.stats()["healthy"] is False
    finally:
        redis_server.resume()
    assert b.wait_healthy(WAIT_S)
    assert_same_entry(b.get("users:k"), entry)


def test_a_failed_write_returns_only_after_other_leases_ran_out(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The gateway acknowledges a write whose cache update failed (fail-open): by the time
    the failure reaches it, no other instance may still serve the copy from memory.

    The lease (1 s) is longer than the two Redis timeouts a failed write goes through (the
    command, then the attempt to publish anyway), so only the hold makes this pass.
    """
    with two_instances(redis_url, lease_s=1.0) as (a, b):
        a.write_many([put("users:k", document_entry(GEN))])
        load_into_memory(b, "users:k")

        redis_server.pause()
        try:
            with pytest.raises(CacheUnavailable):
                a.write_many([put("users:k", document_entry(GEN + 1))])
            assert not b.healthy  # right away: no sleep in between
            with pytest.raises(CacheUnavailable):
                b.get("users:k")
            assert a.stats()["failure_waits"] >= 1
        finally:
            redis_server.resume()


def test_a_dropped_subscription_clears_the_memory_tier(
    pair: tuple[TieredCache, TieredCache], raw: redis.Redis
) -> None:
    a, b = pair
    entry = document_entry(GEN)
    a.write_many([put("users:k", entry)])
    load_into_memory(b, "users:k")
    connects = b.stats()["connects"]

    raw.client_kill_filter(_type="pubsub")

    assert wait_until(lambda: b.stats()["connects"] > connects)
    assert b.memory.get("users:k") is MISS
    assert b.wait_healthy(WAIT_S)
    assert_same_entry(b.get("users:k"), entry)
    assert b.stats()["disconnects"] >= 1


def test_an_unreadable_invalidation_clears_the_memory_tier(
    pair: tuple[TieredCache, TieredCache], raw: redis.Redis
) -> None:
    a, b = pair
    a.write_many([put("users:k", document_entry(GEN))])
    load_into_memory(b, "users:k")
    raw.publish(b.redis.key_prefix + "invalidate", b'{"v": 99, "what": "unknown"}')
    assert wait_until(lambda: b.stats()["bad_messages"] >= 1)
    assert b.memory.get("users:k") is MISS


# ------------------------------------------------------------------------------------------
# The registry of instances
# ------------------------------------------------------------------------------------------


def test_writes_wait_for_a_registered_instance_that_does_not_ack(
    pair: tuple[TieredCache, TieredCache], raw: redis.Redis
) -> None:
    """An instance listed in the registry is waited for even if it is not subscribed (its
    subscription may have been dropped by Redis while it still holds a lease)."""
    a, _ = pair
    seconds, micros = raw.time()
    now_ms = seconds * 1000 + micros // 1000
    raw.zadd(a.redis.key_prefix + REGISTRY_SUFFIX, {"ghost": now_ms + 60_000})
    timeouts = a.stats()["ack_timeouts"]
    a.write_many([put("users:k", document_entry(GEN))])
    assert a.stats()["ack_timeouts"] == timeouts + 1


def test_a_closed_instance_leaves_the_registry(pair: tuple[TieredCache, TieredCache]) -> None:
    a, b = pair
    b.close()
    waited, timeouts = a.stats()["acks_waited"], a.stats()["ack_timeouts"]
    a.write_many([put("users:k", document_entry(GEN))])
    assert a.stats()["acks_waited"] == waited  # nobody else listed
    assert a.stats()["ack_timeouts"] == timeouts


def test_a_wiped_registry_makes_the_next_write_wait(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    a, _ = pair
    a.fill_many([put(f"users:{i}", document_entry(GEN)) for i in range(3)])
    # The registry lives under the key prefix, but is not counted as a cache entry.
    assert a.delete_prefix("") == 3
    assert wait_until(lambda: a.healthy)
    waits = a.stats()["registry_waits"]
    a.write_many([put("users:k", document_entry(GEN))])
    assert a.stats()["registry_waits"] == waits + 1


# ------------------------------------------------------------------------------------------
# Stats and construction
# ------------------------------------------------------------------------------------------


def test_stats_report_invalidations_acks_and_the_lag(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    a, b = pair
    for i in range(20):
        a.write_many([put(f"users:{i}", document_entry(GEN))])
    sender, receiver = a.stats(), b.stats()
    assert sender["invalidations_sent"] >= 20
    assert sender["acks_received"] >= 20
    assert receiver["invalidations_received"] >= 20
    assert receiver["acks_sent"] >= 20
    lag = receiver["invalidation_lag_ms"]
    assert lag["samples"] >= 20
    assert isinstance(lag["p50"], float) and isinstance(lag["max"], float)
    assert lag["p50"] <= lag["p99"] <= lag["max"]
    for stats in (sender, receiver):
        assert stats["errors"] == 0
        assert isinstance(stats["evictions"], int)
        assert stats["healthy"] is True
        assert set(stats["memory"]) >= {"evictions", "errors"}
        assert set(stats["redis"]) >= {"evictions", "errors"}


def test_name_lease_and_close(redis_url: str) -> None:
    cache = make_tiered(redis_url, fresh_prefix())
    assert cache.name == "tiered" and cache.shares_documents is True
    assert cache.wait_healthy(WAIT_S)
    assert "tiered" in repr(cache).lower()
    cache.close()
    cache.close()  # idempotent
    assert not cache.healthy


@pytest.mark.parametrize(
    ("lease_s", "local_ttl_s"), [(0.0, 60.0), (float("inf"), 60.0), (0.5, 0.0)]
)
def test_bad_settings_are_refused(redis_url: str, lease_s: float, local_ttl_s: float) -> None:
    redis_cache = RedisCache(redis_url, key_prefix=fresh_prefix(), timeout_s=TEST_TIMEOUT_S)
    with pytest.raises(ConfigError):
        TieredCache(MemoryCache(), redis_cache, lease_s=lease_s, local_ttl_s=local_ttl_s)
    redis_cache.close()
