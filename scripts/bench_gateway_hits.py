"""Gateway cache-hit latency beside its floor, measured side by side in one run.

For a ~1 KB document:
* memory: ``CachingGateway.get`` on a MemoryCache hit vs the floor "a cachetools lookup plus a
  copy of the document";
* redis: ``CachingGateway.get`` on a RedisCache hit vs the floor "a raw redis-py GET plus decoding
  the same bytes" (json.loads with Decimal numbers);
* tiered: ``CachingGateway.get`` on an in-process hit of the TieredCache (same floor as memory).

Starts its own DynamoDB emulator and redis-server on free ports. Prints p50 / p99 in µs and the
ratios. Absolute numbers depend on the machine; the ratios are what to compare.

    python scripts/bench_gateway_hits.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cachetools
import redis

from gateway.caches.codec import encode_entry
from gateway.caches.memory import MemoryCache
from gateway.caches.redis_cache import RedisCache
from gateway.codec import copy_document
from gateway.dynamodb import DynamoDBService
from gateway.emulator import EmbeddedDynamoDB, ensure_dummy_credentials
from gateway.gateway import CachingGateway
from tests.gateway_helpers import Policy
from tests.servers.redis_server import RedisServer

DOCUMENT = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "age": 36,
    "score": 97.25,
    "active": True,
    "tags": ["math", "engines", "poetry", "notes"],
    "address": {"street": "12 St James's Square", "city": "London", "zip": "SW1Y 4JH"},
    "history": [
        {"year": 1833 + i, "event": f"event number {i}", "weight": i / 7} for i in range(8)
    ],
    "bio": "x" * 300,
}


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def measure(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    for _ in range(min(1000, rounds)):
        fn()
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(rounds):
            start = clock()
            fn()
            samples.append((clock() - start) / 1000)
    finally:
        gc.enable()
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    ensure_dummy_credentials()
    rows: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
    with EmbeddedDynamoDB() as emulator, RedisServer() as redis_server:
        policy = Policy()

        def service() -> DynamoDBService:
            return DynamoDBService(endpoint_url=emulator.endpoint_url, table_prefix="bench-")

        # memory
        memory_gw = CachingGateway(service(), MemoryCache(), policy_for=lambda _db: policy)
        memory_gw.save("users", "u1", DOCUMENT)
        stored = memory_gw.get("users", "u1")
        size = len(json.dumps(stored, default=str))
        lru: cachetools.LRUCache[str, dict] = cachetools.LRUCache(maxsize=100_000)
        lru["bench-users:u1"] = stored
        floor_memory = measure(lambda: copy_document(lru["bench-users:u1"]), args.rounds)
        rows.append(
            ("memory", measure(lambda: memory_gw.get("users", "u1"), args.rounds), floor_memory)
        )

        # redis
        redis_gw = CachingGateway(
            service(),
            RedisCache(redis_server.url, key_prefix="bench:"),
            policy_for=lambda _db: policy,
        )
        redis_gw.save("users", "u1", DOCUMENT)
        raw = redis.Redis.from_url(redis_server.url)
        blob = encode_entry(
            __import__("gateway.caches.base", fromlist=["Entry"]).Entry(
                __import__("gateway.caches.base", fromlist=["Kind"]).Kind.DOCUMENT, 1, "r", stored
            )
        )
        body = json.dumps(stored, default=lambda o: float(o) if isinstance(o, Decimal) else str(o))
        raw.set("floor", body.encode())

        def redis_floor() -> object:
            return json.loads(raw.get("floor"), parse_float=Decimal, parse_int=Decimal)

        rows.append(
            (
                "redis",
                measure(lambda: redis_gw.get("users", "u1"), args.rounds),
                measure(redis_floor, args.rounds),
            )
        )

        # tiered (in-process hits)
        try:
            from gateway.caches.tiered import TieredCache

            tiered_gw = CachingGateway(
                service(),
                TieredCache(MemoryCache(), RedisCache(redis_server.url, key_prefix="bench-t:")),
                policy_for=lambda _db: policy,
            )
            tiered_gw.save("users", "u1", DOCUMENT)
            tiered_gw.get("users", "u1")
            rows.append(
                ("tiered", measure(lambda: tiered_gw.get("users", "u1"), args.rounds), floor_memory)
            )
            tiered_gw.close()
        except ImportError:
            pass
        memory_gw.close()
        redis_gw.close()
        raw.close()

    print(
        f"document: {size} bytes as JSON, {args.rounds} hits per row; encoded entry {len(blob)} bytes"
    )
    print(
        f"{'backend':8} {'hit p50 µs':>11} {'hit p99 µs':>11} {'floor p50':>10} {'floor p99':>10} {'p50 ratio':>10}"
    )
    for name, (p50, p99), (f50, f99) in rows:
        print(f"{name:8} {p50:11.1f} {p99:11.1f} {f50:10.1f} {f99:10.1f} {p50 / f50:9.2f}x")


if __name__ == "__main__":
    main()
