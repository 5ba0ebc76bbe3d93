"""In-process caches bounded per collection: one MemoryCache per collection that declares its
own ``max_items``, and a shared one for the rest.

Keys are ``"<table>:<id>"`` (table names cannot contain ``':'``), so the partition of a key is
found from the text before its first ``':'``. A hot collection with its own bound can no
longer evict every other collection's entries, and a small one keeps its working set.

Every key lives in exactly one partition, so the rules of `gateway.caches.base` hold per
partition; a reader's token is the token of the key's partition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from gateway.caches.base import End, Entry, Fill, Miss, Outcome
from gateway.caches.memory import MemoryCache

T = TypeVar("T")


class PartitionedMemoryCache:
    """Routes each key to its collection's MemoryCache, or to the shared default one."""

    name = "memory"
    shares_documents = True
    #: Reads cost no round trip: the gateway double-checks the cache before a load.
    in_process = True

    def __init__(self, default: MemoryCache, partitions: Mapping[str, MemoryCache]) -> None:
        """``partitions`` maps a table name (prefix included) to that table's own cache."""
        self._default = default
        self._partitions = dict(partitions)
        self._all = [default, *self._partitions.values()]
        self.floor_ttl_s = min(cache.floor_ttl_s for cache in self._all)

    def _for(self, key: str) -> MemoryCache:
        table, _, _ = key.partition(":")
        return self._partitions.get(table, self._default)

    def get(self, key: str) -> Entry | Miss:
        """The live entry for ``key``, or MISS."""
        return self._for(key).get(key)

    def get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """One result per key, in order."""
        return [self._for(key).get(key) for key in keys]

    def read_token(self, key: str, seen: Entry | Miss) -> int:
        """The token of the key's partition."""
        return self._for(key).read_token(key, seen)

    def fill_many(self, fills: Sequence[Fill]) -> None:
        """Fill each key in its partition."""
        for cache, group in self._group(fills, lambda f: f.key).items():
            cache.fill_many(group)

    def begin_write(
        self, keys: Sequence[str], intent: str, ttl_s: float, ordered: bool = False
    ) -> list[int]:
        """Register the intent on each key in its partition; tokens in order."""
        return [self._for(key).begin_write([key], intent, ttl_s, ordered)[0] for key in keys]

    def end_write(self, ends: Sequence[End]) -> list[Outcome]:
        """End each write in its key's partition; outcomes in order."""
        return [self._for(end.key).end_write([end])[0] for end in ends]

    def invalidate_many(self, keys: Sequence[str]) -> None:
        """Invalidate each key in its partition."""
        for cache, group in self._group(keys, lambda k: k).items():
            cache.invalidate_many(group)

    def delete_prefix(self, prefix: str) -> int:
        """Drop every key starting with ``prefix``, in every partition."""
        return sum(cache.delete_prefix(prefix) for cache in self._all)

    def put_many(self, items: Sequence[tuple[str, Entry, float]]) -> None:
        """Store local copies, each in its partition (the tiered backend's front tier)."""
        for cache, group in self._group(items, lambda item: item[0]).items():
            cache.put_many(group)

    def cap_many(self, keys: Sequence[str], ttl_s: float) -> None:
        """Shorten local copies, each in its partition."""
        for cache, group in self._group(keys, lambda k: k).items():
            cache.cap_many(group, ttl_s)

    def discard_many(self, keys: Sequence[str]) -> None:
        """Forget local copies, each in its partition."""
        for cache, group in self._group(keys, lambda k: k).items():
            cache.discard_many(group)

    def clear(self) -> None:
        """Forget everything."""
        for cache in self._all:
            cache.clear()

    def stats(self) -> dict[str, Any]:
        """Counters summed over the partitions, and each partition's own."""
        parts = {"*": self._default.stats()}
        parts.update({table: cache.stats() for table, cache in self._partitions.items()})
        total: dict[str, Any] = {}
        for counters in parts.values():
            for name, value in counters.items():
                if isinstance(value, (int, float)):
                    total[name] = total.get(name, 0) + value
        total["partitions"] = parts
        return total

    def close(self) -> None:
        """Nothing to release."""
        for cache in self._all:
            cache.close()

    def _group(self, items: Sequence[T], key_of: Callable[[T], str]) -> dict[MemoryCache, list[T]]:
        groups: dict[MemoryCache, list[T]] = {}
        for item in items:
            groups.setdefault(self._for(key_of(item)), []).append(item)
        return groups
