"""Backoff and the retry policy: the one place where the gateway retries.

botocore's own retries are switched off underneath (see `botocore_config`), so a throttled
request is retried here and only here: two stacked loops (botocore's 4 DynamoDB attempts inside
our 8) would multiply into 32 requests and blow through any deadline.

The pieces, after botocore's standard retry mode (``botocore/retries/standard.py``):

* `FullJitterBackoff` -- how long to wait before a retry;
* `RetryBudget` -- a token bucket shared by all calls, so that retries cannot snowball when the
  service is overloaded (``botocore/retries/quota.py``);
* `RetryPolicy` -- runs a call, classifies its errors, waits and retries, and gives up with a
  `ThrottledError` or `ServiceUnavailableError` that says what happened and what to do;
* `RetryState` -- one operation's attempts, for callers that loop on partial results
  (``UnprocessedKeys`` / ``UnprocessedItems``).

`may_have_been_applied` says which failures leave open whether a write took effect (its answer
was lost), for the writes that must recognise their own effect when retried (see
``DynamoDBService.save``). The throttling codes are `gateway.aws_errors.THROTTLE_CODES`, shared
with the error translation.

Time, randomness and sleep are injected, so tests run on a fake clock with exact waits.
"""

from __future__ import annotations

import logging
import random as _random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import botocore.config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from gateway.aws_errors import THROTTLE_CODES, error_code
from gateway.errors import ServiceUnavailableError, ThrottledError

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_BASE_S = 0.025
DEFAULT_CAP_S = 2.0
DEFAULT_DEADLINE_S = 10.0
DEFAULT_BUDGET_CAPACITY = 500
DEFAULT_RETRY_COST = 5
DEFAULT_TIMEOUT_COST = 10
#: What a success gives back to the budget when it needed no retry (botocore's
#: ``_NO_RETRY_INCREMENT``).
NO_RETRY_REFUND = 1

# Beyond 2**62 the doubling only matters for its cap, and 2.0**1024 would overflow a float.
_MAX_EXPONENT = 62

# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------

#: Error codes of transient service-side failures. Retried; giving up raises
#: `ServiceUnavailableError`.
TRANSIENT_CODES: frozenset[str] = frozenset(
    {
        "InternalServerError",  # DynamoDB's HTTP 500
        "ServiceUnavailable",  # HTTP 503 from the AWS front end
        "ServiceUnavailableException",
        "InternalFailure",  # generic AWS HTTP 500
        # botocore's ``TransientRetryableChecker``: the request or a previous one timed out.
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        # Multi-region strongly consistent tables: an item was being written in another Region.
        # The DynamoDB model marks it retryable and not throttling.
        "ReplicatedWriteConflictException",
    }
)

#: HTTP status codes that mean a transient failure whatever the error code (botocore's list).
#: Not every 5xx: 501 Not Implemented will not get better by asking again.
TRANSIENT_STATUS_CODES: frozenset[int] = frozenset({500, 502, 503, 504})

#: HTTP status code of a throttled request whose error code we do not know.
THROTTLE_STATUS_CODE = 429

# Connection-level failures, as botocore wraps them (``botocore/httpsession.py``):
# EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError and SSLError are
# ConnectionErrors; ReadTimeoutError, ConnectionClosedError (urllib3's ProtocolError: the peer
# reset or closed the connection) and any other HTTP-client failure are HTTPClientErrors.
# botocore's standard mode retries both families, and so do we.
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (BotocoreConnectionError, HTTPClientError)

Kind = Literal["throttle", "transient"]


def _status_code(exc: BaseException) -> int | None:
    if not isinstance(exc, ClientError):
        return None
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def is_throttle(exc: BaseException) -> bool:
    """True if `exc` says the caller is being throttled (a `THROTTLE_CODES` code, or HTTP 429)."""
    if not isinstance(exc, ClientError):
        return False
    return error_code(exc) in THROTTLE_CODES or _status_code(exc) == THROTTLE_STATUS_CODE


def is_transient(exc: BaseException) -> bool:
    """True if `exc` is a transient failure worth retrying that is not throttling.

    That is: a `TRANSIENT_CODES` code, an HTTP 500/502/503/504 response, or a connection-level
    error (could not connect, connect or read timeout, connection closed or reset).
    """
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if not isinstance(exc, ClientError) or is_throttle(exc):
        return False
    return error_code(exc) in TRANSIENT_CODES or _status_code(exc) in TRANSIENT_STATUS_CODES


def is_timeout(exc: BaseException) -> bool:
    """True if `exc` is a timeout or other connection-level failure.

    A retry after one of these costs the budget more (`RetryBudget.timeout_cost`): the request
    may have held a connection for the whole timeout, and a dead endpoint fails every call.
    """
    return isinstance(exc, _CONNECTION_ERRORS)


#: Error codes of answers that do not say whether the request was applied: the service failed
#: (or timed out) while handling it, possibly after the write took effect.
AMBIGUOUS_CODES: frozenset[str] = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

# Connection failures that happen before the request is sent: it cannot have been applied.
_NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ProxyConnectionError,
)


def may_have_been_applied(exc: BaseException) -> bool:
    """True if a request that failed with `exc` may nevertheless have been applied.

    That is when it was (or may have been) sent and its answer was lost: a read timeout, a
    connection closed or reset while waiting for the answer (any HTTP-client failure), a TLS
    error, an HTTP 5xx answer or an `AMBIGUOUS_CODES` code. Not when the request never left (the
    connection was refused or timed out, the proxy failed) nor for the answers that say it was
    refused (throttling, validation, a failed condition: any other 4xx).

    A write retried after such a failure may find its own effect: `DynamoDBService` then tells
    its own write from another writer's (see ``DynamoDBService.save``).
    """
    if isinstance(exc, _NOT_SENT_ERRORS):
        return False
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if not isinstance(exc, ClientError):
        return False
    status = _status_code(exc)
    return error_code(exc) in AMBIGUOUS_CODES or (status is not None and status >= 500)


def classify(exc: BaseException) -> Kind | None:
    """``"throttle"``, ``"transient"``, or None when `exc` must not be retried."""
    if is_throttle(exc):
        return "throttle"
    if is_transient(exc):
        return "transient"
    return None


# --------------------------------------------------------------------------------------------
# Backoff
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FullJitterBackoff:
    """Exponential backoff with full jitter (AWS blog, "Exponential Backoff And Jitter").

    ``wait(attempt) = rand * min(cap_s, base_s * 2 ** attempt)``, with ``rand`` uniform in [0, 1)
    and ``attempt`` = 0 for the wait before the first retry. Full jitter spreads the retries of
    many throttled clients over the whole window instead of letting them retry in lock-step.
    """

    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S

    def __post_init__(self) -> None:
        if not self.base_s > 0:
            raise ValueError(f"base_s must be > 0 seconds, got {self.base_s!r}")
        if not self.cap_s >= self.base_s:
            raise ValueError(f"cap_s must be >= base_s ({self.base_s!r}), got {self.cap_s!r}")

    def compute(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number ``attempt + 1``, given ``rand`` in [0, 1]."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt!r}")
        return rand * min(self.cap_s, self.base_s * 2.0 ** min(attempt, _MAX_EXPONENT))


# --------------------------------------------------------------------------------------------
# Budget
# --------------------------------------------------------------------------------------------


class RetryBudget:
    """A thread-safe token bucket that every retry draws from, after botocore's ``RetryQuota``.

    It starts full at `capacity`. A retry costs `retry_cost` tokens, or `timeout_cost` after a
    timeout or connection error; a successful call gives tokens back (never above capacity).
    When a retry cannot be paid for, the policy gives up at once: under sustained overload the
    gateway stops multiplying its own load instead of retrying every call to the limit.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_BUDGET_CAPACITY,
        retry_cost: int = DEFAULT_RETRY_COST,
        timeout_cost: int = DEFAULT_TIMEOUT_COST,
    ) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity!r}")
        if retry_cost < 1 or timeout_cost < 1:
            raise ValueError(
                f"retry_cost and timeout_cost must be >= 1, got {retry_cost!r}, {timeout_cost!r}"
            )
        self.capacity = capacity
        self.retry_cost = retry_cost
        self.timeout_cost = timeout_cost
        self._available = capacity
        self._lock = threading.Lock()

    def cost(self, timeout: bool) -> int:
        """Tokens one retry costs: `timeout_cost` after a timeout, else `retry_cost`."""
        return self.timeout_cost if timeout else self.retry_cost

    def acquire(self, timeout: bool) -> bool:
        """Take the cost of one retry; False (and nothing taken) if the budget cannot pay it."""
        amount = self.cost(timeout)
        with self._lock:
            if amount > self._available:
                return False
            self._available -= amount
            return True

    def release_success(self, amount: int = NO_RETRY_REFUND) -> None:
        """Give back `amount` tokens after a success (1 by default), up to `capacity`.

        `RetryPolicy` refunds 1 for a call that needed no retry and, like botocore and the
        other AWS SDKs, the cost of its last retry for a call that succeeded after retrying.
        """
        with self._lock:
            self._available = min(self.capacity, self._available + amount)

    @property
    def available(self) -> int:
        """Tokens left."""
        with self._lock:
            return self._available

    def __repr__(self) -> str:
        return (
            f"RetryBudget(available={self.available}, capacity={self.capacity}, "
            f"retry_cost={self.retry_cost}, timeout_cost={self.timeout_cost})"
        )


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------


class RetryConfig(Protocol):
    """What `RetryPolicy.from_config` reads (the retry section of `Settings`)."""

    @property
    def max_attempts(self) -> int: ...
    @property
    def base_seconds(self) -> float: ...
    @property
    def cap_seconds(self) -> float: ...
    @property
    def deadline_seconds(self) -> float | None: ...
    @property
    def budget_capacity(self) -> int | None: ...
    @property
    def budget_retry_cost(self) -> int: ...
    @property
    def budget_timeout_cost(self) -> int: ...


_THROTTLE_HINTS: dict[str, str] = {
    "ProvisionedThroughputExceededException": (
        "the table or index is over its provisioned throughput (or one partition key is hot): "
        "switch the table to on-demand (PAY_PER_REQUEST) billing or raise its provisioned "
        "read/write capacity"
    ),
    "RequestLimitExceeded": (
        "the account's DynamoDB throughput quota for this region is exhausted: request a quota "
        "increase in Service Quotas, or spread the load"
    ),
    "ThrottlingException": (
        "DynamoDB is rate-limiting these requests (control-plane calls such as CreateTable, or "
        "an on-demand table's maximum throughput): lower the request rate, raise the table's "
        "maximum throughput, or raise its provisioned capacity"
    ),
}
_DEFAULT_THROTTLE_HINT = (
    "the table is throttled: switch it to on-demand (PAY_PER_REQUEST) billing or raise its "
    "provisioned read/write capacity"
)
_PARTIAL_HINT = (
    "DynamoDB kept returning unprocessed items, which it does when the table is throttled: "
    "switch the table to on-demand (PAY_PER_REQUEST) billing or raise its provisioned capacity"
)
_UNREACHABLE_HINT = (
    "DynamoDB could not be reached: check the endpoint URL (DYNAMODB_ENDPOINT_URL), the network "
    "path to it (DNS, proxy, firewall, TLS) and the region (DYNAMODB_REGION)"
)
_SERVER_ERROR_HINT = (
    "DynamoDB kept answering with a server-side error: retry later and check the AWS Health "
    "Dashboard for the region; with a local endpoint (DYNAMODB_ENDPOINT_URL), check that it is "
    "healthy"
)


class RetryPolicy:
    """Runs DynamoDB calls, retrying throttling and transient failures with full-jitter backoff.

    An operation is given up when `max_attempts` attempts (the first try included) have failed,
    when the next wait would pass `deadline_s` seconds after the first try, or when `budget`
    cannot pay for another retry. Thread-safe: one policy serves every thread of a gateway.
    """

    def __init__(
        self,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        base_s: float = DEFAULT_BASE_S,
        cap_s: float = DEFAULT_CAP_S,
        deadline_s: float | None = DEFAULT_DEADLINE_S,
        budget: RetryBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (1 means no retry), got {max_attempts!r}")
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0 seconds or None, got {deadline_s!r}")
        self.max_attempts = max_attempts
        self.backoff = FullJitterBackoff(base_s, cap_s)
        #: Seconds from the first try after which no retry starts; None for no deadline.
        self.deadline_s = deadline_s
        self.budget = budget
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._lock = threading.Lock()
        self._stats = {"retries": 0, "throttles": 0, "budget_exhausted": 0, "gave_up": 0}

    @classmethod
    def from_config(
        cls,
        cfg: RetryConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> RetryPolicy:
        """Build a policy from an object with the attributes of `RetryConfig`.

        ``budget_capacity=None`` means no budget (retries limited by attempts and deadline only).
        """
        capacity = cfg.budget_capacity
        budget = (
            None
            if capacity is None
            else RetryBudget(capacity, cfg.budget_retry_cost, cfg.budget_timeout_cost)
        )
        return cls(
            max_attempts=cfg.max_attempts,
            base_s=cfg.base_seconds,
            cap_s=cfg.cap_seconds,
            deadline_s=cfg.deadline_seconds,
            budget=budget,
            sleep=sleep,
            random=random,
            clock=clock,
        )

    def start(self, operation: str) -> RetryState:
        """Begin one operation whose first try is about to be made; see `RetryState`."""
        return RetryState(self, operation)

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run ``fn()`` and return its result, retrying throttling and transient errors.

        Non-retryable exceptions propagate unchanged at once. On giving up, raises
        `ThrottledError` if the last error was throttling, else `ServiceUnavailableError`,
        chained from that last error.
        """
        state = self.start(operation)
        while True:
            try:
                result = fn()
            except Exception as exc:
                kind = classify(exc)
                if kind is None:
                    raise
                state._retry_or_give_up(kind, error_code(exc), exc)
                continue
            state.succeeded()
            return result

    def stats(self) -> dict[str, int]:
        """Counters since construction, as a new dict.

        ``retries``: waits made before another try; ``throttles``: throttling errors and partial
        batch results seen; ``budget_exhausted``: retries the budget refused; ``gave_up``:
        operations that raised `ThrottledError` or `ServiceUnavailableError`.
        """
        with self._lock:
            return dict(self._stats)

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_attempts={self.max_attempts}, base_s={self.backoff.base_s}, "
            f"cap_s={self.backoff.cap_s}, deadline_s={self.deadline_s}, budget={self.budget!r})"
        )


class RetryState:
    """The attempts of one operation under a `RetryPolicy`. Used by one thread at a time.

    For a loop on partial results::

        state = policy.start("BatchWriteItem")
        while True:
            unprocessed = send(batch)
            if not unprocessed:
                state.succeeded()
                break
            state.backoff("UnprocessedItems")  # sleeps, or raises ThrottledError
            batch = unprocessed
    """

    def __init__(self, policy: RetryPolicy, operation: str) -> None:
        self.policy = policy
        self.operation = operation
        #: Attempts made so far, the one in progress included.
        self.attempts = 1
        self._started = policy._clock()
        # Tokens the last retry took from the budget: what a final success gives back.
        self._last_cost = 0

    @property
    def elapsed(self) -> float:
        """Seconds since the operation started, on the policy's clock."""
        return self.policy._clock() - self._started

    def backoff(self, reason_code: str = "UnprocessedItems") -> None:
        """Count another attempt after a partial result: wait the next backoff, or give up.

        Raises `ThrottledError` (with ``code=reason_code``) when `max_attempts` is reached, the
        wait would pass the deadline, or the budget cannot pay for the retry.
        """
        self._retry_or_give_up("throttle", reason_code, None, partial=True)

    def succeeded(self) -> None:
        """Record that the operation succeeded: give tokens back to the budget."""
        budget = self.policy.budget
        if budget is not None:
            budget.release_success(self._last_cost or NO_RETRY_REFUND)
        self._last_cost = 0

    def _retry_or_give_up(
        self,
        kind: Kind,
        code: str | None,
        exc: BaseException | None,
        *,
        partial: bool = False,
    ) -> None:
        """Sleep before the next attempt, or raise the give-up error (chained from `exc`)."""
        policy = self.policy
        if kind == "throttle":
            policy._count("throttles")
        if self.attempts >= policy.max_attempts:
            self._give_up(kind, code, exc, partial, f"max_attempts={policy.max_attempts}")
        delay = policy.backoff.compute(self.attempts - 1, policy._random())
        elapsed = self.elapsed
        if policy.deadline_s is not None and elapsed + delay > policy.deadline_s:
            self._give_up(
                kind,
                code,
                exc,
                partial,
                f"the next wait of {delay:.3f} s would pass the {policy.deadline_s:g} s deadline",
            )
        timeout = exc is not None and is_timeout(exc)
        budget = policy.budget
        if budget is not None:
            if not budget.acquire(timeout):
                policy._count("budget_exhausted")
                what = "throttling" if kind == "throttle" else "failures"
                self._give_up(
                    kind,
                    code,
                    exc,
                    partial,
                    f"retry budget exhausted under sustained {what} (capacity "
                    f"{budget.capacity} tokens, {budget.cost(timeout)} per retry; it refills as "
                    "calls succeed)",
                )
            self._last_cost = budget.cost(timeout)
        policy._count("retries")
        logger.debug(
            "%s: attempt %d failed with %s; retrying in %.3f s",
            self.operation,
            self.attempts,
            code or type(exc).__name__,
            delay,
        )
        self.attempts += 1
        policy._sleep(delay)

    def _give_up(
        self,
        kind: Kind,
        code: str | None,
        exc: BaseException | None,
        partial: bool,
        reason: str,
    ) -> None:
        """Raise `ThrottledError` or `ServiceUnavailableError` for this operation."""
        self.policy._count("gave_up")
        elapsed = self.elapsed
        if exc is None:
            last = code or "partial result"
        elif code is None:
            last = f"{type(exc).__name__}: {exc}"
        else:
            status = _status_code(exc)
            last = f"{code} (HTTP {status})" if status else code
        head = (
            f"{self.operation} gave up after {self.attempts} attempt"
            f"{'' if self.attempts == 1 else 's'} in {elapsed:.2f} s ({reason}); "
            f"last error: {last}"
        )
        if kind == "throttle":
            hint = (
                _PARTIAL_HINT
                if partial
                else _THROTTLE_HINTS.get(code or "", _DEFAULT_THROTTLE_HINT)
            )
            logger.debug("%s", head)
            raise ThrottledError(
                f"{head}. {hint[0].upper()}{hint[1:]}.",
                attempts=self.attempts,
                elapsed=elapsed,
                code=code,
                operation=self.operation,
            ) from exc
        hint = _UNREACHABLE_HINT if code is None else _SERVER_ERROR_HINT
        logger.debug("%s", head)
        raise ServiceUnavailableError(
            f"{head}. {hint}.",
            attempts=self.attempts,
            elapsed=elapsed,
            code=code,
            operation=self.operation,
        ) from exc


# --------------------------------------------------------------------------------------------
# botocore
# --------------------------------------------------------------------------------------------


def botocore_config(
    connect_timeout_s: float,
    read_timeout_s: float,
    max_pool_connections: int,
    *,
    validate: bool = True,
) -> botocore.config.Config:
    """A botocore ``Config`` for the gateway's DynamoDB client, with botocore's retries off;
    ``validate=False`` for the data-plane client only (see below)."""
    return botocore.config.Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=max_pool_connections,
        # One attempt per botocore call: `RetryPolicy` is the only retry loop. Left on, botocore
        # would retry DynamoDB up to 4 times inside each of our attempts (8 x 4 = 32 requests),
        # with its own backoff and quota that our deadline and budget cannot see. "standard"
        # rather than "legacy" so that nothing of the legacy handler's DynamoDB special case
        # (10 attempts) applies either.
        retries={"total_max_attempts": 1, "mode": "standard"},
        # The data plane's requests are built from documents, ids, names and settings the
        # service has already checked (typed errors, before anything is sent): there,
        # botocore's second walk of each request against the API model cost about 28 % of the
        # client CPU of a BatchWriteItem of 25 documents of 1 KB (3.85 -> 2.76 ms). Table
        # management and streams keep it: their requests carry the caller's index specs.
        parameter_validation=validate,
    )


__all__ = [
    "AMBIGUOUS_CODES",
    "DEFAULT_BASE_S",
    "DEFAULT_BUDGET_CAPACITY",
    "DEFAULT_CAP_S",
    "DEFAULT_DEADLINE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RETRY_COST",
    "DEFAULT_TIMEOUT_COST",
    "THROTTLE_CODES",
    "TRANSIENT_CODES",
    "TRANSIENT_STATUS_CODES",
    "FullJitterBackoff",
    "RetryBudget",
    "RetryConfig",
    "RetryPolicy",
    "RetryState",
    "botocore_config",
    "classify",
    "error_code",
    "is_throttle",
    "is_timeout",
    "is_transient",
    "may_have_been_applied",
]
