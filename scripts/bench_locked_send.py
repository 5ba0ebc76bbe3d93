"""Cache hits per second under a busy interpreter lock: the lock-keeping send beside redis-py's.

`gateway.caches.locked_send.send_packed` sends a command without letting go of the
interpreter lock; redis-py's ``send_packed_command`` lets go of it around ``sendall``. On a
multi-threaded client whose other threads hold the lock for long stretches (a botocore request
holds it for about a millisecond at a time), each let-go costs the sender a wait. This script
stages that: ``--readers`` threads read one 1 KB key through `DirectConnections` while
``--burners`` threads each hold the lock for ``--burn-ms`` then sleep ``--sleep-ms`` (a stand-in
for requests to DynamoDB). The two ways of sending alternate in rounds of ``--seconds`` on the
same redis-server (started for the run on a free port), and the script prints hits/s of each
and their ratio. Absolute figures depend on the machine; compare the ratio.

    python scripts/bench_locked_send.py [--rounds 3] [--seconds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from gateway.caches import direct_connections
from gateway.caches.direct_connections import DirectConnections
from gateway.caches.locked_send import send_packed
from tests.servers.redis_server import RedisServer


def redis_py_send(connection: Any, chunks: Any) -> None:
    connection.send_packed_command(chunks)


@contextmanager
def sending_with(send: Callable[[Any, Any], None]) -> Iterator[None]:
    """`DirectConnections` sends with ``send`` for the duration (a what-if, in this script only)."""
    saved = direct_connections.send_packed
    direct_connections.send_packed = send
    try:
        yield
    finally:
        direct_connections.send_packed = saved


def hits_per_s(direct: DirectConnections, args: argparse.Namespace) -> float:
    stop = threading.Event()
    counts = [0] * args.readers

    def reader(slot: int) -> None:
        n = 0
        while not stop.is_set():
            direct.command("GET", "bench:locked-send")
            n += 1
        counts[slot] = n

    def burner() -> None:
        burn_s, sleep_s = args.burn_ms / 1000, args.sleep_ms / 1000
        while not stop.is_set():
            until = time.perf_counter() + burn_s
            while time.perf_counter() < until:
                pass
            time.sleep(sleep_s)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(args.readers)]
    threads += [threading.Thread(target=burner) for _ in range(args.burners)]
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / args.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--readers", type=int, default=6)
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--burn-ms", type=float, default=0.5)
    parser.add_argument("--sleep-ms", type=float, default=3.0)
    args = parser.parse_args(argv)
    if min(args.rounds, args.readers) < 1 or args.seconds <= 0:
        parser.error("--rounds and --readers must be >= 1, --seconds > 0")
    rates: dict[str, list[float]] = {"locked send": [], "redis-py sendall": []}
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.set("bench:locked-send", b"x" * 1024)
        direct = DirectConnections(client, limit=args.readers)
        for _ in range(args.rounds):
            for name, send in (("locked send", send_packed), ("redis-py sendall", redis_py_send)):
                with sending_with(send):
                    rates[name].append(hits_per_s(direct, args))
        direct.disconnect()
        client.close()
    print(
        f"{args.readers} readers of one 1 KB key, {args.burners} threads holding the lock "
        f"{args.burn_ms:g} ms every {args.sleep_ms:g} ms; {args.rounds} rounds of "
        f"{args.seconds:g} s each"
    )
    for name, values in rates.items():
        shown = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{name:18} hits/s median {statistics.median(values):>9,.0f}   ({shown})")
    ratio = statistics.median(rates["locked send"]) / statistics.median(rates["redis-py sendall"])
    print(f"ratio {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
