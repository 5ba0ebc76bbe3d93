"""The AWS Lambda form of the stream follower (handler ``gateway.streams.lambda_handler``).

For deployments that let a Lambda event source mapping read the DynamoDB streams instead of
the gateway's embedded follower. The handler works on the application's cache: its settings
come from the environment (the contract's variables, or the YAML file named by
``GATEWAY_CONFIG``), with the application's ``CACHE_BACKEND`` (``redis`` or ``tiered``),
``REDIS_URL``, ``cache.redis_key_prefix`` and ``DYNAMODB_TABLE_PREFIX``. No follower is
started, whatever ``STREAMS_INVALIDATION`` says: Lambda does the reading, this module only
applies what it is handed.

What a container keeps: the settings and the DynamoDB service (built on the first invocation),
and with ``redis`` the caching gateway around them. With ``tiered`` the cache tier is made for
each invocation and closed at its end: a tiered cache is a listed instance that other
instances' writes wait for (`gateway.caches.tiered`), and a container frozen between
invocations could not acknowledge them, so each write of the application in the moments after
an invocation would wait out the tiered lease (0.5 s). Closed, it leaves the list.

An invocation:

1. takes each record's table from its ``eventSourceARN``, and the collection from the table
   by removing ``DYNAMODB_TABLE_PREFIX`` (records of tables without the prefix, and of items
   that are not gateway documents, are skipped: they are not ours);
2. applies each collection's records with a `ChangeApplier` on the gateway, in the order of
   the event (stream order), up to `RECORDS_PER_APPLY` at a time;
3. answers ``{"batchItemFailures": [...]}`` (``ReportBatchItemFailures``).

Failure semantics. When records cannot be applied (the cache did not answer, or applying them
raised, e.g. ``DescribeTable`` was refused), the collection's remaining records are not
applied (records of one shard are applied in order, never past one that failed), and the
answer names the first record not applied: ``{"batchItemFailures": [{"itemIdentifier":
<its SequenceNumber>}]}``. Lambda then retries the batch from that record (per the event
source mapping's retry settings); the records after it are applied again, in order, which is
harmless (`gateway.streams.apply`: a change applied twice never puts an older copy in the
cache). An empty list means every record was applied or skipped. The
event source mapping must have ``FunctionResponseTypes: ["ReportBatchItemFailures"]``: without
it Lambda ignores the answer and counts the failed records as processed.

What raises (the whole batch fails, and is retried as a function error): a configuration the
handler cannot work with (`ConfigError`: no cache, ``memory``, ``dax``; a collection's cache
TTLs too short), and an event that is not a DynamoDB Streams event (`ValueError`: a record
without a table stream ARN).

Logging (logger ``gateway.streams.lambda``): a line per collection and invocation at INFO
(changes applied, lag), what was not applied at WARNING and ERROR.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Settings
from gateway.dynamodb import DynamoDBService
from gateway.errors import ConfigError
from gateway.factory import build_cache, build_dynamodb_service, build_gateway
from gateway.gateway import CachingGateway
from gateway.streams.apply import ChangeApplier
from gateway.streams.records import Change, change_from_record, table_of_stream_arn

_log = logging.getLogger("gateway.streams.lambda")

#: Changes handed to one `ChangeApplier.apply` call (a failure reports the first record of
#: the call that failed, so the records applied before it are not sent again).
RECORDS_PER_APPLY = 1000

#: Why each backend the handler cannot use is refused.
_REFUSED_BECAUSE = {
    "none": "there is no cache to keep up to date",
    "memory": "a memory cache lives inside each application process, and the Lambda "
    "function's memory is not your application's: what it applied would reach no one",
    "dax": "DAX's item cache cannot be told about changes (DAX only sees writes made through DAX)",
}


@dataclass
class Container:
    """What a Lambda container keeps between invocations (see the module docstring)."""

    settings: Settings
    service: DynamoDBService
    #: The caching gateway with ``redis``; None with ``tiered`` (one per invocation).
    gateway: CachingGateway | None


_lock = threading.Lock()
_container: Container | None = None


def lambda_settings() -> Settings:
    """The environment's settings, checked for the handler (`ConfigError` for a backend it
    cannot keep up to date). ``STREAMS_INVALIDATION`` is set to false: no embedded follower."""
    settings = Settings(STREAMS_INVALIDATION=False)
    backend = settings.CACHE_BACKEND
    if backend not in ("redis", "tiered"):
        reason = _REFUSED_BECAUSE.get(backend, "it has no cache tier")
        raise ConfigError(
            f"The DynamoDB Streams Lambda handler cannot use CACHE_BACKEND={backend!r}: "
            f"{reason}. Set CACHE_BACKEND to redis or tiered (the backend of your application), "
            "with the REDIS_URL, cache.redis_key_prefix and DYNAMODB_TABLE_PREFIX your "
            "application uses."
        )
    return settings


def container() -> Container:
    """The container's state, built on first use from the environment."""
    global _container
    with _lock:
        if _container is None:
            settings = lambda_settings()
            service = build_dynamodb_service(settings)
            try:
                gateway = (
                    build_gateway(settings, service, build_cache(settings))
                    if settings.CACHE_BACKEND == "redis"
                    else None
                )
            except BaseException:
                service.close()
                raise
            _container = Container(settings, service, gateway)
        return _container


def reset() -> None:
    """Close what the container keeps and forget it: the next invocation builds it again from
    the environment. (A Lambda container never needs this; tests do.)"""
    global _container
    with _lock:
        kept, _container = _container, None
    if kept is not None:
        if kept.gateway is not None:
            kept.gateway.close()  # its service too
        else:
            kept.service.close()


@contextmanager
def _invocation_gateway(kept: Container) -> Iterator[CachingGateway]:
    """The container's gateway (``redis``), or one made for this invocation (``tiered``) whose
    cache tier is closed at its end (the DynamoDB service is the container's)."""
    if kept.gateway is not None:
        yield kept.gateway
        return
    cache = build_cache(kept.settings)
    try:
        yield build_gateway(kept.settings, kept.service, cache)
    finally:
        cache.close()


@dataclass
class _Item:
    """One record of the event: where it is, its sequence number, and its change (None: not
    a gateway document)."""

    position: int
    sequence: str
    change: Change | None


@dataclass
class _Collection:
    db_name: str
    items: list[_Item] = field(default_factory=list)


def handle(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Apply a DynamoDB Streams event's records to the caches (see the module docstring)."""
    kept = container()
    records: Sequence[Mapping[str, Any]] = event.get("Records") or []
    collections = _group(records, kept.settings.DYNAMODB_TABLE_PREFIX)
    failed: list[_Item] = []
    if collections:
        with _invocation_gateway(kept) as gateway:
            applier = ChangeApplier(gateway, gateway.intent_ttl_s, gateway.clock)
            for collection in collections.values():
                first_failed = _apply(applier, collection)
                if first_failed is not None:
                    failed.append(first_failed)
    if not failed:
        return {"batchItemFailures": []}
    first = min(failed, key=lambda item: item.position)
    _log.error(
        "streams (lambda): records not applied (the cache did not answer, or applying failed: "
        "see above); reported for Lambda to retry the batch from record %d of %d, sequence "
        "number %s",
        first.position + 1,
        len(records),
        first.sequence,
    )
    return {"batchItemFailures": [{"itemIdentifier": first.sequence}]}


def _group(records: Sequence[Mapping[str, Any]], prefix: str) -> dict[str, _Collection]:
    """The records of our tables by collection, in event order; the others are skipped."""
    collections: dict[str, _Collection] = {}
    skipped = 0
    for position, record in enumerate(records):
        arn = record.get("eventSourceARN")
        try:
            table = table_of_stream_arn(str(arn))
        except ValueError as exc:
            raise ValueError(
                f"record {position} of the event is not a DynamoDB Streams record (its "
                f"eventSourceARN is {arn!r}): is the function mapped to a DynamoDB stream?"
            ) from exc
        if not table.startswith(prefix):
            skipped += 1
            continue
        db_name = table[len(prefix) :]
        body = record.get("dynamodb") or {}
        item = _Item(
            position, str(body.get("SequenceNumber", "")), change_from_record(record, table)
        )
        collections.setdefault(db_name, _Collection(db_name)).items.append(item)
    if skipped:
        _log.info(
            "streams (lambda): %d records of tables without the prefix %r skipped", skipped, prefix
        )
    return collections


def _apply(applier: ChangeApplier, collection: _Collection) -> _Item | None:
    """Apply the collection's changes in order; the first item not applied, or None."""
    items = [item for item in collection.items if item.change is not None]
    applied = 0
    newest = 0.0
    for start in range(0, len(items), RECORDS_PER_APPLY):
        chunk = items[start : start + RECORDS_PER_APPLY]
        changes = [item.change for item in chunk if item.change is not None]
        try:
            done = applier.apply(collection.db_name, changes)
        except ConfigError:
            raise  # the deployment's to fix: fail the invocation (see the module docstring)
        except Exception:
            _log.exception(
                "streams (lambda): applying %d changes of %r failed",
                len(changes),
                collection.db_name,
            )
            done = False
        if not done:
            _log.warning(
                "streams (lambda): the cache did not take %d changes of %r (%d applied before)",
                len(items) - applied,
                collection.db_name,
                applied,
            )
            return chunk[0]
        applied += len(chunk)
        newest = max(newest, *(change.created_at for change in changes))
    if applied:
        lag = max(0.0, time.time() - newest) if newest else None
        _log.info(
            "streams (lambda): %d changes of %r applied (lag %s)",
            applied,
            collection.db_name,
            "unknown" if lag is None else f"{lag:.3f} s",
        )
    return None
