"""What a run would cost on DynamoDB on-demand: request units, then dollars.

Prices are the on-demand ones of the spec: **$0.25 per million read request units** and
**$1.25 per million write request units**. The rules (DynamoDB's own):

* a strongly consistent read of an item of up to 4 KB is 1 RRU (every further 4 KB, one more);
  an eventually consistent read costs half; a transactional read, double;
* a write of an item of up to 1 KB is 1 WRU (every further 1 KB, one more); a transactional
  write, double; a conditional write whose condition fails is still billed;
* BatchGetItem and BatchWriteItem are billed per item, each item rounded up on its own;
* Query and Scan are billed per page on the total size of the items they scanned, rounded up
  to 4 KB, at least one unit a page;
* table management (CreateTable, DescribeTable...) is not billed per request.

Without the service's own figures the units are derived from the calls made, the items each
touched (see `gateway.bench.meter`) and the item size; when ``stats()`` reports the capacity
DynamoDB consumed (``consumed_capacity``), `units_from_consumed` reads that instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

READ_PRICE_PER_MILLION_USD = 0.25
WRITE_PRICE_PER_MILLION_USD = 1.25
READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024

READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
WRITE_OPERATIONS = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
)
SCANNING_OPERATIONS = frozenset({"Query", "Scan"})
TRANSACTIONAL_OPERATIONS = frozenset({"TransactGetItems", "TransactWriteItems"})


@dataclass(frozen=True)
class RequestUnits:
    """Read and write request units, and what they cost."""

    read: float = 0.0
    write: float = 0.0

    @property
    def dollars(self) -> float:
        """On-demand price of these units, in US dollars."""
        return (
            self.read * READ_PRICE_PER_MILLION_USD + self.write * WRITE_PRICE_PER_MILLION_USD
        ) / 1_000_000

    def dollars_per_million(self, operations: int) -> float:
        """Dollars per million ``operations`` (0.0 when there were none)."""
        return self.dollars * 1_000_000 / operations if operations else 0.0

    def __add__(self, other: RequestUnits) -> RequestUnits:
        return RequestUnits(self.read + other.read, self.write + other.write)

    def __sub__(self, other: RequestUnits) -> RequestUnits:
        return RequestUnits(self.read - other.read, self.write - other.write)


def read_units(item_bytes: int, *, consistent: bool = True) -> float:
    """RRU of reading one item of ``item_bytes`` with GetItem or in a BatchGetItem."""
    units = max(1, math.ceil(item_bytes / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def write_units(item_bytes: int) -> int:
    """WRU of writing (or deleting) one item of ``item_bytes``."""
    return max(1, math.ceil(item_bytes / WRITE_UNIT_BYTES))


def units_for_calls(
    db_calls: Mapping[str, int],
    item_bytes: int,
    *,
    consistent: bool = True,
    items: Mapping[str, int] | None = None,
) -> RequestUnits:
    """Request units of ``db_calls`` (operation name -> requests) on items of ``item_bytes``.

    ``items`` (operation name -> items touched) counts the items of batches and the items
    Query and Scan pages scanned; an operation missing there touched one item per call.
    """
    items = items or {}
    read = 0.0
    write = 0.0
    factor = 1.0 if consistent else 0.5
    for operation, calls in db_calls.items():
        if calls <= 0:
            continue
        count = items.get(operation, calls)
        double = 2 if operation in TRANSACTIONAL_OPERATIONS else 1
        if operation in SCANNING_OPERATIONS:
            scanned_units = math.ceil(count * item_bytes / READ_UNIT_BYTES)
            read += max(calls, scanned_units) * factor
        elif operation in READ_OPERATIONS:
            read += count * read_units(item_bytes, consistent=consistent) * double
        elif operation in WRITE_OPERATIONS:
            write += count * write_units(item_bytes) * double
    return RequestUnits(read, write)


# Keys of a read / write figure in a ``consumed_capacity`` mapping, lower-cased, letters only.
_READ_KEYS = frozenset({"read", "reads", "readunits", "readcapacityunits", "rcu", "rru"})
_WRITE_KEYS = frozenset({"write", "writes", "writeunits", "writecapacityunits", "wcu", "wru"})
_TOTAL_KEYS = frozenset({"capacityunits", "units", "total"})


def units_from_consumed(value: Any) -> RequestUnits | None:
    """The units in ``stats()["consumed_capacity"]``, or None if it is absent or unreadable.

    Accepted shapes: ``{"read": r, "write": w}`` (also ``read_capacity_units``,
    ``ReadCapacityUnits``, ``rcu``...); ``{operation: units}``; ``{operation: {"read": r,
    "write": w}}`` or ``{operation: {"CapacityUnits": u}}``, operations being DynamoDB names.
    """
    if not isinstance(value, Mapping) or not value:
        return None
    read = write = 0.0
    found = False
    for key, figure in value.items():
        name = _normalised(key)
        number = _number(figure)
        if name in _READ_KEYS and number is not None:
            read, found = read + number, True
        elif name in _WRITE_KEYS and number is not None:
            write, found = write + number, True
        elif key in READ_OPERATIONS or key in WRITE_OPERATIONS:
            units = _operation_units(key, figure)
            if units is not None:
                read, write, found = read + units.read, write + units.write, True
    return RequestUnits(read, write) if found else None


def _operation_units(operation: str, figure: Any) -> RequestUnits | None:
    number = _number(figure)
    if number is None and isinstance(figure, Mapping):
        nested = units_from_consumed(figure)
        if nested is not None:
            return nested
        totals = [_number(v) for k, v in figure.items() if _normalised(k) in _TOTAL_KEYS]
        number = next((n for n in totals if n is not None), None)
    if number is None:
        return None
    if operation in READ_OPERATIONS:
        return RequestUnits(read=number)
    return RequestUnits(write=number)


def _normalised(key: Any) -> str:
    return re.sub(r"[^a-z]", "", str(key).lower())


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    return None


def item_size(item: Mapping[str, Any]) -> int:
    """Approximate stored size in bytes of a DynamoDB item, by DynamoDB's sizing rules.

    Attribute names count their UTF-8 bytes; strings their UTF-8 bytes; numbers one byte per
    two significant digits plus one; booleans and null one byte; binary its length; a list or
    map 3 bytes plus one byte and the size of each element (a map's keys counted as names).
    """
    return sum(len(str(name).encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, (int, float, Decimal)):
        digits = Decimal(str(value)).normalize().as_tuple().digits
        return (len(digits) + 1) // 2 + 1
    if isinstance(value, Mapping):
        return 3 + sum(len(str(k).encode()) + _value_size(v) + 1 for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return sum(_value_size(v) for v in value)
    if isinstance(value, (list, tuple)):
        return 3 + sum(_value_size(v) + 1 for v in value)
    value_bytes = getattr(value, "value", None)  # boto3's Binary
    if isinstance(value_bytes, (bytes, bytearray)):
        return len(value_bytes)
    return len(str(value).encode())
