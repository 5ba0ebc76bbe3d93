"""``gateway streams enable | status | disable`` and ``gateway pitr enable | status | disable``
against the emulator: idempotent, and each run that changes nothing says so."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.emulator import EmbeddedDynamoDB
from tests.cli_helpers import cli_runner

Run = Callable[..., tuple[int, Any, str]]


@pytest.fixture
def run(
    moto_server: EmbeddedDynamoDB, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> Run:
    """``run(*args)``: the command on the emulator; (exit code, stdout as JSON or "", stderr)."""
    plain = cli_runner(moto_server.endpoint_url, table_prefix, capsys)

    def call(*args: str) -> tuple[int, Any, str]:
        code, out, err = plain(*args)
        return code, json.loads(out) if out else "", err

    return call


@pytest.fixture
def notes(run: Run, table_prefix: str) -> str:
    """A collection with a table; its table's name."""
    assert run("tables", "create", "notes")[0] == 0
    return f"{table_prefix}notes"


def test_streams_status_of_a_table_without_a_stream(run: Run, notes: str) -> None:
    code, out, err = run("streams", "status", "notes")
    assert code == 0, err
    assert out == {"table": notes, "stream": "DISABLED", "view_type": None, "arn": None}


def test_streams_enable_status_disable(
    run: Run, notes: str, dynamodb_client: Callable[..., Any]
) -> None:
    code, enabled, err = run("streams", "enable", "notes", "--view-type", "KEYS_ONLY")
    assert code == 0, err
    assert "already" not in err
    code, status, err = run("streams", "status", "notes")
    assert code == 0, err
    assert status == enabled
    assert status["stream"] == "ENABLED" and status["view_type"] == "KEYS_ONLY"
    assert status["arn"].startswith("arn:") and "/stream/" in status["arn"]

    code, out, err = run("streams", "disable", "notes")
    assert code == 0, err
    assert out == {"table": notes, "stream": "DISABLED", "view_type": None, "arn": None}
    assert "StreamSpecification" not in dynamodb_client().describe_table(TableName=notes)["Table"]
    assert run("streams", "status", "notes")[1]["stream"] == "DISABLED"
    # Disabling again: nothing to do, and it says so.
    code, again, err = run("streams", "disable", "notes")
    assert code == 0 and again == out
    assert "nothing changed" in err


def test_streams_enable_twice_is_idempotent(run: Run, notes: str) -> None:
    first = run("streams", "enable", "notes")
    assert first[0] == 0, first[2]
    code, second, err = run("streams", "enable", "notes")  # the same (default) view type
    assert code == 0, err
    assert second == first[1]
    assert "already enabled" in err and "nothing changed" in err


def pitr_status(client: Any, table: str) -> str:
    answer = client.describe_continuous_backups(TableName=table)
    return str(
        answer["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
            "PointInTimeRecoveryStatus"
        ]
    )


def test_pitr_status_enable_disable(
    run: Run, notes: str, dynamodb_client: Callable[..., Any]
) -> None:
    client = dynamodb_client()
    code, out, err = run("pitr", "status", "notes")
    assert code == 0, err
    assert out == {"table": notes, "point_in_time_recovery": "DISABLED"}

    code, out, err = run("pitr", "enable", "notes")
    assert code == 0 and out == {"table": notes, "point_in_time_recovery": "ENABLED"}
    assert "already" not in err
    code, out, err = run("pitr", "enable", "notes")
    assert code == 0 and out == {"table": notes, "point_in_time_recovery": "ENABLED"}
    assert "already enabled" in err
    code, status, err = run("pitr", "status", "notes")
    assert code == 0, err
    assert status["point_in_time_recovery"] == "ENABLED"
    assert status["earliest_restorable"] and status["latest_restorable"]

    code, out, err = run("pitr", "disable", "notes")
    assert code == 0 and out == {"table": notes, "point_in_time_recovery": "DISABLED"}
    assert pitr_status(client, notes) == "DISABLED"
    code, out, err = run("pitr", "disable", "notes")
    assert code == 0 and "already disabled" in err
    assert run("pitr", "status", "notes")[1] == {
        "table": notes,
        "point_in_time_recovery": "DISABLED",
    }
