"""DynamoDB values in DAX's encodings: attribute values, keys, item values, attribute lists.

The emulator talks to DynamoDB with boto3's low-level client, so on that side values are
DynamoDB JSON as botocore gives them (``{"S": "x"}``, ``{"N": "1.5"}``, ``{"B": b"..."}``).
On DAX's side:

* an attribute value is one CBOR item: a text string (S), a number (N: an integer, a big
  integer or a decimal), a byte string (B), a tagged array (SS, NS, BS), a map with text keys
  (M), an array (L), null (NULL), a boolean (BOOL);
* a key is bytes built from the table's key schema: with a hash key only, the key's raw bytes
  (UTF-8 for S, raw for B) or, for N, its CBOR number; with a range key too, the hash key as a
  CBOR item followed by the range key's raw bytes (N in `lex_encode`'s order-preserving form);
* an item's other attributes are bytes: an attribute-list id (a CBOR integer) followed by the
  attribute values in that list's order, concatenated. Attribute lists are sorted tuples of
  names that the client and the server agree on through ``defineAttributeListId`` /
  ``defineAttributeList``; id 1 is the empty list.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from gateway.dax_emulator.cbor import (
    SET_TAG_BY_TYPE,
    BytesSource,
    DdbSet,
    Decoder,
    Encoder,
    Malformed,
    Ordinal,
    decode_all,
    lex_decode,
    lex_encode,
)

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]
#: A table's key schema: (name, type) of the hash key, then of the range key if any.
KeySchema = tuple[tuple[str, str], ...]
#: A document path: a top-level name, then names (map keys) and ints (list indexes).
Path = tuple[str | int, ...]

EMPTY_ATTRIBUTE_LIST_ID = 1


class BadRequest(Exception):
    """A request the emulator answers with DAX's ValidationException."""


# --------------------------------------------------------------------------------------------
# Attribute values
# --------------------------------------------------------------------------------------------


def number_text(value: Any) -> str:
    """A CBOR-decoded number as DynamoDB's string."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool):
        raise BadRequest("a boolean is not a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise BadRequest(f"expected a number, got {type(value).__name__}")


def to_attribute_value(obj: Any) -> AttributeValue:
    """A decoded CBOR item as a DynamoDB attribute value."""
    if obj is None:
        return {"NULL": True}
    if isinstance(obj, bool):
        return {"BOOL": obj}
    if isinstance(obj, str):
        return {"S": obj}
    if isinstance(obj, bytes):
        return {"B": obj}
    if isinstance(obj, (int, float, Decimal)):
        return {"N": number_text(obj)}
    if isinstance(obj, list):
        return {"L": [to_attribute_value(v) for v in obj]}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise BadRequest("a map attribute's keys must be strings")
        return {"M": {k: to_attribute_value(v) for k, v in obj.items()}}
    if isinstance(obj, DdbSet):
        if obj.kind == "NS":
            return {"NS": [number_text(v) for v in obj.values]}
        expected = str if obj.kind == "SS" else bytes
        if not all(isinstance(v, expected) for v in obj.values):
            raise BadRequest(f"bad element in a {obj.kind} set")
        return {obj.kind: list(obj.values)}
    raise BadRequest(f"not an attribute value: {type(obj).__name__}")


def write_attribute_value(enc: Encoder, av: Mapping[str, Any]) -> None:
    """Append ``av`` to ``enc`` in DAX's encoding."""
    if len(av) != 1:
        raise BadRequest(f"an attribute value has exactly one type, got {sorted(av)}")
    ((kind, value),) = av.items()
    if kind == "S":
        enc.text(value)
    elif kind == "N":
        enc.number(value)
    elif kind == "B":
        enc.blob(bytes(value))
    elif kind in SET_TAG_BY_TYPE:
        enc.tag(SET_TAG_BY_TYPE[kind]).array(len(value))
        for element in value:
            if kind == "SS":
                enc.text(element)
            elif kind == "NS":
                enc.number(element)
            else:
                enc.blob(bytes(element))
    elif kind == "M":
        enc.map(len(value))
        for name in sorted(value):
            enc.text(name)
            write_attribute_value(enc, value[name])
    elif kind == "L":
        enc.array(len(value))
        for element in value:
            write_attribute_value(enc, element)
    elif kind == "NULL":
        enc.null()
    elif kind == "BOOL":
        enc.boolean(bool(value))
    else:
        raise BadRequest(f"unknown attribute value type {kind!r}")


def attribute_value_bytes(av: Mapping[str, Any]) -> bytes:
    enc = Encoder()
    write_attribute_value(enc, av)
    return enc.getvalue()


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def _scalar(kind: str, obj: Any) -> AttributeValue:
    if kind == "S" and isinstance(obj, str):
        return {"S": obj}
    if kind == "B" and isinstance(obj, bytes):
        return {"B": obj}
    if kind == "N" and isinstance(obj, (int, Decimal)) and not isinstance(obj, bool):
        return {"N": number_text(obj)}
    raise BadRequest(f"key attribute of type {kind} given a {type(obj).__name__}")


def _raw_key_part(kind: str, raw: bytes) -> AttributeValue:
    if kind == "S":
        try:
            return {"S": raw.decode("utf-8")}
        except UnicodeDecodeError:
            raise BadRequest("a string key is not UTF-8") from None
    if kind == "B":
        return {"B": raw}
    try:
        return {"N": str(lex_decode(raw))}
    except (Malformed, ValueError, IndexError) as exc:
        raise BadRequest(f"bad numeric range key: {exc}") from None


def decode_key(data: Any, schema: KeySchema) -> Item:
    """The key that the client encoded as ``data`` with ``schema``."""
    if not isinstance(data, bytes):
        raise BadRequest("a key must be a byte string")
    (hash_name, hash_type) = schema[0]
    if len(schema) == 1:
        if hash_type == "N":
            try:
                return {hash_name: _scalar("N", decode_all(data)[0] if data else None)}
            except (IndexError, Malformed) as exc:
                raise BadRequest(f"bad numeric key: {exc}") from None
        return {hash_name: _raw_key_part(hash_type, data)}
    source = BytesSource(data)
    try:
        hash_value = Decoder(source).read_item()
    except Exception as exc:
        raise BadRequest(f"bad key: {exc}") from None
    (range_name, range_type) = schema[1]
    return {
        hash_name: _scalar(hash_type, hash_value),
        range_name: _raw_key_part(range_type, source.rest()),
    }


def encode_key(item: Mapping[str, AttributeValue], schema: KeySchema) -> bytes:
    """The key bytes of ``item`` (which holds at least the key attributes)."""
    enc = Encoder()
    (hash_name, hash_type) = schema[0]
    try:
        hash_value = item[hash_name][hash_type]
    except KeyError:
        raise BadRequest(f"the key attribute {hash_name!r} is missing") from None
    if len(schema) == 1:
        if hash_type == "N":
            return enc.number(hash_value).getvalue()
        return hash_value.encode("utf-8") if hash_type == "S" else bytes(hash_value)
    if hash_type == "S":
        enc.text(hash_value)
    elif hash_type == "N":
        enc.number(hash_value)
    else:
        enc.blob(bytes(hash_value))
    (range_name, range_type) = schema[1]
    try:
        range_value = item[range_name][range_type]
    except KeyError:
        raise BadRequest(f"the key attribute {range_name!r} is missing") from None
    if range_type == "S":
        enc.raw(range_value.encode("utf-8"))
    elif range_type == "N":
        enc.raw(lex_encode(Decimal(range_value)))
    else:
        enc.raw(bytes(range_value))
    return enc.getvalue()


def cache_key(table: str, key: Mapping[str, AttributeValue], schema: KeySchema) -> tuple[Any, ...]:
    """A key's identity for the item cache: numbers compared by value (1.50 is 1.5)."""
    parts: list[Any] = [table]
    for name, kind in schema:
        value = key[name][kind]
        parts.append(Decimal(value).normalize() if kind == "N" else value)
    return tuple(parts)


def compound_key_bytes(key: Mapping[str, AttributeValue]) -> bytes:
    """A LastEvaluatedKey of an index query or scan: a CBOR map of name to value."""
    enc = Encoder().map(len(key))
    for name, av in key.items():
        enc.text(name)
        write_attribute_value(enc, av)
    return enc.getvalue()


def decode_compound_key(data: Any) -> Item:
    if not isinstance(data, bytes):
        raise BadRequest("an ExclusiveStartKey must be a byte string")
    try:
        items = decode_all(data)
    except Exception as exc:
        raise BadRequest(f"bad ExclusiveStartKey: {exc}") from None
    if len(items) != 1 or not isinstance(items[0], dict):
        raise BadRequest("an index ExclusiveStartKey must be a map")
    return {str(k): to_attribute_value(v) for k, v in items[0].items()}


# --------------------------------------------------------------------------------------------
# Attribute lists and item values
# --------------------------------------------------------------------------------------------


class AttributeLists:
    """The attribute-list ids this server has given out (shared by every connection)."""

    def __init__(self, max_lists: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._by_names: dict[tuple[str, ...], int] = {(): EMPTY_ATTRIBUTE_LIST_ID}
        self._by_id: dict[int, tuple[str, ...]] = {EMPTY_ATTRIBUTE_LIST_ID: ()}
        self._max = max_lists

    def id_for(self, names: Sequence[str]) -> int:
        key = tuple(names)
        with self._lock:
            found = self._by_names.get(key)
            if found is not None:
                return found
            if len(self._by_id) >= self._max:
                raise BadRequest(f"more than {self._max} distinct attribute lists")
            new_id = len(self._by_id) + 1
            self._by_names[key] = new_id
            self._by_id[new_id] = key
            return new_id

    def names(self, list_id: int) -> tuple[str, ...]:
        with self._lock:
            found = self._by_id.get(list_id)
        if found is None:
            raise BadRequest(f"unknown attribute list id {list_id}")
        return found


def non_key_names(item: Mapping[str, Any], schema: KeySchema) -> list[str]:
    keys = {name for name, _ in schema}
    return sorted(name for name in item if name not in keys)


def decode_values(data: Any, lists: AttributeLists) -> Item:
    """An item's non-key attributes from their bytes (attribute-list id, then values)."""
    if not isinstance(data, bytes):
        raise BadRequest("item values must be a byte string")
    try:
        parts = decode_all(data)
    except Exception as exc:
        raise BadRequest(f"bad item values: {exc}") from None
    if not parts or not isinstance(parts[0], int) or isinstance(parts[0], bool):
        raise BadRequest("item values must start with an attribute list id")
    names = lists.names(parts[0])
    values = parts[1:]
    if len(values) != len(names):
        raise BadRequest(
            f"attribute list {parts[0]} has {len(names)} names, the item {len(values)} values"
        )
    return {name: to_attribute_value(v) for name, v in zip(names, values, strict=True)}


def encode_values(
    item: Mapping[str, AttributeValue], schema: KeySchema, lists: AttributeLists
) -> bytes:
    """The bytes of ``item``'s non-key attributes."""
    names = non_key_names(item, schema)
    enc = Encoder().integer(lists.id_for(names))
    for name in names:
        write_attribute_value(enc, item[name])
    return enc.getvalue()


def encode_partial(item: Mapping[str, AttributeValue], lists: AttributeLists) -> bytes:
    """UPDATED_OLD / UPDATED_NEW attributes: a list id, then a map of ordinal to value."""
    names = sorted(item)
    enc = Encoder().integer(lists.id_for(names)).map(len(names))
    for ordinal, name in enumerate(names):
        enc.integer(ordinal)
        write_attribute_value(enc, item[name])
    return enc.getvalue()


# --------------------------------------------------------------------------------------------
# Projections
# --------------------------------------------------------------------------------------------


def value_at(item: Mapping[str, AttributeValue], path: Path) -> AttributeValue | None:
    """The value at ``path`` in ``item``, or None."""
    first = path[0]
    if not isinstance(first, str):
        return None
    current: Any = item.get(first)
    for element in path[1:]:
        if current is None:
            return None
        if isinstance(element, str):
            current = current.get("M", {}).get(element) if "M" in current else None
        else:
            elements = current.get("L") if "L" in current else None
            current = (
                elements[element] if elements is not None and element < len(elements) else None
            )
    return current


def encode_projection(
    item: Mapping[str, AttributeValue], paths: Sequence[Path], enc: Encoder
) -> None:
    """A projected item as DAX sends it: a map of the path's ordinal to the value there."""
    found = [(i, value_at(item, p)) for i, p in enumerate(paths)]
    present = [(i, v) for i, v in found if v is not None]
    enc.map(len(present))
    for ordinal, value in present:
        enc.integer(ordinal)
        write_attribute_value(enc, value)


def path_elements(raw: Sequence[Any]) -> Path:
    elements: list[str | int] = []
    for element in raw:
        if isinstance(element, str):
            elements.append(element)
        elif isinstance(element, Ordinal):
            elements.append(element.index)
        else:
            raise BadRequest("bad document path element")
    return tuple(elements)
