"""``gateway demo``: save, read, list and delete documents, by default on the embedded emulator.

It never touches real AWS unless an endpoint or ``--region`` is given explicitly together with
``GATEWAY_USE_AWS=1``: no surprise tables, no surprise bills.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from gateway.config import Settings
from gateway.factory import get_database_service

DEMO_COLLECTION = "demo_users"


@contextlib.contextmanager
def _endpoint(settings: Settings, console: Console) -> Iterator[Settings]:
    """The configured endpoint, or an embedded emulator started for the demo."""
    if settings.DYNAMODB_ENDPOINT_URL or os.environ.get("GATEWAY_USE_AWS") == "1":
        yield settings
        return
    from gateway.emulator import EmbeddedDynamoDB, ensure_dummy_credentials

    ensure_dummy_credentials()
    started = time.monotonic()
    with EmbeddedDynamoDB() as emulator:
        console.print(
            f"[dim]embedded DynamoDB emulator at {emulator.endpoint_url} "
            f"(started in {time.monotonic() - started:.1f} s)[/dim]"
        )
        yield settings.model_copy(update={"DYNAMODB_ENDPOINT_URL": emulator.endpoint_url})


def _describe_cache(backend: str, stats: dict[str, object]) -> str:
    """The configured cache and, for a caching gateway, its hits and misses."""
    if backend == "none":
        return "none (every read goes to DynamoDB)"
    if "hits" in stats:
        return f"{backend}: {stats['hits']} hits, {stats['misses']} misses"
    return backend


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and print what happened."""
    from gateway.cli import _settings

    console = Console()
    count = max(1, int(getattr(args, "documents", 50)))
    with (
        _endpoint(_settings(args), console) as settings,
        get_database_service(settings) as service,
    ):
        started = time.perf_counter()
        revs = {}
        for i in range(count):
            doc = {"name": f"user {i}", "age": 20 + i % 50, "score": i / 3, "tags": {"demo"}}
            revs[f"u{i}"] = service.save(DEMO_COLLECTION, f"u{i}", doc)["rev"]
        saved_s = time.perf_counter() - started
        first = service.get(DEMO_COLLECTION, "u0")
        everything = service.list_all(DEMO_COLLECTION)
        service.delete(DEMO_COLLECTION, "u0")
        gone = service.get(DEMO_COLLECTION, "u0")
        service.delete_many(DEMO_COLLECTION, [f"u{i}" for i in range(count)])
        left = service.list_all(DEMO_COLLECTION)
        stats = service.stats()
        cache = settings.CACHE_BACKEND

    table = Table(title="gateway demo")
    table.add_column("step")
    table.add_column("result")
    table.add_row("save", f"{count} documents in {saved_s * 1000:.0f} ms")
    table.add_row("get u0", repr(first))
    table.add_row("rev of u0", revs["u0"])
    table.add_row("list_all", f"{len(everything)} documents")
    table.add_row("delete u0, then get", repr(gone))
    table.add_row("delete_many, then list_all", f"{len(left)} documents")
    table.add_row("cache (CACHE_BACKEND)", _describe_cache(cache, stats))
    table.add_row(
        "DynamoDB calls", ", ".join(f"{k}={v}" for k, v in sorted(stats["db_calls"].items()))
    )
    console.print(table)
    ok = first is not None and len(everything) == count and gone is None and not left
    return 0 if ok else 1
