"""The cache backend contract, and the rules that keep a cache from ever going stale.

The rules, in one place
=======================

Each key has a *record*: maybe an entry (a document, or "no such document"), the *write
intents* in flight on it, and two versions: ``ver`` changes whenever anything happens to the
record (a write begins or ends, an invalidation), ``uver`` only when something happens that
generations cannot order (see *ordered* below). Four operations change records; every backend
applies them atomically per key (the in-process backends under a lock, Redis in Lua scripts
that mirror `Model`, checked against it by the conformance suite):

``begin_write(key, intent, ttl, ordered)``
    Before a write is sent to DynamoDB. Adds the intent (with a deadline ``ttl`` from now)
    and returns the writer's *token*. The entry stays and is still served: a read concurrent
    with a write may return the previous acknowledged copy (the write has not returned, so
    this is linearizable). But while intents are in flight the record lives no longer than
    the latest deadline: a writer that dies between DynamoDB and the cache cannot leave the
    old copy trusted for longer than ``ttl``. Intents whose deadline passed belong to writers
    that died or hung: the entry they covered is dropped.

``end_write(key, intent, token, entry, ttl)``
    After DynamoDB answered. *Ordered* writes are single conditional saves: DynamoDB applies
    them in generation order (a save's condition refuses to go below the stored revision, see
    ``revisions.py``), so among them the highest generation is the last applied. An ordered
    writer stores its entry over a lower generation and keeps a higher one (`KEPT`), as long
    as nothing unordered happened since it began (``uver`` is still its token) and no
    unordered write is in flight. Any other write (a delete, a batch) stores its entry only if
    it was alone: its intent is the only one and ``ver`` is still its token. Tombstones carry
    generation 0: a save that began after a delete ended is newer, whatever its generation
    (generations restart from the clock once a document is gone). Otherwise nobody
    can tell in which order DynamoDB applied the writes, so the entry is *dropped*: the record
    becomes a floor and the next read loads DynamoDB's answer. An ``entry`` of None (the write
    failed, or its outcome is unknown) drops too. An end whose intent had expired is `LATE`
    and drops as well.

``fill(key, entry, ttl, token)``
    The result of a read, with the token the reader took *before* it read DynamoDB
    (`CacheBackend.read_token`): the record's ``ver``. Stored only if ``ver`` is still the
    token, so a reader that read a document before a write ended can never put it back,
    whatever the timing, evictions included. A fill while writes are in flight is allowed
    (their ends replace or drop it) but lives no longer than their deadlines.

``invalidate(key)``
    Drops the entry, changes both versions, keeps the intents.

*Floors, not holes*: a record whose entry was dropped stays as a *floor* (its versions and
intents) for at least ``floor_ttl_s``, longer than any fill may take (the gateway refuses
fills older than its ``fill_deadline_s``) and at least until its last intent's deadline: an
empty slot knows nothing and would accept anything. A record that expires with its entry's
TTL leaves no floor: the gateway therefore refuses TTLs that are not longer than its fill
deadline, and intents that are not either, so nothing changed since a fill still in flight.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

#: `end_write` outcomes.
STORED: Final = "stored"
KEPT: Final = "kept"  # an ordered write found a higher generation in place
DROPPED: Final = "dropped"
LATE: Final = "late"
Outcome = Literal["stored", "kept", "dropped", "late"]

#: How long a floor outlives the change that made it, by default (see the module docstring).
DEFAULT_FLOOR_TTL_S: Final = 10.0
#: The token of a key that has no record at all.
NO_RECORD: Final = 0


_INTENT_ID = re.compile(r"[0-9A-Za-z]{1,64}")


def check_intent(intent: str) -> str:
    """An intent id: 1 to 64 ASCII letters and digits (records spell them out); else
    ValueError."""
    if not isinstance(intent, str) or not _INTENT_ID.fullmatch(intent):
        raise ValueError(f"an intent id is 1 to 64 ASCII letters and digits, not {intent!r}")
    return intent


class Kind(enum.IntEnum):
    """What an entry says about its key."""

    DOCUMENT = 1
    ABSENT = 2
    #: No answer: only a record's version (a backend that returns records, like Redis, hands
    #: these out; readers treat them as misses and take the version as their token).
    FLOOR = 3


class _Miss(enum.Enum):
    MISS = "MISS"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISS"


#: Returned for a key the cache holds no answer for (None is a valid "not found" value).
MISS: Literal[_Miss.MISS] = _Miss.MISS
Miss = Literal[_Miss.MISS]


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer for a key.

    ``document`` is the decoded document (with ``_id`` and ``_rev``) for ``Kind.DOCUMENT``,
    None otherwise. Backends must never hand out an object a caller could mutate and thereby
    change what the cache holds: the gateway copies documents on the way out.
    """

    kind: Kind
    generation: int
    rev: str | None = None
    document: Any = None
    #: Wall time (seconds since the epoch) when the entry was stored; lets an instance that saw
    #: the cache fail distrust entries stored before it recovered.
    stored_at: float = 0.0
    #: The record's version when this entry was read (backends that return records set it).
    ver: int = NO_RECORD


@dataclass(frozen=True, slots=True)
class Fill:
    """The result of a read, to store under ``key`` for ``ttl_s`` if ``token`` still holds."""

    key: str
    entry: Entry
    ttl_s: float
    token: int


@dataclass(frozen=True, slots=True)
class End:
    """The end of the write that began with ``intent`` / ``token``: ``entry`` is what it wrote
    (None: it failed or its outcome is unknown), kept for ``ttl_s`` if the writer was alone."""

    key: str
    intent: str
    token: int
    entry: Entry | None
    ttl_s: float


class CacheBackend(Protocol):
    """What the caching gateway needs from a cache tier. Keys are opaque strings."""

    name: str
    #: True when entries hand out stored objects (the gateway then copies documents on the way
    #: out); False when every answer is freshly decoded (Redis), so no copy is needed.
    shares_documents: bool
    #: How long floors last (the gateway keeps its fill deadline below it).
    floor_ttl_s: float

    def get(self, key: str) -> Entry | Miss:
        """The live entry for ``key``, or MISS (the hot path: no list is built)."""
        ...

    def get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """One result per key, in order: the live entry, or MISS."""
        ...

    def read_token(self, key: str, seen: Entry | Miss) -> int:
        """The fill token of a reader that got ``seen`` for ``key`` and has not yet read
        DynamoDB (no I/O: taken from ``seen`` or from local state)."""
        ...

    def fill_many(self, fills: Sequence[Fill]) -> None:
        """Store results of reads whose token still holds (see the module docstring)."""
        ...

    def begin_write(
        self, keys: Sequence[str], intent: str, ttl_s: float, ordered: bool = False
    ) -> list[int]:
        """Register a write intent on each key; one token per key, in order. ``ordered``: a
        single conditional save (see the module docstring)."""
        ...

    def end_write(self, ends: Sequence[End]) -> list[Outcome]:
        """End writes: store, keep or drop each key's entry (see the module docstring)."""
        ...

    def invalidate_many(self, keys: Sequence[str]) -> None:
        """Drop the keys' entries, leaving floors."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with ``prefix``; returns how many were dropped."""
        ...

    def stats(self) -> dict[str, Any]:
        """Backend counters, at least ``evictions`` and ``errors``."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


# --------------------------------------------------------------------------------------------
# The reference model of one record. The in-process backend implements these rules with a
# process-wide version counter; the Redis scripts mirror them line by line; the conformance
# suite replays the same operations on this model and on every backend and compares.


@dataclass
class Record:
    """One key's record on the reference model's clock (``now`` in seconds)."""

    entry: Entry | None = None
    ver: int = NO_RECORD
    uver: int = NO_RECORD
    #: intent -> (deadline, ordered)
    intents: dict[str, tuple[float, bool]] = field(default_factory=dict)
    #: When the whole record disappears (the entry's TTL, floors, intent deadlines).
    expires_at: float = 0.0

    def alive(self, now: float) -> bool:
        """Whether the record still exists at ``now``."""
        return now < self.expires_at

    def last_deadline(self) -> float:
        """The latest deadline of the intents in flight (0 without any)."""
        return max((deadline for deadline, _ in self.intents.values()), default=0.0)


class Model:
    """The rules applied to a dict of records (see the module docstring)."""

    def __init__(self, floor_ttl_s: float = DEFAULT_FLOOR_TTL_S) -> None:
        self.floor_ttl_s = floor_ttl_s
        self.records: dict[str, Record] = {}
        self._clock_ver = 0

    def _record(self, key: str, now: float) -> Record | None:
        record = self.records.get(key)
        if record is not None and not record.alive(now):
            del self.records[key]
            return None
        return record

    def _bump(self, record: Record, unordered: bool) -> None:
        """A change: a new ``ver`` (and ``uver`` for what generations cannot order)."""
        self._clock_ver += 1
        record.ver = max(record.ver + 1, self._clock_ver)
        if unordered:
            record.uver = record.ver

    def _expire_intents(self, record: Record, now: float) -> None:
        """Intents past their deadline: their writers died or hung; drop what they covered."""
        dead = [intent for intent, (deadline, _) in record.intents.items() if deadline <= now]
        if dead:
            for intent in dead:
                del record.intents[intent]
            record.entry = None
            self._bump(record, unordered=True)

    def _floor(self, record: Record, now: float) -> None:
        record.entry = None
        self._bump(record, unordered=True)
        record.expires_at = max(now + self.floor_ttl_s, record.last_deadline())

    def _keep_until(self, record: Record, now: float, ttl_s: float) -> None:
        """An entry's expiry: its TTL, but while writes are in flight their last deadline."""
        record.expires_at = record.last_deadline() if record.intents else now + ttl_s

    def get(self, key: str, now: float) -> Entry | Miss:
        """What a reader sees: the entry, or MISS."""
        record = self._record(key, now)
        if record is None or record.entry is None:
            return MISS
        return record.entry

    def token(self, key: str, now: float) -> int:
        """A reader's token: the record's ``ver``, or `NO_RECORD`."""
        record = self._record(key, now)
        return NO_RECORD if record is None else record.ver

    def fill(self, key: str, entry: Entry, ttl_s: float, token: int, now: float) -> bool:
        """Store a read's result if its token still holds."""
        record = self._record(key, now)
        if not ttl_s > 0:
            return False
        if record is None:
            if token != NO_RECORD:
                return False
            self.records[key] = Record(entry, NO_RECORD, NO_RECORD, {}, now + ttl_s)
            return True
        self._expire_intents(record, now)
        if record.ver != token:
            return False
        record.entry = entry
        self._keep_until(record, now, ttl_s)
        return True

    def begin(self, key: str, intent: str, ttl_s: float, now: float, ordered: bool = False) -> int:
        """Register an intent; the writer's token (``uver`` if ordered, else ``ver``)."""
        check_intent(intent)
        record = self._record(key, now)
        if record is None:
            record = self.records[key] = Record()
        self._expire_intents(record, now)
        record.intents[intent] = (now + ttl_s, ordered)
        self._bump(record, unordered=not ordered)
        record.expires_at = record.last_deadline()
        return record.uver if ordered else record.ver

    def end(
        self, key: str, intent: str, token: int, entry: Entry | None, ttl_s: float, now: float
    ) -> Outcome:
        """End a write: store, keep or drop (see the module docstring)."""
        record = self._record(key, now)
        if record is None:
            record = self.records[key] = Record()
        self._expire_intents(record, now)
        if intent not in record.intents:
            self._floor(record, now)
            return LATE
        _, ordered = record.intents.pop(intent)
        if entry is None or not ttl_s > 0:
            self._floor(record, now)
            return DROPPED
        if ordered:
            unordered_in_flight = any(not o for _, o in record.intents.values())
            if record.uver == token and not unordered_in_flight:
                current = record.entry
                if current is not None and current.generation >= entry.generation:
                    # The write has landed: a fill that read before it must not match now.
                    self._bump(record, unordered=False)
                    self._keep_until(record, now, ttl_s)
                    return KEPT
                record.entry = entry
                self._bump(record, unordered=False)
                self._keep_until(record, now, ttl_s)
                return STORED
        elif not record.intents and record.ver == token:
            record.entry = entry
            self._bump(record, unordered=True)  # ordered writers in flight cannot order it
            self._keep_until(record, now, ttl_s)
            return STORED
        self._floor(record, now)
        return DROPPED

    def invalidate(self, key: str, now: float) -> None:
        """Drop the entry, keep a floor."""
        record = self._record(key, now)
        if record is None:
            record = self.records[key] = Record()
        self._expire_intents(record, now)
        self._floor(record, now)
