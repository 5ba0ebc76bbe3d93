"""`WriteWindow`: batches in flight together, same ids in order, commits by prefix.

Every interleaving is made with events (a batch's write blocks until the test releases it),
never with sleeps.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import pytest

from gateway.write_window import WindowFailed, WriteWindow
from tests.gateway_helpers import TIMEOUT_S, Worker, wait_for


class Held:
    """A write that signals it started and blocks until released."""

    def __init__(self, result: int) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.result = result

    def __call__(self) -> int:
        self.started.set()
        assert self.release.wait(TIMEOUT_S)
        return self.result


def test_max_in_flight_is_checked() -> None:
    with pytest.raises(ValueError):
        WriteWindow(0)
    with pytest.raises(ValueError):
        WriteWindow(True)  # type: ignore[arg-type]


def test_batches_run_together_and_commit_in_order() -> None:
    window: WriteWindow[int] = WriteWindow(4)
    first, second = Held(1), Held(2)
    window.submit({"a"}, first, 10)
    window.submit({"b"}, second, 20)
    assert first.started.wait(TIMEOUT_S) and second.started.wait(TIMEOUT_S)  # both in flight
    second.release.set()
    window.submit({"c"}, lambda: 3, 30)
    # The second and third finished, but the first has not: nothing is committed yet.
    assert window.collect() == [] and window.committed == 0
    first.release.set()
    results, error = window.drain()
    assert results == [1, 2, 3] and error is None and window.committed == 30
    window.close()


def test_a_batch_sharing_an_id_waits_for_the_running_one() -> None:
    window: WriteWindow[int] = WriteWindow(4)
    first = Held(1)
    window.submit({"a", "b"}, first, 1)
    assert first.started.wait(TIMEOUT_S)
    second_started = threading.Event()

    def second() -> int:
        second_started.set()
        return 2

    submitting = Worker(lambda: window.submit({"b"}, second, 2))
    assert not second_started.is_set()  # "b" is being written by the first batch
    first.release.set()
    submitting.outcome()
    assert window.drain() == ([1, 2], None)
    window.close()


def test_a_full_window_waits_for_a_free_slot() -> None:
    window: WriteWindow[int] = WriteWindow(2)
    held = [Held(1), Held(2)]
    for i, write in enumerate(held):
        window.submit({str(i)}, write, i + 1)
    third_started = threading.Event()

    def third() -> int:
        third_started.set()
        return 3

    submitting = Worker(lambda: window.submit({"x"}, third, 3))
    assert all(h.started.wait(TIMEOUT_S) for h in held)
    assert not third_started.is_set()
    held[1].release.set()
    submitting.outcome()
    assert third_started.wait(TIMEOUT_S)
    held[0].release.set()
    assert window.drain() == ([1, 2, 3], None)
    window.close()


def test_marks_commit_with_what_comes_before() -> None:
    window: WriteWindow[int] = WriteWindow(2, committed=4)
    window.mark(5)
    assert window.collect() == [] and window.committed == 5
    held = Held(1)
    window.submit({"a"}, held, 7)
    window.mark(8)
    assert window.collect() == [] and window.committed == 5
    held.release.set()
    assert window.drain() == ([1], None) and window.committed == 8
    window.close()


def test_after_a_failure_no_batch_starts_and_drain_reports_it() -> None:
    window: WriteWindow[int] = WriteWindow(4)
    held = Held(1)
    window.submit({"a"}, held, 1)

    def failing() -> int:
        raise RuntimeError("boom")

    with contextlib.suppress(WindowFailed):  # raised here if it failed already
        window.submit({"b"}, failing, 2)
    wait_for(window.failed)  # a deadline, not a synchronization: it fails on its own thread
    started = threading.Event()
    with pytest.raises(WindowFailed):
        window.submit({"c"}, lambda: started.set() or 3, 3)  # type: ignore[func-returns-value]
    assert not started.is_set()
    held.release.set()
    results, error = window.drain()
    assert isinstance(error, RuntimeError)
    assert results[0] == 1 and window.committed == 1  # the batch before the failure only
    window.close()


@pytest.mark.parametrize("max_in_flight", [1, 3])
def test_one_in_flight_runs_inline(max_in_flight: int) -> None:
    window: WriteWindow[str] = WriteWindow(max_in_flight)
    names: list[str] = []

    def write(name: str) -> Callable[[], str]:
        return lambda: names.append(threading.current_thread().name) or name  # type: ignore[func-returns-value]

    window.submit({"a"}, write("a"), 1)
    window.submit({"a"}, write("b"), 2)
    assert window.drain() == (["a", "b"], None)
    if max_in_flight == 1:
        assert names == [threading.current_thread().name] * 2
    window.close()
