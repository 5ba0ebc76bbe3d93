"""A circuit breaker for the cache tier: stop waiting on a cache that keeps failing.

Closed: every call goes to the cache. After ``failure_threshold`` consecutive failures it
opens: calls skip the cache (the gateway serves from DynamoDB) for ``reset_s`` seconds. Then
one trial call is let through (half-open): success closes it, failure opens it again.

Every ``allow()`` that answered True must be followed by exactly one of ``record_success()``,
``record_failure()`` or ``release()`` (the call was interrupted before it had an outcome):
otherwise a half-open breaker would wait for its trial forever. `gateway.resilience` is the
one place that calls them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker with an injected monotonic clock."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._trial_owner = 0
        #: Incremented every time the breaker opens (lets callers notice an outage happened).
        self.outages = 0

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self.reset_s:
            return HALF_OPEN
        return OPEN

    @property
    def trial_in_flight(self) -> bool:
        """Whether the half-open trial call has been let through and has no outcome yet."""
        return self._trial_in_flight

    def allow(self) -> bool:
        """Whether a call may go to the cache now (lock-free when closed: the hit path)."""
        if self._opened_at is None:
            return True
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.reset_s or self._trial_in_flight:
                return False
            self._trial_in_flight = True
            self._trial_owner = threading.get_ident()
            return True

    def record_success(self) -> bool:
        """Note a successful call; True if this closed an open breaker (the cache is back)."""
        if self._opened_at is None and self._failures == 0:
            return False
        with self._lock:
            recovered = self._opened_at is not None
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False
            return recovered

    def record_failure(self) -> bool:
        """Note a failed call; opens the breaker at the threshold (or on a failed trial).
        True if this opened a closed breaker."""
        with self._lock:
            self._failures += 1
            self._trial_in_flight = False
            if self._opened_at is not None or self._failures >= self.failure_threshold:
                opened = self._opened_at is None
                if opened:
                    self.outages += 1
                self._opened_at = self._clock()
                return opened
            return False

    def release(self) -> None:
        """A call let through ended without an outcome (interrupted): if it was the trial,
        free it for the next call."""
        if self._trial_in_flight:
            with self._lock:
                if self._trial_owner == threading.get_ident():
                    self._trial_in_flight = False
