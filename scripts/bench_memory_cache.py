"""Hit latency of `MemoryCache.get` against a bare `cachetools.LRUCache.__getitem__`.

Both hold the same entries under the same keys; each timed batch looks up ``--batch`` keys in a
shuffled order, and the figure reported is the median (p50) over ``--batches`` batches of the
mean nanoseconds per lookup, loop overhead included on both sides. Also shown for context: a
``TLRUCache`` (the alternative design), ``get_many``, and misses.

    python scripts/bench_memory_cache.py [--items 100000] [--batch 1000] [--batches 300]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

from cachetools import LRUCache, TLRUCache

from gateway.caches.base import Entry, Fill, Kind
from gateway.caches.memory import MemoryCache

TTL_S = 3600.0


def p50_ns_per_call(lookup: Callable[[str], object], keys: Sequence[str], batches: int) -> float:
    """Median over batches of the mean time of ``lookup(key)`` over ``keys``, in ns."""
    clock = time.perf_counter_ns
    per_call = []
    gc.disable()
    try:
        for _ in range(batches):
            start = clock()
            for key in keys:
                lookup(key)
            per_call.append((clock() - start) / len(keys))
    finally:
        gc.enable()
    return statistics.median(per_call)


def p50_ns_per_key_many(
    get_many: Callable[[Sequence[str]], object], keys: Sequence[str], size: int, batches: int
) -> float:
    """Like `p50_ns_per_call`, for ``get_many`` on chunks of ``size`` keys, per key."""
    chunks = [keys[i : i + size] for i in range(0, len(keys) - size + 1, size)]
    clock = time.perf_counter_ns
    per_key = []
    gc.disable()
    try:
        for _ in range(batches):
            start = clock()
            for chunk in chunks:
                get_many(chunk)
            per_key.append((clock() - start) / (len(chunks) * size))
    finally:
        gc.enable()
    return statistics.median(per_key)


def main() -> None:
    """Build the caches, time them, print a table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()

    keys = [f"users:{i:08d}" for i in range(args.items)]
    entries = [
        Entry(Kind.DOCUMENT, 1_732_500_000_000_000 + i, f"r{i}", {"_id": key, "n": Decimal(i)})
        for i, key in enumerate(keys)
    ]
    bare: LRUCache[str, Entry] = LRUCache(args.items)
    tlru: TLRUCache[str, Entry] = TLRUCache(args.items, ttu=lambda _k, _v, now: now + TTL_S)
    memory = MemoryCache(max_items=args.items)
    for key, entry in zip(keys, entries, strict=True):
        bare[key] = entry
        tlru[key] = entry
    memory.fill_many(
        [
            Fill(key, entry, TTL_S, memory.read_token(key, memory.get(key)))
            for key, entry in zip(keys, entries, strict=True)
        ]
    )
    assert all(memory.get(key) is entry for key, entry in zip(keys, entries, strict=True))

    rng = random.Random(7)
    sample = rng.sample(keys, args.batch)
    missing = [f"orders:{i}" for i in range(args.batch)]
    batches = args.batches

    bare_ns = p50_ns_per_call(bare.__getitem__, sample, batches)
    memory_ns = p50_ns_per_call(memory.get, sample, batches)
    tlru_ns = p50_ns_per_call(tlru.__getitem__, sample, batches)
    many_1_ns = p50_ns_per_key_many(memory.get_many, sample, 1, batches)
    many_100_ns = p50_ns_per_key_many(memory.get_many, sample, 100, batches)
    miss_ns = p50_ns_per_call(memory.get, missing, batches)
    rows = [
        ("cachetools.LRUCache.__getitem__ (hit)", bare_ns),
        ("MemoryCache.get (hit)", memory_ns),
        ("cachetools.TLRUCache.__getitem__ (hit)", tlru_ns),
        ("MemoryCache.get_many, 1 key (hit)", many_1_ns),
        ("MemoryCache.get_many, 100 keys, per key", many_100_ns),
        ("MemoryCache.get (miss)", miss_ns),
    ]
    width = max(len(name) for name, _ in rows)
    for name, ns in rows:
        print(f"{name:<{width}}  p50 {ns:7.0f} ns")
    print(f"ratio MemoryCache.get / LRUCache.__getitem__ (hits): {memory_ns / bare_ns:.2f}x")


if __name__ == "__main__":
    main()
