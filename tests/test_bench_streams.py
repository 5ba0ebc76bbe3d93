"""``scripts/bench_streams.py`` end to end with tiny numbers, in a subprocess with a clean
environment: it prints both of its tables, a row per backend, and exits 0. No figure is
asserted (the machine's speed is not under test); the benchmark's own run is in the README.
"""

from __future__ import annotations

from tests.script_runs import ROOT, run_python

SCRIPT = ROOT / "scripts" / "bench_streams.py"
TIMEOUT_S = 240
TINY_RUN = [
    *("--keys", "60", "--rate", "20", "--duration", "1", "--visible-s", "3"),
    *("--cost-duration", "1", "--repeat", "1", "--threads", "2"),
]


def rows(section: str, backends: list[str]) -> dict[str, str]:
    """The first line of each backend's row in one table of the output."""
    found: dict[str, str] = {}
    for line in section.splitlines():
        words = line.split()
        if words and words[0] in backends and words[0] not in found:
            found[words[0]] = line
    return found


def test_bench_streams_prints_both_tables() -> None:
    # One backend keeps the suite short; the others run the same code paths of the script
    # (tests/test_streams_integration.py covers them against Redis).
    backends = ["memory"]
    result = run_python([str(SCRIPT), "--backends", ",".join(backends), *TINY_RUN], TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    out = result.stdout
    lag_at, cost_at = out.find("outside-write lag:"), out.find("cost of following:")
    assert 0 <= lag_at < cost_at, out
    lag, cost = out[lag_at:cost_at], out[cost_at:]
    assert "p50 ms" in lag and "p99 ms" in lag and "unseen" in lag
    lag_rows = rows(lag, backends)
    assert sorted(lag_rows) == sorted(backends), lag
    for line in lag_rows.values():
        assert line.split()[1] == "all"  # each backend's first row sums up its writes
    assert "with / without" in cost and "with / elsewhere" in cost
    assert sorted(rows(cost, backends)) == sorted(backends), cost
