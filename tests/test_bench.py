"""``gateway bench``: end to end on the embedded default, and its parts (cost, latency, meter,
runner, report) with exact figures.

The two end-to-end runs (one in-process, one in a subprocess with a clean environment) measure
one second per backend on 200 keys: they check the shape of the JSON and the direction of the
results (a cache hits, and calls DynamoDB less often than the bare service), never absolute speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.bench.command import choose_target
from gateway.bench.cost import (
    RequestUnits,
    item_size,
    read_units,
    units_for_calls,
    units_from_consumed,
    write_units,
)
from gateway.bench.latency import LatencyInjector, service_clients
from gateway.bench.meter import RequestMeter
from gateway.bench.report import build_rows, format_ratio, table
from gateway.bench.runner import BackendRun, RunConfig, percentile, run_backend
from gateway.cli import main
from gateway.config import Settings
from gateway.dynamodb import DynamoDBService
from gateway.emulator import EmbeddedDynamoDB
from gateway.workload import WorkloadSpec, key_name
from tests.servers import raw_dynamodb_client

ROOT = Path(__file__).resolve().parents[1]
BENCH_TIMEOUT_S = 120
SHORT_RUN = ["bench", "--duration", "1", "--keys", "200", "--threads", "2", "--json"]
ROW_FIELDS = {
    "backend",
    "operations",
    "ops_per_s",
    "p50_us",
    "p99_us",
    "hit_ratio",
    "db_calls",
    "db_calls_per_1000_ops",
    "dollars_per_million_ops",
    "vs_bare",
    "errors",
}


def check_report(document: dict[str, Any], backends: list[str]) -> None:
    """One row per backend run, with sane figures, and caches that beat the bare service."""
    rows = {row["backend"]: row for row in document["results"]}
    assert sorted(rows) == sorted(b for b in backends if b not in document["skipped"])
    bare = rows["bare"]
    assert bare["hit_ratio"] is None
    assert bare["vs_bare"]["ops_per_s"] == 1.0
    for name, row in rows.items():
        assert set(row) >= ROW_FIELDS, name
        assert row["errors"] == 0, row["first_error"]
        assert row["operations"] > 0 and row["ops_per_s"] > 0
        assert 0 < row["p50_us"] <= row["p99_us"]
        assert row["dollars_per_million_ops"] > 0
        if name != "bare":
            assert row["hit_ratio"] > 0, name
            # 95 % reads: most are answered by the cache, so far fewer DynamoDB calls per op.
            assert row["db_calls_per_1000_ops"] < bare["db_calls_per_1000_ops"], name
            assert row["dollars_per_million_ops"] < bare["dollars_per_million_ops"], name


def test_bench_completes_on_the_embedded_default(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(SHORT_RUN)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "embedded DynamoDB emulator" in err and "Traceback" not in err
    document = json.loads(out)  # stdout is the JSON alone: notes and progress go to stderr
    assert document["target"].startswith("embedded emulator")
    assert document["workload"]["keys"] == 200 and document["workload"]["threads"] == 2
    check_report(document, ["bare", "memory", "redis", "tiered"])
    if shutil.which("redis-server"):
        assert not document["skipped"]


def test_bench_subprocess_with_a_clean_environment() -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "DYNAMODB_", "GATEWAY_"))
        and name not in ("CACHE_BACKEND", "REDIS_URL", "COLLECTIONS", "RETRY", "COALESCING")
    }
    env.update(
        PYTHONPATH=str(ROOT),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *SHORT_RUN, "--backends", "bare,memory"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    check_report(json.loads(result.stdout), ["bare", "memory"])


# -- where it runs ----------------------------------------------------------------------------


def test_bench_on_a_configured_endpoint_deletes_its_table(
    moto_server: EmbeddedDynamoDB, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--endpoint-url", moto_server.endpoint_url, "--table-prefix", table_prefix]
    argv += ["bench", "--duration", "0.5", "--keys", "50", "--threads", "2"]
    code = main([*argv, "--backends", "bare,memory", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    document = json.loads(out)
    assert document["target"] == f"endpoint {moto_server.endpoint_url}"
    check_report(document, ["bare", "memory"])
    client = raw_dynamodb_client(moto_server.endpoint_url)
    try:
        assert not [t for t in client.list_tables()["TableNames"] if t.startswith(table_prefix)]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("argv", "use_aws_env"),
    [
        (["--endpoint-url", "https://dynamodb.us-east-1.amazonaws.com", *SHORT_RUN], False),
        ([*SHORT_RUN, "--endpoint-url", "https://dynamodb.eu-west-1.amazonaws.com"], False),
        (SHORT_RUN, True),
    ],
)
def test_real_aws_is_refused_without_the_flag(
    argv: list[str],
    use_aws_env: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if use_aws_env:
        monkeypatch.setenv("GATEWAY_USE_AWS", "1")
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "--aws" in err and "billed" in err


def test_choose_target() -> None:
    local = Settings(DYNAMODB_ENDPOINT_URL="http://127.0.0.1:8000")
    aws_endpoint = Settings(DYNAMODB_ENDPOINT_URL="https://dynamodb.us-east-1.amazonaws.com")
    assert choose_target(Settings(), aws=False, environ={}) == "embedded"
    assert choose_target(local, aws=False, environ={}) == "endpoint"
    assert choose_target(aws_endpoint, aws=True, environ={}) == "endpoint"
    assert choose_target(Settings(), aws=True, environ={}) == "aws"


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in ("--keys", "--doc-size", "--zipf", "--read-ratio", "--threads", "--duration"):
        assert option in out
    for option in ("--latency-ms", "--backends", "--redis-url", "--json", "--chart", "--aws"):
        assert option in out


@pytest.mark.parametrize(
    "extra",
    [
        ["--threads", "0"],
        ["--duration", "0"],
        ["--latency-ms", "-1"],
        ["--read-ratio", "1.5"],
        ["--backends", "bare,dax"],
        ["--chart", "out.svg"],
    ],
)
def test_bad_options_are_usage_errors(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SHORT_RUN, *extra]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# -- cost -------------------------------------------------------------------------------------


def test_request_units_per_item() -> None:
    assert read_units(1) == 1.0
    assert read_units(4096) == 1.0
    assert read_units(4097) == 2.0
    assert read_units(1000, consistent=False) == 0.5
    assert read_units(9000, consistent=False) == 1.5
    assert write_units(1) == 1
    assert write_units(1024) == 1
    assert write_units(1025) == 2
    assert write_units(3000) == 3


def test_on_demand_prices() -> None:
    # A million 1 KB strongly consistent reads: $0.25; a million 1 KB writes: $1.25.
    assert units_for_calls({"GetItem": 1_000_000}, 1000).dollars == 0.25
    assert units_for_calls({"PutItem": 1_000_000}, 1000).dollars == 1.25
    units = units_for_calls({"GetItem": 950, "PutItem": 50}, 1000)
    assert units == RequestUnits(read=950.0, write=50.0)
    # (950 * 0.25 + 50 * 1.25) / 1e6 dollars for 1000 operations.
    assert units.dollars_per_million(1000) == pytest.approx(0.3)
    assert RequestUnits().dollars_per_million(0) == 0.0


def test_batches_are_billed_per_item_and_scans_per_page() -> None:
    units = units_for_calls(
        {"BatchGetItem": 10, "BatchWriteItem": 4, "Scan": 3, "DescribeTable": 5},
        1500,
        items={"BatchGetItem": 250, "BatchWriteItem": 100, "Scan": 300},
    )
    # 250 items of 1.5 KB: 1 RRU each; 100 writes of 1.5 KB: 2 WRU each; 300 * 1500 bytes
    # scanned in 3 pages: ceil(450000 / 4096) = 110 RRU; table management is free.
    assert units == RequestUnits(read=250 + 110, write=200)
    eventual = units_for_calls({"Query": 2}, 100, consistent=False, items={"Query": 10})
    assert eventual == RequestUnits(read=1.0)  # at least one unit a page, halved
    assert units_for_calls({"TransactWriteItems": 3}, 100) == RequestUnits(write=6)
    assert units_for_calls({"GetItem": 2}, 5000) == RequestUnits(read=4)


def test_consumed_capacity_shapes() -> None:
    assert units_from_consumed(None) is None
    assert units_from_consumed({}) is None
    assert units_from_consumed({"unrelated": 3}) is None
    assert units_from_consumed({"read": 3, "write": 2}) == RequestUnits(3, 2)
    assert units_from_consumed({"ReadCapacityUnits": 1.5, "WriteCapacityUnits": 4}) == (
        RequestUnits(1.5, 4)
    )
    assert units_from_consumed({"GetItem": 4.5, "PutItem": 2}) == RequestUnits(4.5, 2)
    by_operation = {"BatchGetItem": {"CapacityUnits": 7}, "DeleteItem": {"capacity_units": 1}}
    assert units_from_consumed(by_operation) == RequestUnits(7, 1)
    service_shape = {  # DynamoDBService.stats()["consumed_capacity"]
        "read_units": 3.5,
        "write_units": 2.0,
        "estimated_read_units": 3.5,
        "estimated_write_units": 0.0,
        "by_operation": {"GetItem": {"read_units": 3.5, "write_units": 0.0}},
    }
    assert units_from_consumed(service_shape) == RequestUnits(3.5, 2.0)


def test_item_size_follows_dynamodb_rules() -> None:
    assert item_size({"a": "xyz"}) == 4
    assert item_size({"n": Decimal("123")}) == 1 + 3  # two digits a byte, plus one
    assert item_size({"n": 1.5}) == 1 + 2
    assert item_size({"b": True, "z": None}) == 4
    assert item_size({"m": {"k": "v"}}) == 1 + 3 + (1 + 1 + 1)
    assert item_size({"l": ["ab", 1]}) == 1 + 3 + (2 + 1) + (2 + 1)
    assert item_size({"bin": b"\x00\x01"}) == 5


# -- latency injection and the request meter --------------------------------------------------


def test_latency_is_slept_before_each_request_sent(moto_server: EmbeddedDynamoDB) -> None:
    slept: list[float] = []
    injector = LatencyInjector(
        latency_ms=3.0, jitter_ms=2.0, sleep=slept.append, random=lambda: 0.5
    )
    client = raw_dynamodb_client(moto_server.endpoint_url)
    try:
        injector.attach([client])
        injector.attach([client])  # idempotent: still one sleep a request
        client.list_tables()
        client.list_tables()
        assert slept == [0.004, 0.004]
        injector.detach([client])
        client.list_tables()
        assert slept == [0.004, 0.004]
    finally:
        client.close()
    assert LatencyInjector(latency_ms=0.0, sleep=slept.append).delay_s() == 0.0
    with pytest.raises(ValueError, match="latency_ms"):
        LatencyInjector(latency_ms=-1.0)


def test_every_request_of_a_service_is_delayed_and_metered(
    moto_server: EmbeddedDynamoDB, table_prefix: str
) -> None:
    slept: list[float] = []
    with DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix) as db:
        clients = service_clients(db)
        assert len(clients) == 2  # the control client and the data resource's client
        LatencyInjector(latency_ms=1.0, sleep=slept.append).attach(clients)
        sent: list[str] = []
        for client in clients:
            client.meta.events.register(
                "before-send.dynamodb", lambda request, **kw: sent.append(request.url)
            )
        meter = RequestMeter()
        meter.attach(clients)
        db.save_many("docs", {key_name(i): {"n": i} for i in range(30)})
        db.get_many("docs", [key_name(i) for i in range(7)])
        db.get("docs", key_name(0))
        assert len(db.list_all("docs")) == 30
        calls = db.stats()["db_calls"]
    # One sleep per HTTP request sent, control plane (and the table waiter) included.
    assert len(slept) == len(sent) >= sum(calls.values())
    items = meter.items()
    assert items["BatchWriteItem"] == 30
    assert items["BatchGetItem"] == 30 + 7  # revisions read before save_many, then get_many
    assert items["Scan"] == 30
    assert items["GetItem"] == 1


# -- runner and report, on a fake service -----------------------------------------------------


class FakeCache:
    """A dict behind a lock that counts like the gateway: hits, misses, db_calls."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def get(self, db_name: str, doc_id: str) -> dict[str, Any] | None:
        with self.lock:
            if doc_id in self.docs:
                self.counts["hits"] += 1
                return self.docs[doc_id]
            self.counts["misses"] += 1
            self.counts["GetItem"] += 1
            return None

    def get_many(self, db_name: str, doc_ids: list[str]) -> dict[str, Any]:
        with self.lock:
            self.counts["BatchGetItem"] += 1
            for doc_id in doc_ids:
                self.docs[doc_id] = {"_id": doc_id}
        return {doc_id: {"_id": doc_id} for doc_id in doc_ids}

    def save(self, db_name: str, doc_id: str, doc: dict[str, Any]) -> dict[str, str]:
        with self.lock:
            self.counts["PutItem"] += 1
            self.docs[doc_id] = dict(doc)
        return {"id": doc_id, "rev": "1-x"}

    def stats(self) -> dict[str, Any]:
        with self.lock:
            counts = dict(self.counts)
        ops = ("GetItem", "BatchGetItem", "PutItem")
        return {
            "hits": counts.get("hits", 0),
            "misses": counts.get("misses", 0),
            "db_calls": {op: counts[op] for op in ops if op in counts},
        }


def test_runner_counts_every_operation_once() -> None:
    spec = WorkloadSpec(keys=50, read_ratio=0.8)
    fake = FakeCache(spec)
    progress: list[tuple[str, float, int]] = []
    run = run_backend(
        "fake",
        fake,
        spec,
        RunConfig(threads=3, duration_s=0.3, warmup_s=0.05),
        progress=lambda *args: progress.append(args),
    )
    assert run.errors == 0 and run.reads > 0 and run.writes > 0
    assert len(run.latencies_us) == run.operations
    assert run.latencies_us == sorted(run.latencies_us)
    # Every key was read once before the window: every read in it is a hit.
    assert run.hits == run.reads and run.misses == 0 and run.hit_ratio == 1.0
    assert run.db_calls == {"PutItem": run.writes}  # the warm-up's calls are not counted
    assert 0.3 <= run.elapsed_s < 2.0
    assert {phase for phase, _, _ in progress} == {"warm-up", "measure"}
    assert progress[-1][1] == 1.0


def test_runner_counts_errors_and_keeps_the_first() -> None:
    class Failing(FakeCache):
        def get(self, db_name: str, doc_id: str) -> dict[str, Any] | None:
            raise RuntimeError("no luck")

    spec = WorkloadSpec(keys=10, read_ratio=1.0)
    run = run_backend("failing", Failing(spec), spec, RunConfig(1, 0.1, 0.0), has_cache=False)
    assert run.operations == 0 and run.errors > 0
    assert run.first_error == "RuntimeError: no luck"
    assert run.hit_ratio is None and run.latencies_us == []


def _run(name: str, latencies: list[float], calls: dict[str, int], **kw: Any) -> BackendRun:
    return BackendRun(
        name=name,
        elapsed_s=1.0,
        reads=len(latencies) - 10,
        writes=10,
        errors=0,
        latencies_us=sorted(latencies),
        hits=kw.get("hits"),
        misses=kw.get("misses"),
        db_calls=calls,
        db_items={},
    )


def test_rows_compare_every_backend_with_bare() -> None:
    bare = _run("bare", [4000.0] * 100, {"GetItem": 90, "PutItem": 10})
    memory = _run("memory", [5.0] * 985 + [4000.0] * 15, {"PutItem": 10}, hits=990, misses=0)
    rows = build_rows([bare, memory], item_bytes=1000, consistent=True)
    assert [row.backend for row in rows] == ["bare", "memory"]
    assert rows[0].db_calls_per_1000_ops == 1000.0
    assert rows[0].dollars_per_million_ops == pytest.approx(0.35)  # 0.9 * 0.25 + 0.1 * 1.25
    assert rows[1].db_calls_per_1000_ops == 10.0
    assert rows[1].hit_ratio == 1.0
    assert rows[1].p50_us == 5.0 and rows[1].p99_us == 4000.0
    assert rows[1].vs_bare is not None
    assert rows[1].vs_bare["ops_per_s"] == 10.0
    assert rows[1].vs_bare["p50_us"] == 0.00125
    assert rows[1].vs_bare["db_calls_per_1000_ops"] == 0.01
    assert rows[1].cost_source == "estimated"
    assert table(rows, "title").row_count == 2


def test_consumed_capacity_is_preferred_when_reported() -> None:
    run = _run("bare", [10.0] * 100, {"GetItem": 100})
    run.consumed = RequestUnits(read=50.0)
    (row,) = build_rows([run], item_bytes=1000, consistent=True)
    assert row.cost_source == "consumed_capacity" and row.read_units == 50.0


def test_ratio_and_percentile_formatting() -> None:
    assert format_ratio(12.34) == "\N{MULTIPLICATION SIGN}12.3"
    assert format_ratio(250.0) == "\N{MULTIPLICATION SIGN}250"
    assert format_ratio(0.25) == "\N{DIVISION SIGN}4.0"
    assert format_ratio(None) == ""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0


def test_chart_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from gateway.bench.report import write_chart

    runs = [
        _run("bare", [4000.0 + i for i in range(200)], {}),
        _run("memory", [5.0 + i for i in range(200)], {}),
    ]
    path = write_chart(runs, tmp_path / "bench.png", "a title")
    assert path.read_bytes().startswith(b"\x89PNG")
