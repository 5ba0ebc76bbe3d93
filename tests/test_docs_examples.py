"""Every code block of README.md and docs/*.md, checked so the documentation cannot drift.

* ``python``: run, each in a fresh interpreter in an empty directory (with ``config/`` and a
  small ``users.jsonl``), against the test session's emulator and Redis through the
  environment (``DYNAMODB_ENDPOINT_URL``, ``REDIS_URL``, a table prefix of its own): the same
  variables ``gateway emulator`` prints for running your own code locally.
* ``bash``: every ``gateway ...`` command is parsed by the CLI's own parser (unknown commands
  or options fail); every ``export NAME=value`` of a setting is validated by `Settings`; every
  ``./scripts/...`` exists and is executable. Other programs (pip, curl, jq, docker) are not
  run.
* ``yaml``: parsed; a block that starts with ``# config/gateway.yaml`` is loaded as a
  configuration file. ``json``: parsed. ``text``: output shown for reading, not checked.

A block preceded by ``<!-- docs-test: skip: REASON -->`` is not run (a DAX cluster or real AWS
is needed); the reason is required. Every block must name its language.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gateway.cli import build_parser
from gateway.config import Settings
from tests.servers import TEST_CREDENTIALS, TEST_REGION

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python", "bash", "yaml", "json", "text"}
_FENCE = re.compile(r"^```(\S*)\s*$")
_SKIP = re.compile(r"^<!-- docs-test: skip: (.+\S) -->$")
PYTHON_TIMEOUT_S = 120


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        previous = lines[start - 1].strip() if start else ""
        skip = _SKIP.match(previous)
        code = "\n".join(lines[start + 1 : end]) + "\n"
        found.append(Block(path, start + 1, match.group(1), code, skip.group(1) if skip else None))
        i = end + 1
    return found


BLOCKS = [block for path in DOCUMENTS for block in _blocks(path)]


def _of(language: str) -> list[Block]:
    return [block for block in BLOCKS if block.language == language]


def test_the_documents_have_code_blocks() -> None:
    assert len(_of("python")) >= 5 and len(_of("bash")) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_every_block_names_its_language(block: Block) -> None:
    assert block.language in LANGUAGES, (
        f"{block.name}: a code block must say its language ({', '.join(sorted(LANGUAGES))}); "
        "output shown for reading is `text`"
    )


# -- python ------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", _of("python"), ids=lambda b: b.name)
def test_python_blocks_run(
    block: Block, moto_server: object, redis_url: str, tmp_path: Path, table_prefix: str
) -> None:
    if block.skip:
        pytest.skip(block.skip)
    shutil.copytree(ROOT / "config", tmp_path / "config")
    (tmp_path / "users.jsonl").write_text(
        '{"_id": "u1", "name": "Ada", "score": 9.5}\n{"_id": "u2", "name": "Bob"}\n',
        encoding="utf-8",
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "DYNAMODB_", "CACHE_", "REDIS_", "DAX_", "GATEWAY_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID=TEST_CREDENTIALS["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=TEST_CREDENTIALS["aws_secret_access_key"],
        AWS_DEFAULT_REGION=TEST_REGION,
        DYNAMODB_ENDPOINT_URL=moto_server.endpoint_url,  # type: ignore[attr-defined]
        DYNAMODB_TABLE_PREFIX=table_prefix,
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", block.code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=PYTHON_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stderr[-3000:]}"


def test_skipped_blocks_say_why() -> None:
    for block in BLOCKS:
        assert block.skip is None or len(block.skip) > 10, block.name


# -- bash --------------------------------------------------------------------------------------


def _commands(code: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and prompts dropped."""
    joined = code.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        commands.append(line)
    return commands


def _words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|;&<>")
    lexer.whitespace_split = True
    words: list[str] = []
    for word in lexer:
        if word in {"|", ";", "&&", ">", ">>", "<"}:
            break  # only the first command of a pipeline or list is checked
        words.append(word)
    return words


def _check_gateway_command(words: list[str], where: str) -> None:
    parser = build_parser()
    try:
        parser.parse_args(words[1:])
    except SystemExit as exc:
        raise AssertionError(f"{where}: `{' '.join(words)}` is not a valid command") from exc


@pytest.mark.parametrize("block", _of("bash"), ids=lambda b: b.name)
def test_bash_blocks_name_real_commands_and_settings(block: Block) -> None:
    exported: dict[str, str] = {}
    for command in _commands(block.code):
        words = _words(command)
        if not words:
            continue
        if words[0] == "gateway":
            _check_gateway_command(words, block.name)
        elif words[0] == "export" and len(words) == 2 and "=" in words[1]:
            name, value = words[1].split("=", 1)
            if name in Settings.model_fields:
                exported[name] = value
        elif words[0].startswith("./scripts/"):
            script = ROOT / words[0]
            assert script.is_file() and os.access(script, os.X_OK), f"{block.name}: {words[0]}"
    if exported:
        Settings(**exported)  # the block's settings together: ConfigError if one is bad


# -- yaml, json --------------------------------------------------------------------------------


@pytest.mark.parametrize("block", _of("yaml"), ids=lambda b: b.name)
def test_yaml_blocks_parse_and_configurations_load(block: Block, tmp_path: Path) -> None:
    data = yaml.safe_load(block.code)
    assert data is not None
    if block.code.startswith("# config/gateway.yaml"):
        path = tmp_path / "gateway.yaml"
        path.write_text(block.code, encoding="utf-8")
        Settings.from_yaml(path)


@pytest.mark.parametrize("block", _of("json"), ids=lambda b: b.name)
def test_json_blocks_parse(block: Block) -> None:
    json.loads(block.code)
