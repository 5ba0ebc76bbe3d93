"""Stale reads: a read that answers an older revision than a write the service already
acknowledged.

A read of a key is *stale* when it STARTED after a write of that key RETURNED, and the ``_rev``
it answered has a lower generation (`gateway.revisions.parse_generation`) than the newest
generation any write of that key returned before the read started. Several threads write the
same hot keys and their writes can return out of order, so "newest" is the maximum over every
acknowledged write, not the last one to return. A read that answers None for a key some write
was acknowledged for is stale too: the workload only saves (``gateway.workload`` never
deletes), so no acknowledged delete can explain it. Reads that overlap a write are never
stale by this rule: either answer is linearizable.

Recording costs no lock and almost no time on the measured path: each worker thread appends to
its own `StaleLog` (two ``array('q')`` and a list; the revision is kept as the string the
service returned, parsed only afterwards), so threads share nothing and the figures are not
distorted by contention a checker would add (a shared per-key table would need a lock, or a
striped one, on every operation). `check` merges the logs once the threads are joined: per key,
the acknowledged writes sorted by the time they returned with a running maximum of their
generations, and for each read a binary search for the writes that returned before it started.
The times are the runner's own ``perf_counter_ns`` stamps (monotonic, one clock for every
thread): a read's start is taken before the call, a write's return after it, so the slack of the
stamps can only hide a stale read, never invent one.
"""

from __future__ import annotations

import bisect
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.revisions import parse_generation


@dataclass(eq=False)
class StaleLog:
    """One thread's reads and acknowledged writes (touched only by its thread until joined).

    Keys are the workload's key indexes; times are ``perf_counter_ns``; revisions are the
    ``_rev`` a read answered (None for no document, "" for a document without one) or the
    ``rev`` a save returned.
    """

    read_keys: array[int] = field(default_factory=lambda: array("q"))
    read_starts: array[int] = field(default_factory=lambda: array("q"))
    read_revs: list[object] = field(default_factory=list)
    write_keys: array[int] = field(default_factory=lambda: array("q"))
    write_acks: array[int] = field(default_factory=lambda: array("q"))
    write_revs: list[object] = field(default_factory=list)

    def read(self, key: int, started_ns: int, doc: Mapping[str, object] | None) -> None:
        """A read of ``key`` that started at ``started_ns`` answered ``doc``."""
        self.read_keys.append(key)
        self.read_starts.append(started_ns)
        self.read_revs.append(None if doc is None else doc.get("_rev", ""))

    def write(self, key: int, acked_ns: int, result: Mapping[str, object]) -> None:
        """A save of ``key`` returned ``result`` (``{"id", "rev"}``) at ``acked_ns``."""
        self.write_keys.append(key)
        self.write_acks.append(acked_ns)
        self.write_revs.append(result.get("rev"))


@dataclass(frozen=True)
class StaleCheck:
    """What `check` found."""

    #: Reads that answered older than a write acknowledged before they started.
    stale: int
    #: Reads that had an acknowledged write (or a baseline) to be compared with.
    checked: int
    #: Reads whose ``_rev`` is not ``"<generation>-<32 hex>"`` (not judged).
    unparsable: int
    #: Key → the highest generation acknowledged, the baseline included.
    acknowledged: dict[int, int]


def check(logs: Iterable[StaleLog], baseline: Mapping[int, int] | None = None) -> StaleCheck:
    """Judge every logged read against the writes acknowledged before it started.

    ``baseline`` maps a key to a generation acknowledged before any logged operation (the
    preload, the previous backends' writes): a read must not answer older than that either.
    """
    logs = list(logs)
    baseline = baseline or {}
    acked: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
    for log in logs:
        for key, acked_ns, rev in zip(log.write_keys, log.write_acks, log.write_revs, strict=True):
            generation = parse_generation(rev)
            if generation is not None:
                acked[key].append((acked_ns, generation))

    # Per key: the return times, sorted, and the highest generation returned up to each.
    timelines: dict[int, tuple[list[int], list[int]]] = {}
    acknowledged = dict(baseline)
    for key, writes in acked.items():
        writes.sort()
        newest = baseline.get(key, -1)
        times: list[int] = []
        highest: list[int] = []
        for acked_ns, generation in writes:
            newest = max(newest, generation)
            times.append(acked_ns)
            highest.append(newest)
        timelines[key] = (times, highest)
        acknowledged[key] = newest

    stale = checked = unparsable = 0
    generations: dict[str, int | None] = {}  # many reads answer the same revision
    for log in logs:
        for key, started_ns, rev in zip(log.read_keys, log.read_starts, log.read_revs, strict=True):
            expected = baseline.get(key)
            timeline = timelines.get(key)
            if timeline is not None:
                before = bisect.bisect_left(timeline[0], started_ns)  # returned strictly before
                if before:
                    expected = timeline[1][before - 1]
            if expected is None:
                continue  # nothing acknowledged yet: any answer is fresh
            if rev is None:
                checked += 1
                stale += 1  # no deletes in the workload: the document was there
                continue
            if not isinstance(rev, str):
                unparsable += 1
                continue
            try:
                generation = generations[rev]
            except KeyError:
                generation = generations[rev] = parse_generation(rev)
            if generation is None:
                unparsable += 1
                continue
            checked += 1
            if generation < expected:
                stale += 1
    return StaleCheck(
        stale=stale, checked=checked, unparsable=unparsable, acknowledged=acknowledged
    )
