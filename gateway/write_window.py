"""Batch writes kept in flight together, committed in the order they were handed in.

`gateway import` and `gateway copy` hand batches of documents to ``save_many`` one after
another. Waiting for each before reading the next leaves the connection idle while lines are
parsed, and one batch at a time in flight; a `WriteWindow` keeps up to ``max_in_flight`` of
them running on its threads while the caller reads on, with two rules:

* a batch that shares a document id with a batch still running waits for it, so writes of the
  same id land in the order given (an import's later line wins, as without the window);
* what is *committed* only grows by the longest prefix of finished batches: position ``n``
  (an import's line number) is committed once every batch handed in up to it has succeeded,
  whichever finished first. That is what an import resumes from.

After a batch fails, no new batch starts; those running finish, and `drain` reports the first
error with the committed position before it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")


class WindowFailed(Exception):
    """A batch failed: stop handing in new ones and `drain` the window."""


@dataclass
class _Batch(Generic[R]):
    through: int
    ids: frozenset[str]
    future: Future[R] | None  # None: a position with nothing to write


class WriteWindow(Generic[R]):
    """Up to ``max_in_flight`` batch writes at once (see the module docstring)."""

    def __init__(self, max_in_flight: int, committed: int = 0) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise ValueError(f"max_in_flight must be an integer, not {max_in_flight!r}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._max = max_in_flight
        self._pool = (
            ThreadPoolExecutor(max_in_flight, thread_name_prefix="gateway-migrate")
            if max_in_flight > 1
            else None
        )
        self._batches: collections.deque[_Batch[R]] = collections.deque()
        #: Every position up to this one is committed.
        self.committed = committed
        self._failed = False

    def mark(self, through: int) -> None:
        """Position ``through`` holds nothing to write: committed with what comes before."""
        self._batches.append(_Batch(through, frozenset(), None))

    def submit(self, ids: Collection[str], write: Callable[[], R], through: int) -> None:
        """Run ``write`` (the batch of documents ``ids``, up to position ``through``) once a
        slot is free and no running batch shares an id with it. Raises `WindowFailed` if a
        batch already failed."""
        batch_ids = frozenset(ids)
        while True:
            running = [b for b in self._batches if b.future is not None and not b.future.done()]
            self._check()
            blocking = [b.future for b in running if b.ids & batch_ids]
            if len(running) < self._max and not blocking:
                break
            waited = blocking or [b.future for b in running]
            wait([f for f in waited if f is not None], return_when=FIRST_COMPLETED)
        future: Future[R]
        if self._pool is None:
            future = Future()
            try:
                future.set_result(write())
            except Exception as exc:
                future.set_exception(exc)
        else:
            future = self._pool.submit(write)
        self._batches.append(_Batch(through, batch_ids, future))
        self._check()

    def collect(self) -> list[R]:
        """The results of the finished prefix, in order (the committed position moves past
        them); stops at the first batch still running or failed."""
        results: list[R] = []
        while self._batches:
            batch = self._batches[0]
            if batch.future is not None:
                if not batch.future.done() or batch.future.exception() is not None:
                    break
                results.append(batch.future.result())
            self._batches.popleft()
            self.committed = batch.through
        return results

    def drain(self) -> tuple[list[R], BaseException | None]:
        """Wait for every batch; the results of those that succeeded (in order) and the first
        error (None if none failed). The committed position stops before a failed batch."""
        futures = [b.future for b in self._batches if b.future is not None]
        wait(futures)
        results = self.collect()
        error: BaseException | None = None
        for batch in self._batches:
            if batch.future is None:
                continue
            exc = batch.future.exception()
            if exc is None:
                results.append(batch.future.result())
            elif error is None:
                error = exc
        self._batches.clear()
        return results, error

    def close(self) -> None:
        """Stop the threads (after the batches running finish)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def failed(self) -> bool:
        """Whether a batch has failed (no new batch starts then)."""
        if not self._failed:
            self._failed = any(
                b.future is not None and b.future.done() and b.future.exception() is not None
                for b in self._batches
            )
        return self._failed

    def _check(self) -> None:
        if self.failed():
            raise WindowFailed
