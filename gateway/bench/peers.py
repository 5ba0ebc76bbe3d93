"""The caches users would otherwise write, as bench backends beside the gateway's.

* `NaiveCache` (``naive``): what an engineer writes in an afternoon: a ``cachetools.TTLCache``
  behind one ``threading.Lock``, read-through, and on a write "save to DynamoDB, then delete the
  key from the cache". No single-flight, no revision checks, no negative caching.
* `DogpileCache` (``dogpile``): dogpile.cache's Redis backend, the library most Python services
  reach for: ``region.get_or_create`` on a read, ``region.delete`` after a write.

Both wrap the bare `DynamoDBService` the bench built for them (injected latency, request meter)
and answer the `DatabaseService` calls the bench makes (``get``, ``get_many``, ``save``,
``delete``, ``stats``, ``close``), plus ``save_many`` / ``delete_many``. They are written the
way their users write them, races included: read-through with delete-on-write lets a reader that
missed, read the old document and then lost the race with a writer put that old copy back after
the writer's delete, where it stays until its TTL. The bench's stale-read checker
(`gateway.bench.stale`) counts what that costs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from cachetools import TTLCache

from gateway.service import IfRev

DOGPILE_HINT = "pip install 'dynamodb-gateway[bench]'"
Document = dict[str, Any]


def _stats(db: Any, hits: int, misses: int) -> dict[str, Any]:
    """The wrapped service's stats (DynamoDB calls, capacity) with this cache's hits/misses."""
    stats = dict(db.stats())
    lookups = hits + misses
    stats.update(hits=hits, misses=misses, hit_ratio=hits / lookups if lookups else 0.0)
    return stats


class NaiveCache:
    """A hand-rolled read-through / delete-on-write cache in front of a `DatabaseService`.

    One ``TTLCache`` (the gateway's TTL and max items) behind one lock, held only around the
    dictionary operations, never around DynamoDB. A miss reads DynamoDB and stores the answer,
    with no single-flight: N threads missing one key make N reads. Documents are handed out as
    stored (no copy), as such a wrapper does.

    Absent documents: the lookup is ``cache.get(key)``, so a stored None could not be told from
    a miss; this wrapper stores only documents (``if doc is not None``), so every read of an
    absent document goes to DynamoDB: no negative caching. (The bench reads existing keys only.)
    """

    def __init__(self, db: Any, *, ttl_s: float, max_items: int) -> None:
        self._db = db
        self._cache: TTLCache[tuple[str, str], Document] = TTLCache(maxsize=max_items, ttl=ttl_s)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, db_name: str, doc_id: str) -> Document | None:
        key = (db_name, doc_id)
        with self._lock:
            doc = self._cache.get(key)
            if doc is not None:
                self._hits += 1
                return doc
            self._misses += 1
        doc = self._db.get(db_name, doc_id)
        if doc is not None:
            with self._lock:
                self._cache[key] = doc
        return doc

    def get_many(self, db_name: str, doc_ids: Iterable[str]) -> dict[str, Document | None]:
        wanted = list(doc_ids)
        found: dict[str, Document | None] = {}
        with self._lock:
            for doc_id in dict.fromkeys(wanted):
                found[doc_id] = self._cache.get((db_name, doc_id))
            missing = [doc_id for doc_id, doc in found.items() if doc is None]
            self._hits += len(found) - len(missing)
            self._misses += len(missing)
        if missing:
            loaded = self._db.get_many(db_name, missing)
            with self._lock:
                for doc_id, doc in loaded.items():
                    if doc is not None:
                        self._cache[(db_name, doc_id)] = doc
            found.update(loaded)
        return {doc_id: found.get(doc_id) for doc_id in wanted}

    def save(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> dict[str, str]:
        result: dict[str, str] = self._db.save(db_name, doc_id, doc, if_rev=if_rev)
        self._forget(db_name, [doc_id])
        return result

    def delete(self, db_name: str, doc_id: str, *, if_rev: IfRev = None) -> bool:
        removed = bool(self._db.delete(db_name, doc_id, if_rev=if_rev))
        self._forget(db_name, [doc_id])
        return removed

    def save_many(self, db_name: str, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        revs: dict[str, str] = self._db.save_many(db_name, docs)
        self._forget(db_name, docs)
        return revs

    def delete_many(self, db_name: str, doc_ids: Iterable[str]) -> None:
        ids = list(doc_ids)
        self._db.delete_many(db_name, ids)
        self._forget(db_name, ids)

    def _forget(self, db_name: str, doc_ids: Iterable[str]) -> None:
        with self._lock:
            for doc_id in doc_ids:
                self._cache.pop((db_name, doc_id), None)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            hits, misses = self._hits, self._misses
        return _stats(self._db, hits, misses)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> NaiveCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ThreadCounts:
    """Hit and miss counters, one pair per thread, summed when read: no lock on the hot path
    (a shared lock would add contention that is the bench's, not dogpile's)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._cells: list[list[int]] = []  # list.append is atomic under the GIL

    def cell(self) -> list[int]:
        """This thread's ``[hits, misses]``."""
        try:
            cell: list[int] = self._local.cell
        except AttributeError:
            cell = self._local.cell = [0, 0]
            self._cells.append(cell)
        return cell

    def totals(self) -> tuple[int, int]:
        cells = list(self._cells)
        return sum(c[0] for c in cells), sum(c[1] for c in cells)


class DogpileCache:
    """dogpile.cache's Redis backend in front of a `DatabaseService`, as its docs configure it.

    A region on ``dogpile.cache.redis`` with ``expiration_time`` = the gateway's TTL (Redis
    expires the keys at twice that, as dogpile advises, so that an expired value can still be
    served while one thread regenerates it), keys prefixed like the gateway's. A read is
    ``region.get_or_create`` (dogpile's in-process lock makes one creator per key at a time);
    a write saves to DynamoDB, then ``region.delete``. The creator's None is cached like any
    value (dogpile's default, which a typical user keeps): negative caching for the TTL.
    """

    def __init__(self, db: Any, *, redis_url: str, key_prefix: str, ttl_s: float) -> None:
        from dogpile.cache import make_region

        self._db = db
        self._prefix = key_prefix
        self._region = make_region(key_mangler=self._mangle).configure(
            "dogpile.cache.redis",
            expiration_time=ttl_s,
            arguments={
                "url": redis_url,
                "redis_expiration_time": max(1, int(ttl_s * 2)),
                "distributed_lock": False,
            },
        )
        self._counts = _ThreadCounts()

    def _mangle(self, key: str) -> str:
        return self._prefix + key

    @staticmethod
    def _key(db_name: str, doc_id: str) -> str:
        return f"{db_name}:{doc_id}"

    def get(self, db_name: str, doc_id: str) -> Document | None:
        cell = self._counts.cell()
        created = False

        def create() -> Document | None:
            nonlocal created
            created = True
            doc: Document | None = self._db.get(db_name, doc_id)
            return doc

        doc: Document | None = self._region.get_or_create(self._key(db_name, doc_id), create)
        cell[1 if created else 0] += 1
        return doc

    def get_many(self, db_name: str, doc_ids: Iterable[str]) -> dict[str, Document | None]:
        wanted = list(doc_ids)
        unique = list(dict.fromkeys(wanted))
        cell = self._counts.cell()
        created = 0

        def create(*keys: str) -> list[Document | None]:
            nonlocal created
            created += len(keys)
            ids = [key.partition(":")[2] for key in keys]
            loaded = self._db.get_many(db_name, ids)
            return [loaded.get(doc_id) for doc_id in ids]

        values = self._region.get_or_create_multi(
            [self._key(db_name, doc_id) for doc_id in unique], create
        )
        cell[0] += len(unique) - created
        cell[1] += created
        found = dict(zip(unique, values, strict=True))
        return {doc_id: found[doc_id] for doc_id in wanted}

    def save(
        self, db_name: str, doc_id: str, doc: Mapping[str, Any], *, if_rev: IfRev = None
    ) -> dict[str, str]:
        result: dict[str, str] = self._db.save(db_name, doc_id, doc, if_rev=if_rev)
        self._region.delete(self._key(db_name, doc_id))
        return result

    def delete(self, db_name: str, doc_id: str, *, if_rev: IfRev = None) -> bool:
        removed = bool(self._db.delete(db_name, doc_id, if_rev=if_rev))
        self._region.delete(self._key(db_name, doc_id))
        return removed

    def save_many(self, db_name: str, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        revs: dict[str, str] = self._db.save_many(db_name, docs)
        self._region.delete_multi([self._key(db_name, doc_id) for doc_id in docs])
        return revs

    def delete_many(self, db_name: str, doc_ids: Iterable[str]) -> None:
        ids = list(doc_ids)
        self._db.delete_many(db_name, ids)
        self._region.delete_multi([self._key(db_name, doc_id) for doc_id in ids])

    def stats(self) -> dict[str, Any]:
        return _stats(self._db, *self._counts.totals())

    def close(self) -> None:
        try:
            client = getattr(self._region.backend, "writer_client", None)
            if client is not None:
                client.close()
        finally:
            self._db.close()

    def __enter__(self) -> DogpileCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def dogpile_missing() -> str | None:
    """Why the dogpile backend cannot run (dogpile.cache not installed), or None."""
    import importlib.util

    if importlib.util.find_spec("dogpile") is None or (
        importlib.util.find_spec("dogpile.cache") is None
    ):
        return f"dogpile.cache is not installed ({DOGPILE_HINT})"
    return None
