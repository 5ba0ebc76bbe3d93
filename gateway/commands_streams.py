"""``gateway streams enable | status | disable``: a collection's DynamoDB stream.

``enable`` is idempotent: a stream already on with the requested view type is left alone (exit
0); one with another view type is refused (exit 2), since DynamoDB cannot change a stream's view
type in place and replacing the stream changes its ARN under its consumers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from gateway.cli import EXIT_OK, _bare_service, _require_table, to_json
from gateway.errors import ValidationError

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


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``streams enable``, ``streams status`` and ``streams disable``."""
    streams = commands.add_parser("streams", help="DynamoDB Streams: enable, status, disable")
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
