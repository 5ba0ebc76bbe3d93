"""The CLI tests' shared runner: a command through `gateway.cli.main` on the emulator."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.cli import main

Run = Callable[..., tuple[int, str, str]]


def cli_runner(endpoint_url: str, table_prefix: str, capsys: pytest.CaptureFixture[str]) -> Run:
    """``run(*args)``: ``gateway --endpoint-url <endpoint> --table-prefix <prefix> *args``,
    returning (exit code, stdout, stderr)."""

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()  # drop anything printed before
        code = main(["--endpoint-url", endpoint_url, "--table-prefix", table_prefix, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def assert_one_line_error(err: str) -> None:
    """The CLI failed with one ``error: ...`` line on stderr and no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
