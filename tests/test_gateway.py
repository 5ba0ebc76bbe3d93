"""The caching gateway against the moto server over HTTP and a real redis-server.

Transparency (same answers as the bare service, private copies), read-through / write-through,
single-flight, negative caching, revisions through the cache, bad input, and the stale-read
counter across two instances.
"""

from __future__ import annotations

import random
import threading
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary

from gateway import ABSENT, ConflictError, ValidationError
from gateway.revisions import parse_generation
from tests.gateway_helpers import Policy, Worker, gateways, make_service, wait_for
from tests.servers import FaultProxy

BACKENDS = ["memory", "redis", "tiered"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_or_none(backend: str, request: pytest.FixtureRequest) -> str | None:
    if backend == "memory":
        return None
    return str(request.getfixturevalue("redis_url"))


def _gw(backend: str, moto_server: Any, table_prefix: str, redis_url: str | None, **kw: Any):
    return gateways(backend, moto_server.endpoint_url, table_prefix, redis_url, **kw)


RICH_DOC = {
    "name": "Ada",
    "score": 9.5,
    "count": 3,
    "big": Decimal("12345678901234567890.123456789"),
    "flag": True,
    "nothing": None,
    "blob": b"\x00\x01binary",
    "tags": {"a", "b"},
    "nums": {1, 2.5},
    "blobs": {b"x", b"y"},
    "nested": {"list": [1, "two", {"three": [3.0]}], "empty_map": {}, "empty_list": []},
    "unicode": "héllo ✓",
    "empty": "",
}


def test_get_is_read_through_then_served_from_cache(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        bare = make_service(moto_server.endpoint_url, table_prefix)
        bare.save("users", "u1", RICH_DOC)
        first = gw.get("users", "u1")
        calls_after_first = gw.stats()["db_calls"].get("GetItem", 0)
        second = gw.get("users", "u1")
        assert first == second == bare.get("users", "u1")
        assert gw.stats()["db_calls"].get("GetItem", 0) == calls_after_first
        stats = gw.stats()
        assert stats["hits"] == 1 and stats["misses"] == 1 and stats["hit_ratio"] == 0.5
        bare.close()


def test_types_are_exactly_those_of_the_bare_service(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        bare = make_service(moto_server.endpoint_url, table_prefix)
        gw.save("users", "u1", RICH_DOC)  # write-through: the cached copy is built locally
        cached = gw.get("users", "u1")
        stored = bare.get("users", "u1")
        assert cached == stored
        assert _types(cached) == _types(stored)
        assert isinstance(cached["blob"], Binary) and isinstance(cached["score"], Decimal)
        bare.close()


def test_native_numbers_through_the_cache(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none, native_numbers=True) as (gw,):
        gw.save("users", "n", {"i": 3, "f": 2.5, "s": {1, 2}})
        doc = gw.get("users", "n")
        assert doc["i"] == 3 and type(doc["i"]) is int
        assert doc["f"] == 2.5 and type(doc["f"]) is float
        assert doc["s"] == {1, 2}


def test_callers_get_private_copies(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        gw.save("users", "u1", {"list": [1, 2], "map": {"k": "v"}, "set": {"a"}})
        doc = gw.get("users", "u1")
        doc["list"].append(3)
        doc["map"]["k"] = "changed"
        doc["set"].add("b")
        doc["new"] = 1
        again = gw.get("users", "u1")
        assert again["list"] == [1, 2] and again["map"] == {"k": "v"} and again["set"] == {"a"}
        assert "new" not in again
        many = gw.get_many("users", ["u1"])
        many["u1"]["list"].clear()
        assert gw.get("users", "u1")["list"] == [1, 2]


def test_write_through_and_delete_tombstone(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        rev = gw.save("users", "u1", {"v": 1})["rev"]
        before = gw.stats()["db_calls"].get("GetItem", 0)
        assert gw.get("users", "u1")["_rev"] == rev  # served from the write-through entry
        assert gw.stats()["db_calls"].get("GetItem", 0) == before
        assert gw.delete("users", "u1") is True
        assert gw.get("users", "u1") is None  # tombstone, no DynamoDB call
        assert gw.stats()["db_calls"].get("GetItem", 0) == before
        assert gw.delete("users", "u1") is False
        assert gw.get("users", "u1") is None


def test_negative_caching_and_a_save_replaces_it(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        assert gw.get("users", "ghost") is None
        calls = gw.stats()["db_calls"].get("GetItem", 0)
        assert gw.get("users", "ghost") is None
        assert gw.stats()["db_calls"].get("GetItem", 0) == calls  # negative hit
        gw.save("users", "ghost", {"now": "here"})
        assert gw.get("users", "ghost")["now"] == "here"


def test_get_many_mixes_hits_and_one_batch_for_misses(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        bare = make_service(moto_server.endpoint_url, table_prefix)
        bare.save_many("users", {f"u{i}": {"i": i} for i in range(10)})
        gw.get("users", "u0")
        result = gw.get_many("users", ["u0", "u1", "u1", "missing", "u9"])
        assert list(result) == ["u0", "u1", "missing", "u9"]
        assert result["missing"] is None and result["u9"]["i"] == 9
        assert gw.stats()["db_calls"].get("BatchGetItem", 0) == 1
        again = gw.get_many("users", ["u1", "missing", "u9"])
        assert again == {k: result[k] for k in ["u1", "missing", "u9"]}
        assert gw.stats()["db_calls"].get("BatchGetItem", 0) == 1
        bare.close()


def test_save_many_and_delete_many_through_the_cache(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        revs = gw.save_many("users", {f"u{i}": {"i": i} for i in range(30)})
        docs = gw.get_many("users", list(revs))
        assert all(docs[k]["_rev"] == rev for k, rev in revs.items())
        assert gw.stats()["db_calls"].get("BatchGetItem", 0) == 1  # save_many's revision read
        gw.delete_many("users", list(revs)[:10])
        after = gw.get_many("users", list(revs))
        assert sum(v is None for v in after.values()) == 10
        assert len(gw.list_all("users")) == 20


def test_if_rev_conflicts_and_absent(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        first = gw.save("users", "u1", {"v": 1}, if_rev=ABSENT)["rev"]
        with pytest.raises(ConflictError):
            gw.save("users", "u1", {"v": 2}, if_rev=ABSENT)
        second = gw.save("users", "u1", {"v": 2}, if_rev=first)["rev"]
        with pytest.raises(ConflictError):
            gw.save("users", "u1", {"v": 3}, if_rev=first)
        with pytest.raises(ConflictError):
            gw.delete("users", "u1", if_rev=first)
        assert gw.get("users", "u1")["_rev"] == second
        assert gw.delete("users", "u1", if_rev=second) is True
        assert gw.get("users", "u1") is None


def test_write_by_another_writer_is_seen_after_conflict(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    """A write that bypassed the gateway makes our if_rev save fail; the cache drops its copy."""
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        bare = make_service(moto_server.endpoint_url, table_prefix)
        rev = gw.save("users", "u1", {"v": 1})["rev"]
        outside = bare.save("users", "u1", {"v": "outside"})["rev"]
        with pytest.raises(ConflictError):
            gw.save("users", "u1", {"v": 2}, if_rev=rev)
        assert gw.get("users", "u1")["_rev"] == outside
        bare.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda gw: gw.save("users", "u1", {"bad": float("nan")}),
        lambda gw: gw.save("users", "u1", {"bad": {1, "mixed"}}),
        lambda gw: gw.save("users", "", {"v": 1}),
        lambda gw: gw.save("bad name!", "u1", {"v": 1}),
        lambda gw: gw.save("users", "u1", ["not", "a", "mapping"]),
        lambda gw: gw.save("users", "u1", {"v": 1}, if_rev=5),
        lambda gw: gw.save_many("users", {"u1": {"ok": 1}, "u2": {"bad": float("inf")}}),
        lambda gw: gw.get("users", 17),
        lambda gw: gw.get_many("users", "u1"),
        lambda gw: gw.delete("users", "x" * 3000),
    ],
)
def test_bad_input_is_typed_nothing_written_cache_not_poisoned(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None, call: Any
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        rev = gw.save("users", "u1", {"v": "good"})["rev"]
        writes_before = _writes(gw)
        with pytest.raises(ValidationError):
            call(gw)
        assert _writes(gw) == writes_before
        doc = gw.get("users", "u1")
        assert doc["v"] == "good" and doc["_rev"] == rev
        assert gw.get("users", "u2") is None


def test_single_flight_concurrent_misses_make_one_call(
    backend: str, fault_proxy: FaultProxy, table_prefix: str, redis_or_none: str | None
) -> None:
    """16 readers miss one key while its load is in flight (held at the wire): one GetItem."""
    with gateways(backend, fault_proxy.endpoint_url, table_prefix, redis_or_none) as (gw,):
        gw.service.save("users", "hot", {"v": 1})
        gw.get("users", "warm-the-table")  # table described; that GetItem is not the one counted
        before = fault_proxy.counts().get("GetItem", 0)
        with fault_proxy.hold({"GetItem"}) as gate:
            readers = [Worker(lambda: gw.get("users", "hot")) for _ in range(16)]
            assert gate.wait_arrived()
            wait_for(lambda: gw.stats()["single_flight_waits"] == 15)
        results = [reader.outcome() for reader in readers]
        assert all(r == results[0] for r in results) and results[0]["v"] == 1
        assert fault_proxy.counts().get("GetItem", 0) - before == 1
        assert gw.get("users", "hot")["v"] == 1
        assert fault_proxy.counts().get("GetItem", 0) - before == 1


def test_disabled_collection_passes_through(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    policy = Policy(enabled=False)
    with _gw(backend, moto_server, table_prefix, redis_or_none, policy=policy) as (gw,):
        gw.save("users", "u1", {"v": 1})
        gw.get("users", "u1")
        gw.get("users", "u1")
        assert gw.stats()["hits"] == 0
        assert gw.stats()["db_calls"]["GetItem"] == 2


def test_invalidate_and_invalidate_collection(
    backend: str, moto_server: Any, table_prefix: str, redis_or_none: str | None
) -> None:
    with _gw(backend, moto_server, table_prefix, redis_or_none) as (gw,):
        bare = make_service(moto_server.endpoint_url, table_prefix)
        gw.save("users", "u1", {"v": 1})
        gw.save("users", "u2", {"v": 1})
        gw.save("other", "u1", {"v": 1})
        bare.save("users", "u1", {"v": 2})  # behind the gateway's back
        bare.save("users", "u2", {"v": 2})
        assert gw.get("users", "u1")["v"] == 1  # the cache does not know
        gw.invalidate("users", "u1")
        assert gw.get("users", "u1")["v"] == 2
        assert gw.invalidate_collection("users") >= 1
        assert gw.get("users", "u2")["v"] == 2
        calls = gw.stats()["db_calls"].get("GetItem", 0)
        gw.get("other", "u1")
        assert gw.stats()["db_calls"].get("GetItem", 0) == calls  # other collection kept
        bare.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["memory", "redis", "tiered"])
def test_no_stale_read_after_acknowledged_write(
    backend_kind: str, moto_server: Any, table_prefix: str, request: pytest.FixtureRequest
) -> None:
    """Writers and readers on a few hot keys across instances: count reads that return a
    revision older than one whose save had returned before the read started. Must be 0.

    With the in-process backend the two instances do not share a cache, so each instance only
    reads and writes its own keys; with redis and tiered they share everything. There are no
    deletes here: generations restart from the clock after a delete, so a save that raced a
    delete may legitimately win with a lower generation (see the README's limits), which would
    make "lower generation" an unsound staleness test.
    """
    redis_url = None if backend_kind == "memory" else request.getfixturevalue("redis_url")
    shared = backend_kind != "memory"
    keys = ["k0", "k1", "k2"]
    acked: dict[tuple[int, str], int] = {}
    lock = threading.Lock()
    stale: list[str] = []
    errors: list[BaseException] = []
    reads = [0]
    with _gw(backend_kind, moto_server, table_prefix, redis_url, count=2) as instances:

        def owner(instance: int, key: str) -> tuple[int, str]:
            return (0 if shared else instance, key)

        def pick(rng: random.Random, instance: int) -> str:
            key = rng.choice(keys)
            return key if shared else f"{key}-{instance}"

        def writer(instance: int, seed: int) -> None:
            rng = random.Random(seed)
            gw = instances[instance]
            try:
                for n in range(25):
                    key = pick(rng, instance)
                    rev = gw.save("hot", key, {"n": n, "by": instance})["rev"]
                    generation = parse_generation(rev) or 0
                    with lock:
                        slot = owner(instance, key)
                        acked[slot] = max(acked.get(slot, 0), generation)
            except BaseException as exc:
                errors.append(exc)

        def reader(instance: int, seed: int) -> None:
            rng = random.Random(seed)
            gw = instances[instance]
            try:
                for _ in range(60):
                    key = pick(rng, instance)
                    with lock:
                        floor = acked.get(owner(instance, key), 0)
                    doc = gw.get("hot", key)
                    reads[0] += 1
                    if doc is None:
                        if floor:
                            stale.append(f"{key}: None after an acknowledged save")
                        continue
                    if (parse_generation(doc["_rev"]) or 0) < floor:
                        stale.append(f"{key}: {doc['_rev']} < {floor}")
            except BaseException as exc:
                errors.append(exc)

        plan = [(writer, i % 2, i) for i in range(4)]
        plan += [(reader, i % 2, 100 + i) for i in range(6)]
        threads = [threading.Thread(target=fn, args=(inst, seed)) for fn, inst, seed in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert reads[0] > 0
    assert stale == []


def _writes(gw: Any) -> int:
    calls = gw.stats()["db_calls"]
    return sum(calls.get(op, 0) for op in ("PutItem", "BatchWriteItem", "DeleteItem"))


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return ("set", sorted(type(v).__name__ for v in value))
    return type(value).__name__
