"""Tables created on the first write: one per collection, key ``_id`` (string HASH), on-demand
billing.

Creation is safe when two threads (a lock per table) or two processes (``ResourceInUseException``
means somebody else is creating it: wait for ACTIVE) get there at once, and when the table is
still CREATING. Reads never create: `TableManager.find` answers None for a missing table, and
does not remember that (the next read asks again, so a table another process creates later is
found). Each existing table is described once per process; its secondary indexes are remembered
so ``query`` knows each index's key attribute, and its key schema is checked: a table not keyed
on ``_id`` (string, HASH) raises `ConfigError`.

An index declared after its table was created is added with `TableManager.add_index` (UpdateTable,
then a wait for the backfill), which also replaces what this process remembers of the table;
`compare_indexes` tells which declared indexes a table lacks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError, GatewayError, ServiceUnavailableError, ValidationError

#: How often and how long to poll DescribeTable while a table is being created.
TABLE_POLL_DELAY_S = 1
TABLE_POLL_MAX_ATTEMPTS = 120
#: How often `TableManager.add_index` polls DescribeTable while an index is built. A backfill
#: takes minutes to hours on a real table, so there is no deadline: the caller may interrupt the
#: wait at any time, DynamoDB goes on building the index.
INDEX_POLL_DELAY_S = 5.0


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


@dataclass(frozen=True)
class IndexProgress:
    """What DescribeTable said of an index being added (for a progress display)."""

    #: CREATING, UPDATING, DELETING or ACTIVE.
    status: str
    #: True while DynamoDB copies the table's existing items into the index.
    backfilling: bool
    #: The index's item count as DynamoDB reports it (refreshed about every six hours).
    item_count: int | None
    #: Seconds since the wait began.
    elapsed_s: float

    @property
    def ready(self) -> bool:
        """ACTIVE and backfilled: queries on the index see every item."""
        return self.status == "ACTIVE" and not self.backfilling


@dataclass(frozen=True)
class IndexAdded:
    """The outcome of `TableManager.add_index`."""

    #: The table's info once the index is ready (also what the manager now remembers).
    info: TableInfo
    #: False if the index was on the table already (then only waited for, if still building).
    created: bool


@dataclass(frozen=True)
class IndexGaps:
    """How a table's indexes differ from the declared ones (see `compare_indexes`)."""

    #: Declared indexes the table lacks, in declaration order.
    missing: tuple[str, ...] = ()
    #: Declared indexes the table has on another attribute: name -> (table's, declared).
    mismatched: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.missing or self.mismatched)


def compare_indexes(info: TableInfo, declared: Mapping[str, IndexSpec]) -> IndexGaps:
    """Which of the ``declared`` indexes ``info``'s table lacks, or has keyed on another
    attribute. Indexes the table has but nobody declared are not a gap (``query`` uses them)."""
    missing = tuple(name for name in declared if name not in info.index_keys)
    mismatched = {
        name: (info.index_keys[name], spec.attribute)
        for name, spec in declared.items()
        if name in info.index_keys and info.index_keys[name] != spec.attribute
    }
    return IndexGaps(missing, mismatched)


class TableManager:
    """Makes sure a collection's table exists and is ACTIVE before it is used."""

    def __init__(
        self,
        client: Any,
        indexes_for: Callable[[str], Mapping[str, IndexSpec]],
        call: Callable[[str, str, Callable[[], Any]], Any],
        sleep: Callable[[float], None] = time.sleep,
        *,
        stream_view_type: str | None = None,
    ) -> None:
        """``client`` is a boto3 DynamoDB client (the control plane: never DAX);
        ``stream_view_type``: the tables it creates get a stream of that view type;
        ``indexes_for(db_name)`` gives the declared indexes of a collection; ``call(operation,
        table, fn)`` runs ``fn`` under the service's retry policy and error translation."""
        self._client = client
        self._indexes_for = indexes_for
        self._call = call
        self._sleep = sleep
        self._stream_view_type = stream_view_type
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

    def refresh(self, table: str) -> TableInfo | None:
        """Describe ``table`` again (its indexes changed); None if it does not exist."""
        self.forget(table)
        return self.find(table)

    def add_index(
        self,
        table: str,
        name: str,
        spec: IndexSpec,
        on_progress: Callable[[IndexProgress], None] | None = None,
        *,
        poll_s: float = INDEX_POLL_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> IndexAdded:
        """Add the global secondary index ``name`` (keyed on ``spec``) to the existing
        ``table`` and wait until it is ACTIVE and backfilled; idempotent.

        An index of that name already there is only waited for (if still building); one keyed
        on another attribute raises `ConfigError`. ``on_progress`` gets each DescribeTable
        answer while waiting. The table's remembered info is replaced by the new one, so this
        process's queries can use the index at once.

        Raises:
            ConfigError: the table is not keyed on ``_id``, has ``name`` on another attribute,
                or defines ``spec.attribute`` with another type.
            ValidationError: the table does not exist (code ``ResourceNotFoundException``).
        """
        started = clock()
        description = self._require(table)
        created = False
        if _gsi(description, name) is None:
            created = self._create_index(description, name, spec)
        description = self._wait_index(table, name, spec, on_progress, poll_s, clock, started)
        info = _info_from(description)
        self._ready[table] = info  # a plain dict store: safe beside readers, no lock held
        return IndexAdded(info=info, created=created)

    def _require(self, table: str) -> dict[str, Any]:
        """The table's description; `ValidationError` if it does not exist."""
        description = self._describe(table)
        if description is None:
            raise ValidationError(
                f"Table {table!r} does not exist: create it first (it gets every declared "
                "index when it is created).",
                code="ResourceNotFoundException",
                operation="DescribeTable",
            )
        _check_key_schema(description)
        return description

    def _create_index(self, description: Mapping[str, Any], name: str, spec: IndexSpec) -> bool:
        """UpdateTable creating the index; False if somebody else created it meanwhile."""
        table = str(description["TableName"])
        params = _create_index_params(description, name, spec)
        try:
            self._call("UpdateTable", table, lambda: self._client.update_table(**params))
        except GatewayError:
            # Another process may have added it between our DescribeTable and UpdateTable
            # (DynamoDB then refuses ours): that is the outcome we wanted.
            again = self._describe(table)
            if again is not None and _gsi(again, name) is not None:
                return False
            raise
        return True

    def _wait_index(
        self,
        table: str,
        name: str,
        spec: IndexSpec,
        on_progress: Callable[[IndexProgress], None] | None,
        poll_s: float,
        clock: Callable[[], float],
        started: float,
    ) -> dict[str, Any]:
        """Poll DescribeTable until the index is ready; its description then."""
        while True:
            description = self._require(table)
            index = _gsi(description, name)
            if index is None:
                raise ServiceUnavailableError(
                    f"Index {name!r} of table {table!r} disappeared while it was being built "
                    "(deleted, or its creation failed): run the command again.",
                    operation="DescribeTable",
                )
            _check_index_key(table, name, index, spec)
            progress = IndexProgress(
                status=str(index.get("IndexStatus", "ACTIVE")),
                backfilling=bool(index.get("Backfilling", False)),
                item_count=index.get("ItemCount"),
                elapsed_s=clock() - started,
            )
            if on_progress is not None:
                on_progress(progress)
            if progress.ready and description.get("TableStatus", "ACTIVE") == "ACTIVE":
                return description
            self._sleep(poll_s)

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
        if self._stream_view_type is not None:
            params["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": self._stream_view_type,
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
        """Describe the table until it and its indexes are ACTIVE. Each DescribeTable goes
        through the retry policy (botocore's ``table_exists`` waiter would give up on the
        first throttled answer)."""
        for attempt in range(TABLE_POLL_MAX_ATTEMPTS):
            description = self._describe(table)  # None: not visible yet after CreateTable
            if (
                description is not None
                and description.get("TableStatus") == "ACTIVE"
                and not _indexes_pending(description)
            ):
                return description
            if attempt + 1 < TABLE_POLL_MAX_ATTEMPTS:
                self._sleep(TABLE_POLL_DELAY_S)
        raise ServiceUnavailableError(
            f"Table {table!r} (or one of its indexes) did not become ACTIVE in "
            f"{TABLE_POLL_DELAY_S * TABLE_POLL_MAX_ATTEMPTS} s.",
            operation="DescribeTable",
        )


def table_manager_of(service: Any) -> TableManager:
    """The `TableManager` of a DynamoDBService, or of the one a caching gateway wraps: the
    commands that change a table (add an index, delete it) must update what the service
    remembers of it. DynamoDBService has no public accessor for its manager yet: this is the
    one place that reaches into it."""
    bare = getattr(service, "service", service)
    manager = getattr(bare, "_tables", None)
    if not isinstance(manager, TableManager):
        raise TypeError(f"{bare!r} has no TableManager")
    return manager


def _gsi(description: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The description of the table's global secondary index ``name``, if it has one."""
    for index in description.get("GlobalSecondaryIndexes", []) or []:
        if index.get("IndexName") == name:
            return dict(index)
    return None


def _hash_key(index: Mapping[str, Any]) -> str | None:
    for key in index.get("KeySchema", []):
        if key.get("KeyType") == "HASH":
            return str(key["AttributeName"])
    return None


def _check_index_key(table: str, name: str, index: Mapping[str, Any], spec: IndexSpec) -> None:
    """`ConfigError` if the table's index ``name`` is keyed on another attribute than declared
    (DynamoDB cannot change an index's key: queries would silently use the wrong one)."""
    attribute = _hash_key(index)
    if attribute is not None and attribute != spec.attribute:
        raise ConfigError(
            f"Table {table!r} has an index {name!r} keyed on {attribute!r}, but it is declared "
            f"on {spec.attribute!r}. DynamoDB cannot change an index's key: declare the index "
            "under another name, or delete the table's index (UpdateTable, "
            "GlobalSecondaryIndexUpdates Delete) and add it again.",
            operation="UpdateTable",
        )


def _create_index_params(
    description: Mapping[str, Any], name: str, spec: IndexSpec
) -> dict[str, Any]:
    """UpdateTable's parameters to create ``name``: every attribute definition the table has
    plus the index's (DynamoDB wants the new key defined; some emulators replace the list)."""
    table = str(description["TableName"])
    definitions = {
        str(a["AttributeName"]): str(a["AttributeType"])
        for a in description.get("AttributeDefinitions", [])
    }
    defined = definitions.setdefault(spec.attribute, spec.type)
    if defined != spec.type:
        raise ConfigError(
            f"Index {name!r} is declared on {spec.attribute!r} of type {spec.type}, but table "
            f"{table!r} defines {spec.attribute!r} as {defined} (for another index): declare "
            f"the index with type {defined}.",
            operation="UpdateTable",
        )
    create: dict[str, Any] = {
        "IndexName": name,
        "KeySchema": [{"AttributeName": spec.attribute, "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "ALL"},
    }
    throughput = _provisioned_throughput(description)
    if throughput is not None:  # a provisioned table's index needs capacity of its own
        create["ProvisionedThroughput"] = throughput
    return {
        "TableName": table,
        "AttributeDefinitions": [
            {"AttributeName": attribute, "AttributeType": kind}
            for attribute, kind in definitions.items()
        ],
        "GlobalSecondaryIndexUpdates": [{"Create": create}],
    }


def _provisioned_throughput(description: Mapping[str, Any]) -> dict[str, int] | None:
    """The table's read/write capacity if it is billed as provisioned, else None."""
    mode = (description.get("BillingModeSummary") or {}).get("BillingMode")
    throughput = description.get("ProvisionedThroughput") or {}
    reads = int(throughput.get("ReadCapacityUnits") or 0)
    writes = int(throughput.get("WriteCapacityUnits") or 0)
    if mode == "PAY_PER_REQUEST" or (mode is None and not (reads and writes)):
        return None
    return {"ReadCapacityUnits": max(reads, 1), "WriteCapacityUnits": max(writes, 1)}


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


__all__ = [
    "IndexAdded",
    "IndexGaps",
    "IndexProgress",
    "IndexSpec",
    "TableInfo",
    "TableManager",
    "compare_indexes",
    "table_manager_of",
]
