"""A tiny HTTP document service on top of ``get_database_service(Settings())``: the compose demo.

    GET    /docs/<collection>/<id>   the document as JSON (404 if none); ETag: its _rev
    PUT    /docs/<collection>/<id>   save the JSON object in the body -> {"id": ..., "rev": ...};
                                     If-Match: <rev> saves only over that revision,
                                     If-None-Match: * only if no document exists (else 412)
    DELETE /docs/<collection>/<id>   204, or 404 if there was no document
    GET    /healthz                  200 while the process serves
    GET    /stats                    the service's stats(): hits, misses, DynamoDB calls...

Configuration is the gateway's: the contract's environment variables (``DYNAMODB_ENDPOINT_URL``,
``CACHE_BACKEND``, ``REDIS_URL``, ...) or the YAML file named by ``GATEWAY_CONFIG``. Without a
DynamoDB endpoint (and without ``GATEWAY_USE_AWS=1``) it starts an embedded emulator, so
``python load_tests/demo_app.py`` works on a bare machine. Standard library only (http.server):
it is a demo of the gateway, not a web framework.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

# Run as a script (`python load_tests/demo_app.py`), the repository root is not on sys.path.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from gateway import (  # noqa: E402
    ABSENT,
    ConflictError,
    DatabaseService,
    GatewayError,
    ServiceUnavailableError,
    Settings,
    ThrottledError,
    ValidationError,
    get_database_service,
)

logger = logging.getLogger("gateway.demo_app")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Larger bodies are refused before they are read (DynamoDB's item limit is 400 KB).
MAX_BODY_BYTES = 1024 * 1024
#: Seconds a client is told to wait after a 503.
RETRY_AFTER_S = 1


def to_json(value: Any) -> Any:
    """``json.dumps`` default: DynamoDB's types as JSON (Decimal, sets, bytes)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raw = getattr(value, "value", None)  # boto3's Binary wraps bytes in `.value`
    if isinstance(raw, (bytes, bytearray)):
        return base64.b64encode(bytes(raw)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number DynamoDB can store")


class DemoServer(ThreadingHTTPServer):
    """A threading HTTP server that holds the `DatabaseService` its handlers use."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: DatabaseService) -> None:
        super().__init__(address, DocumentHandler)
        self.service = service


class DocumentHandler(BaseHTTPRequestHandler):
    """GET/PUT/DELETE of documents, /healthz and /stats."""

    server: DemoServer
    server_version = "gateway-demo/1"
    protocol_version = "HTTP/1.1"

    # -- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        """A document, /healthz or /stats."""
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send(HTTPStatus.OK, {"status": "ok"})
        elif path == "/stats":
            with self._errors():
                self._send(HTTPStatus.OK, self.server.service.stats())
        else:
            target = self._document_path(path)
            if target is None:
                return
            with self._errors():
                doc = self.server.service.get(*target)
                if doc is None:
                    self._send(HTTPStatus.NOT_FOUND, {"error": "no such document"})
                else:
                    self._send(HTTPStatus.OK, doc, etag=str(doc.get("_rev", "")))

    def do_PUT(self) -> None:
        """Save the JSON object in the body (a full replace)."""
        target = self._document_path(urlsplit(self.path).path)
        if target is None:
            return
        doc = self._read_json_object()
        if doc is None:
            return
        if_match = self.headers.get("If-Match")
        if_rev: Any = None
        if self.headers.get("If-None-Match", "").strip() == "*":
            if_rev = ABSENT
        elif if_match:
            if_rev = if_match.strip().strip('"')
        with self._errors():
            result = self.server.service.save(*target, doc, if_rev=if_rev)
            self._send(HTTPStatus.OK, result, etag=result["rev"])

    def do_DELETE(self) -> None:
        """Delete a document (If-Match: <rev> for a conditional delete)."""
        target = self._document_path(urlsplit(self.path).path)
        if target is None:
            return
        if_match = self.headers.get("If-Match")
        with self._errors():
            removed = self.server.service.delete(
                *target, if_rev=if_match.strip().strip('"') if if_match else None
            )
            if removed:
                self._send(HTTPStatus.NO_CONTENT, None)
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "no such document"})

    # -- helpers ----------------------------------------------------------------------------

    def _document_path(self, path: str) -> tuple[str, str] | None:
        """(collection, id) from ``/docs/<collection>/<id>``; else a 404 is sent and None."""
        parts = path.lstrip("/").split("/", 2)
        if len(parts) != 3 or parts[0] != "docs" or not parts[1] or not parts[2]:
            self._send(
                HTTPStatus.NOT_FOUND,
                {"error": "expected /docs/<collection>/<id>, /healthz or /stats"},
            )
            return None
        return unquote(parts[1]), unquote(parts[2])

    def _read_json_object(self) -> dict[str, Any] | None:
        """The request body as a JSON object; else a 4xx is sent and None."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return None
        if length > MAX_BODY_BYTES:
            self._send(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"the body is over {MAX_BODY_BYTES} bytes"},
            )
            self.close_connection = True  # the unread body would be taken for a request
            return None
        body = self.rfile.read(length)
        try:
            # Decimal keeps 0.1 as 0.1 (a float would reach DynamoDB as 0.1000000000000000055...).
            doc = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"error": f"the body is not JSON: {exc}"})
            return None
        if not isinstance(doc, dict):
            self._send(HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON object"})
            return None
        return doc

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Map the gateway's errors to HTTP statuses."""
        try:
            yield
        except ValidationError as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except ConflictError as exc:
            self._send(HTTPStatus.PRECONDITION_FAILED, {"error": str(exc)})
        except (ThrottledError, ServiceUnavailableError) as exc:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}, retry_after=True)
        except GatewayError as exc:
            logger.error("%s %s: %s", self.command, self.path, exc)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
        except Exception:
            logger.exception("%s %s failed", self.command, self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def _send(
        self,
        status: HTTPStatus,
        payload: Any,
        *,
        etag: str | None = None,
        retry_after: bool = False,
    ) -> None:
        body = b"" if payload is None else json.dumps(payload, default=to_json).encode("utf-8")
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", f'"{etag}"')
        if retry_after:
            self.send_header("Retry-After", str(RETRY_AFTER_S))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access log at debug level (a load test would flood stderr)."""
        logger.debug("%s %s", self.address_string(), format % args)


def make_server(
    service: DatabaseService, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> DemoServer:
    """A server for ``service`` bound to ``host:port`` (0: a free port); call serve_forever()."""
    return DemoServer((host, port), service)


@contextlib.contextmanager
def _service_from_settings() -> Iterator[DatabaseService]:
    """``get_database_service(Settings())``, on an embedded emulator when no endpoint is set."""
    settings = Settings()
    emulator = None
    if not settings.DYNAMODB_ENDPOINT_URL and os.environ.get("GATEWAY_USE_AWS") != "1":
        from gateway.emulator import EmbeddedDynamoDB, ensure_dummy_credentials

        ensure_dummy_credentials()
        emulator = EmbeddedDynamoDB().start()
        logger.info("no DYNAMODB_ENDPOINT_URL: embedded emulator at %s", emulator.endpoint_url)
        settings = settings.model_copy(update={"DYNAMODB_ENDPOINT_URL": emulator.endpoint_url})
    try:
        with get_database_service(settings) as service:
            yield service
    finally:
        if emulator is not None:
            emulator.stop()


def _stop(signum: int, frame: FrameType | None) -> None:
    # As PID 1 in a container, SIGTERM is ignored unless handled: exit through `finally`s.
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _stop)
    try:
        with _service_from_settings() as service, make_server(service, args.host, args.port) as srv:
            host, port = srv.server_address[:2]
            logger.info("serving %r on http://%s:%s", service, host, port)
            srv.serve_forever()
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
