"""`send_packed`: a Redis command sent without letting go of the interpreter lock.

Every Python socket call lets go of the interpreter lock around its system call, even a
``send`` that cannot wait. In a busy multi-threaded client some other thread takes the lock
in that moment and keeps it for its time slice (a botocore request holds it for about a
millisecond at a time), so each send costs the sender a wait of that order, on top of the
wait for the reply that a cache hit (``GET``) cannot avoid.

The command goes out with one non-blocking ``send(2)`` called through ``ctypes.PyDLL``, whose
calls keep the lock (while the kernel copies the command: a few kilobytes for the cache's
commands) and an idle connection's send buffer takes it at once. A send the socket did not
take at all goes through redis-py's own ``send_packed_command`` (which raises its
``ConnectionError`` and disconnects if it fails); the rest of one it took in part follows on
the same socket with ``sendall``. Connections this
cannot serve go through redis-py too: TLS, a connection not yet open, one with redis-py's
``health_check_interval``, a command packed in several chunks, and every platform without
``send`` flags ``MSG_DONTWAIT`` and ``MSG_NOSIGNAL`` (no ``SIGPIPE`` on a connection Redis
closed). `peek` looks at an idle connection the same way, for the check before a write
script.

Measured (``scripts/bench_locked_send.py``: six threads reading one 1 KB key while two
threads burn 0.5 ms of CPU every 3 ms, as requests to DynamoDB do): 21-31 % more hits per
second than with redis-py's ``sendall``.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from collections.abc import Sequence
from typing import Any

from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

_FLAGS: int | None = None
_PEEK_FLAGS: int | None = None
_libc_send: Any = None
_libc_recv: Any = None
try:
    _FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
    _PEEK_FLAGS = socket.MSG_DONTWAIT | socket.MSG_PEEK
    _libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: its calls keep the lock
    _libc_send = _libc.send
    _libc_send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    _libc_send.restype = ctypes.c_ssize_t
    _libc_recv = _libc.recv
    _libc_recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    _libc_recv.restype = ctypes.c_ssize_t
except (AttributeError, OSError, TypeError):  # no such flags, or no C library to call
    _libc_send = _libc_recv = None
_PEEK_BUFFER = ctypes.create_string_buffer(1)  # peeked bytes are never read from it

#: errno values that mean "nothing was sent, send it the usual way".
_NOT_SENT = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


def send_packed(connection: AbstractConnection, chunks: Sequence[bytes]) -> None:
    """Send ``chunks`` (redis-py's packed form of one or more commands) on ``connection``."""
    sock = connection._sock  # type: ignore[attr-defined]
    if (
        _libc_send is None
        or type(sock) is not socket.socket  # None (not connected), TLS, another library's
        or len(chunks) != 1
        or connection.health_check_interval
    ):
        connection.send_packed_command(chunks)
        return
    data = chunks[0]
    sent = _libc_send(sock.fileno(), data, len(data), _FLAGS)
    if sent == len(data):
        return
    if sent <= 0:  # nothing went out: all of it through redis-py (its error, if it fails)
        connection.send_packed_command(chunks)
        return
    # Part of the command is on the wire: the rest must follow on this very socket, never on
    # a new connection (redis-py's send reconnects if the connection was closed meanwhile,
    # and Redis would read the tail as commands of their own).
    try:
        sock.sendall(memoryview(data)[sent:])
    except BaseException as exc:
        connection.disconnect()
        if isinstance(exc, OSError):
            raise RedisConnectionError(f"Error while writing to Redis: {exc}") from exc
        raise


def peek(sock: socket.socket) -> int | None:
    """What a non-blocking look at ``sock`` finds, keeping the interpreter lock: 0 for the end
    of the stream (closed by the peer), 1 for data waiting to be read, -1 for nothing to
    read, None where this cannot look (no C library here)."""
    if _libc_recv is None:
        return None
    got = _libc_recv(sock.fileno(), _PEEK_BUFFER, 1, _PEEK_FLAGS)
    if got >= 0:
        return got
    return -1 if ctypes.get_errno() in _NOT_SENT else 0
