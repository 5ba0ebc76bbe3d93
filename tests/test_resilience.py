"""GuardedCache on its own: the replay of pending invalidations and the rate-limited warnings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

import gateway.resilience as resilience
from gateway.caches.memory import MemoryCache
from gateway.resilience import GuardedCache, RateLimitedLog


class WipeDuring(MemoryCache):
    """A real in-process backend whose `delete_prefix` lets the test act in the middle."""

    __slots__ = ("during",)

    def delete_prefix(self, prefix: str) -> int:
        self.during()
        return super().delete_prefix(prefix)


def test_keys_remembered_while_an_overflow_wipe_runs_stay_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_PENDING the replay wipes the namespace; a key remembered while the wipe runs
    (after its scan passed) must still be invalidated afterwards (found by review)."""
    monkeypatch.setattr(resilience, "MAX_PENDING", 2)
    cache = WipeDuring()
    guard = GuardedCache(cache, repair_interval_s=3600.0)
    guard._closing.set()  # no background repairer: the test replays by hand
    guard.remember(["a", "b", "c"])  # "c" does not fit: overflow
    cache.during = lambda: guard.remember(["a"])  # written again while the wipe runs
    guard.repair_now()
    assert guard.pending == 1  # "a" is still to be invalidated
    cache.during = lambda: None
    assert guard.repair_now() is True
    assert guard.pending == 0


def test_an_overflow_during_the_wipe_keeps_the_next_wipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resilience, "MAX_PENDING", 1)
    cache = WipeDuring()
    guard = GuardedCache(cache, repair_interval_s=3600.0)
    guard._closing.set()
    guard.remember(["a", "b"])
    cache.during = lambda: guard.remember(["x", "y"])  # overflows again mid-wipe
    guard.repair_now()
    cache.during = lambda: None
    assert guard.repair_now() is True  # wiped once more
    assert guard.pending == 0


def test_rate_limited_warnings_say_how_many_were_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = RateLimitedLog(10.0, lambda: now[0])
    caplog.set_level(logging.WARNING, logger="gateway")
    for _ in range(5):
        log.warning("cache %s failed", "get")
    now[0] += 10.0
    log.warning("cache %s failed", "get")
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.cache"]
    assert messages == ["cache get failed", "cache get failed (4 similar messages suppressed)"]


class Failing(MemoryCache):
    __slots__ = ()

    def get(self, key: str) -> Any:
        raise resilience_error()

    def invalidate_many(self, keys: Sequence[str]) -> None:
        raise resilience_error()


def resilience_error() -> Exception:
    from gateway.caches.errors import CacheUnavailable

    return CacheUnavailable("down", operation="test")


def test_failures_never_reach_the_caller_and_are_remembered() -> None:
    guard = GuardedCache(Failing(), repair_interval_s=3600.0)
    try:
        assert guard.get("k") is resilience.MISS
        assert guard.invalidate(["k"]) is False
        assert guard.pending == 1 and guard.errors.value == 2
    finally:
        guard._closing.set()
