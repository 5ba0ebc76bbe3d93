"""Tests for gateway.retry: backoff, budget, policy, classification. No network, no real sleep."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from gateway import aws_errors
from gateway.errors import ServiceUnavailableError, ThrottledError
from gateway.retry import (
    AMBIGUOUS_CODES,
    THROTTLE_CODES,
    TRANSIENT_CODES,
    FullJitterBackoff,
    RetryBudget,
    RetryPolicy,
    botocore_config,
    classify,
    error_code,
    is_throttle,
    is_timeout,
    is_transient,
    may_have_been_applied,
)

ENDPOINT = "http://localhost:8000/"

# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when slept on (or ticked), and a sleep that records its waits."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def tick(self, seconds: float) -> None:
        self.now += seconds


def client_error(code: str, status: int = 400, operation: str = "PutItem") -> ClientError:
    """A ClientError shaped like the ones botocore raises for DynamoDB."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 0},
        },
        operation,
    )


def throttle() -> ClientError:
    return client_error("ProvisionedThroughputExceededException")


def scripted(outcomes: Iterable[BaseException | Any]) -> tuple[Callable[[], Any], list[int]]:
    """A callable that raises or returns the next outcome, and a one-element call counter."""
    it: Iterator[Any] = iter(outcomes)
    calls = [0]

    def fn() -> Any:
        calls[0] += 1
        outcome = next(it)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return fn, calls


def always(exc_factory: Callable[[], BaseException]) -> tuple[Callable[[], Any], list[int]]:
    return scripted(exc_factory() for _ in itertools.count())


def make_policy(
    fake: FakeTime,
    *,
    rand: float = 1.0,
    max_attempts: int = 8,
    base_s: float = 1.0,
    cap_s: float = 20.0,
    deadline_s: float | None = None,
    budget: RetryBudget | None = None,
) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts,
        base_s=base_s,
        cap_s=cap_s,
        deadline_s=deadline_s,
        budget=budget,
        sleep=fake.sleep,
        random=lambda: rand,
        clock=fake.clock,
    )


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


# ------------------------------------------------------------------------------------------
# FullJitterBackoff
# ------------------------------------------------------------------------------------------


def test_backoff_rand_one_doubles_up_to_cap() -> None:
    # The sequence botocore's test_standard.py expects for base 1, cap 20, rand 1.
    backoff = FullJitterBackoff(base_s=1, cap_s=20)
    assert [backoff.compute(i, 1.0) for i in range(8)] == [1, 2, 4, 8, 16, 20, 20, 20]


def test_backoff_rand_scales_the_window() -> None:
    backoff = FullJitterBackoff(base_s=1, cap_s=20)
    assert [backoff.compute(i, 0.5) for i in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert [backoff.compute(i, 0.0) for i in range(3)] == [0, 0, 0]


def test_backoff_defaults_and_huge_attempt_does_not_overflow() -> None:
    backoff = FullJitterBackoff()
    assert backoff.compute(0, 1.0) == pytest.approx(0.025)
    assert backoff.compute(3, 1.0) == pytest.approx(0.2)
    assert backoff.compute(10_000, 1.0) == 2.0


def test_backoff_is_a_frozen_value() -> None:
    assert FullJitterBackoff(1, 20) == FullJitterBackoff(1, 20)
    assert hash(FullJitterBackoff(1, 20)) == hash(FullJitterBackoff(1, 20))
    with pytest.raises(AttributeError):
        FullJitterBackoff(1, 20).base_s = 2  # type: ignore[misc]


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_backoff_rejects_bad_parameters(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        FullJitterBackoff(base, cap)


def test_backoff_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError):
        FullJitterBackoff(1, 2).compute(-1, 1.0)


# ------------------------------------------------------------------------------------------
# RetryPolicy.call
# ------------------------------------------------------------------------------------------


def test_success_at_once_does_not_sleep(fake: FakeTime) -> None:
    policy = make_policy(fake)
    fn, calls = scripted(["ok"])
    assert policy.call("GetItem", fn) == "ok"
    assert calls == [1]
    assert fake.waits == []
    assert policy.stats() == {"retries": 0, "throttles": 0, "budget_exhausted": 0, "gave_up": 0}


@pytest.mark.parametrize("n", [1, 2, 5])
def test_success_after_n_throttles_returns_value_with_n_waits(fake: FakeTime, n: int) -> None:
    policy = make_policy(fake)
    fn, calls = scripted([*(throttle() for _ in range(n)), {"Item": 1}])
    assert policy.call("GetItem", fn) == {"Item": 1}
    assert calls == [n + 1]
    assert fake.waits == [1, 2, 4, 8, 16][:n]
    stats = policy.stats()
    assert stats["retries"] == n
    assert stats["throttles"] == n
    assert stats["gave_up"] == 0


def test_scripted_randomness_is_used_for_each_wait(fake: FakeTime) -> None:
    rands = iter([0.5, 0.25, 1.0])
    policy = RetryPolicy(
        max_attempts=8,
        base_s=1,
        cap_s=20,
        deadline_s=None,
        sleep=fake.sleep,
        random=lambda: next(rands),
        clock=fake.clock,
    )
    fn, _ = scripted([throttle(), throttle(), throttle(), "ok"])
    assert policy.call("GetItem", fn) == "ok"
    assert fake.waits == [0.5, 0.5, 4]


def test_rand_half_halves_every_wait(fake: FakeTime) -> None:
    policy = make_policy(fake, rand=0.5)
    fn, _ = always(throttle)
    with pytest.raises(ThrottledError):
        policy.call("GetItem", fn)
    assert fake.waits == [0.5, 1, 2, 4, 8, 10, 10]


def test_max_attempts_exhausted_raises_throttled_error(fake: FakeTime) -> None:
    policy = make_policy(fake)
    fn, calls = always(throttle)
    with pytest.raises(ThrottledError) as info:
        policy.call("PutItem", fn)
    err = info.value
    assert calls == [8]
    assert fake.waits == [1, 2, 4, 8, 16, 20, 20]
    assert err.attempts == 8
    assert err.elapsed == pytest.approx(71.0)  # from the fake clock: the sum of the waits
    assert err.code == "ProvisionedThroughputExceededException"
    assert err.operation == "PutItem"
    assert isinstance(err.__cause__, ClientError)
    assert error_code(err.__cause__) == "ProvisionedThroughputExceededException"
    message = str(err)
    for needle in (
        "PutItem",
        "8 attempts",
        "71.00 s",
        "ProvisionedThroughputExceededException",
        "on-demand",
        "provisioned",
    ):
        assert needle in message
    assert policy.stats() == {"retries": 7, "throttles": 8, "budget_exhausted": 0, "gave_up": 1}


def test_elapsed_includes_time_spent_inside_attempts(fake: FakeTime) -> None:
    policy = make_policy(fake, max_attempts=2)

    def slow_throttle() -> None:
        fake.tick(3.0)
        raise throttle()

    with pytest.raises(ThrottledError) as info:
        policy.call("Query", slow_throttle)
    assert info.value.elapsed == pytest.approx(3.0 + 1.0 + 3.0)


def test_max_attempts_one_means_no_retry(fake: FakeTime) -> None:
    policy = make_policy(fake, max_attempts=1)
    fn, calls = always(throttle)
    with pytest.raises(ThrottledError) as info:
        policy.call("GetItem", fn)
    assert calls == [1]
    assert fake.waits == []
    assert info.value.attempts == 1
    assert "1 attempt " in str(info.value)


def test_throttle_hint_depends_on_code(fake: FakeTime) -> None:
    policy = make_policy(fake, max_attempts=1)
    fn, _ = always(lambda: client_error("RequestLimitExceeded"))
    with pytest.raises(ThrottledError, match="quota increase"):
        policy.call("GetItem", fn)


def test_deadline_gives_up_before_sleeping_past_it(fake: FakeTime) -> None:
    policy = make_policy(fake, deadline_s=10.0)
    fn, calls = always(throttle)
    with pytest.raises(ThrottledError) as info:
        policy.call("GetItem", fn)
    # 1 + 2 + 4 = 7 s slept; the next wait (8 s) would end at 15 s > 10 s: give up now.
    assert fake.waits == [1, 2, 4]
    assert calls == [4]
    assert info.value.attempts == 4
    assert info.value.elapsed == pytest.approx(7.0)
    assert "deadline" in str(info.value)


def test_wait_ending_exactly_on_the_deadline_is_allowed(fake: FakeTime) -> None:
    policy = make_policy(fake, deadline_s=7.0)
    fn, _ = scripted([throttle(), throttle(), throttle(), "ok"])
    assert policy.call("GetItem", fn) == "ok"
    assert fake.waits == [1, 2, 4]


def test_deadline_counts_time_spent_in_attempts(fake: FakeTime) -> None:
    policy = make_policy(fake, deadline_s=10.0)

    def slow_throttle() -> None:
        fake.tick(9.5)
        raise throttle()

    with pytest.raises(ThrottledError) as info:
        policy.call("Scan", slow_throttle)
    assert fake.waits == []  # 9.5 s + a 1 s wait would pass 10 s
    assert info.value.attempts == 1


@pytest.mark.parametrize(
    "exc",
    [
        client_error("ValidationException"),
        client_error("ConditionalCheckFailedException"),
        client_error("ResourceNotFoundException"),
        client_error("AccessDeniedException"),
        client_error("TransactionCanceledException"),
        ValueError("not an AWS error"),
    ],
    ids=lambda e: error_code(e) or type(e).__name__,
)
def test_non_retryable_errors_propagate_unchanged_at_once(
    fake: FakeTime, exc: BaseException
) -> None:
    budget = RetryBudget(capacity=10)
    budget.acquire(timeout=False)
    policy = make_policy(fake, budget=budget)
    fn, calls = scripted([exc])
    with pytest.raises(type(exc)) as info:
        policy.call("PutItem", fn)
    assert info.value is exc
    assert calls == [1]
    assert fake.waits == []
    assert budget.available == 5  # a failure refunds nothing
    assert policy.stats() == {"retries": 0, "throttles": 0, "budget_exhausted": 0, "gave_up": 0}


def test_non_retryable_after_a_retry_propagates_unchanged(fake: FakeTime) -> None:
    policy = make_policy(fake)
    final = client_error("ConditionalCheckFailedException")
    fn, calls = scripted([throttle(), final])
    with pytest.raises(ClientError) as info:
        policy.call("PutItem", fn)
    assert info.value is final
    assert calls == [2]
    assert fake.waits == [1]


# ------------------------------------------------------------------------------------------
# Transient and connection errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: EndpointConnectionError(endpoint_url=ENDPOINT, error="refused"),
        lambda: ConnectTimeoutError(endpoint_url=ENDPOINT, error="timed out"),
        lambda: ReadTimeoutError(endpoint_url=ENDPOINT, error="timed out"),
        lambda: ConnectionClosedError(endpoint_url=ENDPOINT),
    ],
    ids=["endpoint", "connect-timeout", "read-timeout", "closed"],
)
def test_connection_errors_end_in_service_unavailable(
    fake: FakeTime, factory: Callable[[], BaseException]
) -> None:
    policy = make_policy(fake, max_attempts=3)
    fn, calls = always(factory)
    with pytest.raises(ServiceUnavailableError) as info:
        policy.call("GetItem", fn)
    err = info.value
    assert calls == [3]
    assert fake.waits == [1, 2]
    assert err.attempts == 3
    assert err.elapsed == pytest.approx(3.0)
    assert err.code is None
    assert err.operation == "GetItem"
    assert type(err.__cause__) is type(factory())
    message = str(err)
    for needle in ("GetItem", "3 attempts", "endpoint URL", "network", "region"):
        assert needle in message
    assert policy.stats()["throttles"] == 0
    assert policy.stats()["gave_up"] == 1


def test_connection_error_then_success(fake: FakeTime) -> None:
    policy = make_policy(fake)
    fn, _ = scripted([EndpointConnectionError(endpoint_url=ENDPOINT), "ok"])
    assert policy.call("GetItem", fn) == "ok"
    assert fake.waits == [1]


@pytest.mark.parametrize(
    ("code", "status"),
    [("InternalServerError", 500), ("ServiceUnavailable", 503), ("SomethingNew", 502)],
)
def test_server_errors_end_in_service_unavailable_with_code(
    fake: FakeTime, code: str, status: int
) -> None:
    policy = make_policy(fake, max_attempts=2)
    fn, _ = always(lambda: client_error(code, status))
    with pytest.raises(ServiceUnavailableError) as info:
        policy.call("GetItem", fn)
    assert info.value.code == code
    assert f"HTTP {status}" in str(info.value)


def test_last_error_decides_the_error_type(fake: FakeTime) -> None:
    policy = make_policy(fake, max_attempts=3)
    fn, _ = scripted([throttle(), throttle(), client_error("InternalServerError", 500)])
    with pytest.raises(ServiceUnavailableError):
        policy.call("GetItem", fn)
    fn, _ = scripted([client_error("InternalServerError", 500), throttle(), throttle()])
    with pytest.raises(ThrottledError):
        policy.call("GetItem", fn)


# ------------------------------------------------------------------------------------------
# RetryBudget
# ------------------------------------------------------------------------------------------


def test_budget_defaults_follow_the_aws_retry_quota() -> None:
    budget = RetryBudget()
    assert (budget.capacity, budget.retry_cost, budget.timeout_cost) == (500, 5, 10)
    assert budget.available == 500


def test_budget_acquire_and_release() -> None:
    budget = RetryBudget(capacity=20, retry_cost=5, timeout_cost=10)
    assert budget.acquire(timeout=False)
    assert budget.available == 15
    assert budget.acquire(timeout=True)
    assert budget.available == 5
    assert not budget.acquire(timeout=True)  # 10 > 5: refused, nothing taken
    assert budget.available == 5
    assert budget.acquire(timeout=False)
    assert budget.available == 0
    assert not budget.acquire(timeout=False)
    budget.release_success()
    assert budget.available == 1
    budget.release_success(100)
    assert budget.available == 20  # never above capacity


@pytest.mark.parametrize(
    "kwargs",
    [{"capacity": -1}, {"retry_cost": 0}, {"timeout_cost": 0}],
)
def test_budget_rejects_bad_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)


def test_draining_the_budget_stops_retries(fake: FakeTime) -> None:
    budget = RetryBudget(capacity=12, retry_cost=5, timeout_cost=10)
    policy = make_policy(fake, budget=budget)
    fn, calls = always(throttle)
    with pytest.raises(ThrottledError) as info:
        policy.call("PutItem", fn)
    # Two retries paid (10 tokens); the third cannot be paid with the 2 left.
    assert calls == [3]
    assert fake.waits == [1, 2]
    assert info.value.attempts == 3
    assert "budget exhausted" in str(info.value)
    assert "throttling" in str(info.value)
    assert budget.available == 2
    assert policy.stats() == {"retries": 2, "throttles": 3, "budget_exhausted": 1, "gave_up": 1}

    # An empty budget: the next throttled call gives up at once, without sleeping.
    fn, calls = always(throttle)
    with pytest.raises(ThrottledError) as info:
        policy.call("PutItem", fn)
    assert calls == [1]
    assert fake.waits == [1, 2]
    assert policy.stats()["budget_exhausted"] == 2


def test_successes_refill_the_budget(fake: FakeTime) -> None:
    budget = RetryBudget(capacity=12, retry_cost=5, timeout_cost=10)
    policy = make_policy(fake, budget=budget)
    assert budget.acquire(timeout=False) and budget.acquire(timeout=False)
    assert budget.available == 2
    for expected in (3, 4, 5):
        policy.call("GetItem", lambda: "ok")
        assert budget.available == expected
    # Refilled enough for one retry again.
    fn, _ = scripted([throttle(), "ok"])
    assert policy.call("GetItem", fn) == "ok"
    # The retry took 5 (-> 0); its final success gives those 5 back, as in botocore.
    assert budget.available == 5
    for _ in range(20):
        policy.call("GetItem", lambda: "ok")
    assert budget.available == 12  # capped at capacity


def test_timeouts_cost_more(fake: FakeTime) -> None:
    budget = RetryBudget(capacity=100, retry_cost=5, timeout_cost=10)
    policy = make_policy(fake, budget=budget, max_attempts=3)
    fn, _ = always(lambda: ReadTimeoutError(endpoint_url=ENDPOINT))
    with pytest.raises(ServiceUnavailableError):
        policy.call("GetItem", fn)
    assert budget.available == 80
    fn, _ = always(lambda: client_error("InternalServerError", 500))
    with pytest.raises(ServiceUnavailableError):
        policy.call("GetItem", fn)
    assert budget.available == 70


def test_budget_exhausted_by_connection_errors_is_service_unavailable(fake: FakeTime) -> None:
    budget = RetryBudget(capacity=5, retry_cost=5, timeout_cost=10)
    policy = make_policy(fake, budget=budget)
    fn, calls = always(lambda: EndpointConnectionError(endpoint_url=ENDPOINT))
    with pytest.raises(ServiceUnavailableError, match="budget exhausted"):
        policy.call("GetItem", fn)
    assert calls == [1]


def test_budget_is_thread_safe_under_contention() -> None:
    budget = RetryBudget(capacity=500, retry_cost=5, timeout_cost=10)
    granted = [0] * 32
    barrier = threading.Barrier(32)

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(200):
            if budget.acquire(timeout=False):
                granted[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100  # exactly 500 / 5, never more
    assert budget.available == 0


def test_budget_totals_stay_consistent_with_mixed_traffic() -> None:
    budget = RetryBudget(capacity=10_000, retry_cost=5, timeout_cost=10)
    spent = [0] * 16
    barrier = threading.Barrier(16)

    def worker(i: int) -> None:
        barrier.wait()
        for n in range(500):
            timeout = n % 3 == 0
            if budget.acquire(timeout=timeout):
                spent[i] += budget.cost(timeout)
            if n % 2 == 0:
                budget.release_success()
                spent[i] -= 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Nothing was ever refunded above capacity (the bucket never filled up again), so the books
    # balance exactly.
    assert budget.available == 10_000 - sum(spent)
    assert 0 <= budget.available <= 10_000


def test_policy_stats_are_thread_safe() -> None:
    fake = FakeTime()
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            fake.sleep(seconds)

    policy = RetryPolicy(
        max_attempts=8,
        base_s=0.001,
        cap_s=0.001,
        deadline_s=None,
        budget=RetryBudget(capacity=1_000_000),
        sleep=sleep,
        random=lambda: 1.0,
        clock=lambda: 0.0,
    )
    per_thread = 200

    def worker() -> None:
        for _ in range(per_thread):
            fn, _ = scripted([throttle(), throttle(), "ok"])
            assert policy.call("GetItem", fn) == "ok"

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = policy.stats()
    assert stats["retries"] == 16 * per_thread * 2
    assert stats["throttles"] == 16 * per_thread * 2
    assert len(fake.waits) == 16 * per_thread * 2
    # Each call paid two retries (10 tokens) and its success gave back the last one's cost (5).
    assert policy.budget is not None
    assert policy.budget.available == 1_000_000 - 16 * per_thread * 5


# ------------------------------------------------------------------------------------------
# RetryState: loops on partial results
# ------------------------------------------------------------------------------------------


def test_retry_state_backs_off_on_partial_results_then_succeeds(fake: FakeTime) -> None:
    budget = RetryBudget(capacity=50)
    policy = make_policy(fake, budget=budget)
    pending = ["a", "b", "c"]
    sent: list[list[str]] = []
    state = policy.start("BatchWriteItem")
    while True:
        sent.append(list(pending))
        pending = pending[1:]  # DynamoDB processes one item per call
        if not pending:
            state.succeeded()
            break
        state.backoff("UnprocessedItems")
    assert sent == [["a", "b", "c"], ["b", "c"], ["c"]]
    assert fake.waits == [1, 2]
    assert state.attempts == 3
    assert state.elapsed == pytest.approx(3.0)
    assert budget.available == 50 - 10 + 5  # two retries paid, the last one's cost refunded
    assert policy.stats()["throttles"] == 2
    assert policy.stats()["retries"] == 2


def test_retry_state_gives_up_with_reason_code(fake: FakeTime) -> None:
    policy = make_policy(fake, max_attempts=4)
    state = policy.start("BatchGetItem")
    with pytest.raises(ThrottledError) as info:
        for _ in range(10):
            state.backoff("UnprocessedKeys")
    err = info.value
    assert fake.waits == [1, 2, 4]
    assert err.attempts == 4
    assert err.elapsed == pytest.approx(7.0)
    assert err.code == "UnprocessedKeys"
    assert err.operation == "BatchGetItem"
    assert err.__cause__ is None
    for needle in ("BatchGetItem", "4 attempts", "UnprocessedKeys", "on-demand"):
        assert needle in str(err)


def test_retry_state_respects_deadline_and_budget(fake: FakeTime) -> None:
    policy = make_policy(fake, deadline_s=5.0)
    state = policy.start("BatchWriteItem")
    state.backoff()
    state.backoff()
    with pytest.raises(ThrottledError, match="deadline"):
        state.backoff()  # 3 s slept, the next 4 s would pass 5 s
    assert fake.waits == [1, 2]

    budget = RetryBudget(capacity=5)
    policy = make_policy(fake, budget=budget)
    state = policy.start("BatchWriteItem")
    state.backoff()
    with pytest.raises(ThrottledError, match="budget exhausted") as info:
        state.backoff()
    assert info.value.code == "UnprocessedItems"
    assert policy.stats()["budget_exhausted"] == 1


def test_fresh_state_per_operation(fake: FakeTime) -> None:
    policy = make_policy(fake, max_attempts=2)
    for _ in range(3):
        state = policy.start("BatchWriteItem")
        state.backoff()
        state.succeeded()
    assert fake.waits == [1, 1, 1]


# ------------------------------------------------------------------------------------------
# Construction
# ------------------------------------------------------------------------------------------


def test_from_config(fake: FakeTime) -> None:
    cfg = SimpleNamespace(
        max_attempts=3,
        base_seconds=0.5,
        cap_seconds=4.0,
        deadline_seconds=30.0,
        budget_capacity=100,
        budget_retry_cost=7,
        budget_timeout_cost=11,
    )
    policy = RetryPolicy.from_config(cfg, sleep=fake.sleep, random=lambda: 1.0, clock=fake.clock)
    assert policy.max_attempts == 3
    assert policy.backoff == FullJitterBackoff(0.5, 4.0)
    assert policy.deadline_s == 30.0
    assert policy.budget is not None
    assert (policy.budget.capacity, policy.budget.retry_cost, policy.budget.timeout_cost) == (
        100,
        7,
        11,
    )
    fn, _ = always(throttle)
    with pytest.raises(ThrottledError):
        policy.call("GetItem", fn)
    assert fake.waits == [0.5, 1.0]
    assert policy.budget.available == 86

    cfg.budget_capacity = None
    assert RetryPolicy.from_config(cfg).budget is None


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 8
    assert policy.backoff == FullJitterBackoff(0.025, 2.0)
    assert policy.deadline_s == 10.0
    assert policy.budget is None


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"deadline_s": 0}, {"base_s": 0}, {"base_s": 3.0, "cap_s": 2.0}],
)
def test_policy_rejects_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# ------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    sorted(
        THROTTLE_CODES
        | {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
    ),
)
def test_throttle_codes(code: str) -> None:
    exc = client_error(code)
    assert code in THROTTLE_CODES
    assert is_throttle(exc)
    assert not is_transient(exc)
    assert not is_timeout(exc)
    assert classify(exc) == "throttle"
    assert error_code(exc) == code


@pytest.mark.parametrize(
    "code",
    sorted(TRANSIENT_CODES | {"InternalServerError", "ServiceUnavailable", "InternalFailure"}),
)
def test_transient_codes(code: str) -> None:
    exc = client_error(code, status=400)  # the code alone decides
    assert code in TRANSIENT_CODES
    assert is_transient(exc)
    assert not is_throttle(exc)
    assert not is_timeout(exc)
    assert classify(exc) == "transient"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_transient_status_codes(status: int) -> None:
    exc = client_error("UnknownError", status)
    assert is_transient(exc)
    assert classify(exc) == "transient"


def test_429_without_known_code_is_throttle() -> None:
    assert classify(client_error("SomethingNew", 429)) == "throttle"


def test_throttle_code_on_a_5xx_is_still_throttle() -> None:
    assert classify(client_error("ThrottlingException", 503)) == "throttle"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ValidationException", 400),
        ("ConditionalCheckFailedException", 400),
        ("ResourceNotFoundException", 400),
        ("ResourceInUseException", 400),
        ("AccessDeniedException", 400),
        ("UnrecognizedClientException", 400),
        ("ItemCollectionSizeLimitExceededException", 400),
        ("TransactionCanceledException", 400),
        ("TransactionConflictException", 400),
        ("TransactionInProgressException", 400),
        ("NotImplemented", 501),
    ],
)
def test_non_retryable_codes(code: str, status: int) -> None:
    exc = client_error(code, status)
    assert not is_throttle(exc)
    assert not is_transient(exc)
    assert classify(exc) is None


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url=ENDPOINT, error="refused"),
        ConnectionClosedError(endpoint_url=ENDPOINT),
        ReadTimeoutError(endpoint_url=ENDPOINT, error="timed out"),
        ConnectTimeoutError(endpoint_url=ENDPOINT, error="timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_errors_are_transient_timeouts(exc: BaseException) -> None:
    assert is_transient(exc)
    assert is_timeout(exc)
    assert not is_throttle(exc)
    assert classify(exc) == "transient"
    assert error_code(exc) is None


def test_one_list_of_throttle_codes() -> None:
    """The retry policy and the error translation use the same set."""
    assert THROTTLE_CODES is aws_errors.THROTTLE_CODES
    assert error_code is aws_errors.error_code
    assert {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
    } <= THROTTLE_CODES
    assert "TransactionInProgressException" not in THROTTLE_CODES
    for code in sorted(THROTTLE_CODES):
        translated = aws_errors.translate(client_error(code), "PutItem", "t")
        assert isinstance(translated, ThrottledError), code
        assert translated.code == code


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionClosedError(endpoint_url=ENDPOINT),
        ReadTimeoutError(endpoint_url=ENDPOINT, error="timed out"),
        SSLError(endpoint_url=ENDPOINT, error="bad record mac"),
        *(client_error(code) for code in sorted(AMBIGUOUS_CODES)),
        *(client_error("UnknownError", status) for status in (500, 502, 503, 504)),
    ],
    ids=repr,
)
def test_answers_lost_after_sending_may_have_been_applied(exc: BaseException) -> None:
    assert may_have_been_applied(exc)


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url=ENDPOINT, error="refused"),
        ConnectTimeoutError(endpoint_url=ENDPOINT, error="timed out"),
        ProxyConnectionError(proxy_url="http://proxy:3128", error="refused"),
        throttle(),
        client_error("ThrottlingException"),
        client_error("ConditionalCheckFailedException"),
        client_error("ValidationException"),
        client_error("SomethingNew", 429),
        ValueError("not from botocore"),
    ],
    ids=repr,
)
def test_refusals_and_unsent_requests_were_not_applied(exc: BaseException) -> None:
    assert not may_have_been_applied(exc)


def test_error_code_of_odd_inputs() -> None:
    assert error_code(ValueError("x")) is None
    assert error_code(ClientError({}, "GetItem")) is None
    assert classify(ClientError({}, "GetItem")) is None
    assert classify(RuntimeError("x")) is None


# ------------------------------------------------------------------------------------------
# botocore
# ------------------------------------------------------------------------------------------


class _Raw:
    """The ``raw`` of a botocore AWSResponse: something with ``stream()``."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def test_botocore_config_switches_retries_off() -> None:
    config = botocore_config(connect_timeout_s=1.5, read_timeout_s=3.0, max_pool_connections=32)
    assert config.connect_timeout == 1.5
    assert config.read_timeout == 3.0
    assert config.max_pool_connections == 32
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}


def test_botocore_makes_one_attempt_and_the_policy_does_the_retrying(fake: FakeTime) -> None:
    """A real botocore client, short-circuited before the network: one request per attempt."""
    client = botocore.session.get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=ENDPOINT,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore_config(1.0, 1.0, 10),
    )
    sent: list[str] = []
    body = json.dumps(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "Rate of requests exceeds the allowed throughput.",
        }
    ).encode()

    def before_send(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        return AWSResponse(
            request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(body)
        )

    client.meta.events.register("before-send.dynamodb", before_send)
    try:
        with pytest.raises(ClientError) as info:
            client.get_item(TableName="t", Key={"_id": {"S": "a"}})
        assert error_code(info.value) == "ProvisionedThroughputExceededException"
        assert len(sent) == 1  # botocore did not retry

        policy = make_policy(fake, max_attempts=3)
        with pytest.raises(ThrottledError):
            policy.call("GetItem", lambda: client.get_item(TableName="t", Key={"_id": {"S": "a"}}))
        assert len(sent) == 1 + 3
        assert fake.waits == [1, 2]
    finally:
        client.close()
