"""A TCP relay in front of a server (Redis) that simulates network partitions at the wire.

A paused `redis-server` (SIGSTOP, `RedisServer.pause`) is not a partition: the kernel keeps
the bytes clients send, and the server executes the queued commands when it is resumed. Behind
a real partition those bytes are lost. `TcpRelay` produces the real thing:

- `blackhole`: bytes in both directions are read and discarded; new connections are accepted
  and black-holed too. Nothing reaches the server and no answer comes back: clients time out.
- `drop_replies`: a one-way cut. Requests reach the server (and are executed), answers are
  discarded: the "lost answer" case.
- `refuse`: new connections are refused (the port stays reserved but does not listen);
  existing connections are reset.
- `reset_all`: existing connections are reset (RST); new ones flow as usual.
- `heal`: traffic flows again for new connections. Connections that lived through a fault are
  reset, as after a partition that outlived TCP's patience.

Resets are real RSTs (``SO_LINGER`` 0). Every fault method returns once it is in force: the
bytes the relay reads afterwards are treated under the new rules.

One thread runs a selector loop over non-blocking sockets; the fault methods run inside that
loop (the caller waits for them), so no socket is ever used by two threads. `close()` resets
every connection and closes every socket the relay owns.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, TypeVar

#: How long an upstream connection attempt may take before the client is reset.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: How long a fault method waits for the relay loop to apply it.
CALL_TIMEOUT_S = 10.0
#: How long `TcpRelay.close` waits for the relay loop to stop.
CLOSE_TIMEOUT_S = 10.0
#: Bytes read from a socket at a time.
RECV_SIZE = 256 * 1024
#: A source is not read while its destination has this many bytes waiting (back-pressure).
MAX_PENDING_BYTES = 1024 * 1024
#: Connections accepted per wake-up of the listening socket.
ACCEPT_BATCH = 64
LISTEN_BACKLOG = 128

_LINGER_RESET = struct.pack("ii", 1, 0)
_CONNECT_PENDING = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EALREADY})

Mode = Literal["flowing", "blackhole", "drop_replies", "refused"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class RelayCounts:
    """A snapshot of what the relay has done since it started.

    Attributes:
        accepted: connections accepted from clients.
        open: connections open now.
        bytes_to_upstream: bytes delivered from clients to the server.
        bytes_to_client: bytes delivered from the server to clients.
        dropped_to_upstream: bytes read from clients and discarded (blackhole).
        dropped_to_client: bytes read from the server and discarded (blackhole, drop_replies).
        resets: connections the relay reset (`heal`, `reset_all`, `refuse`; not `close`).
        upstream_failures: client connections reset because the server could not be reached.
    """

    accepted: int = 0
    open: int = 0
    bytes_to_upstream: int = 0
    bytes_to_client: int = 0
    dropped_to_upstream: int = 0
    dropped_to_client: int = 0
    resets: int = 0
    upstream_failures: int = 0


@dataclass(eq=False)
class _Side:
    """One socket of a relayed connection and the bytes waiting to be written to it."""

    sock: socket.socket | None
    out: bytearray = field(default_factory=bytearray)
    #: The peer sent FIN (recv returned b"").
    eof: bool = False
    #: Send FIN (shutdown SHUT_WR) once `out` is flushed.
    want_shut_wr: bool = False
    shut_wr: bool = False
    #: The selector events this socket is registered for (0: not registered).
    events: int = 0


@dataclass(eq=False)
class _Conn:
    """A client connection and, unless black-holed from the start, its upstream connection."""

    client: _Side
    upstream: _Side
    connecting: bool = False
    connect_deadline: float = 0.0
    #: Everything is discarded both ways until the connection is reset.
    blackholed: bool = False


@dataclass(eq=False)
class _Call:
    """A function to run inside the relay loop, and its outcome."""

    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class TcpRelay:
    """A TCP relay on a free loopback port in front of ``upstream_host:upstream_port``.

    It relays when constructed; `close()` (or leaving the ``with`` block) stops it.

    Args:
        upstream_host: the server's address, e.g. ``RedisServer().host``.
        upstream_port: the server's port.
        host: the address the relay listens on.
        connect_timeout_s: how long connecting to the server may take before the client's
            connection is reset.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        family, _, _, _, address = socket.getaddrinfo(
            upstream_host, upstream_port, type=socket.SOCK_STREAM
        )[0]
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self._upstream_family = family
        self._upstream_address = address
        self._connect_timeout_s = connect_timeout_s

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._counts = RelayCounts()
        self._calls: deque[_Call] = deque()
        self._closed = False  # close() was called: no more calls are queued
        self._stopped = False  # the loop has torn everything down
        self._fatal: BaseException | None = None

        # Loop-thread state (touched by the relay thread only once it runs).
        self._mode: Mode = "flowing"
        self._conns: set[_Conn] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener: socket.socket | None = None
        self._port = 0
        try:
            for sock in (self._wake_r, self._wake_w):
                sock.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, None)
            self._listener = self._bind(port=0)
            self._port = int(self._listener.getsockname()[1])
            self._listen()
        except BaseException:
            self._teardown()
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"tcp-relay-{self._port}", daemon=True
        )
        self._thread.start()

    # -- faults ------------------------------------------------------------------------------

    def blackhole(self) -> None:
        """From now on, read and discard every byte both ways, on existing and new connections.

        Nothing reaches the server and no answer reaches a client, so clients time out. Bytes
        already read but not yet delivered are discarded too.
        """
        self._call(self._do_blackhole)

    def drop_replies(self) -> None:
        """Cut one way: requests still reach the server (and are executed), its answers are
        read and discarded, on existing and new connections."""
        self._call(self._do_drop_replies)

    def refuse(self) -> None:
        """Refuse new connections (the port stays reserved, without listening) and reset the
        existing ones."""
        self._call(self._do_refuse)

    def reset_all(self) -> None:
        """Reset (RST) every current connection; the fault in force, if any, stays."""
        self._call(self._do_reset_all)

    def heal(self) -> None:
        """End the fault in force: new connections flow again, and connections that lived
        through the fault are reset. Harmless when nothing is wrong."""
        self._call(self._do_heal)

    # -- observing ---------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """The fault in force: ``"flowing"`` when none."""
        return self._mode

    @property
    def counts(self) -> RelayCounts:
        """What the relay has done so far (a snapshot)."""
        with self._lock:
            return self._counts

    def wait_until(
        self, predicate: Callable[[RelayCounts], bool], timeout: float | None = 5.0
    ) -> bool:
        """Block until ``predicate(counts)`` holds; False if ``timeout`` passed first.

        E.g. ``relay.wait_until(lambda c: c.dropped_to_upstream >= n)``: the relay has read
        (and discarded) ``n`` bytes a client sent.
        """
        with self._changed:
            return self._changed.wait_for(
                lambda: predicate(self._counts) or self._stopped, timeout
            ) and predicate(self._counts)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The relay's TCP port (kept across `refuse` / `heal`)."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``: give this to Redis clients."""
        return f"redis://{self.host}:{self._port}/0"

    def close(self) -> None:
        """Stop relaying: reset every connection and close every socket. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            raise RuntimeError(f"TcpRelay on port {self._port} did not stop")

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._mode
        return (
            f"TcpRelay({self.host}:{self._port} -> {self.upstream_host}:{self.upstream_port}, "
            f"{state})"
        )

    # -- calls into the loop -----------------------------------------------------------------

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in the relay loop and return its result (re-raising its exception)."""
        call = _Call(fn)
        with self._lock:
            if self._closed or self._stopped:
                raise RuntimeError(f"{self!r} is closed") from self._fatal
            self._calls.append(call)
        self._wake()
        if not call.done.wait(CALL_TIMEOUT_S):
            raise RuntimeError(f"{self!r} did not answer within {CALL_TIMEOUT_S} s")
        if call.error is not None:
            raise call.error
        result: _T = call.result
        return result

    def _wake(self) -> None:
        # A full socket buffer means a wake-up is already pending.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _run_calls(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    return
                call = self._calls.popleft()
            try:
                call.result = call.fn()
            except Exception as exc:
                call.error = exc
            call.done.set()

    # -- fault transitions (in the loop) -----------------------------------------------------

    def _do_blackhole(self) -> None:
        self._mode = "blackhole"
        self._listen()
        for conn in list(self._conns):
            conn.blackholed = True
            for side in (conn.client, conn.upstream):
                side.out.clear()
                side.want_shut_wr = False
            self._update(conn)

    def _do_drop_replies(self) -> None:
        self._mode = "drop_replies"
        self._listen()
        for conn in list(self._conns):
            conn.client.out.clear()
            conn.client.want_shut_wr = False
            self._update(conn)

    def _do_refuse(self) -> None:
        self._mode = "refused"
        self._unlisten()
        self._do_reset_all()

    def _do_reset_all(self) -> None:
        for conn in list(self._conns):
            self._reset(conn)
            self._count(resets=1)

    def _do_heal(self) -> None:
        previous, self._mode = self._mode, "flowing"
        self._listen()
        if previous != "flowing":
            # Every connection open now lived through the fault.
            self._do_reset_all()

    # -- listening ---------------------------------------------------------------------------

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _listen(self) -> None:
        """Listen (again) on the relay's port; the socket stays bound while refusing."""
        if self._listener is None:
            self._listener = self._bind(self._port)
        key = self._selector.get_map().get(self._listener)
        if key is None:
            self._listener.listen(LISTEN_BACKLOG)
            self._selector.register(self._listener, selectors.EVENT_READ, None)

    def _unlisten(self) -> None:
        """Stop listening but keep the port: connections are refused (RST to the SYN), and
        those waiting in the backlog are reset."""
        if self._listener is not None and self._listener in self._selector.get_map():
            self._selector.unregister(self._listener)
            listener, self._listener = self._listener, None
            listener.close()
            # A bound socket that does not listen keeps the port from anyone else.
            self._listener = self._bind(self._port)

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of file descriptors; the next wake-up retries
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client=_Side(sock), upstream=_Side(None))
            self._conns.add(conn)
            self._count(accepted=1, open=1)
            if self._mode == "blackhole":
                conn.blackholed = True  # nothing reaches the server: do not even connect
            else:
                self._connect_upstream(conn)
            if conn in self._conns:
                self._update(conn)

    # -- upstream connections ----------------------------------------------------------------

    def _connect_upstream(self, conn: _Conn) -> None:
        sock = socket.socket(self._upstream_family, socket.SOCK_STREAM)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.upstream.sock = sock
        err = sock.connect_ex(self._upstream_address)
        if err == 0:
            return
        if err in _CONNECT_PENDING:
            conn.connecting = True
            conn.connect_deadline = time.monotonic() + self._connect_timeout_s
            return
        self._upstream_failed(conn)

    def _finish_connect(self, conn: _Conn) -> None:
        assert conn.upstream.sock is not None
        err = conn.upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err in _CONNECT_PENDING:
            return
        conn.connecting = False
        if err != 0:
            self._upstream_failed(conn)
            return
        self._flush(conn, conn.upstream)

    def _upstream_failed(self, conn: _Conn) -> None:
        conn.connecting = False
        if conn.blackholed:
            self._close_side(conn, conn.upstream, reset=True)
        else:
            self._reset(conn)
            self._count(upstream_failures=1)

    def _expire_connects(self, now: float) -> float | None:
        """Fail connection attempts past their deadline; return the next deadline's delay."""
        nearest: float | None = None
        for conn in list(self._conns):
            if not conn.connecting:
                continue
            if conn.connect_deadline <= now:
                self._upstream_failed(conn)
            else:
                delay = conn.connect_deadline - now
                nearest = delay if nearest is None else min(nearest, delay)
        return nearest

    # -- relaying ----------------------------------------------------------------------------

    def _drops_to_upstream(self, conn: _Conn) -> bool:
        return conn.blackholed or conn.upstream.sock is None

    def _drops_to_client(self, conn: _Conn) -> bool:
        return conn.blackholed or self._mode == "drop_replies"

    def _route(self, conn: _Conn, side: _Side) -> tuple[_Side, bool]:
        """The peer of ``side`` and whether bytes read from ``side`` are discarded."""
        if side is conn.client:
            return conn.upstream, self._drops_to_upstream(conn)
        return conn.client, self._drops_to_client(conn)

    def _on_readable(self, conn: _Conn, side: _Side) -> None:
        assert side.sock is not None
        try:
            data = side.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._on_error(conn, side)
            return
        peer, dropping = self._route(conn, side)
        to_client = side is conn.upstream
        if not data:
            side.eof = True
            if not dropping:
                peer.want_shut_wr = True  # forward the FIN once the bytes before it are out
                self._flush(conn, peer)
            return
        if dropping:
            if to_client:
                self._count(dropped_to_client=len(data))
            else:
                self._count(dropped_to_upstream=len(data))
            return
        peer.out += data
        self._flush(conn, peer)

    def _flush(self, conn: _Conn, side: _Side) -> None:
        """Write what is waiting for ``side``; then its FIN, if one is due."""
        if side.sock is None or (side is conn.upstream and conn.connecting):
            return
        while side.out:
            try:
                sent = side.sock.send(side.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._on_error(conn, side)
                return
            del side.out[:sent]
            if side is conn.client:
                self._count(bytes_to_client=sent)
            else:
                self._count(bytes_to_upstream=sent)
        if side.want_shut_wr and not side.shut_wr:
            with contextlib.suppress(OSError):
                side.sock.shutdown(socket.SHUT_WR)
            side.shut_wr = True

    def _on_error(self, conn: _Conn, side: _Side) -> None:
        """A socket failed (reset by its peer, broken pipe...). The other end learns of it,
        by a reset, unless bytes from this side are being discarded anyway."""
        _, dropping = self._route(conn, side)
        if dropping:
            self._close_side(conn, side, reset=True)
        else:
            self._reset(conn)

    def _finished(self, conn: _Conn) -> bool:
        """Both directions are over: each side sent FIN and it was passed on."""
        client, upstream = conn.client, conn.upstream
        return (
            not conn.blackholed
            and client.eof
            and upstream.eof
            and client.shut_wr
            and upstream.shut_wr
            and not client.out
            and not upstream.out
        )

    def _update(self, conn: _Conn) -> None:
        """Close a finished connection, or register its sockets for what they wait for."""
        if conn not in self._conns:
            return
        if self._finished(conn):
            self._close_conn(conn, reset=False)
            return
        if conn.client.sock is None and conn.upstream.sock is None:
            self._close_conn(conn, reset=False)
            return
        for side in (conn.client, conn.upstream):
            if side.sock is None:
                continue
            peer, dropping = self._route(conn, side)
            events = 0
            if side is conn.upstream and conn.connecting:
                events = selectors.EVENT_WRITE
            else:
                if not side.eof and (dropping or len(peer.out) < MAX_PENDING_BYTES):
                    events |= selectors.EVENT_READ
                if side.out:
                    events |= selectors.EVENT_WRITE
            if events == side.events:
                continue
            if events == 0:
                self._selector.unregister(side.sock)
            elif side.events == 0:
                self._selector.register(side.sock, events, (conn, side))
            else:
                self._selector.modify(side.sock, events, (conn, side))
            side.events = events

    # -- closing -----------------------------------------------------------------------------

    def _close_side(self, conn: _Conn, side: _Side, *, reset: bool) -> None:
        sock, side.sock = side.sock, None
        side.out.clear()
        side.eof = True
        if sock is None:
            return
        if side.events:
            self._selector.unregister(sock)
            side.events = 0
        if reset:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.close()

    def _close_conn(self, conn: _Conn, *, reset: bool) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        conn.connecting = False
        self._close_side(conn, conn.client, reset=reset)
        self._close_side(conn, conn.upstream, reset=reset)
        self._count(open=-1)

    def _reset(self, conn: _Conn) -> None:
        """Close both sockets of ``conn`` with an RST."""
        self._close_conn(conn, reset=True)

    def _teardown(self) -> None:
        """Reset every connection and close every socket and the selector (loop thread)."""
        for conn in list(self._conns):
            self._close_conn(conn, reset=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()
        with self._changed:
            self._stopped = True
            calls = list(self._calls)
            self._calls.clear()
            self._changed.notify_all()
        for call in calls:
            call.error = RuntimeError(f"{self!r} is closed")
            call.done.set()

    # -- the loop ----------------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._changed:
            values = {name: getattr(self._counts, name) + n for name, n in deltas.items()}
            self._counts = replace(self._counts, **values)
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            while not self._closed:
                timeout = self._expire_connects(time.monotonic())
                for key, events in self._selector.select(timeout):
                    self._dispatch(key, events)
                self._run_calls()
        except BaseException as exc:  # pragma: no cover - a bug in the relay itself
            self._fatal = exc
            raise
        finally:
            self._teardown()

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        if key.fileobj is self._wake_r:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
            return
        if key.fileobj is self._listener:
            self._accept()
            return
        conn, side = key.data
        if side.sock is not key.fileobj or conn not in self._conns:
            return  # closed by an earlier event of the same batch
        if side is conn.upstream and conn.connecting:
            self._finish_connect(conn)
        else:
            if events & selectors.EVENT_WRITE:
                self._flush(conn, side)
            if events & selectors.EVENT_READ and side.sock is not None:
                self._on_readable(conn, side)
        self._update(conn)


__all__ = ["Mode", "RelayCounts", "TcpRelay"]
