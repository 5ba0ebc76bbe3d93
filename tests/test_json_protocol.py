"""gateway.json_protocol: the data plane's short paths give what botocore gives, byte for byte.

Every request body is compared with botocore's own serializer's, and every answer with botocore's
own parser's, on DynamoDB's real API model; the round trips at the end go to the emulator over
HTTP (binary values, sets, nested maps and errors included).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import botocore.session
import pytest
from boto3.dynamodb.types import Binary, TypeSerializer
from botocore.config import Config
from botocore.model import OperationModel
from botocore.parsers import JSONParser, create_parser
from botocore.serialize import create_serializer

from gateway.dynamodb import DynamoDBService
from gateway.emulator import EmbeddedDynamoDB
from gateway.errors import ConflictError
from gateway.json_protocol import (
    FastJSONParser,
    FastJSONSerializer,
    answer_plan,
    install,
    installed,
    request_copied_as_is,
)

MODEL = botocore.session.get_session().get_service_model("dynamodb")
WIRE = TypeSerializer().serialize


def operation(name: str) -> OperationModel:
    return MODEL.operation_model(name)


def wire(item: dict[str, Any]) -> dict[str, Any]:
    return {name: WIRE(value) for name, value in item.items()}


ITEM = wire(
    {
        "_id": "d1",
        "_rev": "00000003-ab",
        "text": 'héllo "B" \\ \u2028 ✓',
        "n": Decimal("123456789012345678901234567890.5"),
        "flag": False,
        "none": None,
        "blob": Binary(b"\x00\xffbinary"),
        "blobs": {Binary(b"a"), Binary(b"\x01")},
        "list": [Decimal(1), "two", [Decimal(3)], {"B": "not binary"}],
        "map": {"B": {"BS": "keys, not values"}, "deep": {"x": Decimal("-2")}},
        "strings": {"a", "b"},
        "numbers": {Decimal(1), Decimal("2.5")},
        "empty": {},
    }
)
TEXT_ITEM = {name: value for name, value in ITEM.items() if name not in {"blob", "blobs"}}

REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("GetItem", {"TableName": "t", "Key": {"_id": {"S": "d1"}}, "ConsistentRead": True}),
    (
        "PutItem",
        {
            "TableName": "t",
            "Item": ITEM,
            "ConditionExpression": "attribute_not_exists(#r) OR #r = :r",
            "ExpressionAttributeNames": {"#r": "_rev"},
            "ExpressionAttributeValues": {":r": {"S": "00000002-aa"}},
            "ReturnValues": "ALL_OLD",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            "ReturnConsumedCapacity": "TOTAL",
        },
    ),
    ("DeleteItem", {"TableName": "t", "Key": {"_id": {"S": "d1"}}, "ReturnValues": "ALL_OLD"}),
    (
        "UpdateItem",
        {
            "TableName": "t",
            "Key": {"_id": {"S": "d1"}},
            "UpdateExpression": "SET #a = :a",
            "ExpressionAttributeNames": {"#a": "a"},
            "ExpressionAttributeValues": {":a": {"B": b"\x00"}},
        },
    ),
    (
        "Query",
        {
            "TableName": "t",
            "IndexName": "by-group",
            "KeyConditionExpression": "#g = :g",
            "ExpressionAttributeNames": {"#g": "group"},
            "ExpressionAttributeValues": {":g": {"N": "7"}},
            "ExclusiveStartKey": {"_id": {"B": b"\x01\x02"}, "group": {"N": "7"}},
            "Limit": 10,
        },
    ),
    ("Scan", {"TableName": "t", "Segment": 1, "TotalSegments": 4, "Limit": 1000}),
    (
        "BatchGetItem",
        {
            "RequestItems": {
                "t": {
                    "Keys": [{"_id": {"S": f"d{i}"}} for i in range(100)],
                    "ProjectionExpression": "#i, #r",
                    "ExpressionAttributeNames": {"#i": "_id", "#r": "_rev"},
                    "ConsistentRead": True,
                }
            }
        },
    ),
    (
        "BatchWriteItem",
        {
            "RequestItems": {
                "t": [
                    {"PutRequest": {"Item": ITEM}},
                    {"DeleteRequest": {"Key": {"_id": {"S": "x"}}}},
                ]
            },
            "ReturnConsumedCapacity": "INDEXES",
            "ReturnItemCollectionMetrics": "SIZE",
        },
    ),
]


@pytest.mark.parametrize(("name", "params"), REQUESTS, ids=[name for name, _ in REQUESTS])
def test_a_request_is_the_one_botocore_makes_byte_for_byte(name: str, params: dict[str, Any]):
    botocore_serializer = create_serializer("json", include_validation=False)
    fast = FastJSONSerializer(botocore_serializer)
    assert request_copied_as_is(operation(name))
    expected = botocore_serializer.serialize_to_request(params, operation(name))
    assert fast.serialize_to_request(params, operation(name)) == expected


def test_an_operation_with_a_timestamp_goes_through_botocore():
    # RestoreTableToPointInTime takes a timestamp, which botocore turns into epoch seconds.
    restore = operation("RestoreTableToPointInTime")
    assert not request_copied_as_is(restore)
    params = {
        "SourceTableName": "a",
        "TargetTableName": "b",
        "RestoreDateTime": datetime(2026, 1, 2, tzinfo=UTC),
    }
    botocore_serializer = create_serializer("json", include_validation=False)
    got = FastJSONSerializer(botocore_serializer).serialize_to_request(params, restore)
    assert got == botocore_serializer.serialize_to_request(params, restore)
    assert json.loads(got["body"])["RestoreDateTime"] == 1767312000


def test_a_value_json_cannot_hold_goes_through_botocore_and_fails_as_it_did():
    botocore_serializer = create_serializer("json", include_validation=False)
    params = {"TableName": "t", "Key": {"_id": {"S": Decimal("1")}}}
    with pytest.raises(TypeError) as from_botocore:
        botocore_serializer.serialize_to_request(params, operation("GetItem"))
    with pytest.raises(TypeError) as from_fast:
        FastJSONSerializer(botocore_serializer).serialize_to_request(params, operation("GetItem"))
    assert str(from_fast.value) == str(from_botocore.value)


def base64_text(value: bytes) -> str:
    return base64.b64encode(value).decode()


def answer(body: object, status: int = 200) -> dict[str, Any]:
    # As DynamoDB sends it: binary values in base64.
    raw = body if isinstance(body, bytes) else json.dumps(body, default=base64_text).encode()
    return {
        "status_code": status,
        "headers": {"x-amzn-requestid": "REQ1", "Content-Type": "application/x-amz-json-1.0"},
        "body": raw,
        "context": {},
    }


CAPACITY = {"TableName": "t", "CapacityUnits": 1, "ReadCapacityUnits": 0.5}
ANSWERS: list[tuple[str, str, object, int]] = [
    ("item", "GetItem", {"Item": TEXT_ITEM, "ConsumedCapacity": CAPACITY}, 200),
    ("no item", "GetItem", {}, 200),
    ("empty body", "GetItem", b"", 200),
    ("binary item", "GetItem", {"Item": ITEM}, 200),
    ("a string B", "GetItem", {"Item": {"_id": {"S": "B"}}}, 200),
    ("old item", "PutItem", {"Attributes": TEXT_ITEM, "ConsumedCapacity": CAPACITY}, 200),
    (
        "page",
        "Query",
        {
            "Items": [TEXT_ITEM, TEXT_ITEM],
            "Count": 2,
            "ScannedCount": 5,
            "LastEvaluatedKey": {"_id": {"S": "d1"}},
            "ConsumedCapacity": CAPACITY,
        },
        200,
    ),
    ("unknown and null members", "Scan", {"Items": [], "Count": 0, "Next": 1, "Ca": None}, 200),
    (
        "batch get",
        "BatchGetItem",
        {
            "Responses": {"t": [{"_id": {"S": "d1"}, "_rev": {"S": "00000001-aa"}}]},
            "UnprocessedKeys": {"t": {"Keys": [{"_id": {"S": "d2"}}], "ConsistentRead": True}},
            "ConsumedCapacity": [CAPACITY],
        },
        200,
    ),
    (
        "batch write",
        "BatchWriteItem",
        {
            "UnprocessedItems": {"t": [{"PutRequest": {"Item": TEXT_ITEM}}]},
            "ItemCollectionMetrics": {
                "t": [{"ItemCollectionKey": {"g": {"N": "1"}}, "SizeEstimateRangeGB": [0, 1]}]
            },
            "ConsumedCapacity": [CAPACITY],
        },
        200,
    ),
    (
        "conditional check failed",
        "PutItem",
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
            "message": "The conditional request failed",
            "Item": TEXT_ITEM,
        },
        400,
    ),
    ("throttled", "BatchWriteItem", {"__type": "ThrottlingException", "message": "slow"}, 400),
    ("not json", "GetItem", b"<html>Service Unavailable</html>", 503),
    ("a list body", "GetItem", b"[1, 2]", 200),
    ("broken json", "GetItem", b'{"Item": ', 200),
    ("byte-order mark", "GetItem", b'\xef\xbb\xbf{"Item": {"_id": {"S": "d1"}}}', 200),
    ("not utf-8", "GetItem", b'{"Item": {"_id": {"S": "\xff"}}}', 200),
]


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [(name, body, status) for _, name, body, status in ANSWERS],
    ids=[case for case, *_ in ANSWERS],
)
def test_an_answer_is_what_botocore_parses(name: str, body: object, status: int):
    shape = operation(name).output_shape
    expected = parsed_or_error(create_parser("json"), answer(body, status), shape)
    got = parsed_or_error(FastJSONParser(create_parser("json")), answer(body, status), shape)
    assert got == expected
    assert typed(got) == typed(expected)  # the same types too (an int stays an int)
    if isinstance(got, dict):
        assert list(got) == list(expected)  # and botocore's order of members


def parsed_or_error(parser: Any, response: dict[str, Any], shape: Any) -> Any:
    try:
        return parser.parse(response, shape)
    except Exception as exc:  # the same failure, for a body botocore cannot parse
        return ("raised", type(exc).__name__, str(exc))


def typed(value: Any) -> Any:
    """``value`` with the type of every leaf beside it (dict order aside)."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def test_the_plan_parses_with_botocore_only_what_needs_converting():
    for name in ["GetItem", "Query", "BatchGetItem", "BatchWriteItem"]:
        plan = answer_plan(operation(name).output_shape)
        assert plan is not None and plan.walked == set(), name
    get = answer_plan(operation("GetItem").output_shape)
    assert get is not None and get.members == ("Item", "ConsumedCapacity")
    table = answer_plan(operation("DescribeTable").output_shape)
    assert table is not None and table.walked == {"Table"}  # its timestamps


def test_a_timestamp_in_an_answer_is_converted_by_botocore():
    shape = operation("DescribeTable").output_shape
    body = {"Table": {"TableName": "t", "CreationDateTime": 1767312000.5, "ItemCount": 3}}
    expected = create_parser("json").parse(answer(body), shape)
    got = FastJSONParser(create_parser("json")).parse(answer(body), shape)
    assert got == expected
    assert got["Table"]["CreationDateTime"] == datetime(2026, 1, 2, 0, 0, 0, 500000, tzinfo=UTC)


def plain_client(endpoint_url: str, validate: bool) -> Any:
    return boto3.Session().client(
        "dynamodb",
        endpoint_url=endpoint_url,
        config=Config(parameter_validation=validate),
    )


def test_install_takes_on_a_plain_client_and_leaves_a_validating_one_alone():
    fast = plain_client("http://127.0.0.1:9", validate=False)
    assert install(fast) and installed(fast)
    validating = plain_client("http://127.0.0.1:9", validate=True)
    serializer = validating._serializer
    assert not install(validating) and not installed(validating)
    assert validating._serializer is serializer


def test_the_service_data_plane_takes_the_short_paths(moto_server: EmbeddedDynamoDB):
    # If a botocore upgrade moves what install() replaces, this fails: speed lost, not data.
    with DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix="jp0-") as svc:
        assert installed(svc._plain_client)
        assert not installed(svc._client)


def test_documents_round_trip_through_the_emulator_as_through_botocore(
    moto_server: EmbeddedDynamoDB,
):
    doc = {
        "text": 'héllo "B"',
        "n": 1.5,
        "big": Decimal("123456789012345678901234567890"),
        "blob": b"\x00\xff",
        "nested": {"B": {"BS": ["x"]}, "l": [1, "two", None, True]},
        "tags": {"a", "b"},
    }
    with DynamoDBService(endpoint_url=moto_server.endpoint_url, table_prefix="jp1-") as svc:
        svc.save("docs", "with-binary", doc)
        svc.save("docs", "text-only", {k: v for k, v in doc.items() if k != "blob"})
        svc.save_many("docs", {f"m{i}": {**doc, "i": i} for i in range(30)})
        table = svc.table_name("docs")
        reference = plain_client(moto_server.endpoint_url, validate=True)
        for doc_id in ["with-binary", "text-only", "m0", "m29"]:
            key = {"_id": {"S": doc_id}}
            stored = reference.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
            fast = svc._plain_client.get_item(TableName=table, Key=key, ConsistentRead=True)
            assert fast["Item"] == stored
        assert svc.get("docs", "with-binary")["blob"] == Binary(b"\x00\xff")
        assert svc.get("docs", "text-only")["nested"] == doc["nested"]
        assert sorted(d["_id"] for d in svc.list_all("docs"))[:3] == ["m0", "m1", "m10"]
        rev = svc.get("docs", "text-only")["_rev"]
        with pytest.raises(ConflictError):
            svc.save("docs", "text-only", {"x": 1}, if_rev="00000001-stale")
        assert svc.get("docs", "text-only")["_rev"] == rev


def test_the_parser_factory_hands_out_botocores_parser_for_other_protocols():
    client = plain_client("http://127.0.0.1:9", validate=False)
    install(client)
    factory = client._endpoint._response_parser_factory
    assert isinstance(factory.create_parser("json"), FastJSONParser)
    assert factory.create_parser("json") is factory.create_parser("json")
    assert not isinstance(factory.create_parser("query"), FastJSONParser | JSONParser)
