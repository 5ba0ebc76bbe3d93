"""The DAX protocol over TCP: connections, the session handshake, authorization, framing.

A connection starts with the client's session preamble: the magic bytes ``gJ7yne5G``, then
CBOR items (layering 0, a session id or null, a map with the user agent, a type count of 0).
The server does not answer it. Each request is then ``1, method id, arguments...,
[keyword map or null]``; every method has a fixed number of arguments, so a request ends where
its last item ends. ``authorizeConnection`` (a SigV4 signature over the date and region, scope
``dax``) is sent before the first request and then every few minutes, and is not answered;
every other method is answered with ``[]`` (success) followed by its result, or with
``[codes...], message, [request id, code, HTTP status]``.

Bad input never takes the server down: a request that decodes but does not make sense gets a
ValidationException and the connection stays usable; bytes that are not a request (bad magic,
not CBOR, an unknown method, which leaves the rest of the stream unreadable), or a request over
the size limits, get an error answer where one can still be sent, and the connection is closed.
Idle connections are closed after ``idle_timeout_s``; at most ``max_connections`` are served
at once (more are closed on accept).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import logging
import socket
import socketserver
import threading
from collections.abc import Mapping
from typing import Any

from gateway.dax_emulator.cbor import (
    CborError,
    Decoder,
    Encoder,
    EndOfStream,
    Limits,
    Malformed,
    StreamSource,
    TooLarge,
)
from gateway.dax_emulator.codec import BadRequest
from gateway.dax_emulator.dataplane import DataPlane
from gateway.dax_emulator.errors import NOT_AUTHORIZED, DaxFailure, internal, validation

logger = logging.getLogger(__name__)

MAGIC = b"gJ7yne5G"
SERVICE_ID = 1
SUCCESS = b"\x80"  # an empty array
AUTHORIZE = 1489122155
#: method id -> (name, positional arguments, whether a keyword map follows)
METHODS: dict[int, tuple[str, int, bool]] = {
    AUTHORIZE: ("authorizeConnection", 5, False),
    455855874: ("endpoints", 0, False),
    -742646399: ("defineKeySchema", 1, False),
    670678385: ("defineAttributeList", 1, False),
    -1230579644: ("defineAttributeListId", 1, False),
    263244906: ("GetItem", 2, True),
    -2106490455: ("PutItem", 3, True),
    1425579023: ("UpdateItem", 2, True),
    1013539361: ("DeleteItem", 2, True),
    -931250863: ("Query", 2, True),
    -1875390620: ("Scan", 1, True),
    -697851100: ("BatchGetItem", 1, True),
    116217951: ("BatchWriteItem", 1, True),
    1866287579: ("TransactGetItems", 3, True),
    -1160037738: ("TransactWriteItems", 8, True),
}
ROLE_LEADER = 1
#: How far the signed date may be from the server's clock.
AUTH_CLOCK_SKEW = datetime.timedelta(minutes=15)


class Faults:
    """Failures to inject into data-plane answers, for tests: ``hang`` (accept the request and
    never answer), ``drop`` (close the connection without answering) or ``cut`` (send half of
    the answer, then close the connection)."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.remaining = 0
        self._lock = threading.Lock()

    def set(self, mode: str | None, times: int = 1) -> None:
        if mode not in (None, "hang", "drop", "cut"):
            raise ValueError(f"unknown fault {mode!r}")
        with self._lock:
            self.mode, self.remaining = mode, times

    def take(self) -> str | None:
        with self._lock:
            if self.mode is None or self.remaining <= 0:
                return None
            self.remaining -= 1
            return self.mode


class _Connection(socketserver.BaseRequestHandler):
    server: _TcpServer

    def setup(self) -> None:
        self.authorized = False
        self.auth_error: str | None = None

    def handle(self) -> None:
        emulator = self.server.emulator
        sock: socket.socket = self.request
        if not emulator._slots.acquire(blocking=False):
            logger.warning(
                "DAX emulator: too many connections; closing one from %s", self.client_address
            )
            return
        with emulator._lock:
            emulator._sockets.add(sock)
        try:
            sock.settimeout(emulator.idle_timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = sock.makefile("rb")
            try:
                self._serve(sock, Decoder(StreamSource(reader.read), emulator.limits))
            finally:
                reader.close()
        except (OSError, EndOfStream):
            pass  # the peer went away or was idle too long
        except Exception:  # a bug: log it, close this connection, keep serving the others
            logger.exception("DAX emulator: connection from %s failed", self.client_address)
        finally:
            with emulator._lock:
                emulator._sockets.discard(sock)
            emulator._slots.release()

    def _serve(self, sock: socket.socket, decoder: Decoder) -> None:
        emulator = self.server.emulator
        if decoder.source.read(len(MAGIC)) != MAGIC:
            return  # not a DAX client
        try:
            decoder.start_request()
            decoder.read_int()  # layering: 0
            decoder.read_item()  # session id
            decoder.read_item()  # {"UserAgent": ...}
            decoder.read_int()  # custom types: 0
        except CborError:
            return
        while not emulator._stopping.is_set():
            decoder.start_request()
            try:
                first = decoder.source.read(1)
            except EndOfStream:
                return  # closed between requests: the normal end
            try:
                answer = self._request(sock, decoder, first[0])
            except DaxFailure as failure:
                sock.sendall(failure.encode())
                if failure.close:
                    return
                continue
            if answer is not None:
                self._send(sock, answer)

    def _request(self, sock: socket.socket, decoder: Decoder, initial: int) -> bytes | None:
        emulator = self.server.emulator
        try:
            service = decoder._item(initial, 0)
            method_id = decoder.read_int()
            if service != SERVICE_ID:
                raise validation(f"unknown service {service!r}", close=True)
            method = METHODS.get(method_id)
            if method is None:
                raise validation(f"unknown method id {method_id}", close=True)
            name, argc, has_kwargs = method
            args = [decoder.read_item() for _ in range(argc)]
            if has_kwargs:
                args.append(decoder.read_item())
        except TooLarge as exc:
            raise validation(f"request too large: {exc}", close=True) from None
        except EndOfStream:
            raise
        except Malformed as exc:
            raise validation(f"malformed request: {exc}", close=True) from None
        if method_id == AUTHORIZE:
            self._authorize(args)
            return None
        if not self.authorized:
            raise DaxFailure(
                "MissingAuthenticationTokenException",
                self.auth_error or "the connection has not been authorized",
                codes=NOT_AUTHORIZED,
                status=403,
            )
        with emulator._lock:
            emulator.requests[name] = emulator.requests.get(name, 0) + 1
        try:
            if name == "endpoints":
                return SUCCESS + self._endpoints(sock)
            if name == "defineKeySchema":
                return SUCCESS + self._define_key_schema(args[0])
            if name == "defineAttributeList":
                if not isinstance(args[0], int) or isinstance(args[0], bool):
                    raise BadRequest("an attribute list id must be an integer")
                return (
                    SUCCESS + Encoder().value(list(emulator.data.lists.names(args[0]))).getvalue()
                )
            if name == "defineAttributeListId":
                names = args[0]
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise BadRequest("an attribute list must be an array of names")
                return SUCCESS + Encoder().integer(emulator.data.lists.id_for(names)).getvalue()
            fault = emulator.faults.take()
            body = SUCCESS + emulator.data.methods[name](args)
        except BadRequest as exc:
            raise validation(str(exc)) from None
        except DaxFailure:
            raise
        except Exception as exc:
            logger.exception("DAX emulator: %s failed", name)
            raise internal(f"{name} failed in the emulator: {type(exc).__name__}") from None
        if fault == "hang":
            emulator._stopping.wait()
            raise EndOfStream("stopping")
        if fault == "drop":
            raise EndOfStream("dropped")
        if fault == "cut":
            sock.sendall(body[: max(1, len(body) // 2)])
            raise EndOfStream("cut")
        return body

    def _send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)

    def _authorize(self, args: list[Any]) -> None:
        access_key, signature, string_to_sign, _token, _agent = args
        if not (
            isinstance(access_key, str)
            and isinstance(signature, str)
            and isinstance(string_to_sign, bytes)
        ):
            self.authorized, self.auth_error = False, "malformed authorizeConnection"
            return
        problem = self.server.emulator.check_signature(access_key, signature, string_to_sign)
        self.authorized, self.auth_error = problem is None, problem

    def _endpoints(self, sock: socket.socket) -> bytes:
        emulator = self.server.emulator
        address, port = sock.getsockname()[:2]
        node = {
            0: 0,
            1: emulator.advertised_host or address,
            2: socket.inet_aton(address),
            3: port,
            4: ROLE_LEADER,
            5: "local",
            6: 0,
        }
        return Encoder().value([node]).getvalue()

    def _define_key_schema(self, raw_table: Any) -> bytes:
        from gateway.dax_emulator.dataplane import _table

        schema = self.server.emulator.data.key_schema(_table(raw_table))
        return Encoder().value(dict(schema)).getvalue()


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], emulator: DaxEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Connection)

    def handle_error(self, request: Any, client_address: Any) -> None:  # pragma: no cover
        logger.exception("DAX emulator: error serving %s", client_address)


class DaxEmulator:
    """A local DAX node: the DAX protocol on ``host:port``, DynamoDB at ``upstream_url``.

    ``port`` 0 picks a free port. ``credentials`` (access key id -> secret key), when given,
    makes the emulator verify each connection's signature; by default any credentials are
    accepted, as by the DynamoDB emulator. Use as a context manager, or `start` / `stop`.
    """

    def __init__(
        self,
        upstream_url: str | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "us-east-1",
        record_ttl_s: float = 300.0,
        query_ttl_s: float = 300.0,
        item_cache_size: int = 100_000,
        query_cache_size: int = 10_000,
        limits: Limits | None = None,
        max_connections: int = 256,
        idle_timeout_s: float = 600.0,
        credentials: Mapping[str, str] | None = None,
        advertised_host: str | None = None,
        dynamodb_client: Any = None,
    ) -> None:
        self.upstream_url = upstream_url
        self.host = host
        self.requested_port = port
        self.region = region
        self.limits = limits or Limits()
        self.idle_timeout_s = idle_timeout_s
        self.credentials = dict(credentials) if credentials else None
        self.advertised_host = advertised_host
        self.data = DataPlane(
            upstream_url,
            region=region,
            record_ttl_s=record_ttl_s,
            query_ttl_s=query_ttl_s,
            item_cache_size=item_cache_size,
            query_cache_size=query_cache_size,
            client=dynamodb_client,
        )
        self.faults = Faults()
        self.requests: dict[str, int] = {}
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _TcpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> DaxEmulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _TcpServer((self.host, self.requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"dax-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("DAX emulator on %s, DynamoDB at %s", self.endpoint_url, self.upstream_url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:  # end the connections' reads: their threads then exit
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DaxEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the DAX emulator is not running")
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        """The URL for ``AmazonDaxClient`` / ``DAX_ENDPOINT_URL``."""
        return f"dax://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None and self._thread is not None and self._thread.is_alive()

    # -- behaviour ------------------------------------------------------------------------

    def clear_caches(self) -> None:
        """Empty the item and query caches (as a new cluster would start)."""
        self.data.clear_caches()

    def stats(self) -> dict[str, Any]:
        """Cache hits and misses, DynamoDB calls by operation, DAX requests by method."""
        with self._lock:
            requests = dict(self.requests)
        return {**self.data.stats(), "requests": requests}

    def check_signature(self, access_key: str, signature: str, string_to_sign: bytes) -> str | None:
        """Why the connection's authorization is refused, or None when it is accepted."""
        try:
            text = string_to_sign.decode("utf-8")
        except UnicodeDecodeError:
            return "the string to sign is not UTF-8"
        lines = text.split("\n")
        if len(lines) != 4 or lines[0] != "AWS4-HMAC-SHA256":
            return "the string to sign is not a SigV4 string"
        scope = lines[2].split("/")
        if len(scope) != 4 or scope[2] != "dax" or scope[3] != "aws4_request":
            return "the credential scope is not DAX's"
        try:
            signed_at = datetime.datetime.strptime(lines[1], "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            return "the signature's date is not valid"
        if abs(datetime.datetime.now(datetime.timezone.utc) - signed_at) > AUTH_CLOCK_SKEW:
            return "the signature's date is too far from the server's clock"
        if self.credentials is None:
            return None
        secret = self.credentials.get(access_key)
        if secret is None:
            return f"unknown access key id {access_key}"
        key = ("AWS4" + secret).encode("utf-8")
        for part in (scope[0], scope[1], "dax", "aws4_request"):
            key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
        expected = hmac.new(key, string_to_sign, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return "the request signature does not match"
        return None
