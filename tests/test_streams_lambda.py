"""The AWS Lambda handler (`gateway.streams.lambda_handler`) on real parts.

Events are built in the shape AWS documents for a DynamoDB stream mapped to a function
(``Records[]`` with ``eventID``, ``eventName``, ``eventSource``, ``eventSourceARN`` and a
``dynamodb`` body with the images in DynamoDB JSON), from items written to the emulator behind
the gateway's back. The handler runs in this process as in a Lambda container: its settings
come from the environment; its cache is the test Redis (directly, or through a relay that can
black-hole it). An application gateway on the same Redis checks what the caches hold after.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway import ConfigError, Settings, get_database_service
from gateway.caches.base import MISS, Kind
from gateway.factory import build_dynamodb_service
from gateway.gateway import CachingGateway
from gateway.streams import lambda_function, lambda_handler
from tests.servers import TcpRelay

ACCOUNT_ARN = "arn:aws:dynamodb:us-east-1:123456789012"
_sequences = itertools.count(100_000_000_000_000_000_001)
_redis_prefixes = itertools.count()


def stream_arn(table: str) -> str:
    return f"{ACCOUNT_ARN}:table/{table}/stream/2026-01-01T00:00:00.000"


def stream_record(
    table: str,
    event_name: str,
    doc_id: str,
    *,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One record as Lambda hands it (images in DynamoDB JSON, the time in seconds)."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": int(time.time()),
        "Keys": {"_id": {"S": doc_id}},
        "SequenceNumber": str(next(_sequences)),
        "SizeBytes": 128,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        body["NewImage"] = new
    if old is not None:
        body["OldImage"] = old
    return {
        "eventID": uuid.uuid4().hex,
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": body,
        "eventSourceARN": stream_arn(table),
    }


def sequence_of(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


@pytest.fixture
def configure(
    monkeypatch: pytest.MonkeyPatch, moto_server: Any, table_prefix: str
) -> Iterator[Callable[..., None]]:
    """``configure(redis_url, **env)``: the Lambda container's environment (a fresh
    container: the handler builds its gateway again on its next invocation)."""

    def setup(redis_url: str, **env: str) -> None:
        lambda_function.reset()
        values = {
            "DYNAMODB_ENDPOINT_URL": moto_server.endpoint_url,
            "DYNAMODB_TABLE_PREFIX": table_prefix,
            "CACHE_BACKEND": "redis",
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"lambda{next(_redis_prefixes)}:",
            "REDIS_TIMEOUT_S": "0.2",
            **env,
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    yield setup
    lambda_function.reset()


@contextmanager
def app_gateway(redis_url: str | None = None) -> Iterator[CachingGateway]:
    """The application's gateway: the environment's settings (cache, prefixes), with no stream
    follower of its own (only the handler keeps its cache up to date here)."""
    overrides: dict[str, Any] = {"STREAMS_INVALIDATION": False}
    if redis_url is not None:
        overrides["REDIS_URL"] = redis_url
    gateway = get_database_service(Settings(**overrides))
    assert isinstance(gateway, CachingGateway)
    try:
        wait_healthy = getattr(gateway.cache, "wait_healthy", None)
        if wait_healthy is not None:  # tiered: serve the memory tier from the start
            assert wait_healthy(10.0)
        yield gateway
    finally:
        gateway.close()


def raw_item(client: Any, table: str, doc_id: str) -> dict[str, Any]:
    """The stored item in DynamoDB JSON (a stream image's shape)."""
    answer = client.get_item(TableName=table, Key={"_id": {"S": doc_id}}, ConsistentRead=True)
    return dict(answer["Item"])


def cached(gateway: CachingGateway, table: str, doc_id: str) -> Any:
    """What the shared cache holds for the document (an `Entry`, or `MISS`)."""
    return gateway.cache.get(gateway.stream_key(table, doc_id))


def registered_instances(redis_url: str) -> int:
    """How many tiered caches of the environment's key prefix are listed in its registry."""
    from redis import Redis

    from gateway.caches.tiered import REGISTRY_SUFFIX

    client = Redis.from_url(redis_url)
    try:
        members = client.zrange(os.environ["REDIS_KEY_PREFIX"] + REGISTRY_SUFFIX, 0, -1)
    finally:
        client.close()
    return sum(1 for member in members if member)  # member "" holds the registry's birth


def dropped(entry: Any) -> bool:
    """The cache holds nothing to serve for the key (nothing, or a floor: the next read
    loads DynamoDB's item)."""
    return entry is MISS or entry.kind is Kind.FLOOR


def fake_rev(generation: int) -> str:
    return f"{generation}-{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------------------
# Applying events
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "tiered"])
def test_an_event_brings_the_applications_cache_up_to_date(
    backend: str,
    configure: Callable[..., None],
    redis_url: str,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    # STREAMS_INVALIDATION in the container's environment starts no follower there.
    configure(redis_url, CACHE_BACKEND=backend, STREAMS_INVALIDATION="true")
    client = dynamodb_client()
    table = f"{table_prefix}users"
    with app_gateway() as app:
        for doc_id in ("u1", "u2", "u3"):
            app.save("users", doc_id, {"name": doc_id, "v": 1})
        assert app.get("users", "u4") is None  # cached as absent
        old = {doc_id: raw_item(client, table, doc_id) for doc_id in ("u1", "u2", "u3")}

        # Changes behind the application's back: another program, the console, a batch job.
        with build_dynamodb_service(Settings(STREAMS_INVALIDATION=False)) as bare:
            rev_u1 = bare.save("users", "u1", {"name": "u1", "v": 2})["rev"]
            bare.save("users", "u4", {"name": "u4", "v": 1})
        client.delete_item(TableName=table, Key={"_id": {"S": "u2"}})
        client.put_item(TableName=table, Item={"_id": {"S": "u3"}, "name": {"S": "plain"}})
        not_a_document = stream_record(table, "INSERT", "k", new={"pk": {"S": "k"}})
        not_a_document["dynamodb"]["Keys"] = {"pk": {"S": "k"}}
        event = {
            "Records": [
                stream_record(
                    table, "MODIFY", "u1", new=raw_item(client, table, "u1"), old=old["u1"]
                ),
                stream_record(table, "REMOVE", "u2", old=old["u2"]),
                # An item without a `_rev`: its order against the cached copy cannot be told.
                stream_record(
                    table, "MODIFY", "u3", new=raw_item(client, table, "u3"), old=old["u3"]
                ),
                stream_record(table, "INSERT", "u4", new=raw_item(client, table, "u4")),
                not_a_document,
                stream_record("other-users", "INSERT", "u1", new={"_id": {"S": "u1"}}),
            ]
        }

        assert lambda_handler(event, None) == {"batchItemFailures": []}

        if backend == "tiered":
            # The handler's tier left the list of instances the application's writes wait for.
            assert registered_instances(redis_url) == 1  # the application's
        entry = cached(app, table, "u1")
        assert entry is not MISS and entry.kind is Kind.DOCUMENT and entry.rev == rev_u1
        entry = cached(app, table, "u2")
        assert entry is not MISS and entry.kind is Kind.ABSENT
        assert dropped(cached(app, table, "u3"))  # the next read loads it
        assert dropped(cached(app, table, "u4"))  # the absent entry is no longer true
        hits = app.stats()["hits"]
        u1 = app.get("users", "u1")
        assert u1 is not None and u1["_rev"] == rev_u1 and u1["v"] == 2
        assert app.get("users", "u2") is None
        u3 = app.get("users", "u3")
        assert u3 is not None and u3["name"] == "plain"
        u4 = app.get("users", "u4")
        assert u4 is not None and u4["name"] == "u4"
        assert app.stats()["hits"] == hits + 2  # u1 and u2 from the cache

    assert not [t for t in threading.enumerate() if t.name == "gateway-streams"]  # no follower
    kept = lambda_function.container()
    if backend == "redis":  # the container keeps its gateway between invocations
        assert kept.gateway is not None and "streams" not in kept.gateway.stats()
    else:  # one cache tier per invocation, closed at its end: no tiered listener left behind
        assert kept.gateway is None
        assert not [t for t in threading.enumerate() if "tiered" in t.name.lower()]
    assert lambda_handler(event, None) == {"batchItemFailures": []}  # again: harmless
    assert lambda_function.container() is kept


def test_an_unreachable_cache_reports_the_first_record_for_lambda_to_retry(
    configure: Callable[..., None],
    redis_url: str,
    redis_relay: TcpRelay,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
) -> None:
    configure(redis_relay.url, REDIS_BREAKER_RESET_S="0.1")
    client = dynamodb_client()
    table = f"{table_prefix}users"
    with app_gateway(redis_url) as app:
        first = {d: app.save("users", d, {"v": 1})["rev"] for d in ("u1", "u2")}
        old = {d: raw_item(client, table, d) for d in ("u1", "u2")}
        with build_dynamodb_service(Settings(STREAMS_INVALIDATION=False)) as bare:
            second = {d: bare.save("users", d, {"v": 2})["rev"] for d in ("u1", "u2")}
        event = {
            "Records": [
                stream_record(table, "MODIFY", d, new=raw_item(client, table, d), old=old[d])
                for d in ("u1", "u2")
            ]
        }

        redis_relay.blackhole()
        answer = lambda_handler(event, None)
        assert answer == {
            "batchItemFailures": [{"itemIdentifier": sequence_of(event["Records"][0])}]
        }
        for doc_id in ("u1", "u2"):
            assert cached(app, table, doc_id).rev == first[doc_id]  # nothing applied

        # Lambda retries the batch from the reported record until it is applied.
        redis_relay.heal()
        deadline = time.monotonic() + 30.0
        while (answer := lambda_handler(event, None))["batchItemFailures"]:
            assert time.monotonic() < deadline, answer
            time.sleep(0.05)
        for doc_id in ("u1", "u2"):
            assert cached(app, table, doc_id).rev == second[doc_id]
            got = app.get("users", doc_id)
            assert got is not None and got["_rev"] == second[doc_id]


def test_records_after_a_failure_are_not_applied(
    configure: Callable[..., None],
    redis_url: str,
    redis_relay: TcpRelay,
    table_prefix: str,
    dynamodb_client: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One record per apply; the cache is cut off after the first: the second is reported,
    the third is not applied (it would be out of order after the second's retry)."""
    from gateway.streams.apply import ChangeApplier

    configure(redis_relay.url)
    monkeypatch.setattr(lambda_function, "RECORDS_PER_APPLY", 1)
    original = ChangeApplier.apply
    calls = 0

    def apply_then_cut(self: ChangeApplier, db_name: str, changes: Any) -> bool:
        nonlocal calls
        calls += 1
        done = original(self, db_name, changes)
        if calls == 1:
            redis_relay.blackhole()
        return done

    monkeypatch.setattr(ChangeApplier, "apply", apply_then_cut)
    client = dynamodb_client()
    table = f"{table_prefix}users"
    ids = ("u1", "u2", "u3")
    with app_gateway(redis_url) as app:
        first = {d: app.save("users", d, {"v": 1})["rev"] for d in ids}
        old = {d: raw_item(client, table, d) for d in ids}
        with build_dynamodb_service(Settings(STREAMS_INVALIDATION=False)) as bare:
            second = {d: bare.save("users", d, {"v": 2})["rev"] for d in ids}
        records = [
            stream_record(table, "MODIFY", d, new=raw_item(client, table, d), old=old[d])
            for d in ids
        ]
        answer = lambda_handler({"Records": records}, None)
        assert answer == {"batchItemFailures": [{"itemIdentifier": sequence_of(records[1])}]}
        assert calls == 2  # the third record was not tried
        assert cached(app, table, "u1").rev == second["u1"]
        assert cached(app, table, "u2").rev == first["u2"]
        assert cached(app, table, "u3").rev == first["u3"]


def test_the_first_record_not_applied_is_reported_across_collections(
    configure: Callable[..., None],
    redis_relay: TcpRelay,
    table_prefix: str,
    tmp_path: Path,
) -> None:
    """Settings from GATEWAY_CONFIG; ``audit`` is not cached (its records need no cache), so
    with the cache cut off the first record not applied is the first of ``users``."""
    config = tmp_path / "gateway.yaml"
    config.write_text("collections:\n  audit:\n    cache:\n      enabled: false\n")
    configure(redis_relay.url, GATEWAY_CONFIG=str(config))
    rev = fake_rev(7)
    image = {"_id": {"S": "x"}, "_rev": {"S": rev}}
    records = [
        stream_record(f"{table_prefix}audit", "INSERT", "x", new=image),
        stream_record(f"{table_prefix}users", "INSERT", "x", new=image),
        stream_record(f"{table_prefix}audit", "REMOVE", "x", old=image),
        stream_record(f"{table_prefix}users", "REMOVE", "x", old=image),
    ]
    redis_relay.blackhole()
    answer = lambda_handler({"Records": records}, None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": sequence_of(records[1])}]}


# ------------------------------------------------------------------------------------------
# What the handler refuses
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "extra", "why"),
    [
        ("memory", {}, "the Lambda function's memory is not your application's"),
        ("none", {}, "no cache"),
        ("dax", {"DAX_ENDPOINT_URL": "dax://cluster.example.com:8111"}, "DAX"),
    ],
)
def test_a_backend_the_handler_cannot_keep_up_to_date_is_a_config_error(
    backend: str,
    extra: dict[str, str],
    why: str,
    configure: Callable[..., None],
    redis_url: str,
) -> None:
    configure(redis_url, CACHE_BACKEND=backend, **extra)
    with pytest.raises(ConfigError, match="redis or tiered") as raised:
        lambda_handler({"Records": []}, None)
    assert why in str(raised.value)


def test_an_event_that_is_not_a_dynamodb_stream_event_raises(
    configure: Callable[..., None], redis_url: str
) -> None:
    configure(redis_url)
    event = {"Records": [{"eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:q", "body": ""}]}
    with pytest.raises(ValueError, match="not a DynamoDB Streams record"):
        lambda_handler(event, None)
