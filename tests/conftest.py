"""Shared fixtures: a real DynamoDB emulator over HTTP, a real Redis, and a fault proxy.

The servers are started once per session; each test gets a flushed Redis, a fresh proxy with no
faults, and its own table-name prefix, so tests never see each other's data. The helpers these
fixtures wrap live in ``tests/servers/``.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Make `gateway` and `tests.servers` importable without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Show the details of failing asserts inside the shared suites, not a bare AssertionError.
pytest.register_assert_rewrite("tests.cache_conformance", "tests.gateway_helpers")

from gateway.emulator import EmbeddedDynamoDB  # noqa: E402
from tests.servers import (  # noqa: E402
    TEST_CREDENTIALS,
    TEST_REGION,
    FaultProxy,
    RedisServer,
    TcpRelay,
    raw_dynamodb_client,
)

#: Seed of every test's fault proxy, so injected faults repeat from run to run.
FAULT_PROXY_SEED = 20120810

# The contract's variables and everything AWS_*, so a developer's environment never leaks in.
_SCRUBBED_NAMES = frozenset(
    {
        "DATABASE_PROVIDER",
        "DAX_ENDPOINT_URL",
        "DAX_MEMORY_TIER",
        "NATIVE_NUMBERS",
        "COLLECTIONS",
        "RETRY",
        "COALESCING",
    }
)
_SCRUBBED_PREFIXES = ("AWS_", "DYNAMODB_", "GATEWAY_", "CACHE_", "REDIS_", "BULK_")

_prefix_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[EmbeddedDynamoDB]:
    """The DynamoDB emulator (moto's server, own process), for the whole session."""
    with EmbeddedDynamoDB() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, for the whole session. Prefer `redis_url`."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session Redis, flushed before the test and resumed after it if left paused."""
    redis_server.resume()
    redis_server.flush()
    yield redis_server.url
    redis_server.resume()


@pytest.fixture
def fault_proxy(moto_server: EmbeddedDynamoDB) -> Iterator[FaultProxy]:
    """A fresh `FaultProxy` in front of the emulator: no faults, zero counts, fixed seed."""
    with FaultProxy(moto_server.endpoint_url, seed=FAULT_PROXY_SEED) as proxy:
        yield proxy


@pytest.fixture
def table_prefix() -> str:
    """A table-name prefix no other test in the session uses, e.g. ``"t17-"``."""
    return f"t{next(_prefix_numbers)}-"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials and region; no profile, config file, instance metadata, or
    gateway setting from the developer's environment.
    """
    for name in list(os.environ):
        if name in _SCRUBBED_NAMES or name.startswith(_SCRUBBED_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    # ~/.aws/config can set a region, retries or an endpoint; IMDS lookups can stall a test.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def dynamodb_client(moto_server: EmbeddedDynamoDB) -> Iterator[Callable[..., Any]]:
    """A factory of raw boto3 DynamoDB clients (retries off) for assertions.

    ``dynamodb_client()`` talks to the emulator directly; ``dynamodb_client(url)`` to any
    endpoint (e.g. ``fault_proxy.endpoint_url``); keyword arguments are botocore Config options.
    """
    clients: list[Any] = []

    def make(endpoint_url: str | None = None, **config: Any) -> Any:
        client = raw_dynamodb_client(endpoint_url or moto_server.endpoint_url, **config)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()



@pytest.fixture
def redis_relay(redis_url: str, redis_server: RedisServer) -> Iterator[TcpRelay]:
    """A fresh `TcpRelay` in front of the session Redis (flushed), closed after the test.

    Clients use ``redis_relay.url``; `TcpRelay.blackhole`, `drop_replies`, `refuse` and
    `reset_all` fault the wire, `heal` ends the fault.
    """
    with TcpRelay(redis_server.host, redis_server.port) as relay:
        yield relay
