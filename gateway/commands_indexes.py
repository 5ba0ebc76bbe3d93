"""``gateway tables add-index`` and ``gateway tables create``: a collection's table and the
indexes its configuration declares.

A table gets its declared indexes when it is created; an index declared later must be added
with UpdateTable (``tables add-index``), and until then ``query`` on it fails. ``tables create``
on an existing table says which declared indexes it lacks instead of reporting success.
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli import EXIT_OK, _bare_service, _progress_bar, _require_table, _settings, to_json
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.tables import (
    IndexGaps,
    IndexProgress,
    IndexSpec,
    TableInfo,
    compare_indexes,
    table_manager_of,
)


def declared_indexes(settings: Settings, collection: str) -> dict[str, IndexSpec]:
    """The indexes the configuration declares for ``collection`` (as the factory builds them)."""
    config = settings.COLLECTIONS.get(collection)
    if config is None:
        return {}
    return {
        name: IndexSpec(attribute=index.attribute, type=index.type)
        for name, index in config.indexes.items()
    }


class MissingIndexes(ConfigError):
    """An existing table lacks declared indexes (or has them on other attributes): exit 2."""

    def __init__(self, collection: str, table: str, gaps: IndexGaps) -> None:
        problems: list[str] = []
        if gaps.missing:
            fixes = "; ".join(f"gateway tables add-index {collection} {n}" for n in gaps.missing)
            problems.append(
                f"it lacks the declared index(es) {', '.join(gaps.missing)}; add each with: {fixes}"
            )
        problems += [
            f"its index {name!r} is keyed on {have!r}, declared on {want!r} (DynamoDB cannot "
            "change an index's key: declare it under another name)"
            for name, (have, want) in gaps.mismatched.items()
        ]
        super().__init__(f"Table {table!r} already exists, but " + "; and ".join(problems))
        self.gaps = gaps


def check_declared_indexes(collection: str, info: TableInfo, settings: Settings) -> None:
    """`MissingIndexes` unless the table has every index declared for the collection."""
    gaps = compare_indexes(info, declared_indexes(settings, collection))
    if gaps:
        raise MissingIndexes(collection, info.name, gaps)


def cmd_tables_create(args: argparse.Namespace) -> int:
    """Create the collection's table (with its declared indexes), or check the existing one."""
    settings = _settings(args)
    with _bare_service(args) as service:
        info = service.ensure_table(args.collection)
    check_declared_indexes(args.collection, info, settings)
    print(to_json({"table": info.name, "indexes": dict(info.index_keys), "status": "ACTIVE"}))
    return EXIT_OK


def _declared_index(settings: Settings, collection: str, index: str) -> IndexSpec:
    declared = declared_indexes(settings, collection)
    spec = declared.get(index)
    if spec is None:
        raise ConfigError(
            f"Index {index!r} is not declared for collection {collection!r} (declared: "
            f"{sorted(declared) or 'none'}). Declare it first in the YAML config under "
            f"collections.{collection}.indexes.{index} (attribute and type), or in the "
            "COLLECTIONS environment variable."
        )
    return spec


def _describe_progress(progress: IndexProgress) -> str:
    """The status column of the progress display, e.g. "CREATING, backfilling"."""
    parts = [progress.status]
    if progress.backfilling:
        parts.append("backfilling")
    if progress.item_count:
        parts.append(f"{progress.item_count:,} items indexed")
    return ", ".join(parts)


def cmd_tables_add_index(args: argparse.Namespace) -> int:
    """Add a declared index to an existing table and wait until queries can use it."""
    settings = _settings(args)
    spec = _declared_index(settings, args.collection, args.index)
    bar = _progress_bar(args)
    with _bare_service(args) as service, bar:
        table = _require_table(service, args.collection).name
        task = bar.add_task(f"add-index {args.collection}.{args.index}", total=None, status="")

        def on_progress(progress: IndexProgress) -> None:
            bar.update(task, status=_describe_progress(progress))

        try:
            added = table_manager_of(service).add_index(table, args.index, spec, on_progress)
        except KeyboardInterrupt:
            # Only the wait is interrupted: DynamoDB goes on building the index.
            print(
                f"error: interrupted; DynamoDB goes on building index {args.index!r} of "
                f"{table!r}: run the command again to wait for it",
                file=sys.stderr,
            )
            return 130
    if not added.created:
        print(f"index {args.index!r} was already on table {table!r}", file=sys.stderr)
    print(
        to_json(
            {
                "table": table,
                "index": args.index,
                "attribute": spec.attribute,
                "created": added.created,
                "status": "ACTIVE",
                "indexes": dict(added.info.index_keys),
            }
        )
    )
    return EXIT_OK


def add_parsers(table_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``tables create`` and ``tables add-index``."""
    create = table_commands.add_parser(
        "create",
        help="create a collection's table now, with its declared indexes",
        description="Create a collection's table now, with its declared indexes. An existing "
        "table is checked: exit 2 if it lacks a declared index (add it with tables add-index).",
    )
    create.set_defaults(handler=cmd_tables_create)
    create.add_argument("collection")
    add_index = table_commands.add_parser(
        "add-index",
        help="add a declared index to an existing table and wait until it is ready",
        description="Add an index declared under collections.<collection>.indexes to the "
        "collection's existing table (UpdateTable), then wait until it is ACTIVE and "
        "backfilled. Idempotent: an index already there is only waited for. Ctrl-C stops the "
        "wait, not DynamoDB's work.",
    )
    add_index.set_defaults(handler=cmd_tables_add_index)
    add_index.add_argument("collection")
    add_index.add_argument("index", help="the index's name, as declared")
    add_index.add_argument("--quiet", action="store_true", help="no progress display")
