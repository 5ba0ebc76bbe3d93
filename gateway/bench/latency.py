"""Injected backend latency: a sleep before every request a boto3 client sends.

The embedded emulator answers over loopback, where a round trip costs tens of microseconds; a
real DynamoDB endpoint is a network hop away, a few milliseconds from a client in the same
region. Without that hop a benchmark flatters the bare service and understates what a cache
saves. `LatencyInjector` simulates the network round trip to DynamoDB, which loopback lacks: it
listens to botocore's ``before-send`` event, which fires once per HTTP request (every attempt,
after signing, just before the bytes leave), and sleeps ``latency_ms`` plus up to ``jitter_ms``
of uniform jitter there. The sleep and the randomness are injected, so tests record exact
delays instead of waiting for them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Added to every DynamoDB request by default: a realistic same-region round trip.
DEFAULT_LATENCY_MS = 3.0
#: The botocore event (service id ``dynamodb``) the injector listens to.
BEFORE_SEND_EVENT = "before-send.dynamodb"


@dataclass
class LatencyInjector:
    """Sleeps ``latency_ms + jitter_ms * random()`` before each request a client sends."""

    latency_ms: float = DEFAULT_LATENCY_MS
    jitter_ms: float = 0.0
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = random.random
    _unique_id: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.latency_ms >= 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms!r}")
        if not self.jitter_ms >= 0:
            raise ValueError(f"jitter_ms must be >= 0, got {self.jitter_ms!r}")
        self._unique_id = f"gateway-bench-latency-{id(self)}"

    def delay_s(self) -> float:
        """The delay of the next request, in seconds."""
        jitter = self.jitter_ms * self.random() if self.jitter_ms else 0.0
        return (self.latency_ms + jitter) / 1000.0

    def __call__(self, **kwargs: Any) -> None:
        """botocore's ``before-send`` handler: sleep, then let the request go (return None)."""
        delay = self.delay_s()
        if delay > 0:
            self.sleep(delay)

    def attach(self, clients: Iterable[Any]) -> None:
        """Add the delay to every request of ``clients`` (boto3 clients; idempotent)."""
        for client in clients:
            client.meta.events.register(BEFORE_SEND_EVENT, self, unique_id=self._unique_id)

    def detach(self, clients: Iterable[Any]) -> None:
        """Stop delaying the requests of ``clients``."""
        for client in clients:
            client.meta.events.unregister(BEFORE_SEND_EVENT, unique_id=self._unique_id)


def service_clients(service: Any) -> list[Any]:
    """The distinct boto3 clients a `DynamoDBService` sends requests with (control and data):
    each has its own event hooks, and every one must be hooked for every request to be
    delayed."""
    clients: list[Any] = service.clients()
    return clients
