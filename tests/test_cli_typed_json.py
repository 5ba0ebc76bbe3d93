"""``gateway get`` / ``put`` in DynamoDB JSON (``--format dynamodb``): an exact round trip.

Plain JSON loses types (Binary becomes base64 text, a set a list, ``1.50`` becomes ``1.5``);
DynamoDB JSON keeps every one. Stored items are compared with a raw boto3 client, attribute
value for attribute value, so ``{"N": "1.50"}`` cannot pass for ``{"N": "1.5"}`` nor a list
for a set.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import Binary

from gateway import DynamoDBService
from gateway.cli import EXIT_USAGE
from gateway.emulator import EmbeddedDynamoDB
from gateway.migrate import document_to_line
from tests.cli_helpers import Run, cli_runner

COLLECTION = "notes"

#: Every DynamoDB type, with the values the user saw change through plain JSON.
DOCUMENT: dict[str, Any] = {
    "name": "Ada ☃",
    "price": Decimal("1.50"),
    "integral_scaled": Decimal("2.0"),
    "big": Decimal("12345678901234567890123456789012345678"),
    "exponent": Decimal("1E+5"),
    "photo": Binary(b"\x00\xff\n binary"),
    "tags": {"b", "a"},
    "scores": {Decimal("1.5"), Decimal("0.10"), Decimal("-2")},
    "blobs": {Binary(b"\x00"), Binary(b"\xfe")},
    "nested": {"list": [Decimal("0.50"), "x", None, True, {"deep": {"s"}}, []], "map": {}},
    "yes": True,
    "no": False,
    "nothing": None,
}



@pytest.fixture
def run(
    moto_server: EmbeddedDynamoDB, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> Run:
    return cli_runner(moto_server.endpoint_url, table_prefix, capsys)


@pytest.fixture
def library(moto_server: EmbeddedDynamoDB, table_prefix: str) -> Iterator[DynamoDBService]:
    """The library on the same tables as `run`."""
    service = DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix)
    yield service
    service.close()


@pytest.fixture
def stored(
    dynamodb_client: Callable[..., Any], table_prefix: str
) -> Callable[[str], dict[str, Any] | None]:
    """``stored(doc_id)``: the raw item (boto3 client form) without ``_rev``; sets sorted.
    None when there is no such item or no table."""
    client = dynamodb_client()

    def normalize(value: Any) -> Any:
        ((tag, inner),) = value.items()
        if tag in ("SS", "NS", "BS"):
            return {tag: sorted(inner)}
        if tag == "M":
            return {tag: {k: normalize(v) for k, v in inner.items()}}
        if tag == "L":
            return {tag: [normalize(v) for v in inner]}
        return value

    def get(doc_id: str) -> dict[str, Any] | None:
        try:
            item = client.get_item(
                TableName=table_prefix + COLLECTION, Key={"_id": {"S": doc_id}}, ConsistentRead=True
            ).get("Item")
        except client.exceptions.ResourceNotFoundException:
            return None
        if item is None:
            return None
        return {k: normalize(v) for k, v in item.items() if k != "_rev"}

    return get


def without_id(item: dict[str, Any] | None) -> dict[str, Any]:
    assert item is not None
    return {k: v for k, v in item.items() if k != "_id"}


def set_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))


def test_get_then_put_in_dynamodb_json_round_trips_every_type_exactly(
    run: Run, library: DynamoDBService, stored: Callable[[str], dict[str, Any] | None]
) -> None:
    library.save(COLLECTION, "n1", DOCUMENT)
    before = stored("n1")
    assert before is not None and before["price"] == {"N": "1.50"}  # the emulator keeps the text

    code, out, err = run("get", COLLECTION, "n1", "--format", "dynamodb")
    assert code == 0, err
    assert err == ""
    assert out.count("\n") == 1  # one line, as `gateway export` writes it
    assert json.loads(out)["Item"]["price"] == {"N": "1.50"}
    assert json.loads(out)["Item"]["tags"] == {"SS": ["a", "b"]}

    # Back into the same document, and into a new one: the stored items are the same.
    code, _, err = run("put", COLLECTION, "n1", out, "--format", "dynamodb")
    assert code == 0, err
    code, _, err = run("put", COLLECTION, "n2", out, "--format", "dynamodb")
    assert code == 0, err
    assert stored("n1") == before
    assert without_id(stored("n2")) == without_id(before)
    # And through the library: the same types, digit for digit.
    again = library.get(COLLECTION, "n2")
    assert again is not None
    assert str(again["price"]) == "1.50" and isinstance(again["photo"], Binary)
    assert again["tags"] == {"a", "b"} and again["scores"] == DOCUMENT["scores"]


def test_put_dynamodb_json_from_standard_input_and_as_a_bare_item(
    run: Run,
    library: DynamoDBService,
    stored: Callable[[str], dict[str, Any] | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    library.save(COLLECTION, "n1", DOCUMENT)
    out = run("get", COLLECTION, "n1", "--format", "dynamodb")[1]
    set_stdin(monkeypatch, out)  # `gateway get ... --format dynamodb | gateway put ... -`
    code, _, err = run("put", COLLECTION, "n2", "-", "--format", "dynamodb")
    assert code == 0, err
    assert without_id(stored("n2")) == without_id(stored("n1"))

    bare = json.dumps(json.loads(out)["Item"])  # what `aws dynamodb scan` prints per item
    code, _, err = run("put", COLLECTION, "n3", bare, "--format", "dynamodb")
    assert code == 0, err
    assert without_id(stored("n3")) == without_id(stored("n1"))


def test_get_in_dynamodb_json_is_an_export_line_that_import_reads(
    run: Run,
    library: DynamoDBService,
    stored: Callable[[str], dict[str, Any] | None],
    tmp_path: Path,
) -> None:
    library.save(COLLECTION, "n1", DOCUMENT)
    out = run("get", COLLECTION, "n1", "--format", "dynamodb")[1]
    doc = library.get(COLLECTION, "n1")
    assert doc is not None
    assert out == document_to_line(doc) + "\n"
    before = stored("n1")
    path = tmp_path / "one.jsonl"
    path.write_text(out, encoding="utf-8")
    code, _, err = run("import", COLLECTION, str(path))
    assert code == 0, err
    assert stored("n1") == before


def test_get_in_dynamodb_json_keeps_digits_with_native_numbers(
    run: Run, library: DynamoDBService, monkeypatch: pytest.MonkeyPatch
) -> None:
    library.save(COLLECTION, "n1", {"price": Decimal("1.50"), "big": DOCUMENT["big"]})
    monkeypatch.setenv("NATIVE_NUMBERS", "true")
    code, out, err = run("get", COLLECTION, "n1", "--format", "dynamodb")
    assert code == 0, err
    item = json.loads(out)["Item"]
    assert item["price"] == {"N": "1.50"}
    assert item["big"] == {"N": "12345678901234567890123456789012345678"}


def test_plain_json_is_still_the_default_for_people_and_says_what_it_loses(
    run: Run, library: DynamoDBService
) -> None:
    library.save(COLLECTION, "n1", DOCUMENT)
    code, out, err = run("get", COLLECTION, "n1")
    assert code == 0
    assert run("get", COLLECTION, "n1", "--format", "json")[1] == out
    plain = json.loads(out)
    assert plain["name"] == "Ada ☃" and plain["price"] == 1.5 and plain["tags"] == ["a", "b"]
    assert isinstance(plain["photo"], str)  # base64 text
    # The loss is not silent: one note on stderr says what changed and what to use instead.
    assert err.count("\n") == 1 and err.startswith("note: plain JSON does not keep")
    assert "(doc['price'] is 1.50, printed as 1.5; " in err
    assert "--format dynamodb" in err

    library.save(COLLECTION, "n2", {"name": "Ada", "score": Decimal("1.5"), "n": Decimal(3)})
    code, out, err = run("get", COLLECTION, "n2", "--format", "json")
    assert code == 0 and err == ""  # nothing lost: no note
    plain = json.loads(out)
    assert plain == {"_id": "n2", "_rev": plain["_rev"], "name": "Ada", "score": 1.5, "n": 3}


def test_plain_json_put_still_works(
    run: Run, stored: Callable[[str], dict[str, Any] | None]
) -> None:
    code, out, err = run("put", COLLECTION, "n1", '{"name": "Ada", "price": 1.50, "l": [1]}')
    assert code == 0, err
    assert json.loads(out)["id"] == "n1"
    assert without_id(stored("n1")) == {
        "name": {"S": "Ada"},
        "price": {"N": "1.50"},
        "l": {"L": [{"N": "1"}]},
    }
    code, _, err = run("put", COLLECTION, "n2", '{"name": "Ada"}', "--format", "json")
    assert code == 0, err
    assert without_id(stored("n2")) == {"name": {"S": "Ada"}}


def test_dynamodb_json_without_the_flag_is_refused_not_saved_as_nested_maps(
    run: Run, stored: Callable[[str], dict[str, Any] | None]
) -> None:
    typed_doc = '{"Item": {"_id": {"S": "n1"}, "price": {"N": "1.50"}}}'
    code, out, err = run("put", COLLECTION, "n1", typed_doc)
    assert code == EXIT_USAGE
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
    assert "--format dynamodb" in err
    assert stored("n1") is None
    # Asked for explicitly, plain JSON saves it as the maps it is.
    code, _, err = run("put", COLLECTION, "n1", typed_doc, "--format", "json")
    assert code == 0, err
    assert without_id(stored("n1"))["Item"]["M"]["price"] == {"M": {"N": {"S": "1.50"}}}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ('{"price": {"N": "abc"}}', "is not a number"),
        ('{"price": {"N": 1.5}}', "is not a number"),
        ('{"photo": {"B": "not base64!"}}', "is not binary"),
        ('{"tags": {"SS": ["a", "a"]}}', "the same value twice"),
        ('{"tags": {"SS": []}}', "empty set"),
        ('{"name": "Ada"}', "is not a DynamoDB attribute value"),
        ('{"x": {"Q": "1"}}', "unknown type 'Q'"),
        ('{"x": {"S": "a", "N": "1"}}', "is not a DynamoDB attribute value"),
        ('{"x": {"NULL": false}}', "a 'NULL' value is true"),
        ('{"x": {"L": [{"S": "a"}, 7]}}', "Item['x'][1] is not a DynamoDB attribute value"),
        ('{"Item": {"S": "text"}}', "wrapper"),
        ('{"x": {"N": "NaN"}}', "is not a number"),
        ('{"x": {"S": "a"}, "x": {"S": "b"}}', "appears twice"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "invalid JSON"),
        (" ", "no document to save (DOC is empty)"),
    ],
)
def test_malformed_dynamodb_json_is_refused_with_exit_2_and_nothing_written(
    run: Run, stored: Callable[[str], dict[str, Any] | None], doc: str, expected: str
) -> None:
    assert run("put", COLLECTION, "n1", '{"v": 1}')[0] == 0
    before = stored("n1")
    code, out, err = run("put", COLLECTION, "n1", doc, "--format", "dynamodb")
    assert code == EXIT_USAGE, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert expected in err
    if "empty" not in expected:  # the service's own check, and no input at all, say more
        assert "--format dynamodb takes DynamoDB JSON such as" in err
    assert stored("n1") == before
    code, _, err = run("put", COLLECTION, "fresh", doc, "--format", "dynamodb")
    assert code == EXIT_USAGE, err
    assert stored("fresh") is None
