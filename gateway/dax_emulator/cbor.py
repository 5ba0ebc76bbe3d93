"""CBOR (RFC 8949) as DAX speaks it, written for the emulator: a bounded decoder and an encoder.

DAX frames are not length-prefixed: a request is a run of CBOR items read one after another
from the socket. The decoder therefore reads item by item from a `Source` (a socket's buffered
reader, or bytes) and enforces limits as it goes: the length of one string or byte string, the
number of elements of one array or map, the nesting depth, and the bytes of one request. Going
over a limit raises `TooLarge`; bytes that are not CBOR (or a CBOR feature DAX never sends)
raise `Malformed`; the end of the stream raises `EndOfStream`.

DAX's tags: 2 and 3 (big integers), 4 (decimal: ``[exponent, mantissa]``), 3321/3322/3323
(DynamoDB string, number and binary sets) and 3324 (a list index in a document path). Decoded
values are plain Python: int, bytes, str, list, dict, bool, None, float, `Decimal`, `DdbSet`,
`Ordinal`.

`lex_encode` / `lex_decode`: the order-preserving binary form of a number that DAX uses for a
numeric range key inside a key's bytes (a sign-and-exponent header, then the digits in base
1000, ten bits each, ended by a terminator that says how many digits the last group holds).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Major types (the top three bits of the initial byte).
MT_UINT, MT_NINT, MT_BYTES, MT_TEXT, MT_ARRAY, MT_MAP, MT_TAG, MT_SIMPLE = range(8)
BREAK = 0xFF
NULL = 0xF6
TAG_POS_BIGNUM = 2
TAG_NEG_BIGNUM = 3
TAG_DECIMAL = 4
TAG_STRING_SET = 3321
TAG_NUMBER_SET = 3322
TAG_BINARY_SET = 3323
TAG_PATH_ORDINAL = 3324
SET_TAGS = {TAG_STRING_SET: "SS", TAG_NUMBER_SET: "NS", TAG_BINARY_SET: "BS"}
SET_TAG_BY_TYPE = {kind: tag for tag, kind in SET_TAGS.items()}

_U64 = 1 << 64


class CborError(Exception):
    """Input that the emulator refuses to decode."""


class Malformed(CborError):
    """Not CBOR, or CBOR that DAX never sends."""


class TooLarge(CborError):
    """Over one of the decoder's limits."""


class EndOfStream(CborError):
    """The stream ended (cleanly between items, or in the middle of one)."""


@dataclass(frozen=True)
class DdbSet:
    """A DynamoDB set: ``kind`` is SS, NS or BS."""

    kind: str
    values: list[Any]


@dataclass(frozen=True)
class Ordinal:
    """A list index inside a document path (``a[3]``)."""

    index: int


@dataclass(frozen=True)
class Limits:
    """Bounds of one decode: a string's bytes, a container's elements, nesting, a request."""

    max_blob: int = 4 * 1024 * 1024
    max_items: int = 200_000
    max_depth: int = 64
    max_request: int = 32 * 1024 * 1024


DEFAULT_LIMITS = Limits()


class Source:
    """Bytes to decode; ``read(n)`` returns exactly ``n`` bytes or raises `EndOfStream`."""

    def read(self, n: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def at_end(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class BytesSource(Source):
    """Decode from bytes in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.pos = 0

    def read(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self._data):
            raise EndOfStream("the bytes end inside an item")
        chunk = self._data[self.pos : end]
        self.pos = end
        return chunk

    def at_end(self) -> bool:
        return self.pos >= len(self._data)

    def rest(self) -> bytes:
        """The bytes not read yet (and consume them)."""
        chunk = self._data[self.pos :]
        self.pos = len(self._data)
        return chunk


class StreamSource(Source):
    """Decode from a blocking reader (``socket.makefile('rb')``), counting the bytes read."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.count = 0

    def read(self, n: int) -> bytes:
        if n == 0:
            return b""
        data = self._read(n)
        if len(data) != n:
            raise EndOfStream("the connection closed")
        self.count += n
        return data

    def at_end(self) -> bool:  # a socket has no end to look at; items end themselves
        return False


class Decoder:
    """Reads CBOR items from a `Source`, within `Limits`."""

    def __init__(self, source: Source, limits: Limits = DEFAULT_LIMITS) -> None:
        self.source = source
        self.limits = limits
        self._budget_start = 0

    # -- the request budget (stream sources) ----------------------------------------------

    def start_request(self) -> None:
        """Begin counting the bytes of one request against ``max_request``."""
        self._budget_start = getattr(self.source, "count", 0)

    def _check_budget(self, extra: int = 0) -> None:
        count = getattr(self.source, "count", None)
        if count is not None and count + extra - self._budget_start > self.limits.max_request:
            raise TooLarge(f"request larger than {self.limits.max_request} bytes")

    # -- items ----------------------------------------------------------------------------

    def read_item(self) -> Any:
        """The next complete item."""
        return self._item(self._initial(), 0)

    def read_int(self) -> int:
        value = self.read_item()
        if isinstance(value, bool) or not isinstance(value, int):
            raise Malformed(f"expected an integer, got {type(value).__name__}")
        return value

    def _initial(self) -> int:
        return self.source.read(1)[0]

    def _argument(self, info: int) -> int:
        if info < 24:
            return info
        if info == 24:
            return self.source.read(1)[0]
        if info == 25:
            return int(struct.unpack(">H", self.source.read(2))[0])
        if info == 26:
            return int(struct.unpack(">I", self.source.read(4))[0])
        if info == 27:
            return int(struct.unpack(">Q", self.source.read(8))[0])
        raise Malformed(f"reserved additional information {info}")

    def _item(self, initial: int, depth: int) -> Any:
        if depth > self.limits.max_depth:
            raise TooLarge(f"nesting deeper than {self.limits.max_depth}")
        major, info = initial >> 5, initial & 0x1F
        if major == MT_UINT:
            return self._argument(info)
        if major == MT_NINT:
            return -1 - self._argument(info)
        if major in (MT_BYTES, MT_TEXT):
            raw = self._blob(major, info)
            if major == MT_BYTES:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Malformed(f"invalid UTF-8 in a text string: {exc}") from None
        if major == MT_ARRAY:
            return self._array(info, depth)
        if major == MT_MAP:
            return self._map(info, depth)
        if major == MT_TAG:
            return self._tagged(self._argument(info), depth)
        return self._simple(initial, info)

    def _blob(self, major: int, info: int) -> bytes:
        if info == 31:  # indefinite length: definite chunks of the same major type
            parts = bytearray()
            while True:
                initial = self._initial()
                if initial == BREAK:
                    return bytes(parts)
                if initial >> 5 != major or initial & 0x1F == 31:
                    raise Malformed("bad chunk in an indefinite-length string")
                parts += self._blob(major, initial & 0x1F)
                if len(parts) > self.limits.max_blob:
                    raise TooLarge(f"string longer than {self.limits.max_blob} bytes")
        length = self._argument(info)
        if length > self.limits.max_blob:
            raise TooLarge(f"string of {length} bytes (at most {self.limits.max_blob})")
        self._check_budget(length)
        return self.source.read(length)

    def _count(self, info: int) -> int | None:
        if info == 31:
            return None
        count = self._argument(info)
        if count > self.limits.max_items:
            raise TooLarge(f"container of {count} elements (at most {self.limits.max_items})")
        return count

    def _array(self, info: int, depth: int) -> list[Any]:
        count = self._count(info)
        items: list[Any] = []
        while count is None or len(items) < count:
            initial = self._initial()
            if count is None and initial == BREAK:
                break
            if len(items) >= self.limits.max_items:
                raise TooLarge(f"array of more than {self.limits.max_items} elements")
            items.append(self._item(initial, depth + 1))
            self._check_budget()
        return items

    def _map(self, info: int, depth: int) -> dict[Any, Any]:
        count = self._count(info)
        result: dict[Any, Any] = {}
        seen = 0
        while count is None or seen < count:
            initial = self._initial()
            if count is None and initial == BREAK:
                break
            if seen >= self.limits.max_items:
                raise TooLarge(f"map of more than {self.limits.max_items} entries")
            key = self._item(initial, depth + 1)
            if isinstance(key, (list, dict)):
                raise Malformed("a map key must be a string or a number")
            result[key] = self._item(self._initial(), depth + 1)  # a repeated key: last wins
            seen += 1
            self._check_budget()
        return result

    def _tagged(self, tag: int, depth: int) -> Any:
        value = self._item(self._initial(), depth + 1)
        if tag in (TAG_POS_BIGNUM, TAG_NEG_BIGNUM):
            if not isinstance(value, bytes):
                raise Malformed("a bignum must be a byte string")
            magnitude = int.from_bytes(value, "big")
            return magnitude if tag == TAG_POS_BIGNUM else -1 - magnitude
        if tag == TAG_DECIMAL:
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            ):
                raise Malformed("a decimal must be [exponent, mantissa]")
            exponent, mantissa = value
            if abs(exponent) > 10_000 or abs(mantissa) >= 10**100:
                raise Malformed("decimal out of range")
            sign = 1 if mantissa < 0 else 0
            digits = tuple(int(d) for d in str(abs(mantissa)))
            return Decimal((sign, digits, exponent))
        if tag in SET_TAGS:
            if not isinstance(value, list):
                raise Malformed("a set must be an array")
            return DdbSet(SET_TAGS[tag], value)
        if tag == TAG_PATH_ORDINAL:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise Malformed("a path ordinal must be a non-negative integer")
            return Ordinal(value)
        raise Malformed(f"unknown tag {tag}")

    def _simple(self, initial: int, info: int) -> Any:
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            return _half(self.source.read(2))
        if info == 26:
            return float(struct.unpack(">f", self.source.read(4))[0])
        if info == 27:
            return float(struct.unpack(">d", self.source.read(8))[0])
        if initial == BREAK:
            raise Malformed("unexpected break")
        raise Malformed(f"unsupported simple value {info}")


def _half(raw: bytes) -> float:
    bits = int.from_bytes(raw, "big")
    sign = -1.0 if bits & 0x8000 else 1.0
    exponent = (bits >> 10) & 0x1F
    fraction = bits & 0x3FF
    if exponent == 0:
        return sign * fraction * 2.0**-24
    if exponent == 31:
        return sign * float("inf") if fraction == 0 else float("nan")
    return sign * (1024 + fraction) * 2.0 ** (exponent - 25)


def decode_all(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """Every item in ``data`` (DAX concatenates values without a container)."""
    source = BytesSource(data)
    decoder = Decoder(source, limits)
    items = []
    while not source.at_end():
        items.append(decoder.read_item())
    return items


def decode_one(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The single item that ``data`` must hold."""
    source = BytesSource(data)
    value = Decoder(source, limits).read_item()
    if not source.at_end():
        raise Malformed("trailing bytes after an item")
    return value


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


class Encoder:
    """Appends CBOR items to a buffer."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def head(self, major: int, value: int) -> Encoder:
        top = major << 5
        if value < 24:
            self.buf.append(top | value)
        elif value < 0x100:
            self.buf += bytes((top | 24, value))
        elif value < 0x10000:
            self.buf.append(top | 25)
            self.buf += struct.pack(">H", value)
        elif value < 0x100000000:
            self.buf.append(top | 26)
            self.buf += struct.pack(">I", value)
        else:
            self.buf.append(top | 27)
            self.buf += struct.pack(">Q", value)
        return self

    def integer(self, value: int) -> Encoder:
        if 0 <= value < _U64:
            return self.head(MT_UINT, value)
        if -_U64 <= value < 0:
            return self.head(MT_NINT, -1 - value)
        magnitude = value if value >= 0 else -1 - value
        self.head(MT_TAG, TAG_POS_BIGNUM if value >= 0 else TAG_NEG_BIGNUM)
        return self.blob(magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big"))

    def blob(self, value: bytes) -> Encoder:
        self.head(MT_BYTES, len(value))
        self.buf += value
        return self

    def text(self, value: str) -> Encoder:
        raw = value.encode("utf-8")
        self.head(MT_TEXT, len(raw))
        self.buf += raw
        return self

    def array(self, length: int) -> Encoder:
        return self.head(MT_ARRAY, length)

    def map(self, length: int) -> Encoder:
        return self.head(MT_MAP, length)

    def tag(self, tag: int) -> Encoder:
        return self.head(MT_TAG, tag)

    def null(self) -> Encoder:
        self.buf.append(NULL)
        return self

    def boolean(self, value: bool) -> Encoder:
        self.buf.append(0xF5 if value else 0xF4)
        return self

    def double(self, value: float) -> Encoder:
        self.buf.append(0xFB)
        self.buf += struct.pack(">d", value)
        return self

    def decimal(self, value: Decimal) -> Encoder:
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):
            raise ValueError(f"not a finite number: {value}")
        mantissa = int("".join(map(str, digits)) or "0")
        self.tag(TAG_DECIMAL).array(2).integer(exponent)
        return self.integer(-mantissa if sign else mantissa)

    def number(self, text: str) -> Encoder:
        """A DynamoDB number (its string form): an integer, or a decimal when it has a point
        or an exponent, so that the client decodes the same string back."""
        if any(c in text for c in ".eE"):
            return self.decimal(Decimal(text))
        return self.integer(int(text))

    def raw(self, data: bytes) -> Encoder:
        self.buf += data
        return self

    def value(self, obj: Any) -> Encoder:
        """A plain Python value (int, str, bytes, list, dict, bool, None, float, Decimal)."""
        if obj is None:
            return self.null()
        if isinstance(obj, bool):
            return self.boolean(obj)
        if isinstance(obj, int):
            return self.integer(obj)
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, (bytes, bytearray)):
            return self.blob(bytes(obj))
        if isinstance(obj, float):
            return self.double(obj)
        if isinstance(obj, Decimal):
            return self.decimal(obj)
        if isinstance(obj, (list, tuple)):
            self.array(len(obj))
            for item in obj:
                self.value(item)
            return self
        if isinstance(obj, dict):
            self.map(len(obj))
            for key, item in obj.items():
                self.value(key)
                self.value(item)
            return self
        raise TypeError(f"cannot encode {type(obj).__name__}")


def encode(obj: Any) -> bytes:
    """``obj`` as one CBOR item."""
    return Encoder().value(obj).getvalue()


# --------------------------------------------------------------------------------------------
# Order-preserving numbers (numeric range keys)
# --------------------------------------------------------------------------------------------

_SHORT_EXPONENT = 0x3E


def lex_encode(value: Decimal) -> bytes:
    """The order-preserving bytes of ``value`` (a numeric range key inside key bytes)."""
    sign, digit_tuple, exp = value.as_tuple()
    if not isinstance(exp, int):
        raise ValueError(f"not a finite number: {value}")
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    if not digits:
        return b"\x80"
    exponent = len(digits) + exp  # value = 0.DIGITS x 10**exponent
    out = bytearray()
    short = -_SHORT_EXPONENT <= exponent < _SHORT_EXPONENT
    if not sign:
        if short:
            out.append(exponent + 0xC0)
        else:
            out.append(0xFE if exponent >= 0 else 0x81)
            out += struct.pack(">I", (exponent & 0xFFFFFFFF) ^ 0x80000000)
    elif short:
        out.append(0x3F - exponent)
    else:
        out.append(0x01 if exponent >= 0 else 0x7E)
        out += struct.pack(">I", (exponent & 0xFFFFFFFF) ^ 0x7FFFFFFF)
    pad = -len(digits) % 3
    terminator = 2 - pad  # how many digits of the last group count, minus one
    padded = digits + "0" * pad
    groups = [int(padded[i : i + 3]) for i in range(0, len(padded), 3)]
    if not sign:
        codes = [g + 12 for g in groups] + [terminator]
    else:
        codes = [1011 - g for g in groups] + [1023 - terminator]
    accumulator = 0
    bits = 0
    for code in codes:
        accumulator = (accumulator << 10) | code
        bits += 10
        while bits >= 8:
            bits -= 8
            out.append((accumulator >> bits) & 0xFF)
    if bits:
        out.append((accumulator << (8 - bits)) & 0xFF)
    return bytes(out)


def lex_decode(data: bytes) -> Decimal:
    """The number that `lex_encode` made ``data`` from."""
    if not data:
        raise Malformed("empty numeric key")
    header = data[0]
    if header in (0x7F, 0x80):
        return Decimal(0)
    offset = 1
    if header in (0x01, 0x7E, 0x81, 0xFE):
        if len(data) < 5:
            raise Malformed("truncated numeric key")
        negative = header in (0x01, 0x7E)
        raw = struct.unpack(">I", data[1:5])[0] ^ (0x7FFFFFFF if negative else 0x80000000)
        exponent = raw - (1 << 32) if raw >= 1 << 31 else raw
        offset = 5
    elif header >= 0x82:
        negative, exponent = False, header - 0xC0
    else:
        negative, exponent = True, 0x3F - header
    digits = ""
    accumulator = 0
    bits = 0
    for byte in data[offset:]:
        accumulator = (accumulator << 8) | byte
        bits += 8
        while bits >= 10:
            bits -= 10
            code = (accumulator >> bits) & 0x3FF
            accumulator &= (1 << bits) - 1
            terminator = (1023 - code) if negative else code
            if terminator <= 2:
                if not digits:
                    raise Malformed("numeric key without digits")
                digits = digits[: len(digits) - (2 - terminator)]
                return Decimal(
                    (1 if negative else 0, tuple(int(d) for d in digits), exponent - len(digits))
                )
            group = (1011 - code) if negative else (code - 12)
            if not 0 <= group <= 999:
                raise Malformed("bad digit in a numeric key")
            digits += f"{group:03d}"
    raise Malformed("numeric key without a terminator")
