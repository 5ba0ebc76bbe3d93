"""``gateway bench``: end to end on the embedded default, and its parts (cost, latency, meter,
runner, report) with exact figures.

The two end-to-end runs (one in-process, one in a subprocess with a clean environment) measure
one second per backend on 200 keys: they check the shape of the JSON and the direction of the
results (a cache hits, and calls DynamoDB less often than the bare service), never absolute speed.
The peers (``naive``, ``dogpile``) run end to end too; the stale-read checker is tested on logs
written by hand and on a fake service that answers one revision behind.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter, defaultdict
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
from gateway.bench.peers import DogpileCache, NaiveCache
from gateway.bench.report import build_rows, format_ratio, health_lines, table
from gateway.bench.runner import (
    BackendRun,
    RunConfig,
    cache_health,
    merge_health,
    percentile,
    run_backend,
)
from gateway.bench.stale import StaleLog, check
from gateway.cli import main
from gateway.config import Settings
from gateway.dynamodb import DynamoDBService
from gateway.emulator import EmbeddedDynamoDB
from gateway.workload import WorkloadSpec, key_name
from tests.script_runs import run_python
from tests.servers import raw_dynamodb_client

# dogpile.cache 1.5 calls redis-py's SETEX, which redis-py 6+ marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")

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
    "stale_reads",
    "checked_reads",
    "peer",
    "vs_peer",
    "cache_health",
}
GATEWAY_BACKENDS = {"memory", "redis", "tiered"}
HEALTHY = {
    "cache_errors": 0,
    "fallbacks": 0,
    "writes_refused": 0,
    "pending_repairs": 0,
    "breaker": "closed",
}
DEFAULT_BACKENDS = ["bare", "naive", "dogpile", "memory", "redis", "tiered"]
PEERS = {"memory": "naive", "tiered": "naive", "redis": "dogpile"}


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
        # Every backend's reads are judged (the preload's revisions are the first baseline).
        assert 0 < row["checked_reads"] <= row["reads"], name
        assert isinstance(row["stale_reads"], int) and row["stale_reads"] >= 0
        if name not in ("naive", "dogpile"):
            # The peers' delete-on-write races may serve stale copies; the bare service and
            # the gateway never answer older than a write they acknowledged (CONTRACT.md).
            assert row["stale_reads"] == 0, name
        peer = PEERS.get(name)
        if peer in rows:
            assert row["peer"] == peer
            assert row["vs_peer"]["ops_per_s"] == pytest.approx(
                row["ops_per_s"] / rows[peer]["ops_per_s"], rel=1e-3
            )
        else:
            assert row["peer"] is None and row["vs_peer"] is None
        # A gateway's cache tier stayed reachable; the others have no cache health.
        assert row["cache_health"] == (HEALTHY if name in GATEWAY_BACKENDS else None), name


def test_bench_completes_on_the_embedded_default(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(SHORT_RUN)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "embedded DynamoDB emulator" in err and "Traceback" not in err
    document = json.loads(out)  # stdout is the JSON alone: notes and progress go to stderr
    assert document["target"].startswith("embedded emulator")
    assert document["workload"]["keys"] == 200 and document["workload"]["threads"] == 2
    check_report(document, DEFAULT_BACKENDS)
    assert document["workload"]["backends"] == DEFAULT_BACKENDS
    if shutil.which("redis-server"):
        assert not document["skipped"]


def test_bench_table_is_followed_by_each_gateways_cache_health(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [arg for arg in SHORT_RUN if arg != "--json"]
    code = main([*argv, "--backends", "bare,memory"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "memory: cache errors 0, fallbacks 0, breaker closed" in out, out
    assert "warning" not in out and "bare: cache" not in out, out


def test_bench_runs_the_peers_end_to_end(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*SHORT_RUN, "--backends", "bare,naive,dogpile", "--redis-url", redis_url])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    document = json.loads(out)
    assert not document["skipped"]
    check_report(document, ["bare", "naive", "dogpile"])


def test_bench_runs_dax_through_a_local_dax_node(capsys: pytest.CaptureFixture[str]) -> None:
    """``--backends dax``: amazon-dax-client against `gateway.dax_emulator` in front of the
    embedded emulator; the hits and the DynamoDB calls are the node's."""
    code = main([*SHORT_RUN, "--backends", "bare,dax"])
    out, err = capsys.readouterr()
    assert code == 0, err
    document = json.loads(out)
    check_report(document, ["bare", "dax"])
    dax = next(row for row in document["results"] if row["backend"] == "dax")
    assert dax["hit_ratio"] is not None and dax["hit_ratio"] > 0.5
    assert dax["stale_reads"] == 0


def test_dogpile_is_skipped_without_redis(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*SHORT_RUN, "--backends", "bare,dogpile", "--redis-url", "redis://127.0.0.1:1/0"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    document = json.loads(out)
    assert "did not answer PING" in document["skipped"]["dogpile"]
    assert "skipping dogpile" in err
    assert [row["backend"] for row in document["results"]] == ["bare"]


def test_bench_subprocess_with_a_clean_environment() -> None:
    result = run_python(
        ["-m", "gateway.cli", *SHORT_RUN, "--backends", "bare,memory"],
        BENCH_TIMEOUT_S,
        PYTHONPATH=str(ROOT),
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
        ["--backends", "bare,dynamo"],
        ["--backends", "bare,cachetools"],
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
        assert len(clients) == 3  # table management, the data plane, and the resource's client
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


def test_cache_health_comes_from_a_gateways_stats_only() -> None:
    stats = {"hits": 1, "cache_errors": 3, "fallbacks": 2, "pending_repairs": 1, "breaker": "open"}
    assert cache_health(stats) == {
        "cache_errors": 3,
        "fallbacks": 2,
        "writes_refused": 0,
        "pending_repairs": 1,
        "breaker": "open",
    }
    assert cache_health({"hits": 1, "misses": 0, "db_calls": {}}) is None  # bare, peers
    merged = merge_health([None, HEALTHY, cache_health(stats), {**HEALTHY, "breaker": "half_open"}])
    assert merged == {**cache_health(stats), "breaker": "open"}  # summed, the worst state
    assert merge_health([{**HEALTHY, "breaker": "half_open"}, HEALTHY])["breaker"] == "half_open"  # type: ignore[index]
    assert merge_health([None, None]) is None


def test_runner_keeps_the_cache_health_at_the_end_of_the_run() -> None:
    spec = WorkloadSpec(keys=20, read_ratio=0.9)
    fake = FakeCache(spec)
    calls = []

    def stats() -> dict[str, Any]:
        calls.append(1)
        # Errors only after the window's start: still reported (the health is the end state).
        errors = 0 if len(calls) == 1 else 4
        return {**fake.stats(), "cache_errors": errors, "fallbacks": errors, "breaker": "open"}

    config = RunConfig(threads=1, duration_s=0.1, warmup_s=0.0)
    run = run_backend("redis", fake, spec, config, stats=stats)
    assert run.cache_health == {**HEALTHY, "cache_errors": 4, "fallbacks": 4, "breaker": "open"}
    assert run_backend("naive", fake, spec, config).cache_health is None  # no breaker


def test_cache_health_lines_under_the_table_warn_only_on_failures() -> None:
    bare = _run("bare", [4000.0] * 100, {"GetItem": 100})
    memory = _run("memory", [5.0] * 100, {}, hits=100, misses=0)
    memory.cache_health = dict(HEALTHY)
    redis_run = _run("redis", [500.0] * 100, {}, hits=100, misses=0)
    redis_run.cache_health = {**HEALTHY, "cache_errors": 1200, "fallbacks": 7, "breaker": "open"}
    tiered = _run("tiered", [6.0] * 100, {}, hits=100, misses=0)
    tiered.cache_health = {**HEALTHY, "writes_refused": 2, "pending_repairs": 3}
    rows = build_rows([bare, memory, redis_run, tiered], item_bytes=1000, consistent=True)
    assert rows[1].cache_health == HEALTHY and rows[0].cache_health is None
    assert health_lines(rows) == [
        "[dim]memory: cache errors 0, fallbacks 0, breaker closed[/dim]",
        "[bold yellow]warning: redis: cache errors 1,200, fallbacks 7, breaker open[/bold yellow]",
        "[bold yellow]warning: tiered: cache errors 0, fallbacks 0, writes refused 2, "
        "pending repairs 3, breaker closed[/bold yellow]",
    ]
    rendered = table(rows, "title")
    assert rendered.row_count == 4  # the table itself is unchanged: the lines are its caption
    assert str(rendered.caption).endswith("\n".join(health_lines(rows)))
    assert "bare:" not in str(rendered.caption)


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


def test_rows_compare_gateway_backends_with_their_peer() -> None:
    bare = _run("bare", [4000.0] * 100, {"GetItem": 90, "PutItem": 10})
    naive = _run("naive", [10.0] * 400, {"PutItem": 10}, hits=390, misses=0)
    memory = _run("memory", [5.0] * 800, {"PutItem": 10}, hits=790, misses=0)
    redis_row = _run("redis", [500.0] * 200, {"PutItem": 10}, hits=190, misses=0)
    naive.stale_reads, naive.checked_reads = 3, 390
    rows = build_rows([bare, naive, memory, redis_row], item_bytes=1000, consistent=True)
    by_name = {row.backend: row for row in rows}
    assert by_name["memory"].peer == "naive"
    assert by_name["memory"].vs_peer is not None
    assert by_name["memory"].vs_peer["ops_per_s"] == 2.0
    assert by_name["naive"].stale_reads == 3 and by_name["naive"].checked_reads == 390
    # No dogpile run: redis has no peer to be compared with; bare and the peers have none.
    assert by_name["redis"].peer is None and by_name["redis"].vs_peer is None
    assert by_name["bare"].vs_peer is None and by_name["naive"].vs_peer is None
    rendered = table(rows, "title")
    assert [column.header for column in rendered.columns][:3] == ["backend", "ops/s", "vs\npeer"]
    assert rendered.columns[-1].header == "stale\nreads"
    assert table(rows[:2], "title").columns[2].header == "p50 µs"  # no peer ran: no column


# -- stale reads ------------------------------------------------------------------------------


def rev(generation: int) -> str:
    return f"{generation:016d}-{'0' * 32}"


def test_stale_check_on_hand_written_logs() -> None:
    a, b = StaleLog(), StaleLog()
    a.write(1, 100, {"rev": rev(7)})
    b.write(1, 90, {"rev": rev(5)})
    b.write(1, 200, {"rev": rev(6)})  # returned after generation 7 did: the newest stays 7
    a.read(1, 80, {"_rev": rev(4)})  # before any write of key 1 returned: not judged
    a.read(1, 95, {"_rev": rev(5)})  # after 5 returned, before 7 did: fresh
    a.read(1, 100, {"_rev": rev(5)})  # started as 7 returned, not after: fresh
    a.read(1, 101, {"_rev": rev(6)})  # after 7 returned: stale
    b.read(1, 300, {"_rev": rev(7)})  # fresh
    b.read(1, 300, None)  # the document was saved and never deleted: stale
    b.read(2, 10, None)  # key 2: nothing acknowledged, not judged
    b.read(3, 10, {"_rev": rev(1)})  # older than the baseline's generation 2: stale
    b.read(3, 10, {"_rev": rev(2)})  # fresh
    b.read(3, 10, {"_rev": "not-ours"})  # not judged
    b.read(3, 10, {"_id": "no revision"})  # a document without _rev: not judged, not absent
    result = check([a, b], baseline={3: 2, 4: 9})
    assert result.stale == 3
    assert result.checked == 7
    assert result.unparsable == 2
    assert result.acknowledged == {1: 7, 3: 2, 4: 9}


class Versioned:
    """A fake `DatabaseService` keeping every revision of a key; ``get`` answers ``lag``
    revisions behind the newest (0: correct; 1: the revision before the last save returned)."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.lock = threading.Lock()
        self.history: defaultdict[str, list[str]] = defaultdict(list)
        self.generation = 0

    def _next_rev(self) -> str:
        self.generation += 1
        return rev(self.generation)

    def get(self, db_name: str, doc_id: str) -> dict[str, Any] | None:
        with self.lock:
            history = self.history[doc_id]
            if not history:
                return None
            return {"_id": doc_id, "_rev": history[max(0, len(history) - 1 - self.lag)]}

    def get_many(self, db_name: str, doc_ids: list[str]) -> dict[str, Any]:
        return {doc_id: self.get(db_name, doc_id) for doc_id in doc_ids}

    def save(
        self, db_name: str, doc_id: str, doc: dict[str, Any], *, if_rev: Any = None
    ) -> dict[str, str]:
        with self.lock:
            new = self._next_rev()
            self.history[doc_id].append(new)
        return {"id": doc_id, "rev": new}

    def stats(self) -> dict[str, Any]:
        return {"hits": 0, "misses": 0, "db_calls": {}}


@pytest.mark.parametrize(("lag", "stale"), [(0, False), (1, True)])
def test_runner_counts_stale_reads(lag: int, stale: bool) -> None:
    spec = WorkloadSpec(keys=20, read_ratio=0.8)
    service = Versioned(lag)
    preloaded = {key_name(i): service.save(spec.collection, key_name(i), {})["rev"] for i in [0]}
    baseline = {doc_id: int(r.partition("-")[0]) for doc_id, r in preloaded.items()}
    config = RunConfig(threads=3, duration_s=0.3, warmup_s=0.05)
    run = run_backend("versioned", service, spec, config, has_cache=False, acknowledged=baseline)
    assert run.errors == 0 and run.writes > 0
    assert 0 < run.checked_reads <= run.reads
    if stale:
        assert run.stale_reads > 0
    else:
        assert run.stale_reads == 0
    # Every save returned is in the hand-over to the next backend, as its highest generation.
    newest = {doc_id: int(h[-1].partition("-")[0]) for doc_id, h in service.history.items()}
    assert run.acknowledged == newest


# -- the peers --------------------------------------------------------------------------------


def test_naive_cache_reads_through_and_deletes_on_write(
    moto_server: EmbeddedDynamoDB, table_prefix: str
) -> None:
    db = DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix)
    with NaiveCache(db, ttl_s=60, max_items=10) as naive:
        saved = naive.save("docs", "a", {"n": 1})
        assert naive.get("docs", "a") == {"_id": "a", "_rev": saved["rev"], "n": 1}  # miss
        assert naive.get("docs", "a")["_rev"] == saved["rev"]  # hit
        assert naive.get("docs", "nope") is None  # miss, not cached
        assert naive.get("docs", "nope") is None  # miss again: no negative caching
        newer = naive.save("docs", "a", {"n": 2})
        assert naive.get("docs", "a")["_rev"] == newer["rev"]  # the save dropped the copy
        assert naive.get_many("docs", ["a", "b", "a"]) == {"a": naive.get("docs", "a"), "b": None}
        assert naive.delete("docs", "a") is True
        assert naive.get("docs", "a") is None
        stats = naive.stats()
    assert stats["hits"] == 3 and stats["misses"] == 6
    assert stats["hit_ratio"] == pytest.approx(1 / 3)
    assert stats["db_calls"]  # the bare service's DynamoDB calls


def test_naive_cache_serves_stale_after_a_racing_write() -> None:
    """The race every read-through, delete-on-write cache has, which the bench counts."""
    loaded, release = threading.Event(), threading.Event()

    class SlowRead(Versioned):
        def get(self, db_name: str, doc_id: str) -> dict[str, Any] | None:
            doc = super().get(db_name, doc_id)
            loaded.set()
            release.wait(5)
            return doc

    db = SlowRead(lag=0)
    db.save("docs", "k", {})
    old = Versioned.get(db, "docs", "k")
    naive = NaiveCache(db, ttl_s=60, max_items=10)
    reader = threading.Thread(target=naive.get, args=("docs", "k"))
    reader.start()
    assert loaded.wait(5)  # the reader missed and read the old revision from the database
    newer = naive.save("docs", "k", {})  # the writer saves and deletes the (absent) copy
    release.set()  # the reader now stores the old revision it read
    reader.join(5)
    assert naive.get("docs", "k") == old != {"_id": "k", "_rev": newer["rev"]}


def test_dogpile_cache_reads_through_and_invalidates_on_write(
    moto_server: EmbeddedDynamoDB, table_prefix: str, redis_url: str
) -> None:
    db = DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix)
    with DogpileCache(db, redis_url=redis_url, key_prefix="bench-test:", ttl_s=60) as dogpile:
        saved = dogpile.save("docs", "a", {"n": 1})
        assert dogpile.get("docs", "a") == {"_id": "a", "_rev": saved["rev"], "n": 1}  # miss
        assert dogpile.get("docs", "a")["_rev"] == saved["rev"]  # hit
        newer = dogpile.save("docs", "a", {"n": 2})
        assert dogpile.get("docs", "a")["_rev"] == newer["rev"]  # miss: the save deleted it
        found = dogpile.get_many("docs", ["a", "b", "a"])
        assert found == {"a": dogpile.get("docs", "a"), "b": None}  # a: hit, b: miss
        assert dogpile.get("docs", "b") is None  # dogpile caches the None: a hit
        stats = dogpile.stats()
        keys = dogpile._region.backend.writer_client.keys("bench-test:*")
    assert stats["hits"] == 4 and stats["misses"] == 3
    assert sorted(keys) == [b"bench-test:docs:a", b"bench-test:docs:b"]
