"""DynamoDB Streams invalidation, measured: outside-write lag, and what following costs.

Two parts, one run, one embedded emulator (moto) and one throw-away ``redis-server``:

1. **Outside-write lag.** For each backend (memory, redis, tiered), a caching gateway with
   ``STREAMS_INVALIDATION`` on, over a table of its own: ``--keys`` documents are loaded and
   read through the gateway (so the cache holds them all), once the follower holds the
   stream's shard and has dropped the cache the way it does when it starts (at the stream's
   newest record; seen as a miss on a document cached before). Then an *outside writer* (a
   plain boto3 client, as a Lambda or a batch job would be, on ``--writers`` threads so that
   the schedule holds when the emulator is slow) writes ``--rate`` times a second for
   ``--duration`` seconds: ``PutItem`` of a new document without ``_rev`` (70 %),
   ``UpdateItem`` of one attribute (20 %), ``DeleteItem`` (10 %), each on an id drawn in turn
   from the shuffled keys. A reader thread polls the
   gateway for every written id not seen yet, in sweeps ``--poll-ms`` apart (``get_many`` of
   up to 100 ids: the same cache rules as ``get``, one cache round trip a batch, so that a
   sweep stays short however many writes are pending; ``--read get`` polls with one ``get``
   per id), and records, per write, the time from the outside write's acknowledgement to the
   return of the first read that answers the new value (None after a delete). A write not
   seen within ``--visible-s`` (10 s) is counted as *unseen*; a write overtaken by a later
   write of the same id before it was seen (only when the keys are fewer than the writes) as
   *superseded*. The table shows p50 / p99 / max per backend, for all writes and per kind.

2. **Cost of following.** The workload of ``gateway bench`` (`gateway.bench.runner`, the same
   `WorkloadSpec` defaults: 95 % reads, zipf 1.1, 1 KB documents, 8 threads, +3 ms per
   DynamoDB request) on each backend, on one table (which has a stream in every run), three
   ways: *without* (``STREAMS_INVALIDATION`` off), *elsewhere* (off, while another process
   reads the stream exactly as the follower would, decoding every record and applying
   nothing: what reading the stream costs the emulator and the machine, which on AWS would
   be DynamoDB Streams' and another host's), and *with* (on: the gateway follows). The runs of
   a backend are adjacent and their order reverses from one repetition to the next, so drift
   on a shared machine hits them alike; the table gives ops/s (median of the repetitions) and
   the ratios of each repetition's runs, with their median: with / without is the cost here,
   with / elsewhere the part of it paid inside the gateway's process. A run with streams
   starts its window once the follower holds its shard and has made its start-up drop, and
   after the cache was warmed again (as ``gateway bench`` warms it).

The injected latency (``--latency-ms``, `gateway.bench.latency`) is added to every request of
the gateway's clients, its DynamoDB Streams client included (the follower's ``GetRecords`` is
a network round trip too); the outside writer has none. Usage::

    python scripts/bench_streams.py                                  # both parts, defaults
    python scripts/bench_streams.py --only lag --rate 200 --duration 20
    python scripts/bench_streams.py --backends memory,tiered --repeat 3

Absolute figures are machine-specific (the emulator, the gateway and the writer share the
machine's cores); compare backends and ratios. Without ``redis-server`` on PATH the redis and
tiered backends are skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from rich.console import Console

from gateway.bench.command import TIERED_READY_TIMEOUT_S, _preload
from gateway.bench.latency import LatencyInjector, service_clients
from gateway.bench.local_redis import LocalRedis, redis_server_binary
from gateway.bench.runner import RunConfig, read_every_key, run_backend
from gateway.config import Settings
from gateway.emulator import DUMMY_REGION, EmbeddedDynamoDB, ensure_dummy_credentials
from gateway.factory import build_cache, build_dynamodb_service, build_gateway
from gateway.gateway import CachingGateway
from gateway.processes import terminate
from gateway.retry import botocore_config
from gateway.streams.follower import DEFAULT_POLL_INTERVAL_S
from gateway.streams.records import change_from_record
from gateway.workload import WorkloadSpec, key_name

BACKENDS = ("memory", "redis", "tiered")
REDIS_BACKENDS = frozenset({"redis", "tiered"})
KINDS = ("put", "update", "delete")
#: Shares of the outside writes (PutItem, UpdateItem, DeleteItem).
KIND_WEIGHTS = (0.7, 0.2, 0.1)
#: The attribute the outside writer sets to a value of its own on every put and update.
OUTSIDE_ATTRIBUTE = "outside"
LAG_COLLECTION = "outside_docs"
DEFAULT_RATE = 100.0
DEFAULT_DURATION_S = 10.0
DEFAULT_COST_DURATION_S = 5.0
DEFAULT_REPEAT = 2
DEFAULT_POLL_MS = 5.0
DEFAULT_VISIBLE_S = 10.0
#: How long the follower may take to hold its shard and drop the cache before the run gives up.
FOLLOW_TIMEOUT_S = 30.0
SETTLE_POLL_S = 0.02
#: The botocore event of every request a DynamoDB Streams client sends (service id
#: ``dynamodb-streams``; `LatencyInjector.attach` hooks ``dynamodb`` only).
STREAMS_BEFORE_SEND = "before-send.dynamodb-streams"
SEED = 20240610
#: Threads of the outside writer (a write to moto takes several ms, more under load).
DEFAULT_WRITERS = 4
#: How often the follower's own lag figure is sampled while writing.
LAG_SAMPLE_S = 0.1
#: Ids per ``get_many`` of the reader's sweeps.
READ_BATCH = 100
#: The name of the follower's thread (`gateway.streams.follower`).
FOLLOWER_THREAD = "gateway-streams"


# -- shared ------------------------------------------------------------------------------------


class LogCollector(logging.Handler):
    """Keeps the ``gateway`` logger's warnings and errors of a phase (printed in the summary)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")

    def take(self) -> list[str]:
        with self.lock or contextlib.nullcontext():
            lines, self.lines = self.lines, []
        return lines


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0-100) of sorted values; NaN for none."""
    if not ordered:
        return math.nan
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def cpu_seconds(stat_path: str) -> float | None:
    """User + system CPU seconds of a process or thread, from its ``/proc`` ``stat`` file
    (None where there is none: not Linux, or gone)."""
    try:
        text = Path(stat_path).read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def follower_stat_path() -> str | None:
    """The ``stat`` file of this process's stream follower thread, if one runs."""
    for thread in threading.enumerate():
        if thread.name == FOLLOWER_THREAD and thread.native_id is not None:
            return f"/proc/self/task/{thread.native_id}/stat"
    return None


@dataclass
class CpuMeter:
    """CPU seconds of this process, its follower thread, the emulator and a stream reader
    process over a window."""

    emulator_pid: int | None
    reader_pid: int | None = None
    paths: dict[str, str | None] = field(default_factory=dict)
    start: dict[str, float | None] = field(default_factory=dict)
    started_at: float = 0.0

    def begin(self) -> None:
        self.paths = {
            "process": "/proc/self/stat",
            "follower": follower_stat_path(),
            "emulator": f"/proc/{self.emulator_pid}/stat" if self.emulator_pid else None,
            "reader": f"/proc/{self.reader_pid}/stat" if self.reader_pid else None,
        }
        self.start = {name: self._read(name) for name in self.paths}
        self.started_at = time.perf_counter()

    def shares(self) -> dict[str, float | None]:
        """Each CPU time over the window as a share of one core (0.5 = half a core)."""
        elapsed = time.perf_counter() - self.started_at
        out: dict[str, float | None] = {}
        for name in self.paths:
            before, after = self.start.get(name), self._read(name)
            out[name] = None if before is None or after is None else (after - before) / elapsed
        return out

    def _read(self, name: str) -> float | None:
        path = self.paths.get(name)
        return None if path is None else cpu_seconds(path)


def gateway_settings(
    endpoint_url: str,
    table_prefix: str,
    backend: str,
    *,
    streams: bool,
    redis_url: str | None,
    redis_prefix: str,
) -> Settings:
    """Settings of one gateway; the Redis ones only for the backends that use it."""
    values: dict[str, Any] = {
        "DYNAMODB_ENDPOINT_URL": endpoint_url,
        "DYNAMODB_REGION": DUMMY_REGION,
        "DYNAMODB_TABLE_PREFIX": table_prefix,
        "CACHE_BACKEND": backend,
        "STREAMS_INVALIDATION": streams,
    }
    if redis_url is not None:
        values.update(REDIS_URL=redis_url, REDIS_KEY_PREFIX=redis_prefix)
    return Settings(**values)


def open_gateway(settings: Settings, latency_ms: float) -> CachingGateway:
    """A caching gateway as ``gateway bench`` builds one (its own service, the injected latency
    on every client), the follower's DynamoDB Streams client included."""
    service = build_dynamodb_service(settings)
    injector = LatencyInjector(latency_ms)
    injector.attach(service_clients(service))
    if settings.STREAMS_INVALIDATION and latency_ms > 0:
        service.streams_client.meta.events.register(
            STREAMS_BEFORE_SEND, injector, unique_id=f"bench-streams-latency-{id(injector)}"
        )
    try:
        cache = build_cache(settings)
    except BaseException:
        service.close()
        raise
    try:
        wait_healthy = getattr(cache, "wait_healthy", None)
        if callable(wait_healthy):
            wait_healthy(TIERED_READY_TIMEOUT_S)
        return build_gateway(settings, service, cache)
    except BaseException:
        cache.close()
        service.close()
        raise


def streams_stats(gateway: CachingGateway, collection: str) -> dict[str, Any]:
    """The follower's figures for ``collection`` (empty without a follower)."""
    streams = gateway.stats().get("streams") or {}
    return dict((streams.get("collections") or {}).get(collection) or {})


def wait_following(gateway: CachingGateway, collection: str, sentinel: str) -> float:
    """Block until the follower holds the collection's shard and has made the drop it owes
    when it starts at the stream's newest record (``fill_deadline_s`` after positioning): seen
    as a miss on ``sentinel``, a document read (cached) before; seconds waited."""
    started = time.monotonic()
    deadline = started + FOLLOW_TIMEOUT_S
    while not streams_stats(gateway, collection).get("shards_held"):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the stream follower did not hold a shard of {collection!r} within "
                f"{FOLLOW_TIMEOUT_S:g} s"
            )
        time.sleep(SETTLE_POLL_S)
    while True:
        misses = gateway.stats()["misses"]
        gateway.get(collection, sentinel)  # a miss fills it again: ask until one misses
        if gateway.stats()["misses"] > misses:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the stream follower did not drop {collection!r} within {FOLLOW_TIMEOUT_S:g} s"
            )
        time.sleep(SETTLE_POLL_S)


# -- part 1: outside-write lag ----------------------------------------------------------------


@dataclass(eq=False)
class Pending:
    """An acknowledged outside write not yet seen through the gateway."""

    doc_id: str
    kind: str
    #: The value of `OUTSIDE_ATTRIBUTE` the write stored; None for a delete.
    expected: str | None
    acked: float  # time.perf_counter()


@dataclass
class Tracker:
    """The writes awaiting their first fresh read, and what became of the others."""

    visible_s: float
    pending: dict[str, Pending] = field(default_factory=dict)
    lags_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    unseen: Counter[str] = field(default_factory=Counter)
    superseded: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    write_errors: int = 0
    first_write_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def before_write(self, doc_id: str) -> None:
        """A write of ``doc_id`` is about to be sent: an earlier one still pending is over."""
        with self.lock:
            earlier = self.pending.pop(doc_id, None)
            if earlier is not None:
                self.superseded[earlier.kind] += 1

    def acknowledged(self, write: Pending) -> None:
        with self.lock:
            self.writes[write.kind] += 1
            self.pending[write.doc_id] = write

    def failed(self, exc: Exception) -> None:
        with self.lock:
            self.write_errors += 1
            self.first_write_error = self.first_write_error or f"{type(exc).__name__}: {exc}"

    def snapshot(self) -> list[Pending]:
        with self.lock:
            return list(self.pending.values())

    def seen(self, write: Pending, at: float) -> None:
        with self.lock:
            if self.pending.get(write.doc_id) is write:
                del self.pending[write.doc_id]
                self.lags_ms[write.kind].append((at - write.acked) * 1000.0)

    def expire(self, write: Pending) -> None:
        with self.lock:
            if self.pending.get(write.doc_id) is write:
                del self.pending[write.doc_id]
                self.unseen[write.kind] += 1


def write_plan(keys: int, writes: int, seed: int = SEED) -> list[tuple[str, str]]:
    """``(doc_id, kind)`` of each outside write: ids in a shuffled round, kinds drawn."""
    rng = random.Random(seed)
    ids = [key_name(i) for i in range(keys)]
    rng.shuffle(ids)
    kinds = rng.choices(KINDS, weights=KIND_WEIGHTS, k=writes)
    return [(ids[n % keys], kinds[n]) for n in range(writes)]


def outside_writer(
    client: Any,
    table: str,
    plan: Sequence[tuple[str, str]],
    rate: float,
    body: str,
    tracker: Tracker,
    threads: int,
) -> float:
    """Send the planned writes at ``rate`` a second on a fixed schedule (write ``n`` at
    ``n / rate`` s; a late one goes at once) from ``threads`` threads, so that a slow answer
    does not hold the next writes back; the seconds it took."""
    started = time.perf_counter()
    numbers = iter(range(len(plan)))
    numbers_lock = threading.Lock()

    def work() -> None:
        while True:
            with numbers_lock:
                n = next(numbers, None)
            if n is None:
                return
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            write(n, *plan[n])

    def write(n: int, doc_id: str, kind: str) -> None:
        value = f"w{n}-{uuid.uuid4().hex[:8]}"
        key = {"_id": {"S": doc_id}}
        tracker.before_write(doc_id)
        try:
            if kind == "put":
                item = {
                    **key,
                    "title": {"S": "written outside the gateway"},
                    OUTSIDE_ATTRIBUTE: {"S": value},
                    "body": {"S": body},
                }
                client.put_item(TableName=table, Item=item)
            elif kind == "update":
                client.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression="SET #o = :v",
                    ExpressionAttributeNames={"#o": OUTSIDE_ATTRIBUTE},
                    ExpressionAttributeValues={":v": {"S": value}},
                )
            else:
                client.delete_item(TableName=table, Key=key)
        except Exception as exc:
            tracker.failed(exc)
            return
        acked = time.perf_counter()
        tracker.acknowledged(Pending(doc_id, kind, None if kind == "delete" else value, acked))

    workers = [
        threading.Thread(target=work, name=f"bench-streams-writer-{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def sample_follower_lag(
    gateway: CachingGateway, collection: str, stop: threading.Event, samples: list[float]
) -> None:
    """The follower's own ``lag_s`` (its newest record applied: DynamoDB's record time to the
    cache having it), every `LAG_SAMPLE_S`, until ``stop``."""
    while not stop.wait(LAG_SAMPLE_S):
        lag_s = streams_stats(gateway, collection).get("lag_s")
        if lag_s is not None:
            samples.append(float(lag_s) * 1000.0)


@dataclass
class Sweeps:
    """The reader's sweeps: how many, and how long they took (the lag's resolution)."""

    count: int = 0
    total_s: float = 0.0
    longest_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.longest_s = max(self.longest_s, seconds)

    @property
    def mean_ms(self) -> float:
        return self.total_s / self.count * 1000.0 if self.count else math.nan


def poller(
    gateway: CachingGateway,
    collection: str,
    tracker: Tracker,
    writer_done: threading.Event,
    poll_s: float,
    per_id: bool,
    sweeps: Sweeps,
) -> None:
    """Sweep the pending writes until the writer is done and none is left: one
    ``gateway.get_many`` per `READ_BATCH` ids (the cache, then one BatchGetItem for what it
    lacks), or with ``per_id`` one ``gateway.get`` per id; a pause of ``poll_s`` between
    sweeps."""
    while True:
        batch = tracker.snapshot()
        if not batch and writer_done.is_set():
            return
        began = time.perf_counter()
        for first in range(0, len(batch), 1 if per_id else READ_BATCH):
            writes = batch[first : first + (1 if per_id else READ_BATCH)]
            try:
                if per_id:
                    docs = {writes[0].doc_id: gateway.get(collection, writes[0].doc_id)}
                else:
                    docs = gateway.get_many(collection, [w.doc_id for w in writes])
            except Exception as exc:
                sweeps.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            now = time.perf_counter()
            for write in writes:
                doc = docs.get(write.doc_id)
                if doc is None:
                    fresh = write.expected is None
                else:
                    fresh = (
                        write.expected is not None and doc.get(OUTSIDE_ATTRIBUTE) == write.expected
                    )
                if fresh:
                    tracker.seen(write, now)
                elif now - write.acked > tracker.visible_s:
                    tracker.expire(write)
        sweeps.add(time.perf_counter() - began)
        time.sleep(poll_s)


@dataclass
class LagResult:
    """What part 1 found on one backend."""

    backend: str
    tracker: Tracker
    writing_s: float
    ready_s: float
    cold_after_warm: int
    sweeps: Sweeps
    follower: dict[str, Any]
    #: The follower's GetRecords calls per second of writing.
    get_records_per_s: float
    #: The follower's ``lag_s``, sampled while writing (ms, sorted).
    follower_lags_ms: list[float]
    #: CPU while writing, in cores: "process" (this one: the writers, the reader and the
    #: gateway), "follower" (its thread), "emulator".
    cpu: dict[str, float | None]
    health: dict[str, Any]
    logs: list[str]


def run_lag(
    backend: str,
    endpoint_url: str,
    emulator_pid: int | None,
    redis_url: str | None,
    token: str,
    args: argparse.Namespace,
    logs: LogCollector,
    notes: Console,
) -> LagResult:
    """Part 1 on one backend (see the module docstring)."""
    spec = WorkloadSpec(keys=args.keys, doc_size=args.doc_size, collection=LAG_COLLECTION)
    settings = gateway_settings(
        endpoint_url,
        f"streams-{token}-lag-{backend}-",
        backend,
        streams=True,
        redis_url=redis_url,
        redis_prefix=f"streams-{token}-lag-{backend}:",
    )
    _preload(settings, spec, notes)
    table = settings.DYNAMODB_TABLE_PREFIX + LAG_COLLECTION
    writes = max(1, round(args.rate * args.duration))
    plan = write_plan(args.keys, writes)
    client = boto3.client(
        "dynamodb",
        region_name=DUMMY_REGION,
        endpoint_url=endpoint_url,
        config=botocore_config(2.0, 5.0, max(10, args.writers)),
    )
    gateway = open_gateway(settings, args.latency_ms)
    try:
        gateway.get(LAG_COLLECTION, key_name(0))  # registers the collection; the sentinel
        ready_s = wait_following(gateway, LAG_COLLECTION, key_name(0))
        notes.log(f"[dim]  follower ready after {ready_s:.1f} s; {writes:,} outside writes[/dim]")
        read_every_key(gateway, spec)
        misses = gateway.stats()["misses"]
        read_every_key(gateway, spec)  # every key must now be a hit
        cold = gateway.stats()["misses"] - misses
        logs.take()  # start-up notes (the stream turned on...) are not the run's
        calls_before = int(gateway.stats()["db_calls"].get("GetRecords", 0))
        tracker = Tracker(visible_s=args.visible_s)
        writer_done = threading.Event()
        sweeps = Sweeps()
        reader = threading.Thread(
            target=poller,
            args=(
                gateway,
                LAG_COLLECTION,
                tracker,
                writer_done,
                args.poll_ms / 1000,
                args.read == "get",
                sweeps,
            ),
            name="bench-streams-reader",
            daemon=True,
        )
        reader.start()
        meter = CpuMeter(emulator_pid)
        meter.begin()
        follower_lags: list[float] = []
        sampler_stop = threading.Event()
        sampler = threading.Thread(
            target=sample_follower_lag,
            args=(gateway, LAG_COLLECTION, sampler_stop, follower_lags),
            name="bench-streams-lag-sampler",
            daemon=True,
        )
        sampler.start()
        try:
            writing_s = outside_writer(
                client,
                table,
                plan,
                args.rate,
                "x" * max(0, args.doc_size - 100),
                tracker,
                args.writers,
            )
        finally:
            writer_done.set()
            sampler_stop.set()
        sampler.join()
        cpu = meter.shares()
        get_records = int(gateway.stats()["db_calls"].get("GetRecords", 0)) - calls_before
        reader.join(timeout=args.visible_s + 30.0)
        if reader.is_alive():
            raise RuntimeError(f"{backend}: the reader did not finish: is the gateway hung?")
        stats = gateway.stats()
        follower = streams_stats(gateway, LAG_COLLECTION)
        health = {
            key: stats[key]
            for key in ("cache_errors", "fallbacks", "pending_repairs", "breaker", "evictions")
        }
    finally:
        gateway.close()
        client.close()
    return LagResult(
        backend,
        tracker,
        writing_s,
        ready_s,
        cold,
        sweeps,
        follower,
        get_records / writing_s,
        sorted(follower_lags),
        cpu,
        health,
        logs.take(),
    )


def print_lag(results: Sequence[LagResult], args: argparse.Namespace) -> None:
    print(
        f"\noutside-write lag: {args.rate:g} outside writes/s for {args.duration:g} s per backend "
        f"(PutItem without _rev {KIND_WEIGHTS[0]:.0%}, UpdateItem {KIND_WEIGHTS[1]:.0%}, "
        f"DeleteItem {KIND_WEIGHTS[2]:.0%}) over {args.keys:,} cached documents;\n"
        f"lag = outside write acknowledged -> return of the first gateway.{args.read} answering "
        f"it (sweeps {args.poll_ms:g} ms apart); +{args.latency_ms:g} ms per gateway request to "
        "DynamoDB\n"
    )
    header = (
        f"{'backend':<8} {'writes':<7} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{f'unseen {args.visible_s:g}s':>11} {'superseded':>10}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        tracker = result.tracker
        rows: list[tuple[str, list[float], int, int, int]] = [
            (
                "all",
                sorted(lag for kind in KINDS for lag in tracker.lags_ms[kind]),
                sum(tracker.writes.values()),
                sum(tracker.unseen.values()),
                sum(tracker.superseded.values()),
            )
        ]
        rows += [
            (
                kind,
                sorted(tracker.lags_ms[kind]),
                tracker.writes[kind],
                tracker.unseen[kind],
                tracker.superseded[kind],
            )
            for kind in KINDS
        ]
        for i, (label, lags, count, unseen, superseded) in enumerate(rows):
            print(
                f"{result.backend if i == 0 else '':<8} {label:<7} {count:>6,} "
                f"{percentile(lags, 50):>8.0f} {percentile(lags, 99):>8.0f} "
                f"{(lags[-1] if lags else math.nan):>8.0f} {unseen:>11,} {superseded:>10,}"
            )
    print()
    for result in results:
        tracker = result.tracker
        writes = sum(tracker.writes.values()) + tracker.write_errors
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in result.cpu.items() if v is not None)
        lags = result.follower_lags_ms
        print(
            f"{result.backend}: {writes / result.writing_s:.0f} writes/s sent "
            f"({tracker.write_errors} errors); reader: {result.sweeps.count:,} sweeps of "
            f"{result.sweeps.mean_ms:.1f} ms on average, longest "
            f"{result.sweeps.longest_s * 1000:.0f} ms, {len(result.sweeps.errors)} errors; "
            f"keys cold after the warm-up: {result.cold_after_warm}\n"
            f"  follower: ready after {result.ready_s:.1f} s, "
            f"{result.follower.get('records_applied', 0):,} records applied, "
            f"{result.get_records_per_s:.0f} GetRecords/s; its stats() lag_s (the newest record "
            f"of each batch), sampled every {LAG_SAMPLE_S:g} s: p50 {percentile(lags, 50):.0f} "
            f"ms, max {(lags or [math.nan])[-1]:.0f} ms\n"
            f"  CPU while writing (cores): {cpu}; cache: "
            f"{', '.join(f'{k} {v}' for k, v in result.health.items())}"
        )
        if tracker.first_write_error:
            print(f"  first write error: {tracker.first_write_error}")
        if result.sweeps.errors:
            print(f"  first read error: {result.sweeps.errors[0]}")
        print_logs(result.logs)


def print_logs(lines: Sequence[str], indent: str = "  ") -> None:
    """The distinct log lines of a phase, with their counts (at most ten)."""
    if not lines:
        return
    counts = Counter(lines)
    print(f"{indent}gateway log: {len(lines)} warning(s)")
    for line, count in counts.most_common(10):
        print(f"{indent}  {count} x {line[:200]}")


# -- part 2: the cost of following ------------------------------------------------------------


#: The three ways part 2 runs each backend: the gateway without streams, the same with another
#: process reading the stream as a follower would (the emulator and the machine pay for the
#: stream's reads; the gateway's process does not), and the gateway following it.
MODES = ("without", "elsewhere", "with")


@dataclass
class CostRun:
    """One window of the workload."""

    backend: str
    mode: str
    repetition: int
    ops_per_s: float
    hit_ratio: float | None
    #: Latency percentiles of every operation (p50: a read; p99: about the writes' median).
    p50_us: float
    p99_us: float
    stale_reads: int
    errors: int
    #: Stream records the follower applied per second of the window.
    records_per_s: float
    #: The follower's GetRecords calls per second of the window.
    get_records_per_s: float
    #: CPU over the window, in cores: "process" (this one), "follower", "emulator", "reader".
    cpu: dict[str, float | None]
    first_error: str | None
    logs: list[str]


@contextlib.contextmanager
def stream_reader(endpoint_url: str, table: str, latency_ms: float) -> Iterator[int]:
    """Another process reading ``table``'s stream as the follower does (this script with
    ``--stream-reader``), positioned at its newest record; its pid."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                *("--stream-reader", endpoint_url, table, "--latency-ms", str(latency_ms)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )

        def failure(what: str) -> RuntimeError:
            errors.seek(0)
            return RuntimeError(f"{what}: {errors.read().decode(errors='replace')[-2000:]}")

        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != b"ready":
                terminate(process)
                raise failure("the stream reader did not start")
            yield process.pid
            if process.poll() is not None:
                raise failure("the stream reader stopped during the run")
        finally:
            terminate(process)


def read_stream(endpoint_url: str, table: str, latency_ms: float) -> int:
    """``--stream-reader``: read the table's stream the way the follower does (its newest
    record first; GetRecords again at once after records, after its poll interval after none;
    the same added latency), decode every record as it does, apply nothing; until killed."""
    config = botocore_config(2.0, 5.0, 2)
    control = boto3.client(
        "dynamodb", region_name=DUMMY_REGION, endpoint_url=endpoint_url, config=config
    )
    streams = boto3.client(
        "dynamodbstreams", region_name=DUMMY_REGION, endpoint_url=endpoint_url, config=config
    )
    streams.meta.events.register(STREAMS_BEFORE_SEND, LatencyInjector(latency_ms))
    arn = control.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][-1]["ShardId"]
    iterator: str | None = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST"
    )["ShardIterator"]
    print("ready", flush=True)
    while iterator:
        answer = streams.get_records(ShardIterator=iterator, Limit=1000)
        iterator = answer.get("NextShardIterator")
        records = answer.get("Records") or []
        for record in records:
            change_from_record(record, table)
        if not records:
            time.sleep(DEFAULT_POLL_INTERVAL_S)
    return 0


def run_cost(
    endpoint_url: str,
    emulator_pid: int | None,
    redis_url: str | None,
    token: str,
    backends: Sequence[str],
    args: argparse.Namespace,
    logs: LogCollector,
    notes: Console,
) -> list[CostRun]:
    """Part 2 (see the module docstring): each backend in each of `MODES`, in an order that
    reverses from one repetition to the next, ``--repeat`` times, on one table with a
    stream."""
    spec = WorkloadSpec(keys=args.keys, doc_size=args.doc_size)
    prefix = f"streams-{token}-cost-"
    table = prefix + spec.collection

    def settings_of(backend: str, streams: bool, run: int) -> Settings:
        return gateway_settings(
            endpoint_url,
            prefix,
            backend,
            streams=streams,
            redis_url=redis_url if backend in REDIS_BACKENDS else None,
            redis_prefix=f"streams-{token}-cost-{run}:",
        )

    # The table is created with a stream (the settings with streams on): every mode uses it.
    acknowledged: Mapping[str, int] = _preload(settings_of("memory", True, 0), spec, notes)
    warmup = min(2.0, 0.2 * args.cost_duration)
    config = RunConfig(
        threads=args.threads,
        duration_s=args.cost_duration,
        warmup_s=warmup,
        read_every_key=False,
    )
    runs: list[CostRun] = []
    number = 0
    for repetition in range(args.repeat):
        for index, backend in enumerate(backends):
            order = MODES if (repetition + index) % 2 == 0 else MODES[::-1]
            for mode in order:
                number += 1
                settings = settings_of(backend, mode == "with", number)
                notes.log(f"[dim]  {backend}, {mode} (repetition {repetition + 1})[/dim]")
                logs.take()
                with contextlib.ExitStack() as stack:
                    reader_pid = None
                    if mode == "elsewhere":
                        reader_pid = stack.enter_context(
                            stream_reader(endpoint_url, table, args.latency_ms)
                        )
                    gateway = stack.enter_context(open_gateway(settings, args.latency_ms))
                    gateway.get(spec.collection, key_name(0))  # registers the collection
                    if mode == "with":
                        wait_following(gateway, spec.collection, key_name(0))
                    read_every_key(gateway, spec)
                    meter = CpuMeter(emulator_pid, reader_pid)
                    applied_before: list[int] = []

                    def progress(
                        phase: str,
                        done: float,
                        ops: int,
                        meter: CpuMeter = meter,
                        before: list[int] = applied_before,
                        gateway: CachingGateway = gateway,
                    ) -> None:
                        if phase == "measure" and not meter.paths:  # the window just started
                            meter.begin()
                            stats = streams_stats(gateway, spec.collection)
                            before.append(int(stats.get("records_applied", 0)))

                    run = run_backend(
                        f"{backend}-{mode}",
                        gateway,
                        spec,
                        config,
                        has_cache=True,
                        progress=progress,
                        acknowledged=acknowledged,
                    )
                    cpu = meter.shares()
                    applied = int(streams_stats(gateway, spec.collection).get("records_applied", 0))
                    applied -= applied_before[0] if applied_before else 0
                acknowledged = run.acknowledged
                runs.append(
                    CostRun(
                        backend,
                        mode,
                        repetition,
                        run.ops_per_s,
                        run.hit_ratio,
                        run.percentile_us(50),
                        run.percentile_us(99),
                        run.stale_reads,
                        run.errors,
                        applied / run.elapsed_s,
                        run.db_calls.get("GetRecords", 0) / run.elapsed_s,
                        cpu,
                        run.first_error,
                        logs.take(),
                    )
                )
    return runs


def ratios(runs: Sequence[CostRun], backend: str, over: str, under: str) -> list[float]:
    """ops/s of mode ``over`` / mode ``under`` for each repetition of ``backend``."""
    by = {(r.mode, r.repetition): r.ops_per_s for r in runs if r.backend == backend}
    return [
        by[(over, k)] / by[(under, k)]
        for (mode, k) in sorted(by)
        if mode == under and (over, k) in by and by[(under, k)] > 0
    ]


def ratio_text(values: Sequence[float]) -> str:
    """``0.62 (0.58 0.66)``: the median, then each value."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({' '.join(f'{v:.2f}' for v in values)})"


def print_cost(runs: Sequence[CostRun], backends: Sequence[str], args: argparse.Namespace) -> None:
    spec = WorkloadSpec(keys=args.keys, doc_size=args.doc_size)
    print(
        f"\ncost of following: gateway bench's workload ({spec.keys:,} keys, "
        f"{spec.doc_size:,}-byte documents, zipf {spec.zipf:g}, {spec.read_ratio:.0%} reads, "
        f"{args.threads} threads, +{args.latency_ms:g} ms per DynamoDB request), "
        f"{args.cost_duration:g} s windows, {args.repeat} repetition(s);\n"
        "without: STREAMS_INVALIDATION off; elsewhere: off, and another process reads the "
        "stream as a follower would; with: on.\nops/s and hit ratio: medians; ratios: of the "
        "runs of one repetition (adjacent, order reversed each repetition), median (each)\n"
    )
    pairs = [("with", "without"), ("elsewhere", "without"), ("with", "elsewhere")]
    cells = {
        (backend, pair): ratio_text(ratios(runs, backend, *pair))
        for backend in backends
        for pair in pairs
    }
    widths = {
        pair: max(len(f"{pair[0]} / {pair[1]}"), *(len(cells[(b, pair)]) for b in backends))
        for pair in pairs
    }
    header = (
        f"{'backend':<8} {'without':>8} {'elsewhere':>9} {'with':>6}  "
        + " ".join(f"{f'{a} / {b}':<{widths[(a, b)]}}" for a, b in pairs)
        + f" {'hit ratio without -> with':>25} {'stale':>5}"
    )
    print(header)
    print("-" * len(header))
    for backend in backends:
        mine = {
            mode: [r for r in runs if r.backend == backend and r.mode == mode] for mode in MODES
        }
        hits = (
            f"{median_of(mine['without'], 'hit_ratio'):.1%} -> "
            f"{median_of(mine['with'], 'hit_ratio'):.1%}"
        )
        print(
            f"{backend:<8} {median_of(mine['without'], 'ops_per_s'):>8,.0f} "
            f"{median_of(mine['elsewhere'], 'ops_per_s'):>9,.0f} "
            f"{median_of(mine['with'], 'ops_per_s'):>6,.0f}  "
            + " ".join(f"{cells[(backend, pair)]:<{widths[pair]}}" for pair in pairs)
            + f" {hits:>25} {sum(r.stale_reads for r in runs if r.backend == backend):>5}"
        )
    print(
        f"\nwhere it goes (medians; without -> elsewhere -> with; CPU: cores busy during the "
        f"window, of {os.cpu_count()}):\n"
    )
    header = (
        f"{'backend':<8} {'p50 us':>18} {'p99 ms':>18} {'records/s':>9} {'GetRecords/s':>12} "
        f"{'follower CPU':>12} {'reader CPU':>10} {'process CPU':>18} {'emulator CPU':>18}"
    )
    print(header)
    print("-" * len(header))
    for backend in backends:
        mine = {
            mode: [r for r in runs if r.backend == backend and r.mode == mode] for mode in MODES
        }
        p50 = " -> ".join(f"{median_of(mine[m], 'p50_us'):.0f}" for m in MODES)
        p99 = " -> ".join(f"{median_of(mine[m], 'p99_us') / 1000:.1f}" for m in MODES)
        process = " -> ".join(cpu_median(mine[m], "process") for m in MODES)
        emulator = " -> ".join(cpu_median(mine[m], "emulator") for m in MODES)
        print(
            f"{backend:<8} {p50:>18} {p99:>18} {median_of(mine['with'], 'records_per_s'):>9,.0f} "
            f"{median_of(mine['with'], 'get_records_per_s'):>12,.0f} "
            f"{cpu_median(mine['with'], 'follower'):>12} "
            f"{cpu_median(mine['elsewhere'], 'reader'):>10} {process:>18} {emulator:>18}"
        )
    print(
        "\nhit ratio, stale: of the gateway's own reads (stale: older than a write it had "
        "acknowledged, all runs); p99 is about the writes' median (5 % of the operations); "
        "records/s, GetRecords/s: what the follower applied and asked for, per second of "
        "window; reader CPU: the other process's, in elsewhere"
    )
    for run in runs:
        if run.errors or run.first_error or run.logs:
            print(
                f"{run.backend} {run.mode} streams (repetition {run.repetition + 1}): "
                f"{run.errors} errors{f' (first: {run.first_error})' if run.first_error else ''}"
            )
            print_logs(run.logs)


def median_of(runs: Sequence[CostRun], name: str) -> float:
    """The median of a numeric field over ``runs`` (NaN for none, or None values)."""
    values = [value for run in runs if (value := getattr(run, name)) is not None]
    return statistics.median(values) if values else math.nan


def cpu_median(runs: Iterable[CostRun], name: str) -> str:
    """The median share of a core of ``name`` over ``runs``, as ``0.42``; ``-`` if unknown."""
    shares = [share for run in runs if (share := run.cpu.get(name)) is not None]
    return f"{statistics.median(shares):.2f}" if shares else "-"


# -- main --------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_redis(backends: Sequence[str], notes: Console) -> Iterator[str | None]:
    """A throw-away redis-server when a backend needs one and one is on PATH; else None."""
    if not REDIS_BACKENDS.intersection(backends) or redis_server_binary() is None:
        yield None
        return
    with LocalRedis() as server:
        notes.log(f"[dim]redis-server started at {server.url}[/dim]")
        yield server.url


def emulator_errors(log_path: Path) -> list[str]:
    """Lines of the emulator's log that report errors (it logs nothing else when quiet)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if "Traceback" in line or "Error" in line]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION_S,
        help="seconds of outside writes per backend (default: %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help="outside writes per second (default: %(default)s)",
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=WorkloadSpec().keys,
        help="documents per table, all cached (default: %(default)s)",
    )
    parser.add_argument(
        "--doc-size", type=int, default=WorkloadSpec().doc_size, help="bytes (default: %(default)s)"
    )
    parser.add_argument(
        "--cost-duration",
        type=float,
        default=DEFAULT_COST_DURATION_S,
        help="measured seconds of each workload window (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help="without/with pairs per backend (default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=8, help="workload threads (default: 8)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=3.0,
        help="added to every gateway request to DynamoDB and its streams (default: 3.0)",
    )
    parser.add_argument(
        "--poll-ms",
        type=float,
        default=DEFAULT_POLL_MS,
        help="pause between the reader's sweeps (default: %(default)s)",
    )
    parser.add_argument(
        "--visible-s",
        type=float,
        default=DEFAULT_VISIBLE_S,
        help="a write not seen within this is unseen (default: %(default)s)",
    )
    parser.add_argument(
        "--writers",
        type=int,
        default=DEFAULT_WRITERS,
        help="threads of the outside writer (default: %(default)s)",
    )
    parser.add_argument(
        "--read",
        choices=["get_many", "get"],
        default="get_many",
        help="how the reader polls the pending ids: get_many of up to 100 at a time, or one get "
        "each (a sweep then costs a cache round trip per pending id) (default: %(default)s)",
    )
    parser.add_argument(
        "--stream-reader", nargs=2, metavar=("ENDPOINT", "TABLE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--only", choices=["lag", "cost"], help="run one part only")
    args = parser.parse_args(argv)
    backends = tuple(dict.fromkeys(b.strip() for b in args.backends.split(",") if b.strip()))
    if not backends or any(b not in BACKENDS for b in backends):
        parser.error(f"--backends: a comma-separated list from {','.join(BACKENDS)}")
    args.backend_list = backends
    if min(args.keys, args.repeat, args.threads, args.writers) < 1:
        parser.error("--keys, --repeat, --threads and --writers must be >= 1")
    if not (args.rate > 0 and args.duration > 0 and args.cost_duration > 0):
        parser.error("--rate, --duration and --cost-duration must be > 0")
    if args.doc_size < 128:
        parser.error("--doc-size must be >= 128")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stream_reader:
        endpoint_url, table = args.stream_reader
        return read_stream(endpoint_url, table, args.latency_ms)
    notes = Console(stderr=True, highlight=False, log_path=False)
    ensure_dummy_credentials()
    token = uuid.uuid4().hex[:8]
    logs = LogCollector()
    gateway_log = logging.getLogger("gateway")
    gateway_log.addHandler(logs)
    log_dir = tempfile.TemporaryDirectory(prefix="bench-streams-")
    moto_log = Path(log_dir.name) / "moto.log"
    started = time.monotonic()
    try:
        with (
            EmbeddedDynamoDB(log_path=moto_log) as ddb,
            local_redis(args.backend_list, notes) as redis_url,
        ):
            backends = list(args.backend_list)
            if redis_url is None and REDIS_BACKENDS.intersection(backends):
                notes.print(
                    "[yellow]note:[/yellow] no redis-server on PATH: skipping redis, tiered"
                )
                backends = [b for b in backends if b not in REDIS_BACKENDS]
            if not backends:
                return 1
            lag: list[LagResult] = []
            if args.only != "cost":
                for backend in backends:
                    notes.log(f"[dim]outside-write lag: {backend}[/dim]")
                    url = redis_url if backend in REDIS_BACKENDS else None
                    lag.append(
                        run_lag(backend, ddb.endpoint_url, ddb.pid, url, token, args, logs, notes)
                    )
            cost: list[CostRun] = []
            if args.only != "lag":
                notes.log("[dim]cost of following[/dim]")
                cost = run_cost(
                    ddb.endpoint_url, ddb.pid, redis_url, token, backends, args, logs, notes
                )
            errors = emulator_errors(moto_log)
    finally:
        gateway_log.removeHandler(logs)
        log_dir.cleanup()
    print(
        f"bench_streams on the embedded emulator (moto, loopback), {os.cpu_count()} cores, "
        f"{time.monotonic() - started:.0f} s in all"
    )
    if lag:
        print_lag(lag, args)
    if cost:
        print_cost(cost, backends, args)
    print(f"\nemulator log: {len(errors)} error line(s)")
    for line in errors[:5]:
        print(f"  {line[:200]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
