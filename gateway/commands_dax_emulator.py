"""``gateway dax-emulator``: a local DAX endpoint, in the foreground, for the dax backend.

It serves the DAX protocol on ``127.0.0.1:8111`` (``--port``), in front of the embedded
DynamoDB emulator (started here) or of ``--upstream URL``, prints the shell lines that point
the gateway at it (``CACHE_BACKEND=dax``, ``DAX_ENDPOINT_URL``, ``DYNAMODB_ENDPOINT_URL``), then
runs until Ctrl-C (SIGINT) or SIGTERM. ``--record-ttl-ms`` / ``--query-ttl-ms`` are the
cluster's ``record-ttl-millis`` and ``query-ttl-millis`` (5 minutes each by default, as DAX's).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading

from gateway.aws_errors import CREDENTIALS_ADVICE
from gateway.cli import EXIT_OK
from gateway.commands_emulator import _start, _stop_on_signals, port_is_free, serve_until_stopped
from gateway.emulator import DEFAULT_HOST, DUMMY_CREDENTIALS, DUMMY_REGION, ensure_dummy_credentials
from gateway.errors import CredentialsError, ValidationError

DEFAULT_PORT = 8111
DEFAULT_TTL_MS = 300_000


def export_lines(dax_url: str, dynamodb_url: str, *, dummy_credentials: bool) -> list[str]:
    variables = {
        "CACHE_BACKEND": "dax",
        "DAX_ENDPOINT_URL": dax_url,
        "DYNAMODB_ENDPOINT_URL": dynamodb_url,
    }
    if dummy_credentials:
        variables.update({**DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": DUMMY_REGION})
    return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]


def _require_credentials(upstream: str) -> None:
    """The node signs its requests to ``upstream``: without credentials every call would fail
    (as a DAX 500 the client retries), so say so before serving."""
    import boto3

    if boto3.Session().get_credentials() is None:
        raise CredentialsError(
            f"The DAX emulator signs its requests to {upstream} with AWS credentials, and none "
            f"were found. {CREDENTIALS_ADVICE}"
        )


def cmd_dax_emulator(args: argparse.Namespace) -> int:
    from gateway.dax_emulator import DaxEmulator

    if not 0 <= args.port < 65536:
        raise ValidationError(f"--port must be 0 to 65535, not {args.port}")
    if args.port and not port_is_free(DEFAULT_HOST, args.port):
        raise ValidationError(
            f"Port {args.port} on {DEFAULT_HOST} is in use: choose another with --port "
            "(0 for any free port)"
        )
    for name in ("record_ttl_ms", "query_ttl_ms"):
        if getattr(args, name) < 0:
            raise ValidationError(f"--{name.replace('_', '-')} must not be negative")
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    embedded = None
    try:
        if args.upstream:
            upstream = args.upstream
            _require_credentials(upstream)
        else:
            ensure_dummy_credentials()
            embedded = _start(None)
            upstream = embedded.endpoint_url
        emulator = DaxEmulator(
            upstream,
            port=args.port,
            region=args.region or DUMMY_REGION,
            record_ttl_s=args.record_ttl_ms / 1000,
            query_ttl_s=args.query_ttl_ms / 1000,
        )
        with emulator:
            code = serve_until_stopped(
                stop,
                export_lines(
                    emulator.endpoint_url, upstream, dummy_credentials=embedded is not None
                ),
                f"# DAX emulator on {emulator.endpoint_url} in front of DynamoDB at {upstream} "
                f"(record TTL {args.record_ttl_ms} ms, query TTL {args.query_ttl_ms} ms). "
                "Ctrl-C to stop.",
                lambda: emulator.running and (embedded is None or embedded.running),
            )
    finally:
        if embedded is not None:
            embedded.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    if code == EXIT_OK:
        print("# DAX emulator stopped", file=sys.stderr)
    return code


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``dax-emulator``."""
    text = (
        "run a local DAX endpoint (the DAX protocol, with DAX's item and query caches) in front "
        "of the embedded DynamoDB emulator or --upstream; prints the export lines for "
        "CACHE_BACKEND=dax; stops on Ctrl-C or SIGTERM"
    )
    parser = commands.add_parser("dax-emulator", help=text, description=text)
    parser.set_defaults(handler=cmd_dax_emulator)
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on {DEFAULT_HOST} (default {DEFAULT_PORT}, DAX's; 0: any free port)",
    )
    parser.add_argument(
        "--upstream",
        metavar="URL",
        help="the DynamoDB endpoint to serve (default: start the embedded emulator)",
    )
    parser.add_argument(
        "--record-ttl-ms",
        type=int,
        default=DEFAULT_TTL_MS,
        help="item cache TTL, DAX's record-ttl-millis (default 300000; 0 disables)",
    )
    parser.add_argument(
        "--query-ttl-ms",
        type=int,
        default=DEFAULT_TTL_MS,
        help="query cache TTL, DAX's query-ttl-millis (default 300000; 0 disables)",
    )
