"""``gateway cache invalidate COLLECTION [ID]``: drop cached copies from the shared cache.

For documents changed behind the gateway's back (another tool, a restore, a stream consumer):
through the library, `CachingGateway.invalidate` for one document and `invalidate_collection`
for all of them (query answers included). Only a cache shared between processes (redis, tiered)
can be reached from a command: a memory cache lives inside each process, and DAX's item cache
cannot be invalidated by a client. Those are refused with an explanation rather than "done".
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from gateway.cli import EXIT_OK, _settings, to_json
from gateway.config import Settings
from gateway.errors import ConfigError, ServiceUnavailableError

if TYPE_CHECKING:  # the gateway module is imported when the command runs, not at start-up
    from gateway.gateway import CachingGateway

#: The backends whose cache other processes share, so that a command can invalidate it.
SHARED_CACHES = ("redis", "tiered")

_UNREACHABLE_BECAUSE = {
    "none": "there is no cache (CACHE_BACKEND is 'none'): nothing to invalidate. Set "
    "CACHE_BACKEND (YAML cache.backend) to the backend your application uses",
    "memory": "the memory cache lives inside each application process, out of this command's "
    "reach: call CachingGateway.invalidate / invalidate_collection in the process, or restart "
    "it (its entries also expire after cache.ttl_seconds)",
    "dax": "DAX's item cache cannot be invalidated by a client: its entries expire after the "
    "cluster's item TTL (a write through DAX replaces them at once)",
}


def require_shared_cache(settings: Settings) -> None:
    """`ConfigError` unless the configured cache is one this command can reach."""
    backend = settings.CACHE_BACKEND
    if backend not in SHARED_CACHES:
        reason = _UNREACHABLE_BECAUSE.get(backend, f"CACHE_BACKEND={backend!r} has no cache")
        raise ConfigError(f"Cannot invalidate: {reason}.")


def _check_done(gateway: CachingGateway, what: str) -> None:
    """An invalidation the cache did not take is queued for a background replay, which dies
    with this process: report it as a failure instead (`ServiceUnavailableError`, exit 1)."""
    if gateway.stats().get("pending_repairs", 0):
        raise ServiceUnavailableError(
            f"The cache could not be reached: {what} not invalidated. Run the command again "
            "when it is back.",
            operation="cache",
        )


def cmd_cache_invalidate(args: argparse.Namespace) -> int:
    from gateway.factory import get_database_service
    from gateway.gateway import CachingGateway

    settings = _settings(args)
    require_shared_cache(settings)
    with get_database_service(settings) as gateway:
        assert isinstance(gateway, CachingGateway)  # redis and tiered always build one
        if args.id is None:
            dropped = gateway.invalidate_collection(args.collection)  # raises if unreachable
            result: dict[str, Any] = {"collection": args.collection, "entries_dropped": dropped}
        else:
            gateway.invalidate(args.collection, args.id)
            _check_done(gateway, f"document {args.id!r} of {args.collection!r}")
            result = {"collection": args.collection, "id": args.id, "invalidated": True}
    print(to_json({**result, "cache_backend": settings.CACHE_BACKEND}))
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cache invalidate``."""
    cache = commands.add_parser("cache", help="the shared cache (redis, tiered): invalidate")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    text = (
        "drop a document (or, without ID, every document and query answer of a collection) "
        "from the configured shared cache (CACHE_BACKEND redis or tiered); the next read loads "
        "it from DynamoDB"
    )
    invalidate = cache_commands.add_parser("invalidate", help=text, description=text)
    invalidate.set_defaults(handler=cmd_cache_invalidate)
    invalidate.add_argument("collection")
    invalidate.add_argument("id", nargs="?", help="one document's id (default: all of them)")
