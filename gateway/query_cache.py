"""Cached answers of ``list_all``, ``iter_pages`` and ``query``, made obsolete by the writes that
change them.

Epochs
======
An answer is stored with the *epochs* it was read under: random ids held in epoch keys, which
writes drop; it is served only while those epochs are current. Each answer has one key,
``<table>|a|scan`` or ``<table>|a|q|<index>|<value>``, which the next answer replaces, so
obsolete answers do not pile up. Table names cannot contain ``|`` and document keys are
``<table>:<id>``, so no key of one kind can be mistaken for another.

* The scan epoch, ``<table>|e|scan``: every write of the collection drops it. The whole-table
  answer (``list_all``, ``iter_pages``) is read under it.
* A value epoch per (index, value), ``<table>|e|q|<index>|<value>``: a write drops the epochs
  of the values its document leaves and joins, on every index of the collection. A document
  is in the answer of ``query(index, value)`` only if its indexed attribute is ``value``
  before or after the write, so no other answer can change.
* The queries epoch, ``<table>|e|q``: dropped by writes whose replaced documents are unknown,
  which could have left any value: ``save_many`` and ``delete_many`` (BatchWriteItem returns
  no old items), ``invalidate``, coalesced writes, and a save or delete whose answer was lost
  and sent again (see `gateway.dynamodb.Previous`).

An index answer is read under the queries epoch and its value's epoch. A reader reads the
epochs of its answer (one ``get_many``), draws and stores the missing ones (with the token it
took: refused if a write began or ended since, `gateway.caches.base`), then reads the answer
(a second round trip), served only if it was stored under those same epochs; otherwise it
reads DynamoDB and stores the answer with the epochs, using the answer key's token (refused if
a write began or ended since). Of two readers racing, the older fill may land last and replace
the newer: a fill does not change the record's version. That costs a miss, never a stale
answer: an answer is served only under epochs that are still in their keys.

Why a reader never gets an answer older than an acknowledged write
------------------------------------------------------------------
An answer is read from DynamoDB *after* its epochs were in their keys (the reader saw them
there, or put them there itself). A write that ended before that is in the answer. A write
that ends later and could change the answer drops one of its epochs before it returns, so
no reader that starts after it returned is served that answer again.

How much a write protects before DynamoDB answers: the scan epoch, the queries epoch (for
batches and coalesced writes) and the epochs of the values a save *joins* are among the keys
of its write intent, so an epoch read while the write is in flight lives no longer than the
intent, as any entry does. The values a document *leaves* are known only from DynamoDB's
answer (the item it replaced, ``ReturnValues=ALL_OLD``; when that is unknown, the queries
epoch): their epochs are dropped after DynamoDB answered, retried like the end of the intent.
If they cannot be dropped by then, the write raises `ServiceUnavailableError` saying it was
written (``unreachable_writes="refuse"``) or returns and leaves them to the repairer
(``"accept"``). A writer that *dies* in between can leave the answer of the value the
document left listing it there until that answer's TTL.

Why not one epoch per collection: every write would then make every cached query answer of
its collection obsolete, and on a collection written a few times a second few answers would
ever be read twice (``gateway bench --workload query`` shows both).

Index queries are eventually consistent in DynamoDB itself: a write acknowledged a moment
ago may be missing from a ``Query`` of a global secondary index. The cache stores what
DynamoDB answered; so that such an answer does not outlive DynamoDB's own lag, an index
answer filled less than `INDEX_SETTLE_S` after its newest epoch began expires
`INDEX_SETTLE_S` after that epoch began. Scans (``list_all``, ``iter_pages``) are strongly
consistent reads unless ``dynamodb.consistent_read`` is off; then the same rule applies to
them.

The indexes a write considers are those this process knows of its table (described once per
table and process): after an index is added to a live table, restart the instances that
write to it, or their writes leave that index's answers in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeGuard

from boto3.dynamodb.types import Binary

from gateway.caches.base import MISS, Entry, Fill, Kind, Miss
from gateway.caches.memory import approximate_size
from gateway.codec import copy_document, encode_key_value
from gateway.counters import Counter
from gateway.dynamodb import UNKNOWN_PREVIOUS, Previous
from gateway.errors import ValidationError
from gateway.resilience import GuardedCache
from gateway.service import Document
from gateway.tokens import random_hex

#: How long after its epoch began an index answer may be stale in DynamoDB itself (GSIs are
#: eventually consistent; AWS documents propagation in a fraction of a second normally).
INDEX_SETTLE_S = 1.0
#: Separates the parts of answer and epoch keys: never in a table name.
QUERY_KEY_MARK = "|"
_SCAN = "scan"
#: How long an epoch lives without writes: long, since answers carry their own TTL; an
#: expired epoch only costs the next reader a new one.
EPOCH_TTL_S = 3600.0


def scan_suffix() -> str:
    """The answer key suffix of a whole-table scan (``list_all``, ``iter_pages``)."""
    return _SCAN


def _number_text(number: Decimal) -> str:
    """One text per numeric value, exact whatever the decimal context (``normalize`` rounds
    to the context's 28 digits; DynamoDB keeps 38) and with one zero (``-0`` equals ``0``)."""
    sign, digits, exponent = number.as_tuple()
    if not any(digits):
        return "0"
    assert isinstance(exponent, int)  # encode_key_value admits no NaN or infinity
    kept = list(digits)
    while kept[-1] == 0:
        kept.pop()
        exponent += 1
    return f"{'-' if sign else ''}{''.join(map(str, kept))}e{exponent}"


def query_suffix(index: str, value: Any) -> str:
    """The answer key suffix of ``query(index, value)`` (``value`` as `encode_key_value`
    returns it); equal DynamoDB values give equal suffixes (numbers compare by value in
    DynamoDB: ``1``, ``1.0`` and ``10e-1`` are one key, ``0`` and ``-0`` too)."""
    if isinstance(value, str):
        text = "S" + value
    elif isinstance(value, Decimal):
        text = "N" + _number_text(value)
    elif isinstance(value, (Binary, bytes, bytearray)):
        raw = value.value if isinstance(value, Binary) else bytes(value)
        text = "B" + raw.hex()
    else:  # encode_key_value admits nothing else
        raise TypeError(f"not a DynamoDB key value: {value!r}")
    return f"q{QUERY_KEY_MARK}{index}{QUERY_KEY_MARK}{text}"


def _epoch_key(table: str, what: str) -> str:
    return f"{table}{QUERY_KEY_MARK}e{QUERY_KEY_MARK}{what}"


def scan_epoch_key(table: str) -> str:
    """The epoch every write of ``table`` drops (its whole-table answer's)."""
    return _epoch_key(table, _SCAN)


def queries_epoch_key(table: str) -> str:
    """The epoch of every index answer of ``table`` (dropped by writes of unknown reach)."""
    return _epoch_key(table, "q")


def value_epoch_key(table: str, suffix: str) -> str:
    """The epoch of the answer whose `query_suffix` is ``suffix``."""
    return _epoch_key(table, suffix)


def _value_keys(
    table: str, indexes: Mapping[str, str], document: Mapping[str, Any]
) -> list[str] | None:
    """The value epochs of ``document`` on every index (None if a value cannot be a key)."""
    keys = []
    for index, attribute in indexes.items():
        if attribute in document:
            try:
                value = encode_key_value(document[attribute], attribute)
            except ValidationError:
                return None
            keys.append(value_epoch_key(table, query_suffix(index, value)))
    return keys


def save_keys(table: str, indexes: Mapping[str, str], document: Mapping[str, Any]) -> list[str]:
    """The epochs a save of ``document`` drops under its intent: the scan epoch and the
    epochs of the values it joins (the queries epoch if one is not a valid key value:
    DynamoDB then refuses the write anyway)."""
    joined = _value_keys(table, indexes, document)
    if joined is None:
        return [scan_epoch_key(table), queries_epoch_key(table)]
    return [scan_epoch_key(table), *joined]


def batch_keys(table: str) -> list[str]:
    """The epochs a write of unknown reach drops: the scan and every index answer."""
    return [scan_epoch_key(table), queries_epoch_key(table)]


def left_keys(
    table: str, indexes: Mapping[str, str], previous: Previous, dropped: Sequence[str]
) -> list[str]:
    """The epochs of the values a write's document left, known from the item it replaced,
    minus those ``dropped`` already (the queries epoch if that item is unknown)."""
    if not indexes or previous is None:
        return []
    if previous is UNKNOWN_PREVIOUS:
        return [queries_epoch_key(table)]
    left = _value_keys(table, indexes, previous)
    if left is None:
        return [queries_epoch_key(table)]
    return [key for key in left if key not in dropped]


class QueryCache:
    """Answers of scans and index queries through a `GuardedCache` (see the module docstring)."""

    def __init__(
        self,
        guard: GuardedCache,
        *,
        copy: Callable[[Document], Document],
        max_bytes: int,
        fill_deadline_s: float,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        scans_consistent: bool = True,
    ) -> None:
        """``copy`` makes a caller's private copy of a stored document (identity for a
        backend that decodes every answer); answers over ``max_bytes`` (approximate, as the
        memory tier counts them) are not stored; a DynamoDB read that took longer than
        ``fill_deadline_s`` is not stored either. ``scans_consistent``: whether the service's
        scans are strongly consistent reads (else their answers settle like index answers)."""
        self._scans_consistent = scans_consistent
        self._guard = guard
        self._copy = copy
        self._max_bytes = max_bytes
        self._fill_deadline_s = fill_deadline_s
        self._clock = clock
        self._wall_clock = wall_clock
        self.hits = Counter()
        self.misses = Counter()
        self.too_large = Counter()

    def answer(
        self, table: str, suffix: str, ttl_s: float, load: Callable[[], list[Document]]
    ) -> list[Document]:
        """The cached answer for ``suffix`` (`scan_suffix` or `query_suffix`), or
        ``load()``'s, then stored for ``ttl_s`` if it may be."""
        found = self._lookup(table, suffix)
        if found is None:
            return load()
        key, epochs, entry, began = found
        if self._current(entry, epochs):
            self.hits.inc()
            return [self._copy(document) for document in entry.document["items"]]
        self.misses.inc()
        token = self._guard.read_token(key, entry)
        started = self._clock()
        documents = load()
        self._store(key, epochs, token, started, documents, self._ttl(suffix, ttl_s, began))
        return documents

    def pages(
        self,
        table: str,
        ttl_s: float,
        page_size: int,
        load_pages: Callable[[], Iterator[list[Document]]],
    ) -> Iterator[list[Document]]:
        """The scan's answer in pages of ``page_size``; a miss streams DynamoDB's pages to the
        caller and stores them once the last page is read (if the caller reads that far)."""
        found = self._lookup(table, _SCAN)
        if found is None:
            yield from load_pages()
            return
        key, epochs, entry, began = found
        if self._current(entry, epochs):
            self.hits.inc()
            documents = entry.document["items"]
            for start in range(0, len(documents), page_size):
                yield [self._copy(document) for document in documents[start : start + page_size]]
            return
        self.misses.inc()
        token = self._guard.read_token(key, entry)
        started = self._clock()
        collected: list[Document] | None = []
        size = 0
        for page in load_pages():
            if collected is not None:
                size += len(repr(page))
                if size > self._max_bytes:
                    self.too_large.inc()
                    collected = None
                else:
                    # Copied now: the caller may change the page before the last one is read.
                    collected.extend(copy_document(document) for document in page)
            yield page
        if collected is not None:
            ttl = self._ttl(_SCAN, ttl_s, began)
            self._store(key, epochs, token, started, collected, ttl, copy=False)

    # -- internals ---------------------------------------------------------------------------

    def _lookup(self, table: str, suffix: str) -> tuple[str, str, Entry | Miss, float] | None:
        """The answer's key, its current epochs, what the cache holds there and when the
        newest epoch began; None when the answer must not be cached now (an epoch awaits a
        repair)."""
        if suffix == _SCAN:
            epoch_keys = [scan_epoch_key(table)]
        else:
            epoch_keys = [queries_epoch_key(table), value_epoch_key(table, suffix)]
        guard = self._guard
        if any(guard.awaits_repair(key) for key in epoch_keys):
            return None  # a write's end is still to be replayed: no epoch can be trusted
        epochs, began = self._epochs(epoch_keys)
        key = f"{table}{QUERY_KEY_MARK}a{QUERY_KEY_MARK}{suffix}"
        return key, epochs, guard.get(key), began

    def _current(self, entry: Entry | Miss, epochs: str) -> TypeGuard[Entry]:
        """Whether the cache holds an answer read under the current ``epochs``."""
        return self._usable(entry) and entry.document.get("epochs") == epochs

    def _usable(self, entry: Entry | Miss) -> TypeGuard[Entry]:
        """Whether a cache answer is a stored answer to serve (not a miss, not a floor left
        by `invalidate_collection`, not stored before a recovery this instance distrusts)."""
        return (
            entry is not MISS
            and entry.kind is Kind.DOCUMENT
            and entry.stored_at >= self._guard.distrust_before
        )

    def _epochs(self, keys: list[str]) -> tuple[str, float]:
        """The epochs in ``keys`` (new ones drawn and stored where missing), joined with
        ``.``, and when the newest began (wall clock)."""
        guard = self._guard
        now = self._wall_clock()
        epochs: list[str] = []
        began = 0.0
        fills: list[Fill] = []
        for key, entry in zip(keys, guard.get_many(keys), strict=True):
            if self._usable(entry):
                epochs.append(str(entry.document["epoch"]))
                began = max(began, entry.stored_at)
                continue
            epoch = random_hex(16)
            # With the token taken from the read above: refused if a write began or ended
            # since (the answers read under this epoch then go unread, which is harmless).
            stored = Entry(Kind.DOCUMENT, 0, None, {"epoch": epoch}, now)
            fills.append(Fill(key, stored, EPOCH_TTL_S, guard.read_token(key, entry)))
            epochs.append(epoch)
            began = now
        if fills:
            guard.fill_many(fills)
        return ".".join(epochs), began

    def _ttl(self, suffix: str, ttl_s: float, began: float) -> float:
        if suffix == _SCAN and self._scans_consistent:
            return ttl_s
        settled_at = began + INDEX_SETTLE_S
        now = self._wall_clock()
        return ttl_s if now >= settled_at else min(ttl_s, settled_at - now)

    def _store(
        self,
        key: str,
        epochs: str,
        token: int,
        started: float,
        documents: list[Document],
        ttl_s: float,
        copy: bool = True,
    ) -> None:
        if ttl_s <= 0 or self._clock() - started > self._fill_deadline_s:
            return
        stored = [self._copy(document) for document in documents] if copy else documents
        answer = {"epochs": epochs, "items": stored}
        entry = Entry(Kind.DOCUMENT, 0, None, answer, self._wall_clock())
        if approximate_size(key, entry) > self._max_bytes:
            self.too_large.inc()
            return
        self._guard.fill_many([Fill(key, entry, ttl_s, token)])
