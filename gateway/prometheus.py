"""A Prometheus exporter for a gateway's ``stats()`` (prometheus-client, an optional extra).

`PrometheusExporter` is a custom collector: it holds no metric objects of its own and reads
``service.stats()`` at every scrape, so nothing is added to the gateway's hot path and the
numbers are the same as those ``stats()`` shows. `start_exporter` serves it over HTTP from a
private `CollectorRegistry` (never the process-wide default one, so that two gateways in one
process, or an application's own metrics, do not collide).

What is exported (every name starts with ``gateway_``):

==========================================================  ========  ==========================
metric                                                      type      labels
==========================================================  ========  ==========================
``gateway_info``                                            gauge     ``cache_backend``
``gateway_cache_hits_total`` / ``_misses_total``            counter
``gateway_cache_hit_ratio``                                 gauge
``gateway_query_cache_hits_total`` / ``_misses_total``,      counter
``_too_large_total``
``gateway_cache_errors_total``, ``_fallbacks_total``,       counter
``_evictions_total``, ``_repairs_total``,
``_fills_skipped_total``, ``_single_flight_waits_total``,
``_writes_refused_total``
``gateway_cache_pending_repairs``, ``gateway_cache_items``  gauge
``gateway_cache_healthy`` (tiered)                          gauge
``gateway_cache_ack_timeouts_total`` (tiered)               counter
``gateway_cache_invalidation_lag_seconds`` (tiered)         gauge     ``quantile`` (0.5, 0.99)
``gateway_cache_invalidation_lag_max_seconds``,             gauge
``_samples`` (tiered)
``gateway_cache_breaker_state``                             gauge     ``state`` (1 for the
                                                                      current one)
``gateway_stream_records_applied_total`` (streams)          counter   ``collection``
``gateway_stream_lag_seconds`` (streams)                    gauge     ``collection``
``gateway_stream_shards_held`` (streams)                    gauge     ``collection``
``gateway_dynamodb_calls_total``                            counter   ``operation``
``gateway_dynamodb_retries_total``, ``_throttles_total``,   counter
``_retry_budget_exhausted_total``, ``_gave_up_total``
``gateway_coalescing_batches_total``, ``_items_total``,     counter   ``direction``
``_merged_total``, ``_failed_batches_total``
``gateway_dynamodb_consumed_capacity_units_total``          counter   ``operation``, ``kind``
``gateway_dynamodb_estimated_capacity_units_total``         counter   ``kind``
``gateway_dynamodb_cost_dollars_total``                     counter
``gateway_dynamodb_cost_per_million_requests_dollars``      gauge
``gateway_cost_per_million_ops_dollars``                    gauge
``gateway_operation_latency_seconds``                       summary   ``operation``,
                                                                      ``quantile``
``gateway_operation_latency_max_seconds``                   gauge     ``operation``
``gateway_dynamodb_latency_seconds``                        summary   ``operation``,
                                                                      ``quantile``
``gateway_dynamodb_latency_max_seconds``                    gauge     ``operation``
==========================================================  ========  ==========================

Cache metrics appear only for a caching gateway (a bare `DynamoDBService` has no cache tier);
``gateway_cache_items`` only for an in-process tier (``memory``, ``tiered``), those marked
(tiered) only for the tiered backend, and those marked (streams) only for a gateway that follows
the DynamoDB streams (``STREAMS_INVALIDATION``; the stream lag has no sample for a collection
until one of its records was applied). The invalidation lag is over the tiered cache's last
invalidations received (a window, not since start), and has no sample before the first one.
Quantiles are this process's (0.5, 0.9, 0.99; see `gateway.metrics` for their precision);
``_count`` and ``_sum`` can be aggregated across instances, quantiles cannot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import ConfigError

#: What to install when prometheus-client is missing.
METRICS_INSTALL_HINT = "pip install 'dynamodb-gateway[metrics]'"
#: The address the exporter listens on unless told otherwise: this host only.
DEFAULT_ADDR = "127.0.0.1"
#: The quantiles exported for each latency summary, and the stats() keys that hold them.
QUANTILES: tuple[tuple[str, str], ...] = (("0.5", "p50_us"), ("0.9", "p90_us"), ("0.99", "p99_us"))
_S_PER_US = 1e-6
_BREAKER_STATES = ("closed", "open", "half_open")
_QUERY_COUNTERS = (
    ("query_hits", "gateway_query_cache_hits", "list_all / query answers served from the cache."),
    (
        "query_misses",
        "gateway_query_cache_misses",
        "list_all / query answers the cache could not serve.",
    ),
    (
        "queries_too_large",
        "gateway_query_cache_too_large",
        "list_all / query answers over cache.max_query_bytes, not stored.",
    ),
)
_RETRY_COUNTERS = (
    ("retries", "gateway_dynamodb_retries", "Waits before another try of a DynamoDB call."),
    ("throttles", "gateway_dynamodb_throttles", "Throttling errors and partial batch results."),
    (
        "budget_exhausted",
        "gateway_dynamodb_retry_budget_exhausted",
        "Retries refused by the retry budget.",
    ),
    ("gave_up", "gateway_dynamodb_gave_up", "DynamoDB calls that failed after their retries."),
)
_CACHE_COUNTERS = (
    ("cache_errors", "gateway_cache_errors", "Cache calls that failed (served from DynamoDB)."),
    ("fallbacks", "gateway_cache_fallbacks", "Reads and writes that bypassed the cache tier."),
    ("evictions", "gateway_cache_evictions", "Entries the cache evicted to stay in its bounds."),
    (
        "repairs",
        "gateway_cache_repairs",
        "Replayed invalidations of writes made while the cache was unreachable.",
    ),
    ("fills_skipped", "gateway_cache_fills_skipped", "Loads that did not fill the cache."),
    (
        "single_flight_waits",
        "gateway_cache_single_flight_waits",
        "Misses that waited for another caller's load of the same key.",
    ),
    (
        "writes_refused",
        "gateway_cache_writes_refused",
        "Writes refused (nothing written) because the cache could not be reached.",
    ),
)
#: The invalidation lag quantiles of the tiered cache, and the keys of ``invalidation_lag_ms``.
_LAG_QUANTILES = (("0.5", "p50"), ("0.99", "p99"))
_S_PER_MS = 1e-3
_BATCHING_COUNTERS = (
    ("batches", "gateway_coalescing_batches", "Coalesced DynamoDB batch requests."),
    ("items", "gateway_coalescing_items", "Keys or writes sent in coalesced batches."),
    ("merged", "gateway_coalescing_merged", "Calls merged into another caller's batch."),
    ("failed_batches", "gateway_coalescing_failed_batches", "Coalesced batches that failed."),
)


class StatsSource(Protocol):
    """Anything with the gateway's ``stats()`` (a DatabaseService)."""

    def stats(self) -> dict[str, Any]: ...


def _prometheus() -> Any:
    """prometheus_client, or a `ConfigError` saying how to install it."""
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise ConfigError(
            f"Prometheus metrics need prometheus-client, which is not installed: "
            f"{METRICS_INSTALL_HINT}"
        ) from exc
    return prometheus_client


class PrometheusExporter:
    """A prometheus_client collector that turns ``service.stats()`` into metrics per scrape."""

    def __init__(self, service: StatsSource) -> None:
        self._core = _prometheus().core
        self._service = service

    def collect(self) -> Iterator[Any]:
        """The metric families of one ``stats()`` snapshot (called by the registry)."""
        core = self._core
        stats = self._service.stats()
        caching = "cache_backend" in stats

        if caching:
            info = core.GaugeMetricFamily(
                "gateway_info", "The gateway's cache backend.", labels=["cache_backend"]
            )
            info.add_metric([str(stats["cache_backend"])], 1)
            yield info
        yield core.CounterMetricFamily(
            "gateway_cache_hits", "Reads served from the cache.", value=stats.get("hits", 0)
        )
        yield core.CounterMetricFamily(
            "gateway_cache_misses", "Reads the cache could not serve.", value=stats.get("misses", 0)
        )
        yield core.GaugeMetricFamily(
            "gateway_cache_hit_ratio",
            "hits / (hits + misses) since start.",
            value=stats.get("hit_ratio", 0.0),
        )
        if caching:
            for key, name, documentation in _QUERY_COUNTERS:
                yield core.CounterMetricFamily(name, documentation, value=stats.get(key, 0))
        if caching:
            yield from self._cache(stats)
        if "streams" in stats:
            yield from self._streams(stats["streams"] or {})

        calls = core.CounterMetricFamily(
            "gateway_dynamodb_calls",
            "DynamoDB requests (attempts) by operation.",
            labels=["operation"],
        )
        for operation, count in sorted(stats.get("db_calls", {}).items()):
            calls.add_metric([operation], count)
        yield calls
        retry = stats.get("retry", {})
        for key, name, documentation in _RETRY_COUNTERS:
            if key in retry:
                yield core.CounterMetricFamily(name, documentation, value=retry[key])
        yield from self._batching(stats.get("batching", {}))
        yield from self._capacity(stats)

        if caching:
            yield from self._latency(
                "gateway_operation_latency",
                "Latency of the gateway's calls",
                stats.get("latency", {}),
            )
            db_latency = stats.get("db_latency", {})
        else:
            db_latency = stats.get("latency", {})
        yield from self._latency(
            "gateway_dynamodb_latency",
            "Latency of DynamoDB requests, retries included",
            db_latency,
        )

    # -- families ---------------------------------------------------------------------------

    def _cache(self, stats: Mapping[str, Any]) -> Iterator[Any]:
        core = self._core
        for key, name, documentation in _CACHE_COUNTERS:
            if key in stats:
                yield core.CounterMetricFamily(name, documentation, value=stats[key])
        yield core.GaugeMetricFamily(
            "gateway_cache_pending_repairs",
            "Keys waiting for a replayed invalidation (written while the cache was unreachable).",
            value=stats.get("pending_repairs", 0),
        )
        cache = stats.get("cache") or {}
        # The memory backend's own stats, or the memory tier's of the tiered backend.
        items = cache.get("items", (cache.get("memory") or {}).get("items"))
        if items is not None:
            yield core.GaugeMetricFamily(
                "gateway_cache_items",
                "Entries held by the in-process cache (the memory tier of the tiered backend).",
                value=items,
            )
        if "healthy" in cache:
            yield core.GaugeMetricFamily(
                "gateway_cache_healthy",
                "1 while the tiered cache may serve from memory (its pub/sub lease is live), "
                "else 0.",
                value=1 if cache["healthy"] else 0,
            )
        if "ack_timeouts" in cache:
            yield core.CounterMetricFamily(
                "gateway_cache_ack_timeouts",
                "Invalidations of the tiered cache that some instance did not acknowledge in time.",
                value=cache["ack_timeouts"],
            )
        if "invalidation_lag_ms" in cache:
            yield from self._invalidation_lag(cache["invalidation_lag_ms"] or {})
        breaker = core.GaugeMetricFamily(
            "gateway_cache_breaker_state",
            "The cache circuit breaker's state (1 for the current one).",
            labels=["state"],
        )
        for state in _BREAKER_STATES:
            breaker.add_metric([state], 1 if stats.get("breaker") == state else 0)
        yield breaker

    def _streams(self, streams: Mapping[str, Any]) -> Iterator[Any]:
        """The stream follower's progress per collection (``stats()["streams"]``, present
        while the gateway follows the DynamoDB streams); no lag sample before a record of the
        collection was applied."""
        core = self._core
        applied = core.CounterMetricFamily(
            "gateway_stream_records_applied",
            "DynamoDB stream records applied to the cache, per collection.",
            labels=["collection"],
        )
        lag = core.GaugeMetricFamily(
            "gateway_stream_lag_seconds",
            "Seconds from DynamoDB writing the newest record applied to the cache having it, "
            "per collection.",
            labels=["collection"],
        )
        shards = core.GaugeMetricFamily(
            "gateway_stream_shards_held",
            "Stream shards this follower holds the lease of, per collection.",
            labels=["collection"],
        )
        for name, collection in sorted((streams.get("collections") or {}).items()):
            applied.add_metric([name], collection.get("records_applied", 0))
            if collection.get("lag_s") is not None:
                lag.add_metric([name], collection["lag_s"])
            shards.add_metric([name], collection.get("shards_held", 0))
        yield applied
        yield lag
        yield shards

    def _invalidation_lag(self, lag: Mapping[str, Any]) -> Iterator[Any]:
        """The tiered cache's invalidation lag (publish -> applied) over its recent window;
        no sample until an invalidation was received."""
        core = self._core
        quantiles = core.GaugeMetricFamily(
            "gateway_cache_invalidation_lag_seconds",
            "Delay from publishing an invalidation to applying it here, over the last "
            "invalidations received, in seconds.",
            labels=["quantile"],
        )
        for quantile, key in _LAG_QUANTILES:
            if lag.get(key) is not None:
                quantiles.add_metric([quantile], lag[key] * _S_PER_MS)
        yield quantiles
        largest = core.GaugeMetricFamily(
            "gateway_cache_invalidation_lag_max_seconds",
            "The largest invalidation lag over the last invalidations received, in seconds.",
        )
        if lag.get("max") is not None:
            largest.add_metric([], lag["max"] * _S_PER_MS)
        yield largest
        yield core.GaugeMetricFamily(
            "gateway_cache_invalidation_lag_samples",
            "Invalidations received that the lag quantiles are computed over.",
            value=lag.get("samples", 0),
        )

    def _batching(self, batching: Mapping[str, Mapping[str, Any]]) -> Iterator[Any]:
        core = self._core
        for key, name, documentation in _BATCHING_COUNTERS:
            family = core.CounterMetricFamily(name, documentation, labels=["direction"])
            for direction, counters in sorted(batching.items()):
                if key in counters:
                    family.add_metric([direction], counters[key])
            yield family

    def _capacity(self, stats: Mapping[str, Any]) -> Iterator[Any]:
        core = self._core
        capacity = stats.get("consumed_capacity") or {}
        consumed = core.CounterMetricFamily(
            "gateway_dynamodb_consumed_capacity_units",
            "Capacity units consumed, as DynamoDB reports them (or estimated when it does not).",
            labels=["operation", "kind"],
        )
        for operation, units in sorted((capacity.get("by_operation") or {}).items()):
            for kind in ("read", "write"):
                if units.get(f"{kind}_units"):
                    consumed.add_metric([operation, kind], units[f"{kind}_units"])
        yield consumed
        estimated = core.CounterMetricFamily(
            "gateway_dynamodb_estimated_capacity_units",
            "The part of the consumed capacity units that was estimated from item sizes.",
            labels=["kind"],
        )
        for kind in ("read", "write"):
            estimated.add_metric([kind], capacity.get(f"estimated_{kind}_units", 0.0))
        yield estimated
        cost = stats.get("cost") or {}
        yield core.CounterMetricFamily(
            "gateway_dynamodb_cost_dollars",
            "Estimated cost of the consumed capacity at on-demand prices, in dollars.",
            value=cost.get("dollars", 0.0),
        )
        if "per_million_requests" in cost:
            yield core.GaugeMetricFamily(
                "gateway_dynamodb_cost_per_million_requests_dollars",
                "Estimated cost of a million DynamoDB requests at the observed mix, in dollars.",
                value=cost["per_million_requests"],
            )
        if "per_million_ops" in cost:
            yield core.GaugeMetricFamily(
                "gateway_cost_per_million_ops_dollars",
                "Estimated DynamoDB cost of a million gateway calls at the observed mix and "
                "hit ratio, in dollars.",
                value=cost["per_million_ops"],
            )

    def _latency(
        self, name: str, what: str, snapshots: Mapping[str, Mapping[str, Any]]
    ) -> Iterator[Any]:
        core = self._core
        summary = core.SummaryMetricFamily(
            f"{name}_seconds", f"{what}, in seconds.", labels=["operation"]
        )
        largest = core.GaugeMetricFamily(
            f"{name}_max_seconds", f"{what}: the slowest so far, in seconds.", labels=["operation"]
        )
        for operation, snap in sorted(snapshots.items()):
            count = int(snap.get("count", 0))
            for quantile, key in QUANTILES:
                summary.add_sample(
                    f"{name}_seconds",
                    {"operation": operation, "quantile": quantile},
                    snap.get(key, 0.0) * _S_PER_US,
                )
            summary.add_metric([operation], count, snap.get("mean_us", 0.0) * count * _S_PER_US)
            largest.add_metric([operation], snap.get("max_us", 0.0) * _S_PER_US)
        yield summary
        yield largest


@dataclass
class RunningExporter:
    """An exporter serving ``/metrics`` over HTTP; ``close()`` stops it."""

    registry: Any
    server: Any
    thread: threading.Thread | None
    addr: str
    port: int

    @property
    def url(self) -> str:
        """The URL to scrape."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5.0)

    def __enter__(self) -> RunningExporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_exporter(service: StatsSource, port: int, addr: str = DEFAULT_ADDR) -> RunningExporter:
    """Serve ``service``'s stats as Prometheus metrics on ``http://addr:port/metrics`` from a
    daemon thread, with a registry of its own. ``port=0`` picks a free port (see
    ``.port``). Raises `ConfigError` when prometheus-client is not installed."""
    prometheus_client = _prometheus()
    registry = prometheus_client.CollectorRegistry()
    registry.register(PrometheusExporter(service))
    started = prometheus_client.start_http_server(port, addr=addr, registry=registry)
    # prometheus-client >= 0.19 returns (server, thread); keep working if one does not.
    server, thread = started if isinstance(started, tuple) else (None, None)
    bound = int(server.server_address[1]) if server is not None else port
    return RunningExporter(registry, server, thread, addr, bound)


__all__ = [
    "METRICS_INSTALL_HINT",
    "PrometheusExporter",
    "RunningExporter",
    "start_exporter",
]
