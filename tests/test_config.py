"""Settings: the three forms, precedence, validation messages, secrets, per-collection helpers."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import threading
import traceback
from pathlib import Path
from typing import Any

import pydantic
import pytest

from gateway.config import (
    ENV_CONFIG_PATH,
    YAML_PATHS,
    CachePolicy,
    CollectionConfig,
    IndexConfig,
    ResolvedCachePolicy,
    RetryConfig,
    Settings,
    redact_url,
)
from gateway.errors import ConfigError, GatewayError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_YAML = REPO_ROOT / "config" / "gateway.yaml"
SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the developer's environment."""
    for name in (*Settings.model_fields, ENV_CONFIG_PATH, "PYDANTIC_SETTINGS_DEBUG"):
        monkeypatch.delenv(name, raising=False)


def write_yaml(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(fn: Any, *args: Any, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


# -------------------------------------------------------------------------------------------
# Defaults and the three forms
# -------------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = Settings()
    assert s.DATABASE_PROVIDER == "dynamodb"
    assert s.DYNAMODB_REGION == "us-east-1"
    assert s.DYNAMODB_ENDPOINT_URL is None
    assert s.DYNAMODB_TABLE_PREFIX == ""
    assert s.CACHE_BACKEND == "none"
    assert s.REDIS_URL == "redis://127.0.0.1:6379/0"
    assert s.DAX_ENDPOINT_URL is None
    assert s.NATIVE_NUMBERS is False
    assert s.DYNAMODB_CONSISTENT_READ is True
    assert s.DYNAMODB_CONNECT_TIMEOUT_S == 2.0
    assert s.DYNAMODB_READ_TIMEOUT_S == 5.0
    assert s.DYNAMODB_MAX_POOL_CONNECTIONS == 50
    assert s.CACHE_TTL_S == 300
    assert s.CACHE_NEGATIVE_TTL_S == 30
    assert s.CACHE_TTL_JITTER == 0.1
    assert s.CACHE_MAX_ITEMS == 100_000
    assert s.CACHE_MAX_BYTES == 256 * 1024 * 1024
    assert s.CACHE_CACHE_QUERIES is True
    assert s.REDIS_KEY_PREFIX == "gw:"
    assert s.REDIS_TIMEOUT_S == 0.05
    assert s.REDIS_BREAKER_FAILURES == 5
    assert s.REDIS_BREAKER_RESET_S == 5.0
    assert s.DAX_MEMORY_TIER is False
    assert s.COLLECTIONS == {}
    assert (
        RetryConfig(
            max_attempts=8,
            base_seconds=0.025,
            cap_seconds=2.0,
            deadline_seconds=10.0,
            budget_capacity=500,
            budget_retry_cost=5,
            budget_timeout_cost=10,
        )
        == s.RETRY
    )
    assert s.COALESCING.model_dump() == {
        "reads": True,
        "writes": False,
        "max_wait_ms": 0.0,
        "max_batch_get": 100,
        "max_batch_write": 25,
    }


def test_keyword_form() -> None:
    s = Settings(
        DATABASE_PROVIDER="dynamodb",
        DYNAMODB_REGION="eu-west-1",
        DYNAMODB_ENDPOINT_URL="http://localhost:8000",
        CACHE_BACKEND="tiered",
        RETRY={"max_attempts": 3},
        COLLECTIONS={"users": {"indexes": {"by_email": {"attribute": "email"}}}},
    )
    assert s.DYNAMODB_REGION == "eu-west-1"
    assert s.DYNAMODB_ENDPOINT_URL == "http://localhost:8000"
    assert s.CACHE_BACKEND == "tiered"
    assert s.RETRY.max_attempts == 3
    assert s.RETRY.base_seconds == 0.025
    assert s.COLLECTIONS["users"].indexes["by_email"] == IndexConfig(attribute="email", type="S")


def test_environment_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNAMODB_REGION", "ap-southeast-2")
    monkeypatch.setenv("CACHE_BACKEND", "redis")
    monkeypatch.setenv("NATIVE_NUMBERS", "true")
    monkeypatch.setenv("CACHE_TTL_S", "12.5")
    monkeypatch.setenv("CACHE_MAX_ITEMS", "42")
    monkeypatch.setenv("RETRY", '{"max_attempts": 2, "deadline_seconds": 1}')
    monkeypatch.setenv("COALESCING", '{"writes": true, "reads": false}')
    monkeypatch.setenv(
        "COLLECTIONS",
        '{"orders": {"indexes": {"by_customer": {"attribute": "cust", "type": "N"}}}}',
    )
    s = Settings()
    assert s.DYNAMODB_REGION == "ap-southeast-2"
    assert s.CACHE_BACKEND == "redis"
    assert s.NATIVE_NUMBERS is True
    assert s.CACHE_TTL_S == 12.5
    assert s.CACHE_MAX_ITEMS == 42
    assert (s.RETRY.max_attempts, s.RETRY.deadline_seconds) == (2, 1.0)
    assert s.COALESCING.writes is True and s.COALESCING.reads is False
    assert s.collection("orders").indexes["by_customer"].type == "N"


def test_environment_names_are_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("cache_backend", "redis")
    assert Settings().CACHE_BACKEND == "none"


def test_empty_endpoint_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # `DAX_ENDPOINT_URL=` in a compose file: "not set", not "an empty URL".
    monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", "")
    monkeypatch.setenv("DAX_ENDPOINT_URL", "")
    s = Settings()
    assert s.DYNAMODB_ENDPOINT_URL is None and s.DAX_ENDPOINT_URL is None


FULL_YAML = """\
provider: dynamodb
dynamodb:
  region: eu-central-1
  endpoint_url: http://localhost:8000
  table_prefix: test_
  consistent_read: false
  connect_timeout_seconds: 1
  read_timeout_seconds: 3
  max_pool_connections: 10
cache:
  backend: dax
  ttl_seconds: 60
  negative_ttl_seconds: 5
  ttl_jitter: 0.2
  max_items: 1000
  max_bytes: 1048576
  cache_queries: false
  max_query_bytes: 65536
  query_invalidation: collection
  redis_url: rediss://:pw@cache.example.com:6380/2
  redis_key_prefix: "app:"
  redis_timeout_seconds: 0.1
  breaker_failures: 3
  breaker_reset_seconds: 2
  write_intent_seconds: 3
  unreachable_writes: accept
  dax_endpoint_url: daxs://my-cluster.abc123.dax-clusters.eu-central-1.amazonaws.com
  dax_memory_tier: true
  streams_invalidation: false
numbers:
  native: true
collections:
  users:
    indexes:
      by_email: {attribute: email}
    cache: {ttl_seconds: 10, max_items: 50, cache_queries: true}
retry:
  max_attempts: 4
  cap_seconds: 1
coalescing:
  max_wait_ms: 2
  max_batch_write: 10
bulk:
  max_in_flight: 4
"""


def test_yaml_form_every_key(tmp_path: Path) -> None:
    s = Settings.from_yaml(write_yaml(tmp_path, FULL_YAML))
    assert s.model_dump() == {
        "DATABASE_PROVIDER": "dynamodb",
        "DYNAMODB_REGION": "eu-central-1",
        "DYNAMODB_ENDPOINT_URL": "http://localhost:8000",
        "DYNAMODB_TABLE_PREFIX": "test_",
        "CACHE_BACKEND": "dax",
        "STREAMS_INVALIDATION": False,
        "REDIS_URL": "rediss://:pw@cache.example.com:6380/2",
        "DAX_ENDPOINT_URL": "daxs://my-cluster.abc123.dax-clusters.eu-central-1.amazonaws.com",
        "NATIVE_NUMBERS": True,
        "DYNAMODB_CONSISTENT_READ": False,
        "DYNAMODB_CONNECT_TIMEOUT_S": 1.0,
        "DYNAMODB_READ_TIMEOUT_S": 3.0,
        "DYNAMODB_MAX_POOL_CONNECTIONS": 10,
        "CACHE_TTL_S": 60.0,
        "CACHE_NEGATIVE_TTL_S": 5.0,
        "CACHE_TTL_JITTER": 0.2,
        "CACHE_MAX_ITEMS": 1000,
        "CACHE_MAX_BYTES": 1048576,
        "CACHE_CACHE_QUERIES": False,
        "CACHE_MAX_QUERY_BYTES": 65536,
        "CACHE_QUERY_INVALIDATION": "collection",
        "BULK_MAX_IN_FLIGHT": 4,
        "REDIS_KEY_PREFIX": "app:",
        "REDIS_TIMEOUT_S": 0.1,
        "REDIS_BREAKER_FAILURES": 3,
        "REDIS_BREAKER_RESET_S": 2.0,
        "CACHE_WRITE_INTENT_S": 3.0,
        "CACHE_UNREACHABLE_WRITES": "accept",
        "DAX_MEMORY_TIER": True,
        "COLLECTIONS": {
            "users": {
                "indexes": {"by_email": {"attribute": "email", "type": "S"}},
                "cache": {
                    "enabled": True,
                    "ttl_seconds": 10.0,
                    "negative_ttl_seconds": None,
                    "max_items": 50,
                    "cache_queries": True,
                },
            }
        },
        "RETRY": RetryConfig(max_attempts=4, cap_seconds=1).model_dump(),
        "COALESCING": {
            "reads": True,
            "writes": False,
            "max_wait_ms": 2.0,
            "max_batch_get": 100,
            "max_batch_write": 10,
        },
    }


def test_write_intents_outlive_the_fill_deadline(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="write_intent_seconds"):
        Settings.from_yaml(write_yaml(tmp_path, "cache:\n  write_intent_seconds: 1\n"))


def test_streams_invalidation_from_yaml_env_and_keyword(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, "cache:\n  backend: redis\n  streams_invalidation: true\n")
    assert Settings.from_yaml(path).STREAMS_INVALIDATION is True
    assert Settings.from_yaml(path, STREAMS_INVALIDATION=False).STREAMS_INVALIDATION is False
    monkeypatch.setenv("STREAMS_INVALIDATION", "true")
    assert Settings(CACHE_BACKEND="memory").STREAMS_INVALIDATION is True


@pytest.mark.parametrize("backend", ["none", "dax"])
def test_streams_invalidation_needs_a_cache_it_can_update(backend: str) -> None:
    extra = {"DAX_ENDPOINT_URL": "dax://localhost:8111"} if backend == "dax" else {}
    with pytest.raises(ConfigError, match=r"STREAMS_INVALIDATION .*memory, redis or tiered"):
        Settings(CACHE_BACKEND=backend, STREAMS_INVALIDATION=True, **extra)


def test_unreachable_writes_takes_only_refuse_or_accept(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unreachable_writes"):
        Settings.from_yaml(write_yaml(tmp_path, "cache:\n  unreachable_writes: sometimes\n"))


def test_yaml_mapping_table_covers_every_field_once() -> None:
    assert sorted(YAML_PATHS.values()) == sorted(Settings.model_fields)


def test_gateway_config_env_names_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, "cache:\n  backend: memory\n  ttl_seconds: 7\n")
    monkeypatch.setenv(ENV_CONFIG_PATH, str(path))
    s = Settings()
    assert (s.CACHE_BACKEND, s.CACHE_TTL_S) == ("memory", 7.0)


def test_from_yaml_path_replaces_gateway_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        ENV_CONFIG_PATH, str(write_yaml(tmp_path, "cache: {ttl_seconds: 1}", "a.yaml"))
    )
    s = Settings.from_yaml(write_yaml(tmp_path, "cache: {ttl_seconds: 2}", "b.yaml"))
    assert s.CACHE_TTL_S == 2.0
    # ... and only for that call: the next plain construction reads GATEWAY_CONFIG again.
    assert Settings().CACHE_TTL_S == 1.0


def test_from_yaml_relative_path_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_yaml(tmp_path, "dynamodb: {region: eu-west-3, table_prefix: a_}")
    monkeypatch.chdir(tmp_path)
    s = Settings.from_yaml("gateway.yaml", DYNAMODB_TABLE_PREFIX="b_")
    assert (s.DYNAMODB_REGION, s.DYNAMODB_TABLE_PREFIX) == ("eu-west-3", "b_")


@pytest.mark.parametrize(
    "text",
    ["", "# only comments\n", "dynamodb:\ncache:\n", "collections:\nretry:\n"],
    ids=["empty", "comments", "empty-sections", "null-nested"],
)
def test_yaml_without_values_gives_defaults(tmp_path: Path, text: str) -> None:
    assert Settings.from_yaml(write_yaml(tmp_path, text)) == Settings()


def test_from_yaml_is_isolated_per_thread(tmp_path: Path) -> None:
    paths = {n: write_yaml(tmp_path, f"cache: {{ttl_seconds: {n}}}", f"{n}.yaml") for n in (1, 2)}
    barrier = threading.Barrier(2, timeout=30)
    seen: dict[int, set[float]] = {1: set(), 2: set()}

    def load(n: int) -> None:
        for _ in range(20):
            barrier.wait()
            seen[n].add(Settings.from_yaml(paths[n]).CACHE_TTL_S)

    threads = [threading.Thread(target=load, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert seen == {1: {1.0}, 2: {2.0}}


def test_nothing_is_loaded_at_import_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh interpreter, so the module really is imported under a broken configuration.
    monkeypatch.setenv(ENV_CONFIG_PATH, "/nonexistent/gateway.yaml")
    monkeypatch.setenv("CACHE_TTL_S", "not a number")
    code = (
        "import gateway.config as c\n"
        "try:\n    c.Settings()\nexcept c.ConfigError:\n    print('deferred')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deferred"


# -------------------------------------------------------------------------------------------
# Precedence: keyword > environment > YAML > default
# -------------------------------------------------------------------------------------------


def test_precedence_contract_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "cache:\n  backend: memory\n")
    assert Settings().CACHE_BACKEND == "none"  # default
    assert Settings.from_yaml(path).CACHE_BACKEND == "memory"  # YAML beats default
    monkeypatch.setenv("CACHE_BACKEND", "redis")
    assert Settings.from_yaml(path).CACHE_BACKEND == "redis"  # env beats YAML
    assert Settings.from_yaml(path, CACHE_BACKEND="tiered").CACHE_BACKEND == "tiered"  # kwarg


def test_precedence_nested_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "retry:\n  max_attempts: 3\n  base_seconds: 0.5\n")
    assert Settings().RETRY.max_attempts == 8
    s = Settings.from_yaml(path)
    assert (s.RETRY.max_attempts, s.RETRY.base_seconds) == (3, 0.5)
    monkeypatch.setenv("RETRY", '{"max_attempts": 4}')
    s = Settings.from_yaml(path)
    # Mappings merge key by key: the environment wins for max_attempts, YAML keeps base_seconds.
    assert (s.RETRY.max_attempts, s.RETRY.base_seconds) == (4, 0.5)
    s = Settings.from_yaml(path, RETRY={"max_attempts": 5})
    assert (s.RETRY.max_attempts, s.RETRY.base_seconds) == (5, 0.5)
    # A model instance is taken whole.
    s = Settings.from_yaml(path, RETRY=RetryConfig(max_attempts=6))
    assert (s.RETRY.max_attempts, s.RETRY.base_seconds) == (6, 0.025)


def test_precedence_with_gateway_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CONFIG_PATH, str(write_yaml(tmp_path, "dynamodb: {region: eu-north-1}")))
    assert Settings().DYNAMODB_REGION == "eu-north-1"
    monkeypatch.setenv("DYNAMODB_REGION", "us-west-2")
    assert Settings().DYNAMODB_REGION == "us-west-2"
    assert Settings(DYNAMODB_REGION="sa-east-1").DYNAMODB_REGION == "sa-east-1"


# -------------------------------------------------------------------------------------------
# Errors: key, source and expected form in the message
# -------------------------------------------------------------------------------------------


def test_config_error_is_a_gateway_error() -> None:
    error = config_error(Settings, CACHE_TTL_S=-1)
    assert isinstance(error, GatewayError)
    assert isinstance(error.__cause__, pydantic.ValidationError)


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("cache:\n  ttl_secnds: 5\n", "cache.ttl_secnds", "cache.ttl_seconds"),
        ("dynamodb:\n  regoin: x\n", "dynamodb.regoin", "dynamodb.region"),
        ("cachee:\n  backend: memory\n", "cachee", "cache"),
        ("numbers:\n  native: true\n  decimal: false\n", "numbers.decimal", None),
    ],
)
def test_unknown_yaml_key(tmp_path: Path, text: str, key: str, suggestion: str | None) -> None:
    path = write_yaml(tmp_path, text)
    message = str(config_error(Settings.from_yaml, path))
    assert f"unknown key {key} " in message
    assert f"YAML file {path}" in message
    assert "expected one of:" in message
    if suggestion:
        assert f"did you mean {suggestion}?" in message


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("retry:\n  foo: 1\n", "retry.foo", "max_attempts"),
        ("coalescing:\n  max_wait: 1\n", "coalescing.max_wait", "max_wait_ms"),
        ("collections:\n  users:\n    ttl: 1\n", "collections.users.ttl", "indexes"),
        (
            "collections:\n  users:\n    cache:\n      ttl: 1\n",
            "collections.users.cache.ttl",
            "ttl_seconds",
        ),
        (
            "collections:\n  users:\n    indexes:\n      by_x: {attribute: x, kind: S}\n",
            "collections.users.indexes.by_x.kind",
            "attribute",
        ),
    ],
)
def test_unknown_nested_yaml_key(tmp_path: Path, text: str, key: str, allowed: str) -> None:
    path = write_yaml(tmp_path, text)
    error = config_error(Settings.from_yaml, path)
    message = str(error)
    assert f"unknown key {key} in YAML file {path}" in message
    assert allowed in message
    assert isinstance(error.__cause__, pydantic.ValidationError)


def test_unknown_keyword_argument() -> None:
    message = str(config_error(Settings, CACHE_BAKCEND="redis"))
    assert "unknown keyword argument CACHE_BAKCEND" in message
    assert "did you mean CACHE_BACKEND?" in message
    assert "REDIS_URL" in message  # the expected names are listed


def test_lowercase_keyword_is_unknown() -> None:
    assert "unknown keyword argument cache_backend" in str(
        config_error(Settings, cache_backend="redis")
    )


def test_unknown_nested_keyword() -> None:
    message = str(config_error(Settings, RETRY={"max_attempts": 2, "jitter": 1}))
    assert "unknown key RETRY.jitter in keyword argument" in message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("cache:\n  ttl_seconds: abc\n", "cache.ttl_seconds", "seconds, a number > 0"),
        ("cache:\n  ttl_seconds: -1\n", "cache.ttl_seconds", "seconds, a number > 0"),
        ("cache:\n  ttl_seconds: .inf\n", "cache.ttl_seconds", "seconds, a number > 0"),
        ("cache:\n  ttl_jitter: 1.5\n", "cache.ttl_jitter", "a fraction from 0 to 1"),
        ("cache:\n  backend: memcached\n", "cache.backend", "none, memory, redis, tiered, dax"),
        ("cache:\n  max_items: 0\n", "cache.max_items", "an integer >= 1"),
        ("cache:\n  redis_key_prefix: 'a b'\n", "cache.redis_key_prefix", "without whitespace"),
        ("dynamodb:\n  region: [us-east-1]\n", "dynamodb.region", "AWS region"),
        ("dynamodb:\n  table_prefix: 'bad/'\n", "dynamodb.table_prefix", "[A-Za-z0-9_.-]"),
        ("dynamodb:\n  consistent_read: maybe\n", "dynamodb.consistent_read", "true or false"),
        ("numbers:\n  native: 3\n", "numbers.native", "true or false"),
        ("provider: postgres\n", "provider", "dynamodb"),
        ("retry:\n  max_attempts: 0\n", "retry.max_attempts", "an integer >= 1"),
        ("retry: 5\n", "retry", "a mapping with max_attempts"),
        ("retry:\n  base_seconds: 3\n", "retry", "cap_seconds must be >= base_seconds"),
        ("coalescing:\n  max_batch_get: 101\n", "coalescing.max_batch_get", "from 1 to 100"),
        ("coalescing:\n  max_batch_write: 26\n", "coalescing.max_batch_write", "from 1 to 25"),
        (
            "collections:\n  users:\n    cache:\n      ttl_seconds: 0\n",
            "collections.users.cache.ttl_seconds",
            "a number > 0",
        ),
        (
            "collections:\n  users:\n    indexes:\n      by_x: {attribute: x, type: Z}\n",
            "collections.users.indexes.by_x.type",
            "S (string), N (number) or B (binary)",
        ),
        (
            "collections:\n  'bad name':\n    indexes: {}\n",
            "collections.bad name",
            "collection name",
        ),
        (
            "collections:\n  users:\n    indexes:\n      x: {attribute: a}\n",
            "collections.users.indexes.x",
            "index name",
        ),
    ],
)
def test_bad_yaml_value(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write_yaml(tmp_path, text)
    message = str(config_error(Settings.from_yaml, path))
    assert f"{key} (from YAML file {path})" in message
    assert expected in message


def test_bad_yaml_value_names_the_setting(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "cache:\n  negative_ttl_seconds: 0\n")
    message = str(config_error(Settings.from_yaml, path))
    assert "got 0" in message
    assert "[setting CACHE_NEGATIVE_TTL_S]" in message


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "cache:\n  ttl_seconds: 0\n  max_bytes: -1\n")
    message = str(config_error(Settings.from_yaml, path))
    assert message.startswith("2 configuration errors:")
    assert "cache.ttl_seconds" in message and "cache.max_bytes" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CACHE_TTL_S", "abc", "seconds, a number > 0"),
        ("CACHE_MAX_BYTES", "1.5", "an integer >= 1"),
        ("NATIVE_NUMBERS", "perhaps", "true or false"),
        ("CACHE_BACKEND", "memcached", "one of none, memory"),
        ("DYNAMODB_MAX_POOL_CONNECTIONS", "0", "an integer >= 1"),
        ("RETRY", '{"max_attempts": "many"}', "an integer >= 1"),
    ],
)
def test_bad_environment_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    message = str(config_error(Settings))
    assert f"(from environment variable {name})" in message
    assert message.startswith(name)
    assert expected in message


def test_environment_beats_a_bad_yaml_value_and_is_blamed_correctly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, "retry: {max_attempts: 3, base_seconds: -1}\n")
    monkeypatch.setenv("RETRY", '{"max_attempts": 0}')
    message = str(config_error(Settings.from_yaml, path))
    assert "RETRY.max_attempts (from environment variable RETRY)" in message
    assert f"retry.base_seconds (from YAML file {path})" in message


@pytest.mark.parametrize("name", ["RETRY", "COALESCING", "COLLECTIONS"])
def test_environment_json_that_does_not_parse(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "{max_attempts: 3")
    message = str(config_error(Settings))
    assert f"{name} (from environment variable {name}) is not valid JSON" in message
    assert "expected a JSON object" in message


@pytest.mark.parametrize(
    ("kwargs", "key", "expected"),
    [
        ({"CACHE_TTL_S": "soon"}, "CACHE_TTL_S", "seconds, a number > 0"),
        ({"NATIVE_NUMBERS": "perhaps"}, "NATIVE_NUMBERS", "true or false"),
        ({"COLLECTIONS": ["users"]}, "COLLECTIONS", "a mapping of collection name"),
        ({"COALESCING": {"max_wait_ms": -1}}, "COALESCING.max_wait_ms", "a number >= 0"),
    ],
)
def test_bad_keyword_value(kwargs: dict[str, Any], key: str, expected: str) -> None:
    message = str(config_error(Settings, **kwargs))
    assert f"{key} (from keyword argument)" in message
    assert expected in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DYNAMODB_ENDPOINT_URL", "localhost:8000"),
        ("DYNAMODB_ENDPOINT_URL", "ftp://localhost:8000"),
        ("DYNAMODB_ENDPOINT_URL", "http://"),
        ("DYNAMODB_ENDPOINT_URL", "http://localhost:99999"),
        ("DYNAMODB_ENDPOINT_URL", "http://local host:8000"),
        ("REDIS_URL", "127.0.0.1:6379"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("REDIS_URL", "redis://"),
        ("REDIS_URL", "redis://127.0.0.1:6379/zero"),
        ("REDIS_URL", "redis://127.0.0.1:port/0"),
        ("REDIS_URL", "unix://"),
        ("DAX_ENDPOINT_URL", "https://my-cluster.dax.amazonaws.com"),
        ("DAX_ENDPOINT_URL", "dax://"),
        ("DAX_ENDPOINT_URL", "my-cluster:8111"),
    ],
)
def test_malformed_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    expected = {
        "DYNAMODB_ENDPOINT_URL": "an http:// or https:// URL with a host",
        "REDIS_URL": "a redis:// or rediss:// (TLS) URL",
        "DAX_ENDPOINT_URL": "a dax:// or daxs:// (TLS) cluster endpoint URL",
    }[name]
    # keyword
    message = str(config_error(Settings, **{name: value}))
    assert f"{name} (from keyword argument)" in message and expected in message
    # environment
    monkeypatch.setenv(name, value)
    message = str(config_error(Settings))
    assert f"{name} (from environment variable {name})" in message and expected in message
    monkeypatch.delenv(name)
    # YAML
    yaml_path = next(".".join(p) for p, field in YAML_PATHS.items() if field == name)
    section, key = yaml_path.split(".")
    path = write_yaml(tmp_path, f"{section}:\n  {key}: '{value}'\n")
    message = str(config_error(Settings.from_yaml, path))
    assert f"{yaml_path} (from YAML file {path})" in message and expected in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DYNAMODB_ENDPOINT_URL", "http://localhost:8000"),
        ("DYNAMODB_ENDPOINT_URL", "https://dynamodb.us-east-1.amazonaws.com"),
        ("REDIS_URL", "redis://localhost"),
        ("REDIS_URL", "rediss://user:p%40ss@cache.example.com:6380/3"),
        ("REDIS_URL", "redis://:password@[::1]:6379"),
        ("REDIS_URL", "unix:///run/redis/redis.sock?db=1"),
        ("DAX_ENDPOINT_URL", "dax://my-cluster.abc.dax-clusters.us-east-1.amazonaws.com:8111"),
        ("DAX_ENDPOINT_URL", "daxs://my-cluster.abc.dax-clusters.us-east-1.amazonaws.com"),
    ],
)
def test_good_urls(name: str, value: str) -> None:
    assert getattr(Settings(**{name: value}), name) == value


def test_missing_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = str(config_error(Settings.from_yaml, path))
    assert f"YAML file {path}" in message
    assert "does not exist" in message
    assert "Settings.from_yaml" in message


def test_missing_yaml_file_from_gateway_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nope.yaml"
    monkeypatch.setenv(ENV_CONFIG_PATH, str(path))
    message = str(config_error(Settings))
    assert f"YAML file {path}" in message
    assert f"environment variable {ENV_CONFIG_PATH}" in message
    assert "does not exist" in message


def test_yaml_path_is_a_directory(tmp_path: Path) -> None:
    assert "is a directory" in str(config_error(Settings.from_yaml, tmp_path))


def test_yaml_that_does_not_parse(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "cache:\n  backend: [memory\n  ttl_seconds: 3\n")
    error = config_error(Settings.from_yaml, path)
    message = str(error)
    assert f"YAML file {path}" in message
    assert "is not valid YAML" in message
    assert re.search(r"line \d+, column \d+", message)
    assert error.__cause__ is not None


def test_yaml_duplicate_key(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "cache:\n  backend: memory\ncache:\n  ttl_seconds: 3\n")
    message = str(config_error(Settings.from_yaml, path))
    assert "duplicate key 'cache'" in message and "line 3" in message


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "list"), ("just a string\n", "string"), ("42\n", "int")],
)
def test_yaml_top_level_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write_yaml(tmp_path, text)
    message = str(config_error(Settings.from_yaml, path))
    assert f"YAML file {path}" in message
    assert f"the top level is a {kind}; expected a mapping" in message


def test_yaml_section_not_a_mapping(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "cache: redis\n")
    message = str(config_error(Settings.from_yaml, path))
    assert f"cache in YAML file {path} is a string; expected a mapping" in message
    assert "ttl_seconds" in message


def test_yaml_non_string_key(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "cache:\n  on: true\n")  # YAML 1.1 reads `on` as True
    message = str(config_error(Settings.from_yaml, path))
    assert "cache.True" in message and "not a string" in message


@pytest.mark.parametrize(
    "text",
    [
        "aws_access_key_id: AKIAXXXXXXXXXXXXXXXX\n",
        "dynamodb:\n  region: us-east-1\n  aws_secret_access_key: abc\n",
        "cache:\n  AWS_SESSION_TOKEN: abc\n",
        "collections:\n  users:\n    cache:\n      aws_access_key_id: x\n",
        "retry:\n  aws_secret_access_key: abc\n",
    ],
)
def test_aws_credentials_in_yaml_are_refused(tmp_path: Path, text: str) -> None:
    path = write_yaml(tmp_path, text)
    message = str(config_error(Settings.from_yaml, path))
    assert "looks like an AWS credential" in message
    assert f"YAML file {path}" in message
    assert "standard AWS chain" in message and "~/.aws/credentials" in message
    assert "abc" not in message and "AKIA" not in message


def test_aws_credentials_as_keywords_are_refused() -> None:
    message = str(config_error(Settings, aws_secret_access_key="abc"))
    assert "standard AWS chain" in message and "abc" not in message


def test_dax_backend_needs_an_endpoint(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "cache:\n  backend: dax\n")
    message = str(config_error(Settings.from_yaml, path))
    assert f"cache.backend (from YAML file {path}) is 'dax'" in message
    assert "DAX_ENDPOINT_URL" in message
    s = Settings.from_yaml(path, DAX_ENDPOINT_URL="dax://dax.example.com:8111")
    assert s.CACHE_BACKEND == "dax"


def test_table_name_length_includes_the_prefix() -> None:
    assert Settings(COLLECTIONS={"abc": {}}).collection("abc") == CollectionConfig()
    message = str(config_error(Settings, COLLECTIONS={"ab": {}}))
    assert "COLLECTIONS.ab (from keyword argument)" in message and "3 to 255" in message
    assert Settings(DYNAMODB_TABLE_PREFIX="t_", COLLECTIONS={"ab": {}}).COLLECTIONS
    message = str(
        config_error(Settings, DYNAMODB_TABLE_PREFIX="p" * 200, COLLECTIONS={"c" * 60: {}})
    )
    assert "has 260 characters" in message


def test_settings_are_immutable() -> None:
    s = Settings()
    with pytest.raises(pydantic.ValidationError):
        s.CACHE_TTL_S = 1  # type: ignore[misc]
    assert s.model_copy(update={"CACHE_TTL_S": 1}).CACHE_TTL_S == 1


# -------------------------------------------------------------------------------------------
# Secrets
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:pw@host:6380", "rediss://:***@host:6380"),
        ("redis://:p@ss:w/rd@host/0", "redis://:***@host/0"),
        ("redis://user@host", "redis://user@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix://u:pw@/run/r.sock?db=0&password=pw", "unix://u:***@/run/r.sock?db=0&password=***"),
        # '@' after a '/' is ambiguous (a path, or a password with an unencoded '/'): mask.
        ("http://localhost:8000/a@b", "http://localhost:***@b"),
        ("http://localhost:8000/a?b=c@d", "http://localhost:8000/a?b=c@d"),
        ("user:pw@host", "user:***@host"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert Settings.redacted(url) == redacted


def test_password_never_in_repr_or_str_but_available(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"rediss://app:{SECRET}@cache.example.com:6380/0"
    for s in (Settings(REDIS_URL=url), Settings.from_yaml(DEFAULT_YAML, REDIS_URL=url)):
        assert SECRET not in repr(s)
        assert SECRET not in str(s)
        assert "rediss://app:***@cache.example.com:6380/0" in repr(s)
        assert SECRET not in repr(s.redacted_dump())
        assert url == s.REDIS_URL  # the code that connects gets the real thing
    monkeypatch.setenv("REDIS_URL", url)
    assert SECRET not in repr(Settings())


@pytest.mark.parametrize(
    "url",
    [
        f"http://app:{SECRET}@cache.example.com:6379/0",  # wrong scheme
        f"redis://app:{SECRET}@cache.example.com:99999/0",  # bad port
        f"redis://app:{SECRET}",  # no '@': the password parses as a port
        f"redis//app:{SECRET}@cache.example.com",  # no scheme
        f"redis://app:{SECRET}@cache.example.com/db",  # bad database
    ],
)
def test_password_never_in_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    errors = [config_error(Settings, REDIS_URL=url)]
    path = write_yaml(tmp_path, f"cache:\n  redis_url: '{url}'\n")
    errors.append(config_error(Settings.from_yaml, path))
    monkeypatch.setenv("REDIS_URL", url)
    errors.append(config_error(Settings))
    for error in errors:
        assert "REDIS_URL" in str(error) or "cache.redis_url" in str(error)
        # Not in the message, nor anywhere in the logged traceback (chained cause included).
        assert SECRET not in "".join(traceback.format_exception(error))


def test_password_in_a_misplaced_url_is_redacted(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, f"cache:\n  backend: 'redis://:{SECRET}@host'\n")
    error = config_error(Settings.from_yaml, path)
    assert "got 'redis://:***@host'" in str(error)
    assert SECRET not in "".join(traceback.format_exception(error))


def test_password_not_in_pydantic_settings_debug_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PYDANTIC_SETTINGS_DEBUG", "1")
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@host:6379/0")
    with caplog.at_level(logging.DEBUG, logger="pydantic_settings"):
        Settings()
    assert "redis://:***@host:6379/0" in caplog.text
    assert SECRET not in caplog.text


# -------------------------------------------------------------------------------------------
# The shipped config/gateway.yaml
# -------------------------------------------------------------------------------------------


def test_shipped_yaml_loads_and_equals_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    s = Settings.from_yaml("config/gateway.yaml")
    assert s == Settings()
    assert s.model_dump() == Settings().model_dump()


def test_shipped_yaml_spells_out_every_key() -> None:
    import yaml

    data = yaml.safe_load(DEFAULT_YAML.read_text(encoding="utf-8"))
    present = set()
    for path in YAML_PATHS:
        node: Any = data
        for part in path:
            assert part in node, f"{'.'.join(path)} missing from config/gateway.yaml"
            node = node[part]
        present.add(path)
    assert set(data["retry"]) == set(RetryConfig.model_fields)
    assert set(data["coalescing"]) == set(Settings().COALESCING.model_dump())


def test_shipped_yaml_collections_example_is_valid(tmp_path: Path) -> None:
    lines = DEFAULT_YAML.read_text(encoding="utf-8").splitlines()
    start = lines.index("# collections:")
    example = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        example.append(line[2:] if line.startswith("# ") else line[1:])
    s = Settings.from_yaml(write_yaml(tmp_path, "\n".join(example) + "\n"))
    assert s.collection("users").indexes["by_email"] == IndexConfig(attribute="email", type="S")
    assert s.cache_policy("users").ttl_s == 60
    assert s.cache_policy("audit_log").enabled is False


# -------------------------------------------------------------------------------------------
# Per-collection helpers
# -------------------------------------------------------------------------------------------


def test_collection_lookup() -> None:
    s = Settings(
        COLLECTIONS={
            "users": CollectionConfig(indexes={"by_email": IndexConfig(attribute="email")}),
            "blobs": {"indexes": {"by_hash": {"attribute": "hash", "type": "B"}}},
        }
    )
    assert s.collection("users").indexes["by_email"].attribute == "email"
    assert s.collection("blobs").indexes["by_hash"].type == "B"
    undeclared = s.collection("anything")
    assert undeclared == CollectionConfig() and undeclared.indexes == {}
    assert undeclared.cache is None


def test_cache_policy_resolution() -> None:
    s = Settings(
        CACHE_TTL_S=100,
        CACHE_NEGATIVE_TTL_S=10,
        CACHE_TTL_JITTER=0.25,
        CACHE_MAX_ITEMS=1000,
        COLLECTIONS={
            "hot": {"cache": {"ttl_seconds": 5, "max_items": 50}},
            "off": {"cache": {"enabled": False}},
            "miss": {"cache": {"negative_ttl_seconds": 1}},
            "plain": {},
            "scans": {"cache": {"cache_queries": False}},
        },
    )
    assert s.cache_policy("undeclared") == ResolvedCachePolicy(
        enabled=True,
        ttl_s=100,
        negative_ttl_s=10,
        jitter=0.25,
        max_items=1000,
        cache_queries=True,
    )
    assert s.cache_policy("plain") == s.cache_policy("undeclared")
    assert s.cache_policy("hot") == ResolvedCachePolicy(
        enabled=True, ttl_s=5, negative_ttl_s=10, jitter=0.25, max_items=50, cache_queries=True
    )
    assert s.cache_policy("scans").cache_queries is False
    assert s.cache_policy("off").enabled is False
    assert s.cache_policy("off").ttl_s == 100
    assert s.cache_policy("miss").negative_ttl_s == 1
    assert s.cache_policy("miss").ttl_s == 100


def test_nested_models_are_frozen_and_strict() -> None:
    policy = CachePolicy(ttl_seconds=3)
    with pytest.raises(pydantic.ValidationError):
        policy.ttl_seconds = 4  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        CachePolicy(ttl=3)  # type: ignore[call-arg]
    resolved = Settings().cache_policy("x")
    with pytest.raises(AttributeError):
        resolved.ttl_s = 1  # type: ignore[misc]
