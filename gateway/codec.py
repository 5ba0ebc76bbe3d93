"""Validation and DynamoDB type conversion, done before anything is sent.

The DynamoDB service writes through boto3's *resource* interface, which runs boto3's
``TypeSerializer`` itself. This module turns a user's JSON-like document into exactly the values
that serializer accepts (``Decimal`` for numbers, ``Binary`` for bytes, ``set`` / ``list`` /
``dict`` for collections) and rejects, with a `ValidationError` naming the path of the bad value
and what to do about it, everything DynamoDB or boto3 would refuse. It also converts what comes
back (`decode_item`) and makes fast private copies of decoded documents (`copy_document`).

Conventions worth knowing:

* **Nesting depth** is counted the way DynamoDB counts it: the value of a top-level attribute is
  at level 1 and the contents of a list or map at level *n* are at level *n* + 1. Any value at a
  level above `MAX_DEPTH` (32) is refused, so 31 maps wrapped around a scalar are fine and 32 are
  not. A set is one value: its elements are not a level of their own.
* **Numbers** must fit DynamoDB's number type: at most 38 significant digits (leading and
  trailing zeros do not count) and, unless zero, a magnitude from 1E-130. Nothing is ever
  rounded: a number that does not fit is refused. The upper bound is deliberately lower than
  DynamoDB's 9.99E+125, see `MAX_NUMBER_EXPONENT`.
* Hot paths dispatch on ``type(value) is ...`` first and only fall back to ``isinstance`` for
  subclasses (``IntEnum``, ``StrEnum``, ``OrderedDict``, ...), which are converted to the plain
  built-in types so that what is stored and cached is exactly what DynamoDB returns.
"""

from __future__ import annotations

import copy
import datetime
import enum
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal, DecimalException
from typing import Any, Final

from boto3.dynamodb.types import DYNAMODB_CONTEXT, Binary

from gateway.errors import ValidationError

#: A full table name (prefix included): 3 to 255 characters of ``[A-Za-z0-9_.-]``.
TABLE_NAME_RE: Final = re.compile(r"\A[A-Za-z0-9_.-]{3,255}\Z")
_TABLE_NAME_CHAR_RE: Final = re.compile(r"[A-Za-z0-9_.-]")
MIN_TABLE_NAME_CHARS: Final = 3
MAX_TABLE_NAME_CHARS: Final = 255
#: DynamoDB's limit for a partition key value, in UTF-8 bytes.
MAX_ID_BYTES: Final = 2048
#: DynamoDB's limit for a whole item (attribute names plus values).
MAX_ITEM_BYTES: Final = 400 * 1024
#: DynamoDB's limit for an attribute name (top-level or map key), in UTF-8 bytes.
MAX_ATTRIBUTE_NAME_BYTES: Final = 65535
#: DynamoDB's nesting limit: see the module docstring for how levels are counted.
MAX_DEPTH: Final = 32
#: DynamoDB's number precision.
MAX_SIGNIFICANT_DIGITS: Final = 38
#: DynamoDB's smallest positive magnitude is 1E-130 (``Decimal.adjusted()`` of -130).
MIN_NUMBER_EXPONENT: Final = -130
#: DynamoDB itself stores magnitudes up to 9.99...E+125.
DYNAMODB_MAX_NUMBER_EXPONENT: Final = 125
#: The largest ``Decimal.adjusted()`` accepted, i.e. magnitudes below 1E+38. DynamoDB would store
#: larger numbers, but it returns them in plain notation ("1000...0", more than 38 digits) and
#: boto3's resource deserializer then raises ``decimal.Rounded`` on every read of the item
#: (boto/boto3#2500, still open): one such number would make a document, and every scan page
#: holding it, unreadable. Refusing them up front is the safe choice.
MAX_NUMBER_EXPONENT: Final = MAX_SIGNIFICANT_DIGITS - 1
#: ``_rev`` is "<generation>-<32 hex digits>"; room reserved for it by `check_item_size` when the
#: item does not carry one yet (a 20-digit generation is far beyond any real document).
REV_RESERVE_BYTES: Final = len("_rev") + 20 + 1 + 32

_RESERVED_KEYS: Final = frozenset({"_id", "_rev"})
_NAME_LIMIT: Final = MAX_ATTRIBUTE_NAME_BYTES
# Integers strictly between -_INT_LIMIT and _INT_LIMIT have at most 38 digits: always valid.
_INT_LIMIT: Final = 10**MAX_SIGNIFICANT_DIGITS
# Our own copy of boto3's context: create_decimal() in it raises exactly when boto3's serializer
# would (too many digits, or an exponent it would have to clamp); copying keeps its flags private.
_BOTO_CONTEXT: Final = DYNAMODB_CONTEXT.copy()
# Smallest exponent boto3's context can represent without rounding (Etiny = Emin - prec + 1).
_BOTO_ETINY: Final = _BOTO_CONTEXT.Etiny()
_ZERO: Final = Decimal(0)
_REPR_MAX_CHARS: Final = 60


class _Invalid(Exception):
    """Internal: a bad value; the path is collected while the recursion unwinds."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        #: Path segments from the bad value up to the document (reversed).
        self.path: list[object] = []


def _short(value: object) -> str:
    """A repr short enough to quote in an error message."""
    text = repr(value)
    if len(text) > _REPR_MAX_CHARS:
        text = text[: _REPR_MAX_CHARS - 3] + "..."
    return text


def _format_path(segments: list[object]) -> str:
    """``doc['a'][3]['b']`` from reversed segments."""
    return "doc" + "".join(f"[{segment!r}]" for segment in reversed(segments))


def _invalid_to_error(exc: _Invalid) -> ValidationError:
    # Problems about the container itself read as a sentence: "doc['a'] is an empty set ...".
    verb = exc.problem.split(" ", 1)[0]
    separator = " " if verb in ("is", "has", "holds") else ": "
    return ValidationError(f"{_format_path(exc.path)}{separator}{exc.problem}")


# --------------------------------------------------------------------------------------------
# Names and ids


def validate_collection_name(db_name: object, prefix: str = "") -> str:
    """Return the table name ``prefix + db_name``, or raise `ValidationError`.

    The full name (prefix included) must be 3 to 255 characters of ``[A-Za-z0-9_.-]``.
    """
    if not isinstance(db_name, str):
        raise ValidationError(
            f"a collection name must be a str, got {type(db_name).__name__} {_short(db_name)}"
        )
    name = prefix + db_name
    if TABLE_NAME_RE.match(name):
        return name
    rule = (
        f"table names are {MIN_TABLE_NAME_CHARS} to {MAX_TABLE_NAME_CHARS} characters of "
        "letters, digits, '_', '-' and '.'"
    )
    shown = f"table name {_short(name)}" + (
        f" (prefix {prefix!r} + {_short(db_name)})" if prefix else ""
    )
    bad = sorted({c for c in name if not _TABLE_NAME_CHAR_RE.match(c)})
    if bad:
        where = (
            "the table prefix"
            if any(c in prefix for c in bad) and not any(c in db_name for c in bad)
            else "the collection name"
        )
        chars = ", ".join(repr(c) for c in bad[:10])
        raise ValidationError(f"{shown} is invalid: {where} contains {chars}; {rule}")
    if len(name) > MAX_TABLE_NAME_CHARS:
        if prefix and len(db_name) <= MAX_TABLE_NAME_CHARS:
            room = MAX_TABLE_NAME_CHARS - len(prefix)
            raise ValidationError(
                f"{shown} is {len(name)} characters: the table prefix "
                f"({_characters(len(prefix))}) makes it too long; {rule}, so with this prefix a "
                f"collection name can have at most {_characters(max(room, 0))}"
            )
        raise ValidationError(f"{shown} is {len(name)} characters, too long; {rule}")
    raise ValidationError(f"{shown} is {_characters(len(name))}, too short; {rule}")


def _characters(n: int) -> str:
    return f"{n} character" if n == 1 else f"{n} characters"


def validate_id(doc_id: object) -> str:
    """Return ``doc_id`` as a plain str if it is a usable document id, else `ValidationError`.

    An id is a non-empty str of at most `MAX_ID_BYTES` (2048) UTF-8 bytes.
    """
    if type(doc_id) is not str:
        if not isinstance(doc_id, str):
            raise ValidationError(
                f"a document id must be a str, got {type(doc_id).__name__} {_short(doc_id)}"
            )
        doc_id = str.__str__(doc_id)  # a str subclass: store the plain value
    if not doc_id:
        raise ValidationError("a document id must be a non-empty str, got ''")
    if doc_id.isascii() and len(doc_id) <= MAX_ID_BYTES:
        return doc_id
    try:
        size = len(doc_id.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"document id {_short(doc_id)} is not valid Unicode (it contains a lone surrogate, "
            "which UTF-8 cannot encode)"
        ) from exc
    if size > MAX_ID_BYTES:
        raise ValidationError(
            f"document id {_short(doc_id)} is {size} UTF-8 bytes; DynamoDB allows at most "
            f"{MAX_ID_BYTES}: use a shorter id (a hash of a long natural key, for example)"
        )
    return doc_id


def validate_ids(doc_ids: Iterable[str]) -> list[str]:
    """The ids of an iterable, each checked by `validate_id`, duplicates merged, in first-seen
    order; `ValidationError` for a str / bytes (one id, not an iterable of them) or a
    non-iterable."""
    if isinstance(doc_ids, (str, bytes)) or not isinstance(doc_ids, Iterable):
        raise ValidationError(
            f"Expected an iterable of document ids, got {type(doc_ids).__name__}: "
            "pass e.g. ['id1', 'id2']."
        )
    return list(dict.fromkeys(validate_id(doc_id) for doc_id in doc_ids))


# --------------------------------------------------------------------------------------------
# Numbers


def _check_decimal(d: Decimal) -> Decimal:
    """Validate a Decimal against DynamoDB's and boto3's number rules; never rounds.

    Returns ``d`` itself when boto3 can serialize it as is, else an equal Decimal that it can
    (trailing zeros folded into the exponent, or a canonical zero).
    """
    if not d.is_finite():
        if d.is_nan():
            raise _Invalid(
                f"{_short(d)} is not a number DynamoDB can store; use None for a missing value"
            )
        raise _Invalid(
            f"{_short(d)} (infinity) is not a number DynamoDB can store; use None or a "
            "sentinel value instead"
        )
    if not d:
        exponent = d.as_tuple().exponent
        assert isinstance(exponent, int)  # finite
        return d if _BOTO_ETINY <= exponent <= _BOTO_CONTEXT.Emax else _ZERO
    adjusted = d.adjusted()
    if MIN_NUMBER_EXPONENT <= adjusted <= MAX_NUMBER_EXPONENT:
        try:
            _BOTO_CONTEXT.create_decimal(d)
        except DecimalException:
            pass  # too many digits or a tiny exponent: see below
        else:
            return d
    if adjusted > DYNAMODB_MAX_NUMBER_EXPONENT or adjusted < MIN_NUMBER_EXPONENT:
        raise _Invalid(
            f"{_short(d)} is out of DynamoDB's number range (magnitudes from 1E-130 to "
            "9.99E+125, or zero); store it as a string, or rescale it"
        )
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)  # finite
    significant = len(digits)
    while digits[significant - 1] == 0:  # d is not zero, so this stops
        significant -= 1
    if significant > MAX_SIGNIFICANT_DIGITS:
        raise _Invalid(
            f"{_short(d)} has {significant} significant digits; DynamoDB keeps at most "
            f"{MAX_SIGNIFICANT_DIGITS} and the gateway never rounds silently: round it "
            "yourself (e.g. with Decimal.quantize) or store it as a string"
        )
    if adjusted > MAX_NUMBER_EXPONENT:
        raise _Invalid(
            f"{_short(d)} is 1E+38 or more in magnitude: DynamoDB stores it but returns it in a "
            "form boto3 cannot read back (boto/boto3#2500); store it as a string, or rescale it"
        )
    exponent += len(digits) - significant
    if exponent < _BOTO_ETINY:
        raise _Invalid(
            f"{_short(d)} has too many digits for its tiny magnitude: boto3 can only serialize "
            f"digits down to 1E{_BOTO_ETINY}; round it, or store it as a string"
        )
    return Decimal((sign, digits[:significant], exponent))


def _encode_float(f: float) -> Decimal:
    """A float as the Decimal of its shortest repr (so 0.1 becomes Decimal('0.1'))."""
    if not math.isfinite(f):
        what = "NaN" if f != f else "infinity"
        advice = "use None for a missing value" if f != f else "use None or a sentinel value"
        raise _Invalid(f"{what} ({f!r}) is not a number DynamoDB can store; {advice}")
    # float.__repr__, not repr(): a float subclass (numpy.float64) may repr as "np.float64(0.5)".
    d = Decimal(float.__repr__(f))
    # A float's repr has at most 17 digits, so only the range can be wrong.
    if f and not MIN_NUMBER_EXPONENT <= d.adjusted() <= MAX_NUMBER_EXPONENT:
        return _check_decimal(d)  # raises, with the right message
    return d


def _encode_int(i: int) -> Decimal:
    if -_INT_LIMIT < i < _INT_LIMIT:
        return Decimal(i)
    return _check_decimal(Decimal(i))


def _encode_number(value: Any) -> Decimal | None:
    """The Decimal for an int / float / Decimal (not bool), or None if ``value`` is not one."""
    t = type(value)
    if t is int:
        return _encode_int(value)
    if t is float:
        return _encode_float(value)
    if t is Decimal:
        return _check_decimal(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _encode_int(int(value))
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, Decimal):
        return _check_decimal(value)
    return None


# --------------------------------------------------------------------------------------------
# Strings, binary, keys


def _check_text(s: str) -> str:
    """``s`` if UTF-8 can encode it (no lone surrogates), else `_Invalid`."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid(
            f"string {_short(s)} is not valid Unicode (it contains a lone surrogate at index "
            f"{exc.start}, which UTF-8 cannot encode); fix the text, or store it as bytes"
        ) from None
    return s


def _encode_binary(value: object) -> Binary | None:
    """A new ``Binary`` over immutable bytes for bytes / bytearray / Binary, else None.

    Never the caller's own ``Binary``: its ``value`` is a writable attribute, and the encoded
    item is what the gateway caches.
    """
    if isinstance(value, Binary):
        raw = value.value
        return Binary(raw if type(raw) is bytes else bytes(raw))
    if isinstance(value, (bytes, bytearray)):
        return Binary(bytes(value))
    return None


def _check_key(key: object) -> str:
    """An attribute name / map key as a plain str, or `_Invalid`."""
    if not isinstance(key, str):
        raise _Invalid(
            f"has a key {_short(key)} of type {type(key).__name__}; attribute names and map "
            "keys must be non-empty str: convert the key with str()"
        )
    key = str.__str__(key)
    if not key:
        raise _Invalid("has an empty key ''; attribute names and map keys must be non-empty")
    if not key.isascii():
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise _Invalid(
                f"has a key {_short(key)} that is not valid Unicode (a lone surrogate)"
            ) from None
    else:
        size = len(key)
    if size > MAX_ATTRIBUTE_NAME_BYTES:
        raise _Invalid(
            f"has a key {_short(key)} of {size} UTF-8 bytes; DynamoDB allows at most "
            f"{MAX_ATTRIBUTE_NAME_BYTES}"
        )
    return key


# --------------------------------------------------------------------------------------------
# Documents


def encode_document(doc: object) -> dict[str, Any]:
    """Validate ``doc`` and return a new dict of the values boto3's resource interface stores.

    ``doc`` must be a Mapping with non-empty str keys; top-level ``_id`` and ``_rev`` are dropped
    (the service sets them). floats and ints become ``Decimal``, bytes-like values ``Binary``,
    tuples lists, frozensets sets, Mappings dicts. ``doc`` is never modified. Anything DynamoDB
    cannot store raises `ValidationError` naming the path of the value, e.g. ``doc['a'][3]``.
    """
    if not isinstance(doc, Mapping):
        raise ValidationError(
            f"a document must be a mapping (a dict) of attribute names to values, got "
            f"{type(doc).__name__} {_short(doc)}"
        )
    out: dict[str, Any] = {}
    try:
        for key, value in doc.items():
            if not (type(key) is str and key.isascii() and 0 < len(key) <= _NAME_LIMIT):
                key = _check_key(key)
            if key in _RESERVED_KEYS:
                continue
            try:
                out[key] = _encode_value(value, 1)
            except _Invalid as exc:
                exc.path.append(key)
                raise
    except _Invalid as exc:
        raise _invalid_to_error(exc) from None
    return out


def _encode_value(value: Any, depth: int) -> Any:
    """Encode one value found at nesting level ``depth`` (top-level attribute values: 1)."""
    t = type(value)
    if t is str:
        return value if value.isascii() else _check_text(value)
    if t is dict:
        return _encode_map(value, depth)
    if t is int:
        return _encode_int(value)
    if t is float:
        return _encode_float(value)
    if t is bool or value is None:
        return value
    if t is list or t is tuple:
        return _encode_list(value, depth)
    if t is Decimal:
        return _check_decimal(value)
    if t is bytes:
        return Binary(value)
    if t is set or t is frozenset:
        return _encode_set(value)
    return _encode_other(value, depth)


def _encode_other(value: object, depth: int) -> Any:
    """Subclasses of the supported types, and the error for everything else."""
    if isinstance(value, str):
        return _check_text(str.__str__(value))
    number = _encode_number(value)
    if number is not None:
        return number
    binary = _encode_binary(value)
    if binary is not None:
        return binary
    if isinstance(value, Mapping):
        return _encode_map(value, depth)
    if isinstance(value, (list, tuple)):
        return _encode_list(value, depth)
    if isinstance(value, (set, frozenset)):
        return _encode_set(value)
    raise _Invalid(_unsupported(value))


def _unsupported(value: object) -> str:
    """The message for a value of a type DynamoDB cannot store, with advice."""
    name = type(value).__module__ + "." + type(value).__qualname__
    name = name.removeprefix("builtins.")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        advice = "convert datetimes to ISO-8601 strings (value.isoformat())"
    elif isinstance(value, datetime.timedelta):
        advice = "store a number of seconds (value.total_seconds())"
    elif isinstance(value, uuid.UUID):
        advice = "convert UUIDs to strings (str(value))"
    elif isinstance(value, enum.Enum):
        advice = "store the member's value (value.value) or name (value.name)"
    elif isinstance(value, complex):
        advice = "store the real and imaginary parts as two numbers"
    elif isinstance(value, memoryview):
        advice = "convert it to bytes (bytes(value))"
    elif hasattr(value, "item") and hasattr(value, "dtype"):
        advice = "convert NumPy values to Python ones (value.item() or value.tolist())"
    else:
        advice = (
            "convert it to a str, number, bool, None, bytes, list, dict or set first "
            "(for an object, a dict of its fields)"
        )
    return f"{_short(value)} is of type {name}, which DynamoDB cannot store; {advice}"


def _too_deep(depth: int) -> _Invalid:
    return _Invalid(
        f"nesting is deeper than {MAX_DEPTH} levels (DynamoDB's limit): this container is at "
        f"level {depth}, so its contents would be at level {depth + 1}; flatten the document, "
        "or store the deep part as a JSON string"
    )


def _encode_map(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    if depth >= MAX_DEPTH and value:
        raise _too_deep(depth)
    out: dict[str, Any] = {}
    child = depth + 1
    for key, item in value.items():
        if not (type(key) is str and key.isascii() and 0 < len(key) <= _NAME_LIMIT):
            key = _check_key(key)
        t = type(item)
        try:
            if t is str:
                out[key] = item if item.isascii() else _check_text(item)
            elif t is bool or item is None:
                out[key] = item
            else:
                out[key] = _encode_value(item, child)
        except _Invalid as exc:
            exc.path.append(key)
            raise
    return out


def _encode_list(value: list[Any] | tuple[Any, ...], depth: int) -> list[Any]:
    if depth >= MAX_DEPTH and value:
        raise _too_deep(depth)
    out: list[Any] = []
    append = out.append
    child = depth + 1
    for index, item in enumerate(value):
        t = type(item)
        try:
            if t is str:
                append(item if item.isascii() else _check_text(item))
            elif t is bool or item is None:
                append(item)
            else:
                append(_encode_value(item, child))
        except _Invalid as exc:
            exc.path.append(index)
            raise
    return out


_SET_KINDS: Final = {"S": "strings", "N": "numbers", "B": "binary values"}


def _set_element_kind(element: object) -> str:
    """The set kind ("S", "N" or "B") of a valid set element, else `_Invalid`."""
    if isinstance(element, str):
        return "S"
    if isinstance(element, bool):
        raise _Invalid(
            "is a set holding booleans; DynamoDB sets hold only strings, numbers or binary "
            "values: use a list instead"
        )
    if isinstance(element, (int, float, Decimal)):
        return "N"
    if isinstance(element, (bytes, bytearray, Binary)):
        return "B"
    raise _Invalid(
        f"is a set holding {_short(element)} of type {type(element).__name__}; DynamoDB sets "
        "hold only strings, numbers or binary values: use a list instead"
    )


def _encode_set(value: set[Any] | frozenset[Any]) -> set[Any]:
    """A set of one kind (str, numbers or binary), element-wise encoded, as a new set.

    Two elements may become one (0.1 and Decimal('0.1') both encode to Decimal('0.1')).
    """
    if not value:
        raise _Invalid(
            "is an empty set, which DynamoDB cannot store; use a list instead of an empty set, "
            "or leave the attribute out"
        )
    kind = ""
    out: set[Any] = set()
    for element in value:
        element_kind = _set_element_kind(element)
        if kind != element_kind:
            if kind:
                raise _Invalid(
                    f"is a set mixing {_SET_KINDS[kind]} and {_SET_KINDS[element_kind]}; a "
                    "DynamoDB set holds one type only: use a list instead"
                )
            kind = element_kind
        try:
            if element_kind == "S":
                if type(element) is str and element.isascii():
                    out.add(element)
                else:
                    out.add(_check_text(str.__str__(element)))
            elif element_kind == "N":
                out.add(_encode_number(element))
            else:
                out.add(_encode_binary(element))
        except _Invalid as exc:
            raise _Invalid(f"holds a bad set element: {exc.problem}") from None
    return out


def encode_key_value(value: object, what: str) -> str | Decimal | Binary:
    """Validate a value used as a key in a Query (a non-empty str, a number or bytes).

    ``what`` describes the value in the error message, e.g. "the value queried on index 'x'".
    """
    try:
        if isinstance(value, str):
            text = _check_text(str.__str__(value))
            if not text:
                raise _Invalid("must be a non-empty str (key values cannot be empty)")
            if len(text) * 4 > MAX_ID_BYTES and len(text.encode("utf-8")) > MAX_ID_BYTES:
                raise _Invalid(f"is over {MAX_ID_BYTES} UTF-8 bytes, DynamoDB's key limit")
            return text
        if not isinstance(value, bool):
            number = _encode_number(value)
            if number is not None:
                return number
            binary = _encode_binary(value)
            if binary is not None:
                if not binary.value:
                    raise _Invalid("must be non-empty bytes (key values cannot be empty)")
                if len(binary.value) > MAX_ID_BYTES:
                    raise _Invalid(f"is over {MAX_ID_BYTES} bytes, DynamoDB's key limit")
                return binary
        raise _Invalid(
            f"is {_short(value)} of type {type(value).__name__}; a key value must be a str, a "
            "number or bytes"
        )
    except _Invalid as exc:
        raise ValidationError(f"{what} {exc.problem}") from None


# --------------------------------------------------------------------------------------------
# Item size


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _number_size(d: Decimal) -> int:
    """DynamoDB's size of a number: 1 byte per two significant digits, +1, +1 if negative."""
    text = str(d)  # about 4x faster than d.as_tuple() for the usual short numbers
    mantissa = text.partition("E")[0]
    significant = len(mantissa.replace(".", "").lstrip("-0").rstrip("0")) or 1
    return (significant + 1) // 2 + 1 + (text[0] == "-")


def _value_size(value: Any) -> int:
    t = type(value)
    if t is str:
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if t is Decimal:
        return _number_size(value)
    if t is bool or value is None:
        return 1
    if t is dict:
        size = 3
        for k, v in value.items():
            size += (len(k) if k.isascii() else _utf8_len(k)) + 1 + _value_size(v)
        return size
    if t is list:
        size = 3 + len(value)
        for v in value:
            size += _value_size(v)
        return size
    if t is Binary:
        return len(value.value)
    if t is set or t is frozenset:
        size = 0
        for v in value:
            size += _value_size(v)
        return size
    # Values not produced by encode_document (raw ints, floats, bytes, subclasses): size them
    # as what they would be encoded to.
    if isinstance(value, str):
        return _utf8_len(value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, Decimal):
        return _number_size(value)
    if isinstance(value, int):
        return _number_size(Decimal(int(value)))
    if isinstance(value, float):
        return _number_size(Decimal(float.__repr__(value)))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, Binary):
        return len(value.value)
    if isinstance(value, Mapping):
        return 3 + sum(_utf8_len(str(k)) + 1 + _value_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 3 + sum(1 + _value_size(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return sum(_value_size(v) for v in value)
    return len(repr(value).encode("utf-8", "surrogatepass"))


def item_size(item: Mapping[str, Any]) -> int:
    """The size DynamoDB counts for ``item``, in bytes (the 400 KB limit applies to it).

    Sum over attributes of the name's UTF-8 length plus the value's size: strings their UTF-8
    length; numbers ceil(significant digits / 2) + 1 (+1 if negative); binary its length;
    booleans and null 1; lists and maps 3 + 1 per element + the elements (with map keys); sets
    the sum of their elements. Numbers are an estimate, as in AWS's own documentation.
    """
    size = 0
    for name, value in item.items():
        size += (len(name) if name.isascii() else _utf8_len(name)) + _value_size(value)
    return size


def check_item_size(item: Mapping[str, Any], doc_id: str) -> int:
    """Return the item's size, or raise `ValidationError` if it is over `MAX_ITEM_BYTES`.

    When ``item`` has no ``_id`` (or ``_rev``) attribute yet, the size of ``_id = doc_id`` (and
    `REV_RESERVE_BYTES` for ``_rev``) is added, so this can be called on `encode_document`'s
    output directly.
    """
    size = item_size(item)
    if "_id" not in item:
        size += len("_id") + _utf8_len(doc_id)
    if "_rev" not in item:
        size += REV_RESERVE_BYTES
    if size > MAX_ITEM_BYTES:
        raise ValidationError(
            f"document {_short(doc_id)} is {size} bytes as a DynamoDB item, over DynamoDB's "
            f"limit of {MAX_ITEM_BYTES} bytes (400 KB, attribute names included); store large "
            "blobs in S3 and keep a pointer (bucket and key) in the document, or split it"
        )
    return size


# --------------------------------------------------------------------------------------------
# Reading back


def _native_number(d: Decimal) -> int | float:
    try:
        i = int(d)
    except (ValueError, OverflowError):  # NaN / infinity: never stored, but be total
        return float(d)
    return i if i == d else float(d)


def _to_native(value: Any) -> Any:
    t = type(value)
    if t is Decimal:
        return _native_number(value)
    if t is dict:
        return {k: _to_native(v) for k, v in value.items()}
    if t is list:
        return [_to_native(v) for v in value]
    if t is set:
        return {_to_native(v) for v in value}
    return value


def decode_item(item: dict[str, Any], native_numbers: bool) -> dict[str, Any]:
    """Convert an item the resource returned into what the caller gets.

    With ``native_numbers`` False the item is returned as is (not copied: this is the hot path).
    With True, a new structure in which every Decimal, in dicts, lists and sets at any depth,
    becomes an ``int`` if it is integral, else a ``float`` (so precision beyond a float's is
    lost, and two close numbers of a set may become one).
    """
    if not native_numbers:
        return item
    return {k: _to_native(v) for k, v in item.items()}


# --------------------------------------------------------------------------------------------
# Copies


# Types whose values are shared rather than copied: immutable. Not Binary (its ``value`` is a
# writable attribute) nor bytearray: both are copied.
_SHARED: Final = frozenset({str, Decimal, int, float, bool, type(None), bytes, frozenset})


def _copy_binary(value: Binary) -> Binary:
    """A new ``Binary``; its bytes are shared when immutable, copied otherwise."""
    raw = value.value
    return Binary(raw if type(raw) is bytes else copy.copy(raw))


def _copy_value(value: Any) -> Any:
    t = type(value)
    if t is dict:
        return {k: v if type(v) in _SHARED else _copy_value(v) for k, v in value.items()}
    if t is list:
        return [v if type(v) in _SHARED else _copy_value(v) for v in value]
    if t is Binary:
        return _copy_binary(value)
    if t is set:
        # Elements are str / numbers (immutable) or Binary (copied).
        return {_copy_binary(v) if type(v) is Binary else v for v in value}
    if t is bytearray:
        return bytearray(value)
    if t in _SHARED:
        return value
    return copy.deepcopy(value)  # anything unexpected: be correct rather than fast


def copy_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A private deep copy of a decoded document, much faster than ``copy.deepcopy``.

    dicts, lists and sets are copied at every depth, and so are ``Binary`` values (a new
    ``Binary`` each: their ``value`` attribute is writable) and bytearrays; immutable scalars
    (str, Decimal, int, float, bool, None, bytes) are shared; any other type falls back to
    deepcopy.
    """
    return {k: v if type(v) in _SHARED else _copy_value(v) for k, v in doc.items()}


__all__ = [
    "DYNAMODB_MAX_NUMBER_EXPONENT",
    "MAX_ATTRIBUTE_NAME_BYTES",
    "MAX_DEPTH",
    "MAX_ID_BYTES",
    "MAX_ITEM_BYTES",
    "MAX_NUMBER_EXPONENT",
    "MAX_SIGNIFICANT_DIGITS",
    "MIN_NUMBER_EXPONENT",
    "REV_RESERVE_BYTES",
    "TABLE_NAME_RE",
    "check_item_size",
    "copy_document",
    "decode_item",
    "encode_document",
    "encode_key_value",
    "item_size",
    "validate_collection_name",
    "validate_id",
    "validate_ids",
]
