"""The ``gateway`` command: thin, argv -> Settings -> service -> output.

Every error is printed as one line on stderr with a non-zero exit code (2 for bad usage or
configuration, 1 for everything else); no tracebacks for expected failures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary

from gateway.config import Settings
from gateway.errors import ConfigError, CredentialsError, GatewayError, ValidationError
from gateway.service import ABSENT

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: The distribution name in pyproject.toml, for ``gateway --version``.
DISTRIBUTION = "dynamodb-gateway"
#: Errors of bad input or configuration (missing or rejected AWS credentials included): exit 2.
USAGE_ERRORS: tuple[type[GatewayError], ...] = (ConfigError, CredentialsError, ValidationError)


def exit_code_for(exc: BaseException) -> int:
    """2 for bad input or configuration (credentials are configuration), 1 for anything else."""
    return EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILURE


def package_version() -> str:
    """The installed version of the package; gateway.__version__ when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from gateway import __version__

        return __version__


def _quiet_broken_pipe() -> int:
    """A reader that went away (``gateway export users | head -1``) is not an error: point
    stdout at /dev/null, so that Python's final flush cannot fail again, and exit 0."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_OK


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


class NoSuchCollection(ValidationError):
    """A command that reads a collection (or manages its table) met no table: exit 2."""

    def __init__(self, collection: str, table: str) -> None:
        super().__init__(
            f"no such collection: {collection} (table {table} does not exist; it is created on "
            "the first write)",
            code="ResourceNotFoundException",
        )
        self.collection = collection
        self.table = table


def _require_table(service: Any, collection: str) -> Any:
    """The collection's `TableInfo`; `NoSuchCollection` if its table does not exist.

    ``service`` is a DynamoDBService or a caching gateway around one; nothing is created.
    """
    bare = getattr(service, "service", service)
    info = bare.table_info(collection)
    if info is None:
        raise NoSuchCollection(collection, bare.table_name(collection))
    return info


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


def _data_service(args: argparse.Namespace) -> Any:
    """The configured service for document commands: through the cache when one is configured,
    so a write from the command line updates (or invalidates) a shared Redis cache too."""
    from gateway.factory import get_database_service

    return get_database_service(_settings(args))


def _utf8_stdout() -> None:
    """Write stdout as UTF-8 whatever the locale: DynamoDB JSON lines are not ASCII-escaped."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if callable(reconfigure) and (sys.stdout.encoding or "").lower() != "utf-8":
        reconfigure(encoding="utf-8")


def cmd_get(args: argparse.Namespace) -> int:
    from gateway.factory import get_database_service
    from gateway.typed_json import (
        DYNAMODB,
        describe_losses,
        plain_json_losses,
        to_dynamodb_json,
    )

    exact = args.format == DYNAMODB
    # DynamoDB JSON is exact: read numbers as Decimal even when NATIVE_NUMBERS is set.
    settings = _decimal_settings(args) if exact else _settings(args)
    with get_database_service(settings) as service:
        doc = service.get(args.collection, args.id)
        if doc is None:
            _require_table(service, args.collection)  # a missing table is another answer
    if doc is None:
        print(f"error: no document {args.id!r} in {args.collection!r}", file=sys.stderr)
        return EXIT_FAILURE
    if exact:
        _utf8_stdout()
        print(to_dynamodb_json(doc))
        return EXIT_OK
    print(to_json(doc))
    losses = plain_json_losses(doc)
    if losses:
        print(describe_losses(losses), file=sys.stderr)
    return EXIT_OK


def _read_document_text(arg: str) -> str:
    """``put``'s DOC argument, or standard input (UTF-8) when it is ``-``."""
    if arg != "-":
        return arg
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin.read()
    try:
        return buffer.read().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"standard input is not valid UTF-8 (byte {exc.start + 1}); give the document as UTF-8"
        ) from None


def cmd_put(args: argparse.Namespace) -> int:
    from gateway.typed_json import DYNAMODB, looks_like_dynamodb_json, parse_dynamodb_json

    text = _read_document_text(args.json)
    if not text.strip():
        source = "standard input gave nothing" if args.json == "-" else "DOC is empty"
        raise ValidationError(
            f'no document to save ({source}); give a JSON object, e.g. \'{{"name": "Ada"}}\', '
            "or {} for an empty document"
        )
    if args.format == DYNAMODB:
        doc = parse_dynamodb_json(text)
    else:
        try:
            doc = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"JSON is not valid: {exc}. Quote it for the shell.") from exc
        if args.format is None and looks_like_dynamodb_json(doc):
            raise ValidationError(
                'this document looks like DynamoDB JSON (its _id is {"S": ...}), which plain '
                "JSON would save as nested maps: add --format dynamodb to save it with its "
                "types, or --format json to save it as plain JSON anyway"
            )
    if_rev = ABSENT if args.if_absent else args.if_rev
    with _data_service(args) as service:
        result = service.save(args.collection, args.id, doc, if_rev=if_rev)
    print(to_json(result))
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with _data_service(args) as service:
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
        try:
            described = service.control_call(
                "DescribeTable", table, lambda: client.describe_table(TableName=table)
            )
        except GatewayError as exc:
            if exc.code == "ResourceNotFoundException":
                raise NoSuchCollection(args.collection, table) from exc
            raise
    print(to_json(described["Table"]))
    return EXIT_OK


# -- migration: export / import / copy (the logic is in gateway/migrate.py) -------------------


def _progress_bar(args: argparse.Namespace) -> Any:
    """A rich progress bar on stderr, off with --quiet or when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        _document_rate_column(),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet or not console.is_terminal,
    )


def _document_rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class DocumentRate(ProgressColumn):
        """Documents per second (the ``documents`` field), over rich's speed window."""

        def render(self, task: Any) -> Text:
            speed = task.fields.get("rate")
            return Text("" if speed is None else f"{speed:,.0f} docs/s")

    return DocumentRate()


def _rate(documents: int, bar: Any) -> float | None:
    """Documents per second since the bar started (None before it has a clock reading)."""
    elapsed = (
        bar.get_time() - bar.tasks[0].start_time if bar.tasks and bar.tasks[0].start_time else 0
    )
    return documents / elapsed if elapsed > 0 else None


def _no_longer_empty(args: argparse.Namespace) -> str:
    """What to add to "resume" advice after an interrupted --into-empty run."""
    if getattr(args, "into_empty", False):
        return " (without --into-empty: the collection is no longer empty)"
    return ""


def _plural(count: int, noun: str) -> str:
    """The count and the noun, singular for one (`gateway.migrate.plural`, not imported here)."""
    return f"{count} {noun if count == 1 else noun + 's'}"


def _status(documents: int, bad_lines: int = 0) -> str:
    return _plural(documents, "document") + (
        f", {_plural(bad_lines, 'bad line')}" if bad_lines else ""
    )


def _decimal_settings(args: argparse.Namespace) -> Settings:
    """The settings with numbers read as Decimal: native numbers would lose digits."""
    return _settings(args).model_copy(update={"NATIVE_NUMBERS": False})


def _target_settings(args: argparse.Namespace) -> Settings:
    """``gateway copy``'s target: --to-config and the --to-* flags; without --to-config, the
    source's configuration and flags, overridden by the --to-* flags."""
    inherit = args.to_config is None
    target = argparse.Namespace(
        **{
            **vars(args),
            "config": args.to_config or args.config,
            "endpoint_url": args.to_endpoint_url or (args.endpoint_url if inherit else None),
            "region": args.to_region or (args.region if inherit else None),
            "table_prefix": args.to_table_prefix
            if args.to_table_prefix is not None
            else (args.table_prefix if inherit else None),
        }
    )
    return _settings(target)


def _file_size(stream: Any) -> int | None:
    """The size of a regular file being read, for the progress bar; None if unknown."""
    try:
        return os.fstat(stream.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None


def cmd_export(args: argparse.Namespace) -> int:
    from gateway.factory import build_dynamodb_service
    from gateway.migrate import Progress, export_collection

    bar = _progress_bar(args)
    to_stdout = args.out in (None, "-")
    partial = None if to_stdout else f"{args.out}.partial"
    try:
        with build_dynamodb_service(_decimal_settings(args)) as service, bar:
            _require_table(service, args.collection)  # before any output file is opened
            task = bar.add_task(f"export {args.collection}", total=None, status="", rate=None)

            def on_progress(p: Progress) -> None:
                bar.update(
                    task,
                    completed=p.documents,
                    status=_status(p.documents),
                    rate=_rate(p.documents, bar),
                )

            if partial is None:
                _utf8_stdout()
                summary = export_collection(service, args.collection, sys.stdout, on_progress)
                sys.stdout.flush()
            else:
                try:
                    out = open(partial, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
                except OSError as exc:
                    raise ValidationError(f"cannot write {partial}: {exc.strerror}") from exc
                with out:
                    summary = export_collection(service, args.collection, out, on_progress)
                os.replace(partial, args.out)
                partial = None
    except BrokenPipeError:  # e.g. `gateway export users | head`: not an error of ours
        return _quiet_broken_pipe()
    except OSError as exc:
        print(f"error: export of {args.collection!r} failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if partial is not None and os.path.exists(partial):  # an incomplete export
            os.remove(partial)
    where = "" if to_stdout else f" to {args.out}"
    print(summary.describe() + where, file=sys.stderr)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from gateway.factory import get_database_service
    from gateway.migrate import BadLine, MigrationInterrupted, Progress, import_lines

    name = "<stdin>" if args.file == "-" else args.file
    try:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ValidationError(f"cannot read {args.file}: {exc.strerror}") from exc
    bar = _progress_bar(args)
    last = Progress(documents=0, last_line_committed=max(args.resume_from, 1) - 1)
    try:
        size = _file_size(stream)
        with get_database_service(_settings(args)) as service, bar:
            task = bar.add_task(f"import {args.collection}", total=size, status="", rate=None)

            def lines() -> Any:
                for raw in stream:
                    bar.advance(task, len(raw))
                    yield raw

            def on_progress(p: Progress) -> None:
                nonlocal last
                last = p
                bar.update(
                    task, status=_status(p.documents, p.bad_lines), rate=_rate(p.documents, bar)
                )

            def on_bad_line(bad: BadLine) -> None:
                print(f"{name}:{bad.line_no}: {bad.reason}", file=sys.stderr)

            summary = import_lines(
                service,
                args.collection,
                lines(),
                batch_size=args.batch_size,
                skip_existing=args.skip_existing,
                into_empty=args.into_empty,
                max_in_flight=args.max_in_flight,
                start_line=args.resume_from,
                progress=on_progress,
                on_bad_line=on_bad_line,
            )
    except MigrationInterrupted as exc:
        print(exc.summary.describe(), file=sys.stderr)
        print(
            f"error: import stopped: {exc.__cause__}; resume with --resume-from {exc.resume_from}"
            + _no_longer_empty(args),
            file=sys.stderr,
        )
        # 1 whatever the error: writes were sent (a batch's first request may be stored and
        # a later one refused, uncounted), so 2, "nothing done", could be false.
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(
            f"error: interrupted after {_plural(last.documents, 'document')}; resume with "
            "--resume-from "
            f"{last.last_line_committed + 1}{_no_longer_empty(args)}",
            file=sys.stderr,
        )
        return 130
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    print(f"{summary.describe()} (from {name})", file=sys.stderr)
    if summary.bad_lines:
        print(
            f"error: {_plural(len(summary.bad_lines), 'line')} of {name} "
            f"{'was' if len(summary.bad_lines) == 1 else 'were'} not imported (listed above); "
            "the others were",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def cmd_copy(args: argparse.Namespace) -> int:
    from gateway.factory import build_dynamodb_service, get_database_service
    from gateway.migrate import MigrationInterrupted, Progress, copy_collection

    source_settings = _decimal_settings(args)
    target_settings = _target_settings(args)
    bar = _progress_bar(args)
    copied = 0
    try:
        with (
            build_dynamodb_service(source_settings) as source,
            get_database_service(target_settings) as target,
            bar,
        ):
            task = bar.add_task(f"copy {args.collection}", total=None, status="", rate=None)

            def on_progress(p: Progress) -> None:
                nonlocal copied
                copied = p.documents
                bar.update(
                    task,
                    completed=p.documents,
                    status=_status(p.documents),
                    rate=_rate(p.documents, bar),
                )

            summary = copy_collection(
                source,
                target,
                args.collection,
                target_db_name=args.to_collection,
                batch_size=args.batch_size,
                skip_existing=args.skip_existing,
                into_empty=args.into_empty,
                max_in_flight=args.max_in_flight,
                segments=args.segments,
                progress=on_progress,
            )
            if summary.documents == 0 and summary.skipped_existing == 0:
                # Nothing read (so nothing created): say so if the source has no table.
                _require_table(source, args.collection)
            route = f"{source!r} -> {target!r}"
    except MigrationInterrupted as exc:
        print(exc.summary.describe(), file=sys.stderr)
        print(
            f"error: copy stopped: {exc.__cause__}; run it again{_no_longer_empty(args)}",
            file=sys.stderr,
        )
        # 1 whatever the error: writes were sent (a batch's first request may be stored and
        # a later one refused, uncounted), so 2, "nothing done", could be false.
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(
            f"error: interrupted after {_plural(copied, 'document')}; run it again"
            f"{_no_longer_empty(args)}",
            file=sys.stderr,
        )
        return 130
    print(f"{summary.describe()}: {route}", file=sys.stderr)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from gateway.bench.command import run_bench

    return run_bench(args)


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
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

    from gateway.bench.command import add_arguments as add_bench_arguments

    add_bench_arguments(
        add(
            "bench",
            cmd_bench,
            "the bare service beside the gateway with each cache, on a read-heavy workload "
            "(embedded emulator unless an endpoint is configured; real AWS only with --aws)",
        )
    )

    # The commands that manage tables and caches live in gateway/commands_*.py, one idea each;
    # imported here, not at the top, because they import this module's helpers.
    from gateway import (
        commands_cache,
        commands_dax_emulator,
        commands_delete_table,
        commands_emulator,
        commands_indexes,
        commands_pitr,
        commands_streams,
    )

    commands_emulator.add_parser(commands)
    commands_dax_emulator.add_parsers(commands)
    tables = commands.add_parser(
        "tables", help="list, describe, create or delete tables; add declared indexes"
    )
    table_commands = tables.add_subparsers(dest="tables_command", required=True)
    add("list", cmd_tables_list, "list the tables that carry the table prefix", table_commands)
    add(
        "describe", cmd_tables_describe, "describe a collection's table", table_commands
    ).add_argument("collection")
    commands_indexes.add_parsers(table_commands)
    commands_delete_table.add_parser(table_commands)

    from gateway.typed_json import FORMATS

    get = add("get", cmd_get, "print a document as JSON")
    get.add_argument("collection")
    get.add_argument("id")
    get.add_argument(
        "--format",
        choices=FORMATS,
        default="json",
        help="json (default): plain JSON for people; Binary is printed as base64 text, sets as "
        "lists and numbers as JSON numbers (1.50 as 1.5), so a `put` of it may change types. "
        'dynamodb: DynamoDB JSON, one {"Item": ...} line as `gateway export` writes it, '
        "exact: `put --format dynamodb` (or `import`) saves the same item back",
    )
    put = add("put", cmd_put, "save a document given as JSON (full replace)")
    put.add_argument("collection")
    put.add_argument("id")
    put.add_argument(
        "json",
        metavar="DOC",
        help='the document, e.g. \'{"name": "Ada"}\', or - to read it from standard input',
    )
    put.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="json (default): plain JSON, numbers kept as written (1.50 stays 1.50); a "
        'document that looks like DynamoDB JSON (an _id of {"S": ...}) is refused unless '
        '--format json is given. dynamodb: DynamoDB JSON, {"Item": {...}} or the bare item, '
        "as `gateway get --format dynamodb` prints it: Binary, sets and numbers exact. _id "
        "and _rev in the document are ignored",
    )
    condition = put.add_mutually_exclusive_group()
    condition.add_argument("--if-rev", help="save only if the stored _rev equals this")
    condition.add_argument(
        "--if-absent",
        action="store_true",
        help="save only if no document has this id (create-only; the library's if_rev=ABSENT)",
    )
    delete = add("delete", cmd_delete, "delete a document")
    delete.add_argument("collection")
    delete.add_argument("id")
    delete.add_argument("--if-rev", help="delete only if the stored _rev equals this")

    commands_pitr.add_parsers(commands)
    commands_streams.add_parsers(commands)
    commands_cache.add_parsers(commands)

    export = add(
        "export",
        cmd_export,
        "write a collection as JSON Lines (DynamoDB JSON, one item a line) to stdout or --out",
    )
    export.add_argument("collection")
    export.add_argument(
        "--out", metavar="FILE", help="write to FILE (via FILE.partial, renamed when complete)"
    )
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    import_ = add(
        "import",
        cmd_import,
        "save every line of a JSON Lines file (DynamoDB JSON or plain JSON with _id) into a "
        "collection; bad lines are listed with their numbers",
    )
    import_.add_argument("collection")
    import_.add_argument("file", help="the JSON Lines file, or - for standard input")
    import_.add_argument(
        "--resume-from",
        type=int,
        default=1,
        metavar="N",
        help="start at line N (after an interruption: the last line committed + 1)",
    )
    _add_write_options(
        import_,
        read="the next lines are read",
        existing="leave documents already stored as they are",
        target="collection",
    )
    copy = add(
        "copy",
        cmd_copy,
        "copy a collection to another configuration (endpoint, region, table prefix or name)",
    )
    copy.add_argument("collection")
    copy.add_argument(
        "--to-config", metavar="YAML", help="the target's configuration (default: the source's)"
    )
    copy.add_argument("--to-endpoint-url", metavar="URL", help="the target's DynamoDB endpoint")
    copy.add_argument("--to-region", help="the target's AWS region")
    copy.add_argument("--to-table-prefix", metavar="PREFIX", help="the target's table prefix")
    copy.add_argument("--to-collection", metavar="NAME", help="the target collection's name")
    copy.add_argument(
        "--segments",
        type=int,
        default=4,
        metavar="N",
        help="parallel scan segments the source is read with (default 4)",
    )
    _add_write_options(
        copy,
        read="the source is read",
        existing="leave documents the target has as they are",
        target="target collection",
    )
    return parser


def _add_write_options(
    command: argparse.ArgumentParser, *, read: str, existing: str, target: str
) -> None:
    """The options `gateway import` and `gateway copy` share: how they write."""
    command.add_argument(
        "--batch-size", type=int, default=100, help="documents per save_many (default 100)"
    )
    command.add_argument(
        "--max-in-flight",
        type=int,
        default=8,
        metavar="N",
        help=f"batches saved at once while {read} (default 8)",
    )
    command.add_argument("--skip-existing", action="store_true", help=existing)
    command.add_argument(
        "--into-empty",
        action="store_true",
        help=f"the {target} must be empty (checked first): skip reading stored revisions",
    )
    command.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` console script."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # `gateway` alone: the help, as `gateway --help` prints it
        try:
            parser.print_help(sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            return _quiet_broken_pipe()
        return EXIT_OK
    args = parser.parse_args(argv)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # a closed pipe shows here, not in Python's final flush
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
