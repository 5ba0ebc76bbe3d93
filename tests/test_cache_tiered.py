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

from gateway.caches.base import (  # noqa: E402
    DROPPED,
    MISS,
    NO_RECORD,
    STORED,
    Entry,
    Fill,
    Kind,
)
from gateway.caches.errors import CacheUnavailable  # noqa: E402
from gateway.caches.memory import MemoryCache  # noqa: E402
from gateway.caches.redis_cache import RedisCache  # noqa: E402
from gateway.caches.tiered import REGISTRY_SUFFIX, TieredCache  # noqa: E402
from gateway.errors import ConfigError  # noqa: E402
from tests.cache_conformance import (  # noqa: E402
    GEN,
    LONG_TTL_S,
    CacheBackendConformance,
    answer,
    assert_same_entry,
    begin,
    document_entry,
    end,
    fast_thread_switching,
    fill,
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


def age_registry(cache: TieredCache) -> None:
    """Make the registry look as old as a long-running cluster's (writes then never wait for
    it to be complete), as a test's shortcut through the first ``1.25 * lease_s``."""
    client = cache.redis.client
    seconds, micros = client.time()
    created_ms = int(seconds) * 1000 + int(micros) // 1000 - 60_000
    client.zadd(cache.redis.key_prefix + REGISTRY_SUFFIX, {"": -created_ms})


def wait_registry_complete(cache: TieredCache) -> None:
    """Until a write no longer waits for a registry younger than a member's lifetime."""

    def probe() -> bool:
        before = cache.stats()["registry_waits"]
        cache.invalidate_many(["probe:registry"])
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
        age_registry(a)
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

    model_examples = 30
    hit_tokens_during_writes = False  # see test_a_token_from_the_writers_own_copy_is_stale

    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[TieredCache]:
        cache = make_tiered(redis_url, fresh_prefix())
        age_registry(cache)
        assert cache.wait_healthy(WAIT_S)
        wait_registry_complete(cache)
        yield cache
        cache.close()


def write(cache: TieredCache, key: str, entry: Entry | None, intent: str = "a1") -> str:
    """A whole write (intent, then its end); its outcome."""
    return end(cache, key, intent, begin(cache, key, intent), entry)


# ------------------------------------------------------------------------------------------
# Coherence across instances
# ------------------------------------------------------------------------------------------


def test_memory_hits_are_served_while_healthy(pair: tuple[TieredCache, TieredCache]) -> None:
    a, b = pair
    entry = document_entry(GEN)
    assert write(a, "users:k", entry) == STORED
    load_into_memory(b, "users:k")
    reads_before = b.stats()["redis_reads"]
    for _ in range(20):
        assert_same_entry(b.get("users:k"), entry)
        assert_same_entry(b.get_many(["users:k"])[0], entry)
    stats = b.stats()
    assert stats["healthy"] is True
    assert stats["memory_hits"] >= 40 - 2  # a renewal gap may send a read or two to Redis
    assert stats["redis_reads"] - reads_before <= 2


def test_memory_copies_keep_the_record_version_as_token(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    a, b = pair
    assert write(a, "users:k", document_entry(GEN)) == STORED
    from_redis = a.redis.get("users:k")
    local = load_into_memory(b, "users:k")
    assert isinstance(from_redis, Entry) and local.ver == from_redis.ver > NO_RECORD
    assert b.read_token("users:k", local) == local.ver
    assert b.read_token("users:k", MISS) == NO_RECORD


def test_floors_are_never_copied_into_memory(pair: tuple[TieredCache, TieredCache]) -> None:
    a, b = pair
    a.invalidate_many(["users:k"])
    for _ in range(3):
        assert b.wait_healthy(WAIT_S)
        seen = b.get("users:k")
        assert isinstance(seen, Entry) and seen.kind is Kind.FLOOR and answer(seen) is MISS
    assert b.memory.get("users:k") is MISS


@pytest.mark.parametrize("operation", ["end", "failed end", "invalidate", "delete_prefix"])
def test_a_write_evicts_every_copy_before_it_returns(
    pair: tuple[TieredCache, TieredCache], operation: str
) -> None:
    a, b = pair
    received_before = b.stats()["invalidations_received"]
    for i in range(30):
        key = f"users:{operation}:{i}"
        old = document_entry(GEN + i)
        assert write(a, key, old) == STORED
        assert_same_entry(load_into_memory(a, key), old)
        assert_same_entry(load_into_memory(b, key), old)

        if operation == "end":
            new = document_entry(GEN + i + 1, "b")
            assert write(a, key, new) == STORED
            assert_same_entry(b.get(key), new)
            assert_same_entry(a.get(key), new)
        elif operation == "failed end":
            assert write(a, key, None) == DROPPED
            assert answer(b.get(key)) is MISS and answer(a.get(key)) is MISS
        elif operation == "invalidate":
            a.invalidate_many([key])
            assert answer(b.get(key)) is MISS and answer(a.get(key)) is MISS
        else:
            assert a.delete_prefix(key) == 1
            assert answer(b.get(key)) is MISS and answer(a.get(key)) is MISS
    assert b.stats()["invalidations_received"] - received_before >= 30
    assert a.stats()["acks_received"] >= 30


@pytest.mark.parametrize("ordered", [False, True])
def test_begin_evicts_the_other_copies_and_keeps_the_writers_own(
    pair: tuple[TieredCache, TieredCache], ordered: bool
) -> None:
    a, b = pair
    old = document_entry(GEN)
    assert write(a, "users:k", old) == STORED
    load_into_memory(a, "users:k")
    load_into_memory(b, "users:k")
    received = b.stats()["invalidations_received"]

    token = begin(a, "users:k", "a2", LONG_TTL_S, ordered=ordered)

    # B's copy is gone before begin returned: its next read goes to Redis (which still has
    # the entry, now living no longer than the intent)...
    assert b.stats()["invalidations_received"] == received + 1
    assert b.memory.get("users:k") is MISS
    reads = b.stats()["redis_reads"]
    assert_same_entry(b.get("users:k"), old)
    assert b.stats()["redis_reads"] == reads + 1
    # ...while A keeps serving its own copy, from memory, while the write is in flight.
    assert a.memory.get("users:k") is not MISS
    hits = a.stats()["memory_hits"]
    assert_same_entry(a.get("users:k"), old)
    assert a.stats()["memory_hits"] == hits + 1

    new = document_entry(GEN + 1, "b")
    assert end(a, "users:k", "a2", token, new) == STORED

    assert a.memory.get("users:k") is MISS and b.memory.get("users:k") is MISS
    assert_same_entry(a.get("users:k"), new)
    assert_same_entry(b.get("users:k"), new)


def test_a_token_from_the_writers_own_copy_is_stale(pair: tuple[TieredCache, TieredCache]) -> None:
    """The copy a writer keeps during its write carries the version it was read with: a
    reader distrusting it takes a token the write already moved past, so its fill is refused
    (safe: the copy is dropped, the next read goes to Redis). `Model` would have stored it."""
    a, _ = pair
    old = document_entry(GEN)
    assert write(a, "users:k", old) == STORED
    kept = load_into_memory(a, "users:k")
    token = begin(a, "users:k", "a2")
    assert a.read_token("users:k", kept) < token

    fill(a, "users:k", document_entry(GEN, "b"), a.read_token("users:k", kept))

    assert a.memory.get("users:k") is MISS
    assert_same_entry(a.get("users:k"), old)  # from Redis, where the write is in flight
    assert a.redis.stats()["fills_refused"] == 1


def test_a_fill_copied_into_memory_lives_no_longer_than_redis_keeps_it(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    a, b = pair
    begin(a, "users:k", "a1", 0.3)  # another instance's write, which never ends
    # After the begin returned (the intent's deadline was set by then, on Redis's clock),
    # plus a margin for whole milliseconds.
    deadline = time.monotonic() + 0.3 + 0.01
    seen = b.get("users:k")
    read = document_entry(GEN)
    fill(b, "users:k", read, b.read_token("users:k", seen))
    assert_same_entry(b.memory.get("users:k"), read)  # copied (Redis stored it)...
    assert wait_until(lambda: time.monotonic() > deadline)
    assert b.memory.get("users:k") is MISS  # ...but only until the intent's deadline
    assert answer(b.get("users:k")) is MISS


def test_the_writers_own_copy_lives_no_longer_than_its_intent(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    a, _ = pair
    assert write(a, "users:k", document_entry(GEN)) == STORED
    load_into_memory(a, "users:k")
    begin(a, "users:k", "a2", 0.05)  # a writer that never ends
    deadline = time.monotonic() + 0.05 + 0.01
    assert wait_until(lambda: time.monotonic() > deadline)
    assert a.memory.get("users:k") is MISS
    assert answer(a.get("users:k")) is MISS


def test_concurrent_readers_never_see_a_generation_older_than_an_acknowledged_write(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    """Linearizability of the memory tier, as a stress loop: a read that starts after A's
    write returned must answer that write's generation or a newer one, on B (through pub/sub)
    as on A (locally), while readers keep refilling Redis and their memory tiers."""
    a, b = pair
    key = "users:hot"
    database = [document_entry(GEN)]
    acknowledged = [GEN]
    assert write(a, key, database[0]) == STORED
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader(cache: TieredCache, many: bool) -> None:
        try:
            while not stop.is_set():
                floor = acknowledged[0]
                seen = cache.get_many([key])[0] if many else cache.get(key)
                entry = answer(seen)
                if entry is MISS:  # the gateway's miss path: token, DynamoDB, fill
                    token = cache.read_token(key, seen)
                    fill(cache, key, database[0], token)
                else:
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
            for generation in range(GEN + 1, GEN + 101):
                written = document_entry(generation)
                token = begin(a, key, "a1")
                database[0] = written  # DynamoDB applied it
                assert end(a, key, "a1", token, written) == STORED
                acknowledged[0] = generation
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert errors == []
    assert reads[0] > 100
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


@pytest.mark.parametrize("invalidation", ["write", "begin", "delete_prefix"])
def test_an_invalidation_between_the_redis_read_and_the_fill_wins(
    pair: tuple[TieredCache, TieredCache], monkeypatch: pytest.MonkeyPatch, invalidation: str
) -> None:
    a, b = pair
    key = "users:race"
    old = document_entry(GEN)
    assert write(a, key, old) == STORED
    read_done, go = _hold_fills(monkeypatch, b)
    answers: list[Any] = []
    reader = threading.Thread(target=lambda: answers.append(b.get(key)))
    reader.start()
    try:
        assert read_done.wait(WAIT_S)  # B read `old` from Redis and has not filled it yet
        skipped_before = b.stats()["local_fills_skipped"]
        new = document_entry(GEN + 1)
        if invalidation == "write":
            assert write(a, key, new) == STORED  # returns once B applied the invalidation
        elif invalidation == "begin":
            token = begin(a, key, "a2")
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
    elif invalidation == "begin":
        assert end(a, key, "a2", token, new) == STORED
        assert_same_entry(load_into_memory(b, key), new)
    else:
        assert answer(b.get(key)) is MISS


def test_a_fill_read_before_a_reconnect_is_not_kept(
    pair: tuple[TieredCache, TieredCache], monkeypatch: pytest.MonkeyPatch, raw: redis.Redis
) -> None:
    """Invalidations published while B's subscription was down are lost to B: a read made
    before B reconnected must not fill its memory afterwards."""
    a, b = pair
    key = "users:reconnect"
    assert write(a, key, document_entry(GEN)) == STORED
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


def test_a_fill_goes_to_redis_then_into_memory(pair: tuple[TieredCache, TieredCache]) -> None:
    a, b = pair
    assert write(a, "users:k", document_entry(GEN)) == STORED
    local = load_into_memory(b, "users:k")
    fresher = document_entry(GEN, "b", stored_at=1.0)

    fill(b, "users:k", fresher, b.read_token("users:k", local))  # e.g. a distrusted copy

    copy = b.memory.get("users:k")
    assert_same_entry(copy, fresher)
    assert isinstance(copy, Entry) and copy.ver == local.ver  # the record's version, still
    assert_same_entry(a.get("users:k"), fresher)  # Redis stored it
    assert b.stats()["invalidations_sent"] == 0  # a fill never changes the truth: no publish

    fill(b, "users:k", document_entry(GEN), NO_RECORD)  # refused by Redis...
    assert b.memory.get("users:k") is MISS  # ...and B's copy is dropped
    assert_same_entry(b.get("users:k"), fresher)


# ------------------------------------------------------------------------------------------
# Leases: a paused Redis, failures, reconnects
# ------------------------------------------------------------------------------------------


def test_a_paused_redis_stops_memory_hits_once_the_lease_ran_out(
    pair: tuple[TieredCache, TieredCache], redis_server: RedisServer
) -> None:
    a, b = pair
    entry = document_entry(GEN)
    assert write(a, "users:k", entry) == STORED
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


@pytest.mark.parametrize("failing", ["begin", "end"])
def test_a_failed_write_returns_only_after_other_leases_ran_out(
    redis_url: str, redis_server: RedisServer, failing: str
) -> None:
    """The gateway acknowledges a write whose cache update failed (fail-open): by the time
    the failure reaches it, no other instance may still serve the copy from memory, and the
    writer's own copy is gone too.

    The lease (1 s) is longer than the two Redis timeouts a failed write goes through (the
    command, then the attempt to publish anyway), so only the hold makes this pass.
    """
    with two_instances(redis_url, lease_s=1.0) as (a, b):
        assert write(a, "users:k", document_entry(GEN)) == STORED
        load_into_memory(a, "users:k")
        load_into_memory(b, "users:k")
        token = begin(a, "users:k", "a2") if failing == "end" else 0

        redis_server.pause()
        try:
            with pytest.raises(CacheUnavailable):
                if failing == "begin":
                    a.begin_write(["users:k"], "a2", LONG_TTL_S)
                else:
                    end(a, "users:k", "a2", token, document_entry(GEN + 1))
            assert not b.healthy  # right away: no sleep in between
            with pytest.raises(CacheUnavailable):
                b.get("users:k")
            assert a.memory.get("users:k") is MISS
            assert a.stats()["failure_waits"] >= 1
        finally:
            redis_server.resume()


def test_a_dropped_subscription_clears_the_memory_tier(
    pair: tuple[TieredCache, TieredCache], raw: redis.Redis
) -> None:
    a, b = pair
    entry = document_entry(GEN)
    assert write(a, "users:k", entry) == STORED
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
    assert write(a, "users:k", document_entry(GEN)) == STORED
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
    a.invalidate_many(["users:k"])
    assert a.stats()["ack_timeouts"] == timeouts + 1


def test_a_closed_instance_leaves_the_registry(pair: tuple[TieredCache, TieredCache]) -> None:
    a, b = pair
    b.close()
    waited, timeouts = a.stats()["acks_waited"], a.stats()["ack_timeouts"]
    assert write(a, "users:k", document_entry(GEN)) == STORED
    assert a.stats()["acks_waited"] == waited  # nobody else listed
    assert a.stats()["ack_timeouts"] == timeouts


def test_a_wiped_registry_makes_the_next_write_wait(
    pair: tuple[TieredCache, TieredCache], raw: redis.Redis
) -> None:
    a, _ = pair
    raw.delete(a.redis.key_prefix + REGISTRY_SUFFIX)  # e.g. FLUSHALL, or evicted
    waits = a.stats()["registry_waits"]
    a.invalidate_many(["users:k"])
    assert a.stats()["registry_waits"] == waits + 1


def test_delete_prefix_counts_entries_and_never_touches_the_registry(
    pair: tuple[TieredCache, TieredCache], raw: redis.Redis
) -> None:
    a, b = pair
    a.fill_many([Fill(f"users:{i}", document_entry(GEN), LONG_TTL_S, 0) for i in range(3)])
    load_into_memory(b, "users:0")
    registry = a.redis.key_prefix + REGISTRY_SUFFIX
    members = raw.zrange(registry, 0, -1)

    assert a.delete_prefix("") == 3  # the registry lives under the key prefix too

    assert raw.zrange(registry, 0, -1) == members
    assert b.memory.get("users:0") is MISS
    waits = a.stats()["registry_waits"]
    a.invalidate_many(["users:k"])
    assert a.stats()["registry_waits"] == waits  # still complete: no write waits for it


# ------------------------------------------------------------------------------------------
# Stats and construction
# ------------------------------------------------------------------------------------------


def test_stats_report_invalidations_acks_and_the_lag(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    a, b = pair
    for i in range(10):
        assert write(a, f"users:{i}", document_entry(GEN)) == STORED  # two broadcasts each
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
        assert set(stats["redis"]) >= {"evictions", "errors", "writes_stored"}


def test_name_lease_and_close(redis_url: str) -> None:
    cache = make_tiered(redis_url, fresh_prefix())
    assert cache.name == "tiered" and cache.shares_documents is True
    assert cache.floor_ttl_s == cache.redis.floor_ttl_s
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
