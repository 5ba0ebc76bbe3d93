"""``gateway bench``: the bare service, the caches users would otherwise write, and the gateway
with each cache, on one workload.

Backends, in their default order: ``bare`` (the `DynamoDBService` alone), the peers
(`gateway.bench.peers`: ``naive``, a hand-rolled TTLCache behind a lock; ``dogpile``,
dogpile.cache on Redis), then the gateway's ``memory``, ``redis`` and ``tiered``. Every one is
checked for stale reads (`gateway.bench.stale`); the documents' acknowledged generations carry
over from the preload to each backend in turn, since they all share the table.

Where it runs: with no endpoint configured (``--endpoint-url``, ``DYNAMODB_ENDPOINT_URL``, the
YAML file) it starts the embedded DynamoDB emulator on loopback, in its own process, and stops
it at the end. With an endpoint it uses that endpoint. Real AWS is used only with ``--aws``: an
endpoint on ``amazonaws.com`` or ``GATEWAY_USE_AWS=1`` without it is refused, because the bench
creates a table and every request is billed. Tables carry a prefix unique to the run; on a
configured endpoint or AWS the bench's table is deleted at the end.

Redis (for the ``dogpile``, ``redis`` and ``tiered`` backends): the URL of ``--redis-url`` or
``REDIS_URL``,
with a key prefix unique to the run whose keys are deleted afterwards; else a ``redis-server``
from PATH started on a free loopback port for the run; else those backends are skipped with a
note.

Each backend gets its own `DynamoDBService` (fresh connection pools) with the injected latency
(`gateway.bench.latency`) on its clients; the documents are loaded once, with no added latency,
before the first backend runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from gateway.bench.cost import item_size
from gateway.bench.latency import DEFAULT_LATENCY_MS, LatencyInjector, service_clients
from gateway.bench.meter import RequestMeter
from gateway.bench.peers import DogpileCache, NaiveCache, dogpile_missing
from gateway.bench.report import as_json, build_rows, check_chart_support, table, write_chart
from gateway.bench.runner import BackendRun, RunConfig, run_backend
from gateway.boto_sessions import new_session
from gateway.config import Settings
from gateway.errors import ConfigError, ValidationError
from gateway.factory import build_cache, build_dynamodb_service, build_gateway
from gateway.retry import botocore_config
from gateway.revisions import parse_generation
from gateway.workload import (
    KINDS,
    QUERY_ATTRIBUTE,
    QUERY_INDEX,
    WorkloadSpec,
    key_name,
    make_document,
)

BACKENDS = ("bare", "naive", "dogpile", "memory", "redis", "tiered")
#: Backends run only when named: ``dax`` goes through a local DAX node (`gateway.dax_emulator`)
#: in front of the same DynamoDB endpoint, to measure amazon-dax-client's own share.
OPTIONAL_BACKENDS = ("dax",)
PEERS = ("naive", "dogpile")
REDIS_BACKENDS = frozenset({"dogpile", "redis", "tiered"})
DEFAULT_BACKENDS = ",".join(BACKENDS)
DEFAULT_DURATION_S = 10.0
DEFAULT_THREADS = 8
#: The warm-up is this share of the duration, at most `MAX_AUTO_WARMUP_S`, unless given.
AUTO_WARMUP_SHARE = 0.2
MAX_AUTO_WARMUP_S = 2.0
#: How long a tiered cache may take to get its pub/sub lease before the run starts.
TIERED_READY_TIMEOUT_S = 5.0
REDIS_PING_TIMEOUT_S = 1.0
AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
INSTALL_REDIS_HINT = "pip install 'dynamodb-gateway[redis]'"
#: Documents per ``save_many`` of the preload (as `gateway.workload.preload`).
PRELOAD_BATCH = 100


@dataclass(frozen=True)
class BenchOptions:
    """Everything ``gateway bench`` was asked for, validated."""

    spec: WorkloadSpec
    run: RunConfig
    latency_ms: float
    jitter_ms: float
    backends: tuple[str, ...]
    redis_url: str | None
    aws: bool
    json: bool
    chart: Path | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gateway bench`` (``cli.py`` creates the subcommand)."""
    spec = WorkloadSpec()
    parser.add_argument(
        "--keys", type=int, default=spec.keys, help="documents in the table (default: %(default)s)"
    )
    parser.add_argument(
        "--doc-size",
        type=int,
        default=spec.doc_size,
        help="document size in bytes, as JSON (default: %(default)s)",
    )
    parser.add_argument(
        "--zipf",
        type=float,
        default=spec.zipf,
        help="zipf skew of key popularity, 0 for uniform (default: %(default)s)",
    )
    parser.add_argument(
        "--read-ratio",
        type=float,
        default=spec.read_ratio,
        help="share of reads, 0 to 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--workload",
        choices=KINDS,
        default=spec.kind,
        help="documents: reads are gets; query: reads are index queries of a document's group "
        "(the peers, which cache documents only, are skipped) (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="worker threads (default: %(default)s)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION_S,
        help="measured seconds per backend (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="unmeasured seconds before each backend's window (default: "
        f"{AUTO_WARMUP_SHARE:g} x --duration, at most {MAX_AUTO_WARMUP_S:g})",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=DEFAULT_LATENCY_MS,
        help="added before every DynamoDB request: the network round trip loopback lacks "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="uniform random extra latency, 0 to this"
    )
    parser.add_argument(
        "--backends",
        default=DEFAULT_BACKENDS,
        help="comma-separated (default: %(default)s; also: dax, amazon-dax-client against a "
        "local DAX node in front of the same DynamoDB)",
    )
    parser.add_argument(
        "--redis-url",
        help="Redis for dogpile/redis/tiered (else $REDIS_URL, else a redis-server started "
        "for the run)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument("--chart", metavar="FILE.png", help="write a latency and throughput chart")
    parser.add_argument(
        "--aws",
        action="store_true",
        help="allow real AWS DynamoDB (creates a table, billed per request; deleted at the end)",
    )
    # Also accepted after `bench`; SUPPRESS keeps the global option's value when absent here.
    parser.add_argument(
        "--endpoint-url", default=argparse.SUPPRESS, help="DynamoDB endpoint (as the global option)"
    )


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Validate the parsed arguments (`ValidationError` names the bad one)."""
    try:
        spec = WorkloadSpec(
            keys=args.keys,
            doc_size=args.doc_size,
            zipf=args.zipf,
            read_ratio=args.read_ratio,
            kind=getattr(args, "workload", "documents"),
        )
        warmup = args.warmup
        if warmup is None:
            warmup = min(MAX_AUTO_WARMUP_S, AUTO_WARMUP_SHARE * args.duration)
        run = RunConfig(threads=args.threads, duration_s=args.duration, warmup_s=warmup)
        LatencyInjector(args.latency_ms, args.jitter_ms)  # validates both
    except ValueError as exc:
        raise ValidationError(f"gateway bench: {exc}") from exc
    backends = tuple(dict.fromkeys(b.strip() for b in args.backends.split(",") if b.strip()))
    unknown = [b for b in backends if b not in BACKENDS + OPTIONAL_BACKENDS]
    if unknown or not backends:
        raise ValidationError(
            f"--backends {args.backends!r}: expected a comma-separated list from "
            f"{DEFAULT_BACKENDS},{','.join(OPTIONAL_BACKENDS)}"
        )
    chart = Path(args.chart) if args.chart else None
    if chart is not None and chart.suffix.lower() != ".png":
        raise ValidationError(f"--chart {args.chart!r}: expected a .png file name")
    return BenchOptions(
        spec=spec,
        run=run,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        backends=backends,
        redis_url=args.redis_url,
        aws=bool(args.aws),
        json=bool(args.json),
        chart=chart,
    )


def choose_target(
    settings: Settings, *, aws: bool, environ: Mapping[str, str] | None = None
) -> str:
    """``"embedded"``, ``"endpoint"`` or ``"aws"``; `ConfigError` when AWS is implied, not asked.

    The bench never reaches real AWS unless ``--aws`` says so: an endpoint on an AWS domain or
    ``GATEWAY_USE_AWS=1`` without it is refused, with the way out in the message.
    """
    environ = os.environ if environ is None else environ
    endpoint = settings.DYNAMODB_ENDPOINT_URL
    if endpoint:
        host = (urlsplit(endpoint).hostname or "").lower()
        if host.endswith(AWS_HOST_SUFFIXES) and not aws:
            raise ConfigError(
                f"the endpoint {endpoint} is real AWS DynamoDB: gateway bench creates a table "
                "there and every request is billed. Pass --aws to run it there on purpose, or "
                "drop the endpoint to use the embedded emulator."
            )
        return "endpoint"
    if aws:
        return "aws"
    if environ.get("GATEWAY_USE_AWS") == "1":
        raise ConfigError(
            "GATEWAY_USE_AWS=1, but gateway bench runs on real AWS DynamoDB only with --aws "
            "(it creates a table and every request is billed). Pass --aws to run it there on "
            "purpose, or unset GATEWAY_USE_AWS to use the embedded emulator."
        )
    return "embedded"


def run_bench(args: argparse.Namespace) -> int:
    """Run ``gateway bench``; print the table (or JSON) and write the chart; exit code."""
    from gateway.cli import _settings

    options = options_from_args(args)
    base = _settings(args)
    target = choose_target(base, aws=options.aws)
    if options.chart is not None:
        check_chart_support()
    notes = Console(stderr=True, highlight=False)
    token = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={"DYNAMODB_TABLE_PREFIX": f"{base.DYNAMODB_TABLE_PREFIX}bench-{token}-"}
    )
    skipped: dict[str, str] = {}
    if options.spec.kind == "query":
        settings = _with_query_index(settings, options.spec.collection)
        for peer in PEERS:
            if peer in options.backends:
                skipped[peer] = "it caches documents only, not query answers"
                notes.print(f"[yellow]note:[/yellow] skipping {peer}: {skipped[peer]}")
    if "dogpile" in options.backends and "dogpile" not in skipped:
        missing = dogpile_missing()
        if missing is not None:
            skipped["dogpile"] = missing
            notes.print(f"[yellow]note:[/yellow] skipping dogpile: {missing}")
    with contextlib.ExitStack() as stack:
        settings, where = stack.enter_context(_dynamodb(settings, target, notes))
        redis_url = None
        if REDIS_BACKENDS.intersection(b for b in options.backends if b not in skipped):
            redis_url = _redis(options, base, stack, notes, skipped)
            if redis_url is not None:
                root = f"{base.REDIS_KEY_PREFIX}bench-{token}-"
                stack.callback(_delete_redis_keys, redis_url, root, notes)
        backends = [b for b in options.backends if b not in skipped]
        if target != "embedded":
            stack.callback(_delete_table, settings, options.spec.collection, notes)
        acknowledged = _preload(settings, options.spec, notes)
        runs = _run_backends(
            backends,
            settings,
            options,
            redis_url,
            f"{base.REDIS_KEY_PREFIX}bench-{token}-",
            notes,
            acknowledged,
        )
    item_bytes = _item_bytes(options.spec)
    rows = build_rows(runs, item_bytes=item_bytes, consistent=settings.DYNAMODB_CONSISTENT_READ)
    title = _title(options, where)
    if options.json:
        document = as_json(
            rows,
            workload=_workload(options),
            target=where,
            item_bytes=item_bytes,
            skipped=skipped,
        )
        print(json.dumps(document, indent=2))
    else:
        Console(highlight=False).print(table(rows, title))
        for row in rows:
            if row.first_error:
                notes.print(
                    f"[yellow]{row.backend}: {row.errors} errors, first: {row.first_error}[/yellow]"
                )
    if options.chart is not None:
        path = write_chart(runs, options.chart, title)
        notes.print(f"chart written to {path}")
    return 0


@contextlib.contextmanager
def _dynamodb(settings: Settings, target: str, notes: Console) -> Iterator[tuple[Settings, str]]:
    """Settings pointing at the target, and a description of it; the emulator runs inside."""
    if target == "endpoint":
        yield settings, f"endpoint {settings.DYNAMODB_ENDPOINT_URL}"
        return
    if target == "aws":
        notes.print(
            f"[bold yellow]real AWS DynamoDB[/bold yellow] in {settings.DYNAMODB_REGION}: "
            f"table {settings.DYNAMODB_TABLE_PREFIX}… (on-demand, deleted at the end)"
        )
        yield settings, f"AWS DynamoDB {settings.DYNAMODB_REGION}"
        return
    from gateway.emulator import EmbeddedDynamoDB, ensure_dummy_credentials

    ensure_dummy_credentials()
    started = time.monotonic()
    with EmbeddedDynamoDB() as emulator:
        notes.print(
            f"[dim]embedded DynamoDB emulator at {emulator.endpoint_url} "
            f"(started in {time.monotonic() - started:.1f} s)[/dim]"
        )
        yield (
            settings.model_copy(update={"DYNAMODB_ENDPOINT_URL": emulator.endpoint_url}),
            "embedded emulator (moto, loopback)",
        )


def _redis(
    options: BenchOptions,
    settings: Settings,
    stack: contextlib.ExitStack,
    notes: Console,
    skipped: dict[str, str],
) -> str | None:
    """The Redis URL for the run, or None (the Redis backends recorded in ``skipped``)."""
    wanted = [b for b in options.backends if b in REDIS_BACKENDS and b not in skipped]

    def skip(reason: str) -> None:
        for backend in wanted:
            skipped[backend] = reason
        names = " and ".join([", ".join(wanted[:-1]), wanted[-1]] if wanted[:-1] else wanted)
        notes.print(f"[yellow]note:[/yellow] skipping {names}: {reason}")

    try:
        import redis
    except ImportError:
        skip(f"redis-py is not installed ({INSTALL_REDIS_HINT})")
        return None
    url = options.redis_url
    if url is None and "REDIS_URL" in settings.model_fields_set:
        url = settings.REDIS_URL
    if url is not None:
        try:
            client = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_PING_TIMEOUT_S,
                socket_connect_timeout=REDIS_PING_TIMEOUT_S,
            )
            with contextlib.closing(client):
                client.ping()
        except (redis.RedisError, ValueError, OSError) as exc:
            skip(f"the Redis at {_redacted(url)} did not answer PING ({exc})")
            return None
        return url
    from gateway.bench.local_redis import LocalRedis, redis_server_binary

    if redis_server_binary() is None:
        skip("no Redis given (--redis-url, REDIS_URL) and no redis-server on PATH")
        return None
    server = stack.enter_context(LocalRedis())
    notes.print(f"[dim]redis-server started for the run at {server.url}[/dim]")
    return server.url


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _delete_redis_keys(url: str, root: str, notes: Console) -> None:
    """Remove every key the run stored under its own prefix."""
    try:
        from gateway.caches.redis_cache import RedisCache

        with RedisCache(url, key_prefix="", timeout_s=REDIS_PING_TIMEOUT_S, probe=False) as cache:
            cache.delete_prefix(root)
    except Exception as exc:
        notes.print(f"[yellow]note:[/yellow] could not delete the keys under {root!r}: {exc}")


def _delete_table(settings: Settings, collection: str, notes: Console) -> None:
    """Delete the bench's table on a configured endpoint or AWS (its prefix is the run's)."""
    try:
        with build_dynamodb_service(settings) as service:
            name = service.table_name(collection)
            client = service.control_client
            service.control_call("DeleteTable", name, lambda: client.delete_table(TableName=name))
    except Exception as exc:
        notes.print(f"[yellow]note:[/yellow] could not delete the bench table: {exc}")


def _preload(settings: Settings, spec: WorkloadSpec, notes: Console) -> dict[str, int]:
    """Load every document once (no added latency), shared by all backends; the generation of
    each revision saved (the first baseline of the stale-read check)."""
    started = time.monotonic()
    generations: dict[str, int] = {}
    with build_dynamodb_service(settings) as service:
        for start in range(0, spec.keys, PRELOAD_BATCH):
            stop = min(spec.keys, start + PRELOAD_BATCH)
            revs = service.save_many(
                spec.collection,
                {key_name(i): make_document(i, spec.doc_size) for i in range(start, stop)},
            )
            for doc_id, rev in revs.items():
                generation = parse_generation(rev)
                if generation is not None:
                    generations[doc_id] = generation
    notes.print(
        f"[dim]loaded {spec.keys:,} documents of {spec.doc_size:,} bytes in "
        f"{time.monotonic() - started:.1f} s[/dim]"
    )
    return generations


def _run_backends(
    backends: Sequence[str],
    settings: Settings,
    options: BenchOptions,
    redis_url: str | None,
    redis_root: str,
    notes: Console,
    acknowledged: Mapping[str, int] | None = None,
) -> list[BackendRun]:
    """Run each backend in turn; each inherits the generations the previous ones acknowledged
    (they share the table), so its stale-read check starts from the table's true state."""
    runs: list[BackendRun] = []
    span = options.run.warmup_s + options.run.duration_s
    progress = Progress(
        TextColumn("{task.description:<7}"),
        BarColumn(),
        TextColumn("{task.fields[status]:>18}"),
        TimeRemainingColumn(),
        console=notes,
        # Not with --json, nor into a log file or a pipe, where a bar is only noise.
        disable=options.json or not notes.is_terminal,
    )
    with progress:
        for name in backends:
            task = progress.add_task(name, total=span, status="starting")

            def report(phase: str, done: float, ops: int, task: Any = task) -> None:
                if phase == "warm-up":
                    progress.update(task, completed=done * options.run.warmup_s, status="warm-up")
                else:
                    completed = options.run.warmup_s + done * options.run.duration_s
                    progress.update(task, completed=completed, status=f"{ops:,} ops")

            run = _run_one(
                name, settings, options, redis_url, redis_root + name + ":", report, acknowledged
            )
            runs.append(run)
            acknowledged = run.acknowledged
            progress.update(task, completed=span, status=f"{run.ops_per_s:,.0f} ops/s")
    return runs


def _run_one(
    name: str,
    settings: Settings,
    options: BenchOptions,
    redis_url: str | None,
    redis_prefix: str,
    report: Any,
    acknowledged: Mapping[str, int] | None = None,
) -> BackendRun:
    """Build one backend, drive it, close it."""
    meter = RequestMeter()
    if name == "dax":
        return _run_dax(settings, options, meter, report, acknowledged)
    service = build_dynamodb_service(settings)
    clients = service_clients(service)
    LatencyInjector(options.latency_ms, options.jitter_ms).attach(clients)
    meter.attach(clients)
    target: Any = service
    policy = settings.cache_policy(options.spec.collection)
    if name == "naive":
        target = NaiveCache(service, ttl_s=policy.ttl_s, max_items=policy.max_items)
    elif name == "dogpile":
        if redis_url is None:  # skipped before: no Redis
            service.close()
            raise RuntimeError("dogpile needs a Redis URL")
        try:
            target = DogpileCache(
                service, redis_url=redis_url, key_prefix=redis_prefix, ttl_s=policy.ttl_s
            )
        except BaseException:
            service.close()
            raise
    elif name != "bare":
        update: dict[str, Any] = {"CACHE_BACKEND": name}
        if redis_url is not None:
            update.update(REDIS_URL=redis_url, REDIS_KEY_PREFIX=redis_prefix)
        cache_settings = settings.model_copy(update=update)
        try:
            cache = build_cache(cache_settings)
        except BaseException:
            service.close()
            raise
        wait_healthy = getattr(cache, "wait_healthy", None)
        if callable(wait_healthy):
            wait_healthy(TIERED_READY_TIMEOUT_S)
        target = build_gateway(cache_settings, service, cache)
    with target:
        return run_backend(
            name,
            target,
            options.spec,
            options.run,
            items=meter.items,
            has_cache=name != "bare",
            progress=report,
            acknowledged=acknowledged,
        )


def _run_dax(
    settings: Settings,
    options: BenchOptions,
    meter: RequestMeter,
    report: Any,
    acknowledged: Mapping[str, int] | None,
) -> BackendRun:
    """The ``dax`` backend: amazon-dax-client against a local DAX node (our emulator of the
    protocol and of DAX's caches) in front of the same DynamoDB endpoint. The added latency
    and the request meter are on the node's DynamoDB client: what the cluster asks DynamoDB."""

    from gateway.dax import build_dax_service
    from gateway.dax_emulator import DaxEmulator

    if settings.DYNAMODB_ENDPOINT_URL is None:
        raise ValidationError(
            "gateway bench: the dax backend runs a local DAX node in front of a DynamoDB "
            "endpoint: use the embedded emulator or --endpoint-url, not --aws"
        )
    upstream = new_session().client(
        "dynamodb",
        region_name=settings.DYNAMODB_REGION,
        endpoint_url=settings.DYNAMODB_ENDPOINT_URL,
        config=botocore_config(
            settings.DYNAMODB_CONNECT_TIMEOUT_S,
            settings.DYNAMODB_READ_TIMEOUT_S,
            settings.DYNAMODB_MAX_POOL_CONNECTIONS,
        ),
    )
    LatencyInjector(options.latency_ms, options.jitter_ms).attach([upstream])
    meter.attach([upstream])
    policy = settings.cache_policy(options.spec.collection)
    with DaxEmulator(
        settings.DYNAMODB_ENDPOINT_URL,
        region=settings.DYNAMODB_REGION,
        record_ttl_s=policy.ttl_s,
        query_ttl_s=policy.ttl_s,
        dynamodb_client=upstream,
    ) as node:
        dax_settings = settings.model_copy(
            update={"CACHE_BACKEND": "dax", "DAX_ENDPOINT_URL": node.endpoint_url}
        )
        with build_dax_service(dax_settings) as service:
            return run_backend(
                "dax",
                _DaxAsSeenByTheNode(service, node),
                options.spec,
                options.run,
                items=meter.items,
                has_cache=True,
                progress=report,
                acknowledged=acknowledged,
            )


class _DaxAsSeenByTheNode:
    """The DAX service, with the figures only the node knows in ``stats()``: its item cache's
    hits and misses (the client counts none) and the calls it made to DynamoDB (the client's
    ``db_calls`` are its calls to DAX)."""

    def __init__(self, service: Any, node: Any) -> None:
        self._service = service
        self._node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def stats(self) -> dict[str, Any]:
        node = self._node.data.stats()
        return {
            **self._service.stats(),
            "hits": node["item_cache"]["hits"],
            "misses": node["item_cache"]["misses"],
            "db_calls": dict(node["upstream_calls"]),
        }


def _with_query_index(settings: Settings, collection: str) -> Settings:
    """``settings`` with the ``query`` workload's index declared on ``collection``."""
    collections = {name: c.model_dump() for name, c in settings.COLLECTIONS.items()}
    declared = collections.setdefault(collection, {})
    indexes = dict(declared.get("indexes") or {})
    indexes[QUERY_INDEX] = {"attribute": QUERY_ATTRIBUTE, "type": "S"}
    declared["indexes"] = indexes
    return Settings.model_validate({**settings.model_dump(), "COLLECTIONS": collections})


def _item_bytes(spec: WorkloadSpec) -> int:
    """Mean stored size of the documents, with ``_id`` and a revision, by DynamoDB's rules."""
    rev = "1" * 16 + "-" + "0" * 32
    sample = range(0, spec.keys, max(1, spec.keys // 100))
    sizes = [
        item_size({**make_document(i, spec.doc_size), "_id": key_name(i), "_rev": rev})
        for i in sample
    ]
    return round(sum(sizes) / len(sizes))


def _workload(options: BenchOptions) -> dict[str, Any]:
    spec, run = options.spec, options.run
    return {
        "kind": spec.kind,
        "keys": spec.keys,
        "doc_size": spec.doc_size,
        "zipf": spec.zipf,
        "read_ratio": spec.read_ratio,
        "threads": run.threads,
        "duration_s": run.duration_s,
        "warmup_s": run.warmup_s,
        "latency_ms": options.latency_ms,
        "jitter_ms": options.jitter_ms,
        "backends": list(options.backends),
    }


def _title(options: BenchOptions, where: str) -> str:
    spec, run = options.spec, options.run
    latency = f"+{options.latency_ms:g} ms"
    if options.jitter_ms:
        latency += f" (+0 to {options.jitter_ms:g} ms jitter)"
    reads = "reads" if spec.kind == "documents" else f"index queries (of {QUERY_INDEX})"
    return (
        f"gateway bench on {where}: {spec.keys:,} keys, {spec.doc_size:,}-byte documents, "
        f"zipf {spec.zipf:g}, {spec.read_ratio:.0%} {reads}, {run.threads} threads, "
        f"{run.duration_s:g} s per backend, {latency} per DynamoDB request"
    )
