"""Model-based test: a caching gateway must answer exactly like the bare service.

A hypothesis state machine drives writes (save, conditional save, delete, save_many,
delete_many) through the gateway, and after every step compares what the gateway reads with
what a bare DynamoDBService reads from the same table: equal values AND equal types (Decimal,
Binary, sets, None, nesting), revisions included.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gateway import ABSENT, ConflictError
from tests.gateway_helpers import gateways, make_service
from tests.strategies import documents

IDS = st.sampled_from(["a", "b", "c", "é", "d d"])
_tables = itertools.count()


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return ("set", sorted(type(v).__name__ for v in value))
    return type(value).__name__


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["memory", "redis", "tiered"])
def test_gateway_answers_like_the_bare_service(
    backend: str, moto_server: Any, table_prefix: str, request: pytest.FixtureRequest
) -> None:
    redis_url = None if backend == "memory" else request.getfixturevalue("redis_url")
    with gateways(backend, moto_server.endpoint_url, table_prefix, redis_url) as (gw,):
        bare = make_service(moto_server.endpoint_url, table_prefix)

        class GatewayMatchesService(RuleBasedStateMachine):
            def __init__(self) -> None:
                super().__init__()
                # A new collection per run: hypothesis replays examples from scratch.
                self.collection = f"model{next(_tables)}"
                self.revs: dict[str, str] = {}

            @rule(doc_id=IDS, doc=documents())
            def save(self, doc_id: str, doc: dict[str, Any]) -> None:
                self.revs[doc_id] = gw.save(self.collection, doc_id, doc)["rev"]

            @rule(doc_id=IDS, doc=documents(), stale=st.booleans())
            def save_if_rev(self, doc_id: str, doc: dict[str, Any], stale: bool) -> None:
                current = self.revs.get(doc_id)
                expected = "0-" + "0" * 32 if stale or current is None else current
                try:
                    self.revs[doc_id] = gw.save(self.collection, doc_id, doc, if_rev=expected)[
                        "rev"
                    ]
                    assert not stale and current is not None
                except ConflictError:
                    assert stale or current is None

            @rule(doc_id=IDS, doc=documents())
            def create_only(self, doc_id: str, doc: dict[str, Any]) -> None:
                try:
                    self.revs[doc_id] = gw.save(self.collection, doc_id, doc, if_rev=ABSENT)["rev"]
                    assert doc_id not in self.revs or self.revs[doc_id]
                except ConflictError:
                    assert doc_id in self.revs

            @rule(doc_id=IDS)
            def delete(self, doc_id: str) -> None:
                removed = gw.delete(self.collection, doc_id)
                assert removed == (doc_id in self.revs)
                self.revs.pop(doc_id, None)

            @rule(docs=st.dictionaries(IDS, documents(), max_size=3))
            def save_many(self, docs: dict[str, dict[str, Any]]) -> None:
                self.revs.update(gw.save_many(self.collection, docs))

            @rule(doc_ids=st.lists(IDS, max_size=3))
            def delete_many(self, doc_ids: list[str]) -> None:
                gw.delete_many(self.collection, doc_ids)
                for doc_id in doc_ids:
                    self.revs.pop(doc_id, None)

            @rule(doc_id=IDS)
            def read(self, doc_id: str) -> None:
                mine = gw.get(self.collection, doc_id)
                truth = bare.get(self.collection, doc_id)
                assert mine == truth
                assert _types(mine) == _types(truth)

            @invariant()
            def every_read_matches(self) -> None:
                ids = ["a", "b", "c", "é", "d d", "a"]
                mine = gw.get_many(self.collection, ids)
                truth = bare.get_many(self.collection, ids)
                assert mine == truth
                assert _types(mine) == _types(truth)
                for doc_id, rev in self.revs.items():
                    assert mine[doc_id] is not None and mine[doc_id]["_rev"] == rev

        run_state_machine_as_test(
            GatewayMatchesService,
            settings=settings(
                max_examples=12,
                stateful_step_count=12,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            ),
        )
        bare.close()
