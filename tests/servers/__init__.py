"""Real servers for the tests: DynamoDB's emulator, Redis, and a fault-injecting HTTP proxy.

Import as ``from tests.servers import FaultProxy, RedisServer, raw_dynamodb_client``; the
fixtures in ``tests/conftest.py`` wrap them. The emulator itself is `gateway.emulator`, because
``gateway bench`` uses it too.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from tests.servers.fault_proxy import (
    LOSE_MODES,
    WIRE_ERRORS,
    FaultConfig,
    FaultProxy,
    Hold,
    LoseMode,
    WireError,
)
from tests.servers.redis_server import RedisServer
from tests.servers.tcp_relay import TcpRelay

#: The emulator accepts any credentials; these never leave the loopback interface.
TEST_REGION = "us-east-1"
TEST_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

#: One attempt, no retries underneath: tests see DynamoDB's raw answers.
RAW_CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 1},
    connect_timeout=5,
    read_timeout=30,
)

_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def raw_dynamodb_client(endpoint_url: str, **config: Any) -> Any:
    """A low-level boto3 DynamoDB client for ``endpoint_url``, with retries off.

    Keyword arguments are `botocore.config.Config` options merged over `RAW_CLIENT_CONFIG`
    (e.g. ``read_timeout=1``). Call ``close()`` on it when done.
    """
    global _session
    with _session_lock:
        # One session: it caches the service model, which makes each new client cheap.
        if _session is None:
            _session = boto3.session.Session(region_name=TEST_REGION, **TEST_CREDENTIALS)
        session = _session
    merged = RAW_CLIENT_CONFIG.merge(Config(**config)) if config else RAW_CLIENT_CONFIG
    return session.client("dynamodb", endpoint_url=endpoint_url, config=merged)


__all__ = [
    "LOSE_MODES",
    "RAW_CLIENT_CONFIG",
    "TEST_CREDENTIALS",
    "TEST_REGION",
    "WIRE_ERRORS",
    "FaultConfig",
    "FaultProxy",
    "Hold",
    "LoseMode",
    "RedisServer",
    "TcpRelay",
    "WireError",
    "raw_dynamodb_client",
]
