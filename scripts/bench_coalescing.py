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
    python scripts/bench_coalescing.py --emulator dynalite   # a faster emulator (Node.js)

``--emulator dynalite`` runs the same measurement against dynalite (an in-memory DynamoDB
emulator from the npm registry, installed on first use into ``.emulators/`` with npm), whose
cost per returned item is a small fraction of moto's, so the figures are closer to what the
round trip alone allows.

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
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.bench.latency import LatencyInjector, service_clients
from gateway.dynamodb import DynamoDBService
from gateway.emulator import EmbeddedDynamoDB, ensure_dummy_credentials
from gateway.processes import free_port
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


def print_table(
    results: list[Result], threads: int, latency_ms: float, doc: str, where: str = ""
) -> None:
    print(
        f"\n{threads} threads, {latency_ms:g} ms added per DynamoDB request ({where}), "
        f"distinct uncached keys, {doc!r} documents\n"
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


EMULATORS_DIR = Path(__file__).resolve().parents[1] / ".emulators"
DYNALITE_VERSION = "4"


@contextlib.contextmanager
def dynalite() -> Iterator[tuple[str, int]]:
    """An in-memory dynalite on a free loopback port (installed with npm on first use): its
    endpoint and process id."""
    binary = EMULATORS_DIR / "node_modules" / ".bin" / "dynalite"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("--emulator dynalite needs Node.js and npm on the PATH")
        EMULATORS_DIR.mkdir(exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(EMULATORS_DIR),
                f"dynalite@{DYNALITE_VERSION}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("dynalite did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def emulator(kind: str) -> Iterator[str]:
    """The endpoint of the chosen emulator, for the duration of the run."""
    with emulator_process(kind) as (endpoint_url, _):
        yield endpoint_url


@contextlib.contextmanager
def emulator_process(kind: str) -> Iterator[tuple[str, int | None]]:
    """The endpoint and process id of the chosen emulator, for the duration of the run."""
    if kind == "dynalite":
        with dynalite() as (endpoint_url, pid):
            yield endpoint_url, pid
    else:
        with EmbeddedDynamoDB() as ddb:
            yield ddb.endpoint_url, ddb.pid


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
    parser.add_argument(
        "--emulator",
        choices=["moto", "dynalite"],
        default="moto",
        help="moto (embedded, Python) or dynalite (Node.js, much cheaper per item)",
    )
    parser.add_argument(
        "--latency-at",
        choices=["client", "proxy"],
        default="client",
        help="add the latency in the client before each request is sent (botocore before-send, "
        "no extra CPU) or in the FaultProxy in front of the emulator (a Python process that "
        "costs CPU per request on this 2-core machine)",
    )
    args = parser.parse_args(argv)
    threads: int = args.threads

    ensure_dummy_credentials()
    with emulator(args.emulator) as endpoint_url, FaultProxy(endpoint_url) as proxy:
        # Load the read set straight into the emulator (no added latency), in batches.
        with make_service(endpoint_url, coalesce=True, threads=threads) as loader:
            loader.save_many(
                DB,
                {
                    f"r-{t}-{i}": document(t * KEYS_PER_THREAD + i, args.doc)
                    for t in range(threads)
                    for i in range(KEYS_PER_THREAD)
                },
            )
        if args.latency_at == "proxy":
            proxy.configure(latency_ms=args.latency_ms)
            target = proxy.endpoint_url
        else:
            target = endpoint_url
        injector = LatencyInjector(latency_ms=args.latency_ms)
        results: list[Result] = []
        for direction in ("reads", "writes"):
            for coalesce in (False, True):
                with make_service(target, coalesce, threads) as svc:
                    svc.ensure_table(DB)
                    if args.latency_at == "client":
                        injector.attach(service_clients(svc))
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
    where = "in the client" if args.latency_at == "client" else "in a proxy"
    print_table(results, threads, args.latency_ms, args.doc, f"{where}, {args.emulator}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
