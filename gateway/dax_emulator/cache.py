"""DAX's two caches: a bounded LRU whose entries expire a fixed time after they were stored."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class TtlLru:
    """At most ``max_entries`` entries, each valid for ``ttl_s`` seconds after its ``put``.

    ``ttl_s`` of 0 disables the cache (every ``get`` misses, nothing is stored).
    """

    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """(True, value) for a live entry, else (False, None)."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                expires, value = entry
                if expires > now:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return True, value
                del self._entries[key]
            self.misses += 1
            return False, None

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        expires = self._clock() + self.ttl_s
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
