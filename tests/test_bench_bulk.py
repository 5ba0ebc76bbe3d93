"""``scripts/bench_bulk.py`` end to end with tiny numbers, in a subprocess with a clean
environment: both tables (items/s, then each side's CPU busy), a row per operation, exit 0. No
figure is asserted (the machine's speed is not under test); the benchmark's run is in the
README. And the CPU reading the second table rests on."""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

from tests.script_runs import ROOT, run_python

SCRIPT = ROOT / "scripts" / "bench_bulk.py"
TIMEOUT_S = 240
sys.path.insert(0, str(ROOT / "scripts"))

import bench_bulk  # noqa: E402  (a script, found on the path above)


def test_bench_bulk_prints_rates_and_cpu_busy() -> None:
    result = run_python(
        [str(SCRIPT), "--docs", "60", "--latency-ms", "0", "--rows", "bulk"], TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rates, _, busy = result.stdout.partition("CPU busy during the call")
    assert busy, result.stdout
    for label in ("save_many", "delete_many"):
        assert re.search(rf"^\s+0ms\s+{label}\s+[\d,]+\s+-\s+[\d,]+\s+[\d.]+x", rates, re.M)
        # For each side its wall time, then the client's and the emulator's busy share (the
        # emulator's read from /proc, on Linux, where this suite runs).
        assert re.search(
            rf"^\s+0ms\s+{label}\s+[\d.]+s(\s+\d+%){{2}}\s+[\d.]+s(\s+\d+%){{2}}\s*$", busy, re.M
        ), busy


def test_cpu_of_a_process_counts_its_work_and_none_when_unreadable() -> None:
    before = bench_bulk.process_cpu_s(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    after = bench_bulk.process_cpu_s(os.getpid())
    assert after is not None and after - before >= 0.2  # clock ticks: 10 ms granularity
    assert bench_bulk.process_cpu_s(None) is None
    assert bench_bulk.process_cpu_s(2**22 + 12345) is None  # above pid_max: no such process


def test_a_timed_call_reports_the_busy_share_of_each_side(monkeypatch: pytest.MonkeyPatch) -> None:
    # This process stands in for the emulator: a call that burns CPU shows on both sides.
    monkeypatch.setattr(bench_bulk, "EMULATOR_PID", os.getpid())

    def burn() -> None:
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:
            pass

    timing = bench_bulk.timed(100, burn)
    assert timing.rate == pytest.approx(100 / timing.wall_s)
    # CPU seconds, not shares of the wall time: a busy machine may give this test half a core.
    assert timing.client_busy * timing.wall_s >= 0.25
    assert timing.emulator_busy is not None
    assert timing.emulator_busy * timing.wall_s >= 0.2  # clock ticks: 10 ms granularity
    monkeypatch.setattr(bench_bulk, "EMULATOR_PID", None)
    assert bench_bulk.timed(1, lambda: None).emulator_busy is None
