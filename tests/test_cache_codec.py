"""The cache codec: exact round trips of every value type, and safe refusal of bad bytes."""

from __future__ import annotations

import enum
import math
import pickle
import re
from collections import OrderedDict
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import Binary
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.caches.codec as codec
from gateway.caches.base import Entry, Kind
from gateway.caches.codec import MAX_VERSION, decode_entry, encode_entry
from gateway.caches.errors import CacheCodecError
from tests.strategies import documents, stored_form

GEN = 1_732_500_000_000_000
REV = f"{GEN}-{'a' * 32}"
STORED_AT = 1_732_500_000.123456

#: Python's reading of the header: format version, the record's ver and uver, intents, kind,
#: generation, stored_at, rev length (the Redis scripts read the record's fields with
#: ``RECORD_LUA_PATTERN``).
HEADER_RE = re.compile(
    rb"\Av(\d+)\|(\d+)\|(\d+)\|([^|]*)\|(\d)\|(-?\d+)\|([^|]*)\|(\d*)\|"
)
#: A version-2 header up to the kind: versions 0, no intents.
V2 = b"v2|0|0||"


def typed(value: Any) -> Any:
    """A comparable form of ``value`` that keeps every type (Decimal digits and exponent,
    float bits, bytes vs Binary vs bytearray, set vs frozenset, tuple vs list)."""
    t = type(value)
    if t is dict:
        return ("dict", sorted((k, typed(v)) for k, v in value.items()))
    if t in (list, tuple):
        return (t.__name__, [typed(v) for v in value])
    if t in (set, frozenset):
        return (t.__name__, sorted(repr(typed(v)) for v in value))
    if t is Decimal:
        return ("Decimal", value.as_tuple())
    if t is float:
        return ("float", value.hex())
    if t is Binary:
        return ("Binary", type(value.value).__name__, bytes(value.value))
    return (t.__name__, value)


def round_trip(entry: Entry) -> Entry:
    data = encode_entry(entry)
    assert type(data) is bytes
    return decode_entry(data)


def assert_round_trips(entry: Entry) -> None:
    back = round_trip(entry)
    assert type(back.kind) is Kind and back.kind is entry.kind
    assert type(back.generation) is int and back.generation == entry.generation
    assert type(back.rev) is type(entry.rev) and back.rev == entry.rev
    assert type(back.stored_at) is float and back.stored_at.hex() == float(entry.stored_at).hex()
    assert type(back.ver) is int and back.ver == entry.ver
    assert typed(back.document) == typed(entry.document)


def doc_entry(document: Any, rev: str | None = REV) -> Entry:
    return Entry(Kind.DOCUMENT, GEN, rev, document, STORED_AT)


# ------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(documents(variants=True))
def test_any_document_round_trips_exactly(document: dict[str, Any]) -> None:
    assert_round_trips(doc_entry({"_id": "x", "_rev": REV, **document}))


@settings(max_examples=200, deadline=None)
@given(documents())
def test_documents_as_stored_round_trip(document: dict[str, Any]) -> None:
    # What the gateway really caches: values as DynamoDB returns them, Decimal or native.
    assert_round_trips(doc_entry(stored_form(document)))
    assert_round_trips(doc_entry(stored_form(document, native_numbers=True)))


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(list(Kind)),
    generation=st.integers(min_value=-(10**30), max_value=10**30),
    rev=st.none() | st.text(max_size=40),
    stored_at=st.floats(allow_nan=False, allow_infinity=False),
    ver=st.integers(min_value=0, max_value=2**64),
)
def test_header_fields_round_trip(
    kind: Kind, generation: int, rev: str | None, stored_at: float, ver: int
) -> None:
    assert_round_trips(Entry(kind, generation, rev, None, stored_at, ver))
    assert_round_trips(Entry(kind, generation, rev, {"a": Decimal("1")}, stored_at, ver))


@pytest.mark.parametrize(
    "number",
    [
        "1.50",
        "1E+5",
        "1.0E+5",
        "-0",
        "0E-7",
        "-0.000001",
        "9.9E+125",
        "1E-130",
        "9" * 38,
        "0." + "1" * 38,
        "123456789012345678901234567890.12345678",
    ],
)
def test_decimal_keeps_its_digits_and_exponent(number: str) -> None:
    d = Decimal(number)
    assert_round_trips(doc_entry({"n": d, "l": [d], "s": {d}}))
    # ... also in a document whose other numbers are native (the Decimal is then a patch).
    assert_round_trips(doc_entry({"n": d, "i": 1, "f": 2.5, "j": 3}))


@pytest.mark.parametrize(
    "number",
    [0.0, -0.0, 0.1, 1e16, 1e-5, 5e-324, 1.7976931348623157e308, -2.5, 1 / 3],
)
def test_float_is_bit_exact(number: float) -> None:
    assert_round_trips(doc_entry({"f": number, "l": [number], "s": {number}}))
    assert_round_trips(doc_entry({"f": number, "d": Decimal("1"), "e": Decimal("2")}))


@pytest.mark.parametrize("number", [0, 1, -1, 2**53 + 1, 10**37, -(10**38) + 1, 10**100])
def test_int_stays_int(number: int) -> None:
    assert_round_trips(doc_entry({"i": number, "l": [number], "s": {number}}))
    assert_round_trips(doc_entry({"i": number, "d": Decimal("1"), "e": Decimal("2")}))


def test_every_type_together() -> None:
    document = {
        "_id": "k",
        "_rev": REV,
        "str": 'héllo ✓ \x00 \n " \\ |',
        "empty": "",
        "dec": Decimal("1.50"),
        "int": 7,
        "float": 2.5,
        "true": True,
        "false": False,
        "none": None,
        "binary": Binary(b"\x00\xff"),
        "bytes": b"\x01\x02",
        "bytearray": bytearray(b"\x03"),
        "str_set": {"a", "b"},
        "dec_set": {Decimal("1"), Decimal("2.0")},
        "int_set": {1, 2},
        "float_set": {0.5, 1.5},
        "mixed_number_set": {1, 2.5, Decimal("3.25")},
        "binary_set": {Binary(b"x"), Binary(b"y")},
        "bytes_set": {b"x", b"y"},
        "frozen": frozenset({"f"}),
        "empty_set": set(),
        "list": [Decimal("1"), 2, 3.0, "four", None, [Binary(b"5"), {"six": {6}}]],
        "tuple": (1, [2, (3,)], {"t": b"t"}),
        "map": {"__t": "x", "": {}, "|": [], "v1|1|": "header-like", "_": None},
        "lone_surrogate \ud800": "\udfff",
        "bool_and_int": [True, 1, False, 0],
    }
    assert_round_trips(doc_entry(document))


def test_top_level_values_other_than_dicts() -> None:
    for document in ["text", Decimal("1.5"), 3, 2.5, [1, {"a"}], True, b"raw", {Decimal("1")}]:
        assert_round_trips(doc_entry(document))


@pytest.mark.parametrize("rev", [None, "", REV, "x|y||", "ünïcødé ✓", "-", "5-" + "a" * 300])
def test_revision_round_trips(rev: str | None) -> None:
    assert_round_trips(doc_entry({"a": "b"}, rev))
    assert_round_trips(Entry(Kind.ABSENT, 0, rev, None, 0.0))


def test_subclasses_come_back_as_builtins() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Name(str, enum.Enum):
        ALICE = "alice"

    document = OrderedDict(
        [("color", Color.RED), ("name", Name.ALICE), ("nested", OrderedDict(a=1))]
    )
    back = round_trip(doc_entry(document)).document
    assert typed(back) == typed({"color": 1, "name": "alice", "nested": {"a": 1}})


def test_kinds_and_int_kind() -> None:
    for kind in Kind:
        assert round_trip(Entry(kind, 3)).kind is kind
    assert round_trip(Entry(2, 3)).kind is Kind.ABSENT  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# The wire format
# ------------------------------------------------------------------------------------------


def test_header_is_readable_without_the_body() -> None:
    data = encode_entry(replace(doc_entry({"a": Decimal("1")}), ver=1_795_000_000_123_456))
    match = HEADER_RE.match(data)
    assert match is not None
    version, ver, uver, intents, kind, generation, stored_at, rev_length = match.groups()
    assert int(version) == MAX_VERSION == 2
    assert int(ver) == 1_795_000_000_123_456
    assert (uver, intents) == (b"0", b"")  # only the Redis scripts write uver and intents
    assert int(kind) == Kind.DOCUMENT
    assert int(generation) == GEN
    assert float(stored_at) == STORED_AT
    assert data[match.end() : match.end() + int(rev_length)] == REV.encode()
    assert data[match.end() + int(rev_length) :] == b'|D{"a":1}'


@settings(max_examples=200, deadline=None)
@given(generation=st.integers(-(10**20), 10**20), rev=st.none() | st.text(max_size=20))
def test_header_matches_the_documented_pattern(generation: int, rev: str | None) -> None:
    data = encode_entry(Entry(Kind.FLOOR, generation, rev, None, 1.0))
    match = HEADER_RE.match(data)
    assert match is not None
    assert int(match.group(6)) == generation
    rev_length = match.group(8)
    if rev is None:
        assert rev_length == b""
        assert data[match.end() :] == b"|_"
    else:
        raw = rev.encode("utf-8", "surrogatepass")
        assert int(rev_length) == len(raw)
        assert data[match.end() :] == raw + b"|_"


def test_decimal_documents_have_no_patches_and_native_ones_neither() -> None:
    decimal = encode_entry(doc_entry({"a": Decimal("1.50"), "b": [Decimal("2")], "c": "x"}))
    assert decimal.endswith(b'|D{"a":1.50,"b":[2],"c":"x"}')
    native = encode_entry(doc_entry({"a": 1.5, "b": [2], "c": "x"}))
    assert native.endswith(b'|N{"a":1.5,"b":[2],"c":"x"}')


def test_patched_document_keeps_type_markers_out_of_the_json() -> None:
    data = encode_entry(doc_entry({"__t": "B", "b": b"\x00"}))
    assert data.endswith(b'|d11|[["b","b"]]{"__t":"B","b":"AA=="}')


# ------------------------------------------------------------------------------------------
# Refusals
# ------------------------------------------------------------------------------------------

VALID = encode_entry(
    doc_entry({"a": Decimal("1.5"), "b": [b"x", {1, 2}], "c": {"d": "é"}}, rev="5-é|x")
)


@pytest.mark.parametrize("length", range(len(VALID)))
def test_every_truncation_is_refused(length: int) -> None:
    with pytest.raises(CacheCodecError):
        decode_entry(VALID[:length])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"v2",
        b"v2|0|",
        b"v2|0|0|",
        b"v2|0|0||1|5|1.0||",
        b"v1|1|5|1.0|||_",  # the previous version
        b"v3|0||1|5|1.0|||_",
        b"v0|0||1|5|1.0|||_",
        b"V2|0||1|5|1.0|||_",
        b"x2|0||1|5|1.0|||_",
        b"v2||0|a1:5:u|1|5|1.0|||_",  # no record version
        b"v2|-1|0||1|5|1.0|||_",
        b"v2|x|0||1|5|1.0|||_",
        b"v2| 1|0||1|5|1.0|||_",
        b"v2|0|x||1|5|1.0|||_",  # a uver the Redis scripts could not read either
        b"v2|0|||1|5|1.0|||_",
        b"v2|0||1|5|1.0|||_",  # no uver field
        b"v2|1|5|1.0|||_",  # the v1 layout under a v2 tag
        b"v2|0|0||4|5|1.0|||_",
        b"v2|0|0||0|5|1.0|||_",
        b"v2|0|0||11|5|1.0|||_",
        b"v2|0|0||1||1.0|||_",
        b"v2|0|0||1|5a|1.0|||_",
        b"v2|0|0||1| 5|1.0|||_",
        b"v2|0|0||1|+5|1.0|||_",
        b"v2|0|0||1|1_0|1.0|||_",
        b"v2|0|0||1|5||||_",
        b"v2|0|0||1|5|x|||_",
        b"v2|0|0||1|5|1.0|x||_",
        b"v2|0|0||1|5|1.0|3|ab|_",
        b"v2|0|0||1|5|1.0|1|ab|_",
        b"v2|0|0||1|5|1.0|0|_",
        b"v2|0|0||1|5|1.0|||",
        b"v2|0|0||1|5|1.0|||X{}",
        b"v2|0|0||1|5|1.0|||D",
        b"v2|0|0||1|5|1.0|||D{}x",
        b"v2|0|0||1|5|1.0|||D{} ",
        b"v2|0|0||1|5|1.0|||D{'a':1}",
        b"v2|0|0||1|5|1.0|||DNaN",
        b"v2|0|0||1|5|1.0|||NInfinity",
        b"v2|0|0||1|5|1.0|||D[-Infinity]",
        b"v2|0|0||1|5|1.0|||_x",
        b"v2|0|0||1|5|1.0|||\xff",
        b"v2|0|0||1|5|1.0|2|\xc3|_",
        b'v2|0|0||1|5|1.0|||D"\xff"',
        b"v2|0|0||1|5|1.0|||D" + b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(CacheCodecError):
        decode_entry(data)


@pytest.mark.parametrize(
    "body",
    [
        b"d3|[1]{}",  # a patch that is not a list
        b"d2|[]{}x",  # trailing bytes
        b'd9|[["i"]]{}',  # wrong patch length
        b"dx|[]{}",
        b"d|[]{}",
        b"d7|[[1,2]]{}",  # code not a string
        b"d4|[[]]{}",  # empty patch
        b'd12|[["q","a"]]{"a":1}',  # unknown code
        b'd12|[["i","b"]]{"a":1}',  # no such key
        b'd10|[["i",5]]{"a":1}',  # index into a dict
        b'd10|[["i",1]][1]',  # index out of range
        b'd11|[["i",-1]][1]',  # negative index
        b'd12|[["b","a"]]{"a":"!!"}',  # bad base64
        b'd12|[["b","a"]]{"a":1}',  # base64 of a number
        b'd12|[["i","a"]]{"a":1.5}',  # not an integer
        b'd12|[["i","a"]]{"a":1E+999999999}',  # a huge integer: refused, not built
        b'n12|[["D","a"]]{"a":"NaN"}',
        b'n12|[["D","a"]]{"a":1}',
        b'd13|[["Sq","a"]]{"a":[1]}',
        b'd14|[["Mii","a"]]{"a":[1]}',  # one code per element
        b'd12|[["S-","a"]]{"a":1}',  # a set from a number
        b'd13|[["S-","a"]]{"a":[[]]}',  # unhashable element
        b'd12|[["T","a"]]{"a":1}',
        b'd15|[["i","a","b"]]{"a":"xy"}',  # path through a string
    ],
)
def test_malformed_patches_are_refused(body: bytes) -> None:
    with pytest.raises(CacheCodecError):
        decode_entry(V2 + b"1|5|1.0|||" + body)


def test_another_format_version_is_refused_naming_both() -> None:
    with pytest.raises(CacheCodecError, match=r"version 7; this gateway reads version 2"):
        decode_entry(b"v7|0|0||1|5|1.0|||_")
    # Version 1 had no record version and no intents: refused, never misread.
    with pytest.raises(CacheCodecError, match=r"version 1; this gateway reads version 2"):
        decode_entry(b"v1|1|5|1.0|||_")
    with pytest.raises(CacheCodecError, match=r"version 1;.*own cache.redis_key_prefix"):
        decode_entry(b"v1|2|0|1.0|||_")


@pytest.mark.parametrize(
    ("ver", "uver", "intents"),
    [
        (0, 0, b""),
        (7, 7, b"a1:1000:u"),
        (1_795_000_000_123_456, 12, b"a1:1000:o,ffff:99999999999999:u"),
    ],
)
def test_decoding_reads_ver_and_skips_uver_and_intents(
    ver: int, uver: int, intents: bytes
) -> None:
    data = b"v2|%d|%d|%s|1|5|1.0|1|r|D{}" % (ver, uver, intents)
    assert decode_entry(data) == Entry(Kind.DOCUMENT, 5, "r", {}, 1.0, ver)


@pytest.mark.parametrize("ver", [-1, True, 1.5, "3", None])
def test_a_bad_record_version_is_not_encoded(ver: Any) -> None:
    with pytest.raises(CacheCodecError, match="ver"):
        encode_entry(Entry(Kind.DOCUMENT, 1, ver=ver))


class _Payload:
    """An object whose unpickling would run a function: the classic pickle exploit."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record_call, ("unpickled!",))


_CALLS: list[str] = []


def _record_call(what: str) -> str:
    _CALLS.append(what)
    return what


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_never_unpickled(protocol: int) -> None:
    payload = pickle.dumps(_Payload(), protocol=protocol)
    assert pickle.loads(payload) == "unpickled!" and _CALLS == ["unpickled!"]  # it is armed
    _CALLS.clear()
    for data in (
        payload,
        pickle.dumps({"a": 1}, protocol=protocol),
        V2 + b"1|5|1.0|||" + payload,
        V2 + b"1|5|1.0|||D" + payload,
        V2 + b"1|5|1.0|||d" + b"%d|" % len(payload) + payload + b"{}",
    ):
        with pytest.raises(CacheCodecError):
            decode_entry(data)
    assert _CALLS == []


def test_the_codec_has_no_code_executing_loader() -> None:
    names = vars(codec)
    for dangerous in ("pickle", "marshal", "yaml", "shelve", "dill", "cloudpickle"):
        assert dangerous not in names
    assert "import pickle" not in Path(codec.__file__).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "document",
    [
        {"nan": math.nan},
        {"inf": [math.inf]},
        {"d": Decimal("NaN")},
        {"d": {Decimal("Infinity")}},
        {"s": [Decimal("sNaN")]},
        {1: "non-str key"},
        {"o": object()},
        {"s": {(1, 2)}},
        {"m": memoryview(b"x")},
    ],
)
def test_unencodable_values_raise_codec_error(document: Any) -> None:
    with pytest.raises(CacheCodecError):
        encode_entry(doc_entry(document))


def test_cycle_raises_codec_error() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(CacheCodecError):
        encode_entry(doc_entry(cyclic))


@pytest.mark.parametrize("generation", [1.5, "5", True, None])
def test_bad_header_values_raise_codec_error(generation: Any) -> None:
    with pytest.raises(CacheCodecError):
        encode_entry(Entry(Kind.DOCUMENT, generation))
    with pytest.raises(CacheCodecError):
        encode_entry(Entry(Kind.DOCUMENT, 1, rev=5))  # type: ignore[arg-type]
