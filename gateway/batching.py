"""Request coalescing: concurrent single reads and writes merged into DynamoDB batch calls.

`ReadCoalescer` merges concurrent ``get`` calls on one table into BatchGetItem requests and
`WriteCoalescer` merges concurrent unconditional saves and deletes into BatchWriteItem requests.
`write_with_revisions` is the write coalescer's batch function: it keeps the revision contract
(generations strictly increasing per document, the rev returned is the rev stored) although
BatchWriteItem takes no condition.

How a batch leaves ("natural batching", after aiodataloader and Facebook's DataLoader, but with
threads instead of an event loop, and no dispatcher thread):

* Callers put one *entry* per key in the coalescer's queue, then wait on an event of their own
  (a `_Waiter`). A read entry is shared by every caller asking for the same key while it is
  queued (one future per key, keys de-duplicated); a write entry belongs to one caller. A batch
  coming back sets the events of the callers it answered, and no other: with 64 threads, a
  batch no longer wakes every waiting thread to look at the queue and go back to sleep.
* A batch is *ready* when nothing of this coalescer is in flight, or when the queue holds a full
  batch (so throughput is not capped at one request per round trip). Reads also let a second
  batch leave while one is in flight once the queue holds as many keys as the latest batch
  sent (at least `PIPELINE_MIN_BATCH`), so that under load two batches overlap: one's round
  trip covers the other's parsing. With ``max_wait_s > 0``, a batch that is not full also waits
  until its oldest entry has waited that long, so that it can gather company; by default there
  is no such latency floor.
* Whichever waiting caller still has an entry queued takes a ready batch and sends it itself,
  in its own thread. So the first call on an idle coalescer leaves at once, and the calls that
  arrive while it is in flight form the next batch: when a batch comes back, one parked caller
  with an entry queued is woken (`_Coalescer._kick`) to send it.
* The batch function answers every key, or raises. Every entry of the batch is then settled:
  with its own value or error, with the batch's error when the whole batch failed, or with an
  error naming the key when the answer has none for it (aiodataloader's check). Settling
  happens in a ``finally`` block, so no caller can hang on an unexpected exception. An error is
  shared by the callers of a failed batch, the way ``concurrent.futures.Future`` raises one
  exception object in every thread that waits on it.

Time (the ``max_wait_s`` clock) is injected; the batch functions are plain callables, so tests
drive the coalescers with fakes that record each batch.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from gateway.codec import item_size
from gateway.errors import GatewayError
from gateway.retry import RetryPolicy
from gateway.revisions import RevisionMaker, parse_generation

V = TypeVar("V")
P = TypeVar("P")

#: DynamoDB's limits for one BatchGetItem / BatchWriteItem request.
MAX_BATCH_GET_KEYS = 100
MAX_BATCH_WRITE_ITEMS = 25
MAX_BATCH_WRITE_BYTES = 16 * 1024 * 1024

#: The smallest batch that may leave while another one is in flight (see `_may_pipeline`).
PIPELINE_MIN_BATCH = 8

_ID = "_id"
_REV = "_rev"


class _Waiter:
    """One caller blocked in a coalescer: its own event, so that a batch coming back wakes only
    the callers it answers (and one caller to lead the next batch), not every waiting thread."""

    __slots__ = ("event", "kicked", "remaining", "unsent")

    def __init__(self) -> None:
        self.event = threading.Event()
        #: The caller's entries not answered yet; the event is set when this drops to 0.
        self.remaining = 0
        #: The caller's entries still queued: while there is one, the caller may lead a batch.
        self.unsent = 0
        #: Woken to lead a batch (`_Coalescer._kick`) and not yet looked at the queue.
        self.kicked = False

    def join(self, entry: _Entry[Any, Any]) -> None:
        """Wait on ``entry`` too (lock held; the entry is queued, not sent)."""
        entry.waiters.append(self)
        self.remaining += 1
        self.unsent += 1


class _Entry(Generic[P, V]):
    """One queued key: what to send, and, once its batch is back, its value or error."""

    __slots__ = ("done", "enqueued_at", "error", "key", "payload", "sent", "value", "waiters")

    def __init__(self, key: str, payload: P, enqueued_at: float) -> None:
        self.key = key
        self.payload = payload
        self.enqueued_at = enqueued_at
        #: Callers waiting on this entry (more than one only for de-duplicated reads).
        self.waiters: list[_Waiter] = []
        self.sent = False
        self.done = False
        self.value: V | None = None
        self.error: BaseException | None = None


@dataclass(frozen=True)
class CoalescerStats:
    """Counters of one coalescer (or, summed with ``+``, of several)."""

    #: Batch requests sent (each one BatchGetItem or BatchWriteItem, retries not counted).
    batches: int = 0
    #: Entries sent in those batches: distinct keys for reads, writes for writes.
    items: int = 0
    #: Calls answered by an entry another caller had already queued (reads only).
    merged: int = 0
    #: Batches whose batch function raised (every caller in them got the error).
    failed_batches: int = 0
    #: The largest batch sent.
    largest_batch: int = 0

    @property
    def average_batch_size(self) -> float:
        """Entries per batch, 0.0 before the first batch."""
        return self.items / self.batches if self.batches else 0.0

    def __add__(self, other: CoalescerStats) -> CoalescerStats:
        return CoalescerStats(
            batches=self.batches + other.batches,
            items=self.items + other.items,
            merged=self.merged + other.merged,
            failed_batches=self.failed_batches + other.failed_batches,
            largest_batch=max(self.largest_batch, other.largest_batch),
        )

    def as_dict(self) -> dict[str, float | int]:
        """The counters and the average batch size, for ``stats()``."""
        return {
            "batches": self.batches,
            "items": self.items,
            "average_batch_size": round(self.average_batch_size, 3),
            "largest_batch": self.largest_batch,
            "merged": self.merged,
            "failed_batches": self.failed_batches,
        }


class _Coalescer(Generic[P, V]):
    """The machinery both coalescers share: leader hand-off, settling, counters."""

    #: The entries waiting for a batch (each subclass keeps them in its own shape).
    _queue: Sized

    def __init__(self, *, max_batch: int, max_wait_s: float, clock: Callable[[], float]) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0 seconds, got {max_wait_s!r}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._clock = clock
        # The lock of every coalescer's state. Callers of `_settle` wait on their own `_Waiter`
        # event; only `WriteCoalescer.exclusive` waits on the condition itself.
        self._cond = threading.Condition(threading.Lock())
        #: Parked callers that had an entry queued when they parked, oldest first: the
        #: candidates `_kick` wakes to lead the next batch.
        self._leaders: OrderedDict[_Waiter, None] = OrderedDict()
        self._in_flight = 0
        self._batches = 0
        self._items = 0
        self._merged = 0
        self._failed_batches = 0
        self._largest_batch = 0
        self._last_size = 0

    # -- subclass hooks (called with the lock held, except `_send`) ----------------------------

    def _take_ready(self, now: float) -> list[_Entry[P, V]] | float | None:
        """Take a ready batch off the queue (marking it sent with `_take`), or say when to look
        again: the clock time at which a lingering batch becomes ready, or None when only a
        notification (a batch back, a key released, a full queue) can make one ready."""
        raise NotImplementedError

    def _send(self, batch: list[_Entry[P, V]]) -> Mapping[str, V | BaseException]:
        """Call the batch function for ``batch`` (outside the lock)."""
        raise NotImplementedError

    def _released(self, batch: list[_Entry[P, V]]) -> None:
        """The batch is back (settled): forget whatever it held."""

    def _has_queue(self) -> bool:
        """Whether any entry is queued (the lock is held)."""
        return bool(self._queue)

    @property
    def queued(self) -> int:
        """Entries waiting for a batch: keys for reads, writes for writes."""
        with self._cond:
            return len(self._queue)

    # -- shared --------------------------------------------------------------------------------

    def stats(self) -> CoalescerStats:
        """Counters since construction."""
        with self._cond:
            return CoalescerStats(
                batches=self._batches,
                items=self._items,
                merged=self._merged,
                failed_batches=self._failed_batches,
                largest_batch=self._largest_batch,
            )

    @property
    def in_flight(self) -> int:
        """Batches sent whose answer has not come back yet."""
        with self._cond:
            return self._in_flight

    def _may_pipeline(self, queued: int) -> bool:
        """Whether ``queued`` entries (not a full batch) may leave while a batch is in flight.

        A second batch (never a third) leaves once the queue holds as many entries as the
        latest batch sent, and at least `PIPELINE_MIN_BATCH`: under steady load the callers
        then split into two batches of even size whose round trips overlap (one batch's
        network wait covers the other's parsing), instead of one batch at a time with the CPU
        idle during each round trip. Light load keeps plain natural batching.
        """
        return self._in_flight == 1 and queued >= max(PIPELINE_MIN_BATCH, self._last_size)

    def _linger_until(self, oldest: _Entry[P, V], now: float) -> float | None:
        """When a batch that is not full, headed by ``oldest``, may leave; None if now."""
        if self.max_wait_s > 0:
            until = oldest.enqueued_at + self.max_wait_s
            if now < until:
                return until
        return None

    def _take(self, batch: list[_Entry[P, V]]) -> list[_Entry[P, V]]:
        """Mark ``batch`` as sent by the calling thread."""
        for entry in batch:
            entry.sent = True
            for waiter in entry.waiters:
                waiter.unsent -= 1
        self._in_flight += 1
        self._batches += 1
        self._items += len(batch)
        self._largest_batch = max(self._largest_batch, len(batch))
        self._last_size = len(batch)
        return batch

    def _kick(self) -> None:
        """Wake one parked caller that still has an entry queued, to lead the next batch if one
        is ready (lock held). Called whenever a batch may have become ready: a batch back, a
        batch taken while more is queued, a key released."""
        leaders = self._leaders
        while leaders:
            waiter, _ = leaders.popitem(last=False)
            if waiter.unsent:
                waiter.kicked = True
                waiter.event.set()
                return

    def _settle(self, waiter: _Waiter) -> None:
        """Return once every entry of ``waiter`` is done, sending ready batches while one of its
        entries is queued.

        A caller leads only while it still has an entry in the queue: a caller whose entries
        are all in flight just waits, so nobody is held up sending the batches of others once
        its own answer could be back. Each caller waits on its own event: a batch coming back
        wakes the callers it answered and, through `_kick`, one caller to lead the next batch.
        """
        batch: list[_Entry[P, V]] | None = None
        try:
            while True:
                timeout: float | None = None
                with self._cond:
                    if waiter.remaining == 0:
                        self._leaders.pop(waiter, None)
                        if waiter.kicked:
                            waiter.kicked = False
                            self._kick()  # pass the lead on: we did not look at the queue
                        return
                    waiter.kicked = False
                    if waiter.unsent:
                        now = self._clock()
                        ready = self._take_ready(now)
                        if isinstance(ready, list):
                            batch = ready
                            self._leaders.pop(waiter, None)
                            if self._has_queue():
                                self._kick()  # another batch may be ready for someone else
                        else:
                            if ready is not None:
                                timeout = max(0.0, ready - now)
                            self._leaders[waiter] = None
                    if batch is None:
                        waiter.event.clear()  # set again, under the lock, by whoever wakes us
                if batch is None:
                    waiter.event.wait(timeout)
                else:
                    self._execute(batch)
                    batch = None
        except BaseException as exc:
            # Interrupted (Ctrl-C) between taking a batch and sending it: its callers must
            # not wait for an answer that will never come.
            if batch is not None:
                self._finish(batch, {}, exc)
            with self._cond:
                self._leaders.pop(waiter, None)
                if self._has_queue():
                    self._kick()  # we may have been the one to lead the next batch
            raise

    def _execute(self, batch: list[_Entry[P, V]]) -> None:
        """Send one batch, outside the lock, and settle every entry in it whatever happens."""
        answers: Mapping[str, V | BaseException] = {}
        failure: BaseException | None = None
        try:
            answers = dict(self._send(batch))
        except BaseException as exc:  # every waiter must get an answer, even on Ctrl-C
            failure = exc
        self._finish(batch, answers, failure)
        if failure is not None and not isinstance(failure, Exception):
            raise failure  # KeyboardInterrupt, SystemExit: the leader's thread must see it too

    def _finish(
        self,
        batch: list[_Entry[P, V]],
        answers: Mapping[str, V | BaseException],
        failure: BaseException | None,
    ) -> None:
        """Give every entry of ``batch`` its answer or error, and wake the waiting callers."""
        with self._cond:
            if any(entry.done for entry in batch):
                return  # already finished (an interrupt after `_execute` settled it)
            if failure is not None:
                self._failed_batches += 1
                if not isinstance(failure, Exception):
                    # Ctrl-C or SystemExit belongs to the thread sending the batch (it re-raises
                    # it); the other callers get an ordinary error saying what happened.
                    interrupted = GatewayError(
                        f"the batch was interrupted by {type(failure).__name__} in the thread "
                        "sending it; nothing is known about its outcome"
                    )
                    interrupted.__cause__ = failure
                    failure = interrupted
            try:
                for entry in batch:
                    if failure is not None:
                        entry.error = failure
                    elif entry.key not in answers:
                        entry.error = GatewayError(
                            "internal error: the batch function returned no answer for key "
                            f"{entry.key!r} (it must answer every key it is given)"
                        )
                    else:
                        answer = answers[entry.key]
                        if isinstance(answer, BaseException):
                            entry.error = answer
                        else:
                            entry.value = answer
                    entry.done = True
            finally:
                for entry in batch:
                    if not entry.done:  # only after an interrupt in the loop above
                        entry.error = failure or GatewayError("batch interrupted")
                        entry.done = True
                self._in_flight -= 1
                self._released(batch)
                for entry in batch:
                    for waiter in entry.waiters:
                        waiter.remaining -= 1
                        if waiter.remaining == 0:
                            waiter.event.set()
                if self._has_queue():
                    self._kick()
                self._cond.notify_all()  # `exclusive` waiting for a key (no-op without one)


# --------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------


class ReadCoalescer(_Coalescer[None, V]):
    """Merges concurrent reads of one table into batches of at most ``max_batch`` keys.

    ``load_batch(keys)`` receives distinct keys, at most ``max_batch`` of them, and returns a
    mapping with an answer for every key (e.g. None for "not found"); it may raise, and then
    every caller waiting on those keys gets the exception. A key already queued is not queued
    twice: the callers share one entry (``merged`` in the stats). A key whose batch is already
    in flight is queued anew: that batch may have been sent before the caller's call began, so
    its answer could predate a write the caller has seen acknowledged.

    ``copy``: when several callers share an entry, each gets ``copy(value)`` so that none can
    change what another one holds; a caller alone on its entry gets the value itself.
    """

    def __init__(
        self,
        load_batch: Callable[[list[str]], Mapping[str, V]],
        *,
        max_batch: int = MAX_BATCH_GET_KEYS,
        max_wait_s: float = 0.0,
        copy: Callable[[V], V] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch > MAX_BATCH_GET_KEYS:
            raise ValueError(
                f"max_batch must be at most {MAX_BATCH_GET_KEYS} (BatchGetItem's limit), "
                f"got {max_batch!r}"
            )
        super().__init__(max_batch=max_batch, max_wait_s=max_wait_s, clock=clock)
        self._load_batch = load_batch
        self._copy = copy
        # Insertion-ordered: the queue is FIFO and a key finds its entry in O(1).
        self._queue: dict[str, _Entry[None, V]] = {}

    def load(self, key: str) -> V:
        """The value for ``key``, read in a batch with whatever else is queued."""
        return self.load_many([key])[key]

    def load_many(self, keys: Iterable[str]) -> dict[str, V]:
        """Every distinct key -> its value, in first-seen order; raises the first error."""
        with self._cond:
            now = self._clock()
            waiter = _Waiter()
            entries: dict[str, _Entry[None, V]] = {}
            for key in keys:
                if key in entries:
                    continue
                entry = self._queue.get(key)
                if entry is None:
                    entry = self._queue[key] = _Entry(key, None, now)
                else:
                    self._merged += 1
                waiter.join(entry)
                entries[key] = entry
        self._settle(waiter)
        result: dict[str, V] = {}
        for key, entry in entries.items():
            if entry.error is not None:
                raise entry.error
            value: Any = entry.value
            if len(entry.waiters) > 1 and self._copy is not None:
                value = self._copy(value)
            result[key] = value
        return result

    def _send(self, batch: list[_Entry[None, V]]) -> Mapping[str, V]:
        return self._load_batch([entry.key for entry in batch])

    def _take_ready(self, now: float) -> list[_Entry[None, V]] | float | None:
        queue = self._queue
        if not queue:
            return None
        if len(queue) < self.max_batch:
            if self._in_flight and not self._may_pipeline(len(queue)):
                return None  # natural batching: the calls arriving now form the next batch
            until = self._linger_until(next(iter(queue.values())), now)
            if until is not None:
                return until
        batch = list(itertools.islice(queue.values(), self.max_batch))
        for entry in batch:
            del queue[entry.key]
        return self._take(batch)


# --------------------------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One caller's write: put ``item`` (encoded, with ``_id``), or delete when it is None."""

    key: str
    item: dict[str, Any] | None = None

    @property
    def is_delete(self) -> bool:
        """True for a delete."""
        return self.item is None


@dataclass(frozen=True)
class WriteResult:
    """What one batched write did.

    For a put, ``rev`` is the new revision (also set as ``item["_rev"]``); for a delete, the
    revision of the document it removed, or None if there was none (``""`` for a stored item
    without a ``_rev``).
    """

    rev: str | None


#: What the ``_rev`` attribute adds to an item: the name and the longest revision we write.
_REV_BYTES = len(_REV) + 20 + 1 + 32


def write_weight(write: Write) -> int:
    """The bytes a write adds to a BatchWriteItem request, as DynamoDB counts item sizes."""
    if write.item is None:
        return len(_ID) + len(write.key.encode("utf-8", "surrogatepass"))
    return item_size(write.item) + (0 if _REV in write.item else _REV_BYTES)


class WriteCoalescer(_Coalescer[Write, WriteResult]):
    """Merges concurrent writes to one table into batches of at most ``max_batch`` writes.

    ``write_batch(writes)`` receives writes to distinct keys (at most ``max_batch`` of them,
    whose `write_weight` totals at most ``max_batch_bytes``) and returns key -> `WriteResult`
    or the exception that write failed with; it may also raise, failing the whole batch. Each
    caller returns once its own write has been answered (write-through, never write-behind).

    Two writes to one key never share a batch (DynamoDB rejects a BatchWriteItem that names a
    key twice), and never overlap: a key's writes are sent in the order they were submitted,
    one batch after the other, so the last one submitted is the one that stays stored. A key
    held by `exclusive` (a conditional write that bypasses batching) is kept out of batches
    until it is released, and `exclusive` waits for the key's batch in flight, if any.

    Revisions: see `write_with_revisions`, the batch function `DynamoDBService` uses; the two
    rules above are what make it safe within this process.
    """

    def __init__(
        self,
        write_batch: Callable[[list[Write]], Mapping[str, WriteResult | BaseException]],
        *,
        max_batch: int = MAX_BATCH_WRITE_ITEMS,
        max_batch_bytes: int = MAX_BATCH_WRITE_BYTES,
        max_wait_s: float = 0.0,
        weight: Callable[[Write], int] = write_weight,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch > MAX_BATCH_WRITE_ITEMS:
            raise ValueError(
                f"max_batch must be at most {MAX_BATCH_WRITE_ITEMS} (BatchWriteItem's limit), "
                f"got {max_batch!r}"
            )
        if max_batch_bytes < 1:
            raise ValueError(f"max_batch_bytes must be >= 1, got {max_batch_bytes!r}")
        super().__init__(max_batch=max_batch, max_wait_s=max_wait_s, clock=clock)
        self._write_batch = write_batch
        self.max_batch_bytes = max_batch_bytes
        self._weight = weight
        self._queue: list[tuple[_Entry[Write, WriteResult], int]] = []
        #: Keys with a write in flight (at most one each).
        self._busy: set[str] = set()
        #: Keys claimed by `exclusive` (held, or waited for): kept out of new batches.
        self._claims: Counter[str] = Counter()
        #: Keys held by `exclusive`.
        self._held: set[str] = set()

    def submit(self, write: Write) -> WriteResult:
        """Send ``write`` in a batch; return once it is durably written, or raise its error."""
        (outcome,) = self.submit_many([write])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def submit_many(self, writes: Sequence[Write]) -> list[WriteResult | BaseException]:
        """Send every write (in order); return each one's result or error once all are done."""
        with self._cond:
            now = self._clock()
            waiter = _Waiter()
            entries = []
            for write in writes:
                entry: _Entry[Write, WriteResult] = _Entry(write.key, write, now)
                waiter.join(entry)
                self._queue.append((entry, self._weight(write)))
                entries.append(entry)
        self._settle(waiter)
        outcomes: list[WriteResult | BaseException] = []
        for entry in entries:
            if entry.error is not None:
                outcomes.append(entry.error)
            else:
                assert entry.value is not None
                outcomes.append(entry.value)
        return outcomes

    @contextmanager
    def exclusive(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold ``keys`` for a write that bypasses batching (e.g. a conditional PutItem).

        Waits until none of the keys is in a batch in flight or held by another `exclusive`,
        then holds them until the block ends. From the moment it starts waiting, new batches
        leave the keys out, so a stream of batched writes to a hot key cannot starve it. All
        keys are taken at once, so two holders can never deadlock.
        """
        wanted = set(keys)
        with self._cond:
            self._claims.update(wanted)
            try:
                while any(key in self._busy or key in self._held for key in wanted):
                    self._cond.wait()
            except BaseException:
                self._unclaim(wanted)
                raise
            self._held.update(wanted)
        try:
            yield
        finally:
            with self._cond:
                self._held.difference_update(wanted)
                self._unclaim(wanted)

    def _unclaim(self, keys: set[str]) -> None:
        """Drop `exclusive`'s claim on ``keys`` and wake whoever waits for them (lock held)."""
        self._claims.subtract(keys)
        for key in keys:
            if self._claims[key] <= 0:
                del self._claims[key]
        self._cond.notify_all()
        if self._has_queue():
            self._kick()  # a batch may now take the keys

    def _send(self, batch: list[_Entry[Write, WriteResult]]) -> Mapping[str, Any]:
        return self._write_batch([entry.payload for entry in batch])

    def _take_ready(self, now: float) -> list[_Entry[Write, WriteResult]] | float | None:
        if not self._queue:
            return None
        chosen: list[_Entry[Write, WriteResult]] = []
        chosen_keys: set[str] = set()
        size = 0
        full = False
        for entry, weight in self._queue:
            key = entry.key
            # A key in flight, claimed by `exclusive`, or already in this batch waits for a
            # later batch; so do its later writes, which keeps each key's writes in order.
            if key in chosen_keys or key in self._busy or key in self._claims:
                continue
            if chosen and size + weight > self.max_batch_bytes:
                full = True
                break
            chosen.append(entry)
            chosen_keys.add(key)
            size += weight
            if len(chosen) == self.max_batch:
                full = True
                break
        if not chosen:
            return None  # every queued key is in flight or held: wait for it to come back
        if not full:
            if self._in_flight:
                return None  # natural batching: the calls arriving now form the next batch
            until = self._linger_until(chosen[0], now)
            if until is not None:
                return until
        batch = self._take(chosen)
        self._queue = [(entry, weight) for entry, weight in self._queue if not entry.sent]
        self._busy.update(chosen_keys)
        return batch

    def _released(self, batch: list[_Entry[Write, WriteResult]]) -> None:
        for entry in batch:
            self._busy.discard(entry.key)


# --------------------------------------------------------------------------------------------
# Per-key locks
# --------------------------------------------------------------------------------------------


class _KeyLock:
    __slots__ = ("lock", "owner", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Callers holding or waiting for the lock; the entry is dropped when this reaches 0.
        self.users = 0
        #: The thread holding it (to refuse a re-entry, which would deadlock), or None.
        self.owner: int | None = None


class KeyLocks:
    """Mutual exclusion per key, within one process: one lock per key in use, none for others.

    `hold` takes the locks of several keys in sorted order, so that two holders of overlapping
    key sets can never deadlock; distinct keys never wait for each other (there is one lock
    per key held, created on first use and dropped when its last user leaves, not a fixed set
    of stripes that unrelated keys would share). The locks are not re-entrant: a thread asking
    again for a key it holds gets a `RuntimeError` rather than a deadlock.

    ``DynamoDBService`` (without write coalescing) holds a document's lock around the
    conditional PutItem of ``save`` and around ``save_many``'s read-revisions-then-
    BatchWriteItem, so that no save of the same document lands in between.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[Any, _KeyLock] = {}
        self._waits = 0
        #: Called with the key, in the waiting thread, each time a caller is about to wait
        #: for a key another caller holds (an observer, e.g. for tests; must not block).
        self.on_wait: Callable[[Any], None] | None = None

    @contextmanager
    def hold(self, keys: Iterable[Any]) -> Iterator[None]:
        """Hold the lock of every key (duplicates merged; keys must be sortable) in the block."""
        held: list[Any] = []
        try:
            for key in sorted(set(keys)):
                self._acquire(key)
                held.append(key)
            yield
        finally:
            for key in reversed(held):
                self._release(key)

    @property
    def waits(self) -> int:
        """How many times a caller had to wait for a key held by another."""
        with self._mutex:
            return self._waits

    def __len__(self) -> int:
        """Keys held or waited for now."""
        with self._mutex:
            return len(self._locks)

    def _acquire(self, key: Any) -> None:
        me = threading.get_ident()
        with self._mutex:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = _KeyLock()
            elif entry.owner == me:
                raise RuntimeError(
                    f"this thread already holds the lock of {key!r}: a write to it from inside "
                    "another write of it would wait for itself"
                )
            entry.users += 1
            acquired = entry.lock.acquire(blocking=False)
            if not acquired:
                self._waits += 1
        try:
            if not acquired:
                hook = self.on_wait
                if hook is not None:
                    hook(key)
                entry.lock.acquire()
        except BaseException:
            with self._mutex:
                self._drop(key, entry)
            raise
        entry.owner = me

    def _release(self, key: Any) -> None:
        with self._mutex:
            entry = self._locks[key]
            entry.owner = None
            entry.lock.release()
            self._drop(key, entry)

    def _drop(self, key: Any, entry: _KeyLock) -> None:
        """One user less (the mutex is held); forget the key when nobody uses it."""
        entry.users -= 1
        if entry.users == 0:
            del self._locks[key]


# --------------------------------------------------------------------------------------------
# Revisions in a batch
# --------------------------------------------------------------------------------------------


class WriteStore(Protocol):
    """The two DynamoDB calls `write_with_revisions` makes, for one table."""

    def stored_revisions(self, keys: list[str]) -> Mapping[str, str]:
        """Key -> stored ``_rev`` (``""`` if the item has none) for the keys that exist.

        Must be a strongly consistent read (BatchGetItem with ``ConsistentRead``, projecting
        ``_id`` and ``_rev``), with unprocessed keys retried.
        """
        ...

    def batch_write(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send one BatchWriteItem (throttling retried); return its unprocessed requests."""
        ...


def write_with_revisions(
    writes: Sequence[Write],
    store: WriteStore,
    *,
    revisions: RevisionMaker,
    retry: RetryPolicy,
) -> dict[str, WriteResult | BaseException]:
    """Write one batch (distinct keys) with BatchWriteItem, giving every put a proper revision.

    How revisions stay correct. ``DynamoDBService.save`` normally writes with a condition
    ("no item, or a stored ``_rev`` below the new generation"), so a save can never replace a
    newer revision. BatchWriteItem takes no condition. So the batch first reads the stored
    ``_rev`` of all its keys with one strongly consistent BatchGetItem (projection ``_id,
    _rev``, as ``save_many`` does) and gives each put the generation ``max(stored + 1,
    now_us)``; a delete reports the revision it read as the one it removed. That is right as
    long as nothing writes the key between that read and this write, and within this process
    `WriteCoalescer` guarantees it:

    * a key is never in two batches in flight, and its writes go in submission order, each
      batch sent only after the previous one for the key has returned, so the read of batch
      n + 1 sees the write of batch n; retries of ``UnprocessedItems`` resend the same revision
      while the key is still held;
    * ``DynamoDBService``'s other writes to the key (conditional saves and deletes, which
      bypass batching) run inside `WriteCoalescer.exclusive`; ``save_many`` and ``delete_many``
      go through the coalescer.

    Hence: generations strictly increase per document, the last acknowledged write is the one
    stored, and the rev returned is the ``_rev`` a later ``get`` returns.

    Across processes (or two services in one process) this cannot be made safe with
    BatchWriteItem: a write by another process landing between our read and our write is
    overwritten (the last write still wins), but our generation, computed from the older read,
    can then be lower than the one it replaced, so the document's generation steps back and a
    cache ordering copies by generation may keep the replaced one. The window is one round
    trip plus any ``UnprocessedItems`` retries, and because generations follow wall-clock
    microseconds a step back needs the other writer's generation to be ahead of ours. When
    several processes write the same documents, switch write coalescing off (``coalescing:
    writes: false``): every unconditional save is then a conditional PutItem again.

    Returns key -> `WriteResult` for every write that DynamoDB processed, and key -> the
    exception for those it did not (the retry policy gave up on ``UnprocessedItems`` with a
    `ThrottledError`, or a request failed). An error from the revision read fails the whole
    batch before anything is written (it is raised).
    """
    keys = [write.key for write in writes]
    if len(set(keys)) != len(keys):
        raise ValueError("a batch must not name a key twice (BatchWriteItem rejects it)")
    stored = store.stored_revisions(keys)
    requests: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, WriteResult] = {}
    for write in writes:
        previous = stored.get(write.key)
        if write.item is None:
            requests[write.key] = {"DeleteRequest": {"Key": {_ID: write.key}}}
            outcomes[write.key] = WriteResult(previous)
        else:
            generation = revisions.next_generation(parse_generation(previous))
            rev = revisions.make(generation)
            write.item[_REV] = rev
            requests[write.key] = {"PutRequest": {"Item": write.item}}
            outcomes[write.key] = WriteResult(rev)
    results: dict[str, WriteResult | BaseException] = {}
    pending = list(requests)
    state = retry.start("BatchWriteItem")
    try:
        while True:
            unprocessed = store.batch_write([requests[key] for key in pending])
            left = {_request_key(request) for request in unprocessed}
            if None in left:  # a request we cannot name: none is known to be written
                left = set(pending)
            for key in pending:
                if key not in left:
                    results[key] = outcomes[key]
            pending = [key for key in pending if key in left]
            if not pending:
                state.succeeded()
                return results
            state.backoff("UnprocessedItems")
    except Exception as exc:
        # The writes already processed stay acknowledged; only the rest get the error.
        for key in pending:
            results[key] = exc
        return results


def _request_key(request: Mapping[str, Any]) -> str | None:
    """The ``_id`` a PutRequest / DeleteRequest names."""
    if "PutRequest" in request:
        return request["PutRequest"].get("Item", {}).get(_ID)
    if "DeleteRequest" in request:
        return request["DeleteRequest"].get("Key", {}).get(_ID)
    return None


__all__ = [
    "MAX_BATCH_GET_KEYS",
    "MAX_BATCH_WRITE_BYTES",
    "MAX_BATCH_WRITE_ITEMS",
    "CoalescerStats",
    "KeyLocks",
    "ReadCoalescer",
    "Write",
    "WriteCoalescer",
    "WriteResult",
    "WriteStore",
    "write_weight",
    "write_with_revisions",
]
