"""``gateway streams follow COLLECTION...``: a standalone stream follower in the foreground.

Run as a user would (a subprocess on the emulator and the test Redis, stopped with SIGTERM or
Ctrl-C), it applies changes made behind the application's back to the shared cache, prints a
line per interval, and gives its shard leases back when it stops. In process (``--duration``):
the line format, the collections it follows and no other, and what it refuses.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from gateway import Settings, get_database_service
from gateway.caches.base import MISS, Kind
from gateway.emulator import EmbeddedDynamoDB
from gateway.factory import build_dynamodb_service
from gateway.gateway import CachingGateway
from gateway.streams.coordination import KEY_MARK, LATEST, RedisCoordinator
from tests.cli_helpers import Run, assert_one_line_error, cli_runner
from tests.test_cli_emulator import Lines

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60.0
_redis_prefixes = itertools.count()
#: ``<time> users: 3 applied (+1), lag 0.412 s, 1 shard held``
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (?P<name>\S+): (?P<applied>\d+) applied "
    r"\(\+\d+\), lag (?:-|\d+\.\d{3} s), \d+ shards? held$"
)


@pytest.fixture
def shared_cache(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment of the application and of the command: a redis cache, a key prefix of
    the test's own. Returns the key prefix."""
    prefix = f"follow{next(_redis_prefixes)}:"
    monkeypatch.setenv("CACHE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    return prefix


@pytest.fixture
def run(
    moto_server: EmbeddedDynamoDB, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> Run:
    return cli_runner(moto_server.endpoint_url, table_prefix, capsys)


@contextmanager
def app_gateway(endpoint_url: str, table_prefix: str) -> Iterator[CachingGateway]:
    """The application: the environment's cache, no follower of its own."""
    settings = Settings(
        DYNAMODB_ENDPOINT_URL=endpoint_url,
        DYNAMODB_TABLE_PREFIX=table_prefix,
        STREAMS_INVALIDATION=False,
    )
    gateway = get_database_service(settings)
    assert isinstance(gateway, CachingGateway)
    with gateway:
        yield gateway


@contextmanager
def follow_command(
    endpoint_url: str, table_prefix: str, *collections: str
) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    """``gateway streams follow`` in a subprocess (killed if a test leaves it running)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "--endpoint-url",
            endpoint_url,
            "--table-prefix",
            table_prefix,
            "streams",
            "follow",
            *collections,
            "--interval",
            "0.2",
            "--duration",
            "600",  # a safety net: the tests stop it with a signal
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        yield process, Lines(process.stdout), Lines(process.stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT_S)


def wait_for_header(stderr: Lines, deadline: float) -> str:
    """The line saying it follows (after any log lines, e.g. a stream turned on)."""
    while True:
        line = stderr.next(deadline)
        if line.startswith("# following the streams of "):
            return line


def redis_keys(redis_url: str, pattern: str) -> list[bytes]:
    client = Redis.from_url(redis_url)
    try:
        return list(client.scan_iter(match=pattern))
    finally:
        client.close()


def leases_of(key_prefix: str) -> str:
    """The pattern of the shard lease keys of the followers of ``key_prefix``."""
    return f"{key_prefix}{KEY_MARK}lease|*"


def checkpoints(redis_url: str, key_prefix: str) -> dict[str, str]:
    """Every shard checkpoint the followers of ``key_prefix`` saved."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        found: dict[str, str] = {}
        for key in client.scan_iter(match=f"{key_prefix}{KEY_MARK}checkpoints|*"):
            found.update({str(k): str(v) for k, v in client.hgetall(key).items()})
        return found
    finally:
        client.close()


def cached(app: CachingGateway, table: str, doc_id: str) -> Any:
    return app.cache.get(app.stream_key(table, doc_id))


def holds_document(entry: Any) -> bool:
    return entry is not MISS and entry.kind is Kind.DOCUMENT


def remaining_lines(lines: Lines, deadline: float) -> list[str]:
    """The lines a finished command printed after those already read."""
    rest: list[str] = []
    while True:
        try:
            rest.append(lines.next(deadline))
        except AssertionError:  # the pipe is closed
            return rest


# ------------------------------------------------------------------------------------------
# As a user runs it
# ------------------------------------------------------------------------------------------


def test_follow_applies_changes_made_behind_the_gateway_until_sigterm(
    moto_server: EmbeddedDynamoDB, redis_url: str, shared_cache: str, table_prefix: str
) -> None:
    endpoint = moto_server.endpoint_url
    table = f"{table_prefix}users"
    with (
        app_gateway(endpoint, table_prefix) as app,
        build_dynamodb_service(
            Settings(DYNAMODB_ENDPOINT_URL=endpoint, DYNAMODB_TABLE_PREFIX=table_prefix)
        ) as bare,
    ):
        # The table, without a stream (the command turns one on). "w" is written behind the
        # application's back until the follower applies changes; "a" and "b" are changed
        # once, after that, so no older record of theirs is left in flight.
        for doc_id in ("w", "a", "b"):
            app.save("users", doc_id, {"v": 0})
        with follow_command(endpoint, table_prefix, "users") as (process, stdout, stderr):
            deadline = time.monotonic() + TIMEOUT_S
            wait_for_header(stderr, deadline)
            # A follower with nothing to resume from starts at the stream's newest record and
            # then drops the collection's cache once; it saves a checkpoint of a record only
            # after that. Write until one is saved: from then on every change is applied.
            version = 0
            while not [v for v in checkpoints(redis_url, shared_cache).values() if v != LATEST]:
                assert time.monotonic() < deadline, (stdout.seen, stderr.seen)
                version += 1
                bare.save("users", "w", {"v": version})
                time.sleep(0.1)
            for doc_id in ("a", "b"):  # cached again after the drop
                assert app.get("users", doc_id) is not None
                assert holds_document(cached(app, table, doc_id))

            # Behind the application's back: a save and a delete.
            final = bare.save("users", "a", {"v": "final"})["rev"]
            assert bare.delete("users", "b")

            def applied() -> bool:
                a, b = cached(app, table, "a"), cached(app, table, "b")
                return a is not MISS and a.rev == final and b is not MISS and b.kind is Kind.ABSENT

            while not applied():
                assert time.monotonic() < deadline, (stdout.seen, stderr.seen)
                time.sleep(0.05)
            line = stdout.next(deadline)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=TIMEOUT_S) == 0, stderr.seen
        match = LINE.match(line)
        assert match and match["name"] == "users", line
        hits = app.stats()["hits"]
        a = app.get("users", "a")
        assert a is not None and a["_rev"] == final and a["v"] == "final"
        assert app.get("users", "b") is None
        assert app.stats()["hits"] == hits + 2  # both from the cache the command kept
    assert redis_keys(redis_url, leases_of(shared_cache)) == []  # given back


def test_ctrl_c_stops_it_with_exit_0_and_gives_the_leases_back(
    moto_server: EmbeddedDynamoDB, redis_url: str, shared_cache: str, table_prefix: str
) -> None:
    endpoint = moto_server.endpoint_url
    with app_gateway(endpoint, table_prefix) as app:
        app.save("users", "u1", {"v": 0})
    with follow_command(endpoint, table_prefix, "users") as (process, stdout, stderr):
        deadline = time.monotonic() + TIMEOUT_S
        wait_for_header(stderr, deadline)
        while not redis_keys(redis_url, leases_of(shared_cache)):  # a shard is held
            assert time.monotonic() < deadline, (stdout.seen, stderr.seen)
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT_S) == 0
        assert remaining_lines(stderr, deadline)[-1] == "# follower stopped; shard leases released"
    assert redis_keys(redis_url, leases_of(shared_cache)) == []


# ------------------------------------------------------------------------------------------
# In process
# ------------------------------------------------------------------------------------------


def test_duration_prints_a_line_per_interval_for_the_named_collections_only(
    run: Run,
    shared_cache: str,
    redis_url: str,
    moto_server: EmbeddedDynamoDB,
    table_prefix: str,
    dynamodb_client: Any,
) -> None:
    with app_gateway(moto_server.endpoint_url, table_prefix) as app:
        for name in ("users", "notes", "orders"):
            app.save(name, "a", {"v": 1})
    # Another instance recorded "orders" as followed: this command must not follow it.
    recorder = RedisCoordinator(
        Redis.from_url(redis_url), owner="other", lease_s=3.0, key_prefix=shared_cache
    )
    recorder.add_collection("orders")
    recorder.close()

    code, out, err = run(
        "streams", "follow", "users", "notes", "users", "--interval", "0.2", "--duration", "1"
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) >= 2
    for line in lines:
        stamp, _, rest = line.partition(" ")
        parts = rest.split("; ")
        assert [p.split(":")[0] for p in parts] == ["users", "notes"], line
        for part in parts:
            assert LINE.match(f"{stamp} {part}"), line
    assert err.startswith("# following the streams of users, notes (cache redis")
    assert err.strip().endswith("# follower stopped; shard leases released")
    client = dynamodb_client()
    described = {
        name: client.describe_table(TableName=f"{table_prefix}{name}")["Table"]
        for name in ("users", "notes", "orders")
    }
    assert described["users"]["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert described["notes"]["StreamSpecification"]["StreamEnabled"]
    assert "StreamSpecification" not in described["orders"]  # never followed
    assert redis_keys(redis_url, leases_of(shared_cache)) == []


@pytest.mark.parametrize(
    ("backend", "why"),
    [("memory", "STREAMS_INVALIDATION"), ("none", "no cache")],
)
def test_a_cache_out_of_reach_is_refused(
    run: Run, monkeypatch: pytest.MonkeyPatch, backend: str, why: str
) -> None:
    monkeypatch.setenv("CACHE_BACKEND", backend)
    code, out, err = run("streams", "follow", "users", "--duration", "1")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert why in err and "redis or tiered" in err


def test_a_collection_that_is_not_cached_is_refused(
    run: Run, shared_cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTIONS", '{"audit": {"cache": {"enabled": false}}}')
    code, out, err = run("streams", "follow", "users", "audit", "--duration", "1")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert "'audit' is not cached" in err


@pytest.mark.parametrize("option", ["--interval", "--duration"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_interval_and_duration_must_be_positive(
    run: Run, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run("streams", "follow", "users", option, value)
    assert exited.value.code == 2
    assert "expected a number of seconds > 0" in capsys.readouterr().err
