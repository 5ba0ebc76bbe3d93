"""Builders shared by the caching-gateway tests: a bare service and gateways over each backend,
and the tools of the concurrency tests (a worker thread, a polling wait, a gated backend)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gateway.breaker import CircuitBreaker
from gateway.caches.base import CacheBackend, End, Fill, Outcome
from gateway.dynamodb import DynamoDBService
from gateway.errors import GatewayError
from gateway.gateway import CachingGateway
from gateway.retry import RetryPolicy

_redis_prefixes = itertools.count()


@dataclass(frozen=True)
class Policy:
    """A cache policy with explicit values (tests do not go through Settings)."""

    enabled: bool = True
    ttl_s: float = 300.0
    negative_ttl_s: float = 30.0
    jitter: float = 0.1
    cache_queries: bool = True


def make_service(endpoint_url: str, table_prefix: str, **kwargs: object) -> DynamoDBService:
    """A bare service on the emulator with a fast retry policy."""
    kwargs.setdefault("retry_policy", RetryPolicy(max_attempts=4, base_s=0.001, cap_s=0.01))
    return DynamoDBService(endpoint_url=endpoint_url, table_prefix=table_prefix, **kwargs)  # type: ignore[arg-type]


def make_cache(kind: str, redis_url: str | None, key_prefix: str) -> CacheBackend:
    """A fresh cache backend of ``kind`` (memory, redis, tiered)."""
    from gateway.caches.memory import MemoryCache

    if kind == "memory":
        return MemoryCache(max_items=10_000)
    assert redis_url is not None
    from gateway.caches.redis_cache import RedisCache

    redis_cache = RedisCache(redis_url, key_prefix=key_prefix, timeout_s=0.2)
    if kind == "redis":
        return redis_cache
    from gateway.caches.tiered import TieredCache

    return TieredCache(MemoryCache(max_items=10_000), redis_cache)


@contextmanager
def gateways(
    kind: str,
    endpoint_url: str,
    table_prefix: str,
    redis_url: str | None,
    count: int = 1,
    policy: Policy | None = None,
    breaker: Callable[[], CircuitBreaker] | None = None,
    **service_kwargs: object,
) -> Iterator[list[CachingGateway]]:
    """``count`` gateway instances sharing one cache namespace (Redis) but nothing in process."""
    key_prefix = f"test{next(_redis_prefixes)}:{table_prefix}"
    built: list[CachingGateway] = []
    the_policy = policy or Policy()
    try:
        for _ in range(count):
            built.append(
                CachingGateway(
                    make_service(endpoint_url, table_prefix, **service_kwargs),
                    make_cache(kind, redis_url, key_prefix),
                    policy_for=lambda _db: the_policy,
                    breaker=breaker() if breaker else None,
                )
            )
        yield built
    finally:
        for gw in built:
            gw.close()


#: How long the concurrency helpers below wait before calling a test stuck.
TIMEOUT_S = 10.0


def race(
    gws: Sequence[CachingGateway],
    operation: Callable[[CachingGateway, random.Random, int], None],
    *,
    seed: int,
    seconds: float,
    threads: int = 8,
) -> None:
    """Run ``operation(gateway, rng, n)`` in a loop from ``threads`` threads (thread i on
    ``gws[i % len(gws)]``, its own seeded rng) for ``seconds``; a `GatewayError` (a call that
    failed past its retries) is fine, anything else fails the test."""
    stop = threading.Event()
    unexpected: list[BaseException] = []

    def worker(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        gw = gws[index % len(gws)]
        n = 0
        while not stop.is_set():
            n += 1
            try:
                operation(gw, rng, n)
            except GatewayError:
                pass
            except BaseException as exc:
                unexpected.append(exc)
                return

    running = [threading.Thread(target=worker, args=(i,), name=f"w{i}") for i in range(threads)]
    for thread in running:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in running:
        thread.join(30)
    assert not unexpected, unexpected


def wait_for(condition: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    """Poll ``condition`` until it holds (a deadline, not a synchronization sleep)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


class Worker(threading.Thread):
    """Runs ``fn`` in a thread, keeping its result or exception for `outcome`."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> Any:
        self.join(TIMEOUT_S)
        assert not self.is_alive(), "worker still running"
        if self.error is not None:
            raise self.error
        return self.result


class GatedCache:
    """A real cache backend with gates: ``pause_end`` holds matching `end_write` calls and
    ``pause_fill`` matching `fill_many` calls until released; ``interrupt`` raises a
    BaseException from one named call, once. Everything else is delegated unchanged."""

    def __init__(self, inner: CacheBackend) -> None:
        self.inner = inner
        self.pause_end: Callable[[Sequence[End]], bool] = lambda ends: False
        self.end_reached = threading.Event()
        self.end_release = threading.Event()
        self.pause_fill: Callable[[Sequence[Fill]], bool] = lambda fills: False
        self.fill_reached = threading.Event()
        self.fill_release = threading.Event()
        self.interrupt: dict[str, BaseException] = {}
        self.calls: list[tuple[str, str]] = []  # (method, thread name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _maybe_interrupt(self, method: str) -> None:
        self.calls.append((method, threading.current_thread().name))
        exc = self.interrupt.pop(method, None)
        if exc is not None:
            raise exc

    def get(self, key: str) -> Any:
        self._maybe_interrupt("get")
        return self.inner.get(key)

    def get_many(self, keys: Sequence[str]) -> Any:
        self._maybe_interrupt("get_many")
        return self.inner.get_many(keys)

    def fill_many(self, fills: Sequence[Fill]) -> None:
        self._maybe_interrupt("fill_many")
        if self.pause_fill(fills):
            self.fill_reached.set()
            assert self.fill_release.wait(TIMEOUT_S)
        self.inner.fill_many(fills)

    def invalidate_many(self, keys: Sequence[str]) -> None:
        self._maybe_interrupt("invalidate_many")
        self.inner.invalidate_many(keys)

    def end_write(self, ends: Sequence[End]) -> list[Outcome]:
        self._maybe_interrupt("end_write")
        if self.pause_end(ends):
            self.end_reached.set()
            assert self.end_release.wait(TIMEOUT_S)
        return self.inner.end_write(ends)


@contextmanager
def one_gateway(
    backend: CacheBackend, endpoint_url: str, table_prefix: str, **kwargs: Any
) -> Iterator[CachingGateway]:
    policy = Policy(jitter=0.0)
    gw = CachingGateway(
        make_service(endpoint_url, table_prefix), backend, policy_for=lambda _db: policy, **kwargs
    )
    try:
        yield gw
    finally:
        gw.close()


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads released together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
