"""docs/api.md is the API reference: it documents every public name, and nothing points elsewhere.

Checks that every name of ``gateway.__all__``, every `Settings` field, every YAML path of
``YAML_PATHS`` and every public call of the `DatabaseService` protocol appears in docs/api.md as
inline code, that the caching gateway's operator calls are there too, that its relative links
resolve, and that no reference to the former ``shared/CONTRACT.md`` is left in the README, the
package or docker-compose.yml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gateway
from gateway import DatabaseService, Settings
from gateway.config import YAML_PATHS
from gateway.gateway import CachingGateway

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"


def _code_spans(text: str) -> set[str]:
    """Every inline code span of a Markdown text, and its leading identifier (``save(...)``
    also counts as ``save``)."""
    spans: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        spans.add(span)
        head = re.match(r"[A-Za-z_][A-Za-z0-9_.]*", span)
        if head:
            spans.add(head.group(0))
    return spans


@pytest.fixture(scope="module")
def spans() -> set[str]:
    return _code_spans(API_DOC.read_text(encoding="utf-8"))


def _protocol_methods() -> list[str]:
    return sorted(
        name
        for name, value in vars(DatabaseService).items()
        if callable(value) and not name.startswith("_")
    )


def test_protocol_methods_found() -> None:
    # The introspection itself: a protocol without its calls would make the test below vacuous.
    assert {"save", "get", "delete", "list_all", "query", "stats", "close"} <= set(
        _protocol_methods()
    )


@pytest.mark.parametrize("name", sorted(gateway.__all__))
def test_public_name_documented(name: str, spans: set[str]) -> None:
    assert name in spans, f"gateway.{name} is public but docs/api.md never names `{name}`"


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_settings_field_documented(field: str, spans: set[str]) -> None:
    assert field in spans, f"Settings.{field} is not documented in docs/api.md"


@pytest.mark.parametrize("path", sorted(".".join(p) for p in YAML_PATHS))
def test_yaml_path_documented(path: str, spans: set[str]) -> None:
    assert path in spans, f"YAML key {path} is not documented in docs/api.md"


@pytest.mark.parametrize("method", _protocol_methods())
def test_service_call_documented(method: str, spans: set[str]) -> None:
    assert method in spans, f"DatabaseService.{method} is not documented in docs/api.md"


@pytest.mark.parametrize("method", ["invalidate", "invalidate_collection"])
def test_operator_call_documented(method: str, spans: set[str]) -> None:
    assert callable(getattr(CachingGateway, method))
    assert method in spans


def test_if_rev_and_guarantee_documented(spans: set[str]) -> None:
    text = API_DOC.read_text(encoding="utf-8")
    assert "if_rev" in spans and "ABSENT" in spans
    assert "../README.md#the-guarantee" in text
    assert "## The guarantee" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_relative_links_resolve() -> None:
    text = API_DOC.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert targets
    for target in targets:
        if "://" in target:
            continue
        assert (API_DOC.parent / target).exists(), f"docs/api.md links to missing {target}"


def _stale_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "docker-compose.yml"]
    files += sorted((ROOT / "gateway").rglob("*.py"))
    return files


def test_no_stale_contract_reference() -> None:
    stale = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _stale_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "CONTRACT.md" in line
    ]
    assert not stale, f"references to the missing shared/CONTRACT.md remain: {stale}"


def test_readme_points_to_api_doc() -> None:
    assert "docs/api.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/api.md" in (gateway.__doc__ or "")
