"""Coalescing: the coalescers with recording fake batch functions, then the service over HTTP with
faults injected at the wire by the fault proxy (throttling, partial batch results, latency).

No assertion here is about elapsed time: waits are recorded on a fake clock, and real-time limits
only guard against a hang (a test that hangs fails instead of blocking the suite).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from gateway import ConflictError, DynamoDBService, GatewayError, Settings, ThrottledError
from gateway.batching import (
    CoalescerStats,
    KeyLocks,
    ReadCoalescer,
    Write,
    WriteCoalescer,
    WriteResult,
    write_with_revisions,
)
from gateway.codec import copy_document
from gateway.emulator import EmbeddedDynamoDB
from gateway.factory import build_dynamodb_service
from gateway.retry import RetryPolicy
from gateway.revisions import RevisionMaker, parse_generation
from tests.servers import FaultProxy

#: Real-time guard against a hang; never a performance assertion.
HANG_GUARD_S = 60.0
TOKEN = "0" * 32
DB = "docs"

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when slept on, and a sleep that records its waits."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def scripted_random(values: Iterable[float]) -> Callable[[], float]:
    it = itertools.cycle(values)
    return lambda: next(it)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll until ``predicate()`` holds; fail (rather than hang) after `HANG_GUARD_S`."""
    event = threading.Event()
    for _ in range(int(HANG_GUARD_S * 1000)):
        if predicate():
            return
        event.wait(0.001)
    raise AssertionError(f"gave up waiting for {what}")


class Outcome:
    """What a thread's call returned or raised (BaseException included)."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None


def start(fn: Callable[[], Any]) -> tuple[threading.Thread, Outcome]:
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.value = fn()
        except BaseException as exc:
            outcome.error = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def join_all(threads: Iterable[threading.Thread]) -> None:
    for thread in threads:
        thread.join(HANG_GUARD_S)
        assert not thread.is_alive(), "a caller hung"


def run_concurrently(fns: list[Callable[[], Any]]) -> list[Outcome]:
    """Run every fn in its own thread, released together by a barrier; wait for all."""
    barrier = threading.Barrier(len(fns))

    def gated(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            barrier.wait(HANG_GUARD_S)
            return fn()

        return run

    started = [start(gated(fn)) for fn in fns]
    join_all(thread for thread, _ in started)
    return [outcome for _, outcome in started]


class Gate:
    """Makes the first `blocked` calls of a fake batch function wait until `open()`."""

    def __init__(self, blocked: int = 1) -> None:
        self.blocked = blocked
        self.entered = 0
        self._lock = threading.Lock()
        self._open = threading.Event()

    def pass_through(self) -> None:
        with self._lock:
            self.entered += 1
            wait = self.entered <= self.blocked
        if wait:
            assert self._open.wait(HANG_GUARD_S)

    def open(self) -> None:
        self._open.set()


class RecordingLoader:
    """A fake BatchGetItem: records each batch of keys, answers ``{"id": key}``."""

    def __init__(self, gate: Gate | None = None, fail_on: int | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate
        self.fail_on = fail_on  # 1-based index of a batch that raises
        self.error: BaseException = RuntimeError("batch failed")
        self.missing: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, keys: list[str]) -> dict[str, dict[str, str] | None]:
        with self._lock:
            self.batches.append(list(keys))
            number = len(self.batches)
        if self.gate is not None:
            self.gate.pass_through()
        if number == self.fail_on:
            raise self.error
        return {key: {"id": key} for key in keys if key not in self.missing}


class RecordingWriter:
    """A fake write batch: records each batch as (key, n) pairs; answers rev ``"<key>:<n>"``."""

    def __init__(self, gate: Gate | None = None) -> None:
        self.batches: list[list[tuple[str, Any]]] = []
        self.completed = 0
        self.gate = gate
        self.fail_keys: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, writes: list[Write]) -> dict[str, WriteResult | BaseException]:
        with self._lock:
            self.batches.append([(w.key, None if w.item is None else w.item["n"]) for w in writes])
        if self.gate is not None:
            self.gate.pass_through()
        answers: dict[str, WriteResult | BaseException] = {}
        for write in writes:
            if write.key in self.fail_keys:
                answers[write.key] = ThrottledError("no", attempts=3, elapsed=0.5)
            else:
                n = None if write.item is None else write.item["n"]
                answers[write.key] = WriteResult(f"{write.key}:{n}")
        with self._lock:
            self.completed += 1
        return answers


def queued_is(coalescer: ReadCoalescer[Any] | WriteCoalescer, n: int) -> bool:
    return coalescer.queued == n


def put(key: str, n: int) -> Write:
    return Write(key, {"_id": key, "n": n})


# --------------------------------------------------------------------------------------------
# ReadCoalescer, with a fake batch function
# --------------------------------------------------------------------------------------------


def test_calls_arriving_while_a_batch_is_in_flight_form_the_next_batch() -> None:
    gate = Gate()
    loader = RecordingLoader(gate)
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(loader, copy=_copy)
    first = start(lambda: reads.load("a"))
    wait_until(lambda: reads.in_flight == 1, "the first batch to leave at once")
    later = []
    for n, key in enumerate(["b", "c", "d"], start=1):
        later.append((key, *start(partial(reads.load, key))))
        wait_until(partial(queued_is, reads, n), f"{n} keys queued")
    dup = start(lambda: reads.load("b"))
    wait_until(lambda: reads.stats().merged == 1, "the duplicate to join the queued key")
    gate.open()
    join_all([first[0], dup[0], *(thread for _, thread, _ in later)])

    assert loader.batches == [["a"], ["b", "c", "d"]]
    assert first[1].value == {"id": "a"}
    for key, _, outcome in later:
        assert outcome.value == {"id": key}
    b_first = next(outcome for key, _, outcome in later if key == "b")
    assert dup[1].value == {"id": "b"}
    assert dup[1].value is not b_first.value  # shared entry: each caller gets its own copy
    assert reads.stats() == CoalescerStats(batches=2, items=4, merged=1, largest_batch=3)


def _copy(value: dict[str, str] | None) -> dict[str, str] | None:
    return None if value is None else dict(value)


def test_a_lone_call_leaves_at_once_without_waiting() -> None:
    loader = RecordingLoader()
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(loader)
    assert reads.load("only") == {"id": "only"}
    assert loader.batches == [["only"]]


def test_batches_hold_at_most_max_batch_distinct_keys_in_order() -> None:
    loader = RecordingLoader()
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(loader, max_batch=100)
    keys = [f"k{i:03}" for i in range(250)]
    result = reads.load_many([*keys, "k000", "k001"])
    assert list(result) == keys
    assert loader.batches == [keys[:100], keys[100:200], keys[200:]]
    assert reads.stats().average_batch_size == pytest.approx(250 / 3)


def test_duplicate_keys_in_load_many_are_sent_once() -> None:
    loader = RecordingLoader()
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(loader)
    assert reads.load_many(["a", "b", "a", "a"]) == {"a": {"id": "a"}, "b": {"id": "b"}}
    assert loader.batches == [["a", "b"]]


def test_max_wait_gathers_company_until_the_batch_is_full() -> None:
    loader = RecordingLoader()
    # A minute of lingering: the batch can only leave early because it fills up.
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(
        loader, max_batch=4, max_wait_s=60.0
    )
    outcomes = run_concurrently([partial(reads.load, k) for k in "wxyz"])
    assert [o.value for o in outcomes] == [{"id": k} for k in "wxyz"]
    assert len(loader.batches) == 1
    assert sorted(loader.batches[0]) == list("wxyz")


def test_max_wait_elapsed_on_the_clock_sends_a_partial_batch() -> None:
    loader = RecordingLoader()
    fake = FakeTime()
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(
        loader, max_batch=4, max_wait_s=0.5, clock=fake.clock
    )
    thread, outcome = start(lambda: reads.load("a"))
    wait_until(lambda: reads.queued == 1, "the key to linger")
    fake.now += 0.5
    # The lingering caller wakes when its real-time wait for the fake deadline runs out.
    join_all([thread])
    assert outcome.value == {"id": "a"} and loader.batches == [["a"]]


def test_a_failed_batch_fails_every_waiter_and_nobody_hangs() -> None:
    gate = Gate()
    loader = RecordingLoader(gate, fail_on=2)
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(loader)
    first = start(lambda: reads.load("a"))
    wait_until(lambda: reads.in_flight == 1, "the first batch")
    waiting = [start(partial(reads.load, key)) for key in ["b", "c", "b"]]
    wait_until(lambda: reads.queued == 2 and reads.stats().merged == 1, "b, c queued")
    gate.open()
    join_all([first[0], *(thread for thread, _ in waiting)])

    assert first[1].value == {"id": "a"}
    assert loader.batches[1] in (["b", "c"], ["c", "b"])
    assert [outcome.error for _, outcome in waiting] == [loader.error] * 3
    assert reads.stats().failed_batches == 1
    assert reads.load("b") == {"id": "b"}  # and the coalescer still works


def test_a_key_without_an_answer_gets_an_error_naming_it() -> None:
    loader = RecordingLoader()
    loader.missing = {"lost"}
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(loader)
    with pytest.raises(GatewayError, match="no answer for key 'lost'"):
        reads.load_many(["kept", "lost"])
    assert reads.load("kept") == {"id": "kept"}


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt inside a batch function."""


def test_an_interrupt_in_the_batch_function_releases_every_waiter() -> None:
    gate = Gate()
    loader = RecordingLoader(gate, fail_on=2)
    loader.error = Interrupt()
    reads: ReadCoalescer[dict[str, str] | None] = ReadCoalescer(loader)
    first = start(lambda: reads.load("a"))
    wait_until(lambda: reads.in_flight == 1, "the first batch")
    waiting = [start(partial(reads.load, key)) for key in ["b", "c"]]
    wait_until(lambda: reads.queued == 2, "b, c queued")
    gate.open()
    join_all([first[0], *(thread for thread, _ in waiting)])
    errors = sorted((type(outcome.error).__name__ for _, outcome in waiting), key=str)
    # The thread that sent the batch sees the interrupt; the other gets an ordinary error.
    assert errors == ["GatewayError", "Interrupt"]
    other = next(o.error for _, o in waiting if isinstance(o.error, GatewayError))
    assert isinstance(other.__cause__, Interrupt)


def test_read_coalescer_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        ReadCoalescer(RecordingLoader(), max_batch=101)
    with pytest.raises(ValueError, match="max_batch"):
        ReadCoalescer(RecordingLoader(), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        ReadCoalescer(RecordingLoader(), max_wait_s=-1)


# --------------------------------------------------------------------------------------------
# WriteCoalescer, with a fake batch function
# --------------------------------------------------------------------------------------------


def test_writes_to_one_key_never_share_a_batch_and_go_in_order() -> None:
    gate = Gate()
    writer = RecordingWriter(gate)
    writes = WriteCoalescer(writer)
    first = start(lambda: writes.submit(put("a", 1)))
    wait_until(lambda: writes.in_flight == 1, "the first batch")
    queued = []
    for n, write in enumerate([put("a", 2), put("b", 1), put("a", 3), Write("c")], start=1):
        queued.append(start(partial(writes.submit, write)))
        wait_until(partial(queued_is, writes, n), f"{n} writes queued")
    gate.open()
    join_all([first[0], *(thread for thread, _ in queued)])

    assert writer.batches == [[("a", 1)], [("a", 2), ("b", 1), ("c", None)], [("a", 3)]]
    assert first[1].value == WriteResult("a:1")
    assert [outcome.value for _, outcome in queued] == [
        WriteResult("a:2"),
        WriteResult("b:1"),
        WriteResult("a:3"),
        WriteResult("c:None"),
    ]


def test_write_batches_hold_at_most_25_items_and_respect_the_byte_cap() -> None:
    writer = RecordingWriter()
    writes = WriteCoalescer(writer)
    outcomes = writes.submit_many([put(f"k{i:02}", i) for i in range(60)])
    assert [len(batch) for batch in writer.batches] == [25, 25, 10]
    assert outcomes == [WriteResult(f"k{i:02}:{i}") for i in range(60)]

    small = RecordingWriter()
    capped = WriteCoalescer(small, max_batch_bytes=100, weight=lambda write: 40)
    capped.submit_many([put(f"k{i}", i) for i in range(5)])
    assert [len(batch) for batch in small.batches] == [2, 2, 1]


def test_each_writer_gets_its_own_error() -> None:
    writer = RecordingWriter()
    writer.fail_keys = {"bad"}
    writes = WriteCoalescer(writer)
    outcomes = writes.submit_many([put("good", 1), put("bad", 1)])
    assert outcomes[0] == WriteResult("good:1")
    assert isinstance(outcomes[1], ThrottledError)
    with pytest.raises(ThrottledError):
        writes.submit(put("bad", 2))
    assert writer.batches == [[("good", 1), ("bad", 1)], [("bad", 2)]]


def test_a_failed_write_batch_fails_every_writer() -> None:
    def broken(writes: list[Write]) -> Mapping[str, WriteResult]:
        raise ConnectionResetError("wire cut")

    writes = WriteCoalescer(broken)
    outcomes = writes.submit_many([put("a", 1), put("b", 1)])
    assert all(isinstance(outcome, ConnectionResetError) for outcome in outcomes)
    assert writes.stats().failed_batches == 1 and writes.in_flight == 0


def test_exclusive_keeps_a_key_out_of_batches_until_released() -> None:
    writer = RecordingWriter()
    writes = WriteCoalescer(writer)
    with writes.exclusive(["a"]):
        thread, outcome = start(lambda: writes.submit_many([put("a", 1), put("b", 1)]))
        wait_until(lambda: writer.completed == 1, "the batch without the held key")
        assert writer.batches == [[("b", 1)]]
    join_all([thread])
    assert writer.batches == [[("b", 1)], [("a", 1)]]
    assert outcome.value == [WriteResult("a:1"), WriteResult("b:1")]


def test_exclusive_waits_for_the_keys_batch_in_flight() -> None:
    gate = Gate()
    writer = RecordingWriter(gate)
    writes = WriteCoalescer(writer)
    batch = start(lambda: writes.submit(put("a", 1)))
    wait_until(lambda: writes.in_flight == 1, "the batch holding a")
    seen: list[int] = []

    def conditional_write() -> None:
        with writes.exclusive(["a"]):
            seen.append(writer.completed)

    fenced = start(conditional_write)
    gate.open()
    join_all([batch[0], fenced[0]])
    assert seen == [1]  # it ran only once the batch holding "a" was back


def test_a_waiting_exclusive_is_not_starved_by_batched_writes_to_its_key() -> None:
    gate = Gate()
    writer = RecordingWriter(gate)
    writes = WriteCoalescer(writer)
    first = start(lambda: writes.submit(put("a", 1)))
    wait_until(lambda: writes.in_flight == 1, "the batch holding a")
    seen: list[list[list[tuple[str, Any]]]] = []

    def conditional_write() -> None:
        with writes.exclusive(["a"]):
            seen.append([list(batch) for batch in writer.batches])

    fenced = start(conditional_write)
    wait_until(lambda: "a" in writes._claims, "the conditional write to claim a")
    second = start(lambda: writes.submit(put("a", 2)))
    wait_until(lambda: writes.queued == 1, "the next write to a queued")
    gate.open()
    join_all([first[0], fenced[0], second[0]])
    assert seen == [[[("a", 1)]]]  # it ran before the write queued behind it
    assert writer.batches == [[("a", 1)], [("a", 2)]]


def test_write_coalescer_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        WriteCoalescer(RecordingWriter(), max_batch=26)
    with pytest.raises(ValueError, match="max_batch_bytes"):
        WriteCoalescer(RecordingWriter(), max_batch_bytes=0)


# --------------------------------------------------------------------------------------------
# KeyLocks
# --------------------------------------------------------------------------------------------


def test_key_locks_exclude_holders_of_the_same_key() -> None:
    locks = KeyLocks()
    waiting = threading.Event()
    locks.on_wait = lambda key: waiting.set()
    order: list[str] = []

    def second() -> None:
        with locks.hold(["a"]):
            order.append("second")

    with locks.hold(["a"]):
        thread, outcome = start(second)
        assert waiting.wait(HANG_GUARD_S)  # the second holder waits for "a"
        order.append("first")
    join_all([thread])
    assert outcome.error is None
    assert order == ["first", "second"]
    assert locks.waits == 1
    assert len(locks) == 0


def test_key_locks_do_not_serialise_distinct_keys() -> None:
    locks = KeyLocks()
    locks.on_wait = lambda key: pytest.fail(f"waited for {key!r}")
    with locks.hold([("t", "a")]):
        with_b, outcome = start(lambda: _hold_and_count(locks, [("t", "b"), ("u", "a")]))
        join_all([with_b])  # finished while ("t", "a") is held
        assert outcome.error is None and outcome.value == 3  # its two keys and ("t", "a")
    assert locks.waits == 0
    assert len(locks) == 0  # nothing kept for keys nobody uses


def _hold_and_count(locks: KeyLocks, keys: list[Any]) -> int:
    with locks.hold(keys):
        return len(locks)


def test_key_locks_take_keys_in_sorted_order_so_overlapping_holders_never_deadlock() -> None:
    locks = KeyLocks()
    counter = itertools.count()
    holders = [
        lambda keys=keys: [
            _hold_and_count(locks, keys) for _ in range(200) if next(counter) is not None
        ]
        for keys in (["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"], ["c", "a"])
    ]
    outcomes = run_concurrently(holders)
    assert all(outcome.error is None for outcome in outcomes)
    assert next(counter) == 800
    assert len(locks) == 0


def test_key_locks_refuse_a_reentry_instead_of_deadlocking() -> None:
    locks = KeyLocks()
    with locks.hold(["a", "a"]):  # duplicates are merged
        with pytest.raises(RuntimeError, match="already holds"), locks.hold(["b", "a"]):
            pass
        assert len(locks) == 1  # "b" was given back
    with locks.hold(["a"]):
        pass
    assert len(locks) == 0


# --------------------------------------------------------------------------------------------
# write_with_revisions, with a fake store
# --------------------------------------------------------------------------------------------


class FakeStore:
    """Stored revisions, and scripted unprocessed keys for each BatchWriteItem call."""

    def __init__(self, stored: dict[str, str], unprocessed: list[set[str]] | None = None):
        self.stored = stored
        self.unprocessed = list(unprocessed or [])
        self.always_unprocessed: set[str] = set()
        self.reads: list[list[str]] = []
        self.calls: list[list[dict[str, Any]]] = []

    def stored_revisions(self, keys: list[str]) -> dict[str, str]:
        self.reads.append(list(keys))
        return {key: self.stored[key] for key in keys if key in self.stored}

    def batch_write(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append(requests)
        left = self.unprocessed.pop(0) if self.unprocessed else set()
        left |= self.always_unprocessed
        return [r for r in requests if _key_of(r) in left]


def _key_of(request: dict[str, Any]) -> str:
    if "PutRequest" in request:
        return str(request["PutRequest"]["Item"]["_id"])
    return str(request["DeleteRequest"]["Key"]["_id"])


def revisions_at(now_us: int) -> RevisionMaker:
    return RevisionMaker(clock_us=lambda: now_us, token=lambda: TOKEN)


def fake_policy(fake: FakeTime, rand: Iterable[float], **kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("max_attempts", 8)
    kwargs.setdefault("deadline_s", None)
    return RetryPolicy(
        base_s=1.0,
        cap_s=20.0,
        sleep=fake.sleep,
        clock=fake.clock,
        random=scripted_random(rand),
        **kwargs,
    )


def test_batched_puts_get_generations_above_the_stored_ones() -> None:
    store = FakeStore(
        {
            "ahead": f"5000-{TOKEN}",  # written by a clock ahead of ours: + 1
            "foreign": "v7",  # not one of our revisions: now
            "gone": f"7-{TOKEN}",
        }
    )
    writes = [
        Write("ahead", {"_id": "ahead", "x": Decimal(1)}),
        Write("foreign", {"_id": "foreign"}),
        Write("new", {"_id": "new"}),
        Write("gone"),
        Write("never"),
    ]
    results = write_with_revisions(
        writes, store, revisions=revisions_at(1000), retry=fake_policy(FakeTime(), [1.0])
    )
    assert results == {
        "ahead": WriteResult(f"5001-{TOKEN}"),
        "foreign": WriteResult(f"1000-{TOKEN}"),
        "new": WriteResult(f"1000-{TOKEN}"),
        "gone": WriteResult(f"7-{TOKEN}"),  # a delete reports the revision it removed
        "never": WriteResult(None),
    }
    assert store.reads == [["ahead", "foreign", "new", "gone", "never"]]
    assert store.calls == [
        [
            {"PutRequest": {"Item": {"_id": "ahead", "x": Decimal(1), "_rev": f"5001-{TOKEN}"}}},
            {"PutRequest": {"Item": {"_id": "foreign", "_rev": f"1000-{TOKEN}"}}},
            {"PutRequest": {"Item": {"_id": "new", "_rev": f"1000-{TOKEN}"}}},
            {"DeleteRequest": {"Key": {"_id": "gone"}}},
            {"DeleteRequest": {"Key": {"_id": "never"}}},
        ]
    ]


def test_unprocessed_items_are_resent_with_exact_full_jitter_backoff() -> None:
    fake = FakeTime()
    store = FakeStore({}, unprocessed=[{"b", "c"}, {"b"}])
    results = write_with_revisions(
        [Write(k, {"_id": k}) for k in "abc"],
        store,
        revisions=revisions_at(1000),
        retry=fake_policy(fake, [0.5, 0.25]),
    )
    assert set(results) == {"a", "b", "c"}
    assert [[_key_of(r) for r in call] for call in store.calls] == [
        ["a", "b", "c"],
        ["b", "c"],
        ["b"],
    ]
    # rand * min(cap, base * 2**attempt): 0.5 * 1, then 0.25 * 2
    assert fake.waits == [0.5, 0.5]
    # The revision is fixed before the first send: a resend carries the same one.
    assert store.calls[2][0]["PutRequest"]["Item"]["_rev"] == f"1000-{TOKEN}"


def test_giving_up_on_unprocessed_items_fails_only_those() -> None:
    fake = FakeTime()
    store = FakeStore({})
    store.always_unprocessed = {"b"}
    results = write_with_revisions(
        [Write(k, {"_id": k}) for k in "abc"],
        store,
        revisions=revisions_at(1000),
        retry=fake_policy(fake, [1.0], max_attempts=4),
    )
    assert results["a"] == WriteResult(f"1000-{TOKEN}") == results["c"]
    error = results["b"]
    assert isinstance(error, ThrottledError)
    assert (error.attempts, error.code, error.elapsed) == (4, "UnprocessedItems", 7.0)
    assert fake.waits == [1.0, 2.0, 4.0]


def test_a_batch_must_not_name_a_key_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        write_with_revisions(
            [Write("a", {"_id": "a"}), Write("a")],
            FakeStore({}),
            revisions=revisions_at(1),
            retry=RetryPolicy(),
        )


# --------------------------------------------------------------------------------------------
# The service, over HTTP, with faults at the wire
# --------------------------------------------------------------------------------------------


def quick_retry(**kwargs: Any) -> RetryPolicy:
    """Many quick attempts, no budget: enough to outlast 30% throttling plus partial batches."""
    kwargs.setdefault("max_attempts", 60)
    kwargs.setdefault("base_s", 0.002)
    kwargs.setdefault("cap_s", 0.05)
    kwargs.setdefault("deadline_s", 60.0)
    return RetryPolicy(**kwargs)


@pytest.fixture
def make_service(table_prefix: str) -> Iterator[Callable[..., DynamoDBService]]:
    """``make_service(endpoint_url, **kwargs)``: a coalescing service (both directions)."""
    services: list[DynamoDBService] = []

    def make(endpoint_url: str, **kwargs: Any) -> DynamoDBService:
        kwargs.setdefault("table_prefix", table_prefix)
        kwargs.setdefault("coalesce_reads", True)
        kwargs.setdefault("coalesce_writes", True)
        kwargs.setdefault("retry_policy", quick_retry())
        kwargs.setdefault("max_pool_connections", 64)
        svc = DynamoDBService(endpoint_url=endpoint_url, **kwargs)
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.close()


def stored_item(client: Any, table: str, doc_id: str) -> dict[str, Any] | None:
    """The item as the emulator holds it, read past the proxy and the service."""
    response = client.get_item(TableName=table, Key={"_id": {"S": doc_id}}, ConsistentRead=True)
    return response.get("Item")


def test_64_concurrent_gets_make_a_handful_of_batch_get_calls(
    fault_proxy: FaultProxy, make_service: Callable[..., DynamoDBService]
) -> None:
    svc = make_service(fault_proxy.endpoint_url)
    keys = [f"k{i:02}" for i in range(64)]
    svc.save_many(DB, {key: {"n": i} for i, key in enumerate(keys)})
    fault_proxy.configure(latency_ms=20)  # time for callers to pile up behind the first batch
    fault_proxy.reset_counts()

    outcomes = run_concurrently([partial(svc.get, DB, key) for key in keys])

    assert [o.value["n"] for o in outcomes] == list(range(64))
    counts = fault_proxy.counts()
    assert counts.get("GetItem", 0) == 0
    assert 1 <= counts["BatchGetItem"] <= 8, counts
    reads = svc.stats()["batching"]["reads"]
    assert reads["items"] == 64 and reads["batches"] == counts["BatchGetItem"]

    plain = make_service(fault_proxy.endpoint_url, coalesce_reads=False)
    plain.ensure_table(DB)
    fault_proxy.reset_counts()
    run_concurrently([partial(plain.get, DB, key) for key in keys])
    assert fault_proxy.counts() == {"GetItem": 64}


def test_no_write_lost_and_no_key_unanswered_under_throttling_and_partial_batches(
    fault_proxy: FaultProxy,
    make_service: Callable[..., DynamoDBService],
    dynamodb_client: Callable[..., Any],
) -> None:
    svc = make_service(fault_proxy.endpoint_url)
    table = svc.ensure_table(DB).name
    fault_proxy.configure(throttle_rate=0.3, partial_rate=0.3)
    threads, rounds = 24, 3
    acknowledged: dict[str, tuple[str, int] | None] = {}  # id -> (rev, value), None: deleted
    lock = threading.Lock()

    def writer(t: int) -> None:
        for r in range(rounds):
            for i in range(4):
                doc_id = f"t{t:02}-{i}"
                if r == rounds - 1 and i == 3:
                    svc.delete(DB, doc_id)
                    with lock:
                        acknowledged[doc_id] = None
                else:
                    rev = svc.save(DB, doc_id, {"value": r * 10 + i})["rev"]
                    with lock:
                        acknowledged[doc_id] = (rev, r * 10 + i)

    for outcome in run_concurrently([partial(writer, t) for t in range(threads)]):
        assert outcome.error is None, repr(outcome.error)

    client = dynamodb_client()  # straight to the emulator: what is really stored
    for doc_id, expected in acknowledged.items():
        item = stored_item(client, table, doc_id)
        if expected is None:
            assert item is None, doc_id
        else:
            assert item is not None, doc_id
            assert item["_rev"]["S"] == expected[0] and item["value"]["N"] == str(expected[1])

    ids = sorted(acknowledged)
    readers: list[Callable[[], Any]] = [partial(svc.get, DB, doc_id) for doc_id in ids]
    readers.append(lambda: svc.get_many(DB, ids))
    outcomes = run_concurrently(readers)
    for doc_id, outcome in zip(ids, outcomes, strict=False):
        assert outcome.error is None, repr(outcome.error)
        expected = acknowledged[doc_id]
        assert (outcome.value and outcome.value["_rev"]) == (expected and expected[0])
    many = outcomes[-1].value
    assert {k: v and v["_rev"] for k, v in many.items()} == {
        k: v and v[0] for k, v in acknowledged.items()
    }

    injected = fault_proxy.injected()
    assert injected["ProvisionedThroughputExceededException"]["BatchWriteItem"] > 0
    assert injected["ProvisionedThroughputExceededException"]["BatchGetItem"] > 0
    assert injected["partial"]["BatchWriteItem"] > 0 and injected["partial"]["BatchGetItem"] > 0
    stats = svc.stats()
    assert stats["retry"]["throttles"] > 0 and stats["retry"]["gave_up"] == 0
    assert stats["batching"]["writes"]["batches"] < threads * rounds * 4


def test_concurrent_saves_to_one_key_end_with_the_last_acknowledged_one(
    fault_proxy: FaultProxy,
    make_service: Callable[..., DynamoDBService],
    dynamodb_client: Callable[..., Any],
) -> None:
    svc = make_service(fault_proxy.endpoint_url)
    table = svc.ensure_table(DB).name
    fault_proxy.configure(throttle_rate=0.3, partial_rate=0.3, latency_ms=2)
    acks: list[tuple[str, str]] = []  # (rev, writer tag)
    per_thread: dict[int, list[int]] = {}
    lock = threading.Lock()

    def unconditional(t: int) -> None:
        for i in range(5):
            tag = f"u{t}-{i}"
            rev = svc.save(DB, "hot", {"tag": tag})["rev"]
            # Another key in the same batches, so batches hold more than the hot key.
            svc.save(DB, f"cold-{t}", {"i": i})
            with lock:
                acks.append((rev, tag))
                per_thread.setdefault(t, []).append(parse_generation(rev) or 0)

    def conditional(t: int) -> None:
        for i in range(5):
            current = svc.get(DB, "hot")
            tag = f"c{t}-{i}"
            try:
                if_rev = None if current is None else str(current["_rev"])
                rev = svc.save(DB, "hot", {"tag": tag}, if_rev=if_rev)["rev"]
            except ConflictError:
                continue
            with lock:
                acks.append((rev, tag))
                per_thread.setdefault(t, []).append(parse_generation(rev) or 0)

    work: list[Callable[[], Any]] = [partial(unconditional, t) for t in range(12)]
    work += [partial(conditional, t) for t in range(12, 16)]
    for outcome in run_concurrently(work):
        assert outcome.error is None, repr(outcome.error)

    generations = [parse_generation(rev) for rev, _ in acks]
    assert len(set(generations)) == len(acks)  # no two acknowledged saves share a generation
    for sequence in per_thread.values():
        assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)
    last_rev, last_tag = max(acks, key=lambda ack: parse_generation(ack[0]) or 0)
    item = stored_item(dynamodb_client(), table, "hot")
    assert item is not None
    assert (item["_rev"]["S"], item["tag"]["S"]) == (last_rev, last_tag)
    assert svc.get(DB, "hot") == {"_id": "hot", "_rev": last_rev, "tag": last_tag}


def test_duplicate_ids_in_get_many(
    fault_proxy: FaultProxy, make_service: Callable[..., DynamoDBService]
) -> None:
    svc = make_service(fault_proxy.endpoint_url)
    revs = svc.save_many(DB, {"a": {"v": 1}, "b": {"v": 2}})
    fault_proxy.reset_counts()
    # DynamoDB (and the emulator) reject a BatchGetItem naming a key twice.
    found = svc.get_many(DB, ["a", "b", "a", "zz", "a", "b"])
    assert list(found) == ["a", "b", "zz"]
    assert found["a"] == {"_id": "a", "_rev": revs["a"], "v": Decimal(1)}
    assert found["b"] is not None and found["b"]["_rev"] == revs["b"]
    assert found["zz"] is None
    assert fault_proxy.counts() == {"BatchGetItem": 1}

    fault_proxy.configure(latency_ms=10)
    outcomes = run_concurrently(
        [lambda: svc.get_many(DB, ["a", "a", "b"]) for _ in range(8)]
        + [lambda: svc.get(DB, "a") for _ in range(8)]
    )
    for outcome in outcomes[:8]:
        assert outcome.error is None and outcome.value["a"]["v"] == 1
    for outcome in outcomes[8:]:
        assert outcome.error is None and outcome.value["_rev"] == revs["a"]
    documents = [o.value["a"] for o in outcomes[:8]] + [o.value for o in outcomes[8:]]
    assert len({id(doc) for doc in documents}) == len(documents)  # nobody shares a dict


def test_permanent_throttling_raises_throttled_error_within_the_deadline(
    fault_proxy: FaultProxy, make_service: Callable[..., DynamoDBService]
) -> None:
    svc = make_service(
        fault_proxy.endpoint_url,
        retry_policy=RetryPolicy(max_attempts=1000, base_s=0.01, cap_s=0.1, deadline_s=0.5),
    )
    svc.ensure_table(DB)
    fault_proxy.configure(throttle_rate=1.0)
    work: list[Callable[[], Any]] = [partial(svc.get, DB, f"r{i}") for i in range(8)]
    work += [partial(svc.save, DB, f"w{i}", {"i": i}) for i in range(8)]
    work += [partial(svc.delete, DB, f"w{i}") for i in range(4)]
    for outcome in run_concurrently(work):  # every caller answered: nobody hangs
        error = outcome.error
        assert isinstance(error, ThrottledError), repr(error)
        assert error.attempts > 1 and "would pass the 0.5 s deadline" in str(error)
        assert error.code == "ProvisionedThroughputExceededException"

    # On a fake clock (one caller at a time), exactly: the waits 0.01, 0.02, 0.04, 0.08, 0.1,
    # 0.1, 0.1 add up to 0.45 s; the next one (0.1) would pass the deadline, so it stops there.
    fake = FakeTime()
    timed = make_service(
        fault_proxy.endpoint_url,
        retry_policy=RetryPolicy(
            max_attempts=1000,
            base_s=0.01,
            cap_s=0.1,
            deadline_s=0.5,
            sleep=fake.sleep,
            clock=fake.clock,
            random=lambda: 1.0,
        ),
    )
    for call, code in [
        (lambda: timed.save(DB, "w0", {}), "ProvisionedThroughputExceededException"),
        (lambda: timed.get(DB, "r0"), "ProvisionedThroughputExceededException"),
    ]:
        fake.waits.clear()
        with pytest.raises(ThrottledError) as caught:
            call()
        assert (caught.value.attempts, caught.value.code) == (8, code)
        assert caught.value.elapsed == pytest.approx(0.45) and caught.value.elapsed <= 0.5
        assert fake.waits == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.1, 0.1, 0.1])

    fault_proxy.configure(throttle_rate=0.0, partial_rate=1.0)  # everything comes back unprocessed
    fake.waits.clear()
    with pytest.raises(ThrottledError) as unprocessed:
        timed.get(DB, "r0")
    assert (unprocessed.value.attempts, unprocessed.value.code) == (8, "UnprocessedKeys")
    assert unprocessed.value.elapsed == pytest.approx(0.45)


def test_exact_backoff_values_under_scripted_randomness(
    fault_proxy: FaultProxy, make_service: Callable[..., DynamoDBService]
) -> None:
    fake = FakeTime()
    policy = RetryPolicy(
        max_attempts=5,
        base_s=0.1,
        cap_s=0.4,
        deadline_s=None,
        sleep=fake.sleep,
        clock=fake.clock,
        random=scripted_random([0.5, 0.25, 1.0, 0.5]),
    )
    svc = make_service(fault_proxy.endpoint_url, retry_policy=policy)
    svc.save(DB, "a", {"v": 1})
    assert fake.waits == []

    fault_proxy.configure(partial_rate=1.0, operations=["BatchGetItem"])
    with pytest.raises(ThrottledError) as unprocessed:
        svc.get(DB, "a")
    # rand * min(0.4, 0.1 * 2**attempt) for attempts 0..3
    assert fake.waits == pytest.approx([0.05, 0.05, 0.4, 0.2])
    assert (unprocessed.value.attempts, unprocessed.value.code) == (5, "UnprocessedKeys")

    fake.waits.clear()
    fault_proxy.reset_counts()
    fault_proxy.configure(partial_rate=0.0, throttle_rate=1.0, operations=["BatchWriteItem"])
    with pytest.raises(ThrottledError) as throttled:
        svc.save(DB, "a", {"v": 2})
    assert fake.waits == pytest.approx([0.05, 0.05, 0.4, 0.2])
    assert throttled.value.attempts == 5
    assert fault_proxy.counts()["BatchWriteItem"] == 5


class RecordingResource:
    """boto3's DynamoDB resource, with every batch request recorded on its way out."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def batch_get_item(self, **kwargs: Any) -> Any:
        self.calls.append(("BatchGetItem", copy_document(kwargs)))
        return self.real.batch_get_item(**kwargs)

    def batch_write_item(self, **kwargs: Any) -> Any:
        self.calls.append(("BatchWriteItem", copy_document(kwargs)))
        return self.real.batch_write_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("consistent", [True, False])
def test_exact_batch_requests_and_consistent_read(
    moto_server: EmbeddedDynamoDB,
    make_service: Callable[..., DynamoDBService],
    consistent: bool,
) -> None:
    import boto3

    real = boto3.session.Session().resource("dynamodb", endpoint_url=moto_server.endpoint_url)
    resource = RecordingResource(real)
    svc = make_service(moto_server.endpoint_url, data_resource=resource, consistent_read=consistent)
    table = svc.ensure_table(DB).name
    rev = svc.save(DB, "a", {"v": 1})["rev"]
    assert svc.get(DB, "a") == {"_id": "a", "_rev": rev, "v": Decimal(1)}
    assert svc.delete_returning_rev(DB, "a") == rev
    assert svc.delete_returning_rev(DB, "a") is None
    revisions = {
        "ProjectionExpression": "#id, #rev",
        "ExpressionAttributeNames": {"#id": "_id", "#rev": "_rev"},
    }
    key = {"Keys": [{"_id": "a"}]}
    assert resource.calls == [
        # save: the stored revision (always a consistent read), then the write
        ("BatchGetItem", {"RequestItems": {table: {**key, "ConsistentRead": True, **revisions}}}),
        (
            "BatchWriteItem",
            {
                "RequestItems": {
                    table: [{"PutRequest": {"Item": {"_id": "a", "v": 1, "_rev": rev}}}]
                }
            },
        ),
        # get, as configured
        ("BatchGetItem", {"RequestItems": {table: {**key, "ConsistentRead": consistent}}}),
        # two deletes
        ("BatchGetItem", {"RequestItems": {table: {**key, "ConsistentRead": True, **revisions}}}),
        ("BatchWriteItem", {"RequestItems": {table: [{"DeleteRequest": {"Key": {"_id": "a"}}}]}}),
        ("BatchGetItem", {"RequestItems": {table: {**key, "ConsistentRead": True, **revisions}}}),
        ("BatchWriteItem", {"RequestItems": {table: [{"DeleteRequest": {"Key": {"_id": "a"}}}]}}),
    ]


def test_conditional_writes_bypass_batching(
    fault_proxy: FaultProxy, make_service: Callable[..., DynamoDBService]
) -> None:
    svc = make_service(fault_proxy.endpoint_url)
    first = svc.save(DB, "a", {"v": 1})["rev"]
    fault_proxy.reset_counts()
    second = svc.save(DB, "a", {"v": 2}, if_rev=first)["rev"]
    with pytest.raises(ConflictError):
        svc.save(DB, "a", {"v": 3}, if_rev=first)
    assert svc.delete(DB, "a", if_rev=second) is True
    assert fault_proxy.counts() == {"PutItem": 2, "DeleteItem": 1}
    assert (parse_generation(second) or 0) > (parse_generation(first) or 0)


def test_save_many_and_delete_many_go_through_the_coalescer(
    fault_proxy: FaultProxy, make_service: Callable[..., DynamoDBService]
) -> None:
    svc = make_service(fault_proxy.endpoint_url)
    docs = {f"d{i:02}": {"i": i} for i in range(30)}
    first = svc.save_many(DB, docs)
    second = svc.save_many_with_items(DB, docs)
    for doc_id in docs:
        assert (parse_generation(second[doc_id]["_rev"]) or 0) > (
            parse_generation(first[doc_id]) or 0
        )
    assert svc.get_many(DB, list(docs)) == second
    svc.delete_many(DB, list(docs))
    assert set(svc.get_many(DB, list(docs)).values()) == {None}
    writes = svc.stats()["batching"]["writes"]
    assert writes["batches"] == 6 and writes["items"] == 90 and writes["largest_batch"] == 25


def test_stats_show_batches_average_size_and_retry_counters(
    fault_proxy: FaultProxy, make_service: Callable[..., DynamoDBService]
) -> None:
    svc = make_service(fault_proxy.endpoint_url)
    svc.save_many(DB, {"a": {}, "b": {}, "c": {}})
    svc.get_many(DB, ["a", "b", "c", "d"])
    svc.get(DB, "a")
    stats = svc.stats()
    assert stats["batching"]["reads"] == {
        "enabled": True,
        "batches": 2,
        "items": 5,
        "average_batch_size": 2.5,
        "largest_batch": 4,
        "merged": 0,
        "failed_batches": 0,
    }
    assert stats["batching"]["writes"]["average_batch_size"] == 3.0
    assert set(stats["retry"]) >= {"retries", "throttles", "budget_exhausted", "gave_up"}


def test_the_factory_passes_the_coalescing_settings() -> None:
    settings = Settings(
        DYNAMODB_ENDPOINT_URL="http://127.0.0.1:1",
        COALESCING={
            "reads": False,
            "writes": True,
            "max_wait_ms": 2,
            "max_batch_get": 50,
            "max_batch_write": 10,
        },
    )
    svc = build_dynamodb_service(settings)
    try:
        assert (svc.coalesce_reads, svc.coalesce_writes) == (False, True)
        assert svc.coalesce_max_wait_s == pytest.approx(0.002)
        assert (svc.max_batch_get, svc.max_batch_write) == (50, 10)
    finally:
        svc.close()


def test_service_rejects_bad_batch_sizes() -> None:
    with pytest.raises(ValueError, match="max_batch_get"):
        DynamoDBService(endpoint_url="http://127.0.0.1:1", max_batch_get=101)
    with pytest.raises(ValueError, match="max_batch_write"):
        DynamoDBService(endpoint_url="http://127.0.0.1:1", max_batch_write=26)
    with pytest.raises(ValueError, match="coalesce_max_wait_s"):
        DynamoDBService(endpoint_url="http://127.0.0.1:1", coalesce_max_wait_s=-1)
