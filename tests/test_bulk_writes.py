"""Bulk writes with several requests in flight: `gateway.bulk.BulkExecutor` with tasks that
record what they see, then ``save_many`` / ``delete_many`` over HTTP through the fault proxy
(requests held at the proxy, throttling, partial batches, lost answers).

Concurrency is shown with gates (events, conditions, `FaultProxy.hold`), never with sleeps,
and nothing here asserts on elapsed time: real-time limits only guard against a hang.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from gateway import ConfigError, DynamoDBService, ServiceUnavailableError, Settings
from gateway.bench.latency import service_clients
from gateway.bulk import THREAD_NAME_PREFIX, BulkExecutor, Task, read_ahead_for
from gateway.emulator import EmbeddedDynamoDB
from gateway.factory import build_dynamodb_service
from gateway.retry import RetryPolicy
from gateway.revisions import parse_generation
from tests.servers import FaultProxy

#: Real-time guard against a hang; never a performance assertion.
HANG_GUARD_S = 60.0
DB = "bulk"


def bulk_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)}


class Gate:
    """Counts tasks that started and keeps them waiting until `open`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.started: list[str] = []
        self._open = False

    def enter(self, name: str) -> None:
        with self._cond:
            self.started.append(name)
            self._cond.notify_all()
            assert self._cond.wait_for(lambda: self._open, HANG_GUARD_S)

    def wait_started(self, count: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.started) >= count, HANG_GUARD_S)

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; its result or exception lands in the returned dict."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # inspected by the test
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


# -- BulkExecutor ------------------------------------------------------------------------------


def test_max_in_flight_is_validated() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_in_flight"):
            BulkExecutor(bad)  # type: ignore[arg-type]


def test_at_most_max_in_flight_tasks_run_at_once() -> None:
    executor = BulkExecutor(3)
    gate = Gate()
    tasks: list[Task] = [lambda i=i: gate.enter(f"w{i}") for i in range(7)]
    try:
        runner, outcome = in_thread(lambda: executor.run(tasks))
        assert gate.wait_started(3)
        # Three are running and blocked; the pool has three threads, so a fourth cannot start.
        assert len(gate.started) == 3
        gate.open()
        runner.join(HANG_GUARD_S)
        assert outcome == {"result": None}
        assert sorted(gate.started) == sorted(f"w{i}" for i in range(7))
    finally:
        executor.close()


def test_reads_are_planned_in_order_and_overlap_the_writes() -> None:
    executor = BulkExecutor(4)
    second_read_done = threading.Event()
    all_planned = threading.Event()
    planned: list[int] = []
    writes = Gate()
    reads_done: list[int] = []

    def read(i: int) -> Callable[[], int]:
        def run() -> int:
            if i == 0:  # read 1 comes back first
                assert second_read_done.wait(HANG_GUARD_S)
            reads_done.append(i)
            if i == 1:
                second_read_done.set()
            return i * 10

        return run

    def plan(index: int, answer: int) -> Sequence[Task]:
        assert answer == index * 10
        planned.append(index)
        if index == 2:
            all_planned.set()
        return [lambda: writes.enter(f"c{index}")] if index == 0 else []

    try:
        runner, outcome = in_thread(lambda: executor.pipeline([read(0), read(1), read(2)], plan))
        assert writes.wait_started(1)
        # Chunk 0's write is in flight (held), and chunk 2 is read and planned meanwhile.
        assert all_planned.wait(HANG_GUARD_S)
        assert writes.started == ["c0"]
        writes.open()
        runner.join(HANG_GUARD_S)
        assert outcome == {"result": None}
        assert reads_done == [1, 0, 2]
        assert planned == [0, 1, 2]  # in read order, although read 1 came back first
    finally:
        executor.close()


def test_reads_run_ahead_by_a_bounded_number_of_chunks() -> None:
    assert read_ahead_for(1) == 2
    assert read_ahead_for(8) == 3
    executor = BulkExecutor(8)
    gate = Gate()
    reads = [lambda i=i: gate.enter(f"r{i}") for i in range(10)]
    try:
        runner, outcome = in_thread(lambda: executor.pipeline(reads, lambda i, _: ()))
        assert gate.wait_started(executor.read_ahead)
        assert len(gate.started) == executor.read_ahead  # not all ten at once
        gate.open()
        runner.join(HANG_GUARD_S)
        assert outcome == {"result": None}
    finally:
        executor.close()


def test_an_error_waits_for_the_tasks_in_flight_and_starts_no_new_one() -> None:
    executor = BulkExecutor(3)
    gate = Gate()
    # The other tasks in flight end only once the call has seen the error.
    executor.on_error = lambda error: gate.open()
    returned = threading.Event()
    finished: list[str] = []
    boom = RuntimeError("batch failed")

    def failing() -> None:
        assert gate.wait_started(2)  # both others are in flight
        raise boom

    def slow(name: str) -> Task:
        def run() -> None:
            gate.enter(name)
            # The call must not have returned while this batch was still in flight.
            finished.append(f"{name}:{'after' if returned.is_set() else 'before'}")

        return run

    never = [slow(f"never{i}") for i in range(3)]
    tasks = [slow("a"), slow("b"), failing, *never]

    def call() -> None:
        try:
            executor.run(tasks)
        finally:
            returned.set()

    try:
        runner, outcome = in_thread(call)
        runner.join(HANG_GUARD_S)
        assert outcome["error"] is boom
        assert sorted(finished) == ["a:before", "b:before"]  # and no "never" task ran
    finally:
        executor.close()


def test_one_in_flight_runs_inline_reads_first_then_writes() -> None:
    executor = BulkExecutor(1)
    calls: list[tuple[str, threading.Thread]] = []

    def record(name: str) -> None:
        calls.append((name, threading.current_thread()))

    reads = [lambda i=i: record(f"r{i}") or i for i in range(3)]

    def plan(index: int, answer: int) -> Sequence[Task]:
        return [lambda j=j: record(f"w{index}.{j}") for j in range(2)]

    before = bulk_threads()
    executor.pipeline(reads, plan)
    reads_first = ["r0", "r1", "r2"]
    then_writes = ["w0.0", "w0.1", "w1.0", "w1.1", "w2.0", "w2.1"]
    assert [name for name, _ in calls] == reads_first + then_writes
    assert {thread for _, thread in calls} == {threading.current_thread()}
    assert bulk_threads() == before  # no pool at all
    executor.close()


def test_close_ends_the_threads_and_refuses_new_calls() -> None:
    before = bulk_threads()
    executor = BulkExecutor(3)
    executor.run([lambda: None for _ in range(6)])
    started = bulk_threads() - before
    assert started
    executor.close()
    assert not any(thread.is_alive() for thread in started)
    executor.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        executor.run([lambda: None])


# -- the service, over HTTP ----------------------------------------------------------------


ServiceFactory = Callable[..., DynamoDBService]


@pytest.fixture
def make_service(
    moto_server: EmbeddedDynamoDB, fault_proxy: FaultProxy, table_prefix: str
) -> Iterator[ServiceFactory]:
    """``make_service(**kwargs)``: a service through the fault proxy, quick retries."""
    services: list[DynamoDBService] = []

    def make(**kwargs: Any) -> DynamoDBService:
        kwargs.setdefault("endpoint_url", fault_proxy.endpoint_url)
        kwargs.setdefault("table_prefix", table_prefix)
        kwargs.setdefault(
            "retry_policy", RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.01, deadline_s=10)
        )
        svc = DynamoDBService(**kwargs)
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.close()


@pytest.fixture
def direct(moto_server: EmbeddedDynamoDB, table_prefix: str) -> Iterator[DynamoDBService]:
    """A service straight to the emulator (no proxy, no faults), to read back what is stored."""
    with DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix) as svc:
        yield svc


def docs_of(count: int, tag: str = "v") -> dict[str, dict[str, Any]]:
    return {f"d{i:04d}": {"i": i, "tag": tag} for i in range(count)}


def stored_revs(svc: DynamoDBService) -> dict[str, str]:
    """Every stored document's rev, by id (a scan: duplicates would show as a repeated id)."""
    found = [(doc["_id"], doc["_rev"]) for doc in svc.list_all(DB)]
    assert len(found) == len({doc_id for doc_id, _ in found})
    return dict(found)


def record_requests(svc: DynamoDBService) -> list[tuple[str, str]]:
    """(operation, thread name) of every request the service's clients send, in order."""
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()

    def before_send(request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        target = target.decode() if isinstance(target, bytes) else target
        with lock:
            sent.append((target.rpartition(".")[2], threading.current_thread().name))

    for client in service_clients(svc):
        client.meta.events.register("before-send.dynamodb", before_send)
    return sent


def test_several_batch_writes_wait_at_the_proxy_together(
    make_service: ServiceFactory, fault_proxy: FaultProxy, direct: DynamoDBService
) -> None:
    svc = make_service(bulk_max_in_flight=4)
    svc.ensure_table(DB)
    docs = docs_of(200)
    with fault_proxy.hold({"BatchWriteItem"}) as gate:
        runner, outcome = in_thread(lambda: svc.save_many(DB, docs))
        assert gate.wait_arrived(4)  # four BatchWriteItem requests in flight at once
        assert gate.arrived == 4  # and no more: the bound holds
        gate.release()
        runner.join(HANG_GUARD_S)
    revs = outcome["result"]
    assert stored_revs(direct) == revs
    assert fault_proxy.counts()["BatchWriteItem"] == 8
    assert fault_proxy.counts()["BatchGetItem"] == 2


def test_the_next_revision_read_overlaps_the_previous_writes(
    make_service: ServiceFactory, fault_proxy: FaultProxy, direct: DynamoDBService
) -> None:
    svc = make_service(bulk_max_in_flight=8)
    svc.ensure_table(DB)
    before = direct.save_many(DB, docs_of(300, "old"))
    with fault_proxy.hold({"BatchWriteItem"}) as gate:
        runner, outcome = in_thread(lambda: svc.save_many(DB, docs_of(300, "new")))
        # Eight writes held: they come from two chunks of 100 ids, so the second chunk's
        # revisions were read while the first chunk's writes were unanswered.
        assert gate.wait_arrived(8)
        assert fault_proxy.counts()["BatchGetItem"] >= 2
        gate.release()
        runner.join(HANG_GUARD_S)
    revs = outcome["result"]
    assert stored_revs(direct) == revs
    for doc_id, rev in revs.items():
        assert parse_generation(rev) > parse_generation(before[doc_id])  # type: ignore[operator]


def test_throttling_partial_batches_and_lost_answers_lose_and_duplicate_nothing(
    make_service: ServiceFactory, fault_proxy: FaultProxy, direct: DynamoDBService
) -> None:
    policy = RetryPolicy(max_attempts=40, base_s=0.001, cap_s=0.005, deadline_s=60)
    svc = make_service(retry_policy=policy, bulk_max_in_flight=8)
    svc.ensure_table(DB)
    fault_proxy.configure(
        throttle_rate=0.2,
        partial_rate=0.3,
        lose_rate=0.1,
        operations={"BatchGetItem", "BatchWriteItem"},
    )
    first = svc.save_many(DB, docs_of(320, "one"))
    second = svc.save_many(DB, docs_of(320, "two"))
    assert set(first) == set(second) == set(docs_of(320))
    for doc_id in first:
        assert parse_generation(second[doc_id]) > parse_generation(first[doc_id])  # type: ignore[operator]
    assert stored_revs(direct) == second
    ids = list(second)
    svc.delete_many(DB, ids[:250])
    injected = fault_proxy.injected()
    assert injected["ProvisionedThroughputExceededException"]
    assert injected["partial"]
    assert injected["lost"]
    fault_proxy.clear_faults()
    assert stored_revs(direct) == {doc_id: second[doc_id] for doc_id in ids[250:]}
    assert all(doc["tag"] == "two" for doc in direct.list_all(DB))


def test_a_lost_answer_in_flight_reaches_the_caller_after_the_other_batches(
    make_service: ServiceFactory, fault_proxy: FaultProxy, direct: DynamoDBService
) -> None:
    """100 ids: one read, then four writes, all four held at the proxy together. One answer
    is lost (no retry): the caller gets the error, and every batch was answered."""
    svc = make_service(retry_policy=RetryPolicy(max_attempts=1), bulk_max_in_flight=4)
    svc.ensure_table(DB)
    docs = docs_of(100)
    with fault_proxy.hold({"BatchWriteItem"}) as gate:
        runner, outcome = in_thread(lambda: svc.save_many(DB, docs))
        assert gate.wait_arrived(4)
        fault_proxy.configure(lose_next=1, operations={"BatchWriteItem"})
        gate.release()
        runner.join(HANG_GUARD_S)
    assert isinstance(outcome.get("error"), ServiceUnavailableError)
    assert fault_proxy.counts()["BatchWriteItem"] == 4
    assert fault_proxy.injected()["lost"] == {"BatchWriteItem": 1}
    # All four were applied (the lost one too: only its answer was lost).
    assert sorted(stored_revs(direct)) == sorted(docs)
    assert len(svc.write_locks) == 0


def test_a_failed_batch_lets_the_others_in_flight_finish_first(
    make_service: ServiceFactory, direct: DynamoDBService
) -> None:
    """Four writes in flight; the one of ids d0000-d0024 fails before it leaves the client
    while the three others are kept waiting in the client: they are sent and answered
    before the caller gets the error."""
    svc = make_service(retry_policy=RetryPolicy(max_attempts=1), bulk_max_in_flight=4)
    svc.ensure_table(DB)
    cond = threading.Condition()
    state: dict[str, Any] = {"arrived": 0, "failed": False, "returned": False, "answered": []}

    def before_send(request: Any, **_: Any) -> None:
        if b"BatchWriteItem" not in request.headers.get("X-Amz-Target", b""):
            return
        with cond:
            state["arrived"] += 1
            cond.notify_all()
            assert cond.wait_for(lambda: state["arrived"] == 4, HANG_GUARD_S)
            if b'"d0000"' in (request.body or b""):
                state["failed"] = True
                cond.notify_all()
                raise EndpointConnectionError(endpoint_url="http://unreachable.invalid")
            # The others wait until the failed one has failed, then go to the emulator.
            assert cond.wait_for(lambda: state["failed"], HANG_GUARD_S)

    def after_call(**_: Any) -> None:
        with cond:
            state["answered"].append(state["returned"])

    for client in service_clients(svc):
        client.meta.events.register("before-send.dynamodb", before_send)
        client.meta.events.register("after-call.dynamodb.BatchWriteItem", after_call)

    def call() -> Any:
        try:
            return svc.save_many(DB, docs_of(100))
        finally:
            with cond:
                state["returned"] = True

    before = bulk_threads()
    runner, outcome = in_thread(call)
    runner.join(HANG_GUARD_S)
    assert isinstance(outcome.get("error"), ServiceUnavailableError)
    assert state["answered"] == [False, False, False]  # all three, before the call returned
    assert sorted(stored_revs(direct)) == sorted(docs_of(100))[25:]
    assert len(svc.write_locks) == 0
    svc.close()
    assert not any(thread.is_alive() for thread in bulk_threads() - before)


def test_a_save_of_a_later_chunk_waits_for_save_many(
    make_service: ServiceFactory, fault_proxy: FaultProxy
) -> None:
    """The per-id locks cover every chunk, read to write, pipelined or not."""
    svc = make_service(bulk_max_in_flight=8)
    svc.ensure_table(DB)
    waiting = threading.Event()
    svc.write_locks.on_wait = lambda key: waiting.set()
    docs = docs_of(250)
    with fault_proxy.hold({"BatchWriteItem"}) as gate:
        many, many_outcome = in_thread(lambda: svc.save_many(DB, docs))
        assert gate.wait_arrived(1)
        single, single_outcome = in_thread(lambda: svc.save(DB, "d0220", {"i": "single"}))
        assert waiting.wait(HANG_GUARD_S)  # the save waits for the lock save_many holds
        gate.release()
        many.join(HANG_GUARD_S)
        single.join(HANG_GUARD_S)
    many_rev = many_outcome["result"]["d0220"]
    single_rev = single_outcome["result"]["rev"]
    assert parse_generation(many_rev) < parse_generation(single_rev)  # type: ignore[operator]
    stored = svc.get(DB, "d0220")
    assert stored is not None and stored["_rev"] == single_rev and stored["i"] == "single"


def test_delete_many_with_duplicate_ids(
    make_service: ServiceFactory, fault_proxy: FaultProxy, direct: DynamoDBService
) -> None:
    svc = make_service(bulk_max_in_flight=8)
    revs = svc.save_many(DB, docs_of(80))
    ids = list(revs)
    # Duplicates within one batch of 25 and across batches; DynamoDB rejects a BatchWriteItem
    # naming a key twice, and two requests for one id must never be in flight together.
    asked = [*ids[:60], ids[0], ids[24], ids[25], ids[59], "missing", "missing", ids[3]]
    fault_proxy.reset_counts()
    svc.delete_many(DB, asked)
    assert fault_proxy.counts() == {"BatchWriteItem": 3}  # 61 distinct ids: 25 + 25 + 11
    assert stored_revs(direct) == {doc_id: revs[doc_id] for doc_id in ids[60:]}
    svc.delete_many(DB, [ids[70], ids[70], ids[70]])
    assert ids[70] not in stored_revs(direct)


def test_one_in_flight_sends_as_before(
    make_service: ServiceFactory, fault_proxy: FaultProxy, direct: DynamoDBService
) -> None:
    """All revision reads first, then the writes, one at a time, from the calling thread."""
    svc = make_service(bulk_max_in_flight=1)
    svc.ensure_table(DB)
    sent = record_requests(svc)
    before = bulk_threads()
    revs = svc.save_many(DB, docs_of(230))
    assert [op for op, _ in sent] == ["BatchGetItem"] * 3 + ["BatchWriteItem"] * 10
    svc.delete_many(DB, list(revs)[:60])
    assert [op for op, _ in sent[13:]] == ["BatchWriteItem"] * 3
    assert {name for _, name in sent} == {threading.current_thread().name}
    assert bulk_threads() == before
    assert stored_revs(direct) == {doc_id: revs[doc_id] for doc_id in list(revs)[60:]}


def test_the_default_sends_from_the_pool_and_close_ends_it(
    make_service: ServiceFactory, direct: DynamoDBService
) -> None:
    svc = make_service()
    assert svc.bulk_max_in_flight == 8
    svc.ensure_table(DB)
    sent = record_requests(svc)
    before = bulk_threads()
    revs = svc.save_many(DB, docs_of(120))
    svc.delete_many(DB, list(revs)[:30])
    assert {name for _, name in sent} <= {t.name for t in bulk_threads()}
    assert [op for op, _ in sent].count("BatchGetItem") == 2
    assert [op for op, _ in sent].count("BatchWriteItem") == 5 + 2
    started = bulk_threads() - before
    svc.close()
    assert started and not any(thread.is_alive() for thread in started)


# -- configuration -----------------------------------------------------------------------------


def test_setting_from_keyword_env_and_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().BULK_MAX_IN_FLIGHT == 8
    assert Settings(BULK_MAX_IN_FLIGHT=3).BULK_MAX_IN_FLIGHT == 3
    path = tmp_path / "gateway.yaml"
    path.write_text("bulk:\n  max_in_flight: 5\n", encoding="utf-8")
    assert Settings.from_yaml(path).BULK_MAX_IN_FLIGHT == 5
    monkeypatch.setenv("BULK_MAX_IN_FLIGHT", "2")
    assert Settings.from_yaml(path).BULK_MAX_IN_FLIGHT == 2  # the environment beats the file
    monkeypatch.setenv("BULK_MAX_IN_FLIGHT", "0")
    with pytest.raises(ConfigError, match="BULK_MAX_IN_FLIGHT"):
        Settings()
    monkeypatch.delenv("BULK_MAX_IN_FLIGHT")
    path.write_text("bulk:\n  max_in_flight: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bulk\.max_in_flight"):
        Settings.from_yaml(path)


def test_the_factory_passes_the_setting(moto_server: EmbeddedDynamoDB) -> None:
    settings = Settings(DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url, BULK_MAX_IN_FLIGHT=3)
    with build_dynamodb_service(settings) as svc:
        assert svc.bulk_max_in_flight == 3
