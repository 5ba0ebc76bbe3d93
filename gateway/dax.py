"""DAX (Amazon DynamoDB Accelerator) as the cache: ``CACHE_BACKEND=dax``.

`build_dax_service` connects to the cluster named by ``DAX_ENDPOINT_URL`` with amazon-dax-client's
documented resource interface, ``AmazonDaxClient.resource(endpoint_url=..., region_name=...)``,
and hands that resource to `DynamoDBService` as its data plane: gets, saves, deletes, batches,
queries and scans go through DAX, with the same code as against DynamoDB. Describing and
creating tables goes to DynamoDB through boto3 (``DYNAMODB_ENDPOINT_URL``): DAX serves no control
plane. amazon-dax-client is an optional extra; without it, `ConfigError` says what to install.

The DAX client connects while it is constructed. An unreachable cluster fails fast: the client
raises ``NoRouteException`` within milliseconds when connections are refused, after the connect
timeout (``DYNAMODB_CONNECT_TIMEOUT_S``, per address the name resolves to) when packets are
dropped, or after the read timeout (``DYNAMODB_READ_TIMEOUT_S``) when a peer accepts but never
answers. That becomes a `ServiceUnavailableError` that names DAX and the endpoint. The client's
own retries are turned off so that the gateway's `RetryPolicy` stays the only retry loop.

DAX's caveats, and what the gateway does about each
----------------------------------------------------

* **Item reads are eventually consistent, by choice.** A strongly consistent read is not served
  by DAX: it passes through to DynamoDB and its result is not cached. ``DYNAMODB_CONSISTENT_READ``
  (true by default, for the bare service) would therefore make DAX a slower path to DynamoDB, so
  with DAX the service is built with ``consistent_read=False`` whatever that setting says: ``get``
  and ``get_many`` are answered from DAX's item cache. The price is DAX's consistency model. A
  write through DAX updates the item cache of the cluster's primary node at once and reaches the
  other nodes by replication, usually within a second, so a read served by another node can
  briefly return the previous version; a write that does not go through this cluster (another
  DAX cluster, the console, a direct DynamoDB client) is not seen until the cached item expires
  (the cluster's ``record-ttl-millis``, 5 minutes by default). Applications that need
  read-your-writes across processes on every read should use the ``redis`` backend instead.
* **Strongly consistent reads are used where correctness needs them.** Every read of a stored
  revision is strongly consistent: the one an unconditional ``save`` makes after a lost race,
  and the one made before a batch write (``save_many``, and coalesced saves and deletes).
  DAX passes these reads through to DynamoDB, so generations are always computed from the
  revision that is really stored.
* **Revisions and** ``if_rev`` **keep their meaning.** A ``save`` or ``delete`` with ``if_rev``
  is a DynamoDB conditional write sent through DAX. DAX forwards the condition to DynamoDB and
  raises ``ConditionalCheckFailedException`` as DynamoDB does (`ConflictError`). An
  unconditional ``save`` is a conditional ``PutItem`` too, or, with write coalescing, a
  ``BatchWriteItem`` whose revisions come from the consistent read above. DAX drops
  ``ReturnValuesOnConditionCheckFailure`` (amazondax has no field for it), so after a failed
  condition `DynamoDBService` reads the stored revision with a strongly consistent ``GetItem``.
* **Negative caching.** DAX caches "not found" answers: a ``get`` of a missing id stores a
  negative entry in the item cache, and an empty query result in the query cache. A write
  through DAX replaces the item's negative entry, so documents created through this gateway are
  seen; a document created outside this DAX cluster can read as missing until the negative entry
  expires (``record-ttl-millis``). The optional in-process tier adds at most its own
  ``CACHE_NEGATIVE_TTL_S`` to that.
* **The query cache is not invalidated by writes.** DAX caches ``Query`` and ``Scan`` results by
  their parameters until ``query-ttl-millis`` (5 minutes by default) or LRU eviction, and no write,
  not even one through DAX, updates them. Therefore:

  - ``list_all`` and ``iter_pages`` send *strongly consistent* scans (`DaxDataClient.scan` sets
    ``ConsistentRead``), which DAX passes through to DynamoDB: they see every acknowledged
    write, and are not cached (scans were never cached by the gateway either).
  - ``query`` (on a global secondary index, which DynamoDB only reads eventually consistently)
    is served from DAX's query cache and can miss writes made less than ``query-ttl-millis``
    ago, including writes through this gateway. Lower the cluster's ``query-ttl-millis`` (e.g.
    to 1000) if queries must follow writes closely.

* **Optional in-process tier** (``DAX_MEMORY_TIER=true``): a `CachingGateway` with a
  `MemoryCache` in front of the DAX-backed service. Writes through this gateway put the written
  document in the in-process cache (compare-and-set by generation), so a read that follows a
  write in this process returns it, with the same never-stale rules as the other backends. On a
  miss it loads what DAX serves (above).
* **Failures at run time.** A DAX node that cannot be reached or drops its connection raises
  socket errors or ``NoRouteException`` / ``ConnectionException`` inside amazondax; `DaxDataClient`
  turns them into `DaxConnectionError`, a botocore connection error, which the gateway's
  `RetryPolicy` retries (the DAX client then routes to another node) and finally reports as
  `ServiceUnavailableError`. DAX's ``AccessDeniedException`` and authentication failures become
  `AccessDeniedError` / `CredentialsError` naming the ``dax:*`` permission.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.config
from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from gateway.aws_errors import CREDENTIALS_ADVICE, error_code, error_message
from gateway.config import Settings, redact_url
from gateway.errors import (
    AccessDeniedError,
    ConfigError,
    CredentialsError,
    GatewayError,
    ServiceUnavailableError,
)
from gateway.factory import build_dynamodb_service, build_gateway, memory_tier
from gateway.service import DatabaseService

logger = logging.getLogger(__name__)

#: What to install when amazon-dax-client is missing.
DAX_INSTALL_HINT = "pip install 'dynamodb-gateway[dax]'"
#: The DAX client's ports when the URL names none: unencrypted and TLS clusters.
DAX_DEFAULT_PORTS: Mapping[str, int] = {"dax": 8111, "daxs": 9111}
#: amazondax error codes meaning that a node could not be talked to (its ``is_io_exception``).
DAX_IO_ERROR_CODES = frozenset(
    {"NoRouteException", "ConnectionException", "EndOfStreamException", "DecoderException"}
)
#: amazondax's code for a request or endpoint it rejects itself (a ``DaxValidationError``).
_DAX_VALIDATION_CODE = "ValidationException"
_ACCESS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})

_IAM_ADVICE = (
    "The caller's IAM identity needs the DAX data-plane permissions (dax:GetItem, "
    "dax:BatchGetItem, dax:PutItem, dax:DeleteItem, dax:BatchWriteItem, dax:Query, dax:Scan, "
    "dax:ConditionCheckItem) on the cluster, arn:aws:dax:<region>:<account>:cache/<cluster>, "
    "and the cluster's own service role needs the matching dynamodb:* permissions on the tables"
)


try:  # amazon-dax-client is an optional extra
    from amazondax.CborDecoder import NoMoreData as _NO_MORE_DATA
except ImportError:  # pragma: no cover - without it no DAX call is ever made

    class _NO_MORE_DATA(Exception):  # type: ignore[no-redef]
        """Stands for amazondax's end-of-stream error when amazondax is not installed."""


class DaxConnectionError(BotocoreConnectionError):
    """A DAX node could not be reached or dropped the connection (the gateway retries it)."""

    fmt = "DAX cluster {endpoint} could not be reached: {error}"


def restore_unprocessed_keys(
    sent: Mapping[str, Any], unprocessed: Mapping[str, Any]
) -> dict[str, Any]:
    """``unprocessed`` with each PutRequest's item replaced by the item that was sent: the one
    with the same ``_rev`` (every gateway write carries its own), else the one whose
    attributes it holds. An unprocessed put that matches nothing sent raises
    `ServiceUnavailableError` (never a silent loss)."""
    restored: dict[str, Any] = {}
    for table, requests in unprocessed.items():
        items = [r["PutRequest"]["Item"] for r in sent.get(table, []) if "PutRequest" in r]
        by_rev = {
            _freeze(item.get(_REV_ATTRIBUTE)): item for item in items if _REV_ATTRIBUTE in item
        }
        fixed = []
        for request in requests:
            put = request.get("PutRequest")
            if put is None:
                fixed.append(request)
                continue
            item = put.get("Item") or {}
            original = (
                by_rev.get(_freeze(item.get(_REV_ATTRIBUTE))) if _REV_ATTRIBUTE in item else None
            )
            if original is None:
                matches = [i for i in items if all(i.get(k) == v for k, v in item.items())]
                original = matches[0] if len(matches) == 1 else None
            if original is None:
                raise ServiceUnavailableError(
                    "DAX returned an unprocessed PutRequest that matches no item sent (its "
                    f"attributes: {sorted(item)}); the batch's outcome is unknown: read the "
                    "documents back before writing them again",
                    operation="BatchWriteItem",
                )
            fixed.append({"PutRequest": {"Item": original}})
        restored[table] = fixed
    return restored


def _freeze(value: Any) -> Any:
    return repr(value)


_REV_ATTRIBUTE = "_rev"


# --------------------------------------------------------------------------------------------
# Building the service
# --------------------------------------------------------------------------------------------


def build_dax_service(settings: Settings) -> DatabaseService:
    """The DynamoDB service with DAX as its data plane, optionally behind an in-process tier.

    Raises `ConfigError` when amazon-dax-client is not installed or the endpoint URL cannot be
    used, `CredentialsError` when the AWS chain has no credentials, and
    `ServiceUnavailableError` (naming DAX and the endpoint) when the cluster cannot be reached.
    """
    try:
        from amazondax import AmazonDaxClient
    except ImportError as exc:
        raise ConfigError(
            f"CACHE_BACKEND='dax' needs amazon-dax-client, which is not installed: "
            f"{DAX_INSTALL_HINT}"
        ) from exc
    if settings.DAX_ENDPOINT_URL is None:  # Settings already refuses this; be explicit anyway
        raise ConfigError(
            "CACHE_BACKEND='dax' needs DAX_ENDPOINT_URL (YAML cache.dax_endpoint_url), "
            "a dax:// or daxs:// cluster endpoint URL"
        )
    endpoint = dax_client_endpoint(settings.DAX_ENDPOINT_URL)
    where = redact_url(settings.DAX_ENDPOINT_URL)
    _require_credentials(settings.DYNAMODB_REGION, where)
    resource = connect_dax_resource(
        AmazonDaxClient.resource,
        endpoint,
        region_name=settings.DYNAMODB_REGION,
        config=dax_client_config(settings),
        where=where,
    )
    try:
        # Eventually consistent item reads: the only reads DAX serves (see the module docstring).
        dax_settings = settings.model_copy(update={"DYNAMODB_CONSISTENT_READ": False})
        service = build_dynamodb_service(dax_settings, data_resource=resource)
    except BaseException:
        _close_quietly(resource.meta.client)
        raise
    logger.info("Data plane through the DAX cluster %s", where)
    if not settings.DAX_MEMORY_TIER:
        return service
    try:
        return build_gateway(settings, service, memory_tier(settings))
    except BaseException:
        service.close()
        raise


def dax_client_endpoint(url: str) -> str:
    """``url`` as amazondax expects it: ``scheme://host:port``, with the scheme's default port.

    amazondax splits the network location on its first ``:``, so a user, password, path, query
    or IPv6 literal would be misread (and a password echoed in its error): those are refused
    with a `ConfigError` that does not repeat the URL's secret.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"DAX_ENDPOINT_URL {shown!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DAX_DEFAULT_PORTS:
        raise ConfigError(
            f"DAX_ENDPOINT_URL {shown!r} must start with dax:// (unencrypted cluster) or "
            "daxs:// (cluster with encryption in transit)"
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"DAX_ENDPOINT_URL {shown!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"DAX_ENDPOINT_URL {shown!r} must not contain a user or password: DAX authenticates "
            "with the AWS credentials of the standard chain (IAM), not with the URL"
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigError(
            f"DAX_ENDPOINT_URL {shown!r} must be only scheme://host[:port], e.g. "
            "daxs://my-cluster.abc123.dax-clusters.us-east-1.amazonaws.com"
        )
    if ":" in host:
        raise ConfigError(
            f"DAX_ENDPOINT_URL {shown!r}: the DAX client does not accept IPv6 literals; use the "
            "cluster's DNS name"
        )
    return f"{scheme}://{host}:{port or DAX_DEFAULT_PORTS[scheme]}"


def dax_client_config(settings: Settings) -> botocore.config.Config:
    """The DAX client's timeouts (the DynamoDB ones) with its own retries off.

    amazondax retries most errors twice by default (``RetryHandler.DEFAULT_RETRIES``), even a
    ``ConditionalCheckFailedException``; stacked under the gateway's `RetryPolicy` that would
    multiply attempts and hide them from its deadline and budget. Its connect timeout also
    bounds how long construction waits for the cluster (botocore's default would be 60 s).
    """
    return botocore.config.Config(
        connect_timeout=settings.DYNAMODB_CONNECT_TIMEOUT_S,
        read_timeout=settings.DYNAMODB_READ_TIMEOUT_S,
        retries={"max_attempts": 0},
    )


def connect_dax_resource(
    factory: Callable[..., Any],
    endpoint: str,
    *,
    region_name: str,
    config: botocore.config.Config,
    where: str | None = None,
) -> Any:
    """Call ``factory`` (``AmazonDaxClient.resource``) and wrap its client in `DaxDataClient`.

    Connection failures become gateway errors naming DAX and ``where`` (the endpoint as shown
    to people; defaults to ``endpoint``).
    """
    shown = where or endpoint
    try:
        resource = factory(endpoint_url=endpoint, region_name=region_name, config=config)
    except GatewayError:
        raise
    except Exception as exc:
        raise _connect_failure(exc, shown) from exc
    # Table objects take the resource's client when they are built, so swap it before any is.
    resource.meta.client = DaxDataClient(resource.meta.client, shown)
    return resource


def _require_credentials(region_name: str, where: str) -> None:
    # Without credentials amazondax fails its handshake, logs it, and reports NoRouteException:
    # "cannot reach the cluster" would send people to the network instead of the AWS chain.
    try:
        credentials = boto3.session.Session(region_name=region_name).get_credentials()
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise CredentialsError(
            f"No usable AWS credentials to connect to the DAX cluster {where}: {exc}. "
            f"{CREDENTIALS_ADVICE}"
        ) from exc
    if credentials is None:
        raise CredentialsError(
            f"No AWS credentials found to connect to the DAX cluster {where}: DAX authenticates "
            f"every connection with IAM (SigV4). {CREDENTIALS_ADVICE}"
        )


def _connect_failure(exc: BaseException, where: str) -> GatewayError:
    """The gateway error for a failure of ``AmazonDaxClient.resource`` (connecting)."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsError(
            f"No usable AWS credentials to connect to the DAX cluster {where}: {exc}. "
            f"{CREDENTIALS_ADVICE}"
        )
    if getattr(exc, "auth_error", False):
        return CredentialsError(
            f"The DAX cluster {where} rejected the AWS credentials: {error_message(exc)}. "
            f"{CREDENTIALS_ADVICE} {_IAM_ADVICE}.",
            code=error_code(exc),
        )
    code = error_code(exc)
    if code in _ACCESS_DENIED_CODES:
        return AccessDeniedError(
            f"Access to the DAX cluster {where} was denied: {error_message(exc)}. {_IAM_ADVICE}.",
            code=code,
        )
    if code == _DAX_VALIDATION_CODE:
        return ConfigError(
            f"DAX_ENDPOINT_URL {where!r}: the DAX client refused the endpoint: {error_message(exc)}"
        )
    detail = error_message(exc) if code else f"{type(exc).__name__}: {exc}"
    return ServiceUnavailableError(
        f"Could not connect to the DAX cluster at {where} (DAX_ENDPOINT_URL): "
        f"{code + ': ' if code else ''}{detail}. DAX is reachable only from inside the "
        "cluster's VPC: check that this host runs in that VPC (or one peered with it), that the "
        "cluster's security group allows inbound TCP on the cluster port (8111 for dax://, 9111 "
        "for daxs://) from it, that the cluster is 'available', and that the scheme matches the "
        "cluster's encryption in transit (daxs:// when it is on, dax:// when it is off). Each "
        "failed attempt is logged at INFO level by the 'amazondax' logger.",
        code=code,
        operation="Connect",
    )


def _close_quietly(client: Any) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # pragma: no cover - best effort while reporting another error
            logger.debug("closing the DAX client failed", exc_info=True)


# --------------------------------------------------------------------------------------------
# The data-plane client
# --------------------------------------------------------------------------------------------


class DaxDataClient:
    """The DAX client seen by boto3's resource: same calls, DAX failures made gateway-shaped.

    * socket errors and amazondax's I/O error codes (`DAX_IO_ERROR_CODES`) become
      `DaxConnectionError`, which `RetryPolicy` retries like any connection error;
    * ``AccessDeniedException`` and authentication failures become `AccessDeniedError` /
      `CredentialsError` with the ``dax:*`` permission to grant;
    * ``scan`` is always strongly consistent, so DAX passes it through to DynamoDB instead of
      answering from its query cache, which no write invalidates.

    Everything else (``meta``, ``close``, ...) is the wrapped client's.
    """

    def __init__(self, client: Any, endpoint: str) -> None:
        self._client = client
        self._endpoint = endpoint

    @property
    def wrapped(self) -> Any:
        """The DAX client underneath."""
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"DaxDataClient({self._endpoint})"

    # -- reads ----------------------------------------------------------------------------

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        """GetItem through DAX."""
        return self._call("GetItem", self._client.get_item, kwargs)

    def batch_get_item(self, **kwargs: Any) -> dict[str, Any]:
        """BatchGetItem through DAX."""
        return self._call("BatchGetItem", self._client.batch_get_item, kwargs)

    def query(self, **kwargs: Any) -> dict[str, Any]:
        """Query through DAX (answered from its query cache when eventually consistent)."""
        return self._call("Query", self._client.query, kwargs)

    def scan(self, **kwargs: Any) -> dict[str, Any]:
        """Scan through DAX, strongly consistent: passed through to DynamoDB, never cached."""
        kwargs["ConsistentRead"] = True
        return self._call("Scan", self._client.scan, kwargs)

    def transact_get_items(self, **kwargs: Any) -> dict[str, Any]:
        """TransactGetItems through DAX (always passed through to DynamoDB)."""
        return self._call("TransactGetItems", self._client.transact_get_items, kwargs)

    # -- writes ---------------------------------------------------------------------------

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        """PutItem through DAX (write-through: DynamoDB first, then the item cache)."""
        return self._call("PutItem", self._client.put_item, kwargs)

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        """DeleteItem through DAX."""
        return self._call("DeleteItem", self._client.delete_item, kwargs)

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        """UpdateItem through DAX."""
        return self._call("UpdateItem", self._client.update_item, kwargs)

    def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
        """BatchWriteItem through DAX, with the keys of unprocessed puts restored: amazondax
        2.1.0 hands back an unprocessed PutRequest without its key attributes
        (``Assemblers.py``), and resent as is it would be refused, or, coalesced, taken for
        written (see `restore_unprocessed_keys`)."""
        response = self._call("BatchWriteItem", self._client.batch_write_item, kwargs)
        unprocessed = response.get("UnprocessedItems")
        if unprocessed:
            response["UnprocessedItems"] = restore_unprocessed_keys(
                kwargs.get("RequestItems") or {}, unprocessed
            )
        return response

    def transact_write_items(self, **kwargs: Any) -> dict[str, Any]:
        """TransactWriteItems through DAX."""
        return self._call("TransactWriteItems", self._client.transact_write_items, kwargs)

    # -- internals ------------------------------------------------------------------------

    def _call(
        self, operation: str, method: Callable[..., dict[str, Any]], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            return method(**kwargs)
        except OSError as exc:  # socket errors, timeouts and TLS failures, raw from amazondax
            raise DaxConnectionError(
                endpoint=self._endpoint, error=f"{type(exc).__name__}: {exc}"
            ) from exc
        except _NO_MORE_DATA as exc:  # the node closed the connection in the middle of an answer
            raise DaxConnectionError(
                endpoint=self._endpoint, error="the connection closed in the middle of an answer"
            ) from exc
        except ClientError as exc:
            translated = self._translate(operation, exc)
            if translated is None:
                raise
            raise translated from exc

    def _translate(self, operation: str, exc: ClientError) -> Exception | None:
        """The error to raise instead of ``exc``, or None to let ``exc`` through."""
        # amazondax keeps its own codes (a connection closed before any answer:
        # ConnectionException) in ``exc.code``, not in the response.
        code = error_code(exc) or getattr(exc, "code", None)
        if code in DAX_IO_ERROR_CODES:
            return DaxConnectionError(
                endpoint=self._endpoint, error=f"{code}: {error_message(exc)}"
            )
        if getattr(exc, "auth_error", False):
            return CredentialsError(
                f"The DAX cluster {self._endpoint} rejected the AWS credentials for {operation}: "
                f"{error_message(exc)}. {CREDENTIALS_ADVICE}",
                code=code,
                operation=operation,
            )
        if code in _ACCESS_DENIED_CODES:
            return AccessDeniedError(
                f"Access denied for {operation} through the DAX cluster {self._endpoint}: "
                f"{error_message(exc)}. {_IAM_ADVICE}.",
                code=code,
                operation=operation,
            )
        return None


__all__ = [
    "DAX_DEFAULT_PORTS",
    "DAX_INSTALL_HINT",
    "DAX_IO_ERROR_CODES",
    "DaxConnectionError",
    "DaxDataClient",
    "build_dax_service",
    "connect_dax_resource",
    "dax_client_config",
    "dax_client_endpoint",
]
