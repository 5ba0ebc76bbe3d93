"""DirectConnections: commands and pipelines on connections of their own, on a real redis-server.

Every test holds a connection busy with a command the server answers only when told (``BLPOP``
on a list nobody has pushed to yet), so "this connection is in use" and "its reply comes late"
are states the test creates, never timings it hopes for.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import redis

from gateway.caches.direct_connections import DirectConnections
from gateway.caches.redis_cache import RedisCache
from tests.gateway_helpers import Worker, wait_for


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    pool = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=4, timeout=5, socket_timeout=5
    )
    client = redis.Redis(connection_pool=pool)
    yield client
    client.close()
    pool.disconnect()


def _blocked_clients(admin: redis.Redis) -> int:
    """Clients blocked in a BLPOP right now: flag ``b`` (a finished BLPOP leaves its client
    listed with ``cmd=blpop`` until its next command)."""
    return sum(
        1
        for entry in admin.client_list()
        if entry.get("cmd") == "blpop" and "b" in str(entry.get("flags", ""))
    )


def test_reads_reuse_one_connection_when_one_at_a_time(client: redis.Redis) -> None:
    client.set("k", b"v")
    reads = DirectConnections(client, limit=4)
    assert [reads.command("GET", "k") for _ in range(50)] == [b"v"] * 50
    assert reads.made == 1


def test_an_error_reply_keeps_the_connection(client: redis.Redis) -> None:
    client.rpush("a-list", b"x")
    client.set("k", b"v")
    reads = DirectConnections(client, limit=2)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        reads.command("GET", "a-list")
    assert reads.command("GET", "k") == b"v"
    assert reads.made == 1


def test_a_forked_child_makes_its_own_connections(client: redis.Redis) -> None:
    client.set("k", b"parent and child")
    reads = DirectConnections(client, limit=2)
    assert reads.command("GET", "k") == b"parent and child"
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            ok = reads.command("GET", "k") == b"parent and child" and reads.made == 1
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection was neither closed nor read by the child.
    assert reads.command("GET", "k") == b"parent and child"
    assert reads.made == 1


def test_redis_cache_reads_on_its_own_connections_and_closes_them(redis_url: str) -> None:
    cache = RedisCache(redis_url, key_prefix="reads:", max_connections=3, probe=False)
    threads = [Worker(lambda: [cache.get_many(["a", "b"]) for _ in range(20)]) for _ in range(6)]
    for thread in threads:
        assert thread.outcome() is not None
    reads = cache._reads
    # At most max_connections of their own; the readers beyond waited on the pool.
    assert reads is not None and 1 <= reads.made <= 3
    cache.close()
    assert all(connection._sock is None for connection in reads._made)


def test_a_pipeline_answers_in_order_with_error_replies_in_their_places(
    client: redis.Redis,
) -> None:
    client.rpush("a-list", b"x")
    client.set("k", b"v")
    direct = DirectConnections(client, limit=1)
    replies = direct.pipeline(
        [("GET", "k"), ("GET", "a-list"), ("EVALSHA", "0" * 40, 0), ("GET", "k")]
    )
    assert replies[0] == b"v" and replies[3] == b"v"
    assert isinstance(replies[1], redis.ResponseError) and "WRONGTYPE" in str(replies[1])
    assert isinstance(replies[2], redis.exceptions.NoScriptError)
    # Every reply was read: the connection is in step for the next command.
    assert direct.command("GET", "k") == b"v"
    assert direct.made == 1


def _get(direct: DirectConnections, key: str, via: str) -> bytes | None:
    """GET ``key`` as one command or as a pipeline of one (the two paths share their rules)."""
    if via == "command":
        reply: bytes | None = direct.command("GET", key)
        return reply
    [reply] = direct.pipeline([("GET", key)])
    return reply


@pytest.mark.parametrize("via", ["command", "pipeline"])
def test_beyond_the_limit_commands_go_through_the_pool(
    client: redis.Redis, redis_url: str, via: str
) -> None:
    client.set("k", b"v")
    admin = redis.Redis.from_url(redis_url)
    direct = DirectConnections(client, limit=1)
    blocked = Worker(lambda: direct.command("BLPOP", f"wake-{via}", 0))
    wait_for(lambda: _blocked_clients(admin) == 1)  # the only own connection is busy
    assert _get(direct, "k", via) == b"v"  # answered through the client's pool
    assert direct.made == 1
    admin.rpush(f"wake-{via}", b"x")
    assert blocked.outcome() == [f"wake-{via}".encode(), b"x"]
    admin.close()


@pytest.mark.parametrize("via", ["command", "pipeline"])
def test_a_reply_that_comes_after_a_timeout_never_answers_the_next_command(
    redis_url: str, via: str
) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, socket_timeout=0.2)
    client = redis.Redis(connection_pool=pool)
    admin = redis.Redis.from_url(redis_url)
    client.set("k", b"value of k")
    direct = DirectConnections(client, limit=1)
    late = f"late-{via}"
    with pytest.raises(redis.TimeoutError):  # no answer within the socket timeout
        if via == "command":
            direct.command("BLPOP", late, 0)
        else:  # a pipeline cut short after its first reply
            direct.pipeline([("GET", "k"), ("BLPOP", late, 0)])
    admin.rpush(late, b"the late reply")  # would be the next thing read, had we kept it
    assert _get(direct, "k", via) == b"value of k"
    assert direct.made == 1  # the same connection, reconnected
    admin.close()
    client.close()
    pool.disconnect()


def _kill_direct_connection(direct: DirectConnections, admin: redis.Redis) -> None:
    """Redis closes the (only, idle) direct connection, as a restart or its ``timeout`` does;
    returns once the end of the stream has reached the client's socket."""
    client_id = direct.command("CLIENT", "ID")
    [connection] = direct._idle
    assert admin.client_kill_filter(_id=client_id) == 1
    wait_for(lambda: _readable_bytes(connection._sock) == b"")


def _readable_bytes(sock: socket.socket) -> bytes | None:
    """What a non-blocking peek at ``sock`` finds: b"" at the end of the stream, None if
    nothing is waiting."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


@pytest.fixture
def closed_while_idle(client: redis.Redis, redis_url: str) -> Iterator[DirectConnections]:
    """Direct connections (limit 1) whose one idle connection Redis has closed; key k = v."""
    client.set("k", b"v")
    admin = redis.Redis.from_url(redis_url)
    direct = DirectConnections(client, limit=1)
    _kill_direct_connection(direct, admin)
    yield direct
    admin.close()
    direct.disconnect()


def test_a_read_on_a_connection_redis_closed_while_idle_is_sent_again(
    closed_while_idle: DirectConnections,
) -> None:
    direct = closed_while_idle
    assert direct.command("GET", "k") == b"v"  # the closed connection failed; a new one answered
    assert direct.made == 1


def test_a_pipeline_checks_an_idle_connection_before_sending_on_it(
    client: redis.Redis, closed_while_idle: DirectConnections
) -> None:
    direct = closed_while_idle
    assert direct.pipeline([("INCR", "counter"), ("GET", "k")]) == [1, b"v"]
    # Sent once: the INCR ran exactly once (a write script must never be sent twice).
    assert client.get("counter") == b"1"
    assert direct.made == 1


def test_a_read_is_not_sent_again_on_a_connection_made_for_it(redis_url: str) -> None:
    """Only a connection that sat idle is retried: with Redis down, a read fails once."""
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    direct = DirectConnections(client, limit=1)
    with pytest.raises(redis.ConnectionError):
        direct.command("GET", "k")
    assert direct.made == 1
