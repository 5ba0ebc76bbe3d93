"""Applying stream changes to the caches: never an older document over a newer one.

A stream record arrives late (seconds), possibly twice (a follower that died before its
checkpoint, a takeover), and possibly after the gateway itself wrote a newer version of the
document. So a change never simply overwrites what is cached. Per document, with the last
change of the batch (the earlier ones only matter for the query epochs):

* an insert or modify whose new image carries a revision of generation ``g``: a cached copy
  of generation ``g`` or more (with the same revision at ``g``) is as new or newer, and stays;
  a cached copy of a lower, non-zero generation is *replaced* by the new image, as an
  ordered write (`gateway.caches.base`: it loses to any higher generation stored meanwhile,
  and to anything unordered);
* a remove whose old image had generation ``g``: a cached tombstone stays, a cached copy of a
  higher generation stays, a cached copy of generation ``g`` or less becomes a tombstone (an
  unordered write: it stores only if nothing else happened meanwhile);
* anything else is *dropped* (the record becomes a floor; the next read loads DynamoDB's
  item): an item without a revision of ours (written by a program that knows nothing of
  them: its order against what is cached cannot be told), a cached copy without one, a
  tombstone under an insert (the delete may be newer), a key nothing is cached under (an
  empty slot would accept an old copy), a stream without the image needed.

The document rule never invents order: it only stores where generations prove the change is
newer than the cached copy, and drops otherwise. Every change also drops the query epochs its
images touch (`gateway.query_cache`): the scan's, and the values the document joined and left
(every index answer when the old image is unknown), as the gateway's own writes do.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from gateway.caches.base import MISS, End, Entry, Kind, Miss
from gateway.caches.errors import CacheError
from gateway.query_cache import batch_keys, left_keys, queries_epoch_key, save_keys
from gateway.streams.records import Change


class Decision(enum.Enum):
    KEEP = "keep"
    STORE = "store"
    DROP = "drop"


def decide(change: Change, cached: Entry | Miss) -> Decision:
    """What `change` does to the cached entry of its document (see the module docstring)."""
    if cached is MISS or cached.kind is Kind.FLOOR:
        return Decision.DROP
    if change.removed:
        if cached.kind is Kind.ABSENT:
            return Decision.KEEP
        old = change.old_generation
        if old is None or cached.generation <= 0:
            return Decision.DROP
        return Decision.KEEP if cached.generation > old else Decision.STORE
    new = change.new_generation
    if new is None or cached.kind is not Kind.DOCUMENT or cached.generation <= 0:
        return Decision.DROP
    if cached.generation > new:
        return Decision.KEEP
    if cached.generation == new:
        assert change.new_item is not None  # a generation was read from it
        return Decision.KEEP if cached.rev == change.new_item.get("_rev") else Decision.DROP
    return Decision.STORE


class CacheParts(Protocol):
    """What the applier uses of a caching gateway (`gateway.gateway.CachingGateway`)."""

    def stream_guard(self) -> Any: ...
    def stream_target(self, db_name: str) -> tuple[Any, str] | None: ...
    def stream_index_attributes(self, db_name: str) -> Mapping[str, str]: ...
    def stream_entry(self, change: Change) -> Entry: ...
    def stream_ttl(self, entry: Entry, policy: Any) -> float: ...
    def stream_forget_loads(self, keys: Sequence[str]) -> None: ...
    def stream_key(self, table: str, doc_id: str) -> str: ...
    def invalidate_collection(self, db_name: str) -> int: ...


def epochs_of(table: str, indexes: Mapping[str, str], changes: Sequence[Change]) -> list[str]:
    """The query epochs ``changes`` drop (see the module docstring), without repeats."""
    if not indexes:
        return batch_keys(table)
    keys: dict[str, None] = {}
    for change in changes:
        if change.new_item is not None:
            keys.update(dict.fromkeys(save_keys(table, indexes, change.new_item)))
        elif not change.removed:
            keys.update(dict.fromkeys(batch_keys(table)))  # no new image: its values unknown
        if change.old_item is not None:
            keys.update(dict.fromkeys(left_keys(table, indexes, change.old_item, ())))
        elif not change.old_image_known:
            keys[queries_epoch_key(table)] = None
        keys.update(dict.fromkeys(batch_keys(table)[:1]))  # the scan epoch, always
    return list(keys)


class ChangeApplier:
    """Applies batches of `Change` to one gateway's cache (see the module docstring)."""

    def __init__(self, parts: CacheParts, intent_ttl_s: float, clock: Callable[[], float]) -> None:
        self._parts = parts
        self._intent_ttl_s = intent_ttl_s
        self._clock = clock

    def apply(self, db_name: str, changes: Sequence[Change]) -> bool:
        """Apply ``changes`` (in stream order) of collection ``db_name``; False when the cache
        could not be reached (nothing is lost: apply them again later, in the same order).
        Applying a change twice, or an old one after newer ones, is harmless."""
        parts = self._parts
        target = parts.stream_target(db_name)
        if target is None or not changes:
            return True  # the collection is not cached
        policy, table = target
        last: dict[str, Change] = {}
        for change in changes:
            last.pop(change.doc_id, None)  # keep stream order among the last changes
            last[change.doc_id] = change
        keys = {doc_id: parts.stream_key(table, doc_id) for doc_id in last}
        guard = parts.stream_guard()
        cached = guard.read_many(list(keys.values()))
        if cached is None:
            return False
        drops: list[str] = []
        stores: dict[str, Change] = {}
        for (doc_id, change), entry in zip(last.items(), cached, strict=True):
            decision = decide(change, entry)
            if decision is Decision.DROP:
                drops.append(keys[doc_id])
            elif decision is Decision.STORE:
                stores[doc_id] = change
        epochs = epochs_of(table, parts.stream_index_attributes(db_name), changes)
        changed = [*drops, *(keys[doc_id] for doc_id in stores)]
        parts.stream_forget_loads(changed)
        if not guard.invalidate_until([*drops, *epochs], self._clock()):
            return False
        for removed in (False, True):
            batch = {d: c for d, c in stores.items() if c.removed is removed}
            if batch and not self._store(policy, batch, keys, ordered=not removed):
                return False
        return True

    def distrust(self, db_name: str) -> bool:
        """Drop every cached entry and answer of the collection; False when the cache did not
        answer."""
        try:
            self._parts.invalidate_collection(db_name)
        except CacheError:
            return False
        return True

    def _store(
        self,
        policy: Any,
        changes: Mapping[str, Change],
        keys: Mapping[str, str],
        *,
        ordered: bool,
    ) -> bool:
        """Store the changes' entries as one write: register an intent, check that the
        decision still holds under it, end it with the entry (or None: a drop)."""
        parts = self._parts
        guard = parts.stream_guard()
        key_list = [keys[doc_id] for doc_id in changes]
        intent = os.urandom(8).hex()
        tokens = guard.begin_write(key_list, intent, self._intent_ttl_s, ordered)
        if tokens is None:
            return False
        until = self._clock() + self._intent_ttl_s
        cached = guard.read_many(key_list)
        ends = []
        for i, (change, token, key) in enumerate(
            zip(changes.values(), tokens, key_list, strict=True)
        ):
            entry: Entry | None = None
            ttl = 0.0
            decision = Decision.DROP if cached is None else decide(change, cached[i])
            # An ordered end keeps a newer copy that landed meanwhile; an unordered one cannot
            # tell, so it ends as a drop (rare, and safe).
            if decision is Decision.STORE or (ordered and decision is Decision.KEEP):
                entry = parts.stream_entry(change)
                ttl = parts.stream_ttl(entry, policy)
            ends.append(End(key, intent, token, entry, ttl))
        # Unanswered: the intents expire in the cache, which then drops the entries.
        return guard.end_write(ends, until) is not None
