"""Tables created on the first write (reads create none), and key schemas checked: against the
emulator over HTTP, and `TableManager` on a fake control plane for the states the emulator never
shows (CREATING tables, indexes still building, a waiter that times out).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway import (
    AccessDeniedError,
    ConfigError,
    ConflictError,
    DynamoDBService,
    ServiceUnavailableError,
    ValidationError,
)
from gateway.aws_errors import translate
from gateway.emulator import EmbeddedDynamoDB
from gateway.errors import GatewayError
from gateway.tables import IndexSpec, TableInfo, TableManager
from tests.gateway_helpers import run_threads
from tests.servers import FaultProxy

ClientFactory = Callable[..., Any]

THREADS = 8
USERS_INDEXES = {"users": {"by_email": IndexSpec("email", "S"), "by_age": IndexSpec("age", "N")}}


@pytest.fixture
def service(moto_server: EmbeddedDynamoDB, table_prefix: str) -> Iterator[DynamoDBService]:
    with DynamoDBService(
        endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix, indexes=USERS_INDEXES
    ) as svc:
        yield svc


def table_exists(client: Any, name: str) -> bool:
    """DescribeTable, not ListTables: the shared emulator holds more than one page of tables."""
    try:
        client.describe_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


def create_raw_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


# -- against the emulator ----------------------------------------------------------------------


def test_table_is_created_on_first_use_with_id_key_and_on_demand_billing(
    service: DynamoDBService, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client()
    assert f"{table_prefix}notes" not in client.list_tables()["TableNames"]
    service.save("notes", "n1", {"text": "hello"})
    table = client.describe_table(TableName=f"{table_prefix}notes")["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "_id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "_id", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert not table.get("GlobalSecondaryIndexes")


def read_every_way(svc: DynamoDBService, db_name: str) -> None:
    """Every read (and delete) of a collection whose table does not exist: answers as empty."""
    assert svc.get(db_name, "nobody") is None
    assert svc.get_many(db_name, ["a", "b", "a"]) == {"a": None, "b": None}
    assert svc.list_all(db_name) == []
    assert list(svc.iter_pages(db_name, page_size=10)) == []
    assert svc.delete(db_name, "nobody") is False
    assert svc.delete_returning_rev(db_name, "nobody") is None
    with pytest.raises(ConflictError):
        svc.delete(db_name, "nobody", if_rev="1-" + "0" * 32)
    svc.delete_many(db_name, ["a", "b"])
    assert svc.table_info(db_name) is None


@pytest.mark.parametrize("coalesce", [False, True], ids=["plain", "coalesced"])
def test_reads_of_a_missing_table_answer_empty_and_create_nothing(
    moto_server: EmbeddedDynamoDB,
    dynamodb_client: ClientFactory,
    table_prefix: str,
    coalesce: bool,
) -> None:
    with DynamoDBService(
        endpoint_url=moto_server.endpoint_url,
        table_prefix=table_prefix,
        indexes=USERS_INDEXES,
        coalesce_reads=coalesce,
        coalesce_writes=coalesce,
    ) as svc:
        read_every_way(svc, "fresh")
        read_every_way(svc, "users")
        assert svc.query("users", "by_email", "a@x") == []
        assert svc.query("users", "by_age", 3) == []
        # The index is still checked against the configuration.
        with pytest.raises(ValidationError, match="by_email"):
            svc.query("users", "by_name", "Ada")
        with pytest.raises(ValidationError, match="none"):
            svc.query("fresh", "by_email", "x")
        calls = svc.stats()["db_calls"]
        assert "CreateTable" not in calls
        assert set(calls) == {"DescribeTable"}
    client = dynamodb_client()
    for name in ("fresh", "users"):
        assert not table_exists(client, f"{table_prefix}{name}")


def test_a_table_created_later_elsewhere_is_found_by_reads(
    service: DynamoDBService, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    assert service.get("later", "a") is None
    assert service.list_all("later") == []
    client = dynamodb_client()
    create_raw_table(client, f"{table_prefix}later")  # another process's first write
    client.put_item(TableName=f"{table_prefix}later", Item={"_id": {"S": "a"}, "n": {"N": "1"}})
    doc = service.get("later", "a")
    assert doc is not None and doc["n"] == 1
    assert [d["_id"] for d in service.list_all("later")] == ["a"]
    assert "CreateTable" not in service.stats()["db_calls"]


def test_the_first_write_creates_the_table(
    service: DynamoDBService, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client()
    service.save_many("batch_first", {"a": {}})
    service.save("single_first", "a", {})
    for name in ("batch_first", "single_first"):
        assert (
            client.describe_table(TableName=f"{table_prefix}{name}")["Table"]["TableStatus"]
            == "ACTIVE"
        )
    assert service.get("single_first", "a") is not None


def test_declared_indexes_are_created_with_the_table(
    service: DynamoDBService, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    info = service.ensure_table("users")
    assert info == TableInfo(
        name=f"{table_prefix}users", index_keys={"by_email": "email", "by_age": "age"}
    )
    table = dynamodb_client().describe_table(TableName=f"{table_prefix}users")["Table"]
    assert sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": "_id", "AttributeType": "S"},
        {"AttributeName": "age", "AttributeType": "N"},
        {"AttributeName": "email", "AttributeType": "S"},
    ]
    indexes = {gsi["IndexName"]: gsi for gsi in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"by_email", "by_age"}
    assert indexes["by_email"]["KeySchema"] == [{"AttributeName": "email", "KeyType": "HASH"}]
    assert indexes["by_age"]["KeySchema"] == [{"AttributeName": "age", "KeyType": "HASH"}]
    assert indexes["by_email"]["Projection"] == {"ProjectionType": "ALL"}


def test_concurrent_first_use_creates_the_table_once(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    with DynamoDBService(endpoint_url=fault_proxy.endpoint_url, table_prefix=table_prefix) as svc:
        revs: dict[int, str] = {}

        def save(i: int) -> None:
            revs[i] = svc.save("brand_new", f"d{i}", {"i": i})["rev"]

        run_threads(THREADS, save)
        assert len(revs) == THREADS
        assert fault_proxy.counts()["CreateTable"] == 1
        assert svc.stats()["db_calls"]["CreateTable"] == 1
        assert fault_proxy.counts()["PutItem"] == THREADS
        assert {doc["_id"] for doc in svc.list_all("brand_new")} == {
            f"d{i}" for i in range(THREADS)
        }


def test_two_processes_racing_on_a_new_table_both_succeed(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    services = [
        DynamoDBService(endpoint_url=fault_proxy.endpoint_url, table_prefix=table_prefix)
        for _ in range(2)
    ]
    try:

        def save(i: int) -> None:
            services[i % 2].save("raced", f"d{i}", {"i": i})

        run_threads(THREADS, save)
        # Each "process" creates at most once; the loser's ResourceInUseException is absorbed.
        creates = [svc.stats()["db_calls"].get("CreateTable", 0) for svc in services]
        assert 1 <= sum(creates) <= 2
        assert all(n <= 1 for n in creates)
        assert fault_proxy.counts()["CreateTable"] == sum(creates)
        docs = services[0].list_all("raced")
        assert sorted(doc["_id"] for doc in docs) == sorted(f"d{i}" for i in range(THREADS))
    finally:
        for svc in services:
            svc.close()


def test_an_existing_table_is_reused(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client()
    create_raw_table(client, f"{table_prefix}legacy")
    client.put_item(TableName=f"{table_prefix}legacy", Item={"_id": {"S": "old"}, "n": {"N": "7"}})
    with DynamoDBService(endpoint_url=fault_proxy.endpoint_url, table_prefix=table_prefix) as svc:
        doc = svc.get("legacy", "old")
        assert doc is not None and doc["n"] == 7
        svc.save("legacy", "new", {"n": 8})
        assert "CreateTable" not in fault_proxy.counts()
        assert fault_proxy.counts()["DescribeTable"] == 1
        assert "CreateTable" not in svc.stats()["db_calls"]


def test_each_table_is_described_once_per_service(
    fault_proxy: FaultProxy, table_prefix: str
) -> None:
    with DynamoDBService(endpoint_url=fault_proxy.endpoint_url, table_prefix=table_prefix) as svc:
        for i in range(5):
            svc.save("once", f"d{i}", {})
            svc.get("once", f"d{i}")
        assert svc.stats()["db_calls"]["DescribeTable"] <= 2  # before and after creating
        assert svc.stats()["db_calls"]["CreateTable"] == 1


def test_a_table_deleted_behind_our_back_is_created_again(
    service: DynamoDBService, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    service.save("doomed", "a", {"n": 1})
    client = dynamodb_client()
    client.delete_table(TableName=f"{table_prefix}doomed")
    # A read answers as for an empty table, and creates nothing.
    assert service.get("doomed", "a") is None
    assert service.list_all("doomed") == []
    assert service.get_many("doomed", ["a"]) == {"a": None}
    assert not table_exists(client, f"{table_prefix}doomed")
    # The next write creates it again.
    service.save("doomed", "b", {"n": 2})
    assert [doc["_id"] for doc in service.list_all("doomed")] == ["b"]


@pytest.mark.parametrize(
    ("key_schema", "attributes", "named"),
    [
        (
            [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            ["pk (string, HASH)", "sk (string, RANGE)"],
        ),
        (
            [{"AttributeName": "_id", "KeyType": "HASH"}],
            [{"AttributeName": "_id", "AttributeType": "N"}],
            ["_id (number, HASH)"],
        ),
        (
            [
                {"AttributeName": "_id", "KeyType": "HASH"},
                {"AttributeName": "ts", "KeyType": "RANGE"},
            ],
            [
                {"AttributeName": "_id", "AttributeType": "S"},
                {"AttributeName": "ts", "AttributeType": "N"},
            ],
            ["_id (string, HASH)", "ts (number, RANGE)"],
        ),
    ],
    ids=["pk-sk", "numeric-id", "id-with-range"],
)
@pytest.mark.parametrize("first", ["read", "write"])
def test_a_table_with_another_key_schema_is_a_config_error(
    service: DynamoDBService,
    dynamodb_client: ClientFactory,
    table_prefix: str,
    key_schema: list[dict[str, str]],
    attributes: list[dict[str, str]],
    named: list[str],
    first: str,
) -> None:
    client = dynamodb_client()
    client.create_table(
        TableName=f"{table_prefix}foreign",
        KeySchema=key_schema,
        AttributeDefinitions=attributes,
        BillingMode="PAY_PER_REQUEST",
    )
    calls: list[Callable[[], object]] = [
        lambda: service.get("foreign", "a"),
        lambda: service.get_many("foreign", ["a"]),
        lambda: service.list_all("foreign"),
        lambda: list(service.iter_pages("foreign")),
        lambda: service.table_info("foreign"),
        lambda: service.delete("foreign", "a"),
        lambda: service.delete_many("foreign", ["a"]),
        lambda: service.save("foreign", "a", {"n": 1}),
        lambda: service.save_many("foreign", {"a": {"n": 1}}),
        lambda: service.ensure_table("foreign"),
    ]
    if first == "write":
        calls.reverse()
    for call in calls:
        with pytest.raises(ConfigError) as caught:
            call()
        message = str(caught.value)
        assert f"{table_prefix}foreign" in message
        assert "_id (string, HASH)" in message  # what the gateway expects
        for key in named:
            assert key in message
    assert not {"GetItem", "BatchGetItem", "Scan", "PutItem", "DeleteItem", "BatchWriteItem"} & set(
        service.stats()["db_calls"]
    )


# -- TableManager on a fake control plane ------------------------------------------------------


def client_error(code: str, operation: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message or code}}, operation)


def table_description(
    name: str,
    status: str = "ACTIVE",
    gsis: list[dict[str, Any]] | None = None,
    lsis: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    table: dict[str, Any] = {"TableName": name, "TableStatus": status}
    if gsis is not None:
        table["GlobalSecondaryIndexes"] = gsis
    if lsis is not None:
        table["LocalSecondaryIndexes"] = lsis
    return {"Table": table}


def gsi(name: str, attribute: str, status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [{"AttributeName": attribute, "KeyType": "HASH"}],
        "IndexStatus": status,
    }


class FakeControlPlane:
    """A DynamoDB control plane scripted with a list of DescribeTable answers.

    Each ``describe_table`` pops the next answer (a description, or an exception to raise); the
    last one repeats. ``create_table`` records its parameters and raises ``create_error`` if set.
    """

    def __init__(
        self,
        describes: list[dict[str, Any] | Exception],
        create_error: Exception | None = None,
    ) -> None:
        self.describes = list(describes)
        self.create_error = create_error
        self.calls: list[str] = []
        self.created: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def describe_table(self, TableName: str) -> dict[str, Any]:
        with self.lock:
            self.calls.append("DescribeTable")
            answer = self.describes.pop(0) if len(self.describes) > 1 else self.describes[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def create_table(self, **params: Any) -> dict[str, Any]:
        with self.lock:
            self.calls.append("CreateTable")
            self.created.append(params)
        if self.create_error is not None:
            raise self.create_error
        return {"TableDescription": {"TableName": params["TableName"], "TableStatus": "CREATING"}}


def translating_call(operation: str, table: str, fn: Callable[[], Any]) -> Any:
    """What DynamoDBService passes as ``call``, minus the retries."""
    try:
        return fn()
    except ClientError as exc:
        raise translate(exc, operation, table) from exc


def manager(
    client: FakeControlPlane,
    indexes: dict[str, IndexSpec] | None = None,
    sleeps: list[float] | None = None,
) -> TableManager:
    recorded = sleeps if sleeps is not None else []
    return TableManager(
        client, lambda db_name: indexes or {}, translating_call, sleep=recorded.append
    )


NOT_FOUND = client_error("ResourceNotFoundException", "DescribeTable", "Requested resource")


def test_manager_uses_an_active_table_without_creating_it() -> None:
    client = FakeControlPlane(
        [
            table_description(
                "p-users",
                gsis=[gsi("by_email", "email")],
                lsis=[
                    {
                        "IndexName": "local",
                        "KeySchema": [
                            {"AttributeName": "_id", "KeyType": "HASH"},
                            {"AttributeName": "ts", "KeyType": "RANGE"},
                        ],
                    }
                ],
            )
        ]
    )
    info = manager(client).ensure("p-users", "users")
    assert info == TableInfo("p-users", {"by_email": "email", "local": "_id"})
    assert client.calls == ["DescribeTable"]


def test_manager_creates_a_missing_table_with_its_indexes() -> None:
    client = FakeControlPlane(
        [
            NOT_FOUND,
            table_description("p-users", "CREATING"),
            table_description("p-users", gsis=[gsi("by_email", "email"), gsi("by_mail", "email")]),
        ]
    )
    indexes = {"by_email": IndexSpec("email"), "by_mail": IndexSpec("email", "S")}
    info = manager(client, indexes).ensure("p-users", "users")
    assert info.index_keys == {"by_email": "email", "by_mail": "email"}
    assert client.calls.count("CreateTable") == 1
    (params,) = client.created
    assert params["TableName"] == "p-users"
    assert params["KeySchema"] == [{"AttributeName": "_id", "KeyType": "HASH"}]
    assert params["BillingMode"] == "PAY_PER_REQUEST"
    # An attribute shared by two indexes is defined once.
    assert params["AttributeDefinitions"] == [
        {"AttributeName": "_id", "AttributeType": "S"},
        {"AttributeName": "email", "AttributeType": "S"},
    ]
    assert [g["IndexName"] for g in params["GlobalSecondaryIndexes"]] == ["by_email", "by_mail"]
    assert all(
        g["Projection"] == {"ProjectionType": "ALL"} for g in params["GlobalSecondaryIndexes"]
    )
    created = client.calls.index("CreateTable")
    assert client.calls[created + 1 :] and set(client.calls[created + 1 :]) == {"DescribeTable"}


def test_manager_creates_without_indexes_when_none_are_declared() -> None:
    client = FakeControlPlane([NOT_FOUND, table_description("p-notes")])
    manager(client).ensure("p-notes", "notes")
    assert "GlobalSecondaryIndexes" not in client.created[0]


def test_manager_waits_for_a_table_still_creating() -> None:
    client = FakeControlPlane(
        [
            table_description("p-t", "CREATING"),
            table_description("p-t", "CREATING"),
            table_description("p-t", "CREATING"),
            table_description("p-t"),
        ]
    )
    info = manager(client).ensure("p-t", "t")
    assert info.name == "p-t"
    assert "CreateTable" not in client.calls
    assert client.calls.count("DescribeTable") >= 4


def test_a_throttled_describe_while_waiting_goes_through_the_retry_policy() -> None:
    """Waiting for ACTIVE describes the table through ``call`` (the service's retry policy);
    botocore's ``table_exists`` waiter gave up on the first throttled answer."""
    throttled = client_error("ThrottlingException", "DescribeTable", "Rate exceeded")
    client = FakeControlPlane(
        [NOT_FOUND, throttled, table_description("p-t", "CREATING"), table_description("p-t")]
    )
    retried: list[str] = []

    def call_with_retries(operation: str, table: str, fn: Callable[[], Any]) -> Any:
        for _ in range(3):
            try:
                return translating_call(operation, table, fn)
            except GatewayError as exc:
                if exc.code != "ThrottlingException":
                    raise
                retried.append(operation)
        raise AssertionError("still throttled")

    tables = TableManager(client, lambda db_name: {}, call_with_retries, sleep=lambda s: None)
    assert tables.ensure("p-t", "t").name == "p-t"
    assert retried == ["DescribeTable"]


def test_manager_waits_when_somebody_else_is_creating_the_table() -> None:
    client = FakeControlPlane(
        [NOT_FOUND, table_description("p-t", "CREATING"), table_description("p-t")],
        create_error=client_error("ResourceInUseException", "CreateTable", "Table in use"),
    )
    assert manager(client).ensure("p-t", "t").name == "p-t"
    assert client.calls.count("CreateTable") == 1


def test_manager_waits_for_indexes_still_creating() -> None:
    sleeps: list[float] = []
    client = FakeControlPlane(
        [
            table_description("p-t", gsis=[gsi("by_x", "x", "CREATING")]),
            table_description("p-t", gsis=[gsi("by_x", "x", "CREATING")]),
            table_description("p-t", gsis=[gsi("by_x", "x", "CREATING")]),
            table_description("p-t", gsis=[gsi("by_x", "x")]),
        ]
    )
    info = manager(client, sleeps=sleeps).ensure("p-t", "t")
    assert info.index_keys == {"by_x": "x"}
    assert sleeps  # polled with the injected sleep, not time.sleep
    assert "CreateTable" not in client.calls


def test_manager_gives_up_when_the_table_never_becomes_active() -> None:
    client = FakeControlPlane([table_description("p-t", "CREATING")])
    with pytest.raises(ServiceUnavailableError, match="did not become ACTIVE"):
        manager(client).ensure("p-t", "t")


def test_manager_gives_up_when_indexes_never_become_active() -> None:
    sleeps: list[float] = []
    client = FakeControlPlane([table_description("p-t", gsis=[gsi("by_x", "x", "CREATING")])])
    with pytest.raises(ServiceUnavailableError, match="indexes"):
        manager(client, sleeps=sleeps).ensure("p-t", "t")
    assert len(sleeps) > 1


def test_manager_passes_other_create_errors_on() -> None:
    client = FakeControlPlane(
        [NOT_FOUND],
        create_error=client_error("AccessDeniedException", "CreateTable", "not authorized"),
    )
    with pytest.raises(AccessDeniedError, match="dynamodb:CreateTable"):
        manager(client).ensure("p-t", "t")


def test_manager_describes_once_then_remembers_until_forgotten() -> None:
    client = FakeControlPlane([table_description("p-t")])
    tables = manager(client)
    for _ in range(3):
        tables.ensure("p-t", "t")
    assert client.calls == ["DescribeTable"]
    tables.forget("p-t")
    tables.forget("never-known")  # harmless
    tables.ensure("p-t", "t")
    assert client.calls == ["DescribeTable", "DescribeTable"]


def test_manager_creates_once_under_concurrent_first_use() -> None:
    client = FakeControlPlane([NOT_FOUND, table_description("p-t")])
    tables = manager(client)
    infos: list[TableInfo] = []
    run_threads(THREADS, lambda i: infos.append(tables.ensure("p-t", "t")))
    assert client.calls.count("CreateTable") == 1
    assert len(infos) == THREADS and all(info == infos[0] for info in infos)


def test_manager_find_creates_nothing_and_forgets_missing_tables() -> None:
    client = FakeControlPlane([NOT_FOUND, NOT_FOUND, table_description("p-t")])
    tables = manager(client)
    assert tables.find("p-t") is None
    assert tables.find("p-t") is None  # asked again: "missing" is not remembered
    assert tables.find("p-t") == TableInfo("p-t", {})  # created meanwhile by someone else
    assert tables.find("p-t") == TableInfo("p-t", {})  # and now remembered
    assert client.calls == ["DescribeTable"] * 3


def test_manager_find_waits_for_a_table_still_creating() -> None:
    client = FakeControlPlane(
        [
            table_description("p-t", status="CREATING"),
            table_description("p-t", status="CREATING"),
            table_description("p-t"),
        ]
    )
    assert manager(client).find("p-t") == TableInfo("p-t", {})
    assert "CreateTable" not in client.calls
    assert client.calls.count("DescribeTable") >= 3


def test_manager_refuses_another_key_schema_before_waiting() -> None:
    table = table_description("p-t", status="CREATING")
    table["Table"]["KeySchema"] = [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    table["Table"]["AttributeDefinitions"] = [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "B"},
    ]
    for use in ("find", "ensure"):
        client = FakeControlPlane([table])
        tables = manager(client)
        with pytest.raises(ConfigError, match=r"pk \(string, HASH\), sk \(binary, RANGE\)"):
            tables.find("p-t") if use == "find" else tables.ensure("p-t", "t")
        assert client.calls == ["DescribeTable"]  # no waiting, no creating
