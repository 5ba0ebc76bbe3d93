"""CACHE_BACKEND=dax: the data plane through the DAX resource, the control plane around it.

Why a stand-in: no DAX cluster can run here. DAX exists only inside an AWS VPC, and
amazon-dax-client speaks DAX's own binary protocol, which no emulator implements. So these
tests replace ``amazondax.AmazonDaxClient.resource`` -- the one mock this suite allows -- with a
stand-in that returns a boto3 DynamoDB resource pointed at the fault proxy in front of the
emulator. DAX's resource *is* boto3's Table interface with another client underneath, so
`build_dax_service`, `DaxDataClient` and `DynamoDBService` run exactly as they would against a
cluster.

How "through DAX, not around it" is checked: the control plane gets the emulator's own endpoint
(``DYNAMODB_ENDPOINT_URL``) while the stand-in gets the proxy's, so the proxy's per-operation
request counts show every call that went through "DAX" and nothing else. The stand-in also does
what the real client does that matters here: it drops ``ReturnValuesOnConditionCheckFailure``
(amazondax's request encoder has no field for it), and it can be told to fail the way amazondax
fails (its own exception classes, or a raw socket error).

The unreachable-endpoint test uses the real amazondax client and no stand-in.
"""

from __future__ import annotations

import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from amazondax import AmazonDaxClient
from amazondax.DaxError import DaxClientError
from botocore.exceptions import ClientError

from gateway import (
    ABSENT,
    AccessDeniedError,
    ConfigError,
    ConflictError,
    CredentialsError,
    DynamoDBService,
    ServiceUnavailableError,
    Settings,
    get_database_service,
)
from gateway.caches.memory import MemoryCache
from gateway.caches.partitioned import PartitionedMemoryCache
from gateway.dax import DaxDataClient, dax_client_endpoint
from gateway.gateway import CachingGateway
from gateway.revisions import parse_generation
from tests.servers import TEST_REGION, FaultProxy

DAX_URL = "dax://dax-standin.invalid"
#: What the stand-in must be handed: the URL with the scheme's default port made explicit.
DAX_CLIENT_URL = "dax://dax-standin.invalid:8111"
COLLECTION = "docs"
CONTROL_OPERATIONS = frozenset({"DescribeTable", "CreateTable"})


@dataclass
class DaxStandIn:
    """Replaces ``AmazonDaxClient.resource``: a boto3 resource on the fault proxy."""

    proxy_url: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    #: (operation, api params) of every data-plane call, as the resource sent them.
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: When set, every call raises what it returns, before anything is sent (DAX failing).
    fail_with: Callable[[], BaseException] | None = None
    resources: list[Any] = field(default_factory=list)

    def resource(self, **kwargs: Any) -> Any:
        """The stand-in for ``AmazonDaxClient.resource(endpoint_url=..., region_name=...)``."""
        self.calls.append(kwargs)
        resource = boto3.session.Session().resource(
            "dynamodb",
            region_name=kwargs["region_name"],
            endpoint_url=self.proxy_url,
            config=kwargs.get("config"),
        )
        events = resource.meta.client.meta.events
        events.register("before-parameter-build.dynamodb", self._record)
        events.register("before-call.dynamodb", self._maybe_fail)
        self.resources.append(resource)
        return resource

    def ops(self, operation: str) -> list[dict[str, Any]]:
        """The params of every ``operation`` sent so far."""
        return [params for name, params in self.sent if name == operation]

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        # amazondax encodes no ReturnValuesOnConditionCheckFailure: DAX never returns the item.
        params.pop("ReturnValuesOnConditionCheckFailure", None)
        self.sent.append((model.name, dict(params)))

    def _maybe_fail(self, **_: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with()


@pytest.fixture
def dax(monkeypatch: pytest.MonkeyPatch, fault_proxy: FaultProxy) -> Iterator[DaxStandIn]:
    """``AmazonDaxClient.resource`` replaced by a `DaxStandIn` on the fault proxy."""
    standin = DaxStandIn(fault_proxy.endpoint_url)
    monkeypatch.setattr(AmazonDaxClient, "resource", staticmethod(standin.resource))
    yield standin
    for resource in standin.resources:
        resource.meta.client.close()


@pytest.fixture
def settings(moto_server: Any, table_prefix: str) -> Callable[..., Settings]:
    """Settings for the dax backend: control plane straight to the emulator, fast retries."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "CACHE_BACKEND": "dax",
            "DAX_ENDPOINT_URL": DAX_URL,
            "DYNAMODB_ENDPOINT_URL": moto_server.endpoint_url,
            "DYNAMODB_TABLE_PREFIX": table_prefix,
            "COLLECTIONS": {COLLECTION: {"indexes": {"by_kind": {"attribute": "kind"}}}},
            "RETRY": {"max_attempts": 3, "base_seconds": 0.001, "cap_seconds": 0.01},
            # Single calls stay single (GetItem, PutItem, ...) so counts are exact; the test
            # with coalescing on covers the default.
            "COALESCING": {"reads": False, "writes": False},
        }
        values.update(overrides)
        return Settings(**values)

    return make


def _record_control_plane(service: DynamoDBService) -> list[str]:
    """Names of the operations the boto3 control-plane client sends from now on."""
    seen: list[str] = []
    service.control_client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: seen.append(model.name)
    )
    return seen


def _requests(proxy: FaultProxy, action: Callable[[], object]) -> dict[str, int]:
    """The requests the proxy received (per operation) while ``action`` ran."""
    before = Counter(proxy.counts())
    action()
    after = Counter(proxy.counts())
    after.subtract(before)
    return {operation: n for operation, n in after.items() if n}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------
# Through DAX, and only through DAX
# ------------------------------------------------------------------------------------------


def test_data_plane_goes_through_dax_and_control_plane_goes_to_dynamodb(
    dax: DaxStandIn, fault_proxy: FaultProxy, settings: Callable[..., Settings]
) -> None:
    db = get_database_service(settings())
    assert isinstance(db, DynamoDBService)
    (call,) = dax.calls
    assert call["endpoint_url"] == DAX_CLIENT_URL
    assert call["region_name"] == TEST_REGION
    # The client's own retries are off (the gateway's policy is the only loop) and its connect
    # timeout is the gateway's, not botocore's 60 s.
    assert call["config"].retries == {"max_attempts": 0}
    assert call["config"].connect_timeout == settings().DYNAMODB_CONNECT_TIMEOUT_S
    assert isinstance(db._resource.meta.client, DaxDataClient)
    control = _record_control_plane(db)
    proxy = fault_proxy

    with db:
        assert _requests(proxy, lambda: db.save(COLLECTION, "a", {"kind": "x", "n": 1})) == {
            "PutItem": 1
        }
        assert "CreateTable" in control  # the table was created on first use, around DAX
        assert _requests(proxy, lambda: db.get(COLLECTION, "a")) == {"GetItem": 1}
        assert _requests(proxy, lambda: db.get(COLLECTION, "nope")) == {"GetItem": 1}
        assert _requests(
            proxy,
            lambda: db.save_many(COLLECTION, {"b": {"kind": "x"}, "c": {"kind": "y"}}),
        ) == {"BatchGetItem": 1, "BatchWriteItem": 1}
        found: dict[str, Any] = {}
        assert _requests(
            proxy, lambda: found.update(db.get_many(COLLECTION, ["a", "b", "nope", "a"]))
        ) == {"BatchGetItem": 1}
        assert found["a"]["n"] == 1 and found["b"]["kind"] == "x" and found["nope"] is None
        queried: list[Any] = []
        assert _requests(proxy, lambda: queried.extend(db.query(COLLECTION, "by_kind", "x"))) == {
            "Query": 1
        }
        assert sorted(doc["_id"] for doc in queried) == ["a", "b"]
        listed: list[Any] = []
        assert _requests(proxy, lambda: listed.extend(db.list_all(COLLECTION))) == {"Scan": 1}
        assert sorted(doc["_id"] for doc in listed) == ["a", "b", "c"]
        pages: list[Any] = []
        paged = _requests(proxy, lambda: pages.extend(db.iter_pages(COLLECTION, page_size=2)))
        assert set(paged) == {"Scan"} and [len(page) for page in pages] == [2, 1]
        assert _requests(proxy, lambda: db.delete(COLLECTION, "a")) == {"DeleteItem": 1}
        assert _requests(proxy, lambda: db.delete_many(COLLECTION, ["b", "c"])) == {
            "BatchWriteItem": 1
        }
        assert db.list_all(COLLECTION) == []

    assert CONTROL_OPERATIONS.isdisjoint(proxy.counts())
    assert set(control) <= CONTROL_OPERATIONS
    # Every data-plane call was made by the stand-in's resource: nothing went around DAX.
    assert sum(proxy.counts().values()) == len(dax.sent)


def test_with_request_coalescing_every_data_call_still_goes_through_dax(
    dax: DaxStandIn, fault_proxy: FaultProxy, settings: Callable[..., Settings]
) -> None:
    with get_database_service(settings(COALESCING={"reads": True, "writes": True})) as db:
        assert isinstance(db, DynamoDBService)
        control = _record_control_plane(db)
        rev = db.save(COLLECTION, "a", {"kind": "x"})["rev"]
        db.save_many(COLLECTION, {"b": {"kind": "x"}, "c": {"kind": "y"}})
        assert db.get(COLLECTION, "a") == {"_id": "a", "_rev": rev, "kind": "x"}
        assert db.get_many(COLLECTION, ["b", "nope"])["nope"] is None
        assert len(db.query(COLLECTION, "by_kind", "x")) == 2
        assert db.delete(COLLECTION, "a") is True
        db.delete_many(COLLECTION, ["b", "c"])
        assert db.list_all(COLLECTION) == []

    counts = fault_proxy.counts()
    assert {"BatchGetItem", "BatchWriteItem", "Query", "Scan"} <= set(counts)
    assert CONTROL_OPERATIONS.isdisjoint(counts) and set(control) <= CONTROL_OPERATIONS
    assert sum(counts.values()) == len(dax.sent)
    table = settings().DYNAMODB_TABLE_PREFIX + COLLECTION
    for params in dax.ops("BatchGetItem"):
        request = params["RequestItems"][table]
        # Document reads are served by DAX; revision lookups pass through to DynamoDB.
        assert request["ConsistentRead"] is ("ProjectionExpression" in request)


def test_item_reads_are_served_by_dax_and_scans_pass_through_consistently(
    dax: DaxStandIn, settings: Callable[..., Settings]
) -> None:
    # DYNAMODB_CONSISTENT_READ (true by default) would make every read bypass DAX's cache.
    with get_database_service(settings(DYNAMODB_CONSISTENT_READ=True)) as db:
        assert isinstance(db, DynamoDBService) and db.consistent_read is False
        db.save(COLLECTION, "a", {"n": 1})
        db.get(COLLECTION, "a")
        db.get_many(COLLECTION, ["a", "b"])
        db.save_many(COLLECTION, {"b": {"n": 2}})
        db.list_all(COLLECTION)
        list(db.iter_pages(COLLECTION, page_size=1))

    table = settings().DYNAMODB_TABLE_PREFIX + COLLECTION
    assert [p["ConsistentRead"] for p in dax.ops("GetItem")] == [False]
    batch_reads = [p["RequestItems"][table] for p in dax.ops("BatchGetItem")]
    # get_many is eventually consistent (DAX's item cache); the revisions save_many reads
    # before its batch write are strongly consistent (passed through to DynamoDB).
    assert [(r["ConsistentRead"], "ProjectionExpression" in r) for r in batch_reads] == [
        (False, False),
        (True, True),
    ]
    scans = dax.ops("Scan")
    assert len(scans) >= 3 and all(p["ConsistentRead"] is True for p in scans)


# ------------------------------------------------------------------------------------------
# Revisions and if_rev
# ------------------------------------------------------------------------------------------


def test_revisions_and_if_rev_keep_their_meaning_through_dax(
    dax: DaxStandIn, fault_proxy: FaultProxy, settings: Callable[..., Settings]
) -> None:
    with get_database_service(settings()) as db:
        rev1 = db.save(COLLECTION, "d", {"v": 1})["rev"]
        rev2 = db.save(COLLECTION, "d", {"v": 2}, if_rev=rev1)["rev"]
        assert (parse_generation(rev2) or 0) > (parse_generation(rev1) or 0)
        assert db.get(COLLECTION, "d") == {"_id": "d", "_rev": rev2, "v": 2}

        # The stale condition is checked by DynamoDB behind DAX: one conditional PutItem.
        before = fault_proxy.counts().get("PutItem", 0)
        with pytest.raises(ConflictError):
            db.save(COLLECTION, "d", {"v": 3}, if_rev=rev1)
        assert fault_proxy.counts().get("PutItem", 0) == before + 1
        assert "ConditionExpression" in dax.ops("PutItem")[-1]
        with pytest.raises(ConflictError):
            db.save(COLLECTION, "d", {"v": 3}, if_rev=ABSENT)
        with pytest.raises(ConflictError):
            db.delete(COLLECTION, "d", if_rev=rev1)
        assert db.get(COLLECTION, "d") == {"_id": "d", "_rev": rev2, "v": 2}

        assert db.delete(COLLECTION, "d", if_rev=rev2) is True
        assert db.get(COLLECTION, "d") is None
        rev3 = db.save(COLLECTION, "d", {"v": 4}, if_rev=ABSENT)["rev"]
        assert (parse_generation(rev3) or 0) > (parse_generation(rev2) or 0)


def test_a_lost_race_is_resolved_with_a_consistent_read_through_dax(
    dax: DaxStandIn,
    fault_proxy: FaultProxy,
    settings: Callable[..., Settings],
    dynamodb_client: Callable[..., Any],
) -> None:
    with get_database_service(settings()) as db:
        assert isinstance(db, DynamoDBService)
        table = db.ensure_table(COLLECTION).name
        # A revision written by a clock ten minutes ahead: the single conditional PutItem of
        # an unconditional save fails, and the gateway must learn the stored revision.
        ahead = time.time_ns() // 1000 + 600_000_000
        dynamodb_client().put_item(
            TableName=table,
            Item={"_id": {"S": "e"}, "_rev": {"S": f"{ahead}-{'a' * 32}"}, "v": {"N": "0"}},
        )
        sent = _requests(fault_proxy, lambda: db.save(COLLECTION, "e", {"v": 1}))
        stored = db.get(COLLECTION, "e")

    # DAX returns no item with the failed condition, so the stored revision is read anew, with
    # a strongly consistent GetItem that DAX passes through to DynamoDB.
    assert sent == {"PutItem": 2, "GetItem": 1}
    assert dax.ops("GetItem")[0]["ConsistentRead"] is True
    assert stored is not None and parse_generation(stored["_rev"]) == ahead + 1


# ------------------------------------------------------------------------------------------
# Failures
# ------------------------------------------------------------------------------------------


def test_without_amazon_dax_client_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, settings: Callable[..., Settings]
) -> None:
    monkeypatch.setitem(sys.modules, "amazondax", None)
    with pytest.raises(ConfigError, match=r"pip install 'dynamodb-gateway\[dax\]'"):
        get_database_service(settings())


@pytest.mark.parametrize("scheme", ["dax", "daxs"])
def test_an_unreachable_cluster_is_service_unavailable_naming_dax_and_the_endpoint(
    scheme: str, settings: Callable[..., Settings]
) -> None:
    # The real amazondax client, no stand-in: it connects while it is constructed.
    url = f"{scheme}://127.0.0.1:{_closed_port()}"
    with pytest.raises(ServiceUnavailableError) as caught:
        get_database_service(settings(DAX_ENDPOINT_URL=url))
    message = str(caught.value)
    assert "DAX cluster" in message and url in message
    assert "NoRouteException" in message
    assert isinstance(caught.value.__cause__, DaxClientError)


def test_without_aws_credentials_the_error_is_about_credentials_not_the_network(
    monkeypatch: pytest.MonkeyPatch, dax: DaxStandIn, settings: Callable[..., Settings]
) -> None:
    # amazondax itself would report NoRouteException: its handshake fails without credentials.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsError, match="DAX cluster"):
        get_database_service(settings())
    assert dax.calls == []


def test_dax_failures_at_run_time_are_retried_then_reported_as_dax(
    dax: DaxStandIn, fault_proxy: FaultProxy, settings: Callable[..., Settings]
) -> None:
    with get_database_service(settings()) as db:
        db.save(COLLECTION, "a", {"n": 1})
        for failure in (
            lambda: DaxClientError("No cluster endpoints available", "NoRouteException"),
            lambda: ConnectionRefusedError(111, "Connection refused"),
        ):
            dax.fail_with = failure
            before = fault_proxy.counts()
            with pytest.raises(ServiceUnavailableError) as caught:
                db.get(COLLECTION, "a")
            assert fault_proxy.counts() == before  # failed inside "DAX": nothing was sent
            assert caught.value.attempts == 3  # retried by the gateway's policy, not the client
            assert f"DAX cluster {DAX_URL} could not be reached" in str(caught.value)

        dax.fail_with = lambda: ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}, "GetItem"
        )
        with pytest.raises(AccessDeniedError, match="dax:GetItem"):
            db.get(COLLECTION, "a")

        dax.fail_with = None  # the cluster is back
        document = db.get(COLLECTION, "a")
        assert document is not None and document["n"] == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("dax://cluster.example", "dax://cluster.example:8111"),
        ("daxs://cluster.example", "daxs://cluster.example:9111"),
        ("dax://cluster.example:1234/", "dax://cluster.example:1234"),
        ("DAXS://Cluster.Example:9111", "daxs://cluster.example:9111"),
    ],
)
def test_the_endpoint_url_is_given_to_the_client_as_scheme_host_port(
    url: str, expected: str
) -> None:
    assert dax_client_endpoint(url) == expected


@pytest.mark.parametrize(
    "url",
    ["dax://user:s3cr3t@cluster.example", "daxs://cluster.example/path", "dax://[::1]:8111"],
)
def test_an_endpoint_url_the_client_would_misread_is_a_config_error(
    url: str, dax: DaxStandIn, settings: Callable[..., Settings]
) -> None:
    with pytest.raises(ConfigError) as caught:
        get_database_service(settings(DAX_ENDPOINT_URL=url))
    assert "DAX_ENDPOINT_URL" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert dax.calls == []  # refused before connecting


# ------------------------------------------------------------------------------------------
# The in-process tier
# ------------------------------------------------------------------------------------------


def test_the_memory_tier_serves_hits_without_reaching_dax(
    dax: DaxStandIn, fault_proxy: FaultProxy, settings: Callable[..., Settings]
) -> None:
    with get_database_service(settings(DAX_MEMORY_TIER=True)) as db:
        assert isinstance(db, CachingGateway)
        assert isinstance(db.cache, MemoryCache)  # one tier: no collection sets max_items
        assert db.service.consistent_read is False
        rev = db.save(COLLECTION, "m", {"v": 1})["rev"]

        def read_five_times() -> None:
            for _ in range(5):
                assert db.get(COLLECTION, "m") == {"_id": "m", "_rev": rev, "v": 1}

        # Write-through: the saved document is in the in-process tier, no read reaches DAX.
        assert _requests(fault_proxy, read_five_times) == {}
        # A write through this gateway replaces it at once: never the old version.
        assert _requests(fault_proxy, lambda: db.save(COLLECTION, "m", {"v": 2})) == {"PutItem": 1}
        latest: list[Any] = []
        assert _requests(fault_proxy, lambda: latest.append(db.get(COLLECTION, "m"))) == {}
        assert latest[0] is not None and latest[0]["v"] == 2
        # A miss goes to DAX once; the answer (here "not found") is then served in-process.
        misses = _requests(fault_proxy, lambda: [db.get(COLLECTION, "gone") for _ in range(3)])
        assert misses == {"GetItem": 1}
        stats = db.stats()
        assert stats["hits"] >= 8 and stats["misses"] == 1


def test_the_memory_tier_gives_a_collection_its_own_bound(
    dax: DaxStandIn, settings: Callable[..., Settings], table_prefix: str
) -> None:
    """``collections.<name>.cache.max_items`` applies with DAX's memory tier too (found by
    review: it was read and ignored)."""
    collections = {COLLECTION: {"cache": {"max_items": 2}}}
    with get_database_service(settings(DAX_MEMORY_TIER=True, COLLECTIONS=collections)) as db:
        assert isinstance(db, CachingGateway)
        for i in range(5):
            db.save(COLLECTION, f"d{i}", {"v": i})
        assert isinstance(db.cache, PartitionedMemoryCache)
        assert db.cache.stats()["partitions"][f"{table_prefix}{COLLECTION}"]["items"] <= 2
