"""boto3 sessions that share a loader of AWS's service models.

Every `DynamoDBService` makes a boto3 ``Session`` of its own (a session must not be shared
between threads that create clients, and a caller may pass theirs instead). A new session
starts with an empty model cache: its first client reads and parses botocore's JSON models of
DynamoDB again, which made a service cost 50-130 ms to build here, most of its construction (a
third of the wall time of the test files that build many services). Those models live in the
session's loader, which every client of one session already shares across threads, and whose
parsed models botocore and boto3 do not change (the one rewrite in place, of the retry
configuration, gives the same result every time); so one loader per data path (``AWS_DATA_PATH`` /
the ``data_path`` setting, read for each new session) serves every session of the process, and
a service takes about 9 ms to build. A model file added under a data path while the process
runs is seen by new sessions only if that path's loader has not parsed the model yet.
"""

from __future__ import annotations

import os
import threading

import boto3
import botocore.loaders
import botocore.session

_lock = threading.Lock()
_loaders: dict[str | None, botocore.loaders.Loader] = {}


def _new_lock_in_child() -> None:
    # A fork while another thread held the lock would leave it held forever in the child.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


class _SearchPaths(list[str]):
    """A loader's search paths that ignore a path they already hold: boto3 appends its own
    data directory to the loader of every ``Session`` it makes, which on a shared loader
    would grow the list (and every uncached lookup's walk) by one path per session."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


def shared_loader(data_path: str | None = None) -> botocore.loaders.Loader:
    """The process's loader of service models for ``data_path`` (``AWS_DATA_PATH``'s
    format: directories joined by ``os.pathsep``; None for botocore's defaults only)."""
    loader = _loaders.get(data_path)
    if loader is None:
        with _lock:
            loader = _loaders.get(data_path)
            if loader is None:
                paths = _SearchPaths()
                if data_path is not None:  # as botocore.loaders.create_loader reads it
                    for path in data_path.split(os.pathsep):
                        paths.append(os.path.expanduser(os.path.expandvars(path)))
                loader = _loaders[data_path] = botocore.loaders.Loader(extra_search_paths=paths)
    return loader


def new_session(region_name: str | None = None) -> boto3.session.Session:
    """A new boto3 session (its own credentials, configuration and clients) that reads
    service models through the `shared_loader` of its data path."""
    core = botocore.session.get_session()
    core.register_component("data_loader", shared_loader(core.get_config_variable("data_path")))
    return boto3.session.Session(botocore_session=core, region_name=region_name)


__all__ = ["new_session", "shared_loader"]
