"""``gateway cache invalidate COLLECTION [ID]``: documents changed behind the gateway's back are
served from the shared cache until invalidated; a cache the command cannot reach is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.emulator import EmbeddedDynamoDB
from gateway.processes import free_port
from tests.cli_helpers import Run, assert_one_line_error, cli_runner


@pytest.fixture
def run(
    moto_server: EmbeddedDynamoDB, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> Run:
    return cli_runner(moto_server.endpoint_url, table_prefix, capsys)


@pytest.fixture
def redis_cache(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CACHE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URL", redis_url)
    return redis_url


def write_behind_the_gateway(client: Any, table: str, doc_id: str, value: int) -> None:
    """PutItem straight to DynamoDB, as another tool would: the cache is not told."""
    client.put_item(
        TableName=table,
        Item={
            "_id": {"S": doc_id},
            "_rev": {"S": "9" * 16 + "-" + "0" * 32},
            "v": {"N": str(value)},
        },
    )


def value_of(run: Run, doc_id: str) -> int:
    code, out, err = run("get", "notes", doc_id)
    assert code == 0, err
    return int(json.loads(out)["v"])


def test_invalidate_one_document(
    run: Run, redis_cache: str, table_prefix: str, dynamodb_client: Callable[..., Any]
) -> None:
    for doc_id in ("n1", "n2"):
        assert run("put", "notes", doc_id, '{"v": 1}')[0] == 0  # cached by the save
    client = dynamodb_client()
    for doc_id in ("n1", "n2"):
        write_behind_the_gateway(client, f"{table_prefix}notes", doc_id, 2)
    assert value_of(run, "n1") == 1  # served from the cache

    code, out, err = run("cache", "invalidate", "notes", "n1")
    assert code == 0, err
    assert json.loads(out) == {
        "collection": "notes",
        "id": "n1",
        "invalidated": True,
        "cache_backend": "redis",
    }
    assert value_of(run, "n1") == 2
    assert value_of(run, "n2") == 1  # only the one document


def test_invalidate_a_whole_collection(
    run: Run, redis_cache: str, table_prefix: str, dynamodb_client: Callable[..., Any]
) -> None:
    for doc_id in ("n1", "n2"):
        assert run("put", "notes", doc_id, '{"v": 1}')[0] == 0
    client = dynamodb_client()
    for doc_id in ("n1", "n2"):
        write_behind_the_gateway(client, f"{table_prefix}notes", doc_id, 3)

    code, out, err = run("cache", "invalidate", "notes")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["collection"] == "notes" and answer["cache_backend"] == "redis"
    assert answer["entries_dropped"] >= 2
    assert value_of(run, "n1") == value_of(run, "n2") == 3


def test_without_a_cache_it_says_there_is_none(run: Run) -> None:
    code, out, err = run("cache", "invalidate", "notes", "n1")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert "there is no cache" in err


@pytest.mark.parametrize(
    ("backend", "reason"),
    [("memory", "inside each application process"), ("dax", "cannot be invalidated by a client")],
)
def test_a_cache_out_of_reach_is_refused_not_pretended(
    run: Run, monkeypatch: pytest.MonkeyPatch, backend: str, reason: str
) -> None:
    monkeypatch.setenv("CACHE_BACKEND", backend)
    if backend == "dax":
        monkeypatch.setenv("DAX_ENDPOINT_URL", "dax://127.0.0.1:8111")
    code, out, err = run("cache", "invalidate", "notes")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert reason in err


@pytest.mark.parametrize("args", [("notes", "n1"), ("notes",)], ids=["document", "collection"])
def test_an_unreachable_cache_is_a_failure(
    run: Run, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    code, out, err = run("cache", "invalidate", *args)
    assert code == 1 and out == ""
    assert_one_line_error(err)


def test_a_bad_collection_name_exits_2(run: Run, redis_cache: str) -> None:
    code, _, err = run("cache", "invalidate", "bad name")
    assert code == 2
    assert_one_line_error(err)
