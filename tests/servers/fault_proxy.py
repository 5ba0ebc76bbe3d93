"""An HTTP proxy in front of the DynamoDB emulator that injects faults at the wire.

DynamoDB clients use the proxy's `FaultProxy.endpoint_url` as their ``endpoint_url``. Every
request's operation is read from its ``X-Amz-Target`` header (``DynamoDB_20120810.GetItem`` ->
``GetItem``) and counted; then, for the operations in scope and with rates that can be changed
while traffic flows, the proxy:

- adds latency (sleeps before forwarding) and records the delay it applied;
- answers with a throttling or server error without forwarding the request, with the status and
  JSON body DynamoDB itself sends;
- turns a BatchGetItem / BatchWriteItem into a partial success: it forwards only a random subset
  of the keys / write requests and returns the rest in ``UnprocessedKeys`` /
  ``UnprocessedItems``, merged into the emulator's real response, so the withheld keys are
  really neither read nor written;
- loses answers: forwards a request (so the emulator applies it) and then answers 500
  InternalServerError or drops the connection, as when DynamoDB's reply is lost on the way
  back (``lose_rate`` / ``lose_next``, ``lose_mode``);
- with `hold`, keeps the requests of some operations waiting at the proxy until the test
  releases them (a gate: a test can make an interleaving happen without sleeping);
- with `stop_forwarding`, makes DynamoDB unreachable (connections refused or reset, or 503s).

Randomness comes from a seeded `random.Random`, drawn under a lock.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import urllib3

TARGET_HEADER = "X-Amz-Target"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
UPSTREAM_CONNECT_TIMEOUT_S = 5.0
UPSTREAM_READ_TIMEOUT_S = 60.0
UPSTREAM_POOL_SIZE = 64
SERVE_POLL_INTERVAL_S = 0.05
#: How many applied delays `FaultProxy.delays` remembers.
MAX_RECORDED_DELAYS = 100_000

BATCH_GET = "BatchGetItem"
BATCH_WRITE = "BatchWriteItem"

# Hop-by-hop headers (RFC 9110 section 7.6.1) are never forwarded; lengths are recomputed.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)


@dataclass(frozen=True)
class WireError:
    """An error response exactly as DynamoDB puts it on the wire."""

    status: int
    type: str
    message: str

    def body(self) -> bytes:
        """The JSON body botocore parses (``__type`` after the ``#`` is the error code)."""
        return json.dumps({"__type": self.type, "message": self.message}).encode()


#: The errors `FaultConfig.throttle_code` can name.
WIRE_ERRORS: dict[str, WireError] = {
    "ProvisionedThroughputExceededException": WireError(
        400,
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API.",
    ),
    "ThrottlingException": WireError(
        400,
        "com.amazon.coral.availability#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
    ),
    "RequestLimitExceeded": WireError(
        400,
        "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded",
        "Throughput exceeds the current throughput limit for your account.",
    ),
    "InternalServerError": WireError(
        500,
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "Internal server error",
    ),
    "ServiceUnavailable": WireError(
        503,
        "com.amazonaws.dynamodb.v20120810#ServiceUnavailable",
        "Service unavailable",
    ),
    # Not throttling: a session token that expired (a credentials error, never retried).
    "ExpiredTokenException": WireError(
        400,
        "com.amazon.coral.service#ExpiredTokenException",
        "The security token included in the request is expired",
    ),
}

DownMode = Literal["refuse", "reset", "unavailable"]
LoseMode = Literal["error", "drop"]
LOSE_MODES: tuple[LoseMode, ...] = ("error", "drop")
#: The `injected` kind of a lost answer.
LOST = "lost"


@dataclass(frozen=True)
class FaultConfig:
    """What the proxy injects. Rates are probabilities in [0, 1]; all zero means pass-through.

    Attributes:
        throttle_rate: per request, the chance of answering `throttle_code` without forwarding.
        throttle_code: a key of `WIRE_ERRORS`.
        latency_ms: delay added before every request in scope.
        latency_jitter_ms: plus a uniform random delay in [0, latency_jitter_ms].
        partial_rate: for BatchGetItem / BatchWriteItem, the chance that each key / write
            request is withheld and returned as unprocessed. At 1.0 the whole batch comes
            back unprocessed (real DynamoDB would answer ProvisionedThroughputExceeded then).
        lose_rate: per request, the chance that it is forwarded (so the emulator applies it)
            and its answer then lost, as `lose_mode` says.
        lose_next: the next this many requests in scope lose their answer whatever
            `lose_rate` says (deterministic); counts down as they go through.
        lose_mode: how an answer is lost: ``"error"`` replaces it with a 500
            InternalServerError (botocore: a ClientError the retry policy retries),
            ``"drop"`` closes the connection unanswered (botocore: ConnectionClosedError).
        operations: the operations faults apply to (e.g. ``{"GetItem"}``); None means all.
    """

    throttle_rate: float = 0.0
    throttle_code: str = "ProvisionedThroughputExceededException"
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    partial_rate: float = 0.0
    lose_rate: float = 0.0
    lose_next: int = 0
    lose_mode: LoseMode = "error"
    operations: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.operations is not None and not isinstance(self.operations, frozenset):
            object.__setattr__(self, "operations", frozenset(self.operations))
        for name in ("throttle_rate", "partial_rate", "lose_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        for name in ("latency_ms", "latency_jitter_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.throttle_code not in WIRE_ERRORS:
            raise ValueError(f"throttle_code must be one of {sorted(WIRE_ERRORS)}")
        if isinstance(self.lose_next, bool) or not isinstance(self.lose_next, int):
            raise ValueError(f"lose_next must be an int, got {self.lose_next!r}")
        if self.lose_next < 0:
            raise ValueError(f"lose_next must be >= 0, got {self.lose_next!r}")
        if self.lose_mode not in LOSE_MODES:
            raise ValueError(f"lose_mode must be one of {LOSE_MODES}, got {self.lose_mode!r}")

    def applies_to(self, operation: str) -> bool:
        """True when faults are injected into ``operation``."""
        return self.operations is None or operation in self.operations


@dataclass
class _Tally:
    """Everything the proxy counts; replaced whole by `FaultProxy.reset_counts`."""

    received: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    injected: dict[str, Counter[str]] = field(default_factory=dict)
    withheld: Counter[str] = field(default_factory=Counter)
    delays: deque[tuple[str, float]] = field(
        default_factory=lambda: deque(maxlen=MAX_RECORDED_DELAYS)
    )

    def inject(self, kind: str, operation: str, n: int = 1) -> None:
        self.injected.setdefault(kind, Counter())[operation] += n


_UNSET: Any = object()


class Hold:
    """A gate at the proxy: requests of its operations wait there until `release`.

    Made by `FaultProxy.hold`; use it as a context manager, which releases on exit (so a failing
    test never leaves a request hanging). Requests that arrive after the release pass at once.
    """

    def __init__(self, proxy: FaultProxy, operations: frozenset[str], answers: bool) -> None:
        self.operations = operations
        self.answers = answers  # hold the answers (the emulator applied the request) instead
        self._proxy = proxy
        self._cond = threading.Condition()
        self._arrived = 0
        self._released = threading.Event()

    @property
    def arrived(self) -> int:
        """Requests that reached the gate (waiting, or let through by `release`)."""
        with self._cond:
            return self._arrived

    def wait_arrived(self, count: int = 1, timeout: float | None = 10.0) -> bool:
        """Block until ``count`` requests have reached the gate; False if ``timeout`` passed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._arrived >= count, timeout)

    def release(self) -> None:
        """Let every waiting request, and every later one, through. Idempotent."""
        self._released.set()
        self._proxy._unhold(self)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _pass(self) -> None:
        """Called by a request of the gate's operations: count it, wait for the release
        (`release`, or the proxy closing)."""
        with self._cond:
            self._arrived += 1
            self._cond.notify_all()
        self._released.wait()


class FaultProxy:
    """A threaded HTTP proxy on a free loopback port in front of a DynamoDB endpoint.

    It starts serving when constructed; `close()` (or leaving the ``with`` block) stops it.

    Args:
        upstream_url: the emulator's endpoint, e.g. ``EmbeddedDynamoDB().endpoint_url``.
        seed: seed of the proxy's `random.Random`.
        config: initial faults; none by default.
    """

    def __init__(self, upstream_url: str, *, seed: int = 0, config: FaultConfig | None = None):
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"upstream_url must be http://host:port, got {upstream_url!r}")
        self.upstream_url = upstream_url.rstrip("/")
        self._pool = urllib3.HTTPConnectionPool(
            parts.hostname,
            parts.port or 80,
            maxsize=UPSTREAM_POOL_SIZE,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(
                connect=UPSTREAM_CONNECT_TIMEOUT_S, read=UPSTREAM_READ_TIMEOUT_S
            ),
        )
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._config = config or FaultConfig()
        self._tally = _Tally()
        self._down: DownMode | None = None
        self._holds: list[Hold] = []
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._host = "127.0.0.1"
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self._serve(port=0)

    # -- configuration -----------------------------------------------------------------------

    @property
    def config(self) -> FaultConfig:
        """The faults in force."""
        with self._lock:
            return self._config

    def configure(
        self,
        *,
        throttle_rate: float = _UNSET,
        throttle_code: str = _UNSET,
        latency_ms: float = _UNSET,
        latency_jitter_ms: float = _UNSET,
        partial_rate: float = _UNSET,
        lose_rate: float = _UNSET,
        lose_next: int = _UNSET,
        lose_mode: LoseMode = _UNSET,
        operations: Iterable[str] | None = _UNSET,
    ) -> FaultConfig:
        """Change some faults at once (the others keep their values); return the new config.

        ``operations=None`` applies faults to every operation. ``lose_next=n`` loses the
        answers of the next ``n`` requests in scope, then none (unless ``lose_rate``).
        """
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("throttle_rate", throttle_rate),
                ("throttle_code", throttle_code),
                ("latency_ms", latency_ms),
                ("latency_jitter_ms", latency_jitter_ms),
                ("partial_rate", partial_rate),
                ("lose_rate", lose_rate),
                ("lose_next", lose_next),
                ("lose_mode", lose_mode),
            )
            if value is not _UNSET
        }
        if operations is not _UNSET:
            changes["operations"] = None if operations is None else frozenset(operations)
        with self._lock:
            self._config = replace(self._config, **changes)
            return self._config

    def clear_faults(self) -> None:
        """Back to pure pass-through (rates 0, no latency, all operations, forwarding on)."""
        with self._lock:
            self._config = FaultConfig()
        self.resume_forwarding()

    def hold(self, operations: Iterable[str], *, answers: bool = False) -> Hold:
        """Keep requests of ``operations`` waiting at the proxy (before any fault and before
        forwarding) until the returned `Hold` is released; see `Hold`. With ``answers``, the
        requests are forwarded at once and their answers are kept instead (a read that saw
        the table as it was, answering late)."""
        gate = Hold(self, frozenset(operations), answers)
        with self._lock:
            self._holds.append(gate)
        return gate

    def _unhold(self, gate: Hold) -> None:
        with self._lock:
            if gate in self._holds:
                self._holds.remove(gate)

    def seed(self, seed: int) -> None:
        """Re-seed the proxy's random generator."""
        with self._lock:
            self._random.seed(seed)

    # -- what happened -----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Requests received per DynamoDB operation (including those answered with a fault)."""
        with self._lock:
            return dict(self._tally.received)

    def forwarded_counts(self) -> dict[str, int]:
        """Requests that reached the emulator, per operation."""
        with self._lock:
            return dict(self._tally.forwarded)

    def injected(self) -> dict[str, dict[str, int]]:
        """Faults applied: kind -> operation -> number of requests.

        Kinds: the `WIRE_ERRORS` code for throttles/errors, ``"latency"``, ``"partial"`` (a batch
        with at least one key withheld), ``"lost"`` (forwarded, then its answer lost) and
        ``"down"`` (refused by `stop_forwarding`).
        """
        with self._lock:
            return {kind: dict(ops) for kind, ops in self._tally.injected.items()}

    def withheld_counts(self) -> dict[str, int]:
        """Keys (BatchGetItem) or write requests (BatchWriteItem) returned as unprocessed."""
        with self._lock:
            return dict(self._tally.withheld)

    def delays(self) -> list[tuple[str, float]]:
        """The delays applied, oldest first: (operation, milliseconds)."""
        with self._lock:
            return list(self._tally.delays)

    def reset_counts(self) -> None:
        """Forget everything counted so far."""
        with self._lock:
            self._tally = _Tally()

    # -- reachability ------------------------------------------------------------------------

    def stop_forwarding(self, mode: DownMode = "refuse") -> None:
        """Make DynamoDB unreachable until `resume_forwarding`.

        Modes:
            ``"refuse"``: close the listening socket, so new connections are refused
            (botocore: EndpointConnectionError), and drop open ones.
            ``"reset"``: accept and read requests, then close the connection unanswered
            (botocore: ConnectionClosedError).
            ``"unavailable"``: answer 503 ServiceUnavailable.
        """
        if mode not in ("refuse", "reset", "unavailable"):
            raise ValueError(f"unknown mode {mode!r}")
        with self._lock:
            previous, self._down = self._down, mode
        if mode != "unavailable":
            self._drop_connections()
        if mode == "refuse" and previous != "refuse":
            self._unserve()
        elif mode != "refuse" and previous == "refuse" and not self._closing.is_set():
            self._serve(port=self._port)

    def resume_forwarding(self) -> None:
        """Undo `stop_forwarding`: listen again on the same port and forward."""
        with self._lock:
            previous, self._down = self._down, None
        if previous == "refuse" and not self._closing.is_set():
            self._serve(port=self._port)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The proxy's TCP port (kept across `stop_forwarding` / `resume_forwarding`)."""
        return self._port

    @property
    def endpoint_url(self) -> str:
        """Give this to DynamoDB clients as their ``endpoint_url``."""
        return f"http://{self._host}:{self._port}"

    def close(self) -> None:
        """Stop serving, drop every connection, wake any delayed request. Idempotent."""
        self._closing.set()
        with self._lock:
            holds = list(self._holds)
        for gate in holds:
            gate.release()  # no request stays parked at a gate
        self._unserve()
        self._drop_connections()
        self._pool.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.endpoint_url} -> {self.upstream_url}, {self.config})"

    # -- serving -----------------------------------------------------------------------------

    def _serve(self, port: int) -> None:
        server = _ProxyServer((self._host, port), _Handler, self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SERVE_POLL_INTERVAL_S},
            name=f"fault-proxy-{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def _unserve(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def _track(self, sock: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def _drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- one request -------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        body = handler.read_body()
        target = handler.headers.get(TARGET_HEADER, "")
        operation = target.rpartition(".")[2] if target else ""

        with self._lock:
            gates = [gate for gate in self._holds if operation in gate.operations]
        for gate in gates:
            if not gate.answers:
                gate._pass()

        with self._lock:
            config, down, tally = self._config, self._down, self._tally
            if operation:
                tally.received[operation] += 1
            in_scope = bool(operation) and config.applies_to(operation)
            delay_ms = 0.0
            if in_scope and (config.latency_ms or config.latency_jitter_ms):
                delay_ms = config.latency_ms
                delay_ms += self._random.uniform(0.0, config.latency_jitter_ms)
            throttled = in_scope and self._random.random() < config.throttle_rate
            lose = False
            if in_scope and not throttled and down is None:
                if self._config.lose_next > 0:
                    lose = True
                    self._config = replace(self._config, lose_next=self._config.lose_next - 1)
                elif config.lose_rate > 0:
                    lose = self._random.random() < config.lose_rate
            if down is not None:
                tally.inject("down", operation or handler.command)

        if down is not None:
            if down == "unavailable":
                handler.send(*_error_response(WIRE_ERRORS["ServiceUnavailable"]))
            else:
                handler.drop()
            return

        if delay_ms:
            self._closing.wait(delay_ms / 1000.0)
            with self._lock:
                tally.delays.append((operation, delay_ms))
                tally.inject("latency", operation)

        if throttled:
            with self._lock:
                tally.inject(config.throttle_code, operation)
            handler.send(*_error_response(WIRE_ERRORS[config.throttle_code]))
            return

        to_forward: bytes | None = body
        withheld: dict[str, Any] = {}
        if in_scope and config.partial_rate > 0 and operation in (BATCH_GET, BATCH_WRITE):
            to_forward, withheld = self._split_batch(operation, body, config.partial_rate)

        if to_forward is None:
            # Everything withheld: nothing to forward, the whole batch comes back unprocessed.
            status, payload = 200, b"{}"
            headers = [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-RequestId", _request_id())]
        else:
            with self._lock:
                if operation:
                    tally.forwarded[operation] += 1
            forwarded = self._forward(handler, to_forward)
            if forwarded is None:
                handler.send(502, [("Content-Type", "text/plain")], b"upstream unreachable")
                return
            status, headers, payload = forwarded
        for gate in gates:
            if gate.answers:
                gate._pass()
        if lose:
            with self._lock:
                tally.inject(LOST, operation)
            if config.lose_mode == "drop":
                handler.drop()
            else:
                handler.send(*_error_response(WIRE_ERRORS["InternalServerError"]))
            return
        if withheld and status == 200:
            payload = _merge_unprocessed(operation, payload, withheld)
            headers = _with_crc32(headers, payload, always=True)
        handler.send(status, headers, payload)

    def _split_batch(
        self, operation: str, body: bytes, rate: float
    ) -> tuple[bytes | None, dict[str, Any]]:
        """Withhold each key / write request with probability ``rate``.

        Returns the body to forward (None when everything was withheld) and the withheld part,
        shaped as ``UnprocessedKeys`` / ``UnprocessedItems``.
        """
        try:
            request = json.loads(body)
            request_items: dict[str, Any] = request["RequestItems"]
        except (ValueError, KeyError, TypeError):
            return body, {}  # not a well-formed batch: let the emulator answer it
        forward: dict[str, Any] = {}
        withheld: dict[str, Any] = {}
        n_withheld = 0
        with self._lock:
            for table, entry in request_items.items():
                # BatchGetItem: {"Keys": [...], "ProjectionExpression": ..., ...} per table;
                # BatchWriteItem: [{"PutRequest": ...} | {"DeleteRequest": ...}] per table.
                items = entry.get("Keys", []) if operation == BATCH_GET else entry
                keep: list[Any] = []
                drop: list[Any] = []
                for item in items:
                    (drop if self._random.random() < rate else keep).append(item)
                n_withheld += len(drop)
                if operation == BATCH_GET:
                    # Other per-table parameters (ProjectionExpression, ConsistentRead, ...)
                    # stay with both halves, as DynamoDB returns them in UnprocessedKeys.
                    params = {k: v for k, v in entry.items() if k != "Keys"}
                    if keep:
                        forward[table] = {**params, "Keys": keep}
                    if drop:
                        withheld[table] = {**params, "Keys": drop}
                else:
                    if keep:
                        forward[table] = keep
                    if drop:
                        withheld[table] = drop
            if n_withheld:
                self._tally.inject("partial", operation)
                self._tally.withheld[operation] += n_withheld
        if not n_withheld:
            return body, {}
        if not forward:
            return None, withheld
        request["RequestItems"] = forward
        # The body changes after the client signed it: moto does not verify SigV4 signatures,
        # so a re-written body is accepted (Content-Length is recomputed in _forward).
        return json.dumps(request).encode(), withheld

    def _forward(
        self, handler: _Handler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        headers = urllib3.HTTPHeaderDict()
        for name, value in handler.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                headers.add(name, value)
        headers["Content-Length"] = str(len(body))
        try:
            response = self._pool.urlopen(
                handler.command,
                handler.path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=True,
                decode_content=True,
            )
        except urllib3.exceptions.HTTPError:
            return None
        out = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP]
        return response.status, out, response.data


class _ProxyServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its `FaultProxy` and tracks open connections."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], proxy: FaultProxy
    ) -> None:
        self.proxy = proxy
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.proxy._track(request, open_=True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.proxy._track(request, open_=False)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections dropped on purpose (stop_forwarding, close) are not errors worth a trace.
        pass


class _Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive, as botocore uses it."""

    protocol_version = "HTTP/1.1"
    # Buffered writes and no Nagle: headers and body leave in one segment, without the 40 ms
    # delayed-ACK stall that two small writes on a keep-alive connection would cause.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _ProxyServer

    def do_POST(self) -> None:
        self.server.proxy._handle(self)

    do_GET = do_PUT = do_DELETE = do_POST

    def read_body(self) -> bytes:
        """The request body, by Content-Length or chunked transfer coding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Write a complete response with a correct Content-Length."""
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def drop(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _error_response(error: WireError) -> tuple[int, list[tuple[str, str]], bytes]:
    body = error.body()
    headers = [
        ("Content-Type", JSON_CONTENT_TYPE),
        ("x-amzn-RequestId", _request_id()),
    ]
    return error.status, _with_crc32(headers, body, always=True), body


def _request_id() -> str:
    return f"fault-proxy-{time.monotonic_ns()}"


def _with_crc32(
    headers: list[tuple[str, str]], body: bytes, *, always: bool = False
) -> list[tuple[str, str]]:
    """Recompute ``x-amz-crc32``: botocore checks it against the body for DynamoDB."""
    present = any(name.lower() == "x-amz-crc32" for name, _ in headers)
    out = [(name, value) for name, value in headers if name.lower() != "x-amz-crc32"]
    if present or always:
        out.append(("x-amz-crc32", str(zlib.crc32(body))))
    return out


def _merge_unprocessed(operation: str, payload: bytes, withheld: dict[str, Any]) -> bytes:
    """Add the withheld keys / write requests to the emulator's response."""
    data = json.loads(payload or b"{}")
    if operation == BATCH_GET:
        unprocessed = data.setdefault("UnprocessedKeys", {})
        responses = data.setdefault("Responses", {})
        for table, entry in withheld.items():
            responses.setdefault(table, [])
            if table in unprocessed:
                unprocessed[table]["Keys"].extend(entry["Keys"])
            else:
                unprocessed[table] = entry
    else:
        unprocessed = data.setdefault("UnprocessedItems", {})
        for table, requests in withheld.items():
            unprocessed.setdefault(table, []).extend(requests)
    return json.dumps(data).encode()


__all__ = [
    "LOSE_MODES",
    "LOST",
    "WIRE_ERRORS",
    "DownMode",
    "FaultConfig",
    "FaultProxy",
    "Hold",
    "LoseMode",
    "WireError",
]
