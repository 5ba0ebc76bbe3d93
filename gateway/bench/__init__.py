"""``gateway bench``: the bare DynamoDB service, the caches users would otherwise write, and
the caching gateway, measured.

Modules, one idea each:

* ``latency``: the network round trip loopback lacks, added to every DynamoDB request;
* ``meter``: the items each DynamoDB request touched (batches, pages);
* ``cost``: request units and on-demand dollars;
* ``runner``: one backend driven by N threads for D seconds, latencies recorded lock-free;
* ``stale``: stale reads (older than a write acknowledged before the read began), logged per
  thread and judged after the run;
* ``peers``: the ``naive`` (TTLCache behind a lock) and ``dogpile`` (dogpile.cache on Redis)
  backends, read-through with delete-on-write, for comparison;
* ``report``: rows with ratios against the bare service and each gateway backend's peer, a
  table, JSON and a chart;
* ``local_redis``: a throw-away ``redis-server`` for the dogpile, redis and tiered backends;
* ``command``: the command itself (where it runs, which backends, cleanup).
"""

from __future__ import annotations

from gateway.bench.cost import RequestUnits, units_for_calls
from gateway.bench.latency import DEFAULT_LATENCY_MS, LatencyInjector
from gateway.bench.runner import BackendRun, RunConfig, run_backend

__all__ = [
    "DEFAULT_LATENCY_MS",
    "BackendRun",
    "LatencyInjector",
    "RequestUnits",
    "RunConfig",
    "run_backend",
    "units_for_calls",
]
