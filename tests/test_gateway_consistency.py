"""The consistency core, one deterministic test per interleaving that once broke it.

Interleavings are made with gates, never with sleeps: `FaultProxy.hold` keeps a DynamoDB
request waiting at the wire until the test releases it, and `GatedCache` (below) pauses or
interrupts a real cache backend at one call. Each test names the defect of the
consistency-core issue it pins down (D1-D8, m1, P1-P3).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis as redis_py
from boto3.dynamodb.types import Binary

from gateway import ABSENT, ConflictError
from gateway.caches.memory import MemoryCache
from gateway.gateway import CachingGateway
from gateway.revisions import parse_generation
from tests.gateway_helpers import (
    TIMEOUT_S,
    GatedCache,
    Policy,
    Worker,
    gateways,
    make_cache,
    make_service,
    one_gateway,
    wait_for,
)
from tests.servers import FaultProxy

ALL = ["memory", "redis", "tiered"]
SHARED = ["redis", "tiered"]


def stored(dynamodb_client: Callable[..., Any], table_prefix: str, key: str) -> str | None:
    """The `_rev` DynamoDB holds for ``users/<key>`` (None: no item), read directly."""
    item = (
        dynamodb_client()
        .get_item(TableName=f"{table_prefix}users", Key={"_id": {"S": key}}, ConsistentRead=True)
        .get("Item")
    )
    return None if item is None else item["_rev"]["S"]


def rev_of(doc: dict[str, Any] | None) -> str | None:
    return None if doc is None else doc["_rev"]


def reads(proxy: FaultProxy) -> int:
    counts = proxy.counts()
    return counts.get("GetItem", 0) + counts.get("BatchGetItem", 0)


# ------------------------------------------------------------------ reads and in-flight writes


@pytest.mark.parametrize("backend", ALL)
def test_a_read_during_an_in_flight_write_is_a_hit(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, request: pytest.FixtureRequest
) -> None:
    """P: a read never waits on (nor goes around) a write in flight: it gets the previous
    acknowledged copy from the cache; once the write returned, reads see the new one."""
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    with gateways(backend, fault_proxy.endpoint_url, table_prefix, redis_url) as (gw,):
        gw.save("users", "k", {"v": 1})
        assert gw.get("users", "k")["v"] == 1
        before = reads(fault_proxy)
        with fault_proxy.hold({"PutItem"}) as gate:
            writer = Worker(lambda: gw.save("users", "k", {"v": 2}))
            assert gate.wait_arrived()
            assert gw.get("users", "k")["v"] == 1
            assert reads(fault_proxy) == before
        rev = writer.outcome()["rev"]
        assert rev_of(gw.get("users", "k")) == rev
        assert reads(fault_proxy) == before


# ------------------------------------------------------------------ D2: tombstones


@pytest.mark.parametrize("delete", ["delete", "delete_many", "newer_save_then_delete"])
@pytest.mark.parametrize("backend", ALL)
def test_a_save_landing_after_a_delete_is_not_hidden_by_the_tombstone(
    backend: str,
    delete: str,
    fault_proxy: FaultProxy,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
    request: pytest.FixtureRequest,
) -> None:
    """D2: a save whose generation was chosen before a delete but whose PutItem lands after
    it is acknowledged last: every instance must then answer the saved document."""
    if backend == "memory" and delete == "newer_save_then_delete":
        pytest.skip("in one process save_many waits for the save of the same id in flight")
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    count = 1 if backend == "memory" else 2
    with gateways(
        backend, fault_proxy.endpoint_url, table_prefix, redis_url, count=count
    ) as instances:
        saver, deleter = instances[0], instances[-1]
        saver.save("users", "k", {"v": 0})
        with fault_proxy.hold({"PutItem"}) as gate:
            late = Worker(lambda: saver.save("users", "k", {"v": 1}))
            assert gate.wait_arrived()  # its generation is chosen, its request on the wire
            if delete == "newer_save_then_delete":
                # A third party saves a newer generation (not held: BatchWriteItem), deletes it.
                deleter.save_many("users", {"k": {"v": 3}})
                assert deleter.delete("users", "k") is True
            elif delete == "delete":
                assert deleter.delete("users", "k") is True
            else:
                deleter.delete_many("users", ["k"])
        rev = late.outcome()["rev"]
        assert stored(dynamodb_client, table_prefix, "k") == rev
        for gw in instances:
            assert rev_of(gw.get("users", "k")) == rev


# ------------------------------------------------------------------ D3: save_many racing save


@pytest.mark.parametrize("backend", ALL)
def test_save_many_racing_a_save_in_one_process(
    backend: str,
    fault_proxy: FaultProxy,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
    request: pytest.FixtureRequest,
) -> None:
    """D3: the revision DynamoDB ends with is the highest of the two, and the cache agrees."""
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    with gateways(backend, fault_proxy.endpoint_url, table_prefix, redis_url) as (gw,):
        gw.save("users", "k", {"v": "initial"})
        with fault_proxy.hold({"BatchWriteItem"}) as gate:
            batch = Worker(lambda: gw.save_many("users", {"k": {"v": "many"}})["k"])
            assert gate.wait_arrived()
            single = Worker(lambda: gw.save("users", "k", {"v": "single"})["rev"])
        revs = [batch.outcome(), single.outcome()]
        final = stored(dynamodb_client, table_prefix, "k")
        assert final == max(revs, key=lambda rev: parse_generation(rev) or 0)
        assert rev_of(gw.get("users", "k")) == final


# ------------------------------------------------------------------ D5: late write-throughs


def _conflict_elsewhere(gw: CachingGateway) -> None:
    with pytest.raises(ConflictError):
        gw.save("users", "k", {"v": 99}, if_rev=f"1-{'0' * 32}")


def _evict(gw: CachingGateway) -> None:
    gw.get("users", "other1")
    gw.get("users", "other2")


@pytest.mark.parametrize(
    "remover",
    [_conflict_elsewhere, lambda gw: gw.invalidate("users", "k"), _evict],
    ids=["conflict", "invalidate", "eviction"],
)
def test_a_late_write_through_never_refills_an_emptied_slot(
    remover: Callable[[CachingGateway], None],
    moto_server: Any,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    """D5: W1 is acknowledged by DynamoDB but its cache update is delayed; W2 is acknowledged
    and cached; the slot then empties (conflict, invalidate, LRU eviction); W1's update must
    not put its older document back."""
    gated = GatedCache(MemoryCache(max_items=2))
    with one_gateway(gated, moto_server.endpoint_url, table_prefix) as gw:  # type: ignore[arg-type]
        gw.save("users", "k", {"v": 0})
        gated.pause_end = lambda ends: any(
            e.entry is not None and e.entry.document.get("v") == 1 for e in ends
        )
        first = Worker(lambda: gw.save("users", "k", {"v": 1}))
        assert gated.end_reached.wait(TIMEOUT_S)
        gated.pause_end = lambda ends: False
        second = gw.save("users", "k", {"v": 2})["rev"]
        remover(gw)
        gated.end_release.set()
        first.outcome()
        assert stored(dynamodb_client, table_prefix, "k") == second
        assert rev_of(gw.get("users", "k")) == second


# ------------------------------------------------------------------ D6: lost answers


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_a_conditional_write_whose_answer_was_lost_is_reported_as_done(
    mode: str, fault_proxy: FaultProxy, table_prefix: str
) -> None:
    """D6: the write ran, its answer was lost, the retry fails its own condition: the caller
    gets success (its own write), and the cache holds what DynamoDB holds."""
    with gateways("memory", fault_proxy.endpoint_url, table_prefix, None) as (gw,):
        fault_proxy.configure(lose_next=1, lose_mode=mode, operations={"PutItem"})
        rev = gw.save("users", "k", {"v": 1}, if_rev=ABSENT)["rev"]
        assert rev_of(gw.get("users", "k")) == rev
        fault_proxy.configure(lose_next=1, operations={"PutItem"})
        rev = gw.save("users", "k", {"v": 2}, if_rev=rev)["rev"]
        assert gw.get("users", "k")["v"] == 2
        fault_proxy.configure(lose_next=1, operations={"DeleteItem"})
        assert gw.delete("users", "k", if_rev=rev) is True
        assert gw.get("users", "k") is None


# ------------------------------------------------------------------ D7: interrupted loads


@pytest.mark.parametrize("where", ["fill_many", "get_many"])
def test_an_interrupted_load_does_not_poison_its_key(
    where: str, moto_server: Any, table_prefix: str
) -> None:
    """D7: a BaseException while a load fills (or double-checks) the cache settles its
    flight: later readers of the key load it themselves instead of waiting forever."""
    gated = GatedCache(MemoryCache())
    with one_gateway(gated, moto_server.endpoint_url, table_prefix) as gw:  # type: ignore[arg-type]
        gw.service.save("users", "k", {"v": 1})
        gated.interrupt[where] = KeyboardInterrupt()
        with pytest.raises(KeyboardInterrupt):
            gw.get("users", "k")
        assert Worker(lambda: gw.get("users", "k")).outcome()["v"] == 1


# ------------------------------------------------------------------ D1: shared flight results


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_waiters_never_see_the_leader_callers_edits(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, request: pytest.FixtureRequest
) -> None:
    """D1: the leader's caller edits its answer before the waiter copies the flight's result
    (forced: a long GIL switch interval keeps the leader running until it ends)."""
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    with gateways(backend, fault_proxy.endpoint_url, table_prefix, redis_url) as (gw,):
        gw.service.save("users", "u1", {"name": "Ada", "tags": ["a"]})

        def leader() -> dict[str, Any]:
            doc = gw.get("users", "u1")
            doc["name"] = "edited by the leader's caller"
            doc["tags"].append("x")
            return doc

        interval = sys.getswitchinterval()
        with fault_proxy.hold({"GetItem", "BatchGetItem"}) as gate:
            first = Worker(leader)
            assert gate.wait_arrived()
            second = Worker(lambda: gw.get("users", "u1"))
            wait_for(lambda: gw.stats()["single_flight_waits"] == 1)
            sys.setswitchinterval(5.0)
        try:
            first.outcome()
            waiter_doc = second.outcome()
        finally:
            sys.setswitchinterval(interval)
        assert waiter_doc["name"] == "Ada" and waiter_doc["tags"] == ["a"]
        assert gw.get("users", "u1")["tags"] == ["a"]


# ------------------------------------------------------------------ m1: Binary values


@pytest.mark.parametrize("backend", ALL)
def test_binary_values_are_not_shared_with_the_cache(
    backend: str, moto_server: Any, table_prefix: str, request: pytest.FixtureRequest
) -> None:
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    with gateways(backend, moto_server.endpoint_url, table_prefix, redis_url) as (gw,):
        gw.save("users", "k", {"blob": b"original"})
        doc = gw.get("users", "k")
        assert isinstance(doc["blob"], Binary)
        doc["blob"].value = b"tampered by the caller"
        assert gw.get("users", "k")["blob"] == Binary(b"original")


# ------------------------------------------------------------------ P1: round trips


@contextmanager
def counted_round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts what redis-py sends to a server (one per command, or per pipeline): each is a
    round trip, whatever the scripts it runs do inside Redis."""
    sent = [0]
    original = redis_py.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    monkeypatch.setattr(redis_py.connection.AbstractConnection, "send_packed_command", counting)
    yield sent


def test_a_redis_miss_costs_one_round_trip_before_dynamodb_and_one_fill(
    moto_server: Any, table_prefix: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P1: GET (miss), DynamoDB, one fill script; the next get is one GET (a hit)."""
    with gateways("redis", moto_server.endpoint_url, table_prefix, redis_url) as (gw,):
        gw.service.save("users", "k", {"v": 1})
        gw.get("users", "warm-up")  # connects and loads the scripts
        with counted_round_trips(monkeypatch) as sent:
            gw.get("users", "k")
            assert sent[0] == 2
            gw.get("users", "k")
            assert sent[0] == 3
            assert gw.stats()["hits"] == 1


def test_tiered_serves_from_memory_after_two_round_trips(
    moto_server: Any, table_prefix: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P1: the tiered backend's miss is one Redis read and one fill that also copies the
    entry into memory: the next get is a memory hit, no round trip."""
    with gateways("tiered", moto_server.endpoint_url, table_prefix, redis_url) as (gw,):
        assert gw.cache.wait_healthy(TIMEOUT_S)  # type: ignore[attr-defined]
        gw.service.save("users", "k", {"v": 1})
        gw.get("users", "warm-up")
        with counted_round_trips(monkeypatch) as sent:
            gw.get("users", "k")
            trips = sent[0]
            gw.get("users", "k")
            assert gw.cache.stats()["memory_hits"] >= 1
        assert trips <= 2 + 1  # + the listener's renewal, if one fell in between


# ------------------------------------------------------------------ found by a later review


class _Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("backend", SHARED)
def test_a_read_never_joins_a_load_older_than_the_fill_deadline(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, redis_url: str
) -> None:
    """A reader joins a load in flight only while the load is younger than the fill deadline.
    Another instance's delete ended after the load read DynamoDB; once the delete's record aged
    out of Redis (here dropped, as its expiry would), the reader's token equals the load's again,
    and joining would answer the deleted document after the delete returned."""
    clock = _Clock()
    prefix = f"join:{table_prefix}"
    policy = Policy(jitter=0.0)
    a, b = (
        CachingGateway(
            make_service(fault_proxy.endpoint_url, table_prefix),
            make_cache(backend, redis_url, prefix),
            policy_for=lambda _db: policy,
            clock=clock,
        )
        for _ in range(2)
    )
    try:
        a.service.save("users", "k", {"v": "old"})
        with fault_proxy.hold({"GetItem", "BatchGetItem"}, answers=True) as gate:
            first = Worker(lambda: a.get("users", "k"))
            assert gate.wait_arrived()  # it read "old"; its answer waits at the wire
            assert b.delete("users", "k") is True
            server = redis_py.Redis.from_url(redis_url)
            server.delete(*server.keys(prefix + "*"))  # the delete's records aged out
            clock.now += a.fill_deadline_s + 1.0
            second = Worker(lambda: a.get("users", "k"))
            wait_for(lambda: gate.arrived == 2 or a.stats()["single_flight_waits"] > 0)
            assert a.stats()["single_flight_waits"] == 0
        assert first.outcome()["v"] == "old"  # concurrent with the delete: either is right
        assert second.outcome() is None
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("backend", ALL)
def test_a_reader_waiting_on_an_interrupted_load_reads_anew(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, request: pytest.FixtureRequest
) -> None:
    """A KeyboardInterrupt in the thread leading a load is that thread's: the readers that
    joined the load read the key anew instead of raising it in threads nobody interrupted."""
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    gated = GatedCache(make_cache(backend, redis_url, f"interrupted:{table_prefix}"))
    with one_gateway(gated, fault_proxy.endpoint_url, table_prefix) as gw:  # type: ignore[arg-type]
        gw.service.save("users", "k", {"v": 1})
        with fault_proxy.hold({"GetItem", "BatchGetItem"}) as gate:
            leader = Worker(lambda: gw.get("users", "k"))
            assert gate.wait_arrived()
            waiter = Worker(lambda: gw.get("users", "k"))
            wait_for(lambda: gw.stats()["single_flight_waits"] == 1)
            gated.interrupt["fill_many"] = KeyboardInterrupt()
        with pytest.raises(KeyboardInterrupt):
            leader.outcome()
        waiter.join(TIMEOUT_S)
        assert waiter.error is None, f"the waiter got {waiter.error!r}"  # not re-raised here
        assert waiter.outcome()["v"] == 1


def test_a_save_over_a_wider_generation_is_served(
    moto_server: Any, table_prefix: str, dynamodb_client: Callable[..., Any]
) -> None:
    """A stored revision of 17 digits (another program's) sorted below the clock's 16 as a
    string: the one-request save replaced it with a lower generation, and the cache, which
    compares generations as numbers, kept serving the replaced document after the save."""
    with gateways("memory", moto_server.endpoint_url, table_prefix, None) as (gw,):
        gw.save("users", "k", {"v": "seed"})
        dynamodb_client().put_item(
            TableName=f"{table_prefix}users",
            Item={"_id": {"S": "k"}, "_rev": {"S": f"1{'0' * 16}-{'a' * 32}"}, "v": {"S": "old"}},
        )
        gw.invalidate("users", "k")
        assert gw.get("users", "k")["v"] == "old"
        rev = gw.save("users", "k", {"v": "new"})["rev"]
        assert stored(dynamodb_client, table_prefix, "k") == rev
        assert parse_generation(rev) > 10**16
        assert gw.get("users", "k")["v"] == "new"


# ------------------------------------------------------------------ TTLs below the fill deadline


def test_ttls_not_longer_than_the_fill_deadline_are_refused(
    moto_server: Any, table_prefix: str
) -> None:
    """An entry expiring sooner than a fill may take would leave no floor (found by review):
    the gateway refuses such a policy with a ConfigError that names the keys."""
    from gateway.errors import ConfigError

    short = Policy(ttl_s=300.0, negative_ttl_s=2.0, jitter=0.1)
    gw = CachingGateway(
        make_service(moto_server.endpoint_url, table_prefix),
        MemoryCache(),
        policy_for=lambda _: short,
    )
    try:
        with pytest.raises(ConfigError, match="negative_ttl_seconds"):
            gw.get("users", "k")
        with pytest.raises(ConfigError, match="too short"):
            gw.save("users", "k", {"v": 1})
    finally:
        gw.close()
