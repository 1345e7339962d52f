"""The deployment files stay valid and agree with the code and with each other.

docker-compose.yml, ops/Dockerfile, ops/k8s, ops/prometheus and ops/grafana: setting names
are real settings, metric names are metrics the workers export, ports, grace periods,
partition counts and names match across files. Fast and offline; the checks that need a
tool (docker-compose, promtool, kubectl) are skipped, saying so, where it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from inferpool.settings import ENV_PREFIX, InferpoolSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
K8S = ROOT / "ops" / "k8s"
PROMETHEUS = ROOT / "ops" / "prometheus"
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "inferpool.json"

WORKER_SERVICES = ("worker", "worker-gpu")
PROFILES: tuple[list[str], ...] = (
    [], ["gpu"], ["load"], ["monitoring"], ["gpu", "load", "monitoring"]
)
DEFAULT_DRAIN_TIMEOUT_S = 30.0
DEFAULT_METRICS_PORT = 9100

COUNTERS = {
    "inferpool_requests_total",
    "inferpool_errors_total",
    "inferpool_batches_total",
    "inferpool_dead_letters_total",
    "inferpool_commit_failures_total",
    "inferpool_result_store_retries_total",
    "inferpool_dead_letter_retries_total",
    "inferpool_dead_letter_failures_total",
    "inferpool_fetch_errors_total",
}
HISTOGRAMS = {
    "inferpool_batch_size",
    "inferpool_queue_wait_seconds",
    "inferpool_batch_wait_seconds",
    "inferpool_inference_seconds",
    "inferpool_end_to_end_seconds",
}
GAUGES = {
    "inferpool_consumer_lag",
    "inferpool_oldest_unprocessed_age_seconds",
    "inferpool_inflight_requests",
    "inferpool_model_load_seconds",
    "inferpool_model_agreement_cosine",
    "inferpool_model_agreement_cosine_by_category",
    "inferpool_model_retrieval_agreement",
    "inferpool_ready",
}
METRIC_NAMES = (
    COUNTERS
    | GAUGES
    | HISTOGRAMS
    | {f"{name}_{suffix}" for name in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
)
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}


# --- helpers --------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


def valid_setting_names() -> set[str]:
    """INFERPOOL_<FIELD>, and INFERPOOL_<SECTION>_<FIELD> for the nested sections."""
    names: set[str] = set()
    for name, field in InferpoolSettings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names |= {f"{ENV_PREFIX}{name}_{sub}".upper() for sub in section.model_fields}
        else:
            names.add(f"{ENV_PREFIX}{name}".upper())
    return names


def interpolate(value: Any) -> str:
    """A compose value with ``${VAR:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", str(value))


def load_settings_from(environment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                       ) -> InferpoolSettings:
    """The settings a process with exactly this INFERPOOL_* environment reads."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        if name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, interpolate(value))
    return InferpoolSettings(_env_file=None)  # type: ignore[call-arg]


def duration_s(text: str) -> float:
    """A compose duration ("45s", "1m30s", "1.5s") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords aside)."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    text = re.sub(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'", '""', text)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, is_call = match.group(1), match.group(2)
        if not is_call and word not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_exprs() -> list[str]:
    rules = load_yaml(PROMETHEUS / "alerts.yml")
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


# --- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, check=False
    ).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("docker-compose is not installed (apt-get install -y docker-compose); "
                "compose file validation skipped")


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_compose_config_is_valid(profiles: list[str]) -> None:
    command = compose_command()
    for profile in profiles:
        command += ["--profile", profile]
    command += ["-f", str(COMPOSE_FILE), "config", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "is not set" not in done.stderr, done.stderr


def test_readme_names_every_compose_service(services: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = re.search(r"^Compose services:.*?(?=\n\n)", readme, re.MULTILINE | re.DOTALL)
    assert paragraph, "README.md's Deploying section lists the compose services"
    named = set(re.findall(r"`([a-z][a-z0-9-]*)`", paragraph.group(0)))
    assert named == set(services), "README.md and docker-compose.yml name the same services"


def test_workers_scale(services: dict[str, Any]) -> None:
    for name in WORKER_SERVICES:
        service = services[name]
        assert "container_name" not in service, f"{name}: a container_name prevents --scale"
        assert "ports" not in service, f"{name}: a host port prevents --scale; use expose"
        assert str(DEFAULT_METRICS_PORT) in [str(port) for port in service.get("expose", [])]
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_environment_is_real_settings(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    valid = valid_setting_names()
    for name in (*WORKER_SERVICES, "loadgen"):
        environment = services[name]["environment"]
        unknown = {key for key in environment if key.startswith(ENV_PREFIX)} - valid
        assert not unknown, f"{name}: not inferpool settings: {sorted(unknown)}"
        load_settings_from(environment, monkeypatch)  # every value is valid too


def test_kafka_init_creates_the_configured_topics(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings_from(services["worker"]["environment"], monkeypatch)
    assert settings.create_topics is False, "kafka-init creates the topics, not the workers"
    script = " ".join(services["kafka-init"]["command"])
    created = dict(re.findall(r"--topic (\S+) --partitions (\d+)", script.replace("\\\n", " ")))
    assert created.get(settings.request_topic) == str(settings.request_topic_partitions)
    assert settings.dead_letter_topic in created
    assert settings.kafka.bootstrap_servers in script


def test_redis_persists_and_never_evicts(services: dict[str, Any]) -> None:
    command = " ".join(str(part) for part in services["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(str(volume).endswith(":/data") for volume in services["redis"]["volumes"])


def test_stop_grace_period_outlasts_the_drain(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in WORKER_SERVICES:
        settings = load_settings_from(services[name]["environment"], monkeypatch)
        grace = duration_s(services[name]["stop_grace_period"])
        assert grace > settings.drain_timeout_s, f"{name}: stop_grace_period <= drain timeout"


def test_profiles_and_gpu_reservation(services: dict[str, Any]) -> None:
    assert "profiles" not in services["worker"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["loadgen"]["profiles"] == ["load"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_mounted_paths_exist(services: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# --- ops/Dockerfile -------------------------------------------------------------------------


def test_dockerfile(services: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert len(stages) >= 2, "multi-stage build"
    assert "ARG TORCH_INDEX_URL" in text and "torch==${TORCH_VERSION}" in text
    assert re.search(r"^USER (?!root)\S+", text, flags=re.MULTILINE), "runs as non-root"
    assert f"EXPOSE {DEFAULT_METRICS_PORT}" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["inferpool"]' in text and 'CMD ["worker"]' in text
    entrypoint = services["loadgen"]["entrypoint"]
    assert f"COPY ops/loadgen.py {entrypoint[-1]}" in text, "loadgen's entrypoint is in the image"


# --- ops/k8s --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Every manifest in ops/k8s by kind (one object of each kind)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert document["kind"] not in found, f"two {document['kind']} manifests"
            found[document["kind"]] = {**document, "_file": path.name}
    return found


@pytest.fixture(scope="module")
def config(manifests: dict[str, dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = manifests["ConfigMap"]["data"]
    return data


def worker_container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = manifests["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_configmap_holds_real_settings(
    config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = set(config) - valid_setting_names()
    assert not unknown, f"configmap.yaml: not inferpool settings: {sorted(unknown)}"
    load_settings_from(config, monkeypatch)


def test_selectors_match_the_pod_labels(manifests: dict[str, dict[str, Any]]) -> None:
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        "Service": manifests["Service"]["spec"]["selector"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= labels.items(), f"{kind} misses the workers"


def test_probes_and_ports(
    manifests: dict[str, dict[str, Any]], config: dict[str, str]
) -> None:
    container = worker_container(manifests)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    metrics_port = int(config.get("INFERPOOL_METRICS_PORT", DEFAULT_METRICS_PORT))
    assert metrics_port in ports.values()
    paths = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in paths.items():
        check = container[probe]["httpGet"]
        assert check["path"] == path
        assert ports.get(check["port"]) == metrics_port, f"{probe} is not on the metrics port"
    service_ports = manifests["Service"]["spec"]["ports"]
    assert any(ports.get(port["targetPort"]) == metrics_port for port in service_ports)
    assert manifests["Service"]["spec"]["clusterIP"] == "None", "headless"


def test_environment_comes_from_the_configmap_and_a_secret(
    manifests: dict[str, dict[str, Any]]
) -> None:
    sources = worker_container(manifests)["envFrom"]
    config_maps = [s["configMapRef"]["name"] for s in sources if "configMapRef" in s]
    assert config_maps == [manifests["ConfigMap"]["metadata"]["name"]]
    assert any("secretRef" in source for source in sources)
    unknown = {
        item["name"] for item in worker_container(manifests).get("env", [])
    } - valid_setting_names()
    assert not unknown, f"worker-deployment.yaml: not inferpool settings: {sorted(unknown)}"


def test_grace_period_outlasts_the_drain(
    manifests: dict[str, dict[str, Any]], config: dict[str, str]
) -> None:
    drain_s = float(config.get("INFERPOOL_DRAIN_TIMEOUT_S", DEFAULT_DRAIN_TIMEOUT_S))
    grace_s = manifests["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s > drain_s


def test_scaled_object_targets_the_workers(
    manifests: dict[str, dict[str, Any]], config: dict[str, str]
) -> None:
    scaled = manifests["ScaledObject"]["spec"]
    deployment = manifests["Deployment"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    partitions = int(config["INFERPOOL_REQUEST_TOPIC_PARTITIONS"])
    surge = int(deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"])
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["maxReplicaCount"] + surge <= partitions, "more workers than partitions"
    lanes = [t["metadata"] for t in scaled["triggers"] if t["type"] == "kafka"]
    topic = config["INFERPOOL_REQUEST_TOPIC"]
    # one trigger per priority lane, high scaling at the smallest lag
    assert [m["topic"] for m in lanes] == [f"{topic}.high", topic, f"{topic}.low"]
    for metadata in lanes:
        assert metadata["bootstrapServers"] == config["INFERPOOL_KAFKA_BOOTSTRAP_SERVERS"]
        assert metadata["consumerGroup"] == config["INFERPOOL_CONSUMER_GROUP"]
        assert int(metadata["lagThreshold"]) > 0
    thresholds = [int(m["lagThreshold"]) for m in lanes]
    assert thresholds == sorted(thresholds)
    # generative models: a second trigger on the step engines' waiting sequences
    (waiting,) = [t for t in scaled["triggers"] if t["type"] == "prometheus"]
    assert "inferpool_waiting_sequences" in waiting["metadata"]["query"]


def test_kustomize_builds() -> None:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed; kustomize build skipped")
    done = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    kinds = {document["kind"] for document in yaml.safe_load_all(done.stdout)}
    assert kinds == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject"}


# --- Prometheus and Grafana -----------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """The sample names worker.metrics.WorkerMetrics exports (families registered at
    construction), plus names it builds at scrape time (found in its source)."""
    import worker.metrics

    names: set[str] = set()
    for family in worker.metrics.WorkerMetrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {family.name} | {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    source = Path(worker.metrics.__file__).read_text(encoding="utf-8")
    return names | {name for name in METRIC_NAMES if f'"{name}"' in source}


def test_the_metric_list_is_what_workers_export() -> None:
    missing = METRIC_NAMES - exported_metric_names()
    assert not missing, f"worker.metrics does not export {sorted(missing)}"


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(inferpool_end_to_end_seconds_'
            'bucket{model=~"$model"}[$__rate_interval]))) / ignoring (status) group_left '
            'sum(up offset 5m) > 1e3')
    assert metric_names(expr) == {"inferpool_end_to_end_seconds_bucket", "up"}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_promql_uses_only_exported_metrics(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"selects no metric: {expr}"
        assert names <= METRIC_NAMES, f"unknown metrics {sorted(names - METRIC_NAMES)}: {expr}"


def test_dashboard_has_the_essential_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = "\n".join(dashboard_exprs())
    assert re.search(r"rate\(inferpool_requests_total", exprs), "throughput"
    assert "histogram_quantile(0.99" in exprs and "inferpool_end_to_end_seconds_bucket" in exprs
    assert "inferpool_batch_size" in exprs
    assert "inferpool_consumer_lag" in exprs
    assert "inferpool_oldest_unprocessed_age_seconds" in exprs
    assert 'status!="ok"' in exprs, "error rate"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    datasource = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uids = {source["uid"] for source in datasource["datasources"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]


def test_grafana_provisioning_matches_the_mounts(services: dict[str, Any]) -> None:
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
    path = providers["providers"][0]["options"]["path"]
    mounts = dict(str(volume).split(":")[:2] for volume in services["grafana"]["volumes"])
    assert mounts.get("./ops/grafana/dashboards") == path
    assert mounts.get("./ops/grafana/provisioning") == "/etc/grafana/provisioning"


def test_prometheus_scrapes_every_worker(services: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    discovery = jobs["inferpool-worker"]["dns_sd_configs"][0]
    assert set(WORKER_SERVICES) <= set(discovery["names"])
    assert discovery["port"] == DEFAULT_METRICS_PORT
    mount = next(str(v) for v in services["prometheus"]["volumes"] if "ops/prometheus" in str(v))
    target = mount.split(":")[1]
    for rule_file in config["rule_files"]:
        assert rule_file.startswith(target + "/")
        assert (PROMETHEUS / rule_file.removeprefix(target + "/")).is_file()


@pytest.fixture
def promtool() -> Iterator[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus); PromQL not parsed")
    yield path


def test_promtool_accepts_config_rules_and_dashboard(promtool: str, tmp_path: Path) -> None:
    config = (PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/", ""), encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    rules = [
        {"record": f"dashboard:expr_{i}",
         "expr": re.sub(r"\$\{?\w+\}?", ".*", re.sub(r"\$__\w+", "5m", expr))}
        for i, expr in enumerate(dashboard_exprs())
    ]
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    for command in (["check", "config", "prometheus.yml"], ["check", "rules", "dashboard.yml"]):
        done = subprocess.run([promtool, *command], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
