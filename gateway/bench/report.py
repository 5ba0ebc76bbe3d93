"""The bench's results for people and machines: rows, a rich table, JSON and a chart.

Every row compares one backend with the bare service run in the same bench (same emulator,
same key sequences, same injected latency): ops/s, p50 / p99 latency in µs, the cache's hit
ratio, DynamoDB requests per 1000 operations and the on-demand dollars per million operations.
The chart (``--chart FILE.png``) needs matplotlib, from the ``bench`` extra, imported only then.
"""

from __future__ import annotations

import importlib.util
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from gateway.bench.cost import (
    READ_PRICE_PER_MILLION_USD,
    WRITE_PRICE_PER_MILLION_USD,
    RequestUnits,
    units_for_calls,
)
from gateway.bench.runner import BackendRun
from gateway.errors import ConfigError

BARE = "bare"
CHART_HINT = "pip install 'dynamodb-gateway[bench]'"
#: Points per backend on the latency CDF (quantiles of the sorted samples).
CDF_POINTS = 2000
#: The chart's title is wrapped at this many characters.
TITLE_WIDTH_CHARS = 110
TIMES = "\N{MULTIPLICATION SIGN}"
DIVIDED = "\N{DIVISION SIGN}"


@dataclass(frozen=True)
class Row:
    """One backend's figures (the JSON of ``gateway bench --json`` has one per backend)."""

    backend: str
    operations: int
    reads: int
    writes: int
    errors: int
    elapsed_s: float
    ops_per_s: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    hit_ratio: float | None
    db_calls: int
    db_calls_by_operation: dict[str, int]
    db_calls_per_1000_ops: float
    read_units: float
    write_units: float
    dollars_per_million_ops: float
    #: ``consumed_capacity`` (reported by the service) or ``estimated`` (see bench/cost.py).
    cost_source: str
    #: This backend's figure divided by the bare service's (None without a bare run).
    vs_bare: dict[str, float | None] | None
    first_error: str | None


def build_rows(runs: Sequence[BackendRun], *, item_bytes: int, consistent: bool) -> list[Row]:
    """One `Row` per run, with ratios against the run named ``bare`` when there is one."""
    rows = [_row(run, item_bytes=item_bytes, consistent=consistent) for run in runs]
    bare = next((row for row in rows if row.backend == BARE), None)
    if bare is None:
        return rows
    return [_with_ratios(row, bare) for row in rows]


def _row(run: BackendRun, *, item_bytes: int, consistent: bool) -> Row:
    units, source = _units(run, item_bytes=item_bytes, consistent=consistent)
    ops = run.operations
    return Row(
        backend=run.name,
        operations=ops,
        reads=run.reads,
        writes=run.writes,
        errors=run.errors,
        elapsed_s=round(run.elapsed_s, 3),
        ops_per_s=round(run.ops_per_s, 1),
        p50_us=round(run.percentile_us(50), 1),
        p90_us=round(run.percentile_us(90), 1),
        p99_us=round(run.percentile_us(99), 1),
        p999_us=round(run.percentile_us(99.9), 1),
        hit_ratio=None if run.hit_ratio is None else round(run.hit_ratio, 4),
        db_calls=run.db_call_count,
        db_calls_by_operation=dict(run.db_calls),
        db_calls_per_1000_ops=round(run.db_call_count * 1000 / ops, 2) if ops else 0.0,
        read_units=round(units.read, 1),
        write_units=round(units.write, 1),
        dollars_per_million_ops=round(units.dollars_per_million(ops), 4),
        cost_source=source,
        vs_bare=None,
        first_error=run.first_error,
    )


def _units(run: BackendRun, *, item_bytes: int, consistent: bool) -> tuple[RequestUnits, str]:
    """The service's consumed capacity when it reports some, else the estimate from calls."""
    estimated = units_for_calls(run.db_calls, item_bytes, consistent=consistent, items=run.db_items)
    consumed = run.consumed
    # An emulator that does not report capacity shows zero for real calls: estimate then.
    if consumed is not None and (consumed.read + consumed.write > 0 or not estimated.dollars):
        return consumed, "consumed_capacity"
    return estimated, "estimated"


_RATIO_FIELDS = (
    "ops_per_s",
    "p50_us",
    "p99_us",
    "db_calls_per_1000_ops",
    "dollars_per_million_ops",
)


def _with_ratios(row: Row, bare: Row) -> Row:
    ratios: dict[str, float | None] = {}
    for name in _RATIO_FIELDS:
        mine, theirs = getattr(row, name), getattr(bare, name)
        ratios[name] = float(f"{mine / theirs:.4g}") if theirs else None
    return Row(**{**asdict(row), "vs_bare": ratios})


def as_json(
    rows: Sequence[Row],
    *,
    workload: Mapping[str, Any],
    target: str,
    item_bytes: int,
    skipped: Mapping[str, str],
) -> dict[str, Any]:
    """The document ``gateway bench --json`` prints."""
    return {
        "workload": dict(workload),
        "target": target,
        "item_bytes": item_bytes,
        "prices_usd_per_million": {
            "read_request_units": READ_PRICE_PER_MILLION_USD,
            "write_request_units": WRITE_PRICE_PER_MILLION_USD,
        },
        "results": [asdict(row) for row in rows],
        "skipped": dict(skipped),
    }


def format_ratio(ratio: float | None) -> str:
    """``x12.3`` (multiplication sign) for 12.3 times the bare figure, ``/4.0`` (division
    sign) for a quarter of it."""
    if ratio is None or math.isnan(ratio):
        return ""
    if ratio == 0:
        return f"{DIVIDED}\N{INFINITY}"
    if ratio >= 1:
        return f"{TIMES}{ratio:,.0f}" if ratio >= 100 else f"{TIMES}{ratio:.1f}"
    inverse = 1 / ratio
    return f"{DIVIDED}{inverse:,.0f}" if inverse >= 100 else f"{DIVIDED}{inverse:.1f}"


def table(rows: Sequence[Row], title: str) -> Table:
    """A rich table of ``rows``; under each figure, its ratio to the bare service's."""
    result = Table(
        title=title,
        caption=f"{TIMES}N: N times the bare service's figure; {DIVIDED}N: 1/N of it.",
        title_justify="left",
    )
    show_errors = any(row.errors for row in rows)
    result.add_column("backend")
    for header in (
        "ops/s",
        "p50 µs",
        "p99 µs",
        "hit ratio",
        "DDB calls\n/1000 ops",
        "$ per\nmillion ops",
    ):
        result.add_column(header, justify="right")
    if show_errors:
        result.add_column("errors", justify="right")

    def cell(row: Row, text: str, field: str) -> str:
        ratio = format_ratio((row.vs_bare or {}).get(field)) if row.backend != BARE else ""
        return f"{text}\n[dim]{ratio}[/dim]" if ratio else text

    for row in rows:
        cells = [
            row.backend,
            cell(row, f"{row.ops_per_s:,.0f}", "ops_per_s"),
            cell(row, _micros(row.p50_us), "p50_us"),
            cell(row, _micros(row.p99_us), "p99_us"),
            "-" if row.hit_ratio is None else f"{row.hit_ratio:.1%}",
            cell(row, f"{row.db_calls_per_1000_ops:,.1f}", "db_calls_per_1000_ops"),
            cell(row, f"{row.dollars_per_million_ops:.3f}", "dollars_per_million_ops"),
        ]
        if show_errors:
            cells.append(f"{row.errors:,}")
        result.add_row(*cells)
    return result


def _micros(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def check_chart_support() -> None:
    """Raise `ConfigError` with the install command when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(f"--chart needs matplotlib: {CHART_HINT}")


def write_chart(runs: Sequence[BackendRun], path: str | Path, title: str) -> Path:
    """A PNG with each backend's latency CDF (log µs) and its ops/s, side by side."""
    check_chart_support()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.8), layout="constrained")
    cdf, bars = figure.subplots(1, 2, width_ratios=[3, 2])
    for run in runs:
        xs, ys = _cdf_points(run.latencies_us)
        if xs:
            cdf.step(xs, ys, where="post", label=run.name, linewidth=1.6)
    cdf.set_xscale("log")
    cdf.set_xlabel("latency per operation (µs, log scale)")
    cdf.set_ylabel("fraction of operations at most this slow")
    cdf.set_ylim(0, 1.0)
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(loc="lower right")
    cdf.set_title("latency distribution (CDF)")

    names = [run.name for run in runs]
    throughput = [round(run.ops_per_s, 1) for run in runs]  # as rounded in the table
    drawn = bars.bar(names, throughput, color=[f"C{i}" for i in range(len(runs))])
    bars.bar_label(drawn, labels=[f"{value:,.0f}" for value in throughput], padding=2)
    bars.set_ylabel("operations per second")
    bars.set_title("throughput")
    bars.margins(y=0.15)
    bars.grid(True, axis="y", alpha=0.3)
    figure.suptitle(textwrap.fill(title, TITLE_WIDTH_CHARS), fontsize=10)
    target = Path(path)
    figure.savefig(target, dpi=110)
    return target


def _cdf_points(sorted_us: Sequence[float]) -> tuple[list[float], list[float]]:
    """At most `CDF_POINTS` (latency, fraction) pairs of a sorted sample."""
    count = len(sorted_us)
    if not count:
        return [], []
    step = max(1, count // CDF_POINTS)
    indexes = list(range(step - 1, count, step))
    if indexes[-1] != count - 1:
        indexes.append(count - 1)
    xs = [max(sorted_us[i], 0.1) for i in indexes]
    ys = [(i + 1) / count for i in indexes]
    return [xs[0], *xs], [0.0, *ys]
