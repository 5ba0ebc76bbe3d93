"""Bulk writes with several requests in flight: the engine of ``save_many`` / ``delete_many``.

``save_many`` reads the stored revisions of its documents (strongly consistent BatchGetItem, 100
ids a request) and then writes them (BatchWriteItem, 25 items a request). One request at a time
leaves the connection idle for most of each round trip, so `BulkExecutor` keeps up to
``max_in_flight`` requests going at once on a thread pool of that size, and *pipelines* them:
the revision read of the next chunk of ids is in flight while the writes of the previous chunk
are, instead of every read having to come back before the first write leaves.

Why that keeps revisions correct: the ids of one call are distinct (a mapping for ``save_many``,
de-duplicated ids for ``delete_many``), so no two requests of a call touch the same document,
and a chunk's writes are planned (its generations computed) only from its own read, which has
come back. The caller holds the per-document locks (`gateway.batching.KeyLocks`) of every id
for the whole call, in its own thread, so no other write of this service lands between a read
and its write; the pool threads take no lock, so they can never wait for a caller.

Failures: each task is one request with its own retries (throttling, ``UnprocessedItems``,
transient errors) under the service's retry policy, exactly as when sent one at a time. Once a
task fails, no new task starts; those in flight run to their end (answered, or given up by the
retry policy), and then the first error seen is raised. No request is left unanswered and no
pool thread outlives `BulkExecutor.close`.

With ``max_in_flight=1`` nothing changes from sending one request at a time: every read first,
then every write, in the caller's thread, with no pool at all.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

R = TypeVar("R")

#: A write request of a bulk call (one BatchWriteItem with its retries).
Task = Callable[[], None]

#: Requests in flight per service by default: a few round trips overlap, far below the default
#: HTTP connection pool (50), so that other calls of the service still find a connection.
DEFAULT_MAX_IN_FLIGHT = 8
#: Write batches one revision read usually yields (100 ids read, 25 items written a request):
#: sizes how far reads may run ahead of writes.
WRITES_PER_READ = 4
THREAD_NAME_PREFIX = "gateway-bulk"


def read_ahead_for(max_in_flight: int) -> int:
    """Chunks whose revision read may be in flight (or back, not yet planned) at once: enough
    to keep ``max_in_flight`` writes busy, plus one being read."""
    return 1 + math.ceil(max_in_flight / WRITES_PER_READ)


class BulkExecutor:
    """Runs the requests of bulk calls, at most ``max_in_flight`` at once (across every call of
    the executor: the pool has that many threads). Thread-safe; `close` ends its threads."""

    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise ValueError(f"max_in_flight must be an integer, got {max_in_flight!r}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self.read_ahead = read_ahead_for(max_in_flight)
        self._lock = threading.Lock()
        # Created on the first concurrent call: a service that never bulk-writes has no pool.
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        #: Called in the calling thread with a call's first error once it is recorded (from
        #: then on no new task of the call starts): an observer, e.g. for tests; must not block.
        self.on_error: Callable[[BaseException], None] | None = None

    def run(self, writes: Sequence[Task]) -> None:
        """Run every write (no read first), ``max_in_flight`` at a time; see `pipeline`."""
        self.pipeline([], _no_plan, writes)

    def pipeline(
        self,
        reads: Sequence[Callable[[], R]],
        plan: Callable[[int, R], Sequence[Task]],
        writes: Sequence[Task] = (),
    ) -> None:
        """Run ``writes``, every read, and the writes ``plan(i, <answer of reads[i]>)`` returns.

        ``plan`` runs in the caller's thread, in read order (0, 1, ...), once the read has come
        back. Reads may run ahead of the writes by `read_ahead` chunks. Writes leave in the
        order they are planned. Returns when everything is done; if a task (or ``plan``)
        failed, raises the first error once every task in flight has finished.
        """
        if self.max_in_flight == 1:
            # As before bulk writes went parallel: all reads, then all writes, in this thread.
            answers = [read() for read in reads]
            for write in writes:
                write()
            for index, answer in enumerate(answers):
                for write in plan(index, answer):
                    write()
            return
        self._pipeline(self._executor(), reads, plan, writes)

    def close(self) -> None:
        """Stop the pool's threads, after the requests in flight are done. Idempotent."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"BulkExecutor(max_in_flight={self.max_in_flight})"

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("this service is closed: bulk writes need an open service")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_in_flight, thread_name_prefix=THREAD_NAME_PREFIX
                )
            return self._pool

    def _pipeline(
        self,
        pool: ThreadPoolExecutor,
        reads: Sequence[Callable[[], R]],
        plan: Callable[[int, R], Sequence[Task]],
        writes: Sequence[Task],
    ) -> None:
        # Only this (the caller's) thread touches the state below; pool threads run tasks only.
        ready: deque[Task] = deque(writes)
        answers: dict[int, R] = {}  # reads back, waiting for the earlier ones to be planned
        in_flight: dict[Future[Any], tuple[int, int | None]] = {}  # -> (order sent, read index)
        sent = itertools.count()
        next_read = 0
        next_plan = 0
        errors: list[BaseException] = []
        try:
            while True:
                while not errors and len(in_flight) < self.max_in_flight:
                    if (
                        next_read < len(reads)
                        and next_read - next_plan < self.read_ahead
                        and len(ready) < self.max_in_flight
                    ):
                        future: Future[Any] = pool.submit(reads[next_read])
                        in_flight[future] = (next(sent), next_read)
                        next_read += 1
                    elif ready:
                        in_flight[pool.submit(ready.popleft())] = (next(sent), None)
                    else:
                        break
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: in_flight[f][0]):
                    _, read_index = in_flight.pop(future)
                    error = future.exception()
                    if error is not None:
                        errors.append(error)
                        hook = self.on_error
                        if hook is not None and len(errors) == 1:
                            hook(error)
                    elif read_index is not None:
                        answers[read_index] = future.result()
                while not errors and next_plan in answers:
                    ready.extend(plan(next_plan, answers.pop(next_plan)))
                    next_plan += 1
        finally:
            # Here on success (nothing in flight), after an error, or interrupted (e.g.
            # KeyboardInterrupt while waiting): what has not started never will, and what has
            # started is waited for, so no request of this call outlives it.
            for future in in_flight:
                future.cancel()
            wait(in_flight)
        if errors:
            raise errors[0]


def _no_plan(index: int, answer: object) -> Sequence[Task]:
    return ()


__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "THREAD_NAME_PREFIX",
    "BulkExecutor",
    "Task",
    "read_ahead_for",
]
