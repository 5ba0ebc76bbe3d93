"""Migration: export / import as JSON Lines and copy between configurations, on the emulator.

The point of these tests is exactness: an export imported elsewhere gives back the very same
documents, type for type and digit for digit (``Decimal('1.50')`` stays ``1.50``), and no line of
an import is ever dropped without being reported with its line number.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeSerializer

from gateway import DynamoDBService, ServiceUnavailableError, ValidationError
from gateway.cli import main
from gateway.emulator import EmbeddedDynamoDB
from gateway.migrate import (
    BadLine,
    CopySummary,
    ExportSummary,
    ImportSummary,
    MigrationInterrupted,
    Progress,
    copy_collection,
    document_to_item,
    document_to_line,
    export_collection,
    import_lines,
    parse_line,
    plural,
)
from gateway.revisions import RevisionMaker, parse_generation

COLLECTION = "people"

#: Every DynamoDB type, and the values that are easy to get wrong.
EVERY_TYPE: dict[str, Any] = {
    "name": "Ada",
    "empty": "",
    "unicode": 'naïve ☃ 𝄞 \u2028 after a line separator "quoted" \\ back',
    "price": Decimal("1.50"),
    "zero_scaled": Decimal("0.00"),
    "negative": Decimal("-0.001"),
    "big": Decimal("12345678901234567890123456789012345678"),
    "big_fraction": Decimal("-1234567890.1234567890123456789012345678"),
    "tiny": Decimal("1E-130"),
    "exponent": Decimal("1E+5"),
    "integer": Decimal(42),
    "blob": Binary(b'\x00\xff\n\r"binary"'),
    "empty_blob": Binary(b""),
    "strings": {"a", "b", "é", ""},
    "numbers": {Decimal("1.5"), Decimal("-2"), Decimal("1E+10"), Decimal("0.10")},
    "blobs": {Binary(b"\x00"), Binary(b"\xff\xfe"), Binary(b"")},
    "list": [Decimal(1), "x", None, True, [Decimal("0.1")], {"k": {"s"}}, []],
    "map": {"nested": {"deep": [{"a": Binary(b"z")}], "n": None}, "k": {"SS": "not a type"}},
    "yes": True,
    "no": False,
    "nothing": None,
    "empty_list": [],
    "empty_map": {},
}


def typed(value: Any) -> Any:
    """``value`` with every type made visible, so that 1 == True or 1.5 == 1.50 cannot pass."""
    if isinstance(value, Mapping):
        return ("map", {k: typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(typed(v) for v in value))
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    if isinstance(value, Binary):
        return ("Binary", bytes(value.value))
    return (type(value).__name__, value)


def without_rev(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_rev"}


def contents(service: DynamoDBService, db_name: str = COLLECTION) -> dict[str, Any]:
    """Every document of a collection, by id, typed, without ``_rev``."""
    return {doc["_id"]: typed(without_rev(doc)) for doc in service.list_all(db_name)}


@pytest.fixture
def service_for(moto_server: EmbeddedDynamoDB) -> Iterator[Any]:
    """``service_for(prefix)``: a bare service on the emulator with that table prefix."""
    services: list[DynamoDBService] = []

    def make(prefix: str) -> DynamoDBService:
        service = DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix=prefix)
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


@pytest.fixture
def source(service_for: Any, table_prefix: str) -> DynamoDBService:
    """The source service, holding `sample_documents()` in `COLLECTION`."""
    service: DynamoDBService = service_for(table_prefix + "src-")
    service.save_many(COLLECTION, sample_documents())
    return service


@pytest.fixture
def target(service_for: Any, table_prefix: str) -> DynamoDBService:
    """An empty service with another table prefix."""
    service: DynamoDBService = service_for(table_prefix + "dst-")
    return service


def sample_documents() -> dict[str, dict[str, Any]]:
    """`EVERY_TYPE` under awkward ids, plus enough small documents for several pages."""
    docs: dict[str, dict[str, Any]] = {
        "ada": EVERY_TYPE,
        "ünïcödé ☃ id": {"v": Decimal("0.5")},
        "x" * 2048: {"long": "id at the limit"},
        "only-id": {},
    }
    for i in range(130):
        docs[f"doc-{i:03d}"] = {"i": Decimal(i), "tags": {f"t{i % 3}"}, "ratio": Decimal(i) / 8}
    return docs


# --------------------------------------------------------------------------------------------
# The format


def test_item_is_boto3_type_serializer_form_with_base64_binary() -> None:
    serializer = TypeSerializer()
    doc = {"_id": "ada", "_rev": "1-" + "0" * 32, **EVERY_TYPE}
    item = document_to_item(doc)

    def base64_text(value: Any) -> str:
        return base64.b64encode(bytes(getattr(value, "value", value))).decode("ascii")

    def boto3_form(value: Any) -> Any:
        return json.loads(json.dumps(serializer.serialize(value), default=base64_text))

    for name, value in doc.items():
        expected = boto3_form(value)
        got = item[name]
        if list(expected) in (["SS"], ["NS"], ["BS"]):  # boto3 keeps set order: arbitrary
            (tag,) = expected
            assert sorted(got[tag]) == sorted(expected[tag]), name
        else:
            assert got == expected, name


def test_export_line_is_deterministic_and_one_physical_line() -> None:
    doc = {"_id": "a", **EVERY_TYPE}
    line = document_to_line(doc)
    assert "\n" not in line and "\r" not in line
    assert line == document_to_line(dict(reversed(list(doc.items()))))
    assert line.startswith('{"Item":{')
    assert '"price":{"N":"1.50"}' in line
    assert '"blobs":{"BS":["","//4=","AA=="]}' in line


def test_parse_line_reads_dynamodb_json_plain_json_and_bare_items() -> None:
    dynamodb = parse_line('{"Item": {"_id": {"S": "a"}, "_rev": {"S": "x"}, "n": {"N": "1.50"}}}')
    assert dynamodb == ("a", {"n": Decimal("1.50")})
    assert typed(dynamodb[1]) == typed({"n": Decimal("1.50")})
    plain = parse_line('{"_id": "b", "_rev": "ignored", "n": 1.50, "i": 7, "l": [1e2, null]}')
    assert plain[0] == "b"
    assert typed(plain[1]["n"]) == ("Decimal", "1.50")
    assert typed(plain[1]["l"]) == ("list", [("Decimal", "1E+2"), ("NoneType", None)])
    bare = parse_line('{"_id": {"S": "c"}, "b": {"B": "AP8="}, "s": {"SS": ["x"]}}')
    assert bare == ("c", {"b": b"\x00\xff", "s": {"x"}})


# --------------------------------------------------------------------------------------------
# Export -> import


def test_export_then_import_round_trips_a_collection_exactly(
    source: DynamoDBService, target: DynamoDBService
) -> None:
    out = io.StringIO()
    seen: list[Progress] = []
    exported = export_collection(source, COLLECTION, out, seen.append)
    text = out.getvalue()
    lines = text.split("\n")  # not splitlines(): U+2028 inside a string is not a line break
    assert lines[-1] == "" and len(lines) - 1 == exported.documents == len(sample_documents())
    assert exported.bytes == len(text.encode("utf-8"))
    assert all(json.loads(line).keys() == {"Item"} for line in lines[:-1])
    assert seen and seen[-1].documents == exported.documents
    assert len(seen) > 1  # more than one scan page

    imported = import_lines(target, COLLECTION, lines[:-1])
    assert imported.ok and imported.bad_lines == ()
    assert imported.saved == exported.documents
    assert imported.last_line_committed == exported.documents
    assert imported.blank_lines == 0

    assert contents(target) == contents(source)
    assert typed(without_rev(target.get(COLLECTION, "ada") or {})) == typed(
        {"_id": "ada", **EVERY_TYPE}
    )
    # Revisions are issued anew, never copied from the file.
    source_revs = {d["_id"]: d["_rev"] for d in source.list_all(COLLECTION)}
    target_revs = {d["_id"]: d["_rev"] for d in target.list_all(COLLECTION)}
    assert source_revs.keys() == target_revs.keys()
    assert all(source_revs[i] != target_revs[i] for i in source_revs)


def test_reimporting_the_same_file_is_idempotent(
    source: DynamoDBService, target: DynamoDBService
) -> None:
    out = io.StringIO()
    export_collection(source, COLLECTION, out)
    lines = out.getvalue().split("\n")
    import_lines(target, COLLECTION, lines)
    first = {d["_id"]: d for d in target.list_all(COLLECTION)}
    again = import_lines(target, COLLECTION, lines)
    assert again.ok and again.saved == len(first)
    assert again.blank_lines == 1  # the empty string after the last newline
    second = {d["_id"]: d for d in target.list_all(COLLECTION)}
    assert {i: typed(without_rev(d)) for i, d in second.items()} == {
        i: typed(without_rev(d)) for i, d in first.items()
    }
    generation = lambda rev: int(rev.partition("-")[0])  # noqa: E731
    assert all(generation(second[i]["_rev"]) > generation(first[i]["_rev"]) for i in first)


def test_import_of_plain_json_from_another_database(target: DynamoDBService) -> None:
    lines = [
        '{"_id": "p1", "_rev": "3-couchdb", "name": "Ada", "score": 1.50, "n": 10, '
        '"nested": {"a": [1, 2.5, "x", true, null]}}',
        '{"_id": {"S": "p2"}, "tags": {"SS": ["b", "a"]}, "raw": {"B": "AAE="}}',
        '{"Item": {"_id": {"S": "p3"}, "ok": {"BOOL": false}, "nil": {"NULL": true}}}',
    ]
    summary = import_lines(target, COLLECTION, lines)
    assert summary.ok and summary.saved == 3
    assert contents(target) == {
        "p1": typed(
            {
                "_id": "p1",
                "name": "Ada",
                "score": Decimal("1.50"),
                "n": Decimal(10),
                "nested": {"a": [Decimal(1), Decimal("2.5"), "x", True, None]},
            }
        ),
        "p2": typed({"_id": "p2", "tags": {"a", "b"}, "raw": Binary(b"\x00\x01")}),
        "p3": typed({"_id": "p3", "ok": False, "nil": None}),
    }


# --------------------------------------------------------------------------------------------
# Bad lines


BAD_FILE: list[str | bytes] = [
    '{"_id": "ok1", "v": 1}',  # 1
    '{"_id": "broken", "v": ',  # 2 invalid JSON
    '{"name": "no id"}',  # 3 missing _id
    '{"_id": "nan", "v": NaN}',  # 4 NaN
    '{"Item": {"_id": {"S": "empty-set"}, "tags": {"SS": []}}}',  # 5 empty set
    json.dumps({"_id": "i" * 3000, "v": 1}),  # 6 id over 2048 bytes
    '{"_id": "ok2", "v": 2}',  # 7
    "   ",  # 8 blank: not data, counted
    '{"_id": 17, "v": 1}',  # 9 id not a string
    '{"Item": {"_id": {"S": "dup"}, "s": {"NS": ["1", "1.0"]}}}',  # 10 duplicate set element
    '{"Item": {"_id": {"S": "b64"}, "b": {"B": "not base64!"}}}',  # 11 bad base64
    '{"Item": {"_id": {"S": "num"}, "n": {"N": "1_000"}}}',  # 12 not a DynamoDB number
    b'{"_id": "latin1", "v": "caf\xe9"}',  # 13 not UTF-8
    '{"Item": {"_id": {"S": "tag"}, "x": {"DATE": "2024-01-01"}}}',  # 14 unknown type
    '{"_id": "twice", "a": 1, "a": 2}',  # 15 duplicate key
    "[1, 2]",  # 16 not an object
    '{"_id": "huge", "v": 1e400}',  # 17 out of DynamoDB's range
    '{"_id": "ok3", "v": 3}',  # 18
]
BAD_LINES = {
    2: "invalid JSON",
    3: "missing _id",
    4: "NaN",
    5: "empty set",
    6: "3000 UTF-8 bytes",
    9: "must be a str",
    10: "same value twice",
    11: "base64",
    12: "not a number",
    13: "UTF-8",
    14: "unknown type 'DATE'",
    15: "appears twice",
    16: "JSON object",
    17: "range",
}


def test_bad_lines_are_reported_with_their_numbers_and_the_rest_is_imported(
    target: DynamoDBService,
) -> None:
    reported: list[BadLine] = []
    summary = import_lines(target, COLLECTION, BAD_FILE, batch_size=2, on_bad_line=reported.append)
    assert [bad.line_no for bad in summary.bad_lines] == sorted(BAD_LINES)
    for bad in summary.bad_lines:
        assert BAD_LINES[bad.line_no] in bad.reason, bad
    assert reported == list(summary.bad_lines)
    assert not summary.ok
    assert summary.saved == 3 and summary.blank_lines == 1
    # Nothing silently dropped: every line is saved, blank or reported.
    assert summary.lines_read == len(BAD_FILE)
    assert summary.saved + summary.blank_lines + len(summary.bad_lines) == summary.lines_read
    assert summary.last_line_committed == len(BAD_FILE)
    assert sorted(contents(target)) == ["ok1", "ok2", "ok3"]


def test_a_batch_is_never_refused_as_a_whole(target: DynamoDBService) -> None:
    # One bad document among good ones: save_many would refuse the whole batch; the importer
    # validates each line first, so the batch only ever holds good documents.
    lines = [json.dumps({"_id": f"g{i}", "v": i}) for i in range(10)]
    lines[4] = '{"_id": "deep", "v": ' + "[" * 40 + "]" * 40 + "}"
    summary = import_lines(target, COLLECTION, lines, batch_size=25)
    assert [bad.line_no for bad in summary.bad_lines] == [5]
    assert "deeper than 32" in summary.bad_lines[0].reason
    assert summary.saved == 9 and len(contents(target)) == 9


def test_the_same_id_twice_applies_in_file_order(target: DynamoDBService) -> None:
    lines = ['{"_id": "a", "v": 1}', '{"_id": "b", "v": 1}', '{"_id": "a", "v": 2}']
    summary = import_lines(target, COLLECTION, lines, batch_size=25)
    assert summary.saved == 3
    assert (target.get(COLLECTION, "a") or {})["v"] == 2


def test_argument_errors_are_raised_before_anything_is_read(target: DynamoDBService) -> None:
    def never() -> Iterator[str]:
        raise AssertionError("read")
        yield ""

    with pytest.raises(ValidationError, match="batch_size"):
        import_lines(target, COLLECTION, never(), batch_size=0)
    with pytest.raises(ValidationError, match="start_line"):
        import_lines(target, COLLECTION, never(), start_line=0)
    with pytest.raises(ValidationError, match="table name"):
        import_lines(target, "a/b", never())


# --------------------------------------------------------------------------------------------
# Resuming


class FailingSaves:
    """A service whose ``save_many`` fails from its ``fail_at``-th call on (1-based)."""

    def __init__(self, service: DynamoDBService, fail_at: int) -> None:
        self._service = service
        self._fail_at = fail_at
        self.calls = 0

    def save_many(self, db_name: str, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        self.calls += 1
        if self.calls >= self._fail_at:
            raise ServiceUnavailableError("DynamoDB went away", operation="BatchWriteItem")
        return self._service.save_many(db_name, docs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def __enter__(self) -> FailingSaves:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass  # the wrapped service belongs to its fixture


def numbered_lines(count: int) -> list[str]:
    return [json.dumps({"_id": f"n{i:02d}", "line": i}) for i in range(1, count + 1)]


def test_resume_from_skips_the_lines_before_it(target: DynamoDBService) -> None:
    summary = import_lines(target, COLLECTION, numbered_lines(10), start_line=6)
    assert summary.first_line == 6 and summary.lines_read == 5 and summary.saved == 5
    assert summary.last_line_committed == 10
    assert sorted(contents(target)) == [f"n{i:02d}" for i in range(6, 11)]


def test_an_interrupted_import_reports_where_to_resume(target: DynamoDBService) -> None:
    lines = numbered_lines(10)
    lines.insert(4, "not json")  # line 5: reported before the failure
    failing = FailingSaves(target, fail_at=2)
    with pytest.raises(MigrationInterrupted) as caught:
        import_lines(failing, COLLECTION, lines, batch_size=3)  # type: ignore[arg-type]
    summary = caught.value.summary
    assert isinstance(summary, ImportSummary)
    assert isinstance(caught.value.__cause__, ServiceUnavailableError)
    assert caught.value.operation == "BatchWriteItem"
    assert summary.saved == 3 and summary.last_line_committed == 3
    assert caught.value.resume_from == 4
    assert [bad.line_no for bad in summary.bad_lines] == [5]
    assert sorted(contents(target)) == ["n01", "n02", "n03"]

    resumed = import_lines(target, COLLECTION, lines, batch_size=3, start_line=4)
    assert resumed.saved == 7 and [bad.line_no for bad in resumed.bad_lines] == [5]
    assert sorted(contents(target)) == [f"n{i:02d}" for i in range(1, 11)]


def test_committed_line_counts_bad_and_blank_lines_only_when_nothing_is_pending(
    target: DynamoDBService,
) -> None:
    lines = ['{"_id": "a"}', "", "oops", '{"_id": "b"}', "oops"]
    failing = FailingSaves(target, fail_at=1)
    with pytest.raises(MigrationInterrupted) as caught:
        import_lines(failing, COLLECTION, lines, batch_size=25)  # type: ignore[arg-type]
    assert caught.value.resume_from == 1  # line 1 was never written
    progress: list[Progress] = []
    done = import_lines(target, COLLECTION, ["oops", "", '{"_id": "a"}'], progress=progress.append)
    assert [p.last_line_committed for p in progress] == [1, 2, 3]
    assert done.last_line_committed == 3


def test_lines_of_one_id_apply_in_file_order_with_batches_in_flight(
    target: DynamoDBService,
) -> None:
    """Batches of one line, eight in flight: a batch that shares an id with a running one
    waits for it (`gateway.write_window`), so the last line of each id wins."""
    lines = [json.dumps({"_id": f"id{i % 3}", "line": i}) for i in range(1, 61)]
    summary = import_lines(target, COLLECTION, lines, batch_size=1, max_in_flight=8)
    assert summary.saved == 60 and summary.last_line_committed == 60
    assert {doc["_id"]: doc["line"] for doc in target.list_all(COLLECTION)} == {
        "id0": 60,
        "id1": 58,
        "id2": 59,
    }


def test_a_failure_with_batches_in_flight_commits_the_prefix_and_resumes_exactly(
    target: DynamoDBService,
) -> None:
    lines = numbered_lines(40)
    failing = FailingSaves(target, fail_at=6)
    with pytest.raises(MigrationInterrupted) as caught:
        import_lines(failing, COLLECTION, lines, batch_size=3, max_in_flight=4)  # type: ignore[arg-type]
    summary = caught.value.summary
    assert isinstance(summary, ImportSummary)
    assert summary.last_line_committed == 15  # the five batches before the first failure
    stored = set(contents(target))
    assert {f"n{i:02d}" for i in range(1, 16)} <= stored
    resumed = import_lines(target, COLLECTION, lines, batch_size=3, start_line=16)
    assert resumed.saved == 25 and resumed.last_line_committed == 40
    assert sorted(contents(target)) == [f"n{i:02d}" for i in range(1, 41)]


def test_max_in_flight_is_checked(target: DynamoDBService) -> None:
    for bad in (0, 65, True, "8"):
        with pytest.raises(ValidationError, match="max_in_flight"):
            import_lines(target, COLLECTION, [], max_in_flight=bad)  # type: ignore[arg-type]


def test_into_empty_skips_the_revision_reads(target: DynamoDBService) -> None:
    summary = import_lines(target, COLLECTION, numbered_lines(60), into_empty=True)
    assert summary.saved == 60
    calls = target.stats()["db_calls"]
    assert "BatchGetItem" not in calls and calls["BatchWriteItem"] >= 3
    doc = target.get(COLLECTION, "n01")
    assert doc is not None and parse_generation(doc["_rev"]) is not None
    # moto reports one unit per BatchWriteItem request; DynamoDB, one per item (<= 1 KB).
    assert summary.capacity is not None and summary.capacity.write_units > 0
    assert "write and" in summary.describe() and "documents/s" in summary.describe()


def test_into_empty_skips_the_revision_reads_with_write_coalescing_too(
    moto_server: EmbeddedDynamoDB, table_prefix: str
) -> None:
    """With ``coalescing.writes`` on, save_many batched through the write coalescer, which read
    the revisions whatever ``assume_new`` said (found by review)."""
    with DynamoDBService(
        endpoint_url=moto_server.endpoint_url, table_prefix=table_prefix, coalesce_writes=True
    ) as service:
        summary = import_lines(service, COLLECTION, numbered_lines(60), into_empty=True)
        assert summary.saved == 60
        assert "BatchGetItem" not in service.stats()["db_calls"]
        doc = service.get(COLLECTION, "n01")
        assert doc is not None and parse_generation(doc["_rev"]) is not None


def test_into_empty_refuses_a_collection_that_is_not_empty(target: DynamoDBService) -> None:
    target.save(COLLECTION, "there", {"v": 1})
    with pytest.raises(ValidationError, match="not empty"):
        import_lines(target, COLLECTION, numbered_lines(3), into_empty=True)
    assert sorted(contents(target)) == ["there"]
    with pytest.raises(ValidationError, match="exclude each other"):
        import_lines(target, COLLECTION, [], into_empty=True, skip_existing=True)


def test_skip_existing_leaves_stored_documents_alone(target: DynamoDBService) -> None:
    rev = target.save(COLLECTION, "n01", {"kept": True})["rev"]
    summary = import_lines(target, COLLECTION, numbered_lines(3), skip_existing=True)
    assert summary.saved == 2 and summary.skipped_existing == 1
    assert target.get(COLLECTION, "n01") == {"_id": "n01", "_rev": rev, "kept": True}


# --------------------------------------------------------------------------------------------
# Copy


def test_copy_between_two_table_prefixes(source: DynamoDBService, target: DynamoDBService) -> None:
    progress: list[Progress] = []
    summary = copy_collection(source, target, COLLECTION, batch_size=25, progress=progress.append)
    assert summary.documents == len(sample_documents()) and summary.skipped_existing == 0
    assert len(progress) >= len(sample_documents()) // 25
    assert contents(target) == contents(source)

    again = copy_collection(source, target, COLLECTION, target_db_name="people_copy")
    assert again.target_collection == "people_copy"
    assert contents(target, "people_copy") == contents(source)

    skipped = copy_collection(source, target, COLLECTION, skip_existing=True)
    assert skipped.documents == 0 and skipped.skipped_existing == len(sample_documents())


@pytest.mark.parametrize("segments", [1, 3])
def test_copy_reads_scan_segments_and_writes_each_document_once(
    source: DynamoDBService, target: DynamoDBService, segments: int
) -> None:
    summary = copy_collection(
        source, target, COLLECTION, batch_size=7, segments=segments, max_in_flight=3
    )
    assert summary.documents == len(sample_documents())
    assert contents(target) == contents(source)
    assert source.stats()["db_calls"]["Scan"] >= segments
    assert summary.capacity is not None and summary.capacity.write_units > 0
    with pytest.raises(ValidationError, match="segments"):
        copy_collection(source, target, COLLECTION, segments=0)


def test_copy_into_empty_skips_the_revision_reads_and_refuses_a_filled_target(
    source: DynamoDBService, target: DynamoDBService
) -> None:
    summary = copy_collection(source, target, COLLECTION, into_empty=True)
    assert summary.documents == len(sample_documents())
    assert contents(target) == contents(source)
    assert "BatchGetItem" not in target.stats()["db_calls"]
    with pytest.raises(ValidationError, match="not empty"):
        copy_collection(source, target, COLLECTION, into_empty=True)
    with pytest.raises(ValidationError, match="exclude each other"):
        copy_collection(source, target, COLLECTION, into_empty=True, skip_existing=True)


def test_a_copy_within_one_service_counts_its_capacity_once(source: DynamoDBService) -> None:
    before = source.stats()["consumed_capacity"]
    summary = copy_collection(source, source, COLLECTION, target_db_name="people_twin")
    after = source.stats()["consumed_capacity"]
    assert summary.capacity is not None
    assert summary.capacity.write_units == after["write_units"] - before["write_units"]
    assert summary.capacity.read_units == after["read_units"] - before["read_units"]


def test_assumed_new_generations_go_up_even_if_the_clock_steps_back(
    service_for: Any, table_prefix: str
) -> None:
    clock = iter([2_000_000_000_000_000, 1_999_999_000_000_000])
    service = service_for(table_prefix + "clock-")
    service._revisions = RevisionMaker(clock_us=lambda: next(clock))
    first = service.save_many(COLLECTION, {"a": {"v": 1}}, assume_new=True)["a"]
    second = service.save_many(COLLECTION, {"a": {"v": 2}}, assume_new=True)["a"]
    assert parse_generation(second) == (parse_generation(first) or 0) + 1


def test_copy_to_the_same_table_is_refused(
    source: DynamoDBService, service_for: Any, moto_server: EmbeddedDynamoDB
) -> None:
    same = service_for(source.table_prefix)
    with pytest.raises(ValidationError, match="same table"):
        copy_collection(source, same, COLLECTION)
    with pytest.raises(ValidationError, match="same table"):
        copy_collection(source, source, COLLECTION)
    # The same endpoint spelled otherwise (found by review: it rewrote every document in place).
    url = moto_server.endpoint_url
    for spelling in (url + "/", url.replace("http://", "HTTP://")):
        other = DynamoDBService(endpoint_url=spelling, table_prefix=source.table_prefix)
        try:
            with pytest.raises(ValidationError, match="same table"):
                copy_collection(source, other, COLLECTION)
        finally:
            other.close()


def table_exists(service: DynamoDBService, db_name: str) -> bool:
    """DescribeTable with a raw client call: creates nothing."""
    client = service.control_client
    try:
        client.describe_table(TableName=service.table_name(db_name))
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


def test_export_of_a_missing_collection_exports_nothing_and_creates_nothing(
    target: DynamoDBService,
) -> None:
    out = io.StringIO()
    summary = export_collection(target, "typo_coll", out)
    assert summary.documents == 0 and out.getvalue() == ""
    assert not table_exists(target, "typo_coll")


def test_copy_of_a_missing_collection_copies_nothing_and_creates_nothing(
    source: DynamoDBService, target: DynamoDBService
) -> None:
    summary = copy_collection(source, target, "nosuchcoll", target_db_name="x_v2")
    assert summary.documents == 0
    assert not table_exists(source, "nosuchcoll")
    assert not table_exists(target, "x_v2")


def test_cli_copy_of_a_missing_collection_exits_2_and_creates_nothing(
    cli: Any, source: DynamoDBService, target: DynamoDBService
) -> None:
    code, out, err = cli(
        source.table_prefix,
        "copy",
        "nosuchcoll",
        "--to-table-prefix",
        target.table_prefix,
        "--to-collection",
        "x_v2",
        "--quiet",
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no such collection: nosuchcoll" in err
    assert not table_exists(source, "nosuchcoll")
    assert not table_exists(target, "x_v2")


# --------------------------------------------------------------------------------------------
# The command


@pytest.fixture
def cli(moto_server: EmbeddedDynamoDB, capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli(prefix, *args)``: ``gateway --endpoint-url <emulator> --table-prefix <prefix>
    *args`` -> (exit code, stdout, stderr)."""

    def call(prefix: str, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--endpoint-url", moto_server.endpoint_url, "--table-prefix", prefix, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_cli_export_to_stdout_then_import_round_trips(
    cli: Any, source: DynamoDBService, target: DynamoDBService, tmp_path: Path
) -> None:
    code, out, err = cli(source.table_prefix, "export", COLLECTION)
    assert code == 0, err
    assert out.count("\n") == len(sample_documents())
    assert f"exported {len(sample_documents())} documents" in err
    path = tmp_path / "people.jsonl"
    path.write_text(out, encoding="utf-8")
    code, out, err = cli(target.table_prefix, "import", COLLECTION, str(path))
    assert code == 0, err
    assert out == ""
    assert f"imported {len(sample_documents())} documents" in err
    assert f"last line committed: {len(sample_documents())}" in err
    assert contents(target) == contents(source)


def test_cli_export_to_a_file(cli: Any, source: DynamoDBService, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    code, out, err = cli(source.table_prefix, "export", COLLECTION, "--out", str(path))
    assert code == 0, err
    assert out == "" and f"to {path}" in err
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no .partial left
    assert len(path.read_text(encoding="utf-8").split("\n")) == len(sample_documents()) + 1
    code, _, err = cli(source.table_prefix, "export", COLLECTION, "--out", str(tmp_path / "no/x"))
    assert code == 2 and err.startswith("error: cannot write") and err.count("\n") == 1


def test_cli_import_lists_every_bad_line_and_exits_1(
    cli: Any, target: DynamoDBService, tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b"\n".join(line if isinstance(line, bytes) else line.encode() for line in BAD_FILE) + b"\n"
    )
    code, out, err = cli(target.table_prefix, "import", COLLECTION, str(path), "--batch-size", "2")
    assert code == 1 and out == ""
    lines = err.strip().split("\n")
    assert [line.split(":")[1] for line in lines[:-2]] == [str(n) for n in sorted(BAD_LINES)]
    assert all(line.startswith(f"{path}:") for line in lines[:-2])
    assert "imported 3 documents" in lines[-2] and "14 bad" in lines[-2]
    assert lines[-1].startswith("error: 14 lines") and "Traceback" not in err
    assert sorted(contents(target)) == ["ok1", "ok2", "ok3"]


def test_cli_import_resume_from(cli: Any, target: DynamoDBService, tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text("\n".join(numbered_lines(10)) + "\n", encoding="utf-8")
    code, _, err = cli(target.table_prefix, "import", COLLECTION, str(path), "--resume-from", "8")
    assert code == 0, err
    assert "lines 8-10" in err
    assert sorted(contents(target)) == ["n08", "n09", "n10"]


def test_cli_import_into_empty_with_batches_in_flight(
    cli: Any, target: DynamoDBService, tmp_path: Path
) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text("\n".join(numbered_lines(30)) + "\n", encoding="utf-8")
    args = ["import", COLLECTION, str(path), "--into-empty", "--max-in-flight", "3"]
    code, _, err = cli(target.table_prefix, *args, "--batch-size", "4")
    assert code == 0, err
    assert "imported 30 documents" in err and "documents/s" in err and "units consumed" in err
    assert len(contents(target)) == 30
    code, _, err = cli(target.table_prefix, *args)
    assert code == 2 and "not empty" in err
    code, _, err = cli(target.table_prefix, "import", COLLECTION, str(path), "--max-in-flight", "0")
    assert code == 2 and "max_in_flight" in err


def test_cli_import_interrupted_says_how_to_resume(
    cli: Any, target: DynamoDBService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.factory

    path = tmp_path / "n.jsonl"
    path.write_text("\n".join(numbered_lines(10)) + "\n", encoding="utf-8")
    monkeypatch.setattr(
        gateway.factory, "get_database_service", lambda settings: FailingSaves(target, 3)
    )
    code, _, err = cli(target.table_prefix, "import", COLLECTION, str(path), "--batch-size", "4")
    assert code == 1
    assert "last line committed: 8" in err
    assert err.strip().split("\n")[-1].endswith("resume with --resume-from 9")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", COLLECTION, "/nonexistent/file.jsonl"], "cannot read"),
        (["import", COLLECTION, "-", "--batch-size", "0"], "batch_size"),
        (["import", COLLECTION, "-", "--resume-from", "0"], "start_line"),
        (["copy", COLLECTION], "same table"),
    ],
)
def test_cli_usage_errors_are_one_line_and_exit_2(
    cli: Any, table_prefix: str, args: list[str], message: str
) -> None:
    code, out, err = cli(table_prefix, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_cli_copy_to_another_prefix_and_collection(
    cli: Any, source: DynamoDBService, target: DynamoDBService
) -> None:
    code, _, err = cli(
        source.table_prefix,
        "copy",
        COLLECTION,
        "--to-table-prefix",
        target.table_prefix,
        "--to-collection",
        "people2",
    )
    assert code == 0, err
    assert f"copied {len(sample_documents())} documents" in err
    assert "documents/s" in err and "units consumed" in err
    assert contents(target, "people2") == contents(source)
    code, _, err = cli(
        source.table_prefix,
        "copy",
        COLLECTION,
        "--to-table-prefix",
        target.table_prefix,
        "--segments",
        "2",
        "--max-in-flight",
        "2",
    )
    assert code == 0, err
    assert contents(target) == contents(source)


def test_cli_copy_to_another_config_file(
    cli: Any,
    source: DynamoDBService,
    target: DynamoDBService,
    moto_server: EmbeddedDynamoDB,
    tmp_path: Path,
) -> None:
    config = tmp_path / "b.yaml"
    config.write_text(
        f"dynamodb:\n  endpoint_url: {moto_server.endpoint_url}\n"
        f"  table_prefix: {target.table_prefix}\n",
        encoding="utf-8",
    )
    code, _, err = cli(source.table_prefix, "copy", COLLECTION, "--to-config", str(config))
    assert code == 0, err
    assert contents(target) == contents(source)


def test_cli_import_from_standard_input(
    cli: Any, target: DynamoDBService, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = ("\ufeff" + "\r\n".join(numbered_lines(3)) + "\r\n").encode("utf-8")  # BOM, CRLF
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    code, _, err = cli(target.table_prefix, "import", COLLECTION, "-")
    assert code == 0, err
    assert "imported 3 documents" in err and "(from <stdin>)" in err
    assert sorted(contents(target)) == ["n01", "n02", "n03"]


def test_counts_of_one_are_singular() -> None:
    assert [plural(n, "line") for n in (0, 1, 2)] == ["0 lines", "1 line", "2 lines"]
    assert (
        plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"
    )
    exported = ExportSummary(collection="c", documents=1, bytes=1, seconds=0.0).describe()
    assert exported.startswith("exported 1 document (1 byte) from 'c'")
    imported = ImportSummary(
        collection="c",
        first_line=5,
        lines_read=1,
        saved=1,
        skipped_existing=0,
        blank_lines=0,
        bad_lines=(),
        last_line_committed=5,
        seconds=0.0,
    ).describe()
    assert imported.startswith("imported 1 document into 'c' (line 5: 0 bad, 0 blank)")
    copied = CopySummary("a", "b", documents=1, skipped_existing=1, seconds=0.0).describe()
    assert copied.startswith("copied 1 document from 'a' to 'b' (1 skipped")
    assert "2 documents" in CopySummary("a", "b", 2, 0, 0.0).describe()


def test_cli_import_of_one_bad_line_says_line_in_the_singular(
    cli: Any, target: DynamoDBService, tmp_path: Path
) -> None:
    path = tmp_path / "one-bad.jsonl"
    path.write_text('{"_id": "a", "v": 1}\nnot json\n', encoding="utf-8")
    code, _, err = cli(target.table_prefix, "import", COLLECTION, str(path))
    assert code == 1
    assert "imported 1 document into" in err
    assert err.strip().split("\n")[-1].startswith("error: 1 line of ")
    assert "1 line of" in err and " was not imported" in err and "1 lines" not in err


def test_cli_export_into_a_reader_that_stops_early_exits_0_quietly(
    source: DynamoDBService, moto_server: EmbeddedDynamoDB
) -> None:
    """`gateway export people | head -1`: the closed pipe is not an error."""
    import os
    import subprocess
    import sys

    # Enough lines to fill the pipe's buffer many times over, so the export is still writing.
    padding = "x" * 2000
    source.save_many(COLLECTION, {f"p{i:04d}": {"pad": padding} for i in range(300)})
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "--endpoint-url",
        moto_server.endpoint_url,
        "--table-prefix",
        source.table_prefix,
        "export",
        COLLECTION,
        "--quiet",
    ]
    with subprocess.Popen(
        command, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what `head -1` does after its line
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert first.startswith(b"{")
    assert code == 0, err
    assert err == ""
