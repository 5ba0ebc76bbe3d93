"""gateway.wire_items: bulk requests through a plain client, Python values in and out.

A stand-in client records what it was sent and answers with part of it unprocessed, as
DynamoDB does under load (the bulk paths against a real endpoint, partial batches injected at
the wire, are in test_bulk_writes and test_migrate_faults).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from boto3.dynamodb.types import Binary

from gateway.wire_items import (
    batch_get_in_wire_form,
    batch_write_in_wire_form,
    call_in_wire_form,
    python_item,
    wire_item,
)

ITEM: dict[str, Any] = {
    "_id": "d1",
    "_rev": "17-abc",
    "text": "héllo",
    "n": Decimal("1.5"),
    "flag": True,
    "none": None,
    "blob": Binary(b"\x00\x01"),
    "list": [Decimal(1), "two", [Decimal(3)]],
    "map": {"nested": {"deep": Decimal("-2")}},
    "strings": {"a", "b"},
    "numbers": {Decimal(1), Decimal(2)},
}


class ScansTwoPages:
    """Answers a Scan with ITEM and a LastEvaluatedKey, then (from that key) with nothing."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def scan(self, **params: Any) -> dict[str, Any]:
        self.sent.append(params)
        if "ExclusiveStartKey" in params:
            return {"Items": []}
        return {"Items": [wire_item(ITEM)], "LastEvaluatedKey": {"_id": {"S": "d1"}}}


class AnswersWithTheLastUnprocessed:
    """Records each call; answers with the last request (or key) of each table unprocessed."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(RequestItems)
        return {"UnprocessedItems": {t: r[-1:] for t, r in RequestItems.items()}}

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(RequestItems)
        return {
            "Responses": {t: [asked["Keys"][0]] for t, asked in RequestItems.items()},
            "UnprocessedKeys": {
                t: {**asked, "Keys": asked["Keys"][-1:]} for t, asked in RequestItems.items()
            },
        }


def test_an_item_goes_to_attribute_values_and_back_unchanged() -> None:
    wire = wire_item(ITEM)
    assert wire["n"] == {"N": "1.5"} and wire["flag"] == {"BOOL": True}
    assert wire["none"] == {"NULL": True} and wire["blob"] == {"B": b"\x00\x01"}
    assert wire["map"] == {"M": {"nested": {"M": {"deep": {"N": "-2"}}}}}
    assert sorted(wire["strings"]["SS"]) == ["a", "b"]
    assert python_item(wire) == ITEM


def test_a_batch_write_is_sent_in_wire_form_and_its_unprocessed_come_back_as_values() -> None:
    client = AnswersWithTheLastUnprocessed()
    requests = [{"PutRequest": {"Item": ITEM}}, {"DeleteRequest": {"Key": {"_id": "d2"}}}]
    response = batch_write_in_wire_form(client, RequestItems={"t": requests})
    assert client.sent == [
        {
            "t": [
                {"PutRequest": {"Item": wire_item(ITEM)}},
                {"DeleteRequest": {"Key": {"_id": {"S": "d2"}}}},
            ]
        }
    ]
    assert response["UnprocessedItems"] == {"t": [{"DeleteRequest": {"Key": {"_id": "d2"}}}]}


def test_a_batch_get_is_sent_in_wire_form_and_answers_with_values() -> None:
    client = AnswersWithTheLastUnprocessed()
    asked = {"Keys": [{"_id": "a"}, {"_id": "b"}], "ConsistentRead": True}
    response = batch_get_in_wire_form(client, RequestItems={"t": asked})
    assert client.sent == [
        {"t": {"Keys": [{"_id": {"S": "a"}}, {"_id": {"S": "b"}}], "ConsistentRead": True}}
    ]
    assert response["Responses"] == {"t": [{"_id": "a"}]}
    assert response["UnprocessedKeys"] == {"t": {"Keys": [{"_id": "b"}], "ConsistentRead": True}}
    assert asked["Keys"] == [{"_id": "a"}, {"_id": "b"}]  # the caller's request is untouched


def test_a_scan_answers_with_values_and_resumes_from_a_key_of_values() -> None:
    client = ScansTwoPages()
    first = call_in_wire_form(client, "scan", TableName="t", Limit=10)
    assert first["Items"] == [ITEM] and first["LastEvaluatedKey"] == {"_id": "d1"}
    second = call_in_wire_form(
        client, "scan", TableName="t", Limit=10, ExclusiveStartKey=first["LastEvaluatedKey"]
    )
    assert second["Items"] == [] and "LastEvaluatedKey" not in second
    assert client.sent[1]["ExclusiveStartKey"] == {"_id": {"S": "d1"}}


class Records:
    """Answers every call with ``answer`` and records its parameters."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(**params: Any) -> dict[str, Any]:
            self.sent.append((method, params))
            return dict(self.answer)

        return call


def test_a_conditional_put_is_built_as_the_resource_builds_it() -> None:
    client = Records({"Attributes": wire_item({"_id": "d1", "v": Decimal(1)})})
    answer = call_in_wire_form(
        client,
        "put_item",
        TableName="t",
        Item=ITEM,
        ConditionExpression=Attr("_rev").eq("17-abc") | Attr("_id").not_exists(),
        ReturnValues="ALL_OLD",
    )
    assert answer["Attributes"] == {"_id": "d1", "v": Decimal(1)}
    [(method, sent)] = client.sent
    assert method == "put_item" and sent["Item"] == wire_item(ITEM)
    assert sent["ConditionExpression"] == "(#n0 = :v0 OR attribute_not_exists(#n1))"
    assert sent["ExpressionAttributeNames"] == {"#n0": "_rev", "#n1": "_id"}
    assert sent["ExpressionAttributeValues"] == {":v0": {"S": "17-abc"}}


def test_a_query_keeps_its_own_names_beside_the_built_ones() -> None:
    client = Records({"Items": [wire_item(ITEM)], "Count": 1})
    answer = call_in_wire_form(
        client,
        "query",
        TableName="t",
        IndexName="by_n",
        KeyConditionExpression=Key("n").eq(Decimal("1.5")),
        ProjectionExpression="#id",
        ExpressionAttributeNames={"#id": "_id"},
    )
    assert answer["Items"] == [ITEM] and answer["Count"] == 1
    [(_, sent)] = client.sent
    assert sent["KeyConditionExpression"] == "#n0 = :v0"
    assert sent["ExpressionAttributeNames"] == {"#id": "_id", "#n0": "n"}
    assert sent["ExpressionAttributeValues"] == {":v0": {"N": "1.5"}}


def test_a_get_of_a_missing_item_answers_without_an_item() -> None:
    client = Records({})
    assert call_in_wire_form(client, "get_item", TableName="t", Key={"_id": "x"}) == {}
    assert client.sent == [("get_item", {"TableName": "t", "Key": {"_id": {"S": "x"}}})]
