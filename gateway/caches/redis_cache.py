"""`RedisCache`: the shared cache tier, in Redis, with compare-and-set done by Lua scripts.

Each key is stored under ``key_prefix + key`` as one Redis string holding an entry in the wire
format of `gateway.caches.codec` (safe to decode: no pickle). Reads are a single ``GET`` (or one
``MGET``) plus a decode; a value that does not decode counts an error and reads as a MISS.

Fills, write intents, write ends and invalidations follow the rules of `gateway.caches.base`
atomically *inside Redis*: each is a Lua script (`FILL_SCRIPT`, `BEGIN_SCRIPT`, `END_SCRIPT`,
`INVALIDATE_SCRIPT`, built on `LUA_RECORD_FUNCTIONS`, a line-by-line mirror of
`gateway.caches.base.Model`) that reads the record (its header decides; the body is only
carried over), decides, and stores with ``PX`` in the same step, so no interleaving of instances
can put an older copy over a newer one. Deadlines and versions come from Redis's own clock
(``TIME``), so the instances' clocks never enter the rules. Several calls go out as one
non-transactional pipeline of ``EVALSHA`` calls (one round trip). A value whose header the
scripts cannot read is treated as no record, like `get` treats it as a miss.

Failures are never swallowed here: every Redis error (refused connection, timeout, ``-ERR``...)
is counted in ``stats()["errors"]`` and raised as `CacheUnavailable`, chained to the redis-py
exception, so that the caching gateway fails open and runs its circuit breaker. redis-py's own
retries are disabled (the gateway decides about retrying), and every socket operation is
bounded by ``timeout_s``.

**Redis Cluster is not supported**: a ``redis+cluster://`` URL, a `redis.cluster.RedisCluster`
client or a server that reports ``cluster_enabled:1`` is refused with `ConfigError`, and a
``MOVED`` / ``CLUSTERDOWN`` answer met later is reported as `CacheUnavailable`. Use a standalone
primary (with replicas / Sentinel / a managed failover endpoint) instead.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.retry import Retry

from gateway.caches.base import (
    DEFAULT_FLOOR_TTL_S,
    DROPPED,
    KEPT,
    LATE,
    MISS,
    NO_RECORD,
    STORED,
    End,
    Entry,
    Fill,
    Kind,
    Miss,
    Outcome,
    check_intent,
)
from gateway.caches.codec import RECORD_LUA_PATTERN, decode_entry, encode_entry
from gateway.caches.direct_connections import DirectConnections, client_pipeline
from gateway.caches.errors import CacheCodecError, CacheUnavailable
from gateway.errors import ConfigError

DEFAULT_KEY_PREFIX: Final = "gw:"
DEFAULT_TIMEOUT_S: Final = 0.05
DEFAULT_MAX_CONNECTIONS: Final = 64
#: Keys per ``SCAN`` step of `RedisCache.delete_prefix` (a hint to Redis) and per ``UNLINK``.
SCAN_BATCH_KEYS: Final = 1000

_SUPPORTED_SCHEMES: Final = ("redis", "rediss", "unix")
_CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster", "redis-cluster", "rediss-cluster")
_CLUSTER_REPLIES: Final = ("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT", "TRYAGAIN")
_GLOB_SPECIALS: Final = re.compile(rb"([\\*?\[\]])")

#: What the end script answers, by `Outcome`.
_OUTCOMES: Final[dict[int, Outcome]] = {0: DROPPED, 1: STORED, 2: LATE, 3: KEPT}

#: The entry part (after ``v2|<ver>|<uver>|<intents>|``) of a floor: kind 3, no revision, no
#: body.
FLOOR_REST: Final = encode_entry(Entry(Kind.FLOOR, 0)).split(b"|", 4)[4].decode()

#: The Lua mirror of `gateway.caches.base.Model`. Every script starts with these functions;
#: times are Redis's own (``TIME``), in milliseconds for deadlines and microseconds for
#: versions (a hybrid clock: ``max(previous + 1, now)``, so a version a write set never
#: repeats, even after the record expired and came back; a record a fill created has version 0
#: until a write touches it). Numbers stay below 2**53: exact in Lua's doubles.
LUA_RECORD_FUNCTIONS: Final = f"""
local FLOOR = '{FLOOR_REST}'
local function fmt(n) return string.format('%.0f', n) end
local function parse(v)
  if not v then return nil end
  local ver, uver, intents, pos = string.match(v, '{RECORD_LUA_PATTERN}')
  if not ver then return nil end
  local t = {{}}
  for id, d, o in string.gmatch(intents, '([%w]+):(%d+):([ou])') do
    t[id] = {{tonumber(d), o == 'o'}}
  end
  return {{ver = tonumber(ver), uver = tonumber(uver), intents = t, rest = string.sub(v, pos)}}
end
local function load(key)
  local r = parse(redis.call('GET', key))
  if not r then r = {{ver = 0, uver = 0, intents = {{}}, rest = FLOOR, missing = true}} end
  return r
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function bump(r, unordered)
  if r.ver + 1 > now_us then r.ver = r.ver + 1 else r.ver = now_us end
  if unordered then r.uver = r.ver end
end
local function has_intents(r) return next(r.intents) ~= nil end
local function has_unordered(r)
  for _, it in pairs(r.intents) do if not it[2] then return true end end
  return false
end
local function last_deadline(r)
  local m = 0
  for _, it in pairs(r.intents) do if it[1] > m then m = it[1] end end
  return m
end
local function expire_intents(r)
  local dead = false
  for id, it in pairs(r.intents) do
    if it[1] <= now then r.intents[id] = nil; dead = true end
  end
  if dead then r.rest = FLOOR; bump(r, true) end
  return dead
end
local function entry_generation(rest)
  local kind, gen = string.match(rest, '^(%d)|(%-?%d+)|')
  if not kind or kind == '3' then return nil end
  return gen
end
-- Generations are canonical decimal text, compared exactly (a double cannot tell 2**60 from
-- 2**60 + 1): by sign, then length, then digits. Answers a >= b.
local function generation_at_least(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return nb end
  if a == b then return true end
  local greater
  if #a ~= #b then greater = #a > #b else greater = a > b end
  if na then return not greater end
  return greater
end
local function save(key, r, ttl)
  local parts = {{}}
  for id, it in pairs(r.intents) do
    parts[#parts + 1] = id .. ':' .. fmt(it[1]) .. ':' .. (it[2] and 'o' or 'u')
  end
  table.sort(parts)
  local value = 'v2|' .. fmt(r.ver) .. '|' .. fmt(r.uver) .. '|' .. table.concat(parts, ',')
    .. '|' .. r.rest
  if ttl < 0 then redis.call('SET', key, value)
  else redis.call('SET', key, value, 'PX', math.max(1, ttl)) end
end
local function keep_ttl(r, ttl)
  if has_intents(r) then return last_deadline(r) - now end
  return ttl
end
local function floor(key, r, floor_ms)
  r.rest = FLOOR
  bump(r, true)
  save(key, r, math.max(now + floor_ms, last_deadline(r)) - now)
end
"""

#: KEYS[1]: the key. ARGV: the entry (encoded), its TTL (ms, see `_ttl_ms`), the reader's
#: token. Answers 0 (refused), or the TTL the entry was stored with: ms (shorter than asked
#: while writes are in flight), -1 for none. `Model.fill`.
FILL_SCRIPT: Final = (
    LUA_RECORD_FUNCTIONS
    + """
local key, ttl, token = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local new = parse(ARGV[1])
if not new then return redis.error_reply('gateway: the new cache entry has no valid header') end
if ttl == 0 then return 0 end
local r = load(key)
if r.missing then
  if token ~= 0 then return 0 end
else
  local left = redis.call('PTTL', key)
  if expire_intents(r) then save(key, r, left) end
  if r.ver ~= token then return 0 end
end
r.rest = new.rest
local kept = keep_ttl(r, ttl)
save(key, r, kept)
if kept < 0 then return -1 end
return math.max(1, kept)
"""
)

#: KEYS: the keys. ARGV: the intent id, its TTL (ms), "1" if the write is ordered. Answers
#: each key's token. `Model.begin`.
BEGIN_SCRIPT: Final = (
    LUA_RECORD_FUNCTIONS
    + """
local intent, ttl, ordered = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local out = {}
for i, key in ipairs(KEYS) do
  local r = load(key)
  expire_intents(r)
  r.intents[intent] = {now + ttl, ordered}
  bump(r, not ordered)
  save(key, r, last_deadline(r) - now)
  if ordered then out[i] = r.uver else out[i] = r.ver end
end
return out
"""
)

#: KEYS[1]: the key. ARGV: intent id, token, the entry written (encoded; '' if none), its TTL
#: (ms), the floor TTL (ms). Answers 1 (stored), 3 (kept), 0 (dropped) or 2 (late).
#: `Model.end`.
END_SCRIPT: Final = (
    LUA_RECORD_FUNCTIONS
    + """
local key, intent, token = KEYS[1], ARGV[1], tonumber(ARGV[2])
local ttl, floor_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local r = load(key)
expire_intents(r)
local mine = r.intents[intent]
if not mine then floor(key, r, floor_ms) return 2 end
r.intents[intent] = nil
if ARGV[3] ~= '' and ttl ~= 0 then
  local new = parse(ARGV[3])
  if not new then return redis.error_reply('gateway: the new cache entry has no valid header') end
  if mine[2] then
    if r.uver == token and not has_unordered(r) then
      local current = entry_generation(r.rest)
      if current and generation_at_least(current, entry_generation(new.rest)) then
        -- the write has landed: a fill read before it must not match any more
        bump(r, false)
        save(key, r, keep_ttl(r, ttl))
        return 3
      end
      r.rest = new.rest
      bump(r, false)
      save(key, r, keep_ttl(r, ttl))
      return 1
    end
  elseif not has_intents(r) and r.ver == token then
    r.rest = new.rest
    bump(r, true)
    save(key, r, keep_ttl(r, ttl))
    return 1
  end
end
floor(key, r, floor_ms)
return 0
"""
)

#: KEYS: the keys. ARGV[1]: the floor TTL (ms). Answers how many keys held an entry.
#: `Model.invalidate`.
INVALIDATE_SCRIPT: Final = (
    LUA_RECORD_FUNCTIONS
    + """
local floor_ms = tonumber(ARGV[1])
local dropped = 0
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'string' or kind == 'none' then  -- never a key of another shape (a registry)
    local r = load(key)
    expire_intents(r)
    if r.rest ~= FLOOR then dropped = dropped + 1 end
    floor(key, r, floor_ms)
  end
end
return dropped
"""
)


def _ttl_ms(ttl_s: float) -> int:
    """A TTL for the scripts: whole milliseconds rounded up (at least 1) for ``PX``; 0 when
    ``ttl_s`` is not positive (NaN included: nothing is stored, as in the memory backend);
    -1 for infinity (no expiry).
    """
    if not ttl_s > 0:
        return 0
    if ttl_s == math.inf:
        return -1
    return max(1, math.ceil(ttl_s * 1000))


def glob_escape(text: str) -> bytes:
    """``text`` as a Redis glob pattern that matches exactly itself (``*?[]\\`` escaped)."""
    return _GLOB_SPECIALS.sub(rb"\\\1", text.encode("utf-8", "surrogatepass"))


class RedisCache:
    """The Redis cache backend (see the module docstring)."""

    name = "redis"
    #: Every answer is decoded from bytes: callers get fresh objects, no copy needed.
    shares_documents = False

    def __init__(
        self,
        url: str,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        *,
        floor_ttl_s: float = DEFAULT_FLOOR_TTL_S,
        probe: bool = True,
    ) -> None:
        """Connect lazily to the Redis at ``url``.

        ``url`` is ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, or
        ``unix://``. Connections come from a blocking pool of ``max_connections``; reads
        (``GET``, ``MGET``) and the write scripts' pipelines use up to ``max_connections`` more
        of their own, taken without a lock (`gateway.caches.direct_connections`), so up to twice
        ``max_connections`` in all.
        Connecting, every command and waiting for a free connection are each bounded by
        ``timeout_s``.
        ``floor_ttl_s``: how long a dropped entry's record stays as a floor (see
        `gateway.caches.base`); it must exceed the gateway's fill deadline. With ``probe``, one
        ``INFO cluster`` (bounded by ``timeout_s``) refuses a Redis Cluster and a wrong password
        with `ConfigError` right away; an unreachable server is not an error here.
        """
        _check_url(url)
        if timeout_s <= 0 or not math.isfinite(timeout_s):
            raise ConfigError(f"RedisCache timeout_s must be a positive number, not {timeout_s}")
        if max_connections < 1:
            raise ConfigError(f"RedisCache max_connections must be >= 1, not {max_connections}")
        try:
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=timeout_s,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
                retry_on_error=[],
                health_check_interval=0,
                protocol=2,
            )
            # A query parameter the connection class does not take (``?ssl_cert_reqs=none`` on a
            # redis:// URL, a typo) fails only when a connection is made: make one now, without
            # connecting, so that it is a ConfigError here and not a TypeError at the first call.
            pool.connection_class(**pool.connection_kwargs)
        except (ValueError, TypeError, RedisError) as exc:  # RedisError: ?ssl_cert_reqs=bogus
            raise ConfigError(f"bad Redis URL {_redacted(url)!r}: {exc}") from exc
        client = redis.Redis(connection_pool=pool)
        self._setup(client, key_prefix, floor_ttl_s, owns_client=True)
        self._reads: DirectConnections | None = DirectConnections(client, max_connections)
        self._read = self._reads.command
        self._pipeline = self._reads.pipeline
        if probe:
            try:
                self.probe()
            except ConfigError:
                self.close()
                raise

    @classmethod
    def from_client(
        cls,
        client: redis.Redis,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        floor_ttl_s: float = DEFAULT_FLOOR_TTL_S,
        probe: bool = True,
    ) -> RedisCache:
        """A cache on an existing client (its pool, timeouts and retries are used as they are).

        The client must return bytes (``decode_responses=False``); `close` leaves it open.
        """
        if isinstance(client, RedisCluster):
            raise ConfigError("Redis Cluster is not supported: pass a standalone redis.Redis")
        kwargs = client.connection_pool.connection_kwargs
        if kwargs.get("decode_responses"):
            raise ConfigError("RedisCache needs a client with decode_responses=False")
        self = cls.__new__(cls)
        self._setup(client, key_prefix, floor_ttl_s, owns_client=False)
        self._reads = None  # the caller's client, with its own retries: used as it is
        self._read = client.execute_command
        self._pipeline = functools.partial(client_pipeline, client)
        if probe:
            self.probe()
        return self

    def _setup(
        self,
        client: redis.Redis,
        key_prefix: str,
        floor_ttl_s: float,
        owns_client: bool,
    ) -> None:
        if not isinstance(key_prefix, str):
            raise ConfigError(f"RedisCache key_prefix must be a str, not {key_prefix!r}")
        if not (floor_ttl_s > 0 and math.isfinite(floor_ttl_s)):
            raise ConfigError(
                f"RedisCache floor_ttl_s must be a positive number, not {floor_ttl_s}"
            )
        self.floor_ttl_s = float(floor_ttl_s)
        self._client = client
        self._prefix = key_prefix
        self._owns_client = owns_client
        self._fill = client.register_script(FILL_SCRIPT)
        self._begin = client.register_script(BEGIN_SCRIPT)
        self._end = client.register_script(END_SCRIPT)
        self._invalidate = client.register_script(INVALIDATE_SCRIPT)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "errors",
                "decode_errors",
                "fills_stored",
                "fills_refused",
                "writes_stored",
                "writes_kept",
                "writes_dropped",
                "writes_late",
            ),
            0,
        )

    # -- accessors --------------------------------------------------------------------------

    @property
    def key_prefix(self) -> str:
        """What every key is prefixed with in Redis."""
        return self._prefix

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (for tests and tools)."""
        return self._client

    def probe(self) -> None:
        """Ask the server (``INFO cluster``) whether it is usable.

        Raises `ConfigError` for a cluster-mode server, refused credentials or a database the
        server does not have; any other failure (unreachable, slow, ``INFO`` not permitted to
        this ACL user) is ignored: the server is then simply unavailable, which the gateway
        handles.
        """
        try:
            info = self._client.info("cluster")
        except (AuthenticationError, AuthenticationWrongNumberOfArgsError) as exc:
            raise ConfigError(f"Redis refused the credentials of the cache URL: {exc}") from exc
        except RedisError as exc:
            if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
                raise ConfigError(f"Redis refused the credentials of the cache URL: {exc}") from exc
            if "DB index is out of range" in str(exc):
                db = self._client.connection_pool.connection_kwargs.get("db")
                raise ConfigError(
                    f"Redis has no database {db} (the number after the host in the cache URL): "
                    f"{exc}; use one the server has (0-15 unless its `databases` setting says "
                    "more)"
                ) from exc
            return
        if str(info.get("cluster_enabled", 0)) == "1":
            raise ConfigError(
                "Redis Cluster is not supported: the server reports cluster_enabled:1; use a "
                "standalone Redis (primary with replicas) for the cache"
            )

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | Miss:
        """The live entry for ``key``, or MISS (one ``GET``)."""
        try:
            data = self._read("GET", self._prefix + key)
        except RedisError as exc:
            raise self._unavailable(exc, "GET") from exc
        if data is None:
            return MISS
        try:
            return decode_entry(data)
        except CacheCodecError:
            self._count_decode_error()
            return MISS

    def get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """One result per key, in order (one ``MGET``)."""
        if not keys:
            return []
        prefix = self._prefix
        try:
            values = self._read("MGET", *[prefix + key for key in keys])
        except RedisError as exc:
            raise self._unavailable(exc, "MGET") from exc
        results: list[Entry | Miss] = []
        for data in values:
            if data is None:
                results.append(MISS)
                continue
            try:
                results.append(decode_entry(data))
            except CacheCodecError:
                self._count_decode_error()
                results.append(MISS)
        return results

    def read_token(self, key: str, seen: Entry | Miss) -> int:
        """The version of the record the reader saw (`NO_RECORD` if there was none)."""
        return NO_RECORD if seen is MISS else seen.ver

    # -- the rules (gateway.caches.base), in Lua ----------------------------------------------

    def fill_many(self, fills: Sequence[Fill]) -> None:
        """Store results of reads whose token still holds (one pipeline of script calls).

        Every entry is encoded before anything is sent: an entry the codec cannot encode
        raises `CacheCodecError` and nothing is stored.
        """
        self.fill_results(fills)

    def fill_results(self, fills: Sequence[Fill]) -> list[int | None]:
        """`fill_many`, answering for each fill None if Redis refused it, else the TTL Redis
        stored it with (ms, as ``PTTL`` answers: -1 for none; while writes are in flight it is
        cut to their last deadline)."""
        if not fills:
            return []
        prefix = self._prefix
        calls = [
            ([prefix + f.key], (encode_entry(f.entry), _ttl_ms(f.ttl_s), f.token)) for f in fills
        ]
        answers = self._run_scripts(self._fill, FILL_SCRIPT, calls, "fill")
        results = [None if int(r) == 0 else int(r) for r in answers]
        refused = results.count(None)
        self._count(fills_stored=len(results) - refused, fills_refused=refused)
        return results

    def begin_write(
        self, keys: Sequence[str], intent: str, ttl_s: float, ordered: bool = False
    ) -> list[int]:
        """Register ``intent`` on each key (one script call per `SCAN_BATCH_KEYS` keys, one
        pipeline); the tokens, in order."""
        check_intent(intent)
        if not keys:
            return []
        prefix = self._prefix
        full = [prefix + key for key in keys]
        ttl_ms = max(1, _ttl_ms(ttl_s))
        calls = [
            (full[start : start + SCAN_BATCH_KEYS], (intent, ttl_ms, "1" if ordered else "0"))
            for start in range(0, len(full), SCAN_BATCH_KEYS)
        ]
        results = self._run_scripts(self._begin, BEGIN_SCRIPT, calls, "begin write")
        return [int(token) for batch in results for token in batch]

    def end_write(self, ends: Sequence[End]) -> list[Outcome]:
        """End writes (one pipeline of script calls); each one's outcome."""
        if not ends:
            return []
        prefix = self._prefix
        floor_ms = _ttl_ms(self.floor_ttl_s)
        calls = [
            (
                [prefix + e.key],
                (
                    e.intent,
                    e.token,
                    b"" if e.entry is None else encode_entry(e.entry),
                    _ttl_ms(e.ttl_s),
                    floor_ms,
                ),
            )
            for e in ends
        ]
        results = [
            _OUTCOMES[int(r)] for r in self._run_scripts(self._end, END_SCRIPT, calls, "end write")
        ]
        self._count(
            writes_stored=results.count(STORED),
            writes_kept=results.count(KEPT),
            writes_dropped=results.count(DROPPED),
            writes_late=results.count(LATE),
        )
        return results

    def invalidate_many(self, keys: Sequence[str]) -> None:
        """Drop the keys' entries, leaving floors."""
        self._invalidate_full([self._prefix + key for key in keys])

    def _invalidate_full(self, full: Sequence[str]) -> int:
        if not full:
            return 0
        floor_ms = _ttl_ms(self.floor_ttl_s)
        calls = [
            (list(full[start : start + SCAN_BATCH_KEYS]), (floor_ms,))
            for start in range(0, len(full), SCAN_BATCH_KEYS)
        ]
        return sum(
            int(r)
            for r in self._run_scripts(self._invalidate, INVALIDATE_SCRIPT, calls, "invalidate")
        )

    def delete_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with ``prefix`` (``SCAN MATCH``, then the
        invalidate script on each batch found: the records stay as floors).

        Glob characters in the prefixes are escaped, so ``"a*"`` matches ``"a*b"`` but never
        ``"ab"``. Not atomic: entries stored while the scan runs may survive. Returns how many
        entries were dropped.
        """
        pattern = glob_escape(self._prefix + prefix) + b"*"
        removed = 0
        cursor: int = 0
        try:
            while True:
                cursor, found = self._client.scan(cursor, match=pattern, count=SCAN_BATCH_KEYS)
                if found:
                    keys = [
                        k if isinstance(k, str) else k.decode("utf-8", "surrogatepass")
                        for k in dict.fromkeys(found)
                    ]
                    removed += self._invalidate_full(keys)
                if cursor == 0:
                    return removed
        except RedisError as exc:
            raise self._unavailable(exc, "SCAN") from exc

    # -- the rest of the protocol -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters of this instance (no network): ``errors`` (every failed call and every
        undecodable value), ``decode_errors``, ``evictions`` (always 0 here: see
        `server_info`), and how fills and writes were decided.
        """
        with self._lock:
            counts: dict[str, Any] = dict(self._counts)
        counts["evictions"] = 0
        return counts

    def server_info(self) -> dict[str, Any]:
        """Redis ``INFO stats`` (``evicted_keys``, ``keyspace_hits``...): one round trip."""
        try:
            return dict(self._client.info("stats"))
        except RedisError as exc:
            raise self._unavailable(exc, "INFO") from exc

    def publish(self, channel: str, message: bytes) -> int:
        """``PUBLISH`` (channels are not prefixed); returns how many subscribers got it."""
        try:
            return int(self._client.publish(channel, message))
        except RedisError as exc:
            raise self._unavailable(exc, "PUBLISH") from exc

    def pubsub(self, **kwargs: Any) -> redis.client.PubSub:
        """A redis-py `PubSub` on this cache's connection settings (its reads time out after
        ``timeout_s``: poll with ``get_message(timeout=...)``)."""
        return self._client.pubsub(**kwargs)

    def close(self) -> None:
        """Disconnect every pooled connection (a client passed to `from_client` stays open)."""
        if self._owns_client:
            self._client.close()
            self._client.connection_pool.disconnect()
        if self._reads is not None:
            self._reads.disconnect()

    def __enter__(self) -> RedisCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisCache({self._client.connection_pool!r}, key_prefix={self._prefix!r})"

    # -- internals --------------------------------------------------------------------------

    def _run_scripts(
        self,
        script: Script,
        source: str,
        calls: Sequence[tuple[list[str], tuple[Any, ...]]],
        operation: str,
    ) -> list[Any]:
        """``EVALSHA`` of ``script`` once per (keys, args) call, in one non-transactional
        pipeline; the answers in order. Failures raise `CacheUnavailable`.

        redis-py's own script support would first send ``SCRIPT EXISTS`` on every pipeline;
        instead, only when the server answers ``NOSCRIPT`` (restart, failover, ``SCRIPT
        FLUSH``) is the script loaded and the refused calls (which did nothing) sent again.
        """
        try:
            results = self._pipeline(
                [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
            )
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:
                script.sha = self._client.script_load(source)
                again = self._pipeline(
                    [
                        ("EVALSHA", script.sha, len(calls[i][0]), *calls[i][0], *calls[i][1])
                        for i in missing
                    ]
                )
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
            _raise_first_error(results)
        except RedisError as exc:
            raise self._unavailable(exc, f"EVALSHA ({operation})") from exc
        return results

    def _unavailable(self, exc: RedisError, operation: str) -> CacheUnavailable:
        with self._lock:
            self._counts["errors"] += 1
        if isinstance(exc, ResponseError) and str(exc).startswith(_CLUSTER_REPLIES):
            message = f"Redis Cluster is not supported: {operation} was answered {exc}"
        else:
            message = f"Redis {operation} failed: {type(exc).__name__}: {exc}"
        return CacheUnavailable(message, operation=operation)

    def _count_decode_error(self) -> None:
        with self._lock:
            self._counts["errors"] += 1
            self._counts["decode_errors"] += 1

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, increment in increments.items():
                self._counts[name] += increment


def _raise_first_error(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, Exception):
            raise result


def _check_url(url: str) -> None:
    if not isinstance(url, str):
        raise ConfigError(f"the Redis URL must be a str, not {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme in _CLUSTER_SCHEMES:
        raise ConfigError(
            f"Redis Cluster is not supported: {_redacted(url)!r}; use a standalone Redis "
            "(redis:// or rediss://) for the cache"
        )
    if scheme not in _SUPPORTED_SCHEMES:
        raise ConfigError(
            f"bad Redis URL {_redacted(url)!r}: the scheme must be redis://, rediss:// (TLS) "
            "or unix://"
        )


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


__all__ = [
    "BEGIN_SCRIPT",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT_S",
    "END_SCRIPT",
    "FILL_SCRIPT",
    "INVALIDATE_SCRIPT",
    "LUA_RECORD_FUNCTIONS",
    "RedisCache",
    "glob_escape",
]
