"""Cached list_all / iter_pages / query answers (gateway.query_cache), on every backend.

DynamoDB calls are counted at the wire (the fault proxy in front of the emulator); Redis is a
real redis-server; two instances share it where the backend allows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary

from gateway.caches.base import Fill
from gateway.caches.errors import CacheUnavailable
from gateway.caches.memory import MemoryCache
from gateway.errors import ServiceUnavailableError, ValidationError
from gateway.gateway import CachingGateway
from gateway.query_cache import (
    INDEX_SETTLE_S,
    QueryCache,
    queries_epoch_key,
    query_suffix,
    value_epoch_key,
)
from gateway.resilience import GuardedCache
from gateway.retry import RetryPolicy
from gateway.tables import IndexSpec
from tests.gateway_helpers import (
    TIMEOUT_S,
    GatedCache,
    Policy,
    Worker,
    gateways,
    make_service,
    race,
)
from tests.servers import FaultProxy

INDEXES = {"orders": {"by_customer": IndexSpec("customer", "S"), "by_size": IndexSpec("size", "N")}}
BACKENDS = ["memory", "redis", "tiered"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_or_none(backend: str, request: pytest.FixtureRequest) -> str | None:
    return None if backend == "memory" else str(request.getfixturevalue("redis_url"))


@contextmanager
def instances(
    backend: str, proxy: FaultProxy, table_prefix: str, redis_url: str | None, **kw: Any
) -> Iterator[list[CachingGateway]]:
    """Two instances sharing Redis (redis, tiered); one for memory (nothing to share)."""
    count = 1 if backend == "memory" else 2
    with gateways(
        backend, proxy.endpoint_url, table_prefix, redis_url, count=count, indexes=INDEXES, **kw
    ) as built:
        yield built


def _reads(proxy: FaultProxy) -> dict[str, int]:
    counts = proxy.counts()
    return {op: counts.get(op, 0) for op in ("Scan", "Query")}


def _ids(documents: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((d["_id"], d["_rev"]) for d in documents)


RICH = {
    "customer": "ada",
    "size": 3,
    "price": Decimal("9.5"),
    "blob": b"\x00\x01",
    "tags": {"a", "b"},
    "nested": {"list": [1, "two", {"three": [3.0]}], "empty": {}},
    "nothing": None,
}


def test_repeated_answers_make_no_scan_or_query(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, redis_or_none: str | None
) -> None:
    with instances(backend, fault_proxy, table_prefix, redis_or_none) as gws:
        gw = gws[0]
        gw.save_many("orders", {f"o{i}": {**RICH, "n": i} for i in range(5)})
        gw.save("orders", "other", {"customer": "bob", "size": 1})
        first = (
            gw.list_all("orders"),
            gw.query("orders", "by_customer", "ada"),
            gw.query("orders", "by_size", 3),
        )
        before = _reads(fault_proxy)
        for _ in range(3):
            again = (
                gw.list_all("orders"),
                gw.query("orders", "by_customer", "ada"),
                gw.query("orders", "by_size", Decimal("3.0")),  # equal in DynamoDB: same key
            )
            assert again == first  # values and types exactly as DynamoDB's answer
            pages = list(gw.iter_pages("orders", page_size=2))
            assert [len(page) for page in pages] == [2, 2, 2]
            assert [d for page in pages for d in page] == first[0]
        assert _reads(fault_proxy) == before  # not one Scan or Query more
        ada = first[1]
        assert len(ada) == 5 and isinstance(ada[0]["price"], Decimal)
        assert isinstance(ada[0]["blob"], Binary) and ada[0]["tags"] == {"a", "b"}


@pytest.mark.parametrize("write", ["save", "delete", "save_many", "delete_many", "invalidate"])
def test_a_write_through_another_instance_is_in_the_next_answer(
    write: str,
    backend: str,
    fault_proxy: FaultProxy,
    table_prefix: str,
    redis_or_none: str | None,
) -> None:
    with instances(backend, fault_proxy, table_prefix, redis_or_none) as gws:
        reader, writer = gws[0], gws[-1]
        reader.save_many("orders", {"a1": {"customer": "ada"}, "a2": {"customer": "ada"}})
        assert len(reader.query("orders", "by_customer", "ada")) == 2
        assert len(reader.list_all("orders")) == 2
        if write == "save":
            writer.save("orders", "a3", {"customer": "ada"})
        elif write == "delete":
            writer.delete("orders", "a1")
        elif write == "save_many":
            writer.save_many("orders", {"a3": {"customer": "ada"}, "a4": {"customer": "ada"}})
        elif write == "delete_many":
            writer.delete_many("orders", ["a1", "a2"])
        else:  # a change made behind the gateway's back, then the operator's invalidate
            truth = make_service(fault_proxy.endpoint_url, table_prefix, indexes=INDEXES)
            truth.save("orders", "a3", {"customer": "ada"})
            writer.invalidate("orders", "a3")
        truth = make_service(fault_proxy.endpoint_url, table_prefix, indexes=INDEXES)
        for gw in gws:
            assert _ids(gw.query("orders", "by_customer", "ada")) == _ids(
                truth.query("orders", "by_customer", "ada")
            )
            assert _ids(gw.list_all("orders")) == _ids(truth.list_all("orders"))


def test_a_document_that_changes_index_value_moves_between_answers(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, redis_or_none: str | None
) -> None:
    with instances(backend, fault_proxy, table_prefix, redis_or_none) as gws:
        reader, writer = gws[0], gws[-1]
        writer.save("orders", "o1", {"customer": "ada"})
        assert [d["_id"] for d in reader.query("orders", "by_customer", "ada")] == ["o1"]
        assert reader.query("orders", "by_customer", "bob") == []
        writer.save("orders", "o1", {"customer": "bob"})
        assert reader.query("orders", "by_customer", "ada") == []
        assert [d["_id"] for d in reader.query("orders", "by_customer", "bob")] == ["o1"]


def test_a_write_leaves_the_answers_of_other_values_cached(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, redis_or_none: str | None
) -> None:
    """Precise invalidation: a write to one of ada's orders refreshes ada's answer (and the
    scan) but not bob's, on every instance."""
    with instances(backend, fault_proxy, table_prefix, redis_or_none) as gws:
        reader, writer = gws[0], gws[-1]
        writer.save_many("orders", {"a1": {"customer": "ada"}, "b1": {"customer": "bob"}})
        reader.query("orders", "by_customer", "ada")
        reader.query("orders", "by_customer", "bob")
        writer.save("orders", "a2", {"customer": "ada"})
        before = _reads(fault_proxy)
        assert [d["_id"] for d in reader.query("orders", "by_customer", "bob")] == ["b1"]
        assert _reads(fault_proxy) == before  # bob's answer was still good
        assert sorted(d["_id"] for d in reader.query("orders", "by_customer", "ada")) == [
            "a1",
            "a2",
        ]
        assert _reads(fault_proxy)["Query"] == before["Query"] + 1


def test_with_collection_invalidation_any_write_refreshes_every_answer(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    policy = Policy()
    gw = CachingGateway(
        make_service(fault_proxy.endpoint_url, table_prefix, indexes=INDEXES),
        MemoryCache(),
        policy_for=lambda _db: policy,
        query_invalidation="collection",
    )
    try:
        gw.save_many("orders", {"a1": {"customer": "ada"}, "b1": {"customer": "bob"}})
        gw.query("orders", "by_customer", "bob")
        gw.save("orders", "a1", {"customer": "ada", "n": 1})
        before = _reads(fault_proxy)
        assert [d["_id"] for d in gw.query("orders", "by_customer", "bob")] == ["b1"]
        assert _reads(fault_proxy)["Query"] == before["Query"] + 1
        gw.save("orders", "a1", {"customer": "bob"})
        assert sorted(d["_id"] for d in gw.query("orders", "by_customer", "bob")) == ["a1", "b1"]
        assert gw.query("orders", "by_customer", "ada") == []
    finally:
        gw.close()
    with pytest.raises(ValueError, match="query_invalidation"):
        CachingGateway(
            make_service(fault_proxy.endpoint_url, table_prefix),
            MemoryCache(),
            policy_for=lambda _db: policy,
            query_invalidation="sometimes",  # type: ignore[arg-type]
        )


def test_batches_refresh_every_answer(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, redis_or_none: str | None
) -> None:
    """BatchWriteItem returns no old items: a batch could have moved a document out of any
    value, so every answer of the collection is read again."""
    with instances(backend, fault_proxy, table_prefix, redis_or_none) as gws:
        reader, writer = gws[0], gws[-1]
        writer.save_many("orders", {"a1": {"customer": "ada"}, "b1": {"customer": "bob"}})
        assert len(reader.query("orders", "by_customer", "ada")) == 1
        writer.save_many("orders", {"a1": {"customer": "bob"}})
        assert reader.query("orders", "by_customer", "ada") == []
        writer.delete_many("orders", ["b1"])
        assert [d["_id"] for d in reader.query("orders", "by_customer", "bob")] == ["a1"]


@pytest.mark.parametrize("operation", ["PutItem", "DeleteItem"])
def test_a_write_whose_answer_was_lost_refreshes_every_answer(
    operation: str, fault_proxy: FaultProxy, table_prefix: str
) -> None:
    """A retried write's old item may be its own lost attempt's: the value the document left
    is unknown, so every index answer is read again."""
    with gateways("memory", fault_proxy.endpoint_url, table_prefix, None, indexes=INDEXES) as (
        gw,
    ):
        gw.save("orders", "o1", {"customer": "ada"})
        assert [d["_id"] for d in gw.query("orders", "by_customer", "ada")] == ["o1"]
        fault_proxy.configure(lose_next=1, lose_mode="error", operations={operation})
        if operation == "PutItem":
            gw.save("orders", "o1", {"customer": "bob"})
        else:
            assert gw.delete("orders", "o1") is True
        assert fault_proxy.injected()  # the answer was lost, and the write sent again
        assert gw.query("orders", "by_customer", "ada") == []


@pytest.mark.parametrize("what", ["query", "list_all", "move"])
def test_an_answer_read_before_a_write_is_not_stored_after_it(
    what: str, fault_proxy: FaultProxy, table_prefix: str
) -> None:
    """The fill race: a reader reads DynamoDB, a write is acknowledged, then the reader's
    answer reaches the cache. The reader may return its old answer (it started first); every
    read that starts after the write must see it."""
    gated = GatedCache(MemoryCache())
    policy = Policy(jitter=0.0)
    gw = CachingGateway(
        make_service(fault_proxy.endpoint_url, table_prefix, indexes=INDEXES),
        gated,  # type: ignore[arg-type]
        policy_for=lambda _db: policy,
    )
    try:
        gw.save("orders", "o1", {"customer": "ada"})

        def read() -> list[dict[str, Any]]:
            if what in ("query", "move"):
                return gw.query("orders", "by_customer", "ada")
            return gw.list_all("orders")

        # Hold the answer's fill (not the epochs'): answer keys are "<table>|a|...".
        gated.pause_fill = lambda fills: any("|a|" in f.key for f in fills)
        reader = Worker(read)
        assert gated.fill_reached.wait(TIMEOUT_S)
        gated.pause_fill = lambda fills: False
        if what == "move":  # o1 leaves ada's answer: known only from DynamoDB's answer
            gw.save("orders", "o1", {"customer": "bob"})
        else:
            gw.save("orders", "o2", {"customer": "ada"})  # acknowledged while the fill waits
        gated.fill_release.set()
        assert [d["_id"] for d in reader.outcome()] == ["o1"]  # began before the write
        expected = [] if what == "move" else ["o1", "o2"]
        assert sorted(d["_id"] for d in read()) == expected
    finally:
        gw.close()


def test_answers_over_max_query_bytes_are_read_every_time(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    policy = Policy()
    gw = CachingGateway(
        make_service(fault_proxy.endpoint_url, table_prefix, indexes=INDEXES),
        MemoryCache(),
        policy_for=lambda _db: policy,
        max_query_bytes=2000,
    )
    try:
        gw.save("orders", "small", {"customer": "ada"})
        gw.save_many("orders", {f"big{i}": {"customer": "bob", "pad": "x" * 500} for i in range(5)})
        gw.query("orders", "by_customer", "ada")
        gw.query("orders", "by_customer", "bob")
        before = _reads(fault_proxy)
        gw.query("orders", "by_customer", "ada")  # small: cached
        assert _reads(fault_proxy) == before
        gw.query("orders", "by_customer", "bob")  # over 2,000 bytes: read again
        assert _reads(fault_proxy) == {"Scan": before["Scan"], "Query": before["Query"] + 1}
        for _ in range(2):
            scans = _reads(fault_proxy)["Scan"]
            gw.list_all("orders")
            assert _reads(fault_proxy)["Scan"] == scans + 1
            list(gw.iter_pages("orders", page_size=2))
            assert _reads(fault_proxy)["Scan"] > scans + 1
    finally:
        gw.close()


def test_callers_get_private_copies(fault_proxy: FaultProxy, table_prefix: str) -> None:
    with gateways("memory", fault_proxy.endpoint_url, table_prefix, None, indexes=INDEXES) as (
        gw,
    ):
        gw.save("orders", "o1", {"customer": "ada", "items": [1, 2]})
        for answer in (gw.query("orders", "by_customer", "ada"), gw.list_all("orders")):
            answer[0]["items"].append(3)
            answer.append({"_id": "intruder"})
        for page in gw.iter_pages("orders"):
            page[0]["customer"] = "changed"
        for answer in (gw.query("orders", "by_customer", "ada"), gw.list_all("orders")):
            assert [(d["_id"], d["customer"], d["items"]) for d in answer] == [
                ("o1", "ada", [1, 2])
            ]


def test_a_partly_read_iter_pages_stores_nothing(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    with gateways("memory", fault_proxy.endpoint_url, table_prefix, None, indexes=INDEXES) as (
        gw,
    ):
        gw.save_many("orders", {f"o{i}": {"customer": "ada"} for i in range(4)})
        pages = gw.iter_pages("orders", page_size=1)
        next(pages)
        pages.close()
        before = _reads(fault_proxy)
        assert len(gw.list_all("orders")) == 4
        assert _reads(fault_proxy)["Scan"] > before["Scan"]


def test_with_cache_queries_off_every_answer_is_read(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    policy = Policy(cache_queries=False)
    with gateways(
        "memory", fault_proxy.endpoint_url, table_prefix, None, policy=policy, indexes=INDEXES
    ) as (gw,):
        gw.save("orders", "o1", {"customer": "ada"})
        before = _reads(fault_proxy)
        for _ in range(2):
            gw.query("orders", "by_customer", "ada")
            gw.list_all("orders")
        assert _reads(fault_proxy) == {"Scan": before["Scan"] + 2, "Query": before["Query"] + 2}


def test_bad_queries_are_refused_whether_or_not_an_answer_is_cached(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    with gateways("memory", fault_proxy.endpoint_url, table_prefix, None, indexes=INDEXES) as (
        gw,
    ):
        gw.save("orders", "o1", {"customer": "ada"})
        gw.query("orders", "by_customer", "ada")
        with pytest.raises(ValidationError, match="no index 'by_nothing'"):
            gw.query("orders", "by_nothing", "ada")
        with pytest.raises(ValidationError, match="a key value must be"):
            gw.query("orders", "by_customer", ["ada"])
        with pytest.raises(ValidationError, match="page_size"):
            gw.iter_pages("orders", page_size=0)
        assert [d["_id"] for d in gw.query("orders", "by_customer", "ada")] == ["o1"]


def test_equal_key_values_share_an_answer_and_others_do_not() -> None:
    assert query_suffix("i", Decimal("1")) == query_suffix("i", Decimal("1.00"))
    assert query_suffix("i", Decimal("10")) != query_suffix("i", Decimal("1"))
    assert query_suffix("i", "1") != query_suffix("i", Decimal("1"))
    assert query_suffix("i", Binary(b"\x01")) != query_suffix("i", "01")
    assert query_suffix("i", "a|b") != query_suffix("i|a", "b")


def test_an_index_answer_filled_soon_after_a_write_expires_when_the_index_settled() -> None:
    """GSIs are eventually consistent: an answer read within INDEX_SETTLE_S of its epoch's
    start may lack a write DynamoDB acknowledged just before; it must not outlive that."""
    now = [1000.0]
    stored: list[Fill] = []
    cache = GatedCache(MemoryCache())
    cache.pause_fill = lambda fills: bool(stored.extend(fills))  # records, never pauses
    guard = GuardedCache(cache, None, clock=lambda: 0.0, wall_clock=lambda: now[0])  # type: ignore[arg-type]
    queries = QueryCache(
        guard,
        copy=dict,
        max_bytes=10_000,
        fill_deadline_s=2.0,
        clock=lambda: 0.0,
        wall_clock=lambda: now[0],
    )
    queries.answer("t", query_suffix("i", "v"), 300.0, lambda: [{"_id": "x"}])
    assert [fill.key for fill in stored[:2]] == [
        queries_epoch_key("t"),
        value_epoch_key("t", query_suffix("i", "v")),
    ]
    assert stored[2].ttl_s == pytest.approx(INDEX_SETTLE_S)
    answer_key = stored[2].key
    stored.clear()
    now[0] += INDEX_SETTLE_S  # the epochs are old enough: full TTL
    cache.invalidate_many([answer_key])
    queries.answer("t", query_suffix("i", "v"), 300.0, lambda: [{"_id": "x"}])
    assert [(fill.key, fill.ttl_s) for fill in stored] == [(answer_key, 300.0)]
    stored.clear()
    queries.answer("t", "scan", 300.0, lambda: [])  # scans are strongly consistent
    assert [fill.ttl_s for fill in stored][1:] == [300.0]  # after the new scan epoch


# ------------------------------------------------------------------ racing


QUERY_KEYS = ["k0", "k1", "k2", "k3"]
CUSTOMERS = ["ada", "bob"]


def _one_operation(gw: CachingGateway, rng: random.Random, n: int) -> None:
    roll = rng.random()
    key = rng.choice(QUERY_KEYS)
    if roll < 0.35:
        gw.query("orders", "by_customer", rng.choice(CUSTOMERS))
    elif roll < 0.45:
        gw.list_all("orders")
    elif roll < 0.70:
        gw.save("orders", key, {"customer": rng.choice(CUSTOMERS), "n": n})
    elif roll < 0.80:
        gw.delete("orders", key)
    elif roll < 0.90:
        picked = rng.sample(QUERY_KEYS, 2)
        gw.save_many("orders", {k: {"customer": rng.choice(CUSTOMERS), "n": n} for k in picked})
    else:
        gw.delete_many("orders", rng.sample(QUERY_KEYS, 2))


@pytest.mark.slow
@pytest.mark.parametrize("run", range(3))
@pytest.mark.parametrize("backend", BACKENDS)
def test_once_writers_stop_every_answer_is_dynamodbs(
    backend: str,
    run: int,
    fault_proxy: FaultProxy,
    table_prefix: str,
    request: pytest.FixtureRequest,
) -> None:
    """Writers and query readers race on two instances (one for memory), every DynamoDB
    request delayed by a random 0-30 ms at the wire (so requests are reordered) and some
    answers lost after DynamoDB applied them; once the writers stop, every instance's
    answers equal a fresh Query / Scan."""
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    fault_proxy.seed(2000 + run)
    retry = RetryPolicy(max_attempts=6, base_s=0.001, cap_s=0.01)
    with instances(
        backend, fault_proxy, table_prefix, redis_url, policy=Policy(jitter=0.0), retry_policy=retry
    ) as gws:
        gws[0].save_many("orders", {key: {"customer": "ada", "n": -1} for key in QUERY_KEYS})
        fault_proxy.configure(latency_jitter_ms=30.0, lose_rate=0.03, lose_mode="error")
        race(gws, _one_operation, seed=run, seconds=1.0)
        fault_proxy.clear_faults()
        truth = make_service(fault_proxy.endpoint_url, table_prefix, indexes=INDEXES)
        disagreements = []
        for i, gw in enumerate(gws):
            for customer in CUSTOMERS:
                got = _ids(gw.query("orders", "by_customer", customer))
                want = _ids(truth.query("orders", "by_customer", customer))
                if got != want:
                    disagreements.append((i, customer, got, want))
            if _ids(gw.list_all("orders")) != _ids(truth.list_all("orders")):
                disagreements.append((i, "list_all"))
        assert not disagreements


def test_after_invalidate_collection_answers_are_read_again_then_cached(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, redis_or_none: str | None
) -> None:
    """invalidate_collection leaves floors where answers and epochs were (Redis hands floors
    out as entries of their own kind): they read as misses, never as answers."""
    with instances(backend, fault_proxy, table_prefix, redis_or_none) as gws:
        gw = gws[0]
        gw.save("orders", "o1", {"customer": "ada"})
        gw.query("orders", "by_customer", "ada")
        gw.list_all("orders")
        assert gw.invalidate_collection("orders") >= 2
        for _ in range(2):
            before = _reads(fault_proxy)
            assert [d["_id"] for d in gw.query("orders", "by_customer", "ada")] == ["o1"]
            assert [d["_id"] for d in gw.list_all("orders")] == ["o1"]
            assert [len(page) for page in gw.iter_pages("orders")] == [1]
        assert _reads(fault_proxy) == before  # the second round: all from the cache


def test_number_values_are_keyed_exactly_and_zero_is_one_value(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    """Numbers key answers by their exact value (38 digits, whatever the decimal context),
    and 0 / -0 are one value, as in DynamoDB."""
    with gateways("memory", fault_proxy.endpoint_url, table_prefix, None, indexes=INDEXES) as (
        gw,
    ):
        gw.save("orders", "one", {"customer": "x", "size": 1})
        gw.save("orders", "zero", {"customer": "x", "size": 0})
        assert [d["_id"] for d in gw.query("orders", "by_size", 1)] == ["one"]
        near_one = Decimal("1.00000000000000000000000000000001")
        assert gw.query("orders", "by_size", near_one) == []
        assert [d["_id"] for d in gw.query("orders", "by_size", -0.0)] == ["zero"]
        gw.save("orders", "zero2", {"customer": "x", "size": 0})
        assert sorted(d["_id"] for d in gw.query("orders", "by_size", -0.0)) == ["zero", "zero2"]
        gw.save("orders", "zero3", {"customer": "x", "size": Decimal("-0")})
        assert len(gw.query("orders", "by_size", 0)) == 3


def test_an_index_on_the_id_is_refreshed_by_saves(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    indexes = {"orders": {"by_id": IndexSpec("_id", "S")}}
    with gateways("memory", fault_proxy.endpoint_url, table_prefix, None, indexes=indexes) as (
        gw,
    ):
        gw.save("orders", "other", {"customer": "x"})
        assert gw.query("orders", "by_id", "u1") == []
        gw.save("orders", "u1", {"customer": "x"})
        assert [d["_id"] for d in gw.query("orders", "by_id", "u1")] == ["u1"]


class _InvalidationsFail(GatedCache):
    """A real cache whose invalidations always fail (the cache unreachable for them only)."""

    def invalidate_many(self, keys: Sequence[str]) -> None:
        raise CacheUnavailable("invalidate refused by the test")


@pytest.mark.parametrize("mode", ["refuse", "accept"])
def test_a_left_value_that_cannot_be_dropped_is_said_and_repaired_later(
    mode: str, fault_proxy: FaultProxy, table_prefix: str
) -> None:
    """The value a document leaves is known only after DynamoDB answered; if its answers
    cannot be dropped, a refusing gateway says so (the write was applied), an accepting one
    returns; both stop serving that answer themselves and remember it for the repairer."""
    now = [0.0]
    cache = _InvalidationsFail(MemoryCache())
    policy = Policy(jitter=0.0)
    gw = CachingGateway(
        make_service(fault_proxy.endpoint_url, table_prefix, indexes=INDEXES),
        cache,  # type: ignore[arg-type]
        policy_for=lambda _db: policy,
        unreachable_writes=mode,  # type: ignore[arg-type]
        clock=lambda: now[0],
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
    )
    try:
        gw.save("orders", "o1", {"customer": "ada"})
        assert [d["_id"] for d in gw.query("orders", "by_customer", "ada")] == ["o1"]
        if mode == "refuse":
            with pytest.raises(ServiceUnavailableError, match="applied in DynamoDB"):
                gw.save("orders", "o1", {"customer": "bob"})
        else:
            gw.save("orders", "o1", {"customer": "bob"})
        truth = make_service(fault_proxy.endpoint_url, table_prefix, indexes=INDEXES)
        assert truth.get("orders", "o1")["customer"] == "bob"  # written either way
        assert gw.stats()["pending_repairs"] >= 1
        assert gw.query("orders", "by_customer", "ada") == []
    finally:
        gw.close()


def test_obsolete_answers_do_not_pile_up_in_redis(
    fault_proxy: FaultProxy, table_prefix: str, redis_url: str
) -> None:
    with gateways("redis", fault_proxy.endpoint_url, table_prefix, redis_url, indexes=INDEXES) as (
        gw,
    ):
        for n in range(20):
            gw.save("orders", "o1", {"customer": "ada", "n": n})
            gw.list_all("orders")
            gw.query("orders", "by_customer", "ada")
        client = gw.cache.client  # type: ignore[attr-defined]
        answers = list(client.scan_iter(match=f"*{table_prefix}orders|a|*"))
        assert len(answers) == 2  # one scan answer, one query answer: replaced, not added
