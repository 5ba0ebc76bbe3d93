"""A counter the hot paths can bump from any thread without taking a lock."""

from __future__ import annotations

import itertools


class Counter:
    """A thread-safe counter without a lock: ``itertools.count.__next__`` is atomic in CPython."""

    __slots__ = ("_count", "inc")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.inc = self._count.__next__

    @property
    def value(self) -> int:
        """The count so far (read without advancing it)."""
        # repr is "count(N)": the only way to read an itertools.count without advancing it.
        return int(repr(self._count)[6:-1])
