"""The load tests: short headless locust runs on the embedded emulator (one with the in-process
cache, one with the tiered cache on a real redis-server), the µs histogram, and the compose demo
app against the emulator.

The locustfile is never imported here: importing locust monkey-patches the process with gevent.
It runs in a subprocess, exactly as a developer runs it.
"""

from __future__ import annotations

import configparser
import csv
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import Settings, get_database_service
from load_tests.demo_app import DemoServer, make_server
from load_tests.histogram import EXACT_BELOW_US, MicrosecondHistogram, bucket_of
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = "load_tests/locustfile.py"
LOCUST_TIMEOUT_S = 180
#: -t of the runs below, in seconds.
RUN_TIME_S = 4
REDIS_RUN_TIME_S = 5
#: The measured load must last at least this share of -t (users stop when -t ends; the share
#: left is for spawning and the last requests, never for a preload).
MEASURED_SHARE = 0.8
#: The Redis key prefix configured for the Redis run; the run adds ``locust-<8 hex>-``.
REDIS_BASE_PREFIX = "gwtest:"
#: The contract's variables and everything AWS_*, DYNAMODB_*, GATEWAY_*, LOCUST_*.
SCRUBBED_NAMES = frozenset(
    {"DATABASE_PROVIDER", "CACHE_BACKEND", "REDIS_URL", "DAX_ENDPOINT_URL", "NATIVE_NUMBERS"}
)
SCRUBBED_PREFIXES = ("AWS_", "DYNAMODB_", "GATEWAY_", "LOCUST_")

pytestmark = pytest.mark.timeout(LOCUST_TIMEOUT_S + 60)


# ------------------------------------------------------------------------------------------
# A headless locust run
# ------------------------------------------------------------------------------------------


def _locust_env() -> dict[str, str]:
    """A clean environment: no endpoint (the locustfile starts its own emulator), no gateway,
    AWS or locust setting from the developer's shell, dummy credentials for the emulator."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in SCRUBBED_NAMES and not name.startswith(SCRUBBED_PREFIXES)
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUNBUFFERED="1",
        PYTHONIOENCODING="utf-8",
    )
    return env


def _stats_rows(csv_prefix: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(f"{csv_prefix}_stats.csv", newline="", encoding="utf-8") as stream:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(stream)}


@pytest.fixture(scope="module")
def locust_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    csv_prefix = tmp_path_factory.mktemp("locust") / "run"
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        LOCUSTFILE,
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        f"{RUN_TIME_S}s",
        "--only-summary",
        "--keys",
        "200",
        "--latency-ms",
        "1",
        "--csv",
        str(csv_prefix),
    ]
    result = subprocess.run(
        argv,
        cwd=ROOT,
        env=_locust_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=LOCUST_TIMEOUT_S,
        check=False,
    )
    return result, csv_prefix


def test_headless_run_completes_without_failures(
    locust_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = locust_run
    # locust exits 1 when any request failed.
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-6000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-6000:]


def test_both_user_classes_made_requests(
    locust_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, csv_prefix = locust_run
    rows = _stats_rows(csv_prefix)
    for name in ("bare", "gateway:memory"):
        row = rows.get(("get", name))
        assert row is not None, f"no get row for {name}: {sorted(rows)}\n{result.stderr[-4000:]}"
        assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0, row


def test_microsecond_summary_is_printed(
    locust_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = locust_run
    out = result.stdout
    assert "Get latencies in microseconds" in out, out
    bare = _summary_row(out, "bare gets")
    gateway = _summary_row(out, "gateway:memory gets")
    hits = _summary_row(out, "gateway:memory hits *")
    # count, p50, p90, p99, max[, hit ratio]
    assert int(bare[0]) > 0 and int(gateway[0]) > 0 and int(hits[0]) > 0
    # A memory-cache hit is a dictionary lookup; a DynamoDB read is an HTTP round trip plus
    # the 1 ms injected: orders of magnitude apart, on any machine.
    assert int(hits[1]) < 1000 <= int(bare[1]), out
    assert gateway[-1].endswith("%") and float(gateway[-1].rstrip("%")) > 50, out
    # The gateway's cache health, under the table: only the gateway has a cache tier.
    assert "gateway:memory: cache errors 0, fallbacks 0, breaker closed" in out, out
    assert "WARNING" not in out and "bare: cache" not in out, out


def _measured_s(out: str) -> float:
    """The seconds of load the µs summary says were measured."""
    match = re.search(r"^Measured: ([0-9.]+) s of load", out, re.MULTILINE)
    assert match is not None, f"no 'Measured:' line in:\n{out}"
    return float(match.group(1))


def test_measured_load_lasts_the_run_time(
    locust_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = locust_run
    assert _measured_s(result.stdout) >= MEASURED_SHARE * RUN_TIME_S, result.stdout


def _summary_row(out: str, label: str) -> list[str]:
    """The fields after ``label`` on its line of the µs summary."""
    for line in out.splitlines():
        if line.startswith(label + " "):
            return line[len(label) :].split()
    raise AssertionError(f"no {label!r} row in:\n{out}")


# ------------------------------------------------------------------------------------------
# A headless locust run on the tiered cache and a real Redis
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_locust_run(
    redis_server: RedisServer,
) -> tuple[subprocess.CompletedProcess[str], list[bytes]]:
    """A run with ``CACHE_BACKEND=tiered`` and the default workload (2,000 keys per class,
    3 ms per DynamoDB request: a preload of seconds); the keys Redis holds once it ended."""
    import redis

    redis_server.resume()
    redis_server.flush()
    env = _locust_env()
    env.update(
        CACHE_BACKEND="tiered", REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=REDIS_BASE_PREFIX
    )
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        LOCUSTFILE,
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        f"{REDIS_RUN_TIME_S}s",
        "--only-summary",
    ]
    result = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=LOCUST_TIMEOUT_S,
        check=False,
    )
    client = redis.Redis.from_url(redis_server.url)
    try:
        left = sorted(client.scan_iter(match="*", count=1000))
    finally:
        client.close()
    return result, left


def test_redis_run_completes_on_the_tiered_cache(
    redis_locust_run: tuple[subprocess.CompletedProcess[str], list[bytes]],
) -> None:
    result, _ = redis_locust_run
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-6000:]}"
    hits = _summary_row(result.stdout, "gateway:tiered hits *")
    assert int(hits[0]) > 0, result.stdout


def test_redis_run_leaves_no_key_in_redis(
    redis_locust_run: tuple[subprocess.CompletedProcess[str], list[bytes]],
) -> None:
    result, left = redis_locust_run
    # The run used a prefix of its own under the configured one, and wrote under it.
    prefixes = set(re.findall(r"Redis keys of this run: prefix '([^']*)'", result.stderr))
    assert len(prefixes) == 1, result.stderr[-6000:]
    (prefix,) = prefixes
    assert re.fullmatch(re.escape(REDIS_BASE_PREFIX) + r"locust-[0-9a-f]{8}-", prefix), prefix
    deleted = re.search(r"deleted (\d+) Redis keys of this run", result.stderr)
    assert deleted is not None and int(deleted.group(1)) > 0, result.stderr[-6000:]
    # Redis was flushed before the run: whatever it holds now, the run left behind.
    assert left == [], f"{len(left)} keys left, e.g. {left[:5]}"


def test_redis_run_does_not_count_its_preload_against_the_run_time(
    redis_locust_run: tuple[subprocess.CompletedProcess[str], list[bytes]],
) -> None:
    result, _ = redis_locust_run
    assert _measured_s(result.stdout) >= MEASURED_SHARE * REDIS_RUN_TIME_S, (
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    )


def test_locust_conf_is_a_quick_headless_run_of_the_locustfile() -> None:
    parser = configparser.ConfigParser()
    parser.read_string("[conf]\n" + (ROOT / "load_tests/locust.conf").read_text(encoding="utf-8"))
    conf = parser["conf"]
    assert (ROOT / conf["locustfile"]).is_file()
    assert conf.getboolean("headless") and conf.getboolean("only-summary")
    assert int(conf["users"]) > 0 and int(conf["spawn-rate"]) > 0 and conf["run-time"]
    assert int(conf["keys"]) > 0 and 0 <= float(conf["read-ratio"]) <= 1


# ------------------------------------------------------------------------------------------
# The microsecond histogram
# ------------------------------------------------------------------------------------------


def test_histogram_is_exact_for_small_values_and_close_for_large_ones() -> None:
    assert [bucket_of(v) for v in (0, 1, 5, EXACT_BELOW_US - 1)] == [0, 1, 5, EXACT_BELOW_US - 1]
    for value in (EXACT_BELOW_US, 12_345, 987_654, 12_345_678):
        assert 0 <= value - bucket_of(value) < value / 500


def test_histogram_percentiles_and_max() -> None:
    histogram = MicrosecondHistogram()
    for value in range(1, 101):  # 1..100 µs
        histogram.record(value)
    histogram.record(250_000)
    assert histogram.count == 101
    assert histogram.percentile(50) == 51
    assert histogram.percentile(99) == 100
    assert histogram.percentile(100) == histogram.max_us == 250_000
    with pytest.raises(ValueError):
        histogram.percentile(0)
    with pytest.raises(ValueError):
        MicrosecondHistogram().percentile(50)


def test_histograms_merge_through_their_wire_form() -> None:
    first, second = MicrosecondHistogram(), MicrosecondHistogram()
    for value in (3, 4, 5):
        first.record(value)
    for value in (7, 2_000_000):
        second.record(value)
    wire = json.loads(json.dumps(second.to_wire()))  # what a worker sends, as a list of pairs
    first.merge(MicrosecondHistogram.from_wire(wire))
    assert first.count == 5
    assert first.percentile(60) == 5
    assert first.max_us == 2_000_000


# ------------------------------------------------------------------------------------------
# The compose demo app
# ------------------------------------------------------------------------------------------


@pytest.fixture
def demo_app(moto_server: Any, table_prefix: str) -> Iterator[str]:
    settings = Settings(
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url,
        DYNAMODB_TABLE_PREFIX=table_prefix,
        CACHE_BACKEND="memory",
    )
    with get_database_service(settings) as service:
        server: DemoServer = make_server(service, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, name="demo-app", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status, response_headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw = error.read()
        status, response_headers = error.code, dict(error.headers)
    return status, response_headers, json.loads(raw) if raw else None


def test_demo_app_saves_and_reads_documents(demo_app: str) -> None:
    status, headers, saved = _call(
        "PUT", f"{demo_app}/docs/users/u1", {"name": "Ada", "score": 9.5}
    )
    assert status == 200 and saved["id"] == "u1"
    assert headers["ETag"] == f'"{saved["rev"]}"'

    status, headers, doc = _call("GET", f"{demo_app}/docs/users/u1")
    assert status == 200
    assert doc == {"name": "Ada", "score": 9.5, "_id": "u1", "_rev": saved["rev"]}
    assert headers["ETag"] == f'"{saved["rev"]}"'

    # Optimistic concurrency through If-Match / If-None-Match.
    status, _, _ = _call("PUT", f"{demo_app}/docs/users/u1", {"n": 1}, {"If-Match": '"1-stale"'})
    assert status == 412
    status, _, again = _call(
        "PUT", f"{demo_app}/docs/users/u1", {"name": "Ada", "n": 2}, {"If-Match": saved["rev"]}
    )
    assert status == 200 and again["rev"] != saved["rev"]
    status, _, _ = _call("PUT", f"{demo_app}/docs/users/u1", {"n": 3}, {"If-None-Match": "*"})
    assert status == 412

    status, _, stats = _call("GET", f"{demo_app}/stats")
    assert status == 200 and stats["hits"] >= 1 and stats["db_calls"]["PutItem"] >= 2

    status, _, _ = _call("DELETE", f"{demo_app}/docs/users/u1")
    assert status == 204
    status, _, body = _call("GET", f"{demo_app}/docs/users/u1")
    assert status == 404 and "error" in body


def test_demo_app_health_and_bad_requests(demo_app: str) -> None:
    status, _, body = _call("GET", f"{demo_app}/healthz")
    assert status == 200 and body == {"status": "ok"}
    assert _call("PUT", f"{demo_app}/docs/users/u2", b"[1, 2]")[0] == 400
    assert _call("PUT", f"{demo_app}/docs/users/u2", b"{not json")[0] == 400
    assert _call("PUT", f"{demo_app}/docs/users/u2", b'{"x": NaN}')[0] == 400
    assert _call("PUT", f"{demo_app}/docs/no%20spaces/u2", {"a": 1})[0] == 400  # bad name
    assert _call("GET", f"{demo_app}/nowhere")[0] == 404
    assert _call("DELETE", f"{demo_app}/docs/users/never-saved")[0] == 404
