"""What a stream change does to the caches: one deterministic test per interleaving.

Changes are built as the stream delivers them (`change_from_record` on a GetRecords-shaped
record, images in DynamoDB JSON) and applied with `ChangeApplier` at chosen moments: late,
twice, out of order, across a concurrent write. The rule under test (`gateway.streams.apply`):
a change never puts an older document over a newer one, and drops what it cannot order.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer

from gateway.breaker import CircuitBreaker
from gateway.caches.base import MISS, Entry, Fill, Kind
from gateway.gateway import CachingGateway
from gateway.revisions import RevisionMaker, parse_generation
from gateway.streams.apply import ChangeApplier, Decision, decide
from gateway.streams.records import Change, change_from_record, table_of_stream_arn
from gateway.tables import IndexSpec
from tests.gateway_helpers import gateways

ALL = ["memory", "redis", "tiered"]
INDEXES = {"users": {"by_email": IndexSpec("email", "S")}}
_serializer = TypeSerializer()
_sequence = itertools.count(1000)


def record(
    event: str, doc_id: str, new: dict[str, Any] | None, old: dict[str, Any] | None
) -> dict[str, Any]:
    """A stream record as boto3's GetRecords returns it."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": datetime.datetime.now(datetime.timezone.utc),
        "Keys": {"_id": {"S": doc_id}},
        "SequenceNumber": str(next(_sequence)),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        body["NewImage"] = {k: _serializer.serialize(v) for k, v in {**new, "_id": doc_id}.items()}
    if old is not None:
        body["OldImage"] = {k: _serializer.serialize(v) for k, v in {**old, "_id": doc_id}.items()}
    return {"eventName": event, "eventSource": "aws:dynamodb", "dynamodb": body}


def change(table: str, event: str, doc_id: str, new: Any = None, old: Any = None) -> Change:
    parsed = change_from_record(record(event, doc_id, new, old), table)
    assert parsed is not None
    return parsed


@contextmanager
def one(
    backend: str, request: pytest.FixtureRequest, table_prefix: str, **kwargs: Any
) -> Iterator[tuple[CachingGateway, ChangeApplier, str]]:
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    endpoint = request.getfixturevalue("moto_server").endpoint_url
    with gateways(backend, endpoint, table_prefix, redis_url, **kwargs) as (gw,):
        yield gw, ChangeApplier(gw, gw.intent_ttl_s, gw.clock), f"{table_prefix}users"


def direct(dynamodb_client: Callable[..., Any]) -> Any:
    return dynamodb_client()


def misses(gw: CachingGateway) -> int:
    return int(gw.stats()["misses"])


def rev(generation: int) -> str:
    return RevisionMaker().make(generation)


# ------------------------------------------------------------------ the rule, as a table

R4, R5, R6 = rev(4), rev(5), rev(6)


def _doc(rev_text: str | None) -> Entry:
    generation = parse_generation(rev_text) or 0
    return Entry(Kind.DOCUMENT, generation, rev_text, {"_id": "a", "_rev": rev_text}, 1.0)


TOMBSTONE = Entry(Kind.ABSENT, 0, None, None, 1.0)


def _image(rev_text: str | None, v: int) -> dict[str, Any]:
    return {"v": v, **({"_rev": rev_text} if rev_text else {})}


@pytest.mark.parametrize(
    ("event", "new_rev", "old_rev", "cached", "expected"),
    [
        ("MODIFY", R5, R4, _doc(R4), Decision.STORE),  # from exactly the cached copy
        ("MODIFY", R5, R4, _doc(R5), Decision.KEEP),  # the cached copy is this change
        ("MODIFY", R5, R4, _doc(R6), Decision.DROP),  # neither image: DynamoDB knows best
        ("MODIFY", R4, R6, _doc(R6), Decision.STORE),  # a generation that stepped back
        ("MODIFY", R5, R4, MISS, Decision.DROP),  # an empty slot would accept an old copy
        ("MODIFY", R5, R4, TOMBSTONE, Decision.DROP),  # the delete may be newer
        ("MODIFY", None, R4, _doc(R4), Decision.DROP),  # no revision: order unknown
        ("MODIFY", R4, R4, _doc(R4), Decision.DROP),  # revision kept by an outside update
        ("MODIFY", R5, None, _doc(None), Decision.DROP),  # cached copy without revision
        ("INSERT", R5, None, MISS, Decision.DROP),
        ("INSERT", R5, None, _doc(R5), Decision.KEEP),
        ("REMOVE", None, R5, _doc(R5), Decision.STORE),
        ("REMOVE", None, R5, _doc(R4), Decision.DROP),  # removed something else
        ("REMOVE", None, R5, _doc(R6), Decision.DROP),  # a later save (or an earlier one)
        ("REMOVE", None, R5, TOMBSTONE, Decision.KEEP),
        ("REMOVE", None, None, _doc(R5), Decision.DROP),  # removed item had no revision
        ("REMOVE", None, None, TOMBSTONE, Decision.KEEP),
        ("REMOVE", None, R5, MISS, Decision.DROP),
    ],
)
def test_decide(
    event: str, new_rev: str | None, old_rev: str | None, cached: Any, expected: Decision
) -> None:
    new = None if event == "REMOVE" else _image(new_rev, 1)
    old = None if event == "INSERT" else _image(old_rev, 0)
    assert decide(change("t", event, "a", new, old), cached) is expected


def test_table_of_stream_arn() -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/app_users/stream/2026-01-01T00:00:00.000"
    assert table_of_stream_arn(arn) == "app_users"
    with pytest.raises(ValueError):
        table_of_stream_arn("arn:aws:dynamodb:us-east-1:1:table/x")


def test_a_record_of_an_item_that_is_not_a_document_is_skipped() -> None:
    foreign = record("INSERT", "a", {"v": 1}, None)
    foreign["dynamodb"]["Keys"] = {"pk": {"N": "1"}}
    assert change_from_record(foreign, "t") is None


# ------------------------------------------------------------------ against each backend


@pytest.mark.parametrize("backend", ALL)
def test_the_record_of_an_own_write_keeps_the_cached_copy(
    backend: str, request: pytest.FixtureRequest, table_prefix: str
) -> None:
    with one(backend, request, table_prefix) as (gw, applier, table):
        saved = gw.save("users", "a", {"v": 1})
        first = gw.get("users", "a")
        assert first is not None and first["_rev"] == saved["rev"]
        before = misses(gw)
        own = change(table, "INSERT", "a", {"v": 1, "_rev": saved["rev"]})
        assert applier.apply("users", [own])
        assert gw.get("users", "a") == first
        assert misses(gw) == before  # still a hit: nothing was dropped


@pytest.mark.parametrize("backend", ALL)
def test_a_change_from_the_cached_copy_replaces_it(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    with one(backend, request, table_prefix) as (gw, applier, table):
        saved = gw.save("users", "a", {"v": 1})
        assert gw.get("users", "a") is not None
        newer = rev((parse_generation(saved["rev"]) or 0) + 1)
        item = {"v": 2, "_rev": newer}
        direct(dynamodb_client).put_item(
            TableName=table,
            Item={k: _serializer.serialize(v) for k, v in {**item, "_id": "a"}.items()},
        )
        before = misses(gw)
        moved = change(table, "MODIFY", "a", item, {"v": 1, "_rev": saved["rev"]})
        assert applier.apply("users", [moved])
        got = gw.get("users", "a")
        assert got is not None and got["v"] == 2 and got["_rev"] == newer
        assert misses(gw) == before  # refreshed in place


@pytest.mark.parametrize("backend", ALL)
def test_an_item_without_revision_replaces_what_is_cached(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    with one(backend, request, table_prefix) as (gw, applier, table):
        gw.save("users", "a", {"v": 1})
        assert gw.get("users", "a") is not None
        direct(dynamodb_client).put_item(TableName=table, Item={"_id": {"S": "a"}, "v": {"N": "7"}})
        assert applier.apply("users", [change(table, "MODIFY", "a", {"v": 7}, {"v": 1})])
        assert gw.get("users", "a") == {"_id": "a", "v": 7}


@pytest.mark.parametrize("backend", ALL)
def test_an_outside_update_that_keeps_the_revision_is_seen(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    """A console edit or an UpdateItem that leaves ``_rev`` as it was: the revision proves
    nothing, so the cached copy is dropped rather than kept."""
    with one(backend, request, table_prefix) as (gw, applier, table):
        saved = gw.save("users", "a", {"balance": 10})
        assert gw.get("users", "a") is not None
        direct(dynamodb_client).update_item(
            TableName=table,
            Key={"_id": {"S": "a"}},
            UpdateExpression="SET balance = :z",
            ExpressionAttributeValues={":z": {"N": "0"}},
        )
        same = {"balance": 0, "_rev": saved["rev"]}
        assert applier.apply(
            "users", [change(table, "MODIFY", "a", same, {"balance": 10, "_rev": saved["rev"]})]
        )
        assert (gw.get("users", "a") or {}).get("balance") == 0


@pytest.mark.parametrize("backend", ALL)
def test_a_remove_leaves_a_tombstone(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    with one(backend, request, table_prefix) as (gw, applier, table):
        saved = gw.save("users", "a", {"v": 1})
        assert gw.get("users", "a") is not None
        direct(dynamodb_client).delete_item(TableName=table, Key={"_id": {"S": "a"}})
        removed = change(table, "REMOVE", "a", None, {"v": 1, "_rev": saved["rev"]})
        assert applier.apply("users", [removed])
        before = misses(gw)
        assert gw.get("users", "a") is None
        assert misses(gw) == before  # the tombstone answered


@pytest.mark.parametrize("backend", ALL)
def test_a_late_insert_never_hides_a_later_delete(
    backend: str, request: pytest.FixtureRequest, table_prefix: str
) -> None:
    with one(backend, request, table_prefix) as (gw, applier, table):
        saved = gw.save("users", "a", {"v": 1})
        assert gw.delete("users", "a")
        assert gw.get("users", "a") is None
        late = change(table, "INSERT", "a", {"v": 1, "_rev": saved["rev"]})
        assert applier.apply("users", [late])
        assert gw.get("users", "a") is None


@pytest.mark.parametrize("backend", ALL)
def test_a_late_remove_never_hides_a_later_save(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    with one(backend, request, table_prefix) as (gw, applier, table):
        first = gw.save("users", "a", {"v": 1})
        direct(dynamodb_client).delete_item(TableName=table, Key={"_id": {"S": "a"}})
        second = gw.save("users", "a", {"v": 2})
        assert (gw.get("users", "a") or {}).get("_rev") == second["rev"]
        late = change(table, "REMOVE", "a", None, {"v": 1, "_rev": first["rev"]})
        assert applier.apply("users", [late])
        got = gw.get("users", "a")
        assert got is not None and got["_rev"] == second["rev"]


@pytest.mark.parametrize("backend", ALL)
def test_a_replayed_batch_never_goes_back(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    """A follower that died before its checkpoint: the next one applies the batch again,
    after newer changes were applied (a takeover), and nothing goes back."""
    with one(backend, request, table_prefix) as (gw, applier, table):
        saved = gw.save("users", "a", {"v": 0})
        assert gw.get("users", "a") is not None
        g = parse_generation(saved["rev"]) or 0
        one_, two = {"v": 1, "_rev": rev(g + 1)}, {"v": 2, "_rev": rev(g + 2)}
        client = direct(dynamodb_client)
        for item in (one_, two):
            client.put_item(
                TableName=table,
                Item={k: _serializer.serialize(v) for k, v in {**item, "_id": "a"}.items()},
            )
        r1 = change(table, "MODIFY", "a", one_, {"v": 0, "_rev": saved["rev"]})
        r2 = change(table, "MODIFY", "a", two, one_)
        assert applier.apply("users", [r1, r2])
        assert applier.apply("users", [r1])  # replayed late
        assert (gw.get("users", "a") or {}).get("v") == 2


@pytest.mark.parametrize("backend", ALL)
def test_a_replayed_record_never_goes_over_a_copy_without_revision(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    """The cached copy came from an item without ``_rev`` (written after the record being
    replayed): generations cannot order them, so the replay drops instead of storing."""
    with one(backend, request, table_prefix) as (gw, applier, table):
        saved = gw.save("users", "a", {"v": 1})
        direct(dynamodb_client).put_item(TableName=table, Item={"_id": {"S": "a"}, "v": {"N": "9"}})
        gw.invalidate("users", "a")
        assert gw.get("users", "a") == {"_id": "a", "v": 9}  # cached, generation 0
        replay = change(table, "INSERT", "a", {"v": 1, "_rev": saved["rev"]})
        assert applier.apply("users", [replay])
        assert gw.get("users", "a") == {"_id": "a", "v": 9}


@pytest.mark.parametrize("backend", ALL)
def test_a_read_that_began_before_the_change_cannot_fill_after_it(
    backend: str, request: pytest.FixtureRequest, table_prefix: str
) -> None:
    """A key nothing is cached under: the change leaves a floor, so a load that read
    DynamoDB before the change (its token taken before) cannot store its old copy."""
    with one(backend, request, table_prefix) as (gw, applier, table):
        gw.save("users", "a", {"v": 1})
        guard = gw.stream_guard()
        key = gw.stream_key(table, "a")
        gw.invalidate("users", "a")
        seen = guard.get(key)
        assert seen is MISS or seen.kind is Kind.FLOOR
        token = guard.read_token(key, seen)
        assert applier.apply("users", [change(table, "MODIFY", "a", {"v": 2}, {"v": 1})])
        old = Entry(Kind.DOCUMENT, 1, None, {"_id": "a", "v": 1}, 1e12)
        guard.fill_many([Fill(key, old, 60.0, token)])
        after = guard.get(key)
        assert after is MISS or after.kind is Kind.FLOOR


@pytest.mark.parametrize("backend", ["redis", "tiered"])
def test_an_unreachable_cache_keeps_the_changes_for_later(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    relay = request.getfixturevalue("redis_relay")
    endpoint = request.getfixturevalue("moto_server").endpoint_url
    never_open = lambda: CircuitBreaker(failure_threshold=1_000_000)  # noqa: E731
    with gateways(backend, endpoint, table_prefix, relay.url, breaker=never_open) as (gw,):
        applier = ChangeApplier(gw, gw.intent_ttl_s, gw.clock)
        table = f"{table_prefix}users"
        gw.save("users", "a", {"v": 1})
        assert gw.get("users", "a") is not None
        direct(dynamodb_client).put_item(TableName=table, Item={"_id": {"S": "a"}, "v": {"N": "3"}})
        outside = change(table, "MODIFY", "a", {"v": 3}, {"v": 1})
        relay.blackhole()
        assert not applier.apply("users", [outside])
        relay.heal()
        assert applier.apply("users", [outside])
        assert gw.get("users", "a") == {"_id": "a", "v": 3}


@pytest.mark.parametrize("backend", ALL)
def test_query_answers_of_the_values_left_and_joined_are_dropped(
    backend: str,
    request: pytest.FixtureRequest,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    with one(backend, request, table_prefix, indexes=INDEXES) as (gw, applier, table):
        gw.save("users", "a", {"email": "old@x"})
        assert [d["_id"] for d in gw.query("users", "by_email", "old@x")] == ["a"]
        assert gw.query("users", "by_email", "new@x") == []
        assert len(gw.list_all("users")) == 1
        direct(dynamodb_client).put_item(
            TableName=table, Item={"_id": {"S": "a"}, "email": {"S": "new@x"}}
        )
        moved = change(table, "MODIFY", "a", {"email": "new@x"}, {"email": "old@x"})
        assert applier.apply("users", [moved])
        assert gw.query("users", "by_email", "old@x") == []
        assert [d["_id"] for d in gw.query("users", "by_email", "new@x")] == ["a"]
        assert gw.list_all("users") == [{"_id": "a", "email": "new@x"}]
