"""Who follows which shard, and where each shard was left: leases and checkpoints.

`LocalCoordinator` keeps both in the process (the ``memory`` backend: every instance follows
every shard for its own cache). `RedisCoordinator` shares them through Redis (``redis`` and
``tiered``): one follower per shard at a time, holding a lease that expires unless renewed,
so a follower that dies or is cut off from Redis is replaced within ``lease_s``.

A checkpoint is the sequence number of the last record applied, or one of two marks:
`SHARD_END` (a closed shard read to its end: its children may start) and `LATEST` (the shard
was positioned at its newest record with nothing applied yet: whoever takes it over must do
the same, and drop the collection's cache, since what came before is unknown).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

SHARD_END = "SHARD_END"
LATEST = "LATEST"

# Leases are hashes ({owner}) with a TTL, not strings: the cache's scripts leave keys that are
# not strings alone, so an operator's wipe of the namespace (`delete_prefix("")`) cannot turn
# a lease into a cache floor.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RENEW = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_CHECKPOINT = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
"""
#: After the key prefix: cache keys start with a table name, which cannot hold NUL, so no
#: cache key (nor a collection's prefix, e.g. of a collection named "streams") matches these.
KEY_MARK = "\x00streams|"


class Coordinator(Protocol):
    """Leases and checkpoints of stream shards (raises on an unreachable store)."""

    def acquire(self, stream: str, shard: str) -> bool:
        """Take the shard's lease if nobody holds it."""
        ...

    def renew(self, stream: str, shard: str) -> bool:
        """Extend the lease; False if it was lost (expired and maybe taken)."""
        ...

    def release(self, stream: str, shard: str) -> None: ...

    def checkpoints(self, stream: str) -> dict[str, str]:
        """Every shard's checkpoint of ``stream``."""
        ...

    def save_checkpoint(self, stream: str, shard: str, value: str) -> bool:
        """Store a checkpoint while holding the lease; False if the lease was lost."""
        ...

    def add_collection(self, db_name: str) -> None:
        """Remember a collection the gateway caches (followed by every instance)."""
        ...

    def collections(self) -> set[str]: ...

    def close(self) -> None: ...


class LocalCoordinator:
    """Leases always granted, checkpoints in memory (one process follows for itself)."""

    def __init__(self) -> None:
        self._checkpoints: dict[str, dict[str, str]] = {}
        self._collections: set[str] = set()
        self._lock = threading.Lock()

    def acquire(self, stream: str, shard: str) -> bool:
        return True

    def renew(self, stream: str, shard: str) -> bool:
        return True

    def release(self, stream: str, shard: str) -> None:
        return None

    def checkpoints(self, stream: str) -> dict[str, str]:
        with self._lock:
            return dict(self._checkpoints.get(stream, {}))

    def save_checkpoint(self, stream: str, shard: str, value: str) -> bool:
        with self._lock:
            self._checkpoints.setdefault(stream, {})[shard] = value
        return True

    def add_collection(self, db_name: str) -> None:
        with self._lock:
            self._collections.add(db_name)

    def collections(self) -> set[str]:
        with self._lock:
            return set(self._collections)

    def close(self) -> None:
        return None


class RedisCoordinator:
    """Leases (a hash per shard with a TTL, taken if absent, renewed and released only by their
    owner) and checkpoints (a hash per stream, written only by the lease's owner) in Redis,
    under ``key_prefix`` + `KEY_MARK`."""

    def __init__(self, client: Any, *, owner: str, lease_s: float, key_prefix: str) -> None:
        self._client = client
        self._owner = owner
        self._lease_ms = max(1, int(lease_s * 1000))
        self._prefix = key_prefix + KEY_MARK
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._checkpoint = client.register_script(_CHECKPOINT)

    def _lease_key(self, stream: str, shard: str) -> str:
        return f"{self._prefix}lease|{stream}|{shard}"

    def _checkpoints_key(self, stream: str) -> str:
        return f"{self._prefix}checkpoints|{stream}"

    def acquire(self, stream: str, shard: str) -> bool:
        key = self._lease_key(stream, shard)
        return bool(self._acquire(keys=[key], args=[self._owner, self._lease_ms]))

    def renew(self, stream: str, shard: str) -> bool:
        key = self._lease_key(stream, shard)
        return bool(self._renew(keys=[key], args=[self._owner, self._lease_ms]))

    def release(self, stream: str, shard: str) -> None:
        self._release(keys=[self._lease_key(stream, shard)], args=[self._owner])

    def checkpoints(self, stream: str) -> dict[str, str]:
        raw = self._client.hgetall(self._checkpoints_key(stream))
        return {_text(k): _text(v) for k, v in raw.items()}

    def save_checkpoint(self, stream: str, shard: str, value: str) -> bool:
        keys = [self._lease_key(stream, shard), self._checkpoints_key(stream)]
        return bool(self._checkpoint(keys=keys, args=[self._owner, shard, value]))

    def add_collection(self, db_name: str) -> None:
        self._client.sadd(self._prefix + "collections", db_name)

    def collections(self) -> set[str]:
        return {_text(name) for name in self._client.smembers(self._prefix + "collections")}

    def close(self) -> None:
        self._client.close()


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
