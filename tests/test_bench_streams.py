"""``scripts/bench_streams.py`` end to end with tiny numbers, in a subprocess with a clean
environment: it prints both of its tables, a row per backend, and exits 0. No figure is
asserted (the machine's speed is not under test); the benchmark's own run is in the README.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_streams.py"
TIMEOUT_S = 240
TINY_RUN = [
    *("--keys", "60", "--rate", "20", "--duration", "1", "--visible-s", "3"),
    *("--cost-duration", "1", "--repeat", "1", "--threads", "2"),
]


def clean_environment() -> dict[str, str]:
    """This environment without the settings' variables or AWS's (as ``gateway bench``'s
    subprocess test): the script must need none of them."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "DYNAMODB_", "GATEWAY_", "CACHE_", "REDIS_"))
        and name not in ("COLLECTIONS", "RETRY", "COALESCING", "STREAMS_INVALIDATION")
    }
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


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
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--backends", ",".join(backends), *TINY_RUN],
        env=clean_environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
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
