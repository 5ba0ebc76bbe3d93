"""The gateway when Redis fails: partitions made by pausing the real redis-server (SIGSTOP).

Nothing of our own is patched: the test's redis-server is paused and resumed, and the gateway
must serve from DynamoDB meanwhile, keep accepting writes, and never serve the pre-partition
copy afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.breaker import CircuitBreaker
from tests.gateway_helpers import gateways

BACKENDS = ["redis", "tiered"]


def _fast_breaker() -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=2, reset_s=0.2)


@pytest.fixture
def paused_redis(redis_server: Any) -> Iterator[Any]:
    """The session's redis-server, always resumed after the test."""
    try:
        yield redis_server
    finally:
        if redis_server.paused:
            redis_server.resume()


def _wait_until(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


@pytest.mark.parametrize("backend", BACKENDS)
def test_partition_no_instance_sees_the_pre_partition_copy(
    backend: str, moto_server: Any, table_prefix: str, redis_url: str, paused_redis: Any
) -> None:
    with gateways(
        backend,
        moto_server.endpoint_url,
        table_prefix,
        redis_url,
        count=3,
        breaker=_fast_breaker,
    ) as (writer, reader, idle):
        writer.save("users", "u1", {"v": "before"})
        assert reader.get("users", "u1")["v"] == "before"  # cached in Redis (and in process)
        assert idle.get("users", "u1")["v"] == "before"

        paused_redis.pause()
        new_rev = writer.save("users", "u1", {"v": "during"})["rev"]  # must still succeed
        assert writer.get("users", "u1")["v"] == "during"
        assert reader.get("users", "u1")["v"] == "during"  # served from DynamoDB
        assert writer.stats()["pending_repairs"] >= 1
        paused_redis.resume()

        # Instances that saw the partition never serve the old copy, not even right away.
        for _ in range(20):
            assert writer.get("users", "u1")["_rev"] == new_rev
            assert reader.get("users", "u1")["_rev"] == new_rev
            time.sleep(0.02)
        # The writer replays its pending cache update as soon as Redis answers again; after
        # that an instance that was idle during the partition reads the new copy too.
        assert _wait_until(lambda: writer.stats()["pending_repairs"] == 0)
        assert idle.get("users", "u1")["_rev"] == new_rev


@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_down_serves_from_dynamodb_and_the_breaker_opens(
    backend: str, moto_server: Any, table_prefix: str, redis_url: str, paused_redis: Any
) -> None:
    with gateways(
        backend, moto_server.endpoint_url, table_prefix, redis_url, breaker=_fast_breaker
    ) as (gw,):
        gw.save("users", "u1", {"v": 1})
        paused_redis.pause()
        for i in range(10):
            gw.save("users", f"n{i}", {"i": i})
            assert gw.get("users", f"n{i}")["i"] == i
        assert gw.get("users", "u1")["v"] == 1
        stats = gw.stats()
        assert stats["cache_errors"] >= 1 and stats["fallbacks"] >= 1
        assert stats["breaker"] in {"open", "half_open"}
        # With the breaker open, calls skip Redis instead of waiting on it every time.
        assert stats["cache_errors"] < 10
        paused_redis.resume()
        assert _wait_until(lambda: gw.stats()["pending_repairs"] == 0)
        assert gw.get("users", "n3")["i"] == 3
        assert gw.stats()["breaker"] == "closed"


@pytest.mark.parametrize("backend", BACKENDS)
def test_delete_during_partition_is_not_undone(
    backend: str, moto_server: Any, table_prefix: str, redis_url: str, paused_redis: Any
) -> None:
    with gateways(
        backend, moto_server.endpoint_url, table_prefix, redis_url, count=2, breaker=_fast_breaker
    ) as (writer, reader):
        writer.save("users", "u1", {"v": 1})
        assert reader.get("users", "u1")["v"] == 1
        paused_redis.pause()
        assert writer.delete("users", "u1") is True
        assert reader.get("users", "u1") is None
        paused_redis.resume()
        for _ in range(10):
            assert reader.get("users", "u1") is None
            assert writer.get("users", "u1") is None
            time.sleep(0.02)
