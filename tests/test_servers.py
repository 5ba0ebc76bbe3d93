"""Tests of the test infrastructure: the emulator, the Redis fixture and the fault proxy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.emulator import EmbeddedDynamoDB, ensure_dummy_credentials
from gateway.errors import ConfigError
from tests.servers import WIRE_ERRORS, FaultConfig, FaultProxy, RedisServer

ROOT = Path(__file__).resolve().parents[1]
PROCESS_EXIT_TIMEOUT_S = 10.0

ClientFactory = Callable[..., Any]


# -- helpers -----------------------------------------------------------------------------------


def create_table(client: Any, name: str) -> None:
    """A table shaped like the gateway's: ``_id`` string HASH key, on-demand billing."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def key(doc_id: str) -> dict[str, Any]:
    return {"_id": {"S": doc_id}}


def stored_ids(client: Any, table: str) -> set[str]:
    """Every ``_id`` in the table, read straight from the emulator."""
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["_id"]["S"] for item in items}


def process_alive(pid: int) -> bool:
    """False once ``pid`` has exited (a zombie counts as exited: nobody may reap it here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until_gone(pid: int, timeout_s: float = PROCESS_EXIT_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return False


def run_and_kill_parent(script: str) -> int:
    """Run ``script`` in a child Python that prints a pid and waits; SIGKILL the child; return
    the printed pid (of a server the child started).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # bounded by the server's own startup timeout
        assert line.strip().isdigit(), f"child printed {line!r}"
        return int(line)
    finally:
        child.kill()
        child.wait(timeout=PROCESS_EXIT_TIMEOUT_S)


def no_retry_redis(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


# -- the DynamoDB emulator ---------------------------------------------------------------------


def test_moto_server_answers_dynamodb_over_http(
    moto_server: EmbeddedDynamoDB, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    assert moto_server.endpoint_url == f"http://127.0.0.1:{moto_server.port}"
    assert moto_server.running
    assert moto_server.startup_s is not None and moto_server.startup_s < 20
    client = dynamodb_client()
    table = f"{table_prefix}docs"
    create_table(client, table)
    client.put_item(TableName=table, Item={**key("a"), "n": {"N": "1.5"}})
    item = client.get_item(TableName=table, Key=key("a"), ConsistentRead=True)["Item"]
    assert item == {"_id": {"S": "a"}, "n": {"N": "1.5"}}


def test_emulator_lifecycle_and_reset(dynamodb_client: ClientFactory) -> None:
    with EmbeddedDynamoDB() as emulator:
        pid = emulator.pid
        assert pid is not None
        client = dynamodb_client(emulator.endpoint_url)
        create_table(client, "lifecycle")
        assert client.list_tables()["TableNames"] == ["lifecycle"]
        emulator.reset()
        assert client.list_tables()["TableNames"] == []
    assert not emulator.running
    assert wait_until_gone(pid)
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.endpoint_url
    emulator.stop()  # idempotent


def test_emulator_dies_with_its_parent() -> None:
    script = (
        "import sys\n"
        "from gateway.emulator import EmbeddedDynamoDB\n"
        "e = EmbeddedDynamoDB().start()\n"
        "print(e.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    pid = run_and_kill_parent(script)
    assert wait_until_gone(pid), f"moto server {pid} outlived its parent"


def test_missing_moto_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the module unimportable, as if not installed.
    monkeypatch.setitem(sys.modules, "moto", None)
    with pytest.raises(ConfigError, match=r"pip install 'dynamodb-gateway\[emulator\]'"):
        EmbeddedDynamoDB().start()


def test_ensure_dummy_credentials_only_fills_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    added = ensure_dummy_credentials()
    assert set(added) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREAL")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert ensure_dummy_credentials() == {}
    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIAREAL"
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ  # never a dummy secret for a real key
    assert "AWS_DEFAULT_REGION" not in os.environ


def test_aws_env_scrubs_the_environment() -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    for name in ("AWS_PROFILE", "GATEWAY_CONFIG", "REDIS_URL", "CACHE_BACKEND", "NATIVE_NUMBERS"):
        assert name not in os.environ
    assert not [name for name in os.environ if name.startswith("DYNAMODB_")]


def test_table_prefix_is_short_and_valid(table_prefix: str) -> None:
    assert table_prefix.startswith("t") and table_prefix.endswith("-")
    assert table_prefix[1:-1].isdigit()


# -- Redis -------------------------------------------------------------------------------------


def test_redis_answers_ping_and_is_flushed(redis_url: str) -> None:
    client = no_retry_redis(redis_url, 2.0)
    try:
        assert client.ping()
        assert client.dbsize() == 0
        client.set("k", "v")
    finally:
        client.close()


def test_redis_is_flushed_between_tests(redis_url: str) -> None:
    client = no_retry_redis(redis_url, 2.0)
    try:
        assert client.get("k") is None
    finally:
        client.close()


def test_redis_pause_times_out_then_resume_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    client = no_retry_redis(redis_url, 0.2)
    try:
        assert client.ping()
        redis_server.pause()
        assert redis_server.paused
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()  # an open connection: the server never answers
        fresh = no_retry_redis(redis_url, 0.2)
        with pytest.raises(redis.exceptions.TimeoutError):
            fresh.ping()  # a new connection: the kernel accepts it, nobody answers
        fresh.close()
        redis_server.resume()
        assert client.ping()
    finally:
        redis_server.resume()
        client.close()


def test_redis_with_password_and_stop_while_paused() -> None:
    with RedisServer(password="s3cr:et") as server:
        assert server.url == f"redis://:s3cr%3Aet@127.0.0.1:{server.port}/0"
        client = no_retry_redis(server.url, 2.0)
        assert client.ping()
        client.close()
        assert server.command("PING").startswith("+PONG")
        anonymous = no_retry_redis(f"redis://127.0.0.1:{server.port}/0", 2.0)
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        pid = server.pid
        assert pid is not None
        server.pause()
    # Leaving the block stopped a paused server.
    assert wait_until_gone(pid)


def test_redis_dies_with_its_parent() -> None:
    script = (
        "import sys\n"
        "from tests.servers import RedisServer\n"
        "r = RedisServer().start()\n"
        "print(r.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    pid = run_and_kill_parent(script)
    assert wait_until_gone(pid), f"redis-server {pid} outlived its parent"


# -- the fault proxy ---------------------------------------------------------------------------


def test_proxy_passes_traffic_through_and_counts(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client(fault_proxy.endpoint_url)
    table = f"{table_prefix}pass"
    create_table(client, table)
    client.put_item(TableName=table, Item=key("a"))
    client.put_item(TableName=table, Item=key("b"))
    assert client.get_item(TableName=table, Key=key("a"))["Item"] == key("a")
    expected = {"CreateTable": 1, "PutItem": 2, "GetItem": 1}
    assert fault_proxy.counts() == expected
    assert fault_proxy.forwarded_counts() == expected
    assert fault_proxy.injected() == {}
    fault_proxy.reset_counts()
    assert fault_proxy.counts() == {}


@pytest.mark.parametrize("code", sorted(WIRE_ERRORS))
def test_proxy_throttles_at_rate_one(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str, code: str
) -> None:
    client = dynamodb_client(fault_proxy.endpoint_url)
    table = f"{table_prefix}throttle"
    create_table(client, table)
    fault_proxy.configure(throttle_rate=1.0, throttle_code=code, operations={"GetItem"})

    client.put_item(TableName=table, Item=key("a"))  # PutItem is out of scope
    with pytest.raises(ClientError) as caught:
        client.get_item(TableName=table, Key=key("a"))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == WIRE_ERRORS[code].status
    assert fault_proxy.counts()["GetItem"] == 1
    assert "GetItem" not in fault_proxy.forwarded_counts()
    assert fault_proxy.injected() == {code: {"GetItem": 1}}


def test_proxy_throttles_about_half_at_rate_half(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client(fault_proxy.endpoint_url)
    table = f"{table_prefix}half"
    create_table(client, table)
    fault_proxy.configure(throttle_rate=0.5, operations=["GetItem"])
    throttled = 0
    for _ in range(40):
        try:
            client.get_item(TableName=table, Key=key("a"))
        except ClientError as error:
            assert error.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
            throttled += 1
    assert 5 < throttled < 35
    assert fault_proxy.injected()["ProvisionedThroughputExceededException"]["GetItem"] == throttled
    assert fault_proxy.forwarded_counts()["GetItem"] == 40 - throttled


def seed_items(client: Any, table: str, ids: list[str]) -> None:
    with_put = [{"PutRequest": {"Item": {**key(i), "a": {"S": i}, "b": {"N": "1"}}}} for i in ids]
    for start in range(0, len(with_put), 25):
        client.batch_write_item(RequestItems={table: with_put[start : start + 25]})


def batch_get(client: Any, table: str, ids: list[str]) -> dict[str, Any]:
    return client.batch_get_item(
        RequestItems={
            table: {
                "Keys": [key(i) for i in ids],
                "ProjectionExpression": "#i, a",
                "ExpressionAttributeNames": {"#i": "_id"},
                "ConsistentRead": True,
            }
        }
    )


def test_proxy_batch_get_all_unprocessed_at_rate_one(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    direct = dynamodb_client()
    table = f"{table_prefix}bget1"
    create_table(direct, table)
    ids = [f"d{i}" for i in range(10)]
    seed_items(direct, table, ids)
    fault_proxy.configure(partial_rate=1.0)

    response = batch_get(dynamodb_client(fault_proxy.endpoint_url), table, ids)
    assert response["Responses"] == {table: []}
    unprocessed = response["UnprocessedKeys"][table]
    assert unprocessed["Keys"] == [key(i) for i in ids]
    assert unprocessed["ProjectionExpression"] == "#i, a"
    assert unprocessed["ExpressionAttributeNames"] == {"#i": "_id"}
    assert unprocessed["ConsistentRead"] is True
    assert "BatchGetItem" not in fault_proxy.forwarded_counts()
    assert fault_proxy.withheld_counts() == {"BatchGetItem": 10}


def test_proxy_batch_get_partial_at_rate_half(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    direct = dynamodb_client()
    table = f"{table_prefix}bget5"
    create_table(direct, table)
    ids = [f"d{i}" for i in range(30)]
    seed_items(direct, table, ids)
    via_proxy = dynamodb_client(fault_proxy.endpoint_url)
    fault_proxy.configure(partial_rate=0.5)

    response = batch_get(via_proxy, table, ids)
    returned = response["Responses"][table]
    withheld = response["UnprocessedKeys"][table]
    returned_ids = {item["_id"]["S"] for item in returned}
    withheld_ids = {k["_id"]["S"] for k in withheld["Keys"]}
    assert returned_ids and withheld_ids
    assert returned_ids.isdisjoint(withheld_ids)
    assert returned_ids | withheld_ids == set(ids)
    assert all(set(item) == {"_id", "a"} for item in returned)  # the projection was forwarded
    assert withheld["ProjectionExpression"] == "#i, a"
    assert fault_proxy.withheld_counts() == {"BatchGetItem": len(withheld_ids)}
    assert fault_proxy.injected() == {"partial": {"BatchGetItem": 1}}

    # Retrying the unprocessed keys, as a client must, returns the rest.
    fault_proxy.configure(partial_rate=0.0)
    retry = via_proxy.batch_get_item(RequestItems=response["UnprocessedKeys"])
    assert {item["_id"]["S"] for item in retry["Responses"][table]} == withheld_ids
    assert retry["UnprocessedKeys"] == {}


def test_proxy_batch_write_all_unprocessed_at_rate_one(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    direct = dynamodb_client()
    table = f"{table_prefix}bwrite1"
    create_table(direct, table)
    fault_proxy.configure(partial_rate=1.0, operations={"BatchWriteItem"})
    puts = [{"PutRequest": {"Item": key(f"p{i}")}} for i in range(8)]

    response = dynamodb_client(fault_proxy.endpoint_url).batch_write_item(
        RequestItems={table: puts}
    )
    assert response["UnprocessedItems"] == {table: puts}
    assert stored_ids(direct, table) == set()
    assert "BatchWriteItem" not in fault_proxy.forwarded_counts()


def test_proxy_batch_write_partial_at_rate_half(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    direct = dynamodb_client()
    table = f"{table_prefix}bwrite5"
    create_table(direct, table)
    old = [f"old{i}" for i in range(8)]
    seed_items(direct, table, old)
    new = [f"new{i}" for i in range(12)]
    requests = [{"PutRequest": {"Item": key(i)}} for i in new]
    requests += [{"DeleteRequest": {"Key": key(i)}} for i in old]
    fault_proxy.configure(partial_rate=0.5, operations={"BatchWriteItem"})

    response = dynamodb_client(fault_proxy.endpoint_url).batch_write_item(
        RequestItems={table: requests}
    )
    unprocessed = response["UnprocessedItems"][table]
    assert unprocessed and len(unprocessed) < len(requests)
    unput = {r["PutRequest"]["Item"]["_id"]["S"] for r in unprocessed if "PutRequest" in r}
    undeleted = {r["DeleteRequest"]["Key"]["_id"]["S"] for r in unprocessed if "DeleteRequest" in r}
    # What came back unprocessed really was not done; everything else was.
    assert stored_ids(direct, table) == (set(new) - unput) | undeleted
    assert fault_proxy.withheld_counts() == {"BatchWriteItem": len(unprocessed)}


def test_proxy_adds_latency_and_records_it(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client(fault_proxy.endpoint_url)
    table = f"{table_prefix}slow"
    create_table(client, table)
    fault_proxy.configure(latency_ms=120, latency_jitter_ms=30, operations={"GetItem"})

    started = time.monotonic()
    client.get_item(TableName=table, Key=key("a"))
    elapsed_s = time.monotonic() - started
    client.put_item(TableName=table, Item=key("a"))  # out of scope: no delay

    [(operation, delay_ms)] = fault_proxy.delays()
    assert operation == "GetItem"
    assert 120 <= delay_ms <= 150
    assert fault_proxy.injected() == {"latency": {"GetItem": 1}}
    assert elapsed_s >= 0.1  # the only timing check: a generous lower bound


def test_proxy_stop_forwarding_modes(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client(fault_proxy.endpoint_url, connect_timeout=2, read_timeout=5)
    table = f"{table_prefix}down"
    create_table(client, table)
    port = fault_proxy.port

    fault_proxy.stop_forwarding("refuse")
    with pytest.raises(EndpointConnectionError):
        client.get_item(TableName=table, Key=key("a"))
    fault_proxy.resume_forwarding()
    assert fault_proxy.port == port
    assert "Item" not in client.get_item(TableName=table, Key=key("a"))

    fault_proxy.stop_forwarding("refuse")
    fault_proxy.stop_forwarding("reset")  # switching modes listens again
    with pytest.raises(ConnectionClosedError):
        client.get_item(TableName=table, Key=key("a"))
    fault_proxy.stop_forwarding("unavailable")
    with pytest.raises(ClientError) as caught:
        client.get_item(TableName=table, Key=key("a"))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    fault_proxy.resume_forwarding()
    assert "Item" not in client.get_item(TableName=table, Key=key("a"))
    assert fault_proxy.injected()["down"] == {"GetItem": 2}


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_proxy_loses_the_answer_of_an_applied_request(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str, mode: Any
) -> None:
    client = dynamodb_client(fault_proxy.endpoint_url)
    direct = dynamodb_client()
    table = f"{table_prefix}lose"
    create_table(client, table)
    fault_proxy.configure(lose_next=1, lose_mode=mode, operations={"PutItem"})

    client.get_item(TableName=table, Key=key("a"))  # out of scope: lose_next unchanged
    assert fault_proxy.config.lose_next == 1
    if mode == "error":
        with pytest.raises(ClientError) as caught:
            client.put_item(TableName=table, Item=key("a"))
        assert caught.value.response["Error"]["Code"] == "InternalServerError"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    else:
        with pytest.raises(ConnectionClosedError):
            client.put_item(TableName=table, Item=key("a"))
    assert stored_ids(direct, table) == {"a"}  # applied all the same
    assert fault_proxy.config.lose_next == 0
    client.put_item(TableName=table, Item=key("b"))  # only the next one was lost
    assert stored_ids(direct, table) == {"a", "b"}
    assert fault_proxy.forwarded_counts()["PutItem"] == 2
    assert fault_proxy.injected() == {"lost": {"PutItem": 1}}


def test_proxy_loses_answers_at_a_rate(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client(fault_proxy.endpoint_url)
    direct = dynamodb_client()
    table = f"{table_prefix}loserate"
    create_table(client, table)
    fault_proxy.configure(lose_rate=1.0, operations={"PutItem"})
    for doc_id in "abc":
        with pytest.raises(ClientError):
            client.put_item(TableName=table, Item=key(doc_id))
    assert stored_ids(direct, table) == {"a", "b", "c"}
    assert fault_proxy.injected() == {"lost": {"PutItem": 3}}
    fault_proxy.configure(lose_rate=0.5)
    lost = 0
    for i in range(40):
        try:
            client.put_item(TableName=table, Item=key(f"r{i}"))
        except ClientError:
            lost += 1
    assert 5 <= lost <= 35  # seeded: the same count every run
    assert fault_proxy.injected()["lost"]["PutItem"] == 3 + lost
    assert len(stored_ids(direct, table)) == 43


def test_proxy_hold_keeps_requests_until_released(
    fault_proxy: FaultProxy, dynamodb_client: ClientFactory, table_prefix: str
) -> None:
    client = dynamodb_client(fault_proxy.endpoint_url)
    other = dynamodb_client(fault_proxy.endpoint_url)
    direct = dynamodb_client()
    table = f"{table_prefix}hold"
    create_table(client, table)
    done = threading.Event()

    def put() -> None:
        client.put_item(TableName=table, Item=key("held"))
        done.set()

    with fault_proxy.hold({"PutItem"}) as gate:
        writer = threading.Thread(target=put)
        writer.start()
        assert gate.wait_arrived(1)
        other.get_item(TableName=table, Key=key("x"))  # other operations pass
        assert stored_ids(direct, table) == set()  # not forwarded yet
        assert not done.is_set()
        gate.release()
        writer.join()
    assert done.is_set()
    assert stored_ids(direct, table) == {"held"}
    assert gate.arrived == 1
    other.put_item(TableName=table, Item=key("after"))  # the gate is gone
    assert gate.arrived == 1


def test_proxy_close_releases_held_requests(
    moto_server: EmbeddedDynamoDB, dynamodb_client: ClientFactory
) -> None:
    proxy = FaultProxy(moto_server.endpoint_url)
    client = dynamodb_client(proxy.endpoint_url)
    failures: list[BaseException] = []

    def describe() -> None:
        try:
            client.describe_table(TableName="nothing-here")
        except Exception as exc:
            failures.append(exc)

    gate = proxy.hold({"DescribeTable"})
    caller = threading.Thread(target=describe)
    caller.start()
    assert gate.wait_arrived(1)
    proxy.close()
    caller.join()
    assert len(failures) == 1  # answered (an error), not left hanging


def test_fault_config_is_validated(fault_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="throttle_rate"):
        fault_proxy.configure(throttle_rate=1.5)
    with pytest.raises(ValueError, match="throttle_code"):
        FaultConfig(throttle_code="Nope")
    assert fault_proxy.config == FaultConfig()
    assert fault_proxy.configure(operations=["GetItem"]).operations == frozenset({"GetItem"})
    assert FaultConfig(operations={"PutItem"}).applies_to("PutItem")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lose_rate"):
        fault_proxy.configure(lose_rate=-0.1)
    with pytest.raises(ValueError, match="lose_next"):
        FaultConfig(lose_next=-1)
    with pytest.raises(ValueError, match="lose_mode"):
        FaultConfig(lose_mode="vanish")  # type: ignore[arg-type]
    fault_proxy.configure(partial_rate=0.25, lose_rate=0.5, lose_mode="drop", operations=None)
    fault_proxy.clear_faults()
    assert fault_proxy.config == FaultConfig()
