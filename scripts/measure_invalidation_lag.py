"""Measure the tiered cache's write latency and invalidation lag on a local redis-server.

Two `TieredCache` instances (A and B, as two gateway processes) share a throw-away
redis-server started here. B first holds every key in its memory tier; then A writes the keys
one by one (``write_many`` of one entry each) and this script reports:

* A's ``write_many`` latency, p50 / p99 / max: Redis compare-and-set, the invalidation
  published with the registry read, and the wait for B's ack;
* the invalidation lag at B, p50 / p99 / max: publish wall time -> applied in B's memory
  (``stats()["invalidation_lag_ms"]``).

Both instances run in this process, so the figures include Python thread switching (GIL) but
no network: they are a floor for what two machines in one availability zone would see, plus
the round trips. Usage::

    python scripts/measure_invalidation_lag.py [--keys 1000] [--lease 0.5]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.caches.base import Entry, Kind, Put
from gateway.caches.memory import MemoryCache
from gateway.caches.redis_cache import RedisCache
from gateway.caches.tiered import MEMBER_LIFETIME_LEASES, TieredCache
from tests.servers.redis_server import RedisServer

GENERATION = 1_732_500_000_000_000
TTL_S = 600.0
READY_TIMEOUT_S = 10.0


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of a sorted, non-empty sequence."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def document(key: str, generation: int) -> Entry:
    rev = f"{generation}-{'a' * 32}"
    body = {"_id": key, "_rev": rev, "name": "Ada", "score": 9}
    return Entry(Kind.DOCUMENT, generation, rev, body, time.time())


def make(url: str, lease_s: float) -> TieredCache:
    shared = RedisCache(url, key_prefix="lag:", timeout_s=0.5)
    return TieredCache(MemoryCache(), shared, lease_s=lease_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000, help="keys A writes (default 1000)")
    parser.add_argument("--lease", type=float, default=0.5, help="lease_s (default 0.5)")
    args = parser.parse_args(argv)
    keys = [f"users:{i}" for i in range(args.keys)]

    with RedisServer() as server:
        a, b = make(server.url, args.lease), make(server.url, args.lease)
        try:
            if not (a.wait_healthy(READY_TIMEOUT_S) and b.wait_healthy(READY_TIMEOUT_S)):
                print("the instances never became healthy", file=sys.stderr)
                return 1
            # Let the registry outlive a member's lifetime, so that no write waits for it.
            time.sleep(args.lease * MEMBER_LIFETIME_LEASES * 1.1)
            # A fill publishes nothing: every lag sample below comes from the measured writes.
            a.fill_many([Put(key, document(key, GENERATION), TTL_S) for key in keys])
            for key in keys:  # B holds every key in memory: each invalidation evicts one
                b.get(key)
            held = sum(1 for key in keys if b.memory.get(key))
            lags_before = b.stats()["invalidation_lag_ms"]["samples"]

            latencies_ms = []
            for key in keys:
                entry = document(key, GENERATION + 1)
                started = time.perf_counter()
                a.write_many([Put(key, entry, TTL_S)])
                latencies_ms.append((time.perf_counter() - started) * 1000.0)

            stale = sum(1 for key in keys if b.memory.get(key))
            sender, receiver = a.stats(), b.stats()
        finally:
            a.close()
            b.close()

    latencies_ms.sort()
    lag = receiver["invalidation_lag_ms"]
    print(f"keys written one by one by A:      {len(keys)} (B held {held} in memory)")
    print(
        "A write_many latency (ms):         "
        f"p50 {percentile(latencies_ms, 0.5):.3f}  p99 {percentile(latencies_ms, 0.99):.3f}  "
        f"max {latencies_ms[-1]:.3f}"
    )
    print(
        "invalidation lag at B (ms):        "
        f"p50 {lag['p50']:.3f}  p99 {lag['p99']:.3f}  max {lag['max']:.3f}  "
        f"({lag['samples'] - lags_before} invalidations)"
    )
    print(
        f"acks waited {sender['acks_waited']}, ack timeouts {sender['ack_timeouts']}, "
        f"registry waits {sender['registry_waits']}, B copies left after the writes {stale}"
    )
    return 0 if stale == 0 and sender["ack_timeouts"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
