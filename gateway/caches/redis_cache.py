"""`RedisCache`: the shared cache tier, in Redis, with compare-and-set done by Lua scripts.

Each key is stored under ``key_prefix + key`` as one Redis string holding an entry in the wire
format of `gateway.caches.codec` (safe to decode: no pickle). Reads are a single ``GET`` (or one
``MGET``) plus a decode; a value that does not decode counts an error and reads as a MISS.

Fills and writes follow the rules of `gateway.caches.base` (``fill_allowed``,
``write_decision``) atomically *inside Redis*: a Lua script reads the header of the current
entry (kind, generation, revision — never the JSON body), decides, and stores with ``PX`` in
the same step, so no interleaving of instances can put an older copy over a newer one. Several
puts go out as one non-transactional pipeline of ``EVALSHA`` calls (one round trip). The script
treats a value whose header it cannot read as absent, like `get` does.

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

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
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

from gateway.caches.base import MISS, Entry, Kind, Miss, Put
from gateway.caches.codec import HEADER_LUA_PATTERN, decode_entry, encode_entry
from gateway.caches.errors import CacheCodecError, CacheUnavailable
from gateway.errors import ConfigError

DEFAULT_KEY_PREFIX: Final = "gw:"
DEFAULT_TIMEOUT_S: Final = 0.05
DEFAULT_MAX_CONNECTIONS: Final = 64
#: Keys per ``SCAN`` step of `RedisCache.delete_prefix` (a hint to Redis) and per ``UNLINK``.
SCAN_BATCH_KEYS: Final = 1000
#: The scripts first read this many bytes of the current value (``GETRANGE``), enough for any
#: header with our revisions; a longer header (a foreign revision) falls back to ``GET``.
HEADER_PROBE_BYTES: Final = 256

_SUPPORTED_SCHEMES: Final = ("redis", "rediss", "unix")
_CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster", "redis-cluster", "rediss-cluster")
_CLUSTER_REPLIES: Final = ("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT", "TRYAGAIN")
_GLOB_SPECIALS: Final = re.compile(rb"([\\*?\[\]])")

_FILL: Final = "f"
_WRITE: Final = "w"
# What the script answers.
_KEPT: Final = 0
_STORED: Final = 1
_DROPPED: Final = 2

#: Lua: ``header(value)`` -> kind (a digit, as a string), generation (decimal string) and a
#: revision token (equal tokens = equal revisions, None included), or nil if ``value`` does not
#: start with a valid header (see `gateway.caches.codec`).
LUA_HEADER_FUNCTION: Final = f"""
local function header(v)
  local kind, gen, revlen, pos = string.match(v, '{HEADER_LUA_PATTERN}')
  if not kind then return nil end
  local n = tonumber(revlen) or 0
  if string.sub(v, pos + n, pos + n) ~= '|' then return nil end
  return kind, gen, revlen .. ':' .. string.sub(v, pos, pos + n - 1)
end
"""

#: The compare-and-set script. KEYS[1]: the key; ARGV[1]: the new entry (encoded); ARGV[2]: its
#: TTL in milliseconds (see `_ttl_ms`: 0 stores nothing but still removes the entry the new one
#: beat, -1 never expires); ARGV[3]: "f" (fill: `fill_allowed`) or "w" (write:
#: `write_decision`). Answers 1 (stored), 0 (kept the current entry) or 2 (dropped: deleted).
#: Generations are compared as decimal strings (sign, length, then digits): Lua numbers are
#: doubles and would lose precision above 2**53.
CAS_SCRIPT: Final = (
    LUA_HEADER_FUNCTION
    + f"""
local function compare(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return na and -1 or 1 end
  local r
  if #a ~= #b then r = (#a < #b) and -1 or 1
  elseif a == b then return 0
  else r = (a < b) and -1 or 1 end
  if na then return -r end
  return r
end
local key, new, ttl, mode = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local nkind, ngen, nrev = header(new)
if not nkind then return redis.error_reply('gateway: the new cache entry has no valid header') end
local ckind, cgen, crev
local probe = redis.call('GETRANGE', key, 0, {HEADER_PROBE_BYTES - 1})
if #probe > 0 then
  ckind, cgen, crev = header(probe)
  if not ckind and #probe == {HEADER_PROBE_BYTES} then
    ckind, cgen, crev = header(redis.call('GET', key))
  end
end
local action = 'store'
if ckind then
  if mode == 'f' then
    if ckind == '{int(Kind.QUARANTINE)}' then action = 'keep'
    else
      local c = compare(ngen, cgen)
      -- same generation, revision and kind: the same content, so refresh stored_at and TTL
      if c < 0 or (c == 0 and (nrev ~= crev or nkind ~= ckind)) then action = 'keep' end
    end
  elseif ckind == '{int(Kind.QUARANTINE)}' then
    -- a marker carries the highest generation it displaced (see base.write_decision)
    if compare(ngen, cgen) < 0 then action = 'keep' end
  else
    local c = compare(ngen, cgen)
    if c < 0 then action = 'keep'
    elseif c == 0 then
      if nrev ~= crev then action = 'drop' else action = 'keep' end
    end
  end
end
if action == 'store' then
  if ttl > 0 then
    redis.call('SET', key, new, 'PX', ttl)
  elseif ttl < 0 then
    redis.call('SET', key, new)
  else
    redis.call('UNLINK', key)
  end
  return {_STORED}
elseif action == 'drop' then
  redis.call('UNLINK', key)
  return {_DROPPED}
end
return {_KEPT}
"""
)


#: The quarantine script. KEYS: the keys; ARGV[1]: the marker (encoded); ARGV[2]: its TTL in
#: milliseconds (as for `CAS_SCRIPT`). Each key gets the marker, except that a marker already
#: there that outlives the new one is kept; with a TTL of 0 no marker is set but the entry is
#: still removed (the memory backend's rules).
QUARANTINE_SCRIPT: Final = (
    LUA_HEADER_FUNCTION
    + f"""
local marker, ttl = ARGV[1], tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local kind, gen = nil, '0'
  if current then
    local k, g = header(current)
    if k then kind, gen = k, g end
  end
  local keep = false
  if kind == '{int(Kind.QUARANTINE)}' then
    local left = redis.call('PTTL', key)
    keep = left == -1 or (ttl >= 0 and left >= ttl)
  end
  if not keep then
    -- The marker remembers the generation it displaces: an older write arriving late must
    -- not replace it (base.write_decision).
    local stamped = string.gsub(marker, '^(v%d+|%d|)%-?%d+', '%1' .. gen, 1)
    if ttl > 0 then
      redis.call('SET', key, stamped, 'PX', ttl)
    elseif ttl < 0 then
      redis.call('SET', key, stamped)
    else
      redis.call('UNLINK', key)
    end
  end
end
return #KEYS
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
        wall_clock: Callable[[], float] = time.time,
        *,
        probe: bool = True,
    ) -> None:
        """Connect lazily to the Redis at ``url``.

        ``url`` is ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, or
        ``unix://``. Connections come from a blocking pool of ``max_connections``; connecting,
        every command and waiting for a free connection are each bounded by ``timeout_s``.
        ``wall_clock`` stamps the quarantine markers' ``stored_at``. With ``probe``, one
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
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"bad Redis URL {_redacted(url)!r}: {exc}") from exc
        client = redis.Redis(connection_pool=pool)
        self._setup(client, key_prefix, wall_clock, owns_client=True)
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
        wall_clock: Callable[[], float] = time.time,
        *,
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
        self._setup(client, key_prefix, wall_clock, owns_client=False)
        if probe:
            self.probe()
        return self

    def _setup(
        self,
        client: redis.Redis,
        key_prefix: str,
        wall_clock: Callable[[], float],
        owns_client: bool,
    ) -> None:
        if not isinstance(key_prefix, str):
            raise ConfigError(f"RedisCache key_prefix must be a str, not {key_prefix!r}")
        self._client = client
        self._prefix = key_prefix
        self._wall_clock = wall_clock
        self._owns_client = owns_client
        self._cas = client.register_script(CAS_SCRIPT)
        self._quarantine = client.register_script(QUARANTINE_SCRIPT)
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

        Raises `ConfigError` for a cluster-mode server or refused credentials; any other
        failure (unreachable, slow, ``INFO`` not permitted to this ACL user) is ignored: the
        server is then simply unavailable, which the gateway handles.
        """
        try:
            info = self._client.info("cluster")
        except (AuthenticationError, AuthenticationWrongNumberOfArgsError) as exc:
            raise ConfigError(f"Redis refused the credentials of the cache URL: {exc}") from exc
        except RedisError as exc:
            if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
                raise ConfigError(f"Redis refused the credentials of the cache URL: {exc}") from exc
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
            data = self._client.execute_command("GET", self._prefix + key)
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
            values = self._client.execute_command("MGET", *[prefix + key for key in keys])
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

    # -- puts -------------------------------------------------------------------------------

    def fill_many(self, puts: Sequence[Put]) -> None:
        """Store results of reads, never over an equal-or-newer entry or a quarantine.

        Every entry is encoded before anything is sent: an entry the codec cannot encode
        raises `CacheCodecError` and nothing is stored.
        """
        results = self._compare_and_set(puts, _FILL)
        stored = results.count(_STORED)
        self._count(fills_stored=stored, fills_refused=len(results) - stored)

    def write_many(self, puts: Sequence[Put]) -> None:
        """Store results of acknowledged writes (rules: `gateway.caches.base`)."""
        results = self._compare_and_set(puts, _WRITE)
        self._count(
            writes_stored=results.count(_STORED),
            writes_kept=results.count(_KEPT),
            writes_dropped=results.count(_DROPPED),
        )

    def quarantine_many(self, keys: Sequence[str], ttl_s: float) -> None:
        """Mark keys as being written: reads go to DynamoDB and fills are refused.

        The marker replaces the key's entry, unless a marker already there outlives it. With
        ``ttl_s <= 0`` no marker is set but the entry is still removed. One script call per
        `SCAN_BATCH_KEYS` keys, all in one pipeline.
        """
        if not keys:
            return
        marker = encode_entry(Entry(Kind.QUARANTINE, 0, None, None, float(self._wall_clock())))
        ttl_ms = _ttl_ms(ttl_s)
        prefix = self._prefix
        full = [prefix + key for key in keys]
        calls = [
            (full[start : start + SCAN_BATCH_KEYS], (marker, ttl_ms))
            for start in range(0, len(full), SCAN_BATCH_KEYS)
        ]
        self._run_scripts(self._quarantine, QUARANTINE_SCRIPT, calls, "quarantine")

    def delete_many(self, keys: Sequence[str]) -> None:
        """Forget keys (``UNLINK``: Redis frees the memory in the background)."""
        if not keys:
            return
        prefix = self._prefix
        full = [prefix + key for key in keys]
        try:
            if len(full) <= SCAN_BATCH_KEYS:
                self._client.execute_command("UNLINK", *full)
                return
            with self._client.pipeline(transaction=False) as pipe:
                for start in range(0, len(full), SCAN_BATCH_KEYS):
                    pipe.execute_command("UNLINK", *full[start : start + SCAN_BATCH_KEYS])
                _raise_first_error(pipe.execute(raise_on_error=False))
        except RedisError as exc:
            raise self._unavailable(exc, "UNLINK") from exc

    def delete_prefix(self, prefix: str) -> int:
        """Forget every key that starts with ``prefix`` (``SCAN MATCH`` + ``UNLINK``).

        Glob characters in the prefixes are escaped, so ``"a*"`` removes ``"a*b"`` but never
        ``"ab"``. Not atomic: keys stored while the scan runs may survive. Returns how many
        keys were removed.
        """
        pattern = glob_escape(self._prefix + prefix) + b"*"
        removed = 0
        cursor: int = 0
        try:
            while True:
                cursor, found = self._client.scan(cursor, match=pattern, count=SCAN_BATCH_KEYS)
                if found:
                    removed += self._client.execute_command("UNLINK", *dict.fromkeys(found))
                if cursor == 0:
                    return removed
        except RedisError as exc:
            raise self._unavailable(exc, "SCAN/UNLINK") from exc

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

    def __enter__(self) -> RedisCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisCache({self._client.connection_pool!r}, key_prefix={self._prefix!r})"

    # -- internals --------------------------------------------------------------------------

    def _compare_and_set(self, puts: Sequence[Put], mode: str) -> list[int]:
        """Run the CAS script for every put, in order, in one pipeline; the script's answers."""
        if not puts:
            return []
        prefix = self._prefix
        calls = [([prefix + p.key], (encode_entry(p.entry), _ttl_ms(p.ttl_s), mode)) for p in puts]
        return [int(r) for r in self._run_scripts(self._cas, CAS_SCRIPT, calls, mode)]

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
            with self._client.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = pipe.execute(raise_on_error=False)
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:
                script.sha = self._client.script_load(source)
                with self._client.pipeline(transaction=False) as pipe:
                    for i in missing:
                        keys, args = calls[i]
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    for i, result in zip(missing, pipe.execute(raise_on_error=False), strict=True):
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
    "CAS_SCRIPT",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT_S",
    "LUA_HEADER_FUNCTION",
    "QUARANTINE_SCRIPT",
    "RedisCache",
    "glob_escape",
]
