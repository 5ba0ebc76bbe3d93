"""Following the DynamoDB streams of the cached collections, and applying them to the caches.

One thread per gateway runs `StreamFollower.run_once` in a loop. Per collection it finds the
table's stream and its shards, and per shard, in lineage order (a shard starts only once its
parent was read to its end, or is gone from the stream), it holds the shard's lease
(`gateway.streams.coordination`), reads records with ``GetRecords`` and hands them to a
`ChangeSink` (the gateway's `ChangeApplier`). The checkpoint moves only after the sink applied
a batch; a batch the sink could not apply (the cache did not answer) is kept and applied again
on the next pass before anything new is read, so nothing is skipped and order is kept.

Where a shard starts:

* after its checkpoint (``AFTER_SEQUENCE_NUMBER``), the normal case after a restart or a
  takeover;
* at ``TRIM_HORIZON`` for a shard without a checkpoint in a stream already followed (a child
  of a split: every record of it is new to us);
* at ``LATEST`` when nothing is known (the stream was never followed, or the checkpoint is
  older than the stream keeps: ``TrimmedDataAccessException``). What happened before that
  position is unknown, so the collection's cache is then dropped, once the longest cache fill
  that may have read before the position is over (``fill_deadline_s``): every copy cached
  afterwards was read after the position, and every later change is in the stream after it.

Streams API calls go through the service's retry policy (throttling backs off with jitter).
Time, sleep and the wall clock are injected; `run_once` does one pass, for tests.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import AccessDeniedError, GatewayError
from gateway.resilience import RateLimitedLog
from gateway.streams.coordination import LATEST, SHARD_END, Coordinator
from gateway.streams.records import Change, change_from_record

_log = logging.getLogger("gateway")

#: The view type of the streams the gateway enables: the new image refreshes cached copies,
#: the old one tells which index values a document left (and the generation a remove ended).
VIEW_TYPE = "NEW_AND_OLD_IMAGES"
DEFAULT_POLL_INTERVAL_S = 0.5
DEFAULT_LEASE_S = 3.0
#: How often the shard list of a stream is described again (splits, new shards).
DESCRIBE_INTERVAL_S = 10.0
#: How often a collection without a table (or a stream) yet is described again: its first
#: write creates the table, and outside writes to it are missed until it is found.
MISSING_INTERVAL_S = 1.0
#: Records asked per GetRecords (DynamoDB Streams' maximum is 1,000).
RECORDS_PER_CALL = 1000


class ChangeSink(Protocol):
    """Where changes go: `gateway.streams.apply.ChangeApplier` behind a gateway."""

    def apply(self, db_name: str, changes: Sequence[Change]) -> bool:
        """Apply; False when the cache could not be reached (try again later)."""
        ...

    def distrust(self, db_name: str) -> bool:
        """Drop every cached entry of the collection; False when the cache did not answer."""
        ...

    # Optional: ``caches(db_name) -> bool``, whether the collection is cached here (a sink
    # without it is handed every collection the coordinator lists).


class StreamService(Protocol):
    """What the follower uses of `gateway.dynamodb.DynamoDBService`."""

    @property
    def control_client(self) -> Any: ...
    @property
    def streams_client(self) -> Any: ...
    def control_call(self, operation: str, table: str, fn: Callable[[], Any]) -> Any: ...
    def table_name(self, db_name: str) -> str: ...


@dataclass
class _Shard:
    shard_id: str
    parent: str | None
    iterator: str | None = None
    #: An iterator was obtained: None in `iterator` then means the (closed) shard's end.
    positioned: bool = False
    held: bool = False
    lease_until: float = 0.0  # monotonic: past it, the lease may belong to someone else
    renewed_at: float = 0.0
    pending: list[Change] = field(default_factory=list)
    pending_sequence: str | None = None
    #: The last sequence applied but not yet checkpointed (a collection drop is owed first).
    unsaved: str | None = None
    #: The last sequence applied here (saved or not): where an expired iterator resumes.
    applied: str | None = None
    finished: bool = False


@dataclass
class _Collection:
    db_name: str
    table: str
    stream: str | None = None
    view_type: str | None = None
    shards: dict[str, _Shard] = field(default_factory=dict)
    described_at: float = float("-inf")
    drop_due: float | None = None  # monotonic time the collection's cache must be dropped at
    applied: int = 0
    lag_s: float | None = None
    #: The longest a record of the last batch waited (its oldest: the idle polls show here).
    max_lag_s: float | None = None
    newest_at: float | None = None


class StreamFollower:
    """Follows the streams of registered collections on a background thread."""

    def __init__(
        self,
        service: StreamService,
        sink: ChangeSink,
        coordinator: Coordinator,
        *,
        fill_deadline_s: float,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        lease_s: float = DEFAULT_LEASE_S,
        enable_streams: bool = True,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``fill_deadline_s``: the gateway's (see the module docstring); ``lease_s``: the
        coordinator's lease, renewed every third of it; ``enable_streams``: turn on the
        stream of a table that has none (else such a table is only reported); ``background``:
        run on a thread of its own from the first registration (False: the caller calls
        `run_once`, as tests do)."""
        self._service = service
        self._sink = sink
        self._coordinator = coordinator
        self._fill_deadline_s = fill_deadline_s
        self._poll_interval_s = poll_interval_s
        self._lease_s = lease_s
        self._enable = enable_streams
        self._background = background
        self._clock = clock
        self._wall_clock = wall_clock
        self._collections: dict[str, _Collection] = {}
        self._lock = threading.Lock()
        # Registrations one at a time: two first uses must not both turn a stream on.
        self._register_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = RateLimitedLog(30.0, clock)
        self._known_at = float("-inf")

    # -- registration -------------------------------------------------------------------------

    def register(self, db_name: str) -> None:
        """Follow ``db_name``'s table from now on (and make sure it has a stream: raises
        `AccessDeniedError` naming the permission when it cannot be turned on)."""
        with self._register_lock:
            with self._lock:
                if db_name in self._collections:
                    return
            table = self._service.table_name(db_name)
            collection = _Collection(db_name, table)
            self._find_stream(collection, raise_errors=True)
            collection.described_at = float("-inf")  # list its shards on the first pass
            try:
                self._coordinator.add_collection(db_name)
            except Exception as exc:  # the shared list only helps other instances find it
                self._log.warning("streams: could not record collection %r: %s", db_name, exc)
            with self._lock:
                self._collections.setdefault(db_name, collection)
        self._start()

    def _start(self) -> None:
        with self._lock:
            if not self._background or self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="gateway-streams", daemon=True)
            self._thread.start()

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # a bug or an outage must not kill the follower
                self._log.warning("streams: follower pass failed: %s", exc)
                busy = False
            if not busy:
                self._stop.wait(self._poll_interval_s)

    def run_once(self) -> bool:
        """One pass over every shard; True if some shard returned records (read again now)."""
        self._learn_collections()
        busy = False
        with self._lock:
            collections = list(self._collections.values())
        for collection in collections:
            if self._stop.is_set():
                break
            try:
                busy |= self._follow(collection)
            except Exception as exc:  # the next collections are still followed
                self._log.warning("streams: following %r failed: %s", collection.table, exc)
        return busy

    def _learn_collections(self) -> None:
        """Collections other instances registered (Redis): followed here too."""
        now = self._clock()
        if now - self._known_at < DESCRIBE_INTERVAL_S:
            return
        self._known_at = now
        try:
            names = self._coordinator.collections()
        except Exception as exc:
            self._log.warning("streams: could not read the followed collections: %s", exc)
            return
        caches = getattr(self._sink, "caches", None)
        for db_name in names:
            with self._lock:
                known = db_name in self._collections
            if known:
                continue
            # Only a collection this instance caches: another's may not be cached here, and
            # its records would move the shared checkpoint without reaching any cache.
            if caches is not None and not caches(db_name):
                continue
            collection = _Collection(db_name, self._service.table_name(db_name))
            with self._lock:
                self._collections.setdefault(db_name, collection)

    def _follow(self, collection: _Collection) -> bool:
        now = self._clock()
        interval = MISSING_INTERVAL_S if collection.stream is None else DESCRIBE_INTERVAL_S
        if now - collection.described_at >= interval:
            self._find_stream(collection, raise_errors=False)
            if collection.stream is not None:
                self._describe_shards(collection)
        if collection.stream is None:
            return False
        due = collection.drop_due
        if due is not None and now >= due and self._sink.distrust(collection.db_name):
            collection.drop_due = None
            self._save_unsaved(collection)
        busy = False
        for shard in list(collection.shards.values()):
            if shard.finished or not self._parent_done(collection, shard):
                continue
            try:  # one shard's trouble (throttling, a coordinator error) spares the others
                if self._hold(collection, shard):
                    busy |= self._step(collection, shard)
            except Exception as exc:
                self._log.warning("streams: %s/%s: %s", collection.table, shard.shard_id, exc)
        return busy

    # -- streams and shards -------------------------------------------------------------------

    def _find_stream(self, collection: _Collection, *, raise_errors: bool) -> None:
        """The table's current stream ARN (turning the stream on when it is off)."""
        service = self._service
        client = service.control_client
        table = collection.table
        collection.described_at = self._clock()
        try:
            description = service.control_call(
                "DescribeTable", table, lambda: client.describe_table(TableName=table)
            )["Table"]
        except GatewayError as exc:
            if exc.code == "ResourceNotFoundException":
                return  # created later, with a stream, by the first write
            if raise_errors:
                raise
            self._log.warning("streams: cannot describe %r: %s", table, exc)
            return
        spec = description.get("StreamSpecification") or {}
        if not spec.get("StreamEnabled"):
            if not self._enable:
                self._log.warning("streams: table %r has no stream: not followed", table)
                return
            self._turn_on(collection, raise_errors=raise_errors)
            return
        arn = description.get("LatestStreamArn")
        if arn != collection.stream:
            # A new stream (first sight, or disabled and enabled again): nothing carries over.
            collection.stream = arn
            collection.view_type = spec.get("StreamViewType")
            collection.shards = {}
            if collection.view_type != VIEW_TYPE:
                _log.warning(
                    "streams: table %r has a %s stream: changes whose images it leaves out "
                    "drop cached entries instead of refreshing them",
                    table,
                    collection.view_type,
                )

    def _turn_on(self, collection: _Collection, *, raise_errors: bool) -> None:
        service = self._service
        client = service.control_client
        table = collection.table
        try:
            service.control_call(
                "UpdateTable",
                table,
                lambda: client.update_table(
                    TableName=table,
                    StreamSpecification={"StreamEnabled": True, "StreamViewType": VIEW_TYPE},
                ),
            )
        except AccessDeniedError as exc:
            error = AccessDeniedError(
                f"streams_invalidation is on, and table {table!r} has no stream: turning it on "
                "needs the permission dynamodb:UpdateTable on the table (plus "
                "dynamodb:DescribeStream, dynamodb:GetShardIterator and dynamodb:GetRecords on "
                f"its stream to follow it). Grant them, or run `gateway streams enable "
                f"{collection.db_name}` as someone who may, or set streams_invalidation: "
                f"false. (AWS said: {exc})",
                code=exc.code,
                operation="UpdateTable",
            )
            if raise_errors:
                raise error from exc
            self._log.warning("streams: %s", error)
            return
        except GatewayError as exc:
            # Another instance may be turning it on right now (ResourceInUseException, or
            # ValidationException once it is on): describe again on the next pass.
            collection.described_at = float("-inf")
            if exc.code not in ("ResourceInUseException", "ValidationException"):
                if raise_errors:
                    raise
                self._log.warning("streams: cannot turn on the stream of %r: %s", table, exc)
            return
        _log.warning("streams: turned on a %s stream on table %r", VIEW_TYPE, table)
        collection.described_at = float("-inf")  # describe again for the ARN

    def _describe_shards(self, collection: _Collection) -> None:
        streams = self._service.streams_client
        stream = collection.stream
        assert stream is not None
        found: dict[str, _Shard] = {}
        start: str | None = None
        while True:
            params: dict[str, Any] = {"StreamArn": stream}
            if start is not None:
                params["ExclusiveStartShardId"] = start
            answer = self._describe_stream(collection.table, streams, params)
            for shard in answer.get("Shards", []):
                found[shard["ShardId"]] = _Shard(shard["ShardId"], shard.get("ParentShardId"))
            start = answer.get("LastEvaluatedShardId")
            if not start:
                break
        # Shards trimmed from the stream (24 hours after they closed) that were read to their
        # end are forgotten (their children no longer wait for them either way). One new dict,
        # assigned at once: `stats` reads it from other threads.
        known = collection.shards
        shards = {i: s for i, s in known.items() if i in found or not s.finished}
        for shard_id, shard in found.items():
            shards.setdefault(shard_id, shard)
        collection.shards = shards

    def _describe_stream(self, table: str, streams: Any, params: dict[str, Any]) -> Any:
        answer = self._service.control_call(
            "DescribeStream", table, lambda: streams.describe_stream(**params)
        )
        return answer["StreamDescription"]

    def _parent_done(self, collection: _Collection, shard: _Shard) -> bool:
        parent = collection.shards.get(shard.parent) if shard.parent else None
        return parent is None or parent.finished

    # -- leases -------------------------------------------------------------------------------

    def _hold(self, collection: _Collection, shard: _Shard) -> bool:
        """Whether this follower holds the shard's lease (taking or renewing it as due)."""
        now = self._clock()
        stream = collection.stream
        assert stream is not None
        coordinator = self._coordinator
        try:
            if shard.held:
                if now - shard.renewed_at < self._lease_s / 3:
                    return True
                if coordinator.renew(stream, shard.shard_id):
                    shard.renewed_at = now
                    shard.lease_until = now + self._lease_s
                    return True
                self._lose(collection, shard, "taken over")
                return False
            if not coordinator.acquire(stream, shard.shard_id):
                return False
        except Exception as exc:
            if shard.held and now < shard.lease_until:
                return True  # not lost yet: keep going until it may have expired
            if shard.held:
                self._lose(collection, shard, f"cannot be renewed: {exc}")
            return False
        shard.held = True
        shard.renewed_at = now
        shard.lease_until = now + self._lease_s
        try:
            self._position(collection, shard)
        except BaseException:
            self._release(collection, shard)
            raise
        return not shard.finished

    def _lose(self, collection: _Collection, shard: _Shard, why: str) -> None:
        # Whoever holds it next starts again from the checkpoint: the records read but not
        # applied here are read again there.
        _log.warning("streams: lease of %s/%s lost (%s)", collection.table, shard.shard_id, why)
        shard.held = False
        shard.iterator = None
        shard.positioned = False
        shard.pending = []
        shard.pending_sequence = None
        shard.unsaved = None
        shard.applied = None

    # -- positions and records ----------------------------------------------------------------

    def _position(self, collection: _Collection, shard: _Shard) -> None:
        """Get the shard's iterator from its checkpoint (see the module docstring)."""
        stream = collection.stream
        assert stream is not None
        checkpoints = self._coordinator.checkpoints(stream)
        checkpoint = checkpoints.get(shard.shard_id)
        if checkpoint == SHARD_END:
            shard.finished = True
            self._release(collection, shard)
            return
        if checkpoint not in (None, LATEST):
            try:
                shard.iterator = self._iterator(
                    collection, shard, "AFTER_SEQUENCE_NUMBER", checkpoint
                )
                shard.positioned = True
                shard.applied = checkpoint
                return
            except GatewayError as exc:
                if exc.code != "TrimmedDataAccessException":
                    raise
                _log.warning(
                    "streams: %s/%s: the checkpoint is older than the stream keeps; "
                    "restarting at its newest record and dropping the collection's cache",
                    collection.table,
                    shard.shard_id,
                )
        elif checkpoint is None and self._is_child_of_finished(collection, shard):
            # Every record of a split's child is new: read it from its start.
            shard.iterator = self._iterator(collection, shard, "TRIM_HORIZON")
            shard.positioned = True
            shard.applied = None
            return
        self._start_latest(collection, shard)

    def _is_child_of_finished(self, collection: _Collection, shard: _Shard) -> bool:
        parent = collection.shards.get(shard.parent) if shard.parent else None
        return parent is not None and parent.finished

    def _start_latest(self, collection: _Collection, shard: _Shard) -> None:
        stream = collection.stream
        assert stream is not None
        shard.iterator = self._iterator(collection, shard, "LATEST")
        shard.positioned = True
        shard.applied = None
        # The drop must come a fill deadline after the *latest* position taken at LATEST.
        due = self._clock() + self._fill_deadline_s
        collection.drop_due = due if collection.drop_due is None else max(collection.drop_due, due)
        if not self._coordinator.save_checkpoint(stream, shard.shard_id, LATEST):
            self._lose(collection, shard, "taken over")

    def _iterator(
        self, collection: _Collection, shard: _Shard, kind: str, sequence: str | None = None
    ) -> str:
        streams = self._service.streams_client
        params: dict[str, Any] = {
            "StreamArn": collection.stream,
            "ShardId": shard.shard_id,
            "ShardIteratorType": kind,
        }
        if sequence is not None:
            params["SequenceNumber"] = sequence
        answer = self._service.control_call(
            "GetShardIterator", collection.table, lambda: streams.get_shard_iterator(**params)
        )
        return str(answer["ShardIterator"])

    def _step(self, collection: _Collection, shard: _Shard) -> bool:
        """Apply what is pending, else read the next records; True if records came."""
        if shard.unsaved is not None and collection.drop_due is None:
            self._checkpoint(collection, shard, shard.unsaved)
        if shard.pending:
            self._apply_pending(collection, shard)
            return False
        if shard.iterator is None:
            if shard.positioned:
                self._finish(collection, shard)
            return False
        streams = self._service.streams_client
        iterator = shard.iterator
        try:
            answer = self._service.control_call(
                "GetRecords",
                collection.table,
                lambda: streams.get_records(ShardIterator=iterator, Limit=RECORDS_PER_CALL),
            )
        except GatewayError as exc:
            if exc.code == "ExpiredIteratorException":
                # Iterators live 15 minutes: take a new one after the last record applied
                # (saved or not: a drop may be pending), else from the checkpoint.
                after = shard.applied
                if after is None:
                    shard.iterator = None
                    shard.positioned = False
                    self._position(collection, shard)
                else:
                    shard.iterator = self._iterator(
                        collection, shard, "AFTER_SEQUENCE_NUMBER", after
                    )
                return False
            if exc.code == "TrimmedDataAccessException":
                self._start_latest(collection, shard)
                return False
            raise
        records = answer.get("Records") or []
        shard.iterator = answer.get("NextShardIterator")
        if records:
            changes = [
                change
                for change in (change_from_record(r, collection.table) for r in records)
                if change is not None
            ]
            shard.pending = changes
            shard.pending_sequence = str(records[-1]["dynamodb"]["SequenceNumber"])
            if not changes:  # only records of items that are not gateway documents
                shard.pending = []
                shard.applied = shard.pending_sequence
                self._checkpoint(collection, shard, shard.pending_sequence)
                return True
            self._apply_pending(collection, shard)
            return True
        if shard.iterator is None:
            self._finish(collection, shard)
        return False

    def _apply_pending(self, collection: _Collection, shard: _Shard) -> bool:
        if not self._hold(collection, shard) or (
            self._clock() > shard.lease_until - self._lease_s / 3
        ):
            # The lease may have run out while the records were read (a pause): another
            # follower may hold it and have applied later changes of these documents, which
            # these would undo where a program restored an older `_rev` (the cached copy
            # then matches these changes' old image). Whoever holds it reads them again.
            if shard.held:
                self._lose(collection, shard, "it may have run out while the records were read")
            return False
        changes = shard.pending
        if not self._sink.apply(collection.db_name, changes):
            self._log.warning(
                "streams: the cache did not answer; %d changes of %r kept to apply again",
                len(changes),
                collection.table,
            )
            return False
        now = self._wall_clock()
        newest = max(change.created_at for change in changes)
        with self._lock:
            collection.applied += len(changes)
            collection.newest_at = newest
            collection.lag_s = max(0.0, now - newest) if newest else None
            oldest = min(change.created_at for change in changes)
            collection.max_lag_s = max(0.0, now - oldest) if oldest else None
        shard.pending = []
        sequence = shard.pending_sequence
        shard.pending_sequence = None
        if sequence is not None:
            shard.applied = sequence
            self._checkpoint(collection, shard, sequence)
        return True

    def _checkpoint(self, collection: _Collection, shard: _Shard, value: str) -> None:
        if collection.drop_due is not None and value != SHARD_END:
            shard.unsaved = value  # the drop owed comes first: a takeover must still owe it
            return
        stream = collection.stream
        assert stream is not None
        try:
            if not self._coordinator.save_checkpoint(stream, shard.shard_id, value):
                self._lose(collection, shard, "taken over")
                return
        except Exception as exc:
            shard.unsaved = value
            self._log.warning("streams: checkpoint of %r not saved: %s", collection.table, exc)
            return
        shard.unsaved = None

    def _save_unsaved(self, collection: _Collection) -> None:
        for shard in collection.shards.values():
            if shard.held and shard.unsaved is not None:
                self._checkpoint(collection, shard, shard.unsaved)

    def _finish(self, collection: _Collection, shard: _Shard) -> None:
        """The shard was read to its end: its children may start."""
        if collection.drop_due is not None:
            return  # its end is saved once the drop owed is done (see `_checkpoint`)
        self._checkpoint(collection, shard, SHARD_END)
        if shard.held:
            shard.finished = True
            self._release(collection, shard)
            collection.described_at = float("-inf")  # find its children

    def _release(self, collection: _Collection, shard: _Shard) -> None:
        shard.held = False
        shard.unsaved = None  # the next holder starts from the saved checkpoint
        shard.applied = None
        try:
            assert collection.stream is not None
            self._coordinator.release(collection.stream, shard.shard_id)
        except Exception as exc:
            self._log.warning("streams: lease release failed: %s", exc)

    # -- the rest -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per collection: records applied, the lag of the newest record applied (seconds
        from DynamoDB writing it to the caches having it) and ``max_lag_s``, the longest a
        record of that batch waited."""
        with self._lock:
            per = {
                c.db_name: {
                    "records_applied": c.applied,
                    "lag_s": c.lag_s,
                    "max_lag_s": c.max_lag_s,
                    "shards_held": sum(1 for s in c.shards.values() if s.held),
                }
                for c in self._collections.values()
            }
        return {
            "records_applied": sum(p["records_applied"] for p in per.values()),
            "collections": per,
        }

    def close(self) -> None:
        """Stop the thread and give the leases back (others take over at once)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._lock:
            collections = list(self._collections.values())
        for collection in collections:
            for shard in collection.shards.values():
                if shard.held and collection.stream is not None:
                    self._release(collection, shard)
        self._coordinator.close()


def new_owner() -> str:
    """A follower's id in leases: host-independent and unique per process start."""
    return f"{os.getpid()}-{os.urandom(6).hex()}"
