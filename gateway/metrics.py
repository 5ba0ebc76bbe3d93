"""Latency histograms, consumed capacity and the on-demand cost estimate behind ``stats()``.

Latency
-------
`LatencyHistogram` counts durations into fixed, log-spaced buckets (`LATENCY_BOUNDS_NS`: 1 µs to
10 s, ten per decade on the "nice" steps 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, plus one bucket for
anything slower). ``record(ns)`` is one ``bisect`` plus three attribute updates, with no lock and no
allocation: about 0.1 µs (see docs/metrics.md for how to measure it). A percentile is the upper
bound of the bucket holding that rank (nearest-rank method), clamped to the largest duration
seen, so it overstates the true value by less than one bucket step (at most a third).

`SampledLatencyHistogram` is for a hot path (the gateway's ``get``, where a cache hit takes a
few µs): every call is counted, one in eight is timed, chosen by a Weyl sequence on the call
number so that no periodic workload is sampled unfairly.

Why no lock: under CPython's GIL a thread switch can only happen where the interpreter checks
for pending work (calls, backward jumps, function entry). ``counts[i] += 1`` with a list and an
int index, and ``self._sum_ns += ns``, compile to subscript / add / store instructions with no
such check between the load and the store, so increments are not lost in practice (the
thread-safety test hammers one histogram from 8 threads and counts exactly). The language does
not promise it, and a free-threaded build (3.13t) could lose an increment now and then; a lost
count in a latency histogram is negligible, while a lock would double the cost of recording.

Consumed capacity and cost
--------------------------
`CapacityMeter` adds up the read and write capacity units DynamoDB reports in each response's
``ConsumedCapacity`` (a dict for single-item calls, a list for batches), per operation. When a
response has none (an endpoint that does not report it), `estimate_capacity` computes the units
from item sizes with DynamoDB's rounding rules; the estimated part is shown separately.
`cost_dollars` prices units at on-demand rates (`READ_DOLLARS_PER_MILLION_UNITS`,
`WRITE_DOLLARS_PER_MILLION_UNITS`).
"""

from __future__ import annotations

import itertools
import math
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from gateway.codec import item_size

# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------

#: The bucket steps within one decade (a bucket's upper bound is step x 10^k µs).
LATENCY_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
#: Inclusive upper bounds of the latency buckets, in nanoseconds: 1 µs, 1.2 µs, ... 8 s, 10 s.
#: One more bucket, past the last bound, counts anything slower than 10 s.
LATENCY_BOUNDS_NS: tuple[int, ...] = (
    *(round(step * 10**decade * 1000) for decade in range(7) for step in LATENCY_STEPS),
    10_000_000_000,
)
_NS_PER_US = 1000.0


class LatencyHistogram:
    """Durations in log-spaced buckets; ``record`` is lock-free (see the module docstring)."""

    __slots__ = ("_counts", "_max_ns", "_sum_ns")

    def __init__(self) -> None:
        self._counts = [0] * (len(LATENCY_BOUNDS_NS) + 1)
        self._sum_ns = 0
        self._max_ns = 0

    def record(self, ns: int) -> None:
        """Count one duration of ``ns`` nanoseconds."""
        self._counts[bisect_left(LATENCY_BOUNDS_NS, ns)] += 1
        self._sum_ns += ns
        if ns > self._max_ns:
            self._max_ns = ns

    @property
    def count(self) -> int:
        """How many durations were recorded."""
        return sum(self._counts)

    def bucket_counts(self) -> list[int]:
        """A copy of the per-bucket counts (one per bound in `LATENCY_BOUNDS_NS`, then +Inf)."""
        return list(self._counts)

    def percentile_us(self, q: float, counts: list[int] | None = None) -> float:
        """The ``q``-quantile (0 < q <= 1) in µs: the upper bound of the bucket that holds
        rank ceil(q * count), at most the largest duration seen; 0.0 when nothing was
        recorded."""
        counts = self.bucket_counts() if counts is None else counts
        total = sum(counts)
        if not total:
            return 0.0
        rank = max(1, math.ceil(q * total))
        max_us = self._max_ns / _NS_PER_US
        seen = 0
        for index, n in enumerate(counts):
            seen += n
            if seen >= rank:
                if index == len(LATENCY_BOUNDS_NS):
                    return max_us
                return min(LATENCY_BOUNDS_NS[index] / _NS_PER_US, max_us)
        return max_us  # only reachable if counts changed under us

    def snapshot(self) -> dict[str, float | int]:
        """``{count, p50_us, p90_us, p99_us, max_us, mean_us}`` (all 0 when empty)."""
        counts = self.bucket_counts()
        total = sum(counts)
        return {
            "count": total,
            "p50_us": self.percentile_us(0.50, counts),
            "p90_us": self.percentile_us(0.90, counts),
            "p99_us": self.percentile_us(0.99, counts),
            "max_us": self._max_ns / _NS_PER_US,
            "mean_us": self._sum_ns / total / _NS_PER_US if total else 0.0,
        }


#: 2**32 / the golden ratio. Multiplying the call number by it gives a Weyl sequence, which
#: spreads the timed calls evenly over every residue class: a workload that repeats with any
#: period (say, one miss then seven hits) is sampled fairly, where "every 8th call" could time
#: only its misses.
WEYL_MULTIPLIER = 0x9E3779B9
#: A call is timed when ``tick * WEYL_MULTIPLIER`` has these bits clear (the top 3 of its low 32
#: bits): one call in eight.
SAMPLE_ONE_IN_8 = 0xE0000000


class SampledLatencyHistogram(LatencyHistogram):
    """A histogram for a hot path: every call is counted, one in eight is timed.

    Two clock reads and a bisect cost about 0.4 µs in place, 7% of an in-process cache hit;
    timing one call in eight brings that to about 0.2 µs. The caller does, per call::

        start = 0 if histogram.tick() * WEYL_MULTIPLIER & SAMPLE_ONE_IN_8 else perf_counter_ns()
        ...
        if start:
            histogram.record(perf_counter_ns() - start)

    ``count`` is every call (``tick`` is an ``itertools.count``, atomic in CPython); the
    percentiles, mean and max are those of the timed calls. The first call is always timed.
    """

    __slots__ = ("_calls", "tick")

    def __init__(self) -> None:
        super().__init__()
        self._calls = itertools.count()
        #: Call once per call: the call's number, to test against `SAMPLE_ONE_IN_8`.
        self.tick = self._calls.__next__

    @staticmethod
    def timed(tick: int) -> bool:
        """Whether the call numbered ``tick`` is one of those timed."""
        return not (tick * WEYL_MULTIPLIER & SAMPLE_ONE_IN_8)

    @property
    def count(self) -> int:
        """How many calls were counted (timed or not)."""
        # repr is "count(N)": the only way to read an itertools.count without advancing it.
        return int(repr(self._calls)[6:-1])

    def snapshot(self) -> dict[str, float | int]:
        """Like `LatencyHistogram.snapshot`, with ``count`` the number of calls."""
        snapshot = super().snapshot()
        snapshot["count"] = self.count
        return snapshot


class LatencyRecorder:
    """One `LatencyHistogram` per operation name, created on first use."""

    def __init__(self) -> None:
        self._histograms: dict[str, LatencyHistogram] = {}
        self._lock = threading.Lock()

    def histogram(self, operation: str) -> LatencyHistogram:
        """The histogram of ``operation`` (hold on to it to record without a dict lookup)."""
        histogram = self._histograms.get(operation)
        if histogram is None:
            with self._lock:
                histogram = self._histograms.setdefault(operation, LatencyHistogram())
        return histogram

    def sampled_histogram(self, operation: str) -> SampledLatencyHistogram:
        """A `SampledLatencyHistogram` for ``operation`` (created now, replacing none)."""
        with self._lock:
            histogram = self._histograms.get(operation)
            if not isinstance(histogram, SampledLatencyHistogram):
                if histogram is not None:
                    raise ValueError(f"{operation!r} already has an unsampled histogram")
                histogram = self._histograms[operation] = SampledLatencyHistogram()
        return histogram

    def record(self, operation: str, ns: int) -> None:
        """Count one duration of ``ns`` nanoseconds for ``operation``."""
        histogram = self._histograms.get(operation) or self.histogram(operation)
        histogram.record(ns)

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        """Operation -> its histogram's snapshot, for the operations that recorded anything."""
        with self._lock:
            histograms = sorted(self._histograms.items())
        snapshots = {name: histogram.snapshot() for name, histogram in histograms}
        return {name: snap for name, snap in snapshots.items() if snap["count"]}


# --------------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------------

#: On-demand price of reads: dollars per million read request units (one unit = a strongly
#: consistent read of up to 4 KB, or two eventually consistent ones).
READ_DOLLARS_PER_MILLION_UNITS = 0.25
#: On-demand price of writes: dollars per million write request units (one unit = a write of
#: up to 1 KB).
WRITE_DOLLARS_PER_MILLION_UNITS = 1.25


def cost_dollars(
    read_units: float,
    write_units: float,
    *,
    read_dollars_per_million: float = READ_DOLLARS_PER_MILLION_UNITS,
    write_dollars_per_million: float = WRITE_DOLLARS_PER_MILLION_UNITS,
) -> float:
    """What ``read_units`` and ``write_units`` cost at on-demand prices, in dollars."""
    return (read_units * read_dollars_per_million + write_units * write_dollars_per_million) / 1e6


# --------------------------------------------------------------------------------------------
# Consumed capacity
# --------------------------------------------------------------------------------------------

#: Data-plane operations whose capacity is counted as reads / as writes.
READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
WRITE_OPERATIONS = frozenset(
    {"PutItem", "DeleteItem", "UpdateItem", "BatchWriteItem", "TransactWriteItems"}
)
#: DynamoDB's unit sizes: a read unit covers 4 KB, a write unit 1 KB (each item rounded up).
READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024

_deserializer = TypeDeserializer()


def read_units_for(size_bytes: int, consistent: bool) -> float:
    """Read units of reading ``size_bytes`` at once: 4 KB steps (at least one), halved when
    eventually consistent."""
    units = max(1, math.ceil(size_bytes / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def write_units_for(size_bytes: int) -> float:
    """Write units of writing an item of ``size_bytes``: 1 KB steps, at least one."""
    return float(max(1, math.ceil(size_bytes / WRITE_UNIT_BYTES)))


def reported_capacity(operation: str, consumed: Any) -> tuple[float, float] | None:
    """(read, write) units from a response's ``ConsumedCapacity`` (a dict, or a list of dicts
    for batches), or None when there is none. ``ReadCapacityUnits`` / ``WriteCapacityUnits``
    are used when present; otherwise ``CapacityUnits`` counts as reads or writes by operation.
    """
    if not consumed:
        return None
    entries: Iterable[Any] = [consumed] if isinstance(consumed, Mapping) else consumed
    read = write = 0.0
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        if "ReadCapacityUnits" in entry or "WriteCapacityUnits" in entry:
            read += float(entry.get("ReadCapacityUnits") or 0.0)
            write += float(entry.get("WriteCapacityUnits") or 0.0)
        elif operation in WRITE_OPERATIONS:
            write += float(entry.get("CapacityUnits") or 0.0)
        else:
            read += float(entry.get("CapacityUnits") or 0.0)
    return read, write


def estimate_capacity(
    operation: str, request: Mapping[str, Any] | None, response: Mapping[str, Any]
) -> tuple[float, float]:
    """(read, write) units DynamoDB charges for a call, computed from item sizes.

    Used when a response carries no ``ConsumedCapacity``. DynamoDB's rules, as far as the
    request and response show them: ``GetItem`` the item's size in 4 KB steps (a missing item
    still costs one step), halved unless ``ConsistentRead``; ``BatchGetItem`` the same per
    processed key; ``Query`` / ``Scan`` the total size of the page in 4 KB steps; ``PutItem``
    the new item in 1 KB steps (DynamoDB charges the larger of the old and new item: the old
    one is not known here); ``DeleteItem`` the removed item (``ReturnValues=ALL_OLD``) in 1 KB
    steps, at least one; ``BatchWriteItem`` each processed request (a delete counts one unit).
    Item sizes are `gateway.codec.item_size`'s.
    """
    request = request or {}
    if operation == "GetItem":
        item = response.get("Item")
        consistent = bool(request.get("ConsistentRead"))
        return read_units_for(item_size(item) if item else 0, consistent), 0.0
    if operation in ("Query", "Scan"):
        size = sum(item_size(item) for item in response.get("Items") or ())
        return read_units_for(size, bool(request.get("ConsistentRead"))), 0.0
    if operation == "BatchGetItem":
        return _batch_get_units(request, response), 0.0
    if operation == "PutItem":
        return 0.0, write_units_for(item_size(request.get("Item") or {}))
    if operation == "DeleteItem":
        old = response.get("Attributes")
        return 0.0, write_units_for(item_size(old) if old else 0)
    if operation == "BatchWriteItem":
        sent = _batch_write_units(request.get("RequestItems") or {})
        return 0.0, sent - _batch_write_units(response.get("UnprocessedItems") or {})
    return 0.0, 0.0


def _batch_get_units(request: Mapping[str, Any], response: Mapping[str, Any]) -> float:
    units = 0.0
    responses = response.get("Responses") or {}
    unprocessed = response.get("UnprocessedKeys") or {}
    for table, asked in (request.get("RequestItems") or {}).items():
        consistent = bool(asked.get("ConsistentRead"))
        items = responses.get(table) or []
        left = (unprocessed.get(table) or {}).get("Keys") or ()
        processed = len(asked.get("Keys") or ()) - len(left)
        units += sum(read_units_for(item_size(item), consistent) for item in items)
        # Keys that found nothing still cost the minimum read.
        units += max(0, processed - len(items)) * read_units_for(0, consistent)
    return units


def _batch_write_units(request_items: Mapping[str, Any]) -> float:
    units = 0.0
    for requests in request_items.values():
        for request in requests:
            put = request.get("PutRequest")
            units += write_units_for(item_size(put.get("Item") or {}) if put else 0)
    return units


def condition_failure_units(stored: Mapping[str, Any] | None) -> float:
    """Write units of a conditional write whose condition failed: DynamoDB still charges the
    size of the stored item (``ReturnValuesOnConditionCheckFailure`` hands it back, in the
    low-level format), at least one unit. Its error response reports no capacity."""
    if not stored:
        return write_units_for(0)
    try:
        item = {name: _deserializer.deserialize(value) for name, value in stored.items()}
    except (TypeError, ValueError, AttributeError):
        return write_units_for(0)
    return write_units_for(item_size(item))


class CapacityMeter:
    """Read and write capacity units consumed, per DynamoDB operation (thread-safe)."""

    def __init__(self) -> None:
        # operation -> [read units, write units, estimated read units, estimated write units]
        self._units: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def add(self, operation: str, read: float, write: float, *, estimated: bool = False) -> None:
        """Count ``read`` and ``write`` units for ``operation`` (``estimated``: not reported
        by DynamoDB but computed)."""
        with self._lock:
            units = self._units.get(operation)
            if units is None:
                units = self._units[operation] = [0.0, 0.0, 0.0, 0.0]
            units[0] += read
            units[1] += write
            if estimated:
                units[2] += read
                units[3] += write

    def add_response(
        self,
        operation: str,
        response: Any,
        request: Mapping[str, Any] | None = None,
        *,
        estimate: bool = True,
    ) -> None:
        """Count what a data-plane response reports; when it reports nothing and
        ``estimate`` is true, count `estimate_capacity`'s units instead."""
        if operation not in READ_OPERATIONS and operation not in WRITE_OPERATIONS:
            return
        if not isinstance(response, Mapping):
            return
        reported = reported_capacity(operation, response.get("ConsumedCapacity"))
        if reported is not None:
            self.add(operation, *reported)
        elif estimate:
            self.add(operation, *estimate_capacity(operation, request, response), estimated=True)

    def snapshot(self) -> dict[str, Any]:
        """``{read_units, write_units, estimated_read_units, estimated_write_units,
        by_operation: {operation: {read_units, write_units}}}``."""
        with self._lock:
            units = {operation: list(values) for operation, values in self._units.items()}
        totals = [sum(values[i] for values in units.values()) for i in range(4)]
        return {
            "read_units": totals[0],
            "write_units": totals[1],
            "estimated_read_units": totals[2],
            "estimated_write_units": totals[3],
            "by_operation": {
                operation: {"read_units": values[0], "write_units": values[1]}
                for operation, values in sorted(units.items())
            },
        }


__all__ = [
    "LATENCY_BOUNDS_NS",
    "READ_DOLLARS_PER_MILLION_UNITS",
    "SAMPLE_ONE_IN_8",
    "WEYL_MULTIPLIER",
    "WRITE_DOLLARS_PER_MILLION_UNITS",
    "CapacityMeter",
    "LatencyHistogram",
    "LatencyRecorder",
    "SampledLatencyHistogram",
    "condition_failure_units",
    "cost_dollars",
    "estimate_capacity",
    "read_units_for",
    "reported_capacity",
    "write_units_for",
]
