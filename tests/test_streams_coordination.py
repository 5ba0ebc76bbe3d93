"""`RedisCoordinator` on a real Redis: leases and checkpoints, and the cache leaving them be."""

from __future__ import annotations

import itertools

import pytest
import redis as redis_py

from gateway.caches.redis_cache import RedisCache
from gateway.streams.coordination import KEY_MARK, RedisCoordinator

_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    return f"coord{next(_prefixes)}:"


def coordinator(redis_url: str, prefix: str, owner: str) -> RedisCoordinator:
    return RedisCoordinator(
        redis_py.Redis.from_url(redis_url), owner=owner, lease_s=30.0, key_prefix=prefix
    )


def test_one_holder_per_shard_and_checkpoints_only_by_it(redis_url: str, prefix: str) -> None:
    a, b = coordinator(redis_url, prefix, "A"), coordinator(redis_url, prefix, "B")
    try:
        assert a.acquire("s", "shard-1") and not b.acquire("s", "shard-1")
        assert a.renew("s", "shard-1") and not b.renew("s", "shard-1")
        assert a.save_checkpoint("s", "shard-1", "100")
        assert not b.save_checkpoint("s", "shard-1", "50")
        assert b.checkpoints("s") == {"shard-1": "100"}
        b.release("s", "shard-1")  # not B's: nothing happens
        assert not b.acquire("s", "shard-1")
        a.release("s", "shard-1")
        assert b.acquire("s", "shard-1") and b.save_checkpoint("s", "shard-1", "200")
        assert a.checkpoints("s") == {"shard-1": "200"}
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("wiped", ["", "streams"])
def test_a_wipe_of_the_cache_leaves_leases_and_checkpoints_alone(
    redis_url: str, prefix: str, wiped: str
) -> None:
    """The repairer's overflow wipe (``delete_prefix("")``), or the drop of a collection named
    ``streams``, runs the cache's invalidate script on every key it matches: a lease must not
    become a cache floor (its holder would lose it, and nobody could take it for a while)."""
    a = coordinator(redis_url, prefix, "A")
    cache = RedisCache(redis_url, key_prefix=prefix, timeout_s=1.0)
    try:
        assert a.acquire("s", "shard-1") and a.save_checkpoint("s", "shard-1", "7")
        a.add_collection("users")
        cache.delete_prefix(wiped)
        assert a.renew("s", "shard-1")
        assert a.checkpoints("s") == {"shard-1": "7"} and a.collections() == {"users"}
        raw = redis_py.Redis.from_url(redis_url)
        keys = {k.decode() for k in raw.scan_iter(match=f"{prefix}*")}
        assert keys and all(k.startswith(prefix + KEY_MARK) for k in keys)
    finally:
        a.close()
        cache.close()
