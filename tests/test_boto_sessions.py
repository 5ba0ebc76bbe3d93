"""Sessions of `gateway.boto_sessions`: each service has a session of its own, and sessions of
one data path share one loader, so a second service parses no model again."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import boto3
import botocore.loaders
import pytest

from gateway import boto_sessions
from gateway.boto_sessions import new_session, shared_loader
from gateway.dynamodb import DynamoDBService

UNREACHABLE = "http://127.0.0.1:9"  # nothing is sent: building a service makes no request


@pytest.fixture
def files_parsed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The model files botocore's loaders read from disk, from here on."""
    parsed: list[str] = []
    original = botocore.loaders.JSONFileLoader.load_file

    def load_file(self: object, file_path: str) -> object:
        parsed.append(file_path)
        return original(self, file_path)  # type: ignore[arg-type]

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", load_file)
    yield parsed


def loader_of(session: boto3.session.Session) -> object:
    return session._session.get_component("data_loader")


def test_sessions_are_distinct_but_share_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    first, second = new_session("us-east-1"), new_session("eu-west-1")
    assert first is not second and first._session is not second._session
    assert first.region_name == "us-east-1" and second.region_name == "eu-west-1"
    assert loader_of(first) is loader_of(second) is shared_loader(None)


def test_a_second_service_parses_no_model_again(files_parsed: list[str]) -> None:
    with DynamoDBService(region_name="us-east-1", endpoint_url=UNREACHABLE):
        pass
    files_parsed.clear()
    with DynamoDBService(region_name="us-east-1", endpoint_url=UNREACHABLE) as second:
        second.control_client  # noqa: B018  (its clients and resource are all built)
    assert files_parsed == []


def test_sessions_do_not_grow_the_shared_search_paths() -> None:
    # boto3 appends its data directory to the loader of every Session it makes.
    new_session()
    paths = list(shared_loader(None).search_paths)
    for _ in range(50):
        new_session()
    assert shared_loader(None).search_paths == paths
    assert len(set(paths)) == len(paths)


def test_another_data_path_gets_a_loader_that_searches_it_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    default = loader_of(new_session())
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    own = loader_of(new_session())
    assert own is not default
    assert own.search_paths[0] == str(tmp_path)  # type: ignore[attr-defined]
    assert loader_of(new_session()) is own


def test_a_callers_session_is_used_as_given() -> None:
    own = boto3.session.Session(region_name="us-east-1")
    loader = loader_of(own)
    with DynamoDBService(region_name="us-east-1", endpoint_url=UNREACHABLE, session=own) as svc:
        assert svc._session is own
    assert loader_of(own) is loader and loader is not shared_loader(None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_lock_was_held_can_still_make_sessions(
    tmp_path: os.PathLike[str],
) -> None:
    with boto_sessions._lock:  # as another thread building a session at the fork would
        pid = os.fork()
        if pid == 0:  # the child: a new data path takes the lock; never returns into pytest
            code = 1
            try:
                signal.alarm(30)  # a hang ends the child by SIGALRM, not the test run
                os.environ["AWS_DATA_PATH"] = str(tmp_path)
                new_session()
                code = 0
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_services_built_at_once_from_several_threads_share_one_loader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    # A data path no session used yet: every thread reaches the loader's creation together.
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    start = threading.Barrier(8)
    loaders: list[object] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            start.wait()
            with DynamoDBService(region_name="us-east-1", endpoint_url=UNREACHABLE) as svc:
                loaders.append(loader_of(svc._session))
        except BaseException as exc:  # reported below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(loaders) == 8 and all(loader is loaders[0] for loader in loaders)
    assert loaders[0] is shared_loader(str(tmp_path))
