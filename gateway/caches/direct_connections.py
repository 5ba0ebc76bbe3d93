"""`DirectConnections`: the cache's hot commands on connections that skip redis-py's pool.

A cache hit is one ``GET``; a write through the cache is two pipelines of one script call each
(its intent before DynamoDB, the end of the intent after). A ``GET`` through
``redis.Redis.execute_command`` costs about 65 µs of client CPU on this project's benchmark
machine (redis-py 8: the blocking pool's queue, its observability hooks, the retry wrapper);
sent on a connection taken from a plain list it costs about 28 µs, most of it the two system
calls. A pipeline of one ``EVALSHA``: 91-129 µs through redis-py's ``Pipeline``, 30-33 µs
here (best of 5 runs of 4,000, process CPU time, 1 KB reply). On a read-heavy service with
several threads the client's CPU, not Redis, bounds the throughput, so the reads and the write
scripts take this path.

The connections are redis-py ``Connection`` objects made with the pool's own class and settings
(timeouts, TLS, credentials, protocol), kept on a list used as a stack: ``list.pop`` and
``list.append`` are atomic in CPython, so taking and returning one needs no lock. At most
``limit`` of them are ever made; a command that finds none idle once the limit is reached goes
through the client and its pool like every other command. An error reply (``ResponseError``,
``NoScriptError``) leaves the connection in step: in a pipeline every reply is read, and the
error replies are returned in their places, as ``Pipeline.execute(raise_on_error=False)``
returns them. A connection whose command failed other than with an error reply is disconnected
(a late reply must never answer the next command) and reconnects on its next use. After
``os.fork`` the child drops the parent's connections (their sockets are shared with the parent)
and makes its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


class DirectConnections:
    """Commands on up to ``limit`` connections of their own (see the module docstring)."""

    def __init__(self, client: redis.Redis, limit: int) -> None:
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self._client = client
        self._fallback = client.execute_command
        self._limit = limit
        self._idle: list[AbstractConnection] = []
        self._made: list[AbstractConnection] = []
        self._lock = threading.Lock()  # only to make a connection (and count it) or to reset
        self._pid = os.getpid()

    def command(self, *args: Any) -> Any:
        """Send one command and return its reply (redis-py's errors are raised as they come).

        For idempotent commands only (the cache's ``GET`` and ``MGET``): a connection Redis
        closed while it sat idle (a restart, ``CLIENT KILL``, its ``timeout``, a proxy's idle
        limit) fails on its next use, and the command is then sent once more, on a new
        connection. Checking every idle connection first, as redis-py's pool does, would cost
        a ``poll`` system call on every cache hit.
        """
        connection = self._take()
        if connection is None:
            return self._fallback(*args)
        retry = connection.is_connected  # open and idle: Redis may have closed it since
        while True:
            try:
                connection.send_command(*args)
                reply = connection.read_response()
            except ResponseError:
                self._idle.append(connection)  # an error reply: the connection is in step
                raise
            except BaseException as exc:
                connection.disconnect()
                if retry and isinstance(exc, RedisConnectionError):
                    retry = False
                    continue
                self._idle.append(connection)
                raise
            self._idle.append(connection)
            return reply

    def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once and return their replies in order, an error reply as its
        ``ResponseError`` in its place (other failures are raised, as by `command`).

        Pipelines carry the write scripts, which are not sent twice: an idle connection is
        checked first, as redis-py's pool checks it (a ``poll``: readable while idle means
        closed by Redis, or out of step), and replaced if it fails the check.
        """
        connection = self._take()
        if connection is None:
            return client_pipeline(self._client, commands)
        replies: list[Any] = []
        try:
            if connection.is_connected and _closed_or_out_of_step(connection):
                connection.disconnect()  # reconnects on the send below
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            connection.disconnect()
            self._idle.append(connection)
            raise
        self._idle.append(connection)
        return replies

    def _take(self) -> AbstractConnection | None:
        """An idle connection, a new one, or None once ``limit`` are made and all are busy."""
        if self._pid != os.getpid():
            self._after_fork()
        try:
            return self._idle.pop()
        except IndexError:
            return self._make()

    @property
    def made(self) -> int:
        """How many connections this has made (never more than ``limit``)."""
        return len(self._made)

    def disconnect(self) -> None:
        """Close every connection made (each reconnects if used again)."""
        with self._lock:
            for connection in self._made:
                connection.disconnect()

    def _make(self) -> AbstractConnection | None:
        with self._lock:
            if len(self._made) >= self._limit:
                return None
            connection = self._connection_class(**self._connection_kwargs)
            self._made.append(connection)
            return connection

    def _after_fork(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # The parent's sockets: forgotten, not disconnected, so that nothing here can
            # shut down or read from a connection the parent is still using.
            self._idle = []
            self._made = []
            self._pid = os.getpid()


def _closed_or_out_of_step(connection: AbstractConnection) -> bool:
    """An idle connection that can be read from: Redis closed it (the read finds the end of
    the stream and raises) or a reply is pending that nobody asked for."""
    try:
        return bool(connection.can_read())
    except (RedisConnectionError, OSError):
        return True


def client_pipeline(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``commands`` in one non-transactional pipeline of ``client`` (through its pool); the
    replies in order, an error reply as its ``ResponseError`` in its place."""
    with client.pipeline(transaction=False) as pipe:
        for args in commands:
            pipe.execute_command(*args)
        return list(pipe.execute(raise_on_error=False))
