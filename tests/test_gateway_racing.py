"""Racing writers against DynamoDB's own answer.

Eight threads run saves, deletes, ``save_many``, ``delete_many``, ``invalidate``, conditional
saves and reads over four keys, through two gateway instances sharing Redis (redis, tiered) or
one instance with a three-item memory tier (so evictions race the writes too). Every DynamoDB
request goes through the fault proxy, which delays each by a random 0-30 ms (so requests are
reordered at the wire) and loses some answers after DynamoDB applied the request. Once the
writers stop, every instance's ``get`` must equal the item DynamoDB holds, for every key.

``GATEWAY_RACING_RUNS`` (10) and ``GATEWAY_RACING_SECONDS`` (1.0) size the test.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gateway import ABSENT
from gateway.caches.memory import MemoryCache
from gateway.errors import ConflictError
from gateway.gateway import CachingGateway
from gateway.retry import RetryPolicy
from tests.gateway_helpers import Policy, gateways, make_service, race
from tests.servers import FaultProxy

RUNS = int(os.environ.get("GATEWAY_RACING_RUNS", "10"))
SECONDS = float(os.environ.get("GATEWAY_RACING_SECONDS", "1.0"))
KEYS = ["k0", "k1", "k2", "k3"]
THREADS = 8


@contextmanager
def instances(
    backend: str, endpoint_url: str, table_prefix: str, redis_url: str | None
) -> Iterator[list[CachingGateway]]:
    retry = RetryPolicy(max_attempts=6, base_s=0.001, cap_s=0.01)
    if backend != "memory":
        with gateways(
            backend,
            endpoint_url,
            table_prefix,
            redis_url,
            count=2,
            policy=Policy(jitter=0.0),
            retry_policy=retry,
        ) as built:
            yield built
        return
    policy = Policy(jitter=0.0)
    gw = CachingGateway(
        make_service(endpoint_url, table_prefix, retry_policy=retry),
        MemoryCache(max_items=3),
        policy_for=lambda _db: policy,
    )
    try:
        yield [gw]
    finally:
        gw.close()


def _one_operation(gw: CachingGateway, rng: random.Random, n: int) -> None:
    key = rng.choice(KEYS)
    roll = rng.random()
    if roll < 0.30:
        gw.get("race", key)
    elif roll < 0.50:
        gw.save("race", key, {"n": n, "by": threading.current_thread().name})
    elif roll < 0.60:
        gw.delete("race", key)
    elif roll < 0.70:
        picked = rng.sample(KEYS, 2)
        gw.save_many("race", {k: {"n": n, "batch": True} for k in picked})
    elif roll < 0.77:
        gw.delete_many("race", rng.sample(KEYS, 2))
    elif roll < 0.82:
        gw.invalidate("race", key)
    else:
        current = gw.get("race", key)
        try:
            if current is None:
                gw.save("race", key, {"n": n, "created": True}, if_rev=ABSENT)
            else:
                gw.save("race", key, {**current, "n": n}, if_rev=current["_rev"])
        except ConflictError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("run", range(RUNS))
@pytest.mark.parametrize("backend", ["memory", "redis", "tiered"])
def test_once_writers_stop_every_instance_answers_what_dynamodb_holds(
    backend: str,
    run: int,
    fault_proxy: FaultProxy,
    table_prefix: str,
    request: pytest.FixtureRequest,
) -> None:
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    fault_proxy.seed(1000 + run)
    with instances(backend, fault_proxy.endpoint_url, table_prefix, redis_url) as gws:
        gws[0].save_many("race", {key: {"n": -1} for key in KEYS})
        fault_proxy.configure(latency_jitter_ms=30.0, lose_rate=0.03, lose_mode="error")
        race(gws, _one_operation, seed=run, seconds=SECONDS, threads=THREADS)
        fault_proxy.clear_faults()

        truth = make_service(fault_proxy.endpoint_url, table_prefix)
        try:
            disagreements = [
                (i, key, gw.get("race", key), truth.get("race", key))
                for i, gw in enumerate(gws)
                for key in KEYS
                if gw.get("race", key) != truth.get("race", key)
            ]
        finally:
            truth.close()
        assert disagreements == []
