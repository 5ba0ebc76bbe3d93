"""One DynamoDB Streams record as the gateway needs it: which document changed, and how.

Two shapes carry the same record: what ``GetRecords`` returns through boto3
(``ApproximateCreationDateTime`` is a ``datetime``) and what AWS Lambda hands a function
(``eventSourceARN`` names the table; the time is a number of seconds). Images are in
DynamoDB JSON; they are decoded with boto3's own `TypeDeserializer`.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from gateway.revisions import parse_generation

_deserializer = TypeDeserializer()
_KEY = "_id"
REMOVE = "REMOVE"


@dataclass(frozen=True, slots=True)
class Change:
    """A change to one document of ``table``.

    ``new_item`` / ``old_item`` are the images decoded (Decimal numbers, Binary bytes), or None
    when the record has none: an INSERT has no old image, a REMOVE no new one, and a stream
    whose view type leaves an image out has none either (`new_image_known` /
    `old_image_known` tell the two cases apart).
    """

    table: str
    doc_id: str
    removed: bool
    new_item: dict[str, Any] | None
    old_item: dict[str, Any] | None
    sequence: str
    #: When DynamoDB wrote the record (seconds since the epoch).
    created_at: float
    event: str = ""
    view_type: str = "NEW_AND_OLD_IMAGES"

    @property
    def new_generation(self) -> int | None:
        """The generation of the new image's ``_rev``; None without one of ours."""
        return None if self.new_item is None else parse_generation(self.new_item.get("_rev"))

    @property
    def old_generation(self) -> int | None:
        """The generation of the old image's ``_rev``; None without one of ours."""
        return None if self.old_item is None else parse_generation(self.old_item.get("_rev"))

    @property
    def old_image_known(self) -> bool:
        """Whether the item this change replaced is known (None in `old_item` then means there
        was none: an INSERT)."""
        return self.event == "INSERT" or self.view_type in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES")


def table_of_stream_arn(arn: str) -> str:
    """The table name in a stream ARN
    (``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/TIME``)."""
    _, _, resource = arn.partition(":table/")
    name, sep, _ = resource.partition("/stream/")
    if not name or not sep:
        raise ValueError(f"not a DynamoDB stream ARN: {arn!r}")
    return name


def change_from_record(record: Mapping[str, Any], table: str) -> Change | None:
    """The change a stream record describes; None for a record of an item whose key is not
    a string ``_id`` (not a gateway document)."""
    body = record.get("dynamodb") or {}
    key = (body.get("Keys") or {}).get(_KEY) or {}
    doc_id = key.get("S")
    if not isinstance(doc_id, str):
        return None
    event = str(record.get("eventName", ""))
    new_image = body.get("NewImage")
    old_image = body.get("OldImage")
    return Change(
        table=table,
        doc_id=doc_id,
        removed=event == REMOVE,
        new_item=None if new_image is None else _decode(new_image),
        old_item=None if old_image is None else _decode(old_image),
        sequence=str(body.get("SequenceNumber", "")),
        created_at=_seconds(body.get("ApproximateCreationDateTime")),
        event=event,
        view_type=str(body.get("StreamViewType") or "NEW_AND_OLD_IMAGES"),
    )


def _decode(image: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in image.items()}


def _seconds(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return 0.0
