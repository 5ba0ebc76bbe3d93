"""The bench's results for people and machines: rows, a rich table, JSON and a chart.

Every row compares one backend with the bare service run in the same bench (same emulator,
same key sequences, same injected latency): ops/s, p50 / p99 latency in µs, the cache's hit
ratio, DynamoDB requests per 1000 operations, the on-demand dollars per million operations and
the stale reads (`gateway.bench.stale`). Each gateway backend is also compared with its peer,
the cache a user would otherwise write (`PEERS`: the hand-rolled ``naive`` for the in-process
``memory`` and ``tiered``, ``dogpile`` for ``redis``), when that peer ran: ``vs_peer`` in the
JSON, its ops/s ratio in the table.
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
from gateway.bench.runner import HEALTH_COUNTERS, BackendRun
from gateway.errors import ConfigError

BARE = "bare"
#: The peer each gateway backend is compared with (`gateway.bench.peers`).
PEERS = {"memory": "naive", "tiered": "naive", "redis": "dogpile"}
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
    #: Reads that answered older than a write acknowledged before they started.
    stale_reads: int = 0
    #: Reads that had an acknowledged write to be judged against.
    checked_reads: int = 0
    #: The backend this one is compared with in ``vs_peer`` (`PEERS`), when it ran.
    peer: str | None = None
    #: This backend's figure divided by its peer's.
    vs_peer: dict[str, float | None] | None = None
    #: A gateway's cache errors, fallbacks, refused writes, pending repairs and breaker state
    #: at the end of its run (`gateway.bench.runner.cache_health`); None for the others.
    cache_health: dict[str, Any] | None = None


def build_rows(runs: Sequence[BackendRun], *, item_bytes: int, consistent: bool) -> list[Row]:
    """One `Row` per run, with ratios against the run named ``bare`` when there is one, and
    against the backend's peer (`PEERS`) when that ran."""
    rows = [_row(run, item_bytes=item_bytes, consistent=consistent) for run in runs]
    by_name = {row.backend: row for row in rows}
    bare = by_name.get(BARE)
    out: list[Row] = []
    for row in rows:
        update: dict[str, Any] = {}
        if bare is not None:
            update["vs_bare"] = _ratios(row, bare)
        peer = by_name.get(PEERS.get(row.backend, ""))
        if peer is not None:
            update.update(peer=peer.backend, vs_peer=_ratios(row, peer))
        out.append(Row(**{**asdict(row), **update}) if update else row)
    return out


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
        stale_reads=run.stale_reads,
        checked_reads=run.checked_reads,
        cache_health=None if run.cache_health is None else dict(run.cache_health),
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


def _ratios(row: Row, other: Row) -> dict[str, float | None]:
    ratios: dict[str, float | None] = {}
    for name in _RATIO_FIELDS:
        mine, theirs = getattr(row, name), getattr(other, name)
        ratios[name] = float(f"{mine / theirs:.4g}") if theirs else None
    return ratios


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


def health_problem(health: Mapping[str, Any]) -> bool:
    """Whether a `cache_health` shows the cache tier failing: a non-zero counter, or a breaker
    that is not closed."""
    return health.get("breaker", "closed") != "closed" or any(
        health.get(key) for key in HEALTH_COUNTERS
    )


def health_text(name: str, health: Mapping[str, Any]) -> str:
    """``redis: cache errors 0, fallbacks 0, breaker closed`` (plain text), with the refused
    writes and pending repairs when there are some."""
    parts = [
        f"cache errors {health.get('cache_errors', 0):,}",
        f"fallbacks {health.get('fallbacks', 0):,}",
    ]
    for key, label in (
        ("writes_refused", "writes refused"),
        ("pending_repairs", "pending repairs"),
    ):
        if health.get(key):
            parts.append(f"{label} {health[key]:,}")
    parts.append(f"breaker {health.get('breaker', 'closed')}")
    return f"{name}: " + ", ".join(parts)


def health_lines(rows: Sequence[Row]) -> list[str]:
    """One rich-markup line per gateway backend with its cache tier's health: dim when all
    is well, a bold yellow warning when the cache failed (errors, fallbacks, refused writes,
    pending repairs, a breaker not closed)."""
    lines = []
    for row in rows:
        if row.cache_health is None:
            continue
        text = health_text(row.backend, row.cache_health)
        if health_problem(row.cache_health):
            lines.append(f"[bold yellow]warning: {text}[/bold yellow]")
        else:
            lines.append(f"[dim]{text}[/dim]")
    return lines


def table(rows: Sequence[Row], title: str) -> Table:
    """A rich table of ``rows``; under each figure, its ratio to the bare service's; beside
    ops/s, the ratio to the peer's (when a peer ran); the stale reads. Its caption, under it,
    has each gateway backend's cache health (`health_lines`)."""
    show_peer = any(row.vs_peer for row in rows)
    caption = f"{TIMES}N: N times the bare service's figure; {DIVIDED}N: 1/N of it."
    if show_peer:
        caption += " vs peer: ops/s over the named peer's."
    caption = "\n".join([caption, *health_lines(rows)])
    result = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    show_errors = any(row.errors for row in rows)
    result.add_column("backend")
    result.add_column("ops/s", justify="right")
    if show_peer:
        result.add_column("vs\npeer", justify="right")
    for header in (
        "p50 µs",
        "p99 µs",
        "hit ratio",
        "DDB calls\n/1000 ops",
        "$ per\nmillion ops",
        "stale\nreads",
    ):
        result.add_column(header, justify="right")
    if show_errors:
        result.add_column("errors", justify="right")

    def cell(row: Row, text: str, field: str) -> str:
        ratio = format_ratio((row.vs_bare or {}).get(field)) if row.backend != BARE else ""
        return f"{text}\n[dim]{ratio}[/dim]" if ratio else text

    def peer_cell(row: Row) -> str:
        ratio = format_ratio((row.vs_peer or {}).get("ops_per_s"))
        return f"{ratio}\n[dim]{row.peer}[/dim]" if ratio else ""

    for row in rows:
        cells = [row.backend, cell(row, f"{row.ops_per_s:,.0f}", "ops_per_s")]
        if show_peer:
            cells.append(peer_cell(row))
        cells += [
            cell(row, _micros(row.p50_us), "p50_us"),
            cell(row, _micros(row.p99_us), "p99_us"),
            "-" if row.hit_ratio is None else f"{row.hit_ratio:.1%}",
            cell(row, f"{row.db_calls_per_1000_ops:,.1f}", "db_calls_per_1000_ops"),
            cell(row, f"{row.dollars_per_million_ops:.3f}", "dollars_per_million_ops"),
            f"[bold red]{row.stale_reads:,}[/bold red]" if row.stale_reads else "0",
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
