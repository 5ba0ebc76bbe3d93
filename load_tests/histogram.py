"""Latency histograms in whole microseconds, mergeable across locust processes.

Locust keeps response times in milliseconds and rounds its percentiles to whole milliseconds,
which turns every cache hit (a few microseconds) into "0 ms". The load test therefore keeps its
own histogram of get latencies in microseconds.

A histogram rather than a list of samples: its memory is bounded however long the test runs,
every sample counts (no reservoir), and two histograms merge by adding counts, which is how the
locust master combines its workers' reports. Values below `EXACT_BELOW_US` are kept exactly;
larger ones keep their `SIGNIFICANT_BITS` leading bits (a relative error below 0.2 %), the way
HdrHistogram buckets values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

#: Latencies below this many microseconds are counted exactly, one bucket per microsecond.
EXACT_BELOW_US = 1024
#: Leading bits kept of larger latencies.
SIGNIFICANT_BITS = 10


def bucket_of(value_us: int) -> int:
    """The bucket (its lower bound, in µs) that ``value_us`` is counted in."""
    if value_us < EXACT_BELOW_US:
        return max(0, value_us)
    shift = value_us.bit_length() - SIGNIFICANT_BITS
    return (value_us >> shift) << shift


class MicrosecondHistogram:
    """Counts of latencies in µs, bucketed by `bucket_of`; the maximum is kept exactly."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self.count = 0
        self.max_us = 0

    def record(self, value_us: int) -> None:
        """Count one latency of ``value_us`` microseconds."""
        self._counts[bucket_of(value_us)] += 1
        self.count += 1
        if value_us > self.max_us:
            self.max_us = value_us

    def merge(self, other: MicrosecondHistogram) -> None:
        """Add every count of ``other`` to this histogram."""
        self._counts.update(other._counts)
        self.count += other.count
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, q: float) -> int:
        """The ``q``-th percentile (0 < q <= 100) in µs: the bucket holding that rank (p100 is
        the exact maximum).

        Raises ValueError when the histogram is empty or ``q`` is out of range.
        """
        if not 0 < q <= 100:
            raise ValueError(f"q must be within (0, 100], got {q!r}")
        if not self.count:
            raise ValueError("no latency was recorded")
        rank = max(1, math.ceil(self.count * q / 100))
        if rank >= self.count:
            return self.max_us  # exact, where the bucket would round down
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                return min(bucket, self.max_us)
        return self.max_us  # unreachable: the counts add up to `count`

    def to_wire(self) -> dict[str, object]:
        """A msgpack/JSON-friendly form (locust sends worker reports with msgpack)."""
        return {"buckets": sorted(self._counts.items()), "max_us": self.max_us}

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> MicrosecondHistogram:
        """The histogram that `to_wire` described."""
        histogram = cls()
        buckets = data.get("buckets", [])
        assert isinstance(buckets, Iterable)
        for bucket, count in buckets:
            histogram._counts[int(bucket)] += int(count)
            histogram.count += int(count)
        max_us = data.get("max_us", 0)
        histogram.max_us = int(max_us) if isinstance(max_us, int) else 0
        return histogram

    def __repr__(self) -> str:
        return f"MicrosecondHistogram(count={self.count}, max_us={self.max_us})"
