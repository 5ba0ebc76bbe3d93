"""The two JSON forms of a document on the ``gateway`` command line (``get`` / ``put``).

* ``json``: plain JSON, for people. Numbers are JSON numbers, Binary is base64 text and sets
  are lists, so a document with Binary, sets or numbers such as ``1.50`` does not come back the
  same from ``gateway put``.
* ``dynamodb``: DynamoDB JSON, exact: one ``{"Item": {...}}`` line in the attribute-value form
  of boto3's ``TypeSerializer``, the very line ``gateway export`` writes and ``gateway import``
  reads. The codec is `gateway.migrate`'s (`document_to_line`, `attributes_to_document`), so
  the three commands cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from boto3.dynamodb.types import Binary

from gateway.errors import ValidationError
from gateway.migrate import attributes_to_document, document_to_line, load_json

JSON: Final = "json"
DYNAMODB: Final = "dynamodb"
FORMATS: Final = (JSON, DYNAMODB)

_ITEM: Final = "Item"
_ID: Final = "_id"
_EXAMPLE: Final = '{"Item": {"name": {"S": "Ada"}, "score": {"N": "1.50"}}}'
_MAX_LOSSES_SHOWN: Final = 3


def to_dynamodb_json(doc: Mapping[str, Any]) -> str:
    """``doc`` (with ``_id`` and ``_rev``, as ``get`` returns it) as one DynamoDB JSON line."""
    return document_to_line(doc)


def parse_dynamodb_json(text: str) -> dict[str, Any]:
    """A document given as DynamoDB JSON: ``{"Item": {...}}`` or the bare item.

    ``_id`` and ``_rev`` attributes, if any, are ignored (as in a plain JSON document: the id is
    the command's argument and every save issues a new revision). Raises `ValidationError`
    saying what was expected; the document itself is validated by ``save``.
    """
    hint = (
        f"--format dynamodb takes DynamoDB JSON such as {_EXAMPLE}, as `gateway get --format "
        "dynamodb` prints it; for plain JSON use --format json"
    )
    try:
        value = load_json(text)
    except ValidationError as exc:
        raise ValidationError(f"{exc}; {hint}") from None
    if not isinstance(value, dict):
        raise ValidationError(f"the document must be a JSON object; {hint}")
    wrapped = list(value) == [_ITEM] and isinstance(value[_ITEM], dict)
    try:
        return attributes_to_document(value[_ITEM] if wrapped else value)
    except ValidationError as exc:
        note = (
            ' (a lone "Item" key is read as the {"Item": {...}} wrapper around the item)'
            if wrapped
            else ""
        )
        raise ValidationError(f"{exc}{note}; {hint}") from None


def _is_string_attribute(value: object) -> bool:
    return isinstance(value, dict) and list(value) == ["S"] and isinstance(value["S"], str)


def looks_like_dynamodb_json(value: object) -> bool:
    """True for a plain JSON document that is surely DynamoDB JSON given without
    ``--format dynamodb``: its ``_id`` (or that of the item in ``{"Item": ...}``) is
    ``{"S": "..."}``. Saved as plain JSON it would be nested maps of "S" and "N" keys."""
    if not isinstance(value, dict):
        return False
    if _ITEM in value and list(value) == [_ITEM] and isinstance(value[_ITEM], dict):
        value = value[_ITEM]
    return _is_string_attribute(value.get(_ID))


def _plain_number_text(number: Decimal) -> str:
    """The number a plain JSON ``put`` stores after a plain JSON ``get`` printed ``number``
    (which prints integral numbers as ints, others as floats: see `gateway.cli.to_json`)."""
    if not number.is_finite():
        return str(number)
    if number == number.to_integral_value():
        return str(Decimal(int(number)))
    return str(Decimal(repr(float(number))))


def _losses(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _losses(item, f"{path}[{key!r}]", out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _losses(item, f"{path}[{index}]", out)
    elif isinstance(value, (set, frozenset)):
        out.append(f"{path} is a set, printed as a list")
    elif isinstance(value, (Binary, bytes, bytearray)):
        out.append(f"{path} is Binary, printed as base64 text")
    elif isinstance(value, Decimal):
        plain = _plain_number_text(value)
        if plain != str(value):
            out.append(f"{path} is {value}, printed as {plain}")


def plain_json_losses(doc: Mapping[str, Any]) -> list[str]:
    """What plain JSON does not keep of ``doc``: one phrase per value ``put`` would change."""
    out: list[str] = []
    _losses(dict(doc), "doc", out)
    return out


def describe_losses(losses: list[str]) -> str:
    """One line for stderr after a plain JSON ``get`` that did not print the document exactly."""
    shown = "; ".join(losses[:_MAX_LOSSES_SHOWN])
    more = len(losses) - _MAX_LOSSES_SHOWN
    if more > 0:
        shown += f"; and {more} more"
    return (
        f"note: plain JSON does not keep this document exactly ({shown}); "
        "`gateway get --format dynamodb` prints it exactly, and `gateway put --format "
        "dynamodb` saves that back unchanged"
    )


__all__ = [
    "DYNAMODB",
    "FORMATS",
    "JSON",
    "describe_losses",
    "looks_like_dynamodb_json",
    "parse_dynamodb_json",
    "plain_json_losses",
    "to_dynamodb_json",
]
