"""The caching gateway: read-through, write-through, single-flight, fail-open, never stale.

``CachingGateway`` wraps a ``DynamoDBService`` and has the same interface (a drop-in
``DatabaseService``). How it stays correct:

* **Reads** (``get`` / ``get_many``) serve live cache entries; a miss is loaded from DynamoDB by
  one caller per key (single-flight: concurrent misses on a key wait for that one load) and
  filled into the cache with the compare-and-set of ``caches/base.py``, which never puts an older
  generation over a newer one.
* **Writes** mark the key *quarantined* in the cache before DynamoDB is called, then, once
  DynamoDB acknowledged, replace the marker with the new document (or a tombstone). A load
  that was in flight when the write was acknowledged does not fill the cache, and readers that
  arrive after the acknowledgment start a fresh load.
* **Failures of the cache tier** never reach the caller: the call is served from DynamoDB, a
  circuit breaker stops waiting on a cache that keeps failing, and a write whose cache update
  failed is remembered and replayed (compare-and-set again) before this instance reads the cache
  again. An instance that saw the cache fail distrusts entries stored before it recovered.
* Callers always get private copies: mutating a returned document never changes the cache.

``list_all``, ``iter_pages`` and ``query`` are passed through to DynamoDB, not cached: a cached
scan or query result would need invalidation on every write to the collection (DAX's query cache
simply goes stale); see the README for the reasoning.
"""

from __future__ import annotations

import itertools
import random as random_module
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from time import perf_counter_ns
from typing import Any, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from gateway.breaker import CircuitBreaker
from gateway.caches.base import MISS, CacheBackend, Entry, Kind, Miss, Put
from gateway.codec import copy_document, decode_item, validate_id
from gateway.dynamodb import DynamoDBService
from gateway.errors import ConflictError, ValidationError
from gateway.metrics import SAMPLE_ONE_IN_8, WEYL_MULTIPLIER, LatencyRecorder
from gateway.revisions import parse_generation, wall_clock_us
from gateway.service import Document, IfRev, SaveResult

#: How long a quarantine marker lives if the write's outcome never becomes known (longer than
#: any DynamoDB call with its retries can take).
DEFAULT_QUARANTINE_TTL_S = 30.0
#: A load that took longer than this does not fill the cache (a stalled reader's copy is old).
DEFAULT_FILL_DEADLINE_S = 2.0
#: How often the background thread retries pending cache repairs while the cache is down.
REPAIR_INTERVAL_S = 0.05
#: At most this many pending repairs are remembered; past it, the whole namespace is wiped on
#: recovery instead (correct, only colder).
MAX_PENDING_REPAIRS = 100_000

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


class _Counter:
    """A thread-safe counter without a lock: ``itertools.count.__next__`` is atomic in CPython."""

    __slots__ = ("_count", "inc")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.inc = self._count.__next__

    @property
    def value(self) -> int:
        # repr is "count(N)": the only way to read an itertools.count without advancing it.
        return int(repr(self._count)[6:-1])


class _Flight:
    """One in-progress load of a key; concurrent missers wait on it."""

    __slots__ = ("dirty", "done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.dirty = False  # a write to the key was acknowledged while loading: do not fill
        self.result: Document | None = None
        self.error: BaseException | None = None

    def wait(self) -> Document | None:
        self.done.wait()
        if self.error is not None:
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
        quarantine_ttl_s: float = DEFAULT_QUARANTINE_TTL_S,
        fill_deadline_s: float = DEFAULT_FILL_DEADLINE_S,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._cache = cache
        self._policy_for = policy_for
        # db_name -> (its cache policy, its table): validated once, then a dict lookup.
        self._collections: dict[str, tuple[CachePolicyLike, str]] = {}
        self._breaker = breaker or CircuitBreaker()
        self._quarantine_ttl_s = quarantine_ttl_s
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
        # Entries stored before this wall time are not trusted (set when the cache recovers
        # from a failure this instance saw: writes may have happened while it was away).
        self._distrust_before = 0.0
        self._pending: dict[str, Put] = {}
        self._pending_lock = threading.Lock()
        self._pending_overflow = False
        self._repairer: threading.Thread | None = None
        self._closing = threading.Event()
        self._hits = _Counter()
        self._misses = _Counter()
        self._waits = _Counter()
        self._cache_errors = _Counter()
        self._fallbacks = _Counter()
        self._repairs = _Counter()
        self._fills_skipped = _Counter()
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
            entry = self._cache_get(key)
            if entry is not MISS:
                kind = entry.kind
                if kind is not Kind.QUARANTINE and entry.stored_at >= self._distrust_before:
                    self._hits.inc()
                    if kind is Kind.DOCUMENT:
                        return self._copy(entry.document)
                    return None
            self._misses.inc()
            quarantined = {doc_id} if _quarantined(entry) else set()
            loaded = self._load(db_name, policy, {doc_id: key}, quarantined)
            return loaded[doc_id]
        finally:
            if start:
                self._get_latency.record(perf_counter_ns() - start)

    def get_many(self, db_name: str, doc_ids: Iterable[str]) -> dict[str, Document | None]:
        """Every asked id -> its document or None; cache hits first, one batch for the rest."""
        start = perf_counter_ns()
        try:
            policy, table = self._collections.get(db_name) or self._collection(db_name)
            ids = _validate_ids(doc_ids)
            if not policy.enabled:
                return self._service.get_many(db_name, ids)
            keys = [table + _KEY_SEPARATOR + doc_id for doc_id in ids]
            entries = self._cache_get_many(keys)
            found: dict[str, Document | None] = {}
            missing: dict[str, str] = {}
            quarantined: set[str] = set()
            distrust = self._distrust_before
            for doc_id, key, entry in zip(ids, keys, entries, strict=True):
                if (
                    entry is not MISS
                    and entry.kind is not Kind.QUARANTINE
                    and entry.stored_at >= distrust
                ):
                    self._hits.inc()
                    found[doc_id] = (
                        self._copy(entry.document) if entry.kind is Kind.DOCUMENT else None
                    )
                else:
                    self._misses.inc()
                    missing[doc_id] = key
                    if _quarantined(entry):
                        quarantined.add(doc_id)
            if missing:
                found.update(self._load(db_name, policy, missing, quarantined))
            return {doc_id: found[doc_id] for doc_id in ids}
        finally:
            self._get_many_latency.record(perf_counter_ns() - start)

    def list_all(self, db_name: str) -> list[Document]:
        """Every document, from DynamoDB (scans are not cached)."""
        start = perf_counter_ns()
        try:
            return self._service.list_all(db_name)
        finally:
            self._list_all_latency.record(perf_counter_ns() - start)

    def iter_pages(self, db_name: str, page_size: int = 100) -> Iterator[list[Document]]:
        """Pages of documents, from DynamoDB (scans are not cached)."""
        return self._service.iter_pages(db_name, page_size)

    def query(self, db_name: str, index: str, value: Any) -> list[Document]:
        """An index query, from DynamoDB (query results are not cached)."""
        start = perf_counter_ns()
        try:
            return self._service.query(db_name, index, value)
        finally:
            self._query_latency.record(perf_counter_ns() - start)

    # ------------------------------------------------------------------ writes

    def save(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> SaveResult:
        """Save through to DynamoDB, then put the saved document in the cache."""
        start = perf_counter_ns()
        try:
            policy, _ = self._collections.get(db_name) or self._collection(db_name)
            doc_id, _ = self._service.validate_save(db_name, doc_id, doc, if_rev=if_rev)
            if not policy.enabled:
                return self._service.save(db_name, doc_id, doc, if_rev=if_rev)
            key = self._key(db_name, doc_id)
            self._quarantine([key])
            try:
                result, item = self._service.save_with_item(db_name, doc_id, doc, if_rev=if_rev)
            except (ConflictError, ValidationError):
                self._forget([key])  # nothing was written; the cached copy may be the stale one
                raise
            self._end_flights([key])
            entry = Entry(
                Kind.DOCUMENT,
                parse_generation(result["rev"]) or 0,
                result["rev"],
                as_returned(item, self._native),
                self._wall_clock(),
            )
            self._write([Put(key, entry, self._ttl(policy.ttl_s, policy))])
            return result
        finally:
            self._save_latency.record(perf_counter_ns() - start)

    def delete(self, db_name: str, doc_id: str, *, if_rev: IfRev = None) -> bool:
        """Delete in DynamoDB, then leave a tombstone in the cache."""
        start = perf_counter_ns()
        try:
            policy, _ = self._collections.get(db_name) or self._collection(db_name)
            doc_id = validate_id(doc_id)
            if not policy.enabled:
                return self._service.delete(db_name, doc_id, if_rev=if_rev)
            key = self._key(db_name, doc_id)
            self._quarantine([key])
            try:
                rev = self._service.delete_returning_rev(db_name, doc_id, if_rev=if_rev)
            except (ConflictError, ValidationError):
                self._forget([key])
                raise
            self._end_flights([key])
            if rev is None:
                self._forget([key])
                return False
            generation = (parse_generation(rev) or 0) + 1
            tombstone = Entry(Kind.ABSENT, generation, None, None, self._wall_clock())
            self._write([Put(key, tombstone, self._ttl(policy.negative_ttl_s, policy))])
            return True
        finally:
            self._delete_latency.record(perf_counter_ns() - start)

    def save_many(self, db_name: str, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """Save through with BatchWriteItem, then put every saved document in the cache."""
        start = perf_counter_ns()
        try:
            policy, _ = self._collections.get(db_name) or self._collection(db_name)
            prepared = self._service.validate_save_many(db_name, docs)
            if not policy.enabled:
                return self._service.save_many(db_name, docs)
            keys = {doc_id: self._key(db_name, doc_id) for doc_id in prepared}
            self._quarantine(list(keys.values()))
            items = self._service.save_many_with_items(db_name, docs)
            self._end_flights(list(keys.values()))
            now = self._wall_clock()
            puts = []
            for doc_id, item in items.items():
                rev = item["_rev"]
                entry = Entry(
                    Kind.DOCUMENT,
                    parse_generation(rev) or 0,
                    rev,
                    as_returned(item, self._native),
                    now,
                )
                puts.append(Put(keys[doc_id], entry, self._ttl(policy.ttl_s, policy)))
            self._write(puts)
            return {doc_id: item["_rev"] for doc_id, item in items.items()}
        finally:
            self._save_many_latency.record(perf_counter_ns() - start)

    def delete_many(self, db_name: str, doc_ids: Iterable[str]) -> None:
        """Delete with BatchWriteItem, then leave tombstones in the cache."""
        start = perf_counter_ns()
        try:
            policy, _ = self._collections.get(db_name) or self._collection(db_name)
            ids = _validate_ids(doc_ids)
            if not policy.enabled:
                self._service.delete_many(db_name, ids)
                return
            keys = [self._key(db_name, doc_id) for doc_id in ids]
            self._quarantine(keys)
            self._service.delete_many(db_name, ids)
            self._end_flights(keys)
            # BatchWriteItem does not say what it deleted: the tombstone's generation is "now",
            # above any revision written before this moment (generations follow wall time).
            generation = wall_clock_us()
            now = self._wall_clock()
            ttl = self._ttl(policy.negative_ttl_s, policy)
            self._write(
                [Put(key, Entry(Kind.ABSENT, generation, None, None, now), ttl) for key in keys]
            )
        finally:
            self._delete_many_latency.record(perf_counter_ns() - start)

    # ------------------------------------------------------------------ operators

    def invalidate(self, db_name: str, doc_id: str) -> None:
        """Drop one document from the cache (the next read loads it from DynamoDB)."""
        key = self._key(db_name, validate_id(doc_id))
        self._end_flights([key])
        self._forget([key])

    def invalidate_collection(self, db_name: str) -> int:
        """Drop every cached document of a collection; returns how many entries were dropped."""
        prefix = self._service.table_name(db_name) + _KEY_SEPARATOR
        with self._flights_lock:
            for key in [k for k in self._flights if k.startswith(prefix)]:
                self._flights.pop(key).dirty = True
        try:
            removed = self._cache.delete_prefix(prefix)
        except Exception:
            self._cache_failed()
            raise
        return removed

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
        return {
            "hits": hits,
            "misses": misses,
            "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
            "db_calls": service_stats["db_calls"],
            "retry": service_stats.get("retry", {}),
            "batching": service_stats.get("batching", {}),
            "cache_backend": getattr(self._cache, "name", type(self._cache).__name__),
            "evictions": int(cache_stats.get("evictions", 0)),
            "cache_errors": self._cache_errors.value,
            "fallbacks": self._fallbacks.value,
            "single_flight_waits": self._waits.value,
            "fills_skipped": self._fills_skipped.value,
            "pending_repairs": len(self._pending),
            "repairs": self._repairs.value,
            "breaker": self._breaker.state,
            "cache": cache_stats,
            "latency": latency,
            "db_latency": service_stats.get("latency", {}),
            "consumed_capacity": service_stats.get("consumed_capacity", {}),
            "cost": _cost_per_op(service_stats.get("cost", {}), latency),
        }

    def close(self) -> None:
        """Stop the repair thread, then close the cache and the service."""
        self._closing.set()
        if self._repairer is not None:
            self._repairer.join(timeout=1.0)
        self._repair_now()
        try:
            self._cache.close()
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

    # ------------------------------------------------------------------ loading

    def _load(
        self,
        db_name: str,
        policy: CachePolicyLike,
        missing: Mapping[str, str],
        quarantined: set[str],
    ) -> dict[str, Document | None]:
        """Load ``missing`` (id -> key): lead the loads nobody runs, wait for the others."""
        led: dict[str, _Flight] = {}
        joined: dict[str, _Flight] = {}
        with self._flights_lock:
            for doc_id, key in missing.items():
                flight = self._flights.get(key)
                if flight is None:
                    flight = self._flights[key] = _Flight()
                    led[doc_id] = flight
                else:
                    joined[doc_id] = flight
        results: dict[str, Document | None] = {}
        if led:
            results.update(self._lead(db_name, policy, missing, led, quarantined))
        for doc_id, flight in joined.items():
            self._waits.inc()
            document = flight.wait()
            # Every waiter of a flight got the same object: each needs its own copy.
            results[doc_id] = None if document is None else copy_document(document)
        return results

    def _lead(
        self,
        db_name: str,
        policy: CachePolicyLike,
        keys: Mapping[str, str],
        flights: dict[str, _Flight],
        quarantined: set[str],
    ) -> dict[str, Document | None]:
        settled = self._settled(keys, flights)
        if settled:
            self._finish(keys, {doc_id: flights.pop(doc_id) for doc_id in settled}, settled)
        results = {
            doc_id: None if document is None else self._copy(document)
            for doc_id, document in settled.items()
        }
        if not flights:
            return results
        started = self._clock()
        try:
            if len(flights) == 1:
                (doc_id,) = flights
                loaded = {doc_id: self._service.get(db_name, doc_id)}
            else:
                loaded = self._service.get_many(db_name, list(flights))
        except BaseException as exc:
            self._finish(keys, flights, error=exc)
            raise
        fresh = self._clock() - started <= self._fill_deadline_s
        now = self._wall_clock()
        puts = []
        for doc_id, flight in flights.items():
            if flight.dirty or not fresh or doc_id in quarantined:
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
            puts.append(Put(keys[doc_id], entry, ttl))
        if puts:
            self._fill(puts)
        self._finish(keys, flights, loaded=loaded)
        # The loaded documents may now be held by the cache: hand out copies.
        results.update(
            (doc_id, None if document is None else self._copy(document))
            for doc_id, document in loaded.items()
        )
        return results

    def _settled(
        self, keys: Mapping[str, str], flights: Mapping[str, _Flight]
    ) -> dict[str, Document | None]:
        """Answers the cache got since these keys missed: a load that finished just before
        this flight was registered has filled them, and concurrent misses on a key must still
        make one DynamoDB call (double-checked, as in cachetools' ``_cached``)."""
        ids = list(flights)
        entries = self._cache_get_many([keys[doc_id] for doc_id in ids])
        distrust = self._distrust_before
        settled: dict[str, Document | None] = {}
        for doc_id, entry in zip(ids, entries, strict=True):
            if entry is MISS or entry.kind is Kind.QUARANTINE or entry.stored_at < distrust:
                continue
            settled[doc_id] = entry.document if entry.kind is Kind.DOCUMENT else None
        return settled

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

    # ------------------------------------------------------------------ cache calls (fail-open)

    def _cache_get(self, key: str) -> Entry | Miss:
        if not self._breaker.allow():
            self._fallbacks.inc()
            return MISS
        if self._pending and not self._repair_now():
            self._fallbacks.inc()
            return MISS
        try:
            entry = self._cache.get(key)
        except Exception:
            self._cache_failed()
            return MISS
        if self._breaker.record_success():
            self._recovered()
            return MISS
        return entry

    def _cache_get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        if not self._breaker.allow() or (self._pending and not self._repair_now()):
            self._fallbacks.inc()
            return [MISS] * len(keys)
        try:
            entries = self._cache.get_many(keys)
        except Exception:
            self._cache_failed()
            return [MISS] * len(keys)
        if self._breaker.record_success():
            self._recovered()
            return [MISS] * len(keys)
        return entries

    def _fill(self, puts: list[Put]) -> None:
        if not self._breaker.allow():
            self._fallbacks.inc()
            return
        try:
            self._cache.fill_many(puts)
        except Exception:
            self._cache_failed()
            return
        if self._breaker.record_success():
            self._recovered()

    def _quarantine(self, keys: list[str]) -> None:
        if self._breaker.allow():
            try:
                self._cache.quarantine_many(keys, self._quarantine_ttl_s)
            except Exception:
                self._cache_failed()
            else:
                if self._breaker.record_success():
                    self._recovered()
                return
        # Could not mark the keys: make sure the cache hears about them before it is read.
        with self._pending_lock:
            for key in keys:
                if key not in self._pending:
                    self._remember(Put(key, Entry(Kind.QUARANTINE, 0), self._quarantine_ttl_s))
        self._start_repairer()

    def _write(self, puts: list[Put]) -> None:
        if self._breaker.allow() and not self._pending:
            try:
                self._cache.write_many(puts)
            except Exception:
                self._cache_failed()
            else:
                if self._breaker.record_success():
                    self._recovered()
                return
        with self._pending_lock:
            for put in puts:
                self._remember(put)
        self._start_repairer()
        self._repair_now()

    def _forget(self, keys: list[str]) -> None:
        if self._breaker.allow():
            try:
                self._cache.delete_many(keys)
            except Exception:
                self._cache_failed()
            else:
                with self._pending_lock:
                    for key in keys:
                        self._pending.pop(key, None)
                return
        with self._pending_lock:
            for key in keys:
                self._remember(Put(key, Entry(Kind.QUARANTINE, 0), self._quarantine_ttl_s))
        self._start_repairer()

    def _remember(self, put: Put) -> None:
        """Keep the latest cache update a key still needs (caller holds the pending lock)."""
        if len(self._pending) >= MAX_PENDING_REPAIRS and put.key not in self._pending:
            self._pending_overflow = True
            return
        self._pending[put.key] = put

    def _cache_failed(self) -> None:
        self._cache_errors.inc()
        self._fallbacks.inc()
        self._breaker.record_failure()

    def _recovered(self) -> None:
        """The cache answers again after failing: distrust what it stored before now."""
        self._distrust_before = self._wall_clock()
        self._repair_now()

    # ------------------------------------------------------------------ repairs

    def _repair_now(self) -> bool:
        """Replay pending cache updates; True when nothing is pending any more."""
        if not self._pending and not self._pending_overflow:
            return True
        if not self._breaker.allow():
            return False
        with self._pending_lock:
            batch = dict(self._pending)
            overflow = self._pending_overflow
        try:
            if overflow:
                self._cache.delete_prefix("")
            if batch:
                writes = [p for p in batch.values() if p.entry.kind is not Kind.QUARANTINE]
                marks = [p.key for p in batch.values() if p.entry.kind is Kind.QUARANTINE]
                if marks:
                    self._cache.quarantine_many(marks, self._quarantine_ttl_s)
                if writes:
                    self._cache.write_many(writes)
        except Exception:
            self._cache_failed()
            return False
        with self._pending_lock:
            for key, put in batch.items():
                if self._pending.get(key) is put:
                    del self._pending[key]
            if overflow:
                self._pending_overflow = False
            done = not self._pending
        self._repairs.inc()
        if self._breaker.record_success():
            self._distrust_before = self._wall_clock()
        return done

    def _start_repairer(self) -> None:
        if self._repairer is not None and self._repairer.is_alive():
            return
        with self._pending_lock:
            if self._repairer is not None and self._repairer.is_alive():
                return
            self._repairer = threading.Thread(
                target=self._repair_loop, name="gateway-cache-repair", daemon=True
            )
            self._repairer.start()

    def _repair_loop(self) -> None:
        while not self._closing.wait(REPAIR_INTERVAL_S):
            if self._repair_now():
                return

    # ------------------------------------------------------------------ helpers

    def _collection(self, db_name: str) -> tuple[CachePolicyLike, str]:
        """The collection's policy and table; the name is validated before anything is kept."""
        table = self._service.table_name(db_name)
        collection = (self._policy_for(db_name), table)
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


def _quarantined(entry: Entry | Miss) -> bool:
    return entry is not MISS and entry.kind is Kind.QUARANTINE


def _validate_ids(doc_ids: Iterable[str]) -> list[str]:
    if isinstance(doc_ids, (str, bytes)) or not isinstance(doc_ids, Iterable):
        raise ValidationError(
            f"Expected an iterable of document ids, got {type(doc_ids).__name__}: "
            "pass e.g. ['id1', 'id2']."
        )
    return list(dict.fromkeys(validate_id(doc_id) for doc_id in doc_ids))
