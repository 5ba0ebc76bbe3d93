"""The caching gateway: read-through, write-through, single-flight, fail-open, never stale.

``CachingGateway`` wraps a ``DynamoDBService`` and has the same interface (a drop-in
``DatabaseService``). How it stays correct (the rules themselves are in `gateway.caches.base`):

* **Reads** (``get`` / ``get_many``) serve live cache entries. A miss takes the cache's *token*
  before DynamoDB is read, is loaded by one caller per key (single-flight: concurrent misses
  on a key wait for that one load), and fills the cache with that token: the fill is refused
  if a write began or ended on the key since, so an old read can never put back a document a
  write replaced. A load that took longer than ``fill_deadline_s`` does not fill at all.
* **Writes** register a *write intent* on their keys before DynamoDB is called, and end it
  once DynamoDB answered: the new document (or a tombstone) is stored if the writer was alone,
  else the key is dropped and the next read loads it. A read never waits on a write: while
  one is in flight, the previous acknowledged copy is served (the write has not returned).
  A writer that dies in between leaves the old copy trusted only until its intent expires
  (``intent_ttl_s``).
* **Failures of the cache tier** never reach a reader (`gateway.resilience`: circuit breaker,
  logged failures, replayed invalidations). A write whose intent cannot be registered is
  refused with `ServiceUnavailableError`, nothing written (``unreachable_writes="refuse"``,
  the default), or accepted, its keys invalidated once the cache answers again
  (``"accept"``: other instances may serve the previous copy until then, at most its TTL).
  A write whose end cannot reach the cache returns only once its intent has expired there
  (``"refuse"``; with ``"accept"`` it returns at once, and the keys are invalidated later).
* Callers always get private copies: mutating a returned document never changes the cache,
  nor the answer of another caller of the same single-flight load.

* ``list_all``, ``iter_pages`` and ``query`` answers are cached too where the collection's
  policy says ``cache_queries`` (`gateway.query_cache`): every write drops the *epochs* of the
  answers it can change (with the same intent as its documents), so no answer outlives an
  acknowledged write either.
"""

from __future__ import annotations

import random as random_module
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from time import perf_counter_ns
from typing import Any, Literal, Protocol, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from gateway import config
from gateway.breaker import CircuitBreaker
from gateway.caches.base import MISS, CacheBackend, End, Entry, Fill, Kind, Miss
from gateway.caches.errors import CacheError
from gateway.codec import copy_document, decode_item, validate_id, validate_ids
from gateway.counters import Counter
from gateway.dynamodb import UNKNOWN_PREVIOUS, DynamoDBService, Previous
from gateway.errors import ConfigError, ServiceUnavailableError
from gateway.metrics import SAMPLE_ONE_IN_8, WEYL_MULTIPLIER, LatencyRecorder
from gateway.query_cache import (
    QUERY_KEY_MARK,
    QueryCache,
    batch_keys,
    left_keys,
    query_suffix,
    save_keys,
    scan_epoch_key,
    scan_suffix,
)
from gateway.resilience import GuardedCache
from gateway.revisions import parse_generation
from gateway.service import Document, IfRev, SaveResult
from gateway.streams.records import Change
from gateway.tokens import random_hex

T = TypeVar("T")

#: How long a write intent lives in the cache: longer than a DynamoDB write normally takes
#: (a write that outlasts it is still safe: its end finds the intent gone and drops the key).
DEFAULT_INTENT_TTL_S = 5.0
#: A load that took longer than this does not fill the cache (a stalled reader's copy is old).
DEFAULT_FILL_DEADLINE_S = config.DEFAULT_FILL_DEADLINE_S
#: Cached list_all / query answers larger than this (approximate bytes) are not stored.
DEFAULT_MAX_QUERY_BYTES = config.DEFAULT_MAX_QUERY_BYTES
#: Local waits derived from the cache's clock are lengthened by this fraction (clock rates).
CLOCK_RATE_SLACK = 1.01

UnreachableWrites = Literal["refuse", "accept"]
QueryInvalidation = Literal["value", "collection"]
QUERY_INVALIDATIONS: tuple[QueryInvalidation, ...] = ("value", "collection")
UNREACHABLE_WRITES: tuple[UnreachableWrites, ...] = ("refuse", "accept")

#: A failure threshold no run reaches (the stream follower's breaker).
_NEVER_OPENS = 2**62
_KEY_SEPARATOR = ":"  # table names cannot contain ':', so "<table>:<id>" is unambiguous


class CachePolicyLike(Protocol):
    """What the gateway reads of a collection's cache policy (config.ResolvedCachePolicy)."""

    @property
    def enabled(self) -> bool: ...
    @property
    def ttl_s(self) -> float: ...
    @property
    def negative_ttl_s(self) -> float: ...
    @property
    def jitter(self) -> float: ...
    @property
    def cache_queries(self) -> bool: ...


class StreamFollowerLike(Protocol):
    """What the gateway uses of `gateway.streams.follower.StreamFollower`."""

    def register(self, db_name: str) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class _Flight:
    """One in-progress load of a key; concurrent missers wait on it.

    ``result`` belongs to the flight: no caller ever gets that object, each gets a copy.
    """

    __slots__ = ("dirty", "done", "error", "result", "started", "token")

    def __init__(self, token: int, started: float) -> None:
        self.token = token  # the cache's token when the leader missed
        self.started = started  # monotonic time the leader registered it (after its miss)
        self.done = threading.Event()
        self.dirty = False  # a write to the key was acknowledged while loading: do not fill
        self.result: Document | None = None
        self.error: BaseException | None = None

    def wait(self) -> Document | Miss | None:
        """The leader's answer; its error if the load failed; MISS if the leader was
        interrupted (a KeyboardInterrupt or SystemExit is its thread's, not the waiters')."""
        self.done.wait()
        if self.error is not None:
            if not isinstance(self.error, Exception):
                return MISS
            raise self.error
        return self.result


_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def as_returned(item: Mapping[str, Any], native_numbers: bool) -> Document:
    """The document exactly as a later ``get`` returns it: the item after boto3's
    serializer and deserializer (numbers become Decimal, bytes Binary, tuples lists)."""
    document = {key: _deserializer.deserialize(_serializer.serialize(v)) for key, v in item.items()}
    return decode_item(document, native_numbers)


class CachingGateway:
    """A ``DatabaseService`` that serves reads from a cache in front of a DynamoDBService."""

    def __init__(
        self,
        service: DynamoDBService,
        cache: CacheBackend,
        *,
        policy_for: Callable[[str], CachePolicyLike],
        breaker: CircuitBreaker | None = None,
        intent_ttl_s: float = DEFAULT_INTENT_TTL_S,
        fill_deadline_s: float = DEFAULT_FILL_DEADLINE_S,
        unreachable_writes: UnreachableWrites = "refuse",
        max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES,
        query_invalidation: QueryInvalidation = "value",
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``intent_ttl_s``: how long a write intent protects a key (see the module
        docstring); ``fill_deadline_s`` must stay below the backend's ``floor_ttl_s``;
        ``unreachable_writes``: ``"refuse"`` or ``"accept"`` a write whose intent cannot be
        registered in the cache; ``max_query_bytes``: the largest ``list_all`` / ``query``
        answer stored (approximate bytes); ``query_invalidation``: ``"value"`` (a write drops
        the cached answers of the index values its document leaves and joins) or
        ``"collection"`` (every answer of its collection; see `gateway.query_cache`).
        ``clock`` (monotonic), ``wall_clock``, ``sleep`` and
        ``random`` (TTL jitter) are injected for tests."""
        if unreachable_writes not in UNREACHABLE_WRITES:
            raise ValueError(
                f"unreachable_writes must be one of {UNREACHABLE_WRITES}, "
                f"not {unreachable_writes!r}"
            )
        if not intent_ttl_s > fill_deadline_s:
            raise ValueError(
                f"intent_ttl_s ({intent_ttl_s}) must be above fill_deadline_s "
                f"({fill_deadline_s}): a record whose last intent expired leaves no floor, so "
                "no fill may take as long"
            )
        floor_ttl_s = getattr(cache, "floor_ttl_s", None)
        if floor_ttl_s is not None and not fill_deadline_s < floor_ttl_s:
            raise ValueError(
                f"fill_deadline_s ({fill_deadline_s}) must be below the cache's floor_ttl_s "
                f"({floor_ttl_s}): a slower fill could outlive the floor that refuses it"
            )
        self._service = service
        self._cache = cache
        self._policy_for = policy_for
        # db_name -> (its cache policy, its table): validated once, then a dict lookup.
        self._collections: dict[str, tuple[CachePolicyLike, str]] = {}
        self._unreachable_writes = unreachable_writes
        self._guard = GuardedCache(
            cache,
            breaker,
            distrust_on_recovery=unreachable_writes == "accept",
            clock=clock,
            wall_clock=wall_clock,
            sleep=sleep,
        )
        self._intent_ttl_s = intent_ttl_s
        self._fill_deadline_s = fill_deadline_s
        self._random = random
        self._clock = clock
        self._wall_clock = wall_clock
        self._native = service.native_numbers
        # A backend that decodes every answer from bytes (Redis) hands out fresh objects: no
        # copy is needed on a hit. One that keeps objects (memory, tiered) needs one.
        self._copy = copy_document if getattr(cache, "shares_documents", True) else _same
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()
        # An in-process cache is read again once a load is registered (double-checked, as in
        # cachetools' `_cached`): a load that finished just before has filled the key. Across
        # the network that would cost a round trip on every miss to save a rare second load.
        self._double_check = bool(getattr(cache, "in_process", False))
        if max_query_bytes < 1:
            raise ValueError(f"max_query_bytes must be at least 1, not {max_query_bytes}")
        if query_invalidation not in QUERY_INVALIDATIONS:
            raise ValueError(
                f"query_invalidation must be one of {QUERY_INVALIDATIONS}, "
                f"not {query_invalidation!r}"
            )
        self._by_value = query_invalidation == "value"
        self._queries = QueryCache(
            self._guard,
            copy=self._copy,
            max_bytes=max_query_bytes,
            fill_deadline_s=fill_deadline_s,
            clock=clock,
            wall_clock=wall_clock,
            scans_consistent=service.consistent_read,
        )
        self._follower: StreamFollowerLike | None = None
        self._stream_guard: GuardedCache | None = None
        self._hits = Counter()
        self._misses = Counter()
        self._waits = Counter()
        self._fills_skipped = Counter()
        self._writes_refused = Counter()
        # Latency of every public call (those that raise included). Each histogram is held in
        # an attribute of its own: recording is two clock reads and a bisect, no lookup. `get`
        # is the hot path (a hit is a few µs): every get is counted but one in eight is timed,
        # which halves what timing adds to a hit (see metrics.SampledLatencyHistogram).
        self._latency = LatencyRecorder()
        self._get_latency = self._latency.sampled_histogram("get")
        self._get_tick = self._get_latency.tick
        self._get_many_latency = self._latency.histogram("get_many")
        self._list_all_latency = self._latency.histogram("list_all")
        self._query_latency = self._latency.histogram("query")
        self._save_latency = self._latency.histogram("save")
        self._delete_latency = self._latency.histogram("delete")
        self._save_many_latency = self._latency.histogram("save_many")
        self._delete_many_latency = self._latency.histogram("delete_many")

    # ------------------------------------------------------------------ reads

    def get(self, db_name: str, doc_id: str) -> Document | None:
        """The document, from the cache when it holds a live copy, else from DynamoDB."""
        start = 0 if self._get_tick() * WEYL_MULTIPLIER & SAMPLE_ONE_IN_8 else perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            doc_id = validate_id(doc_id)
            if not policy.enabled:
                return self._service.get(db_name, doc_id)
            key = table + _KEY_SEPARATOR + doc_id
            guard = self._guard
            entry = guard.get(key)
            if entry is not MISS and entry.stored_at >= guard.distrust_before:
                kind = entry.kind
                if kind is Kind.DOCUMENT:
                    self._hits.inc()
                    return self._copy(entry.document)
                if kind is Kind.ABSENT:
                    self._hits.inc()
                    return None
            self._misses.inc()
            token = guard.read_token(key, entry)
            return self._load(db_name, policy, {doc_id: key}, {doc_id: token})[doc_id]
        finally:
            if start:
                self._get_latency.record(perf_counter_ns() - start)

    def get_many(self, db_name: str, doc_ids: Iterable[str]) -> dict[str, Document | None]:
        """Every asked id -> its document or None; cache hits first, one batch for the rest."""
        start = perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            ids = validate_ids(doc_ids)
            if not policy.enabled:
                return self._service.get_many(db_name, ids)
            found = self._read_through(
                db_name, policy, {doc_id: table + _KEY_SEPARATOR + doc_id for doc_id in ids}
            )
            return {doc_id: found[doc_id] for doc_id in ids}
        finally:
            self._get_many_latency.record(perf_counter_ns() - start)

    def _read_through(
        self, db_name: str, policy: CachePolicyLike, keys: Mapping[str, str]
    ) -> dict[str, Document | None]:
        """``keys`` (id -> key): cache hits, and one load for the rest."""
        found: dict[str, Document | None] = {}
        missing: dict[str, str] = {}
        tokens: dict[str, int] = {}
        key_list = list(keys.values())
        for (doc_id, key), entry in zip(keys.items(), self._guard.get_many(key_list), strict=True):
            answer = self._answer(entry)
            if answer is MISS:
                self._misses.inc()
                missing[doc_id] = key
                tokens[doc_id] = self._guard.read_token(key, entry)
            else:
                self._hits.inc()
                found[doc_id] = None if answer is None else self._copy(answer)
        if missing:
            found.update(self._load(db_name, policy, missing, tokens))
        return found

    def list_all(self, db_name: str) -> list[Document]:
        """Every document: the cached answer if the collection caches queries, else a scan."""
        start = perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            if not (policy.enabled and policy.cache_queries):
                return self._service.list_all(db_name)
            return self._queries.answer(
                table,
                scan_suffix(),
                self._ttl(policy.ttl_s, policy),
                lambda: self._service.list_all(db_name),
            )
        finally:
            self._list_all_latency.record(perf_counter_ns() - start)

    def iter_pages(self, db_name: str, page_size: int = 100) -> Iterator[list[Document]]:
        """Pages of documents: from the cached scan if the collection caches queries (a miss
        streams DynamoDB's pages and stores them once all were read), else from DynamoDB."""
        policy, table = self._collections.get(db_name) or self._collection(db_name)
        pages = self._service.iter_pages(db_name, page_size)  # checks page_size; scans lazily
        if not (policy.enabled and policy.cache_queries):
            return pages
        return self._queries.pages(table, self._ttl(policy.ttl_s, policy), page_size, lambda: pages)

    def query(self, db_name: str, index: str, value: Any) -> list[Document]:
        """An index query: the cached answer if the collection caches queries, else
        DynamoDB's (index and value are checked either way)."""
        start = perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            if not (policy.enabled and policy.cache_queries):
                return self._service.query(db_name, index, value)
            key_value = self._service.validate_query(db_name, index, value)
            return self._queries.answer(
                table,
                query_suffix(index, key_value),
                self._ttl(policy.ttl_s, policy),
                lambda: self._service.query(db_name, index, value),
            )
        finally:
            self._query_latency.record(perf_counter_ns() - start)

    # ------------------------------------------------------------------ writes

    def save(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> SaveResult:
        """Save through to DynamoDB, then put the saved document in the cache."""
        start = perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            doc_id, item = self._service.validate_save(db_name, doc_id, doc, if_rev=if_rev)
            if not policy.enabled:
                return self._service.save(db_name, doc_id, doc, if_rev=if_rev)
            keys = {doc_id: self._key(db_name, doc_id)}
            indexes = self._index_attributes(db_name)
            # From the item as stored (with its _id, which an index may be keyed on).
            epochs = save_keys(table, indexes, item) if indexes else batch_keys(table)

            def written(saved: tuple[SaveResult, dict[str, Any], Previous]) -> dict[str, Entry]:
                result, item, _ = saved
                return {doc_id: self._document_entry(result["rev"], item)}

            result, _, _ = self._write_through(
                policy,
                keys,
                epochs,
                lambda: self._service.save_with_previous(db_name, doc_id, doc, if_rev=if_rev),
                written,
                lambda saved: left_keys(table, indexes, saved[2], epochs),
                left_keys(table, indexes, UNKNOWN_PREVIOUS, epochs),
                # One conditional PutItem: DynamoDB applies these in generation order. Not so
                # when saves are coalesced into BatchWriteItem (no conditions).
                ordered=not self._service.coalesce_writes,
            )
            return result
        finally:
            self._save_latency.record(perf_counter_ns() - start)

    def delete(self, db_name: str, doc_id: str, *, if_rev: IfRev = None) -> bool:
        """Delete in DynamoDB, then leave a tombstone in the cache."""
        start = perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            doc_id = validate_id(doc_id)
            if not policy.enabled:
                return self._service.delete(db_name, doc_id, if_rev=if_rev)
            keys = {doc_id: self._key(db_name, doc_id)}
            indexes = self._index_attributes(db_name)
            epochs = [scan_epoch_key(table)] if indexes else batch_keys(table)
            rev, _ = self._write_through(
                policy,
                keys,
                epochs,
                lambda: self._service.delete_with_previous(db_name, doc_id, if_rev=if_rev),
                lambda _: {doc_id: self._tombstone()},
                lambda deleted: left_keys(table, indexes, deleted[1], epochs),
                left_keys(table, indexes, UNKNOWN_PREVIOUS, epochs),
            )
            return rev is not None
        finally:
            self._delete_latency.record(perf_counter_ns() - start)

    def save_many(
        self,
        db_name: str,
        docs: Mapping[str, Mapping[str, Any]],
        *,
        assume_new: bool = False,
    ) -> dict[str, str]:
        """Save through with BatchWriteItem, then put every saved document in the cache
        (``assume_new``: see `DynamoDBService.save_many`)."""
        start = perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            prepared = self._service.validate_save_many(db_name, docs)
            if not policy.enabled:
                return self._service.save_many(db_name, docs, assume_new=assume_new)
            keys = {doc_id: self._key(db_name, doc_id) for doc_id in prepared}

            def written(items: dict[str, dict[str, Any]]) -> dict[str, Entry]:
                return {
                    doc_id: self._document_entry(item["_rev"], item)
                    for doc_id, item in items.items()
                }

            items = self._write_through(
                policy,
                keys,
                batch_keys(table),
                lambda: self._service.save_many_with_items(db_name, docs, assume_new=assume_new),
                written,
            )
            return {doc_id: item["_rev"] for doc_id, item in items.items()}
        finally:
            self._save_many_latency.record(perf_counter_ns() - start)

    def delete_many(self, db_name: str, doc_ids: Iterable[str]) -> None:
        """Delete with BatchWriteItem, then leave tombstones in the cache."""
        start = perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            ids = validate_ids(doc_ids)
            if not policy.enabled:
                self._service.delete_many(db_name, ids)
                return
            keys = {doc_id: self._key(db_name, doc_id) for doc_id in ids}
            self._write_through(
                policy,
                keys,
                batch_keys(table),
                lambda: self._service.delete_many(db_name, ids),
                lambda _: {doc_id: self._tombstone() for doc_id in ids},
            )
        finally:
            self._delete_many_latency.record(perf_counter_ns() - start)

    def _write_through(
        self,
        policy: CachePolicyLike,
        keys: Mapping[str, str],
        epochs: Sequence[str],
        perform: Callable[[], T],
        written: Callable[[T], Mapping[str, Entry]],
        left: Callable[[T], list[str]] | None = None,
        left_unknown: Sequence[str] = (),
        *,
        ordered: bool = False,
    ) -> T:
        """Intent, DynamoDB, end of the intent (see the module docstring).

        ``keys`` (id -> key) are the documents; ``epochs`` the query epochs the write drops
        under the same intent (`gateway.query_cache`): always, whatever this instance's
        ``cache_queries``, since other instances may cache queries. ``left`` names the epochs
        only DynamoDB's answer reveals (the values the document left), dropped after the end;
        ``left_unknown`` those to drop when the write failed and its reach is unknown.
        """
        if not keys:
            return perform()
        intent = random_hex(16)
        every_key = [*keys.values(), *epochs]
        tokens = self._guard.begin_write(every_key, intent, self._intent_ttl_s, ordered)
        # Taken after the intents were registered, so no earlier than their deadline in the
        # cache: once it has passed, the cache no longer trusts the entries they covered.
        until = self._clock() + self._intent_ttl_s * CLOCK_RATE_SLACK
        if tokens is None and self._unreachable_writes == "refuse":
            self._writes_refused.inc()
            raise ServiceUnavailableError(
                f"The {getattr(self._cache, 'name', 'cache')} cache cannot be reached, so this "
                "write was refused and nothing was written: other gateway instances could "
                "otherwise keep serving the previous copy. Retry when the cache is back, or "
                "set cache.unreachable_writes: accept to write anyway (see the README).",
                operation="cache",
            )
        try:
            result = perform()
        except BaseException:
            self._end_flights(list(keys.values()))
            # Nothing written, or nothing known: drop the keys (one try; the intents expire).
            self._end_write(policy, keys, epochs, intent, tokens, None, until=self._clock())
            if left_unknown and not self._guard.invalidate_until(left_unknown, self._clock()):
                self._guard.remember(left_unknown)
            raise
        self._end_flights(list(keys.values()))
        wait_until = until if self._unreachable_writes == "refuse" else self._clock()
        self._end_write(policy, keys, epochs, intent, tokens, written(result), until=wait_until)
        if left is not None:
            extra = left(result)
            if extra and not self._guard.invalidate_until(extra, wait_until):
                self._guard.remember(extra)
                if self._unreachable_writes == "refuse":
                    raise ServiceUnavailableError(
                        "The write was applied in DynamoDB (it did not fail), but the "
                        f"{getattr(self._cache, 'name', 'cache')} cache could not be reached "
                        "to drop the cached query answers of the index value the document "
                        "left: other gateway instances may still list it there until this "
                        "instance repairs them, once the cache answers again (this instance "
                        "does not serve them meanwhile).",
                        operation="cache",
                    )
        return result

    def _end_write(
        self,
        policy: CachePolicyLike,
        keys: Mapping[str, str],
        epochs: Sequence[str],
        intent: str,
        tokens: list[int] | None,
        entries: Mapping[str, Entry] | None,
        until: float,
    ) -> None:
        """End the intents (the epochs are always dropped); if the cache does not answer
        before ``until``, the intents have expired there by the time this returns
        (``"refuse"``), or the keys are remembered and invalidated when it answers again
        (``"accept"``)."""
        every_key = [*keys.values(), *epochs]
        if tokens is None:
            self._guard.invalidate(every_key)
            return
        ends = []
        for (doc_id, key), token in zip(keys.items(), tokens, strict=False):
            entry = None if entries is None else entries.get(doc_id)
            ttl = 0.0
            if entry is not None:
                base = policy.ttl_s if entry.kind is Kind.DOCUMENT else policy.negative_ttl_s
                ttl = self._ttl(base, policy)
            ends.append(End(key, intent, token, entry, ttl))
        for key, token in zip(epochs, tokens[len(keys) :], strict=True):
            ends.append(End(key, intent, token, None, 0.0))
        if self._guard.end_write(ends, until) is None and self._unreachable_writes == "accept":
            self._guard.remember(every_key)

    def _index_attributes(self, db_name: str) -> Mapping[str, str]:
        """The collection's indexes (index -> attribute) when writes drop the answers of
        the values they touch; empty when they drop every answer: ``"collection"``, or writes
        coalesced into BatchWriteItem (which returns no old items: the whole reach is known
        before the write, so it goes under the intent)."""
        if not self._by_value or self._service.coalesce_writes:
            return {}
        return self._service.index_attributes(db_name)

    def _document_entry(self, rev: str, item: Mapping[str, Any]) -> Entry:
        return Entry(
            Kind.DOCUMENT,
            parse_generation(rev) or 0,
            rev,
            as_returned(item, self._native),
            self._wall_clock(),
        )

    def _tombstone(self) -> Entry:
        # Generation 0: a save that begins after this delete ended is newer, whatever its
        # generation (see gateway.caches.base).
        return Entry(Kind.ABSENT, 0, None, None, self._wall_clock())

    # ------------------------------------------------------------------ operators

    def invalidate(self, db_name: str, doc_id: str) -> None:
        """Drop one document from the cache (the next read loads it from DynamoDB)."""
        key = self._key(db_name, validate_id(doc_id))
        self._end_flights([key])
        # The document may be in cached list_all / query answers too: drop their epochs.
        self._guard.invalidate([key, *batch_keys(self._service.table_name(db_name))])

    def invalidate_collection(self, db_name: str) -> int:
        """Drop every cached document and query answer of a collection; returns how many
        entries were dropped.

        Raises the cache's error if it cannot be reached (nothing is remembered for later)."""
        table = self._service.table_name(db_name)
        prefix = table + _KEY_SEPARATOR
        with self._flights_lock:
            for key in [k for k in self._flights if k.startswith(prefix)]:
                self._flights.pop(key).dirty = True
        try:
            dropped = self._guard.delete_prefix(prefix)
            return dropped + self._guard.delete_prefix(table + QUERY_KEY_MARK)
        except CacheError:
            self._guard.errors.inc()
            raise

    # ------------------------------------------------------------------ stream changes

    def follow_streams(self, follower: StreamFollowerLike) -> None:
        """Have ``follower`` follow the stream of every collection this gateway caches (from
        its first use; `close` stops it). See `gateway.streams`."""
        self._follower = follower
        for db_name, (policy, _) in list(self._collections.items()):
            if policy.enabled:
                follower.register(db_name)

    # What `gateway.streams.apply.ChangeApplier` uses of this gateway (`CacheParts`).

    def stream_guard(self) -> GuardedCache:
        """The cache as the stream follower uses it: a guard of its own whose breaker never
        opens. Readers skip a cache that failed (the breaker spares them its timeouts); the
        follower, in the background, must apply its kept records as soon as the cache answers,
        not once the readers' breaker lets a trial through."""
        guard = self._stream_guard
        if guard is None:
            guard = self._stream_guard = GuardedCache(
                self._cache,
                CircuitBreaker(failure_threshold=_NEVER_OPENS),
                clock=self._clock,
                wall_clock=self._wall_clock,
            )
        return guard

    def stream_target(self, db_name: str) -> tuple[CachePolicyLike, str] | None:
        """The collection's policy and table, None if it is not cached."""
        policy, table = self._collections.get(db_name) or self._collection(db_name)
        return (policy, table) if policy.enabled else None

    def stream_index_attributes(self, db_name: str) -> Mapping[str, str]:
        return self._index_attributes(db_name)

    def stream_entry(self, change: Change) -> Entry:
        if change.removed or change.new_item is None:
            return self._tombstone()
        return self._document_entry(str(change.new_item["_rev"]), change.new_item)

    def stream_ttl(self, entry: Entry, policy: CachePolicyLike) -> float:
        base = policy.ttl_s if entry.kind is Kind.DOCUMENT else policy.negative_ttl_s
        return self._ttl(base, policy)

    def stream_forget_loads(self, keys: Sequence[str]) -> None:
        self._end_flights(keys)

    def stream_key(self, table: str, doc_id: str) -> str:
        return table + _KEY_SEPARATOR + doc_id

    def stats(self) -> dict[str, Any]:
        """Hits, misses, hit ratio, DynamoDB calls by operation, the cache tier's health,
        latency per public call (``latency``) and per DynamoDB operation (``db_latency``), the
        capacity DynamoDB reports consumed, and its on-demand cost (see docs/metrics.md)."""
        hits, misses = self._hits.value, self._misses.value
        latency = self._latency.snapshot()
        service_stats = self._service.stats()
        try:
            cache_stats = self._cache.stats()
        except Exception:
            cache_stats = {}
        guard = self._guard
        return {
            "hits": hits,
            "misses": misses,
            "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
            "query_hits": self._queries.hits.value,
            "query_misses": self._queries.misses.value,
            "queries_too_large": self._queries.too_large.value,
            "db_calls": service_stats["db_calls"],
            "retry": service_stats.get("retry", {}),
            "batching": service_stats.get("batching", {}),
            "cache_backend": getattr(self._cache, "name", type(self._cache).__name__),
            "evictions": int(cache_stats.get("evictions", 0)),
            "cache_errors": guard.errors.value,
            "fallbacks": guard.fallbacks.value,
            "single_flight_waits": self._waits.value,
            "fills_skipped": self._fills_skipped.value,
            "writes_refused": self._writes_refused.value,
            "pending_repairs": guard.pending,
            "repairs": guard.repairs.value,
            "breaker": guard.breaker.state,
            "cache": cache_stats,
            "latency": latency,
            "db_latency": service_stats.get("latency", {}),
            "consumed_capacity": service_stats.get("consumed_capacity", {}),
            "cost": _cost_per_op(service_stats.get("cost", {}), latency),
            **({} if self._follower is None else {"streams": self._follower.stats()}),
        }

    def close(self) -> None:
        """Stop the stream follower and the repair thread, then close the cache and the
        service."""
        try:
            if self._follower is not None:
                self._follower.close()
            self._guard.close()
        finally:
            self._service.close()

    def __enter__(self) -> CachingGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CachingGateway({self._service!r}, cache={getattr(self._cache, 'name', '?')})"

    @property
    def service(self) -> DynamoDBService:
        """The wrapped DynamoDB service."""
        return self._service

    @property
    def cache(self) -> CacheBackend:
        """The cache backend."""
        return self._cache

    @property
    def fill_deadline_s(self) -> float:
        """The longest a cache fill may take (a slower load does not fill)."""
        return self._fill_deadline_s

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock the gateway runs on (injected in tests)."""
        return self._clock

    @property
    def intent_ttl_s(self) -> float:
        """How long a write intent protects a key."""
        return self._intent_ttl_s

    @property
    def breaker(self) -> CircuitBreaker:
        """The cache tier's circuit breaker."""
        return self._guard.breaker

    # ------------------------------------------------------------------ loading

    def _answer(self, entry: Entry | Miss) -> Document | Miss | None:
        """A cache result as an answer: the document, None, or MISS (also for floors and
        entries stored before a recovery this instance distrusts)."""
        if entry is MISS or entry.stored_at < self._guard.distrust_before:
            return MISS
        if entry.kind is Kind.DOCUMENT:
            return entry.document
        if entry.kind is Kind.ABSENT:
            return None
        return MISS

    def _load(
        self,
        db_name: str,
        policy: CachePolicyLike,
        missing: Mapping[str, str],
        tokens: Mapping[str, int],
    ) -> dict[str, Document | None]:
        """Load ``missing`` (id -> key): lead the loads nobody runs, wait for the others."""
        led: dict[str, _Flight] = {}
        joined: dict[str, _Flight] = {}
        now = self._clock()
        with self._flights_lock:
            for doc_id, key in missing.items():
                flight = self._flights.get(key)
                if flight is not None and (
                    self._double_check
                    or (
                        flight.token == tokens[doc_id]
                        and now - flight.started <= self._fill_deadline_s
                    )
                ):
                    # Across the network, join only a load that saw the same record (if another
                    # instance's write ended since the leader missed, its answer may be older
                    # than that write), and only within the fill deadline: the records that
                    # make tokens differ outlive it, not longer; past it, an equal token may be
                    # a write's record that aged out. An in-process cache hears of every write
                    # (`_end_flights`).
                    joined[doc_id] = flight
                else:
                    flight = self._flights[key] = _Flight(tokens[doc_id], now)
                    led[doc_id] = flight
        results: dict[str, Document | None] = {}
        if led:
            results.update(self._lead(db_name, policy, missing, led, tokens))
        again: dict[str, str] = {}
        for doc_id, flight in joined.items():
            self._waits.inc()
            document = flight.wait()
            if document is MISS:
                again[doc_id] = missing[doc_id]  # the leader was interrupted: read anew
            else:
                results[doc_id] = None if document is None else copy_document(document)
        if again:
            results.update(self._read_through(db_name, policy, again))
        return results

    def _lead(
        self,
        db_name: str,
        policy: CachePolicyLike,
        keys: Mapping[str, str],
        flights: dict[str, _Flight],
        tokens: Mapping[str, int],
    ) -> dict[str, Document | None]:
        """Run the loads of ``flights``; every flight is settled when this returns or raises."""
        try:
            return self._run_flights(db_name, policy, keys, flights, tokens)
        except BaseException as exc:
            # Interrupted anywhere (DynamoDB, the cache, a KeyboardInterrupt): the waiters get
            # the error, and later readers start a load of their own.
            self._finish(keys, flights, error=exc)
            raise

    def _run_flights(
        self,
        db_name: str,
        policy: CachePolicyLike,
        keys: Mapping[str, str],
        flights: dict[str, _Flight],
        tokens: Mapping[str, int],
    ) -> dict[str, Document | None]:
        # The fill deadline counts from here: the cache read that gave the tokens took at most
        # the cache's timeout, far below the floors' lifetime that the deadline stays under.
        started = self._clock()
        settled: dict[str, Document | None] = {}
        if self._double_check:
            settled, tokens = self._settled(keys, flights)
        results: dict[str, Document | None] = {}
        if settled:
            done = {doc_id: flights.pop(doc_id) for doc_id in settled}
            self._finish(keys, done, settled)
            results.update(
                (doc_id, None if document is None else copy_document(document))
                for doc_id, document in settled.items()
            )
        if not flights:
            return results
        if len(flights) == 1:
            (doc_id,) = flights
            loaded = {doc_id: self._service.get(db_name, doc_id)}
        else:
            loaded = self._service.get_many(db_name, list(flights))
        fresh = self._clock() - started <= self._fill_deadline_s
        now = self._wall_clock()
        fills = []
        for doc_id, flight in flights.items():
            if flight.dirty or not fresh:
                self._fills_skipped.inc()
                continue
            document = loaded[doc_id]
            if document is None:
                entry = Entry(Kind.ABSENT, 0, None, None, now)
                ttl = self._ttl(policy.negative_ttl_s, policy)
            else:
                rev = document.get("_rev")
                entry = Entry(Kind.DOCUMENT, parse_generation(rev) or 0, rev, document, now)
                ttl = self._ttl(policy.ttl_s, policy)
            fills.append(Fill(keys[doc_id], entry, ttl, tokens[doc_id]))
        if fills:
            self._guard.fill_many(fills)
        self._finish(keys, flights, loaded)
        # The loaded documents belong to the flights (and maybe the cache): hand out copies.
        results.update(
            (doc_id, None if document is None else copy_document(document))
            for doc_id, document in loaded.items()
        )
        return results

    def _settled(
        self, keys: Mapping[str, str], flights: Mapping[str, _Flight]
    ) -> tuple[dict[str, Document | None], dict[str, int]]:
        """Answers the cache got since these keys missed, and fresh tokens for the rest: a
        load that finished just before this flight was registered has filled them."""
        ids = list(flights)
        key_list = [keys[doc_id] for doc_id in ids]
        settled: dict[str, Document | None] = {}
        tokens: dict[str, int] = {}
        guard = self._guard
        for doc_id, key, entry in zip(ids, key_list, guard.get_many(key_list), strict=True):
            answer = self._answer(entry)
            if answer is MISS:
                tokens[doc_id] = guard.read_token(key, entry)
            else:
                settled[doc_id] = answer
        return settled, tokens

    def _finish(
        self,
        keys: Mapping[str, str],
        flights: dict[str, _Flight],
        loaded: Mapping[str, Document | None] | None = None,
        error: BaseException | None = None,
    ) -> None:
        with self._flights_lock:
            for doc_id, flight in flights.items():
                key = keys[doc_id]
                if self._flights.get(key) is flight:
                    del self._flights[key]
        for doc_id, flight in flights.items():
            if flight.done.is_set():
                continue
            if error is not None:
                flight.error = error
            elif loaded is not None:
                flight.result = loaded[doc_id]
            flight.done.set()

    def _end_flights(self, keys: Sequence[str]) -> None:
        """A write to ``keys`` was acknowledged: loads in flight must not fill the cache, and
        later readers must not join them."""
        with self._flights_lock:
            for key in keys:
                flight = self._flights.pop(key, None)
                if flight is not None:
                    flight.dirty = True

    # ------------------------------------------------------------------ helpers

    def _collection(self, db_name: str) -> tuple[CachePolicyLike, str]:
        """The collection's policy and table; the name is validated before anything is kept."""
        table = self._service.table_name(db_name)
        policy = self._policy_for(db_name)
        shortest = min(policy.ttl_s, policy.negative_ttl_s) * (1.0 - policy.jitter)
        if policy.enabled and not shortest > self._fill_deadline_s:
            # An entry that expires sooner would leave its key without a floor while a load
            # that read before its write may still fill (see gateway.caches.base).
            raise ConfigError(
                f"The cache TTLs of collection {db_name!r} are too short: ttl_seconds and "
                f"negative_ttl_seconds, less ttl_jitter, must stay above "
                f"{self._fill_deadline_s:g} s (the longest a cache fill may take); got "
                f"{policy.ttl_s:g} s and {policy.negative_ttl_s:g} s with jitter "
                f"{policy.jitter:g}. Raise them under cache or collections.{db_name}.cache, "
                "or set enabled: false for that collection."
            )
        follower = self._follower
        if follower is not None and policy.enabled:
            follower.register(db_name)  # raises if its stream cannot be followed
        collection = (policy, table)
        self._collections[db_name] = collection
        return collection

    def _key(self, db_name: str, doc_id: str) -> str:
        table = (self._collections.get(db_name) or self._collection(db_name))[1]
        return table + _KEY_SEPARATOR + doc_id

    def _ttl(self, ttl_s: float, policy: CachePolicyLike) -> float:
        """``ttl_s`` shortened by up to ``jitter`` of itself, at random, so that entries filled
        together do not all expire together."""
        return ttl_s * (1.0 - policy.jitter * self._random())


def _cost_per_op(
    cost: Mapping[str, Any], latency: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The service's cost, plus what a million calls to this gateway cost at the same mix of
    calls and hit ratio (``per_million_ops``)."""
    ops = sum(int(snapshot["count"]) for snapshot in latency.values())
    dollars = float(cost.get("dollars", 0.0))
    return {**cost, "dollars": dollars, "per_million_ops": dollars / ops * 1e6 if ops else 0.0}


def _same(document: Document) -> Document:
    return document
