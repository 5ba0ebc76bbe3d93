"""Metrics: latency histograms, consumed capacity, the cost estimate, the Prometheus exporter.

The histogram and the cost helpers are checked on known data with exact expected values. The
capacity tests run over the moto server: what the service accumulates is compared with what
DynamoDB (moto) reported in each response, seen independently through a botocore hook on the
same client; the estimate from item sizes is checked by removing ``ConsumedCapacity`` from the
responses before the service sees them. The exporter is started on a free port and scraped
over HTTP.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from gateway import (
    ConfigError,
    ConflictError,
    DynamoDBService,
    ServiceUnavailableError,
    ValidationError,
)
from gateway.bench.latency import service_clients
from gateway.codec import item_size
from gateway.metrics import (
    LATENCY_BOUNDS_NS,
    READ_DOLLARS_PER_MILLION_UNITS,
    WRITE_DOLLARS_PER_MILLION_UNITS,
    WRITE_OPERATIONS,
    CapacityMeter,
    LatencyHistogram,
    LatencyRecorder,
    SampledLatencyHistogram,
    condition_failure_units,
    cost_dollars,
    estimate_capacity,
    read_units_for,
    reported_capacity,
    write_units_for,
)
from gateway.tables import IndexSpec
from tests.gateway_helpers import gateways, make_service

US = 1000  # ns
GATEWAY_OPERATIONS = {
    "get",
    "get_many",
    "save",
    "save_many",
    "delete",
    "delete_many",
    "list_all",
    "query",
}
INDEXES = {"users": {"by_kind": IndexSpec(attribute="kind", type="S")}}


# ------------------------------------------------------------------------------------------
# Histogram
# ------------------------------------------------------------------------------------------


def test_bounds_are_log_spaced_from_1us_to_10s() -> None:
    assert LATENCY_BOUNDS_NS[0] == 1 * US
    assert LATENCY_BOUNDS_NS[-1] == 10_000_000 * US
    assert all(isinstance(bound, int) for bound in LATENCY_BOUNDS_NS)
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BOUNDS_NS)]
    assert min(ratios) >= 1.19 and max(ratios) <= 1.34  # ten buckets per decade
    assert len(LATENCY_BOUNDS_NS) == 71


def test_percentiles_are_exact_on_known_data() -> None:
    histogram = LatencyHistogram()
    data = [10 * US] * 50 + [20 * US] * 40 + [50 * US] * 9 + [1000 * US]
    random.Random(7).shuffle(data)
    for ns in data:
        histogram.record(ns)
    assert histogram.snapshot() == {
        "count": 100,
        "p50_us": 10.0,  # rank 50
        "p90_us": 20.0,  # rank 90
        "p99_us": 50.0,  # rank 99
        "max_us": 1000.0,
        "mean_us": 27.5,
    }
    assert histogram.percentile_us(1.0) == 1000.0
    assert histogram.percentile_us(0.51) == 20.0


def test_a_percentile_is_its_buckets_upper_bound_clamped_to_the_max() -> None:
    histogram = LatencyHistogram()
    histogram.record(11 * US)  # in the (10 µs, 12 µs] bucket
    assert histogram.snapshot()["p50_us"] == 11.0  # the bound (12) is above the max seen
    histogram.record(13 * US)  # (12, 15]
    histogram.record(14 * US)
    histogram.record(20 * US)  # (15, 20]
    snapshot = histogram.snapshot()
    assert (snapshot["p50_us"], snapshot["p99_us"], snapshot["max_us"]) == (15.0, 20.0, 20.0)
    assert histogram.percentile_us(0.25) == 12.0  # 11 µs reads as its bucket's bound
    # Exactly on a bound counts in that bound's bucket ("le", as in Prometheus).
    on_bound = LatencyHistogram()
    for ns in (1200, 1200, 1201):
        on_bound.record(ns)
    assert on_bound.snapshot()["p50_us"] == 1.2
    assert on_bound.bucket_counts()[:3] == [0, 2, 1]


def test_empty_below_the_first_bound_and_above_the_last() -> None:
    assert LatencyHistogram().snapshot() == {
        "count": 0,
        "p50_us": 0.0,
        "p90_us": 0.0,
        "p99_us": 0.0,
        "max_us": 0.0,
        "mean_us": 0.0,
    }
    histogram = LatencyHistogram()
    histogram.record(0)
    histogram.record(400)
    assert histogram.snapshot()["p50_us"] == 0.4  # first bucket (<= 1 µs), clamped to max
    slow = LatencyHistogram()
    slow.record(25_000_000_000)  # 25 s: the overflow bucket reports the max
    assert slow.bucket_counts()[-1] == 1
    assert slow.snapshot()["p99_us"] == 25_000_000.0


def test_percentiles_are_within_one_bucket_of_the_true_value() -> None:
    rng = random.Random(20240601)
    data = [int(rng.lognormvariate(math.log(200_000), 1.5)) + 1 for _ in range(5000)]
    histogram = LatencyHistogram()
    for ns in data:
        histogram.record(ns)
    ordered = sorted(data)
    for q in (0.5, 0.9, 0.99, 0.999):
        true_us = ordered[math.ceil(q * len(ordered)) - 1] / US
        assert true_us <= histogram.percentile_us(q) <= true_us * 1.34
    assert histogram.snapshot()["mean_us"] == pytest.approx(sum(data) / len(data) / US)
    assert histogram.snapshot()["max_us"] == max(data) / US


def test_recorder_counts_exactly_under_concurrency() -> None:
    recorder = LatencyRecorder()
    threads, per_thread = 8, 20_000
    start = threading.Barrier(threads)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows

    def hammer(n: int) -> None:
        start.wait()
        shared = recorder.histogram("shared")
        for i in range(per_thread):
            shared.record((i % 5000) * US)
            recorder.record(f"own-{n}", 5 * US)
            if i % 1000 == 0:
                recorder.record(f"new-{n}-{i}", 1)  # histograms created while others record

    try:
        workers = [threading.Thread(target=hammer, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(old_interval)
    snapshot = recorder.snapshot()
    # Exact under the GIL (see gateway/metrics.py); a free-threaded build may lose a few.
    exact = getattr(sys, "_is_gil_enabled", lambda: True)()
    shared = snapshot["shared"]["count"]
    assert shared == threads * per_thread if exact else shared >= 0.99 * threads * per_thread
    assert all(snapshot[f"own-{n}"]["count"] == per_thread for n in range(threads)) or not exact
    assert len(snapshot) == 1 + threads + threads * (per_thread // 1000)
    assert snapshot["shared"]["max_us"] == 4999.0


def test_recorder_snapshot_lists_only_operations_that_recorded() -> None:
    recorder = LatencyRecorder()
    recorder.histogram("never")
    recorder.record("get", 3 * US)
    assert list(recorder.snapshot()) == ["get"]
    assert recorder.histogram("get") is recorder.histogram("get")


def test_sampled_histogram_counts_every_call_and_times_one_in_eight() -> None:
    histogram = SampledLatencyHistogram()
    timed = []
    for i in range(8000):
        tick = histogram.tick()
        assert tick == i
        if SampledLatencyHistogram.timed(tick):
            timed.append(tick)
            histogram.record((10 if tick % 2 else 20) * US)
    assert timed[0] == 0  # the first call is always timed
    assert len(timed) == 1002  # one in eight, give or take the sequence's discrepancy
    snapshot = histogram.snapshot()
    assert snapshot["count"] == histogram.count == 8000
    assert snapshot["max_us"] == 20.0
    # Fair to periodic workloads: each residue class of a period-8 (or 16) loop is timed
    # about equally, where "every 8th call" would time one class only.
    assert [sum(1 for t in timed if t % 8 == r) for r in range(8)] == [
        123,
        126,
        129,
        122,
        125,
        126,
        124,
        127,
    ]
    assert min(sum(1 for t in timed if t % 16 == r) for r in range(16)) >= 55
    # Odd and even calls (20 µs and 10 µs) are timed as often: the median sits between.
    assert sum(1 for t in timed if t % 2) == 501
    assert snapshot["p50_us"] in (10.0, 20.0)
    assert snapshot["mean_us"] == pytest.approx(15.0, abs=0.1)


def test_recorder_keeps_sampled_and_plain_histograms_apart() -> None:
    recorder = LatencyRecorder()
    sampled = recorder.sampled_histogram("get")
    assert recorder.sampled_histogram("get") is sampled
    assert recorder.histogram("get") is sampled
    sampled.tick()
    sampled.tick()
    sampled.record(5 * US)
    assert recorder.snapshot()["get"]["count"] == 2
    recorder.record("save", 1 * US)
    with pytest.raises(ValueError, match="unsampled"):
        recorder.sampled_histogram("save")


# ------------------------------------------------------------------------------------------
# Cost and capacity arithmetic
# ------------------------------------------------------------------------------------------


def test_cost_estimate_is_exact() -> None:
    assert (READ_DOLLARS_PER_MILLION_UNITS, WRITE_DOLLARS_PER_MILLION_UNITS) == (0.25, 1.25)
    assert cost_dollars(1_000_000, 0) == 0.25
    assert cost_dollars(0, 1_000_000) == 1.25
    assert cost_dollars(2, 4) == 5.5e-06
    assert cost_dollars(0, 0) == 0.0
    assert cost_dollars(4_000_000, 2_000_000, read_dollars_per_million=0.125) == 3.0


def test_unit_rounding() -> None:
    assert read_units_for(0, consistent=True) == 1.0
    assert read_units_for(4096, consistent=True) == 1.0
    assert read_units_for(4097, consistent=True) == 2.0
    assert read_units_for(4097, consistent=False) == 1.0
    assert read_units_for(100, consistent=False) == 0.5
    assert write_units_for(0) == 1.0
    assert write_units_for(1024) == 1.0
    assert write_units_for(3000) == 3.0


def test_reported_capacity_single_batch_and_split() -> None:
    assert reported_capacity("GetItem", None) is None
    assert reported_capacity("GetItem", {"TableName": "t", "CapacityUnits": 0.5}) == (0.5, 0.0)
    assert reported_capacity("PutItem", {"TableName": "t", "CapacityUnits": 2.0}) == (0.0, 2.0)
    batch = [{"TableName": "a", "CapacityUnits": 1.5}, {"TableName": "b", "CapacityUnits": 2}]
    assert reported_capacity("BatchGetItem", batch) == (3.5, 0.0)
    assert reported_capacity("BatchWriteItem", batch) == (0.0, 3.5)
    split = {"CapacityUnits": 3.0, "ReadCapacityUnits": 1.0, "WriteCapacityUnits": 2.0}
    assert reported_capacity("TransactWriteItems", [split]) == (1.0, 2.0)


def test_estimates_follow_dynamodbs_rules() -> None:
    small = {"_id": "a", "v": "x" * 100}
    big = {"_id": "b", "v": "x" * 5000}  # 5 KB: 2 read units, 5 write units
    assert estimate_capacity("GetItem", {"ConsistentRead": True}, {"Item": big}) == (2.0, 0.0)
    assert estimate_capacity("GetItem", {"ConsistentRead": False}, {"Item": big}) == (1.0, 0.0)
    assert estimate_capacity("GetItem", {"ConsistentRead": True}, {}) == (1.0, 0.0)  # missing
    assert estimate_capacity("PutItem", {"Item": big}, {}) == (0.0, 5.0)
    assert estimate_capacity("DeleteItem", {}, {"Attributes": big}) == (0.0, 5.0)
    assert estimate_capacity("DeleteItem", {}, {}) == (0.0, 1.0)
    # Query / Scan: the page's total size, rounded once.
    page = {"Items": [small] * 50}  # 50 x ~106 bytes = ~5.3 KB
    assert estimate_capacity("Scan", {"ConsistentRead": True}, page) == (2.0, 0.0)
    assert estimate_capacity("Query", {}, page) == (1.0, 0.0)
    # BatchGetItem: each item rounded on its own; keys that found nothing cost the minimum;
    # unprocessed keys cost nothing (they are sent again).
    keys = [{"_id": k} for k in "abcd"]
    request = {"RequestItems": {"t": {"Keys": keys, "ConsistentRead": True}}}
    response = {
        "Responses": {"t": [small, big]},
        "UnprocessedKeys": {"t": {"Keys": [{"_id": "d"}]}},
    }
    assert estimate_capacity("BatchGetItem", request, response) == (1.0 + 2.0 + 1.0, 0.0)
    # BatchWriteItem: puts by size, deletes one unit each, unprocessed ones not counted.
    writes = [
        {"PutRequest": {"Item": small}},
        {"PutRequest": {"Item": big}},
        {"DeleteRequest": {"Key": {"_id": "c"}}},
    ]
    unprocessed = {"UnprocessedItems": {"t": [{"PutRequest": {"Item": big}}]}}
    assert estimate_capacity("BatchWriteItem", {"RequestItems": {"t": writes}}, {}) == (0.0, 7.0)
    assert estimate_capacity("BatchWriteItem", {"RequestItems": {"t": writes}}, unprocessed) == (
        0.0,
        2.0,
    )
    assert estimate_capacity("DescribeTable", {}, {}) == (0.0, 0.0)


def test_condition_failure_costs_the_stored_items_size() -> None:
    assert condition_failure_units(None) == 1.0
    assert condition_failure_units({"_id": {"S": "a"}, "v": {"S": "x" * 2500}}) == 3.0
    assert condition_failure_units({"broken": {"?": 1}}) == 1.0


def test_meter_keeps_estimates_apart_and_ignores_the_control_plane() -> None:
    meter = CapacityMeter()
    meter.add_response("GetItem", {"ConsumedCapacity": {"CapacityUnits": 0.5}})
    meter.add_response("GetItem", {"Item": {"_id": "a"}}, {"ConsistentRead": True})
    meter.add_response("PutItem", {}, {"Item": {"_id": "a"}}, estimate=False)
    meter.add_response("DescribeTable", {"Table": {}})
    assert meter.snapshot() == {
        "read_units": 1.5,
        "write_units": 0.0,
        "estimated_read_units": 1.0,
        "estimated_write_units": 0.0,
        "by_operation": {"GetItem": {"read_units": 1.5, "write_units": 0.0}},
    }


# ------------------------------------------------------------------------------------------
# Over the moto server
# ------------------------------------------------------------------------------------------


class Reported:
    """What the endpoint reported in each response, seen by hooks on the service's clients."""

    def __init__(self, service: DynamoDBService, strip: bool = False) -> None:
        self.units: dict[str, float] = defaultdict(float)
        self.asked: dict[str, set[str]] = defaultdict(set)
        self.strip = strip
        for client in service_clients(service):  # every client of the service
            events = client.meta.events
            events.register("before-call.dynamodb", self._before)
            events.register("after-call.dynamodb", self._after)

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params.get("body") or b"{}")
        self.asked[model.name].add(body.get("ReturnConsumedCapacity", "NONE"))

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        consumed = (
            parsed.pop("ConsumedCapacity", None) if self.strip else parsed.get("ConsumedCapacity")
        )
        entries = [consumed] if isinstance(consumed, dict) else consumed or []
        for entry in entries:
            self.units[model.name] += float(entry["CapacityUnits"])


def _exercise(db: Any) -> None:
    """Every data-plane path of the service: single, batch, scan, query."""
    db.save("users", "u1", {"kind": "admin", "name": "Ada"})
    db.save("users", "u2", {"kind": "user", "bio": "x" * 3000})
    db.get("users", "u1")
    db.get("users", "nope")
    db.get_many("users", ["u1", "u2", "u3"])
    db.save_many("users", {f"m{i}": {"kind": "user", "i": i} for i in range(30)})
    db.delete("users", "u1")
    db.delete_many("users", ["m0", "m1"])
    db.list_all("users")
    db.query("users", "by_kind", "user")


@pytest.mark.parametrize("coalesce", [False, True], ids=["direct", "coalesced"])
def test_consumed_capacity_accumulates_what_dynamodb_reports(
    moto_server: Any, table_prefix: str, coalesce: bool
) -> None:
    with make_service(
        moto_server.endpoint_url,
        table_prefix,
        indexes=INDEXES,
        coalesce_reads=coalesce,
        coalesce_writes=coalesce,
    ) as service:
        reported = Reported(service)
        _exercise(service)
        stats = service.stats()
    capacity = stats["consumed_capacity"]
    # Every data-plane request asked for ReturnConsumedCapacity=TOTAL, whichever client sent
    # it (the data plane has a client of its own; table management's asks for none).
    data_plane = set(reported.asked) - {"CreateTable", "DescribeTable", "UpdateTable"}
    assert {op: reported.asked[op] for op in data_plane} == {op: {"TOTAL"} for op in data_plane}
    expected_ops = {"BatchGetItem", "BatchWriteItem", "Scan", "Query"}
    if not coalesce:  # coalesced single reads and writes become batches
        expected_ops |= {"GetItem", "PutItem", "DeleteItem"}
    assert expected_ops <= data_plane
    # moto reports capacity for all of them: the service counted exactly that, nothing more.
    by_operation = capacity["by_operation"]
    assert set(by_operation) == data_plane
    for operation, units in by_operation.items():
        kind, other = ("write_units", "read_units")
        if operation not in WRITE_OPERATIONS:
            kind, other = other, kind
        assert units[kind] == reported.units[operation] > 0, operation
        assert units[other] == 0.0, operation
    assert capacity["read_units"] == sum(u["read_units"] for u in by_operation.values())
    assert capacity["write_units"] == sum(u["write_units"] for u in by_operation.values())
    assert capacity["estimated_read_units"] == capacity["estimated_write_units"] == 0.0
    assert stats["cost"]["dollars"] == cost_dollars(capacity["read_units"], capacity["write_units"])
    requests = sum(n for op, n in stats["db_calls"].items() if op in data_plane)
    assert stats["cost"]["per_million_requests"] == pytest.approx(
        stats["cost"]["dollars"] / requests * 1e6
    )
    # Latency per DynamoDB operation, control plane included.
    assert set(stats["latency"]) == data_plane | {"DescribeTable", "CreateTable"}
    for operation, snapshot in stats["latency"].items():
        assert snapshot["count"] >= 1 and snapshot["p50_us"] > 0, operation
        assert snapshot["count"] <= stats["db_calls"][operation]


def test_capacity_is_estimated_from_item_sizes_when_not_reported(
    moto_server: Any, table_prefix: str
) -> None:
    with make_service(moto_server.endpoint_url, table_prefix) as service:
        reported = Reported(service, strip=True)  # the service never sees ConsumedCapacity
        big = {"bio": "x" * 3000}
        rev = service.save("notes", "big", big)["rev"]
        service.save("notes", "small", {"v": 1})
        service.get("notes", "big")  # strongly consistent (the default): 1 unit
        service.get("notes", "missing")  # 1 unit
        service.delete("notes", "small")
        stats = service.stats()
    assert reported.units  # the endpoint did report, and the hook took it away
    stored = {"_id": "big", "_rev": rev, **big}
    assert write_units_for(item_size(stored)) == 3.0
    assert stats["consumed_capacity"] == {
        "read_units": 2.0,
        "write_units": 3.0 + 1.0 + 1.0,
        "estimated_read_units": 2.0,
        "estimated_write_units": 5.0,
        "by_operation": {
            "DeleteItem": {"read_units": 0.0, "write_units": 1.0},
            "GetItem": {"read_units": 2.0, "write_units": 0.0},
            "PutItem": {"read_units": 0.0, "write_units": 4.0},
        },
    }
    assert stats["cost"]["dollars"] == cost_dollars(2.0, 5.0)


def test_nothing_is_estimated_for_a_data_resource_of_the_callers(
    moto_server: Any, table_prefix: str
) -> None:
    # DAX leaves ConsumedCapacity out of answers from its cache, which cost DynamoDB nothing.
    import boto3

    resource = boto3.session.Session().resource("dynamodb", endpoint_url=moto_server.endpoint_url)
    with make_service(moto_server.endpoint_url, table_prefix, data_resource=resource) as service:
        Reported(service, strip=True)
        service.save("notes", "a", {"v": 1})
        service.get("notes", "a")
        capacity = service.stats()["consumed_capacity"]
    assert (capacity["read_units"], capacity["write_units"]) == (0.0, 0.0)


def test_a_failed_condition_counts_an_estimated_write(moto_server: Any, table_prefix: str) -> None:
    with make_service(moto_server.endpoint_url, table_prefix) as service:
        reported = Reported(service)
        first = service.save("notes", "a", {"v": 1})["rev"]
        service.save("notes", "a", {"v": 2})
        with pytest.raises(ConflictError):
            service.save("notes", "a", {"v": 3}, if_rev=first)
        capacity = service.stats()["consumed_capacity"]
    assert capacity["estimated_write_units"] == 1.0
    assert capacity["by_operation"]["PutItem"]["write_units"] == reported.units["PutItem"] + 1.0


def test_gateway_stats_have_latency_per_operation_capacity_and_cost(
    moto_server: Any, table_prefix: str
) -> None:
    with gateways("memory", moto_server.endpoint_url, table_prefix, None, indexes=INDEXES) as (gw,):
        _exercise(gw)
        for _ in range(20):
            gw.get("users", "u2")  # cache hits
        with pytest.raises(ValidationError):
            gw.get("users", "")  # calls that raise are timed too
        stats = gw.stats()
        service_stats = gw.service.stats()
    latency = stats["latency"]
    assert set(latency) == GATEWAY_OPERATIONS
    assert latency["get"]["count"] == 2 + 20 + 1
    assert latency["save"]["count"] == 2 and latency["query"]["count"] == 1
    for operation, snapshot in latency.items():
        assert set(snapshot) == {"count", "p50_us", "p90_us", "p99_us", "max_us", "mean_us"}
        assert 0 < snapshot["p50_us"] <= snapshot["p90_us"] <= snapshot["p99_us"], operation
        assert snapshot["p99_us"] <= snapshot["max_us"], operation
    # Hits are far faster than the DynamoDB calls behind the misses.
    assert latency["get"]["p50_us"] < stats["db_latency"]["GetItem"]["p50_us"]
    assert stats["db_latency"] == service_stats["latency"]
    assert stats["consumed_capacity"] == service_stats["consumed_capacity"]
    assert stats["consumed_capacity"]["read_units"] > 0
    assert stats["consumed_capacity"]["write_units"] > 0
    cost = stats["cost"]
    assert cost["dollars"] == service_stats["cost"]["dollars"] > 0
    assert cost["per_million_requests"] == service_stats["cost"]["per_million_requests"]
    ops = sum(snapshot["count"] for snapshot in latency.values())
    assert cost["per_million_ops"] == pytest.approx(cost["dollars"] / ops * 1e6)


# ------------------------------------------------------------------------------------------
# Prometheus
# ------------------------------------------------------------------------------------------


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted label pairs: value}, parsed with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest.fixture
def exported_gateway(moto_server: Any, table_prefix: str) -> Iterator[Any]:
    with gateways("memory", moto_server.endpoint_url, table_prefix, None, indexes=INDEXES) as (gw,):
        yield gw


def test_prometheus_exporter_serves_the_gateways_stats(exported_gateway: Any) -> None:
    from gateway.prometheus import start_exporter

    gw = exported_gateway
    gw.save("users", "a", {"kind": "x"})
    gw.get("users", "a")
    gw.get("users", "a")
    gw.get("users", "nope")
    with start_exporter(gw, 0) as exporter:
        assert exporter.port > 0 and exporter.url.startswith("http://127.0.0.1:")
        metrics = _scrape(exporter.url)
        stats = gw.stats()
        gw.get("users", "a")
        again = _scrape(exporter.url)  # read at scrape time: the new hit shows
    assert metrics["gateway_info"] == {(("cache_backend", "memory"),): 1.0}
    assert metrics["gateway_cache_hits_total"][()] == stats["hits"] == 2
    assert again["gateway_cache_hits_total"][()] == 3
    assert metrics["gateway_cache_misses_total"][()] == 1
    assert metrics["gateway_cache_hit_ratio"][()] == pytest.approx(2 / 3)
    for name in ("errors", "fallbacks", "evictions", "repairs", "single_flight_waits"):
        assert metrics[f"gateway_cache_{name}_total"][()] == 0
    assert metrics["gateway_cache_breaker_state"][(("state", "closed"),)] == 1
    assert metrics["gateway_cache_breaker_state"][(("state", "open"),)] == 0
    calls = metrics["gateway_dynamodb_calls_total"]
    for operation, count in stats["db_calls"].items():
        assert calls[(("operation", operation),)] == count
    consumed = metrics["gateway_dynamodb_consumed_capacity_units_total"]
    by_operation = stats["consumed_capacity"]["by_operation"]
    assert consumed[(("kind", "read"), ("operation", "GetItem"))] == pytest.approx(
        by_operation["GetItem"]["read_units"]
    )
    assert consumed[(("kind", "write"), ("operation", "PutItem"))] == pytest.approx(
        by_operation["PutItem"]["write_units"]
    )
    assert metrics["gateway_dynamodb_estimated_capacity_units_total"][(("kind", "read"),)] == 0
    assert metrics["gateway_dynamodb_cost_dollars_total"][()] == pytest.approx(
        stats["cost"]["dollars"]
    )
    assert metrics["gateway_cost_per_million_ops_dollars"][()] == pytest.approx(
        stats["cost"]["per_million_ops"]
    )
    get = stats["latency"]["get"]
    quantiles = metrics["gateway_operation_latency_seconds"]
    for quantile, key in (("0.5", "p50_us"), ("0.9", "p90_us"), ("0.99", "p99_us")):
        labels = (("operation", "get"), ("quantile", quantile))
        assert quantiles[labels] == pytest.approx(get[key] / 1e6)
    assert metrics["gateway_operation_latency_seconds_count"][(("operation", "get"),)] == 3
    assert metrics["gateway_operation_latency_seconds_sum"][
        (("operation", "get"),)
    ] == pytest.approx(get["mean_us"] * 3 / 1e6)
    assert {labels[0][1] for labels in metrics["gateway_operation_latency_max_seconds"]} == {
        "get",
        "save",
    }
    db_counts = metrics["gateway_dynamodb_latency_seconds_count"]
    assert db_counts[(("operation", "GetItem"),)] == stats["db_latency"]["GetItem"]["count"]
    assert metrics["gateway_dynamodb_retries_total"][()] == 0
    assert metrics["gateway_coalescing_batches_total"][(("direction", "reads"),)] == 0


def test_prometheus_exporter_for_a_bare_service(moto_server: Any, table_prefix: str) -> None:
    from gateway.prometheus import start_exporter

    with make_service(moto_server.endpoint_url, table_prefix) as service:
        service.save("notes", "a", {"v": 1})
        with start_exporter(service, 0) as exporter:
            metrics = _scrape(exporter.url)
    assert "gateway_info" not in metrics and "gateway_cache_errors_total" not in metrics
    assert "gateway_operation_latency_seconds_count" not in metrics
    assert metrics["gateway_dynamodb_latency_seconds_count"][(("operation", "PutItem"),)] == 1
    assert metrics["gateway_cache_hits_total"][()] == 0
    assert metrics["gateway_dynamodb_cost_per_million_requests_dollars"][()] > 0


def test_exporter_close_releases_the_port(exported_gateway: Any) -> None:
    import socket

    from gateway.prometheus import start_exporter

    exporter = start_exporter(exported_gateway, 0)
    port = exporter.port
    exporter.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free again


def test_missing_prometheus_client_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, moto_server: Any, table_prefix: str
) -> None:
    from gateway.prometheus import PrometheusExporter, start_exporter

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with make_service(moto_server.endpoint_url, table_prefix) as service:
        for build in (lambda: PrometheusExporter(service), lambda: start_exporter(service, 0)):
            with pytest.raises(ConfigError, match=r"pip install 'dynamodb-gateway\[metrics\]'"):
                build()


def _collect(service: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """`_scrape` without HTTP: the exporter's text from a registry of its own, parsed."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from gateway.prometheus import PrometheusExporter

    registry = CollectorRegistry()
    registry.register(PrometheusExporter(service))
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_prometheus_exports_the_memory_backends_items(exported_gateway: Any) -> None:
    gw = exported_gateway
    gw.save("users", "a", {"kind": "x"})
    gw.get("users", "a")
    metrics = _collect(gw)
    assert metrics["gateway_cache_items"][()] == gw.stats()["cache"]["items"] == 1
    assert metrics["gateway_cache_writes_refused_total"][()] == 0
    for tiered_only in (
        "gateway_cache_healthy",
        "gateway_cache_ack_timeouts_total",
        "gateway_cache_invalidation_lag_seconds",
        "gateway_cache_invalidation_lag_max_seconds",
    ):
        assert tiered_only not in metrics


def test_prometheus_exports_the_tiered_backends_health_and_lag(
    moto_server: Any, table_prefix: str, redis_url: str
) -> None:
    with gateways("tiered", moto_server.endpoint_url, table_prefix, redis_url, count=2) as pair:
        writer, reader = pair
        for gw in pair:
            assert gw.cache.wait_healthy(10.0)  # type: ignore[attr-defined]
        before = _collect(reader)
        # No invalidation received yet: the lag families have no sample.
        assert before["gateway_cache_invalidation_lag_samples"][()] == 0
        assert "gateway_cache_invalidation_lag_seconds" not in before
        assert "gateway_cache_invalidation_lag_max_seconds" not in before
        for i in range(3):
            writer.save("users", f"u{i}", {"kind": "x"})
            reader.get("users", f"u{i}")
        writer.save("users", "u0", {"kind": "y"})  # invalidates the reader's copy
        deadline = time.monotonic() + 10.0
        while reader.stats()["cache"]["invalidation_lag_ms"]["samples"] == 0:
            assert time.monotonic() < deadline, reader.stats()["cache"]
            time.sleep(0.01)
        metrics = _collect(reader)
        stats = reader.stats()
    cache = stats["cache"]
    assert metrics["gateway_info"] == {(("cache_backend", "tiered"),): 1.0}
    assert metrics["gateway_cache_items"][()] == cache["memory"]["items"] >= 2
    assert metrics["gateway_cache_healthy"][()] == 1
    assert metrics["gateway_cache_ack_timeouts_total"][()] == cache["ack_timeouts"] == 0
    lag = cache["invalidation_lag_ms"]
    assert metrics["gateway_cache_invalidation_lag_samples"][()] == lag["samples"] >= 1
    quantiles = metrics["gateway_cache_invalidation_lag_seconds"]
    assert quantiles[(("quantile", "0.5"),)] == pytest.approx(lag["p50"] / 1e3)
    assert quantiles[(("quantile", "0.99"),)] == pytest.approx(lag["p99"] / 1e3)
    assert metrics["gateway_cache_invalidation_lag_max_seconds"][()] == pytest.approx(
        lag["max"] / 1e3
    )
    assert metrics["gateway_cache_breaker_state"][(("state", "closed"),)] == 1
    assert metrics["gateway_cache_writes_refused_total"][()] == 0


def test_prometheus_exports_refused_writes_and_the_open_breaker(
    moto_server: Any, table_prefix: str, redis_relay: Any
) -> None:
    from gateway.breaker import CircuitBreaker

    with gateways(
        "redis",
        moto_server.endpoint_url,
        table_prefix,
        redis_relay.url,
        breaker=lambda: CircuitBreaker(failure_threshold=1, reset_s=60.0),
    ) as (gw,):
        gw.save("users", "a", {"kind": "x"})
        healthy = _collect(gw)
        redis_relay.refuse()
        with pytest.raises(ServiceUnavailableError, match="nothing was written"):
            gw.save("users", "a", {"kind": "y"})
        metrics = _collect(gw)
        stats = gw.stats()
        redis_relay.heal()
    # The redis backend has no in-process tier and none of the tiered backend's metrics.
    assert "gateway_cache_items" not in healthy and "gateway_cache_healthy" not in healthy
    assert healthy["gateway_cache_writes_refused_total"][()] == 0
    assert metrics["gateway_cache_writes_refused_total"][()] == stats["writes_refused"] == 1
    assert metrics["gateway_cache_errors_total"][()] == stats["cache_errors"] >= 1
    assert stats["breaker"] == "open"
    assert metrics["gateway_cache_breaker_state"] == {
        (("state", "closed"),): 0,
        (("state", "open"),): 1,
        (("state", "half_open"),): 0,
    }


class _Snapshot:
    """A stats source answering one fixed ``stats()`` snapshot (so that the metrics can be
    compared with the very numbers they were made from, while a follower keeps working)."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self._stats = stats

    def stats(self) -> dict[str, Any]:
        return self._stats


def test_prometheus_exports_the_stream_followers_progress(
    moto_server: Any, table_prefix: str
) -> None:
    from gateway import Settings, get_database_service

    settings = Settings(
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url,
        DYNAMODB_TABLE_PREFIX=table_prefix,
        CACHE_BACKEND="memory",
        STREAMS_INVALIDATION=True,
    )
    with (
        get_database_service(settings) as gw,
        make_service(moto_server.endpoint_url, table_prefix) as bare,
    ):
        gw.save("users", "a", {"kind": "x"})  # its table is created with a stream
        assert gw.get("ghosts", "a") is None  # followed, but its table does not exist
        # The follower starts at the stream's newest record: write behind the gateway's back
        # until one of the writes is applied.
        deadline = time.monotonic() + 60.0
        version = 0
        while gw.stats()["streams"]["collections"]["users"]["records_applied"] == 0:
            assert time.monotonic() < deadline, gw.stats()["streams"]
            version += 1
            bare.save("users", "a", {"kind": "x", "v": version})
            time.sleep(0.1)
        stats = gw.stats()
        metrics = _collect(_Snapshot(stats))
        live = _collect(gw)
    collections = stats["streams"]["collections"]
    assert set(collections) == {"users", "ghosts"}
    assert metrics["gateway_stream_records_applied_total"] == {
        (("collection", name),): float(c["records_applied"]) for name, c in collections.items()
    }
    assert metrics["gateway_stream_records_applied_total"][(("collection", "ghosts"),)] == 0
    assert metrics["gateway_stream_lag_seconds"] == {
        (("collection", name),): pytest.approx(c["lag_s"])
        for name, c in collections.items()
        if c["lag_s"] is not None
    }
    assert collections["users"]["lag_s"] is not None
    assert collections["ghosts"]["lag_s"] is None  # nothing applied: no sample
    assert metrics["gateway_stream_shards_held"] == {
        (("collection", name),): float(c["shards_held"]) for name, c in collections.items()
    }
    assert metrics["gateway_stream_shards_held"][(("collection", "ghosts"),)] == 0
    assert live["gateway_stream_records_applied_total"][(("collection", "users"),)] >= 1


def test_prometheus_has_no_stream_metrics_without_a_follower(exported_gateway: Any) -> None:
    exported_gateway.save("users", "a", {"kind": "x"})
    assert "streams" not in exported_gateway.stats()
    metrics = _collect(exported_gateway)
    for name in (
        "gateway_stream_records_applied_total",
        "gateway_stream_lag_seconds",
        "gateway_stream_shards_held",
    ):
        assert name not in metrics
