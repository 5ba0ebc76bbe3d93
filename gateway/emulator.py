"""An embedded DynamoDB emulator: moto's server, in a child process, on a free loopback port.

Both the test suite and ``gateway bench`` / the demo use it, so that nothing needs an AWS account.
The emulator speaks DynamoDB's real HTTP/JSON protocol: clients reach it through ``endpoint_url``
exactly as they would reach AWS, with retries, signing and error parsing all exercised.

The child process never outlives us: it runs in its own session (a Ctrl-C in the terminal goes to
us, and we stop it in order), ``stop()`` terminates then kills it, an ``atexit`` hook stops any
emulator still running, and a watchdog thread inside the child exits it when its parent process
disappears (which covers a parent killed by SIGKILL, where no ``atexit`` hook runs).

Requires the ``emulator`` extra: ``pip install 'dynamodb-gateway[emulator]'``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from gateway.errors import ConfigError
from gateway.processes import free_port, terminate

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 1.0
RESET_TIMEOUT_S = 10.0
#: How often a port lost to another process between probing and binding is retried.
START_ATTEMPTS = 3
LOG_TAIL_BYTES = 4000

#: Dummy values for the emulator, which accepts any credentials. Never use them against AWS.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}
DUMMY_REGION = "us-east-1"

INSTALL_HINT = "pip install 'dynamodb-gateway[emulator]'"

# Modules that `python -m moto.server` needs: moto itself and the `server` extra's web stack.
_REQUIRED_MODULES = ("moto", "flask", "flask_cors", "werkzeug")

# Runs in the child. It is `python -m moto.server` plus what the CLI cannot do: a watchdog that
# exits when the parent process is gone (argv[1] is the parent's pid); when quiet (argv[2] ==
# "1"), no per-request access log, which grows without bound under a load test; one speed fix
# that cuts the emulator's CPU per request by more than half (measured with py-spy); and one
# fidelity fix: each DynamoDB request is applied atomically, as DynamoDB does.
_BOOTSTRAP = """\
import logging, os, sys, threading, time
parent = int(sys.argv[1])
def _watch_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=_watch_parent, name="parent-watchdog", daemon=True).start()
if sys.argv[2] == "1":
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
try:  # speed only (moto internals; a moto without them still works, slower)
    # Routing listed moto's package directory on every request; it does not change.
    import moto.backends
    _modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: _modules
except (ImportError, AttributeError):
    pass
try:  # fidelity: DynamoDB applies each request atomically; moto's threads do not
    # Without this, two conditional PutItems racing on one item can both pass their condition
    # (a thread switch between moto's check and its write), which DynamoDB never allows.
    from moto.dynamodb.responses import DynamoHandler
    _atomic = threading.Lock()
    _call_action = DynamoHandler.call_action
    def _one_at_a_time(self, *args, **kwargs):
        with _atomic:
            return _call_action(self, *args, **kwargs)
    DynamoHandler.call_action = _one_at_a_time
except (ImportError, AttributeError):
    pass
from moto.server import main
main(sys.argv[3:])
"""

# Strong references: an emulator dropped without stop() is still stopped at exit.
_running: set[EmbeddedDynamoDB] = set()


def ensure_dummy_credentials() -> dict[str, str]:
    """Set dummy AWS credentials and a region in ``os.environ``, only where none are set.

    For the embedded emulator only: it accepts any credentials, but botocore refuses to sign a
    request without some. Credentials are treated as a pair (both keys are set only if neither
    is), so a real key id is never mixed with a dummy secret. The region is set only if neither
    ``AWS_DEFAULT_REGION`` nor ``AWS_REGION`` is. Returns the variables it set.
    """
    added: dict[str, str] = {}
    if not any(name in os.environ for name in DUMMY_CREDENTIALS):
        added.update(DUMMY_CREDENTIALS)
    if "AWS_DEFAULT_REGION" not in os.environ and "AWS_REGION" not in os.environ:
        added["AWS_DEFAULT_REGION"] = DUMMY_REGION
    os.environ.update(added)
    return added


def check_emulator_installed() -> None:
    """Raise `ConfigError` with the install command if moto's server is not importable."""
    missing = [name for name in _REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            "The embedded DynamoDB emulator needs moto's server "
            f"(missing module(s): {', '.join(missing)}). Install it with: {INSTALL_HINT}"
        )


class EmbeddedDynamoDB:
    """moto's DynamoDB-compatible server in a child process, reachable at `endpoint_url`.

    Use as a context manager, or call `start()` and `stop()`::

        with EmbeddedDynamoDB() as ddb:
            client = boto3.client("dynamodb", endpoint_url=ddb.endpoint_url)

    Args:
        host: address to bind; loopback by default.
        port: port to bind; a free one is picked when None.
        log_path: file for the server's output. When None, a temporary file is used and removed
            on `stop()`; its tail is quoted in the error when the server fails to start.
        startup_timeout_s: how long `start()` waits for the server to answer HTTP.
        quiet: drop the per-request access log (errors are still logged).
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        quiet: bool = True,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._owns_log = log_path is None
        self._startup_timeout_s = startup_timeout_s
        self._quiet = quiet
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._lock = threading.Lock()
        #: Seconds the last `start()` took until the server answered HTTP.
        self.startup_s: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> EmbeddedDynamoDB:
        """Start the server and wait until it answers HTTP; return self.

        Raises:
            ConfigError: moto's server is not installed.
            RuntimeError: the server did not come up within ``startup_timeout_s``.
        """
        check_emulator_installed()
        with self._lock:
            if self._process is not None:
                return self
            began = time.monotonic()
            deadline = began + self._startup_timeout_s
            attempts = 1 if self._requested_port is not None else START_ATTEMPTS
            for attempt in range(1, attempts + 1):
                port = self._requested_port or free_port(self._host)
                process = self._spawn(port)
                outcome = self._wait_until_ready(process, port, deadline)
                if outcome == "ready":
                    self._process, self._port = process, port
                    self.startup_s = time.monotonic() - began
                    _running.add(self)
                    return self
                terminate(process)
                if outcome == "timeout" or attempt == attempts:
                    break
                # The child exited early: most likely another process took the port between
                # probing and binding. Try another port.
            tail = self._log_tail()
            self._remove_log()
            raise RuntimeError(
                f"The DynamoDB emulator (moto server) did not answer on {self._host} within "
                f"{self._startup_timeout_s:.0f} s after {attempt} attempt(s). "
                f"Server output:\n{tail or '(empty)'}"
            )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a few seconds). Idempotent."""
        with self._lock:
            process, self._process = self._process, None
            _running.discard(self)
        if process is not None:
            terminate(process)
        self._remove_log()

    def reset(self) -> None:
        """Wipe all of the emulator's state (every table, in every region and account)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=RESET_TIMEOUT_S) as response:
            response.read()

    def __enter__(self) -> EmbeddedDynamoDB:
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
        if self._port is None or self._process is None:
            raise RuntimeError("The DynamoDB emulator is not running: call start() first")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://host:port``, for ``boto3.client("dynamodb", endpoint_url=...)``."""
        return f"http://{self._host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process id, or None when not running."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}" if self._process is not None else "stopped"
        return f"EmbeddedDynamoDB({where})"

    # -- internals ---------------------------------------------------------------------------

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="gateway-moto-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        quiet = "1" if self._quiet else "0"
        argv = [sys.executable, "-c", _BOOTSTRAP, str(os.getpid()), quiet]
        argv += ["-H", self._host, "-p", str(port)]
        with open(self._log_path, "ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_until_ready(
        self, process: subprocess.Popen[bytes], port: int, deadline: float
    ) -> str:
        """Poll until the server answers as moto: "ready", "exited" or "timeout"."""
        url = f"http://{self._host}:{port}/moto-api/data.json"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return "exited"
            try:
                with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
                    # A JSON answer from /moto-api/ tells us it is moto, not some other server
                    # that took the port first.
                    json.loads(response.read())
                if process.poll() is None:
                    return "ready"
            except (OSError, ValueError):
                pass
            time.sleep(POLL_INTERVAL_S)
        return "timeout"

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        with open(self._log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
            return log.read().decode("utf-8", "replace")

    def _remove_log(self) -> None:
        if self._owns_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None


@atexit.register
def _stop_all() -> None:
    for emulator in list(_running):
        emulator.stop()


__all__ = [
    "DUMMY_CREDENTIALS",
    "DUMMY_REGION",
    "EmbeddedDynamoDB",
    "check_emulator_installed",
    "ensure_dummy_credentials",
    "free_port",
]
