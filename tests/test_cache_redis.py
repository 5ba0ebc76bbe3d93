"""RedisCache: the conformance suite on a real redis-server, plus what only Redis has.

Every test uses the session's throw-away redis-server (flushed per test, never the system
Redis) and a key prefix of its own.
"""

from __future__ import annotations

import itertools
import pickle
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.register_assert_rewrite("tests.cache_conformance")

from gateway.caches.base import (  # noqa: E402
    DROPPED,
    LATE,
    MISS,
    NO_RECORD,
    STORED,
    End,
    Entry,
    Fill,
    Kind,
)
from gateway.caches.codec import decode_entry, encode_entry  # noqa: E402
from gateway.caches.errors import CacheUnavailable  # noqa: E402
from gateway.caches.redis_cache import (  # noqa: E402
    LUA_RECORD_FUNCTIONS,
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
    answer,
    assert_same_entry,
    begin,
    document_entry,
    end,
    fill,
    token_of,
)
from tests.servers import RedisServer  # noqa: E402

_prefixes = itertools.count(1)
#: Generous for a loaded CI machine; the paused-server tests only assert that calls fail.
TEST_TIMEOUT_S = 0.2
#: Bounded polls (for conditions, never for speed).
WAIT_S = 10.0
#: A record as the scripts write it: its two versions, intents, then the entry proper.
RECORD_RE = re.compile(rb"\Av2\|(\d+)\|(\d+)\|([^|]*)\|(\d)\|")


def fresh_prefix() -> str:
    return f"test{next(_prefixes)}:"


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


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

    model_examples = 50

    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[RedisCache]:
        cache = RedisCache(redis_url, key_prefix=fresh_prefix(), timeout_s=2.0)
        yield cache
        cache.close()


def record(raw: redis.Redis, full_key: str) -> tuple[int, dict[str, int], Kind]:
    """The version, intents (id -> deadline in ms) and kind of a record, read behind the
    cache's back."""
    ver, _, intents, kind = full_record(raw, full_key)
    return ver, {intent: deadline for intent, (deadline, _) in intents.items()}, kind


def full_record(
    raw: redis.Redis, full_key: str
) -> tuple[int, int, dict[str, tuple[int, bool]], Kind]:
    """``ver``, ``uver``, intents (id -> (deadline in ms, ordered)) and kind of a record."""
    value = raw.get(full_key)
    assert isinstance(value, bytes), value
    match = RECORD_RE.match(value)
    assert match is not None, value
    ver, uver, intents, kind = match.groups()
    parsed = {}
    for part in filter(None, intents.split(b",")):
        intent, deadline, flag = part.split(b":")
        assert flag in (b"o", b"u"), part
        parsed[intent.decode()] = (int(deadline), flag == b"o")
    decoded = decode_entry(value)  # the codec reads what the scripts wrote
    assert decoded.ver == int(ver) and decoded.kind == int(kind)
    return int(ver), int(uver), parsed, Kind(int(kind))


def redis_now_ms(raw: redis.Redis) -> int:
    seconds, micros = raw.time()
    return int(seconds) * 1000 + int(micros) // 1000


# ------------------------------------------------------------------------------------------
# Records, versions and intents in Lua
# ------------------------------------------------------------------------------------------


def test_records_carry_versions_and_intents(cache: RedisCache, raw: redis.Redis) -> None:
    key = cache.key_prefix + "k"
    fill(cache, "k", document_entry(GEN), NO_RECORD)
    assert record(raw, key) == (0, {}, Kind.DOCUMENT)  # a fill keeps the record's version
    assert cache.read_token("k", cache.get("k")) == 0

    before = redis_now_ms(raw)
    token = begin(cache, "k", "a1", 30.0)
    ver, intents, kind = record(raw, key)
    assert (ver, kind) == (token, Kind.DOCUMENT)  # the entry stays, under a new version
    assert list(intents) == ["a1"] and before + 30_000 <= intents["a1"] <= before + 31_000
    seen = cache.get("k")
    assert isinstance(seen, Entry) and seen.ver == token == cache.read_token("k", seen)

    assert full_record(raw, key)[1] == token  # an unordered write moves both versions

    second = begin(cache, "k", "b2", 60.0, ordered=True)
    ver, uver, intents, kind = full_record(raw, key)
    assert second == uver == token < ver  # an ordered write's token is the unchanged uver
    assert {intent: ordered for intent, (_, ordered) in intents.items()} == {
        "a1": False,
        "b2": True,
    }
    assert end(cache, "k", "a1", token, document_entry(GEN + 1)) == DROPPED
    ver, intents, kind = record(raw, key)
    assert ver > token and list(intents) == ["b2"] and kind is Kind.FLOOR
    floor = cache.get("k")  # Redis hands out the floor: a miss whose version is the token
    assert isinstance(floor, Entry) and floor.kind is Kind.FLOOR and answer(floor) is MISS
    assert cache.read_token("k", floor) == ver
    assert cache.read_token("k", MISS) == NO_RECORD


def test_versions_never_repeat_even_after_the_record_expired(
    redis_url: str, raw: redis.Redis
) -> None:
    cache = RedisCache(redis_url, key_prefix=fresh_prefix(), floor_ttl_s=0.02)
    tokens = [begin(cache, "k", "a1")]
    assert end(cache, "k", "a1", tokens[0], None) == DROPPED  # a floor of 20 ms
    tokens.append(record(raw, cache.key_prefix + "k")[0])
    assert wait_until(lambda: raw.exists(cache.key_prefix + "k") == 0)
    tokens.append(begin(cache, "k", "a2"))  # a new record: its version still moves up
    assert tokens == sorted(set(tokens)), tokens
    cache.close()


def test_an_intent_expires_on_redis_clock(cache: RedisCache, raw: redis.Redis) -> None:
    """A writer that never ends: 20 ms later the record (and the entry it covered) is gone."""
    written = document_entry(GEN)
    assert end(cache, "k", "a0", begin(cache, "k", "a0"), written) == STORED
    stale = token_of(cache, "k")
    token = begin(cache, "k", "a1", 0.02)
    assert raw.pttl(cache.key_prefix + "k") <= 20

    assert wait_until(lambda: raw.exists(cache.key_prefix + "k") == 0)

    assert cache.get("k") is MISS
    fill(cache, "k", written, stale)  # read before the write: refused
    assert cache.get("k") is MISS
    assert end(cache, "k", "a1", token, document_entry(GEN + 1)) == LATE
    assert record(raw, cache.key_prefix + "k")[2] is Kind.FLOOR
    assert cache.stats()["writes_late"] == 1


def test_a_dead_intent_is_expired_by_the_next_script(cache: RedisCache, raw: redis.Redis) -> None:
    fill(cache, "k", document_entry(GEN), NO_RECORD)
    live = begin(cache, "k", "b2", LONG_TTL_S)  # keeps the record alive past a1's deadline
    begin(cache, "k", "a1", 0.02)
    assert wait_until(lambda: redis_now_ms(raw) > record(raw, cache.key_prefix + "k")[1]["a1"])

    assert_same_entry(cache.get("k"), document_entry(GEN))  # reads never touch intents
    assert end(cache, "k", "a1", 0, document_entry(GEN + 1)) == LATE  # its writer is dead...
    _, intents, kind = record(raw, cache.key_prefix + "k")
    assert list(intents) == ["b2"] and kind is Kind.FLOOR  # ...and what it covered is dropped
    assert end(cache, "k", "b2", live, document_entry(GEN + 2)) == DROPPED


def test_ttls_are_set_in_the_same_step(redis_url: str, raw: redis.Redis) -> None:
    cache = RedisCache(redis_url, key_prefix=fresh_prefix(), floor_ttl_s=5.0)
    prefix = cache.key_prefix
    fill(cache, "fill", document_entry(GEN), NO_RECORD, 1.5)
    assert 1000 < raw.pttl(prefix + "fill") <= 1500
    assert end(cache, "end", "a1", begin(cache, "end", "a1"), document_entry(GEN), 2.5) == STORED
    assert 2000 < raw.pttl(prefix + "end") <= 2500
    begin(cache, "intent", "a1", 3.5)  # a record lives until its last intent's deadline
    assert 3000 < raw.pttl(prefix + "intent") <= 3500
    cache.invalidate_many(["floor"])  # a floor: floor_ttl_s...
    assert 4500 < raw.pttl(prefix + "floor") <= 5000
    begin(cache, "long", "a1", 30.0)
    cache.invalidate_many(["long"])  # ...or until the last intent's deadline, if later
    assert 29_000 < raw.pttl(prefix + "long") <= 30_000
    fill(cache, "forever", document_entry(GEN), NO_RECORD, float("inf"))
    assert raw.pttl(prefix + "forever") == -1
    cache.close()


def test_script_cache_flush_is_survived(cache: RedisCache, raw: redis.Redis) -> None:
    raw.script_flush()
    entry = document_entry(GEN)
    cache.fill_many([Fill("a", entry, LONG_TTL_S, 0), Fill("b", entry, LONG_TTL_S, 0)])
    raw.script_flush()
    token = begin(cache, "c", "a1")
    raw.script_flush()
    assert end(cache, "c", "a1", token, entry) == STORED
    raw.script_flush()
    cache.invalidate_many(["a"])
    raw.script_flush()
    assert cache.delete_prefix("b") == 1
    assert [answer(r) is MISS for r in cache.get_many(["a", "b", "c"])] == [True, True, False]
    assert cache.stats()["errors"] == 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(list(Kind)),
    generation=st.integers(-(10**25), 10**25),
    rev=st.none() | st.text(max_size=30),
    ver=st.integers(0, 2**53),
)
def test_lua_reads_the_record_the_codec_writes(
    raw: redis.Redis, kind: Kind, generation: int, rev: str | None, ver: int
) -> None:
    data = encode_entry(Entry(kind, generation, rev, {"body": "|v2|9|a:1|"}, 1.5, ver))
    script = LUA_RECORD_FUNCTIONS + "local r = parse(ARGV[1]) return {fmt(r.ver), r.rest}"
    got_ver, rest = raw.eval(script, 0, data)
    assert int(got_ver) == ver
    assert data == b"v2|%d|0||" % ver + rest  # the entry proper, untouched


def test_lua_reads_and_writes_intents(raw: redis.Redis) -> None:
    data = b"v2|17|12|a1:1000:o,ffff:99999999999999:u|3|0|0.0|||_"
    script = LUA_RECORD_FUNCTIONS + (
        "local r = parse(ARGV[1]) r.ver = r.ver + 1 r.intents['b'] = {5, false} "
        "assert(r.intents['a1'][2] and not r.intents['ffff'][2]) "
        "save(KEYS[1], r, -1) return redis.call('GET', KEYS[1])"
    )
    written = raw.eval(script, 1, "lua-intents", data)
    assert written == b"v2|18|12|a1:1000:o,b:5:u,ffff:99999999999999:u|3|0|0.0|||_"
    assert decode_entry(written) == Entry(Kind.FLOOR, 0, None, None, 0.0, 18)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=st.integers(-(10**30), 10**30), b=st.integers(-(10**30), 10**30))
def test_lua_compares_generations_exactly(raw: redis.Redis, a: int, b: int) -> None:
    script = LUA_RECORD_FUNCTIONS + (
        "if generation_at_least(ARGV[1], ARGV[2]) then return 1 else return 0 end"
    )
    for x, y in ((a, b), (b, a), (a, a), (a, a + 1), (2**60, 2**60 + 1), (-(2**60) - 1, -(2**60))):
        assert raw.eval(script, 0, str(x), str(y)) == int(x >= y), (x, y)


# ------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------


def test_key_prefixes_isolate_applications(redis_url: str, raw: redis.Redis) -> None:
    one = RedisCache(redis_url, key_prefix="app1:")
    two = RedisCache(redis_url, key_prefix="app2:")
    first, second = document_entry(GEN, "a"), document_entry(GEN + 1, "b")
    fill(one, "users:k", first, NO_RECORD)
    fill(two, "users:k", second, NO_RECORD)
    assert_same_entry(one.get("users:k"), first)
    assert_same_entry(two.get("users:k"), second)
    assert raw.exists("app1:users:k", "app2:users:k") == 2

    one.invalidate_many(["users:k"])
    begin(one, "users:k", "a1")
    assert_same_entry(two.get("users:k"), second)
    assert one.delete_prefix("") == 0  # a floor with an intent: no entry to drop
    assert two.delete_prefix("") == 1
    assert answer(two.get("users:k")) is MISS
    assert raw.exists("app1:users:k", "app2:users:k") == 2  # floors, not holes
    one.close()
    two.close()


def test_delete_prefix_escapes_glob_characters_of_the_key_prefix(
    redis_url: str, raw: redis.Redis
) -> None:
    special = RedisCache(redis_url, key_prefix="app[1]*?\\:")
    lookalikes = ["app1x:k", "app[1]xy\\:k", "app[1]*?:k", "app1*?\\:k"]
    for key in lookalikes:
        raw.set(key, b"not ours")
    special.fill_many([Fill(f"k{i}", document_entry(GEN), LONG_TTL_S, 0) for i in range(3)])
    assert special.delete_prefix("") == 3
    assert special.delete_prefix("k") == 0
    assert [raw.get(key) for key in lookalikes] == [b"not ours"] * len(lookalikes)
    special.close()


def test_glob_escape() -> None:
    assert glob_escape("a*b?c[d]e\\f") == b"a\\*b\\?c\\[d\\]e\\\\f"
    assert glob_escape("é{x}") == "é{x}".encode()


@pytest.mark.slow
def test_delete_prefix_and_invalidate_of_many_keys(cache: RedisCache, raw: redis.Redis) -> None:
    n = SCAN_BATCH_KEYS * 2 + 345
    cache.fill_many([Fill(f"bulk:{i}", absent_entry(), LONG_TTL_S, 0) for i in range(n)])
    cache.fill_many([Fill(f"other:{i}", absent_entry(), LONG_TTL_S, 0) for i in range(n)])
    assert cache.delete_prefix("bulk:") == n
    assert cache.delete_prefix("bulk:") == 0  # floors now
    others = [f"other:{i}" for i in range(n)]
    assert all(answer(r) is not MISS for r in cache.get_many(others))
    cache.invalidate_many(others)  # more than one script call
    assert all(answer(r) is MISS for r in cache.get_many(others))
    tokens = cache.begin_write(others, "a1", LONG_TTL_S)
    assert len(tokens) == n and all(type(token) is int and token > 0 for token in tokens)
    assert raw.dbsize() == 2 * n


# ------------------------------------------------------------------------------------------
# Bad values in Redis
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"garbage",
        b"",
        pickle.dumps({"a": 1}),
        b"v1|1|5|1.0|||_",  # the previous format version
        b"v3|1||1|5|1.0|||Dfuture body",
        encode_entry(document_entry(GEN))[:-3],
    ],
)
def test_corrupt_value_reads_as_miss_counts_an_error_and_is_replaced(
    cache: RedisCache, raw: redis.Redis, value: bytes
) -> None:
    raw.set(cache.key_prefix + "bad", value)
    good = document_entry(GEN)
    fill(cache, "good", good, NO_RECORD)

    assert cache.get("bad") is MISS
    results = cache.get_many(["good", "bad"])
    assert_same_entry(results[0], good)
    assert results[1] is MISS
    assert cache.stats()["errors"] == 2
    assert cache.stats()["decode_errors"] == 2

    # A reader's fill (its token: NO_RECORD) replaces it.
    fill(cache, "bad", good, cache.read_token("bad", MISS))
    assert_same_entry(cache.get("bad"), good)


def test_a_write_over_an_unreadable_value_starts_a_record(
    cache: RedisCache, raw: redis.Redis
) -> None:
    raw.set(cache.key_prefix + "bad", b"v1|1|5|1.0|||_")
    token = begin(cache, "bad", "a1")
    ver, intents, kind = record(raw, cache.key_prefix + "bad")
    assert ver == token and list(intents) == ["a1"] and kind is Kind.FLOOR
    written = document_entry(GEN)
    assert end(cache, "bad", "a1", token, written) == STORED
    assert_same_entry(cache.get("bad"), written)


def test_a_key_of_another_type_is_an_error_not_a_crash(cache: RedisCache, raw: redis.Redis) -> None:
    raw.rpush(cache.key_prefix + "list", b"x")
    with pytest.raises(CacheUnavailable):
        cache.get("list")
    with pytest.raises(CacheUnavailable):
        cache.fill_many(
            [
                Fill("ok", document_entry(GEN), LONG_TTL_S, 0),
                Fill("list", document_entry(GEN), 9, 0),
            ]
        )
    assert_same_entry(cache.get("ok"), document_entry(GEN))  # the rest of the pipeline ran
    with pytest.raises(CacheUnavailable):
        cache.begin_write(["list"], "a1", LONG_TTL_S)
    assert cache.stats()["errors"] == 3
    cache.invalidate_many(["list"])  # never turns a key of another shape into a floor
    assert raw.lrange(cache.key_prefix + "list", 0, -1) == [b"x"]


# ------------------------------------------------------------------------------------------
# An unreachable or slow server
# ------------------------------------------------------------------------------------------


def test_paused_server_raises_cache_unavailable_then_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    cache = RedisCache(redis_url, key_prefix=fresh_prefix(), timeout_s=TEST_TIMEOUT_S)
    before = [document_entry(GEN + i) for i in range(3)]
    cache.fill_many([Fill(f"k{i}", entry, LONG_TTL_S, 0) for i, entry in enumerate(before)])

    redis_server.pause()
    try:
        calls: list[Callable[[], Any]] = [
            lambda: cache.get("k0"),
            lambda: cache.get_many(["k0", "k1"]),
            lambda: fill(cache, "k0", document_entry(GEN + 10), 0),
            lambda: cache.begin_write(["k1"], "a1", LONG_TTL_S),
            lambda: cache.end_write([End("k1", "a1", 0, document_entry(GEN + 10), LONG_TTL_S)]),
            lambda: cache.invalidate_many(["k2"]),
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
    def answers() -> bool:
        try:
            cache.get("k0")
        except CacheUnavailable:
            return False
        return True

    assert wait_until(answers)
    fresh = {f"fresh{i}": document_entry(GEN + 100 + i) for i in range(20)}
    tokens = cache.begin_write(list(fresh), "b2", LONG_TTL_S)
    outcomes = cache.end_write(
        [
            End(key, "b2", token, entry, LONG_TTL_S)
            for (key, entry), token in zip(fresh.items(), tokens, strict=True)
        ]
    )
    assert outcomes == [STORED] * len(fresh)
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
        cache.begin_write(["k"], "a1", LONG_TTL_S)
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
    fill(cache, "k", entry, token_of(cache, "k"))
    assert end(cache, "w", "a1", begin(cache, "w", "a1"), entry) == STORED
    cache.invalidate_many(["q"])
    k, w, q = cache.get_many(["k", "w", "q"])
    assert_same_entry(k, entry)
    assert_same_entry(w, entry)
    assert answer(q) is MISS
    assert cache.delete_prefix("") == 2


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
        # A parameter the connection does not take failed as a TypeError at the first call.
        "redis://127.0.0.1:6379/0?ssl_cert_reqs=none",
        "redis://127.0.0.1:6379/0?foo=1",
        "rediss://127.0.0.1:6379/0?ssl_cert_reqs=bogus",  # a RedisError from redis-py
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RedisCache(url, probe=False)
    assert "pw@" not in str(raised.value)
    if "cluster" in url:
        assert "Redis Cluster is not supported" in str(raised.value)


def test_a_database_the_server_lacks_is_a_config_error(redis_url: str) -> None:
    """Not "the cache cannot be reached" at every call: the URL names a database the server
    does not have (16 by default)."""
    with pytest.raises(ConfigError, match="no database 99"):
        RedisCache(redis_url.rsplit("/", 1)[0] + "/99")


def test_bad_settings_are_config_errors(redis_url: str) -> None:
    for kwargs in (
        {"timeout_s": 0},
        {"max_connections": 0},
        {"key_prefix": None},
        {"floor_ttl_s": 0.0},
        {"floor_ttl_s": float("inf")},
    ):
        with pytest.raises(ConfigError):
            RedisCache(redis_url, **kwargs)  # type: ignore[arg-type]


def test_cluster_mode_server_is_refused() -> None:
    with (
        RedisServer(extra_args=["--cluster-enabled", "yes"]) as server,
        pytest.raises(ConfigError, match="Redis Cluster is not supported"),
    ):
        RedisCache(server.url)


def test_from_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    cache = RedisCache.from_client(client, key_prefix=fresh_prefix(), floor_ttl_s=3.0)
    assert cache.floor_ttl_s == 3.0
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


def test_large_document_and_long_revision(cache: RedisCache) -> None:
    big = {"_id": "big", "blob": "é" * 200_000, "n": [Decimal(i) for i in range(1000)]}
    entry = Entry(Kind.DOCUMENT, GEN, "x|" * 300, big, 1.0)
    fill(cache, "big", entry, NO_RECORD)
    assert_same_entry(cache.get("big"), entry)
    token = begin(cache, "big", "a1")
    assert_same_entry(cache.get("big"), entry)  # the scripts rewrote the header only
    assert end(cache, "big", "a1", token, entry) == STORED
    assert_same_entry(cache.get("big"), entry)


def test_stats_and_server_info(cache: RedisCache) -> None:
    fill(cache, "k", document_entry(GEN), NO_RECORD)
    stale = token_of(cache, "k")
    token = begin(cache, "k", "a1")
    fill(cache, "k", document_entry(GEN), stale)
    assert end(cache, "k", "a1", token, document_entry(GEN + 1)) == STORED
    token = begin(cache, "k", "a2")
    begin(cache, "k", "a3")
    assert end(cache, "k", "a2", token, document_entry(GEN + 2)) == DROPPED
    assert end(cache, "k", "a2", token, document_entry(GEN + 2)) == LATE
    stats = cache.stats()
    assert stats["evictions"] == 0 and stats["errors"] == 0
    assert stats["fills_stored"] == 1 and stats["fills_refused"] == 1
    assert (stats["writes_stored"], stats["writes_dropped"], stats["writes_late"]) == (1, 1, 1)
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
