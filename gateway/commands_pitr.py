"""``gateway pitr enable | status | disable``: point-in-time recovery of a collection's table.

UpdateContinuousBackups is idempotent in DynamoDB; the commands read the status first anyway,
so that a run that changes nothing says so.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.cli import EXIT_OK, _bare_service, _require_table, to_json


def pitr_state(service: Any, table: str) -> dict[str, Any]:
    """``point_in_time_recovery`` (ENABLED / DISABLED) and, when on, the restorable window."""
    client = service.control_client
    answer = service.control_call(
        "DescribeContinuousBackups",
        table,
        lambda: client.describe_continuous_backups(TableName=table),
    )
    pitr = answer["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription") or {}
    state: dict[str, Any] = {
        "table": table,
        "point_in_time_recovery": pitr.get("PointInTimeRecoveryStatus", "DISABLED"),
    }
    for key, field in (
        ("earliest_restorable", "EarliestRestorableDateTime"),
        ("latest_restorable", "LatestRestorableDateTime"),
    ):
        if pitr.get(field) is not None:
            state[key] = str(pitr[field])
    return state


def _set_pitr(service: Any, table: str, enabled: bool) -> None:
    client = service.control_client
    service.control_call(
        "UpdateContinuousBackups",
        table,
        lambda: client.update_continuous_backups(
            TableName=table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": enabled},
        ),
    )


def _switch(args: argparse.Namespace, enabled: bool) -> int:
    wanted = "ENABLED" if enabled else "DISABLED"
    with _bare_service(args) as service:
        table = _require_table(service, args.collection).name
        if pitr_state(service, table)["point_in_time_recovery"] == wanted:
            print(
                f"point-in-time recovery already {wanted.lower()} on {table!r}: nothing changed",
                file=sys.stderr,
            )
        else:
            _set_pitr(service, table, enabled)
    print(to_json({"table": table, "point_in_time_recovery": wanted}))
    return EXIT_OK


def cmd_pitr_enable(args: argparse.Namespace) -> int:
    return _switch(args, enabled=True)


def cmd_pitr_disable(args: argparse.Namespace) -> int:
    return _switch(args, enabled=False)


def cmd_pitr_status(args: argparse.Namespace) -> int:
    with _bare_service(args) as service:
        table = _require_table(service, args.collection).name
        state = pitr_state(service, table)
    print(to_json(state))
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pitr enable``, ``pitr status`` and ``pitr disable``."""
    pitr = commands.add_parser("pitr", help="point-in-time recovery: enable, status, disable")
    pitr_commands = pitr.add_subparsers(dest="pitr_command", required=True)
    for name, handler, text in (
        ("enable", cmd_pitr_enable, "enable point-in-time recovery on a collection's table"),
        ("status", cmd_pitr_status, "show point-in-time recovery's status and restorable window"),
        ("disable", cmd_pitr_disable, "disable point-in-time recovery on a collection's table"),
    ):
        sub = pitr_commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        sub.add_argument("collection")
