"""The cache codec: `Entry` <-> bytes, safe to read from a cache an attacker may control.

Nothing here can execute code or build arbitrary objects: no pickle, no eval, no YAML. Decoding
only ever produces ``str``, ``Decimal``, ``int``, ``float``, ``bool``, ``None``, ``bytes``,
``bytearray``, `Binary`, ``list``, ``tuple``, ``dict``, ``set`` and ``frozenset``, and anything
malformed raises `CacheCodecError` (which backends turn into a MISS and an error count).

Wire format (version 2)
-----------------------

An ASCII header of ``|``-terminated fields, the revision, then the body::

    v2|<ver>|<uver>|<intents>|<kind>|<generation>|<stored_at>|<rev length>|<rev>|<body>

* ``v2`` — the format version (`MAX_VERSION` is the newest this module reads; version 1, which
  had no ``<ver>`` and ``<intents>``, is refused: its entries read as misses).
* ``<ver>``, ``<uver>`` — the record's versions (see `gateway.caches.base`), non-negative
  integers.
* ``<intents>`` — the write intents in flight, ``<id>:<deadline ms>:<o or u>`` (ordered or
  not) joined by ``,`` (empty for none). Only the Redis scripts write ``<uver>`` and
  ``<intents>`` (`RECORD_LUA_PATTERN` reads the three fields); decoding skips them.
* ``<kind>`` — one digit, the `Kind` value (1 document, 2 absent, 3 floor: no answer).
* ``<generation>`` — the generation in canonical decimal (``-?[0-9]+``, no leading zeros).
* ``<stored_at>`` — ``repr`` of the float ``stored_at`` (bit-exact).
* ``<rev length>`` — the UTF-8 length of the revision in bytes, or empty when ``rev`` is None
  (``...||<body>``; an empty revision is ``...|0||<body>``). Length-prefixed, so a revision
  written by someone else may contain any character, ``|`` included.
* ``<rev>`` — the revision, UTF-8 (empty for None), followed by ``|``.
* ``<body>`` — ``_`` when ``document`` is None; else one mode byte and JSON (UTF-8, no spaces):

  - ``D<json>`` — numbers are ``Decimal`` (decoded with ``parse_float=parse_int=Decimal``, so
    ``Decimal('1.50')`` comes back as ``'1.50'``, exponent included);
  - ``N<json>`` — numbers are native: ``int`` literals stay ``int`` and floats are their
    ``repr`` (bit-exact);
  - ``d<n>|<patches><json>`` and ``n<n>|<patches><json>`` — the same, followed by ``<n>`` bytes
    of ASCII JSON: a list of patches ``[code, *path]`` applied in order after loading, for the
    values the mode's JSON cannot express. ``path`` is the dict keys and list indices from the
    root to the value; ``code`` says what the placeholder becomes:

    ====  =====================================================================
    i     int (placeholder: an integer literal, loaded as Decimal in D mode)
    f     float (placeholder: its repr, loaded as Decimal in D mode)
    D     Decimal (placeholder: its ``str`` in a JSON string, N mode)
    b     bytes (placeholder: base64 in a JSON string); ``B`` Binary, ``a`` bytearray
    T     tuple (placeholder: a list; emitted after the patches of its contents)
    S<c>  set, from a list whose every element converts with code ``c`` (``-``: as loaded)
    M<cs> set, from a list whose i-th element converts with the i-th code of ``cs``
    F, G  frozenset, like ``S`` and ``M``
    ====  =====================================================================

The encoder picks the mode with fewer patches: services with Decimal numbers (the default) get
``D`` and services with native numbers get ``N``, so a typical document has no patch at all and
its hit path is one ``bytes.split``, one UTF-8 decode and one ``json`` C-scanner pass. Dict keys are
plain JSON object keys: no key (``"__t"`` included) has a meaning of its own, because the type
information travels in the patch list, never inside the document.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from decimal import Decimal
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, Final

from boto3.dynamodb.types import Binary

from gateway.caches.base import Entry, Kind
from gateway.caches.errors import CacheCodecError

#: The newest format version this module reads (and the one it writes).
MAX_VERSION: Final = 2

#: A Lua pattern (for ``string.match``) that reads a record's versions and intents, then the
#: position where the entry proper (``<kind>|...``) starts.
RECORD_LUA_PATTERN: Final = "^v2|(%d+)|(%d+)|([^|]*)|()"

_VERSION_FIELD: Final = b"v%d" % MAX_VERSION
_KINDS: Final = {b"%d" % kind: kind for kind in Kind}
_SEP: Final = "|"
# Integers of a patch ``i`` are limited like ``int(str)`` is (sys.get_int_max_str_digits), so
# that a forged "1E+999999999" cannot make the decoder build a gigantic integer.
_MAX_INT_DIGITS: Final = 4300

_NO_DOCUMENT: Final = b"_"
_MODE_NONE: Final = "_"
_MODE_DECIMAL: Final = "D"
_MODE_NATIVE: Final = "N"
_MODE_DECIMAL_PATCHED: Final = "d"
_MODE_NATIVE_PATCHED: Final = "n"


# --------------------------------------------------------------------------------------------
# Encoding


def encode_entry(entry: Entry) -> bytes:
    """The wire form of ``entry`` (see the module docstring).

    Raises `CacheCodecError` for a value the codec cannot represent exactly (a non-str dict
    key, NaN or infinity, an unknown type, a cycle...).
    """
    try:
        kind = Kind(entry.kind)
        generation = entry.generation
        if type(generation) is not int:
            if isinstance(generation, bool) or not isinstance(generation, int):
                raise CacheCodecError(f"generation must be an int, not {generation!r}")
            generation = int(generation)
        stored_at = float(entry.stored_at)
        rev = entry.rev
        if rev is None:
            rev_field = b"||"
        elif isinstance(rev, str):
            rev_bytes = rev.encode("utf-8", "surrogatepass")
            rev_field = b"%d|%s|" % (len(rev_bytes), rev_bytes)
        else:
            raise CacheCodecError(f"rev must be a str or None, not {type(rev).__name__}")
        ver = entry.ver
        if type(ver) is not int or ver < 0:
            raise CacheCodecError(f"ver must be a non-negative int, not {ver!r}")
        header = b"%s|%d|0||%d|%d|%s|" % (
            _VERSION_FIELD,
            ver,
            kind,
            generation,
            float.__repr__(stored_at).encode("ascii"),
        )
        return header + rev_field + _encode_body(entry.document)
    except CacheCodecError:
        raise
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise CacheCodecError(f"cannot encode cache entry: {exc}") from exc


def _encode_body(document: Any) -> bytes:
    if document is None:
        return _NO_DOCUMENT
    counts = [0, 0]  # Decimals, native numbers
    _count_numbers(document, counts)
    native = counts[1] > counts[0]
    encoder = _BodyEncoder(native)
    text = encoder.value(document)
    if not encoder.patches:
        mode = _MODE_NATIVE if native else _MODE_DECIMAL
        return (mode + text).encode("utf-8", "surrogatepass")
    patches = json.dumps(encoder.patches, separators=(",", ":"), allow_nan=False)  # ASCII
    mode = _MODE_NATIVE_PATCHED if native else _MODE_DECIMAL_PATCHED
    return f"{mode}{len(patches)}|{patches}{text}".encode("utf-8", "surrogatepass")


def _count_numbers(value: Any, counts: list[int]) -> None:
    """Count Decimals (``counts[0]``) and ints/floats (``counts[1]``) at every depth."""
    if isinstance(value, (str, bool)) or value is None:
        return
    if isinstance(value, Decimal):
        counts[0] += 1
    elif isinstance(value, (int, float)):
        counts[1] += 1
    elif isinstance(value, dict):
        for item in value.values():
            _count_numbers(item, counts)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _count_numbers(item, counts)


def _decimal_text(d: Decimal) -> str:
    if not d.is_finite():
        raise CacheCodecError(f"cannot cache a non-finite number: {d!r}")
    return Decimal.__str__(d)


def _float_text(f: float) -> str:
    if not math.isfinite(f):
        raise CacheCodecError(f"cannot cache a non-finite number: {f!r}")
    return float.__repr__(f)


def _base64_text(data: bytes | bytearray) -> str:
    return '"' + base64.b64encode(data).decode("ascii") + '"'


class _BodyEncoder:
    """Writes the JSON of a document and collects the patches its mode needs."""

    __slots__ = ("native", "patches", "path")

    def __init__(self, native: bool) -> None:
        self.native = native
        self.patches: list[list[Any]] = []
        self.path: list[str | int] = []

    def _patch(self, code: str) -> None:
        self.patches.append([code, *self.path])

    def value(self, value: Any) -> str:
        t = type(value)
        if t is str:
            return encode_basestring(value)  # type: ignore[no-any-return]
        if t is dict:
            return self._dict(value)
        if t is list:
            return self._list(value)
        if t is Decimal:
            if self.native:
                self._patch("D")
                return '"' + _decimal_text(value) + '"'
            return _decimal_text(value)
        if t is bool:
            return "true" if value else "false"
        if value is None:
            return "null"
        if t is int:
            if not self.native:
                self._patch("i")
            return int.__repr__(value)
        if t is float:
            if not self.native:
                self._patch("f")
            return _float_text(value)
        if t is set or t is frozenset:
            return self._set(value, t is frozenset)
        if t is Binary:
            self._patch("B")
            return _base64_text(value.value)
        if t is bytes:
            self._patch("b")
            return _base64_text(value)
        if t is bytearray:
            self._patch("a")
            return _base64_text(value)
        if t is tuple:
            text = self._list(value)
            self._patch("T")
            return text
        return self.value(_builtin(value))

    def _dict(self, value: dict[Any, Any]) -> str:
        parts = []
        path = self.path
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise CacheCodecError(f"dict keys must be str, not {type(key).__name__}")
                key = str.__str__(key)
            path.append(key)
            parts.append(encode_basestring(key) + ":" + self.value(item))
            path.pop()
        return "{" + ",".join(parts) + "}"

    def _list(self, value: list[Any] | tuple[Any, ...]) -> str:
        parts = []
        path = self.path
        for index, item in enumerate(value):
            path.append(index)
            parts.append(self.value(item))
            path.pop()
        return "[" + ",".join(parts) + "]"

    def _set(self, value: set[Any] | frozenset[Any], frozen: bool) -> str:
        texts = []
        codes = []
        for item in value:
            text, code = self._set_element(item)
            texts.append(text)
            codes.append(code)
        distinct = set(codes)
        if len(distinct) <= 1:
            self._patch(("F" if frozen else "S") + (codes[0] if codes else "-"))
        else:
            self._patch(("G" if frozen else "M") + "".join(codes))
        return "[" + ",".join(texts) + "]"

    def _set_element(self, item: Any) -> tuple[str, str]:
        t = type(item)
        if t is str:
            return encode_basestring(item), "-"
        if t is Decimal:
            if self.native:
                return '"' + _decimal_text(item) + '"', "D"
            return _decimal_text(item), "-"
        if t is int:
            return int.__repr__(item), "-" if self.native else "i"
        if t is float:
            return _float_text(item), "-" if self.native else "f"
        if t is Binary:
            return _base64_text(item.value), "B"
        if t is bytes:
            return _base64_text(item), "b"
        if t is bool:
            return ("true" if item else "false"), "-"
        if item is None:
            return "null", "-"
        converted = _builtin(item)
        if type(converted) in (tuple, frozenset):
            raise CacheCodecError(f"cannot cache a set element of type {t.__name__}")
        return self._set_element(converted)


_BUILTIN_BASES: Final[tuple[Any, ...]] = (
    bool,
    Decimal,
    int,
    float,
    dict,
    list,
    tuple,
    set,
    frozenset,
    bytes,
)


def _builtin(value: Any) -> Any:
    """The built-in equivalent of an instance of a subclass (IntEnum, StrEnum, OrderedDict...)."""
    if isinstance(value, str):
        return str.__str__(value)  # str(): an enum's name, not its value
    for base in _BUILTIN_BASES:
        if isinstance(value, base):
            return base(value)
    if isinstance(value, Binary):
        return Binary(value.value)
    raise CacheCodecError(f"cannot cache a value of type {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Decoding


def _reject_constant(name: str) -> Any:
    raise CacheCodecError(f"non-finite number {name} in a cache entry")


_DECIMAL_JSON: Final = json.JSONDecoder(
    parse_float=Decimal, parse_int=Decimal, parse_constant=_reject_constant
)
_NATIVE_JSON: Final = json.JSONDecoder(parse_constant=_reject_constant)
_PATCH_JSON: Final = json.JSONDecoder(parse_constant=_reject_constant)


def decode_entry(data: bytes) -> Entry:
    """The `Entry` encoded in ``data``; raises `CacheCodecError` if ``data`` is not one."""
    try:
        fields = data.split(b"|", 8)
        if fields[0] != _VERSION_FIELD:  # first: another version's header has other fields
            raise CacheCodecError(_version_problem(fields[0]))
        if len(fields) != 9:
            raise CacheCodecError("not a cache entry: truncated header")
        (
            _version,
            ver_field,
            uver_field,
            _intents,
            kind_field,
            generation_field,
            stored_field,
            rev_length,
            rest,
        ) = fields
        if not ver_field.isdigit() or not uver_field.isdigit():  # as RECORD_LUA_PATTERN
            raise CacheCodecError(f"bad versions {ver_field!r}, {uver_field!r} in a cache record")
        kind = _KINDS.get(kind_field)
        if kind is None:
            raise CacheCodecError(f"bad kind {kind_field!r} in a cache entry")
        if not generation_field.isdigit() and not (
            generation_field[:1] == b"-" and generation_field[1:].isdigit()
        ):
            raise CacheCodecError(f"bad generation {generation_field!r} in a cache entry")
        generation = int(generation_field)
        stored_at = float(stored_field)
        text = rest.decode("utf-8", "surrogatepass")
        if rev_length:
            if not rev_length.isdigit():
                raise CacheCodecError(f"bad revision length {rev_length!r} in a cache entry")
            rev_bytes = rest[: int(rev_length)]
            rev: str | None = rev_bytes.decode("utf-8", "surrogatepass")
            start = len(rev)  # type: ignore[arg-type]
            if len(rev_bytes) != int(rev_length) or text[start : start + 1] != _SEP:
                raise CacheCodecError("not a cache entry: truncated revision")
        else:
            rev = None
            start = 0
            if text[:1] != _SEP:
                raise CacheCodecError("not a cache entry: bad revision field")
        document = _decode_body(text, start + 1)
        return Entry(kind, generation, rev, document, stored_at, int(ver_field))
    except CacheCodecError:
        raise
    except Exception as exc:  # anything else malformed: UnicodeError, ValueError, deep nesting
        raise CacheCodecError(f"malformed cache entry: {type(exc).__name__}: {exc}") from exc


def _version_problem(version: bytes) -> str:
    if version[:1] == b"v" and version[1:].isdigit():
        return (
            f"cache entry of format version {int(version[1:])}; this gateway reads version "
            f"{MAX_VERSION} (another gateway release shares this cache? give each release its "
            "own cache.redis_key_prefix)"
        )
    return "not a cache entry: bad version field"


def _decode_body(text: str, start: int) -> Any:
    mode = text[start : start + 1]
    if mode == _MODE_DECIMAL:
        document, end = _DECIMAL_JSON.raw_decode(text, start + 1)
    elif mode == _MODE_NATIVE:
        document, end = _NATIVE_JSON.raw_decode(text, start + 1)
    elif mode in (_MODE_DECIMAL_PATCHED, _MODE_NATIVE_PATCHED):
        bar = text.index(_SEP, start + 1, start + 12)
        length_text = text[start + 1 : bar]
        if not length_text.isdigit():
            raise CacheCodecError("bad patch length in a cache entry")
        json_start = bar + 1 + int(length_text)
        patches, patches_end = _PATCH_JSON.raw_decode(text[:json_start], bar + 1)
        if patches_end != json_start:
            raise CacheCodecError("bad patch list in a cache entry")
        loader = _DECIMAL_JSON if mode == _MODE_DECIMAL_PATCHED else _NATIVE_JSON
        document, end = loader.raw_decode(text, json_start)
        document = _apply_patches(document, patches)
    elif mode == _MODE_NONE:
        document, end = None, start + 1
    else:
        raise CacheCodecError(f"unknown body mode {mode!r} in a cache entry")
    if end != len(text):
        raise CacheCodecError("trailing bytes after a cache entry's document")
    return document


def _apply_patches(document: Any, patches: Any) -> Any:
    if type(patches) is not list:
        raise CacheCodecError("the patch list of a cache entry is not a list")
    for patch in patches:
        if type(patch) is not list or not patch or type(patch[0]) is not str:
            raise CacheCodecError(f"bad patch {patch!r} in a cache entry")
        code = patch[0]
        if len(patch) == 1:
            document = _convert(code, document)
            continue
        parent = document
        for step in patch[1:-1]:
            parent = _child(parent, step)
        last = patch[-1]
        parent[last] = _convert(code, _child(parent, last))
    return document


def _child(parent: Any, step: Any) -> Any:
    if type(parent) is dict and type(step) is str:
        return parent[step]
    if type(parent) is list and type(step) is int and step >= 0:
        return parent[step]
    raise CacheCodecError(f"bad patch path step {step!r} in a cache entry")


def _to_int(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is not Decimal or not value.is_finite() or value.adjusted() > _MAX_INT_DIGITS:
        raise CacheCodecError(f"bad integer {value!r} in a cache entry")
    result = int(value)
    if result != value:
        raise CacheCodecError(f"bad integer {value!r} in a cache entry")
    return result


def _to_float(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is not Decimal:
        raise CacheCodecError(f"bad float {value!r} in a cache entry")
    return float(value)


def _to_decimal(value: Any) -> Decimal:
    if type(value) is not str:
        raise CacheCodecError(f"bad decimal {value!r} in a cache entry")
    result = Decimal(value)
    if not result.is_finite():
        raise CacheCodecError(f"bad decimal {value!r} in a cache entry")
    return result


def _to_bytes(value: Any) -> bytes:
    if type(value) is not str:
        raise CacheCodecError(f"bad binary {value!r} in a cache entry")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise CacheCodecError(f"bad base64 in a cache entry: {exc}") from exc


def _to_tuple(value: Any) -> tuple[Any, ...]:
    if type(value) is not list:
        raise CacheCodecError("bad tuple in a cache entry")
    return tuple(value)


def _as_loaded(value: Any) -> Any:
    return value


_SCALARS: Final[dict[str, Callable[[Any], Any]]] = {
    "-": _as_loaded,
    "i": _to_int,
    "f": _to_float,
    "D": _to_decimal,
    "b": _to_bytes,
    "B": lambda value: Binary(_to_bytes(value)),
    "a": lambda value: bytearray(_to_bytes(value)),
}
_SET_TYPES: Final[dict[str, type[set[Any]] | type[frozenset[Any]]]] = {
    "S": set,
    "M": set,
    "F": frozenset,
    "G": frozenset,
}


def _convert(code: str, value: Any) -> Any:
    convert = _SCALARS.get(code)
    if convert is not None:
        return convert(value)
    if code == "T":
        return _to_tuple(value)
    set_type = _SET_TYPES.get(code[:1])
    if set_type is None or type(value) is not list:
        raise CacheCodecError(f"bad patch code {code!r} in a cache entry")
    if code[0] in "SF":
        element = _SCALARS.get(code[1:])
        if element is None:
            raise CacheCodecError(f"bad patch code {code!r} in a cache entry")
        return set_type(map(element, value))
    if len(code) - 1 != len(value):
        raise CacheCodecError(f"bad patch code {code!r} in a cache entry")
    converters = [_SCALARS.get(c) for c in code[1:]]
    if None in converters:
        raise CacheCodecError(f"bad patch code {code!r} in a cache entry")
    return set_type(conv(item) for conv, item in zip(converters, value, strict=True))  # type: ignore[misc]


__all__ = ["MAX_VERSION", "RECORD_LUA_PATTERN", "decode_entry", "encode_entry"]
