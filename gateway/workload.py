"""A read-heavy document workload, shared by ``gateway bench`` and the locust files.

Keys are drawn from a Zipf distribution (a few hot keys, a long tail), the way real read-heavy
services see them; documents are JSON-like with a target size. Randomness is injected (a seeded
``random.Random``) so that two runs, or two backends in one run, see the same key sequence.

Two kinds: ``documents`` (a read is a ``get`` of the drawn key) and ``query`` (a read is an
index query of the drawn key's *group*, ``"group"`` = ``g<key % QUERY_GROUPS>``, on the index
`QUERY_INDEX`: "the orders of customer X"). Writes save the drawn key in both.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

DEFAULT_COLLECTION = "bench_docs"
KINDS = ("documents", "query")
#: Documents fall into this many groups (``index % QUERY_GROUPS``), queried by `QUERY_INDEX`.
QUERY_GROUPS = 50
#: The index of the ``query`` workload, on the documents' ``group`` attribute (a string).
QUERY_INDEX = "by_group"
QUERY_ATTRIBUTE = "group"


@dataclass(frozen=True)
class WorkloadSpec:
    """What the workload does: key count, document size, skew, read ratio."""

    keys: int = 2000
    doc_size: int = 1024
    zipf: float = 1.1
    read_ratio: float = 0.95
    collection: str = DEFAULT_COLLECTION
    seed: int = 7
    kind: str = "documents"

    def __post_init__(self) -> None:
        if self.keys < 1:
            raise ValueError(f"keys must be >= 1, got {self.keys}")
        if self.doc_size < 64:
            raise ValueError(f"doc_size must be >= 64 bytes, got {self.doc_size}")
        if self.zipf < 0:
            raise ValueError(f"zipf must be >= 0 (0 = uniform), got {self.zipf}")
        if not 0.0 <= self.read_ratio <= 1.0:
            raise ValueError(f"read_ratio must be within 0..1, got {self.read_ratio}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


def key_name(index: int) -> str:
    """The document id of key number ``index``."""
    return f"doc-{index:07d}"


def group_name(index: int) -> str:
    """The ``group`` of key number ``index`` (what the ``query`` workload queries)."""
    return f"g{index % QUERY_GROUPS}"


def group_members(group: int, keys: int) -> range:
    """The key numbers in group number ``group`` among ``keys`` keys."""
    return range(group, keys, QUERY_GROUPS)


def make_document(index: int, size: int, version: int = 0) -> dict[str, Any]:
    """A document of about ``size`` bytes (as JSON) for key ``index``."""
    doc: dict[str, Any] = {
        "title": f"document {index}",
        QUERY_ATTRIBUTE: group_name(index),
        "version": version,
        "score": (index % 1000) / 7,
        "active": index % 3 != 0,
        "tags": [f"tag{index % 11}", f"tag{index % 13}"],
        "owner": {"id": index % 97, "name": f"owner {index % 97}"},
    }
    filler = max(0, size - 205)
    doc["body"] = ("lorem ipsum dolor sit amet " * (filler // 27 + 1))[:filler]
    return doc


@dataclass
class ZipfSampler:
    """Draws key indexes 0..n-1 with P(k) proportional to 1 / (k + 1) ** s."""

    n: int
    s: float
    rng: random.Random = field(default_factory=random.Random)
    _cumulative: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        weights = [1.0 / (k + 1) ** self.s for k in range(self.n)]
        self._cumulative = list(itertools.accumulate(weights))

    def draw(self) -> int:
        """One key index."""
        target = self.rng.random() * self._cumulative[-1]
        return min(bisect.bisect_left(self._cumulative, target), self.n - 1)


@dataclass(frozen=True)
class Operation:
    """One step of the workload: a read or a write of one key."""

    kind: str  # "read", "query" or "write"
    doc_id: str  # for a query: the group's name
    index: int  # for a query: the group's number


class Workload:
    """A stream of operations for one worker (thread or locust user); not thread-safe."""

    def __init__(self, spec: WorkloadSpec, worker: int = 0) -> None:
        self.spec = spec
        self._rng = random.Random(spec.seed * 1_000_003 + worker)
        self._sampler = ZipfSampler(spec.keys, spec.zipf, self._rng)
        self._versions = itertools.count(1)

    def next(self) -> Operation:
        """The next operation."""
        index = self._sampler.draw()
        if self._rng.random() >= self.spec.read_ratio:
            return Operation("write", key_name(index), index)
        if self.spec.kind == "query":
            group = index % QUERY_GROUPS
            return Operation("query", group_name(index), group)
        return Operation("read", key_name(index), index)

    def document_for(self, op: Operation) -> dict[str, Any]:
        """The document a write of ``op`` saves."""
        return make_document(op.index, self.spec.doc_size, version=next(self._versions))


def preload(service: Any, spec: WorkloadSpec, batch: int = 100) -> None:
    """Save every key's first version with ``save_many``, ``batch`` documents at a time."""
    for start in range(0, spec.keys, batch):
        stop = min(spec.keys, start + batch)
        service.save_many(
            spec.collection,
            {key_name(i): make_document(i, spec.doc_size) for i in range(start, stop)},
        )
