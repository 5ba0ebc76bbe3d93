"""`RequestMeter`: how many items each DynamoDB request touched, for the cost estimate.

DynamoDB bills BatchGetItem and BatchWriteItem per item, and Query and Scan per page by the
size of what they scanned, so a count of calls alone cannot price a run whose reads are
coalesced into batches. The meter listens to two botocore events on the service's clients:
``before-parameter-build`` (the request's own parameters: the keys of a BatchGetItem, the
requests of a BatchWriteItem) and ``after-call`` (``ScannedCount`` of a Query or Scan page).
Every other data-plane operation touches one item.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

PARAMS_EVENT = "before-parameter-build.dynamodb"
AFTER_CALL_EVENT = "after-call.dynamodb"

#: Operations priced by the items they scanned (``ScannedCount`` of each page).
SCANNING_OPERATIONS = frozenset({"Query", "Scan"})


def items_in_request(operation: str, params: Mapping[str, Any]) -> int | None:
    """Items a batch request names (None for other operations, or Query and Scan)."""
    if operation == "BatchGetItem":
        return sum(len(table.get("Keys", ())) for table in params.get("RequestItems", {}).values())
    if operation == "BatchWriteItem":
        return sum(len(requests) for requests in params.get("RequestItems", {}).values())
    if operation in SCANNING_OPERATIONS:
        return None
    return 1


class RequestMeter:
    """Counts items per DynamoDB operation across the clients it is attached to (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Counter[str] = Counter()
        self._unique = f"gateway-bench-meter-{id(self)}"

    def attach(self, clients: Iterable[Any]) -> None:
        """Count the requests of ``clients`` (boto3 clients; idempotent)."""
        for client in clients:
            events = client.meta.events
            events.register(PARAMS_EVENT, self._on_params, unique_id=self._unique + "-params")
            events.register(AFTER_CALL_EVENT, self._on_response, unique_id=self._unique + "-call")

    def detach(self, clients: Iterable[Any]) -> None:
        """Stop counting the requests of ``clients``."""
        for client in clients:
            events = client.meta.events
            events.unregister(PARAMS_EVENT, unique_id=self._unique + "-params")
            events.unregister(AFTER_CALL_EVENT, unique_id=self._unique + "-call")

    def items(self) -> dict[str, int]:
        """Items touched so far, by operation name."""
        with self._lock:
            return dict(self._items)

    def _on_params(self, params: Mapping[str, Any], model: Any, **kwargs: Any) -> None:
        count = items_in_request(model.name, params)
        if count is not None:
            with self._lock:
                self._items[model.name] += count

    def _on_response(self, parsed: Mapping[str, Any], model: Any, **kwargs: Any) -> None:
        if model.name in SCANNING_OPERATIONS and isinstance(parsed, Mapping):
            scanned = int(parsed.get("ScannedCount", parsed.get("Count", 0)) or 0)
            with self._lock:
                self._items[model.name] += scanned
