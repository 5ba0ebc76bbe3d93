"""Keys per second with request coalescing and without, side by side in one run.

Many threads (64 by default) each read distinct keys (`get`), then save distinct documents
(`save`), through a bare `DynamoDBService` whose requests cross a `FaultProxy` that adds a fixed
latency (5 ms by default) in front of the embedded DynamoDB emulator: the round trip a service
in one AWS region sees from DynamoDB. Each direction is measured twice, coalescing off (one
GetItem / conditional PutItem per call) and on (BatchGetItem; one revision read plus one
BatchWriteItem per write batch), for the same duration, and the script prints keys per second,
DynamoDB requests per second, the average batch size and the mean latency of one call.

Usage::

    python scripts/bench_coalescing.py                       # 64 threads, 5 ms, 5 s each
    python scripts/bench_coalescing.py --threads 128 --latency-ms 10 --seconds 10

The service has no cache, so every `get` goes to DynamoDB: keys are "uncached" by construction.
Each thread cycles through a slice of keys of its own, so no two calls in one batch name the
same key (no de-duplication inflates the figures).

What bounds the ratio here is the emulator, not the coalescer: moto serializes every item it
returns through a generic model-driven serializer, about 0.5-0.7 ms per ``user`` item, so a
BatchGetItem of 32 keys costs it ~20 ms where a GetItem costs ~2.5 ms. Without coalescing, 64
threads saturate moto with GetItems; with it, the next batch leaves within half a millisecond
of the previous one's return (measure the gap with a timer around the batch function), so the
ratio approaches moto's per-request / per-item cost ratio. ``--doc tiny`` (one attribute)
shows how it moves when moto's per-item cost shrinks. Against DynamoDB itself, where the cost
of a request is mostly the round trip and the client's CPU, batching pays off more.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.dynamodb import DynamoDBService
from gateway.emulator import EmbeddedDynamoDB, ensure_dummy_credentials
from gateway.retry import RetryPolicy
from tests.servers.fault_proxy import FaultProxy

DB = "bench"
TABLE_PREFIX = "coalesce-"
DEFAULT_THREADS = 64
DEFAULT_LATENCY_MS = 5.0
DEFAULT_SECONDS = 5.0
WARMUP_S = 1.0
#: Documents each reader thread cycles through.
KEYS_PER_THREAD = 100
TARGET_RATIO = 5.0


@dataclass(frozen=True)
class Result:
    """One measurement."""

    direction: str
    coalescing: bool
    keys: int
    seconds: float
    requests: int
    batches: int
    batch_items: int
    latencies_s: list[float]

    @property
    def keys_per_s(self) -> float:
        return self.keys / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def average_batch(self) -> float:
        return self.batch_items / self.batches if self.batches else 1.0


def document(n: int, shape: str = "user") -> dict[str, Any]:
    """A test document: ``user`` (~150 bytes, six attributes with a list) or ``tiny``."""
    if shape == "tiny":
        return {"n": n}
    return {
        "n": n,
        "name": f"user {n}",
        "email": f"user{n}@example.com",
        "active": True,
        "tags": ["a", "b"],
    }


def make_service(endpoint_url: str, coalesce: bool, threads: int) -> DynamoDBService:
    return DynamoDBService(
        endpoint_url=endpoint_url,
        table_prefix=TABLE_PREFIX,
        coalesce_reads=coalesce,
        coalesce_writes=coalesce,
        retry_policy=RetryPolicy(),
        max_pool_connections=threads,
    )


def reader(svc: DynamoDBService) -> Callable[[int, int], Any]:
    """Thread ``t``'s ``i``-th read: its own slice of the loaded keys, round and round."""

    def call(t: int, i: int) -> Any:
        doc = svc.get(DB, f"r-{t}-{i % KEYS_PER_THREAD}")
        assert doc is not None
        return doc

    return call


def writer(svc: DynamoDBService, tag: str, shape: str) -> Callable[[int, int], Any]:
    """Thread ``t``'s ``i``-th write: an unconditional save of a document of its own."""

    def call(t: int, i: int) -> Any:
        return svc.save(DB, f"w-{tag}-{t}-{i}", document(i, shape))

    return call


def measure(
    direction: str,
    svc: DynamoDBService,
    threads: int,
    seconds: float,
    call: Callable[[int, int], Any],
) -> Result:
    """Run ``call(thread, i)`` in every thread for ``seconds`` after a warm-up; count calls."""
    coalescing = svc.coalesce_reads if direction == "reads" else svc.coalesce_writes
    stop = threading.Event()
    measuring = threading.Event()
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        i = 0
        try:
            while not stop.is_set():
                started = time.perf_counter()
                call(t, i)
                if measuring.is_set():
                    counts[t] += 1
                    latencies[t].append(time.perf_counter() - started)
                i += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    time.sleep(WARMUP_S)
    before = svc.stats()
    measuring.set()
    began = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - began
    after = svc.stats()
    stop.set()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError(f"{direction}: a call failed") from errors[0]
    requests = sum(after["db_calls"].values()) - sum(before["db_calls"].values())
    b0, b1 = before["batching"][direction], after["batching"][direction]
    return Result(
        direction=direction,
        coalescing=coalescing,
        keys=sum(counts),
        seconds=elapsed,
        requests=requests,
        batches=b1["batches"] - b0["batches"],
        batch_items=b1["items"] - b0["items"],
        latencies_s=[x for per_thread in latencies for x in per_thread],
    )


def print_table(results: list[Result], threads: int, latency_ms: float, doc: str) -> None:
    print(
        f"\n{threads} threads, {latency_ms:g} ms added per DynamoDB request (FaultProxy), "
        f"moto emulator, distinct uncached keys, {doc!r} documents\n"
    )
    header = (
        f"{'direction':<9} {'coalescing':<10} {'keys/s':>9} {'requests/s':>11} "
        f"{'avg batch':>9} {'mean ms':>8} {'p99 ms':>7}"
    )
    print(header)
    print("-" * len(header))
    for direction in ("reads", "writes"):
        pair = {r.coalescing: r for r in results if r.direction == direction}
        for coalescing in (False, True):
            r = pair.get(coalescing)
            if r is None:
                continue
            lat = sorted(r.latencies_s)
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
            mean = statistics.fmean(lat) * 1000 if lat else 0.0
            print(
                f"{direction:<9} {'on' if coalescing else 'off':<10} {r.keys_per_s:>9.0f} "
                f"{r.requests_per_s:>11.0f} {r.average_batch:>9.1f} {mean:>8.1f} {p99:>7.1f}"
            )
        if True in pair and False in pair:
            ratio = pair[True].keys_per_s / pair[False].keys_per_s
            verdict = "meets" if ratio >= TARGET_RATIO else "below"
            print(
                f"{direction:<9} {'ratio':<10} {ratio:>8.1f}x  ({verdict} the {TARGET_RATIO:g}x target)"
            )
        print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument(
        "--doc",
        choices=["user", "tiny"],
        default="user",
        help="document shape: the emulator's cost per item grows with its attributes",
    )
    args = parser.parse_args(argv)
    threads: int = args.threads

    ensure_dummy_credentials()
    with EmbeddedDynamoDB() as ddb, FaultProxy(ddb.endpoint_url) as proxy:
        # Load the read set straight into the emulator (no added latency), in batches.
        with make_service(ddb.endpoint_url, coalesce=True, threads=threads) as loader:
            loader.save_many(
                DB,
                {
                    f"r-{t}-{i}": document(t * KEYS_PER_THREAD + i, args.doc)
                    for t in range(threads)
                    for i in range(KEYS_PER_THREAD)
                },
            )
        proxy.configure(latency_ms=args.latency_ms)
        results: list[Result] = []
        for direction in ("reads", "writes"):
            for coalesce in (False, True):
                with make_service(proxy.endpoint_url, coalesce, threads) as svc:
                    svc.ensure_table(DB)
                    call = (
                        reader(svc)
                        if direction == "reads"
                        else writer(svc, "on" if coalesce else "off", args.doc)
                    )
                    result = measure(direction, svc, threads, args.seconds, call)
                results.append(result)
                print(
                    f"  {direction} coalescing {'on' if coalesce else 'off'}: "
                    f"{result.keys_per_s:.0f} keys/s",
                    file=sys.stderr,
                )
    print_table(results, threads, args.latency_ms, args.doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
