"""``gateway streams enable | status | disable | follow``: a collection's DynamoDB stream.

``enable`` is idempotent: a stream already on with the requested view type is left alone (exit
0); one with another view type is refused (exit 2), since DynamoDB cannot change a stream's view
type in place and replacing the stream changes its ARN under its consumers.

``follow`` runs a standalone stream follower in the foreground (`gateway.streams.follower`,
the same one a gateway with ``STREAMS_INVALIDATION`` runs on a background thread), for the
collections named and no other: one line per ``--interval`` with the records applied and the
lag of each; Ctrl-C (SIGINT) or SIGTERM (or ``--duration``) stops it, giving its shard leases
back so that another follower takes over at once. Only the shared caches (``redis``,
``tiered``) can be kept up to date from another process.
"""

from __future__ import annotations

import argparse
import datetime
import math
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.cli import EXIT_OK, _bare_service, _require_table, _settings, to_json
from gateway.errors import ConfigError, ValidationError

if TYPE_CHECKING:  # imported when `follow` runs, not at the command's start-up
    from gateway.streams.coordination import Coordinator

VIEW_TYPES = ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES")


def _describe(service: Any, table: str) -> dict[str, Any]:
    client = service.control_client
    answer = service.control_call(
        "DescribeTable", table, lambda: client.describe_table(TableName=table)
    )
    return dict(answer["Table"])


def stream_state(description: Mapping[str, Any]) -> dict[str, Any]:
    """``stream`` (ENABLED / DISABLED), ``view_type`` and ``arn`` of a table description.

    A disabled stream keeps its last ARN in ``LatestStreamArn``: it is not reported then.
    """
    table = str(description["TableName"])
    spec = description.get("StreamSpecification") or {}
    if not spec.get("StreamEnabled"):
        return {"table": table, "stream": "DISABLED", "view_type": None, "arn": None}
    return {
        "table": table,
        "stream": "ENABLED",
        "view_type": spec.get("StreamViewType"),
        "arn": description.get("LatestStreamArn"),
    }


def _update_stream(service: Any, table: str, specification: dict[str, Any]) -> dict[str, Any]:
    client = service.control_client
    answer = service.control_call(
        "UpdateTable",
        table,
        lambda: client.update_table(TableName=table, StreamSpecification=specification),
    )
    return dict(answer.get("TableDescription") or {})


def cmd_streams_enable(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        table = _require_table(service, args.collection).name
        state = stream_state(_describe(service, table))
        if state["stream"] == "ENABLED":
            if state["view_type"] != args.view_type:
                raise ValidationError(
                    f"Table {table!r} already has a stream with view type {state['view_type']}, "
                    f"not {args.view_type}. DynamoDB cannot change a stream's view type: run "
                    f"`gateway streams disable {args.collection}`, then enable it again with "
                    f"--view-type {args.view_type} (the new stream gets a new ARN: move its "
                    "consumers to it)."
                )
            print(
                f"stream already enabled on {table!r} with view type {args.view_type}: "
                "nothing changed",
                file=sys.stderr,
            )
            print(to_json(state))
            return EXIT_OK
        described = _update_stream(
            service, table, {"StreamEnabled": True, "StreamViewType": args.view_type}
        )
    arn = described.get("LatestStreamArn")
    print(to_json({"table": table, "stream": "ENABLED", "view_type": args.view_type, "arn": arn}))
    return EXIT_OK


def cmd_streams_status(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        table = _require_table(service, args.collection).name
        state = stream_state(_describe(service, table))
    print(to_json(state))
    return EXIT_OK


def cmd_streams_disable(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        table = _require_table(service, args.collection).name
        if stream_state(_describe(service, table))["stream"] == "DISABLED":
            print(f"no stream enabled on {table!r}: nothing changed", file=sys.stderr)
        else:
            _update_stream(service, table, {"StreamEnabled": False})
    print(to_json({"table": table, "stream": "DISABLED", "view_type": None, "arn": None}))
    return EXIT_OK


#: ``follow``: the backends whose cache another process can keep up to date.
FOLLOWED_CACHES = ("redis", "tiered")
DEFAULT_FOLLOW_INTERVAL_S = 10.0

_CANNOT_FOLLOW_BECAUSE = {
    "none": "there is no cache to keep up to date",
    "memory": "a memory cache lives inside each application process, out of this command's "
    "reach: set cache.streams_invalidation (STREAMS_INVALIDATION) in the application instead, "
    "and each instance follows the streams for its own cache",
    "dax": "DAX's item cache cannot be told about changes (DAX only sees writes made through DAX)",
}


class OnlyCollections:
    """A `Coordinator` that shares leases and checkpoints like the one it wraps, but reports
    only the named collections as followed: a follower otherwise also follows every collection
    other instances recorded (`StreamFollower` learns them from the coordinator)."""

    def __init__(self, inner: Coordinator, names: Iterable[str]) -> None:
        self._inner = inner
        self._names = frozenset(names)

    def acquire(self, stream: str, shard: str) -> bool:
        return self._inner.acquire(stream, shard)

    def renew(self, stream: str, shard: str) -> bool:
        return self._inner.renew(stream, shard)

    def release(self, stream: str, shard: str) -> None:
        self._inner.release(stream, shard)

    def checkpoints(self, stream: str) -> dict[str, str]:
        return self._inner.checkpoints(stream)

    def save_checkpoint(self, stream: str, shard: str, value: str) -> bool:
        return self._inner.save_checkpoint(stream, shard, value)

    def add_collection(self, db_name: str) -> None:
        self._inner.add_collection(db_name)

    def collections(self) -> set[str]:
        return set(self._names)

    def close(self) -> None:
        self._inner.close()


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def progress_line(stats: Mapping[str, Any], before: Mapping[str, int], names: Iterable[str]) -> str:
    """One line: per collection, records applied (and since ``before``), lag, shards held."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    per = stats.get("collections") or {}
    parts = []
    for name in names:
        collection = per.get(name) or {}
        applied = int(collection.get("records_applied", 0))
        lag = collection.get("lag_s")
        shards = int(collection.get("shards_held", 0))
        parts.append(
            f"{name}: {applied} applied (+{applied - before.get(name, 0)}), "
            f"lag {'-' if lag is None else f'{lag:.3f} s'}, "
            f"{shards} shard{'' if shards == 1 else 's'} held"
        )
    return f"{now} " + "; ".join(parts)


def cmd_streams_follow(args: argparse.Namespace) -> int:
    from gateway.commands_emulator import _stop_on_signals
    from gateway.factory import get_database_service
    from gateway.gateway import CachingGateway
    from gateway.streams.apply import ChangeApplier
    from gateway.streams.follower import DEFAULT_LEASE_S, StreamFollower
    from gateway.streams.setup import build_coordinator

    names = list(dict.fromkeys(args.collections))
    settings = _settings(args)
    backend = settings.CACHE_BACKEND
    if backend not in FOLLOWED_CACHES:
        reason = _CANNOT_FOLLOW_BECAUSE.get(backend, f"CACHE_BACKEND={backend!r} has no cache")
        raise ConfigError(
            f"Cannot follow streams for CACHE_BACKEND={backend!r}: {reason}. Configure the "
            "backend your application uses: redis or tiered, with its REDIS_URL and "
            "cache.redis_key_prefix."
        )
    for name in names:
        if not settings.cache_policy(name).enabled:
            raise ConfigError(
                f"Collection {name!r} is not cached (collections.{name}.cache.enabled is "
                "false): its stream has nothing to update. Leave it out."
            )
    # The follower is this command's own (for the named collections only), not the factory's.
    settings = settings.model_copy(update={"STREAMS_INVALIDATION": False})
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    try:
        with get_database_service(settings) as gateway:
            assert isinstance(gateway, CachingGateway)  # redis and tiered always build one
            coordinator = OnlyCollections(build_coordinator(settings, DEFAULT_LEASE_S), names)
            follower = StreamFollower(
                gateway.service,
                ChangeApplier(gateway, gateway.intent_ttl_s, gateway.clock),
                coordinator,
                fill_deadline_s=gateway.fill_deadline_s,
                lease_s=DEFAULT_LEASE_S,
            )
            gateway.follow_streams(follower)  # closed with the gateway: leases given back
            for name in names:
                follower.register(name)
            print(
                f"# following the streams of {', '.join(names)} (cache {backend}, shard leases "
                f"shared in Redis); a line every {args.interval:g} s; Ctrl-C to stop.",
                file=sys.stderr,
                flush=True,
            )
            _report_until_stopped(follower, names, stop, args.interval, args.duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    print("# follower stopped; shard leases released", file=sys.stderr)
    return EXIT_OK


def _report_until_stopped(
    follower: Any, names: list[str], stop: threading.Event, interval: float, duration: float | None
) -> None:
    """Print a progress line every ``interval`` until ``stop`` is set or ``duration`` ends,
    then the last one."""
    deadline = None if duration is None else time.monotonic() + duration
    before: dict[str, int] = {}

    def report() -> None:
        stats = follower.stats()
        print(progress_line(stats, before, names), flush=True)
        for name, collection in (stats.get("collections") or {}).items():
            before[name] = int(collection.get("records_applied", 0))

    while True:
        wait = interval if deadline is None else min(interval, deadline - time.monotonic())
        if stop.wait(max(0.0, wait)) or (deadline is not None and time.monotonic() >= deadline):
            break
        report()
    report()


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``streams enable``, ``streams status``, ``streams disable`` and ``streams follow``."""
    streams = commands.add_parser(
        "streams", help="DynamoDB Streams: enable, status, disable, follow"
    )
    streams_commands = streams.add_subparsers(dest="streams_command", required=True)
    enable = streams_commands.add_parser(
        "enable",
        help="enable a stream on a collection's table (idempotent)",
        description="Enable a stream on a collection's table. Idempotent: a stream already on "
        "with this view type is left as it is; one with another view type is an error (exit 2).",
    )
    enable.set_defaults(handler=cmd_streams_enable)
    enable.add_argument("collection")
    enable.add_argument("--view-type", default="NEW_AND_OLD_IMAGES", choices=VIEW_TYPES)
    for name, handler, text in (
        ("status", cmd_streams_status, "show whether a stream is on, its view type and ARN"),
        ("disable", cmd_streams_disable, "disable the stream of a collection's table"),
    ):
        sub = streams_commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        sub.add_argument("collection")
    text = (
        "follow the streams of the named collections in the foreground and apply every change "
        "to the configured shared cache (redis or tiered): a standalone follower, for one "
        "process per table; prints a line per interval; stops on Ctrl-C or SIGTERM"
    )
    follow = streams_commands.add_parser("follow", help=text, description=text)
    follow.set_defaults(handler=cmd_streams_follow)
    follow.add_argument("collections", nargs="+", metavar="COLLECTION")
    follow.add_argument(
        "--interval",
        type=_positive_seconds,
        default=DEFAULT_FOLLOW_INTERVAL_S,
        metavar="SECONDS",
        help=f"seconds between progress lines (default {DEFAULT_FOLLOW_INTERVAL_S:g})",
    )
    follow.add_argument(
        "--duration",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)",
    )
