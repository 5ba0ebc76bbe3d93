"""The in-process cache backend: a cachetools LRU whose values carry their own expiry.

Each key maps to a *slot*, ``(expires_at, entry, size)``, in a plain ``cachetools.LRUCache``
rather than in a ``TLRUCache``. The hit path is then one LRU lookup, one comparison with the
monotonic clock and a tuple index. ``TLRUCache`` reads its clock through a Python-level timer
wrapper on every hit and keeps a heap of expiries on every insert: a bare ``TLRUCache`` hit
measured 2.5 times a bare ``LRUCache`` hit, as much as this class's ``get`` with its lock (see
``scripts/bench_memory_cache.py``). The price is that an expired entry keeps its slot until it
is looked up (then it is dropped and counted) or reaches the cold end of the LRU.

Quarantine markers live in a small dict of their own, outside the LRU, so that cache pressure
can never evict one while its write is in flight: an evicted marker would let a reader put the
pre-write copy back and keep it if the write's result never arrives. A key is never in both.

All state is guarded by one ``threading.Lock``, taken with ``acquire``/``release`` in a
``try``/``finally``: on CPython 3.11 that costs about half of what ``with lock:`` does, and
it is paid on every hit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from cachetools import LRUCache

from gateway.caches.base import MISS, Entry, Kind, Miss, Put, fill_allowed, write_decision

DEFAULT_MAX_ITEMS: Final = 100_000
#: Bytes charged per entry on top of its key, rev and document text: the Entry, the slot tuple
#: and their places in the LRU's dict and order.
ENTRY_OVERHEAD_BYTES: Final = 240
#: The quarantine table is swept of expired markers (left by writers that never finished) once
#: it holds more than this many, or twice as many as after the previous sweep.
QUARANTINE_SWEEP_MIN_ITEMS: Final = 1024

#: ``(expires_at on the monotonic clock, entry, approximate size in bytes)``.
_Slot = tuple[float, Entry, int]


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

    __slots__ = (
        "_acquire",
        "_lock",
        "_lru",
        "_max_bytes",
        "_max_items",
        "_quarantines",
        "_release",
        "_sweep_at",
        "_timer",
        "_wall_clock",
    )

    def __init__(
        self,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_bytes: int | None = None,
        timer: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 or None, not {max_bytes!r}")
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._timer = timer
        self._wall_clock = wall_clock
        if max_bytes is None:
            self._lru = _SlotLRU(max_items, None, timer)
        else:
            # cachetools bounds one size: bytes here, the item count by hand in _store.
            self._lru = _SlotLRU(max_bytes, _slot_size, timer)
        self._quarantines: dict[str, tuple[float, Entry]] = {}
        self._sweep_at = QUARANTINE_SWEEP_MIN_ITEMS
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> Entry | Miss:
        """The live entry under ``key`` (possibly a quarantine marker), or MISS."""
        now = self._timer()
        self._acquire()
        try:
            slot = self._lru[key]
            if slot is not None and now < slot[0]:
                return slot[1]
            return self._slow_lookup(key, slot, now)
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
                    out.append(self._slow_lookup(key, slot, now))
        finally:
            self._release()
        return out

    def _slow_lookup(self, key: str, slot: _Slot | None, now: float) -> Entry | Miss:
        """Everything but a live LRU hit: an expired slot, or a quarantine marker. Lock held."""
        if slot is not None:  # expired; a key in the LRU is never also quarantined
            del self._lru[key]
            self._lru.expirations += 1
            return MISS
        return self._live_quarantine(key, now) if self._quarantines else MISS

    def _live_quarantine(self, key: str, now: float) -> Entry | Miss:
        """The unexpired quarantine marker of ``key``, or MISS. Lock held."""
        marker = self._quarantines.get(key)
        if marker is None:
            return MISS
        if now < marker[0]:
            return marker[1]
        del self._quarantines[key]
        self._lru.expirations += 1
        return MISS

    def _current(self, key: str, now: float) -> Entry | Miss:
        """What a compare-and-set compares against: the live entry or marker, or MISS."""
        slot = self._lru[key]
        if slot is not None and now < slot[0]:
            return slot[1]
        return self._slow_lookup(key, slot, now)

    # -- writes ----------------------------------------------------------------------------

    def fill_many(self, puts: Sequence[Put]) -> None:
        """Store results of reads, never over an equal-or-newer entry or a quarantine."""
        now = self._timer()
        self._acquire()
        try:
            for put in puts:
                if fill_allowed(self._current(put.key, now), put.entry):
                    self._store(put, now)
        finally:
            self._release()

    def write_many(self, puts: Sequence[Put]) -> None:
        """Store results of acknowledged writes (see ``gateway.caches.base`` for the rules)."""
        now = self._timer()
        self._acquire()
        try:
            for put in puts:
                decision = write_decision(self._current(put.key, now), put.entry)
                if decision == "store":
                    self._store(put, now)
                elif decision == "drop":
                    self._discard(put.key)
        finally:
            self._release()

    def _store(self, put: Put, now: float) -> None:
        """Put one entry in the LRU, replacing any marker; the lock is held.

        An entry that cannot be stored (``ttl_s <= 0``, or larger than ``max_bytes``) still
        removes what the key held: it was judged older than this one, so it must not stay.
        """
        key = put.key
        lru = self._lru
        if self._quarantines:
            self._quarantines.pop(key, None)
        if not put.ttl_s > 0:
            if key in lru:
                del lru[key]
            return
        if self._max_bytes is None:
            lru[key] = (now + put.ttl_s, put.entry, 1)
            return
        if key not in lru:
            while len(lru) >= self._max_items:
                lru.popitem()
        try:
            lru[key] = (now + put.ttl_s, put.entry, approximate_size(key, put.entry))
        except ValueError:  # larger than max_bytes on its own
            if key in lru:
                del lru[key]

    def _discard(self, key: str) -> None:
        """Forget ``key`` in both tables; the lock is held."""
        if key in self._lru:
            del self._lru[key]
        if self._quarantines:
            self._quarantines.pop(key, None)

    def quarantine_many(self, keys: Sequence[str], ttl_s: float) -> None:
        """Mark keys as being written: reads go to DynamoDB and fills are refused.

        The marker replaces the key's entry. With ``ttl_s <= 0`` no marker is stored, but the
        entry is still dropped. A marker already there with a later expiry keeps it.
        """
        now = self._timer()
        expires_at = now + ttl_s
        stamp = self._wall_clock()
        lru = self._lru
        quarantines = self._quarantines
        self._acquire()
        try:
            for key in keys:
                # The marker remembers the highest generation it displaced: a delayed write
                # of an older generation must not replace it (see base.write_decision).
                floor = 0
                slot = lru.get(key)
                if slot is not None:
                    if now < slot[0]:
                        floor = slot[1].generation
                    del lru[key]
                old = quarantines.get(key)
                if old is not None and now < old[0]:
                    floor = max(floor, old[1].generation)
                if not ttl_s > 0:
                    continue
                marker = Entry(Kind.QUARANTINE, floor, stored_at=stamp)
                until = expires_at if old is None or old[0] < expires_at else old[0]
                quarantines[key] = (until, marker)
            if len(quarantines) > self._sweep_at:
                self._sweep_quarantines(now)
        finally:
            self._release()

    def _sweep_quarantines(self, now: float) -> None:
        """Drop expired markers, so writers that died cannot grow the table; lock held."""
        quarantines = self._quarantines
        expired = [key for key, (expires_at, _) in quarantines.items() if not now < expires_at]
        for key in expired:
            del quarantines[key]
        self._lru.expirations += len(expired)
        self._sweep_at = max(QUARANTINE_SWEEP_MIN_ITEMS, 2 * len(quarantines))

    def delete_many(self, keys: Sequence[str]) -> None:
        """Forget keys (entries and quarantine markers alike)."""
        self._acquire()
        try:
            for key in keys:
                self._discard(key)
        finally:
            self._release()

    def delete_prefix(self, prefix: str) -> int:
        """Forget every key that starts with ``prefix``; returns how many live ones were removed.

        Scans every key under the lock: O(items), meant for rare administrative calls.
        """
        now = self._timer()
        lru = self._lru
        quarantines = self._quarantines
        removed = 0
        self._acquire()
        try:
            for key in [key for key in lru if key.startswith(prefix)]:
                slot = lru[key]
                del lru[key]
                if slot is not None and now < slot[0]:
                    removed += 1
                else:
                    lru.expirations += 1
            for key in [key for key in quarantines if key.startswith(prefix)]:
                expires_at, _ = quarantines.pop(key)
                if now < expires_at:
                    removed += 1
                else:
                    lru.expirations += 1
        finally:
            self._release()
        return removed

    def clear(self) -> None:
        """Forget everything; the counters are kept."""
        self._acquire()
        try:
            self._lru.clear()
            self._quarantines.clear()
        finally:
            self._release()

    # -- housekeeping ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``evictions`` (LRU and size), ``expirations``, ``errors`` (always 0), ``items``.

        ``items`` counts entries and markers held, including expired ones not yet dropped.
        """
        self._acquire()
        try:
            return {
                "evictions": self._lru.evictions,
                "expirations": self._lru.expirations,
                "errors": 0,
                "items": len(self._lru) + len(self._quarantines),
            }
        finally:
            self._release()

    def close(self) -> None:
        """Nothing to release: the cache lives and dies with the process."""
