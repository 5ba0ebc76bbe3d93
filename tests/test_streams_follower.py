"""The stream follower (`gateway.streams.follower`), driven one pass at a time.

Every test builds a `StreamFollower` with ``background=False`` and a fake clock, and calls
`StreamFollower.run_once` itself: no thread, no sleep. The changes go to `RecordingSink`, a
`ChangeSink` that records what it is given and can refuse (an unreachable cache).

Two kinds of DynamoDB:

* the emulator (`moto_server`) behind a real `DynamoDBService`, for what moto's streams can do:
  one shard per stream, ``LATEST``, ``TRIM_HORIZON``, ``AFTER_SEQUENCE_NUMBER``; with a
  `LocalCoordinator`, or a `RedisCoordinator` on the real Redis for two followers;
* `ScriptedDynamoDB`, a scripted stand-in for the service's control and streams clients, for
  what moto cannot do: several shards and their lineage (splits, closed shards), trimmed
  records (``TrimmedDataAccessException``), expired iterators (``ExpiredIteratorException``),
  throttling, and a stream disabled then enabled again. Its errors are the gateway errors
  `DynamoDBService.control_call` raises, with DynamoDB's code in ``.code``.

Five tests here first showed bugs of the follower (each names the interleaving); they pin
the fixes.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis import Redis

from gateway.dynamodb import DynamoDBService
from gateway.emulator import EmbeddedDynamoDB
from gateway.errors import AccessDeniedError, GatewayError, ThrottledError
from gateway.streams.coordination import (
    KEY_MARK,
    LATEST,
    SHARD_END,
    LocalCoordinator,
    RedisCoordinator,
)
from gateway.streams.follower import DESCRIBE_INTERVAL_S, VIEW_TYPE, StreamFollower
from gateway.streams.records import Change
from tests.gateway_helpers import make_service

#: The gateway's longest cache fill: the drop owed after a LATEST position comes this long after.
FILL_S = 2.0
#: Long, so that a Redis lease (real time) never runs out during a test: expiry is simulated.
LEASE_S = 30.0
START = 1_000.0
#: When the first pass after `register` runs (see `register`).
T0 = START + DESCRIBE_INTERVAL_S


# -- the follower's surroundings ------------------------------------------------------------


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSink:
    """A `ChangeSink` that records every call; ``refuse_apply`` / ``refuse_distrust`` make it
    answer as an unreachable cache does (False)."""

    def __init__(self, clock: FakeClock, log: list[str] | None = None) -> None:
        self.clock = clock
        self.log = log if log is not None else []
        self.refuse_apply = False
        self.refuse_distrust = False
        #: Every batch offered, applied or not: (collection, [doc ids]).
        self.offered: list[tuple[str, list[str]]] = []
        #: The batches applied.
        self.batches: list[tuple[str, list[str]]] = []
        #: The clock's time of every drop done (distrust answered True).
        self.drops: list[float] = []
        self.drop_attempts = 0

    def apply(self, db_name: str, changes: Sequence[Change]) -> bool:
        ids = [change.doc_id for change in changes]
        self.offered.append((db_name, ids))
        if self.refuse_apply:
            return False
        self.batches.append((db_name, ids))
        self.log.append(f"apply {','.join(ids)}")
        return True

    def distrust(self, db_name: str) -> bool:
        self.drop_attempts += 1
        if self.refuse_distrust:
            return False
        self.drops.append(self.clock())
        self.log.append(f"drop {db_name}")
        return True

    def applied(self, db_name: str | None = None) -> list[str]:
        """The doc ids applied, in order (of ``db_name`` only, if given)."""
        return [i for name, ids in self.batches if db_name in (None, name) for i in ids]


class RecordingCoordinator(LocalCoordinator):
    """A `LocalCoordinator` that logs the checkpoints saved, and refuses the leases of the
    shards in ``held_elsewhere`` (another follower holds them)."""

    def __init__(self, log: list[str] | None = None) -> None:
        super().__init__()
        self.log = log if log is not None else []
        self.held_elsewhere: set[str] = set()

    def acquire(self, stream: str, shard: str) -> bool:
        return shard not in self.held_elsewhere

    def renew(self, stream: str, shard: str) -> bool:
        return shard not in self.held_elsewhere

    def save_checkpoint(self, stream: str, shard: str, value: str) -> bool:
        self.log.append(f"checkpoint {shard}={value}")
        return super().save_checkpoint(stream, shard, value)


def register(follower: StreamFollower, clock: FakeClock, *db_names: str) -> None:
    """``follower.register`` each collection, then let ``DESCRIBE_INTERVAL_S`` pass: the
    first pass then runs at `T0`, the origin of the times the tests below compute."""
    for db_name in db_names:
        follower.register(db_name)
    clock.advance(DESCRIBE_INTERVAL_S)


def make_follower(
    service: Any, sink: RecordingSink, coordinator: Any, clock: FakeClock, **kwargs: Any
) -> StreamFollower:
    return StreamFollower(
        service,
        sink,
        coordinator,
        fill_deadline_s=FILL_S,
        lease_s=LEASE_S,
        background=False,
        clock=clock,
        wall_clock=lambda: 1_700_000_000.0 + clock(),
        **kwargs,
    )


# -- the emulator ---------------------------------------------------------------------------


@pytest.fixture
def emulated(moto_server: EmbeddedDynamoDB, table_prefix: str) -> Iterator[DynamoDBService]:
    """A service on the emulator whose tables are created with a NEW_AND_OLD_IMAGES stream."""
    service = make_service(moto_server.endpoint_url, table_prefix, stream_view_type=VIEW_TYPE)
    try:
        yield service
    finally:
        service.close()


def describe(service: DynamoDBService, db_name: str) -> dict[str, Any]:
    client = service.control_client
    return dict(client.describe_table(TableName=service.table_name(db_name))["Table"])


def stream_arn(service: DynamoDBService, db_name: str) -> str:
    return str(describe(service, db_name)["LatestStreamArn"])


def only_checkpoint(coordinator: Any, arn: str) -> str:
    """The checkpoint of the stream's one shard (moto's streams have one)."""
    checkpoints = coordinator.checkpoints(arn)
    assert len(checkpoints) == 1, checkpoints
    return str(next(iter(checkpoints.values())))


def save(service: DynamoDBService, db_name: str, *doc_ids: str) -> None:
    for doc_id in doc_ids:
        service.save(db_name, doc_id, {"name": doc_id})


def sequence_of(service: DynamoDBService, db_name: str, doc_id: str) -> str:
    """The sequence number of the newest stream record of ``doc_id`` (read with a client of
    our own, from the stream's start)."""
    arn = stream_arn(service, db_name)
    streams = service.streams_client
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    found = [r for r in records if r["dynamodb"]["Keys"]["_id"]["S"] == doc_id]
    assert found, f"no record of {doc_id!r}"
    return str(found[-1]["dynamodb"]["SequenceNumber"])


def started(
    service: DynamoDBService, coordinator: Any, db_name: str = "users"
) -> tuple[StreamFollower, RecordingSink, FakeClock]:
    """A follower of ``db_name`` positioned (one pass), its drop done, nothing applied yet."""
    clock = FakeClock()
    sink = RecordingSink(clock)
    follower = make_follower(service, sink, coordinator, clock)
    register(follower, clock, db_name)
    follower.run_once()
    clock.advance(FILL_S)
    follower.run_once()
    assert sink.drops == [T0 + FILL_S]
    return follower, sink, clock


def test_register_turns_on_the_stream_of_a_table_without_one(
    moto_server: EmbeddedDynamoDB, table_prefix: str
) -> None:
    service = make_service(moto_server.endpoint_url, table_prefix)  # creates tables streamless
    try:
        service.ensure_table("users")
        assert not (describe(service, "users").get("StreamSpecification") or {}).get(
            "StreamEnabled"
        )
        clock = FakeClock()
        sink = RecordingSink(clock)
        follower = make_follower(service, sink, LocalCoordinator(), clock)
        follower.register("users")

        spec = describe(service, "users")["StreamSpecification"]
        assert spec == {"StreamEnabled": True, "StreamViewType": VIEW_TYPE}
        follower.run_once()  # finds the new stream and positions its shard
        assert follower.stats()["collections"]["users"]["shards_held"] == 1
        save(service, "users", "a")
        follower.run_once()
        assert sink.applied() == ["a"]
        follower.close()
    finally:
        service.close()


def test_the_first_pass_after_register_follows_the_stream(emulated: DynamoDBService) -> None:
    emulated.ensure_table("users")  # created with its stream
    clock = FakeClock()
    sink = RecordingSink(clock)
    follower = make_follower(emulated, sink, LocalCoordinator(), clock)
    follower.register("users")
    follower.run_once()
    save(emulated, "users", "a")
    clock.advance(1.0)
    follower.run_once()
    clock.advance(FILL_S - 1.0)
    follower.run_once()
    assert follower.stats()["collections"]["users"]["shards_held"] == 1
    assert sink.applied() == ["a"]
    assert sink.drops == [START + FILL_S]
    follower.close()


def test_nothing_before_the_position_is_applied_and_one_drop_is_owed_after_the_fill_deadline(
    emulated: DynamoDBService,
) -> None:
    save(emulated, "users", "before1", "before2")  # creates the table (and its stream)
    arn = stream_arn(emulated, "users")
    coordinator = LocalCoordinator()
    clock = FakeClock()
    sink = RecordingSink(clock)
    follower = make_follower(emulated, sink, coordinator, clock)
    register(follower, clock, "users")

    follower.run_once()  # positions at LATEST: what came before is unknown
    assert sink.offered == []
    assert only_checkpoint(coordinator, arn) == LATEST
    save(emulated, "users", "after1")
    clock.advance(FILL_S / 2)
    follower.run_once()
    assert sink.applied() == ["after1"]
    assert sink.drops == []  # not before the longest fill that may have read before the position
    # The checkpoint waits for the drop: a follower taking over now must still owe it.
    assert only_checkpoint(coordinator, arn) == LATEST

    clock.advance(FILL_S / 2)
    follower.run_once()
    assert sink.drops == [T0 + FILL_S]
    assert only_checkpoint(coordinator, arn) == sequence_of(emulated, "users", "after1")
    for _ in range(3):
        clock.advance(DESCRIBE_INTERVAL_S)
        follower.run_once()
    assert sink.drops == [T0 + FILL_S]  # once
    assert sink.applied() == ["after1"]
    follower.close()


def test_records_after_the_position_are_applied_in_order_and_checkpointed(
    emulated: DynamoDBService,
) -> None:
    emulated.ensure_table("users")
    arn = stream_arn(emulated, "users")
    coordinator = LocalCoordinator()
    follower, sink, _ = started(emulated, coordinator)

    save(emulated, "users", "a", "b", "c")
    emulated.delete("users", "a")
    follower.run_once()
    assert sink.applied() == ["a", "b", "c", "a"]
    assert only_checkpoint(coordinator, arn) == sequence_of(emulated, "users", "a")
    save(emulated, "users", "d")
    follower.run_once()
    assert sink.batches[-1] == ("users", ["d"])
    assert only_checkpoint(coordinator, arn) == sequence_of(emulated, "users", "d")
    follower.close()


def test_a_refused_batch_is_applied_again_in_order_before_anything_new(
    emulated: DynamoDBService,
) -> None:
    emulated.ensure_table("users")
    arn = stream_arn(emulated, "users")
    coordinator = LocalCoordinator()
    follower, sink, _ = started(emulated, coordinator)
    save(emulated, "users", "a")
    follower.run_once()
    checkpoint_a = only_checkpoint(coordinator, arn)

    save(emulated, "users", "b", "c")
    sink.refuse_apply = True
    follower.run_once()
    follower.run_once()
    assert sink.offered[-2:] == [("users", ["b", "c"]), ("users", ["b", "c"])]
    assert only_checkpoint(coordinator, arn) == checkpoint_a  # not applied: not moved

    save(emulated, "users", "d")
    sink.refuse_apply = False
    follower.run_once()
    assert sink.batches[-1] == ("users", ["b", "c"])  # the same batch first, "d" not with it
    assert only_checkpoint(coordinator, arn) == sequence_of(emulated, "users", "c")
    follower.run_once()
    assert sink.applied() == ["a", "b", "c", "d"]
    assert only_checkpoint(coordinator, arn) == sequence_of(emulated, "users", "d")
    follower.close()


def test_a_restart_resumes_after_the_checkpoint_without_reapplying_or_a_new_drop(
    emulated: DynamoDBService,
) -> None:
    emulated.ensure_table("users")
    coordinator = LocalCoordinator()
    first, first_sink, _ = started(emulated, coordinator)
    save(emulated, "users", "a", "b")
    first.run_once()
    assert first_sink.applied() == ["a", "b"]
    first.close()

    save(emulated, "users", "c")  # while no follower runs
    clock = FakeClock()
    sink = RecordingSink(clock)
    second = make_follower(emulated, sink, coordinator, clock)  # learns "users" from it
    second.run_once()
    assert sink.applied() == ["c"]
    save(emulated, "users", "d")
    clock.advance(FILL_S)
    second.run_once()
    clock.advance(DESCRIBE_INTERVAL_S)
    second.run_once()
    assert sink.applied() == ["c", "d"]
    assert sink.drops == []
    second.close()


def test_a_restart_before_the_drop_owes_it_again(emulated: DynamoDBService) -> None:
    emulated.ensure_table("users")
    arn = stream_arn(emulated, "users")
    coordinator = LocalCoordinator()
    clock = FakeClock()
    first = make_follower(emulated, RecordingSink(clock), coordinator, clock)
    register(first, clock, "users")
    first.run_once()
    save(emulated, "users", "a")
    first.run_once()  # applied, but its checkpoint waits for the drop
    first.close()  # before the drop
    assert only_checkpoint(coordinator, arn) == LATEST

    clock2 = FakeClock(START + 100)
    sink = RecordingSink(clock2)
    second = make_follower(emulated, sink, coordinator, clock2)
    second.run_once()
    clock2.advance(FILL_S)
    second.run_once()
    assert sink.drops == [START + 100 + FILL_S]
    second.close()


def test_a_table_deleted_and_created_again_has_a_new_stream_followed_anew(
    emulated: DynamoDBService,
) -> None:
    """What moto can do of "a new stream ARN": its streams cannot be enabled again once
    disabled (`test_a_stream_disabled_and_enabled_again_is_followed_anew` scripts that)."""
    emulated.ensure_table("users")
    old_arn = stream_arn(emulated, "users")
    coordinator = LocalCoordinator()
    follower, sink, clock = started(emulated, coordinator)
    save(emulated, "users", "a")
    follower.run_once()
    old_checkpoint = only_checkpoint(coordinator, old_arn)

    table = emulated.table_name("users")
    emulated.control_client.delete_table(TableName=table)
    emulated.control_client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": VIEW_TYPE},
    )
    new_arn = stream_arn(emulated, "users")
    assert new_arn != old_arn
    save(emulated, "users", "b")  # before the follower saw the new stream: unknown to it

    clock.advance(DESCRIBE_INTERVAL_S)
    follower.run_once()
    assert only_checkpoint(coordinator, new_arn) == LATEST  # nothing known of the new stream
    assert only_checkpoint(coordinator, old_arn) == old_checkpoint
    save(emulated, "users", "c")
    follower.run_once()
    assert sink.applied() == ["a", "c"]
    assert sink.drops == [T0 + FILL_S]
    clock.advance(FILL_S)
    follower.run_once()
    assert sink.drops == [T0 + FILL_S, clock()]  # a new drop owed for the new stream
    assert only_checkpoint(coordinator, new_arn) == sequence_of(emulated, "users", "c")
    follower.close()


# -- two followers sharing Redis ------------------------------------------------------------


def redis_coordinator(redis_url: str, owner: str, key_prefix: str) -> RedisCoordinator:
    client = Redis.from_url(redis_url)
    return RedisCoordinator(client, owner=owner, lease_s=LEASE_S, key_prefix=key_prefix)


def held(follower: StreamFollower) -> int:
    return int(follower.stats()["collections"]["users"]["shards_held"])


def two_followers(
    service: DynamoDBService, redis_url: str, key_prefix: str
) -> tuple[list[StreamFollower], list[RecordingSink], list[FakeClock]]:
    """Followers A and B of "users" sharing leases and checkpoints in Redis; A took the lease
    first, did its drop and applied "a"."""
    followers: list[StreamFollower] = []
    sinks: list[RecordingSink] = []
    clocks: list[FakeClock] = []
    for owner in ("A", "B"):
        clock = FakeClock()
        sink = RecordingSink(clock)
        follower = make_follower(
            service, sink, redis_coordinator(redis_url, owner, key_prefix), clock
        )
        register(follower, clock, "users")
        followers.append(follower)
        sinks.append(sink)
        clocks.append(clock)
    a, b = followers
    a.run_once()
    b.run_once()
    assert (held(a), held(b)) == (1, 0)
    for clock in clocks:
        clock.advance(FILL_S)
    a.run_once()
    b.run_once()
    assert sinks[0].drops == [T0 + FILL_S]
    assert sinks[1].drops == []  # B never positioned the shard: it owes nothing
    save(service, "users", "a")
    a.run_once()
    b.run_once()
    assert sinks[0].applied() == ["a"]
    assert sinks[1].offered == []
    return followers, sinks, clocks


def test_redis_one_follower_holds_the_lease_and_the_other_takes_over_when_it_closes(
    emulated: DynamoDBService, redis_url: str, table_prefix: str
) -> None:
    emulated.ensure_table("users")
    (a, b), (sink_a, sink_b), _ = two_followers(emulated, redis_url, f"{table_prefix}close:")
    try:
        save(emulated, "users", "b", "c")
        sink_a.refuse_apply = True
        a.run_once()  # read, not applied: the checkpoint stays after "a"
        b.run_once()
        assert sink_a.offered[-1] == ("users", ["b", "c"])
        assert sink_b.offered == []
        a.close()  # gives the lease back

        b.run_once()
        assert held(b) == 1
        assert sink_b.applied() == ["b", "c"]  # from the checkpoint: nothing missed or repeated
        save(emulated, "users", "d")
        b.run_once()
        assert sink_b.applied() == ["b", "c", "d"]
        assert sink_b.drops == []  # the checkpoint was a sequence: no drop owed
        assert sink_a.applied() == ["a"]
    finally:
        a.close()
        b.close()


def test_redis_the_other_follower_takes_over_when_the_holder_stops_renewing(
    emulated: DynamoDBService, redis_url: str, table_prefix: str
) -> None:
    key_prefix = f"{table_prefix}expiry:"
    emulated.ensure_table("users")
    (a, b), (sink_a, sink_b), (clock_a, _) = two_followers(emulated, redis_url, key_prefix)
    try:
        save(emulated, "users", "b")
        # A stops renewing: its lease runs out in Redis (what PX does after LEASE_S).
        redis = Redis.from_url(redis_url)
        leases = list(redis.scan_iter(match=f"{key_prefix}{KEY_MARK}lease|*"))
        assert len(leases) == 1
        assert redis.hget(leases[0], "owner") == b"A"
        redis.delete(*leases)

        b.run_once()
        assert held(b) == 1
        assert redis.hget(leases[0], "owner") == b"B"
        assert sink_b.applied() == ["b"]

        clock_a.advance(LEASE_S)  # A's next pass: its renewal is refused, it stops
        a.run_once()
        assert held(a) == 0
        save(emulated, "users", "c")
        a.run_once()
        b.run_once()
        assert sink_a.applied() == ["a"]
        assert sink_b.applied() == ["b", "c"]
        assert sink_b.drops == []
        redis.close()
    finally:
        a.close()
        b.close()


def test_redis_a_holder_that_missed_its_expiry_cannot_move_the_checkpoint(
    emulated: DynamoDBService, redis_url: str, table_prefix: str
) -> None:
    key_prefix = f"{table_prefix}stale:"
    emulated.ensure_table("users")
    arn = stream_arn(emulated, "users")
    (a, b), (sink_a, sink_b), _ = two_followers(emulated, redis_url, key_prefix)
    observer = redis_coordinator(redis_url, "observer", key_prefix)
    try:
        redis = Redis.from_url(redis_url)
        redis.delete(*redis.scan_iter(match=f"{key_prefix}{KEY_MARK}lease|*"))  # A's ran out
        redis.close()
        save(emulated, "users", "b")
        b.run_once()
        assert sink_b.applied() == ["b"]
        after_b = only_checkpoint(observer, arn)
        assert after_b == sequence_of(emulated, "users", "b")

        save(emulated, "users", "c")
        a.run_once()  # A's lease seems fresh to it: it reads and applies again (harmless)...
        assert sink_a.applied() == ["a", "b", "c"]
        assert held(a) == 0  # ...but its checkpoint is refused: it stops there
        assert only_checkpoint(observer, arn) == after_b
        b.run_once()
        assert sink_b.applied() == ["b", "c"]
        assert only_checkpoint(observer, arn) == sequence_of(emulated, "users", "c")
        save(emulated, "users", "d")
        a.run_once()
        b.run_once()
        assert sink_a.applied() == ["a", "b", "c"]
        assert sink_b.applied() == ["b", "c", "d"]
    finally:
        a.close()
        b.close()
        observer.close()


# -- the scripted stand-in ------------------------------------------------------------------

_sequences = itertools.count(10**20)


@dataclass
class ScriptedShard:
    shard_id: str
    parent: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    #: Records before this index are trimmed (older than the stream keeps).
    trimmed: int = 0


@dataclass
class ScriptedStream:
    arn: str
    shards: dict[str, ScriptedShard] = field(default_factory=dict)


@dataclass
class ScriptedTable:
    name: str
    streams: list[ScriptedStream] = field(default_factory=list)
    enabled: bool = True

    @property
    def stream(self) -> ScriptedStream:
        return self.streams[-1]


@dataclass
class ScriptedIterator:
    arn: str
    shard_id: str
    index: int
    expired: bool = False


class ScriptedDynamoDB:
    """Stands in for `DynamoDBService` (the `StreamService` protocol) and its two clients,
    for what moto's streams cannot do: several shards per stream with lineage, closed shards,
    trimmed records, expired iterators, throttling, a stream enabled again under a new ARN.

    ``control_call`` raises the errors queued with `fail` (as the real one raises translated
    `GatewayError`s after its retries), and logs every call in `calls`."""

    def __init__(self, prefix: str = "t-", log: list[str] | None = None) -> None:
        self.prefix = prefix
        self.log = log if log is not None else []
        self.tables: dict[str, ScriptedTable] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._failures: list[tuple[str, str | None, GatewayError]] = []
        self._iterators: dict[str, ScriptedIterator] = {}
        self._labels = itertools.count(1)

    # Building the scene.

    def add_table(self, db_name: str, *shards: tuple[str, str | None]) -> ScriptedStream:
        table = ScriptedTable(self.table_name(db_name))
        self.tables[table.name] = table
        self._new_stream(table, shards or (("shard-1", None),))
        return table.stream

    def _new_stream(self, table: ScriptedTable, shards: Sequence[tuple[str, str | None]]) -> None:
        label = f"2024-01-01T00:00:{next(self._labels):02d}.000"
        arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{table.name}/stream/{label}"
        stream = ScriptedStream(arn)
        for shard_id, parent in shards:
            stream.shards[shard_id] = ScriptedShard(shard_id, parent)
        table.streams.append(stream)
        table.enabled = True

    def stream(self, db_name: str) -> ScriptedStream:
        return self.tables[self.table_name(db_name)].stream

    def write(self, db_name: str, shard_id: str, *doc_ids: str) -> list[str]:
        """Append one MODIFY record per doc id to a shard; their sequence numbers."""
        shard = self.stream(db_name).shards[shard_id]
        assert not shard.closed
        sequences = []
        for doc_id in doc_ids:
            sequence = f"{next(_sequences):021d}"
            shard.records.append(
                {
                    "eventName": "MODIFY",
                    "eventSource": "aws:dynamodb",
                    "dynamodb": {
                        "ApproximateCreationDateTime": datetime.datetime.now(datetime.timezone.utc),
                        "Keys": {"_id": {"S": doc_id}},
                        "NewImage": {"_id": {"S": doc_id}, "name": {"S": doc_id}},
                        "OldImage": {"_id": {"S": doc_id}, "name": {"S": "old"}},
                        "SequenceNumber": sequence,
                        "SizeBytes": 50,
                        "StreamViewType": VIEW_TYPE,
                    },
                }
            )
            sequences.append(sequence)
        return sequences

    def split(self, db_name: str, parent: str, *children: str) -> None:
        """Close ``parent`` and open ``children`` of it."""
        stream = self.stream(db_name)
        stream.shards[parent].closed = True
        for child in children:
            stream.shards[child] = ScriptedShard(child, parent)

    def trim(self, db_name: str, shard_id: str) -> None:
        """Every record of the shard so far is now older than the stream keeps."""
        shard = self.stream(db_name).shards[shard_id]
        shard.trimmed = len(shard.records)

    def expire_iterators(self) -> None:
        for iterator in self._iterators.values():
            iterator.expired = True

    def fail(self, operation: str, error: GatewayError, table: str | None = None) -> None:
        """The next ``operation`` call (on ``table`` if given) raises ``error``."""
        self._failures.append((operation, table, error))

    def disable_stream(self, db_name: str) -> None:
        table = self.tables[self.table_name(db_name)]
        table.enabled = False
        for shard in table.stream.shards.values():
            shard.closed = True

    def iterator_requests(self) -> list[tuple[str, str, str | None]]:
        """(shard, type, sequence) of every GetShardIterator call."""
        return [
            (p["ShardId"], p["ShardIteratorType"], p.get("SequenceNumber"))
            for op, p in self.calls
            if op == "GetShardIterator"
        ]

    # StreamService.

    @property
    def control_client(self) -> ScriptedDynamoDB:
        return self

    @property
    def streams_client(self) -> ScriptedDynamoDB:
        return self

    def control_call(self, operation: str, table: str, fn: Callable[[], Any]) -> Any:
        for i, (failing, on, error) in enumerate(self._failures):
            if failing == operation and on in (None, table):
                del self._failures[i]
                raise error
        return fn()

    def table_name(self, db_name: str) -> str:
        return self.prefix + db_name

    # The control client.

    def describe_table(self, *, TableName: str) -> dict[str, Any]:
        self.calls.append(("DescribeTable", {"TableName": TableName}))
        table = self.tables.get(TableName)
        if table is None:
            raise GatewayError("no such table", code="ResourceNotFoundException")
        description: dict[str, Any] = {
            "TableName": TableName,
            "LatestStreamArn": table.stream.arn,
        }
        if table.enabled:
            description["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": VIEW_TYPE,
            }
        return {"Table": description}

    def update_table(
        self, *, TableName: str, StreamSpecification: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("UpdateTable", {"TableName": TableName, **StreamSpecification}))
        table = self.tables[TableName]
        if StreamSpecification.get("StreamEnabled"):
            if table.enabled:
                raise GatewayError("stream already enabled", code="ValidationException")
            self._new_stream(table, [("shard-1", None)])
        else:
            self.disable_stream(TableName[len(self.prefix) :])
        return {"TableDescription": {"TableName": TableName}}

    # The streams client.

    def _find(self, arn: str) -> ScriptedStream:
        for table in self.tables.values():
            for stream in table.streams:
                if stream.arn == arn:
                    return stream
        raise GatewayError("no such stream", code="ResourceNotFoundException")

    def describe_stream(
        self, *, StreamArn: str, ExclusiveStartShardId: str | None = None
    ) -> dict[str, Any]:
        """Two shards a page, to make the follower page."""
        self.calls.append(("DescribeStream", {"StreamArn": StreamArn}))
        shards = list(self._find(StreamArn).shards.values())
        if ExclusiveStartShardId is not None:
            ids = [s.shard_id for s in shards]
            shards = shards[ids.index(ExclusiveStartShardId) + 1 :]
        page, rest = shards[:2], shards[2:]
        description: dict[str, Any] = {
            "StreamArn": StreamArn,
            "Shards": [
                {"ShardId": s.shard_id, **({"ParentShardId": s.parent} if s.parent else {})}
                for s in page
            ],
        }
        if rest:
            description["LastEvaluatedShardId"] = page[-1].shard_id
        return {"StreamDescription": description}

    def get_shard_iterator(
        self,
        *,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
    ) -> dict[str, Any]:
        params = {"ShardId": ShardId, "ShardIteratorType": ShardIteratorType}
        self.calls.append(
            ("GetShardIterator", {**params, "SequenceNumber": SequenceNumber}),
        )
        self.log.append(f"iterator {ShardId} {ShardIteratorType}")
        shard = self._find(StreamArn).shards[ShardId]
        if ShardIteratorType == "TRIM_HORIZON":
            index = shard.trimmed
        elif ShardIteratorType == "LATEST":
            index = len(shard.records)
        else:
            assert ShardIteratorType == "AFTER_SEQUENCE_NUMBER"
            sequences = [r["dynamodb"]["SequenceNumber"] for r in shard.records]
            index = sequences.index(SequenceNumber) + 1
            if index <= shard.trimmed:
                raise GatewayError("trimmed", code="TrimmedDataAccessException")
        return {"ShardIterator": self._iterator(StreamArn, ShardId, index)}

    def _iterator(self, arn: str, shard_id: str, index: int) -> str:
        token = f"iterator-{len(self._iterators)}"
        self._iterators[token] = ScriptedIterator(arn, shard_id, index)
        return token

    def get_records(self, *, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.calls.append(("GetRecords", {"ShardIterator": ShardIterator}))
        iterator = self._iterators[ShardIterator]
        if iterator.expired:
            raise GatewayError("expired", code="ExpiredIteratorException")
        shard = self._find(iterator.arn).shards[iterator.shard_id]
        if iterator.index < shard.trimmed:
            raise GatewayError("trimmed", code="TrimmedDataAccessException")
        batch = shard.records[iterator.index : iterator.index + Limit]
        end = iterator.index + len(batch)
        answer: dict[str, Any] = {"Records": batch}
        if not (shard.closed and end >= len(shard.records)):  # a closed shard's end: none
            answer["NextShardIterator"] = self._iterator(iterator.arn, iterator.shard_id, end)
        return answer


def scripted(
    fake: ScriptedDynamoDB,
    coordinator: Any | None = None,
    log: list[str] | None = None,
    clock: FakeClock | None = None,
    **kwargs: Any,
) -> tuple[StreamFollower, RecordingSink, FakeClock]:
    clock = clock or FakeClock()
    sink = RecordingSink(clock, log)
    coordinator = coordinator if coordinator is not None else LocalCoordinator()
    return make_follower(fake, sink, coordinator, clock, **kwargs), sink, clock


def test_register_without_the_permission_to_turn_the_stream_on_names_it() -> None:
    """Stands in for an IAM identity without dynamodb:UpdateTable (moto allows everything)."""
    fake = ScriptedDynamoDB()
    fake.add_table("users")
    fake.disable_stream("users")
    fake.fail("UpdateTable", AccessDeniedError("denied", code="AccessDeniedException"))
    follower, _, _ = scripted(fake)
    with pytest.raises(AccessDeniedError, match="dynamodb:UpdateTable") as raised:
        follower.register("users")
    assert raised.value.code == "AccessDeniedException"


def test_a_child_shard_is_read_only_after_its_parent_was_read_to_its_end() -> None:
    """Stands in for a shard split, which moto never does."""
    log: list[str] = []
    fake = ScriptedDynamoDB(log=log)
    arn = fake.add_table("users", ("parent", None)).arn
    coordinator = RecordingCoordinator(log)
    follower, sink, clock = scripted(fake, coordinator, log)
    register(follower, clock, "users")
    follower.run_once()
    clock.advance(FILL_S)
    follower.run_once()  # the drop owed for the LATEST position
    assert sink.drops == [T0 + FILL_S]

    fake.write("users", "parent", "p1", "p2")
    fake.split("users", "parent", "left", "right")
    fake.write("users", "left", "l1")
    fake.write("users", "right", "r1", "r2")
    clock.advance(DESCRIBE_INTERVAL_S)
    follower.run_once()  # lists the children; the parent still has records to read
    assert sink.applied() == ["p1", "p2"]
    assert [shard for shard, _, _ in fake.iterator_requests()] == ["parent"]

    follower.run_once()  # the parent's end: SHARD_END, then its children from their start
    follower.run_once()
    assert coordinator.checkpoints(arn)["parent"] == SHARD_END
    assert fake.iterator_requests()[1:] == [
        ("left", "TRIM_HORIZON", None),
        ("right", "TRIM_HORIZON", None),
    ]
    assert log.index("checkpoint parent=SHARD_END") < log.index("iterator left TRIM_HORIZON")
    assert sink.applied() == ["p1", "p2", "l1", "r1", "r2"]
    assert sink.drops == [T0 + FILL_S]  # every record of a child is known: no drop
    checkpoints = coordinator.checkpoints(arn)
    assert (
        checkpoints["left"]
        == fake.stream("users").shards["left"].records[-1]["dynamodb"]["SequenceNumber"]
    )
    follower.close()


def test_a_child_waits_while_its_parent_is_held_elsewhere_and_unfinished() -> None:
    """Stands in for a split (moto never splits): another follower still reads the parent."""
    fake = ScriptedDynamoDB()
    arn = fake.add_table("users", ("parent", None), ("child", "parent")).arn
    fake.write("users", "child", "c1")
    coordinator = RecordingCoordinator()
    coordinator.held_elsewhere.add("parent")
    follower, sink, clock = scripted(fake, coordinator)
    register(follower, clock, "users")
    for _ in range(3):
        follower.run_once()
        clock.advance(DESCRIBE_INTERVAL_S)
    assert fake.iterator_requests() == []
    assert sink.offered == []

    # The other follower reads the parent to its end and gives its lease back.
    coordinator.held_elsewhere.clear()
    coordinator.save_checkpoint(arn, "parent", SHARD_END)
    follower.run_once()
    follower.run_once()
    assert fake.iterator_requests() == [("child", "TRIM_HORIZON", None)]
    assert sink.applied() == ["c1"]
    assert sink.drops == []
    follower.close()


def test_a_restart_after_a_split_reads_the_unstarted_child_from_its_start_without_a_drop() -> None:
    """Stands in for a split (moto never splits)."""
    fake = ScriptedDynamoDB()
    fake.add_table("users", ("parent", None))
    fake.write("users", "parent", "p1")
    fake.split("users", "parent", "child")
    fake.write("users", "child", "c1", "c2")
    arn = fake.stream("users").arn
    coordinator = LocalCoordinator()
    coordinator.add_collection("users")
    coordinator.save_checkpoint(arn, "parent", SHARD_END)  # the last follower read it all

    follower, sink, clock = scripted(fake, coordinator)
    follower.run_once()
    follower.run_once()
    assert fake.iterator_requests() == [("child", "TRIM_HORIZON", None)]
    assert sink.applied() == ["c1", "c2"]
    clock.advance(FILL_S)
    follower.run_once()
    assert sink.drops == []
    assert coordinator.checkpoints(arn)["parent"] == SHARD_END
    follower.close()


def test_stream_pages_of_shards_are_all_followed() -> None:
    """Stands in for a stream of several shards (moto's have one), listed two a page."""
    fake = ScriptedDynamoDB()
    names = [f"shard-{i}" for i in range(5)]
    arn = fake.add_table("users", *((name, None) for name in names)).arn
    coordinator = LocalCoordinator()
    follower, sink, clock = scripted(fake, coordinator)
    register(follower, clock, "users")
    follower.run_once()
    assert sorted(shard for shard, _, _ in fake.iterator_requests()) == names
    for name in names:
        fake.write("users", name, f"doc-{name}")
    follower.run_once()
    assert sorted(sink.applied()) == [f"doc-{name}" for name in names]
    clock.advance(FILL_S)
    follower.run_once()
    assert sink.drops == [T0 + FILL_S]  # one drop for the collection, not one per shard
    assert set(coordinator.checkpoints(arn)) == set(names)
    follower.close()


def test_a_trimmed_checkpoint_restarts_at_latest_and_owes_a_drop() -> None:
    """Stands in for TrimmedDataAccessException (moto keeps every record forever)."""
    fake = ScriptedDynamoDB()
    arn = fake.add_table("users").arn
    (old,) = fake.write("users", "shard-1", "gone1")
    fake.write("users", "shard-1", "gone2", "gone3")
    fake.trim("users", "shard-1")
    coordinator = LocalCoordinator()
    coordinator.add_collection("users")
    coordinator.save_checkpoint(arn, "shard-1", old)

    follower, sink, clock = scripted(fake, coordinator)
    follower.run_once()
    assert fake.iterator_requests() == [
        ("shard-1", "AFTER_SEQUENCE_NUMBER", old),
        ("shard-1", "LATEST", None),
    ]
    assert coordinator.checkpoints(arn) == {"shard-1": LATEST}
    (new,) = fake.write("users", "shard-1", "new")
    follower.run_once()
    assert sink.applied() == ["new"]
    assert coordinator.checkpoints(arn) == {"shard-1": LATEST}  # the drop comes first
    clock.advance(FILL_S)
    follower.run_once()
    assert sink.drops == [START + FILL_S]
    assert coordinator.checkpoints(arn) == {"shard-1": new}
    follower.close()


def test_records_trimmed_under_the_iterator_restart_at_latest_and_owe_a_drop() -> None:
    """Stands in for TrimmedDataAccessException from GetRecords (a follower that fell more
    than the stream's retention behind)."""
    fake = ScriptedDynamoDB()
    fake.add_table("users")
    arn = fake.stream("users").arn
    coordinator = LocalCoordinator()
    follower, sink, clock = scripted(fake, coordinator)
    register(follower, clock, "users")
    follower.run_once()
    clock.advance(FILL_S)
    follower.run_once()
    fake.write("users", "shard-1", "a")
    follower.run_once()
    fake.write("users", "shard-1", "lost")
    fake.trim("users", "shard-1")
    clock.advance(100.0)
    follower.run_once()
    assert fake.iterator_requests()[-1] == ("shard-1", "LATEST", None)
    assert coordinator.checkpoints(arn) == {"shard-1": LATEST}
    fake.write("users", "shard-1", "b")
    follower.run_once()
    clock.advance(FILL_S)
    follower.run_once()
    assert sink.applied() == ["a", "b"]
    assert sink.drops == [T0 + FILL_S, T0 + FILL_S + 100 + FILL_S]
    follower.close()


def records_r1_r2_checkpointed_at_r1(
    coordinator: LocalCoordinator,
) -> tuple[ScriptedDynamoDB, str, str]:
    """A users table whose one shard holds records r1 and r2, checkpointed at r1 in
    ``coordinator``: (the fake, the stream ARN, r1's sequence number)."""
    fake = ScriptedDynamoDB()
    arn = fake.add_table("users").arn
    (r1,) = fake.write("users", "shard-1", "r1")
    fake.write("users", "shard-1", "r2")
    coordinator.add_collection("users")
    coordinator.save_checkpoint(arn, "shard-1", r1)
    return fake, arn, r1


def test_an_expired_iterator_is_positioned_again_from_the_checkpoint() -> None:
    """Stands in for ExpiredIteratorException (moto's iterators never expire)."""
    fake, arn, r1 = records_r1_r2_checkpointed_at_r1(coordinator := LocalCoordinator())
    follower, sink, clock = scripted(fake, coordinator)
    follower.run_once()
    assert sink.applied() == ["r2"]
    r2 = coordinator.checkpoints(arn)["shard-1"]

    fake.write("users", "shard-1", "r3")
    fake.expire_iterators()
    follower.run_once()  # GetRecords: expired
    fake.write("users", "shard-1", "r4")
    follower.run_once()
    follower.run_once()
    assert sink.applied() == ["r2", "r3", "r4"]  # nothing lost, nothing twice
    assert fake.iterator_requests() == [
        ("shard-1", "AFTER_SEQUENCE_NUMBER", r1),
        ("shard-1", "AFTER_SEQUENCE_NUMBER", r2),
    ]
    clock.advance(FILL_S)
    follower.run_once()
    assert sink.drops == []
    follower.close()


def test_records_read_while_the_lease_ran_out_are_not_applied() -> None:
    """The follower paused after GetRecords until its lease ran out, and another follower took
    the shard: it must not apply what it read (found by review: the other may have applied
    later changes, which these undo where a program restored an older `_rev`)."""
    fake, arn, r1 = records_r1_r2_checkpointed_at_r1(coordinator := RecordingCoordinator())
    follower, sink, clock = scripted(fake, coordinator)
    read = fake.get_records

    def read_then_pause(**kwargs: Any) -> dict[str, Any]:
        answer = read(**kwargs)
        clock.advance(LEASE_S)  # paused past the lease...
        coordinator.held_elsewhere.add("shard-1")  # ...which another follower took
        return answer

    fake.get_records = read_then_pause  # type: ignore[method-assign]
    follower.run_once()
    assert sink.offered == [] and sink.applied() == []
    assert coordinator.checkpoints(arn)["shard-1"] == r1
    follower.close()


def test_an_expired_iterator_while_the_drop_is_owed_loses_nothing() -> None:
    """Stands in for ExpiredIteratorException (moto's iterators never expire).

    Positioned at LATEST at t=0 (drop owed at t=2), "r1" is applied (its checkpoint waits for
    the drop); the iterator expires at t=0.5; at t=1 the follower positions again from the
    saved checkpoint, LATEST, skipping "r2" and "r3". Either they are applied, or what the
    module docstring promises for a LATEST position holds for this one too: a drop at least
    ``fill_deadline_s`` after it (t >= 3). Neither happens: the one drop is at t=2."""
    fake = ScriptedDynamoDB()
    fake.add_table("users")
    follower, sink, clock = scripted(fake)
    register(follower, clock, "users")
    follower.run_once()  # LATEST at t=0
    fake.write("users", "shard-1", "r1")
    follower.run_once()
    assert sink.applied() == ["r1"]
    fake.write("users", "shard-1", "r2")
    fake.expire_iterators()
    clock.advance(0.5)
    follower.run_once()  # expired: the lease is given back
    fake.write("users", "shard-1", "r3")
    clock.advance(0.5)
    repositioned_at = clock()
    follower.run_once()
    for _ in range(8):
        clock.advance(0.5)
        follower.run_once()
    assert sink.applied() == ["r1", "r2", "r3"] or any(
        at >= repositioned_at + FILL_S for at in sink.drops
    ), (sink.applied(), sink.drops, fake.iterator_requests())


def test_a_shard_taken_over_at_latest_during_the_drop_window_owes_a_later_drop() -> None:
    """Stands in for a stream of two shards (moto's have one).

    This follower positions "one" at LATEST at t=0: drop owed at t=2. "two" is held by another
    follower, which positioned it at LATEST (its checkpoint) and dies before its own drop;
    this follower takes it at t=1, at LATEST: "x", written before, is unknown to it, and a
    fill that read "x"'s old copy before t=1 may store it until t=1 + fill_deadline_s = 3.
    The drop must come at t >= 3; it comes at t=2 only."""
    fake = ScriptedDynamoDB()
    arn = fake.add_table("users", ("one", None), ("two", None)).arn
    coordinator = RecordingCoordinator()
    coordinator.save_checkpoint(arn, "two", LATEST)  # the other follower's position
    coordinator.held_elsewhere.add("two")
    follower, sink, clock = scripted(fake, coordinator)
    register(follower, clock, "users")
    follower.run_once()
    fake.write("users", "two", "x")
    clock.advance(1.0)
    coordinator.held_elsewhere.clear()  # its lease ran out
    follower.run_once()
    assert fake.iterator_requests() == [("one", "LATEST", None), ("two", "LATEST", None)]
    taken_at = clock()
    for _ in range(6):
        clock.advance(0.5)
        follower.run_once()
    assert any(at >= taken_at + FILL_S for at in sink.drops), sink.drops


def test_a_checkpoint_owed_while_the_drop_is_pending_is_saved_only_after_the_drop() -> None:
    """Stands in for two shards and a shard's end (moto's one shard never closes)."""
    log: list[str] = []
    fake = ScriptedDynamoDB(log=log)
    arn = fake.add_table("users", ("open", None), ("closing", None)).arn
    coordinator = RecordingCoordinator(log)
    follower, sink, clock = scripted(fake, coordinator, log)
    register(follower, clock, "users")
    follower.run_once()  # both at LATEST: checkpoints LATEST, drop owed at T0 + FILL_S
    assert coordinator.checkpoints(arn) == {"open": LATEST, "closing": LATEST}
    fake.write("users", "open", "a", "b")
    (c,) = fake.write("users", "closing", "c")
    fake.split("users", "closing", "child")
    fake.write("users", "child", "d")
    clock.advance(FILL_S / 2)
    follower.run_once()
    follower.run_once()
    follower.run_once()
    assert sorted(sink.applied()) == ["a", "b", "c"]
    assert coordinator.checkpoints(arn) == {"open": LATEST, "closing": LATEST}

    clock.advance(FILL_S / 2)
    sink.refuse_distrust = True  # the drop does not reach the cache: it stays owed
    follower.run_once()
    follower.run_once()
    assert sink.drop_attempts == 2
    assert coordinator.checkpoints(arn) == {"open": LATEST, "closing": LATEST}
    assert "child" not in {shard for shard, _, _ in fake.iterator_requests()}

    sink.refuse_distrust = False
    saved_before = len([line for line in log if line.startswith("checkpoint")])
    follower.run_once()
    assert sink.drops == [clock()]
    b = fake.stream("users").shards["open"].records[-1]["dynamodb"]["SequenceNumber"]
    after_drop = log[log.index("drop users") :]
    assert f"checkpoint open={b}" in after_drop
    assert f"checkpoint closing={c}" in after_drop
    assert saved_before == 2  # the two LATEST marks only
    clock.advance(DESCRIBE_INTERVAL_S)
    follower.run_once()
    follower.run_once()
    assert coordinator.checkpoints(arn)["closing"] == SHARD_END
    assert log.index("checkpoint closing=SHARD_END") > log.index("drop users")
    assert sink.applied()[-1] == "d"
    follower.close()


def test_throttled_get_records_keeps_the_position_and_other_collections_go_on() -> None:
    """Stands in for GetRecords throttled past the retry policy (moto never throttles)."""
    fake = ScriptedDynamoDB()
    fake.add_table("users")
    fake.add_table("orders")
    follower, sink, clock = scripted(fake)
    register(follower, clock, "users", "orders")
    follower.run_once()
    fake.write("users", "shard-1", "u1", "u2")
    fake.write("orders", "shard-1", "o1")
    fake.fail(
        "GetRecords",
        ThrottledError(
            "throttled",
            attempts=4,
            elapsed=0.1,
            code="LimitExceededException",
            operation="GetRecords",
        ),
        table=fake.table_name("users"),
    )
    iterators = len(fake.iterator_requests())
    follower.run_once()
    assert sink.applied("users") == []
    assert sink.applied("orders") == ["o1"]  # the same pass
    follower.run_once()
    follower.run_once()
    assert sink.applied("users") == ["u1", "u2"]
    assert len(fake.iterator_requests()) == iterators  # the same iterator, read again
    follower.close()


def test_a_throttled_shard_does_not_hold_up_the_other_shards() -> None:
    """Stands in for a stream of two shards and GetRecords throttling (moto has neither).
    DynamoDB Streams limits GetRecords per shard: throttling of "one" says nothing of "two",
    yet "two" is not read in that pass (nor in any, while "one" stays throttled)."""
    fake = ScriptedDynamoDB()
    fake.add_table("users", ("one", None), ("two", None))
    follower, sink, clock = scripted(fake)
    register(follower, clock, "users")
    follower.run_once()
    fake.write("users", "one", "a")
    fake.write("users", "two", "b")
    fake.fail(
        "GetRecords",
        ThrottledError("throttled", attempts=4, elapsed=0.1, code="LimitExceededException"),
    )
    follower.run_once()
    assert sink.applied() == ["b"]


def test_a_checkpoint_never_moves_back_after_a_takeover() -> None:
    """Stands in for ExpiredIteratorException and a second follower (leases scripted).

    "a" is applied while the drop is owed (its checkpoint waits); the iterator expires and
    the lease is given back; another follower takes the shard and checkpoints "c"; when this
    one takes it again it first saves its old "a" over "c". Harmless today (a successor only
    reads "b" and "c" again), but the rule is that the checkpoint only moves forward."""
    fake = ScriptedDynamoDB()
    arn = fake.add_table("users").arn
    coordinator = RecordingCoordinator()
    follower, _, clock = scripted(fake, coordinator)
    register(follower, clock, "users")
    follower.run_once()
    fake.write("users", "shard-1", "a")
    follower.run_once()
    fake.expire_iterators()
    follower.run_once()
    coordinator.held_elsewhere.add("shard-1")
    (_, c) = fake.write("users", "shard-1", "b", "c")
    coordinator.save_checkpoint(arn, "shard-1", c)  # the other follower's
    clock.advance(FILL_S)
    follower.run_once()
    coordinator.held_elsewhere.clear()
    follower.run_once()
    follower.run_once()
    assert coordinator.checkpoints(arn)["shard-1"] == c


def test_a_stream_disabled_and_enabled_again_is_followed_anew() -> None:
    """Stands in for disabling and enabling a stream (moto refuses to enable one again)."""
    fake = ScriptedDynamoDB()
    old_arn = fake.add_table("users").arn
    coordinator = LocalCoordinator()
    follower, sink, clock = scripted(fake, coordinator)
    register(follower, clock, "users")
    follower.run_once()
    clock.advance(FILL_S)
    follower.run_once()
    (a,) = fake.write("users", "shard-1", "a")
    follower.run_once()
    assert coordinator.checkpoints(old_arn) == {"shard-1": a}

    fake.write("users", "shard-1", "unread")  # in the old stream, never read
    table = fake.table_name("users")
    fake.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    fake.update_table(
        TableName=table, StreamSpecification={"StreamEnabled": True, "StreamViewType": VIEW_TYPE}
    )
    new_arn = fake.stream("users").arn
    assert new_arn != old_arn
    fake.write("users", "shard-1", "before")  # the new stream, before the follower saw it

    clock.advance(DESCRIBE_INTERVAL_S)
    follower.run_once()
    assert coordinator.checkpoints(new_arn) == {"shard-1": LATEST}
    assert coordinator.checkpoints(old_arn) == {"shard-1": a}
    fake.write("users", "shard-1", "after")
    follower.run_once()
    assert sink.applied() == ["a", "after"]
    drop_due = clock() + FILL_S
    clock.advance(FILL_S)
    follower.run_once()
    assert sink.drops == [T0 + FILL_S, drop_due]  # the unread and the unknown: dropped
    after = fake.stream("users").shards["shard-1"].records[-1]["dynamodb"]["SequenceNumber"]
    assert coordinator.checkpoints(new_arn) == {"shard-1": after}
    follower.close()


def test_the_follower_turns_a_disabled_stream_back_on() -> None:
    """Stands in for an operator disabling the stream (moto cannot enable it again).

    Pinned behaviour, questioned in review: with ``enable_streams`` (the default) a stream an
    operator disabled (e.g. `gateway streams disable`, to change its view type) is turned on
    again, with NEW_AND_OLD_IMAGES, at the follower's next description of the table."""
    fake = ScriptedDynamoDB()
    fake.add_table("users")
    follower, _, clock = scripted(fake)
    register(follower, clock, "users")
    follower.run_once()
    fake.disable_stream("users")
    clock.advance(DESCRIBE_INTERVAL_S)
    follower.run_once()
    updates = [params for op, params in fake.calls if op == "UpdateTable"]
    assert updates == [{"TableName": "t-users", "StreamEnabled": True, "StreamViewType": VIEW_TYPE}]
    follower.close()

    quiet = ScriptedDynamoDB()
    quiet.add_table("users")
    other, _, other_clock = scripted(quiet, enable_streams=False)
    register(other, other_clock, "users")
    other.run_once()
    quiet.disable_stream("users")
    other_clock.advance(DESCRIBE_INTERVAL_S)
    other.run_once()
    assert [op for op, _ in quiet.calls if op == "UpdateTable"] == []
    other.close()
