"""Tables created on the first write: one per collection, key ``_id`` (string HASH), on-demand
billing.

Creation is safe when two threads (a lock per table) or two processes (``ResourceInUseException``
means somebody else is creating it: wait for ACTIVE) get there at once, and when the table is
still CREATING. Reads never create: `TableManager.find` answers None for a missing table, and
does not remember that (the next read asks again, so a table another process creates later is
found). Each existing table is described once per process; its secondary indexes are remembered
so ``query`` knows each index's key attribute, and its key schema is checked: a table not keyed
on ``_id`` (string, HASH) raises `ConfigError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from gateway.aws_errors import translate
from gateway.errors import ConfigError, GatewayError, ServiceUnavailableError

#: How often and how long to poll DescribeTable while a table is being created.
TABLE_POLL_DELAY_S = 1
TABLE_POLL_MAX_ATTEMPTS = 120


@dataclass(frozen=True)
class IndexSpec:
    """A declared global secondary index: its partition key attribute and type (S, N or B)."""

    attribute: str
    type: str = "S"


@dataclass(frozen=True)
class TableInfo:
    """What the service needs to know about an ACTIVE table."""

    name: str
    #: index name -> partition key attribute
    index_keys: Mapping[str, str] = field(default_factory=dict)


class TableManager:
    """Makes sure a collection's table exists and is ACTIVE before it is used."""

    def __init__(
        self,
        client: Any,
        indexes_for: Callable[[str], Mapping[str, IndexSpec]],
        call: Callable[[str, str, Callable[[], Any]], Any],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``client`` is a boto3 DynamoDB client (the control plane: never DAX);
        ``indexes_for(db_name)`` gives the declared indexes of a collection; ``call(operation,
        table, fn)`` runs ``fn`` under the service's retry policy and error translation."""
        self._client = client
        self._indexes_for = indexes_for
        self._call = call
        self._sleep = sleep
        self._ready: dict[str, TableInfo] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def ensure(self, table: str, db_name: str) -> TableInfo:
        """The table's info, creating the table and waiting for it when needed (writes)."""
        info = self._ready.get(table)
        if info is not None:
            return info
        with self._lock_for(table):
            info = self._ready.get(table)
            if info is None:
                info = self._describe_or_create(table, db_name)
                self._ready[table] = info
            return info

    def find(self, table: str) -> TableInfo | None:
        """The table's info, or None if it does not exist (reads): creates nothing.

        A table still CREATING is waited for. "Missing" is not remembered: each call on a
        missing table describes it again, so one created meanwhile (by another process) is found.
        """
        info = self._ready.get(table)
        if info is not None:
            return info
        with self._lock_for(table):
            info = self._ready.get(table)
            if info is None:
                description = self._describe(table)
                if description is None:
                    return None
                _check_key_schema(description)  # before waiting for a table we cannot use
                if description.get("TableStatus") != "ACTIVE" or _indexes_pending(description):
                    description = self._wait_active(table)
                info = _info_from(description)
                self._ready[table] = info
            return info

    def forget(self, table: str) -> None:
        """Drop what is known of ``table`` (it was deleted behind our back)."""
        self._ready.pop(table, None)

    def _lock_for(self, table: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(table, threading.Lock())

    def _describe_or_create(self, table: str, db_name: str) -> TableInfo:
        description = self._describe(table)
        if description is None:
            self._create(table, db_name)
            description = self._wait_active(table)
        else:
            _check_key_schema(description)  # before waiting for a table we cannot use
            if description.get("TableStatus") != "ACTIVE" or _indexes_pending(description):
                description = self._wait_active(table)
        return _info_from(description)

    def _describe(self, table: str) -> dict[str, Any] | None:
        try:
            response = self._call(
                "DescribeTable", table, lambda: self._client.describe_table(TableName=table)
            )
        except GatewayError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            raise
        return dict(response["Table"])

    def _create(self, table: str, db_name: str) -> None:
        indexes = self._indexes_for(db_name)
        attribute_types = {"_id": "S"}
        for spec in indexes.values():
            attribute_types.setdefault(spec.attribute, spec.type)
        params: dict[str, Any] = {
            "TableName": table,
            "KeySchema": [{"AttributeName": "_id", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": kind}
                for name, kind in attribute_types.items()
            ],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if indexes:
            params["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": name,
                    "KeySchema": [{"AttributeName": spec.attribute, "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
                for name, spec in indexes.items()
            ]
        try:
            self._call("CreateTable", table, lambda: self._client.create_table(**params))
        except GatewayError as exc:
            # Another thread or process is creating it right now: just wait for ACTIVE.
            if exc.code != "ResourceInUseException":
                raise

    def _wait_active(self, table: str) -> dict[str, Any]:
        waiter = self._client.get_waiter("table_exists")
        try:
            waiter.wait(
                TableName=table,
                WaiterConfig={"Delay": TABLE_POLL_DELAY_S, "MaxAttempts": TABLE_POLL_MAX_ATTEMPTS},
            )
        except WaiterError as exc:
            raise ServiceUnavailableError(
                f"Table {table!r} did not become ACTIVE in time: {exc}", operation="DescribeTable"
            ) from exc
        except ClientError as exc:
            raise translate(exc, "DescribeTable", table) from exc
        for _ in range(TABLE_POLL_MAX_ATTEMPTS):
            description = self._describe(table)
            if description is not None and not _indexes_pending(description):
                return description
            self._sleep(TABLE_POLL_DELAY_S)
        raise ServiceUnavailableError(
            f"The indexes of table {table!r} did not become ACTIVE in time.",
            operation="DescribeTable",
        )


def _indexes_pending(description: Mapping[str, Any]) -> bool:
    return any(
        gsi.get("IndexStatus", "ACTIVE") != "ACTIVE"
        for gsi in description.get("GlobalSecondaryIndexes", [])
    )


#: The only key schema the gateway works with.
EXPECTED_KEY = "_id (string, HASH)"


def _check_key_schema(description: Mapping[str, Any]) -> None:
    """Raise `ConfigError` unless the table's key is ``_id`` (string, HASH) alone.

    A description without ``KeySchema`` (never from DynamoDB) is not checked.
    """
    keys = description.get("KeySchema")
    if keys is None:
        return
    types = {
        a.get("AttributeName"): a.get("AttributeType")
        for a in description.get("AttributeDefinitions", [])
    }
    if [(k.get("AttributeName"), k.get("KeyType")) for k in keys] == [("_id", "HASH")] and (
        types.get("_id", "S") == "S"
    ):
        return
    names = {"S": "string", "N": "number", "B": "binary"}
    has = ", ".join(
        f"{k.get('AttributeName')} ({names.get(str(types.get(k.get('AttributeName'))), '?')}, "
        f"{k.get('KeyType')})"
        for k in keys
    )
    table = description.get("TableName", "?")
    raise ConfigError(
        f"Table {table!r} has the key {has or 'none'}, but the gateway expects the key "
        f"{EXPECTED_KEY} alone. It was not created by the gateway: choose another table prefix "
        "(dynamodb.table_prefix) or collection name, or copy its data into a table keyed on _id.",
        operation="DescribeTable",
    )


def _info_from(description: Mapping[str, Any]) -> TableInfo:
    _check_key_schema(description)
    index_keys: dict[str, str] = {}
    for index in [
        *description.get("GlobalSecondaryIndexes", []),
        *description.get("LocalSecondaryIndexes", []),
    ]:
        for key in index.get("KeySchema", []):
            if key.get("KeyType") == "HASH":
                index_keys[index["IndexName"]] = key["AttributeName"]
    return TableInfo(name=str(description["TableName"]), index_keys=index_keys)


__all__ = ["IndexSpec", "TableInfo", "TableManager"]
