"""Running the project's scripts and commands as a new user would: in a subprocess, from the
project's root, with none of the settings' or AWS's variables of this environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clean_environment() -> dict[str, str]:
    """This environment without the settings' variables or AWS's: the script must need none
    of them (and must not reach a real AWS account through them)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "DYNAMODB_", "GATEWAY_", "CACHE_", "REDIS_"))
        and name not in ("COLLECTIONS", "RETRY", "COALESCING", "STREAMS_INVALIDATION")
    }
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def run_python(args: list[str], timeout_s: float, **env: str) -> subprocess.CompletedProcess[str]:
    """``python <args>`` in the clean environment (plus ``env``), from the project's root; its
    output captured as text, its exit code left to the caller."""
    return subprocess.run(
        [sys.executable, *args],
        env={**clean_environment(), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
