"""Hypothesis strategies for valid gateway inputs, shared by the codec and service tests.

`documents()` yields small documents that every `DatabaseService` must accept and give back
equal; `stored_form()` says what "equal" means (the values a ``get`` returns for a saved
document), so a model-based test can keep its model in that form.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary
from hypothesis import strategies as st

#: Magnitudes the gateway stores exactly: DynamoDB's lower bound, and below 1E+38 (see
#: ``gateway.codec.MAX_NUMBER_EXPONENT`` for why not up to DynamoDB's 9.99E+125).
_MIN_ADJUSTED = -130
_MAX_ADJUSTED = 37

_TABLE_CHARS = string.ascii_letters + string.digits + "_.-"

#: Attribute names: short, mostly ASCII, sometimes not; never the service's own _id / _rev.
attribute_names = st.text(
    alphabet=st.sampled_from("abcxyz_-. AZ09é✓"), min_size=1, max_size=6
).filter(lambda name: name not in ("_id", "_rev"))

texts = st.text(max_size=12)  # any Unicode without lone surrogates, empty included
ints = st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1)
small_ints = st.integers(min_value=-1000, max_value=1000)


def _float_fits(f: float) -> bool:
    if f == 0:
        return True
    return _MIN_ADJUSTED <= Decimal(repr(f)).adjusted() <= _MAX_ADJUSTED


floats = st.floats(min_value=-1e37, max_value=1e37, allow_nan=False, allow_infinity=False).filter(
    _float_fits
)


def _decimal(coefficient: int, exponent: int) -> Decimal:
    return Decimal(f"{coefficient}E{exponent}")  # exact: no context rounding


#: Decimals of up to 38 digits with exponents that keep them in range (1E-120 .. 9.9E+37).
decimals = st.one_of(
    st.builds(_decimal, st.integers(-(10**38) + 1, 10**38 - 1), st.integers(-120, 0)),
    st.builds(_decimal, st.integers(-9999, 9999), st.integers(-6, 6)),
)
numbers = st.one_of(small_ints, ints, floats, decimals)
binaries = st.binary(max_size=12)

scalars = st.one_of(texts, small_ints, ints, floats, decimals, st.booleans(), st.none(), binaries)
string_sets = st.sets(texts, min_size=1, max_size=4)
number_sets = st.sets(numbers, min_size=1, max_size=4)
binary_sets = st.sets(binaries, min_size=1, max_size=4)
sets = st.one_of(string_sets, number_sets, binary_sets)


def values(max_depth: int = 3, *, variants: bool = False) -> st.SearchStrategy[Any]:
    """Any storable value, with containers nested at most ``max_depth`` levels.

    With ``variants``, also the input forms the codec converts: tuples, frozensets, bytearray,
    ``Binary``.
    """
    leaves: st.SearchStrategy[Any] = st.one_of(scalars, sets)
    if variants:
        leaves = st.one_of(
            leaves,
            binaries.map(bytearray),
            binaries.map(Binary),
            string_sets.map(frozenset),
            number_sets.map(frozenset),
        )
    if max_depth <= 0:
        return leaves
    inner = values(max_depth - 1, variants=variants)
    containers = [
        st.lists(inner, max_size=3),
        st.dictionaries(attribute_names, inner, max_size=3),
    ]
    if variants:
        containers.append(st.lists(inner, max_size=3).map(tuple))
    return st.one_of(leaves, *containers)


def documents(max_depth: int = 3, *, variants: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Small valid documents: a few keys, values nested at most ``max_depth`` levels.

    Covers str (Unicode, empty), ints (up to 38 digits), finite floats, Decimal, bool, None,
    bytes, string / number / binary sets, lists and maps. Never has ``_id`` or ``_rev`` keys.
    """
    return st.dictionaries(attribute_names, values(max_depth, variants=variants), max_size=5)


def doc_ids() -> st.SearchStrategy[str]:
    """Short ids from a small alphabet (one non-ASCII letter), so tests reuse the same keys."""
    return st.text(alphabet="abé1", min_size=1, max_size=2)


def collection_names() -> st.SearchStrategy[str]:
    """Valid collection names: 3 to 16 characters of ``[A-Za-z0-9_.-]``."""
    return st.text(alphabet=_TABLE_CHARS, min_size=3, max_size=16)


def _stored_number(value: Any, native_numbers: bool) -> Any:
    d = value if isinstance(value, Decimal) else Decimal(repr(value))
    if not native_numbers:
        return d
    i = int(d)
    return i if i == d else float(d)


def stored_form(value: Any, native_numbers: bool = False) -> Any:
    """What reading back a saved ``value`` gives: an independent oracle for the codec.

    Numbers become Decimal (floats through their repr) or, with ``native_numbers``, int when
    integral else float; bytes-like values Binary; tuples lists; frozensets sets; mappings dicts.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        return _stored_number(value, native_numbers)
    if isinstance(value, Binary):
        return Binary(bytes(value.value))
    if isinstance(value, (bytes, bytearray)):
        return Binary(bytes(value))
    if isinstance(value, Mapping):
        return {k: stored_form(v, native_numbers) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [stored_form(v, native_numbers) for v in value]
    if isinstance(value, (set, frozenset)):
        return {stored_form(v, native_numbers) for v in value}
    raise TypeError(f"not a storable value: {value!r}")


__all__ = [
    "attribute_names",
    "collection_names",
    "doc_ids",
    "documents",
    "stored_form",
    "values",
]
