"""The ``gateway`` command: thin, argv -> Settings -> service -> output.

Every error is printed as one line on stderr with a non-zero exit code (2 for bad usage or
configuration, 1 for everything else); no tracebacks for expected failures.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary

from gateway.config import Settings
from gateway.errors import ConfigError, GatewayError, ValidationError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def to_json(value: Any) -> str:
    """JSON for people: Decimal as a number, bytes as base64, sets as sorted lists."""

    def default(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return int(obj) if obj == obj.to_integral_value() else float(obj)
        if isinstance(obj, Binary):
            return base64.b64encode(bytes(obj.value)).decode("ascii")
        if isinstance(obj, (bytes, bytearray)):
            return base64.b64encode(bytes(obj)).decode("ascii")
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        return str(obj)

    return json.dumps(value, default=default, indent=2, sort_keys=True)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.endpoint_url:
        overrides["DYNAMODB_ENDPOINT_URL"] = args.endpoint_url
    if args.region:
        overrides["DYNAMODB_REGION"] = args.region
    if args.table_prefix is not None:
        overrides["DYNAMODB_TABLE_PREFIX"] = args.table_prefix
    if args.config:
        return Settings.from_yaml(args.config, **overrides)
    return Settings(**overrides)


def _bare_service(args: argparse.Namespace) -> Any:
    from gateway.factory import build_dynamodb_service

    return build_dynamodb_service(_settings(args))


def cmd_get(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        doc = service.get(args.collection, args.id)
    if doc is None:
        print(f"error: no document {args.id!r} in {args.collection!r}", file=sys.stderr)
        return EXIT_FAILURE
    print(to_json(doc))
    return EXIT_OK


def cmd_put(args: argparse.Namespace) -> int:
    try:
        doc = json.loads(args.json, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"JSON is not valid: {exc}. Quote it for the shell.") from exc
    with _bare_service(args) as service:
        result = service.save(args.collection, args.id, doc, if_rev=args.if_rev)
    print(to_json(result))
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        removed = service.delete(args.collection, args.id, if_rev=args.if_rev)
    print(to_json({"id": args.id, "deleted": removed}))
    return EXIT_OK


def cmd_tables_list(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        client = service.control_client
        names: list[str] = []
        params: dict[str, Any] = {}
        while True:
            page = service.control_call("ListTables", "", lambda: client.list_tables(**params))
            names.extend(page.get("TableNames", []))
            if not page.get("LastEvaluatedTableName"):
                break
            params["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]
        prefix = service.table_prefix
    for name in names:
        if name.startswith(prefix):
            print(name)
    return EXIT_OK


def cmd_tables_describe(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        table = service.table_name(args.collection)
        client = service.control_client
        described = service.control_call(
            "DescribeTable", table, lambda: client.describe_table(TableName=table)
        )
    print(to_json(described["Table"]))
    return EXIT_OK


def cmd_tables_create(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        info = service.ensure_table(args.collection)
    print(to_json({"table": info.name, "indexes": dict(info.index_keys), "status": "ACTIVE"}))
    return EXIT_OK


def cmd_pitr_enable(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        table = service.ensure_table(args.collection).name
        client = service.control_client
        service.control_call(
            "UpdateContinuousBackups",
            table,
            lambda: client.update_continuous_backups(
                TableName=table,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            ),
        )
    print(to_json({"table": table, "point_in_time_recovery": "ENABLED"}))
    return EXIT_OK


def cmd_streams_enable(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        table = service.ensure_table(args.collection).name
        client = service.control_client
        response = service.control_call(
            "UpdateTable",
            table,
            lambda: client.update_table(
                TableName=table,
                StreamSpecification={
                    "StreamEnabled": True,
                    "StreamViewType": args.view_type,
                },
            ),
        )
    arn = response.get("TableDescription", {}).get("LatestStreamArn")
    print(to_json({"table": table, "stream": "ENABLED", "view_type": args.view_type, "arn": arn}))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gateway`` command."""
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="A fast, correct cache in front of Amazon DynamoDB: tools and benchmark.",
    )
    parser.add_argument("--config", help="YAML configuration file (else $GATEWAY_CONFIG)")
    parser.add_argument("--endpoint-url", help="DynamoDB endpoint, e.g. http://localhost:8000")
    parser.add_argument("--region", help="AWS region (default from config: us-east-1)")
    parser.add_argument("--table-prefix", help="prefix of every table name")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str, parent: Any = None
    ) -> argparse.ArgumentParser:
        sub = (parent or commands).add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    demo = add(
        "demo",
        cmd_demo,
        "save, read, list and delete documents, on the embedded emulator unless an endpoint "
        "is configured",
    )
    demo.add_argument("--documents", type=int, default=50, help="how many documents to save")

    tables = commands.add_parser("tables", help="list, describe or create tables")
    table_commands = tables.add_subparsers(dest="tables_command", required=True)
    add("list", cmd_tables_list, "list the tables that carry the table prefix", table_commands)
    add(
        "describe", cmd_tables_describe, "describe a collection's table", table_commands
    ).add_argument("collection")
    add(
        "create", cmd_tables_create, "create a collection's table now", table_commands
    ).add_argument("collection")

    get = add("get", cmd_get, "print a document as JSON")
    get.add_argument("collection")
    get.add_argument("id")
    put = add("put", cmd_put, "save a document given as JSON (full replace)")
    put.add_argument("collection")
    put.add_argument("id")
    put.add_argument("json", help='the document, e.g. \'{"name": "Ada"}\'')
    put.add_argument("--if-rev", help="save only if the stored _rev equals this")
    delete = add("delete", cmd_delete, "delete a document")
    delete.add_argument("collection")
    delete.add_argument("id")
    delete.add_argument("--if-rev", help="delete only if the stored _rev equals this")

    pitr = commands.add_parser("pitr", help="point-in-time recovery")
    pitr_commands = pitr.add_subparsers(dest="pitr_command", required=True)
    add(
        "enable",
        cmd_pitr_enable,
        "enable point-in-time recovery on a collection's table",
        pitr_commands,
    ).add_argument("collection")
    streams = commands.add_parser("streams", help="DynamoDB Streams")
    streams_commands = streams.add_subparsers(dest="streams_command", required=True)
    enable = add(
        "enable", cmd_streams_enable, "enable a stream on a collection's table", streams_commands
    )
    enable.add_argument("collection")
    enable.add_argument(
        "--view-type",
        default="NEW_AND_OLD_IMAGES",
        choices=["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"],
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
