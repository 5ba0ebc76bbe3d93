"""Locust load test: the bare DynamoDB service and the caching gateway, side by side, in process.

Two user classes call a `DatabaseService` directly (no HTTP in between) and report every call
through ``events.request.fire``: `BareServiceUser` (``DynamoDBService``, no cache) and
`GatewayUser` (the caching gateway, ``CACHE_BACKEND`` from the environment or the YAML file
named by ``GATEWAY_CONFIG``, ``memory`` when unset or ``none``). Locust splits ``--users``
between them, so one run compares both. Each user draws from its own `Workload` (the one
``gateway bench`` uses), so user *n* of each class sees the same key sequence. Each class works
on its own collection (``bench_docs_bare``, ``bench_docs_gateway``): writes that bypass the
gateway would otherwise make its cached copies stale.

Workload options (also in the web UI): ``--keys``, ``--doc-size``, ``--zipf``, ``--read-ratio``,
``--latency-ms`` and ``--jitter-ms`` (a sleep added before every DynamoDB request, the network
round trip that loopback lacks: `gateway.bench.latency.LatencyInjector`).

DynamoDB: ``DYNAMODB_ENDPOINT_URL`` (and the rest of `gateway.Settings`) from the environment;
when no endpoint is configured (and ``GATEWAY_USE_AWS`` is not ``1``), every process that runs
users starts an embedded emulator of its own. Real AWS is used only with ``GATEWAY_USE_AWS=1``.

The preload happens in locust's ``init`` event (single process; master with a shared endpoint),
before the runner starts the ``-t`` clock; workers with their own emulators preload at their
test start. A Redis-backed gateway uses the run's own key prefix (``REDIS_KEY_PREFIX`` +
``locust-<8 hex>-``, chosen by the master and sent to the workers as ``--run-key-prefix``),
whose keys every process deletes when it quits.

Run from the repository root (see ``load_tests/README.md``)::

    locust --config load_tests/locust.conf
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from locust import User, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

# `python -m locust` puts the working directory on sys.path, the `locust` script does not.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from gateway.bench.latency import DEFAULT_LATENCY_MS, LatencyInjector, service_clients  # noqa: E402
from gateway.bench.report import health_problem, health_text  # noqa: E402
from gateway.bench.runner import cache_health, merge_health  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.emulator import EmbeddedDynamoDB, ensure_dummy_credentials  # noqa: E402
from gateway.factory import (  # noqa: E402
    build_cache,
    build_dynamodb_service,
    build_gateway,
    get_database_service,
)
from gateway.service import DatabaseService  # noqa: E402
from gateway.workload import DEFAULT_COLLECTION, Workload, WorkloadSpec, preload  # noqa: E402
from load_tests.histogram import MicrosecondHistogram  # noqa: E402

logger = logging.getLogger("load_tests")

BARE = "bare"
GATEWAY = "gateway"
#: The gateway user's cache when ``CACHE_BACKEND`` is unset or ``none``.
DEFAULT_GATEWAY_CACHE = "memory"
#: Users of one class on different workers get workload seeds this far apart.
SEEDS_PER_WORKER = 100_000
#: The key of this module's data in locust's worker-to-master stats messages.
REPORT_KEY = "gateway_load"
#: The cache backends that keep keys in Redis (under ``REDIS_KEY_PREFIX``).
REDIS_BACKENDS = frozenset({"redis", "tiered"})
#: Between the configured ``REDIS_KEY_PREFIX`` and the run's random token.
RUN_PREFIX_MARK = "locust-"
#: Keys deleted per round trip when a run's keys are removed.
DELETE_BATCH = 500
#: Socket timeout of that deletion (``REDIS_TIMEOUT_S`` is tuned for cache lookups).
DELETE_TIMEOUT_S = 5.0

_SPEC_DEFAULTS = WorkloadSpec()


@dataclass(frozen=True)
class LoadOptions:
    """The workload options of one run, from locust's parsed command line."""

    keys: int = _SPEC_DEFAULTS.keys
    doc_size: int = _SPEC_DEFAULTS.doc_size
    zipf: float = _SPEC_DEFAULTS.zipf
    read_ratio: float = _SPEC_DEFAULTS.read_ratio
    latency_ms: float = DEFAULT_LATENCY_MS
    jitter_ms: float = 0.0
    #: The run's Redis key prefix (`run_key_prefix`); "" keeps ``REDIS_KEY_PREFIX``.
    key_prefix: str = ""

    @classmethod
    def from_environment(cls, environment: Environment) -> LoadOptions:
        """The options locust parsed (defaults when run as a library without them)."""
        parsed = environment.parsed_options
        if parsed is None:
            return cls()
        return cls(
            keys=parsed.keys,
            doc_size=parsed.doc_size,
            zipf=parsed.zipf,
            read_ratio=parsed.read_ratio,
            latency_ms=parsed.latency_ms,
            jitter_ms=parsed.jitter_ms,
            key_prefix=getattr(parsed, "run_key_prefix", "") or "",
        )

    def spec(self, kind: str) -> WorkloadSpec:
        """The workload of user class ``kind`` (raises ValueError on a bad option)."""
        return WorkloadSpec(
            keys=self.keys,
            doc_size=self.doc_size,
            zipf=self.zipf,
            read_ratio=self.read_ratio,
            collection=f"{DEFAULT_COLLECTION}_{kind}",
        )

    def injector(self) -> LatencyInjector | None:
        """The latency to add to DynamoDB requests, if any (raises ValueError if negative)."""
        injector = LatencyInjector(self.latency_ms, self.jitter_ms)
        return injector if self.latency_ms > 0 or self.jitter_ms > 0 else None


@dataclass
class _Backend:
    """One service of this process and what its users measured."""

    kind: str
    name: str  # the request name in locust's statistics: "bare", "gateway:memory", ...
    service: DatabaseService
    gets_us: MicrosecondHistogram
    baseline: dict[str, Any]  # stats() when the test started
    last_request: float | None = None  # time.monotonic() when its last request ended


class _Node:
    """What one locust process shares between its users: settings, emulator, services.

    Everything is built lazily, once per process, under a lock: under locust the ``threading``
    module is gevent's, so the lock serialises greenlets, which may yield while a service
    connects or the emulator starts.
    """

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.options = LoadOptions()
        self._lock = threading.Lock()
        self._settings: Settings | None = None
        self._emulator: EmbeddedDynamoDB | None = None
        self._backends: dict[str, _Backend] = {}
        self.preloaded: set[str] = set()
        self._user_numbers: dict[str, itertools.count[int]] = {}
        #: time.monotonic() when the test (re)started: after the preload, as the users start.
        self._measuring_since: float | None = None
        #: On the master: the latest report of each worker, by client id.
        self.worker_reports: dict[str, dict[str, Any]] = {}

    # -- configuration --------------------------------------------------------------------

    @staticmethod
    def shared_endpoint() -> bool:
        """True when every process reaches the same DynamoDB (an endpoint, or real AWS)."""
        return bool(Settings().DYNAMODB_ENDPOINT_URL) or os.environ.get("GATEWAY_USE_AWS") == "1"

    def settings(self) -> Settings:
        """`Settings` from the environment; with an embedded emulator's endpoint if none."""
        with self._lock:
            if self._settings is None:
                settings = Settings()
                if not self.shared_endpoint():
                    ensure_dummy_credentials()
                    self._emulator = EmbeddedDynamoDB().start()
                    logger.info("embedded DynamoDB emulator at %s", self._emulator.endpoint_url)
                    settings = settings.model_copy(
                        update={"DYNAMODB_ENDPOINT_URL": self._emulator.endpoint_url}
                    )
                self._settings = settings
            return self._settings

    # -- services ---------------------------------------------------------------------------

    def backend(self, kind: str) -> _Backend:
        """This process's service for user class ``kind``, built on first use."""
        backend = self._backends.get(kind)
        if backend is not None:
            return backend
        settings = self.settings()
        with self._lock:
            backend = self._backends.get(kind)
            if backend is None:
                name, service = _build_service(
                    kind, settings, self.options.injector(), self.options.key_prefix
                )
                backend = _Backend(kind, name, service, MicrosecondHistogram(), _counters(service))
                self._backends[kind] = backend
            return backend

    def preload(self, kinds: list[str]) -> None:
        """Save every key of each class's collection once per process, through its service."""
        for kind in kinds:
            if kind in self.preloaded:
                continue
            spec = self.options.spec(kind)
            started = time.monotonic()
            preload(self.backend(kind).service, spec)
            self.preloaded.add(kind)
            logger.info(
                "preloaded %d documents of %d bytes into %s in %.1f s",
                spec.keys,
                spec.doc_size,
                spec.collection,
                time.monotonic() - started,
            )

    def start_measuring(self) -> None:
        """Forget earlier measurements: a test (re)starts now."""
        for backend in self._backends.values():
            backend.gets_us = MicrosecondHistogram()
            backend.baseline = _counters(backend.service)
            backend.last_request = None
        self._measuring_since = time.monotonic()

    def next_user(self, kind: str) -> int:
        """A workload seed for the next user of class ``kind`` in this process."""
        runner = self.environment.runner if self.environment is not None else None
        worker = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        numbers = self._user_numbers.setdefault(kind, itertools.count())
        return worker * SEEDS_PER_WORKER + next(numbers)

    def report(self) -> dict[str, dict[str, Any]]:
        """This process's measurements since the test started, by request name."""
        report = {}
        for backend in list(self._backends.values()):
            stats = backend.service.stats()
            now = _counters(backend.service, stats)
            then = backend.baseline
            report[backend.name] = {
                "kind": backend.kind,
                "gets": backend.gets_us.to_wire(),
                "hits": now["hits"] - then["hits"],
                "misses": now["misses"] - then["misses"],
                "db_calls": dict(Counter(now["db_calls"]) - Counter(then["db_calls"])),
                # Since the gateway started (not since the test did), and its breaker now.
                "health": cache_health(stats),
                "measured_s": self.measured_s(backend),
            }
        return report

    def measured_s(self, backend: _Backend) -> float:
        """Seconds from the test's start (after any preload) to the backend's last request."""
        since, last = self._measuring_since, backend.last_request
        return max(0.0, last - since) if since is not None and last is not None else 0.0

    def close(self) -> None:
        """Close every service, then stop the emulator."""
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
            emulator, self._emulator = self._emulator, None
            self._settings = None
        for backend in backends:
            try:
                backend.service.close()
            except Exception:  # closing is best effort at exit
                logger.exception("closing the %s service failed", backend.name)
        if emulator is not None:
            emulator.stop()


def _build_service(
    kind: str, settings: Settings, injector: LatencyInjector | None, key_prefix: str = ""
) -> tuple[str, DatabaseService]:
    """(request name, service) for user class ``kind``, with the latency on its DynamoDB clients
    and, when ``key_prefix`` is set, the run's Redis key prefix instead of ``REDIS_KEY_PREFIX``."""
    if kind == BARE:
        service = build_dynamodb_service(settings.model_copy(update={"CACHE_BACKEND": "none"}))
        if injector is not None:
            injector.attach(service_clients(service))
        return BARE, service
    cache = settings.CACHE_BACKEND if settings.CACHE_BACKEND != "none" else DEFAULT_GATEWAY_CACHE
    update: dict[str, Any] = {"CACHE_BACKEND": cache}
    if key_prefix:
        update["REDIS_KEY_PREFIX"] = key_prefix
    settings = settings.model_copy(update=update)
    name = f"{GATEWAY}:{cache}"
    if cache == "dax":
        if injector is not None:
            logger.warning("--latency-ms is not injected into DAX clients")
        return name, get_database_service(settings)
    inner = build_dynamodb_service(settings)
    if injector is not None:
        injector.attach(service_clients(inner))
    try:
        return name, build_gateway(settings, inner, build_cache(settings))
    except BaseException:
        inner.close()
        raise


def new_run_prefix(base: str) -> str:
    """A Redis key prefix for one run: ``base`` + ``locust-<8 hex>-``."""
    return f"{base}{RUN_PREFIX_MARK}{secrets.token_hex(4)}-"


def delete_run_keys(prefix: str) -> None:
    """Delete every Redis key under the run's ``prefix``: entries, floors and the tiered
    cache's registry alike (``SCAN MATCH`` + ``UNLINK``; the cache's own ``delete_prefix`` and
    the gateway's ``invalidate_collection`` leave floors behind). Only when the gateway's cache
    keeps keys in Redis; best effort: a failure is logged, never raised."""
    if not prefix:
        return
    try:
        settings = Settings()
        if settings.CACHE_BACKEND not in REDIS_BACKENDS:
            return
        import redis

        from gateway.caches.redis_cache import glob_escape

        timeout_s = max(settings.REDIS_TIMEOUT_S, DELETE_TIMEOUT_S)
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        deleted = 0
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=glob_escape(prefix) + b"*", count=DELETE_BATCH):
                batch.append(key)
                if len(batch) >= DELETE_BATCH:
                    deleted += int(client.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(client.unlink(*batch))
        finally:
            client.close()
        logger.info("deleted %d Redis keys of this run (prefix %r)", deleted, prefix)
    except Exception as exc:  # cleaning up is best effort at exit
        logger.warning("could not delete the Redis keys under %r: %s", prefix, exc)


def _counters(service: DatabaseService, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    stats = service.stats() if stats is None else stats
    return {"hits": stats["hits"], "misses": stats["misses"], "db_calls": stats["db_calls"]}


_NODE = _Node()


# ------------------------------------------------------------------------------------------
# Users
# ------------------------------------------------------------------------------------------


class _ServiceUser(User):
    """Draws operations from a `Workload` and runs them on this process's service."""

    abstract = True
    kind: ClassVar[str]

    def on_start(self) -> None:
        """Bind the user to the process's service and give it a workload of its own."""
        backend = _NODE.backend(self.kind)
        self._backend = backend
        self._workload = Workload(_NODE.options.spec(self.kind), worker=_NODE.next_user(self.kind))
        self._collection = self._workload.spec.collection
        self._doc_size = self._workload.spec.doc_size
        self._fire = self.environment.events.request.fire

    @task
    def step(self) -> None:
        """One operation: a get or a save of one key."""
        op = self._workload.next()
        service = self._backend.service
        if op.kind == "read":
            started = time.perf_counter_ns()
            try:
                doc = service.get(self._collection, op.doc_id)
            except Exception as exc:
                self._report("get", time.perf_counter_ns() - started, 0, exc)
                return
            elapsed_ns = time.perf_counter_ns() - started
            # Only successful gets go into the µs histogram (read at the end of the test).
            self._backend.gets_us.record(elapsed_ns // 1000)
            self._report("get", elapsed_ns, self._doc_size if doc is not None else 0, None)
        else:
            doc = self._workload.document_for(op)
            started = time.perf_counter_ns()
            try:
                service.save(self._collection, op.doc_id, doc)
            except Exception as exc:
                self._report("save", time.perf_counter_ns() - started, 0, exc)
                return
            self._report("save", time.perf_counter_ns() - started, self._doc_size, None)

    def _report(
        self, request_type: str, elapsed_ns: int, length: int, exc: Exception | None
    ) -> None:
        self._backend.last_request = time.monotonic()
        self._fire(
            request_type=request_type,
            name=self._backend.name,
            response_time=elapsed_ns / 1e6,  # locust takes milliseconds
            response_length=length,
            exception=exc,
            context={},
        )


class BareServiceUser(_ServiceUser):
    """The bare `DynamoDBService`: every get is a DynamoDB read."""

    kind = BARE


class GatewayUser(_ServiceUser):
    """The caching gateway (``CACHE_BACKEND``, default ``memory``) in front of DynamoDB."""

    kind = GATEWAY


# ------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_arguments(parser: LocustArgumentParser, **_: Any) -> None:
    parser.add_argument("--keys", type=int, default=_SPEC_DEFAULTS.keys, help="documents")
    parser.add_argument(
        "--doc-size", type=int, default=_SPEC_DEFAULTS.doc_size, help="document size in bytes"
    )
    parser.add_argument(
        "--zipf", type=float, default=_SPEC_DEFAULTS.zipf, help="key skew (0: uniform)"
    )
    parser.add_argument(
        "--read-ratio", type=float, default=_SPEC_DEFAULTS.read_ratio, help="share of gets, 0-1"
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=DEFAULT_LATENCY_MS,
        help="sleep before every DynamoDB request (the network round trip loopback lacks)",
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="uniform random extra latency, 0 to this"
    )
    # Internal: the run's Redis key prefix, chosen by the master (or the single process) at
    # init and sent to the workers with the other options (locust's spawn messages).
    parser.add_argument(
        "--run-key-prefix", default="", include_in_web_ui=False, help=argparse.SUPPRESS
    )


def _kinds(environment: Environment) -> list[str]:
    """The kinds of the user classes this run uses."""
    return sorted({cls.kind for cls in environment.user_classes if issubclass(cls, _ServiceUser)})


def _check_options(environment: Environment) -> LoadOptions:
    options = LoadOptions.from_environment(environment)
    try:
        options.spec(BARE)
        options.injector()
    except ValueError as exc:
        raise SystemExit(f"load_tests: bad workload option: {exc}") from exc
    return options


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    _NODE.environment = environment
    runner = environment.runner
    if isinstance(runner, WorkerRunner):  # workers get the master's options at each start
        return
    parsed = environment.parsed_options
    if parsed is not None and not getattr(parsed, "run_key_prefix", ""):
        parsed.run_key_prefix = new_run_prefix(Settings().REDIS_KEY_PREFIX)
    _NODE.options = _check_options(environment)
    if _NODE.options.key_prefix:
        logger.info("Redis keys of this run: prefix %r", _NODE.options.key_prefix)
    # Build and preload now, before the runner starts: locust's -t/--run-time clock starts with
    # the runner (in the same instant as test_start), so a preload there would eat into it.
    kinds = _kinds(environment)
    if isinstance(runner, MasterRunner):
        # The master runs no users. With one DynamoDB for everyone it preloads it, once; with
        # embedded emulators (one per worker) each worker preloads its own at its test start.
        if _NODE.shared_endpoint():
            _NODE.preload(kinds)
            _NODE.close()  # its services would only hold connections (and Redis leases)
        return
    for kind in kinds:
        _NODE.backend(kind)
    _NODE.preload(kinds)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    _NODE.options = _check_options(environment)
    kinds = _kinds(environment)
    if isinstance(environment.runner, MasterRunner):
        _NODE.worker_reports.clear()
        # Anything init did not preload (a class picked in the web UI since).
        if _NODE.shared_endpoint() and any(k not in _NODE.preloaded for k in kinds):
            _NODE.preload(kinds)
            _NODE.close()
        return
    for kind in kinds:
        _NODE.backend(kind)
    if not isinstance(environment.runner, WorkerRunner) or not _NODE.shared_endpoint():
        _NODE.preload(kinds)
    _NODE.start_measuring()


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    # The whole since-start report every time, not a delta: a lost message loses nothing.
    data[REPORT_KEY] = _NODE.report()


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if REPORT_KEY in data:
        _NODE.worker_reports[client_id] = data[REPORT_KEY]


# Locust fires `quitting` before it stops the users, `quit` after it stopped them and printed
# its summary: the emulator must outlive the users, and our table belongs after locust's.
@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    environment = _NODE.environment
    runner = environment.runner if environment is not None else None
    try:
        if isinstance(runner, MasterRunner):
            print_summary(_merge(list(_NODE.worker_reports.values())))
        elif not isinstance(runner, WorkerRunner):
            print_summary(_NODE.report())
    finally:
        _NODE.close()
        # Every process deletes the run's keys once its own services are closed (the master
        # after the workers were told to quit): whoever ends last leaves nothing behind.
        delete_run_keys(_NODE.options.key_prefix)


# ------------------------------------------------------------------------------------------
# The µs summary
# ------------------------------------------------------------------------------------------


def _merge(reports: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Add up the reports of several processes, by request name."""
    merged: dict[str, dict[str, Any]] = {}
    for report in reports:
        for name, part in report.items():
            into = merged.setdefault(
                name,
                {
                    "kind": part["kind"],
                    "gets": MicrosecondHistogram().to_wire(),
                    "hits": 0,
                    "misses": 0,
                    "db_calls": {},
                    "health": None,
                    "measured_s": 0.0,
                },
            )
            gets = MicrosecondHistogram.from_wire(into["gets"])
            gets.merge(MicrosecondHistogram.from_wire(part["gets"]))
            into["gets"] = gets.to_wire()
            into["hits"] += part["hits"]
            into["misses"] += part["misses"]
            into["db_calls"] = dict(Counter(into["db_calls"]) + Counter(part["db_calls"]))
            into["health"] = merge_health([into["health"], part.get("health")])
            into["measured_s"] = max(into["measured_s"], part.get("measured_s", 0.0))
    return merged


def summary_lines(report: dict[str, dict[str, Any]]) -> list[str]:
    """The µs table printed at the end of a run.

    Which gets were cache hits cannot be told from outside the gateway without a race: its
    hit counter is shared by every user of the process, and with read coalescing and
    single-flight a miss may be answered by another user's DynamoDB request, so neither a
    counter delta nor "did this user send a request" classifies a call reliably. So every
    successful get is timed, per user class, and the gateway's hit ratio comes from its
    ``stats()``. A hit (a cache lookup) is always faster than a miss (a DynamoDB round trip),
    so the hits are the fastest ``hit ratio`` share of the gets, and hit percentile q is get
    percentile ``q * hit ratio``: the "hits" rows.
    """
    header = f"{'Get latency (µs)':<24} {'gets':>9} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
    lines = [
        "",
        "Get latencies in microseconds (locust's table above rounds to whole milliseconds)",
        header + f" {'hit ratio':>10}",
        "-" * (len(header) + 11),
    ]
    notes = []
    for name in sorted(report, key=lambda n: (report[n]["kind"] != BARE, n)):
        part = report[name]
        gets = MicrosecondHistogram.from_wire(part["gets"])
        looked_up = part["hits"] + part["misses"]
        is_gateway = part["kind"] != BARE
        ratio = part["hits"] / looked_up if looked_up else 0.0
        shown_ratio = f"{ratio:>9.1%}" if is_gateway and looked_up else f"{'-':>9}"
        if not gets.count:
            lines.append(f"{name:<24} {0:>9} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {shown_ratio:>10}")
            continue
        lines.append(
            f"{name + ' gets':<24} {gets.count:>9} " + _row(gets, 1.0) + f" {shown_ratio:>10}"
        )
        if is_gateway and ratio > 0:
            hits = round(gets.count * ratio)
            lines.append(f"{name + ' hits *':<24} {hits:>9} " + _row(gets, ratio))
            notes.append(name)
        calls = ", ".join(f"{op}={n}" for op, n in sorted(part["db_calls"].items()) if n)
        lines.append(f"{'':<24} DynamoDB requests: {calls or 'none'}")
    if notes:
        lines.append(
            "* hits: the fastest <hit ratio> share of the gets (a cache hit is always faster "
            "than a DynamoDB round trip): hit pQ = get p(Q x hit ratio)"
        )
    measured = max((part.get("measured_s", 0.0) for part in report.values()), default=0.0)
    lines.append(
        f"Measured: {measured:.2f} s of load (from the test start, after the preload, "
        "to the last request)"
    )
    lines.extend(health_summary_lines(report))
    return lines


def health_summary_lines(report: dict[str, dict[str, Any]]) -> list[str]:
    """Each gateway's cache health (`gateway.bench.runner.cache_health`), one line each:
    ``gateway:redis: cache errors 0, fallbacks 0, breaker closed``, prefixed with ``WARNING``
    (and in yellow on a terminal) when the cache failed during the run."""
    lines = []
    color = sys.stdout.isatty()
    for name in sorted(report):
        health = report[name].get("health")
        if not health:
            continue
        text = health_text(name, health)
        if health_problem(health):
            text = f"WARNING: {text}"
            if color:
                text = f"\033[1;33m{text}\033[0m"
        lines.append(text)
    return lines


def _row(gets: MicrosecondHistogram, share: float) -> str:
    values = [gets.percentile(q * share) for q in (50, 90, 99, 100)]
    return " ".join(f"{v:>8}" for v in values)


def print_summary(report: dict[str, dict[str, Any]]) -> None:
    """Print `summary_lines` on standard output, after locust's own summary (if anything ran)."""
    if not report:
        return
    print("\n".join(summary_lines(report)), flush=True)
