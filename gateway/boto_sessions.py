"""boto3 sessions that share one loader of AWS's service models.

Every `DynamoDBService` makes a boto3 ``Session`` of its own (a session must not be shared
between threads that create clients, and a caller may pass theirs instead). A new session
starts with an empty model cache: its first client reads and parses botocore's JSON models of
DynamoDB again, which made a service cost 50-130 ms to build here, most of its construction (a
third of the wall time of the test files that build many services). Those models live in the
session's loader, which only reads files and caches what it parsed, and which every client of
one session already shares across threads; so one loader serves every session of the process,
and a service takes about 9 ms to build.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.session

_lock = threading.Lock()
_loader: Any = None


def shared_loader() -> Any:
    """The process's loader of service models: the one the first session made (so it reads
    the models from where that session's configuration, e.g. ``AWS_DATA_PATH``, said)."""
    global _loader
    with _lock:
        if _loader is None:
            _loader = botocore.session.get_session().get_component("data_loader")
        return _loader


def new_session(region_name: str | None = None) -> boto3.session.Session:
    """A new boto3 session (its own credentials, configuration and clients) that reads
    service models through `shared_loader`."""
    core = botocore.session.get_session()
    core.register_component("data_loader", shared_loader())
    return boto3.session.Session(botocore_session=core, region_name=region_name)


__all__ = ["new_session", "shared_loader"]
