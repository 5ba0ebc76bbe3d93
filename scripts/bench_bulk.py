"""Items per second of ``save_many`` / ``delete_many`` beside boto3's ``Table.batch_writer()``.

One run, one emulator: for each added latency (0 and 5 ms by default), N documents (20,000 of
about 1 KB by default) are saved with ``DynamoDBService.save_many`` and then deleted with
``delete_many``, once with ``bulk.max_in_flight`` requests in flight (8 by default) and once
with 1 (how ``save_many`` worked before it went parallel); the same documents are put and then
deleted through boto3's ``Table.batch_writer()`` on a table of their own. Each figure is the
number of documents divided by the wall time of the one call (the median over ``--repeat``
runs), and the ratio is the gateway's over batch_writer's.

The latency is added in the client, before every request leaves (botocore's ``before-send``,
`gateway.bench.latency.LatencyInjector`), on the service's clients and on batch_writer's client
alike: it stands for the network round trip to DynamoDB that loopback lacks, without the CPU a
proxy would cost.

What the two do differently: ``save_many`` first reads the stored revisions of its documents
(one strongly consistent BatchGetItem per 100 ids, projected to ``_id`` and ``_rev``) so that
every document's generation goes above the stored one, and writes a ``_rev`` with each item;
batch_writer puts the items as given, one BatchWriteItem of 25 at a time, from the calling
thread. ``delete_many`` reads nothing.

Usage::

    python scripts/bench_bulk.py                         # 20,000 docs, 0 and 5 ms, moto
    python scripts/bench_bulk.py --docs 5000 --latency-ms 5 --repeat 3
    python scripts/bench_bulk.py --emulator dynalite     # Node.js emulator (npm, first use)

moto (the default, embedded) is a Python process that spends milliseconds of CPU per request
and per item; on a small machine it, not the client, is the bottleneck, which caps every figure
here and so the ratio as well.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import boto3
from bench_coalescing import emulator as start_emulator

from gateway.bench.latency import LatencyInjector, service_clients
from gateway.bulk import DEFAULT_MAX_IN_FLIGHT
from gateway.dynamodb import DynamoDBService
from gateway.emulator import DUMMY_REGION, ensure_dummy_credentials
from gateway.retry import RetryPolicy, botocore_config

DB = "bulk"
DEFAULT_DOCS = 20_000
DEFAULT_DOC_SIZE = 1024
DEFAULT_LATENCIES_MS = (0.0, 5.0)
#: HTTP connections of every client here: above any in-flight count the run uses.
POOL_CONNECTIONS = 50


def documents(count: int, size: int) -> dict[str, dict[str, Any]]:
    """``count`` documents of about ``size`` bytes each (a padding string and a number)."""
    pad = "x" * max(0, size - 40)
    return {f"doc-{i:07d}": {"n": i, "pad": pad} for i in range(count)}


@dataclass(frozen=True)
class Figure:
    """The rate of one way of writing: documents per second, median of the runs."""

    name: str
    operation: str
    latency_ms: float
    rates: list[float]

    @property
    def items_per_s(self) -> float:
        return statistics.median(self.rates)


def timed(count: int, call: Callable[[], object]) -> float:
    """Documents per second of one call that writes ``count`` documents."""
    started = time.perf_counter()
    call()
    return count / (time.perf_counter() - started)


@contextmanager
def gateway_service(endpoint_url: str, prefix: str, max_in_flight: int) -> Iterator[Any]:
    with DynamoDBService(
        endpoint_url=endpoint_url,
        table_prefix=prefix,
        retry_policy=RetryPolicy(),
        max_pool_connections=POOL_CONNECTIONS,
        bulk_max_in_flight=max_in_flight,
    ) as svc:
        svc.ensure_table(DB)
        yield svc


def run_gateway(
    endpoint_url: str,
    docs: dict[str, dict[str, Any]],
    latency_ms: float,
    max_in_flight: int,
    repeat: int,
) -> tuple[list[float], list[float]]:
    """Rates of ``save_many`` then ``delete_many`` of every document, ``repeat`` times."""
    saves: list[float] = []
    deletes: list[float] = []
    with gateway_service(endpoint_url, f"gw{max_in_flight}-{latency_ms:g}-", max_in_flight) as svc:
        LatencyInjector(latency_ms=latency_ms).attach(service_clients(svc))
        ids = list(docs)

        def save_all() -> None:
            revs = svc.save_many(DB, docs)
            assert len(revs) == len(docs)

        for _ in range(repeat):
            saves.append(timed(len(docs), save_all))
            deletes.append(timed(len(docs), lambda: svc.delete_many(DB, ids)))
    return saves, deletes


def run_batch_writer(
    endpoint_url: str, docs: dict[str, dict[str, Any]], latency_ms: float, repeat: int
) -> tuple[list[float], list[float]]:
    """Rates of ``Table.batch_writer()`` putting, then deleting, every document."""
    prefix = f"bw-{latency_ms:g}-"
    # The table is created like the gateway's (key `_id`, on-demand), then left to boto3.
    with gateway_service(endpoint_url, prefix, 1):
        pass
    resource = boto3.resource(
        "dynamodb",
        region_name=DUMMY_REGION,
        endpoint_url=endpoint_url,
        config=botocore_config(2.0, 5.0, POOL_CONNECTIONS),
    )
    LatencyInjector(latency_ms=latency_ms).attach([resource.meta.client])
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

    saves: list[float] = []
    deletes: list[float] = []
    try:
        for _ in range(repeat):
            saves.append(timed(len(docs), put_all))
            deletes.append(timed(len(docs), delete_all))
    finally:
        resource.meta.client.close()
    return saves, deletes


def print_table(figures: list[Figure], docs: int, size: int, where: str, in_flight: int) -> None:
    print(
        f"\nbulk writes: {docs:,} documents of ~{size:,} bytes, {where}; "
        f"items/s (median of the runs); ratio = gateway / batch_writer\n"
    )
    header = (
        f"{'latency':>7}  {'operation':<10} {f'gateway x{in_flight}':>12} "
        f"{'gateway x1':>11} {'batch_writer':>12} {f'ratio x{in_flight}':>9} {'ratio x1':>9}"
    )
    print(header)
    print("-" * len(header))
    keyed = {(f.name, f.operation, f.latency_ms): f.items_per_s for f in figures}
    for latency in sorted({f.latency_ms for f in figures}):
        for operation in ("save", "delete"):
            par = keyed[("parallel", operation, latency)]
            seq = keyed[("sequential", operation, latency)]
            base = keyed[("batch_writer", operation, latency)]
            print(
                f"{latency:>5g}ms  {operation + '_many':<10} {par:>12,.0f} {seq:>11,.0f} "
                f"{base:>12,.0f} {par / base:>8.2f}x {seq / base:>8.2f}x"
            )
    print()


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
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="bulk.max_in_flight of the parallel gateway column",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each call (median)")
    parser.add_argument(
        "--emulator",
        choices=["moto", "dynalite"],
        default="moto",
        help="moto (embedded, default) or dynalite (Node.js, installed with npm on first use)",
    )
    args = parser.parse_args(argv)
    if args.docs < 1 or args.repeat < 1 or args.max_in_flight < 1:
        parser.error("--docs, --repeat and --max-in-flight must be >= 1")

    ensure_dummy_credentials()
    docs = documents(args.docs, args.doc_size)
    figures: list[Figure] = []
    with start_emulator(args.emulator) as endpoint_url:
        for latency in args.latency_ms:
            for name in ("parallel", "sequential", "batch_writer"):
                if name == "batch_writer":
                    saves, deletes = run_batch_writer(endpoint_url, docs, latency, args.repeat)
                else:
                    in_flight = args.max_in_flight if name == "parallel" else 1
                    saves, deletes = run_gateway(
                        endpoint_url, docs, latency, in_flight, args.repeat
                    )
                figures.append(Figure(name, "save", latency, saves))
                figures.append(Figure(name, "delete", latency, deletes))
                print(
                    f"  {latency:g} ms {name}: save {statistics.median(saves):,.0f}/s, "
                    f"delete {statistics.median(deletes):,.0f}/s",
                    file=sys.stderr,
                )
    where = f"{args.emulator} ({'embedded' if args.emulator == 'moto' else 'Node.js'}, loopback)"
    print_table(figures, args.docs, args.doc_size, where, args.max_in_flight)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
