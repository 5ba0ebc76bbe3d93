"""The `DatabaseService` protocol every provider implements, and its small value types."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

Document = dict[str, Any]


class _Absent(enum.Enum):
    """Sentinel type for ``if_rev=ABSENT``: write only if no document exists."""

    ABSENT = "ABSENT"

    def __repr__(self) -> str:
        return "gateway.ABSENT"

    def __bool__(self) -> bool:
        return False


#: Pass as ``if_rev`` to save only when no document with that id exists (create-only).
ABSENT: Literal[_Absent.ABSENT] = _Absent.ABSENT

#: What ``if_rev`` accepts: no condition, a revision string, or ABSENT.
IfRev = str | Literal[_Absent.ABSENT] | None


class SaveResult(TypedDict):
    """What ``save`` returns."""

    id: str
    rev: str


@runtime_checkable
class DatabaseService(Protocol):
    """A store of JSON-like documents: one collection per table, keyed on ``_id``."""

    def save(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> SaveResult:
        """Replace (upsert) the document and return its id and new revision.

        ``_id`` / ``_rev`` keys in ``doc`` are ignored. With ``if_rev`` the save only happens if
        the stored ``_rev`` equals it (``ABSENT``: only if nothing is stored), else ConflictError.
        """
        ...

    def get(self, db_name: str, doc_id: str) -> Document | None:
        """The document with its ``_id`` and ``_rev``, or None when there is none."""
        ...

    def delete(self, db_name: str, doc_id: str, *, if_rev: IfRev = None) -> bool:
        """Remove the document; True if one was removed. ``if_rev`` as in ``save``."""
        ...

    def list_all(self, db_name: str) -> list[Document]:
        """Every document of the collection, across all scan pages."""
        ...

    def iter_pages(self, db_name: str, page_size: int = 100) -> Iterator[list[Document]]:
        """The collection's documents, in pages of at most ``page_size``."""
        ...

    def get_many(self, db_name: str, doc_ids: Iterable[str]) -> dict[str, Document | None]:
        """Every asked id mapped to its document or None; duplicate ids are allowed."""
        ...

    def save_many(self, db_name: str, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """Save every document of ``docs`` (id -> doc); returns id -> new revision.

        The whole input is validated before anything is written.
        """
        ...

    def delete_many(self, db_name: str, doc_ids: Iterable[str]) -> None:
        """Delete every listed document (missing ones are ignored)."""
        ...

    def query(self, db_name: str, index: str, value: Any) -> list[Document]:
        """Documents whose ``index`` key equals ``value``, across all pages."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters: at least ``hits``, ``misses``, ``hit_ratio``, ``db_calls``."""
        ...

    def close(self) -> None:
        """Release connections and background threads."""
        ...

    def __enter__(self) -> DatabaseService: ...

    def __exit__(self, *exc_info: object) -> None: ...
