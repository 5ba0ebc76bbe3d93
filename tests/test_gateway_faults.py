"""The gateway when Redis fails: real partitions at the wire, made by a TCP relay.

One instance (the *writer*) reaches Redis through `TcpRelay`, which can black-hole its traffic
(nothing sent during the cut is ever executed, unlike a paused redis-server); the other
instance (the *reader*) reaches Redis directly, as a healthy instance elsewhere would. Nothing
of our own is patched; DynamoDB requests are held at the fault proxy where an interleaving
needs it, and the breaker's clock is injected where the test needs its time to pass.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gateway.breaker import CircuitBreaker
from gateway.caches.base import CacheBackend
from gateway.errors import ServiceUnavailableError
from gateway.gateway import CachingGateway
from tests.gateway_helpers import (
    GatedCache,
    Policy,
    Worker,
    make_cache,
    make_service,
    one_gateway,
    wait_for,
)
from tests.servers import FaultProxy, TcpRelay

BACKENDS = ["redis", "tiered"]
INTENT_TTL_S = 0.5
FILL_DEADLINE_S = 0.2  # below the intents' lifetime, as the gateway requires
_prefixes = itertools.count()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def pair(
    kind: str,
    endpoint_url: str,
    table_prefix: str,
    writer_url: str,
    reader_url: str,
    wrap: Callable[[CacheBackend], Any] = lambda cache: cache,
    **writer_kwargs: Any,
) -> Iterator[tuple[CachingGateway, CachingGateway]]:
    """A writer on ``writer_url`` and a reader on ``reader_url``, one cache namespace."""
    key_prefix = f"faults{next(_prefixes)}:{table_prefix}"
    policy = Policy(jitter=0.0)
    writer_kwargs.setdefault("breaker", CircuitBreaker(failure_threshold=2, reset_s=0.2))
    writer = CachingGateway(
        make_service(endpoint_url, table_prefix),
        wrap(make_cache(kind, writer_url, key_prefix)),
        policy_for=lambda _db: policy,
        intent_ttl_s=INTENT_TTL_S,
        fill_deadline_s=FILL_DEADLINE_S,
        **writer_kwargs,
    )
    reader = CachingGateway(
        make_service(endpoint_url, table_prefix),
        make_cache(kind, reader_url, key_prefix),
        policy_for=lambda _db: policy,
        intent_ttl_s=INTENT_TTL_S,
        fill_deadline_s=FILL_DEADLINE_S,
    )
    try:
        for gw in (writer, reader):
            healthy = getattr(gw.cache, "wait_healthy", None)
            if healthy is not None:
                assert healthy(10.0)
        yield writer, reader
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cut_off_writer_refuses_writes_and_nothing_goes_stale(
    backend: str, moto_server: Any, table_prefix: str, redis_url: str, redis_relay: TcpRelay
) -> None:
    """Default (``refuse``): a writer that cannot reach Redis writes nothing, says so, and
    keeps serving reads from DynamoDB; the other instance keeps the (still true) copy."""
    with pair(backend, moto_server.endpoint_url, table_prefix, redis_relay.url, redis_url) as (
        writer,
        reader,
    ):
        rev = writer.save("users", "u1", {"v": "before"})["rev"]
        assert reader.get("users", "u1")["_rev"] == rev
        redis_relay.blackhole()
        with pytest.raises(ServiceUnavailableError, match="nothing was written"):
            writer.save("users", "u1", {"v": "during"})
        assert writer.get("users", "u1")["_rev"] == rev  # from DynamoDB, which has "before"
        assert reader.get("users", "u1")["_rev"] == rev
        assert writer.stats()["writes_refused"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_accepted_writes_during_a_cut_are_invalidated_once_redis_answers(
    backend: str, moto_server: Any, table_prefix: str, redis_url: str, redis_relay: TcpRelay
) -> None:
    """``accept``: the write succeeds during the cut; the writer never serves the old copy;
    once the link heals one repairer thread invalidates the key and every instance agrees."""
    with pair(
        backend,
        moto_server.endpoint_url,
        table_prefix,
        redis_relay.url,
        redis_url,
        unreachable_writes="accept",
    ) as (writer, reader):
        writer.save("users", "u1", {"v": "before"})
        assert reader.get("users", "u1")["v"] == "before"
        redis_relay.blackhole()
        new_rev = writer.save("users", "u1", {"v": "during"})["rev"]
        assert writer.get("users", "u1")["_rev"] == new_rev
        # The document, and the epochs of the collection's cached query answers (scan, all).
        assert writer.stats()["pending_repairs"] == 3
        redis_relay.heal()
        wait_for(lambda: writer.stats()["pending_repairs"] == 0)
        assert reader.get("users", "u1")["_rev"] == new_rev
        assert writer.get("users", "u1")["_rev"] == new_rev


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_writer_cut_off_after_its_intent_returns_only_once_the_old_copy_is_dead(
    backend: str,
    fault_proxy: FaultProxy,
    table_prefix: str,
    redis_url: str,
    redis_relay: TcpRelay,
) -> None:
    """The intent is registered, DynamoDB is written, then the link is cut: the writer cannot
    update the cache, so it returns only after its intent expired in Redis; from then on no
    instance serves the old copy."""
    with pair(backend, fault_proxy.endpoint_url, table_prefix, redis_relay.url, redis_url) as (
        writer,
        reader,
    ):
        writer.save("users", "u1", {"v": "before"})
        assert reader.get("users", "u1")["v"] == "before"
        with fault_proxy.hold({"PutItem"}) as gate:
            started = time.monotonic()
            save = Worker(lambda: writer.save("users", "u1", {"v": "after"}))
            assert gate.wait_arrived()
            # In flight: the other instance still serves the previous acknowledged copy.
            assert reader.get("users", "u1")["v"] == "before"
            redis_relay.blackhole()
        new_rev = save.outcome()["rev"]
        assert time.monotonic() - started >= INTENT_TTL_S
        assert reader.get("users", "u1")["_rev"] == new_rev
        assert writer.get("users", "u1")["_rev"] == new_rev


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_half_open_trial_always_settles(
    backend: str,
    moto_server: Any,
    table_prefix: str,
    redis_url: str,
    redis_relay: TcpRelay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """D8: after an outage and ``reset_s``, the first cache call is an ordinary read: it is
    the half-open trial, its success closes the breaker, and the cache is used again (the
    breaker's opening and closing are logged)."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_s=5.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="gateway")
    with pair(
        backend,
        moto_server.endpoint_url,
        table_prefix,
        redis_relay.url,
        redis_url,
        breaker=breaker,
        unreachable_writes="accept",
    ) as (writer, reader):
        writer.save("users", "k", {"v": "old"})
        redis_relay.blackhole()
        writer.get("users", "other1")
        writer.get("users", "other2")
        assert breaker.state == "open"
        new_rev = writer.save("users", "k", {"v": "new"})["rev"]  # accepted, pending
        redis_relay.heal()
        clock.now += 5.0
        assert writer.get("users", "x") is None  # the first call after reset_s: the trial
        wait_for(lambda: breaker.state == "closed" and not breaker.trial_in_flight)
        wait_for(lambda: writer.stats()["pending_repairs"] == 0)
        assert reader.get("users", "k")["_rev"] == new_rev
        hits = writer.stats()["hits"]
        writer.get("users", "k")
        writer.get("users", "k")
        assert writer.stats()["hits"] >= hits + 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("circuit breaker OPEN" in m for m in messages)
    assert any("circuit breaker CLOSED" in m for m in messages)


def test_an_interrupted_trial_frees_the_breaker(moto_server: Any, table_prefix: str) -> None:
    """A BaseException during the half-open trial (no outcome) must not keep the trial
    "in flight" forever."""
    from gateway.caches.memory import MemoryCache

    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_s=1.0, clock=clock)
    gated = GatedCache(MemoryCache())
    with one_gateway(gated, moto_server.endpoint_url, table_prefix, breaker=breaker) as gw:  # type: ignore[arg-type]
        breaker.record_failure()
        clock.now += 1.0
        gated.interrupt["get"] = KeyboardInterrupt()
        with pytest.raises(KeyboardInterrupt):
            gw.get("users", "k")
        assert not breaker.trial_in_flight
        gw.get("users", "k")
        assert breaker.state == "closed"


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_thread_replays_the_pending_invalidations(
    backend: str, moto_server: Any, table_prefix: str, redis_url: str, redis_relay: TcpRelay
) -> None:
    """P3: readers never replay; one repairer thread does, once per key."""
    gated: list[GatedCache] = []

    def wrap(cache: CacheBackend) -> GatedCache:
        gated.append(GatedCache(cache))
        return gated[-1]

    with pair(
        backend,
        moto_server.endpoint_url,
        table_prefix,
        redis_relay.url,
        redis_url,
        wrap=wrap,
        unreachable_writes="accept",
    ) as (writer, _):
        keys = [f"k{i}" for i in range(200)]
        writer.save_many("users", {key: {"i": i} for i, key in enumerate(keys)})
        redis_relay.blackhole()
        writer.save_many("users", {key: {"i": -i} for i, key in enumerate(keys)})
        assert writer.stats()["pending_repairs"] == 202  # and the query epochs (scan, all)
        redis_relay.heal()
        since_heal = len(gated[0].calls)
        barrier = threading.Barrier(16)

        def reader(i: int) -> Any:
            barrier.wait()
            return writer.get("users", keys[i])

        readers = [Worker(lambda i=i: reader(i)) for i in range(16)]  # type: ignore[misc]
        for i, worker in enumerate(readers):
            assert worker.outcome()["i"] == -i
        wait_for(lambda: writer.stats()["pending_repairs"] == 0)
    calls = gated[0].calls[since_heal:]
    replayers = {name for method, name in calls if method == "invalidate_many"}
    assert replayers == {"gateway-cache-repair"}
