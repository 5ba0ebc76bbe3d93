"""A throw-away ``redis-server`` on a free loopback port, for the redis and tiered backends.

Started only when no Redis URL was given and the binary is on PATH; stopped when the bench
ends. It keeps nothing on disk (no RDB, no AOF, its own temporary directory) and runs with
``maxmemory-policy noeviction``, the policy the README asks of a Redis behind the gateway.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from gateway.processes import free_port, terminate

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.02
PING_TIMEOUT_S = 0.5
START_ATTEMPTS = 3

_running: set[LocalRedis] = set()


def redis_server_binary() -> str | None:
    """The ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def ping(host: str, port: int, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """True if something on ``host:port`` answers a Redis PING."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.makefile("rb").readline()
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class LocalRedis:
    """A ``redis-server`` child process bound to 127.0.0.1; a context manager."""

    def __init__(self, executable: str | None = None) -> None:
        self._executable = executable or redis_server_binary()
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        if self._port is None:
            raise RuntimeError("redis-server is not running: call start() first")
        return f"redis://{HOST}:{self._port}/0"

    def start(self) -> LocalRedis:
        """Start the server on a free port and wait until it answers PING."""
        if self._executable is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self._workdir = tempfile.TemporaryDirectory(prefix="gateway-bench-redis-")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for _ in range(START_ATTEMPTS):
            port = free_port(HOST)
            process = subprocess.Popen(
                [
                    self._executable,
                    *("--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"),
                    *("--maxmemory-policy", "noeviction", "--dir", self._workdir.name),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            while time.monotonic() < deadline and process.poll() is None:
                if ping(HOST, port):
                    self._process, self._port = process, port
                    _running.add(self)
                    return self
                time.sleep(POLL_INTERVAL_S)
            terminate(process)
            if time.monotonic() >= deadline:
                break
            # It exited at once: most likely the port was taken meanwhile. Try another.
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {STARTUP_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory. Idempotent."""
        process, self._process = self._process, None
        _running.discard(self)
        if process is not None:
            terminate(process)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()
