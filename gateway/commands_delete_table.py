"""``gateway tables delete COLLECTION``: delete a collection's table, every document in it.

It cannot be undone, so it asks first: on a terminal the user types the collection's name; with
no terminal to ask on (a script, a pipe) it refuses unless given ``--yes``. A table with
deletion protection is refused before asking. The shared cache (redis, tiered) is cleared of
the collection afterwards, so no gateway serves documents of a table that is gone.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from botocore.exceptions import WaiterError

from gateway.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    _bare_service,
    _data_service,
    _require_table,
    _settings,
    to_json,
)
from gateway.commands_cache import SHARED_CACHES
from gateway.errors import GatewayError, ServiceUnavailableError, ValidationError
from gateway.tables import TABLE_POLL_DELAY_S, TABLE_POLL_MAX_ATTEMPTS, table_manager_of


def confirm(question: str, expected: str, stdin: TextIO, stderr: TextIO) -> bool:
    """Ask on ``stderr`` (stdout stays machine-readable) and read one line of ``stdin``; True
    if it is ``expected``. Typing the name, not "y", is what makes the user read it."""
    print(question, end="", file=stderr, flush=True)
    return stdin.readline().strip() == expected


def _describe(service: Any, table: str) -> dict[str, Any]:
    client = service.control_client
    answer = service.control_call(
        "DescribeTable", table, lambda: client.describe_table(TableName=table)
    )
    return dict(answer["Table"])


def _delete_and_wait(service: Any, table: str) -> None:
    """DeleteTable, then wait until DynamoDB no longer lists it (it is DELETING meanwhile)."""
    client = service.control_client
    service.control_call("DeleteTable", table, lambda: client.delete_table(TableName=table))
    try:
        client.get_waiter("table_not_exists").wait(
            TableName=table,
            WaiterConfig={"Delay": TABLE_POLL_DELAY_S, "MaxAttempts": TABLE_POLL_MAX_ATTEMPTS},
        )
    except WaiterError as exc:
        raise ServiceUnavailableError(
            f"Table {table!r} is being deleted but was still there when we stopped waiting: "
            f"check with `gateway tables list` ({exc})",
            operation="DeleteTable",
        ) from exc
    table_manager_of(service).forget(table)  # this process must not use what it remembered


def _refuse_unconfirmed(collection: str, table: str) -> None:
    raise ValidationError(
        f"Refusing to delete table {table!r} (collection {collection}) without confirmation: "
        "standard input is not a terminal to ask on. Pass --yes to delete it anyway."
    )


def _clear_cache(service: Any, collection: str) -> int | None:
    """Drop the collection from the shared cache; None if the service has no cache."""
    invalidate_collection = getattr(service, "invalidate_collection", None)
    if invalidate_collection is None:
        return None
    return int(invalidate_collection(collection))


def cmd_tables_delete(args: argparse.Namespace) -> int:
    shared_cache = _settings(args).CACHE_BACKEND in SHARED_CACHES
    with _data_service(args) if shared_cache else _bare_service(args) as service:
        bare = getattr(service, "service", service)  # the DynamoDBService under a cache
        table = _require_table(bare, args.collection).name
        described = _describe(bare, table)
        if described.get("DeletionProtectionEnabled"):
            raise ValidationError(
                f"Table {table!r} has deletion protection: turn it off first (aws dynamodb "
                f"update-table --table-name {table} --no-deletion-protection-enabled)."
            )
        if not args.yes:
            if not sys.stdin.isatty():
                _refuse_unconfirmed(args.collection, table)
            items = described.get("ItemCount", 0)
            question = (
                f"Delete table {table!r} and every document of collection {args.collection} "
                f"(about {items:,} item{'' if items == 1 else 's'}; DynamoDB updates this count "
                "every six hours)? This "
                f"cannot be undone. Type {args.collection} to confirm: "
            )
            if not confirm(question, args.collection, sys.stdin, sys.stderr):
                print("error: not confirmed: nothing deleted", file=sys.stderr)
                return EXIT_FAILURE
        _delete_and_wait(bare, table)
        try:
            dropped = _clear_cache(service, args.collection)
        except GatewayError as exc:  # the table is gone: say that too, not only the failure
            print(
                f"error: table {table!r} deleted, but the cache could not be cleared ({exc}): "
                f"run `gateway cache invalidate {args.collection}` when it is back",
                file=sys.stderr,
            )
            return EXIT_FAILURE
    result: dict[str, Any] = {"table": table, "deleted": True}
    if dropped is not None:
        result["cache_entries_dropped"] = dropped
    print(to_json(result))
    return EXIT_OK


def add_parser(table_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``tables delete``."""
    text = (
        "delete a collection's table and every document in it (asks on a terminal; without "
        "one, only with --yes)"
    )
    delete = table_commands.add_parser("delete", help=text, description=text)
    delete.set_defaults(handler=cmd_tables_delete)
    delete.add_argument("collection")
    delete.add_argument("--yes", action="store_true", help="delete without asking")
