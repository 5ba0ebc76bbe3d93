"""Builders shared by the caching-gateway tests: a bare service and gateways over each backend."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.breaker import CircuitBreaker
from gateway.caches.base import CacheBackend
from gateway.dynamodb import DynamoDBService
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
