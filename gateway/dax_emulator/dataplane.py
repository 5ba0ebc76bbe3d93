"""The data plane: DAX methods answered from DAX's caches or from DynamoDB (boto3).

Caching follows what AWS documents for DAX:

* **Item cache** (``GetItem``, ``BatchGetItem``): an eventually consistent read is answered from
  the cache; a miss reads DynamoDB (eventually consistent, the whole item) and stores the item
  for ``record_ttl_s``, or a *negative entry* when there is none. Projections are applied to the
  cached item, so one entry serves every projection of an item.
* **Write-through**: ``PutItem``, ``UpdateItem``, ``DeleteItem``, ``BatchWriteItem`` and
  ``TransactWriteItems`` go to DynamoDB first; when it succeeds, the item cache gets the new
  item (a delete leaves a negative entry; an update whose new image the emulator does not see,
  because the caller asked for old or updated-only values, drops the entry). A failed write
  (a condition that did not hold) leaves the cache as it was.
* **Query cache** (``Query``, ``Scan``): an eventually consistent answer is cached under all of
  its parameters for ``query_ttl_s``, empty answers included. Writes never update or invalidate
  it, through this emulator or not: a query can miss a write until its entry expires.
* **Strongly consistent reads** (``ConsistentRead``) and ``TransactGetItems`` pass through to
  DynamoDB, and neither read nor fill a cache.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

from gateway.boto_sessions import new_session
from gateway.dax_emulator.cache import TtlLru
from gateway.dax_emulator.cbor import Encoder
from gateway.dax_emulator.codec import (
    AttributeLists,
    BadRequest,
    Item,
    KeySchema,
    Path,
    cache_key,
    compound_key_bytes,
    decode_compound_key,
    decode_key,
    decode_values,
    encode_key,
    encode_partial,
    encode_projection,
    encode_values,
)
from gateway.dax_emulator.errors import TABLE_NOT_FOUND, DaxFailure, internal
from gateway.dax_emulator.expressions import Translator

logger = logging.getLogger(__name__)

# DAX's request parameter ids (the keys of a request's keyword map).
P_PROJECTION = 0
P_NAMES = 1
P_CONSISTENT = 2
P_CAPACITY = 3
P_CONDITION = 4
P_VALUES = 5
P_METRICS = 6
P_RETURN_VALUES = 7
P_UPDATE = 8
P_START_KEY = 9
P_FILTER = 10
P_INDEX = 11
P_KEY_CONDITION = 12
P_LIMIT = 13
P_FORWARD = 14
P_SELECT = 15
P_SEGMENT = 16
P_TOTAL_SEGMENTS = 17
P_TOKEN = 19
# DAX's response parameter ids.
R_ITEM = 0
R_CAPACITY = 1
R_ATTRIBUTES = 2
R_ITEMS = 7
R_COUNT = 8
R_LAST_KEY = 9
R_SCANNED = 10

RETURN_VALUES = {1: "NONE", 2: "ALL_OLD", 3: "UPDATED_OLD", 4: "ALL_NEW", 5: "UPDATED_NEW"}
RETURN_CAPACITY = {0: "NONE", 1: "TOTAL", 2: "INDEXES"}
RETURN_METRICS = {0: "NONE", 1: "SIZE"}
SELECT = {1: "ALL_ATTRIBUTES", 2: "ALL_PROJECTED_ATTRIBUTES", 3: "COUNT", 4: "SPECIFIC_ATTRIBUTES"}
# Transaction operation codes.
OP_PUT, OP_DELETE, OP_UPDATE, OP_CHECK = 2, 7, 9, 12

SCHEMA_TTL_S = 60.0


def _table(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("a table name must be UTF-8") from None
    if not isinstance(value, str) or not value:
        raise BadRequest("a table name must be a non-empty string")
    return value


def _kwargs(value: Any) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("a request's parameters must be a map")
    return value


def _choice(kwargs: Mapping[Any, Any], param: int, names: Mapping[int, str], default: str) -> str:
    if param not in kwargs:
        return default
    try:
        return names[kwargs[param]]
    except (KeyError, TypeError):
        raise BadRequest(f"bad value for parameter {param}") from None


def _int_param(kwargs: Mapping[Any, Any], param: int) -> int | None:
    value = kwargs.get(param)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"parameter {param} must be an integer")
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"__b": bytes(value).hex()}
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


class _Body:
    """A response's keyword map (parameter id -> encoded value)."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, bytes]] = []

    def add(self, param: int, encoded: bytes) -> None:
        self.entries.append((param, encoded))

    def encode(self) -> bytes:
        enc = Encoder().map(len(self.entries))
        for param, encoded in self.entries:
            enc.integer(param).raw(encoded)
        return enc.getvalue()


def _capacity_bytes(capacity: Mapping[str, Any]) -> bytes:
    """ConsumedCapacity as the normal operations carry it (CBOR in a byte string)."""
    inner = Encoder().text(str(capacity.get("TableName", "")))
    inner.double(float(capacity.get("CapacityUnits", 0.0)))
    table = capacity.get("Table")
    if table is None:
        inner.null()
    else:
        inner.double(float(table.get("CapacityUnits", 0.0)))
    for field in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        indexes = capacity.get(field)
        if indexes is None:
            inner.null()
        else:
            inner.map(len(indexes))
            for name, units in indexes.items():
                inner.text(name).double(float(units.get("CapacityUnits", 0.0)))
    return Encoder().blob(inner.getvalue()).getvalue()


def _capacity_map(capacity: Mapping[str, Any]) -> dict[int, Any]:
    """ConsumedCapacity as the transactions carry it (a map keyed by field ids)."""
    fields = {"CapacityUnits": 1, "ReadCapacityUnits": 2, "WriteCapacityUnits": 3}
    out: dict[int, Any] = {4: str(capacity.get("TableName", ""))}
    for name, field_id in fields.items():
        if name in capacity:
            out[field_id] = float(capacity[name])
    if "Table" in capacity:
        out[5] = _capacity_map({**capacity["Table"], "TableName": out[4]})
    return out


class DataPlane:
    """DAX's methods over a DynamoDB endpoint, with DAX's item and query caches."""

    def __init__(
        self,
        endpoint_url: str | None,
        *,
        region: str = "us-east-1",
        record_ttl_s: float = 300.0,
        query_ttl_s: float = 300.0,
        item_cache_size: int = 100_000,
        query_cache_size: int = 10_000,
        client: Any = None,
    ) -> None:
        self.client = client or new_session().client(
            "dynamodb",
            region_name=region,
            endpoint_url=endpoint_url,
            config=botocore.config.Config(
                max_pool_connections=64,
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
        self.items = TtlLru(item_cache_size, record_ttl_s)
        self.queries = TtlLru(query_cache_size, query_ttl_s)
        self.lists = AttributeLists()
        self.upstream_calls: Counter[str] = Counter()
        self._schemas: dict[str, tuple[float, KeySchema]] = {}
        self._schema_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self.methods: dict[str, Callable[[list[Any]], bytes]] = {
            "GetItem": self.get_item,
            "PutItem": self.put_item,
            "UpdateItem": self.update_item,
            "DeleteItem": self.delete_item,
            "Query": self.query,
            "Scan": self.scan,
            "BatchGetItem": self.batch_get_item,
            "BatchWriteItem": self.batch_write_item,
            "TransactGetItems": self.transact_get_items,
            "TransactWriteItems": self.transact_write_items,
        }

    # -- DynamoDB -------------------------------------------------------------------------

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One DynamoDB call; its errors become DAX error answers."""
        with self._counter_lock:
            self.upstream_calls[operation] += 1
        method = getattr(self.client, _snake(operation))
        try:
            response: dict[str, Any] = method(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "InternalServerError")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
            reasons = exc.response.get("CancellationReasons")
            raise DaxFailure(
                code,
                str(error.get("Message") or code),
                status=status,
                cancellation_reasons=(
                    [[r.get("Code"), r.get("Message")] for r in reasons] if reasons else None
                ),
            ) from None
        except BotoCoreError as exc:
            raise internal(f"DynamoDB could not be reached: {exc}") from None
        response.pop("ResponseMetadata", None)
        return response

    def key_schema(self, table: str) -> KeySchema:
        now = time.monotonic()
        with self._schema_lock:
            found = self._schemas.get(table)
        if found is not None and found[0] > now:
            return found[1]
        try:
            description = self.call("DescribeTable", {"TableName": table})["Table"]
        except DaxFailure as exc:
            if exc.code == "ResourceNotFoundException":
                raise DaxFailure(exc.code, exc.message, codes=TABLE_NOT_FOUND) from None
            raise
        types = {
            a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]
        }
        ordered = sorted(description["KeySchema"], key=lambda k: k["KeyType"] != "HASH")
        schema: KeySchema = tuple((k["AttributeName"], types[k["AttributeName"]]) for k in ordered)
        with self._schema_lock:
            self._schemas[table] = (now + SCHEMA_TTL_S, schema)
        return schema

    def clear_caches(self) -> None:
        self.items.clear()
        self.queries.clear()

    # -- single items ---------------------------------------------------------------------

    def get_item(self, args: list[Any]) -> bytes:
        table = _table(args[0])
        schema = self.key_schema(table)
        key = decode_key(args[1], schema)
        kwargs = _kwargs(args[2])
        capacity = _choice(kwargs, P_CAPACITY, RETURN_CAPACITY, "NONE")
        translator = Translator()
        paths: list[Path] | None = None
        params: dict[str, Any] = {"TableName": table, "Key": key}
        if capacity != "NONE":
            params["ReturnConsumedCapacity"] = capacity
        if kwargs.get(P_PROJECTION) is not None:
            text, paths = translator.projection(kwargs[P_PROJECTION])
        consumed = None
        if kwargs.get(P_CONSISTENT):
            params["ConsistentRead"] = True
            if paths is not None:
                params["ProjectionExpression"] = text
                params["ExpressionAttributeNames"] = translator.attribute_names()
            response = self.call("GetItem", params)
            item = response.get("Item")
            consumed = response.get("ConsumedCapacity")
        else:
            identity = cache_key(table, key, schema)
            hit, item = self.items.get(identity)
            if not hit:
                response = self.call("GetItem", params)
                item = response.get("Item")
                consumed = response.get("ConsumedCapacity")
                self.items.put(identity, item)
        body = _Body()
        if item is not None:
            body.add(R_ITEM, self._item_entry(item, schema, paths, with_key=False))
        if consumed and capacity != "NONE":
            body.add(R_CAPACITY, _capacity_bytes(consumed))
        return body.encode()

    def put_item(self, args: list[Any]) -> bytes:
        table = _table(args[0])
        schema = self.key_schema(table)
        key = decode_key(args[1], schema)
        item = {**decode_values(args[2], self.lists), **key}
        kwargs = _kwargs(args[3])
        params: dict[str, Any] = {"TableName": table, "Item": item}
        return_values = self._write_params(params, kwargs, allow_update=False)
        response = self.call("PutItem", params)
        self.items.put(cache_key(table, key, schema), item)
        return self._write_answer(response, schema, return_values)

    def update_item(self, args: list[Any]) -> bytes:
        table = _table(args[0])
        schema = self.key_schema(table)
        key = decode_key(args[1], schema)
        kwargs = _kwargs(args[2])
        params: dict[str, Any] = {"TableName": table, "Key": key}
        return_values = self._write_params(params, kwargs, allow_update=True)
        identity = cache_key(table, key, schema)
        if return_values in ("NONE", "ALL_NEW"):
            params["ReturnValues"] = "ALL_NEW"  # the new image, for the item cache
            response = self.call("UpdateItem", params)
            new_item = {**response.get("Attributes", {}), **key}
            self.items.put(identity, new_item)
            if return_values == "NONE":
                response.pop("Attributes", None)
        else:
            response = self.call("UpdateItem", params)
            self.items.delete(identity)
        return self._write_answer(response, schema, return_values)

    def delete_item(self, args: list[Any]) -> bytes:
        table = _table(args[0])
        schema = self.key_schema(table)
        key = decode_key(args[1], schema)
        kwargs = _kwargs(args[2])
        params: dict[str, Any] = {"TableName": table, "Key": key}
        return_values = self._write_params(params, kwargs, allow_update=False)
        response = self.call("DeleteItem", params)
        self.items.put(cache_key(table, key, schema), None)  # a negative entry
        return self._write_answer(response, schema, return_values)

    def _write_params(
        self, params: dict[str, Any], kwargs: Mapping[Any, Any], *, allow_update: bool
    ) -> str:
        translator = Translator()
        if kwargs.get(P_CONDITION) is not None:
            params["ConditionExpression"] = translator.condition(kwargs[P_CONDITION])
        if allow_update and kwargs.get(P_UPDATE) is not None:
            params["UpdateExpression"] = translator.update(kwargs[P_UPDATE])
        self._add_placeholders(params, translator)
        return_values = _choice(kwargs, P_RETURN_VALUES, RETURN_VALUES, "NONE")
        if return_values != "NONE":
            params["ReturnValues"] = return_values
        capacity = _choice(kwargs, P_CAPACITY, RETURN_CAPACITY, "NONE")
        if capacity != "NONE":
            params["ReturnConsumedCapacity"] = capacity
        metrics = _choice(kwargs, P_METRICS, RETURN_METRICS, "NONE")
        if metrics != "NONE":
            params["ReturnItemCollectionMetrics"] = metrics
        return return_values

    @staticmethod
    def _add_placeholders(params: dict[str, Any], translator: Translator) -> None:
        if translator.names:
            params["ExpressionAttributeNames"] = dict(translator.names)
        if translator.values:
            params["ExpressionAttributeValues"] = dict(translator.values)

    def _write_answer(
        self, response: Mapping[str, Any], schema: KeySchema, return_values: str
    ) -> bytes:
        body = _Body()
        attributes = response.get("Attributes")
        if attributes and return_values != "NONE":
            if return_values in ("UPDATED_OLD", "UPDATED_NEW"):
                encoded = encode_partial(attributes, self.lists)
            else:
                encoded = encode_values(attributes, schema, self.lists)
            body.add(R_ATTRIBUTES, Encoder().blob(encoded).getvalue())
        if response.get("ConsumedCapacity"):
            body.add(R_CAPACITY, _capacity_bytes(response["ConsumedCapacity"]))
        return body.encode()

    def _item_entry(
        self, item: Item, schema: KeySchema, paths: list[Path] | None, *, with_key: bool
    ) -> bytes:
        """An item in an answer: a projection map, or its values' bytes (with the key's
        bytes before them, as ``[key, values]``, in query and scan answers)."""
        enc = Encoder()
        if paths is not None:
            encode_projection(item, paths, enc)
            return enc.getvalue()
        if with_key:
            enc.array(2).blob(encode_key(item, schema))
        return enc.blob(encode_values(item, schema, self.lists)).getvalue()

    # -- queries and scans ----------------------------------------------------------------

    def query(self, args: list[Any]) -> bytes:
        table = _table(args[0])
        kwargs = _kwargs(args[2])
        translator = Translator()
        params: dict[str, Any] = {"TableName": table}
        if args[1] is not None:
            params["KeyConditionExpression"] = translator.condition(args[1])
        if P_FORWARD in kwargs:
            params["ScanIndexForward"] = bool(kwargs[P_FORWARD])
        return self._read_many("Query", table, params, kwargs, translator)

    def scan(self, args: list[Any]) -> bytes:
        table = _table(args[0])
        kwargs = _kwargs(args[1])
        params: dict[str, Any] = {"TableName": table}
        for param, name in ((P_SEGMENT, "Segment"), (P_TOTAL_SEGMENTS, "TotalSegments")):
            value = _int_param(kwargs, param)
            if value is not None:
                params[name] = value
        return self._read_many("Scan", table, params, kwargs, Translator())

    def _read_many(
        self,
        operation: str,
        table: str,
        params: dict[str, Any],
        kwargs: Mapping[Any, Any],
        translator: Translator,
    ) -> bytes:
        schema = self.key_schema(table)
        if kwargs.get(P_FILTER) is not None:
            params["FilterExpression"] = translator.condition(kwargs[P_FILTER])
        paths: list[Path] | None = None
        if kwargs.get(P_PROJECTION) is not None:
            params["ProjectionExpression"], paths = translator.projection(kwargs[P_PROJECTION])
        index = kwargs.get(P_INDEX)
        if index is not None:
            params["IndexName"] = _table(index)
        if P_SELECT in kwargs:
            params["Select"] = _choice(kwargs, P_SELECT, SELECT, "ALL_ATTRIBUTES")
        limit = _int_param(kwargs, P_LIMIT)
        if limit is not None:
            params["Limit"] = limit
        if kwargs.get(P_START_KEY) is not None:
            start = kwargs[P_START_KEY]
            params["ExclusiveStartKey"] = (
                decode_compound_key(start) if index is not None else decode_key(start, schema)
            )
        capacity = _choice(kwargs, P_CAPACITY, RETURN_CAPACITY, "NONE")
        if capacity != "NONE":
            params["ReturnConsumedCapacity"] = capacity
        self._add_placeholders(params, translator)
        consistent = bool(kwargs.get(P_CONSISTENT))
        if consistent:
            params["ConsistentRead"] = True
            response = self.call(operation, params)
        else:
            identity = (operation, json.dumps(params, sort_keys=True, default=_json_default))
            hit, response = self.queries.get(identity)
            if not hit:
                response = self.call(operation, params)
                self.queries.put(identity, response)
        body = _Body()
        if "Items" in response:
            enc = Encoder().array(len(response["Items"]))
            for item in response["Items"]:
                enc.raw(self._item_entry(item, schema, paths, with_key=True))
            body.add(R_ITEMS, enc.getvalue())
        body.add(R_COUNT, Encoder().integer(int(response.get("Count", 0))).getvalue())
        body.add(R_SCANNED, Encoder().integer(int(response.get("ScannedCount", 0))).getvalue())
        last = response.get("LastEvaluatedKey")
        if last:
            raw = compound_key_bytes(last) if index is not None else encode_key(last, schema)
            body.add(R_LAST_KEY, Encoder().blob(raw).getvalue())
        if response.get("ConsumedCapacity") and capacity != "NONE":
            body.add(R_CAPACITY, _capacity_bytes(response["ConsumedCapacity"]))
        return body.encode()

    # -- batches --------------------------------------------------------------------------

    def batch_get_item(self, args: list[Any]) -> bytes:
        requested = args[0]
        if not isinstance(requested, dict) or not requested:
            raise BadRequest("BatchGetItem needs at least one table")
        kwargs = _kwargs(args[1])
        capacity = _choice(kwargs, P_CAPACITY, RETURN_CAPACITY, "NONE")
        found: dict[str, list[Item]] = {}
        unprocessed: dict[str, list[Item]] = {}
        projections: dict[str, list[Path] | None] = {}
        schemas: dict[str, KeySchema] = {}
        upstream: dict[str, dict[str, Any]] = {}
        misses: dict[str, dict[tuple[Any, ...], Item]] = {}
        for raw_table, spec in requested.items():
            table = _table(raw_table)
            if not isinstance(spec, list) or len(spec) != 3 or not isinstance(spec[2], list):
                raise BadRequest("each BatchGetItem table needs [consistent, projection, keys]")
            consistent, projection, raw_keys = spec
            schema = schemas[table] = self.key_schema(table)
            keys = [decode_key(k, schema) for k in raw_keys]
            found[table] = []
            projections[table] = None
            table_request: dict[str, Any] = {}
            if projection is not None:
                translator = Translator()
                text, paths = translator.projection(projection)
                projections[table] = paths
                if consistent:
                    table_request["ProjectionExpression"] = text
                    table_request["ExpressionAttributeNames"] = translator.attribute_names()
            if consistent:
                table_request.update({"Keys": keys, "ConsistentRead": True})
                upstream[table] = table_request
                continue
            for key in keys:
                identity = cache_key(table, key, schema)
                hit, item = self.items.get(identity)
                if hit:
                    if item is not None:
                        found[table].append(item)
                else:
                    misses.setdefault(table, {})[identity] = key
            if table in misses:
                upstream[table] = {"Keys": list(misses[table].values())}
        consumed: list[dict[str, Any]] = []
        if upstream:
            params: dict[str, Any] = {"RequestItems": upstream}
            if capacity != "NONE":
                params["ReturnConsumedCapacity"] = capacity
            response = self.call("BatchGetItem", params)
            consumed = response.get("ConsumedCapacity") or []
            for table, items in response.get("Responses", {}).items():
                found[table].extend(items)
                for item in items:
                    if table in misses:
                        identity = cache_key(table, item, schemas[table])
                        if misses[table].pop(identity, None) is not None:
                            self.items.put(identity, item)
            for table, spec in response.get("UnprocessedKeys", {}).items():
                unprocessed[table] = spec.get("Keys", [])
                for key in unprocessed[table]:
                    misses.get(table, {}).pop(cache_key(table, key, schemas[table]), None)
            for remaining in misses.values():
                for identity in remaining:
                    self.items.put(identity, None)  # asked for and not there: negative entry
        enc = Encoder().array(2).map(len(found))
        for table, items in found.items():
            table_paths = projections[table]
            enc.text(table).array(len(items) if table_paths is not None else 2 * len(items))
            for item in items:
                if table_paths is not None:
                    encode_projection(item, table_paths, enc)
                else:
                    enc.blob(encode_key(item, schemas[table]))
                    enc.blob(encode_values(item, schemas[table], self.lists))
        enc.map(len(unprocessed))
        for table, keys in unprocessed.items():
            enc.text(table).array(len(keys))
            for key in keys:
                enc.blob(encode_key(key, schemas[table]))
        shown = consumed if capacity != "NONE" else []
        enc.array(len(shown))
        for entry in shown:
            enc.raw(_capacity_bytes(entry))
        return enc.getvalue()

    def batch_write_item(self, args: list[Any]) -> bytes:
        requested = args[0]
        if not isinstance(requested, dict) or not requested:
            raise BadRequest("BatchWriteItem needs at least one table")
        kwargs = _kwargs(args[1])
        upstream: dict[str, list[dict[str, Any]]] = {}
        schemas: dict[str, KeySchema] = {}
        for raw_table, pairs in requested.items():
            table = _table(raw_table)
            if not isinstance(pairs, list) or len(pairs) % 2 or not pairs:
                raise BadRequest("each BatchWriteItem table needs [key, values-or-null, ...]")
            schema = schemas[table] = self.key_schema(table)
            writes = upstream[table] = []
            for raw_key, raw_values in zip(pairs[::2], pairs[1::2], strict=True):
                key = decode_key(raw_key, schema)
                if raw_values is None:
                    writes.append({"DeleteRequest": {"Key": key}})
                else:
                    item = {**decode_values(raw_values, self.lists), **key}
                    writes.append({"PutRequest": {"Item": item}})
        params: dict[str, Any] = {"RequestItems": upstream}
        capacity = _choice(kwargs, P_CAPACITY, RETURN_CAPACITY, "NONE")
        if capacity != "NONE":
            params["ReturnConsumedCapacity"] = capacity
        response = self.call("BatchWriteItem", params)
        unprocessed = response.get("UnprocessedItems", {})
        left = {
            (table, json.dumps(w, sort_keys=True, default=_json_default))
            for table, writes in unprocessed.items()
            for w in writes
        }
        for table, writes in upstream.items():
            for write in writes:
                if "PutRequest" in write:
                    item = write["PutRequest"]["Item"]
                    identity = cache_key(table, item, schemas[table])
                    value: Item | None = item
                else:
                    identity = cache_key(table, write["DeleteRequest"]["Key"], schemas[table])
                    value = None
                if (table, json.dumps(write, sort_keys=True, default=_json_default)) in left:
                    self.items.delete(identity)
                else:
                    self.items.put(identity, value)
        enc = Encoder().map(len(unprocessed))
        for table, writes in unprocessed.items():
            enc.text(table).array(2 * len(writes))
            for write in writes:
                if "PutRequest" in write:
                    item = write["PutRequest"]["Item"]
                    enc.blob(encode_key(item, schemas[table]))
                    enc.blob(encode_values(item, schemas[table], self.lists))
                else:
                    enc.blob(encode_key(write["DeleteRequest"]["Key"], schemas[table])).null()
        consumed = (response.get("ConsumedCapacity") or []) if capacity != "NONE" else []
        enc.array(len(consumed))
        for entry in consumed:
            enc.raw(_capacity_bytes(entry))
        return enc.map(0).getvalue()

    # -- transactions ---------------------------------------------------------------------

    def transact_get_items(self, args: list[Any]) -> bytes:
        tables, keys, projections = args[0], args[1], args[2]
        if not isinstance(tables, list) or not isinstance(keys, list) or len(tables) != len(keys):
            raise BadRequest("TransactGetItems needs as many keys as table names")
        if projections is not None and (
            not isinstance(projections, list) or len(projections) != len(tables)
        ):
            raise BadRequest("TransactGetItems needs one projection (or null) per item")
        kwargs = _kwargs(args[3])
        capacity = _choice(kwargs, P_CAPACITY, RETURN_CAPACITY, "NONE")
        transact: list[dict[str, Any]] = []
        shapes: list[tuple[KeySchema, list[Path] | None]] = []
        for i, raw_table in enumerate(tables):
            table = _table(raw_table)
            schema = self.key_schema(table)
            get: dict[str, Any] = {"TableName": table, "Key": decode_key(keys[i], schema)}
            paths = None
            if projections is not None and projections[i] is not None:
                translator = Translator()
                get["ProjectionExpression"], paths = translator.projection(projections[i])
                get["ExpressionAttributeNames"] = translator.attribute_names()
            transact.append({"Get": get})
            shapes.append((schema, paths))
        params: dict[str, Any] = {"TransactItems": transact}
        if capacity != "NONE":
            params["ReturnConsumedCapacity"] = capacity
        response = self.call("TransactGetItems", params)
        answers = response.get("Responses", [])
        enc = Encoder().array(2).array(len(shapes))
        for i, (schema, paths) in enumerate(shapes):
            item = answers[i].get("Item") if i < len(answers) else None
            if item is None:
                enc.null()
            elif paths is not None:
                encode_projection(item, paths, enc)
            else:
                enc.blob(encode_values(item, schema, self.lists))
        consumed = (response.get("ConsumedCapacity") or []) if capacity != "NONE" else []
        enc.value([_capacity_map(c) for c in consumed])
        return enc.getvalue()

    def transact_write_items(self, args: list[Any]) -> bytes:
        operations, tables, keys, values = args[0], args[1], args[2], args[3]
        failure_values, conditions, updates = args[5], args[6], args[7]
        if not all(isinstance(a, list) for a in (operations, tables, keys)) or not (
            len(operations) == len(tables) == len(keys)
        ):
            raise BadRequest("TransactWriteItems needs one table and key per operation")
        count = len(operations)

        def column(value: Any, name: str) -> list[Any]:
            if value is None:
                return [None] * count
            if not isinstance(value, list) or len(value) != count:
                raise BadRequest(f"TransactWriteItems: {name} must have one entry per operation")
            return value

        values = column(values, "values")
        failure_values = column(failure_values, "returnValuesOnConditionCheckFailure")
        conditions = column(conditions, "conditionExpressions")
        updates = column(updates, "updateExpressions")
        kwargs = _kwargs(args[8])
        transact: list[dict[str, Any]] = []
        effects: list[tuple[tuple[Any, ...], Item | None, bool]] = []
        for i, operation in enumerate(operations):
            table = _table(tables[i])
            schema = self.key_schema(table)
            key = decode_key(keys[i], schema)
            translator = Translator()
            entry: dict[str, Any] = {"TableName": table}
            identity = cache_key(table, key, schema)
            if operation == OP_PUT:
                if values[i] is None:
                    raise BadRequest("a transactional Put needs the item's values")
                item = {**decode_values(values[i], self.lists), **key}
                entry["Item"] = item
                name = "Put"
                effects.append((identity, item, True))
            elif operation in (OP_DELETE, OP_UPDATE, OP_CHECK):
                entry["Key"] = key
                name = {OP_DELETE: "Delete", OP_UPDATE: "Update", OP_CHECK: "ConditionCheck"}[
                    operation
                ]
                if operation == OP_UPDATE:
                    if updates[i] is None:
                        raise BadRequest("a transactional Update needs an update expression")
                    entry["UpdateExpression"] = translator.update(updates[i])
                if operation != OP_CHECK:
                    effects.append((identity, None, operation == OP_DELETE))
            else:
                raise BadRequest(f"unknown transaction operation {operation!r}")
            if conditions[i] is not None:
                entry["ConditionExpression"] = translator.condition(conditions[i])
            elif operation == OP_CHECK:
                raise BadRequest("a ConditionCheck needs a condition expression")
            self._add_placeholders(entry, translator)
            if failure_values[i] == 2:
                entry["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
            transact.append({name: entry})
        params: dict[str, Any] = {"TransactItems": transact}
        capacity = _choice(kwargs, P_CAPACITY, RETURN_CAPACITY, "NONE")
        if capacity != "NONE":
            params["ReturnConsumedCapacity"] = capacity
        token = kwargs.get(P_TOKEN)
        if token is not None:
            if not isinstance(token, str):
                raise BadRequest("ClientRequestToken must be a string")
            params["ClientRequestToken"] = token
        response = self.call("TransactWriteItems", params)
        for identity, image, known in effects:
            if known:
                self.items.put(identity, image)  # a Put's item, or a Delete's negative entry
            else:
                self.items.delete(identity)  # an Update: the new image is not known here
        consumed = (response.get("ConsumedCapacity") or []) if capacity != "NONE" else []
        enc = Encoder().array(3).array(0)
        enc.value([_capacity_map(c) for c in consumed])
        return enc.map(0).getvalue()

    # -- statistics -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._counter_lock:
            calls = dict(self.upstream_calls)
        return {
            "item_cache": {
                "hits": self.items.hits,
                "misses": self.items.misses,
                "size": len(self.items),
            },
            "query_cache": {
                "hits": self.queries.hits,
                "misses": self.queries.misses,
                "size": len(self.queries),
            },
            "upstream_calls": calls,
        }


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
