"""`TieredCache`: an in-process `MemoryCache` in front of a shared `RedisCache`.

Redis holds the truth of the cache tier; each instance keeps copies of Redis entries in its own
memory and serves them without a round trip. A write on any instance evicts every other
instance's copies through Redis pub/sub *before the write returns*, so that nothing stale is
served from memory after a write was acknowledged, on any instance.

How an instance knows its memory may be served: leases
-------------------------------------------------------
A listener thread owns a pub/sub connection subscribed to ``<key_prefix>invalidate`` (everyone's
invalidations) and ``<key_prefix>ack:<instance id>`` (acks of its own). Every ``lease_s / 4``
it *registers* (see the registry below), then sends ``PING`` on the pub/sub connection. Redis
answers a PING on a subscribed connection in the same stream as the messages, in order, so when
the PONG arrives every invalidation published before Redis ran that PING has been read and
applied. The PONG then sets ``healthy_until = registration_sent_at + lease_s`` (monotonic
clock), and memory is served only while ``clock() < healthy_until``.

Any pub/sub error, or no PONG for ``3 * lease_s``, drops the connection: the memory tier is
cleared, ``healthy_until`` is set to 0 and the listener reconnects with a small backoff. A
PONG is the only thing that renews the lease, and only on the connection whose stream it
vouches for; a new connection starts from an empty memory tier.

Writes (``begin_write``, ``end_write``, ``invalidate_many``, ``delete_prefix``)
-----------------------------------------------------------------------------
1. Redis first (the rules of `gateway.caches.base` run there, in Lua).
2. Drop the keys from the local memory tier (the next local read fills them from Redis);
   ``begin_write`` keeps the local copy: a read concurrent with a write may return the
   previous copy, and the write's end (or the failure of it) drops it.
3. One script publishes the invalidation (instance id, sequence number, wall time, keys or a
   prefix) and, atomically with it, reads the registry of instances that may hold a lease.
4. Wait until every listed instance acked that sequence number (each acks after deleting the
   keys from its memory), or until ``lease_s`` has passed since the publish returned.

Why the wait is enough: an instance B that did not ack may only serve memory after the wait
ends if it holds a lease from a PING that Redis ran *before* the publish (a later PING's PONG
comes after the invalidation in B's stream, so B would have applied it first). That lease
ends at ``registration_sent_at + lease_s``, which is before ``publish + lease_s``.

The registry (improvement over counting subscribers)
----------------------------------------------------
``PUBLISH`` returns how many connections got the message, but "wait for n - 1 acks" has a
hole: if Redis drops B's subscription (``CLIENT KILL``, the ``client-output-buffer-limit`` of
a slow subscriber, a failover) B is no longer counted, yet B keeps serving memory until its
listener notices the broken connection or its lease runs out. So each listener registers in a
sorted set ``<key_prefix>\\x00tiered-registry`` (member: instance id, score: expiry on Redis's
own clock, ``lease_s * 1.25`` after the registration ran) before each PING, and writers wait for
the acks of every member listed when they publish, whatever ``n`` says. A healthy instance is
always listed: its lease ends ``lease_s`` after a registration that is still unexpired.

The registry is a key, so it can vanish (``FLUSHALL``, eviction). The
set carries its creation time (the score of member ``""``, negated); while it is younger than a
member's lifetime it may be missing instances registered before it was recreated, so writers
then also wait until it is old enough. The cost: the writes of the first ``1.25 * lease_s`` of
a new cluster (or after a wipe) each wait out the rest of that window.

Reads and the fill race
-----------------------
``get`` serves a memory hit while healthy; otherwise (and on a memory miss) it reads the entry
and its remaining TTL from Redis in one script call. A document or a negative entry is then
copied into memory, for ``min(local_ttl_s, its Redis TTL)``, only if the tier is healthy and
no invalidation was applied since just before the Redis read: invalidations bump a counter
(one of 256 stripes, by key hash; clears and prefixes bump a global epoch), the fill compares
the counters it read before the Redis read, and both run under one lock. So either the fill
is skipped or the invalidation is applied after it.

Holes found in the original design, and how they are closed
-----------------------------------------------------------
* Storing a write's entry in local memory: Redis may have *kept* a newer entry (another
  instance's write), or dropped the key, and that instance's invalidation may already have
  been applied here. A write's end therefore drops the local copy; the next local read fills
  it from Redis.
* ``fill_many`` goes to Redis (which may refuse the fill); only what Redis stored is copied
  into memory, with the TTL Redis gave it, and only if no invalidation came in between.
* Entries in memory never outlive their Redis TTL (else a negative entry or a short-TTL entry
  would be served from memory after Redis forgot it).
* Fills taken while the listener was reconnecting: (re)connecting bumps the epoch, so a Redis
  read begun before the subscription was in place never fills memory.
* A Redis failure (down, paused, timeout): with ``cache.unreachable_writes: accept`` the
  gateway then acknowledges writes without the cache, possibly without calling this backend
  at all once its circuit breaker is open, while other instances may still hold leases taken
  just before the failure. So every call that fails with `CacheUnavailable` raises it only
  ``lease_s`` after the failure was seen: by then every instance whose last contact with Redis
  came before the failure has seen its lease run out. The price: in the first moments of an
  outage, calls that reach the cache take ``timeout_s + lease_s`` to fail (then the gateway's
  breaker opens and skips it). An asymmetric partition (this instance cut off, others still
  reaching Redis) is the gateway's to handle (`gateway.resilience`, README "The guarantee").
  A write whose Redis command failed also drops its local copies and tries to publish its
  invalidation anyway, since the command may have been applied with only its reply lost.

Assumptions: the clocks of all instances and of Redis run at the same rate (to 1 %, over a
lease); all writers of a key prefix are `TieredCache` instances of this protocol (a bare
`RedisCache` writing the same prefix does not publish invalidations); Redis is a single primary
(after a failover every subscription breaks, so every memory tier is cleared).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from redis import Redis
from redis.client import PubSub
from redis.exceptions import NoScriptError, RedisError

from gateway.caches.base import MISS, NO_RECORD, End, Entry, Fill, Kind, Miss, Outcome
from gateway.caches.codec import decode_entry
from gateway.caches.errors import CacheCodecError, CacheUnavailable
from gateway.caches.memory import MemoryCache
from gateway.caches.redis_cache import RedisCache
from gateway.counters import Counter
from gateway.errors import ConfigError

DEFAULT_LEASE_S: Final = 0.5
DEFAULT_LOCAL_TTL_S: Final = 60.0
#: The listener registers and PINGs this many times per lease.
RENEWALS_PER_LEASE: Final = 4
#: No PONG for this many leases: the pub/sub connection is dropped and made again.
STALL_LEASES: Final = 3.0
#: A registration lives this many leases on Redis's clock (more than 1: margin for clocks).
MEMBER_LIFETIME_LEASES: Final = 1.25
#: Every wait derived from a lease is lengthened by this fraction (clock rates differ).
CLOCK_RATE_TOLERANCE: Final = 0.01
#: A registry nobody renewed for this long expires (abandoned prefixes do not pile up).
REGISTRY_IDLE_EXPIRY_MS: Final = 3_600_000
#: Invalidation counters: 256 stripes by key hash, so a write rarely skips an unrelated fill.
STRIPES: Final = 256
_STRIPE_MASK: Final = STRIPES - 1
#: How many invalidation lags ``stats()`` keeps for its percentiles.
LAG_WINDOW: Final = 4096
#: The listener wakes at least this often (to notice ``close()``).
LISTENER_POLL_S: Final = 0.05
RECONNECT_MIN_S: Final = 0.05
RECONNECT_MAX_S: Final = 1.0
#: Suffix of the registry's key, after the key prefix. Gateway keys start with a table name,
#: which cannot contain NUL, so it never collides with a cache entry.
REGISTRY_SUFFIX: Final = "\x00tiered-registry"
MESSAGE_VERSION: Final = 1

#: KEYS: the keys. Answers value, PTTL, value, PTTL... (nil and -2 for a missing key).
READ_SCRIPT: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  out[2 * i - 1] = value
  if value then out[2 * i] = redis.call('PTTL', key) else out[2 * i] = -2 end
end
return out
"""

_LUA_NOW_MS: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS[1]: the registry; ARGV: instance id, member lifetime (ms), idle expiry (ms). Member ""
#: holds minus the creation time; members' scores are their expiries (ms, Redis clock).
REGISTER_SCRIPT: Final = (
    _LUA_NOW_MS
    + """
if not redis.call('ZSCORE', KEYS[1], '') then
  redis.call('ZADD', KEYS[1], -now, '')
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

#: KEYS[1]: the registry; ARGV: channel, message, member lifetime (ms). Answers
#: {receivers, ms until the registry is old enough to be complete, {live member ids}}.
PUBLISH_SCRIPT: Final = (
    """
local receivers = redis.call('PUBLISH', ARGV[1], ARGV[2])
"""
    + _LUA_NOW_MS
    + """
local lifetime = tonumber(ARGV[3])
local created = redis.call('ZSCORE', KEYS[1], '')
local unsure = lifetime
if created then unsure = math.max(0, -tonumber(created) + lifetime - now) end
return {receivers, unsure, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')}
"""
)

_log = logging.getLogger(__name__)


class _Script:
    """A Lua script called by SHA, loaded again when the server answers ``NOSCRIPT``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


class _ListenerStalled(Exception):
    """No PONG for too long on the pub/sub connection."""


def _stripe(key: str) -> int:
    return hash(key) & _STRIPE_MASK


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of a sorted, non-empty sequence."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class TieredCache:
    """A `MemoryCache` in front of a `RedisCache`, kept coherent by pub/sub (see the module)."""

    name = "tiered"
    #: Memory hits hand out the stored objects: the gateway copies documents on the way out.
    shares_documents = True

    def __init__(
        self,
        memory: MemoryCache,
        redis: RedisCache,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        local_ttl_s: float = DEFAULT_LOCAL_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Start the listener thread (it connects in the background; see `wait_healthy`).

        ``lease_s`` bounds how long an instance that lost its pub/sub stream may still serve
        from memory, hence also how long a write waits for an instance that does not ack and
        how long a failing call is held before raising. ``local_ttl_s`` caps how long an entry
        stays in memory (never past its TTL in Redis).
        """
        if not (lease_s > 0 and math.isfinite(lease_s)):
            raise ConfigError(f"TieredCache lease_s must be a positive number, not {lease_s!r}")
        if not local_ttl_s > 0:
            raise ConfigError(f"TieredCache local_ttl_s must be positive, not {local_ttl_s!r}")
        self._memory = memory
        self._redis = redis
        self.floor_ttl_s = redis.floor_ttl_s
        self._client = redis.client
        self._lease_s = float(lease_s)
        self._local_ttl_s = float(local_ttl_s)
        self._clock = clock
        self._wall_clock = wall_clock
        self._id = uuid.uuid4().hex
        prefix = redis.key_prefix
        self._prefix = prefix
        self._channel = prefix + "invalidate"
        self._channel_b = self._channel.encode()
        self._ack_prefix = prefix + "ack:"
        self._ack_channel_b = (self._ack_prefix + self._id).encode()
        self._registry = prefix + REGISTRY_SUFFIX
        self._member_lifetime_ms = math.ceil(self._lease_s * MEMBER_LIFETIME_LEASES * 1000)
        self._slack = 1.0 + CLOCK_RATE_TOLERANCE
        self._read_script = _Script(READ_SCRIPT)
        self._register_script = _Script(REGISTER_SCRIPT)
        self._publish_script = _Script(PUBLISH_SCRIPT)

        # Guards the memory tier's contents against the fill race: invalidation counters, the
        # epoch and healthy_until change under it, and fills check them under it.
        self._lock = threading.Lock()
        self._epoch = 0
        self._stripes = [0] * STRIPES
        self._healthy_until = 0.0

        self._sequence = itertools.count(1)
        self._acks_cond = threading.Condition(threading.Lock())
        self._acks: dict[int, set[str]] = {}

        self._memory_hits = Counter()
        self._redis_reads = Counter()
        self._stats_lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "errors",
                "decode_errors",
                "local_fills",
                "local_fills_skipped",
                "invalidations_sent",
                "invalidations_received",
                "acks_sent",
                "acks_waited",
                "acks_received",
                "ack_timeouts",
                "registry_waits",
                "failure_waits",
                "connects",
                "disconnects",
                "listener_errors",
                "bad_messages",
            ),
            0,
        )
        self._lags_ms: collections.deque[float] = collections.deque(maxlen=LAG_WINDOW)
        self._reconnect_failures = 0
        self._stop = threading.Event()
        self._closed = False
        self._listener = threading.Thread(
            target=self._listen, name=f"tiered-cache-{self._id[:8]}", daemon=True
        )
        self._listener.start()

    # -- accessors --------------------------------------------------------------------------

    @property
    def instance_id(self) -> str:
        """This instance's id in invalidations, acks and the registry."""
        return self._id

    @property
    def memory(self) -> MemoryCache:
        """The in-process tier."""
        return self._memory

    @property
    def redis(self) -> RedisCache:
        """The shared tier."""
        return self._redis

    @property
    def healthy(self) -> bool:
        """Whether memory hits may be served now (the pub/sub lease is live)."""
        return self._clock() < self._healthy_until

    def wait_healthy(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the listener to hold a lease; True if it does."""
        deadline = self._clock() + timeout_s
        while not self.healthy:
            if self._clock() >= deadline or self._stop.wait(0.005):
                return self.healthy
        return True

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | Miss:
        """A memory hit while healthy, else the Redis entry (copied into memory if allowed)."""
        if self._clock() < self._healthy_until:
            entry = self._memory.get(key)
            if entry is not MISS:
                self._memory_hits.inc()
                return entry
        return self._read_redis([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """One result per key, in order: memory hits while healthy, one Redis call for the rest."""
        if not keys:
            return []
        if not self._clock() < self._healthy_until:
            return self._read_redis(keys)
        results = self._memory.get_many(keys)
        missing = [i for i, entry in enumerate(results) if entry is MISS]
        for _ in range(len(keys) - len(missing)):
            self._memory_hits.inc()
        if missing:
            fetched = self._read_redis([keys[i] for i in missing])
            for i, entry in zip(missing, fetched, strict=True):
                results[i] = entry
        return results

    def _read_redis(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """Entries from Redis (one script call), copied into memory under the fill rule."""
        # Read the invalidation counters *before* Redis: a fill is only allowed if none of them
        # moved until the memory put (checked under the lock in `_fill_local`).
        epoch = self._epoch
        stripes = self._stripes
        marks = [stripes[_stripe(key)] for key in keys]
        started = self._clock()
        prefix = self._prefix
        try:
            flat = self._read_script(self._client, [prefix + key for key in keys], ())
        except RedisError as exc:
            raise self._unavailable(exc, "EVALSHA (read)") from exc
        self._redis_reads.inc()
        results: list[Entry | Miss] = []
        fills: list[tuple[int, str, Entry, int]] = []
        for i, key in enumerate(keys):
            data = flat[2 * i]
            if data is None:
                results.append(MISS)
                continue
            try:
                entry = decode_entry(data)
            except CacheCodecError:
                self._count(errors=1, decode_errors=1)
                results.append(MISS)
                continue
            results.append(entry)
            if entry.kind is not Kind.FLOOR:  # floors are records, not answers: never copied
                fills.append((i, key, entry, int(flat[2 * i + 1])))
        if fills:
            self._fill_local(epoch, marks, fills, started)
        return results

    def _fill_local(
        self,
        epoch: int,
        marks: list[int],
        fills: list[tuple[int, str, Entry, int]],
        read_started: float,
    ) -> None:
        """Copy entries read from Redis into memory, unless an invalidation came in between."""
        puts: list[tuple[str, Entry, float]] = []
        skipped = 0
        self._lock.acquire()
        try:
            now = self._clock()
            if not now < self._healthy_until or self._epoch != epoch:
                skipped = len(fills)
            else:
                stripes = self._stripes
                for i, key, entry, pttl_ms in fills:
                    if stripes[_stripe(key)] != marks[i]:
                        skipped += 1
                        continue
                    ttl_s = self._local_ttl_s
                    if pttl_ms >= 0:  # -1: no expiry in Redis
                        # Redis measured the PTTL after `read_started`: this ends no later.
                        ttl_s = min(ttl_s, read_started + pttl_ms / 1000.0 - now)
                    if ttl_s > 0:
                        puts.append((key, entry, ttl_s))
                if puts:
                    self._memory.put_many(puts)
        finally:
            self._lock.release()
        self._count(local_fills=len(puts), local_fills_skipped=skipped)

    # -- writes -----------------------------------------------------------------------------

    def read_token(self, key: str, seen: Entry | Miss) -> int:
        """The version of the Redis record the reader saw (memory copies keep it)."""
        return NO_RECORD if seen is MISS else seen.ver

    def fill_many(self, fills: Sequence[Fill]) -> None:
        """Store results of reads in Redis (its scripts decide); no publish, since a fill
        never changes the truth. What Redis stored is copied into memory too (unless an
        invalidation came in between, as for reads), so the next read is a memory hit; local
        copies of the keys Redis refused are dropped."""
        if not fills:
            return
        epoch = self._epoch
        stripes = self._stripes
        marks = [stripes[_stripe(fill.key)] for fill in fills]
        started = self._clock()
        try:
            stored = self._redis.fill_results(fills)
        except CacheUnavailable:
            self._hold_failure(self._clock())
            raise
        refused = [fill.key for fill, pttl in zip(fills, stored, strict=True) if pttl is None]
        if refused:
            self._drop_local(refused)
        # Any older local copy of what Redis now holds goes, even if the copy below is skipped
        # (an invalidation came in between). Removing a copy never makes anything stale, so
        # this needs no stripe bump (which would void the copies below).
        self._memory.discard_many(
            [fill.key for fill, pttl in zip(fills, stored, strict=True) if pttl is not None]
        )
        # Redis's own TTL for the copy: a fill made while writes are in flight lives no longer
        # than their intents there, and so here.
        copies = [
            (i, fill.key, replace(fill.entry, ver=fill.token), pttl)
            for i, (fill, pttl) in enumerate(zip(fills, stored, strict=True))
            if pttl is not None
        ]
        if copies:
            self._fill_local(epoch, marks, copies, started)

    def begin_write(
        self, keys: Sequence[str], intent: str, ttl_s: float, ordered: bool = False
    ) -> list[int]:
        """Register the intent in Redis, then evict the other instances' copies before
        returning (they read Redis again, where the entry now lives no longer than the
        intent). This instance keeps serving its copy while the write is in flight: its
        `end_write` (or the failure of it) drops the copy."""
        if not keys:
            return []
        tokens: list[int] = []
        # Taken before Redis: the intent's deadline there is no earlier than this one.
        deadline = self._clock() + ttl_s

        def begin() -> None:
            tokens.extend(self._redis.begin_write(keys, intent, ttl_s, ordered))
            self._cap_local(keys, deadline)

        self._write(keys, begin, drop_local=False)
        return tokens

    def end_write(self, ends: Sequence[End]) -> list[Outcome]:
        """End writes in Redis, then evict every instance's copies (this one's included:
        Redis decided what the key holds) before returning."""
        if not ends:
            return []
        outcomes: list[Outcome] = []

        def end() -> None:
            outcomes.extend(self._redis.end_write(ends))

        self._write([e.key for e in ends], end)
        return outcomes

    def invalidate_many(self, keys: Sequence[str]) -> None:
        """Drop the keys in Redis (floors), then evict every instance's copies."""
        if not keys:
            return
        self._write(keys, lambda: self._redis.invalidate_many(keys))

    def delete_prefix(self, prefix: str) -> int:
        """Forget every key under ``prefix`` in Redis and in every instance's memory; returns
        how many entries Redis dropped (the registry, a sorted set, is never touched)."""
        try:
            removed = self._redis.delete_prefix(prefix)
        except CacheUnavailable:
            failed_at = self._clock()
            self._drop_local_prefix(prefix)
            self._try_broadcast(failed_at, prefix=prefix)
            raise
        self._drop_local_prefix(prefix)
        self._broadcast(prefix=prefix)
        return removed

    def _write(
        self, keys: Sequence[str], command: Callable[[], None], *, drop_local: bool = True
    ) -> None:
        """Redis first, then the local copies, then the invalidation and the wait for acks."""
        try:
            command()
        except CacheUnavailable:
            # The command may have run with only its reply lost: evict as if it had.
            failed_at = self._clock()
            self._drop_local(keys)
            self._try_broadcast(failed_at, keys=list(keys))
            raise
        if drop_local:
            self._drop_local(keys)
        self._broadcast(keys=list(keys))

    def _try_broadcast(
        self, failed_at: float, keys: list[str] | None = None, prefix: str | None = None
    ) -> None:
        """After a failed Redis command: publish anyway if Redis answers; if it does not, hold
        the caller until no instance can still be serving from an older lease."""
        # On failure `_broadcast` has already held the caller for the lease.
        with contextlib.suppress(CacheUnavailable):
            self._broadcast(keys=keys, prefix=prefix, failed_at=failed_at)

    def _cap_local(self, keys: Sequence[str], deadline: float) -> None:
        """The kept copies live no longer than a write intent (a writer that never ends must
        not leave them trusted, as in Redis); fills read from Redis before are voided."""
        stripes = self._stripes
        self._lock.acquire()
        try:
            self._memory.cap_many(keys, deadline - self._clock())
            for key in keys:
                stripes[_stripe(key)] += 1
        finally:
            self._lock.release()

    def _drop_local(self, keys: Sequence[str]) -> None:
        stripes = self._stripes
        self._lock.acquire()
        try:
            self._memory.discard_many(keys)
            for key in keys:
                stripes[_stripe(key)] += 1
        finally:
            self._lock.release()

    def _drop_local_prefix(self, prefix: str) -> None:
        self._lock.acquire()
        try:
            self._memory.delete_prefix(prefix)
            self._epoch += 1
        finally:
            self._lock.release()

    # -- invalidations and acks -------------------------------------------------------------

    def _broadcast(
        self,
        *,
        keys: list[str] | None = None,
        prefix: str | None = None,
        failed_at: float | None = None,
    ) -> None:
        """Publish an invalidation and wait for the acks of every registered instance, or for
        ``lease_s``; raises `CacheUnavailable` (after holding the caller) if Redis fails."""
        sequence = next(self._sequence)
        body: dict[str, Any] = {
            "v": MESSAGE_VERSION,
            "i": self._id,
            "s": sequence,
            "t": self._wall_clock(),
        }
        if prefix is not None:
            body["p"] = prefix
        else:
            body["k"] = keys or []
        message = json.dumps(body, separators=(",", ":"))
        with self._acks_cond:
            self._acks[sequence] = set()
        try:
            try:
                _, unsure_ms, members = self._publish_script(
                    self._client,
                    [self._registry],
                    [self._channel, message, self._member_lifetime_ms],
                )
            except RedisError as exc:
                raise self._unavailable(exc, "EVALSHA (publish)", failed_at) from exc
            published = self._clock()
            self._count(invalidations_sent=1)
            expected = {member.decode() for member in members}
            expected.discard(self._id)
            self._await_acks(sequence, expected, published, int(unsure_ms))
        finally:
            with self._acks_cond:
                self._acks.pop(sequence, None)

    def _await_acks(
        self, sequence: int, expected: set[str], published: float, unsure_ms: int
    ) -> None:
        """Wait until the registry is old enough to be complete and every listed instance
        acked, or until the lease of any instance that did not ack has run out."""
        lease_deadline = published + self._lease_s * self._slack
        registry_deadline = published + unsure_ms / 1000.0 * self._slack
        with self._acks_cond:
            while not self._stop.is_set():
                acked_all = expected <= self._acks[sequence]
                now = self._clock()
                if now >= registry_deadline and (acked_all or now >= lease_deadline):
                    break
                until = registry_deadline if acked_all else max(registry_deadline, lease_deadline)
                self._acks_cond.wait(until - now)
            missing = len(expected - self._acks[sequence])
        self._count(
            acks_waited=len(expected),
            ack_timeouts=1 if missing else 0,
            registry_waits=1 if unsure_ms > 0 else 0,
        )

    # -- failures ---------------------------------------------------------------------------

    def _unavailable(
        self, exc: RedisError, operation: str, failed_at: float | None = None
    ) -> CacheUnavailable:
        """Count a failed Redis call, hold the caller (see `_hold_failure`), build the error."""
        self._count(errors=1)
        self._hold_failure(self._clock() if failed_at is None else failed_at)
        return CacheUnavailable(
            f"Redis {operation} failed: {type(exc).__name__}: {exc}", operation=operation
        )

    def _hold_failure(self, failed_at: float) -> None:
        """Return only ``lease_s`` after a failure was seen.

        The gateway fails open: once a call raised, it may acknowledge writes without this
        backend (its breaker then skips it entirely). Another instance whose last lease came
        from Redis before the failure has let it run out by then, so it reads Redis (and fails
        over to DynamoDB) instead of serving a copy the acknowledged write replaced.
        """
        self._count(failure_waits=1)
        remaining = failed_at + self._lease_s * self._slack - self._clock()
        if remaining > 0:
            self._stop.wait(remaining)

    # -- the listener -----------------------------------------------------------------------

    def _listen(self) -> None:
        """Connect, subscribe and serve the pub/sub stream until `close`; reconnect on errors."""
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel, self._ack_channel_b.decode())
                self._reset_local()
                self._count(connects=1)
                self._serve(pubsub)
            except Exception as exc:  # any failure: forget everything, then reconnect
                self._reset_local()
                self._count(disconnects=1, listener_errors=1)
                self._reconnect_failures += 1
                _log.debug("tiered cache listener: %s: %s", type(exc).__name__, exc)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
            delay = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2 ** min(self._reconnect_failures, 8))
            self._stop.wait(delay)

    def _serve(self, pubsub: PubSub) -> None:
        """Renew the lease every ``lease_s / 4`` and apply messages, in stream order."""
        clock = self._clock
        interval = self._lease_s / RENEWALS_PER_LEASE
        stall_s = self._lease_s * STALL_LEASES
        tokens = itertools.count(1)
        pings: collections.deque[tuple[int, float]] = collections.deque()
        next_renewal = clock()
        last_pong = clock()
        while not self._stop.is_set():
            now = clock()
            if now >= next_renewal:
                next_renewal = now + interval
                registered_at = self._register()
                if registered_at is not None:
                    # After the registration: the PONG proves the PING ran after it.
                    token = next(tokens)
                    pubsub.ping(str(token))
                    pings.append((token, registered_at))
            if clock() - last_pong > stall_s:
                raise _ListenerStalled(f"no PONG for {stall_s:.2f} s")
            acks: list[tuple[str, int]] = []
            timeout = max(0.0, min(next_renewal - clock(), LISTENER_POLL_S))
            message = pubsub.get_message(timeout=timeout)
            while message is not None:
                kind = message["type"]
                if kind == "message":
                    self._on_message(message["channel"], message["data"], acks)
                elif kind == "pong" and self._on_pong(message["data"], pings):
                    last_pong = clock()
                message = pubsub.get_message(timeout=0.0)
            if acks:
                self._send_acks(acks)

    def _register(self) -> float | None:
        """Renew this instance's registry entry; when it was sent, or None if it failed."""
        sent_at = self._clock()
        try:
            self._register_script(
                self._client,
                [self._registry],
                [self._id, self._member_lifetime_ms, REGISTRY_IDLE_EXPIRY_MS],
            )
        except RedisError as exc:
            self._count(listener_errors=1)
            _log.debug("tiered cache registration failed: %s", exc)
            return None
        return sent_at

    def _on_pong(self, data: Any, pings: collections.deque[tuple[int, float]]) -> bool:
        """A PONG: every message before it was applied, so extend the lease."""
        try:
            token = int(data)
        except (TypeError, ValueError):
            return False
        registered_at = None
        while pings and pings[0][0] <= token:
            sent_token, sent_at = pings.popleft()
            if sent_token == token:
                registered_at = sent_at
        if registered_at is None:
            return False
        self._lock.acquire()
        try:
            if self._stop.is_set():  # closing: `close` voids the lease after setting the flag
                return False
            self._healthy_until = max(self._healthy_until, registered_at + self._lease_s)
        finally:
            self._lock.release()
        self._reconnect_failures = 0
        return True

    def _on_message(self, channel: bytes, data: bytes, acks: list[tuple[str, int]]) -> None:
        if channel == self._ack_channel_b:
            self._on_ack(data)
        elif channel == self._channel_b:
            self._on_invalidation(data, acks)

    def _on_ack(self, data: bytes) -> None:
        try:
            acker, sequence_text = data.decode().split(" ")
            sequence = int(sequence_text)
        except (UnicodeDecodeError, ValueError):
            self._count(bad_messages=1)
            return
        with self._acks_cond:
            waiting = self._acks.get(sequence)
            if waiting is not None:
                waiting.add(acker)
                self._acks_cond.notify_all()
        self._count(acks_received=1)

    def _on_invalidation(self, data: bytes, acks: list[tuple[str, int]]) -> None:
        """Apply another instance's invalidation, then queue its ack."""
        try:
            body = json.loads(data)
            sender, sequence, sent_at = body["i"], int(body["s"]), float(body["t"])
            keys, prefix = body.get("k"), body.get("p")
            if not isinstance(sender, str) or not (
                isinstance(prefix, str)
                or (isinstance(keys, list) and all(isinstance(k, str) for k in keys))
            ):
                raise ValueError("neither keys nor a prefix")
        except (ValueError, KeyError, TypeError):
            # Maybe an invalidation in a format this version cannot read: forget everything.
            self._count(bad_messages=1)
            self._reset_local(keep_lease=True)
            return
        if sender == self._id:
            return  # applied locally before it was published
        self._lock.acquire()
        try:
            if isinstance(prefix, str):
                self._memory.delete_prefix(prefix)
                self._epoch += 1
            elif isinstance(keys, list):
                self._memory.discard_many(keys)
                stripes = self._stripes
                for key in keys:
                    stripes[_stripe(key)] += 1
        finally:
            self._lock.release()
        lag_ms = (self._wall_clock() - sent_at) * 1000.0
        with self._stats_lock:
            self._lags_ms.append(lag_ms)
            self._counts["invalidations_received"] += 1
        acks.append((sender, sequence))

    def _send_acks(self, acks: list[tuple[str, int]]) -> None:
        """Publish acks, one pipeline; a lost ack only makes its writer wait for the lease."""
        mine = self._id
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for sender, sequence in acks:
                    pipe.publish(self._ack_prefix + sender, f"{mine} {sequence}")
                pipe.execute()
        except RedisError as exc:
            self._count(listener_errors=1)
            _log.debug("tiered cache acks failed: %s", exc)
            return
        self._count(acks_sent=len(acks))

    def _reset_local(self, *, keep_lease: bool = False) -> None:
        """Forget the memory tier and void fills in flight (and the lease, unless kept)."""
        self._lock.acquire()
        try:
            if not keep_lease:
                self._healthy_until = 0.0
            self._memory.clear()
            self._epoch += 1
        finally:
            self._lock.release()

    # -- housekeeping -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Both tiers' counters merged (``evictions``, ``errors``), this tier's own counters,
        ``healthy``, and ``invalidation_lag_ms`` (publish wall time -> applied here) over the
        last `LAG_WINDOW` invalidations received. No network."""
        memory = self._memory.stats()
        shared = self._redis.stats()
        with self._stats_lock:
            counts: dict[str, Any] = dict(self._counts)
            lags = sorted(self._lags_ms)
        counts["errors"] += int(memory.get("errors", 0)) + int(shared.get("errors", 0))
        counts["evictions"] = int(memory.get("evictions", 0)) + int(shared.get("evictions", 0))
        counts["memory_hits"] = self._memory_hits.value
        counts["redis_reads"] = self._redis_reads.value
        counts["healthy"] = self.healthy
        counts["invalidation_lag_ms"] = {
            "samples": len(lags),
            "p50": _percentile(lags, 0.50) if lags else None,
            "p99": _percentile(lags, 0.99) if lags else None,
            "max": lags[-1] if lags else None,
        }
        counts["memory"] = memory
        counts["redis"] = shared
        return counts

    def close(self) -> None:
        """Stop serving memory, stop the listener, leave the registry, close both tiers."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._reset_local()
        with self._acks_cond:
            self._acks_cond.notify_all()
        self._listener.join(timeout=5.0)
        with contextlib.suppress(RedisError):
            self._client.zrem(self._registry, self._id)
        try:
            self._memory.close()
        finally:
            self._redis.close()

    def __enter__(self) -> TieredCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"TieredCache(id={self._id[:8]}, key_prefix={self._prefix!r}, "
            f"lease_s={self._lease_s}, healthy={self.healthy})"
        )

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, increment in increments.items():
                self._counts[name] += increment


__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_LOCAL_TTL_S",
    "PUBLISH_SCRIPT",
    "READ_SCRIPT",
    "REGISTER_SCRIPT",
    "TieredCache",
]
