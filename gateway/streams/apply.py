"""Applying stream changes to the caches: never an older document over a newer one.

A stream record arrives late (seconds), possibly twice (a follower that died before its
checkpoint, a takeover), and possibly after the gateway itself wrote a newer version of the
document. So a change never simply overwrites what is cached. It is compared with the cached
copy by *revision*, never by generation: generations order the gateway's own conditional
saves, but not writes whose generation can step back (``save_many`` from two processes, a
document re-created on a machine whose clock is behind), nor writes from programs that keep,
copy or restore a ``_rev``. Per document, with the last change of the batch (the earlier ones
only matter for the query epochs):

* the cached copy *is* the change's new image (same ``_rev``): it stays (the gateway's own
  writes come back this way, and cost nothing);
* the cached copy is the change's *old* image (same ``_rev``) and the new image carries another
  revision: the cached copy is *replaced* by the new image (a remove: by a tombstone), as a
  write through the cache rules (`gateway.caches.base`), which lose to anything that happens
  to the key meanwhile;
* a cached tombstone under a remove stays;
* anything else is *dropped* (the record becomes a floor; the next read loads DynamoDB's
  item): a key with no cached copy (an empty slot would accept an old copy), a change that
  leaves the revision as it was or has none (a program that knows nothing of revisions: its
  order against the cached copy cannot be told), a cached copy that is neither image (the
  change is older or newer than it: either way DynamoDB knows best), a stream without the
  image needed.

Only a proof of identity stores or keeps; doubt drops. One identity is not proof: a program
that restores an item with a ``_rev`` it had before (an undo) makes that revision stand for
two states, and a change of the first applied after the restore was would be stored (its old
image matches). The follower therefore never applies records read while its lease may have run
out (`gateway.streams.follower`), and Lambda applies a shard's records in order.

Every change also drops the query epochs its images touch (`gateway.query_cache`): the
scan's, and the values the document joined and left (every index answer when the old image
is unknown), as the gateway's own writes do.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from gateway.caches.base import MISS, End, Entry, Kind, Miss
from gateway.caches.errors import CacheError
from gateway.errors import GatewayError
from gateway.query_cache import batch_keys, left_keys, queries_epoch_key, save_keys
from gateway.revisions import parse_generation
from gateway.streams.records import Change
from gateway.tokens import random_hex


class Decision(enum.Enum):
    KEEP = "keep"
    STORE = "store"
    DROP = "drop"


def decide(change: Change, cached: Entry | Miss) -> Decision:
    """What `change` does to the cached entry of its document (see the module docstring)."""
    if cached is MISS or cached.kind is Kind.FLOOR:
        return Decision.DROP
    old_rev = _rev_of(change.old_item)
    if change.removed:
        if cached.kind is Kind.ABSENT:
            return Decision.KEEP
        return Decision.STORE if old_rev is not None and cached.rev == old_rev else Decision.DROP
    new_rev = _rev_of(change.new_item)
    if new_rev is None or new_rev == old_rev or cached.kind is not Kind.DOCUMENT:
        return Decision.DROP
    if cached.rev == new_rev:
        return Decision.KEEP
    return Decision.STORE if old_rev is not None and cached.rev == old_rev else Decision.DROP


def _rev_of(item: Mapping[str, Any] | None) -> str | None:
    """The item's ``_rev`` if it is one of ours (a generation and 32 hex digits)."""
    rev = None if item is None else item.get("_rev")
    return rev if parse_generation(rev) is not None else None


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
        Applying a change twice, or an old one after newer ones, is harmless, unless a program
        restored an older ``_rev`` in between (see the module docstring)."""
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
        return not stores or self._store(policy, stores, keys)

    def caches(self, db_name: str) -> bool:
        """Whether collection ``db_name`` is cached here (its policy enables the cache)."""
        try:
            return self._parts.stream_target(db_name) is not None
        except GatewayError:
            return False

    def distrust(self, db_name: str) -> bool:
        """Drop every cached entry and answer of the collection; False when the cache did not
        answer."""
        try:
            self._parts.invalidate_collection(db_name)
        except CacheError:
            return False
        return True

    def _store(self, policy: Any, changes: Mapping[str, Change], keys: Mapping[str, str]) -> bool:
        """Store the changes' entries as one unordered write (generations prove nothing
        here): register an intent, check that the cached copy is still the old image under
        it, end it with the new entry, stored only if nothing else happened to the key since
        (else, or with None, the key drops)."""
        parts = self._parts
        guard = parts.stream_guard()
        key_list = [keys[doc_id] for doc_id in changes]
        intent = random_hex(16)
        tokens = guard.begin_write(key_list, intent, self._intent_ttl_s, False)
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
            if cached is not None and decide(change, cached[i]) is Decision.STORE:
                entry = parts.stream_entry(change)
                ttl = parts.stream_ttl(entry, policy)
            ends.append(End(key, intent, token, entry, ttl))
        # Unanswered: the intents expire in the cache, which then drops the entries.
        return guard.end_write(ends, until) is not None
