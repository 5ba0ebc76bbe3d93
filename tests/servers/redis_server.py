"""A real, throw-away `redis-server` on a free loopback port, for tests.

Partitions are produced the way they happen in production: `pause()` sends SIGSTOP, so the kernel
still accepts TCP connections but nothing answers, and clients hit their socket timeouts;
`resume()` sends SIGCONT.

The server never outlives the test session: it runs in its own session (Ctrl-C reaches pytest,
which stops it in order), `stop()` terminates then kills it, an `atexit` hook stops any server
still running, and, on Linux with util-linux's `setpriv`, the kernel sends it SIGKILL when the
process that started it dies (a parent-death signal, which also covers pytest killed by SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from gateway.processes import free_port, terminate

DEFAULT_STARTUP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.02
PING_TIMEOUT_S = 0.5
COMMAND_TIMEOUT_S = 5.0
START_ATTEMPTS = 3
LOG_TAIL_BYTES = 4000

_running: set[RedisServer] = set()


class RedisServer:
    """A `redis-server` child process with no persistence, bound to 127.0.0.1.

    Args:
        password: when set, started with ``--requirepass`` and included in `url`.
        extra_args: more ``redis-server`` arguments, e.g. ``["--maxmemory", "10mb"]``.
        executable: the ``redis-server`` binary; found on PATH when None.
        startup_timeout_s: how long `start()` waits for PING to be answered.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        executable: str | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    ) -> None:
        self.host = "127.0.0.1"
        self.password = password
        self._extra_args = list(extra_args)
        self._executable = executable or shutil.which("redis-server")
        self._startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._paused = False
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; return self."""
        if self._executable is None:
            raise RuntimeError(
                "redis-server is not installed (apt-get install redis-server); the tests use "
                "a real Redis"
            )
        with self._lock:
            if self._process is not None:
                return self
            self._workdir = tempfile.TemporaryDirectory(prefix="gateway-redis-")
            deadline = time.monotonic() + self._startup_timeout_s
            for _ in range(START_ATTEMPTS):
                port = free_port(self.host)
                process = self._spawn(port)
                outcome = self._wait_for_ping(process, port, deadline)
                if outcome == "ready":
                    self._process, self._port = process, port
                    _running.add(self)
                    return self
                terminate(process)
                if outcome == "timeout":
                    break
                # Exited early: most likely the port was taken meanwhile; try another.
            tail = self._log_tail()
            self._cleanup_workdir()
            raise RuntimeError(
                f"redis-server did not answer PING within {self._startup_timeout_s:.0f} s. "
                f"Output:\n{tail or '(empty)'}"
            )

    def stop(self) -> None:
        """Stop the server, resuming it first if paused. Idempotent."""
        with self._lock:
            process, self._process = self._process, None
            _running.discard(self)
            paused, self._paused = self._paused, False
        if process is not None:
            if paused:
                # A stopped process keeps SIGTERM pending until it is continued.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
            terminate(process)
        self._cleanup_workdir()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted but nothing is answered."""
        process = self._require_running()
        process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT). Harmless when not paused."""
        process = self._require_running()
        process.send_signal(signal.SIGCONT)
        self._paused = False

    def flush(self) -> None:
        """Delete every key in every database (FLUSHALL). The server must not be paused."""
        if self._paused:
            raise RuntimeError("RedisServer.flush() on a paused server: call resume() first")
        reply = self.command("FLUSHALL")
        if reply != "+OK":
            raise RuntimeError(f"FLUSHALL failed: {reply}")

    def command(self, *args: str) -> str:
        """Send one command on a fresh connection (authenticating first when a password is
        set) and return the first line of the reply, e.g. ``"+PONG"``. Bounded by a timeout.
        """
        port = self.port
        with socket.create_connection((self.host, port), timeout=COMMAND_TIMEOUT_S) as sock:
            reader = sock.makefile("rb")
            if self.password is not None:
                sock.sendall(_encode("AUTH", self.password))
                auth = reader.readline().decode().rstrip("\r\n")
                if auth != "+OK":
                    raise RuntimeError(f"AUTH failed: {auth}")
            sock.sendall(_encode(*args))
            return reader.readline().decode().rstrip("\r\n")

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- properties --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        self._require_running()
        assert self._port is not None
        return self._port

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server process id, or None when not running."""
        return self._process.pid if self._process is not None else None

    @property
    def paused(self) -> bool:
        """True between `pause()` and `resume()`."""
        return self._paused

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running"
        where = f"{self.host}:{self._port} {state}" if self._process is not None else "stopped"
        return f"RedisServer({where})"

    # -- internals ---------------------------------------------------------------------------

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("redis-server is not running: call start() first")
        return self._process

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        assert self._workdir is not None and self._executable is not None
        argv = [self._executable, "--port", str(port), "--bind", self.host]
        argv += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        argv += ["--dir", self._workdir.name]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        argv += self._extra_args
        # The parent-death signal fires when the *thread* that forked exits, so it is only
        # safe from the main thread (where pytest's session fixtures run).
        setpriv = shutil.which("setpriv")
        if setpriv is not None and threading.current_thread() is threading.main_thread():
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        with open(self._log_file(), "ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_for_ping(self, process: subprocess.Popen[bytes], port: int, deadline: float) -> str:
        """Poll until the server answers PING: "ready", "exited" or "timeout"."""
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return "exited"
            with contextlib.suppress(OSError):
                with socket.create_connection((self.host, port), timeout=PING_TIMEOUT_S) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.makefile("rb").readline()
                # "-NOAUTH ..." (a password given through extra_args) also means it is up.
                if reply.startswith((b"+PONG", b"-NOAUTH")) and process.poll() is None:
                    return "ready"
            time.sleep(POLL_INTERVAL_S)
        return "timeout"

    def _log_file(self) -> Path:
        assert self._workdir is not None
        return Path(self._workdir.name) / "redis.log"

    def _log_tail(self) -> str:
        if self._workdir is None or not self._log_file().exists():
            return ""
        data = self._log_file().read_bytes()[-LOG_TAIL_BYTES:]
        return data.decode("utf-8", "replace")

    def _cleanup_workdir(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def _encode(*args: str) -> bytes:
    """A command in RESP, the Redis protocol."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


__all__ = ["RedisServer"]
