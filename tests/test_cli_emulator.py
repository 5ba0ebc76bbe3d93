"""``gateway emulator``: run as a user would, in a subprocess; its export lines point the library
at it, and Ctrl-C (SIGINT) or SIGTERM stop it and its emulator process cleanly."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from gateway import Settings, get_database_service
from gateway.commands_emulator import choose_port, export_lines
from gateway.errors import ValidationError
from gateway.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
EXPORTED = (
    "DYNAMODB_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)


class Lines:
    """The lines of a child's pipe, read by a thread, so the test can wait with a deadline."""

    def __init__(self, pipe: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, deadline: float) -> str:
        line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"the command closed its output; it printed {self.seen}")
        self.seen.append(line)
        return line


@pytest.fixture
def emulator_command() -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    """``gateway emulator --port <free>`` in a subprocess; its stdout and stderr lines."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "DYNAMODB_", "GATEWAY_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "emulator", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        yield process, Lines(process.stdout), Lines(process.stderr)
    finally:
        if process.poll() is None:  # a failed test: do not leave it running
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def read_exports(stdout: Lines, deadline: float) -> dict[str, str]:
    exports: dict[str, str] = {}
    while len(exports) < len(EXPORTED):
        line = stdout.next(deadline)
        name, _, value = line.removeprefix("export ").partition("=")
        assert line.startswith("export ") and name in EXPORTED, line
        exports[name] = shlex.split(value)[0]
    return exports


def emulator_pid(stderr: Lines, deadline: float) -> int:
    while True:
        found = re.search(r"pid (\d+)\) on http", stderr.next(deadline))
        if found:
            return int(found.group(1))


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def accepts_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_printed_exports_point_the_library_at_it_and_a_signal_stops_it(
    emulator_command: tuple[subprocess.Popen[str], Lines, Lines],
    monkeypatch: pytest.MonkeyPatch,
    table_prefix: str,
    stop_signal: signal.Signals,
) -> None:
    process, stdout, stderr = emulator_command
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    exports = read_exports(stdout, deadline)
    assert exports["DYNAMODB_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert exports["AWS_DEFAULT_REGION"] == "us-east-1"
    pid = emulator_pid(stderr, deadline)
    assert is_running(pid)

    for name, value in exports.items():  # what `source` of the printed lines does
        monkeypatch.setenv(name, value)
    with get_database_service(Settings(DYNAMODB_TABLE_PREFIX=table_prefix)) as db:
        rev = db.save("notes", "n1", {"name": "Ada"})["rev"]
        assert db.get("notes", "n1") == {"_id": "n1", "_rev": rev, "name": "Ada"}

    process.send_signal(stop_signal)
    assert process.wait(timeout=STOP_TIMEOUT_S) == 0, stderr.seen
    # The command waits for its emulator to exit before it exits itself: gone at once.
    assert not is_running(pid)
    assert not accepts_connections(exports["DYNAMODB_ENDPOINT_URL"])


def test_export_lines_are_the_emulator_s_dummy_values() -> None:
    assert export_lines("http://127.0.0.1:8000") == [
        "export DYNAMODB_ENDPOINT_URL=http://127.0.0.1:8000",
        "export AWS_ACCESS_KEY_ID=testing",
        "export AWS_SECRET_ACCESS_KEY=testing",
        "export AWS_DEFAULT_REGION=us-east-1",
    ]


def test_the_default_port_is_8000_when_free_else_any(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.commands_emulator as command

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setattr(command, "DEFAULT_PORT", busy)
        assert choose_port("127.0.0.1", None) is None  # the emulator picks a free one
        with pytest.raises(ValidationError, match=f"Port {busy} on 127.0.0.1 is in use"):
            choose_port("127.0.0.1", busy)
    free = free_port()
    monkeypatch.setattr(command, "DEFAULT_PORT", free)
    assert choose_port("127.0.0.1", None) == free
    assert choose_port("127.0.0.1", free) == free
    with pytest.raises(ValidationError, match="1 to 65535"):
        choose_port("127.0.0.1", 70000)
