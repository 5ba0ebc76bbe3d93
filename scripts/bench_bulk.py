"""Items per second of bulk writes, imports and copies beside boto3's ``Table.batch_writer()``.

One run, one emulator: for each added latency (0 and 5 ms by default), N documents (20,000 of
about 1 KB by default) go through five ways of writing, each beside batch_writer doing the
same work from one thread:

============================  ==============================================================
gateway                       batch_writer
============================  ==============================================================
``save_many``                 ``put_item`` of the same items
``delete_many``               ``delete_item`` of the same keys
``import_lines`` (plain)      ``json.loads`` of each line, then ``put_item``
``import_lines(into_empty)``  the same (one run of it serves both import rows)
``copy_collection``           a plain ``Scan`` of the source (1 MB pages, one thread), then
                              ``put_item`` of every item into the target
============================  ==============================================================

``save_many`` / ``delete_many`` run with ``bulk.max_in_flight`` requests in flight (8 by
default); the import (`gateway.migrate.import_lines`, what ``gateway import`` runs, fed an
in-memory list of JSON lines) with its default ``max_in_flight`` (8 batches of 100 at once),
plainly and with ``into_empty=True`` (no revision reads); the copy
(`gateway.migrate.copy_collection`, what ``gateway copy`` runs) from one table prefix to
another on the same emulator with its default ``max_in_flight`` and ``segments`` (8 and 4).
With ``--sequential bulk`` a "gateway x1" column adds ``save_many`` / ``delete_many`` with one
request at a time; with ``--sequential all``, also the import and the copy with one batch at a
time (and one scan segment), as they ran before they were pipelined (off by default: each
lengthens the run). Every import and copy writes into a table
created (untimed) just before, and dropped after. Each figure is the number of documents
divided by the wall time of the one call (the median over ``--repeat`` runs), and the ratio
is the gateway's over batch_writer's. A second table gives, for each figure, the call's wall
time and how busy each side was during it: this process's CPU time and the emulator's (read
from ``/proc``) over the wall time, 100 % being one core all the time. On this 2-core machine
the client and the emulator share the cores: a figure whose emulator column is near 100 % measures the emulator,
not the client, and no client-side change can raise it.

The latency is added in the client, before every request leaves (botocore's ``before-send``,
`gateway.bench.latency.LatencyInjector`), on the service's clients and on batch_writer's client
alike: it stands for the network round trip to DynamoDB that loopback lacks, without the CPU a
proxy would cost.

What the two do differently: ``save_many`` (and so an import or a copy) first reads the stored
revisions of its documents (one strongly consistent BatchGetItem per batch of up to 100 ids,
projected to ``_id`` and ``_rev``) so that every document's generation goes above the stored
one, and writes a ``_rev`` with each item; ``into_empty`` skips that read. batch_writer puts the
items as given, one BatchWriteItem of 25 at a time, from the calling thread. ``delete_many``
reads nothing.

Usage::

    python scripts/bench_bulk.py                         # 20,000 docs, 0 and 5 ms, moto
    python scripts/bench_bulk.py --docs 2000             # a quick check
    python scripts/bench_bulk.py --docs 5000 --latency-ms 5 --repeat 3 --sequential all
    python scripts/bench_bulk.py --rows copy --copy-page-size 1000   # a what-if, see below
    python scripts/bench_bulk.py --emulator dynalite     # Node.js emulator (npm, first use)

moto (the default, embedded) is a Python process that spends milliseconds of CPU per request
and per item, and applies one request at a time; on a small machine it, not the client, is the
bottleneck, which caps every figure here and so the ratio as well. Its Scan also sorts and
walks the whole table for every page (and hashes every item's key for a segment), so small
scan pages cost it far more than a hand scan's 1 MB pages; DynamoDB has no such cost. The copy
reads pages of ``max(batch_size, gateway.migrate.COPY_PAGE_SIZE)`` (1,000) items;
``--copy-page-size N`` shows what pages of ``N`` items would give (it swaps that constant for
the copy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import boto3
from bench_coalescing import emulator_process
from bench_streams import cpu_seconds

import gateway.migrate
from gateway.bench.latency import LatencyInjector, service_clients
from gateway.bulk import DEFAULT_MAX_IN_FLIGHT
from gateway.dynamodb import DynamoDBService
from gateway.emulator import DUMMY_REGION, ensure_dummy_credentials
from gateway.migrate import DEFAULT_MAX_IN_FLIGHT as DEFAULT_MIGRATE_IN_FLIGHT
from gateway.migrate import DEFAULT_SEGMENTS, copy_collection, import_lines
from gateway.retry import RetryPolicy, botocore_config

DB = "bulk"
DEFAULT_DOCS = 20_000
DEFAULT_DOC_SIZE = 1024
DEFAULT_LATENCIES_MS = (0.0, 5.0)
#: HTTP connections of every client here: above any in-flight count the run uses.
POOL_CONNECTIONS = 50
#: Table prefix of the copy's source, filled once per run (no latency, untimed).
SOURCE_PREFIX = "src-"

#: The rows of the table, in order: (operation key, label).
OPERATIONS = (
    ("save", "save_many"),
    ("delete", "delete_many"),
    ("import", "import"),
    ("import_empty", "import --into-empty"),
    ("copy", "copy"),
)
#: The groups of rows ``--rows`` picks from, and their operations.
ROWS = {
    "bulk": ("save", "delete"),
    "import": ("import", "import_empty"),
    "copy": ("copy",),
}
#: Which operations get a "gateway x1" figure, per ``--sequential``.
SEQUENTIAL = {
    "none": (),
    "bulk": ("save", "delete"),
    "all": ("save", "delete", "import", "import_empty", "copy"),
}


def documents(count: int, size: int) -> dict[str, dict[str, Any]]:
    """``count`` documents of about ``size`` bytes each (a padding string and a number)."""
    pad = "x" * max(0, size - 40)
    return {f"doc-{i:07d}": {"n": i, "pad": pad} for i in range(count)}


def json_lines(docs: dict[str, dict[str, Any]]) -> list[str]:
    """The documents as an import file holds them: one plain JSON object a line."""
    return [
        json.dumps({"_id": doc_id, **doc}, separators=(",", ":")) for doc_id, doc in docs.items()
    ]


@dataclass(frozen=True)
class Timing:
    """One timed call: documents per second, and how busy the two sides were meanwhile (CPU
    seconds over wall seconds; 1.0 is one core all the time)."""

    documents: int
    wall_s: float
    client_busy: float
    emulator_busy: float | None  # None where the emulator's CPU cannot be read (not Linux)

    @property
    def rate(self) -> float:
        return self.documents / self.wall_s


@dataclass(frozen=True)
class Figure:
    """One way of writing: the median of its runs."""

    name: str
    operation: str
    latency_ms: float
    timings: list[Timing]

    @property
    def items_per_s(self) -> float:
        return statistics.median(t.rate for t in self.timings)

    @property
    def wall_s(self) -> float:
        return statistics.median(t.wall_s for t in self.timings)

    @property
    def client_busy(self) -> float:
        return statistics.median(t.client_busy for t in self.timings)

    @property
    def emulator_busy(self) -> float | None:
        busy = [t.emulator_busy for t in self.timings if t.emulator_busy is not None]
        return statistics.median(busy) if busy else None


#: The emulator's process id, set by `main` once it runs (for `timed`).
EMULATOR_PID: int | None = None


def process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system, every thread) another process has used, from /proc; None
    where that cannot be read."""
    return None if pid is None else cpu_seconds(f"/proc/{pid}/stat")


def timed(count: int, call: Callable[[], object]) -> Timing:
    """The rate of one call that writes ``count`` documents, with the CPU this process and the
    emulator used meanwhile: which side was the bottleneck (a side near 100 % is)."""
    emulator_before = process_cpu_s(EMULATOR_PID)
    cpu_before = time.process_time()
    started = time.perf_counter()
    call()
    wall = time.perf_counter() - started
    client = (time.process_time() - cpu_before) / wall
    emulator_after = process_cpu_s(EMULATOR_PID)
    emulator = (
        None
        if emulator_before is None or emulator_after is None
        else (emulator_after - emulator_before) / wall
    )
    return Timing(count, wall, client, emulator)


def new_service(endpoint_url: str, prefix: str, max_in_flight: int) -> DynamoDBService:
    return DynamoDBService(
        endpoint_url=endpoint_url,
        table_prefix=prefix,
        retry_policy=RetryPolicy(),
        max_pool_connections=POOL_CONNECTIONS,
        bulk_max_in_flight=max_in_flight,
    )


@contextmanager
def gateway_service(endpoint_url: str, prefix: str, max_in_flight: int) -> Iterator[Any]:
    with new_service(endpoint_url, prefix, max_in_flight) as svc:
        svc.ensure_table(DB)
        yield svc


def drop_table(svc: DynamoDBService, db_name: str) -> None:
    """Delete a table the run made (untimed), so the emulator does not keep every copy."""
    svc.control_client.delete_table(TableName=svc.table_name(db_name))


def boto3_resource(endpoint_url: str, latency_ms: float) -> Any:
    """A boto3 resource as a hand-written script would make it, with the added latency."""
    resource = boto3.resource(
        "dynamodb",
        region_name=DUMMY_REGION,
        endpoint_url=endpoint_url,
        config=botocore_config(2.0, 5.0, POOL_CONNECTIONS),
    )
    LatencyInjector(latency_ms=latency_ms).attach([resource.meta.client])
    return resource


# -- save_many / delete_many -------------------------------------------------------------------


def run_gateway(
    endpoint_url: str,
    docs: dict[str, dict[str, Any]],
    latency_ms: float,
    max_in_flight: int,
    repeat: int,
) -> tuple[list[Timing], list[Timing]]:
    """Rates of ``save_many`` then ``delete_many`` of every document, ``repeat`` times."""
    saves: list[Timing] = []
    deletes: list[Timing] = []
    with gateway_service(endpoint_url, f"gw{max_in_flight}-{latency_ms:g}-", max_in_flight) as svc:
        LatencyInjector(latency_ms=latency_ms).attach(service_clients(svc))
        ids = list(docs)

        def save_all() -> None:
            revs = svc.save_many(DB, docs)
            assert len(revs) == len(docs)

        for _ in range(repeat):
            saves.append(timed(len(docs), save_all))
            deletes.append(timed(len(docs), lambda: svc.delete_many(DB, ids)))
        drop_table(svc, DB)
    return saves, deletes


def run_batch_writer(
    endpoint_url: str, docs: dict[str, dict[str, Any]], latency_ms: float, repeat: int
) -> tuple[list[Timing], list[Timing]]:
    """Rates of ``Table.batch_writer()`` putting, then deleting, every document."""
    prefix = f"bw-{latency_ms:g}-"
    # The table is created like the gateway's (key `_id`, on-demand), then left to boto3.
    with gateway_service(endpoint_url, prefix, 1):
        pass
    resource = boto3_resource(endpoint_url, latency_ms)
    table = resource.Table(prefix + DB)
    items = [{"_id": doc_id, **doc} for doc_id, doc in docs.items()]

    def put_all() -> None:
        with table.batch_writer() as writer:
            for item in items:
                writer.put_item(Item=item)

    def delete_all() -> None:
        with table.batch_writer() as writer:
            for doc_id in docs:
                writer.delete_item(Key={"_id": doc_id})

    saves: list[Timing] = []
    deletes: list[Timing] = []
    try:
        for _ in range(repeat):
            saves.append(timed(len(docs), put_all))
            deletes.append(timed(len(docs), delete_all))
        table.delete()
    finally:
        resource.meta.client.close()
    return saves, deletes


# -- import ------------------------------------------------------------------------------------


def run_import(
    endpoint_url: str,
    lines: Sequence[str],
    latency_ms: float,
    max_in_flight: int,
    into_empty: bool,
    repeat: int,
) -> list[Timing]:
    """Rates of ``import_lines`` of every line into an empty collection, ``repeat`` times."""
    rates: list[Timing] = []
    tag = f"imp{'e' if into_empty else 'p'}{max_in_flight}-{latency_ms:g}-"
    with new_service(endpoint_url, tag, DEFAULT_MAX_IN_FLIGHT) as svc:
        LatencyInjector(latency_ms=latency_ms).attach(service_clients(svc))
        for run in range(repeat):
            db = f"{DB}{run}"
            svc.ensure_table(db)

            def load(db: str = db) -> None:
                summary = import_lines(
                    svc, db, lines, into_empty=into_empty, max_in_flight=max_in_flight
                )
                assert summary.saved == len(lines) and summary.ok, summary.describe()

            rates.append(timed(len(lines), load))
            drop_table(svc, db)
    return rates


def run_batch_writer_import(
    endpoint_url: str, lines: Sequence[str], latency_ms: float, repeat: int
) -> list[Timing]:
    """Rates of a hand-written import: ``json.loads`` each line, ``batch_writer`` put it."""
    prefix = f"bwi-{latency_ms:g}-"
    rates: list[Timing] = []
    with new_service(endpoint_url, prefix, 1) as svc:
        resource = boto3_resource(endpoint_url, latency_ms)
        try:
            for run in range(repeat):
                db = f"{DB}{run}"
                svc.ensure_table(db)
                table = resource.Table(svc.table_name(db))

                def load(table: Any = table) -> None:
                    with table.batch_writer() as writer:
                        for line in lines:
                            writer.put_item(Item=json.loads(line, parse_float=Decimal))

                rates.append(timed(len(lines), load))
                drop_table(svc, db)
        finally:
            resource.meta.client.close()
    return rates


# -- copy --------------------------------------------------------------------------------------


def fill_source(endpoint_url: str, docs: dict[str, dict[str, Any]]) -> None:
    """The copy's source collection: every document, saved once (no latency, untimed)."""
    with gateway_service(endpoint_url, SOURCE_PREFIX, DEFAULT_MAX_IN_FLIGHT) as svc:
        svc.save_many(DB, docs, assume_new=True)


@contextmanager
def scan_page_size(size: int | None) -> Iterator[None]:
    """``--copy-page-size``, a what-if: the copy's scan pages of ``size`` items instead of
    ``max(batch_size, gateway.migrate.COPY_PAGE_SIZE)`` (the module's constant is swapped for
    the call; None leaves the gateway as it is)."""
    if size is None:
        yield
        return
    saved = gateway.migrate.COPY_PAGE_SIZE
    setattr(gateway.migrate, "COPY_PAGE_SIZE", size)  # noqa: B010 (a Final)
    try:
        yield
    finally:
        setattr(gateway.migrate, "COPY_PAGE_SIZE", saved)  # noqa: B010


def run_copy(
    endpoint_url: str,
    count: int,
    latency_ms: float,
    max_in_flight: int,
    segments: int,
    repeat: int,
    page_size: int | None = None,
) -> list[Timing]:
    """Rates of ``copy_collection`` of the source into an empty collection of another table
    prefix, ``repeat`` times (the latency on the source's requests and the target's)."""
    rates: list[Timing] = []
    with (
        scan_page_size(page_size),
        new_service(endpoint_url, SOURCE_PREFIX, DEFAULT_MAX_IN_FLIGHT) as source,
        new_service(
            endpoint_url, f"cp{max_in_flight}x{segments}-{latency_ms:g}-", DEFAULT_MAX_IN_FLIGHT
        ) as target,
    ):
        injector = LatencyInjector(latency_ms=latency_ms)
        injector.attach(service_clients(source) + service_clients(target))
        for run in range(repeat):
            db = f"{DB}{run}"
            target.ensure_table(db)

            def copy(db: str = db) -> None:
                summary = copy_collection(
                    source,
                    target,
                    DB,
                    target_db_name=db,
                    max_in_flight=max_in_flight,
                    segments=segments,
                )
                assert summary.documents == count, summary.describe()

            rates.append(timed(count, copy))
            drop_table(target, db)
    return rates


def run_batch_writer_copy(
    endpoint_url: str, count: int, latency_ms: float, repeat: int
) -> list[Timing]:
    """Rates of a hand-written copy: a plain Scan of the source, page after page, each item put
    into the target with ``batch_writer``, from one thread."""
    prefix = f"bwc-{latency_ms:g}-"
    rates: list[Timing] = []
    with new_service(endpoint_url, prefix, 1) as svc:
        resource = boto3_resource(endpoint_url, latency_ms)
        source = resource.Table(SOURCE_PREFIX + DB)
        try:
            for run in range(repeat):
                db = f"{DB}{run}"
                svc.ensure_table(db)
                target = resource.Table(svc.table_name(db))

                def copy(target: Any = target) -> None:
                    copied = 0
                    params: dict[str, Any] = {}
                    with target.batch_writer() as writer:
                        while True:
                            page = source.scan(**params)
                            for item in page["Items"]:
                                writer.put_item(Item=item)
                            copied += len(page["Items"])
                            if "LastEvaluatedKey" not in page:
                                break
                            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
                    assert copied == count, copied

                rates.append(timed(count, copy))
                drop_table(svc, db)
        finally:
            resource.meta.client.close()
    return rates


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What the gateway column ran with, for the table's legend."""

    in_flight: int
    import_in_flight: int
    segments: int
    copy_page_size: int | None


def print_table(figures: list[Figure], docs: int, size: int, where: str, setup: Setup) -> None:
    print(
        f"\nbulk writes, imports and copies: {docs:,} documents of ~{size:,} bytes, {where}; "
        "items/s (median of the runs); ratio = gateway / batch_writer\n"
    )
    header = (
        f"{'latency':>7}  {'operation':<20} {'gateway':>9} {'gateway x1':>11} "
        f"{'batch_writer':>12} {'ratio':>7} {'ratio x1':>9}"
    )
    print(header)
    print("-" * len(header))
    by_key = {(f.name, f.operation, f.latency_ms): f for f in figures}
    keyed = {key: f.items_per_s for key, f in by_key.items()}
    measured = {f.operation for f in figures}
    for latency in sorted({f.latency_ms for f in figures}):
        for operation, label in OPERATIONS:
            if operation not in measured:
                continue
            par = keyed[("parallel", operation, latency)]
            seq = keyed.get(("sequential", operation, latency))
            base = keyed[("batch_writer", operation, latency)]
            seq_rate = "-" if seq is None else f"{seq:,.0f}"
            seq_ratio = "-" if seq is None else f"{seq / base:.2f}x"
            print(
                f"{latency:>5g}ms  {label:<20} {par:>9,.0f} {seq_rate:>11} "
                f"{base:>12,.0f} {par / base:>6.2f}x {seq_ratio:>9}"
            )
    print_busy(by_key, measured)
    pages = (
        f"its scan pages of {gateway.migrate.COPY_PAGE_SIZE:,} items"
        if setup.copy_page_size is None
        else f"scan pages of {setup.copy_page_size} items (--copy-page-size, a what-if)"
    )
    print(
        f"\ngateway: save_many / delete_many with bulk.max_in_flight {setup.in_flight}; import "
        f"with max_in_flight {setup.import_in_flight} (batches of {gateway.migrate.DEFAULT_BATCH_SIZE}); copy with max_in_flight "
        f"{setup.import_in_flight}, {setup.segments} scan segments and {pages}.\n"
        "gateway x1: one request (save_many / delete_many) or one batch and one segment "
        "(import / copy) at a time.\n"
        "batch_writer: boto3 Table.batch_writer() from one thread; import: json.loads of each "
        "line, then put_item\n(one run for both import rows); copy: a plain Scan of the source "
        "(1 MB pages), then put_item of each item.\n"
    )


def print_busy(by_key: dict[tuple[str, str, float], Figure], measured: set[str]) -> None:
    """Each figure's call: its wall time, and how busy the client and the emulator were
    meanwhile (medians of the runs, each on its own): where the emulator is near 100 %, the
    figure measures the emulator, not the client."""
    print(
        "\nCPU busy during the call (CPU time / wall time; 100 % = one of the machine's "
        f"{os.cpu_count()} cores all the time;\nthe emulator's is counted in clock ticks of "
        f"{1000 / os.sysconf('SC_CLK_TCK'):g} ms: a call of well under a second reads coarsely)\n"
    )
    header = (
        f"{'latency':>7}  {'operation':<20} {'gateway':>8} {'client':>7} {'emulator':>9} "
        f"{'batch_writer':>13} {'client':>7} {'emulator':>9}"
    )
    print(header)
    print("-" * len(header))

    def percent(busy: float | None) -> str:
        return "-" if busy is None else f"{100 * busy:.0f}%"

    for latency in sorted({key[2] for key in by_key}):
        for operation, label in OPERATIONS:
            if operation not in measured:
                continue
            par = by_key[("parallel", operation, latency)]
            base = by_key[("batch_writer", operation, latency)]
            print(
                f"{latency:>5g}ms  {label:<20} {par.wall_s:>7.2f}s {percent(par.client_busy):>7} "
                f"{percent(par.emulator_busy):>9} {base.wall_s:>12.2f}s "
                f"{percent(base.client_busy):>7} {percent(base.emulator_busy):>9}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=DEFAULT_DOCS, help="documents per call")
    parser.add_argument("--doc-size", type=int, default=DEFAULT_DOC_SIZE, help="bytes each")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=list(DEFAULT_LATENCIES_MS),
        help="milliseconds added before every request, one run each (default: 0 5)",
    )
    parser.add_argument(
        "--rows",
        choices=sorted(ROWS),
        nargs="+",
        default=sorted(ROWS),
        help="which rows to measure: bulk (save_many, delete_many), import (both), copy "
        "(default: all)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="bulk.max_in_flight of the save_many / delete_many gateway column",
    )
    parser.add_argument(
        "--import-in-flight",
        type=int,
        default=DEFAULT_MIGRATE_IN_FLIGHT,
        help="max_in_flight (batches) of the import and copy gateway column (default "
        f"{DEFAULT_MIGRATE_IN_FLIGHT}, as gateway import / copy)",
    )
    parser.add_argument(
        "--segments",
        type=int,
        default=DEFAULT_SEGMENTS,
        help=f"scan segments of the copy (default {DEFAULT_SEGMENTS}, as gateway copy)",
    )
    parser.add_argument(
        "--copy-page-size",
        type=int,
        default=None,
        help="a what-if: the copy reads scan pages of this many items instead of the "
        "gateway's COPY_PAGE_SIZE, 1,000 (see the module docstring)",
    )
    parser.add_argument(
        "--sequential",
        choices=sorted(SEQUENTIAL),
        default="none",
        help="which rows also get a 'gateway x1' figure (one request, batch and segment at a "
        "time): none (default), save_many / delete_many (bulk), or every row (all); each "
        "adds to the run's length",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each call (median)")
    parser.add_argument(
        "--emulator",
        choices=["moto", "dynalite"],
        default="moto",
        help="moto (embedded, default) or dynalite (Node.js, installed with npm on first use)",
    )
    args = parser.parse_args(argv)
    if min(args.docs, args.repeat, args.max_in_flight, args.import_in_flight, args.segments) < 1:
        parser.error(
            "--docs, --repeat, --max-in-flight, --import-in-flight and --segments must be >= 1"
        )
    if args.copy_page_size is not None and args.copy_page_size < 1:
        parser.error("--copy-page-size must be >= 1")

    ensure_dummy_credentials()
    docs = documents(args.docs, args.doc_size)
    lines = json_lines(docs)
    sequential = SEQUENTIAL[args.sequential]
    rows = set(args.rows)
    figures: list[Figure] = []

    def note(name: str, operation: str, latency: float, timings: list[Timing]) -> None:
        figure = Figure(name, operation, latency, timings)
        figures.append(figure)
        print(
            f"  {latency:g} ms {name} {operation}: {figure.items_per_s:,.0f}/s",
            file=sys.stderr,
        )

    global EMULATOR_PID
    started = time.perf_counter()
    with emulator_process(args.emulator) as (endpoint_url, EMULATOR_PID):
        if "copy" in rows:
            fill_source(endpoint_url, docs)
        for latency in args.latency_ms:
            if "bulk" in rows:
                measure_bulk(endpoint_url, docs, latency, args, sequential, note)
            if "import" in rows:
                measure_import(endpoint_url, lines, latency, args, sequential, note)
            if "copy" in rows:
                measure_copy(endpoint_url, len(docs), latency, args, sequential, note)
    where = f"{args.emulator} ({'embedded' if args.emulator == 'moto' else 'Node.js'}, loopback)"
    setup = Setup(args.max_in_flight, args.import_in_flight, args.segments, args.copy_page_size)
    print_table(figures, args.docs, args.doc_size, where, setup)
    print(f"(the whole run took {time.perf_counter() - started:.0f} s)\n")
    return 0


Note = Callable[[str, str, float, list[Timing]], None]


def measure_bulk(
    endpoint_url: str,
    docs: dict[str, dict[str, Any]],
    latency: float,
    args: argparse.Namespace,
    sequential: Sequence[str],
    note: Note,
) -> None:
    for name in ("parallel", "sequential", "batch_writer"):
        if name == "sequential" and "save" not in sequential:
            continue
        if name == "batch_writer":
            saves, deletes = run_batch_writer(endpoint_url, docs, latency, args.repeat)
        else:
            in_flight = args.max_in_flight if name == "parallel" else 1
            saves, deletes = run_gateway(endpoint_url, docs, latency, in_flight, args.repeat)
        note(name, "save", latency, saves)
        note(name, "delete", latency, deletes)


def measure_import(
    endpoint_url: str,
    lines: Sequence[str],
    latency: float,
    args: argparse.Namespace,
    sequential: Sequence[str],
    note: Note,
) -> None:
    for name in ("parallel", "sequential"):
        if name == "sequential" and "import" not in sequential:
            continue
        in_flight = args.import_in_flight if name == "parallel" else 1
        for operation, into_empty in (("import", False), ("import_empty", True)):
            rates = run_import(endpoint_url, lines, latency, in_flight, into_empty, args.repeat)
            note(name, operation, latency, rates)
    rates = run_batch_writer_import(endpoint_url, lines, latency, args.repeat)
    note("batch_writer", "import", latency, rates)
    note("batch_writer", "import_empty", latency, rates)  # the same work: one run serves both


def measure_copy(
    endpoint_url: str,
    count: int,
    latency: float,
    args: argparse.Namespace,
    sequential: Sequence[str],
    note: Note,
) -> None:
    for name in ("parallel", "sequential"):
        if name == "sequential" and "copy" not in sequential:
            continue
        in_flight, segments = (
            (args.import_in_flight, args.segments) if name == "parallel" else (1, 1)
        )
        rates = run_copy(
            endpoint_url, count, latency, in_flight, segments, args.repeat, args.copy_page_size
        )
        note(name, "copy", latency, rates)
    rates = run_batch_writer_copy(endpoint_url, count, latency, args.repeat)
    note("batch_writer", "copy", latency, rates)


if __name__ == "__main__":
    raise SystemExit(main())
