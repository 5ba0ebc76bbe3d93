"""Tests for gateway.codec: validation, conversion, item size, decoding and copies. No network."""

from __future__ import annotations

import collections
import copy
import datetime
import enum
import math
import os
import timeit
import types
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from gateway.codec import (
    MAX_DEPTH,
    MAX_ID_BYTES,
    MAX_ITEM_BYTES,
    REV_RESERVE_BYTES,
    TABLE_NAME_RE,
    check_item_size,
    copy_document,
    decode_item,
    encode_document,
    encode_key_value,
    item_size,
    validate_collection_name,
    validate_id,
    validate_ids,
)
from gateway.errors import ValidationError
from tests.strategies import collection_names, doc_ids, documents, stored_form

SERIALIZER = TypeSerializer()
DESERIALIZER = TypeDeserializer()


def wire_round_trip(item: dict[str, Any]) -> dict[str, Any]:
    """What boto3's resource does to an item on put, then on get."""
    wire = {k: SERIALIZER.serialize(v) for k, v in item.items()}
    return {k: DESERIALIZER.deserialize(v) for k, v in wire.items()}


def assert_same(actual: Any, expected: Any, path: str = "doc") -> None:
    """Equal, and of the same types all the way down (1 == Decimal(1) is not enough)."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{index}]")
    elif isinstance(expected, set):
        assert actual == expected, path
        assert {type(x) for x in actual} == {type(x) for x in expected}, path
    elif isinstance(expected, float) and math.isnan(expected):
        raise AssertionError(f"{path}: NaN can never be stored")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def nested(levels: int, leaf: Any = 1, *, container: str = "map") -> Any:
    """A value whose innermost ``leaf`` sits ``levels`` containers deep."""
    value = leaf
    for _ in range(levels):
        value = {"x": value} if container == "map" else [value]
    return value


def rejected(doc: object) -> str:
    with pytest.raises(ValidationError) as info:
        encode_document(doc)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Collection names


@pytest.mark.parametrize(
    ("name", "prefix", "table"),
    [
        ("abc", "", "abc"),
        ("A-b_c.9", "", "A-b_c.9"),
        ("x" * 255, "", "x" * 255),
        ("users", "prod-", "prod-users"),
        ("a", "pre", "prea"),  # the 3-character minimum applies to the full name
        ("x" * 250, "pre.", "pre." + "x" * 250),
    ],
)
def test_valid_collection_names(name: str, prefix: str, table: str) -> None:
    assert validate_collection_name(name, prefix) == table
    assert TABLE_NAME_RE.match(table)


@pytest.mark.parametrize(
    ("name", "prefix", "fragment"),
    [
        (None, "", "must be a str, got NoneType"),
        (123, "", "must be a str, got int"),
        (b"abc", "", "must be a str, got bytes"),
        ("", "", "0 characters, too short"),
        ("ab", "", "2 characters, too short"),
        ("x" * 256, "", "256 characters, too long"),
        ("my table", "", "contains ' '"),
        ("a/b/c", "", "contains '/'"),
        ("café", "", "contains 'é'"),
        ("abc\n", "", "contains '\\n'"),
        ("users", "prod/", "the table prefix contains '/'"),
    ],
)
def test_invalid_collection_names(name: object, prefix: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_collection_name(name, prefix)
    message = str(info.value)
    assert fragment in message
    if isinstance(name, str):
        assert "3 to 255 characters of letters, digits, '_', '-' and '.'" in message


def test_collection_name_too_long_because_of_prefix_says_so() -> None:
    prefix = "team-analytics-staging-"
    with pytest.raises(ValidationError) as info:
        validate_collection_name("x" * 240, prefix)
    message = str(info.value)
    assert "prefix" in message and "too long" in message
    assert f"at most {255 - len(prefix)} characters" in message


@given(collection_names())
def test_collection_names_strategy_is_valid(name: str) -> None:
    assert validate_collection_name(name) == name


# ---------------------------------------------------------------------------------------------
# Document ids


@pytest.mark.parametrize(
    "doc_id", ["a", "x" * MAX_ID_BYTES, "é" * (MAX_ID_BYTES // 2), "user:42/ü ✓", " "]
)
def test_valid_ids(doc_id: str) -> None:
    assert validate_id(doc_id) == doc_id


def test_id_str_subclass_becomes_plain_str() -> None:
    class Name(str):
        pass

    result = validate_id(Name("abc"))
    assert result == "abc" and type(result) is str


@pytest.mark.parametrize(
    ("doc_id", "fragment"),
    [
        ("", "non-empty"),
        (None, "must be a str, got NoneType"),
        (42, "must be a str, got int"),
        (b"abc", "must be a str, got bytes"),
        ("x" * (MAX_ID_BYTES + 1), "is 2049 UTF-8 bytes"),
        ("é" * (MAX_ID_BYTES // 2 + 1), "is 2050 UTF-8 bytes"),
        ("a\ud800", "lone surrogate"),
    ],
)
def test_invalid_ids(doc_id: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_id(doc_id)
    assert fragment in str(info.value)


def test_validate_ids_merges_duplicates_in_first_seen_order() -> None:
    assert validate_ids(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert validate_ids(iter(["x"])) == ["x"]
    assert validate_ids(()) == []
    assert validate_ids({"k": 1}) == ["k"]  # a mapping iterates its keys


@pytest.mark.parametrize("bad", ["abc", b"abc", 5, None])
def test_validate_ids_refuses_what_is_not_an_iterable_of_ids(bad: object) -> None:
    with pytest.raises(ValidationError, match="Expected an iterable of document ids"):
        validate_ids(bad)  # type: ignore[arg-type]


def test_validate_ids_checks_every_id() -> None:
    with pytest.raises(ValidationError, match="non-empty"):
        validate_ids(["ok", ""])
    with pytest.raises(ValidationError, match="must be a str"):
        validate_ids(["ok", 7])  # type: ignore[list-item]


@given(doc_ids())
def test_doc_ids_strategy_is_valid(doc_id: str) -> None:
    assert validate_id(doc_id) == doc_id


# ---------------------------------------------------------------------------------------------
# encode_document: bad input


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("doc", "fragments"),
    [
        # not a mapping with str keys
        ([("a", 1)], ["must be a mapping", "got list"]),
        ("abc", ["must be a mapping", "got str"]),
        (None, ["must be a mapping", "got NoneType"]),
        ({1: "a"}, ["doc has a key 1 of type int", "non-empty str"]),
        ({"a": {(1, 2): "b"}}, ["doc['a'] has a key (1, 2) of type tuple"]),
        ({"": 1}, ["doc has an empty key"]),
        ({"a": [{"": 1}]}, ["doc['a'][0] has an empty key"]),
        ({"\ud800": 1}, ["not valid Unicode"]),
        # numbers that are not numbers
        ({"a": float("nan")}, ["doc['a']: NaN", "use None"]),
        ({"a": float("inf")}, ["doc['a']: infinity"]),
        ({"a": float("-inf")}, ["doc['a']: infinity"]),
        ({"a": Decimal("NaN")}, ["Decimal('NaN') is not a number DynamoDB can store"]),
        ({"a": Decimal("sNaN")}, ["Decimal('sNaN') is not a number DynamoDB can store"]),
        ({"a": Decimal("Infinity")}, ["infinity"]),
        ({"a": Decimal("-Infinity")}, ["infinity"]),
        # numbers that do not fit
        ({"a": 10**38 + 1}, ["has 39 significant digits", "at most 38", "never rounds"]),
        ({"a": -(10**38) - 1}, ["has 39 significant digits"]),
        ({"a": Decimal("1." + "1" * 38)}, ["has 39 significant digits"]),
        ({"a": Decimal("0." + "9" * 39)}, ["has 39 significant digits"]),
        ({"a": Decimal("1e126")}, ["out of DynamoDB's number range"]),
        ({"a": 1e126}, ["out of DynamoDB's number range"]),
        ({"a": -1e300}, ["out of DynamoDB's number range"]),
        ({"a": 10**126}, ["out of DynamoDB's number range"]),
        ({"a": Decimal("1e-131")}, ["out of DynamoDB's number range"]),
        ({"a": 1e-131}, ["out of DynamoDB's number range"]),
        ({"a": 5e-324}, ["out of DynamoDB's number range"]),
        ({"a": Decimal("-1e-131")}, ["out of DynamoDB's number range"]),
        # stored by DynamoDB, but boto3 could never read it back (boto/boto3#2500)
        ({"a": Decimal("1e38")}, ["1E+38 or more", "boto3"]),
        ({"a": 10**40}, ["1E+38 or more"]),
        ({"a": 1.5e100}, ["1E+38 or more"]),
        # DynamoDB's number, but too many digits for boto3 this close to 1E-130
        ({"a": Decimal("1." + "1" * 37 + "e-130")}, ["too many digits for its tiny magnitude"]),
        # sets
        ({"a": set()}, ["doc['a'] is an empty set", "use a list instead of an empty set"]),
        ({"a": frozenset()}, ["empty set"]),
        ({"a": {1, "a"}}, ["doc['a'] is a set mixing", "strings", "numbers", "use a list"]),
        ({"a": {b"a", "a"}}, ["is a set mixing", "binary values"]),
        ({"a": {True, False}}, ["doc['a'] is a set holding booleans", "use a list"]),
        ({"a": {2, True}}, ["set holding booleans"]),
        ({"a": {None}}, ["is a set holding None of type NoneType"]),
        ({"a": {(1, 2)}}, ["is a set holding (1, 2) of type tuple"]),
        ({"a": {1.5, float("nan")}}, ["doc['a'] holds a bad set element: NaN"]),
        ({"a": {Decimal("1e200")}}, ["holds a bad set element", "out of DynamoDB's number"]),
        ({"a": {"ok", "\udc80"}}, ["holds a bad set element", "lone surrogate"]),
        # types DynamoDB cannot store
        ({"a": datetime.datetime(2024, 1, 2, 3, 4, 5)}, ["datetime.datetime", "ISO-8601"]),
        ({"a": datetime.date(2024, 1, 2)}, ["datetime.date", "ISO-8601"]),
        ({"a": datetime.timedelta(seconds=3)}, ["total_seconds"]),
        ({"a": object()}, ["of type object", "DynamoDB cannot store"]),
        ({"a": complex(1, 2)}, ["of type complex", "real and imaginary"]),
        ({"a": uuid.UUID(int=1)}, ["uuid.UUID", "str(value)"]),
        ({"a": Color.RED}, ["Color", ".value"]),
        ({"a": memoryview(b"ab")}, ["memoryview", "bytes(value)"]),
        ({"a": range(3)}, ["of type range"]),
        ({"a": (x for x in [1])}, ["of type generator"]),
        ({"a": "ok\ud800"}, ["lone surrogate"]),
    ],
)
def test_bad_documents_are_rejected(doc: object, fragments: list[str]) -> None:
    message = rejected(doc)
    for fragment in fragments:
        assert fragment in message, message


def test_error_names_the_path_of_the_bad_value() -> None:
    doc = {"a": [0, 1, 2, {"b": datetime.datetime(2024, 1, 1)}]}
    assert rejected(doc).startswith("doc['a'][3]['b']: datetime.datetime(2024, 1, 1, 0, 0)")
    assert rejected({"x": {"y": [[{"z": set()}]]}}).startswith("doc['x']['y'][0][0]['z'] is")
    assert rejected({"it's": float("nan")}).startswith('doc["it\'s"]: NaN')


def test_long_values_are_shortened_in_messages() -> None:
    message = rejected({"a": ["x" * 10_000 + "\ud800"]})
    assert len(message) < 400


@pytest.mark.parametrize("container", ["map", "list"])
def test_nesting_32_levels_is_accepted_33_is_not(container: str) -> None:
    # The top-level attribute value is level 1, so 31 containers put the leaf at level 32.
    ok = {"deep": nested(MAX_DEPTH - 1, container=container)}
    assert encode_document(ok) == ok
    message = rejected({"deep": nested(MAX_DEPTH, container=container)})
    assert "deeper than 32 levels" in message
    assert "level 32" in message and "level 33" in message


def test_depth_counts_lists_and_maps_together_and_sets_are_one_level() -> None:
    mixed = {"a": [{"b": [{"c": 1}]}]}  # leaf at level 5
    assert encode_document(mixed) == mixed
    value: Any = {"s"}  # a set at level 32 is fine: its elements are not a level
    for index in range(MAX_DEPTH - 1):
        value = [value] if index % 2 else {"k": value}
    assert encode_document({"a": value})["a"] is not None
    # Empty containers are values too: one at level 32 is fine, at level 33 it is refused.
    assert encode_document({"a": nested(MAX_DEPTH - 1, [])}) == {"a": nested(MAX_DEPTH - 1, [])}
    assert "deeper than 32" in rejected({"a": nested(MAX_DEPTH, {})})


def test_self_referencing_document_is_rejected_not_a_recursion_error() -> None:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    assert "deeper than 32 levels" in rejected(loop)


def test_item_over_400kb_is_rejected() -> None:
    item = encode_document({"big": "x" * MAX_ITEM_BYTES})
    with pytest.raises(ValidationError) as info:
        check_item_size(item, "doc-1")
    message = str(info.value)
    assert "'doc-1'" in message and "409600" in message and "S3" in message
    assert str(item_size(item) + len("_id") + len("doc-1") + REV_RESERVE_BYTES) in message


def test_item_size_limit_boundary() -> None:
    overhead = len("b") + len("_id") + len("d") + REV_RESERVE_BYTES
    at_limit = {"b": Binary(b"x" * (MAX_ITEM_BYTES - overhead))}
    assert check_item_size(at_limit, "d") == MAX_ITEM_BYTES
    over = {"b": Binary(b"x" * (MAX_ITEM_BYTES - overhead + 1))}
    with pytest.raises(ValidationError):
        check_item_size(over, "d")
    # With _id and _rev already in the item nothing is added for them.
    full = {"_id": "d", "_rev": "1-" + "0" * 32, "b": Binary(b"")}
    assert check_item_size(full, "d") == item_size(full)


# ---------------------------------------------------------------------------------------------
# encode_document: conversion


def test_conversions_and_types() -> None:
    class Name(str):
        pass

    class Level(enum.IntEnum):
        HIGH = 3

    doc = collections.OrderedDict(
        {
            "_id": "ignored",
            "_rev": "ignored",
            "s": "héllo",
            "empty": "",
            "i": 42,
            "big": 10**37,
            "neg": -(10**38) + 1,
            "f": 0.1,
            "f_int": 2.0,
            "tiny": 1e-130,
            "zero": -0.0,
            "d": Decimal("1.50"),
            "d_zeros": Decimal("1" + "0" * 40 + "E-40"),  # 41 digits, 1 significant
            "d_zero_exp": Decimal("0E-500"),
            "t": True,
            "n": None,
            "b": b"\x00\xff",
            "ba": bytearray(b"ab"),
            "bin": Binary(b"cd"),
            "ss": {"a", "b"},
            "ns": {1, 2.5, Decimal("3")},
            "fs": frozenset({b"x", Binary(b"y")}),
            "tuple": (1, "a"),
            "map": types.MappingProxyType({"k": [1.5]}),
            "sub": Name("plain"),
            "enum": Level.HIGH,
            "nested": {"_id": "kept", "_rev": "kept"},
        }
    )
    expected = {
        "s": "héllo",
        "empty": "",
        "i": Decimal(42),
        "big": Decimal(10**37),
        "neg": Decimal(-(10**38) + 1),
        "f": Decimal("0.1"),
        "f_int": Decimal("2.0"),
        "tiny": Decimal("1E-130"),
        "zero": Decimal("-0.0"),
        "d": Decimal("1.50"),
        "d_zeros": Decimal(1),
        "d_zero_exp": Decimal(0),
        "t": True,
        "n": None,
        "b": Binary(b"\x00\xff"),
        "ba": Binary(b"ab"),
        "bin": Binary(b"cd"),
        "ss": {"a", "b"},
        "ns": {Decimal(1), Decimal("2.5"), Decimal(3)},
        "fs": {Binary(b"x"), Binary(b"y")},
        "tuple": [Decimal(1), "a"],
        "map": {"k": [Decimal("1.5")]},
        "sub": "plain",
        "enum": Decimal(3),
        "nested": {"_id": "kept", "_rev": "kept"},
    }
    encoded = encode_document(doc)
    assert_same(encoded, expected)
    assert type(encoded["ba"].value) is bytes  # Binary over immutable bytes, hashable
    assert encoded["d"].as_tuple() == Decimal("1.50").as_tuple()  # representation kept


def test_floats_that_become_equal_decimals_merge_in_a_set() -> None:
    assert encode_document({"s": {0.1, Decimal("0.1")}}) == {"s": {Decimal("0.1")}}


def test_input_is_not_mutated_and_output_is_new() -> None:
    inner = {"list": [1, 2.5, {"b": b"x"}], "set": {1.5}}
    doc = {"_id": "x", "a": inner, "t": (1, 2)}
    before = copy.deepcopy(doc)
    encoded = encode_document(doc)
    assert doc == before
    assert type(doc["a"]["list"][1]) is float  # type: ignore[index]
    assert encoded is not doc and encoded["a"] is not inner
    assert encoded["a"]["list"] is not inner["list"]
    assert encoded["a"]["set"] is not inner["set"]


def test_valid_values_round_trip_through_boto3_serializer() -> None:
    doc = {
        "s": "✓ ünïcode",
        "e": "",
        "i": -7,
        "big": 10**38 - 1,
        "f": 3.141592653589793,
        "tiny": -1e-130,
        "d": Decimal("9.9999999999999999999999999999999999999E+37"),
        "small": Decimal("1E-130"),
        "precise": Decimal("1." + "2" * 37 + "E-100"),
        "zeros": Decimal("1" + "0" * 40 + "E-40"),
        "t": False,
        "n": None,
        "b": b"",
        "ss": {"", "x"},
        "ns": {0, -1.25, Decimal("1E-5")},
        "bs": {b"", b"\x00"},
        "l": [[], {}, [None]],
        "m": {"a": {"b": {"c": [1, "2", b"3"]}}},
    }
    encoded = encode_document(doc)
    assert_same(wire_round_trip(encoded), encoded)
    assert_same(wire_round_trip(encoded), stored_form(doc))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(documents(variants=True))
def test_property_round_trip_through_boto3(doc: dict[str, Any]) -> None:
    encoded = encode_document(doc)
    check_item_size(encoded, "id")
    back = wire_round_trip(encoded)
    assert_same(decode_item(back, native_numbers=False), stored_form(doc))
    assert_same(decode_item(back, native_numbers=True), stored_form(doc, native_numbers=True))


@given(documents())
def test_property_encoding_is_idempotent(doc: dict[str, Any]) -> None:
    encoded = encode_document(doc)
    assert_same(encode_document(encoded), encoded)


# ---------------------------------------------------------------------------------------------
# A real put_item / get_item, in moto


@pytest.fixture(scope="module")
def moto_table() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_SESSION_TOKEN", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        with mock_aws():
            resource = boto3.resource("dynamodb", region_name="us-east-1")
            table = resource.create_table(
                TableName=validate_collection_name("codec-tests"),
                KeySchema=[{"AttributeName": "_id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "_id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            yield table


def test_moto_put_get_round_trip_fixed_document(moto_table: Any) -> None:
    doc = {
        "s": "héllo",
        "i": 10**37,
        "f": 0.1,
        "d": Decimal("-1.50"),
        "tiny": 1e-130,
        "b": b"\x00",
        "ss": {"a"},
        "ns": {1, 2.5},
        "bs": {b"z"},
        "l": [None, True, {"x": []}],
        "deep": nested(MAX_DEPTH - 1, "leaf"),
    }
    item = {**encode_document(doc), "_id": "fixed"}
    moto_table.put_item(Item=item)
    stored = moto_table.get_item(Key={"_id": "fixed"}, ConsistentRead=True)["Item"]
    assert_same(stored, item)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(doc_id=doc_ids(), doc=documents(variants=True))
def test_property_moto_put_get_round_trip(moto_table: Any, doc_id: str, doc: dict) -> None:
    item = {**encode_document(doc), "_id": validate_id(doc_id)}
    check_item_size(item, doc_id)
    moto_table.put_item(Item=item)
    stored = moto_table.get_item(Key={"_id": doc_id}, ConsistentRead=True)["Item"]
    assert_same(stored, item)
    assert_same(decode_item(stored, native_numbers=False), {**stored_form(doc), "_id": doc_id})


# ---------------------------------------------------------------------------------------------
# item_size


@pytest.mark.parametrize(
    ("item", "size"),
    [
        ({"a": "abc"}, 1 + 3),
        ({"a": ""}, 1),
        ({"é": "é"}, 2 + 2),
        ({"n": Decimal("123")}, 1 + 3),  # ceil(3 / 2) + 1
        ({"n": Decimal("1234")}, 1 + 3),
        ({"n": Decimal("-12.5")}, 1 + 4),  # + 1 for the sign
        ({"n": Decimal("1000")}, 1 + 2),  # trailing zeros trimmed
        ({"n": Decimal("0.001")}, 1 + 2),  # leading zeros trimmed
        ({"n": Decimal("0")}, 1 + 2),
        ({"n": Decimal("1" * 38)}, 1 + 20),
        ({"b": Binary(b"12345")}, 1 + 5),
        ({"t": True, "n": None}, 2 + 2),
        ({"l": []}, 1 + 3),
        ({"l": [Decimal(1), "ab"]}, 1 + 3 + 2 + 2 + 2),
        ({"m": {"k": True}}, 1 + 3 + 1 + 1 + 1),
        ({"ss": {"a", "bc"}}, 2 + 3),
        ({"ns": {Decimal(1), Decimal(22)}}, 2 + 2 + 2),
        ({"bs": {Binary(b"abc")}}, 2 + 3),
        # values encode_document would convert are sized as what they become
        ({"i": 123, "f": 1.5, "b": b"ab", "t": ("a",)}, 1 + 3 + 1 + 2 + 1 + 2 + 1 + 3 + 1 + 1),
    ],
)
def test_item_size(item: dict[str, Any], size: int) -> None:
    assert item_size(item) == size


# ---------------------------------------------------------------------------------------------
# encode_key_value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc", "abc"),
        (5, Decimal(5)),
        (1.5, Decimal("1.5")),
        (Decimal("2.50"), Decimal("2.50")),
        (b"k", Binary(b"k")),
        (bytearray(b"k"), Binary(b"k")),
    ],
)
def test_encode_key_value(value: object, expected: object) -> None:
    result = encode_key_value(value, "the value queried on index 'by_x'")
    assert_same(result, expected)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "non-empty str"),
        (b"", "non-empty bytes"),
        ("x" * (MAX_ID_BYTES + 1), "over 2048 UTF-8 bytes"),
        (b"x" * (MAX_ID_BYTES + 1), "over 2048 bytes"),
        (True, "of type bool"),
        (None, "of type NoneType"),
        ([1], "of type list"),
        ({"a"}, "of type set"),
        (float("nan"), "NaN"),
        (Decimal("1e200"), "out of DynamoDB's number range"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_bad_key_values(value: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        encode_key_value(value, "the value queried on index 'by_x'")
    message = str(info.value)
    assert message.startswith("the value queried on index 'by_x' ")
    assert fragment in message


# ---------------------------------------------------------------------------------------------
# decode_item


def test_decode_item_without_native_numbers_returns_the_same_object() -> None:
    item = {"a": Decimal(1)}
    assert decode_item(item, native_numbers=False) is item


def test_decode_item_native_numbers() -> None:
    item = {
        "i": Decimal(3),
        "i_frac_zero": Decimal("3.0"),
        "e": Decimal("1E+2"),
        "f": Decimal("1.5"),
        "tiny": Decimal("1E-130"),
        "neg": Decimal("-0"),
        "l": [Decimal("2"), "s", [Decimal("0.25")]],
        "m": {"n": {"o": Decimal("7")}},
        "ns": {Decimal(1), Decimal("0.5")},
        "ss": {"x"},
        "b": Binary(b"x"),
        "t": True,
        "z": None,
    }
    before = copy.deepcopy(item)
    decoded = decode_item(item, native_numbers=True)
    assert_same(
        decoded,
        {
            "i": 3,
            "i_frac_zero": 3,
            "e": 100,
            "f": 1.5,
            "tiny": 1e-130,
            "neg": 0,
            "l": [2, "s", [0.25]],
            "m": {"n": {"o": 7}},
            "ns": {1, 0.5},
            "ss": {"x"},
            "b": Binary(b"x"),
            "t": True,
            "z": None,
        },
    )
    assert_same(item, before)  # the input is untouched


# ---------------------------------------------------------------------------------------------
# copy_document


def sample_document() -> dict[str, Any]:
    """About 1 KB of typical document, in decoded form."""
    return wire_round_trip(
        encode_document(
            {
                "name": "Ada Lovelace",
                "age": 36,
                "score": 98.5,
                "active": True,
                "nick": None,
                "tags": {"math", "poetry", "engines"},
                "address": {"street": "12 St James's Square", "city": "London", "zip": "SW1Y"},
                "history": [
                    {"year": 1843, "event": "Notes on the Analytical Engine", "pages": 65},
                    {"year": 1835, "event": "married", "pages": 0},
                ],
                "ratio": Decimal("0.333"),
                "blob": b"\x00\x01" * 20,
                "matrix": [[1, 2, 3], [4, 5, 6]],
                "unicode": "héllo wörld ✓",
                "misc": {"a": 1.25, "b": [True, False, None], "c": "x" * 400},
            }
        )
    )


def test_copy_document_is_deep_for_containers() -> None:
    doc = sample_document()
    doc["odd"] = bytearray(b"mutable")  # not something decode produces: deep-copied anyway
    copied = copy_document(doc)
    assert_same(copied, doc)
    copied["history"][0]["year"] = 0
    copied["tags"].add("new")
    copied["matrix"][1].append(7)
    copied["address"]["city"] = "Paris"
    copied["odd"][0] = 0
    assert doc["history"][0]["year"] == 1843
    assert "new" not in doc["tags"]
    assert doc["matrix"][1] == [4, 5, 6]
    assert doc["address"]["city"] == "London"
    assert doc["odd"] == bytearray(b"mutable")
    assert copy_document(doc)["name"] is doc["name"]  # immutable scalars are shared


def test_copy_document_copies_binary_values() -> None:
    """A Binary's ``value`` is a writable attribute: a copy must not share the object."""
    doc = {
        "blob": Binary(b"original"),
        "nested": {"list": [Binary(b"in a list")]},
        "set": {Binary(b"x"), Binary(b"y")},
        "raw": bytearray(b"raw"),
        "over_mutable": Binary(bytearray(b"mutable bytes")),
    }
    copied = copy_document(doc)
    assert copied == doc
    assert copied["blob"] is not doc["blob"]
    assert copied["nested"]["list"][0] is not doc["nested"]["list"][0]
    assert not any(a is b for a in copied["set"] for b in doc["set"])
    copied["blob"].value = b"tampered"
    copied["nested"]["list"][0].value = b"tampered"
    copied["raw"][0] = 0
    copied["over_mutable"].value[0] = 0
    for element in copied["set"]:
        element.value = b"tampered"
    assert doc["blob"] == Binary(b"original")
    assert doc["nested"]["list"][0] == Binary(b"in a list")
    assert doc["set"] == {Binary(b"x"), Binary(b"y")}
    assert doc["raw"] == bytearray(b"raw")
    assert doc["over_mutable"].value == bytearray(b"mutable bytes")
    assert type(copied["blob"]) is Binary and type(copied["raw"]) is bytearray


def test_encode_document_never_keeps_the_callers_binary() -> None:
    """The encoded item is what the gateway caches: the caller's Binary stays the caller's."""
    mine = Binary(b"mine")
    encoded = encode_document({"b": mine, "s": {mine}, "l": [mine]})
    assert encoded["b"] == mine and encoded["b"] is not mine
    assert encoded["l"][0] is not mine
    assert all(element is not mine for element in encoded["s"])
    mine.value = b"changed"
    assert encoded["b"] == Binary(b"mine") and encoded["l"][0] == Binary(b"mine")


def test_copy_document_is_much_faster_than_deepcopy() -> None:
    doc = sample_document()
    fast = min(timeit.repeat(lambda: copy_document(doc), number=2000, repeat=5))
    slow = min(timeit.repeat(lambda: copy.deepcopy(doc), number=2000, repeat=5))
    ratio = slow / fast
    print(f"copy_document is {ratio:.1f}x faster than copy.deepcopy")
    assert ratio > 2


def test_encode_is_fast() -> None:
    doc = {
        "name": "Ada Lovelace",
        "history": [{"year": 1843, "event": "Notes", "pages": 65.5}] * 8,
        "tags": {"a", "b"},
        "text": "x" * 500,
    }
    seconds = min(timeit.repeat(lambda: encode_document(doc), number=1000, repeat=5)) / 1000
    print(f"encode_document: {seconds * 1e6:.1f} us")
    assert seconds < 500e-6  # generous: typically ~10-20 us; catches pathological slowdowns


@given(st.data())
def test_strategies_only_produce_valid_documents(data: st.DataObject) -> None:
    doc = data.draw(documents())
    assert "_id" not in doc and "_rev" not in doc
    encode_document(doc)
