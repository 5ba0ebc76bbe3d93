"""`TcpRelay`: faults at the wire in front of a real redis-server.

The point of the relay is the difference between a paused server (SIGSTOP: commands sent
meanwhile are executed on resume) and a partition (they are lost), and the one-way cut where a
command is executed but its answer is lost. Clients are redis-py with a 0.2 s socket timeout
and no retries, so each fault shows as exactly one error.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.processes import free_port
from tests.servers import RedisServer
from tests.servers.tcp_relay import RelayCounts, TcpRelay

TIMEOUT_S = 0.2
DEADLINE_S = 5.0
POLL_S = 0.01


@pytest.fixture
def clients() -> Iterator[Callable[..., redis.Redis]]:
    """A factory of redis-py clients (0.2 s timeouts, no retries), closed after the test."""
    made: list[redis.Redis] = []

    def make(url: str, **kwargs: Any) -> redis.Redis:
        options: dict[str, Any] = {
            "socket_timeout": TIMEOUT_S,
            "socket_connect_timeout": TIMEOUT_S,
            "retry": Retry(NoBackoff(), 0),
        }
        client = redis.Redis.from_url(url, **{**options, **kwargs})
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def direct(redis_url: str) -> Iterator[redis.Redis]:
    """A client straight to the session Redis, to see what really got executed."""
    client = redis.Redis.from_url(redis_url, socket_timeout=DEADLINE_S)
    yield client
    client.close()


def eventually(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    """Poll ``condition`` until it holds; False once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def relay_threads(relay: TcpRelay) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"tcp-relay-{relay.port}"]


# -- flowing ---------------------------------------------------------------------------------


def test_passes_traffic_through_and_counts_it(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis], direct: redis.Redis
) -> None:
    assert redis_relay.url == f"redis://127.0.0.1:{redis_relay.port}/0"
    assert redis_relay.mode == "flowing"
    client = clients(redis_relay.url)
    assert client.ping()
    assert client.set("pass:small", "v")
    assert direct.get("pass:small") == b"v"

    # Bigger than the relay's buffers and the sockets': back-pressure, partial writes.
    big = os.urandom(3 * 1024 * 1024)
    assert client.set("pass:big", big)
    assert client.get("pass:big") == big
    pipe = client.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"pass:{i}", i)
    assert all(pipe.execute())
    assert direct.get("pass:499") == b"499"

    counts = redis_relay.counts
    assert counts.accepted == 1
    assert counts.open == 1
    assert counts.bytes_to_upstream > len(big)
    assert counts.bytes_to_client > len(big)
    assert counts.dropped_to_upstream == counts.dropped_to_client == 0
    assert counts.resets == counts.upstream_failures == 0


def test_concurrent_clients(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis], direct: redis.Redis
) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            client = clients(redis_relay.url, socket_timeout=DEADLINE_S)
            for i in range(50):
                client.incr("concurrent:counter")
                assert client.set(f"concurrent:{n}:{i}", i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S * 4)
    assert not errors
    assert direct.get("concurrent:counter") == b"400"
    assert redis_relay.counts.accepted == 8


def test_client_close_closes_the_relayed_connection(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis]
) -> None:
    client = clients(redis_relay.url)
    assert client.ping()
    assert redis_relay.counts.open == 1
    client.close()
    assert redis_relay.wait_until(lambda c: c.open == 0)
    assert redis_relay.counts.resets == 0


# -- blackhole vs SIGSTOP ----------------------------------------------------------------------


def test_blackhole_loses_commands(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis], direct: redis.Redis
) -> None:
    client = clients(redis_relay.url)
    assert client.ping()
    redis_relay.blackhole()
    assert redis_relay.mode == "blackhole"
    before = redis_relay.counts

    with pytest.raises(redis.TimeoutError):
        client.set("blackhole:key", "v")
    # The relay did read the SET, and threw it away.
    assert redis_relay.wait_until(lambda c: c.dropped_to_upstream > before.dropped_to_upstream)
    # New connections are accepted, and black-holed too.
    with pytest.raises(redis.TimeoutError):
        clients(redis_relay.url).set("blackhole:late", "v")
    assert redis_relay.counts.accepted == before.accepted + 1
    assert redis_relay.counts.bytes_to_upstream == before.bytes_to_upstream

    redis_relay.heal()
    assert redis_relay.mode == "flowing"
    assert clients(redis_relay.url).ping()
    assert direct.exists("blackhole:key", "blackhole:late") == 0


def test_blackhole_at_the_tcp_level(redis_relay: TcpRelay) -> None:
    redis_relay.blackhole()
    # The connection is accepted (no refusal, no reset); what is sent vanishes.
    with socket.create_connection(("127.0.0.1", redis_relay.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"PING\r\n")
        assert redis_relay.wait_until(lambda c: c.dropped_to_upstream == len(b"PING\r\n"))
        with pytest.raises(socket.timeout):
            sock.recv(1)


def test_paused_server_runs_queued_commands_when_resumed(
    redis_relay: TcpRelay,
    redis_server: RedisServer,
    clients: Callable[..., redis.Redis],
    direct: redis.Redis,
) -> None:
    """The contrast: SIGSTOP is not a partition. The same SET times out the same way, but it
    is executed once the server runs again."""
    client = clients(redis_relay.url)
    assert client.ping()
    redis_server.pause()
    try:
        with pytest.raises(redis.TimeoutError):
            client.set("paused:key", "v")
    finally:
        redis_server.resume()
    assert eventually(lambda: direct.get("paused:key") == b"v")


# -- one-way cut -------------------------------------------------------------------------------


def test_drop_replies_executes_commands_but_loses_answers(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis], direct: redis.Redis
) -> None:
    client = clients(redis_relay.url)
    assert client.ping()
    redis_relay.drop_replies()
    assert redis_relay.mode == "drop_replies"

    with pytest.raises(redis.TimeoutError):
        client.set("dropped:key", "v")
    assert eventually(lambda: direct.get("dropped:key") == b"v")
    assert redis_relay.wait_until(lambda c: c.dropped_to_client >= len(b"+OK\r\n"))

    redis_relay.heal()
    assert clients(redis_relay.url).get("dropped:key") == b"v"


def test_drop_replies_at_the_tcp_level(redis_relay: TcpRelay, direct: redis.Redis) -> None:
    redis_relay.drop_replies()
    with socket.create_connection(("127.0.0.1", redis_relay.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"SET dropped:raw v\r\n")
        assert eventually(lambda: direct.get("dropped:raw") == b"v")
        assert redis_relay.wait_until(lambda c: c.dropped_to_client == len(b"+OK\r\n"))
        with pytest.raises(socket.timeout):
            sock.recv(1)


# -- resets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["blackhole", "drop_replies"])
def test_heal_resets_connections_that_lived_through_the_fault(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis], fault: str
) -> None:
    # One connection, used as is: a pool would check it before use and silently reconnect.
    client = clients(redis_relay.url, single_connection_client=True)
    assert client.ping()
    getattr(redis_relay, fault)()
    redis_relay.heal()
    assert redis_relay.counts.resets == 1

    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert client.ping()  # reconnects, through the healed relay
    assert redis_relay.counts.open == 1


def test_heal_without_a_fault_keeps_connections(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis]
) -> None:
    client = clients(redis_relay.url, single_connection_client=True)
    assert client.ping()
    redis_relay.heal()
    assert client.ping()
    assert redis_relay.counts.resets == 0


def test_reset_all_kills_connections_and_keeps_flowing(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis]
) -> None:
    first = clients(redis_relay.url, single_connection_client=True)
    second = clients(redis_relay.url, single_connection_client=True)
    assert first.ping() and second.ping()
    redis_relay.reset_all()
    assert redis_relay.mode == "flowing"
    assert redis_relay.counts.resets == 2
    assert redis_relay.counts.open == 0

    for client in (first, second):
        with pytest.raises(redis.ConnectionError):
            client.ping()
        assert client.ping()


def test_reset_all_during_a_blackhole_keeps_the_blackhole(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis]
) -> None:
    redis_relay.blackhole()
    redis_relay.reset_all()
    assert redis_relay.mode == "blackhole"
    with pytest.raises(redis.TimeoutError):
        clients(redis_relay.url).ping()


def test_refuse_resets_and_refuses_until_healed(
    redis_relay: TcpRelay, clients: Callable[..., redis.Redis]
) -> None:
    port = redis_relay.port
    client = clients(redis_relay.url, single_connection_client=True)
    assert client.ping()
    redis_relay.refuse()
    assert redis_relay.mode == "refused"

    with pytest.raises(redis.ConnectionError):
        client.ping()  # reset
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S).close()
    with pytest.raises(redis.ConnectionError):
        clients(redis_relay.url).ping()

    redis_relay.heal()
    assert redis_relay.port == port
    assert client.ping()
    assert clients(redis_relay.url).ping()


def test_unreachable_server_resets_the_client(clients: Callable[..., redis.Redis]) -> None:
    with TcpRelay("127.0.0.1", free_port()) as relay:
        with pytest.raises(redis.ConnectionError):
            clients(relay.url).ping()
        assert relay.wait_until(lambda c: c.upstream_failures == 1)
        assert relay.counts.open == 0


# -- lifecycle ---------------------------------------------------------------------------------


def _open_fds() -> set[str]:
    gc.collect()  # sockets an earlier test dropped without closing
    return {entry.name for entry in Path("/proc/self/fd").iterdir()}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_close_leaves_no_socket_behind(redis_server: RedisServer) -> None:
    fds_before = _open_fds()
    relay = TcpRelay(redis_server.host, redis_server.port)
    port = relay.port
    assert relay_threads(relay)

    flowing = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    flowing.sendall(b"PING\r\n")
    assert flowing.recv(64) == b"+PONG\r\n"
    relay.blackhole()
    holed = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    holed.sendall(b"PING\r\n")
    assert relay.wait_until(lambda c: c.dropped_to_upstream > 0 and c.open == 2)

    with relay:
        pass  # __exit__ closes
    relay.close()  # idempotent

    assert not relay_threads(relay)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S).close()
    for sock in (flowing, holed):
        with pytest.raises(ConnectionResetError):
            sock.recv(64)
        sock.close()
    with pytest.raises(RuntimeError, match="closed"):
        relay.heal()
    assert relay.counts == RelayCounts(
        accepted=2,
        open=0,
        bytes_to_upstream=len(b"PING\r\n"),
        bytes_to_client=len(b"+PONG\r\n"),
        dropped_to_upstream=len(b"PING\r\n"),
    )
    assert _open_fds() <= fds_before
