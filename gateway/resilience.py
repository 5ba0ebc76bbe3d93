"""The cache tier as the gateway sees it: failures never reach a caller, nor make it stale.

`GuardedCache` wraps a `CacheBackend`:

* Every call goes through `GuardedCache._call`, the one place that asks the circuit breaker
  and reports the call's outcome to it: a success, a failure, or (a call interrupted by a
  ``BaseException``) neither, which frees a half-open trial for the next call. A failed or
  skipped call answers `UNAVAILABLE` instead of raising.
* Failures are counted and logged on the ``gateway`` logger: a WARNING when the breaker opens
  and when it closes, and rate-limited WARNINGs for failed calls and replays (at most one per
  ``log_interval_s`` each, with the number left out). The library installs no handlers.
* Keys whose invalidation could not reach the cache are *pending*: reads and fills of those
  keys skip the cache until one background thread (never the readers) has replayed the
  invalidations. Past `MAX_PENDING` keys, the replay drops the whole namespace instead.
* With ``distrust_on_recovery``, entries stored before the cache came back are not trusted
  (``distrust_before``): writes acknowledged during an outage may have left them stale.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, TypeVar

from gateway.breaker import CircuitBreaker
from gateway.caches.base import MISS, CacheBackend, End, Entry, Fill, Miss, Outcome
from gateway.counters import Counter

T = TypeVar("T")

#: Most keys remembered for a replay; past it, the replay wipes the namespace.
MAX_PENDING: Final = 100_000
#: How often the repairer retries while the cache is down.
REPAIR_INTERVAL_S: Final = 0.05
#: Keys per replayed invalidation call.
REPAIR_BATCH_KEYS: Final = 1000
#: At most one WARNING per this many seconds for failed calls, and one for replays.
DEFAULT_LOG_INTERVAL_S: Final = 10.0

_log = logging.getLogger("gateway.cache")


class _Unavailable(enum.Enum):
    UNAVAILABLE = "UNAVAILABLE"

    def __bool__(self) -> bool:
        return False


#: What a guarded call answers when the cache failed or was skipped.
UNAVAILABLE: Final = _Unavailable.UNAVAILABLE
Unavailable = Literal[_Unavailable.UNAVAILABLE]


class RateLimitedLog:
    """Logs a WARNING at most once per ``interval_s``; says how many were left out."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._next_at = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: Any) -> None:
        """Log ``message % args``, unless one was logged less than ``interval_s`` ago."""
        with self._lock:
            now = self._clock()
            if now < self._next_at:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._next_at = now + self._interval_s
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        _log.warning(message, *args)


class GuardedCache:
    """A `CacheBackend` behind a circuit breaker, with logged failures and replayed
    invalidations (see the module docstring)."""

    def __init__(
        self,
        cache: CacheBackend,
        breaker: CircuitBreaker | None = None,
        *,
        distrust_on_recovery: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        log_interval_s: float = DEFAULT_LOG_INTERVAL_S,
        repair_interval_s: float = REPAIR_INTERVAL_S,
    ) -> None:
        self.cache = cache
        self.breaker = breaker or CircuitBreaker()
        self._distrust_on_recovery = distrust_on_recovery
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._repair_interval_s = repair_interval_s
        #: Entries stored before this wall time are not trusted (see the module docstring).
        self.distrust_before = 0.0
        # key -> the number of the invalidation that made it pending (a newer one replaces it)
        self._pending: dict[str, int] = {}
        self._pending_numbers = itertools.count(1)
        self._pending_lock = threading.Lock()
        self._overflow = False
        self._overflowed_at = 0  # the pending number when a key last could not be remembered
        self._repairer: threading.Thread | None = None
        self._closing = threading.Event()
        self._failed_log = RateLimitedLog(log_interval_s, clock)
        self._repair_log = RateLimitedLog(log_interval_s, clock)
        self.errors = Counter()
        self.fallbacks = Counter()
        self.repairs = Counter()

    # -- the one place that talks to the breaker -------------------------------------------

    def _call(self, operation: str, fn: Callable[..., T], *args: Any) -> T | Unavailable:
        breaker = self.breaker
        if not breaker.allow():
            self.fallbacks.inc()
            return UNAVAILABLE
        try:
            result = fn(*args)
        except Exception as exc:
            self.errors.inc()
            self.fallbacks.inc()
            if breaker.record_failure():
                _log.warning(
                    "cache %s: circuit breaker OPEN after %d consecutive failures (last: %s); "
                    "serving from DynamoDB for %.1f s before trying again",
                    getattr(self.cache, "name", "?"),
                    breaker.failure_threshold,
                    exc,
                    breaker.reset_s,
                )
            else:
                self._failed_log.warning("cache %s failed: %s", operation, exc)
            return UNAVAILABLE
        except BaseException:
            breaker.release()
            raise
        if breaker.record_success():
            self._recovered()
        return result

    def _recovered(self) -> None:
        _log.warning(
            "cache %s: circuit breaker CLOSED: the cache answers again",
            getattr(self.cache, "name", "?"),
        )
        if self._distrust_on_recovery:
            self.distrust_before = self._wall_clock()
        if self._pending or self._overflow:
            self._start_repairer()

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> Entry | Miss:
        """The cache's answer, or MISS (cache unavailable, or the key awaits a replay)."""
        if self._pending and key in self._pending:
            self.fallbacks.inc()
            return MISS
        entry = self._call("get", self.cache.get, key)
        return MISS if entry is UNAVAILABLE else entry

    def get_many(self, keys: Sequence[str]) -> list[Entry | Miss]:
        """One answer per key, in order (MISS for what the cache cannot answer)."""
        entries = self.read_many(keys)
        return [MISS] * len(keys) if entries is None else entries

    def read_many(self, keys: Sequence[str]) -> list[Entry | Miss] | None:
        """Like `get_many`, but None when the cache did not answer (a caller that must know,
        such as a stream follower deciding what a change replaces)."""
        entries = self._call("get", self.cache.get_many, keys)
        if entries is UNAVAILABLE:
            return None
        if self._pending:
            pending = self._pending
            return [MISS if key in pending else e for key, e in zip(keys, entries, strict=True)]
        return entries

    def awaits_repair(self, key: str) -> bool:
        """Whether ``key`` awaits a replayed invalidation (the cache must not be used for it)."""
        return key in self._pending

    def read_token(self, key: str, seen: Entry | Miss) -> int:
        """The backend's fill token for a reader that saw ``seen``."""
        return self.cache.read_token(key, seen)

    def fill_many(self, fills: Sequence[Fill]) -> None:
        """Best effort: a failed fill only costs a later miss."""
        if self._pending:
            fills = [fill for fill in fills if fill.key not in self._pending]
        if fills:
            self._call("fill", self.cache.fill_many, fills)

    # -- writes ----------------------------------------------------------------------------

    def begin_write(
        self, keys: Sequence[str], intent: str, ttl_s: float, ordered: bool = False
    ) -> list[int] | None:
        """The writer's tokens, or None if the intent could not be registered."""
        tokens = self._call("begin write", self.cache.begin_write, keys, intent, ttl_s, ordered)
        return None if tokens is UNAVAILABLE else tokens

    def end_write(self, ends: Sequence[End], until: float) -> list[Outcome] | None:
        """End writes, retrying until the monotonic time ``until`` (when the intents expire
        in the cache); None if the cache never answered."""
        while True:
            outcomes = self._call("end write", self.cache.end_write, ends)
            if outcomes is not UNAVAILABLE:
                return outcomes
            left = until - self._clock()
            if left <= 0 or self._closing.is_set():
                return None
            self._sleep(min(self._repair_interval_s, left))

    def invalidate_until(self, keys: Sequence[str], until: float) -> bool:
        """Drop the keys' entries, retrying until the monotonic time ``until`` (one try if it
        has passed); False if the cache never answered (nothing is remembered: see
        `remember`)."""
        while True:
            if self._call("invalidate", self.cache.invalidate_many, keys) is not UNAVAILABLE:
                return True
            left = until - self._clock()
            if left <= 0 or self._closing.is_set():
                return False
            self._sleep(min(self._repair_interval_s, left))

    def invalidate(self, keys: Sequence[str]) -> bool:
        """Drop the keys' entries now, or remember them for the repairer; True if done now."""
        if self._call("invalidate", self.cache.invalidate_many, keys) is not UNAVAILABLE:
            return True
        self.remember(keys)
        return False

    def remember(self, keys: Sequence[str]) -> None:
        """Keys the cache must invalidate before it serves them again (replayed in the
        background; reads of them skip the cache meanwhile)."""
        with self._pending_lock:
            for key in keys:
                if len(self._pending) >= MAX_PENDING and key not in self._pending:
                    self._overflow = True
                    self._overflowed_at = next(self._pending_numbers)
                    continue
                self._pending[key] = next(self._pending_numbers)
        self._start_repairer()

    def delete_prefix(self, prefix: str) -> int:
        """Drop a whole prefix; raises `CacheUnavailable`-like errors as the backend does
        (an operator's call: the caller must know it did not happen)."""
        return self.cache.delete_prefix(prefix)

    # -- the repairer ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many keys await a replayed invalidation."""
        return len(self._pending)

    def repair_now(self) -> bool:
        """Replay pending invalidations once; True when nothing is pending any more."""
        with self._pending_lock:
            overflow = self._overflow
            batch = dict(itertools.islice(self._pending.items(), REPAIR_BATCH_KEYS))
            # Keys remembered from now on may be written after the wipe's scan passed them.
            mark = next(self._pending_numbers)
        if overflow:
            if self._call("replay (wipe)", self.cache.delete_prefix, "") is UNAVAILABLE:
                return False
            with self._pending_lock:
                if self._overflowed_at < mark:
                    self._overflow = False
                for key in [key for key, number in self._pending.items() if number < mark]:
                    del self._pending[key]
            self._repair_log.warning("cache: pending invalidations overflowed; namespace wiped")
            self.repairs.inc()
            return True
        if batch:
            if self._call("replay", self.cache.invalidate_many, list(batch)) is UNAVAILABLE:
                return False
            with self._pending_lock:
                for key, number in batch.items():
                    if self._pending.get(key) == number:
                        del self._pending[key]
            self.repairs.inc()
            self._repair_log.warning(
                "cache: replayed %d invalidations of writes made while it was unreachable",
                len(batch),
            )
        return not self._pending and not self._overflow

    def _start_repairer(self) -> None:
        """Start the one repairer thread, unless it runs (it exits only with nothing left)."""
        with self._pending_lock:
            if self._repairer is not None or self._closing.is_set():
                return
            self._repairer = threading.Thread(
                target=self._repair_loop, name="gateway-cache-repair", daemon=True
            )
            self._repairer.start()

    def _repair_loop(self) -> None:
        while not self._closing.is_set():
            if self.repair_now():
                with self._pending_lock:
                    if not self._pending and not self._overflow:
                        self._repairer = None
                        return
                continue
            self._closing.wait(self._repair_interval_s)

    def close(self) -> None:
        """Stop the repairer (after one last replay attempt) and close the backend."""
        self._closing.set()
        repairer = self._repairer
        if repairer is not None:
            repairer.join(timeout=1.0)
        if self._pending or self._overflow:
            self.repair_now()
        self.cache.close()
