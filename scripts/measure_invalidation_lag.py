"""Measure the tiered cache's write latency and invalidation lag on a local redis-server.

Two `TieredCache` instances (A and B, as two gateway processes) share a throw-away
redis-server started here. B first holds every key in its memory tier; then A writes the keys
one by one, as the gateway's save does (``begin_write`` of one key, then ``end_write`` with
the new entry), and this script reports:

* A's ``begin_write`` and ``end_write`` latencies, p50 / p99 / max: each runs its Redis script
  (registering the intent / storing the entry), publishes an invalidation with the registry
  read, and waits for B's ack; and their sum, a write's cache overhead;
* the invalidation lag at B, p50 / p99 / max: publish wall time -> applied in B's memory
  (``stats()["invalidation_lag_ms"]``), two invalidations per write.

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
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.caches.base import STORED, End, Entry, Fill, Kind
from gateway.caches.memory import MemoryCache
from gateway.caches.redis_cache import RedisCache
from gateway.caches.tiered import MEMBER_LIFETIME_LEASES, TieredCache
from tests.servers.redis_server import RedisServer

GENERATION = 1_732_500_000_000_000
TTL_S = 600.0
#: How long a write intent lives (as the gateway's default ``intent_ttl_s``).
INTENT_TTL_S = 5.0
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
            a.fill_many(
                [
                    Fill(key, document(key, GENERATION), TTL_S, a.read_token(key, a.get(key)))
                    for key in keys
                ]
            )
            for key in keys:  # B holds every key in memory: each invalidation evicts one
                b.get(key)
            held = sum(1 for key in keys if b.memory.get(key))
            received_before = b.stats()["invalidations_received"]

            begin_ms, end_ms, write_ms = [], [], []
            outcomes: dict[str, int] = {}
            clock = time.perf_counter
            for key in keys:
                entry = document(key, GENERATION + 1)
                intent = uuid.uuid4().hex
                started = clock()
                tokens = a.begin_write([key], intent, INTENT_TTL_S, ordered=True)
                begun = clock()
                (outcome,) = a.end_write([End(key, intent, tokens[0], entry, TTL_S)])
                ended = clock()
                begin_ms.append((begun - started) * 1000.0)
                end_ms.append((ended - begun) * 1000.0)
                write_ms.append((ended - started) * 1000.0)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

            stale = sum(1 for key in keys if b.memory.get(key))
            sender, receiver = a.stats(), b.stats()
        finally:
            a.close()
            b.close()

    lag = receiver["invalidation_lag_ms"]
    print(f"keys written one by one by A:      {len(keys)} (B held {held} in memory)")
    for name, latencies_ms in (
        ("A begin_write latency (ms):        ", begin_ms),
        ("A end_write latency (ms):          ", end_ms),
        ("A write latency, both (ms):        ", write_ms),
    ):
        latencies_ms.sort()
        print(
            f"{name}p50 {percentile(latencies_ms, 0.5):.3f}  "
            f"p99 {percentile(latencies_ms, 0.99):.3f}  max {latencies_ms[-1]:.3f}"
        )
    print(
        "invalidation lag at B (ms):        "
        f"p50 {lag['p50']:.3f}  p99 {lag['p99']:.3f}  max {lag['max']:.3f}  "
        f"(over the last {lag['samples']} of "
        f"{receiver['invalidations_received'] - received_before} invalidations)"
    )
    print(
        f"acks waited {sender['acks_waited']}, ack timeouts {sender['ack_timeouts']}, "
        f"registry waits {sender['registry_waits']}, B copies left after the writes {stale}"
    )
    print(f"end_write outcomes: {outcomes}")
    stored = outcomes.get(STORED, 0) == len(keys)
    return 0 if stale == 0 and sender["ack_timeouts"] == 0 and stored else 1


if __name__ == "__main__":
    raise SystemExit(main())
