"""The Kubernetes manifests, rendered with kustomize and checked against the Kubernetes schemas
offline (no cluster here): what DESIGN.md and the deployment issue promise is in them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.streams import ALL_STREAMS
from tests.support.nats_server import ROOT
from tranche.credentials import USERS, new_passwords, server_env
from tranche.stack import nats_server_binary

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
APP_SERVICES = ("signal", "safety", "executor", "ledger")


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl is not installed (make test-deps installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    return found


def settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    return find(docs, "ConfigMap", "tranche-settings")["data"]


@pytest.mark.parametrize("overlay", ["mock", "production"])
def test_every_manifest_is_valid_kubernetes(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert not [d for d in docs if d["kind"] == "Secret"], "secrets are created, never rendered"


def test_a_nats_cluster_of_three_syncs_every_write_and_streams_keep_three_copies() -> None:
    docs = render("mock")
    nats = find(docs, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    config = find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "sync_interval: always" in config and config.count("nats-headless:6222") == 3
    assert settings(docs)["TRANCHE_STREAM_REPLICAS"] == "3"
    image = nats["spec"]["template"]["spec"]["containers"][0]["image"]
    server = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True)
    assert image.split(":")[1].startswith(server.stdout.split("v")[-1].strip())


def test_the_cluster_config_is_one_nats_accepts(tmp_path: Path) -> None:
    env = {**os.environ, "POD_NAME": "nats-0", **server_env(new_passwords())}
    done = subprocess.run(
        [nats_server_binary(), "-c", str(K8S / "base" / "nats-cluster.conf"), "-t"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "is valid" in done.stderr + done.stdout


def test_only_the_start_of_a_nats_node_waits_for_it_to_catch_up() -> None:
    """The full /healthz (every stream current) must not be the liveness probe: a node that
    needs long to catch up, or has one stuck stream, would be restarted over and over."""
    nats = find(render("mock"), "StatefulSet", "nats")["spec"]["template"]["spec"]
    (container,) = nats["containers"]
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz?js-server-only=true"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"


@pytest.mark.parametrize("config", ["k8s/base/nats-cluster.conf", "nats/tranche.conf"])
def test_every_nats_server_can_hold_what_the_streams_reserve(config: str) -> None:
    """Each stream's max_bytes is reserved on every server holding it, against
    max_file_store. Past it, the server refuses every stream update, and a restarted cluster
    node replaying one stays unhealthy (the cluster ring's stuck node, docs/deploy.md)."""
    text = (ROOT / "deploy" / config).read_text()
    (size, unit) = re.findall(r"^  max_file_store: (\d+)(MB|GB|TB)$", text, re.MULTILINE)[0]
    limit = int(size) * 1024 ** {"MB": 2, "GB": 3, "TB": 4}[unit]  # NATS's units are binary
    reserved = sum(stream.max_bytes for stream in ALL_STREAMS)
    assert reserved <= limit, f"{config}: the streams reserve {reserved} of {limit} bytes"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_service_has_probes_resources_and_its_own_database(service: str) -> None:
    deployment = find(render("mock"), "Deployment", service)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["command"] == ["python", "-m", f"services.{service}"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TRANCHE_DATABASE_URL"]["value"].endswith(f"/tranche_{service}")
    assert "secretKeyRef" in env["POSTGRES_PASSWORD"]["valueFrom"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    if service != "signal":
        assert deployment["spec"]["replicas"] >= 2, "instances share the durable consumer"


def test_mock_is_the_default_and_production_needs_its_secret() -> None:
    assert settings(render("mock"))["TRANCHE_MODE"] == "mock"
    production = render("production")
    assert settings(production)["TRANCHE_MODE"] == "production"
    executor = find(production, "Deployment", "executor")["spec"]["template"]["spec"]
    sources = executor["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "tranche-coinbase"}} in sources
    for name in ("safety", "ledger", "signal"):
        other = find(production, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": "tranche-coinbase"}} not in other["envFrom"], name


def test_production_safety_starts_without_the_exchange_secret() -> None:
    """Safety gets the shared settings but not the Coinbase secret: its opt-in is all there."""
    from services.safety.config import SafetySettings

    shared = settings(render("production"))
    wanted = ("TRANCHE_MODE", "TRANCHE_LIVE_TRADING_CONFIRMED")
    safety = SafetySettings(
        **{k.removeprefix("TRANCHE_").lower(): v for k, v in shared.items() if k in wanted}
    )
    assert safety.mode == "production"
    assert safety.production_opt_in_missing() == []


def test_kubernetes_and_compose_create_the_same_databases() -> None:
    def databases(path: Path) -> set[str]:
        return {line.split()[2].rstrip(";") for line in path.read_text().splitlines()
                if line.startswith("CREATE DATABASE")}  # fmt: skip

    k8s = databases(K8S / "base" / "postgres-init.sql")
    assert k8s == databases(ROOT / "deploy" / "postgres" / "init.sql")
    assert k8s == {f"tranche_{service}" for service in APP_SERVICES}


def secret_of(env: dict[str, Any], name: str) -> tuple[str, str]:
    ref = env[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_the_cluster_runs_the_same_permissions_as_everywhere_else() -> None:
    copy = (K8S / "base" / "permissions.conf").read_text()
    assert copy == (ROOT / "deploy" / "nats" / "permissions.conf").read_text()
    docs = render("mock")
    config = find(docs, "ConfigMap", "nats-config")["data"]
    assert "include ./permissions.conf" in config["nats.conf"] and config["permissions.conf"]
    container = find(docs, "StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    for user in USERS:  # each password from the user's own Secret
        assert secret_of(env, f"TRANCHE_NATS_PASSWORD_{user.upper()}") == (
            f"tranche-nats-{user}",
            "password",
        )


@pytest.mark.parametrize("service", [*APP_SERVICES, "dashboard"])
def test_each_service_logs_in_as_its_own_user_and_only_checks_the_streams(service: str) -> None:
    docs = render("mock")
    container = find(docs, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["TRANCHE_NATS_USER"]["value"] == service
    assert secret_of(env, "TRANCHE_NATS_PASSWORD") == (f"tranche-nats-{service}", "password")
    assert settings(docs)["TRANCHE_STREAM_SETUP"] == "check"


def test_the_streams_are_provisioned_by_a_job_as_admin() -> None:
    job = find(render("mock"), "Job", "tranche-provision")["spec"]["template"]["spec"]
    container = job["containers"][0]
    assert container["command"][-4:-2] == ["nats", "provision"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TRANCHE_NATS_USER"]["value"] == "admin"
    assert secret_of(env, "TRANCHE_NATS_PASSWORD") == ("tranche-nats-admin", "password")
    assert job["securityContext"]["runAsNonRoot"] is True


def test_the_dashboard_runs_read_only_with_probes_and_finds_the_services() -> None:
    docs = render("mock")
    deployment = find(docs, "Deployment", "dashboard")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "services.dashboard"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e for e in container["env"]}
    urls = yaml.safe_load(env["TRANCHE_SERVICE_URLS"]["value"])
    assert urls == {name: f"http://{name}:8080" for name in APP_SERVICES}
    assert "TRANCHE_CONTROL_TOKEN" not in env and "TRANCHE_DATABASE_URL" not in env
    assert find(docs, "Service", "dashboard")["spec"]["ports"][0]["port"] == 8080


@pytest.mark.parametrize("service", [*APP_SERVICES, "dashboard"])
def test_only_safety_holds_the_signing_key_and_the_executor_and_signal_its_public_half(
    service: str,
) -> None:
    docs = render("mock")
    container = find(docs, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert ("TRANCHE_SIGNING_KEY" in env) == (service == "safety")
    assert ("TRANCHE_SIGNING_PUBLIC_KEY" in env) == (service in ("executor", "signal"))
    if service == "safety":
        assert secret_of(env, "TRANCHE_SIGNING_KEY") == ("tranche-signing", "private")
    if service in ("executor", "signal"):
        assert secret_of(env, "TRANCHE_SIGNING_PUBLIC_KEY") == ("tranche-signing", "public")


@pytest.mark.parametrize("service", [*APP_SERVICES, "dashboard"])
def test_only_the_executor_holds_its_order_signing_key_and_every_reader_its_public_half(
    service: str,
) -> None:
    docs = render("mock")
    container = find(docs, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert ("TRANCHE_ORDER_SIGNING_KEY" in env) == (service == "executor")
    assert ("TRANCHE_ORDER_SIGNING_PUBLIC_KEY" in env) == (service != "executor")
    if service == "executor":
        assert secret_of(env, "TRANCHE_ORDER_SIGNING_KEY") == ("tranche-order-signing", "private")
    else:
        public = secret_of(env, "TRANCHE_ORDER_SIGNING_PUBLIC_KEY")
        assert public == ("tranche-order-signing", "public")
