"""Hit latency of `RedisCache.get` against its floor, measured in the same run.

The floor is what any Redis cache of JSON documents must pay: a raw redis-py ``GET`` of the same
key (same bytes, same client, same pool) followed by ``json.loads`` of the document's JSON (the
value's tail, after the header). The cache adds
its header parsing, the exact decoding (numbers as ``Decimal``) and building the `Entry`. The
three measurements are interleaved in small blocks so that drift (CPU frequency, other load)
hits them alike.

Usage::

    python scripts/bench_redis_cache.py                  # a throw-away redis-server
    python scripts/bench_redis_cache.py --url redis://127.0.0.1:6380/0 --rounds 400
    python scripts/bench_redis_cache.py --native         # a document of int/float numbers

It never flushes anything: it writes and invalidates one key under a prefix of its own (the
key's floor, a few bytes, expires by itself).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.caches.base import MISS, STORED, End, Entry, Kind
from gateway.caches.codec import decode_entry, encode_entry
from gateway.caches.redis_cache import RedisCache

BLOCK_CALLS = 50
#: How long the write intent of the one write-through lives (as the gateway's default).
INTENT_TTL_S = 5.0
DEFAULT_ROUNDS = 200
WARMUP_CALLS = 2000


def sample_document(native: bool) -> dict[str, Any]:
    """A ~1 KB document: strings, nested maps, a list of maps, numbers, booleans, None."""

    def number(text: str) -> Any:
        d = Decimal(text)
        if not native:
            return d
        return int(d) if d == d.to_integral_value() else float(d)

    generation = 1_732_500_000_000_000
    return {
        "_id": "user-12345",
        "_rev": f"{generation}-{'a' * 32}",
        "name": "Alice Example",
        "email": "alice@example.com",
        "age": number("33"),
        "score": number("98.5"),
        "tags": ["admin", "beta", "ops", "early-adopter"],
        "address": {
            "street": "1 Main St",
            "city": "Springfield",
            "zip": "12345",
            "geo": {"lat": number("37.7749"), "lon": number("-122.4194")},
        },
        "history": [
            {
                "ts": number(str(1_716_000_000 + i)),
                "event": "login",
                "ok": True,
                "ip": f"10.0.0.{i}",
            }
            for i in range(8)
        ],
        "bio": "lorem ipsum dolor sit amet " * 8,
        "active": True,
        "manager": None,
    }


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


@contextlib.contextmanager
def redis_url(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from tests.servers import RedisServer

    with RedisServer() as server:
        yield server.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing Redis (default: start a throw-away one)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--native", action="store_true", help="int/float numbers")
    args = parser.parse_args(argv)

    document = sample_document(args.native)
    entry = Entry(Kind.DOCUMENT, 1_732_500_000_000_000, document["_rev"], document, time.time())
    encode_entry(entry)  # fails here, not in Redis, if the codec cannot represent the document

    with redis_url(args.url) as url:
        cache = RedisCache(url, key_prefix=f"bench:{uuid.uuid4().hex}:", timeout_s=1.0)
        key = "doc"
        full_key = cache.key_prefix + key
        # A write-through, as the gateway's save does: intent, then its end with the entry.
        intent = uuid.uuid4().hex
        tokens = cache.begin_write([key], intent, INTENT_TTL_S)
        outcomes = cache.end_write([End(key, intent, tokens[0], entry, 600.0)])
        assert outcomes == [STORED], f"the write was not stored: {outcomes}"
        client = cache.client
        # What Redis holds (the record's header carries its versions, set by the scripts).
        data: bytes = client.get(full_key)  # type: ignore[assignment]
        # The document's JSON is the tail of the cached value, after the header and a mode byte.
        body_offset = data.index(b"|" + (b"N" if args.native else b"D") + b"{") + 2
        body = data[body_offset:]
        json.loads(body)  # the floor must parse exactly these bytes

        def floor() -> Any:
            return json.loads(client.get(full_key)[body_offset:])  # type: ignore[index]

        def floor_decimal() -> Any:
            return json.loads(
                client.get(full_key)[body_offset:],  # type: ignore[index]
                parse_float=Decimal,
                parse_int=Decimal,
            )

        def cached() -> Any:
            return cache.get(key)

        got = cache.get(key)
        assert got is not MISS and replace(got, ver=entry.ver) == entry, (
            "the cache did not return what was stored"
        )
        contenders: dict[str, Callable[[], Any]] = {
            "floor: GET + json.loads": floor,
            "floor: GET + json.loads(Decimal)": floor_decimal,
            "RedisCache.get": cached,
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():
            for _ in range(WARMUP_CALLS):
                fn()
        clock = time.perf_counter_ns
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                out = samples[name]
                for _ in range(BLOCK_CALLS):
                    start = clock()
                    fn()
                    out.append((clock() - start) / 1000)

        decode_us = _time_us(lambda: decode_entry(data))
        loads_us = _time_us(lambda: json.loads(body))
        # Drop the key; its floor (a version, no document) expires after `floor_ttl_s`.
        cache.invalidate_many([key])
        cache.close()

    print(
        f"document: {len(body)} bytes of JSON, {len(data)} bytes cached; "
        f"{'native' if args.native else 'Decimal'} numbers; "
        f"{args.rounds * BLOCK_CALLS} calls each"
    )
    results = {}
    for name, values in samples.items():
        values.sort()
        p50, p99 = percentile(values, 0.50), percentile(values, 0.99)
        results[name] = (p50, p99)
        print(
            f"  {name:34s} p50 {p50:7.1f} µs   p99 {p99:7.1f} µs   "
            f"mean {statistics.fmean(values):7.1f} µs"
        )
    floor_p50, floor_p99 = results["floor: GET + json.loads"]
    cache_p50, cache_p99 = results["RedisCache.get"]
    print(
        f"  ratio RedisCache.get / floor: p50 {cache_p50 / floor_p50:.3f}x   "
        f"p99 {cache_p99 / floor_p99:.3f}x   (target: within 1.2x)"
    )
    print(f"  decode only: decode_entry {decode_us:.2f} µs vs json.loads {loads_us:.2f} µs")
    return 0


def _time_us(fn: Callable[[], Any], calls: int = 20_000) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


if __name__ == "__main__":
    raise SystemExit(main())
