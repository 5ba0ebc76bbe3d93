"""Runs the workload on one backend: warm-up, then N threads for D seconds, measured.

The warm-up first reads every key once (``get_many``, `WARM_BATCH_KEYS` at a time), so that a
cache starts the run holding the whole working set, as a long-running service's does, then runs
the workload unmeasured for ``warmup_s`` (connection pools, coalescers, the interpreter's own
caches). The bare service does the same reads, which warm nothing but its connections.

Each thread draws from its own `Workload` (seeded by its index, so every backend sees the same
key sequences) and records each operation's latency, in microseconds from
``time.perf_counter_ns``, into buffers of its own that are allocated ahead in chunks: the hot
path takes no lock and allocates nothing but the rare next chunk. Reads, writes and errors are
counted per thread too. The calling thread reads ``stats()`` (hits, misses, DynamoDB calls by
operation) and the request meter when every worker stands still, before and after the measured
window, and reports the differences.

Stale reads (`gateway.bench.stale`): each thread also logs, in its own `StaleLog`, every
acknowledged write (warm-up included) and every read of the window with its start time; the
logs are judged after the threads are joined, so checking adds no lock to the hot path.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.bench.cost import RequestUnits, units_from_consumed
from gateway.bench.stale import StaleLog, check
from gateway.workload import (
    QUERY_GROUPS,
    QUERY_INDEX,
    Workload,
    WorkloadSpec,
    group_members,
    group_name,
    key_name,
)

#: Latency samples per preallocated buffer (8 bytes each: 512 KiB a chunk).
CHUNK_SAMPLES = 65_536
#: How often the calling thread reports progress while workers run.
PROGRESS_INTERVAL_S = 0.1
#: Workers publish their operation count every this many operations (a power of two, minus 1).
PROGRESS_EVERY_MASK = 255
#: Keys per ``get_many`` of the warm-up sweep (BatchGetItem's own limit).
WARM_BATCH_KEYS = 100
#: How long the caller waits for a worker past the deadline before giving up on it.
JOIN_GRACE_S = 30.0
#: The counters of a gateway's ``stats()`` that tell whether its cache tier stayed reachable
#: (`cache_health`); with ``breaker``, the circuit breaker's state.
HEALTH_COUNTERS = ("cache_errors", "fallbacks", "writes_refused", "pending_repairs")
#: Breaker states from best to worst (to merge several processes' states).
BREAKER_STATES = ("closed", "half_open", "open")

ProgressCallback = Callable[[str, float, int], None]
"""``progress(phase, fraction_done, operations)``; phase is ``"warm-up"`` or ``"measure"``."""


@dataclass(frozen=True)
class RunConfig:
    """How long and how wide one backend is driven."""

    threads: int = 8
    duration_s: float = 10.0
    warmup_s: float = 2.0
    #: Read every key once before the timed warm-up (a cache then holds the working set).
    read_every_key: bool = True

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not self.duration_s > 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration_s}")
        if not self.warmup_s >= 0:
            raise ValueError(f"warm-up must be >= 0 seconds, got {self.warmup_s}")


@dataclass
class BackendRun:
    """What one backend did in the measured window."""

    name: str
    elapsed_s: float
    reads: int
    writes: int
    errors: int
    #: Latency of every successful operation, in µs, sorted.
    latencies_us: list[float]
    hits: int | None
    misses: int | None
    #: DynamoDB requests by operation during the window.
    db_calls: dict[str, int]
    #: Items those requests touched, by operation (see `gateway.bench.meter`).
    db_items: dict[str, int]
    #: Capacity consumed as reported by ``stats()["consumed_capacity"]``, when it is.
    consumed: RequestUnits | None = None
    first_error: str | None = None
    #: Reads of the window that answered older than a write acknowledged before they started.
    stale_reads: int = 0
    #: Reads of the window that had an acknowledged write to be judged against.
    checked_reads: int = 0
    #: Document id → highest generation acknowledged by the end (the baseline included): the
    #: baseline of the next backend run on the same table.
    acknowledged: dict[str, int] = field(default_factory=dict)
    #: The cache tier's health at the end of the run (`cache_health`): None but for a gateway.
    cache_health: dict[str, Any] | None = None

    @property
    def operations(self) -> int:
        """Successful operations."""
        return self.reads + self.writes

    @property
    def ops_per_s(self) -> float:
        """Successful operations per second of the window."""
        return self.operations / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def hit_ratio(self) -> float | None:
        """Cache hits over cache lookups (None for the bare service)."""
        if self.hits is None or self.misses is None:
            return None
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def db_call_count(self) -> int:
        """DynamoDB requests in the window, all operations."""
        return sum(self.db_calls.values())

    def percentile_us(self, q: float) -> float:
        """The ``q``-th percentile (0-100, nearest rank) of the latencies, in µs."""
        return percentile(self.latencies_us, q)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    # The small epsilon keeps 0.99 * 1000 = 990.0000000000001 at rank 990.
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values) - 1e-9)))
    return sorted_values[rank - 1]


@dataclass
class _Worker:
    """One thread's counters and latency buffers (touched only by its thread until joined)."""

    chunks: list[array[float]] = field(default_factory=list)
    used_in_last: int = 0
    reads: int = 0
    writes: int = 0
    errors: int = 0
    progress: int = 0
    first_error: str | None = None
    crashed: bool = False
    stale_log: StaleLog = field(default_factory=StaleLog)

    def latencies(self) -> list[float]:
        if not self.chunks:
            return []
        out: list[float] = []
        for chunk in self.chunks[:-1]:
            out.extend(chunk)
        out.extend(self.chunks[-1][: self.used_in_last])
        return out


def _new_chunk() -> array[float]:
    return array("d", bytes(8 * CHUNK_SAMPLES))


class _Schedule:
    """Deadlines the caller hands to the workers between the warm-up and the window."""

    def __init__(self, threads: int) -> None:
        self.ready = threading.Barrier(threads + 1)
        self.go = threading.Barrier(threads + 1)
        self.warm_deadline_ns = 0
        self.deadline_ns = 0


def run_backend(
    name: str,
    service: Any,
    spec: WorkloadSpec,
    config: RunConfig,
    *,
    stats: Callable[[], Mapping[str, Any]] | None = None,
    items: Callable[[], Mapping[str, int]] | None = None,
    has_cache: bool = True,
    progress: ProgressCallback | None = None,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
    acknowledged: Mapping[str, int] | None = None,
) -> BackendRun:
    """Drive ``service`` (a `DatabaseService`) with ``spec`` and measure it.

    ``stats`` defaults to ``service.stats``; ``items`` reports the items touched per DynamoDB
    operation (a `RequestMeter`); ``has_cache`` is False for the bare service (no hit ratio);
    ``acknowledged`` maps document ids to the generation last acknowledged before this run
    (the preload's, the previous backends'), which no read may answer older than.
    """
    stats = stats or service.stats
    if config.read_every_key:
        read_every_key(service, spec)
    workers = [_Worker() for _ in range(config.threads)]
    schedule = _Schedule(config.threads)
    schedule.warm_deadline_ns = clock_ns() + int(config.warmup_s * 1e9)
    threads = [
        threading.Thread(
            target=_work,
            args=(service, Workload(spec, worker=index), workers[index], schedule, clock_ns),
            name=f"bench-{name}-{index}",
            daemon=True,
        )
        for index in range(config.threads)
    ]
    for thread in threads:
        thread.start()
    try:
        _report_until(
            schedule.warm_deadline_ns, config.warmup_s, "warm-up", workers, progress, clock_ns
        )
        schedule.ready.wait(timeout=config.warmup_s + JOIN_GRACE_S)
        before = stats()
        items_before = dict(items()) if items else {}
        started_ns = clock_ns()
        schedule.deadline_ns = started_ns + int(config.duration_s * 1e9)
        schedule.go.wait(timeout=JOIN_GRACE_S)
    except threading.BrokenBarrierError:
        schedule.ready.abort()
        schedule.go.abort()
        for thread in threads:
            thread.join(timeout=JOIN_GRACE_S)
        raise RuntimeError(f"{name}: a bench worker failed: {_first_error(workers)}") from None
    _report_until(schedule.deadline_ns, config.duration_s, "measure", workers, progress, clock_ns)
    for thread in threads:
        thread.join(timeout=config.duration_s + JOIN_GRACE_S)
    ended_ns = clock_ns()
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"{name}: bench workers did not stop: is the backend hung?")
    if any(w.crashed for w in workers):
        raise RuntimeError(f"{name}: a bench worker failed: {_first_error(workers)}")
    after = stats()
    items_after = dict(items()) if items else {}

    hits_key, misses_key = (
        ("query_hits", "query_misses") if spec.kind == "query" else ("hits", "misses")
    )
    latencies: list[float] = []
    for worker in workers:
        latencies.extend(worker.latencies())
    latencies.sort()
    index_of = {key_name(i): i for i in range(spec.keys)}
    baseline = {index_of[k]: g for k, g in (acknowledged or {}).items() if k in index_of}
    stale = check((w.stale_log for w in workers), baseline)
    consumed_before = units_from_consumed(before.get("consumed_capacity"))
    consumed_after = units_from_consumed(after.get("consumed_capacity"))
    consumed = (
        consumed_after - consumed_before
        if consumed_before is not None and consumed_after is not None
        else None
    )
    return BackendRun(
        name=name,
        elapsed_s=(ended_ns - started_ns) / 1e9,
        reads=sum(w.reads for w in workers),
        writes=sum(w.writes for w in workers),
        errors=sum(w.errors for w in workers),
        latencies_us=latencies,
        hits=int(after[hits_key]) - int(before[hits_key]) if has_cache else None,
        misses=int(after[misses_key]) - int(before[misses_key]) if has_cache else None,
        db_calls=_difference(before.get("db_calls", {}), after.get("db_calls", {})),
        db_items=_difference(items_before, items_after),
        consumed=consumed,
        first_error=_first_error(workers),
        stale_reads=stale.stale,
        checked_reads=stale.checked,
        acknowledged={key_name(i): g for i, g in sorted(stale.acknowledged.items())},
        cache_health=cache_health(after) if has_cache else None,
    )


def cache_health(stats: Mapping[str, Any]) -> dict[str, Any] | None:
    """A caching gateway's cache errors, fallbacks, refused writes and pending repairs since it
    started, and its breaker's state, from its ``stats()``; None for anything else (the bare
    service, the peers), which has no breaker."""
    if "breaker" not in stats:
        return None
    health: dict[str, Any] = {key: int(stats.get(key, 0)) for key in HEALTH_COUNTERS}
    health["breaker"] = str(stats["breaker"])
    return health


def merge_health(healths: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Several processes' `cache_health`: the counters added up, the worst breaker state."""
    present = [health for health in healths if health]
    if not present:
        return None
    merged: dict[str, Any] = {
        key: sum(int(health.get(key, 0)) for health in present) for key in HEALTH_COUNTERS
    }
    states = [str(health.get("breaker", "closed")) for health in present]
    merged["breaker"] = max(
        states, key=lambda state: BREAKER_STATES.index(state) if state in BREAKER_STATES else 3
    )
    return merged


def _first_error(workers: list[_Worker]) -> str | None:
    return next((w.first_error for w in workers if w.first_error), None)


def read_every_key(service: Any, spec: WorkloadSpec, batch: int = WARM_BATCH_KEYS) -> None:
    """``get_many`` of every key of ``spec``, ``batch`` keys at a time (for the ``query``
    workload: a query of every group)."""
    if spec.kind == "query":
        for group in range(min(QUERY_GROUPS, spec.keys)):
            service.query(spec.collection, QUERY_INDEX, group_name(group))
        return
    for start in range(0, spec.keys, batch):
        stop = min(spec.keys, start + batch)
        service.get_many(spec.collection, [key_name(i) for i in range(start, stop)])


def _difference(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    delta = Counter({k: int(v) for k, v in after.items()})
    delta.subtract({k: int(v) for k, v in before.items()})
    return {k: v for k, v in sorted(delta.items()) if v}


def _report_until(
    deadline_ns: int,
    span_s: float,
    phase: str,
    workers: list[_Worker],
    progress: ProgressCallback | None,
    clock_ns: Callable[[], int],
) -> None:
    """Sleep until ``deadline_ns`` (on ``clock_ns``), reporting progress on the way."""
    while True:
        left_s = (deadline_ns - clock_ns()) / 1e9
        if progress is not None:
            done = 1.0 - left_s / span_s if span_s > 0 else 1.0
            progress(phase, min(1.0, max(0.0, done)), sum(w.progress for w in workers))
        if left_s <= 0:
            return
        time.sleep(min(PROGRESS_INTERVAL_S, left_s))


def _work(
    service: Any,
    workload: Workload,
    worker: _Worker,
    schedule: _Schedule,
    clock_ns: Callable[[], int],
) -> None:
    """A worker thread; a failure outside an operation breaks the barriers so nobody waits."""
    try:
        _warm_up(service, workload, worker.stale_log, schedule, clock_ns)
        schedule.ready.wait()
        schedule.go.wait()
        _measure(service, workload, worker, schedule.deadline_ns, clock_ns)
    except threading.BrokenBarrierError:
        pass
    except BaseException as exc:
        worker.first_error = worker.first_error or f"{type(exc).__name__}: {exc}"
        worker.crashed = True
        schedule.ready.abort()
        schedule.go.abort()


def _warm_up(
    service: Any,
    workload: Workload,
    log: StaleLog,
    schedule: _Schedule,
    clock_ns: Callable[[], int],
) -> None:
    """Unmeasured operations until the warm-up deadline (errors show again in the window);
    its acknowledged writes are logged: a read of the window must not answer older."""
    collection = workload.spec.collection
    while clock_ns() < schedule.warm_deadline_ns:
        op = workload.next()
        try:
            if op.kind == "read":
                service.get(collection, op.doc_id)
            elif op.kind == "query":
                service.query(collection, QUERY_INDEX, op.doc_id)
            else:
                result = service.save(collection, op.doc_id, workload.document_for(op))
                log.write(op.index, clock_ns(), result)
        except Exception:
            continue


def _measure(
    service: Any,
    workload: Workload,
    worker: _Worker,
    deadline: int,
    clock_ns: Callable[[], int],
) -> None:
    """The measured loop: one latency sample per successful operation, no lock taken.

    Each successful read also logs its key, start time and ``_rev``, each successful write its
    key, return time and ``rev``, into the thread's `StaleLog` (appends to its own arrays,
    bound ahead: about 0.15 µs an operation; the revisions are parsed after the run).
    """
    collection = workload.spec.collection
    keys = workload.spec.keys
    get = service.get
    query: Any = getattr(service, "query", None)  # the peers have none (skipped for queries)
    save = service.save
    next_op = workload.next
    document_for = workload.document_for
    log = worker.stale_log
    read_key, read_start, read_rev = (
        log.read_keys.append,
        log.read_starts.append,
        log.read_revs.append,
    )
    write_key, write_ack, write_rev = (
        log.write_keys.append,
        log.write_acks.append,
        log.write_revs.append,
    )
    buffer = _new_chunk()
    worker.chunks.append(buffer)
    used = 0
    reads = writes = errors = 0
    while True:
        op = next_op()
        if op.kind != "write":
            started = clock_ns()
            try:
                if op.kind == "read":
                    answer = get(collection, op.doc_id)
                else:
                    answer = query(collection, QUERY_INDEX, op.doc_id)
            except Exception as exc:
                ended = clock_ns()
                errors += 1
                worker.first_error = worker.first_error or f"{type(exc).__name__}: {exc}"
            else:
                ended = clock_ns()
                reads += 1
                buffer[used] = (ended - started) / 1000.0
                used += 1
                if op.kind == "read":
                    read_key(op.index)
                    read_start(started)
                    read_rev(None if answer is None else answer.get("_rev", ""))
                else:
                    # Checked like reads of every member: each must be in the answer, no
                    # older than a save of it acknowledged before the query started.
                    revs = {document["_id"]: document.get("_rev", "") for document in answer}
                    for member in group_members(op.index, keys):
                        read_key(member)
                        read_start(started)
                        read_rev(revs.get(key_name(member)))
        else:
            doc = document_for(op)
            started = clock_ns()
            try:
                result = save(collection, op.doc_id, doc)
            except Exception as exc:
                ended = clock_ns()
                errors += 1
                worker.first_error = worker.first_error or f"{type(exc).__name__}: {exc}"
            else:
                ended = clock_ns()
                writes += 1
                buffer[used] = (ended - started) / 1000.0
                used += 1
                write_key(op.index)
                write_ack(ended)
                write_rev(result.get("rev"))
        if used == CHUNK_SAMPLES:
            buffer = _new_chunk()
            worker.chunks.append(buffer)
            used = 0
        done = reads + writes + errors
        if not done & PROGRESS_EVERY_MASK:
            worker.progress = done
        if ended >= deadline:
            break
    worker.used_in_last = used
    worker.reads, worker.writes, worker.errors = reads, writes, errors
    worker.progress = reads + writes + errors
