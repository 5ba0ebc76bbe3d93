"""`send_packed`: commands sent without letting go of the interpreter lock, on a real
redis-server, and every way it hands a send to redis-py instead."""

from __future__ import annotations

import ctypes
import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection

from gateway.caches import locked_send
from gateway.caches.direct_connections import DirectConnections
from gateway.caches.locked_send import send_packed
from tests.gateway_helpers import wait_for

pytestmark = pytest.mark.skipif(
    locked_send._libc_send is None, reason="no C send() with MSG_DONTWAIT | MSG_NOSIGNAL here"
)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


def _open_connection(client: redis.Redis, **kwargs: Any) -> AbstractConnection:
    pool = client.connection_pool
    connection = pool.connection_class(**{**pool.connection_kwargs, **kwargs})
    connection.connect()
    return connection


class _RedisPySends:
    """Counts the sends a connection hands to redis-py's ``send_packed_command``."""

    def __init__(self, connection: AbstractConnection, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = connection.send_packed_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(connection, "send_packed_command", counted)


def _roundtrip(connection: AbstractConnection, *args: Any) -> Any:
    send_packed(connection, connection._command_packer.pack(*args))  # type: ignore[attr-defined]
    return connection.read_response()


def test_a_command_and_a_pipeline_go_out_whole_without_redis_py(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = _open_connection(client)
    redis_py = _RedisPySends(connection, monkeypatch)
    assert _roundtrip(connection, "SET", "k", b"v" * 3000) in (True, b"OK")
    assert _roundtrip(connection, "GET", "k") == b"v" * 3000
    send_packed(connection, connection.pack_commands([("INCR", "n"), ("GET", "k")]))
    assert [connection.read_response(), connection.read_response()] == [1, b"v" * 3000]
    assert redis_py.count == 0
    connection.disconnect()


def test_what_the_socket_did_not_take_follows_or_goes_through_redis_py(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full send buffer: the kernel takes part of the command (the rest follows on the same
    socket), or none of it (EAGAIN: all of it through redis-py)."""
    connection = _open_connection(client)
    redis_py = _RedisPySends(connection, monkeypatch)
    real_send = locked_send._libc_send
    monkeypatch.setattr(
        locked_send, "_libc_send", lambda fd, data, n, flags: real_send(fd, data, 7, flags)
    )
    assert _roundtrip(connection, "SET", "k", b"partly sent") in (True, b"OK")

    def buffer_full(fd: int, data: bytes, n: int, flags: int) -> int:
        ctypes.set_errno(errno.EAGAIN)
        return -1

    monkeypatch.setattr(locked_send, "_libc_send", buffer_full)
    assert _roundtrip(connection, "GET", "k") == b"partly sent"
    assert redis_py.count == 1
    connection.disconnect()


def test_the_rest_of_a_partial_send_never_goes_out_on_a_new_connection(
    client: redis.Redis,
) -> None:
    """Another thread closes the connection (``DirectConnections.disconnect``) after the kernel
    took the first bytes: the rest is not sent on a reconnected socket, where Redis would
    read it as commands of its own."""
    connection = _open_connection(client)
    real_send = locked_send._libc_send

    def part_then_closed(fd: int, data: bytes, n: int, flags: int) -> int:
        sent = int(real_send(fd, data, 7, flags))
        connection.disconnect()
        return sent

    value = b"doc\r\nSET injected yes\r\n"
    locked = pytest.MonkeyPatch()
    locked.setattr(locked_send, "_libc_send", part_then_closed)
    try:
        with pytest.raises(redis.ConnectionError):
            send_packed(connection, connection.pack_commands([("SET", "k", value)]))
    finally:
        locked.undo()
    assert connection._sock is None  # type: ignore[attr-defined]
    assert client.get("injected") is None and client.get("k") is None


def test_a_send_on_a_connection_redis_reset_raises_redis_pys_error_and_disconnects(
    client: redis.Redis, redis_url: str
) -> None:
    connection = _open_connection(client)
    client_id = _roundtrip(connection, "CLIENT", "ID")
    admin = redis.Redis.from_url(redis_url)
    assert admin.client_kill_filter(_id=client_id) == 1
    admin.close()
    sock = connection._sock  # type: ignore[attr-defined]
    # The first send after the close is taken by the kernel; Redis answers it with a reset.
    send_packed(connection, connection._command_packer.pack("PING"))  # type: ignore[attr-defined]
    wait_for(lambda: sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 7)  # CLOSE
    with pytest.raises(redis.ConnectionError):
        send_packed(connection, connection._command_packer.pack("PING"))  # type: ignore[attr-defined]
    assert connection._sock is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("why", ["not connected", "health checks", "several chunks"])
def test_connections_and_commands_it_cannot_serve_go_through_redis_py(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    kwargs = {"health_check_interval": 30} if why == "health checks" else {}
    connection = _open_connection(client, **kwargs)
    if why == "not connected":
        connection.disconnect()
    redis_py = _RedisPySends(connection, monkeypatch)
    # In a pipeline, a value over redis-py's buffer cutoff (6,000 bytes) is a chunk of its own.
    big = b"x" * 100_000 if why == "several chunks" else b"v"
    chunks = connection.pack_commands([("SET", "a", b"v"), ("SET", "k", big)])
    assert (len(chunks) > 1) == (why == "several chunks")
    send_packed(connection, chunks)
    assert [connection.read_response(), connection.read_response()] == [b"OK", b"OK"]
    assert redis_py.count >= 1  # not connected: redis-py's handshake sends its own too
    assert client.get("k") == big
    connection.disconnect()


def test_direct_connections_send_this_way(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_send = locked_send._libc_send

    def counted(fd: int, data: bytes, n: int, flags: int) -> int:
        calls.append(n)
        return real_send(fd, data, n, flags)

    direct = DirectConnections(client, limit=1)
    direct.command("PING")  # connects (redis-py's handshake is its own business)
    monkeypatch.setattr(locked_send, "_libc_send", counted)
    assert direct.command("SET", "k", b"v") in (True, b"OK")
    assert direct.pipeline([("GET", "k"), ("INCR", "n")]) == [b"v", 1]
    assert len(calls) == 2
    direct.disconnect()
