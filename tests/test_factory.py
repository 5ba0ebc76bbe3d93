"""`get_database_service`: Settings in, a drop-in DatabaseService out, for every backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway import DatabaseService, DynamoDBService, Settings, get_database_service
from gateway.caches.memory import MemoryCache
from gateway.caches.partitioned import PartitionedMemoryCache
from gateway.emulator import free_port
from gateway.errors import ServiceUnavailableError
from gateway.gateway import CachingGateway


def _original_application_code(db: DatabaseService) -> dict[str, Any]:
    """Code written against the original DynamoDBService: it must work unchanged."""
    result = db.save("orders", "o1", {"total": 12.5, "items": ["a", "b"]})
    assert result["id"] == "o1"
    doc = db.get("orders", "o1")
    assert doc is not None and doc["_rev"] == result["rev"]
    assert [d["_id"] for d in db.list_all("orders")] == ["o1"]
    assert db.delete("orders", "o1") is True
    assert db.get("orders", "o1") is None
    return db.stats()


def test_no_cache_gives_the_bare_service(moto_server: Any, table_prefix: str) -> None:
    settings = Settings(
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url, DYNAMODB_TABLE_PREFIX=table_prefix
    )
    with get_database_service(settings) as db:
        assert isinstance(db, DynamoDBService)
        stats = _original_application_code(db)
        assert stats["hits"] == 0 and stats["db_calls"]["PutItem"] == 1


@pytest.mark.parametrize("backend", ["memory", "redis", "tiered"])
def test_each_cache_backend_is_a_drop_in(
    backend: str, moto_server: Any, table_prefix: str, redis_url: str
) -> None:
    settings = Settings(
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url,
        DYNAMODB_TABLE_PREFIX=table_prefix,
        CACHE_BACKEND=backend,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=f"factory-{table_prefix}",
    )
    with get_database_service(settings) as db:
        assert isinstance(db, CachingGateway)
        assert isinstance(db, DatabaseService)
        assert db.cache.name == backend
        stats = _original_application_code(db)
        assert stats["hits"] >= 1 and stats["cache_backend"] == backend


def test_yaml_configuration(moto_server: Any, table_prefix: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""
dynamodb:
  endpoint_url: {moto_server.endpoint_url}
  table_prefix: {table_prefix}
cache:
  backend: memory
  ttl_seconds: 60
collections:
  users:
    indexes:
      by_email: {{attribute: email, type: S}}
    cache: {{max_items: 2}}
  audit:
    cache: {{enabled: false}}
"""
    )
    with get_database_service(Settings.from_yaml(config)) as db:
        assert isinstance(db, CachingGateway)
        cache = db.cache
        assert isinstance(cache, PartitionedMemoryCache)
        for i in range(5):
            db.save("users", f"u{i}", {"email": f"u{i}@example.com"})
        assert db.query("users", "by_email", "u3@example.com")[0]["_id"] == "u3"
        # The users collection is bounded to 2 entries of its own.
        assert cache.stats()["partitions"][f"{table_prefix}users"]["items"] <= 2
        db.save("audit", "a1", {"v": 1})
        db.get("audit", "a1")
        db.get("audit", "a1")
        calls = db.stats()["db_calls"]
        # Caching is disabled for audit: both reads reach DynamoDB (read coalescing, on by
        # default, sends a lone get as a one-key BatchGetItem).
        assert calls.get("GetItem", 0) + calls.get("BatchGetItem", 0) == 2


def test_unreachable_redis_still_serves_reads_and_refuses_writes(
    moto_server: Any, table_prefix: str, dynamodb_client: Any
) -> None:
    """Redis down at start-up: the gateway is built and serves reads from DynamoDB; a write
    is refused (the default), nothing written, since other instances could not hear of it."""
    settings = Settings(
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url,
        DYNAMODB_TABLE_PREFIX=table_prefix,
        CACHE_BACKEND="redis",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    with get_database_service(settings) as db:
        DynamoDBService(
            endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix
        ).save("orders", "o1", {"total": 1})
        assert db.get("orders", "o1")["total"] == 1  # type: ignore[index]
        with pytest.raises(ServiceUnavailableError, match="nothing was written"):
            db.save("orders", "o1", {"total": 2})
        assert db.get("orders", "o1")["total"] == 1  # type: ignore[index]
        stats = db.stats()
        assert stats["cache_errors"] >= 1 and stats["writes_refused"] == 1


def test_unreachable_redis_with_accepted_writes(moto_server: Any, table_prefix: str) -> None:
    """``unreachable_writes: accept``: the original application code works unchanged."""
    settings = Settings(
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url,
        DYNAMODB_TABLE_PREFIX=table_prefix,
        CACHE_BACKEND="redis",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        CACHE_UNREACHABLE_WRITES="accept",
    )
    with get_database_service(settings) as db:
        _original_application_code(db)
        assert db.stats()["cache_errors"] >= 1


def test_memory_backend_without_collection_bounds_is_one_cache(moto_server: Any) -> None:
    settings = Settings(DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url, CACHE_BACKEND="memory")
    with get_database_service(settings) as db:
        assert isinstance(db.cache, MemoryCache)  # type: ignore[attr-defined]


def test_a_collection_with_its_own_max_items_keeps_the_byte_bound(
    moto_server: Any, table_prefix: str
) -> None:
    """``collections.<name>.cache.max_items`` gives the collection a tier of its own, which
    ``cache.max_bytes`` bounds too (found by review: it had no byte bound at all)."""
    settings = Settings(
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url,
        DYNAMODB_TABLE_PREFIX=table_prefix,
        CACHE_BACKEND="memory",
        CACHE_MAX_BYTES=20_000,
        COLLECTIONS={"users": {"cache": {"max_items": 1000}}},
    )
    with get_database_service(settings) as db:
        for i in range(60):
            db.save("users", f"u{i}", {"pad": "x" * 1000})
        assert db.stats()["evictions"] > 0
        assert db.cache.stats()["partitions"][f"{table_prefix}users"]["items"] < 30
