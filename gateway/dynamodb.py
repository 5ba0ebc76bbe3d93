"""DynamoDBService: the document service of the original spec, on boto3's resource interface.

One table per collection (created on the first write; a read of a collection whose table does
not exist answers as for an empty table and creates nothing), documents keyed on ``_id``,
numbers as Decimal, every scan page, batch reads and writes, GSI queries, and real revisions
enforced with conditional writes (see ``revisions.py``).

The data plane (items, batches, scans, queries) goes through a boto3 *resource*; DAX offers the
same interface, so a DAX resource can be passed in and this stays one code path. The control
plane (describing and creating tables) always goes to DynamoDB through a boto3 client.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from time import perf_counter_ns
from typing import Any, Final, Literal, TypeVar

import boto3
from boto3.dynamodb.conditions import Attr, ConditionBase, Key
from botocore.exceptions import BotoCoreError, ClientError

from gateway import json_protocol
from gateway.aws_errors import error_code, translate
from gateway.batching import (
    MAX_BATCH_GET_KEYS,
    MAX_BATCH_WRITE_ITEMS,
    CoalescerStats,
    KeyLocks,
    ReadCoalescer,
    Write,
    WriteCoalescer,
    WriteResult,
    write_with_revisions,
)
from gateway.boto_sessions import new_session
from gateway.bulk import DEFAULT_MAX_IN_FLIGHT, BulkExecutor, Task
from gateway.codec import (
    check_item_size,
    copy_document,
    decode_item,
    encode_document,
    encode_key_value,
    validate_collection_name,
    validate_id,
    validate_ids,
)
from gateway.errors import ConfigError, ConflictError, GatewayError, ValidationError
from gateway.metrics import (
    READ_OPERATIONS,
    WRITE_OPERATIONS,
    CapacityMeter,
    LatencyRecorder,
    condition_failure_units,
    cost_dollars,
)
from gateway.retry import RetryPolicy, botocore_config, may_have_been_applied
from gateway.revisions import RevisionMaker, parse_generation, revision_length
from gateway.service import ABSENT, Document, IfRev, SaveResult
from gateway.tables import IndexSpec, TableInfo, TableManager
from gateway.wire_items import (
    batch_get_in_wire_form,
    batch_write_in_wire_form,
    call_in_wire_form,
)

T = TypeVar("T")

_log = logging.getLogger("gateway")

#: DynamoDB's largest TotalSegments of a parallel scan.
MAX_SCAN_SEGMENTS = 1_000_000
#: How many times an unconditional save re-reads the stored revision when writers race on
#: one document; every lost race means another writer won, so this bounds pathological cases.
MAX_CONTENDED_SAVE_ATTEMPTS = 64

_ID = "_id"
_REV = "_rev"
_CONDITION_FAILED = "ConditionalCheckFailedException"


class _ConditionFailed(Exception):
    """Internal: a conditional write failed; carries the stored item AWS returned, if any."""

    def __init__(self, stored: Mapping[str, Any] | None) -> None:
        super().__init__("condition failed")
        self.stored = stored


class _Unknown(enum.Enum):
    UNKNOWN = "UNKNOWN"

    def __repr__(self) -> str:
        return "UNKNOWN_PREVIOUS"


#: What a write replaced, when it cannot be known: a batched write (BatchWriteItem returns no
#: old items), or an attempt whose answer was lost and was sent again (the retry's old item may
#: be the lost attempt's own).
UNKNOWN_PREVIOUS: Final = _Unknown.UNKNOWN
#: The item a write replaced (None: there was none), or `UNKNOWN_PREVIOUS`.
Previous = dict[str, Any] | None | Literal[_Unknown.UNKNOWN]


class _Attempts:
    """Internal: what `DynamoDBService._call` saw of one operation's failed attempts."""

    __slots__ = ("ambiguous",)

    def __init__(self) -> None:
        #: An attempt failed in a way that leaves open whether it was applied (its answer was
        #: lost: timeout, connection closed, 5xx; see `gateway.retry.may_have_been_applied`).
        self.ambiguous = False


class DynamoDBService:
    """The bare DynamoDB document service (no cache)."""

    def __init__(
        self,
        region_name: str = "us-east-1",
        endpoint_url: str | None = None,
        *,
        table_prefix: str = "",
        native_numbers: bool = False,
        consistent_read: bool = True,
        indexes: Mapping[str, Mapping[str, IndexSpec]] | None = None,
        retry_policy: RetryPolicy | None = None,
        data_resource: Any = None,
        session: boto3.session.Session | None = None,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        max_pool_connections: int = 50,
        revisions: RevisionMaker | None = None,
        coalesce_reads: bool = False,
        coalesce_writes: bool = False,
        coalesce_max_wait_s: float = 0.0,
        max_batch_get: int = MAX_BATCH_GET_KEYS,
        max_batch_write: int = MAX_BATCH_WRITE_ITEMS,
        bulk_max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        stream_view_type: str | None = None,
    ) -> None:
        """``data_resource``: a resource with boto3's DynamoDB interface for the data plane
        (e.g. DAX's); by default a boto3 resource for ``region_name`` / ``endpoint_url``.

        ``session``: the boto3 session to make the clients with, used as given; by default a
        new one whose parsed service models are shared with the process's other services
        (`gateway.boto_sessions`: one loader per data path, so a model file changed under
        ``AWS_DATA_PATH`` after the process first read it is not read again).

        ``coalesce_reads``: concurrent ``get`` / ``get_many`` calls on a table are merged into
        BatchGetItem requests of at most ``max_batch_get`` keys. ``coalesce_writes``:
        concurrent unconditional saves and deletes (and ``save_many`` / ``delete_many``) are
        merged into BatchWriteItem requests of at most ``max_batch_write`` items; conditional
        writes (``if_rev``) bypass batching. A batch leaves at once when none is in flight;
        ``coalesce_max_wait_s`` > 0 makes one that is not full wait that long for company.
        See ``gateway/batching.py``, and `write_with_revisions` there for how revisions stay
        strictly increasing in batched writes.

        ``bulk_max_in_flight``: how many BatchWriteItem / revision BatchGetItem requests
        ``save_many`` and ``delete_many`` keep in flight at once (without write coalescing), on
        a pool of that many threads that `close` stops; 1 sends them one at a time. Keep it at
        most ``max_pool_connections``. See ``gateway/bulk.py``.

        ``stream_view_type`` (e.g. ``"NEW_AND_OLD_IMAGES"``): tables this service creates get a
        DynamoDB stream of that view type (`gateway.streams` follows it); None: no stream.
        """
        if not 1 <= max_batch_get <= MAX_BATCH_GET_KEYS:
            raise ValueError(
                f"max_batch_get must be 1 to {MAX_BATCH_GET_KEYS}, got {max_batch_get!r}"
            )
        if not 1 <= max_batch_write <= MAX_BATCH_WRITE_ITEMS:
            raise ValueError(
                f"max_batch_write must be 1 to {MAX_BATCH_WRITE_ITEMS}, got {max_batch_write!r}"
            )
        if not coalesce_max_wait_s >= 0:
            raise ValueError(f"coalesce_max_wait_s must be >= 0, got {coalesce_max_wait_s!r}")
        if not isinstance(consistent_read, bool):
            raise ConfigError(f"consistent_read must be True or False, got {consistent_read!r}")
        self.coalesce_reads = coalesce_reads
        self.coalesce_writes = coalesce_writes
        self.coalesce_max_wait_s = coalesce_max_wait_s
        self.max_batch_get = max_batch_get
        self.max_batch_write = max_batch_write
        # One coalescer per table and direction, created on the table's first coalesced call.
        self._read_coalescers: dict[str, ReadCoalescer[dict[str, Any] | None]] = {}
        self._write_coalescers: dict[str, WriteCoalescer] = {}
        self._coalescers_lock = threading.Lock()
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.table_prefix = table_prefix
        self.native_numbers = native_numbers
        self.consistent_read = consistent_read
        self._indexes = {name: dict(spec) for name, spec in (indexes or {}).items()}
        self._retry = retry_policy or RetryPolicy()
        self._revisions = revisions or RevisionMaker()
        session = session or new_session(region_name)
        config = botocore_config(connect_timeout_s, read_timeout_s, max_pool_connections)
        self._client = session.client(
            "dynamodb", region_name=region_name, endpoint_url=endpoint_url, config=config
        )
        #: A data plane with a cache of its own (DAX) must see a write whose answer was lost
        #: and settled by a read around it again (see `_write_through_data_plane`).
        self._data_plane_caches = data_resource is not None
        self._assumed_lock = threading.Lock()
        self._last_assumed = 0
        self._resource = data_resource or session.resource(
            "dynamodb", region_name=region_name, endpoint_url=endpoint_url, config=config
        )
        #: Data-plane requests go through the plain client with items serialized in
        #: `gateway.wire_items`, skipping the resource's model walk; not with a data plane of
        #: its own (DAX), which must see every request.
        self._plain_client: Any = None
        if data_resource is None:
            self._plain_client = session.client(
                "dynamodb",
                region_name=region_name,
                endpoint_url=endpoint_url,
                config=botocore_config(
                    connect_timeout_s, read_timeout_s, max_pool_connections, validate=False
                ),
            )
            # botocore's walks of every value, skipped where they change nothing.
            json_protocol.install(self._plain_client)
        self._tables = TableManager(
            self._client, self._indexes_for, self._call, stream_view_type=stream_view_type
        )
        self._session = session
        self._client_config = config
        self._streams_client: Any = None
        #: Per-document locks ((table, id) keys) of the writes that are not coalesced: see
        #: `save_many_with_items`.
        self.write_locks = KeyLocks()
        #: Runs the requests of ``save_many`` / ``delete_many``, several at once.
        self._bulk = BulkExecutor(bulk_max_in_flight)
        self._table_objects: dict[str, Any] = {}
        self._table_objects_lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._closed = False
        self._latency = LatencyRecorder()
        self._capacity = CapacityMeter()
        # A response without ConsumedCapacity gets an estimate from item sizes, except from a
        # data resource of the caller's (DAX): DAX leaves it out of answers from its cache,
        # which cost DynamoDB nothing.
        self._estimate_capacity = data_resource is None
        _request_consumed_capacity(self._resource_client())
        if self._plain_client is not None:
            _request_consumed_capacity(self._plain_client)

    # ------------------------------------------------------------------ documents

    def save(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> SaveResult:
        """Replace (upsert) a document; returns its id and new revision.

        Every save is a conditional PutItem (with ``if_rev``, the caller's condition; without,
        "no newer revision stored", see ``revisions.py``). When an attempt's answer is lost
        (timeout, connection closed, 5xx) the retry policy sends it again, and the retry may
        fail its condition because of the first attempt, which was applied. The stored ``_rev``
        that DynamoDB hands back with the failure (``ReturnValuesOnConditionCheckFailure``) then
        equals the revision this call wrote (32 random hex digits: nobody else writes it), and
        the save succeeds with it instead of raising `ConflictError`. If another writer replaced
        the document between the lost attempt and the retry, that cannot be told from a write
        of ours that never happened: a conditional save then raises `ConflictError` (which is
        right for ``if_rev``: the document has moved on), an unconditional one writes again.
        """
        return self.save_with_item(db_name, doc_id, doc, if_rev=if_rev)[0]

    def save_with_item(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> tuple[SaveResult, dict[str, Any]]:
        """Like ``save``, also returning the item as written (with ``_id`` and ``_rev``)."""
        result, item, _ = self.save_with_previous(db_name, doc_id, doc, if_rev=if_rev)
        return result, item

    def save_with_previous(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> tuple[SaveResult, dict[str, Any], Previous]:
        """Like `save_with_item`, also returning the item the save replaced (see `Previous`).

        On a table with indexes the PutItem asks for the old item (``ReturnValues=ALL_OLD``,
        which DynamoDB answers without consuming more capacity); without indexes nothing is
        asked and the previous item is `UNKNOWN_PREVIOUS`.
        """
        table = self._table_name(db_name)
        doc_id, item = self.validate_save(db_name, doc_id, doc, if_rev=if_rev)
        info = self._ensure(table, db_name)
        want_old = bool(info.index_keys)
        previous: Previous = UNKNOWN_PREVIOUS
        if not self.coalesce_writes:
            with self.write_locks.hold([(table, doc_id)]):
                rev, previous = self._put(table, doc_id, item, if_rev, want_old)
        elif if_rev is None:
            rev = _rev_of(self._writes(table).submit(Write(doc_id, item)))
        else:
            # Conditional: bypasses batching, but not while the id is in a batch (see batching).
            with self._writes(table).exclusive([doc_id]):
                rev, previous = self._put(table, doc_id, item, if_rev, want_old)
        return {"id": doc_id, "rev": rev}, item, previous

    def validate_save(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> tuple[str, dict[str, Any]]:
        """Check a save's arguments without sending anything; returns the id and the item."""
        self._table_name(db_name)
        doc_id = validate_id(doc_id)
        _check_if_rev(if_rev)
        item = encode_document(doc)
        item[_ID] = doc_id
        check_item_size({**item, _REV: _REV_PLACEHOLDER}, doc_id)
        return doc_id, item

    def validate_save_many(
        self, db_name: str, docs: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Check a save_many's arguments without sending anything; returns id -> item."""
        self._table_name(db_name)
        return self._encode_many(docs)

    def get(self, db_name: str, doc_id: str) -> Document | None:
        """The document with ``_id`` and ``_rev``, or None."""
        table = self._table_name(db_name)
        doc_id = validate_id(doc_id)
        if self._find(table) is None:
            return None
        try:
            if self.coalesce_reads:
                item = self._reads(table).load(doc_id)
            else:
                params: dict[str, Any] = {
                    "Key": {_ID: doc_id},
                    "ConsistentRead": self.consistent_read,
                }
                response = self._call(
                    "GetItem", table, lambda: self._send(table, "get_item", params), request=params
                )
                item = response.get("Item")
        except GatewayError as exc:
            if not _table_deleted(exc):
                raise
            return None
        return None if item is None else decode_item(item, self.native_numbers)

    def delete(self, db_name: str, doc_id: str, *, if_rev: IfRev = None) -> bool:
        """Remove a document; True if one was removed.

        Also True when an attempt whose answer was lost (timeout, connection closed, 5xx) may
        have removed it and the retry finds no document: see `delete_returning_rev`.
        """
        return self.delete_returning_rev(db_name, doc_id, if_rev=if_rev) is not None

    def delete_returning_rev(
        self, db_name: str, doc_id: str, *, if_rev: IfRev = None
    ) -> str | None:
        """Like ``delete``, but returns the removed document's revision (None if none was;
        ``""`` for a removed item that had no ``_rev``).

        When an attempt's answer was lost (timeout, connection closed, 5xx: it may have been
        applied) and the retry finds no document, the delete counts as done by this call:

        * with ``if_rev``, the retry fails its condition on the missing item; the result is
          ``if_rev``, the revision the lost attempt removed (no `ConflictError`);
        * without, the retry removes nothing and the removed revision is unknown; the result is
          ``"<now>-000…0"`` (generation: the wall clock in microseconds, as in ``revisions.py``;
          32 zeros), a stand-in at least as high as the generation of every revision written
          before the call by a writer whose clock is not ahead of ours.

        Another writer may instead have removed the document in between; the two cannot be
        told apart, and the answer is the same as if this call had removed it.
        """
        return self.delete_with_previous(db_name, doc_id, if_rev=if_rev)[0]

    def delete_with_previous(
        self, db_name: str, doc_id: str, *, if_rev: IfRev = None
    ) -> tuple[str | None, Previous]:
        """Like `delete_returning_rev`, also returning the item removed (see `Previous`)."""
        table = self._table_name(db_name)
        doc_id = validate_id(doc_id)
        _check_if_rev(if_rev)
        if self._find(table) is None:
            # No table, no document: nothing to remove, and nothing is created.
            if isinstance(if_rev, str):
                raise _conflict(db_name, doc_id, if_rev, "DeleteItem")
            return None, None
        if self.coalesce_writes:
            writes = self._writes(table)
            if if_rev is None:
                return writes.submit(Write(doc_id)).rev, UNKNOWN_PREVIOUS
            with writes.exclusive([doc_id]):
                return self._delete_item(table, db_name, doc_id, if_rev)
        return self._delete_item(table, db_name, doc_id, if_rev)

    def _delete_item(
        self, table: str, db_name: str, doc_id: str, if_rev: IfRev
    ) -> tuple[str | None, Previous]:
        """One DeleteItem (conditional with ``if_rev``); the removed revision (None if none
        was) and the removed item.

        See `delete_returning_rev` for an attempt whose answer was lost.
        """
        params: dict[str, Any] = {"Key": {_ID: doc_id}, "ReturnValues": "ALL_OLD"}
        condition = _condition_for(if_rev)
        if condition is not None:
            params["ConditionExpression"] = condition
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        attempts = _Attempts()
        try:
            response = self._call(
                "DeleteItem",
                table,
                lambda: self._send(table, "delete_item", params),
                attempts=attempts,
            )
        except _ConditionFailed as exc:
            if (
                attempts.ambiguous
                and isinstance(if_rev, str)
                and not self._exists(table, doc_id, exc.stored)
            ):
                # Removed by the attempt whose answer was lost.
                self._delete_through_data_plane(table, doc_id)
                return if_rev, UNKNOWN_PREVIOUS
            raise _conflict(db_name, doc_id, if_rev, "DeleteItem") from exc
        old = response.get("Attributes")
        if not old:
            if attempts.ambiguous:
                # Removed by the attempt whose answer was lost (or by another writer meanwhile).
                rev = f"{self._revisions.next_generation(None)}-{_UNKNOWN_TOKEN}"
                return rev, UNKNOWN_PREVIOUS
            return None, None
        return str(old.get(_REV, "")), (UNKNOWN_PREVIOUS if attempts.ambiguous else dict(old))

    def list_all(self, db_name: str) -> list[Document]:
        """Every document of the collection, across every scan page."""
        documents: list[Document] = []
        for page in self._scan_pages(db_name, page_size=None):
            documents.extend(page)
        return documents

    def iter_pages(self, db_name: str, page_size: int = 100) -> Iterator[list[Document]]:
        """Pages of at most ``page_size`` documents (the spec's ``list_all_paginated``)."""
        self._table_name(db_name)  # now, not at the first next() of the generator
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValidationError(
                f"page_size must be a positive integer, got {page_size!r}: pass e.g. 100."
            )
        return self._scan_pages(db_name, page_size=page_size)

    def iter_segment_pages(
        self, db_name: str, segment: int, total_segments: int, page_size: int = 100
    ) -> Iterator[list[Document]]:
        """The pages of one segment of a parallel scan (``Segment`` / ``TotalSegments``):
        the ``total_segments`` segments, read at once from as many threads, hold every
        document exactly once (`gateway.migrate.copy_collection` reads them so)."""
        self._table_name(db_name)
        integers = all(
            isinstance(n, int) and not isinstance(n, bool) for n in (segment, total_segments)
        )
        if (
            not integers
            or not 1 <= total_segments <= MAX_SCAN_SEGMENTS
            or not 0 <= segment < total_segments
        ):
            raise ValidationError(
                f"segment {segment!r} of {total_segments!r}: total_segments must be 1 to "
                f"{MAX_SCAN_SEGMENTS} and segment 0 to total_segments - 1"
            )
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValidationError(
                f"page_size must be a positive integer, got {page_size!r}: pass e.g. 100."
            )
        return self._scan_pages(db_name, page_size=page_size, segment=(segment, total_segments))

    def get_many(self, db_name: str, doc_ids: Iterable[str]) -> dict[str, Document | None]:
        """Every asked id -> its document or None, read with BatchGetItem."""
        table = self._table_name(db_name)
        ids = validate_ids(doc_ids)
        found: dict[str, Document | None] = dict.fromkeys(ids)
        if not ids or self._find(table) is None:
            return found
        try:
            if self.coalesce_reads:
                raws = self._reads(table).load_many(found)
            else:
                raws = {item[_ID]: item for item in self._batch_get(table, list(found))}
        except GatewayError as exc:
            if not _table_deleted(exc):
                raise
            return found
        for doc_id, raw in raws.items():
            found[doc_id] = None if raw is None else decode_item(raw, self.native_numbers)
        return found

    def save_many(
        self,
        db_name: str,
        docs: Mapping[str, Mapping[str, Any]],
        *,
        assume_new: bool = False,
    ) -> dict[str, str]:
        """Save every document (id -> doc) with BatchWriteItem; returns id -> new revision.

        Everything is validated before anything is written. BatchWriteItem takes no
        conditions, so the stored revisions are read first (one strongly consistent
        BatchGetItem per 100 ids) to keep every generation above the stored one.

        Within this service, no other write of these documents lands between that read and
        the write: without write coalescing, ``save_many`` holds every document's lock in
        `write_locks` from the read to the end of the BatchWriteItem, and ``save`` holds its
        document's around its PutItem (with coalescing, `WriteCoalescer` keeps a key's writes
        apart).

        Without coalescing, up to ``bulk_max_in_flight`` requests are in flight at once, the
        revision read of the next 100 ids overlapping the writes of the previous ones (see
        ``gateway/bulk.py``); on an error, no new request starts, those in flight finish, and
        the first error is raised (the documents of the requests that succeeded stay written).

        Across processes (or two services) this is a known limit: a save by another process
        landing between the read and the write is overwritten, and the generation this call
        computed from the older read may be lower than the one it replaced, so the document's
        generation can step back. Use ``save`` (one conditional PutItem each) for documents
        that several processes write concurrently.

        ``assume_new``: the caller knows that no stored document has these ids (an import
        into a table it checked was empty, `gateway.migrate`): the revision read is skipped
        and each generation comes from the clock, as for a first save. Wrong, it can only
        make a stored document's generation step back, as the cross-process limit above.
        """
        items = self.save_many_with_items(db_name, docs, assume_new=assume_new)
        return {doc_id: item[_REV] for doc_id, item in items.items()}

    def save_many_with_items(
        self,
        db_name: str,
        docs: Mapping[str, Mapping[str, Any]],
        *,
        assume_new: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """Like ``save_many``, returning id -> the item as written."""
        table = self._table_name(db_name)
        items = self._encode_many(docs)
        if not items:
            return {}
        self._ensure(table, db_name)
        if self.coalesce_writes and not assume_new:
            outcomes = self._writes(table).submit_many(
                [Write(doc_id, item) for doc_id, item in items.items()]
            )
            _raise_first_error(outcomes)
            return items
        ids = list(items)
        chunks = [
            ids[start : start + MAX_BATCH_GET_KEYS]
            for start in range(0, len(ids), MAX_BATCH_GET_KEYS)
        ]

        def read(chunk: list[str]) -> Callable[[], dict[str, int | None]]:
            return lambda: {
                item[_ID]: parse_generation(item.get(_REV))
                for item in self._batch_get(table, chunk, projection=True)
            }

        def plan(index: int, stored: Mapping[str, int | None]) -> list[Task]:
            # In this thread, once the chunk's own read is back: its generations go above the
            # revisions just read, and no other write of these ids can land (locks held).
            chunk = [items[doc_id] for doc_id in chunks[index]]
            for item in chunk:
                generation = self._revisions.next_generation(stored.get(item[_ID]))
                item[_REV] = self._revisions.make(generation)
            return self._write_tasks(table, [{"PutRequest": {"Item": item}} for item in chunk])

        # The locks are held by this thread for the whole call: every id's read and write
        # happen inside them, whichever pool thread sends the request. With write coalescing,
        # an assumed-new call (no revision reads: nothing to batch them with) holds its ids in
        # the coalescer instead, as a conditional save does.
        held = (
            self._writes(table).exclusive(ids)
            if self.coalesce_writes
            else self.write_locks.hold([(table, doc_id) for doc_id in items])
        )
        with held:
            if assume_new:
                for item in items.values():
                    item[_REV] = self._revisions.make(self._assumed_generation())
                puts = [{"PutRequest": {"Item": item}} for item in items.values()]
                self._bulk.run(self._write_tasks(table, puts))
            else:
                self._bulk.pipeline([read(chunk) for chunk in chunks], plan)
        return items

    def delete_many(self, db_name: str, doc_ids: Iterable[str]) -> None:
        """Delete every listed document with BatchWriteItem (missing ids are ignored)."""
        table = self._table_name(db_name)
        ids = validate_ids(doc_ids)
        if not ids or self._find(table) is None:
            return  # no table: nothing to delete, and nothing is created
        if self.coalesce_writes:
            _raise_first_error(self._writes(table).submit_many([Write(doc_id) for doc_id in ids]))
            return
        # `validate_ids` merged duplicates: no two requests of the call name the same id, so
        # they may be in flight together in any order.
        self._bulk.run(
            self._write_tasks(table, [{"DeleteRequest": {"Key": {_ID: doc_id}}} for doc_id in ids])
        )

    def query(self, db_name: str, index: str, value: Any) -> list[Document]:
        """Documents whose ``index`` partition key equals ``value``, across every page."""
        table = self._table_name(db_name)
        info = self._find(table)
        attribute, key_value = self._query_key(db_name, info, index, value)
        if info is None:
            return []
        params: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": Key(attribute).eq(key_value),
        }
        documents: list[Document] = []
        while True:
            try:
                response = self._call(
                    "Query", table, lambda: self._send(table, "query", params), request=params
                )
            except GatewayError as exc:
                if "ExclusiveStartKey" in params or not _table_deleted(exc):
                    raise
                return []
            documents.extend(decode_item(i, self.native_numbers) for i in response["Items"])
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return documents
            params["ExclusiveStartKey"] = last_key

    def index_attributes(self, db_name: str) -> Mapping[str, str]:
        """Index name -> the attribute it is keyed on: the table's, or the indexes it will be
        created with if it does not exist yet (reads its description once per table)."""
        info = self._find(self._table_name(db_name))
        if info is None:
            return {name: spec.attribute for name, spec in self._indexes_for(db_name).items()}
        return info.index_keys

    def validate_query(self, db_name: str, index: str, value: Any) -> Any:
        """Check a query's arguments as `query` does (`ValidationError`); returns the value
        as DynamoDB compares it (str, Decimal or Binary). Reads the table's description
        once per table, as `query` does; sends nothing else."""
        table = self._table_name(db_name)
        return self._query_key(db_name, self._find(table), index, value)[1]

    def _query_key(
        self, db_name: str, info: TableInfo | None, index: str, value: Any
    ) -> tuple[str, Any]:
        """The attribute ``index`` is keyed on and ``value`` encoded, or `ValidationError`."""
        if info is None:
            # No table yet: the indexes it will be created with.
            index_keys = {name: spec.attribute for name, spec in self._indexes_for(db_name).items()}
        else:
            index_keys = dict(info.index_keys)
        attribute = index_keys.get(index) if isinstance(index, str) else None
        declared = isinstance(index, str) and index in self._indexes_for(db_name)
        if attribute is None and info is not None and declared:
            # Declared, but the table predates the declaration: say so, and how to add it.
            raise ValidationError(
                f"Collection {db_name!r} declares index {index!r} (collections.{db_name}.indexes."
                f"{index}), but its table {info.name!r} exists without it (the table was created "
                f"before the index was declared, or this process described it before the index "
                f"was added: then restart it). Add it to the table with: gateway tables "
                f"add-index {db_name} {index}"
            )
        if attribute is None:
            raise ValidationError(
                f"Collection {db_name!r} has no index {index!r} (its indexes: "
                f"{sorted(index_keys) or 'none'}). Declare it in the YAML config under "
                f"collections.{db_name}.indexes.{index} (attribute and type); a table that already "
                f"exists then needs it added: gateway tables add-index {db_name} {index}"
            )
        return attribute, encode_key_value(value, f"the value queried on index {index!r}")

    # ------------------------------------------------------------------ service

    def stats(self) -> dict[str, Any]:
        """DynamoDB calls by operation (a bare service has no cache: no hits, no misses),
        latency per DynamoDB operation, consumed capacity and its on-demand cost."""
        with self._calls_lock:
            calls = dict(self._calls)
        capacity = self._capacity.snapshot()
        dollars = cost_dollars(capacity["read_units"], capacity["write_units"])
        requests = sum(
            n for op, n in calls.items() if op in READ_OPERATIONS or op in WRITE_OPERATIONS
        )
        return {
            "hits": 0,
            "misses": 0,
            "hit_ratio": 0.0,
            "db_calls": calls,
            "retry": self._retry.stats(),
            "batching": self.batching_stats(),
            "latency": self._latency.snapshot(),
            "consumed_capacity": capacity,
            "cost": {
                "dollars": dollars,
                # The average data-plane request (attempts included), per million.
                "per_million_requests": dollars / requests * 1e6 if requests else 0.0,
            },
        }

    def batching_stats(self) -> dict[str, dict[str, Any]]:
        """Coalescing counters per direction, summed over tables (see `CoalescerStats`)."""
        with self._coalescers_lock:
            readers = list(self._read_coalescers.values())
            writers = list(self._write_coalescers.values())
        reads = sum((c.stats() for c in readers), CoalescerStats())
        writes = sum((c.stats() for c in writers), CoalescerStats())
        return {
            "reads": {"enabled": self.coalesce_reads, **reads.as_dict()},
            "writes": {"enabled": self.coalesce_writes, **writes.as_dict()},
        }

    @property
    def bulk_max_in_flight(self) -> int:
        """Requests ``save_many`` / ``delete_many`` keep in flight at once."""
        return self._bulk.max_in_flight

    def close(self) -> None:
        """Stop the bulk-write threads (after their requests), close the HTTP connection pools."""
        if self._closed:
            return
        self._closed = True
        self._bulk.close()
        clients = (*self.clients(), self._streams_client)
        for client in {id(c): c for c in clients if c is not None}.values():
            close = getattr(client, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> DynamoDBService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.endpoint_url or f"AWS {self.region_name}"
        return f"DynamoDBService({where}, table_prefix={self.table_prefix!r})"

    # ------------------------------------------------------------------ internals

    def table_name(self, db_name: str) -> str:
        """The table that holds ``db_name`` (prefix + name), validated."""
        return self._table_name(db_name)

    def ensure_table(self, db_name: str) -> TableInfo:
        """Create the collection's table now (normally done on the first write); describe it."""
        table = self._table_name(db_name)
        return self._ensure(table, db_name)

    def table_info(self, db_name: str) -> TableInfo | None:
        """Describe the collection's table; None if it does not exist (nothing is created).

        Raises `ConfigError` for a table whose key is not ``_id`` (string, HASH).
        """
        return self._find(self._table_name(db_name))

    def clients(self) -> list[Any]:
        """The distinct boto3 clients the service sends DynamoDB requests with: table
        management's, the data plane's, and the resource's (DAX's, when it is the data plane).
        Event hooks registered on each see every request (the streams client aside)."""
        found = (self._client, self._plain_client, self._resource_client())
        return list({id(c): c for c in found if c is not None}.values())

    @property
    def control_client(self) -> Any:
        """The boto3 DynamoDB client used for table management (never DAX)."""
        return self._client

    @property
    def streams_client(self) -> Any:
        """A boto3 DynamoDB Streams client for the same endpoint (made on first use)."""
        if self._streams_client is None:
            self._streams_client = self._session.client(
                "dynamodbstreams",
                region_name=self.region_name,
                endpoint_url=self.endpoint_url,
                config=self._client_config,
            )
        return self._streams_client

    def control_call(self, operation: str, table: str, fn: Callable[[], T]) -> T:
        """Run a control-plane call under the retry policy and error translation."""
        return self._call(operation, table, fn)

    def _table_name(self, db_name: str) -> str:
        return validate_collection_name(db_name, self.table_prefix)

    def _indexes_for(self, db_name: str) -> Mapping[str, IndexSpec]:
        return self._indexes.get(db_name, {})

    def _ensure(self, table: str, db_name: str) -> TableInfo:
        """The table's info, creating the table if needed: for writes."""
        return self._tables.ensure(table, db_name)

    def _find(self, table: str) -> TableInfo | None:
        """The table's info, None if it does not exist: for reads (creates nothing)."""
        return self._tables.find(table)

    def _table(self, table: str) -> Any:
        # Table objects are cheap to use but not to build: one per table, shared by threads
        # (their actions only call the thread-safe client underneath).
        obj = self._table_objects.get(table)
        if obj is None:
            with self._table_objects_lock:
                obj = self._table_objects.get(table)
                if obj is None:
                    obj = self._resource.Table(table)
                    self._table_objects[table] = obj
        return obj

    def _batch_get_item(self, **params: Any) -> dict[str, Any]:
        """One BatchGetItem of the resource's parameters (Python values), as `_send`."""
        if self._plain_client is None:
            response: dict[str, Any] = self._resource.batch_get_item(**params)
            return response
        return batch_get_in_wire_form(self._plain_client, **params)

    def _batch_write_item(self, **params: Any) -> dict[str, Any]:
        """One BatchWriteItem of the resource's parameters (Python values), as `_send`."""
        if self._plain_client is None:
            response: dict[str, Any] = self._resource.batch_write_item(**params)
            return response
        return batch_write_in_wire_form(self._plain_client, **params)

    def _send(self, table: str, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One GetItem / PutItem / DeleteItem / Query / Scan of ``table`` with the resource's
        parameters: through the plain client in wire form, or the resource (DAX)."""
        if self._plain_client is None:
            response: dict[str, Any] = getattr(self._table(table), method)(**params)
            return response
        return call_in_wire_form(self._plain_client, method, TableName=table, **params)

    def _resource_client(self) -> Any:
        meta = getattr(self._resource, "meta", None)
        return getattr(meta, "client", None)

    def _reads(self, table: str) -> ReadCoalescer[dict[str, Any] | None]:
        """The table's read coalescer (created on first use)."""
        coalescer = self._read_coalescers.get(table)
        if coalescer is None:
            with self._coalescers_lock:
                coalescer = self._read_coalescers.get(table)
                if coalescer is None:

                    def load_batch(ids: list[str]) -> dict[str, dict[str, Any] | None]:
                        return self._load_items(table, ids)

                    coalescer = ReadCoalescer(
                        load_batch,
                        max_batch=self.max_batch_get,
                        max_wait_s=self.coalesce_max_wait_s,
                        copy=_copy_item,
                    )
                    self._read_coalescers[table] = coalescer
        return coalescer

    def _writes(self, table: str) -> WriteCoalescer:
        """The table's write coalescer (created on first use)."""
        coalescer = self._write_coalescers.get(table)
        if coalescer is None:
            with self._coalescers_lock:
                coalescer = self._write_coalescers.get(table)
                if coalescer is None:
                    store = _TableWriteStore(self, table)

                    def write_batch(writes: list[Write]) -> dict[str, WriteResult | BaseException]:
                        return write_with_revisions(
                            writes, store, revisions=self._revisions, retry=self._retry
                        )

                    coalescer = WriteCoalescer(
                        write_batch,
                        max_batch=self.max_batch_write,
                        max_wait_s=self.coalesce_max_wait_s,
                    )
                    self._write_coalescers[table] = coalescer
        return coalescer

    def _load_items(self, table: str, ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Raw items for distinct ``ids`` (None when absent): the read coalescer's batch."""
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(ids)
        for item in self._batch_get(table, ids):
            found[item[_ID]] = item
        return found

    def _count(self, operation: str) -> None:
        with self._calls_lock:
            self._calls[operation] += 1

    def _call(
        self,
        operation: str,
        table: str,
        fn: Callable[[], T],
        *,
        request: Mapping[str, Any] | None = None,
        attempts: _Attempts | None = None,
    ) -> T:
        """Run one DynamoDB operation under the retry policy, translating its errors.

        Its latency (retries and their waits included) and the capacity its response reports
        are recorded; ``request`` (the parameters sent) serves to estimate that capacity from
        item sizes when the response reports none (see `gateway.metrics.estimate_capacity`).
        ``attempts``, if given, records whether an attempt failed in a way that leaves open
        whether it was applied (a retried write may then meet its own effect).
        """

        def attempt() -> T:
            self._count(operation)
            if attempts is None:
                return fn()
            try:
                return fn()
            except Exception as exc:
                if may_have_been_applied(exc):
                    attempts.ambiguous = True
                raise

        start = perf_counter_ns()
        try:
            response = self._retry.call(operation, attempt)
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                stored = exc.response.get("Item")
                # A failed condition still costs the write; the error reports no capacity.
                self._capacity.add(operation, 0.0, condition_failure_units(stored), estimated=True)
                raise _ConditionFailed(stored) from exc
            if error_code(exc) == "ResourceNotFoundException" and operation not in (
                "DescribeTable",
                "CreateTable",
            ):
                # The table was deleted behind our back: forget it, so the next write creates it
                # again and the next read finds it missing.
                self._tables.forget(table)
            raise translate(exc, operation, table) from exc
        except BotoCoreError as exc:
            raise translate(exc, operation, table) from exc
        finally:
            self._latency.record(operation, perf_counter_ns() - start)
        self._capacity.add_response(operation, response, request, estimate=self._estimate_capacity)
        return response

    def _put(
        self, table: str, doc_id: str, item: dict[str, Any], if_rev: IfRev, want_old: bool
    ) -> tuple[str, Previous]:
        """The conditional PutItem(s) of ``save``; the revision written and, with
        ``want_old``, the item replaced (else `UNKNOWN_PREVIOUS`).

        A failed condition whose stored ``_rev`` is the revision this attempt wrote means an
        earlier attempt of the same PutItem was applied and only its answer was lost: success.
        """
        if if_rev is not None:
            generation = None if if_rev is ABSENT else (parse_generation(if_rev) or 0)
            rev = self._revisions.make(self._revisions.next_generation(generation))
            item[_REV] = rev
            attempts = _Attempts()
            try:
                old = self._put_item(table, item, _condition_for(if_rev), want_old, attempts)
            except _ConditionFailed as exc:
                # Free when DynamoDB returned the stored item; else read only if an attempt
                # may have been applied (without that, ours cannot be the stored revision).
                if (exc.stored is not None or attempts.ambiguous) and self._stored_rev(
                    table, doc_id, exc.stored
                ) == rev:
                    self._write_through_data_plane(table, item, rev)
                    return rev, UNKNOWN_PREVIOUS
                db_name = table[len(self.table_prefix) :]
                raise _conflict(db_name, doc_id, if_rev, "PutItem") from exc
            return rev, old
        # Unconditional save: one conditional PutItem in the common case (see revisions.py).
        generation = self._revisions.next_generation(None)
        condition = _no_item_or_below(generation)
        # One record of lost answers for the whole loop: once an attempt may have been applied,
        # a later pass's old item may be that attempt's own, not what the save replaced.
        attempts = _Attempts()
        for _ in range(MAX_CONTENDED_SAVE_ATTEMPTS):
            rev = self._revisions.make(generation)
            item[_REV] = rev
            try:
                return rev, self._put_item(table, item, condition, want_old, attempts)
            except _ConditionFailed as exc:
                stored_rev = self._stored_rev(table, doc_id, exc.stored)
            if stored_rev == rev:
                # An earlier attempt was applied and only its answer was lost.
                self._write_through_data_plane(table, item, rev)
                return rev, UNKNOWN_PREVIOUS
            if stored_rev is None:
                # No item, or one written without a _rev (e.g. by the original service).
                generation = self._revisions.next_generation(None)
                condition = Attr(_ID).not_exists() | Attr(_REV).not_exists()
            else:
                stored_generation = parse_generation(stored_rev)
                generation = self._revisions.next_generation(stored_generation or 0)
                if stored_generation is not None and len(stored_rev) == revision_length(generation):
                    # "Below our generation", not "equal to what we read": with `eq`, any
                    # write landing in between (fast-path writers win all of those) makes
                    # us lose again, and one writer can starve for the whole loop.
                    condition = _no_item_or_below(generation)
                else:
                    condition = Attr(_REV).eq(stored_rev)
        raise ConflictError(
            f"Gave up saving {doc_id!r} in table {table!r} after {MAX_CONTENDED_SAVE_ATTEMPTS} "
            "lost races with concurrent writers; retry later or serialize writers of this id.",
            doc_id=doc_id,
            operation="PutItem",
        )

    def _put_item(
        self,
        table: str,
        item: dict[str, Any],
        condition: ConditionBase | None,
        want_old: bool,
        attempts: _Attempts,
    ) -> Previous:
        """One PutItem; the item it replaced if ``want_old`` (None: none), else unknown."""
        params: dict[str, Any] = {"Item": item}
        if condition is not None:
            params["ConditionExpression"] = condition
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        if want_old:
            params["ReturnValues"] = "ALL_OLD"
        response = self._call(
            "PutItem",
            table,
            lambda: self._send(table, "put_item", params),
            request=params,
            attempts=attempts,
        )
        if not want_old or attempts.ambiguous:
            return UNKNOWN_PREVIOUS  # the old item of a retry may be the lost attempt's own
        old = response.get("Attributes")
        return dict(old) if old else None

    def _assumed_generation(self) -> int:
        """A generation for a document assumed new (``assume_new``): from the clock, but above
        every one issued so before by this service, so that an id written twice in one import
        still goes up if the clock steps back between the two."""
        with self._assumed_lock:
            generation = max(self._revisions.next_generation(None), self._last_assumed + 1)
            self._last_assumed = generation
            return generation

    def _write_through_data_plane(self, table: str, item: dict[str, Any], rev: str) -> None:
        """A save whose answer was lost and that a read around the data plane showed applied:
        with DAX, put the same item again (only if it is still ours) so that DAX's item cache,
        which never saw the write succeed, stops answering the previous copy. Best effort:
        the save is done either way."""
        if not self._data_plane_caches:
            return
        params: dict[str, Any] = {"Item": item, "ConditionExpression": Attr(_REV).eq(rev)}
        self._best_effort("PutItem", table, lambda: self._table(table).put_item(**params))

    def _delete_through_data_plane(self, table: str, doc_id: str) -> None:
        """The same for a conditional delete: a delete of the (now missing) item, if it is
        still missing, goes through DAX's item cache."""
        if not self._data_plane_caches:
            return
        params: dict[str, Any] = {
            "Key": {_ID: doc_id},
            "ConditionExpression": Attr(_ID).not_exists(),
        }
        self._best_effort("DeleteItem", table, lambda: self._table(table).delete_item(**params))

    def _best_effort(self, operation: str, table: str, fn: Callable[[], Any]) -> None:
        try:
            self._call(operation, table, fn)
        except _ConditionFailed:
            pass  # another writer's write went through the data plane's cache since
        except GatewayError as exc:
            _log.warning(
                "%s on %r: the write was applied, but the data plane's cache could not be "
                "refreshed (%s); it may answer the previous copy until its TTL",
                operation,
                table,
                exc,
            )

    def _exists(self, table: str, doc_id: str, stored: Mapping[str, Any] | None) -> bool:
        """Whether the document exists after a failed condition: AWS returned it, or a
        consistent read finds it (an endpoint may not return the item)."""
        if stored is not None:
            return True
        params: dict[str, Any] = {
            "Key": {_ID: doc_id},
            "ConsistentRead": True,
            "ProjectionExpression": "#id",
            "ExpressionAttributeNames": {"#id": _ID},
        }
        response = self._call(
            "GetItem", table, lambda: self._send(table, "get_item", params), request=params
        )
        return response.get("Item") is not None

    def _stored_rev(self, table: str, doc_id: str, stored: Mapping[str, Any] | None) -> str | None:
        """The stored revision after a failed condition: from AWS's answer, or read anew."""
        if stored is not None:
            # ReturnValuesOnConditionCheckFailure hands back the raw (low-level) item.
            rev = stored.get(_REV)
            if isinstance(rev, Mapping):
                return str(rev.get("S")) if "S" in rev else None
            return None if rev is None else str(rev)
        params: dict[str, Any] = {
            "Key": {_ID: doc_id},
            "ConsistentRead": True,
            "ProjectionExpression": "#rev",
            "ExpressionAttributeNames": {"#rev": _REV},
        }
        response = self._call(
            "GetItem", table, lambda: self._send(table, "get_item", params), request=params
        )
        item = response.get("Item")
        rev = None if item is None else item.get(_REV)
        return None if rev is None else str(rev)

    def _scan_pages(
        self,
        db_name: str,
        page_size: int | None,
        segment: tuple[int, int] | None = None,
    ) -> Iterator[list[Document]]:
        table = self._table_name(db_name)
        if self._find(table) is None:
            return
        params: dict[str, Any] = {"ConsistentRead": self.consistent_read}
        if page_size is not None:
            params["Limit"] = page_size
        if segment is not None:
            params["Segment"], params["TotalSegments"] = segment
        while True:
            try:
                response = self._call(
                    "Scan", table, lambda: self._send(table, "scan", params), request=params
                )
            except GatewayError as exc:
                if "ExclusiveStartKey" in params or not _table_deleted(exc):
                    raise
                return
            page = [decode_item(i, self.native_numbers) for i in response["Items"]]
            if page:
                yield page
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return
            params["ExclusiveStartKey"] = last_key

    def _batch_get(
        self, table: str, ids: list[str], projection: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Items for ``ids`` (distinct), 100 keys a request, UnprocessedKeys retried."""
        for start in range(0, len(ids), MAX_BATCH_GET_KEYS):
            request: dict[str, Any] = {
                "Keys": [{_ID: doc_id} for doc_id in ids[start : start + MAX_BATCH_GET_KEYS]],
                "ConsistentRead": self.consistent_read or projection,
            }
            if projection:
                request["ProjectionExpression"] = "#id, #rev"
                request["ExpressionAttributeNames"] = {"#id": _ID, "#rev": _REV}
            pending: dict[str, Any] = {table: request}
            state = self._retry.start("BatchGetItem")
            while pending:
                response = self._call(
                    "BatchGetItem",
                    table,
                    functools.partial(self._batch_get_item, RequestItems=pending),
                    request={"RequestItems": pending},
                )
                yield from response.get("Responses", {}).get(table, [])
                pending = response.get("UnprocessedKeys") or {}
                if pending:
                    state.backoff("UnprocessedKeys")
            state.succeeded()

    def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem, 25 requests at a time, UnprocessedItems retried with backoff
        (through the plain client, in wire form, unless the data plane is DAX)."""
        for start in range(0, len(requests), MAX_BATCH_WRITE_ITEMS):
            pending: dict[str, Any] = {table: requests[start : start + MAX_BATCH_WRITE_ITEMS]}
            state = self._retry.start("BatchWriteItem")
            while pending:
                response = self._call(
                    "BatchWriteItem",
                    table,
                    functools.partial(self._batch_write_item, RequestItems=pending),
                    request={"RequestItems": pending},
                )
                pending = response.get("UnprocessedItems") or {}
                if pending:
                    state.backoff("UnprocessedItems")
            state.succeeded()

    def _write_tasks(self, table: str, requests: list[dict[str, Any]]) -> list[Task]:
        """One task per BatchWriteItem of 25 ``requests`` (each retried as `_batch_write`)."""
        return [
            functools.partial(
                self._batch_write, table, requests[start : start + MAX_BATCH_WRITE_ITEMS]
            )
            for start in range(0, len(requests), MAX_BATCH_WRITE_ITEMS)
        ]

    def _encode_many(self, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        if not isinstance(docs, Mapping):
            raise ValidationError(
                f"save_many takes a mapping of id -> document, got {type(docs).__name__}: "
                "pass e.g. {'id1': {...}, 'id2': {...}}."
            )
        items: dict[str, dict[str, Any]] = {}
        for doc_id, doc in docs.items():
            doc_id = validate_id(doc_id)
            item = encode_document(doc)
            item[_ID] = doc_id
            check_item_size({**item, _REV: _REV_PLACEHOLDER}, doc_id)
            items[doc_id] = item
        return items


class _TableWriteStore:
    """The DynamoDB calls of `write_with_revisions` for one table, through the service."""

    def __init__(self, service: DynamoDBService, table: str) -> None:
        self._service = service
        self._table = table

    def stored_revisions(self, keys: list[str]) -> dict[str, str]:
        """Key -> stored ``_rev`` ("" if none) of the keys that exist: one consistent read."""
        return {
            str(item[_ID]): "" if item.get(_REV) is None else str(item[_REV])
            for item in self._service._batch_get(self._table, keys, projection=True)
        }

    def batch_write(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One BatchWriteItem (throttling retried by `_call`); its unprocessed requests."""
        table = self._table
        service = self._service
        response = service._call(
            "BatchWriteItem",
            table,
            lambda: service._batch_write_item(RequestItems={table: requests}),
            request={"RequestItems": {table: requests}},
        )
        unprocessed: list[dict[str, Any]] = (response.get("UnprocessedItems") or {}).get(table, [])
        return unprocessed


def _table_deleted(exc: GatewayError) -> bool:
    """A read's error says the table does not exist (deleted since we described it): the read
    answers as for an empty table. Not once a scan or query has handed out a page: then the
    error stands, since part of the answer is already out."""
    return exc.code == "ResourceNotFoundException"


def _rev_of(result: WriteResult) -> str:
    assert result.rev is not None  # a put always has its new revision
    return result.rev


def _copy_item(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """A private copy for each caller sharing one coalesced read."""
    return None if item is None else copy_document(item)


def _raise_first_error(outcomes: list[WriteResult | BaseException]) -> None:
    """Raise the first error among coalesced writes (after all of them are done)."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _request_consumed_capacity(client: Any) -> None:
    """Make every data-plane call of ``client`` ask for ``ReturnConsumedCapacity=TOTAL``.

    Added by a botocore ``before-parameter-build`` hook (after boto3 copied the caller's
    parameters), so the requests the service builds stay as they are. The DAX client emits the
    same events and encodes the parameter. A client without botocore events (or none) gets no
    hook: its responses then carry no capacity, and none is counted for it.
    """
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:
        return
    for operation in sorted(READ_OPERATIONS | WRITE_OPERATIONS):
        events.register(
            f"before-parameter-build.dynamodb.{operation}",
            _ask_for_consumed_capacity,
            unique_id=f"gateway-consumed-capacity-{operation}",
        )


def _ask_for_consumed_capacity(params: dict[str, Any], **_: Any) -> None:
    params.setdefault("ReturnConsumedCapacity", "TOTAL")


#: A revision of the largest length we write, to size-check an item before its rev is known.
_REV_PLACEHOLDER = "9" * 20 + "-" + "f" * 32
#: The token of the stand-in revision `delete_returning_rev` returns when the removed one is
#: unknown.
_UNKNOWN_TOKEN = "0" * 32


def _check_if_rev(if_rev: object) -> None:
    if if_rev is None or if_rev is ABSENT:
        return
    if not isinstance(if_rev, str) or not if_rev:
        raise ValidationError(
            f"if_rev must be a revision string returned by save/get, gateway.ABSENT or None; "
            f"got {if_rev!r}."
        )


def _condition_for(if_rev: IfRev) -> ConditionBase | None:
    if if_rev is None:
        return None
    if if_rev is ABSENT:
        return Attr(_ID).not_exists()
    return Attr(_REV).eq(if_rev)


def _no_item_or_below(generation: int) -> ConditionBase:
    """No item, or a stored ``_rev`` of a lower generation: as long as the revisions of
    ``generation`` (so of as many digits) and below ``'<generation>-'`` (see revisions.py)."""
    # The length last: moto (the embedded emulator) fails the request on size() of a missing
    # attribute instead of evaluating the condition false, as DynamoDB does.
    return Attr(_ID).not_exists() | (
        Attr(_REV).lt(RevisionMaker.upper_bound(generation))
        & Attr(_REV).size().eq(revision_length(generation))
    )


def _conflict(where: str, doc_id: str, if_rev: IfRev, operation: str) -> ConflictError:
    if if_rev is ABSENT:
        detail = "a document already exists (if_rev=ABSENT asks for none)"
    else:
        detail = f"its stored revision is not {if_rev!r} (or it does not exist)"
    return ConflictError(
        f"Conflict on {doc_id!r} in {where!r}: {detail}. Read it again with get() and retry "
        "with its current _rev.",
        db_name=where,
        doc_id=doc_id,
        expected_rev=None if if_rev is ABSENT or if_rev is None else str(if_rev),
        operation=operation,
    )


__all__ = ["DynamoDBService", "GatewayError"]
