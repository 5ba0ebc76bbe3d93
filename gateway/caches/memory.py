"""The in-process cache backend: a cachetools LRU whose values carry their own expiry.

Each key with an answer maps to a *slot*, ``(expires_at, entry, size)``, in a plain
``cachetools.LRUCache`` rather than in a ``TLRUCache``. The hit path is then one LRU lookup,
one comparison with the monotonic clock and a tuple index. ``TLRUCache`` reads its clock
through a Python-level timer wrapper on every hit and keeps a heap of expiries on every
insert: a bare ``TLRUCache`` hit measured 2.5 times a bare ``LRUCache`` hit (see
``scripts/bench_memory_cache.py``). The price is that an expired entry keeps its slot until it
is looked up (then it is dropped and counted) or reaches the cold end of the LRU.

The rules of `gateway.caches.base` are applied with one process-wide version counter instead
of a version per record: every change to a key (a write beginning or ending, an
invalidation) takes the next number and is remembered in ``_changes`` for ``floor_ttl_s``,
outside the LRU, so that evicting an entry never forgets a change (floors, not holes). A
reader's token is the counter's value before it reads DynamoDB; its fill is refused if the
key changed after that. Write intents also live outside the LRU: cache pressure can never
evict one.

All state is guarded by one ``threading.Lock``, taken with ``acquire``/``release`` in a
``try``/``finally`` (on CPython 3.11 about half of what ``with lock:`` costs, paid on every
hit). Sizes of documents (``repr``) are computed before the lock is taken: a large document
must not stall the hits of every other thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final

from cachetools import LRUCache

from gateway.caches.base import (
    DEFAULT_FLOOR_TTL_S,
    DROPPED,
    KEPT,
    LATE,
    MISS,
    STORED,
    End,
    Entry,
    Fill,
    Miss,
    Outcome,
    check_intent,
)

DEFAULT_MAX_ITEMS: Final = 100_000
#: Bytes charged per entry on top of its key, rev and document text: the Entry, the slot tuple
#: and their places in the LRU's dict and order.
ENTRY_OVERHEAD_BYTES: Final = 240
#: Keys with write intents are swept of intents whose deadline passed (left by writers that
#: died without ending) once more than this many keys hold intents.
INTENT_SWEEP_MIN_KEYS: Final = 1024

#: ``(expires_at on the monotonic clock, entry, approximate size in bytes)``.
_Slot = tuple[float, Entry, int]


class _Pending:
    """A key's writes in flight: intent -> (deadline, ordered), the version of the last change
    generations cannot order, and the highest generation an ordered write or a fill stored
    (it outlives an eviction of the entry)."""

    __slots__ = ("intents", "max_gen", "uver")

    def __init__(self, max_gen: int) -> None:
        self.intents: dict[str, tuple[float, bool]] = {}
        self.uver = 0
        self.max_gen = max_gen

    def last_deadline(self) -> float:
        return max(deadline for deadline, _ in self.intents.values())


class _SlotLRU(LRUCache[str, "_Slot | None"]):
    """An LRU of slots that answers None for a missing key and counts what it pushes out."""

    def __init__(
        self,
        maxsize: int,
        getsizeof: Callable[[_Slot | None], float] | None,
        timer: Callable[[], float],
    ) -> None:
        super().__init__(maxsize, getsizeof)
        self.timer = timer
        self.evictions = 0
        self.expirations = 0

    def __missing__(self, key: str) -> _Slot | None:
        # None instead of KeyError: a miss then costs no exception unwinding through two frames.
        return None

    def popitem(self) -> tuple[str, _Slot | None]:
        """Remove the least recently used slot, counting it as an eviction or an expiry."""
        key, slot = super().popitem()
        if slot is not None and self.timer() < slot[0]:
            self.evictions += 1
        else:
            self.expirations += 1
        return key, slot


def _slot_size(slot: _Slot | None) -> int:
    return 0 if slot is None else slot[2]


def approximate_size(key: str, entry: Entry) -> int:
    """Rough bytes an entry holds: key, rev and the repr of its document, plus an overhead."""
    size = ENTRY_OVERHEAD_BYTES + len(key) + len(entry.rev or "")
    if entry.document is not None:
        size += len(repr(entry.document))
    return size


class MemoryCache:
    """An in-process, thread-safe LRU cache backend with per-entry TTLs."""

    name = "memory"
    #: Entries hold the stored objects: the gateway copies documents on the way out.
    shares_documents = True
    #: Reads cost no round trip: the gateway double-checks the cache before a load.
    in_process = True

    __slots__ = (
        "_acquire",
        "_changes",
        "_intents",
        "_lock",
        "_lru",
        "_max_bytes",
        "_max_items",
        "_release",
        "_seq",
        "_sweep_at",
        "_timer",
        "_void_below",
        "floor_ttl_s",
    )

    def __init__(
        self,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_bytes: int | None = None,
        timer: Callable[[], float] = time.monotonic,
        floor_ttl_s: float = DEFAULT_FLOOR_TTL_S,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 or None, not {max_bytes!r}")
        if not floor_ttl_s > 0:
            raise ValueError(f"floor_ttl_s must be positive, not {floor_ttl_s!r}")
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._timer = timer
        self.floor_ttl_s = float(floor_ttl_s)
        if max_bytes is None:
            self._lru = _SlotLRU(max_items, None, timer)
        else:
            # cachetools bounds one size: bytes here, the item count by hand in _store.
            self._lru = _SlotLRU(max_bytes, _slot_size, timer)
        # key -> (version of its last change, monotonic time of it), oldest change first.
        self._changes: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # key -> its writes in flight
        self._intents: dict[str, _Pending] = {}
        self._seq = 0
        self._void_below = 0
        self._sweep_at = INTENT_SWEEP_MIN_KEYS
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> Entry | Miss:
        """The live entry under ``key``, or MISS."""
        now = self._timer()
        self._acquire()
        try:
            slot = self._lru[key]
            if slot is not None:
                if now < slot[0]:
                    return slot[1]
                self._expire(key)
            return MISS
        finally:
            self._release()

    def get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """One result per key, in order: the live entry, or MISS."""
        now = self._timer()
        lru = self._lru
        out: list[Entry | Miss] = []
        self._acquire()
        try:
            for key in keys:
                slot = lru[key]
                if slot is not None and now < slot[0]:
                    out.append(slot[1])
                else:
                    if slot is not None:
                        self._expire(key)
                    out.append(MISS)
        finally:
            self._release()
        return out

    def read_token(self, key: str, seen: Entry | Miss) -> int:
        """The process-wide version now: a change made after it refuses the reader's fill.

        Intents of ``key`` whose deadline passed are expired first (a change), so that a
        reader arriving after a dead writer's deadline may fill, as in `base.Model` (where the
        record is gone by then); only readers that started before it are refused.
        """
        if key in self._intents:  # rare: a write in flight, or one whose writer died
            now = self._timer()
            self._acquire()
            try:
                if key in self._intents:
                    self._pending_of(key, now)
            finally:
                self._release()
        return self._seq

    def _expire(self, key: str) -> None:
        del self._lru[key]
        self._lru.expirations += 1

    # -- the rules (gateway.caches.base) -----------------------------------------------------

    def fill_many(self, fills: Sequence[Fill]) -> None:
        """Store results of reads whose key did not change since their token was taken."""
        sizes = self._sizes([(f.key, f.entry) for f in fills])
        now = self._timer()
        self._acquire()
        try:
            changes = self._changes
            for i, fill in enumerate(fills):
                key = fill.key
                if not fill.ttl_s > 0:
                    continue  # nothing to store, and the key's entry is still right
                pending = self._pending_of(key, now)
                change = changes.get(key)
                if fill.token < self._void_below or (change is not None and change[0] > fill.token):
                    continue
                ttl = fill.ttl_s
                if pending is not None and ttl > 0:
                    pending.max_gen = max(pending.max_gen, fill.entry.generation)
                    ttl = pending.last_deadline() - now
                self._store(key, fill.entry, ttl, sizes[i], now)
        finally:
            self._release()

    def begin_write(
        self, keys: Sequence[str], intent: str, ttl_s: float, ordered: bool = False
    ) -> list[int]:
        """Register ``intent`` on each key; the entry stays but lives at most ``ttl_s``."""
        check_intent(intent)
        now = self._timer()
        deadline = now + ttl_s
        tokens: list[int] = []
        self._acquire()
        try:
            for key in keys:
                pending = self._pending_of(key, now)
                if pending is None:
                    slot = self._lru[key]
                    generation = slot[1].generation if slot is not None and now < slot[0] else 0
                    pending = self._intents[key] = _Pending(generation)
                pending.intents[intent] = (deadline, ordered)
                ver = self._change(key, now)
                if ordered:
                    tokens.append(pending.uver)
                else:
                    pending.uver = ver
                    tokens.append(ver)
                slot = self._lru[key]
                if slot is not None:
                    if now < slot[0]:
                        # Not past the last intent's deadline: a writer that never ends must
                        # not leave the old copy trusted (the rule of base.Model.begin).
                        self._lru[key] = (pending.last_deadline(), slot[1], slot[2])
                    else:  # expired already: never brought back to life
                        self._expire(key)
            if len(self._intents) > self._sweep_at:
                self._sweep_intents(now)
        finally:
            self._release()
        return tokens

    def end_write(self, ends: Sequence[End]) -> list[Outcome]:
        """End writes: store, keep or drop each key's entry (`gateway.caches.base`)."""
        sizes = self._sizes([(e.key, e.entry) for e in ends])
        now = self._timer()
        outcomes: list[Outcome] = []
        self._acquire()
        try:
            for i, end in enumerate(ends):
                outcomes.append(self._end(end, sizes[i], now))
        finally:
            self._release()
        return outcomes

    def _end(self, end: End, size: int, now: float) -> Outcome:
        """One end (lock held); mirrors `gateway.caches.base.Model.end`."""
        key = end.key
        pending = self._pending_of(key, now)
        if pending is None or end.intent not in pending.intents:
            self._drop(key, now, pending)
            return LATE
        _, ordered = pending.intents.pop(end.intent)
        entry = end.entry
        outcome: Outcome = DROPPED
        if entry is not None and end.ttl_s > 0:
            if ordered:
                unordered = any(not o for _, o in pending.intents.values())
                if pending.uver == end.token and not unordered:
                    slot = self._lru[key]
                    # The entry in place, as the model compares; only when it is gone
                    # (evicted, expired) the highest generation filled since the write began,
                    # which a fill of an older copy afterwards must not hide behind.
                    if slot is not None and now < slot[0]:
                        current = slot[1].generation
                    else:
                        current = pending.max_gen
                    if current >= entry.generation:
                        # The write has landed: a fill read before it must not match now.
                        self._change(key, now)
                        outcome = KEPT
                    else:
                        self._change(key, now)
                        pending.max_gen = entry.generation
                        outcome = STORED
            else:
                change = self._changes.get(key)
                if not pending.intents and change is not None and change[0] == end.token:
                    pending.uver = self._change(key, now)
                    outcome = STORED
        if outcome == DROPPED:
            self._drop(key, now, pending)
        elif outcome == STORED:
            ttl = pending.last_deadline() - now if pending.intents else end.ttl_s
            self._store(key, entry, ttl, size, now)  # type: ignore[arg-type]
        else:  # KEPT: the entry in place lives on as if stored now (or until the intents end)
            slot = self._lru[key]
            if slot is not None:
                until = pending.last_deadline() if pending.intents else now + end.ttl_s
                self._lru[key] = (until, slot[1], slot[2])
        if not pending.intents:
            del self._intents[key]
        return outcome

    def invalidate_many(self, keys: Sequence[str]) -> None:
        """Drop the keys' entries; the change refuses fills that started before it."""
        now = self._timer()
        self._acquire()
        try:
            for key in keys:
                self._drop(key, now, self._pending_of(key, now))
        finally:
            self._release()

    def delete_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with ``prefix``; returns how many live ones.

        Scans every key under the lock: O(items), meant for rare administrative calls.
        """
        now = self._timer()
        lru = self._lru
        removed = 0
        self._acquire()
        try:
            for key in [key for key in lru if key.startswith(prefix)]:
                slot = lru[key]
                if slot is not None and now < slot[0]:
                    removed += 1
                else:
                    lru.expirations += 1
                self._drop(key, now, self._pending_of(key, now))
        finally:
            self._release()
        return removed

    # -- helpers (lock held) ---------------------------------------------------------------

    def _change(self, key: str, now: float) -> int:
        """Record a change of ``key``; its version. Forgets changes older than a floor."""
        self._seq += 1
        changes = self._changes
        changes[key] = (self._seq, now)
        changes.move_to_end(key)
        horizon = now - self.floor_ttl_s
        while changes:
            oldest = next(iter(changes.values()))
            if oldest[1] >= horizon:
                break
            changes.popitem(last=False)
        return self._seq

    def _drop(self, key: str, now: float, pending: _Pending | None) -> None:
        """Drop ``key``'s entry and record the change (a floor) that generations cannot
        order: ordered writers in flight will drop too."""
        if key in self._lru:
            del self._lru[key]
        ver = self._change(key, now)
        if pending is not None:
            pending.uver = ver

    def _pending_of(self, key: str, now: float) -> _Pending | None:
        """``key``'s writes in flight, after dropping intents past their deadline (their
        writers died: the entry they covered is dropped too); None without any."""
        pending = self._intents.get(key)
        if pending is None:
            return None
        dead = [i for i, (deadline, _) in pending.intents.items() if deadline <= now]
        if dead:
            for intent in dead:
                del pending.intents[intent]
            self._drop(key, now, pending)
        if not pending.intents:
            del self._intents[key]
            return None
        return pending

    def _sweep_intents(self, now: float) -> None:
        for key in list(self._intents):
            self._pending_of(key, now)
        self._sweep_at = max(INTENT_SWEEP_MIN_KEYS, 2 * len(self._intents))

    def _sizes(self, items: Sequence[tuple[str, Entry | None]]) -> list[int]:
        """Sizes of entries to store, computed before the lock is taken (1 when unbounded)."""
        if self._max_bytes is None:
            return [1] * len(items)
        return [1 if entry is None else approximate_size(key, entry) for key, entry in items]

    def _store(self, key: str, entry: Entry, ttl_s: float, size: int, now: float) -> None:
        """Put one entry in the LRU; lock held. An entry that cannot be stored (``ttl_s <=
        0``, or larger than ``max_bytes``) still removes what the key held."""
        lru = self._lru
        if not ttl_s > 0:
            if key in lru:
                del lru[key]
            return
        if self._max_bytes is None:
            lru[key] = (now + ttl_s, entry, 1)
            return
        if key not in lru:
            while len(lru) >= self._max_items:
                lru.popitem()
        try:
            lru[key] = (now + ttl_s, entry, size)
        except ValueError:  # larger than max_bytes on its own
            if key in lru:
                del lru[key]

    # -- a plain local store (the tiered backend's front tier; it guards fills itself) -------

    def put_many(self, items: Sequence[tuple[str, Entry, float]]) -> None:
        """Store ``(key, entry, ttl_s)`` copies unconditionally (no rules, no changes)."""
        sizes = self._sizes([(key, entry) for key, entry, _ in items])
        now = self._timer()
        self._acquire()
        try:
            for i, (key, entry, ttl_s) in enumerate(items):
                self._store(key, entry, ttl_s, sizes[i], now)
        finally:
            self._release()

    def cap_many(self, keys: Sequence[str], ttl_s: float) -> None:
        """Make local copies of keys live at most ``ttl_s`` longer (no rules, no changes)."""
        until = self._timer() + ttl_s
        lru = self._lru
        self._acquire()
        try:
            for key in keys:
                slot = lru[key]
                if slot is not None and until < slot[0]:
                    lru[key] = (until, slot[1], slot[2])
        finally:
            self._release()

    def discard_many(self, keys: Sequence[str]) -> None:
        """Forget local copies of keys (no rules, no changes)."""
        lru = self._lru
        self._acquire()
        try:
            for key in keys:
                if key in lru:
                    del lru[key]
        finally:
            self._release()

    def clear(self) -> None:
        """Forget every entry, intent and change; the counters are kept."""
        self._acquire()
        try:
            self._lru.clear()
            self._intents.clear()
            self._changes.clear()
            self._seq += 1
            self._void_below = self._seq  # every token taken before now is void
        finally:
            self._release()

    # -- housekeeping ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``evictions`` (LRU and size), ``expirations``, ``errors`` (always 0), ``items``
        (entries held, expired ones not yet dropped included), ``writes_in_flight``."""
        self._acquire()
        try:
            return {
                "evictions": self._lru.evictions,
                "expirations": self._lru.expirations,
                "errors": 0,
                "items": len(self._lru),
                "writes_in_flight": len(self._intents),
            }
        finally:
            self._release()

    def close(self) -> None:
        """Nothing to release: the cache lives and dies with the process."""
