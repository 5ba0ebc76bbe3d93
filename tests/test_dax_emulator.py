"""The DAX emulator (gateway/dax_emulator) through the real, unmodified amazon-dax-client.

Protocol: every data-plane method is sent through ``AmazonDaxClient`` to the emulator, and the
same calls are sent with boto3 straight to the DynamoDB emulator, on twin tables: the answers
must be identical, values and types (DynamoDB JSON compared as data). Caching: the item cache
is written through, serves reads without DynamoDB, keeps negative entries and ignores writes
made around it until ``record-ttl``; the query cache keeps an answer after a write until
``query-ttl``; strongly consistent reads pass through. Errors reach the client with DynamoDB's
codes. Bad input (not DAX, malformed CBOR, an unknown method, an oversized string, no
authorization) gets DAX's error answer or a closed connection, and the server keeps serving.
Finally the gateway's dax backend (``CACHE_BACKEND=dax``) runs through it, including a node
that never answers and one that cuts the connection mid-answer.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from amazondax import AmazonDaxClient
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway import ServiceUnavailableError, Settings, get_database_service
from gateway.dax_emulator import DaxEmulator
from gateway.dax_emulator.cbor import (
    Decoder,
    Encoder,
    StreamSource,
    lex_decode,
    lex_encode,
)
from gateway.emulator import EmbeddedDynamoDB
from tests.servers import TEST_REGION

HASH_RANGE = {
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
        {"AttributeName": "kind", "AttributeType": "S"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by_kind",
            "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
    "BillingMode": "PAY_PER_REQUEST",
}
HASH_ONLY = {
    "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "B"}],
    "BillingMode": "PAY_PER_REQUEST",
}


@pytest.fixture
def ddb(dynamodb_client: Callable[..., Any]) -> Any:
    return dynamodb_client()


@pytest.fixture
def make_emulator(moto_server: EmbeddedDynamoDB) -> Iterator[Callable[..., DaxEmulator]]:
    started: list[DaxEmulator] = []

    def make(**options: Any) -> DaxEmulator:
        emulator = DaxEmulator(moto_server.endpoint_url, region=TEST_REGION, **options).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def make_dax() -> Iterator[Callable[[DaxEmulator], Any]]:
    clients: list[Any] = []

    def make(emulator: DaxEmulator, **config: Any) -> Any:
        client = AmazonDaxClient(
            endpoint_url=emulator.endpoint_url,
            region_name=TEST_REGION,
            config=Config(retries={"max_attempts": 0}, **config),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _create(ddb: Any, name: str, spec: dict[str, Any]) -> str:
    ddb.create_table(TableName=name, **spec)
    return name


def _strip(response: dict[str, Any], twin: str, table: str) -> dict[str, Any]:
    """``response`` without transport metadata, with the twin table's name replaced."""
    response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    return _rename(response, twin, table)


def _rename(value: Any, twin: str, table: str) -> Any:
    if isinstance(value, dict):
        return {(table if k == twin else k): _rename(v, twin, table) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, twin, table) for v in value]
    return table if value == twin else value


def _sorted_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=repr)


# --------------------------------------------------------------------------------------------
# The codec against the client's own
# --------------------------------------------------------------------------------------------


def test_range_key_numbers_encode_as_the_client_does_and_keep_their_order() -> None:
    from amazondax import LexDecimal

    values = ["0", "5", "-5", "100", "1E+2", "1.50", "-0.001", "1e70", "-1e-70", "-99.99"]
    values += ["12345678901234567890123456789012345678", "7", "999", "1000"]
    for text in values:
        number = Decimal(text)
        assert lex_encode(number) == LexDecimal.encode(LexDecimal.create_decimal(number))
        assert str(lex_decode(lex_encode(number))) == str(LexDecimal.decode_all(lex_encode(number)))
    ordered = sorted({Decimal(v) for v in values})
    encoded = [lex_encode(v) for v in ordered]
    assert encoded == sorted(encoded)


# --------------------------------------------------------------------------------------------
# Every method: through DAX and straight to DynamoDB, the same answers
# --------------------------------------------------------------------------------------------


def test_every_method_through_dax_answers_as_dynamodb_does(
    ddb: Any, table_prefix: str, make_emulator: Callable[..., DaxEmulator], make_dax: Any
) -> None:
    dax = make_dax(make_emulator())
    via_dax = _create(ddb, f"{table_prefix}dax", HASH_RANGE)
    direct = _create(ddb, f"{table_prefix}direct", HASH_RANGE)
    blobs_dax = _create(ddb, f"{table_prefix}bdax", HASH_ONLY)
    blobs_direct = _create(ddb, f"{table_prefix}bdirect", HASH_ONLY)
    twins = {via_dax: direct, blobs_dax: blobs_direct}

    def both(method: str, normalize: Callable[[Any], Any] = lambda r: r, **params: Any) -> Any:
        """Call ``method`` through DAX on our tables and directly on the twins; compare."""
        answers = []
        for client, tables in ((dax, {t: t for t in twins}), (ddb, twins)):
            call = _rename(params, "", "")
            for ours, theirs in tables.items():
                call = _rename(call, ours, theirs)
            try:
                response = getattr(client, method)(**call)
                outcome: Any = ("ok", response)
            except ClientError as exc:
                outcome = ("error", exc.response["Error"]["Code"])
            answers.append(outcome)
        (dax_kind, dax_answer), (ddb_kind, ddb_answer) = answers
        assert dax_kind == ddb_kind, (method, answers)
        if dax_kind == "ok":
            for ours, theirs in twins.items():
                ddb_answer = _strip(ddb_answer, theirs, ours)
            dax_answer = _strip(dax_answer, "", "")
            if "ReturnConsumedCapacity" not in params:  # moto sends it unasked; DynamoDB not
                ddb_answer.pop("ConsumedCapacity", None)
            if not ddb_answer.get("ItemCollectionMetrics", True):  # moto: an empty one
                del ddb_answer["ItemCollectionMetrics"]
            assert normalize(dax_answer) == normalize(ddb_answer), method
            return dax_answer
        return dax_kind, dax_answer

    rich = {
        "pk": {"S": "a"},
        "sk": {"N": "1.5"},
        "kind": {"S": "x"},
        "n": {"N": "-12345678901234567890.5"},
        "big": {"N": "123456789012345678901234567890"},
        "s": {"S": "héllo"},
        "b": {"B": b"\x00\xff"},
        "ss": {"SS": ["b", "a"]},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": [b"\x01", b"\x02"]},
        "m": {"M": {"q": {"L": [{"NULL": True}, {"BOOL": False}, {"N": "3"}]}, "e": {"M": {}}}},
        "l": {"L": []},
        "t": {"BOOL": True},
    }
    t = via_dax
    both("put_item", TableName=t, Item=rich)
    both("put_item", TableName=t, Item={**rich, "s": {"S": "again"}}, ReturnValues="ALL_OLD")
    for sk in range(2, 7):
        item = {"pk": {"S": "a"}, "sk": {"N": str(sk)}, "kind": {"S": "x" if sk % 2 else "y"}}
        both("put_item", TableName=t, Item={**item, "v": {"N": str(sk * 10)}})
    both("put_item", TableName=t, Item={"pk": {"S": "b"}, "sk": {"N": "0"}})  # only the key
    key = {"pk": {"S": "a"}, "sk": {"N": "1.5"}}
    both("get_item", TableName=t, Key=key)
    both("get_item", TableName=t, Key={"pk": {"S": "b"}, "sk": {"N": "0"}})
    both("get_item", TableName=t, Key={"pk": {"S": "nope"}, "sk": {"N": "0"}})
    both(
        "get_item",
        TableName=t,
        Key=key,
        ProjectionExpression="s, m.e, #t",
        ExpressionAttributeNames={"#t": "t"},
    )
    both("get_item", TableName=t, Key=key, ConsistentRead=True)
    # Conditions, updates and every ReturnValues.
    both("put_item", TableName=t, Item=rich, ConditionExpression="attribute_not_exists(pk)")
    both(
        "update_item",
        TableName=t,
        Key=key,
        UpdateExpression="SET v = if_not_exists(v, :z) + :one, l = list_append(l, :l) ADD ns :ns",
        ConditionExpression="begins_with(s, :p) AND size(ss) = :two",
        ExpressionAttributeValues={
            ":z": {"N": "0"},
            ":one": {"N": "1"},
            ":l": {"L": [{"S": "x"}]},
            ":ns": {"NS": ["7"]},
            ":p": {"S": "ag"},
            ":two": {"N": "2"},
        },
        ReturnValues="ALL_NEW",
    )
    for return_values in ("UPDATED_NEW", "UPDATED_OLD", "ALL_OLD", "NONE"):
        both(
            "update_item",
            TableName=t,
            Key=key,
            UpdateExpression="SET v = v + :one REMOVE t DELETE ss :a",
            ExpressionAttributeValues={":one": {"N": "1"}, ":a": {"SS": ["a"]}},
            ReturnValues=return_values,
        )
    both("get_item", TableName=t, Key=key)  # the cache follows the updates
    both(
        "update_item",
        TableName=t,
        Key=key,
        UpdateExpression="SET v = :v",
        ConditionExpression="v < :v OR NOT (kind IN (:a, :b))",
        ExpressionAttributeValues={":v": {"N": "0"}, ":a": {"S": "x"}, ":b": {"S": "y"}},
    )
    # Queries and scans: key conditions, filters, projections, an index, pages.
    both(
        "query",
        TableName=t,
        KeyConditionExpression="pk = :p AND sk BETWEEN :lo AND :hi",
        FilterExpression="attribute_exists(v) AND v > :ten",
        ExpressionAttributeValues={
            ":p": {"S": "a"},
            ":lo": {"N": "2"},
            ":hi": {"N": "5"},
            ":ten": {"N": "10"},
        },
        ScanIndexForward=False,
    )
    page = both(
        "query",
        TableName=t,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "a"}},
        Limit=2,
        ProjectionExpression="sk, v",
    )
    both(
        "query",
        TableName=t,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "a"}},
        Limit=2,
        ExclusiveStartKey=page["LastEvaluatedKey"],
    )
    index_page = both(
        "query",
        TableName=t,
        IndexName="by_kind",
        KeyConditionExpression="kind = :k",
        ExpressionAttributeValues={":k": {"S": "x"}},
        Limit=1,
    )
    both(
        "query",
        TableName=t,
        IndexName="by_kind",
        KeyConditionExpression="kind = :k",
        ExpressionAttributeValues={":k": {"S": "x"}},
        ExclusiveStartKey=index_page["LastEvaluatedKey"],
    )
    both(
        "query",
        TableName=t,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "zz"}},
    )
    both(
        "query",
        TableName=t,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "a"}},
        Select="COUNT",
    )
    both(
        "scan",
        TableName=t,
        FilterExpression="contains(ss, :b)",
        ExpressionAttributeValues={":b": {"S": "b"}},
    )
    both("scan", TableName=t, ConsistentRead=True, Limit=3)
    # Batches, on a table with a binary hash key too.
    writes = [
        {"PutRequest": {"Item": {"id": {"B": bytes([i])}, "n": {"N": str(i)}}}} for i in range(5)
    ]
    both(
        "batch_write_item",
        RequestItems={
            blobs_dax: writes,
            t: [{"DeleteRequest": {"Key": {"pk": {"S": "b"}, "sk": {"N": "0"}}}}],
        },
    )

    def sorted_responses(answer: dict[str, Any]) -> dict[str, Any]:
        return {
            **answer,
            "Responses": {k: _sorted_items(v) for k, v in answer["Responses"].items()},
        }

    both(
        "batch_get_item",
        sorted_responses,
        RequestItems={
            blobs_dax: {"Keys": [{"id": {"B": bytes([i])}} for i in range(7)]},
            t: {
                "Keys": [key, {"pk": {"S": "b"}, "sk": {"N": "0"}}],
                "ProjectionExpression": "pk, v",
            },
        },
    )
    both(
        "batch_get_item",
        sorted_responses,
        RequestItems={t: {"Keys": [key], "ConsistentRead": True}},
    )
    # Transactions.
    both(
        "transact_write_items",
        TransactItems=[
            {
                "Put": {
                    "TableName": t,
                    "Item": {"pk": {"S": "c"}, "sk": {"N": "1"}, "v": {"N": "1"}},
                }
            },
            {
                "Update": {
                    "TableName": t,
                    "Key": key,
                    "UpdateExpression": "SET w = :w",
                    "ExpressionAttributeValues": {":w": {"S": "w"}},
                }
            },
            {"Delete": {"TableName": t, "Key": {"pk": {"S": "a"}, "sk": {"N": "2"}}}},
            {
                "ConditionCheck": {
                    "TableName": blobs_dax,
                    "Key": {"id": {"B": b"\x01"}},
                    "ConditionExpression": "n = :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
        ],
    )
    assert both(
        "transact_write_items",
        TransactItems=[
            {
                "Put": {
                    "TableName": t,
                    "Item": {"pk": {"S": "c"}, "sk": {"N": "1"}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ],
    ) == ("error", "TransactionCanceledException")
    both(
        "transact_get_items",
        TransactItems=[
            {"Get": {"TableName": t, "Key": key}},
            {
                "Get": {
                    "TableName": t,
                    "Key": {"pk": {"S": "c"}, "sk": {"N": "1"}},
                    "ProjectionExpression": "pk, sk, v",
                }
            },
            {"Get": {"TableName": t, "Key": {"pk": {"S": "a"}, "sk": {"N": "2"}}}},
            {"Get": {"TableName": blobs_dax, "Key": {"id": {"B": b"\x03"}}}},
        ],
    )
    for read in (key, {"pk": {"S": "c"}, "sk": {"N": "1"}}, {"pk": {"S": "a"}, "sk": {"N": "2"}}):
        both("get_item", TableName=t, Key=read)  # the cache follows the transaction
    both(
        "delete_item",
        TableName=t,
        Key=key,
        ConditionExpression="v = :no",
        ExpressionAttributeValues={":no": {"N": "-1"}},
    )
    both("delete_item", TableName=t, Key=key, ReturnValues="ALL_OLD")
    both("get_item", TableName=t, Key=key)
    both("get_item", TableName=f"{table_prefix}missing", Key=key)


# --------------------------------------------------------------------------------------------
# DAX's caches
# --------------------------------------------------------------------------------------------


def test_the_item_cache_is_written_through_keeps_negative_entries_and_expires(
    ddb: Any, table_prefix: str, make_emulator: Callable[..., DaxEmulator], make_dax: Any
) -> None:
    emulator = make_emulator(record_ttl_s=0.6)
    dax = make_dax(emulator)
    t = _create(ddb, f"{table_prefix}items", HASH_RANGE)
    key = {"pk": {"S": "k"}, "sk": {"N": "1"}}
    dax.put_item(TableName=t, Item={**key, "v": {"S": "one"}})
    assert dax.get_item(TableName=t, Key=key)["Item"]["v"] == {"S": "one"}
    assert emulator.stats()["upstream_calls"].get("GetItem", 0) == 0  # written through
    # A write around DAX is not seen until the entry expires; a consistent read sees it.
    ddb.put_item(TableName=t, Item={**key, "v": {"S": "two"}})
    assert dax.get_item(TableName=t, Key=key)["Item"]["v"] == {"S": "one"}
    assert dax.get_item(TableName=t, Key=key, ConsistentRead=True)["Item"]["v"] == {"S": "two"}
    assert dax.get_item(TableName=t, Key=key)["Item"]["v"] == {"S": "one"}  # not filled by it
    # Negative entries: a miss is cached too.
    missing = {"pk": {"S": "later"}, "sk": {"N": "1"}}
    assert "Item" not in dax.get_item(TableName=t, Key=missing)
    ddb.put_item(TableName=t, Item={**missing, "v": {"S": "created"}})
    assert "Item" not in dax.get_item(TableName=t, Key=missing)
    assert dax.batch_get_item(RequestItems={t: {"Keys": [missing]}})["Responses"][t] == []
    time.sleep(0.7)
    assert dax.get_item(TableName=t, Key=key)["Item"]["v"] == {"S": "two"}
    assert dax.get_item(TableName=t, Key=missing)["Item"]["v"] == {"S": "created"}
    # A failed condition leaves the cache alone; a delete through DAX leaves a negative entry.
    with pytest.raises(ClientError) as caught:
        dax.put_item(
            TableName=t,
            Item={**key, "v": {"S": "x"}},
            ConditionExpression="v = :no",
            ExpressionAttributeValues={":no": {"S": "no"}},
        )
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert dax.get_item(TableName=t, Key=key)["Item"]["v"] == {"S": "two"}
    dax.delete_item(TableName=t, Key=key)
    calls = emulator.stats()["upstream_calls"].get("GetItem", 0)
    assert "Item" not in dax.get_item(TableName=t, Key=key)
    assert emulator.stats()["upstream_calls"].get("GetItem", 0) == calls


def test_a_query_answer_stays_cached_after_a_write_until_its_ttl(
    ddb: Any, table_prefix: str, make_emulator: Callable[..., DaxEmulator], make_dax: Any
) -> None:
    emulator = make_emulator(query_ttl_s=1.0)
    dax = make_dax(emulator)
    t = _create(ddb, f"{table_prefix}queries", HASH_RANGE)
    query = {
        "TableName": t,
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "q"}},
    }
    assert dax.query(**query)["Count"] == 0  # an empty answer is cached as well
    dax.put_item(TableName=t, Item={"pk": {"S": "q"}, "sk": {"N": "1"}})
    started = time.monotonic()
    assert dax.query(**query)["Count"] == 0  # documented: writes do not invalidate queries
    assert dax.scan(TableName=t)["Count"] == 1  # another request: its own entry
    assert dax.query(**query, ConsistentRead=True)["Count"] == 1  # passes through
    dax.put_item(TableName=t, Item={"pk": {"S": "q"}, "sk": {"N": "2"}})
    assert dax.scan(TableName=t)["Count"] == 1
    assert emulator.stats()["upstream_calls"]["Query"] == 2  # the first and the consistent one
    time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
    assert dax.query(**query)["Count"] == 2
    assert dax.scan(TableName=t)["Count"] == 2


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _raw_connection(emulator: DaxEmulator, *, authorize: bool = True) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", emulator.port), timeout=5)
    preamble = (
        Encoder()
        .raw(b"gJ7yne5G")
        .integer(0)
        .null()
        .map(1)
        .text("UserAgent")
        .text("test")
        .integer(0)
    )
    if authorize:
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{amz_date[:8]}/{TEST_REGION}/dax/aws4_request\n00"
        preamble.integer(1).integer(1489122155).text("testing").text("00").blob(
            to_sign.encode()
        ).null().null()
    sock.sendall(preamble.getvalue())
    return sock


def _read_error(sock: socket.socket) -> tuple[list[int], str, list[Any]]:
    reader = sock.makefile("rb")
    decoder = Decoder(StreamSource(reader.read))
    codes = decoder.read_item()
    return codes, decoder.read_item(), decoder.read_item()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_bad_input_gets_dax_errors_or_a_closed_connection_and_the_server_lives_on(
    ddb: Any, table_prefix: str, make_emulator: Callable[..., DaxEmulator], make_dax: Any
) -> None:
    emulator = make_emulator(limits=None)
    t = _create(ddb, f"{table_prefix}bad", HASH_RANGE)
    # Not a DAX client at all.
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert _closed(sock)
    # An unknown method: an error answer, then the connection is closed (the rest of the
    # stream cannot be read without knowing the method's arguments).
    with _raw_connection(emulator) as sock:
        sock.sendall(Encoder().integer(1).integer(12345).integer(7).getvalue())
        codes, message, details = _read_error(sock)
        assert codes[:4] == [4, 37, 38, 39] and "unknown method" in message
        assert details[1] == "ValidationException"
    # Malformed CBOR (a reserved additional-information value).
    with _raw_connection(emulator) as sock:
        sock.sendall(Encoder().integer(1).integer(263244906).getvalue() + b"\x1c")
        codes, message, _ = _read_error(sock)
        assert "malformed" in message
        assert _closed(sock)
    # An oversized string is refused from its header, before its bytes arrive.
    with _raw_connection(emulator) as sock:
        sock.sendall(
            Encoder().integer(1).integer(263244906).getvalue()
            + b"\x5b"
            + (1 << 40).to_bytes(8, "big")
        )
        codes, message, _ = _read_error(sock)
        assert "too large" in message
    # A request that decodes but makes no sense: ValidationException, connection kept.
    with _raw_connection(emulator) as sock:
        sock.sendall(
            Encoder().integer(1).integer(263244906).blob(t.encode()).blob(b"\xff").null().getvalue()
        )
        codes, message, details = _read_error(sock)
        assert details[1] == "ValidationException"
        sock.sendall(Encoder().integer(1).integer(455855874).getvalue())
        assert sock.recv(1) == b"\x80"  # still in step: the endpoints answer
    # No authorization: amazondax sees an authentication error.
    with _raw_connection(emulator, authorize=False) as sock:
        sock.sendall(Encoder().integer(1).integer(455855874).getvalue())
        codes, _, _ = _read_error(sock)
        assert codes[1:3] == [23, 31]
    # Half a request, then the client goes away.
    with _raw_connection(emulator) as sock:
        sock.sendall(Encoder().integer(1).integer(263244906).getvalue() + b"\x58")
    # The server still serves a real client.
    dax = make_dax(emulator)
    dax.put_item(TableName=t, Item={"pk": {"S": "ok"}, "sk": {"N": "1"}})
    assert dax.get_item(TableName=t, Key={"pk": {"S": "ok"}, "sk": {"N": "1"}})["Item"]


# --------------------------------------------------------------------------------------------
# The gateway's dax backend, through the emulator
# --------------------------------------------------------------------------------------------


def _gateway_settings(
    moto_server: EmbeddedDynamoDB, emulator: DaxEmulator, prefix: str, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "CACHE_BACKEND": "dax",
        "DAX_ENDPOINT_URL": emulator.endpoint_url,
        "DYNAMODB_ENDPOINT_URL": moto_server.endpoint_url,
        "DYNAMODB_TABLE_PREFIX": prefix,
        "COLLECTIONS": {"docs": {"indexes": {"by_kind": {"attribute": "kind"}}}},
        "RETRY": {"max_attempts": 2, "base_seconds": 0.001, "cap_seconds": 0.01},
    }
    values.update(extra)
    return Settings(**values)


def test_the_gateway_with_cache_backend_dax_saves_gets_and_queries_through_the_emulator(
    moto_server: EmbeddedDynamoDB, table_prefix: str, make_emulator: Callable[..., DaxEmulator]
) -> None:
    emulator = make_emulator(query_ttl_s=0.2)
    with get_database_service(_gateway_settings(moto_server, emulator, table_prefix)) as db:
        first = db.save("docs", "d1", {"kind": "a", "n": 1.5, "tags": ["x", "y"]})
        db.save("docs", "d2", {"kind": "a", "n": 2})
        db.save("docs", "d3", {"kind": "b"})
        got = db.get("docs", "d1")
        assert got is not None and got["n"] == 1.5 and got["tags"] == ["x", "y"]
        assert got["_rev"] == first["rev"]
        assert db.get("docs", "nope") is None
        assert sorted(d["_id"] for d in db.get_many("docs", ["d1", "d2", "zz"]).values() if d) == [
            "d1",
            "d2",
        ]
        time.sleep(0.25)  # DAX's query cache may hold an answer from before the saves
        assert sorted(d["_id"] for d in db.query("docs", "by_kind", "a")) == ["d1", "d2"]
        assert sorted(d["_id"] for d in db.list_all("docs")) == ["d1", "d2", "d3"]
        db.delete("docs", "d2")
        assert db.get("docs", "d2") is None
    requests = emulator.stats()["requests"]
    # Reads are coalesced into BatchGetItem (coalescing.reads, on by default).
    for method in ("PutItem", "BatchGetItem", "Query", "Scan", "DeleteItem"):
        assert requests.get(method, 0) > 0, (method, requests)


@pytest.mark.parametrize("fault", ["hang", "drop", "cut"])
def test_a_node_that_never_answers_or_cuts_the_connection_is_service_unavailable(
    moto_server: EmbeddedDynamoDB,
    table_prefix: str,
    make_emulator: Callable[..., DaxEmulator],
    fault: str,
) -> None:
    emulator = make_emulator()
    settings = _gateway_settings(moto_server, emulator, table_prefix, DYNAMODB_READ_TIMEOUT_S=1.0)
    with get_database_service(settings) as db:
        db.save("docs", "d1", {"kind": "a"})
        emulator.faults.set(fault, times=10)
        with pytest.raises(ServiceUnavailableError, match="DAX"):
            db.get("docs", "d1")
        emulator.faults.set(None)
        assert db.get("docs", "d1") is not None  # the client reconnects when the node is back


def test_an_unreachable_emulator_fails_fast(
    moto_server: EmbeddedDynamoDB, table_prefix: str, make_emulator: Callable[..., DaxEmulator]
) -> None:
    emulator = make_emulator()
    settings = _gateway_settings(moto_server, emulator, table_prefix)
    emulator.stop()
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="DAX cluster"):
        get_database_service(settings)
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_the_dax_emulator_command_prints_the_exports_and_stops_on_sigint(
    moto_server: EmbeddedDynamoDB, ddb: Any, table_prefix: str
) -> None:
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import argparse, sys\n"
        "from gateway.commands_dax_emulator import add_parsers\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--region')\n"
        "add_parsers(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.handler(args))\n"
    )
    command = [sys.executable, "-c", script, "dax-emulator", "--port", "0", "--query-ttl-ms", "0"]
    process = subprocess.Popen(
        [*command, "--upstream", moto_server.endpoint_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert process.stdout is not None
        exports = dict(
            process.stdout.readline().strip().removeprefix("export ").split("=", 1)
            for _ in range(3)
        )
        assert exports["CACHE_BACKEND"] == "dax"
        assert exports["DYNAMODB_ENDPOINT_URL"] == moto_server.endpoint_url
        t = _create(ddb, f"{table_prefix}cli", HASH_RANGE)
        with AmazonDaxClient(
            endpoint_url=exports["DAX_ENDPOINT_URL"], region_name=TEST_REGION
        ) as dax:
            dax.put_item(TableName=t, Item={"pk": {"S": "c"}, "sk": {"N": "1"}})
            query = {
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": {"S": "c"}},
            }
            assert dax.query(TableName=t, **query)["Count"] == 1
            dax.put_item(TableName=t, Item={"pk": {"S": "c"}, "sk": {"N": "2"}})
            assert dax.query(TableName=t, **query)["Count"] == 2  # --query-ttl-ms 0: no cache
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_dax_emulator_command_refuses_an_upstream_without_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """Every call would fail (a DAX 500 the client retries, blaming DynamoDB) and the node
    would log nothing (found by review): it says so and exits 2 before serving."""
    from gateway.cli import main

    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code = main(["dax-emulator", "--port", "0", "--upstream", "http://127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "credentials" in err and "dummy values" in err and err.count("\n") == 1
