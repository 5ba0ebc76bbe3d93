"""Migration: export and import a collection as JSON Lines, and copy one between two services.

**The file format** is JSON Lines (UTF-8, one JSON object per line, ``\\n`` between lines).

* `export_collection` writes **DynamoDB JSON**, the attribute-value form of boto3's
  ``TypeSerializer`` that AWS's own export to S3 uses, one ``{"Item": {...}}`` per line::

      {"Item":{"_id":{"S":"u1"},"_rev":{"S":"17...-9f..."},"b":{"B":"AP8="},"n":{"N":"1.50"}}}

  Numbers are strings (``"1.50"`` stays ``Decimal('1.50')``), Binary is base64 (standard
  alphabet, padded), sets are ``SS`` / ``NS`` / ``BS`` with sorted elements, and attributes are
  sorted by name, so two exports of the same data are identical. Every DynamoDB type round-trips
  exactly: str, Decimal, Binary, the three kinds of set, lists, maps, bool and None.
* `import_lines` reads that format, the same item without the ``{"Item": ...}`` wrapper (what
  ``aws dynamodb scan`` prints per item: a line whose ``_id`` is ``{"S": "..."}``), and **plain
  JSON** documents, ``{"_id": "u1", "name": "Ada", "score": 9.5}``, for migrating from another
  database (CouchDB, MongoDB's ``mongoexport``, ...). In plain JSON, numbers become ``Decimal``
  exactly as written (``1.50`` stays ``Decimal('1.50')``); plain JSON has no bytes and no sets,
  so data that has them must be written as DynamoDB JSON. Each line is in one format or the
  other; a file may hold lines of both.

Every line must carry a string ``_id``. A ``_rev`` in the file is ignored: the service issues a
fresh revision for every document it saves, so re-importing a file yields the same documents with
new revisions (an import is idempotent on documents, not on revisions). Lines are applied in file
order, so when an id appears twice the later line wins.

**Nothing is silently dropped.** Every line is parsed and validated with the service's own rules
(`gateway.codec`) before anything is written; a line that fails (invalid JSON or UTF-8, a missing
or invalid ``_id``, NaN, an empty or duplicated set, a number DynamoDB cannot hold, an item over
400 KB, ...) becomes a `BadLine` with its line number and the reason, the other lines are still
imported, and the summary lists every bad line. Since each line is checked first, a batch handed
to ``save_many`` cannot fail validation as a whole.

**Resuming.** Valid lines are saved with ``save_many`` in batches, in order. The summary (and the
`MigrationInterrupted` error a failed write raises) reports ``last_line_committed``: every line up
to it was saved or reported. ``import_lines(..., start_line=N)`` (``gateway import --resume-from
N``) skips the lines before ``N`` without reading them as JSON; since a save is an upsert,
resuming from an earlier line than necessary is harmless.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from boto3.dynamodb.types import Binary

from gateway.codec import (
    MAX_DEPTH,
    check_item_size,
    encode_document,
    validate_collection_name,
    validate_id,
)
from gateway.errors import GatewayError, ValidationError
from gateway.metrics import cost_dollars
from gateway.service import DatabaseService, Document
from gateway.write_window import WindowFailed, WriteWindow

#: Documents per ``save_many`` call, by default: one BatchGetItem of the stored revisions
#: (100 keys) and four BatchWriteItem requests (25 items each); smaller batches read the
#: revisions in more, smaller requests.
DEFAULT_BATCH_SIZE: Final = 100
#: The largest batch accepted: ``save_many`` splits it into requests of 25 itself; larger
#: batches only make the unit of resumption (and of memory) bigger.
MAX_BATCH_SIZE: Final = 1000
#: Documents per scan page when exporting.
DEFAULT_EXPORT_PAGE_SIZE: Final = 100
#: Batches an import or a copy keeps in flight at once, by default (each ``save_many`` of a
#: batch sends its own requests: keep the product below the connection pool's size).
DEFAULT_MAX_IN_FLIGHT: Final = 8
MAX_IN_FLIGHT: Final = 64
#: Documents per scan page of a copy's source: 10 times fewer Scan requests than pages of 100
#: (a page is also cut at 1 MB); split into batches of ``batch_size`` to write.
COPY_PAGE_SIZE: Final = 1000
#: Parallel scan segments a copy reads the source with, by default.
DEFAULT_SEGMENTS: Final = 4
MAX_SEGMENTS: Final = 64

_ID: Final = "_id"
_REV: Final = "_rev"
_ITEM: Final = "Item"
_UTF8_BOM: Final = "\ufeff"
_JSON_WHITESPACE: Final = " \t\r\n"
# DynamoDB's number syntax (what a "N" string may hold); Decimal() alone would also take
# "1_000", " 1 ", "NaN" and "Infinity".
_NUMBER_RE: Final = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_SET_TAGS: Final = {"SS": "strings", "NS": "numbers", "BS": "binary values"}
_SHOWN_CHARS: Final = 60


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``count`` and the noun, singular for exactly one: "1 line", "2 lines", "0 lines"."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BadLine:
    """A line that was not imported, and why."""

    line_no: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.reason}"


@dataclass(frozen=True)
class Progress:
    """A snapshot handed to a ``progress`` callback after every batch, page or bad line."""

    #: Documents exported, saved or copied so far.
    documents: int
    #: Bad lines found so far (import only).
    bad_lines: int = 0
    #: Documents left alone because the target already had them (``skip_existing``).
    skipped_existing: int = 0
    #: Every line up to this one was saved or reported (import only; 0 for export and copy).
    last_line_committed: int = 0


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class CapacityUse:
    """The capacity DynamoDB reported consumed by a run (units, as in ``stats()``), and what
    it costs at on-demand prices (`gateway.metrics.cost_dollars`)."""

    read_units: float
    write_units: float
    dollars: float

    def describe(self) -> str:
        return (
            f"{self.write_units:,.0f} write and {self.read_units:,.0f} read units consumed "
            f"(${self.dollars:.4f} on demand)"
        )


class CapacityDelta:
    """What a service's ``stats()`` reports consumed from now on (None if it reports none)."""

    def __init__(self, *services: Any) -> None:
        # A caching gateway reports its service's figures: count each service once (a copy
        # between two collections of one service, or from a gateway to its own service).
        bare = {id(b): b for b in (getattr(s, "service", s) for s in services)}
        self._services = tuple(bare.values())
        self._start = self._totals()

    def _totals(self) -> tuple[float, float] | None:
        read = write = 0.0
        for service in self._services:
            stats = getattr(service, "stats", None)
            if not callable(stats):
                return None
            capacity = stats().get("consumed_capacity")
            if not capacity:
                return None
            read += float(capacity.get("read_units", 0.0))
            write += float(capacity.get("write_units", 0.0))
        return read, write

    def since(self) -> CapacityUse | None:
        now = self._totals()
        if now is None or self._start is None:
            return None
        read, write = now[0] - self._start[0], now[1] - self._start[1]
        return CapacityUse(read, write, cost_dollars(read, write))


@dataclass(frozen=True)
class ExportSummary:
    """What `export_collection` wrote."""

    collection: str
    documents: int
    #: UTF-8 bytes written, newlines included.
    bytes: int
    seconds: float

    def describe(self) -> str:
        """One line for people."""
        return (
            f"exported {plural(self.documents, 'document')} ({plural(self.bytes, 'byte')}) from "
            f"{self.collection!r} in {self.seconds:.2f} s"
        )


@dataclass(frozen=True)
class ImportSummary:
    """What `import_lines` did, line by line."""

    collection: str
    #: The first line looked at (``start_line``); earlier lines were skipped unread.
    first_line: int
    #: Lines looked at, from ``first_line`` on (blank and bad ones included).
    lines_read: int
    #: Documents saved (one per valid line, or fewer with ``skip_existing``).
    saved: int
    #: Valid lines not saved because the document already existed (``skip_existing``).
    skipped_existing: int
    #: Empty or whitespace-only lines (not data, not errors).
    blank_lines: int
    #: Every line that was not imported, in file order.
    bad_lines: tuple[BadLine, ...]
    #: Every line up to this one was saved or reported; ``first_line - 1`` if none was.
    last_line_committed: int
    seconds: float
    #: What the run consumed in DynamoDB, when the service reports it.
    capacity: CapacityUse | None = None

    @property
    def ok(self) -> bool:
        """True when no line was bad."""
        return not self.bad_lines

    @property
    def resume_from(self) -> int:
        """The ``start_line`` to pass to continue after this run."""
        return self.last_line_committed + 1

    def describe(self) -> str:
        """One line for people."""
        if self.lines_read:
            last = self.first_line + self.lines_read - 1
            lines = f"line {last}" if self.lines_read == 1 else f"lines {self.first_line}-{last}"
        else:
            lines = f"no lines from line {self.first_line}"
        parts = [f"{len(self.bad_lines)} bad", f"{self.blank_lines} blank"]
        if self.skipped_existing:
            parts.append(f"{self.skipped_existing} skipped as already present")
        return (
            f"imported {plural(self.saved, 'document')} into {self.collection!r} ({lines}: "
            f"{', '.join(parts)}) in {self.seconds:.2f} s ({_rate(self.saved, self.seconds)}); "
            f"last line committed: {self.last_line_committed}{_consumed(self.capacity)}"
        )


@dataclass(frozen=True)
class CopySummary:
    """What `copy_collection` did."""

    source_collection: str
    target_collection: str
    #: Documents written to the target.
    documents: int
    #: Documents left alone because the target already had them (``skip_existing``).
    skipped_existing: int
    seconds: float
    #: What the run consumed in DynamoDB (source reads and target writes), when reported.
    capacity: CapacityUse | None = None

    def describe(self) -> str:
        """One line for people."""
        skipped = (
            f" ({self.skipped_existing} skipped as already present)"
            if self.skipped_existing
            else ""
        )
        return (
            f"copied {plural(self.documents, 'document')} from {self.source_collection!r} to "
            f"{self.target_collection!r}{skipped} in {self.seconds:.2f} s "
            f"({_rate(self.documents, self.seconds)}){_consumed(self.capacity)}"
        )


def _rate(documents: int, seconds: float) -> str:
    return f"{documents / seconds:,.0f} documents/s" if seconds > 0 else "-"


def _consumed(capacity: CapacityUse | None) -> str:
    return "" if capacity is None else "; " + capacity.describe()


class MigrationInterrupted(GatewayError):
    """A read or write failed part-way through an import or a copy.

    ``summary`` tells what was done before the failure; for an import, ``resume_from`` is the
    ``start_line`` to continue from. The original error is the
    ``__cause__``, and its ``code`` and ``operation`` are copied here.
    """

    def __init__(self, message: str, *, summary: ImportSummary | CopySummary, cause: GatewayError):
        super().__init__(message, code=cause.code, operation=cause.operation)
        self.summary = summary
        #: For an import, the ``start_line`` that continues it; None for a copy.
        self.resume_from = summary.resume_from if isinstance(summary, ImportSummary) else None


# --------------------------------------------------------------------------------------------
# Lines <-> documents


class _BadValue(Exception):
    """Internal: a value of a DynamoDB JSON item that is not a valid attribute value."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _av_path(path: tuple[object, ...]) -> str:
    return "Item" + "".join(f"[{segment!r}]" for segment in path)


def _to_attribute_value(value: Any) -> dict[str, Any]:
    """One encoded value (see `encode_document`) as a DynamoDB JSON attribute value."""
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, Decimal):
        return {"N": str(value)}
    if isinstance(value, Binary):
        return {"B": base64.b64encode(bytes(value.value)).decode("ascii")}
    if isinstance(value, dict):
        return {"M": {k: _to_attribute_value(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"L": [_to_attribute_value(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        # encode_document refuses empty and mixed sets, so the first element names the kind.
        first = next(iter(value))
        if isinstance(first, str):
            return {"SS": sorted(value)}
        if isinstance(first, Decimal):
            return {"NS": [str(n) for n in sorted(value)]}
        return {
            "BS": sorted(base64.b64encode(bytes(b.value)).decode("ascii") for b in value),
        }
    raise TypeError(f"cannot export a value of type {type(value).__name__}")  # pragma: no cover


def document_to_item(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` (as a service returns it, with ``_id`` and ``_rev``) as a DynamoDB JSON item.

    Values go through the codec first, so ints and floats (from a service with native numbers)
    become numbers and bytes become Binary; an invalid document raises `ValidationError`.
    """
    doc_id = validate_id(doc.get(_ID))
    item = encode_document(doc)
    item[_ID] = doc_id
    rev = doc.get(_REV)
    if isinstance(rev, str):
        item[_REV] = rev
    return {name: _to_attribute_value(value) for name, value in item.items()}


def document_to_line(doc: Mapping[str, Any]) -> str:
    """One export line (without its newline): ``{"Item": {...}}`` in DynamoDB JSON."""
    return json.dumps(
        {_ITEM: document_to_item(doc)},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )


def _number(text: object, path: tuple[object, ...]) -> Decimal:
    if not isinstance(text, str) or not _NUMBER_RE.match(text):
        raise _BadValue(
            f'{_av_path(path)} is not a number: a "N" value is a string such as "1.50", '
            f"got {_show(text)}"
        )
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid numbers
        raise _BadValue(f"{_av_path(path)} is not a number: {_show(text)}") from exc


def _binary(text: object, path: tuple[object, ...]) -> bytes:
    if isinstance(text, str):
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise _BadValue(
        f'{_av_path(path)} is not binary: a "B" value is a base64 string, got {_show(text)}'
    )


def _set(tag: str, values: object, path: tuple[object, ...]) -> set[Any]:
    if not isinstance(values, list):
        raise _BadValue(f"{_av_path(path)}: a {tag!r} value is a list, got {_show(values)}")
    out: set[Any] = set()
    for index, element in enumerate(values):
        where = (*path, index)
        if tag == "SS":
            if not isinstance(element, str):
                raise _BadValue(
                    f"{_av_path(where)}: a string set holds strings, got {_show(element)}"
                )
            out.add(element)
        elif tag == "NS":
            out.add(_number(element, where))
        else:
            out.add(_binary(element, where))
    if len(out) != len(values):
        raise _BadValue(
            f"{_av_path(path)} is a set of {_SET_TAGS[tag]} holding the same value twice; "
            'DynamoDB refuses duplicates in a set: remove them, or use a list ("L")'
        )
    return out  # an empty set is left to the codec, which explains why it cannot be stored


def _from_attribute_value(av: object, path: tuple[object, ...]) -> Any:
    """A DynamoDB JSON attribute value as the Python value the service stores."""
    if len(path) > MAX_DEPTH + 1:  # the codec reports the exact limit; this only stops runaways
        raise _BadValue(f"{_av_path(path)}: nesting is deeper than DynamoDB's {MAX_DEPTH} levels")
    if not isinstance(av, dict) or len(av) != 1:
        raise _BadValue(
            f"{_av_path(path)} is not a DynamoDB attribute value: expected an object with one "
            f'type key such as {{"S": "text"}} or {{"N": "1.5"}}, got {_show(av)}'
        )
    ((tag, value),) = av.items()
    if tag == "S":
        if isinstance(value, str):
            return value
    elif tag == "N":
        return _number(value, path)
    elif tag == "B":
        return _binary(value, path)
    elif tag == "BOOL":
        if isinstance(value, bool):
            return value
    elif tag == "NULL":
        if value is True:
            return None
    elif tag == "L":
        if isinstance(value, list):
            return [_from_attribute_value(v, (*path, i)) for i, v in enumerate(value)]
    elif tag == "M":
        if isinstance(value, dict):
            return {k: _from_attribute_value(v, (*path, k)) for k, v in value.items()}
    elif tag in _SET_TAGS:
        return _set(tag, value, path)
    else:
        raise _BadValue(
            f"{_av_path(path)} has an unknown type {tag!r}; expected one of S, N, B, BOOL, "
            "NULL, L, M, SS, NS, BS"
        )
    expected = {
        "S": "a string",
        "BOOL": "true or false",
        "NULL": "true",
        "L": "a list",
        "M": "an object",
    }[tag]
    raise _BadValue(f"{_av_path(path)}: a {tag!r} value is {expected}, got {_show(value)}")


def item_to_document(item: Mapping[str, Any]) -> tuple[object, dict[str, Any]]:
    """A DynamoDB JSON item as (the ``_id`` value, the document without ``_id``/``_rev``).

    Raises `ValidationError` for a value that is not a valid attribute value. ``_rev`` is not
    even looked at: it is ignored.
    """
    if _ID not in item:
        raise ValidationError('missing _id: the item needs an "_id": {"S": "..."} attribute')
    raw_id = item[_ID]
    if not (isinstance(raw_id, dict) and len(raw_id) == 1 and isinstance(raw_id.get("S"), str)):
        raise ValidationError(
            f'Item[\'_id\'] must be a string attribute {{"S": "..."}}, got {_show(raw_id)}'
        )
    return raw_id["S"], attributes_to_document(item)


def attributes_to_document(item: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a DynamoDB JSON item as a document (not validated yet: see
    `validate_document`). ``_id`` and ``_rev`` are not even looked at: they are left out.

    Raises `ValidationError` for a value that is not a valid attribute value.
    """
    try:
        return {
            name: _from_attribute_value(value, (name,))
            for name, value in item.items()
            if name not in (_ID, _REV)
        }
    except _BadValue as exc:
        raise ValidationError(str(exc)) from None


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValidationError(
                f"invalid JSON: the key {_show(key)} appears twice in one object, so one of "
                "its values would be lost"
            )
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ValidationError(
        f"invalid JSON: {name} is not standard JSON, and DynamoDB cannot store it; use null "
        "for a missing value"
    )


def load_json(text: str) -> object:
    """``text`` as JSON, strictly: floats as `Decimal` (``1.50`` stays ``Decimal('1.50')``),
    no ``NaN`` / ``Infinity``, no key twice in one object. Raises `ValidationError`."""
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_object_without_duplicates,
        )
    except RecursionError:
        raise ValidationError("invalid JSON: nested too deeply to read") from None
    except ValidationError:
        raise
    except ValueError as exc:  # json.JSONDecodeError, or an integer too long to parse
        raise ValidationError(f"invalid JSON: {exc}") from None


def parse_line(line: str) -> tuple[object, dict[str, Any]]:
    """One line (DynamoDB JSON or plain JSON) as (the ``_id`` value, the document).

    The document is not validated yet (see `validate_document`); the ``_id`` is returned as
    found. Raises `ValidationError` with the reason for a line that cannot be read.
    """
    value = load_json(line)
    if not isinstance(value, dict):
        raise ValidationError(
            f'a line must be a JSON object (a document or {{"Item": ...}}), got '
            f"{type(value).__name__} {_show(value)}"
        )
    if _ID in value:
        raw_id = value[_ID]
        if isinstance(raw_id, dict) and list(raw_id) == ["S"]:
            return item_to_document(value)  # a bare DynamoDB JSON item
        return raw_id, value  # plain JSON; encode_document drops _id and _rev
    if list(value) == [_ITEM] and isinstance(value[_ITEM], dict):
        return item_to_document(value[_ITEM])
    raise ValidationError(
        'missing _id: every line needs a string "_id" (plain JSON) or to be '
        '{"Item": {"_id": {"S": "..."}, ...}} (DynamoDB JSON)'
    )


def validate_document(raw_id: object, doc: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check an id and a document with the service's rules; returns (id, the encoded item).

    The same checks ``save`` and ``save_many`` make (id, types, numbers, sets, depth, 400 KB),
    so a batch of validated documents cannot fail validation in ``save_many``.
    """
    doc_id = validate_id(raw_id)
    item = encode_document(doc)
    check_item_size(item, doc_id)  # counts _id and room for _rev, as save does
    return doc_id, item


# --------------------------------------------------------------------------------------------
# Export


def export_collection(
    service: DatabaseService,
    db_name: str,
    out: TextIO,
    progress: ProgressCallback | None = None,
    *,
    page_size: int = DEFAULT_EXPORT_PAGE_SIZE,
    clock: Callable[[], float] = time.monotonic,
) -> ExportSummary:
    """Write every document of ``db_name`` to ``out``, one DynamoDB JSON line each.

    ``service`` should return numbers as Decimal (not ``NATIVE_NUMBERS``): a float read back
    from a native-numbers service has already lost the digits a float cannot hold.
    ``out`` should be opened with ``encoding="utf-8"`` (text is written unescaped).
    """
    started = clock()
    documents = 0
    size = 0
    for page in service.iter_pages(db_name, page_size):
        for doc in page:
            line = document_to_line(doc) + "\n"
            out.write(line)
            size += len(line) if line.isascii() else len(line.encode("utf-8"))
        documents += len(page)
        if progress is not None:
            progress(Progress(documents=documents))
    return ExportSummary(
        collection=db_name, documents=documents, bytes=size, seconds=clock() - started
    )


# --------------------------------------------------------------------------------------------
# Import


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValidationError(f"batch_size must be an integer, got {batch_size!r}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValidationError(
            f"batch_size must be 1 to {MAX_BATCH_SIZE}, got {batch_size}; the default, "
            f"{DEFAULT_BATCH_SIZE} (one read of the stored revisions and four BatchWriteItem "
            "requests), is the fastest measured"
        )


def _check_collection(service: DatabaseService, db_name: str) -> None:
    """Refuse a bad collection name before reading anything (with the prefix, if known)."""
    check = getattr(service, "validate_save_many", None)
    if callable(check):
        check(db_name, {})
    else:
        validate_collection_name(db_name)


def _decode(raw: str | bytes, line_no: int) -> str:
    """A line as text without its line terminator; a BOM is dropped from line 1."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"not valid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8"
            ) from None
    else:
        text = raw
    if line_no == 1 and text.startswith(_UTF8_BOM):
        text = text[1:]
    return text.rstrip("\r\n")


class _Importer:
    """The state of one `import_lines` run: the batch being filled, the batches in flight
    (`gateway.write_window`) and the counters."""

    def __init__(
        self,
        service: DatabaseService,
        db_name: str,
        *,
        batch_size: int,
        skip_existing: bool,
        into_empty: bool,
        start_line: int,
        max_in_flight: int,
        progress: ProgressCallback | None,
        on_bad_line: Callable[[BadLine], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.service = service
        self.db_name = db_name
        self.batch_size = batch_size
        self.skip_existing = skip_existing
        self.into_empty = into_empty
        self.start_line = start_line
        self.progress = progress
        self.on_bad_line = on_bad_line
        self.clock = clock
        self.started = clock()
        self.batch: dict[str, dict[str, Any]] = {}
        self.lines_read = 0
        self.saved = 0
        self.skipped_existing = 0
        self.blank_lines = 0
        self.bad_lines: list[BadLine] = []
        self.window: WriteWindow[tuple[int, int]] = WriteWindow(max_in_flight, start_line - 1)
        self.meter = CapacityDelta(service)

    @property
    def committed(self) -> int:
        return self.window.committed

    def run(self, lines: Iterable[str | bytes]) -> ImportSummary:
        line_no = 0
        try:
            for line_no, raw in enumerate(lines, start=1):
                if line_no < self.start_line:
                    continue
                self.lines_read += 1
                self.handle(line_no, raw)
            self.flush(through=max(line_no, self.start_line - 1))
        except WindowFailed:
            pass  # reported by `finish`
        except BaseException:
            self.finish(interrupted=True)
            raise
        self.finish()
        return self.summary()

    def handle(self, line_no: int, raw: str | bytes) -> None:
        try:
            text = _decode(raw, line_no)
            if not text.strip(_JSON_WHITESPACE):
                self.blank_lines += 1
                doc_id = None
            else:
                doc_id, item = validate_document(*parse_line(text))
        except ValidationError as exc:
            bad = BadLine(line_no, str(exc))
            self.bad_lines.append(bad)
            if self.on_bad_line is not None:
                self.on_bad_line(bad)
            doc_id = None
        if doc_id is None:  # nothing to save: committed once everything before it is
            if not self.batch:
                self.window.mark(line_no)
                self.account(self.window.collect(), report=False)
            self.report()
            return
        if doc_id in self.batch:
            # The same id twice in one batch: write the first before the second, so that
            # lines apply in file order and every valid line is one save (the window runs a
            # batch only once no batch sharing an id with it is running).
            self.flush(through=line_no - 1)
        self.batch[doc_id] = item
        if len(self.batch) >= self.batch_size:
            self.flush(through=line_no)

    def flush(self, through: int) -> None:
        """Hand the pending batch to the window; every line up to ``through`` is committed
        once it and the batches before it are saved."""
        batch, self.batch = self.batch, {}
        if batch:
            self.window.submit(batch, lambda: self.write(batch), through)
        else:
            self.window.mark(through)
        self.account(self.window.collect())

    def write(self, batch: dict[str, dict[str, Any]]) -> tuple[int, int]:
        """On a window thread: (documents saved, documents skipped as present)."""
        skipped = 0
        if self.skip_existing:
            existing = self.service.get_many(self.db_name, list(batch))
            kept = {i: doc for i, doc in batch.items() if existing.get(i) is None}
            skipped = len(batch) - len(kept)
            batch = kept
        if batch:
            if self.into_empty:
                self.service.save_many(self.db_name, batch, assume_new=True)  # type: ignore[call-arg]
            else:
                self.service.save_many(self.db_name, batch)
        return len(batch), skipped

    def account(self, results: list[tuple[int, int]], *, report: bool = True) -> None:
        for saved, skipped in results:  # one report per batch, as without the window
            self.saved += saved
            self.skipped_existing += skipped
            if report:
                self.report()

    def finish(self, *, interrupted: bool = False) -> None:
        """Wait for the batches in flight; raise `MigrationInterrupted` if one failed."""
        results, error = self.window.drain()
        self.window.close()
        self.account(results)
        if error is None or interrupted:
            return
        if not isinstance(error, GatewayError):
            raise error
        summary = self.summary()
        raise MigrationInterrupted(
            f"import into {self.db_name!r} stopped: {error}; lines up to "
            f"{summary.last_line_committed} are committed, resume from line "
            f"{summary.resume_from}",
            summary=summary,
            cause=error,
        ) from error

    def report(self) -> None:
        if self.progress is not None:
            self.progress(
                Progress(
                    documents=self.saved,
                    bad_lines=len(self.bad_lines),
                    skipped_existing=self.skipped_existing,
                    last_line_committed=self.committed,
                )
            )

    def summary(self) -> ImportSummary:
        return ImportSummary(
            collection=self.db_name,
            first_line=self.start_line,
            lines_read=self.lines_read,
            saved=self.saved,
            skipped_existing=self.skipped_existing,
            blank_lines=self.blank_lines,
            bad_lines=tuple(self.bad_lines),
            last_line_committed=self.committed,
            seconds=self.clock() - self.started,
            capacity=self.meter.since(),
        )


def _check_max_in_flight(max_in_flight: int) -> None:
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
        raise ValidationError(f"max_in_flight must be an integer, got {max_in_flight!r}")
    if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
        raise ValidationError(
            f"max_in_flight must be 1 to {MAX_IN_FLIGHT}, got {max_in_flight}: each batch in "
            "flight holds a connection of the service's pool"
        )


def _check_empty(service: DatabaseService, db_name: str) -> None:
    """``into_empty``: the collection must hold no document (read from DynamoDB itself, not
    from a cached scan)."""
    bare = getattr(service, "service", service)
    first: list[Document] = next(iter(bare.iter_pages(db_name, 1)), [])
    if first:
        raise ValidationError(
            f"into_empty: collection {db_name!r} is not empty (it holds {first[0][_ID]!r}, at "
            "least): import without --into-empty (each batch then reads the stored revisions "
            "first), or into an empty collection"
        )


def import_lines(
    service: DatabaseService,
    db_name: str,
    lines: Iterable[str | bytes],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    skip_existing: bool = False,
    into_empty: bool = False,
    start_line: int = 1,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    progress: ProgressCallback | None = None,
    on_bad_line: Callable[[BadLine], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ImportSummary:
    """Import JSON Lines (see the module docstring) into ``db_name``; returns what happened.

    ``lines``: one item per line, str or UTF-8 bytes (e.g. a file opened in binary mode, so a
    line that is not UTF-8 is reported instead of stopping the import), line terminators
    allowed. Lines before ``start_line`` (1-based) are skipped unread. Valid lines are saved with
    ``save_many``, ``batch_size`` at a time, in file order, up to ``max_in_flight`` batches at
    once while the next lines are read (`gateway.write_window`: two lines of the same id land
    in file order); bad lines are collected in the summary (and passed to ``on_bad_line`` as
    they are found), never skipped silently. ``skip_existing``: documents whose id is already
    stored are left as they are (checked with ``get_many`` just before each batch, so not
    atomic with concurrent writers). ``into_empty``: the collection is checked to be empty
    first (else `ValidationError`), and ``save_many`` then skips its revision reads
    (``assume_new``): for a first load, about a fifth fewer requests.

    Raises `MigrationInterrupted` (with the summary so far) when a read or write fails, and
    `ValidationError` at once for a bad collection name, ``batch_size``, ``max_in_flight`` or
    ``start_line``.
    """
    _check_batch_size(batch_size)
    _check_max_in_flight(max_in_flight)
    if isinstance(start_line, bool) or not isinstance(start_line, int) or start_line < 1:
        raise ValidationError(f"start_line must be an integer >= 1, got {start_line!r}")
    if into_empty and skip_existing:
        raise ValidationError(
            "into_empty and skip_existing exclude each other: an empty collection has nothing "
            "to skip"
        )
    _check_collection(service, db_name)
    if into_empty:
        _check_empty(service, db_name)
    importer = _Importer(
        service,
        db_name,
        batch_size=batch_size,
        skip_existing=skip_existing,
        into_empty=into_empty,
        start_line=start_line,
        max_in_flight=max_in_flight,
        progress=progress,
        on_bad_line=on_bad_line,
        clock=clock,
    )
    return importer.run(lines)


# --------------------------------------------------------------------------------------------
# Copy


def _location(service: DatabaseService, db_name: str) -> tuple[object, ...] | None:
    """Where ``db_name`` lives (endpoint, region, table), when the service tells. The endpoint
    and region are those its client resolved (the region's default endpoint when none was
    given), the endpoint in one spelling: ``HTTP://Host:80/`` and ``http://host`` are one."""
    bare = getattr(service, "service", service)  # a caching gateway wraps a DynamoDBService
    table_name = getattr(bare, "table_name", None)
    if not callable(table_name):
        return None
    clients = getattr(bare, "clients", None)
    meta = getattr(clients()[0], "meta", None) if callable(clients) and clients() else None
    endpoint = getattr(meta, "endpoint_url", None) or getattr(bare, "endpoint_url", None)
    region = getattr(meta, "region_name", None) or getattr(bare, "region_name", None)
    return (
        None if endpoint is None else _same_spelling(str(endpoint)),
        region,
        table_name(db_name),
    )


def _same_spelling(url: str) -> str:
    """``url`` with its scheme and host in lower case, its port explicit and no trailing
    slash."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # not a port number: compare the text as it is
        return url.strip()
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}{parts.path.rstrip('/')}"


def copy_collection(
    source: DatabaseService,
    target: DatabaseService,
    db_name: str,
    *,
    target_db_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    skip_existing: bool = False,
    into_empty: bool = False,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    segments: int = DEFAULT_SEGMENTS,
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CopySummary:
    """Copy every document of ``db_name`` on ``source`` to ``target_db_name`` on ``target``.

    The source is read by a parallel scan of ``segments`` segments (one thread each; a source
    that is not a DynamoDB service is read with ``iter_pages``), and its pages are written in
    batches of ``batch_size`` with ``save_many`` (full replace, fresh revisions), up to
    ``max_in_flight`` batches at once, so a copy is idempotent: run it again after an
    interruption. ``skip_existing`` leaves documents the target already has alone (faster
    re-runs; but then changes made at the source since the first run are not copied).
    ``into_empty``: the target collection is checked to be empty first (else
    `ValidationError`), and its ``save_many`` skips the revision reads (``assume_new``). The
    source should return numbers as Decimal (not ``NATIVE_NUMBERS``), or float precision is
    lost on the way.

    Raises `ValidationError` when source and target are the same table, and
    `MigrationInterrupted` (with the summary so far) when a read or write fails.
    """
    _check_batch_size(batch_size)
    _check_max_in_flight(max_in_flight)
    if (
        isinstance(segments, bool)
        or not isinstance(segments, int)
        or not 1 <= segments <= MAX_SEGMENTS
    ):
        raise ValidationError(f"segments must be 1 to {MAX_SEGMENTS}, got {segments!r}")
    if into_empty and skip_existing:
        raise ValidationError(
            "into_empty and skip_existing exclude each other: an empty collection has nothing "
            "to skip"
        )
    target_db = db_name if target_db_name is None else target_db_name
    _check_collection(source, db_name)
    _check_collection(target, target_db)
    where = _location(source, db_name)
    if (where is not None and where == _location(target, target_db)) or (
        source is target and db_name == target_db
    ):
        raise ValidationError(
            f"source and target are the same table ({db_name!r}): give the target another "
            "endpoint, region, table prefix or collection name"
        )
    if into_empty:
        _check_empty(target, target_db)
    started = clock()
    meter = CapacityDelta(source, target)
    copied = 0
    skipped = 0
    window: WriteWindow[tuple[int, int]] = WriteWindow(max_in_flight)

    def write(docs: dict[str, Document]) -> tuple[int, int]:
        left_alone = 0
        if skip_existing:
            existing = target.get_many(target_db, list(docs))
            kept = {i: doc for i, doc in docs.items() if existing.get(i) is None}
            left_alone = len(docs) - len(kept)
            docs = kept
        if docs and into_empty:
            target.save_many(target_db, docs, assume_new=True)  # type: ignore[call-arg]
        elif docs:
            target.save_many(target_db, docs)
        return len(docs), left_alone

    def account(results: list[tuple[int, int]]) -> None:
        nonlocal copied, skipped
        for written, left_alone in results:  # one report per batch
            copied += written
            skipped += left_alone
            if progress is not None:
                progress(Progress(documents=copied, skipped_existing=skipped))

    def summary() -> CopySummary:
        return CopySummary(db_name, target_db, copied, skipped, clock() - started, meter.since())

    page_size = max(batch_size, COPY_PAGE_SIZE)
    error: BaseException | None = None
    batches = 0
    try:
        with _SegmentReader(source, db_name, segments, page_size, max_in_flight) as pages:
            for page in pages:
                for start in range(0, len(page), batch_size):
                    docs: dict[str, Document] = {
                        doc[_ID]: doc for doc in page[start : start + batch_size]
                    }
                    batches += 1
                    window.submit(docs, lambda docs=docs: write(docs), batches)  # type: ignore[misc]
                    account(window.collect())
    except WindowFailed:
        pass
    except GatewayError as exc:  # a read of the source failed
        error = exc
    finally:
        results, write_error = window.drain()
        window.close()
        account(results)
    error = error or write_error
    if error is not None:
        if not isinstance(error, GatewayError):
            raise error
        raise MigrationInterrupted(
            f"copy of {db_name!r} stopped after {plural(copied, 'document')}: {error}; a copy "
            "is idempotent: run it again",
            summary=summary(),
            cause=error,
        ) from error
    return summary()


class _SegmentReader:
    """The pages of a parallel scan of ``db_name``, as they come, from ``segments`` threads
    (`DynamoDBService.iter_segment_pages`); one thread and ``iter_pages`` for a source that
    has no segments. Reading runs ahead of the writes by a bounded number of pages."""

    _DONE: Final = object()

    def __init__(
        self, source: DatabaseService, db_name: str, segments: int, page_size: int, ahead: int
    ) -> None:
        bare = getattr(source, "service", source)  # a caching gateway: scan DynamoDB itself
        segment_pages = getattr(bare, "iter_segment_pages", None)
        self._readers: list[Callable[[], Iterable[list[Document]]]]
        if callable(segment_pages) and segments > 1:
            self._readers = [
                functools.partial(segment_pages, db_name, s, segments, page_size)
                for s in range(segments)
            ]
        else:
            self._readers = [functools.partial(bare.iter_pages, db_name, page_size)]
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(2, ahead * 2))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Iterator[list[Document]]:
        for index, reader in enumerate(self._readers):
            thread = threading.Thread(
                target=self._read, args=(reader,), name=f"gateway-copy-scan-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self._pages()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        while any(thread.is_alive() for thread in self._threads):
            with contextlib.suppress(queue.Empty):  # unblock readers waiting for room
                self._queue.get(timeout=0.05)

    def _read(self, reader: Callable[[], Iterable[list[Document]]]) -> None:
        try:
            for page in reader():
                if self._stop.is_set():
                    return
                self._queue.put(page)
        except BaseException as exc:
            self._queue.put(exc)
        finally:
            self._queue.put(self._DONE)

    def _pages(self) -> Iterator[list[Document]]:
        running = len(self._threads)
        while running:
            item = self._queue.get()
            if item is self._DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item  # type: ignore[misc]


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "BadLine",
    "CopySummary",
    "ExportSummary",
    "ImportSummary",
    "MigrationInterrupted",
    "Progress",
    "ProgressCallback",
    "attributes_to_document",
    "copy_collection",
    "document_to_item",
    "document_to_line",
    "export_collection",
    "import_lines",
    "item_to_document",
    "load_json",
    "parse_line",
    "plural",
    "validate_document",
]
