"""A gateway instance that follows a table's stream in its own process, until it is killed.

`tests/test_streams_integration.py` starts it (``python tests/streams_worker.py CONFIG``, CONFIG
a JSON object) to kill a stream follower with SIGKILL mid-work: the lease it holds in Redis
must then pass to another instance, which resumes from the checkpoint. The worker:

1. builds a gateway with streams on (`make_instance`, lease ``lease_s``);
2. registers the collection before its table exists, then creates the table (``save_many``
   of ``ids``), so its follower takes the shard's lease;
3. waits until its follower's one-time drop of the collection is done (it started at the
   stream's newest record), observed as a miss on a sentinel it cached before;
4. prints one JSON line every 50 ms: ``{"held": shards held, "applied": records applied,
   "settled": step 3 done}``, until it is killed (or its parent process is gone).

`make_instance` is also what the test process builds its instances with.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import Settings
from gateway.factory import build_cache, build_dynamodb_service, build_gateway
from gateway.gateway import CachingGateway

#: The fill deadline of the instances the tests build: the one-time drop of a collection whose
#: follower starts at the stream's newest record comes this long after it started (2 s by
#: default), so the tests wait less for it.
FILL_DEADLINE_S = 0.3
#: The sentinel document: cached before the followers start, so that their drop shows.
SENTINEL = "__sentinel__"


def make_instance(
    settings: Settings, *, lease_s: float | None = None, fill_deadline_s: float = FILL_DEADLINE_S
) -> CachingGateway:
    """A caching gateway following its collections' streams, built by
    `gateway.factory.build_gateway`, with the lease (None: the default) and fill deadline
    given here."""
    assert settings.STREAMS_INVALIDATION
    cache = build_cache(settings)
    try:
        service = build_dynamodb_service(settings)
    except BaseException:
        cache.close()
        raise
    healthy = getattr(cache, "wait_healthy", None)
    if healthy is not None:
        healthy(10.0)
    try:
        return build_gateway(
            settings, service, cache, fill_deadline_s=fill_deadline_s, stream_lease_s=lease_s
        )
    except BaseException:
        service.close()
        cache.close()
        raise


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


def _streams(gateway: CachingGateway, db_name: str) -> dict[str, Any]:
    collections: dict[str, Any] = gateway.stats()["streams"]["collections"]
    return dict(collections.get(db_name, {}))


def main(config: dict[str, Any]) -> None:
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="parent-watchdog", daemon=True
    ).start()
    settings = Settings(
        CACHE_BACKEND=config["backend"],
        STREAMS_INVALIDATION=True,
        DYNAMODB_ENDPOINT_URL=config["endpoint_url"],
        DYNAMODB_TABLE_PREFIX=config["table_prefix"],
        REDIS_URL=config["redis_url"],
        REDIS_KEY_PREFIX=config["key_prefix"],
    )
    db_name = config["db_name"]
    gateway = make_instance(settings, lease_s=config["lease_s"])
    gateway.get(db_name, SENTINEL)  # registers the collection; caches "no such document"
    gateway.save_many(db_name, {doc_id: {"v": 0} for doc_id in config["ids"]})
    settled = False
    while True:
        if not settled and _streams(gateway, db_name).get("shards_held"):
            misses = gateway.stats()["misses"]
            gateway.get(db_name, SENTINEL)
            settled = gateway.stats()["misses"] > misses
        state = _streams(gateway, db_name)
        line = {
            "held": state.get("shards_held", 0),
            "applied": state.get("records_applied", 0),
            "settled": settled,
        }
        print(json.dumps(line), flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
