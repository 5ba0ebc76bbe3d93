"""`get_database_service`: Settings -> the bare DynamoDBService, or a caching gateway around it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

from gateway.breaker import CircuitBreaker
from gateway.caches.base import CacheBackend
from gateway.caches.memory import MemoryCache
from gateway.caches.partitioned import PartitionedMemoryCache
from gateway.config import Settings
from gateway.dynamodb import DynamoDBService
from gateway.errors import ConfigError
from gateway.gateway import DEFAULT_FILL_DEADLINE_S, CachingGateway
from gateway.retry import RetryBudget, RetryPolicy
from gateway.service import DatabaseService
from gateway.streams.follower import VIEW_TYPE as STREAM_VIEW_TYPE
from gateway.tables import IndexSpec

if TYPE_CHECKING:  # redis-py is an optional extra: imported where it is used
    from gateway.caches.redis_cache import RedisCache


def build_dynamodb_service(settings: Settings, *, data_resource: object = None) -> DynamoDBService:
    """The bare DynamoDB service described by ``settings``."""
    indexes = {
        db_name: {
            name: IndexSpec(attribute=index.attribute, type=index.type)
            for name, index in collection.indexes.items()
        }
        for db_name, collection in settings.COLLECTIONS.items()
    }
    retry = settings.RETRY
    coalescing = settings.COALESCING
    policy = RetryPolicy(
        max_attempts=retry.max_attempts,
        base_s=retry.base_seconds,
        cap_s=retry.cap_seconds,
        deadline_s=retry.deadline_seconds,
        budget=RetryBudget(
            capacity=retry.budget_capacity,
            retry_cost=retry.budget_retry_cost,
            timeout_cost=retry.budget_timeout_cost,
        ),
    )
    return DynamoDBService(
        region_name=settings.DYNAMODB_REGION,
        endpoint_url=settings.DYNAMODB_ENDPOINT_URL,
        table_prefix=settings.DYNAMODB_TABLE_PREFIX,
        native_numbers=settings.NATIVE_NUMBERS,
        consistent_read=settings.DYNAMODB_CONSISTENT_READ,
        indexes=indexes,
        retry_policy=policy,
        data_resource=data_resource,
        connect_timeout_s=settings.DYNAMODB_CONNECT_TIMEOUT_S,
        read_timeout_s=settings.DYNAMODB_READ_TIMEOUT_S,
        max_pool_connections=settings.DYNAMODB_MAX_POOL_CONNECTIONS,
        coalesce_reads=coalescing.reads,
        coalesce_writes=coalescing.writes,
        coalesce_max_wait_s=coalescing.max_wait_ms / 1000.0,
        max_batch_get=coalescing.max_batch_get,
        max_batch_write=coalescing.max_batch_write,
        bulk_max_in_flight=settings.BULK_MAX_IN_FLIGHT,
        stream_view_type=STREAM_VIEW_TYPE if settings.STREAMS_INVALIDATION else None,
    )


def get_database_service(settings: Settings | None = None) -> DatabaseService:
    """The service ``settings`` describe: bare DynamoDB, or a caching gateway in front of it."""
    settings = settings if settings is not None else Settings()
    if settings.DATABASE_PROVIDER != "dynamodb":
        raise ConfigError(
            f"DATABASE_PROVIDER={settings.DATABASE_PROVIDER!r} is not supported: use 'dynamodb'."
        )
    backend = settings.CACHE_BACKEND
    if backend == "none":
        return build_dynamodb_service(settings)
    if backend == "dax":
        from gateway.dax import build_dax_service

        return build_dax_service(settings)
    cache = build_cache(settings)
    try:
        service = build_dynamodb_service(settings)
    except BaseException:
        cache.close()
        raise
    try:
        return build_gateway(settings, service, cache)
    except BaseException:
        cache.close()
        service.close()
        raise


def build_gateway(
    settings: Settings,
    service: DynamoDBService,
    cache: CacheBackend,
    *,
    fill_deadline_s: float = DEFAULT_FILL_DEADLINE_S,
    stream_lease_s: float | None = None,
) -> CachingGateway:
    """A caching gateway in front of ``service`` with the settings' policies and breaker,
    following the collections' streams when ``STREAMS_INVALIDATION`` is on (``fill_deadline_s``
    and the streams' lease, None for the default, are for tests)."""
    gateway = CachingGateway(
        service,
        cache,
        policy_for=settings.cache_policy,
        breaker=CircuitBreaker(
            failure_threshold=settings.REDIS_BREAKER_FAILURES,
            reset_s=settings.REDIS_BREAKER_RESET_S,
        ),
        intent_ttl_s=settings.CACHE_WRITE_INTENT_S,
        fill_deadline_s=fill_deadline_s,
        unreachable_writes=_unreachable_writes(settings),
        max_query_bytes=settings.CACHE_MAX_QUERY_BYTES,
        query_invalidation=settings.CACHE_QUERY_INVALIDATION,
    )
    if settings.STREAMS_INVALIDATION:
        from gateway.streams.setup import build_follower

        gateway.follow_streams(build_follower(settings, gateway, lease_s=stream_lease_s))
    return gateway


def _unreachable_writes(settings: Settings) -> Literal["refuse", "accept"]:
    """The setting; ``"accept"`` when streams are followed: every instance then hears of the
    write through the stream (fail-open, as the contract says)."""
    return "accept" if settings.STREAMS_INVALIDATION else settings.CACHE_UNREACHABLE_WRITES


def build_cache(settings: Settings) -> CacheBackend:
    """The cache backend named by ``CACHE_BACKEND`` (memory, redis or tiered)."""
    backend = settings.CACHE_BACKEND
    if backend == "memory":
        return memory_tier(settings)
    if backend == "redis":
        return _redis_cache(settings)
    if backend == "tiered":
        from gateway.caches.tiered import TieredCache

        # A partitioned in-process tier has MemoryCache's interface (duck-typed).
        return TieredCache(cast(MemoryCache, memory_tier(settings)), _redis_cache(settings))
    raise ConfigError(
        f"CACHE_BACKEND={backend!r} has no cache tier: use none, memory, redis, tiered or dax."
    )


def memory_tier(settings: Settings) -> MemoryCache | PartitionedMemoryCache:
    """The in-process tier: one cache, or one more per collection that sets its own
    ``max_items`` (each also bounded by ``cache.max_bytes``)."""
    shared = MemoryCache(max_items=settings.CACHE_MAX_ITEMS, max_bytes=settings.CACHE_MAX_BYTES)
    partitions = {
        settings.DYNAMODB_TABLE_PREFIX + db_name: MemoryCache(
            max_items=collection.cache.max_items, max_bytes=settings.CACHE_MAX_BYTES
        )
        for db_name, collection in settings.COLLECTIONS.items()
        if collection.cache is not None and collection.cache.max_items is not None
    }
    return PartitionedMemoryCache(shared, partitions) if partitions else shared


def _redis_cache(settings: Settings) -> RedisCache:
    try:
        from gateway.caches.redis_cache import RedisCache
    except ImportError as exc:  # redis-py is an optional extra
        raise ConfigError(
            f"CACHE_BACKEND={settings.CACHE_BACKEND!r} needs redis-py: "
            "pip install 'dynamodb-gateway[redis]'"
        ) from exc
    return RedisCache(
        settings.REDIS_URL,
        key_prefix=settings.REDIS_KEY_PREFIX,
        timeout_s=settings.REDIS_TIMEOUT_S,
    )
