"""RedisCache: the conformance suite on a real redis-server, plus what only Redis has.

Every test uses the session's throw-away redis-server (flushed per test, never the system
Redis) and a key prefix of its own.
"""

from __future__ import annotations

import itertools
import pickle
import random
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.register_assert_rewrite("tests.cache_conformance")

from gateway.caches.base import MISS, Entry, Kind, Put  # noqa: E402
from gateway.caches.codec import encode_entry  # noqa: E402
from gateway.caches.errors import CacheUnavailable  # noqa: E402
from gateway.caches.redis_cache import (  # noqa: E402
    HEADER_PROBE_BYTES,
    LUA_HEADER_FUNCTION,
    SCAN_BATCH_KEYS,
    RedisCache,
    glob_escape,
)
from gateway.errors import ConfigError  # noqa: E402
from tests.cache_conformance import (  # noqa: E402
    GEN,
    LONG_TTL_S,
    CacheBackendConformance,
    absent_entry,
    assert_quarantined,
    assert_same_entry,
    document_entry,
    put,
)
from tests.servers import RedisServer  # noqa: E402

_prefixes = itertools.count(1)
#: Generous for a loaded CI machine; the paused-server tests only assert that calls fail.
TEST_TIMEOUT_S = 0.2


def fresh_prefix() -> str:
    return f"test{next(_prefixes)}:"


@pytest.fixture
def cache(redis_url: str) -> Iterator[RedisCache]:
    with RedisCache(redis_url, key_prefix=fresh_prefix(), timeout_s=TEST_TIMEOUT_S) as c:
        yield c


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test server, for looking behind the cache's back."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


class TestRedisCache(CacheBackendConformance):
    """The shared suite: time really passes (TTLs are short), keys get a fresh prefix."""

    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[RedisCache]:
        cache = RedisCache(redis_url, key_prefix=fresh_prefix(), timeout_s=TEST_TIMEOUT_S)
        yield cache
        cache.close()


# ------------------------------------------------------------------------------------------
# Compare-and-set in Lua
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_instances_end_with_the_highest_generation(redis_url: str) -> None:
    """Several instances (own pools) and threads put batches of random generations over the
    same keys: the script must leave each key at the highest generation put for it."""
    prefix = fresh_prefix()
    instances = [RedisCache(redis_url, key_prefix=prefix, timeout_s=2.0) for _ in range(3)]
    keys = [f"hot:{i}" for i in range(4)]
    threads_n, rounds = 9, 40
    start = threading.Barrier(threads_n)
    highest: dict[str, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        cache = instances[seed % len(instances)]
        start.wait()
        try:
            for _ in range(rounds):
                batch = []
                for key in rng.sample(keys, rng.randint(1, len(keys))):
                    generation = GEN + rng.randrange(1000)
                    batch.append(put(key, document_entry(generation, "c")))
                    with lock:
                        highest[key] = max(highest.get(key, 0), generation)
                if rng.random() < 0.5:
                    cache.fill_many(batch)
                else:
                    cache.write_many(batch)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    results = instances[0].get_many(keys)
    for key, result in zip(keys, results, strict=True):
        assert_same_entry(result, document_entry(highest[key], "c"))
    for instance in instances:
        instance.close()


def test_generations_beyond_double_precision_are_ordered(cache: RedisCache) -> None:
    # 2**60 and 2**60 + 1 are the same double: a script comparing Lua numbers would see them
    # equal. Negative and multi-length generations are ordered too.
    for low, high in [(2**60, 2**60 + 1), (-5, 3), (-12, -5), (9, 10), (99, 100), (0, 10**30)]:
        key = f"g:{low}:{high}"
        cache.fill_many([put(key, document_entry(high))])
        cache.fill_many([put(key, document_entry(low))])
        assert_same_entry(cache.get(key), document_entry(high))
        cache.write_many([put(key, document_entry(low))])
        assert_same_entry(cache.get(key), document_entry(high))


def test_ttl_is_set_in_the_same_step(cache: RedisCache, raw: redis.Redis) -> None:
    cache.fill_many([Put("a", document_entry(GEN), 1.5)])
    cache.write_many([Put("b", document_entry(GEN), 2.5)])
    cache.quarantine_many(["c"], 3.5)
    prefix = cache.key_prefix
    assert 0 < raw.pttl(prefix + "a") <= 1500
    assert 1500 < raw.pttl(prefix + "b") <= 2500
    assert 2500 < raw.pttl(prefix + "c") <= 3500


def test_quarantine_keeps_a_marker_that_outlives_the_new_one(
    cache: RedisCache, raw: redis.Redis
) -> None:
    cache.quarantine_many(["k"], 30.0)
    cache.quarantine_many(["k"], 1.0)
    assert raw.pttl(cache.key_prefix + "k") > 25_000
    cache.quarantine_many(["k"], 60.0)
    assert raw.pttl(cache.key_prefix + "k") > 55_000
    cache.quarantine_many(["k"], 0.0)
    assert_quarantined(cache.get("k"))


def test_large_document_and_long_foreign_revision(cache: RedisCache) -> None:
    # A revision longer than the script's GETRANGE probe makes it read the whole value.
    long_rev = "x" * (HEADER_PROBE_BYTES * 2)
    big = {"_id": "big", "blob": "é" * 200_000, "n": [Decimal(i) for i in range(1000)]}
    entry = Entry(Kind.DOCUMENT, GEN, long_rev, big, 1.0)
    cache.fill_many([put("big", entry)])
    assert_same_entry(cache.get("big"), entry)

    cache.fill_many([put("big", Entry(Kind.DOCUMENT, GEN, "other", {}, 1.0))])  # equal: refused
    assert_same_entry(cache.get("big"), entry)
    cache.write_many([put("big", Entry(Kind.DOCUMENT, GEN, long_rev, {}, 2.0))])  # same rev
    assert_same_entry(cache.get("big"), entry)
    cache.write_many([put("big", Entry(Kind.DOCUMENT, GEN, long_rev + "y", {}, 1.0))])
    assert cache.get("big") is MISS  # equal generation, other revision: dropped


def test_script_cache_flush_is_survived(cache: RedisCache, raw: redis.Redis) -> None:
    raw.script_flush()
    entry = document_entry(GEN)
    cache.fill_many([put("a", entry), put("b", entry)])
    raw.script_flush()
    cache.quarantine_many(["q"], LONG_TTL_S)
    raw.script_flush()
    cache.write_many([put("c", entry)])
    a, b, q, c = cache.get_many(["a", "b", "q", "c"])
    assert_same_entry(a, entry)
    assert_same_entry(b, entry)
    assert_quarantined(q)
    assert_same_entry(c, entry)
    assert cache.stats()["errors"] == 0


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(list(Kind)),
    generation=st.integers(-(10**25), 10**25),
    rev=st.none() | st.text(max_size=30),
)
def test_lua_reads_the_header_the_codec_writes(
    raw: redis.Redis, kind: Kind, generation: int, rev: str | None
) -> None:
    data = encode_entry(Entry(kind, generation, rev, {"body": "|v1|9|9|"}, 1.5))
    script = LUA_HEADER_FUNCTION + "local k, g, r = header(ARGV[1]) return {k, g, r}"
    k, g, r = raw.eval(script, 0, data)
    assert int(k) == kind
    assert int(g) == generation
    expected = b":" if rev is None else b"%d:" % len(rev.encode("utf-8", "surrogatepass"))
    assert r == expected + (rev or "").encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------


def test_key_prefixes_isolate_applications(redis_url: str, raw: redis.Redis) -> None:
    one = RedisCache(redis_url, key_prefix="app1:")
    two = RedisCache(redis_url, key_prefix="app2:")
    first, second = document_entry(GEN, "a"), document_entry(GEN + 1, "b")
    one.fill_many([put("users:k", first)])
    two.fill_many([put("users:k", second)])
    assert_same_entry(one.get("users:k"), first)
    assert_same_entry(two.get("users:k"), second)
    assert raw.exists("app1:users:k", "app2:users:k") == 2

    one.quarantine_many(["users:k"], LONG_TTL_S)
    assert_same_entry(two.get("users:k"), second)
    assert one.delete_prefix("") == 1
    assert_same_entry(two.get("users:k"), second)
    two.delete_many(["users:k"])
    assert raw.exists("app1:users:k", "app2:users:k") == 0
    one.close()
    two.close()


def test_delete_prefix_escapes_glob_characters_of_the_key_prefix(
    redis_url: str, raw: redis.Redis
) -> None:
    special = RedisCache(redis_url, key_prefix="app[1]*?\\:")
    lookalikes = ["app1x:k", "app[1]xy\\:k", "app[1]*?:k", "app1*?\\:k"]
    for key in lookalikes:
        raw.set(key, b"not ours")
    special.fill_many([put(f"k{i}", document_entry(GEN)) for i in range(3)])
    assert special.delete_prefix("") == 3
    assert special.delete_prefix("k") == 0
    assert raw.exists(*lookalikes) == len(lookalikes)
    special.close()


def test_glob_escape() -> None:
    assert glob_escape("a*b?c[d]e\\f") == b"a\\*b\\?c\\[d\\]e\\\\f"
    assert glob_escape("é{x}") == "é{x}".encode()


@pytest.mark.slow
def test_delete_prefix_of_many_keys_counts_exactly(cache: RedisCache, raw: redis.Redis) -> None:
    n = SCAN_BATCH_KEYS * 2 + 345
    with raw.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.set(f"{cache.key_prefix}bulk:{i}", b"x")
            pipe.set(f"{cache.key_prefix}other:{i}", b"x")
        pipe.execute()
    assert cache.delete_prefix("bulk:") == n
    assert cache.delete_prefix("bulk:") == 0
    assert len(list(raw.scan_iter(match=f"{cache.key_prefix}other:*", count=1000))) == n
    cache.delete_many([f"other:{i}" for i in range(n)])  # more than one UNLINK batch
    assert raw.dbsize() == 0


# ------------------------------------------------------------------------------------------
# Bad values in Redis
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"garbage",
        b"",
        pickle.dumps({"a": 1}),
        b"v2|1|5|1.0|||Dfuture body",
        encode_entry(document_entry(GEN))[:-3],
    ],
)
def test_corrupt_value_reads_as_miss_and_counts_an_error(
    cache: RedisCache, raw: redis.Redis, value: bytes
) -> None:
    raw.set(cache.key_prefix + "bad", value)
    good = document_entry(GEN)
    cache.fill_many([put("good", good)])

    assert cache.get("bad") is MISS
    results = cache.get_many(["good", "bad"])
    assert_same_entry(results[0], good)
    assert results[1] is MISS
    assert cache.stats()["errors"] == 2
    assert cache.stats()["decode_errors"] == 2


def test_fill_replaces_an_unreadable_value(cache: RedisCache, raw: redis.Redis) -> None:
    raw.set(cache.key_prefix + "bad", b"garbage")
    entry = document_entry(GEN)
    cache.fill_many([put("bad", entry)])
    assert_same_entry(cache.get("bad"), entry)


def test_script_reads_the_header_of_a_newer_format_version(
    cache: RedisCache, raw: redis.Redis
) -> None:
    # A newer gateway's entry: this one cannot decode its body, but the header layout is
    # shared by every version, so an older fill still cannot replace a newer generation.
    raw.set(cache.key_prefix + "k", b"v2|1|%d|1.0|||?new body" % (GEN + 5))
    cache.fill_many([put("k", document_entry(GEN))])
    assert stored(raw, cache.key_prefix + "k").startswith(b"v2|")
    raw.set(cache.key_prefix + "q", b"v2|3|0|1.0|||?")
    cache.fill_many([put("q", document_entry(GEN))])
    assert stored(raw, cache.key_prefix + "q").startswith(b"v2|3|")


def stored(raw: redis.Redis, full_key: str) -> bytes:
    value = raw.get(full_key)
    assert isinstance(value, bytes), value
    return value


def test_a_key_of_another_type_is_an_error_not_a_crash(cache: RedisCache, raw: redis.Redis) -> None:
    raw.rpush(cache.key_prefix + "list", b"x")
    with pytest.raises(CacheUnavailable):
        cache.get("list")
    with pytest.raises(CacheUnavailable):
        cache.fill_many([put("ok", document_entry(GEN)), put("list", document_entry(GEN))])
    assert_same_entry(cache.get("ok"), document_entry(GEN))  # the rest of the pipeline ran
    assert cache.stats()["errors"] == 2


# ------------------------------------------------------------------------------------------
# An unreachable or slow server
# ------------------------------------------------------------------------------------------


def test_paused_server_raises_cache_unavailable_then_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    cache = RedisCache(redis_url, key_prefix=fresh_prefix(), timeout_s=TEST_TIMEOUT_S)
    before = [document_entry(GEN + i) for i in range(3)]
    cache.fill_many([put(f"k{i}", entry) for i, entry in enumerate(before)])

    redis_server.pause()
    try:
        calls = [
            lambda: cache.get("k0"),
            lambda: cache.get_many(["k0", "k1"]),
            lambda: cache.fill_many([put("k0", document_entry(GEN + 10))]),
            lambda: cache.write_many([put("k1", document_entry(GEN + 10))]),
            lambda: cache.quarantine_many(["k2"], LONG_TTL_S),
            lambda: cache.delete_many(["k0"]),
            lambda: cache.delete_prefix("k"),
            lambda: cache.server_info(),
            lambda: cache.publish("channel", b"x"),
        ]
        for call in calls:
            with pytest.raises(CacheUnavailable) as raised:
                call()
            assert isinstance(raised.value.__cause__, redis.RedisError)
        assert cache.stats()["errors"] == len(calls)
    finally:
        redis_server.resume()

    # Commands sent during the pause may still run now: wait until they have, then check
    # that the connections were not left out of step (every answer is for its own command).
    deadline = time.monotonic() + 5
    while True:
        try:
            cache.get("k0")
            break
        except CacheUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    fresh = {f"fresh{i}": document_entry(GEN + 100 + i) for i in range(20)}
    cache.write_many([put(key, entry) for key, entry in fresh.items()])
    for key, entry in fresh.items():
        assert_same_entry(cache.get(key), entry)
    assert [r for r in cache.get_many(list(fresh)) if r is MISS] == []
    cache.close()


def test_unreachable_server_raises_cache_unavailable(redis_server: RedisServer) -> None:
    with RedisServer() as doomed:
        url = doomed.url
    cache = RedisCache(url, timeout_s=TEST_TIMEOUT_S)  # constructing never fails on this
    with pytest.raises(CacheUnavailable):
        cache.get("k")
    with pytest.raises(CacheUnavailable):
        cache.write_many([put("k", document_entry(GEN))])
    assert cache.stats()["errors"] == 2
    cache.close()


# ------------------------------------------------------------------------------------------
# Authentication, URLs, Cluster
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    with RedisServer(password="s3cret/with:odd@chars") as server:
        yield server


def exercise(cache: RedisCache) -> None:
    entry = document_entry(GEN)
    cache.fill_many([put("k", entry)])
    cache.write_many([put("w", entry)])
    cache.quarantine_many(["q"], LONG_TTL_S)
    k, w, q = cache.get_many(["k", "w", "q"])
    assert_same_entry(k, entry)
    assert_same_entry(w, entry)
    assert_quarantined(q)
    assert cache.delete_prefix("") == 3


def test_password_in_the_url(password_server: RedisServer) -> None:
    assert ":" in password_server.url.split("@")[0]  # redis://:<password>@127.0.0.1:PORT/0
    with RedisCache(password_server.url, key_prefix=fresh_prefix()) as cache:
        exercise(cache)


def test_acl_user_in_the_url(password_server: RedisServer) -> None:
    user, password = "gateway-app", "p@ss:w/rd"
    reply = password_server.command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", "~app:*", "+@all"
    )
    assert reply == "+OK"
    url = f"redis://{user}:{quote(password, safe='')}@127.0.0.1:{password_server.port}/0"
    with RedisCache(url, key_prefix="app:") as cache:
        exercise(cache)
    outside = RedisCache(url, key_prefix="elsewhere:")  # keys the ACL does not allow
    with pytest.raises(CacheUnavailable, match=r"NOPERM|permission"):
        outside.get("k")
    outside.close()


def test_wrong_password_is_a_config_error(password_server: RedisServer) -> None:
    wrong = f"redis://:nope@127.0.0.1:{password_server.port}/0"
    with pytest.raises(ConfigError, match="credentials") as raised:
        RedisCache(wrong)
    assert "nope" not in str(raised.value)
    # Without the probe the same failure surfaces as the cache being unavailable.
    cache = RedisCache(wrong, probe=False)
    with pytest.raises(CacheUnavailable):
        cache.get("k")
    no_password = RedisCache(f"redis://127.0.0.1:{password_server.port}/0", probe=False)
    with pytest.raises(CacheUnavailable):
        no_password.get("k")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis+cluster://127.0.0.1:7000",
        "rediss+cluster://:pw@127.0.0.1:7000",
        "redis://127.0.0.1:notaport/0",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RedisCache(url, probe=False)
    assert "pw@" not in str(raised.value)
    if "cluster" in url:
        assert "Redis Cluster is not supported" in str(raised.value)


def test_bad_settings_are_config_errors(redis_url: str) -> None:
    with pytest.raises(ConfigError):
        RedisCache(redis_url, timeout_s=0)
    with pytest.raises(ConfigError):
        RedisCache(redis_url, max_connections=0)
    with pytest.raises(ConfigError):
        RedisCache(redis_url, key_prefix=None)  # type: ignore[arg-type]


def test_cluster_mode_server_is_refused() -> None:
    with (
        RedisServer(extra_args=["--cluster-enabled", "yes"]) as server,
        pytest.raises(ConfigError, match="Redis Cluster is not supported"),
    ):
        RedisCache(server.url)


def test_from_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    cache = RedisCache.from_client(client, key_prefix=fresh_prefix())
    exercise(cache)
    cache.close()
    assert client.ping()  # the caller's client stays open
    client.close()
    decoding = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisCache.from_client(decoding)
    decoding.close()


# ------------------------------------------------------------------------------------------
# The rest
# ------------------------------------------------------------------------------------------


def test_get_and_get_many_agree(cache: RedisCache) -> None:
    entries = {f"k{i}": document_entry(GEN + i) for i in range(5)}
    entries["gone"] = absent_entry()
    cache.fill_many([put(key, entry) for key, entry in entries.items()])
    for key, entry in entries.items():
        assert_same_entry(cache.get(key), entry)
    assert cache.get("never") is MISS


def test_quarantine_marker_is_stamped_with_the_injected_wall_clock(redis_url: str) -> None:
    cache = RedisCache(redis_url, key_prefix=fresh_prefix(), wall_clock=lambda: 1234.5)
    cache.quarantine_many(["k"], LONG_TTL_S)
    marker = cache.get("k")
    assert isinstance(marker, Entry) and marker.stored_at == 1234.5
    cache.close()


def test_stats_and_server_info(cache: RedisCache) -> None:
    cache.fill_many([put("k", document_entry(GEN + 1))])
    cache.fill_many([put("k", document_entry(GEN))])
    cache.write_many([put("k", document_entry(GEN + 1, "b"))])
    stats = cache.stats()
    assert stats["evictions"] == 0 and stats["errors"] == 0
    assert stats["fills_stored"] == 1 and stats["fills_refused"] == 1
    assert stats["writes_dropped"] == 1
    info = cache.server_info()
    assert "evicted_keys" in info and "keyspace_hits" in info


def test_publish_and_pubsub(cache: RedisCache) -> None:
    pubsub = cache.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("gateway-test")
    assert pubsub.get_message(timeout=0.1) is None  # the subscribe confirmation is skipped
    assert cache.publish("gateway-test", b"invalidate k") == 1
    message: dict[str, Any] | None = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
    assert message is not None and message["data"] == b"invalidate k"
    pubsub.close()
