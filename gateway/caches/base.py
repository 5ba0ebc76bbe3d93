"""The cache backend contract: entries with generations, and compare-and-set rules.

Every entry carries the *generation* of the revision it holds (see ``revisions.py``). The two
ways of putting an entry differ in whom they trust:

* ``write_many`` — the result of a write this gateway saw DynamoDB acknowledge. It replaces an
  entry of a lower generation and a quarantine marker; when the generations are equal but the
  revisions differ (two unconditional batch writers raced), the entry is dropped, because
  nobody can tell which one DynamoDB kept.
* ``fill_many`` — the result of a read. It never replaces an entry of a higher generation,
  nor a quarantine marker; over an entry of the same generation and revision (the same
  content) it only refreshes ``stored_at`` and the TTL. This is what makes the classic race
  impossible: a reader that read the old version before a writer's update cannot put it back
  over the new one.

A *quarantine* marker (``Kind.QUARANTINE``) is set before a write is sent to DynamoDB and is
replaced by the write's result once acknowledged (its generation is the highest one it
displaced, and only a write of at least that generation replaces it): if the writer dies or
the cache update fails in between, the marker makes every instance read that key from DynamoDB
until it expires, instead of serving the copy from before the write.

A *negative* entry (``Kind.ABSENT``) says "no such document": from a read (generation 0, so any
real document wins over it) or from an acknowledged delete (a tombstone, with the generation
above the deleted revision's).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol


class Kind(enum.IntEnum):
    """What an entry says about its key."""

    DOCUMENT = 1
    ABSENT = 2
    QUARANTINE = 3


class _Miss(enum.Enum):
    MISS = "MISS"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISS"


#: Returned for a key the cache knows nothing about (None is a valid "not found" entry value).
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


@dataclass(frozen=True, slots=True)
class Put:
    """An entry to store under ``key`` for ``ttl_s`` seconds."""

    key: str
    entry: Entry
    ttl_s: float


class CacheBackend(Protocol):
    """What the caching gateway needs from a cache tier. Keys are opaque strings."""

    name: str
    #: True when entries hand out stored objects (the gateway then copies documents on the way
    #: out); False when every answer is freshly decoded (Redis), so no copy is needed.
    shares_documents: bool

    def get(self, key: str) -> Entry | Miss:
        """The live entry for ``key``, or MISS (the hot path: no list is built)."""
        ...

    def get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """One result per key, in order: the live entry, or MISS."""
        ...

    def fill_many(self, puts: Sequence[Put]) -> None:
        """Store results of reads, never over a newer entry or a quarantine (see above)."""
        ...

    def write_many(self, puts: Sequence[Put]) -> None:
        """Store results of acknowledged writes (see the module docstring for the rules)."""
        ...

    def quarantine_many(self, keys: Sequence[str], ttl_s: float) -> None:
        """Mark keys as being written: reads go to DynamoDB and fills are refused."""
        ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Forget keys."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Forget every key that starts with ``prefix``; returns how many were removed."""
        ...

    def stats(self) -> dict[str, Any]:
        """Backend counters, at least ``evictions`` and ``errors``."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


def fill_allowed(current: Entry | Miss, new: Entry) -> bool:
    """The fill rule, shared by the in-process backends (the Redis script mirrors it)."""
    if current is MISS:
        return True
    if current.kind is Kind.QUARANTINE:
        return False
    if new.generation == current.generation:
        return new.rev == current.rev and new.kind is current.kind
    return new.generation > current.generation


def write_decision(current: Entry | Miss, new: Entry) -> Literal["store", "keep", "drop"]:
    """The write rule, shared by the in-process backends (the Redis script mirrors it)."""
    if current is MISS:
        return "store"
    if current.kind is Kind.QUARANTINE:
        # A marker carries the highest generation it displaced: a write delayed past a newer
        # write and the next writer's marker must not bring the older document back.
        return "store" if new.generation >= current.generation else "keep"
    if new.generation > current.generation:
        return "store"
    if new.generation == current.generation and new.rev != current.rev:
        return "drop"
    return "keep"
