"""The deployment files, checked statically (no Docker or Kubernetes here): they parse,
configure the app only through real, valid RECSYS_* settings, run real CLI commands with
valid arguments, and describe a consistent Bytewax cluster on enough Kafka partitions."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import typer
import yaml

from core.settings import ENV_NAMES, PROJECT_ROOT, Settings
from dataflow.run import parse_addresses
from infra.cli import app

INFRA = PROJECT_ROOT / "infra" / "deploy"
COMPOSE = INFRA / "docker-compose.yml"
K8S = INFRA / "k8s"
APP_IMAGE = "recsys"


# --- shared checks ----------------------------------------------------------------------


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}``, resolved to the default (what runs with VAR unset)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def settings_from(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as a container with this environment builds them."""
    fields = ENV_NAMES
    unknown = sorted(k for k in env if k.startswith("RECSYS_") and k not in fields)
    assert not unknown, f"not settings fields: {unknown}"
    for k in list(os.environ):
        if k.startswith("RECSYS_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, interpolate(str(v)))
    return Settings(_env_file=None)


def check_command(args: list[str]) -> Any:
    """Parse ``recsys <args>`` with the real CLI, without running it: unknown commands,
    options or bad values fail here."""
    group = typer.main.get_command(app)
    ctx = group.make_context("recsys", list(args), resilient_parsing=False)
    names = list(args)
    cmd: Any = group
    while hasattr(cmd, "list_commands"):  # a group (typer ships its own click)
        name, sub, rest = cmd.resolve_command(ctx, names)
        assert sub is not None, f"no command {name!r}"
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd, names = sub, rest
    return ctx


def cluster_of(commands: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Each dataflow process's -w / -i / -a as the CLI parses them."""
    return {name: check_command(args).params for name, args in commands.items()}


# --- docker compose ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s["image"].split(":")[0] == APP_IMAGE}


def test_compose_has_the_production_topology(compose):
    services = compose["services"]
    kafka = {n: s for n, s in services.items() if s["image"].startswith("apache/kafka")}
    assert len(kafka) == 3
    voters = {s["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for s in kafka.values()}
    assert len(voters) == 1
    assert sorted(voters.pop().split(",")) == sorted(
        f"{s['environment']['KAFKA_NODE_ID']}@{n}:9093" for n, s in kafka.items()
    )
    assert all("controller" in s["environment"]["KAFKA_PROCESS_ROLES"] for s in kafka.values())
    assert services["qdrant"]["image"].startswith("qdrant/qdrant")
    assert services["api"]["deploy"]["replicas"] == 2
    assert "8000:8000" in services["gateway"]["ports"]
    nginx = (INFRA / "nginx.conf").read_text()
    assert "server api:8000 resolve" in nginx
    for name in app_services(compose):
        if name != "init":
            assert services[name]["depends_on"]["init"]["condition"] == (
                "service_completed_successfully"
            )
    # every named volume used is declared
    declared = set(compose["volumes"])
    for s in services.values():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/", "$")):
                assert src in declared, src


def test_compose_configures_the_app_only_through_valid_settings(compose, monkeypatch):
    for name, service in app_services(compose).items():
        env = service["environment"]
        assert all(k.startswith("RECSYS_") for k in env), name
        s = settings_from(env, monkeypatch)
        assert s.qdrant.url and not s.embedded and s.dataflow.inprocess is False, name
        assert s.kafka_configured
        assert s.api.port == 8000


def test_compose_commands_are_real_cli_commands(compose):
    for name, service in app_services(compose).items():
        check_command(service["command"])
        assert service["command"][0] in {"api", "dataflow", "init"}, name


def test_compose_dataflow_cluster_is_consistent(compose, monkeypatch):
    services = app_services(compose)
    flows = {n: s["command"] for n, s in services.items() if s["command"][0] == "dataflow"}
    params = cluster_of(flows)
    assert len(params) == 2
    addresses = {p["addresses"] for p in params.values()}
    assert len(addresses) == 1, "every process needs the same -a list"
    peers = parse_addresses(addresses.pop())
    assert len(peers) == len(params)
    assert sorted(p["process_id"] for p in params.values()) == list(range(len(peers)))
    for name, p in params.items():
        # process i listens at the i-th address: that is this service's own host name
        host = peers[p["process_id"]].rsplit(":", 1)[0]
        assert host == services[name].get("hostname", name)
    workers = {p["workers"] for p in params.values()}
    assert len(workers) == 1
    settings = settings_from(services["dataflow-0"]["environment"], monkeypatch)
    assert settings.kafka.topic_partitions >= len(peers) * workers.pop()
    assert settings.recovery.partitions >= len(peers)
    # each process keeps state + recovery on its own volume, mounted at the state dir
    mounts = [services[n]["volumes"] for n in flows]
    volumes = [m[0].split(":")[0] for m in mounts]
    assert len(set(volumes)) == len(volumes)
    assert all(m[0].split(":")[1] == str(settings.state_dir) for m in mounts)
    assert settings.recovery.dir is not None
    assert settings.recovery.dir.is_relative_to(settings.state_dir)


def test_dockerfile_installs_the_pinned_cpu_torch_and_the_project():
    text = (INFRA / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    pin = re.search(r'"torch==([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text())
    assert pin is not None
    assert f"pip install torch=={pin.group(1)} --index-url" in text
    assert "/whl/cpu" in text
    for package in ("core", "featurestore", "eventlog", "api", "dataflow", "training", "infra"):
        assert f"COPY {package} ./{package}" in text
    assert 'ENTRYPOINT ["recsys"]' in text
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        if not src.startswith("--"):
            assert (PROJECT_ROOT / src).exists(), src
    env = dict(re.findall(r"(RECSYS_[A-Z_]+)=(\S+)", text))
    assert set(env) <= ENV_NAMES
    assert 'recsys = "infra.cli:main"' in (PROJECT_ROOT / "pyproject.toml").read_text()


# --- kubernetes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def k8s_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            (cm,) = find(docs, "ConfigMap", ref["configMapRef"]["name"])
            env |= cm["data"]
        if "secretRef" in ref:
            (secret,) = find(docs, "Secret", ref["secretRef"]["name"])
            env |= secret.get("stringData", {})
    env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return env


def app_containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for d in docs:
        spec = d.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            if c["image"].split(":")[0] == APP_IMAGE:
                out[f"{d['kind']}/{d['metadata']['name']}"] = c
    return out


def test_kustomization_lists_every_manifest(k8s):
    (kust,) = find(k8s, "Kustomization")
    assert sorted(kust["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_k8s_configures_the_app_only_through_valid_settings(k8s, monkeypatch):
    containers = app_containers(k8s)
    assert set(containers) == {
        "Deployment/recsys-api",
        "StatefulSet/recsys-dataflow",
        "Job/recsys-init",
    }
    for name, c in containers.items():
        env = k8s_env(k8s, c)
        extra = {e["name"] for e in c.get("env", [])} - {"POD_INDEX"}
        assert not {k for k in extra if not k.startswith("RECSYS_")}, name
        s = settings_from({k: v for k, v in env.items() if k.startswith("RECSYS_")}, monkeypatch)
        assert s.qdrant.url and s.dataflow.inprocess is False and s.kafka_configured, name
        check_command(_args(c))


def _args(container: dict[str, Any]) -> list[str]:
    """The container's args with Kubernetes' $(VAR) expanded for a representative pod."""
    return [a.replace("$(POD_INDEX)", "0") for a in container["args"]]


def test_k8s_api_has_two_replicas_probes_and_a_service(k8s, monkeypatch):
    (deploy,) = find(k8s, "Deployment", "recsys-api")
    assert deploy["spec"]["replicas"] == 2
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    s = settings_from(
        {k: v for k, v in k8s_env(k8s, c).items() if k.startswith("RECSYS_")}, monkeypatch
    )
    assert port == s.api.port
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (svc,) = find(k8s, "Service", "recsys-api")
    assert (
        svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    )


def test_k8s_dataflow_statefulset_is_a_consistent_cluster(k8s, monkeypatch):
    (sts,) = find(k8s, "StatefulSet", "recsys-dataflow")
    spec = sts["spec"]
    (svc,) = find(k8s, "Service", spec["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"  # headless: a stable DNS name per pod
    assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    replicas = spec["replicas"]
    assert replicas == 2
    (c,) = spec["template"]["spec"]["containers"]
    # the pod's ordinal is its process id
    assert c["args"][c["args"].index("-i") + 1] == "$(POD_INDEX)"
    (pod_index,) = [e for e in c["env"] if e["name"] == "POD_INDEX"]
    assert pod_index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    params = cluster_of(
        {str(i): [a.replace("$(POD_INDEX)", str(i)) for a in c["args"]] for i in range(replicas)}
    )
    peers = parse_addresses(params["0"]["addresses"])
    port = svc["spec"]["ports"][0]["port"]
    name = sts["metadata"]["name"]
    assert peers == [f"{name}-{i}.{spec['serviceName']}:{port}" for i in range(replicas)]
    workers = params["0"]["workers"]
    env = {k: v for k, v in k8s_env(k8s, c).items() if k.startswith("RECSYS_")}
    s = settings_from(env, monkeypatch)
    assert s.recovery.partitions >= replicas
    # state and recovery on the pod's own volumes, where the settings put them
    templates = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert set(mounts) == templates == {"state", "recovery"}
    assert mounts["state"] == str(s.state_dir) and mounts["recovery"] == str(s.recovery.dir)
    # enough partitions for every worker of the cluster
    (events,) = [
        t
        for t in find(k8s, "KafkaTopic")
        if t["spec"].get("topicName", t["metadata"]["name"]) == s.kafka.events_topic
    ]
    assert events["spec"]["partitions"] >= replicas * workers
    assert s.kafka.topic_partitions >= replicas * workers


def test_k8s_kafka_is_kraft_with_three_replicas_and_the_engines_topics(k8s, monkeypatch):
    (kafka,) = find(k8s, "Kafka")
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    (pool,) = find(k8s, "KafkaNodePool")
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    (cm,) = find(k8s, "ConfigMap", "recsys-config")
    s = settings_from(cm["data"], monkeypatch)
    topics = {t["spec"].get("topicName", t["metadata"]["name"]) for t in find(k8s, "KafkaTopic")}
    assert {s.kafka.events_topic, s.kafka.dead_letter_topic, s.kafka.impressions_topic} <= topics
    assert s.kafka.bootstrap_servers.startswith(f"{kafka['metadata']['name']}-kafka-bootstrap:")
    assert all(t["spec"]["replicas"] == 3 for t in find(k8s, "KafkaTopic"))
