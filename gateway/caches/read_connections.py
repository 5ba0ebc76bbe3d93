"""`ReadConnections`: the cache's reads (``GET``, ``MGET``) on connections that skip the pool.

A cache hit is one ``GET``. Through ``redis.Redis.execute_command`` that costs about 65 µs of
client CPU on this project's benchmark machine (redis-py 8: the blocking pool's queue, its
observability hooks, the retry wrapper); sent on a connection taken from a plain list it costs
about 28 µs, most of it the two system calls. On a read-heavy service with several threads the
client's CPU, not Redis, bounds the throughput, so the reads take this path.

The connections are redis-py ``Connection`` objects made with the pool's own class and settings
(timeouts, TLS, credentials, protocol), kept on a list used as a stack: ``list.pop`` and
``list.append`` are atomic in CPython, so taking and returning one needs no lock. At most
``limit`` of them are ever made; a read that finds none idle once the limit is reached goes
through the client and its pool like every other command. A connection whose command failed
other than with an error reply is disconnected (a late reply must never answer the next
command) and reconnects on its next use. After ``os.fork`` the child drops the parent's
connections (their sockets are shared with the parent) and makes its own.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from redis.connection import AbstractConnection
from redis.exceptions import ResponseError


class ReadConnections:
    """Read commands on up to ``limit`` connections of their own (see the module docstring)."""

    def __init__(self, client: redis.Redis, limit: int) -> None:
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self._fallback = client.execute_command
        self._limit = limit
        self._idle: list[AbstractConnection] = []
        self._made: list[AbstractConnection] = []
        self._lock = threading.Lock()  # only to make a connection (and count it) or to reset
        self._pid = os.getpid()

    def command(self, *args: Any) -> Any:
        """Send one command and return its reply (redis-py's errors are raised as they come)."""
        if self._pid != os.getpid():
            self._after_fork()
        try:
            connection = self._idle.pop()
        except IndexError:
            made = self._make()
            if made is None:
                return self._fallback(*args)
            connection = made
        try:
            connection.send_command(*args)
            reply = connection.read_response()
        except ResponseError:
            self._idle.append(connection)  # an error reply: the connection is in step
            raise
        except BaseException:
            connection.disconnect()
            self._idle.append(connection)
            raise
        self._idle.append(connection)
        return reply

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
