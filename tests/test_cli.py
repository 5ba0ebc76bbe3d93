"""The ``gateway`` command against the emulator: documents, tables, PITR, streams and the demo.

Every failure must be one line on stderr and an exit code (2 for bad usage or input, 1 for the
rest), never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import EXIT_FAILURE, EXIT_USAGE, exit_code_for, main, to_json
from gateway.emulator import EmbeddedDynamoDB
from gateway.errors import (
    AccessDeniedError,
    ConfigError,
    CredentialsError,
    GatewayError,
    ServiceUnavailableError,
    ValidationError,
)
from tests.cli_helpers import Run, assert_one_line_error, cli_runner

ROOT = Path(__file__).resolve().parents[1]
DEMO_TIMEOUT_S = 120

ClientFactory = Callable[..., Any]


@pytest.fixture
def run(
    moto_server: EmbeddedDynamoDB, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> Run:
    return cli_runner(moto_server.endpoint_url, table_prefix, capsys)


def test_put_then_get_prints_the_document(run: Run) -> None:
    code, out, err = run("put", "notes", "n1", '{"name": "Ada", "score": 1.5, "tags": ["a"]}')
    assert code == 0, err
    saved = json.loads(out)
    assert saved["id"] == "n1" and saved["rev"].partition("-")[2]
    code, out, err = run("get", "notes", "n1")
    assert code == 0, err
    assert json.loads(out) == {
        "_id": "n1",
        "_rev": saved["rev"],
        "name": "Ada",
        "score": 1.5,
        "tags": ["a"],
    }


def test_put_replaces_and_honours_if_rev(run: Run) -> None:
    first = json.loads(run("put", "notes", "n1", '{"v": 1}')[1])["rev"]
    code, out, _ = run("put", "notes", "n1", '{"w": 2}', "--if-rev", first)
    assert code == 0
    second = json.loads(out)["rev"]
    assert json.loads(run("get", "notes", "n1")[1]) == {"_id": "n1", "_rev": second, "w": 2}
    code, out, err = run("put", "notes", "n1", '{"v": 3}', "--if-rev", first)
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert "Conflict" in err


def test_put_if_absent_creates_only(run: Run) -> None:
    code, out, err = run("put", "notes", "n1", '{"v": 1}', "--if-absent")
    assert code == 0, err
    rev = json.loads(out)["rev"]
    code, out, err = run("put", "notes", "n1", '{"v": 2}', "--if-absent")
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert "already exists" in err
    assert json.loads(run("get", "notes", "n1")[1]) == {"_id": "n1", "_rev": rev, "v": 1}


def test_put_if_absent_and_if_rev_exclude_each_other(run: Run) -> None:
    with pytest.raises(SystemExit) as exited:
        run("put", "notes", "n1", "{}", "--if-absent", "--if-rev", "1-" + "0" * 32)
    assert exited.value.code == 2


def test_get_of_a_missing_document_exits_1_with_one_line(run: Run) -> None:
    assert run("put", "notes", "somebody", "{}")[0] == 0
    code, out, err = run("get", "notes", "nobody")
    assert code == 1
    assert out == ""
    assert_one_line_error(err)
    assert "nobody" in err


@pytest.mark.parametrize("bad_json", ['{"name": ', "not json", "{'single': 1}", ""])
def test_put_with_bad_json_exits_2(run: Run, bad_json: str) -> None:
    code, out, err = run("put", "notes", "n1", bad_json)
    assert code == 2
    assert out == ""
    assert_one_line_error(err)
    assert "JSON" in err


@pytest.mark.parametrize(
    "args",
    [
        ("put", "notes", "n1", "[1, 2]"),  # not an object
        ("put", "notes", "n1", '{"x": NaN}'),  # valid for Python's json, not for DynamoDB
        ("put", "no", "n1", "{}"),  # collection name too short (with an empty prefix)
        ("get", "bad name", "n1"),
    ],
)
def test_bad_input_exits_2(
    moto_server: EmbeddedDynamoDB, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code = main(["--endpoint-url", moto_server.endpoint_url, *args])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert_one_line_error(err)


def test_delete(run: Run) -> None:
    rev = json.loads(run("put", "notes", "n1", "{}")[1])["rev"]
    code, out, err = run("delete", "notes", "n1", "--if-rev", "1-" + "0" * 32)
    assert code == 1
    assert_one_line_error(err)
    code, out, _ = run("delete", "notes", "n1", "--if-rev", rev)
    assert code == 0 and json.loads(out) == {"id": "n1", "deleted": True}
    code, out, _ = run("delete", "notes", "n1")
    assert code == 0 and json.loads(out) == {"id": "n1", "deleted": False}
    assert run("get", "notes", "n1")[0] == 1


def test_tables_create_list_describe(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory
) -> None:
    dynamodb_client().create_table(  # another prefix: not listed
        TableName=f"other-{table_prefix}x",
        KeySchema=[{"AttributeName": "_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    code, out, err = run("tables", "create", "notes")
    assert code == 0, err
    assert json.loads(out) == {"table": f"{table_prefix}notes", "indexes": {}, "status": "ACTIVE"}
    assert run("tables", "create", "notes")[0] == 0  # again: reused
    run("tables", "create", "users")
    code, out, _ = run("tables", "list")
    assert code == 0
    assert out.split() == [f"{table_prefix}notes", f"{table_prefix}users"]
    code, out, _ = run("tables", "describe", "notes")
    assert code == 0
    described = json.loads(out)
    assert described["TableName"] == f"{table_prefix}notes"
    assert described["KeySchema"] == [{"AttributeName": "_id", "KeyType": "HASH"}]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_tables_create_with_indexes_from_the_environment(
    run: Run, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "COLLECTIONS", '{"users": {"indexes": {"by_email": {"attribute": "email"}}}}'
    )
    code, out, err = run("tables", "create", "users")
    assert code == 0, err
    assert json.loads(out)["indexes"] == {"by_email": "email"}


def table_exists(client: Any, name: str) -> bool:
    """DescribeTable, not ListTables: the shared emulator holds more than one page of tables."""
    try:
        client.describe_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


@pytest.mark.parametrize(
    "command",
    [
        ("get", "typo_coll", "x"),
        ("export", "typo_coll", "--quiet"),
        ("copy", "typo_coll", "--to-collection", "x_v2", "--quiet"),
        ("pitr", "enable", "typo_coll"),
        ("streams", "enable", "typo_coll"),
        ("tables", "describe", "typo_coll"),
        ("streams", "status", "typo_coll"),
        ("streams", "disable", "typo_coll"),
        ("pitr", "status", "typo_coll"),
        ("pitr", "disable", "typo_coll"),
        ("tables", "delete", "typo_coll", "--yes"),
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_a_missing_collection_exits_2_and_creates_nothing(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory, command: tuple[str, ...]
) -> None:
    code, out, err = run(*command)
    assert code == 2, err
    assert out == ""
    assert_one_line_error(err)
    assert (
        f"no such collection: typo_coll (table {table_prefix}typo_coll does not exist; it is "
        "created on the first write)" in err
    )
    client = dynamodb_client()
    assert not table_exists(client, f"{table_prefix}typo_coll")
    assert not table_exists(client, f"{table_prefix}x_v2")


def test_export_of_a_missing_collection_writes_no_file(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory, tmp_path: Path
) -> None:
    out_file = tmp_path / "typo.jsonl"
    code, _, err = run("export", "typo_coll", "--out", str(out_file), "--quiet")
    assert code == 2 and "no such collection: typo_coll" in err
    assert list(tmp_path.iterdir()) == []
    assert not table_exists(dynamodb_client(), f"{table_prefix}typo_coll")


def test_get_through_a_cache_of_a_missing_collection_exits_2(
    run: Run,
    table_prefix: str,
    dynamodb_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "memory")
    code, _, err = run("get", "typo2", "x")
    assert code == 2 and "no such collection: typo2" in err
    assert not table_exists(dynamodb_client(), f"{table_prefix}typo2")
    assert run("put", "typo2", "y", "{}")[0] == 0
    code, _, err = run("get", "typo2", "x")
    assert code == 1 and "no such collection" not in err


def test_delete_in_a_missing_collection_deletes_nothing_and_creates_nothing(
    run: Run, table_prefix: str, dynamodb_client: ClientFactory
) -> None:
    code, out, err = run("delete", "typo_coll", "x")
    assert code == 0, err
    assert json.loads(out) == {"id": "x", "deleted": False}
    assert not table_exists(dynamodb_client(), f"{table_prefix}typo_coll")


def test_pitr_enable(run: Run, table_prefix: str, dynamodb_client: ClientFactory) -> None:
    assert run("tables", "create", "notes")[0] == 0
    code, out, err = run("pitr", "enable", "notes")
    assert code == 0, err
    assert json.loads(out) == {
        "table": f"{table_prefix}notes",
        "point_in_time_recovery": "ENABLED",
    }
    backups = dynamodb_client().describe_continuous_backups(TableName=f"{table_prefix}notes")
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"


def test_streams_enable(run: Run, table_prefix: str, dynamodb_client: ClientFactory) -> None:
    assert run("put", "notes", "n1", "{}")[0] == 0
    code, out, err = run("streams", "enable", "notes", "--view-type", "NEW_IMAGE")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["table"] == f"{table_prefix}notes"
    assert answer["stream"] == "ENABLED" and answer["view_type"] == "NEW_IMAGE"
    assert answer["arn"] and "stream" in answer["arn"]
    table = dynamodb_client().describe_table(TableName=f"{table_prefix}notes")["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    # Enabling it again with the same view type: nothing to do, and it says so.
    code, again, err = run("streams", "enable", "notes", "--view-type", "NEW_IMAGE")
    assert code == 0, err
    assert json.loads(again) == answer
    assert "already enabled" in err
    # With another view type: DynamoDB cannot change it in place; the command says what to do.
    code, out, err = run("streams", "enable", "notes")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert "view type NEW_IMAGE, not NEW_AND_OLD_IMAGES" in err
    assert "gateway streams disable notes" in err


def test_an_unreachable_endpoint_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRY", '{"max_attempts": 2, "base_seconds": 0.001, "cap_seconds": 0.01}')
    code = main(["--endpoint-url", "http://127.0.0.1:9", "get", "notes", "a"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert "could not be reached" in err


def test_a_missing_config_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["--config", str(tmp_path / "missing.yaml"), "get", "notes", "a"])
    _, err = capsys.readouterr()
    assert code == 2
    assert_one_line_error(err)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["get", "notes"], ["tables"], ["nonsense"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
    capsys.readouterr()


def test_to_json_formats_dynamodb_types() -> None:
    from decimal import Decimal

    from boto3.dynamodb.types import Binary

    text = to_json(
        {"i": Decimal(3), "f": Decimal("0.5"), "b": Binary(b"\x01"), "s": {"b", "a"}, "r": b"\x02"}
    )
    assert json.loads(text) == {"i": 3, "f": 0.5, "b": "AQ==", "s": ["a", "b"], "r": "Ag=="}


def test_demo_runs_on_its_own_emulator() -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "DYNAMODB_", "GATEWAY_"))
        and name not in ("CACHE_BACKEND", "REDIS_URL", "COLLECTIONS", "RETRY")
    }
    env.update(
        PYTHONPATH=str(ROOT),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        COLUMNS="200",
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--documents", "5"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gateway demo" in result.stdout
    assert "5 documents" in result.stdout
    assert "Traceback" not in result.stderr


def test_no_arguments_prints_the_help_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: gateway") and "export" in out and "--version" in out
    assert err == ""


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code in (0, None)
    out, _ = capsys.readouterr()
    assert out.strip() == f"gateway {version('dynamodb-gateway')}"


def test_configuration_errors_exit_2_the_others_1() -> None:
    for usage in (ConfigError("c"), ValidationError("v"), CredentialsError("no credentials")):
        assert exit_code_for(usage) == EXIT_USAGE
    for failure in (GatewayError("g"), AccessDeniedError("a"), ServiceUnavailableError("s")):
        assert exit_code_for(failure) == EXIT_FAILURE


def test_missing_aws_credentials_exit_2_with_one_line(
    moto_server: EmbeddedDynamoDB,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("RETRY", '{"max_attempts": 2, "base_seconds": 0.001, "cap_seconds": 0.01}')
    code = main(["--endpoint-url", moto_server.endpoint_url, "get", "notes", "a"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert "No AWS credentials" in err


def test_demo_uses_the_configured_cache_backend(
    moto_server: EmbeddedDynamoDB,
    table_prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "memory")
    monkeypatch.setenv("COLUMNS", "200")
    options = ["--endpoint-url", moto_server.endpoint_url, "--table-prefix", table_prefix]
    code = main([*options, "demo", "--documents", "3"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "cache (CACHE_BACKEND)" in out
    assert "memory:" in out and "hits" in out
