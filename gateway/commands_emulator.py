"""``gateway emulator``: the embedded DynamoDB emulator, in the foreground, for your own code.

It prints the shell lines that point the gateway (and any AWS SDK) at it, then runs until
Ctrl-C (SIGINT) or SIGTERM and stops the emulator. The port is 8000 when free (DynamoDB Local's
port, the one the examples use), else a free one; ``--port`` insists on one. The data lives in
the emulator's memory and is gone when it stops: moto's server (5.x) has no persistence option,
so this command offers none.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType

from gateway.cli import EXIT_FAILURE, EXIT_OK
from gateway.emulator import DEFAULT_HOST, DUMMY_CREDENTIALS, DUMMY_REGION, EmbeddedDynamoDB
from gateway.errors import ServiceUnavailableError, ValidationError

#: The port tried first: DynamoDB Local's, so `http://localhost:8000` in examples just works.
DEFAULT_PORT = 8000
#: How often the foreground loop checks that the emulator is still alive.
WATCH_INTERVAL_S = 1.0


def port_is_free(host: str, port: int) -> bool:
    """True if ``port`` could be bound on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, requested: int | None) -> int | None:
    """The port to start on; None lets `EmbeddedDynamoDB` pick a free one (and retry if it
    is taken before the emulator binds it)."""
    if requested is None:
        return DEFAULT_PORT if port_is_free(host, DEFAULT_PORT) else None
    if not 0 < requested < 65536:
        raise ValidationError(f"--port must be 1 to 65535, not {requested}")
    if not port_is_free(host, requested):
        raise ValidationError(
            f"Port {requested} on {host} is in use: choose another with --port, or leave "
            "--port out to get 8000 if free, else any free port."
        )
    return requested


def export_lines(endpoint_url: str) -> list[str]:
    """The shell lines that point the gateway and the AWS SDKs at the emulator."""
    variables = {
        "DYNAMODB_ENDPOINT_URL": endpoint_url,
        **DUMMY_CREDENTIALS,
        "AWS_DEFAULT_REGION": DUMMY_REGION,
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]


def _stop_on_signals(stop: threading.Event) -> dict[int, object]:
    """Make SIGINT and SIGTERM set ``stop`` (instead of interrupting whatever runs); the
    previous handlers, to restore."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _start(port: int | None) -> EmbeddedDynamoDB:
    emulator = EmbeddedDynamoDB(host=DEFAULT_HOST, port=port)
    try:
        return emulator.start()
    except RuntimeError as exc:  # it did not come up: its output is in the message
        raise ServiceUnavailableError(f"The emulator did not start: {exc}") from exc


def serve_until_stopped(
    stop: threading.Event, exports: list[str], banner: str, running: Callable[[], bool]
) -> int:
    """Print the export lines (stdout, flushed: a script or a test waits for them) and the
    banner (stderr), then wait for ``stop`` (Ctrl-C, SIGTERM); EXIT_FAILURE if what is served
    stops ``running`` on its own first."""
    for line in exports:
        print(line)
    sys.stdout.flush()
    print(banner, file=sys.stderr, flush=True)
    while not stop.wait(WATCH_INTERVAL_S):
        if not running():
            print("error: the emulator exited on its own", file=sys.stderr)
            return EXIT_FAILURE
    return EXIT_OK


def cmd_emulator(args: argparse.Namespace) -> int:
    port = choose_port(DEFAULT_HOST, args.port)
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    try:
        emulator = _start(port)
        try:
            code = serve_until_stopped(
                stop,
                export_lines(emulator.endpoint_url),
                f"# DynamoDB emulator (moto, pid {emulator.pid}) on {emulator.endpoint_url}; "
                "data in memory only. Ctrl-C to stop.",
                lambda: emulator.running,
            )
        finally:
            emulator.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    if code == EXIT_OK:
        print("# emulator stopped", file=sys.stderr)
    return code


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``emulator``."""
    text = (
        "run the embedded DynamoDB emulator in the foreground for your own code: prints the "
        "export lines that point the gateway at it, stops on Ctrl-C or SIGTERM; data is kept "
        "in memory only"
    )
    emulator = commands.add_parser("emulator", help=text, description=text)
    emulator.set_defaults(handler=cmd_emulator)
    emulator.add_argument(
        "--port",
        type=int,
        help=f"port on {DEFAULT_HOST} (default: {DEFAULT_PORT} if free, else a free one)",
    )
