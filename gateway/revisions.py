"""Document revisions: ``"<generation>-<32 hex digits>"``.

The generation is a hybrid logical clock: ``max(previous generation + 1, now in microseconds)``.
It strictly increases with every save of one document (the ``+ 1``), and because it follows
wall time it also keeps increasing across a delete and re-create, so a cache that refuses
older-over-newer by generation never mistakes a re-created document for an old copy.

Revisions of generations with the same number of digits (16 until the year 2286) and the same
length compare lexicographically in generation order. That lets ``save`` make a single
conditional ``PutItem`` — "no item, or a stored ``_rev`` as long as ours and below
``'<new generation>-'``" (`RevisionMaker.upper_bound`, `revision_length`) — instead of a read
followed by a write; only when that condition fails (a concurrent writer, a clock behind another
writer's, or a revision of another width or written by something else) does it read the stored
revision and retry with ``_rev = <what it read>``. Without the length, a stored generation of 17
digits (``"10000000000000000-..."``) would sort below a 16-digit one and be replaced by a lower
generation, which the cache (comparing generations as numbers) would refuse as older.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.tokens import random_hex

REV_SEPARATOR = "-"
#: Hex digits of a revision's random part.
TOKEN_DIGITS = 32
#: Longer heads are not generations (and int() refuses over 4,300 digits).
MAX_GENERATION_DIGITS = 30


def parse_generation(rev: object) -> int | None:
    """The generation of a revision string, or None if it is not one of ours (only ASCII
    digits count: ``"²"`` is a digit to `str.isdigit`, not to `int`; at most
    `MAX_GENERATION_DIGITS` of them)."""
    if not isinstance(rev, str):
        return None
    head, sep, tail = rev.partition(REV_SEPARATOR)
    if not sep or len(tail) != TOKEN_DIGITS or len(head) > MAX_GENERATION_DIGITS:
        return None
    if not (head.isascii() and head.isdigit()):
        return None
    return int(head)


def revision_length(generation: int) -> int:
    """The length of every revision of ``generation`` (its digits, the separator, the token)."""
    return len(str(generation)) + len(REV_SEPARATOR) + TOKEN_DIGITS


def wall_clock_us() -> int:
    """Microseconds since the epoch (the default clock of the generation)."""
    return time.time_ns() // 1000


def random_token() -> str:
    """32 random hex digits: makes two revisions of one generation distinct. Unique, not
    secret (`gateway.tokens`): it tells a save's own revision from another writer's after a
    lost answer."""
    return random_hex(TOKEN_DIGITS)


@dataclass(frozen=True)
class RevisionMaker:
    """Makes revisions; the clock and the random token are injected for tests."""

    clock_us: Callable[[], int] = field(default=wall_clock_us)
    token: Callable[[], str] = field(default=random_token)

    def next_generation(self, previous: int | None) -> int:
        """``max(previous + 1, now_us)``: strictly above ``previous``, close to wall time."""
        now = self.clock_us()
        if previous is None:
            return now
        return max(previous + 1, now)

    def make(self, generation: int) -> str:
        """A new revision string for ``generation``."""
        return f"{generation}{REV_SEPARATOR}{self.token()}"

    @staticmethod
    def upper_bound(generation: int) -> str:
        """The smallest string above every revision of a lower generation of the same width.

        ``'-'`` sorts below every digit and hex letter, so ``rev < '<g>-'`` holds exactly for
        revisions whose generation (of the same number of digits) is below ``g``.
        """
        return f"{generation}{REV_SEPARATOR}"
