"""In-process caches bounded per collection: one MemoryCache per collection that declares its
own ``max_items``, and a shared one for the rest.

Keys are ``"<table>:<id>"`` (table names cannot contain ``':'``), so the partition of a key is
found from the text before its first ``':'``. A hot collection with its own bound can no
longer evict every other collection's entries, and a small one keeps its working set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.caches.base import Entry, Miss, Put
from gateway.caches.memory import MemoryCache


class PartitionedMemoryCache:
    """Routes each key to its collection's MemoryCache, or to the shared default one."""

    name = "memory"
    shares_documents = True

    def __init__(self, default: MemoryCache, partitions: Mapping[str, MemoryCache]) -> None:
        """``partitions`` maps a table name (prefix included) to that table's own cache."""
        self._default = default
        self._partitions = dict(partitions)
        self._all = [default, *self._partitions.values()]

    def _for(self, key: str) -> MemoryCache:
        table, _, _ = key.partition(":")
        return self._partitions.get(table, self._default)

    def get(self, key: str) -> Entry | Miss:
        """The live entry for ``key``, or MISS."""
        return self._for(key).get(key)

    def get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """One result per key, in order."""
        return [self._for(key).get(key) for key in keys]

    def fill_many(self, puts: Sequence[Put]) -> None:
        """Fill each key in its partition (compare-and-set as in MemoryCache)."""
        for cache, group in self._group(puts).items():
            cache.fill_many(group)

    def write_many(self, puts: Sequence[Put]) -> None:
        """Write each key in its partition (compare-and-set as in MemoryCache)."""
        for cache, group in self._group(puts).items():
            cache.write_many(group)

    def quarantine_many(self, keys: Sequence[str], ttl_s: float) -> None:
        """Quarantine each key in its partition."""
        for key in keys:
            self._for(key).quarantine_many([key], ttl_s)

    def delete_many(self, keys: Sequence[str]) -> None:
        """Forget keys."""
        for key in keys:
            self._for(key).delete_many([key])

    def delete_prefix(self, prefix: str) -> int:
        """Forget every key starting with ``prefix``, in every partition."""
        return sum(cache.delete_prefix(prefix) for cache in self._all)

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

    def _group(self, puts: Sequence[Put]) -> dict[MemoryCache, list[Put]]:
        groups: dict[MemoryCache, list[Put]] = {}
        for put in puts:
            groups.setdefault(self._for(put.key), []).append(put)
        return groups
