"""``gateway import`` / ``gateway copy`` under faults injected at the wire: 0 lost, 0 duplicated.

Issue 13's bar for the pipelined import and copy (`gateway.migrate`, `gateway.write_window`):
under 30 % throttling and 60 % partial batches (``UnprocessedItems`` / ``UnprocessedKeys``)
injected by the fault proxy (tests/servers/fault_proxy.py) in front of the emulator, with
several batches (and scan segments) in flight, every document is stored exactly once with the
content of its last line, and the summary counts are exact; an import that fails past its
retries reports a last line committed from which ``--resume-from`` (``start_line``) finishes
the import exactly; and two lines of one id land in file order even when the proxy reorders
the requests in flight (random per-request latency).

What is stored is read back with a raw client straight from the emulator, never through the
proxy. Nothing here asserts on elapsed time.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from gateway import DynamoDBService
from gateway.bench.latency import service_clients
from gateway.cli import main
from gateway.emulator import EmbeddedDynamoDB
from gateway.migrate import (
    ImportSummary,
    MigrationInterrupted,
    Progress,
    copy_collection,
    import_lines,
)
from gateway.retry import RetryPolicy
from tests.gateway_helpers import make_service
from tests.servers import FaultProxy

COLLECTION = "people"
THROTTLE_RATE = 0.3
PARTIAL_RATE = 0.6
THROTTLE_CODE = "ProvisionedThroughputExceededException"
#: Fast, and generous enough to ride out the faults: a BatchWriteItem of 25 needs all 25
#: items through, each kept back with probability 0.6 per attempt (0.6 ** 40 * 25 ~ 3e-8).
RIDE_OUT = {"max_attempts": 40, "base_s": 0.001, "cap_s": 0.005, "deadline_s": 60}

ServiceFactory = Callable[..., DynamoDBService]


@pytest.fixture
def through_proxy(fault_proxy: FaultProxy, table_prefix: str) -> Iterator[ServiceFactory]:
    """``through_proxy(suffix="", **kwargs)``: a service whose requests all go through the
    fault proxy, with the fast retry policy `RIDE_OUT`, table prefix ``table_prefix + suffix``."""
    services: list[DynamoDBService] = []

    def make(suffix: str = "", **kwargs: Any) -> DynamoDBService:
        kwargs.setdefault("retry_policy", RetryPolicy(**RIDE_OUT))  # type: ignore[arg-type]
        svc = make_service(fault_proxy.endpoint_url, table_prefix + suffix, **kwargs)
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.close()


@pytest.fixture
def direct(moto_server: EmbeddedDynamoDB, table_prefix: str) -> Iterator[ServiceFactory]:
    """``direct(suffix="")``: a service straight to the emulator (no proxy, no faults)."""
    services: list[DynamoDBService] = []

    def make(suffix: str = "") -> DynamoDBService:
        svc = make_service(moto_server.endpoint_url, table_prefix + suffix)
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.close()


@pytest.fixture
def stored(
    dynamodb_client: Callable[..., Any], table_prefix: str
) -> Callable[..., dict[str, dict[str, Any]]]:
    """``stored(suffix="", collection=COLLECTION)``: every item of the table, read by a raw
    Scan straight from the emulator, by id, without ``_rev``; fails on an id seen twice."""
    client = dynamodb_client()
    deserializer = TypeDeserializer()

    def read(suffix: str = "", collection: str = COLLECTION) -> dict[str, dict[str, Any]]:
        params: dict[str, Any] = {
            "TableName": table_prefix + suffix + collection,
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            page = client.scan(**params)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        docs = [{k: deserializer.deserialize(v) for k, v in item.items()} for item in items]
        ids = [doc["_id"] for doc in docs]
        assert len(ids) == len(set(ids)), "an id stored twice"
        assert all(isinstance(doc.get("_rev"), str) for doc in docs), "a document without _rev"
        return {doc["_id"]: {k: v for k, v in doc.items() if k != "_rev"} for doc in docs}

    return read


@pytest.fixture(autouse=True)
def collection_exists(direct: ServiceFactory) -> None:
    """The collection's table, made before the faults: a throttled DescribeTable while a new
    table is awaited is not retried (botocore's ``table_exists`` waiter in
    `gateway.tables.TableManager`), and table creation is not what these tests are about."""
    direct().ensure_table(COLLECTION)
    direct("dst-").ensure_table(COLLECTION)


def faults_on(proxy: FaultProxy) -> None:
    """30 % of every request throttled, 60 % of the items of every batch kept back."""
    proxy.configure(
        throttle_rate=THROTTLE_RATE,
        throttle_code=THROTTLE_CODE,
        partial_rate=PARTIAL_RATE,
        operations=None,
    )


def assert_faults_were_injected(proxy: FaultProxy, *operations: str) -> None:
    injected = proxy.injected()
    for operation in operations:
        assert injected.get(THROTTLE_CODE, {}).get(operation), (operation, injected)
    assert injected.get("partial", {}).get("BatchWriteItem"), injected
    assert proxy.withheld_counts().get("BatchWriteItem"), proxy.withheld_counts()


# -- an import file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportFile:
    """Lines of plain JSON, and what importing them must give."""

    lines: list[str]
    #: Line numbers (1-based) of the valid, bad and blank lines.
    valid: list[int]
    bad: list[int]
    blank: list[int]

    def document(self, line_no: int) -> dict[str, Any]:
        """The document line ``line_no`` stores, as read back (numbers are Decimal)."""
        doc: dict[str, Any] = json.loads(
            self.lines[line_no - 1], parse_float=Decimal, parse_int=Decimal
        )
        return doc

    def expected(self, first: int = 1, last: int | None = None) -> dict[str, dict[str, Any]]:
        """Each id's document from its last valid line in ``first..last``."""
        last = len(self.lines) if last is None else last
        out: dict[str, dict[str, Any]] = {}
        for line_no in self.valid:
            if first <= line_no <= last:
                doc = self.document(line_no)
                out[doc["_id"]] = doc
        return out

    def check(self, summary: ImportSummary, first: int = 1) -> None:
        """The summary of an import from line ``first`` to the end that did not stop."""
        assert summary.first_line == first
        assert summary.lines_read == len(self.lines) - first + 1
        assert summary.saved == len([n for n in self.valid if n >= first])
        assert summary.skipped_existing == 0
        assert summary.blank_lines == len([n for n in self.blank if n >= first])
        assert [bad.line_no for bad in summary.bad_lines] == [n for n in self.bad if n >= first]
        assert summary.last_line_committed == len(self.lines)


def import_file(count: int, distinct: int, seed: int) -> ImportFile:
    """``count`` lines: about one in 60 not JSON, one in 70 blank, the others documents of
    ``distinct`` ids picked at random (so an id comes back within a batch and across the
    batches in flight), each carrying its line number."""
    rng = random.Random(seed)
    lines: list[str] = []
    valid: list[int] = []
    bad: list[int] = []
    blank: list[int] = []
    for line_no in range(1, count + 1):
        if line_no % 61 == 0:
            lines.append('{"_id": "broken", ')
            bad.append(line_no)
        elif line_no % 71 == 0:
            lines.append("   ")
            blank.append(line_no)
        else:
            doc_id = f"p{rng.randrange(distinct):04d}"
            doc = {
                "_id": doc_id,
                "line": line_no,
                "text": f"line {line_no} of {doc_id} ✓",
                "nested": {"ratio": 0.5, "tags": ["a", str(line_no)]},
            }
            lines.append(json.dumps(doc, ensure_ascii=False))
            valid.append(line_no)
    return ImportFile(lines, valid, bad, blank)


# -- import ------------------------------------------------------------------------------------


@pytest.mark.parametrize("into_empty", [False, True], ids=["plain", "into_empty"])
def test_import_under_throttling_and_partial_batches_loses_and_duplicates_nothing(
    through_proxy: ServiceFactory,
    fault_proxy: FaultProxy,
    stored: Callable[..., dict[str, dict[str, Any]]],
    into_empty: bool,
) -> None:
    data = import_file(300, distinct=210, seed=13)
    svc = through_proxy()
    faults_on(fault_proxy)
    summary = import_lines(svc, COLLECTION, data.lines, into_empty=into_empty, max_in_flight=8)
    data.check(summary)
    assert_faults_were_injected(fault_proxy, "BatchWriteItem")
    fault_proxy.clear_faults()
    assert stored() == data.expected()
    counts = fault_proxy.counts()
    if into_empty:
        assert "BatchGetItem" not in counts  # no revision reads
    else:
        assert counts["BatchGetItem"]
        assert fault_proxy.injected()["partial"].get("BatchGetItem")


def test_an_import_stopped_past_its_retries_resumes_exactly(
    through_proxy: ServiceFactory,
    fault_proxy: FaultProxy,
    stored: Callable[..., dict[str, dict[str, Any]]],
) -> None:
    """Under the faults, then every request throttled once a quarter of the documents are
    saved: the import stops with batches in flight, and resuming from its last line committed
    (under the same 30 % / 60 % faults) finishes it exactly."""
    _stopped_import_resumes_exactly(through_proxy, fault_proxy, stored, into_empty=False)


def test_an_import_into_empty_stopped_past_its_retries_resumes_exactly(
    through_proxy: ServiceFactory,
    fault_proxy: FaultProxy,
    stored: Callable[..., dict[str, dict[str, Any]]],
) -> None:
    """The same with ``into_empty``; the resumed run goes without it (the collection is no
    longer empty, and ``into_empty`` refuses a collection that is not)."""
    _stopped_import_resumes_exactly(through_proxy, fault_proxy, stored, into_empty=True)


class SavedBatches:
    """The service, recording every ``save_many`` call that returned (the batches an import
    saved); everything else is the service's."""

    def __init__(self, service: DynamoDBService) -> None:
        self._service = service
        self._lock = threading.Lock()
        self.batches: list[dict[str, dict[str, Any]]] = []

    def save_many(self, db_name: str, docs: dict[str, dict[str, Any]], **kwargs: Any) -> Any:
        revs = self._service.save_many(db_name, docs, **kwargs)
        with self._lock:
            self.batches.append(dict(docs))
        return revs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)


def _stopped_import_resumes_exactly(
    through_proxy: ServiceFactory,
    fault_proxy: FaultProxy,
    stored: Callable[..., dict[str, dict[str, Any]]],
    *,
    into_empty: bool,
) -> None:
    data = import_file(360, distinct=250, seed=31 + into_empty)
    svc = SavedBatches(through_proxy())
    faults_on(fault_proxy)
    cut_off = len(data.valid) // 4
    cut = threading.Event()

    def progress(p: Progress) -> None:
        if p.documents >= cut_off and not cut.is_set():
            cut.set()
            fault_proxy.configure(throttle_rate=1.0)  # every request from now on

    with pytest.raises(MigrationInterrupted) as caught:
        import_lines(
            svc,  # type: ignore[arg-type]
            COLLECTION,
            data.lines,
            batch_size=10,
            into_empty=into_empty,
            max_in_flight=8,
            progress=progress,
        )
    stopped = caught.value.summary
    assert isinstance(stopped, ImportSummary)
    committed = stopped.last_line_committed
    assert 0 < committed < len(data.lines)
    assert caught.value.resume_from == stopped.resume_from == committed + 1
    # Saved counts exactly the documents of the batches that were saved: every valid line up
    # to the one committed, and maybe batches after it that were in flight with the failed one.
    assert stopped.saved == sum(len(batch) for batch in svc.batches)
    saved_lines = {int(doc["line"]) for batch in svc.batches for doc in batch.values()}
    assert {n for n in data.valid if n <= committed} <= saved_lines
    assert [bad.line_no for bad in stopped.bad_lines if bad.line_no <= committed] == [
        n for n in data.bad if n <= committed
    ]
    # What is stored: lines of the file (a failed batch may have written part of itself),
    # never older than a saved line of the same id.
    at_stop = stored()
    for doc in at_stop.values():
        assert data.document(int(doc["line"])) == doc
    for line_no in saved_lines:
        doc = data.document(line_no)
        assert at_stop[doc["_id"]]["line"] >= line_no

    fault_proxy.configure(throttle_rate=THROTTLE_RATE)  # back to 30 % / 60 %
    resumed = import_lines(
        svc,  # type: ignore[arg-type]
        COLLECTION,
        data.lines,
        start_line=stopped.resume_from,
    )
    data.check(resumed, first=committed + 1)
    assert_faults_were_injected(fault_proxy, "BatchWriteItem")
    fault_proxy.clear_faults()
    assert stored() == data.expected()


# -- lines of one id, requests reordered at the wire ---------------------------------------------


@dataclass
class WireLog:
    """The BatchWriteItem calls of a client, in the order they were sent and answered: events
    ``(kind, call number, ((id, line), ...))``, kind "sent" or "answered"."""

    events: list[tuple[str, int, tuple[tuple[str, int], ...]]]
    lock: threading.Lock
    calls: int = 0

    def sent(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        body = json.loads(params["body"])
        puts = tuple(
            (put["PutRequest"]["Item"]["_id"]["S"], int(put["PutRequest"]["Item"]["line"]["N"]))
            for requests in body["RequestItems"].values()
            for put in requests
        )
        with self.lock:
            self.calls += 1
            context["wire_log_call"] = (self.calls, puts)
            self.events.append(("sent", self.calls, puts))

    def answered(self, context: dict[str, Any], **_: Any) -> None:
        """An answer came back (after-call), or the call failed unanswered (after-call-error)."""
        call, puts = context["wire_log_call"]
        with self.lock:
            self.events.append(("answered", call, puts))


def log_batch_writes(svc: DynamoDBService) -> WireLog:
    log = WireLog([], threading.Lock())
    for client in service_clients(svc):
        client.meta.events.register("before-call.dynamodb.BatchWriteItem", log.sent)
        client.meta.events.register("after-call.dynamodb.BatchWriteItem", log.answered)
        client.meta.events.register("after-call-error.dynamodb.BatchWriteItem", log.answered)
    return log


@pytest.mark.parametrize("into_empty", [False, True], ids=["plain", "into_empty"])
def test_lines_of_one_id_land_in_file_order_when_the_wire_reorders_requests(
    through_proxy: ServiceFactory,
    fault_proxy: FaultProxy,
    stored: Callable[..., dict[str, dict[str, Any]]],
    into_empty: bool,
) -> None:
    """160 lines over 20 ids, batches of 4, 8 in flight; the proxy delays each request by a
    random 0-10 ms (so answers come back out of order), and throttles and splits batches.

    At the wire: a write of an id is never sent while another write of that id is unanswered,
    and the lines of an id are sent in file order; and the last line of each id is
    what is stored."""
    rng = random.Random(2024 + into_empty)
    lines = [json.dumps({"_id": f"k{rng.randrange(20):02d}", "line": n}) for n in range(1, 161)]
    svc = through_proxy()
    log = log_batch_writes(svc)
    faults_on(fault_proxy)
    fault_proxy.configure(latency_jitter_ms=10.0)
    summary = import_lines(
        svc, COLLECTION, lines, batch_size=4, into_empty=into_empty, max_in_flight=8
    )
    assert summary.saved == 160 and summary.last_line_committed == 160 and summary.ok
    fault_proxy.clear_faults()

    # The proxy did reorder: some request was answered before one sent earlier.
    sent_order = [call for kind, call, _ in log.events if kind == "sent"]
    answer_order = [call for kind, call, _ in log.events if kind == "answered"]
    assert sorted(sent_order) == sorted(answer_order)
    assert answer_order != sent_order

    outstanding: dict[str, dict[int, int]] = {}  # id -> call -> line, sent and not answered
    last_sent: dict[str, int] = {}
    for kind, call, puts in log.events:
        for doc_id, line in puts:
            if kind == "sent":
                pending = outstanding.setdefault(doc_id, {})
                assert not pending, (doc_id, line, pending)  # no write of it unanswered
                assert line >= last_sent.get(doc_id, 0), (doc_id, line, last_sent[doc_id])
                last_sent[doc_id] = line
                pending[call] = line
            else:
                del outstanding[doc_id][call]

    last_line: dict[str, int] = {}
    for n, text in enumerate(lines, start=1):
        last_line[json.loads(text)["_id"]] = n
    assert {doc_id: int(doc["line"]) for doc_id, doc in stored().items()} == last_line
    assert last_sent == last_line


# -- copy --------------------------------------------------------------------------------------


def test_copy_with_scan_segments_under_throttling_and_partial_batches(
    through_proxy: ServiceFactory,
    direct: ServiceFactory,
    fault_proxy: FaultProxy,
    stored: Callable[..., dict[str, dict[str, Any]]],
) -> None:
    """200 documents read by a parallel scan and written 6 batches at a time, the scan and
    the writes throttled and the batches split; then the same copy again with
    ``skip_existing`` after a third of the target was deleted. (32 and 16 segments: one Scan
    each at least, so that some are throttled whatever the order of the draws: 0.7 ** 48.)"""
    docs = {
        f"c{i:04d}": {"i": i, "text": f"document {i}", "nested": {"even": i % 2 == 0}}
        for i in range(200)
    }
    direct("src-").save_many(COLLECTION, docs)
    source = through_proxy("src-")
    target = through_proxy("dst-")
    faults_on(fault_proxy)
    summary = copy_collection(source, target, COLLECTION, segments=32, max_in_flight=6)
    assert summary.documents == len(docs) and summary.skipped_existing == 0
    assert source.stats()["db_calls"]["Scan"] >= 32
    assert stored("dst-") == stored("src-")
    assert len(stored("dst-")) == len(docs)

    removed = sorted(docs)[::3]
    direct("dst-").delete_many(COLLECTION, removed)
    again = copy_collection(
        source, target, COLLECTION, segments=16, max_in_flight=4, skip_existing=True
    )
    assert again.documents == len(removed)
    assert again.skipped_existing == len(docs) - len(removed)
    assert_faults_were_injected(fault_proxy, "Scan", "BatchGetItem", "BatchWriteItem")
    assert fault_proxy.injected()["partial"].get("BatchGetItem")
    fault_proxy.clear_faults()
    assert stored("dst-") == stored("src-")


@pytest.mark.parametrize("batch_size", ["25", "100"])
def test_an_import_stopped_by_expired_credentials_after_writing_exits_1(
    batch_size: str,
    fault_proxy: FaultProxy,
    table_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exit 2 is "bad usage or configuration, nothing done": a session token that expires
    after the first BatchWriteItem was stored (ExpiredTokenException at the wire) exits 1, with
    the line to resume from (found by review: it exited 2; with batches of 100, four requests
    each, also when the batch that failed had been partly written and counted nothing)."""
    monkeypatch.setenv("BULK_MAX_IN_FLIGHT", "1")  # one BatchWriteItem at a time
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"_id": f"d{i:03d}", "n": i}) + "\n" for i in range(100)))
    args = ["--endpoint-url", fault_proxy.endpoint_url, "--table-prefix", table_prefix]
    args += ["import", "expired", str(path), "--batch-size", batch_size, "--max-in-flight", "1"]
    codes: list[int] = []
    with fault_proxy.hold({"BatchWriteItem"}, answers=True) as gate:
        running = threading.Thread(target=lambda: codes.append(main(args)))
        running.start()
        assert gate.wait_arrived()  # the first batch is written; its answer waits
        fault_proxy.configure(
            throttle_rate=1.0,
            throttle_code="ExpiredTokenException",
            operations={"BatchWriteItem"},
        )
    running.join(60)
    assert codes == [1]
    resume = 26 if batch_size == "25" else 1
    assert f"resume with --resume-from {resume}" in capsys.readouterr().err
