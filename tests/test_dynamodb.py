"""DynamoDBService against the emulator over HTTP: every call of the contract, types, revisions,
bad input and error translation (with faults injected at the wire by the fault proxy).
"""

from __future__ import annotations

import datetime
import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import Binary
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
)

from gateway import (
    ABSENT,
    AccessDeniedError,
    ConfigError,
    ConflictError,
    CredentialsError,
    DatabaseService,
    DynamoDBService,
    GatewayError,
    ServiceUnavailableError,
    ThrottledError,
    ValidationError,
)
from gateway.aws_errors import translate
from gateway.emulator import EmbeddedDynamoDB
from gateway.retry import RetryPolicy
from gateway.revisions import RevisionMaker, parse_generation, wall_clock_us
from gateway.tables import IndexSpec
from tests.gateway_helpers import run_threads
from tests.servers import TEST_CREDENTIALS, TEST_REGION, FaultProxy

ClientFactory = Callable[..., Any]
ServiceFactory = Callable[..., DynamoDBService]

REV_RE = re.compile(r"\A([0-9]+)-[0-9a-f]{32}\Z")
USERS_INDEXES = {"users": {"by_email": IndexSpec("email", "S"), "by_age": IndexSpec("age", "N")}}
THREADS = 8
SAVES_PER_THREAD = 20
#: A 16-digit generation, like the wall clock's in microseconds (until the year 2286).
FIXED_US = 1_700_000_000_000_000
HOUR_US = 3_600_000_000


def fast_retry() -> RetryPolicy:
    """Three quick attempts: a test sees give-ups in milliseconds."""
    return RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.01, deadline_s=2)


def generation(rev: str) -> int:
    match = REV_RE.match(rev)
    assert match, f"{rev!r} is not '<generation>-<32 hex>'"
    return int(match.group(1))


@pytest.fixture
def make_service(moto_server: EmbeddedDynamoDB, table_prefix: str) -> Iterator[ServiceFactory]:
    """``make_service(**kwargs)``: a DynamoDBService on the emulator with the test's prefix."""
    services: list[DynamoDBService] = []

    def make(**kwargs: Any) -> DynamoDBService:
        kwargs.setdefault("endpoint_url", moto_server.endpoint_url)
        kwargs.setdefault("table_prefix", table_prefix)
        kwargs.setdefault("indexes", USERS_INDEXES)
        svc = DynamoDBService(**kwargs)
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.close()


@pytest.fixture
def service(make_service: ServiceFactory) -> DynamoDBService:
    return make_service()


@pytest.fixture
def proxied(make_service: ServiceFactory, fault_proxy: FaultProxy) -> DynamoDBService:
    """A service that talks to the emulator through the fault proxy, with quick retries."""
    return make_service(endpoint_url=fault_proxy.endpoint_url, retry_policy=fast_retry())


# -- the contract, call by call ----------------------------------------------------------------


def test_is_a_database_service(service: DynamoDBService) -> None:
    assert isinstance(service, DatabaseService)


def test_save_returns_id_and_rev_and_get_returns_the_same_rev(service: DynamoDBService) -> None:
    result = service.save("notes", "n1", {"text": "hello", "n": 1})
    assert set(result) == {"id", "rev"}
    assert result["id"] == "n1"
    assert REV_RE.match(result["rev"])
    doc = service.get("notes", "n1")
    assert doc == {"_id": "n1", "_rev": result["rev"], "text": "hello", "n": Decimal(1)}


def test_save_ignores_id_and_rev_in_the_document(service: DynamoDBService) -> None:
    doc = {"_id": "other", "_rev": "1-" + "0" * 32, "x": "y"}
    result = service.save("notes", "real", doc)
    assert result["rev"] != doc["_rev"]
    stored = service.get("notes", "real")
    assert stored == {"_id": "real", "_rev": result["rev"], "x": "y"}
    assert service.get("notes", "other") is None
    assert doc == {"_id": "other", "_rev": "1-" + "0" * 32, "x": "y"}  # input left alone


def test_save_is_a_full_replace(service: DynamoDBService) -> None:
    service.save("notes", "n1", {"a": 1, "b": 2, "nested": {"x": 1}})
    second = service.save("notes", "n1", {"b": 3})
    assert service.get("notes", "n1") == {"_id": "n1", "_rev": second["rev"], "b": Decimal(3)}


def test_save_does_not_modify_its_input(service: DynamoDBService) -> None:
    doc: dict[str, Any] = {"x": 0.5, "tags": {"a"}, "items": [1, {"k": b"v"}]}
    before = repr(doc)
    service.save("notes", "n1", doc)
    assert repr(doc) == before


def test_get_of_a_missing_document_is_none(service: DynamoDBService) -> None:
    assert service.get("notes", "nobody") is None
    service.save("notes", "somebody", {})
    assert service.get("notes", "nobody") is None


def test_delete_says_whether_a_document_was_removed(service: DynamoDBService) -> None:
    service.save("notes", "n1", {"x": 1})
    assert service.delete("notes", "n1") is True
    assert service.get("notes", "n1") is None
    assert service.delete("notes", "n1") is False
    assert service.delete("notes", "never") is False


def test_delete_returning_rev(service: DynamoDBService) -> None:
    rev = service.save("notes", "n1", {"x": 1})["rev"]
    assert service.delete_returning_rev("notes", "n1") == rev
    assert service.delete_returning_rev("notes", "n1") is None


def test_list_all_and_iter_pages_of_a_small_collection(service: DynamoDBService) -> None:
    docs = {f"d{i:02}": {"i": i} for i in range(23)}
    service.save_many("notes", docs)
    everything = service.list_all("notes")
    assert sorted(doc["_id"] for doc in everything) == sorted(docs)
    pages = list(service.iter_pages("notes", page_size=5))
    assert all(1 <= len(page) <= 5 for page in pages)
    ids = [doc["_id"] for page in pages for doc in page]
    assert sorted(ids) == sorted(docs)  # each exactly once
    assert len(pages) >= 5


def test_list_all_and_iter_pages_of_an_empty_collection(service: DynamoDBService) -> None:
    assert service.list_all("empty") == []
    assert list(service.iter_pages("empty")) == []
    assert list(service.iter_pages("empty", page_size=1)) == []


def test_get_many_answers_every_id_across_batches(service: DynamoDBService) -> None:
    present = {f"p{i}": {"i": i} for i in range(130)}
    revs = service.save_many("notes", present)
    missing = [f"m{i}" for i in range(30)]
    asked = [*present, *missing, "p0", "p0", "m0", "p129"]  # duplicates allowed
    found = service.get_many("notes", asked)
    assert set(found) == set(asked)
    for doc_id, doc in present.items():
        assert found[doc_id] == {**doc, "_id": doc_id, "_rev": revs[doc_id]}
    assert all(found[doc_id] is None for doc_id in missing)
    assert service.stats()["db_calls"]["BatchGetItem"] >= 2 + 2  # save_many's and ours


def test_get_many_of_nothing_and_of_a_generator(service: DynamoDBService) -> None:
    assert service.get_many("notes", []) == {}
    service.save("notes", "a", {})
    found = service.get_many("notes", (doc_id for doc_id in ["a", "b"]))
    assert found["b"] is None and found["a"] is not None


def test_save_many_returns_revs_that_get_confirms(service: DynamoDBService) -> None:
    docs = {f"d{i}": {"i": i, "name": f"doc {i}"} for i in range(60)}
    revs = service.save_many("notes", docs)
    assert set(revs) == set(docs)
    assert all(REV_RE.match(rev) for rev in revs.values())
    assert len(set(revs.values())) == len(revs)
    for doc_id, doc in service.get_many("notes", list(docs)).items():
        assert doc is not None and doc["_rev"] == revs[doc_id]
    assert service.stats()["db_calls"]["BatchWriteItem"] == 3  # 25 + 25 + 10


def test_save_many_raises_generations_over_the_stored_ones(service: DynamoDBService) -> None:
    first = service.save_many("notes", {f"d{i}": {"v": 1} for i in range(30)})
    second = service.save_many("notes", {f"d{i}": {"v": 2} for i in range(30)})
    for doc_id in first:
        assert generation(second[doc_id]) > generation(first[doc_id])


def test_save_many_of_nothing(service: DynamoDBService) -> None:
    assert service.save_many("notes", {}) == {}


def test_save_many_is_validated_whole_before_anything_is_written(
    proxied: DynamoDBService, fault_proxy: FaultProxy, service: DynamoDBService
) -> None:
    docs: dict[str, Any] = {f"d{i}": {"i": i} for i in range(30)}
    docs["d17"] = {"bad": float("nan")}
    with pytest.raises(ValidationError, match=r"d17|NaN|nan"):
        proxied.save_many("notes", docs)
    assert fault_proxy.counts() == {}
    assert service.list_all("notes") == []


def test_delete_many_removes_everything_listed(service: DynamoDBService) -> None:
    service.save_many("notes", {f"d{i}": {"i": i} for i in range(60)})
    service.delete_many("notes", [f"d{i}" for i in range(55)] + ["missing", "d0", "also-missing"])
    assert sorted(doc["_id"] for doc in service.list_all("notes")) == [
        f"d{i}" for i in range(55, 60)
    ]
    service.delete_many("notes", [])
    service.delete_many("notes", ["never-there"])


def test_query_returns_every_match_of_a_declared_index(service: DynamoDBService) -> None:
    service.save_many(
        "users",
        {
            "ada": {"email": "ada@example.com", "age": 36},
            "bob": {"email": "bob@example.com", "age": 36},
            "cy": {"email": "ada@example.com", "age": 20},
            "dee": {"name": "no email"},
        },
    )
    by_email = service.query("users", "by_email", "ada@example.com")
    assert sorted(doc["_id"] for doc in by_email) == ["ada", "cy"]
    assert all(REV_RE.match(doc["_rev"]) for doc in by_email)
    assert sorted(doc["_id"] for doc in service.query("users", "by_age", 36)) == ["ada", "bob"]
    assert sorted(doc["_id"] for doc in service.query("users", "by_age", Decimal(20))) == ["cy"]
    assert service.query("users", "by_email", "nobody@example.com") == []


def test_query_on_an_undeclared_index_says_how_to_declare_it(service: DynamoDBService) -> None:
    with pytest.raises(ValidationError, match=r"collections\.users\.indexes\.by_name") as caught:
        service.query("users", "by_name", "Ada")
    assert "by_email" in str(caught.value)  # the indexes it has
    with pytest.raises(ValidationError, match="none"):
        service.query("notes", "by_email", "x")
    assert "Query" not in service.stats()["db_calls"]


def test_query_with_a_bad_value_is_refused(service: DynamoDBService) -> None:
    for value in (None, "", {"a": 1}, [1], True):
        with pytest.raises(ValidationError):
            service.query("users", "by_email", value)
    assert "Query" not in service.stats()["db_calls"]


def test_stats_count_db_calls_by_operation(
    proxied: DynamoDBService, fault_proxy: FaultProxy
) -> None:
    proxied.save("users", "a", {"email": "a@x"})
    proxied.get("users", "a")
    proxied.get("users", "missing")
    proxied.delete("users", "a")
    proxied.list_all("users")
    proxied.save_many("users", {"b": {"email": "b@x"}, "c": {}})
    proxied.get_many("users", ["b", "c", "d"])
    proxied.delete_many("users", ["b"])
    proxied.query("users", "by_email", "c@x")
    stats = proxied.stats()
    assert stats["hits"] == 0 and stats["misses"] == 0 and stats["hit_ratio"] == 0.0
    calls = stats["db_calls"]
    expected = {
        "CreateTable": 1,
        "PutItem": 1,
        "GetItem": 2,
        "DeleteItem": 1,
        "Scan": 1,
        "BatchGetItem": 2,
        "BatchWriteItem": 2,
        "Query": 1,
    }
    assert {op: calls[op] for op in expected} == expected
    assert set(calls) == {*expected, "DescribeTable"}
    # Every counted call went over the wire once (the proxy also sees the creation waiter's).
    wire = fault_proxy.counts()
    assert {op: wire[op] for op in expected} == expected
    assert wire["DescribeTable"] >= calls["DescribeTable"]


def test_close_is_idempotent_and_the_context_manager_closes(
    moto_server: EmbeddedDynamoDB, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix)
    closed: list[bool] = []
    original = svc.close

    def spy() -> None:
        closed.append(True)
        original()

    monkeypatch.setattr(svc, "close", spy)
    with svc as entered:
        assert entered is svc
        entered.save("notes", "a", {})
    assert closed == [True]
    svc.close()  # a second close is harmless
    assert moto_server.endpoint_url in repr(svc)


# -- a collection larger than one 1 MB page ----------------------------------------------------

BULK_DOCS = 300
BULK_PAD = "x" * 5000  # 300 x ~5 KB = ~1.5 MB: more than one scan / query page


@pytest.fixture(scope="module")
def bulk(moto_server: EmbeddedDynamoDB) -> Iterator[DynamoDBService]:
    """A service whose ``users`` collection holds 300 documents of ~5 KB (written once)."""
    session = boto3.session.Session(region_name=TEST_REGION, **TEST_CREDENTIALS)
    with DynamoDBService(
        endpoint_url=moto_server.endpoint_url,
        table_prefix=f"bulk{uuid.uuid4().hex[:8]}-",
        indexes=USERS_INDEXES,
        session=session,
    ) as svc:
        svc.save_many(
            "users",
            {
                f"u{i:03}": {"email": "same@example.com", "i": i, "pad": BULK_PAD}
                for i in range(BULK_DOCS)
            },
        )
        yield svc


def test_list_all_reads_every_scan_page(bulk: DynamoDBService) -> None:
    before = bulk.stats()["db_calls"].get("Scan", 0)
    docs = bulk.list_all("users")
    assert sorted(doc["_id"] for doc in docs) == [f"u{i:03}" for i in range(BULK_DOCS)]
    assert all(doc["pad"] == BULK_PAD for doc in docs)
    assert bulk.stats()["db_calls"]["Scan"] - before > 1


def test_iter_pages_of_a_large_collection(bulk: DynamoDBService) -> None:
    before = bulk.stats()["db_calls"].get("Scan", 0)
    pages = list(bulk.iter_pages("users", page_size=250))  # 250 x 5 KB: cut at 1 MB too
    assert all(1 <= len(page) <= 250 for page in pages)
    ids = [doc["_id"] for page in pages for doc in page]
    assert len(ids) == BULK_DOCS and len(set(ids)) == BULK_DOCS
    assert bulk.stats()["db_calls"]["Scan"] - before > 1


def test_query_reads_every_page(bulk: DynamoDBService) -> None:
    before = bulk.stats()["db_calls"].get("Query", 0)
    docs = bulk.query("users", "by_email", "same@example.com")
    assert sorted(doc["_id"] for doc in docs) == [f"u{i:03}" for i in range(BULK_DOCS)]
    assert bulk.stats()["db_calls"]["Query"] - before > 1


# -- types -------------------------------------------------------------------------------------


def test_types_round_trip(service: DynamoDBService) -> None:
    doc: dict[str, Any] = {
        "text": "héllo wörld ✓ 🎉 中文",
        "empty": "",
        "dec": Decimal("3.14159265358979323846264338327950288"),
        "int": 42,
        "negative": -7,
        "big_int": 10**37,
        "float": 0.1,
        "tiny": 1e-100,
        "zero": 0,
        "yes": True,
        "no": False,
        "nothing": None,
        "blob": b"\x00\x01\xff",
        "empty_blob": b"",
        "strings": {"a", "b", "é"},
        "numbers": {1, 2.5, Decimal("3")},
        "blobs": {b"x", b"y"},
        "list": [1, "two", [3, {"four": 4.5}], None, True, b"z"],
        "map": {"nested": {"deep": [Decimal("1.5"), {"s"}]}},
        "empty_list": [],
        "empty_map": {},
        "tuple": (1, 2),
        "frozen": frozenset({"f"}),
    }
    rev = service.save("types", "t", doc)["rev"]
    got = service.get("types", "t")
    assert got == {
        "_id": "t",
        "_rev": rev,
        "text": "héllo wörld ✓ 🎉 中文",
        "empty": "",
        "dec": Decimal("3.14159265358979323846264338327950288"),
        "int": Decimal(42),
        "negative": Decimal(-7),
        "big_int": Decimal(10**37),
        "float": Decimal("0.1"),
        "tiny": Decimal("1E-100"),
        "zero": Decimal(0),
        "yes": True,
        "no": False,
        "nothing": None,
        "blob": Binary(b"\x00\x01\xff"),
        "empty_blob": Binary(b""),
        "strings": {"a", "b", "é"},
        "numbers": {Decimal(1), Decimal("2.5"), Decimal(3)},
        "blobs": {Binary(b"x"), Binary(b"y")},
        "list": [
            Decimal(1),
            "two",
            [Decimal(3), {"four": Decimal("4.5")}],
            None,
            True,
            Binary(b"z"),
        ],
        "map": {"nested": {"deep": [Decimal("1.5"), {"s"}]}},
        "empty_list": [],
        "empty_map": {},
        "tuple": [Decimal(1), Decimal(2)],
        "frozen": {"f"},
    }
    assert got is not None
    assert type(got["int"]) is Decimal and type(got["float"]) is Decimal
    assert str(got["float"]) == "0.1"
    assert type(got["yes"]) is bool
    assert type(got["blob"]) is Binary and type(got["strings"]) is set


def test_native_numbers_come_back_as_int_and_float(make_service: ServiceFactory) -> None:
    svc = make_service(native_numbers=True)
    doc = {
        "i": 42,
        "f": 0.1,
        "d": Decimal("2.50"),
        "whole_float": 3.0,
        "nested": [1, {"x": 2.5, "y": [7]}],
        "set": {1, 2},
        "s": "text",
        "b": True,
    }
    svc.save("types", "n", doc)
    for got in (
        svc.get("types", "n"),
        svc.get_many("types", ["n"])["n"],
        svc.list_all("types")[0],
    ):
        assert got is not None
        assert got["i"] == 42 and type(got["i"]) is int
        assert got["f"] == 0.1 and type(got["f"]) is float
        assert got["d"] == 2.5 and type(got["d"]) is float
        assert got["whole_float"] == 3 and type(got["whole_float"]) is int
        assert got["nested"] == [1, {"x": 2.5, "y": [7]}]
        assert type(got["nested"][0]) is int and type(got["nested"][1]["x"]) is float
        assert got["set"] == {1, 2} and all(type(n) is int for n in got["set"])
        assert got["s"] == "text" and got["b"] is True


def test_a_large_document_below_the_limit_round_trips(service: DynamoDBService) -> None:
    doc = {"big": "x" * 300_000, "bytes": b"\x01" * 50_000}
    rev = service.save("notes", "big", doc)["rev"]
    assert service.get("notes", "big") == {
        "_id": "big",
        "_rev": rev,
        "big": doc["big"],
        "bytes": Binary(doc["bytes"]),
    }


def test_nesting_of_32_levels_is_accepted(service: DynamoDBService) -> None:
    nested: Any = "leaf"
    for _ in range(31):  # the leaf sits at level 32
        nested = {"a": nested}
    service.save("notes", "deep", {"deep": nested})
    got = service.get("notes", "deep")
    assert got is not None and got["deep"] == nested


def test_unicode_and_long_ids(service: DynamoDBService) -> None:
    ids = ["é", "中文 id with spaces/and#symbols", "x" * 2048, "é" * 1024]
    for doc_id in ids:
        service.save("notes", doc_id, {"id": doc_id})
    found = service.get_many("notes", ids)
    assert all(found[doc_id] is not None for doc_id in ids)
    assert service.delete("notes", "é" * 1024) is True


# -- revisions ---------------------------------------------------------------------------------


def test_generations_strictly_increase(service: DynamoDBService) -> None:
    revs = [service.save("notes", "n1", {"v": i})["rev"] for i in range(10)]
    generations = [generation(rev) for rev in revs]
    assert all(a < b for a, b in itertools.pairwise(generations))
    stored = service.get("notes", "n1")
    assert stored is not None and stored["_rev"] == revs[-1]


def test_generations_increase_even_when_the_clock_stands_still(
    make_service: ServiceFactory,
) -> None:
    svc = make_service(revisions=RevisionMaker(clock_us=lambda: FIXED_US))
    revs = [svc.save("notes", "n1", {"v": i})["rev"] for i in range(4)]
    assert [generation(rev) for rev in revs] == [FIXED_US + i for i in range(4)]


def test_a_writer_with_a_clock_behind_still_goes_above_the_stored_generation(
    make_service: ServiceFactory,
) -> None:
    ahead = make_service(revisions=RevisionMaker(clock_us=lambda: FIXED_US + HOUR_US))
    behind = make_service(revisions=RevisionMaker(clock_us=lambda: FIXED_US))
    stored = ahead.save("notes", "n1", {"by": "ahead"})["rev"]
    skewed = behind.save("notes", "n1", {"by": "behind"})["rev"]
    assert generation(skewed) == generation(stored) + 1
    doc = behind.get("notes", "n1")
    assert doc == {"_id": "n1", "_rev": skewed, "by": "behind"}
    # The fast path's condition failed once; then a conditional put on the stored rev won.
    calls = behind.stats()["db_calls"]
    assert calls["PutItem"] == 2
    assert calls.get("GetItem", 0) <= 2  # at most one re-read of the stored rev, plus our get
    again = behind.save("notes", "n1", {"by": "behind again"})["rev"]
    assert generation(again) == generation(stored) + 2


def test_an_older_write_landing_during_the_slow_path_costs_no_extra_round(
    make_service: ServiceFactory,
) -> None:
    """After losing once, a save retries with "stored generation below mine", not "stored rev
    equal to what I read": a concurrent write of a lower generation that lands in between must
    not make it lose again (with "equal", busy documents starved writers for 64 rounds).
    """
    writer_x = make_service(revisions=RevisionMaker(clock_us=lambda: FIXED_US + 20))
    clock_calls: list[int] = []

    def clock() -> int:
        clock_calls.append(1)
        if len(clock_calls) == 1:
            return FIXED_US  # the fast path: below the stored generation, so it fails
        if len(clock_calls) == 2:
            writer_x.save("notes", "n1", {"by": "x"})  # lands between our read and our retry
        return FIXED_US + 30

    writer_y = make_service(revisions=RevisionMaker(clock_us=lambda: FIXED_US + 10))
    writer_y.save("notes", "n1", {"by": "y"})
    ours = make_service(revisions=RevisionMaker(clock_us=clock))
    rev = ours.save("notes", "n1", {"by": "us"})["rev"]
    assert generation(rev) == FIXED_US + 30
    assert ours.stats()["db_calls"]["PutItem"] == 2
    assert ours.get("notes", "n1") == {"_id": "n1", "_rev": rev, "by": "us"}


def test_real_clock_writer_skewed_an_hour_behind(make_service: ServiceFactory) -> None:
    normal = make_service()
    skewed_maker = RevisionMaker(clock_us=lambda: wall_clock_us() - HOUR_US)
    skewed = make_service(revisions=skewed_maker)
    first = normal.save("notes", "n1", {"v": 1})["rev"]
    second = skewed.save("notes", "n1", {"v": 2})["rev"]
    assert generation(second) == generation(first) + 1


def test_saving_over_a_document_without_a_rev(
    service: DynamoDBService, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    """Items written by the original service (or any other tool) carry no ``_rev``."""
    service.ensure_table("legacy")
    client = dynamodb_client()
    table = f"{table_prefix}legacy"
    client.put_item(TableName=table, Item={"_id": {"S": "old"}, "n": {"N": "1"}})
    client.put_item(TableName=table, Item={"_id": {"S": "foreign"}, "_rev": {"S": "v7"}})
    legacy = service.get("legacy", "old")
    assert legacy == {"_id": "old", "n": Decimal(1)}
    rev = service.save("legacy", "old", {"n": 2})["rev"]
    assert service.get("legacy", "old") == {"_id": "old", "_rev": rev, "n": Decimal(2)}
    assert service.stats()["db_calls"]["PutItem"] <= 3
    foreign = service.save("legacy", "foreign", {"n": 3})["rev"]
    assert REV_RE.match(foreign)
    assert service.save("legacy", "foreign", {"n": 4})["rev"] > foreign


def test_if_rev_saves_only_over_that_rev(service: DynamoDBService) -> None:
    first = service.save("notes", "n1", {"v": 1})["rev"]
    second = service.save("notes", "n1", {"v": 2}, if_rev=first)["rev"]
    assert generation(second) > generation(first)
    with pytest.raises(ConflictError) as caught:
        service.save("notes", "n1", {"v": 3}, if_rev=first)
    error = caught.value
    assert error.db_name == "notes"
    assert error.doc_id == "n1"
    assert error.expected_rev == first
    assert error.operation == "PutItem"
    assert error.code == "ConditionalCheckFailedException"
    assert isinstance(error, GatewayError)
    assert "get()" in str(error)
    assert service.get("notes", "n1") == {"_id": "n1", "_rev": second, "v": Decimal(2)}


def test_if_rev_on_a_missing_document_conflicts(service: DynamoDBService) -> None:
    rev = service.save("notes", "n1", {"v": 1})["rev"]
    service.delete("notes", "n1")
    with pytest.raises(ConflictError):
        service.save("notes", "n1", {"v": 2}, if_rev=rev)
    with pytest.raises(ConflictError):
        service.save("notes", "never", {"v": 2}, if_rev="1-" + "a" * 32)
    assert service.get("notes", "n1") is None and service.get("notes", "never") is None


def test_if_rev_absent_is_create_only(service: DynamoDBService) -> None:
    created = service.save("notes", "n1", {"v": 1}, if_rev=ABSENT)["rev"]
    with pytest.raises(ConflictError) as caught:
        service.save("notes", "n1", {"v": 2}, if_rev=ABSENT)
    assert caught.value.expected_rev is None
    assert "already exists" in str(caught.value)
    assert service.get("notes", "n1") == {"_id": "n1", "_rev": created, "v": Decimal(1)}


def test_delete_with_if_rev(service: DynamoDBService) -> None:
    first = service.save("notes", "n1", {"v": 1})["rev"]
    second = service.save("notes", "n1", {"v": 2})["rev"]
    with pytest.raises(ConflictError) as caught:
        service.delete("notes", "n1", if_rev=first)
    assert caught.value.operation == "DeleteItem"
    assert caught.value.db_name == "notes" and caught.value.expected_rev == first
    assert service.get("notes", "n1") is not None
    with pytest.raises(ConflictError):
        service.delete("notes", "n1", if_rev=ABSENT)
    assert service.delete("notes", "n1", if_rev=second) is True
    assert service.get("notes", "n1") is None
    with pytest.raises(ConflictError):
        service.delete("notes", "n1", if_rev=second)
    assert service.delete("notes", "n1", if_rev=ABSENT) is False


def test_delete_then_recreate_has_a_higher_generation(service: DynamoDBService) -> None:
    deleted = service.save("notes", "n1", {"v": 1})["rev"]
    service.delete("notes", "n1")
    recreated = service.save("notes", "n1", {"v": 2})["rev"]
    assert generation(recreated) > generation(deleted)
    with_absent = service.save("notes", "n2", {}, if_rev=ABSENT)["rev"]
    service.delete("notes", "n2")
    assert generation(service.save("notes", "n2", {}, if_rev=ABSENT)["rev"]) > generation(
        with_absent
    )


def check_concurrent_writers(
    services: list[DynamoDBService], threads: int = THREADS, saves: int = SAVES_PER_THREAD
) -> None:
    revs: list[str] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        svc = services[i % len(services)]
        for n in range(saves):
            rev = svc.save("race", "same", {"writer": i, "n": n})["rev"]
            with lock:
                revs.append(rev)

    run_threads(threads, write)
    assert len(revs) == threads * saves
    assert len(set(revs)) == len(revs)
    generations = [generation(rev) for rev in revs]
    assert len(set(generations)) == len(generations)
    stored = services[0].get("race", "same")
    assert stored is not None
    assert generation(stored["_rev"]) == max(generations)
    assert stored["_rev"] in revs


def test_concurrent_writers_of_one_document(make_service: ServiceFactory) -> None:
    check_concurrent_writers([make_service()])


def test_concurrent_writers_in_two_processes(make_service: ServiceFactory) -> None:
    check_concurrent_writers([make_service(), make_service()])


def test_concurrent_writers_with_a_standing_clock(make_service: ServiceFactory) -> None:
    """Every save collides on the same clock value: only the slow path can order them.

    Fewer writers than above: with the clock standing still every writer is on the slow path,
    where each round of the race has one winner, so 8 writers would need many rounds.
    """
    maker = RevisionMaker(clock_us=lambda: FIXED_US)
    services = [make_service(revisions=maker), make_service(revisions=maker)]
    check_concurrent_writers(services, threads=4, saves=10)


def test_parse_generation() -> None:
    assert parse_generation(f"{FIXED_US}-{'a' * 32}") == FIXED_US
    for bad in (None, 5, "", "abc", "12-short", f"x1-{'a' * 32}", f"{FIXED_US}{'a' * 32}"):
        assert parse_generation(bad) is None
    # Digits to str.isdigit, not to int: not a generation (it raised ValueError).
    for foreign in (f"²-{'a' * 32}", f"①{FIXED_US}-{'a' * 32}", f"{'1' * 4301}-{'a' * 32}"):
        assert parse_generation(foreign) is None  # the last: int() refuses 4,301 digits


@pytest.mark.parametrize(
    "stored",
    [f"1{'0' * 16}-{'a' * 32}", f"0{FIXED_US + 1}-{'a' * 32}", f"²-{'a' * 32}"],
    ids=["17 digits", "leading zero", "not ASCII"],
)
def test_a_save_over_a_revision_of_another_width_still_goes_up(
    stored: str, service: DynamoDBService, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    """DynamoDB compares revisions as strings, the cache by generation: a stored generation of
    another width (17 digits sort below 16 when they start with "10") must not pass the
    one-request condition, or the save would store a lower generation than it replaced."""
    service.ensure_table("legacy")
    dynamodb_client().put_item(
        TableName=f"{table_prefix}legacy", Item={"_id": {"S": "d"}, "_rev": {"S": stored}}
    )
    rev = service.save("legacy", "d", {"n": 1})["rev"]
    assert service.get("legacy", "d") == {"_id": "d", "_rev": rev, "n": Decimal(1)}
    assert generation(rev) > (parse_generation(stored) or 0)
    again = service.save("legacy", "d", {"n": 2})["rev"]
    assert generation(again) > generation(rev)


# -- bad input ---------------------------------------------------------------------------------


def nested_maps(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


def nested_lists(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


BAD_DOCUMENTS: list[tuple[str, Any]] = [
    ("list", [("a", 1)]),
    ("string", "not a doc"),
    ("none", None),
    ("int_key", {1: "a"}),
    ("tuple_key", {("a",): 1}),
    ("empty_key", {"": 1}),
    ("nested_int_key", {"m": {2: "b"}}),
    ("nan", {"x": float("nan")}),
    ("decimal_nan", {"x": Decimal("NaN")}),
    ("inf", {"x": float("inf")}),
    ("minus_inf", {"x": float("-inf")}),
    ("decimal_inf", {"x": Decimal("-Infinity")}),
    ("39_digits", {"x": int("1" * 39)}),
    ("39_digit_decimal", {"x": Decimal("1." + "1" * 38)}),
    ("1e200", {"x": 1e200}),
    ("1e-200", {"x": Decimal("1e-200")}),
    ("nested_nan", {"a": [1, {"b": float("nan")}]}),
    ("empty_set", {"s": set()}),
    ("mixed_set", {"s": {1, "a"}}),
    ("bool_set", {"s": {True}}),
    ("too_deep", {"deep": nested_maps(32)}),
    ("too_deep_lists", {"deep": nested_lists(32)}),
    ("too_big", {"big": "x" * (400 * 1024)}),
    ("too_big_in_total", {f"k{i}": "x" * 1024 for i in range(401)}),
    ("datetime", {"when": datetime.datetime(2024, 1, 1)}),
    ("date", {"when": datetime.date(2024, 1, 1)}),
    ("object", {"o": object()}),
    ("uuid", {"u": uuid.uuid4()}),
    ("complex", {"c": 1j}),
    ("lone_surrogate", {"s": "\ud800"}),
]


@pytest.mark.parametrize(("name", "doc"), BAD_DOCUMENTS, ids=[n for n, _ in BAD_DOCUMENTS])
def test_bad_documents_are_refused_before_anything_is_sent(
    proxied: DynamoDBService, fault_proxy: FaultProxy, name: str, doc: Any
) -> None:
    with pytest.raises(ValidationError):
        proxied.save("notes", "n1", doc)
    with pytest.raises(ValidationError):
        proxied.save_many("notes", {"ok": {"fine": 1}, "n1": doc})
    assert fault_proxy.counts() == {}


BAD_IDS: list[tuple[str, Any]] = [
    ("empty", ""),
    ("int", 123),
    ("none", None),
    ("bytes", b"id"),
    ("too_long", "x" * 2049),
    ("too_many_utf8_bytes", "é" * 1025),
    ("lone_surrogate", "\udc80"),
]


@pytest.mark.parametrize(("name", "doc_id"), BAD_IDS, ids=[n for n, _ in BAD_IDS])
def test_bad_ids_are_refused_before_anything_is_sent(
    proxied: DynamoDBService, fault_proxy: FaultProxy, name: str, doc_id: Any
) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: proxied.save("notes", doc_id, {}),
        lambda: proxied.get("notes", doc_id),
        lambda: proxied.delete("notes", doc_id),
        lambda: proxied.get_many("notes", ["fine", doc_id]),
        lambda: proxied.delete_many("notes", ["fine", doc_id]),
    ]
    if isinstance(doc_id, str):
        calls.append(lambda: proxied.save_many("notes", {"fine": {}, doc_id: {}}))
    for call in calls:
        with pytest.raises(ValidationError):
            call()
    assert fault_proxy.counts() == {}


BAD_COLLECTIONS: list[tuple[str, Any]] = [
    ("too_short", "ab"),
    ("too_long", "a" * 256),
    ("space", "bad name"),
    ("slash", "bad/name"),
    ("unicode", "ñame"),
    ("empty", ""),
    ("not_a_str", 42),
    ("none", None),
]


@pytest.mark.parametrize(("name", "db_name"), BAD_COLLECTIONS, ids=[n for n, _ in BAD_COLLECTIONS])
def test_bad_collection_names_are_refused_before_anything_is_sent(
    make_service: ServiceFactory, fault_proxy: FaultProxy, name: str, db_name: Any
) -> None:
    svc = make_service(endpoint_url=fault_proxy.endpoint_url, table_prefix="")
    calls: list[Callable[[], Any]] = [
        lambda: svc.save(db_name, "a", {}),
        lambda: svc.get(db_name, "a"),
        lambda: svc.delete(db_name, "a"),
        lambda: svc.list_all(db_name),
        lambda: svc.iter_pages(db_name),
        lambda: svc.get_many(db_name, ["a"]),
        lambda: svc.save_many(db_name, {"a": {}}),
        lambda: svc.delete_many(db_name, ["a"]),
        lambda: svc.query(db_name, "by_email", "x"),
        lambda: svc.ensure_table(db_name),
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            call()  # iter_pages too: at the call, not at the first page
    assert fault_proxy.counts() == {}


def test_a_prefix_that_makes_the_table_name_too_long(
    make_service: ServiceFactory, fault_proxy: FaultProxy
) -> None:
    svc = make_service(endpoint_url=fault_proxy.endpoint_url, table_prefix="p" * 250)
    svc.table_name("abcde")  # 255 characters: fine
    with pytest.raises(ValidationError, match="prefix"):
        svc.save("abcdef", "a", {})
    with pytest.raises(ValidationError):
        make_service(table_prefix="bad prefix/").get("notes", "a")
    assert fault_proxy.counts() == {}


@pytest.mark.parametrize("page_size", [0, -1, 1.5, True, "10", None])
def test_bad_page_sizes_are_refused_at_once(
    proxied: DynamoDBService, fault_proxy: FaultProxy, page_size: Any
) -> None:
    with pytest.raises(ValidationError, match="page_size"):
        proxied.iter_pages("notes", page_size=page_size)
    assert fault_proxy.counts() == {}


@pytest.mark.parametrize("if_rev", [123, "", b"1-abc", 1.5, ["rev"], True])
def test_bad_if_rev_is_refused_before_anything_is_sent(
    proxied: DynamoDBService, fault_proxy: FaultProxy, if_rev: Any
) -> None:
    with pytest.raises(ValidationError, match="if_rev"):
        proxied.save("notes", "a", {}, if_rev=if_rev)
    with pytest.raises(ValidationError, match="if_rev"):
        proxied.delete("notes", "a", if_rev=if_rev)
    assert fault_proxy.counts() == {}


def test_bad_collections_of_ids_and_documents(
    proxied: DynamoDBService, fault_proxy: FaultProxy
) -> None:
    bad: Any
    for bad in ("abc", b"abc", 5, None):
        with pytest.raises(ValidationError):
            proxied.get_many("notes", bad)
        with pytest.raises(ValidationError):
            proxied.delete_many("notes", bad)
    bad_docs: Any
    for bad_docs in ([{"a": 1}], "abc", None, {"a": 1}):
        with pytest.raises(ValidationError):
            proxied.save_many("notes", bad_docs)
    assert fault_proxy.counts() == {}


def test_an_index_key_dynamodb_refuses_is_a_validation_error(service: DynamoDBService) -> None:
    # An empty string cannot be a GSI key: DynamoDB itself says so, and nothing is stored.
    with pytest.raises(ValidationError, match="by_email") as caught:
        service.save("users", "u1", {"email": ""})
    assert caught.value.code == "ValidationException"
    assert service.get("users", "u1") is None


# -- errors at the wire ------------------------------------------------------------------------


def test_throttling_that_outlasts_the_policy_is_a_throttled_error(
    proxied: DynamoDBService, fault_proxy: FaultProxy
) -> None:
    proxied.ensure_table("notes")
    fault_proxy.configure(throttle_rate=1.0)
    fault_proxy.reset_counts()
    with pytest.raises(ThrottledError) as caught:
        proxied.get("notes", "a")
    error = caught.value
    assert error.attempts == 3
    assert 0 <= error.elapsed < 2
    assert error.code == "ProvisionedThroughputExceededException"
    assert error.operation == "GetItem"
    assert "on-demand" in str(error)
    # Exactly our three attempts reached the wire: botocore did not retry underneath.
    assert fault_proxy.counts() == {"GetItem": 3}
    with pytest.raises(ThrottledError) as caught:
        proxied.save("notes", "a", {})
    assert caught.value.operation == "PutItem"
    fault_proxy.clear_faults()
    assert proxied.get("notes", "a") is None


def test_batches_left_unprocessed_for_ever_are_a_throttled_error(
    proxied: DynamoDBService, fault_proxy: FaultProxy
) -> None:
    proxied.ensure_table("notes")
    fault_proxy.configure(partial_rate=1.0, operations={"BatchWriteItem"})
    with pytest.raises(ThrottledError) as caught:
        proxied.delete_many("notes", ["a", "b"])
    assert caught.value.attempts == 3
    assert caught.value.code == "UnprocessedItems"


def test_throttles_and_partial_batches_lose_nothing(
    make_service: ServiceFactory, fault_proxy: FaultProxy, service: DynamoDBService
) -> None:
    policy = RetryPolicy(max_attempts=30, base_s=0.001, cap_s=0.005, deadline_s=30)
    svc = make_service(endpoint_url=fault_proxy.endpoint_url, retry_policy=policy)
    svc.ensure_table("notes")
    fault_proxy.configure(
        throttle_rate=0.3, partial_rate=0.3, operations={"BatchGetItem", "BatchWriteItem"}
    )
    docs = {f"d{i:03}": {"i": i} for i in range(120)}
    revs = svc.save_many("notes", docs)
    assert set(revs) == set(docs)
    found = svc.get_many("notes", [*docs, "missing"])
    assert found["missing"] is None
    assert {doc_id: doc and doc["_rev"] for doc_id, doc in found.items() if doc_id in docs} == revs
    svc.delete_many("notes", list(docs)[:100])
    injected = fault_proxy.injected()
    assert injected["ProvisionedThroughputExceededException"]
    assert injected["partial"]
    assert sum(fault_proxy.withheld_counts().values()) > 0
    fault_proxy.clear_faults()
    # Read back without the proxy: exactly the 20 documents not deleted are left.
    left = service.list_all("notes")
    assert sorted(doc["_id"] for doc in left) == list(docs)[100:]
    assert all(doc["_rev"] == revs[doc["_id"]] for doc in left)


# -- answers lost on the way back (applied, then 500 or connection dropped) ---------------------

LOSE_MODES = ["error", "drop"]


def lose_next_answer(fault_proxy: FaultProxy, operation: str, mode: Any) -> None:
    """The next ``operation`` request is applied by the emulator and its answer lost."""
    fault_proxy.configure(lose_next=1, lose_mode=mode, operations={operation})
    fault_proxy.reset_counts()


def assert_lost_once(fault_proxy: FaultProxy, operation: str) -> None:
    assert fault_proxy.injected() == {"lost": {operation: 1}}
    assert fault_proxy.config.lose_next == 0


@pytest.mark.parametrize("mode", LOSE_MODES)
def test_a_create_only_save_whose_answer_was_lost_succeeds(
    proxied: DynamoDBService, fault_proxy: FaultProxy, mode: Any
) -> None:
    proxied.ensure_table("notes")
    lose_next_answer(fault_proxy, "PutItem", mode)
    rev = proxied.save("notes", "n1", {"v": 1}, if_rev=ABSENT)["rev"]  # no ConflictError
    assert_lost_once(fault_proxy, "PutItem")
    assert fault_proxy.counts() == {"PutItem": 2}  # the lost attempt and its retry, no more
    assert proxied.get("notes", "n1") == {"_id": "n1", "_rev": rev, "v": Decimal(1)}
    with pytest.raises(ConflictError):  # a real conflict is still one
        proxied.save("notes", "n1", {"v": 2}, if_rev=ABSENT)


@pytest.mark.parametrize("mode", LOSE_MODES)
def test_a_conditional_save_whose_answer_was_lost_succeeds(
    proxied: DynamoDBService, fault_proxy: FaultProxy, mode: Any
) -> None:
    first = proxied.save("notes", "n1", {"v": 1})["rev"]
    lose_next_answer(fault_proxy, "PutItem", mode)
    second = proxied.save("notes", "n1", {"v": 2}, if_rev=first)["rev"]
    assert_lost_once(fault_proxy, "PutItem")
    assert fault_proxy.counts() == {"PutItem": 2}
    assert generation(second) > generation(first)
    assert proxied.get("notes", "n1") == {"_id": "n1", "_rev": second, "v": Decimal(2)}
    with pytest.raises(ConflictError):
        proxied.save("notes", "n1", {"v": 3}, if_rev=first)


@pytest.mark.parametrize("mode", LOSE_MODES)
def test_an_unconditional_save_whose_answer_was_lost_is_written_once(
    proxied: DynamoDBService, fault_proxy: FaultProxy, mode: Any
) -> None:
    first = proxied.save("notes", "n1", {"v": 1})["rev"]
    lose_next_answer(fault_proxy, "PutItem", mode)
    second = proxied.save("notes", "n1", {"v": 2})["rev"]
    assert_lost_once(fault_proxy, "PutItem")
    # Its retry met the lost attempt's revision and recognised it: no third PutItem (and no
    # read) to write the same document again under yet another revision.
    assert fault_proxy.counts() == {"PutItem": 2}
    assert generation(second) > generation(first)
    assert proxied.get("notes", "n1") == {"_id": "n1", "_rev": second, "v": Decimal(2)}


@pytest.mark.parametrize("mode", LOSE_MODES)
def test_a_conditional_delete_whose_answer_was_lost_succeeds(
    proxied: DynamoDBService, fault_proxy: FaultProxy, mode: Any
) -> None:
    rev = proxied.save("notes", "n1", {"v": 1})["rev"]
    lose_next_answer(fault_proxy, "DeleteItem", mode)
    assert proxied.delete("notes", "n1", if_rev=rev) is True  # no ConflictError
    assert_lost_once(fault_proxy, "DeleteItem")
    assert proxied.get("notes", "n1") is None

    rev = proxied.save("notes", "n2", {"v": 1})["rev"]
    lose_next_answer(fault_proxy, "DeleteItem", mode)
    assert proxied.delete_returning_rev("notes", "n2", if_rev=rev) == rev
    assert_lost_once(fault_proxy, "DeleteItem")
    # Without a lost answer, a missing document still conflicts.
    with pytest.raises(ConflictError):
        proxied.delete("notes", "n2", if_rev=rev)


def test_a_conditional_delete_whose_retry_finds_another_revision_conflicts(
    proxied: DynamoDBService, fault_proxy: FaultProxy
) -> None:
    """A lost answer does not hide a real conflict: the document is there, with another rev."""
    first = proxied.save("notes", "n1", {"v": 1})["rev"]
    second = proxied.save("notes", "n1", {"v": 2})["rev"]
    lose_next_answer(fault_proxy, "DeleteItem", "error")
    with pytest.raises(ConflictError):
        proxied.delete("notes", "n1", if_rev=first)
    assert proxied.get("notes", "n1") == {"_id": "n1", "_rev": second, "v": Decimal(2)}


@pytest.mark.parametrize("mode", LOSE_MODES)
def test_an_unconditional_delete_whose_answer_was_lost_says_it_deleted(
    proxied: DynamoDBService, fault_proxy: FaultProxy, mode: Any
) -> None:
    proxied.save("notes", "n1", {"v": 1})
    lose_next_answer(fault_proxy, "DeleteItem", mode)
    assert proxied.delete("notes", "n1") is True
    assert_lost_once(fault_proxy, "DeleteItem")
    assert proxied.get("notes", "n1") is None

    rev = proxied.save("notes", "n2", {"v": 1})["rev"]
    lose_next_answer(fault_proxy, "DeleteItem", mode)
    before_us = wall_clock_us()
    removed = proxied.delete_returning_rev("notes", "n2")
    assert_lost_once(fault_proxy, "DeleteItem")
    # The removed revision is unknown: a stand-in "<now>-000...0", not below the removed one.
    assert removed is not None and removed.endswith("-" + "0" * 32)
    assert generation(removed) >= max(before_us, generation(rev))
    # Without a lost answer, deleting nothing is still False.
    assert proxied.delete("notes", "n2") is False


# -- save_many racing a save in the same process --------------------------------------------


def test_a_save_landing_inside_save_many_waits_and_the_revision_never_steps_back(
    proxied: DynamoDBService, fault_proxy: FaultProxy
) -> None:
    """save_many reads the stored revisions, then writes with BatchWriteItem (no condition).
    A save of the same document from another thread must not land in between: it waits for
    the save_many, then goes above it. The BatchWriteItem is held at the proxy; the save is
    let go once it waits for the document's lock (or, were there none, once it is done)."""
    initial = proxied.save("users", "k", {"v": "initial"})["rev"]
    proxied.save("users", "other", {"v": "initial"})
    progressed = threading.Event()
    proxied.write_locks.on_wait = lambda key: progressed.set()
    results: dict[str, Any] = {}

    def run(name: str, fn: Callable[[], Any]) -> threading.Thread:
        def target() -> None:
            try:
                results[name] = fn()
            except BaseException as exc:  # reported by the assertions below
                results[name] = exc
            finally:
                if name == "save":
                    progressed.set()

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    with fault_proxy.hold({"BatchWriteItem"}) as gate:
        many = run("save_many", lambda: proxied.save_many("users", {"k": {"v": "many"}}))
        assert gate.wait_arrived(1)  # revisions read, the write waits at the proxy
        # A save of another document does not wait for the save_many.
        assert generation(proxied.save("users", "other", {"v": "free"})["rev"])
        assert proxied.write_locks.waits == 0
        single = run("save", lambda: proxied.save("users", "k", {"v": "single"}))
        assert progressed.wait(10)
        gate.release()
        many.join()
        single.join()
    many_rev = results["save_many"]["k"]
    single_rev = results["save"]["rev"]
    assert generation(initial) < generation(many_rev) < generation(single_rev)
    # The save went last, and it is what is stored.
    assert proxied.get("users", "k") == {"_id": "k", "_rev": single_rev, "v": "single"}
    assert proxied.write_locks.waits == 1
    assert len(proxied.write_locks) == 0


def test_save_many_and_saves_of_overlapping_documents_in_many_threads(
    make_service: ServiceFactory,
) -> None:
    """Overlapping save_many calls (locks taken in sorted order: no deadlock) and saves: every
    document ends with the highest generation acknowledged for it."""
    svc = make_service()
    ids = ["a", "b", "c", "d"]
    acknowledged: dict[str, list[str]] = {doc_id: [] for doc_id in ids}
    lock = threading.Lock()

    def write(i: int) -> None:
        for n in range(6):
            if i % 2:
                chosen = [ids[(i + n + j) % len(ids)] for j in range(3)][:: -1 if n % 2 else 1]
                revs = svc.save_many("mix", {doc_id: {"w": i, "n": n} for doc_id in chosen})
            else:
                doc_id = ids[(i + n) % len(ids)]
                revs = {doc_id: svc.save("mix", doc_id, {"w": i, "n": n})["rev"]}
            with lock:
                for doc_id, rev in revs.items():
                    acknowledged[doc_id].append(rev)

    run_threads(6, write)
    stored = svc.get_many("mix", ids)
    for doc_id in ids:
        doc = stored[doc_id]
        assert doc is not None
        assert generation(doc["_rev"]) == max(generation(r) for r in acknowledged[doc_id])
    assert len(svc.write_locks) == 0


@pytest.mark.parametrize("mode", ["refuse", "reset", "unavailable"])
def test_an_unreachable_dynamodb_is_service_unavailable(
    proxied: DynamoDBService, fault_proxy: FaultProxy, mode: Any
) -> None:
    proxied.save("notes", "a", {"v": 1})
    fault_proxy.stop_forwarding(mode)
    with pytest.raises(ServiceUnavailableError) as caught:
        proxied.get("notes", "a")
    assert caught.value.attempts == 3
    assert caught.value.operation == "GetItem"
    if mode == "unavailable":
        assert "server-side error" in str(caught.value)
    else:
        assert "DYNAMODB_ENDPOINT_URL" in str(caught.value)
    fault_proxy.resume_forwarding()
    doc = proxied.get("notes", "a")
    assert doc is not None and doc["v"] == 1


def test_no_credentials_is_a_credentials_error_that_says_how_to_fix_it(
    make_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    svc = make_service(retry_policy=fast_retry())
    with pytest.raises(CredentialsError) as caught:
        svc.get("notes", "a")
    message = str(caught.value)
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "aws configure" in message
    assert isinstance(caught.value.__cause__, NoCredentialsError)
    with pytest.raises(CredentialsError):
        svc.save("notes", "a", {})


def client_error(code: str, message: str, operation: str = "PutItem") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


def test_translate_access_denied_names_the_permission() -> None:
    exc = client_error(
        "AccessDeniedException",
        "User: arn:aws:iam::1:user/x is not authorized to perform: dynamodb:PutItem",
    )
    error = translate(exc, "PutItem", "prod-users")
    assert isinstance(error, AccessDeniedError)
    assert error.code == "AccessDeniedException" and error.operation == "PutItem"
    message = str(error)
    assert "dynamodb:PutItem" in message
    assert "prod-users" in message
    assert "arn:aws:dynamodb:*:*:table/prod-users" in message
    assert "not authorized" in message  # AWS's own words are kept


def test_translate_unrecognized_client_is_a_credentials_error() -> None:
    exc = client_error(
        "UnrecognizedClientException", "The security token included in the request is invalid."
    )
    error = translate(exc, "GetItem", "t")
    assert isinstance(error, CredentialsError)
    assert error.code == "UnrecognizedClientException"
    assert "security token" in str(error) and "AWS_ACCESS_KEY_ID" in str(error)


def test_translate_validation_exception_keeps_dynamodb_message() -> None:
    exc = client_error("ValidationException", "Item size has exceeded the maximum allowed size")
    error = translate(exc, "PutItem", "t")
    assert isinstance(error, ValidationError)
    assert error.code == "ValidationException"
    assert "Item size has exceeded the maximum allowed size" in str(error)


def test_translate_the_other_errors() -> None:
    throttled = translate(client_error("ThrottlingException", "slow down"), "Query", "t")
    assert isinstance(throttled, ThrottledError) and throttled.attempts == 1
    missing = translate(client_error("ResourceNotFoundException", "no table"), "GetItem", "t")
    assert type(missing) is GatewayError and missing.code == "ResourceNotFoundException"
    unknown = translate(client_error("SomethingNew", "huh"), "GetItem")
    assert type(unknown) is GatewayError and "SomethingNew" in str(unknown)
    unreachable = translate(EndpointConnectionError(endpoint_url="http://x"), "GetItem", "t")
    assert isinstance(unreachable, ServiceUnavailableError)
    assert "DYNAMODB_ENDPOINT_URL" in str(unreachable)
    # DynamoDBService itself reads no environment variable: the message names its argument too.
    assert "endpoint_url= passed to DynamoDBService" in str(unreachable)
    assert isinstance(translate(NoRegionError(), "GetItem"), ConfigError)
    assert isinstance(
        translate(ParamValidationError(report="bad"), "GetItem", "t"), ValidationError
    )
    already = ValidationError("mine")
    assert translate(already, "GetItem") is already


@pytest.mark.parametrize(
    ("segment", "total"),
    [(0.5, 2), (0, 1.5), (True, 2), (0, True), (-1, 2), (2, 2), (0, 0), (0, 10**9), ("0", 2)],
)
def test_a_bad_scan_segment_is_refused_before_anything_is_sent(
    service: DynamoDBService, segment: Any, total: Any
) -> None:
    service.save("users", "u1", {"v": 1})
    calls = service.stats()["db_calls"]
    with pytest.raises(ValidationError, match="total_segments must be 1 to"):
        list(service.iter_segment_pages("users", segment, total))
    assert service.stats()["db_calls"] == calls


def test_consistent_read_must_be_a_bool(moto_server: EmbeddedDynamoDB) -> None:
    with pytest.raises(ConfigError, match="consistent_read must be True or False"):
        DynamoDBService(endpoint_url=moto_server.endpoint_url, consistent_read=1)  # type: ignore[arg-type]
