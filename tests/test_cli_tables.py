"""``gateway tables create | add-index | delete`` and what ``query`` says of a declared index its
table lacks: against the emulator, and `TableManager.add_index` on a scripted control plane for
the states the emulator never shows (an index CREATING, backfilling, a provisioned table)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway import (
    ConfigError,
    DynamoDBService,
    GatewayError,
    ServiceUnavailableError,
    ValidationError,
)
from gateway.aws_errors import translate
from gateway.config import Settings
from gateway.emulator import EmbeddedDynamoDB
from gateway.factory import build_cache, build_gateway
from gateway.tables import IndexProgress, IndexSpec, TableManager, table_manager_of
from tests.cli_helpers import Run, assert_one_line_error, cli_runner

ClientFactory = Callable[..., Any]

USERS_INDEXES = '{"users": {"indexes": {"by_email": {"attribute": "email"}}}}'


@pytest.fixture
def run(
    moto_server: EmbeddedDynamoDB, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> Run:
    return cli_runner(moto_server.endpoint_url, table_prefix, capsys)


def table_exists(client: Any, name: str) -> bool:
    try:
        client.describe_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


@pytest.fixture
def users_without_index(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The users table, created before ``by_email`` was declared (declared now), holding two
    documents with an email; its name."""
    assert run("put", "users", "u1", '{"email": "ada@example.com"}')[0] == 0
    assert run("put", "users", "u2", '{"email": "bob@example.com"}')[0] == 0
    monkeypatch.setenv("COLLECTIONS", USERS_INDEXES)
    return f"{table_prefix}users"


# -- tables create / add-index ----------------------------------------------------------------


def test_tables_create_on_a_table_lacking_a_declared_index_exits_2_naming_add_index(
    run: Run, users_without_index: str
) -> None:
    code, out, err = run("tables", "create", "users")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert f"Table '{users_without_index}' already exists, but it lacks" in err
    assert "gateway tables add-index users by_email" in err


def test_add_index_adds_the_declared_index_then_is_idempotent(
    run: Run, users_without_index: str, dynamodb_client: ClientFactory
) -> None:
    code, out, err = run("tables", "add-index", "users", "by_email", "--quiet")
    assert code == 0, err
    assert json.loads(out) == {
        "table": users_without_index,
        "index": "by_email",
        "attribute": "email",
        "created": True,
        "status": "ACTIVE",
        "indexes": {"by_email": "email"},
    }
    table = dynamodb_client().describe_table(TableName=users_without_index)["Table"]
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_email" and index["IndexStatus"] == "ACTIVE"
    assert index["KeySchema"] == [{"AttributeName": "email", "KeyType": "HASH"}]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    # The table keeps its key; the new key attribute is defined next to it.
    definitions = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert definitions == {"_id": "S", "email": "S"}

    code, out, err = run("tables", "add-index", "users", "by_email", "--quiet")
    assert code == 0, err
    assert json.loads(out)["created"] is False
    assert "already on table" in err
    code, out, err = run("tables", "create", "users")
    assert code == 0, err
    assert json.loads(out)["indexes"] == {"by_email": "email"}


def test_add_index_of_an_undeclared_index_exits_2(run: Run, users_without_index: str) -> None:
    code, out, err = run("tables", "add-index", "users", "by_name", "--quiet")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert "not declared" in err and "collections.users.indexes.by_name" in err


def test_add_index_on_a_missing_table_exits_2_and_creates_nothing(
    run: Run,
    table_prefix: str,
    dynamodb_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLLECTIONS", USERS_INDEXES)
    code, _, err = run("tables", "add-index", "users", "by_email", "--quiet")
    assert code == 2
    assert_one_line_error(err)
    assert "no such collection: users" in err
    assert not table_exists(dynamodb_client(), f"{table_prefix}users")


def test_add_index_refuses_an_index_of_that_name_on_another_attribute(
    run: Run, users_without_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTIONS", '{"users": {"indexes": {"by_email": {"attribute": "mail"}}}}')
    assert run("tables", "add-index", "users", "by_email", "--quiet")[0] == 0
    monkeypatch.setenv("COLLECTIONS", USERS_INDEXES)
    code, _, err = run("tables", "add-index", "users", "by_email", "--quiet")
    assert code == 2
    assert_one_line_error(err)
    assert "keyed on 'mail', but it is declared on 'email'" in err
    code, _, err = run("tables", "create", "users")
    assert code == 2 and "keyed on 'mail', declared on 'email'" in err


# -- query: the message, and the process's remembered table ----------------------------------


@pytest.fixture
def service(
    moto_server: EmbeddedDynamoDB, table_prefix: str, users_without_index: str
) -> Iterator[DynamoDBService]:
    with DynamoDBService(
        endpoint_url=moto_server.endpoint_url,
        table_prefix=table_prefix,
        indexes={"users": {"by_email": IndexSpec("email")}},
    ) as svc:
        yield svc


def test_query_on_a_declared_index_the_table_lacks_says_so_and_names_the_fix(
    service: DynamoDBService, users_without_index: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        service.query("users", "by_email", "ada@example.com")
    message = str(caught.value)
    assert "declares index 'by_email'" in message
    assert f"its table '{users_without_index}' exists without it" in message
    assert "gateway tables add-index users by_email" in message
    assert "Declare it" not in message  # it is declared


def test_query_on_an_undeclared_index_names_both_steps(service: DynamoDBService) -> None:
    with pytest.raises(ValidationError) as caught:
        service.query("users", "by_name", "Ada")
    assert "Declare it in the YAML config under collections.users.indexes.by_name" in str(
        caught.value
    )
    assert "gateway tables add-index users by_name" in str(caught.value)


def test_add_index_refreshes_what_the_service_remembers_of_the_table(
    service: DynamoDBService, users_without_index: str
) -> None:
    with pytest.raises(ValidationError):
        service.query("users", "by_email", "ada@example.com")  # the table is remembered now
    added = table_manager_of(service).add_index(users_without_index, "by_email", IndexSpec("email"))
    assert added.created and dict(added.info.index_keys) == {"by_email": "email"}
    # The same service, no restart: the index is known, and the documents saved before it
    # was added are in it (backfilled).
    (found,) = service.query("users", "by_email", "ada@example.com")
    assert found["_id"] == "u1"
    assert service.index_attributes("users") == {"by_email": "email"}


def test_add_index_through_a_caching_gateway_refreshes_its_service(
    moto_server: EmbeddedDynamoDB, table_prefix: str, users_without_index: str
) -> None:
    settings = Settings(
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url,
        DYNAMODB_TABLE_PREFIX=table_prefix,
        CACHE_BACKEND="memory",
    )
    from gateway.factory import build_dynamodb_service

    with build_gateway(settings, build_dynamodb_service(settings), build_cache(settings)) as gw:
        with pytest.raises(ValidationError, match="exists without it"):
            gw.query("users", "by_email", "bob@example.com")
        table_manager_of(gw).add_index(users_without_index, "by_email", IndexSpec("email"))
        assert [d["_id"] for d in gw.query("users", "by_email", "bob@example.com")] == ["u2"]


# -- tables delete ----------------------------------------------------------------------------


class Terminal(io.StringIO):
    """Standard input that is a terminal, with the user's typed answer."""

    def isatty(self) -> bool:
        return True


def test_tables_delete_with_yes(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory
) -> None:
    assert run("put", "notes", "n1", "{}")[0] == 0
    code, out, err = run("tables", "delete", "notes", "--yes")
    assert code == 0, err
    assert json.loads(out) == {"table": f"{table_prefix}notes", "deleted": True}
    assert not table_exists(dynamodb_client(), f"{table_prefix}notes")
    code, _, err = run("tables", "delete", "notes", "--yes")  # gone: no such collection
    assert code == 2 and "no such collection: notes" in err


def test_tables_delete_without_a_terminal_or_yes_refuses(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("put", "notes", "n1", "{}")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("notes\n"))  # a pipe saying yes is not enough
    code, out, err = run("tables", "delete", "notes")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert "without confirmation" in err and "--yes" in err
    assert table_exists(dynamodb_client(), f"{table_prefix}notes")


@pytest.mark.parametrize("answer", ["y\n", "yes\n", "note\n", ""])
def test_tables_delete_on_a_terminal_needs_the_collection_name(
    run: Run,
    table_prefix: str,
    dynamodb_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
) -> None:
    assert run("put", "notes", "n1", "{}")[0] == 0
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    code, out, err = run("tables", "delete", "notes")
    assert code == 1 and out == ""
    assert f"Delete table '{table_prefix}notes'" in err and "Type notes to confirm" in err
    assert "error: not confirmed: nothing deleted" in err
    assert table_exists(dynamodb_client(), f"{table_prefix}notes")


def test_tables_delete_on_a_terminal_deletes_once_confirmed(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("put", "notes", "n1", "{}")[0] == 0
    monkeypatch.setattr("sys.stdin", Terminal("notes\n"))
    code, out, err = run("tables", "delete", "notes")
    assert code == 0, err
    assert json.loads(out) == {"table": f"{table_prefix}notes", "deleted": True}
    assert not table_exists(dynamodb_client(), f"{table_prefix}notes")


def test_tables_delete_refuses_a_table_with_deletion_protection(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory
) -> None:
    assert run("put", "notes", "n1", "{}")[0] == 0
    client = dynamodb_client()
    client.update_table(TableName=f"{table_prefix}notes", DeletionProtectionEnabled=True)
    code, _, err = run("tables", "delete", "notes", "--yes")
    assert code == 2
    assert_one_line_error(err)
    assert "deletion protection" in err
    assert table_exists(client, f"{table_prefix}notes")
    client.update_table(TableName=f"{table_prefix}notes", DeletionProtectionEnabled=False)


def test_tables_delete_clears_the_shared_cache(
    run: Run, table_prefix: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert run("put", "notes", "n1", '{"v": 1}')[0] == 0  # cached in Redis by the save
    code, out, err = run("tables", "delete", "notes", "--yes")
    assert code == 0, err
    assert json.loads(out)["cache_entries_dropped"] >= 1
    # Not served from the cache: the collection is gone.
    code, _, err = run("get", "notes", "n1")
    assert code == 2 and "no such collection: notes" in err


# -- TableManager.add_index on a scripted control plane ---------------------------------------


def client_error(code: str, operation: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def description(
    gsis: list[dict[str, Any]] | None = None,
    *,
    status: str = "ACTIVE",
    provisioned: tuple[int, int] | None = None,
    definitions: dict[str, str] | None = None,
) -> dict[str, Any]:
    table: dict[str, Any] = {
        "TableName": "t-users",
        "TableStatus": status,
        "KeySchema": [{"AttributeName": "_id", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": kind}
            for name, kind in (definitions or {"_id": "S"}).items()
        ],
        "GlobalSecondaryIndexes": gsis or [],
    }
    if provisioned is None:
        table["BillingModeSummary"] = {"BillingMode": "PAY_PER_REQUEST"}
    else:
        table["BillingModeSummary"] = {"BillingMode": "PROVISIONED"}
        table["ProvisionedThroughput"] = {
            "ReadCapacityUnits": provisioned[0],
            "WriteCapacityUnits": provisioned[1],
        }
    return {"Table": table}


def gsi(
    attribute: str = "email", status: str = "ACTIVE", backfilling: bool | None = None
) -> dict[str, Any]:
    index: dict[str, Any] = {
        "IndexName": "by_email",
        "KeySchema": [{"AttributeName": attribute, "KeyType": "HASH"}],
        "IndexStatus": status,
    }
    if backfilling is not None:
        index["Backfilling"] = backfilling
    return index


class ScriptedControlPlane:
    """DescribeTable answers popped in order (the last one repeats); UpdateTable recorded."""

    def __init__(self, describes: list[dict[str, Any]], update_error: Exception | None = None):
        self.describes = list(describes)
        self.update_error = update_error
        self.updates: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def describe_table(self, TableName: str) -> dict[str, Any]:
        with self.lock:
            return self.describes.pop(0) if len(self.describes) > 1 else self.describes[0]

    def update_table(self, **params: Any) -> dict[str, Any]:
        self.updates.append(params)
        if self.update_error is not None:
            raise self.update_error
        return {}


def translating_call(operation: str, table: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ClientError as exc:
        raise translate(exc, operation, table) from exc


def manager(client: ScriptedControlPlane, sleeps: list[float]) -> TableManager:
    return TableManager(client, lambda db_name: {}, translating_call, sleep=sleeps.append)


def test_add_index_waits_through_creating_and_backfilling_reporting_each_state() -> None:
    client = ScriptedControlPlane(
        [
            description(),  # before: no index
            description([gsi(status="CREATING", backfilling=True)], status="UPDATING"),
            description([gsi(status="CREATING", backfilling=True)]),
            description([gsi(status="CREATING", backfilling=False)]),
            description([gsi(status="ACTIVE")]),
        ]
    )
    sleeps: list[float] = []
    seen: list[IndexProgress] = []
    ticks = iter(range(100))
    added = manager(client, sleeps).add_index(
        "t-users",
        "by_email",
        IndexSpec("email"),
        seen.append,
        poll_s=7.0,
        clock=lambda: float(next(ticks)),
    )
    assert added.created and dict(added.info.index_keys) == {"by_email": "email"}
    assert [(p.status, p.backfilling, p.ready) for p in seen] == [
        ("CREATING", True, False),
        ("CREATING", True, False),
        ("CREATING", False, False),
        ("ACTIVE", False, True),
    ]
    assert [p.elapsed_s for p in seen] == [1.0, 2.0, 3.0, 4.0]
    assert sleeps == [7.0, 7.0, 7.0]
    (update,) = client.updates
    assert update == {
        "TableName": "t-users",
        "AttributeDefinitions": [
            {"AttributeName": "_id", "AttributeType": "S"},
            {"AttributeName": "email", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexUpdates": [
            {
                "Create": {
                    "IndexName": "by_email",
                    "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            }
        ],
    }


def test_add_index_on_a_provisioned_table_gives_the_index_the_table_s_capacity() -> None:
    client = ScriptedControlPlane(
        [description(provisioned=(5, 3)), description([gsi()], provisioned=(5, 3))]
    )
    manager(client, []).add_index("t-users", "by_email", IndexSpec("email"))
    create = client.updates[0]["GlobalSecondaryIndexUpdates"][0]["Create"]
    assert create["ProvisionedThroughput"] == {"ReadCapacityUnits": 5, "WriteCapacityUnits": 3}


def test_add_index_of_an_index_being_built_only_waits() -> None:
    client = ScriptedControlPlane(
        [
            description([gsi(status="CREATING", backfilling=True)]),
            description([gsi(status="CREATING", backfilling=True)]),
            description([gsi()]),
        ]
    )
    sleeps: list[float] = []
    added = manager(client, sleeps).add_index("t-users", "by_email", IndexSpec("email"))
    assert not added.created and client.updates == []
    assert len(sleeps) == 1


def test_add_index_created_by_somebody_else_meanwhile_is_not_an_error() -> None:
    refused = client_error("ValidationException", "UpdateTable", "Index already exists")
    client = ScriptedControlPlane([description(), description([gsi()])], update_error=refused)
    added = manager(client, []).add_index("t-users", "by_email", IndexSpec("email"))
    assert not added.created and len(client.updates) == 1


def test_add_index_passes_other_update_errors_on() -> None:
    refused = client_error("ResourceInUseException", "UpdateTable", "Table is being updated")
    client = ScriptedControlPlane([description()], update_error=refused)
    with pytest.raises(GatewayError) as caught:
        manager(client, []).add_index("t-users", "by_email", IndexSpec("email"))
    assert caught.value.code == "ResourceInUseException"


def test_add_index_refuses_an_attribute_defined_with_another_type() -> None:
    client = ScriptedControlPlane([description(definitions={"_id": "S", "email": "N"})])
    with pytest.raises(ConfigError, match="defines 'email' as N"):
        manager(client, []).add_index("t-users", "by_email", IndexSpec("email", "S"))
    assert client.updates == []


def test_add_index_says_so_when_the_index_disappears_while_built() -> None:
    client = ScriptedControlPlane([description(), description([])])
    with pytest.raises(ServiceUnavailableError, match="disappeared"):
        manager(client, []).add_index("t-users", "by_email", IndexSpec("email"))


def test_add_index_on_a_missing_table_is_a_validation_error() -> None:
    class Missing(ScriptedControlPlane):
        def describe_table(self, TableName: str) -> dict[str, Any]:
            raise client_error("ResourceNotFoundException", "DescribeTable", "not found")

    with pytest.raises(ValidationError, match="does not exist") as caught:
        manager(Missing([]), []).add_index("t-users", "by_email", IndexSpec("email"))
    assert caught.value.code == "ResourceNotFoundException"
