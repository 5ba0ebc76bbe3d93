"""Sessions of `gateway.boto_sessions`: each service has a session of its own, and they share
one loader, so the second service parses no model file again."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import botocore.loaders
import pytest

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


def test_sessions_are_distinct_but_share_the_loader() -> None:
    first, second = new_session("us-east-1"), new_session("eu-west-1")
    assert first is not second and first._session is not second._session
    assert first.region_name == "us-east-1" and second.region_name == "eu-west-1"
    assert first._session.get_component("data_loader") is shared_loader()
    assert second._session.get_component("data_loader") is shared_loader()


def test_a_second_service_parses_no_model_again(files_parsed: list[str]) -> None:
    with DynamoDBService(region_name="us-east-1", endpoint_url=UNREACHABLE):
        pass
    files_parsed.clear()
    with DynamoDBService(region_name="us-east-1", endpoint_url=UNREACHABLE) as second:
        second.control_client  # noqa: B018  (its clients and resource are all built)
    assert files_parsed == []


def test_a_callers_session_is_used_as_given(files_parsed: list[str]) -> None:
    own = boto3.session.Session(region_name="us-east-1")
    loader = own._session.get_component("data_loader")
    assert loader is not shared_loader()
    with DynamoDBService(region_name="us-east-1", endpoint_url=UNREACHABLE, session=own):
        pass
    assert own._session.get_component("data_loader") is loader
    assert files_parsed  # its own loader read the models: the shared one was not slipped in
