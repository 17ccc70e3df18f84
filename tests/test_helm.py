"""The Helm chart (helm/recsys-triton), checked with the real tools.

- helm v3.17 (`helm lint --strict`, `helm template`) from .tools/bin/helm,
- kubernetes-validate's bundled Kubernetes schemas, strict (unknown fields rejected), plus
  vendored strict schemas for the custom resources the chart renders (ServiceMonitor,
  PrometheusRule),
- promtool (`promtool check rules`, `promtool test rules`) on the alert rules when it is on the
  PATH (Debian's `prometheus` package; no PyPI package ships it), skipped otherwise,
- checkov on every rendered manifest set,
- the chart's own scripts (archive fetcher, `helm test` request) run for real against HTTP
  servers on 127.0.0.1.

The tools come from `scripts/install_helm_tools.sh`; without them these tests fail and say so.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import kubernetes_validate
import pytest
import tritonclient.grpc as grpcclient
import yaml

from recsys.contract import ENSEMBLE_NAME, MODEL_LOAD_ORDER
from recsys.settings import DEFAULT_CONFIG_PATH, Settings, load_settings
from serving import versions
from serving.launcher import TritonServer
from serving.server_args import build_server_args
from serving.versions import TritonAdmin, VersionError
from tests.conftest import TrainedSet, free_port
from tests.threads import CheckedThread

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "recsys-triton"
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
CHECKOV = TOOLS / "checkov" / "bin" / "checkov"
INSTALL_HINT = "run `bash scripts/install_helm_tools.sh` (make helm-tools) first"

KUBE_VERSION = "1.30.0"
RELEASE = "recsys"
NAMESPACE = "recsys"
ADMIN_KEY_REF = "$(TRITON_ADMIN_KEY)"

EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
# None stands for the chart's defaults.
VALUE_SETS: list[Path | None] = [None, *EXAMPLES]
VALUE_SET_IDS = ["defaults", *(p.stem for p in EXAMPLES)]

# Custom resources the chart may render, each validated against a vendored strict schema.
CUSTOM_RESOURCE_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        ROOT / "helm" / "schemas" / "servicemonitor-monitoring.coreos.com-v1.json"
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        ROOT / "helm" / "schemas" / "prometheusrule-monitoring.coreos.com-v1.json"
    ),
}

# The only checkov findings the chart may skip; each skip carries its reason in the chart.
ALLOWED_CHECKOV_SKIPS = {
    "CKV_K8S_43",  # image by digest: only when image.digest is empty
    "CKV_K8S_35",  # TRITON_ADMIN_KEY env var: needed for $(VAR) expansion in args
    "CKV_K8S_8",  # liveness probe on the one-shot `helm test` pod
    "CKV_K8S_9",  # readiness probe on the one-shot `helm test` pod
}

Manifest = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------


def _require(tool: Path) -> None:
    if not (tool.is_file() and os.access(tool, os.X_OK)):
        pytest.fail(f"{tool.relative_to(ROOT)} is missing: {INSTALL_HINT}", pytrace=False)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    _require(HELM)
    home = TOOLS / "helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def _template_args(values_file: Path | None, sets: tuple[str, ...]) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    if values_file is not None:
        args += ["--values", str(values_file)]
    for item in sets:
        args += ["--set", item]
    return args


@functools.cache
def _render_text(values_file: Path | None, sets: tuple[str, ...]) -> str:
    result = run_helm(*_template_args(values_file, sets))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.stdout


def render(values_file: Path | None = None, *sets: str) -> list[Manifest]:
    """The manifests `helm template` renders (fresh copies, safe to modify)."""
    docs = yaml.safe_load_all(_render_text(values_file, sets))
    return [doc for doc in docs if doc]


def find(docs: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, got {len(matches)}"
    return matches[0]


def server_container(docs: list[Manifest]) -> Manifest:
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = (c for c in pod["containers"] if c["name"] == "tritonserver")
    return container


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_values(values_file: Path | None = None) -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if values_file is not None:
        values = _deep_merge(values, yaml.safe_load(values_file.read_text()) or {})
    return values


def expected_model_repository(values: dict[str, Any]) -> str:
    repo = values["modelRepository"]
    return repo["uri"]["location"] if repo["source"] == "uri" else repo["mountPath"]


def leaf_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the chart's settings: descends into chart-specific objects, and stops at
    lists, maps and shared Kubernetes shapes (schema $ref, e.g. `resources`)."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        child = schema["properties"][key]
        if isinstance(value, dict) and "properties" in child and "$ref" not in child:
            paths += leaf_paths(value, child, f"{path}.")
        else:
            paths.append(path)
    return paths


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Serves `files` for GET and answers POST with `reply`; remembers the POSTs."""

    files: ClassVar[dict[str, bytes]] = {}
    reply: ClassVar[tuple[int, dict[str, Any]]] = (200, {})
    posts: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        length = int(self.headers["Content-Length"])
        self.posts.append((self.path, json.loads(self.rfile.read(length))))
        status, payload = self.reply
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output clean


LocalHttp = tuple[str, type[_Recorder]]


@pytest.fixture()
def local_http() -> Iterator[LocalHttp]:
    """A real HTTP server on 127.0.0.1 (ephemeral port); yields its URL and handler class."""
    handler = type("Handler", (_Recorder,), {"files": {}, "posts": [], "reply": (200, {})})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _tar_gz(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(DEFAULT_CONFIG_PATH)


# --- the tools ------------------------------------------------------------------------------


def test_helm_is_a_real_helm_3_17() -> None:
    result = run_helm("version", "--short")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("v3.17."), result.stdout


def test_install_script_is_idempotent() -> None:
    _require(HELM)
    _require(CHECKOV)
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_helm_tools.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "helm v3.17.2 already" in result.stderr
    assert "checkov 3.3.30 already" in result.stderr


# --- lint and Kubernetes schemas ----------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=VALUE_SET_IDS)
def test_helm_lint_strict(values_file: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    if values_file is not None:
        args += ["--values", str(values_file)]
    result = run_helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=VALUE_SET_IDS)
def test_manifests_validate_against_kubernetes_schemas(values_file: Path | None) -> None:
    docs = render(values_file)
    assert docs, "nothing rendered"
    for doc in docs:
        ident = f"{doc['kind']}/{doc['metadata']['name']}"
        custom = CUSTOM_RESOURCE_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if custom is not None:
            schema = json.loads(custom.read_text())
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
            assert not errors, f"{ident}: " + "; ".join(e.message for e in errors)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{ident}: no schema ({exc.message}); vendor one in helm/schemas/")
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(
                f"{ident} is invalid for Kubernetes {KUBE_VERSION} at {path}: {exc.message}"
            )


def test_validators_are_strict() -> None:
    """The checks above would catch a stray field: both validators reject one."""
    deployment = find(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)

    monitor = find(render(CHART / "examples" / "autoscaling.yaml"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    schema_path = CUSTOM_RESOURCE_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]
    validator = jsonschema.Draft202012Validator(json.loads(schema_path.read_text()))
    assert not validator.is_valid(monitor)

    rule_schema = CUSTOM_RESOURCE_SCHEMAS[("monitoring.coreos.com/v1", "PrometheusRule")]
    rule_validator = jsonschema.Draft202012Validator(json.loads(rule_schema.read_text()))
    rules = find(render(CHART / "examples" / "autoscaling.yaml"), "PrometheusRule")
    assert rule_validator.is_valid(rules)
    broken: list[Manifest] = []
    for mutate in (
        lambda r: r["spec"]["groups"][0]["rules"][0].update({"severity": "critical"}),
        lambda r: r["spec"]["groups"][0]["rules"][0].update({"for": "5 minutes"}),
        lambda r: r["spec"]["groups"][0]["rules"][0].update({"record": "recsys:errors"}),
        lambda r: r["spec"]["groups"][0]["rules"][0]["labels"].update({"severity": 2}),
        lambda r: r["spec"]["groups"][0].update({"evaluationInterval": "1m"}),
    ):
        bad = copy.deepcopy(rules)
        mutate(bad)
        broken.append(bad)
    assert not any(rule_validator.is_valid(bad) for bad in broken)


def test_rendered_kinds() -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted(
        [
            "ConfigMap",  # Grafana dashboard
            "ConfigMap",  # liveness probe script
            "Deployment",
            "NetworkPolicy",
            "NetworkPolicy",
            "Pod",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )
    autoscaling = {d["kind"] for d in render(CHART / "examples" / "autoscaling.yaml")}
    assert {"HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule"} <= autoscaling
    ingress = {d["kind"] for d in render(CHART / "examples" / "cpu.yaml")}
    assert "Ingress" in ingress


# --- the contract with config/default.yaml and serving.server_args ------------------------


def test_default_values_mirror_config(settings: Settings) -> None:
    values = chart_values()
    server = values["server"]
    expected = settings.server
    assert server["httpPort"] == expected.http_port
    assert server["grpcPort"] == expected.grpc_port
    assert server["metricsPort"] == expected.metrics_port
    assert server["modelControlMode"] == expected.model_control_mode
    assert server["strictReadiness"] is expected.strict_readiness
    assert server["exitOnError"] is expected.exit_on_error
    assert server["logVerbose"] == expected.log_verbose
    assert server["pythonShmDefaultByteSize"] == expected.python_shm_default_byte_size
    assert server["restrictedApiHeader"] == expected.restricted_api_header
    assert server["models"] == list(MODEL_LOAD_ORDER)
    assert values["instanceKind"] == settings.serving.instance_kind
    assert values["tests"]["model"] == ENSEMBLE_NAME
    assert values["autoscaling"]["queueTime"]["model"] == ENSEMBLE_NAME
    assert values["metrics"]["prometheusRule"]["model"] == ENSEMBLE_NAME


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=VALUE_SET_IDS)
def test_server_args_equal_build_server_args(settings: Settings, values_file: Path | None) -> None:
    values = chart_values(values_file)
    container = server_container(render(values_file))
    assert container["command"] == ["tritonserver"]
    expected = build_server_args(
        settings.server,
        expected_model_repository(values),
        admin_key=ADMIN_KEY_REF,
        bind_address="0.0.0.0",
    )
    assert container["args"] == expected


def test_server_args_follow_the_values(settings: Settings) -> None:
    """Changed values reach the args the same way changed settings reach build_server_args."""
    docs = render(None, "server.httpPort=9000", "server.logVerbose=2", "server.models={a,b}")
    changed = settings.server.model_copy(update={"http_port": 9000, "log_verbose": 2})
    expected = build_server_args(
        changed,
        "/models",
        admin_key=ADMIN_KEY_REF,
        bind_address="0.0.0.0",
        models_to_load=("a", "b"),
    )
    assert server_container(docs)["args"] == expected


def test_admin_key_comes_from_a_secret() -> None:
    docs = render()
    env = {e["name"]: e for e in server_container(docs)["env"]}
    ref = env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    secret = find(docs, "Secret")
    assert ref["name"] == secret["metadata"]["name"]
    assert len(secret["data"][ref["key"]]) >= 40  # base64 of a 40-character random key

    s3 = render(CHART / "examples" / "s3.yaml")
    assert not [d for d in s3 if d["kind"] == "Secret"], "existingSecret must not be rendered"
    env = {e["name"]: e for e in server_container(s3)["env"]}
    assert env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "recsys-triton-admin",
        "key": "admin-key",
    }


# --- the pod ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=VALUE_SET_IDS)
def test_pod_is_hardened(values_file: Path | None) -> None:
    values = chart_values(values_file)
    deployment = find(render(values_file), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert sc["runAsNonRoot"] is True, container["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert {"requests", "limits"} <= set(container["resources"]), container["name"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in server_container([deployment])["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {
        "medium": "Memory",
        "sizeLimit": values["shm"]["sizeLimit"],
    }
    for writable in ("/tmp", "/home/recsys"):
        assert "emptyDir" in volumes[mounts[writable]], writable
    env = {e["name"]: e.get("value") for e in server_container([deployment])["env"]}
    assert env["HOME"] == "/home/recsys"

    rolling = deployment["spec"]["strategy"]
    assert rolling["type"] == "RollingUpdate"
    assert rolling["rollingUpdate"]["maxUnavailable"] == 0


def test_probes() -> None:
    container = server_container(render())
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # Readiness follows the ensemble clients call (test_readiness_probe_* run it for real).
    assert container["readinessProbe"]["httpGet"] == {
        "path": f"/v2/models/{ENSEMBLE_NAME}/ready",
        "port": "http",
    }
    other = server_container(render(None, "probes.readiness.model=other_ensemble"))
    assert other["readinessProbe"]["httpGet"]["path"] == "/v2/models/other_ensemble/ready"
    assert container["livenessProbe"]["exec"]["command"] == [
        "python3", "/etc/recsys-probes/liveness_probe.py", "--port", "8000"]  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["probes"] == "/etc/recsys-probes"
    startup = container["startupProbe"]
    # Loading six models, the ensemble last, takes time: allow at least five minutes.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_service_ports(settings: Settings) -> None:
    ports = {p["name"]: p for p in find(render(), "Service")["spec"]["ports"]}
    assert ports["http"]["port"] == settings.server.http_port
    assert ports["grpc"]["port"] == settings.server.grpc_port
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert ports["metrics"]["port"] == settings.server.metrics_port
    container_ports = {p["name"]: p["containerPort"] for p in server_container(render())["ports"]}
    assert container_ports == {
        "http": settings.server.http_port,
        "grpc": settings.server.grpc_port,
        "metrics": settings.server.metrics_port,
    }


def test_gpu_example_requests_a_gpu_by_digest() -> None:
    docs = render(CHART / "examples" / "gpu.yaml")
    deployment = find(docs, "Deployment")
    container = server_container(docs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert (
        deployment["spec"]["template"]["metadata"]["annotations"]["recsys.io/instance-kind"]
        == "KIND_GPU"
    )
    assert "@sha256:" in container["image"]
    assert "checkov.io/skip1" not in deployment["metadata"]["annotations"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    cpu_container = server_container(render())
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    cpu_env = {e["name"]: e.get("value") for e in cpu_container["env"]}
    assert cpu_env["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_s3_source_reads_the_uri_with_secret_credentials() -> None:
    docs = render(CHART / "examples" / "s3.yaml")
    container = server_container(docs)
    assert (
        container["args"][0] == "--model-repository=s3://recsys-models/recommender/model_repository"
    )
    assert container["envFrom"] == [{"secretRef": {"name": "recsys-s3"}}]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert "model-repository" not in {v["name"] for v in pod["volumes"]}
    policy = find(docs, "NetworkPolicy", "triton")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert 443 in egress_ports


def test_gcs_source_mounts_the_key_file() -> None:
    docs = render(
        None,
        "modelRepository.source=uri",
        "modelRepository.uri.location=gs://recsys-models/model_repository",
        "modelRepository.uri.credentialsSecret=recsys-gcs",
        "modelRepository.uri.gcsCredentialsKey=key.json",
    )
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    container = server_container(docs)
    env = {e["name"]: e.get("value") for e in container["env"]}
    key_path = env["GOOGLE_APPLICATION_CREDENTIALS"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert key_path == f"{mounts['gcs-credentials']['mountPath']}/key.json"
    assert mounts["gcs-credentials"]["readOnly"] is True
    assert "envFrom" not in container
    volumes = {
        v["name"]: v for v in find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["gcs-credentials"]["secret"]["secretName"] == "recsys-gcs"


def test_archive_version_is_rolled_out_by_a_value() -> None:
    example = CHART / "examples" / "archive.yaml"
    v1 = find(render(example), "Deployment")["spec"]["template"]
    v2 = find(render(example, "modelRepository.archive.version=v2"), "Deployment")["spec"][
        "template"
    ]
    (init,) = v1["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["ARCHIVE_URL"] == "https://models.example.com/recsys/model_repository-v1.tar.gz"
    assert env["TARGET_DIR"] == "/models"
    env2 = {e["name"]: e["value"] for e in v2["spec"]["initContainers"][0]["env"]}
    assert env2["ARCHIVE_URL"].endswith("model_repository-v2.tar.gz")
    # A new pod template means a rolling update now, and `helm rollback` restores v1 later.
    assert v1["metadata"]["annotations"]["recsys.io/model-version"] == "v1"
    assert v2["metadata"]["annotations"]["recsys.io/model-version"] == "v2"


# --- autoscaling and monitoring -----------------------------------------------------------


def test_hpa_scales_on_the_adapter_queue_time_metric() -> None:
    docs = render(CHART / "examples" / "autoscaling.yaml")
    assert "replicas" not in find(docs, "Deployment")["spec"], "the HPA owns the replica count"
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    queue_metric = metrics["Pods"]["pods"]["metric"]["name"]

    rule_map = find(docs, "ConfigMap", "prometheus-adapter-rule")
    (rule,) = yaml.safe_load(rule_map["data"]["rules.yaml"])
    assert rule["name"]["as"] == queue_metric
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]
    assert "nv_inference_request_success" in rule["metricsQuery"]
    assert f'model="{ENSEMBLE_NAME}"' in rule["seriesQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_service_monitor_scrapes_the_metrics_port() -> None:
    docs = render(CHART / "examples" / "autoscaling.yaml")
    monitor = find(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = find(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


def _dashboard() -> dict[str, Any]:
    dashboard_map = find(render(), "ConfigMap", "dashboard")
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard: dict[str, Any] = json.loads(dashboard_map["data"]["recsys-triton.json"])
    return dashboard


def _dashboard_sections(dashboard: dict[str, Any]) -> dict[str, list[Manifest]]:
    """Panels by row title ("" for the panels above the first row)."""
    sections: dict[str, list[Manifest]] = {"": []}
    current = ""
    for panel in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            current = panel["title"]
            sections[current] = []
        else:
            sections[current].append(panel)
    return sections


def test_grafana_dashboard() -> None:
    dashboard = _dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    triton = _dashboard_sections(dashboard)[""]
    titles = " | ".join(p["title"].lower() for p in triton)
    for topic in ("request rate", "failures", "p99", "average request latency", "queue", "compute"):
        assert topic in titles, topic
    exprs = [t["expr"] for p in triton for t in p["targets"]]
    assert all("nv_inference_" in e for e in exprs)
    assert any("nv_inference_queue_duration_us" in e for e in exprs)
    assert any("nv_inference_compute_infer_duration_us" in e for e in exprs)


def test_grafana_dashboard_model_quality_row() -> None:
    quality = _dashboard_sections(_dashboard())["Model quality"]
    by_title = {p["title"].lower(): p for p in quality}
    expected = {
        "oov rate": "recsys_oov_total",
        "missing-value rate": "recsys_missing_total",
        "served-score distribution": "recsys_score_bin_total",
        "short-result rate": "recsys_short_results_total",
        "popularity deciles": "recsys_served_items_total",
        "unseen categorical values": "recsys_feature_bin_total",
        "p99": 'nv_inference_request_summary_us{namespace="$namespace", pod=~"$pod", '
        'model="recommender", quantile="0.99"}',
    }
    for topic, metric in expected.items():
        (panel,) = (p for t, p in by_title.items() if topic in t)
        assert any(metric in t["expr"] for t in panel["targets"]), (topic, panel["targets"])
    for panel in quality:
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"] and 'pod=~"$pod"' in target["expr"]
    # Distributions are shares of their own total, stacked to 100%.
    for topic in ("served-score distribution", "popularity deciles"):
        (panel,) = (p for t, p in by_title.items() if topic in t)
        assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
        assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"


# --- alert rules (PrometheusRule) -----------------------------------------------------------

ALERTS = {
    "RecsysHighErrorRate",
    "RecsysHighP99Latency",
    "RecsysHighQueueTime",
    "RecsysHighOOVRate",
    "RecsysScoreDrift",
    "RecsysFeatureDrift",
}


def alert_rules(docs: list[Manifest]) -> dict[str, Manifest]:
    rule = find(docs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    assert len({g["name"] for g in groups}) == len(groups), "group names must be unique"
    alerts = [r for g in groups for r in g["rules"]]
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names)), names
    return {r["alert"]: r for r in alerts}


def test_prometheus_rule_renders_only_when_enabled() -> None:
    assert not [d for d in render() if d["kind"] == "PrometheusRule"]
    assert set(alert_rules(render(None, "metrics.prometheusRule.enabled=true"))) == ALERTS
    rule = find(render(CHART / "examples" / "autoscaling.yaml"), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_every_alert_says_what_to_do() -> None:
    for name, alert in alert_rules(render(CHART / "examples" / "autoscaling.yaml")).items():
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert alert["for"], name
        annotations = alert["annotations"]
        assert set(annotations) >= {"summary", "description"}, name
        assert annotations["summary"].strip() and "\n" not in annotations["summary"], name
        assert len(annotations["description"]) > 150, name
    drift = alert_rules(render(CHART / "examples" / "autoscaling.yaml"))
    for name in ("RecsysScoreDrift", "RecsysFeatureDrift"):
        description = drift[name]["annotations"]["description"]
        assert "python -m monitoring.drift --profile" in description, name
        assert "--metrics-url" in description, name


def test_alerts_select_what_the_service_monitor_scrapes() -> None:
    docs = render(CHART / "examples" / "autoscaling.yaml")
    service = find(docs, "Service")["metadata"]["name"]
    selector = f'job="{service}",namespace="{NAMESPACE}"'
    for name, alert in alert_rules(docs).items():
        selectors = alert["expr"].count("{")
        assert alert["expr"].count(selector) == selectors, (name, alert["expr"])
    custom = alert_rules(
        render(None, "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.job=triton")
    )
    assert all('job="triton",' in a["expr"] for a in custom.values())


def test_alert_expressions(tmp_path: Path) -> None:
    alerts = alert_rules(render(CHART / "examples" / "autoscaling.yaml"))
    ensemble = f'model="{ENSEMBLE_NAME}"'
    error = alerts["RecsysHighErrorRate"]["expr"]
    assert "nv_inference_request_failure{" in error and "nv_inference_request_success{" in error
    assert error.count(ensemble) == 3 and "[5m]" in error
    p99 = alerts["RecsysHighP99Latency"]["expr"]
    assert "nv_inference_request_summary_us{" in p99 and 'quantile="0.99"' in p99
    assert ensemble in p99 and "by (namespace, job, pod)" in p99
    queue = alerts["RecsysHighQueueTime"]["expr"]
    assert "rate(nv_inference_queue_duration_us{" in queue
    assert "rate(nv_inference_request_success{" in queue and queue.count(ensemble) == 2
    oov = alerts["RecsysHighOOVRate"]["expr"]
    assert "recsys_oov_total{" in oov and 'feature="user_id"}[15m]' in oov
    assert "recsys_requests_total{" in oov and 'model="user_features"}[15m]' in oov
    score = alerts["RecsysScoreDrift"]["expr"]
    assert score.count("recsys_score_bin_total{") == 2 and 'bin!="__missing__"' in score
    # The low-bin matcher takes exactly the bins below 0.5 (PromQL regexes are anchored; the
    # PromQL string unescapes `\\` to `\`).
    (low,) = re.findall(r'bin=~"([^"]+)"', score)
    low = low.replace("\\\\", "\\")
    bins = [f"[{i / 10:.1f},{(i + 1) / 10:.1f})" for i in range(10)] + ["__missing__"]
    assert [b for b in bins if re.fullmatch(low, b)] == bins[:5]
    feature = alerts["RecsysFeatureDrift"]["expr"]
    # By default every feature the model set monitors (its schema decides), none named here.
    assert 'model="user_features",bin="__other__"' in feature and "feature=~" not in feature
    assert "by (namespace, job, version, feature)" in feature
    no_feature_drift = tmp_path / "no-feature-drift.yaml"
    no_feature_drift.write_text(
        yaml.safe_dump(
            {"metrics": {"prometheusRule": {"enabled": True, "featureDrift": {"enabled": False}}}}
        )
    )
    assert set(alert_rules(render(no_feature_drift))) == ALERTS - {"RecsysFeatureDrift"}


def test_alert_thresholds_and_durations_follow_the_values(tmp_path: Path) -> None:
    # A values file: `--set` would pass 0.037 as a string, which the schema rejects.
    rule = {
        "enabled": True,
        "model": "recsys_ensemble",
        "errorRate": {"threshold": 0.037, "for": "7m", "severity": "warning"},
        "p99Latency": {"thresholdMicroseconds": 45678, "for": "11m"},
        "queueTime": {"thresholdMicroseconds": 3456, "for": "13m"},
        "oovRate": {"threshold": 0.42, "for": "17m"},
        "scoreDrift": {"threshold": 0.19, "for": "2h"},
        "featureDrift": {"threshold": 0.07, "for": "90m", "features": ["device", "country"]},
    }
    values_file = tmp_path / "thresholds.yaml"
    values_file.write_text(yaml.safe_dump({"metrics": {"prometheusRule": rule}}))
    alerts = alert_rules(render(values_file))
    expected = {
        "RecsysHighErrorRate": ("0.037", "7m"),
        "RecsysHighP99Latency": ("45678", "11m"),
        "RecsysHighQueueTime": ("3456", "13m"),
        "RecsysHighOOVRate": ("0.42", "17m"),
        "RecsysScoreDrift": ("0.19", "2h"),
        "RecsysFeatureDrift": ("0.07", "90m"),
    }
    for name, (threshold, duration) in expected.items():
        alert = alerts[name]
        assert alert["expr"].rstrip().endswith(f"> {threshold}"), (name, alert["expr"])
        assert alert["for"] == duration, name
    assert alerts["RecsysHighErrorRate"]["labels"]["severity"] == "warning"
    assert 'model="recsys_ensemble"' in alerts["RecsysHighQueueTime"]["expr"]
    assert 'feature=~"device|country"' in alerts["RecsysFeatureDrift"]["expr"]
    assert "3.7%" in alerts["RecsysHighErrorRate"]["annotations"]["description"]
    assert "42%" in alerts["RecsysHighOOVRate"]["annotations"]["description"]


# promtool: the Debian `prometheus` package ships it; PyPI has no package that does.
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not on the PATH (apt-get install prometheus)"
)


def _promtool(*args: str, cwd: Path) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _series(metric: str, values: str, **labels: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


@needs_promtool
def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    """promtool checks the rules (PromQL and annotation templates), then a unit test feeds
    synthetic series and checks which alerts fire, with which labels."""
    rule = find(render(CHART / "examples" / "autoscaling.yaml"), "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    _promtool("check", "rules", "rules.yaml", cwd=tmp_path)

    # The unit test compares annotations too: leave them out (checked above).
    bare = copy.deepcopy(rule["spec"])
    for group in bare["groups"]:
        for alert in group["rules"]:
            del alert["annotations"]
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))

    job = {"job": f"{RELEASE}-recsys-triton", "namespace": NAMESPACE}
    other_job = {"job": "other", "namespace": NAMESPACE}
    ens = {**job, "model": ENSEMBLE_NAME, "version": "1", "pod": "a"}
    pod_b = {**ens, "pod": "b"}
    uf1 = {**job, "model": "user_features", "version": "1"}
    uf2 = {**job, "model": "user_features", "version": "2"}
    ro1 = {**job, "model": "reorder", "version": "1"}
    ro2 = {**job, "model": "reorder", "version": "2"}
    series = [
        # ensemble: 5 failures per 100 successes a minute (4.8% > 1%), 20 ms queue per request
        _series("nv_inference_request_success", "0+100x150", **ens),
        _series("nv_inference_request_failure", "0+5x150", **ens, reason="BACKEND"),
        _series("nv_inference_queue_duration_us", "0+2000000x150", **ens),
        # another job failing everything: out of the alerts' selectors
        _series("nv_inference_request_success", "0+1x150", **{**ens, **other_job}),
        _series("nv_inference_request_failure", "0+100x150", **{**ens, **other_job}),
        # p99 70 ms on pod a, 50 ms on pod b; other quantiles do not count
        _series("nv_inference_request_summary_us", "70000x150", **ens, quantile="0.99"),
        _series("nv_inference_request_summary_us", "50000x150", **pod_b, quantile="0.99"),
        _series("nv_inference_request_summary_us", "90000x150", **pod_b, quantile="0.5"),
        # user_id OOV: 40% in version 1, 10% in version 2; device OOV does not count
        _series("recsys_requests_total", "0+100x150", **uf1),
        _series("recsys_oov_total", "0+40x150", **uf1, feature="user_id"),
        _series("recsys_oov_total", "0+90x150", **uf1, feature="device"),
        _series("recsys_requests_total", "0+100x150", **uf2),
        _series("recsys_oov_total", "0+10x150", **uf2, feature="user_id"),
        # scores: version 1 has 40% below 0.5 (__missing__ left out), version 2 has 10%
        _series("recsys_score_bin_total", "0+20x150", **ro1, bin="[0.0,0.1)"),
        _series("recsys_score_bin_total", "0+20x150", **ro1, bin="[0.4,0.5)"),
        _series("recsys_score_bin_total", "0+30x150", **ro1, bin="[0.5,0.6)"),
        _series("recsys_score_bin_total", "0+30x150", **ro1, bin="[0.9,1.0)"),
        _series("recsys_score_bin_total", "0+500x150", **ro1, bin="__missing__"),
        _series("recsys_score_bin_total", "0+10x150", **ro2, bin="[0.4,0.5)"),
        _series("recsys_score_bin_total", "0+90x150", **ro2, bin="[0.5,0.6)"),
        # unseen devices: 20% in version 1, unseen countries 50%: every monitored feature is
        # watched by default (the model set's schema says which are counted); age 5%: quiet
        _series("recsys_feature_bin_total", "0+20x150", **uf1, feature="device", bin="__other__"),
        _series("recsys_feature_bin_total", "0+80x150", **uf1, feature="device", bin="mobile"),
        _series("recsys_feature_bin_total", "0+50x150", **uf1, feature="country", bin="__other__"),
        _series("recsys_feature_bin_total", "0+50x150", **uf1, feature="country", bin="US"),
        _series("recsys_feature_bin_total", "0+5x150", **uf1, feature="age", bin="__other__"),
        _series("recsys_feature_bin_total", "0+95x150", **uf1, feature="age", bin="q1"),
    ]
    warning = {"severity": "warning"}
    fired = {
        "RecsysHighErrorRate": (15, [{"severity": "critical", **job}]),
        "RecsysHighP99Latency": (15, [{**warning, **job, "pod": "a"}]),
        "RecsysHighQueueTime": (15, [{**warning, **job}]),
        "RecsysHighOOVRate": (50, [{**warning, **job, "version": "1"}]),
        "RecsysScoreDrift": (130, [{**warning, **job, "version": "1"}]),
        "RecsysFeatureDrift": (
            130,
            [
                {**warning, **job, "version": "1", "feature": "country"},
                {**warning, **job, "version": "1", "feature": "device"},
            ],
        ),
    }
    cases = []
    for name, (minutes, labels) in fired.items():
        cases.append({"eval_time": "3m", "alertname": name, "exp_alerts": []})  # `for:` pending
        cases.append(
            {
                "eval_time": f"{minutes}m",
                "alertname": name,
                "exp_alerts": [{"exp_labels": lbl} for lbl in labels],
            }
        )
    unit = {
        "rule_files": ["bare.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(unit, sort_keys=False))
    _promtool("test", "rules", "test.yaml", cwd=tmp_path)


@needs_promtool
def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, is a valid PromQL expression."""
    variables = {"$namespace": NAMESPACE, "$pod": ".*", "$model": ".*", "$__rate_interval": "1m"}
    rules = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, expr
            rules.append(
                {"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr}
            )
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    _promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)


# --- values.schema.json -----------------------------------------------------------------


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "port-as-string": ({"server": {"httpPort": "8000"}}, "server.httpPort"),
    "port-out-of-range": ({"server": {"grpcPort": 70000}}, "server.grpcPort"),
    "unknown-server-key": ({"server": {"httpPortt": 8000}}, "httpPortt"),
    "unknown-top-level-key": ({"replicas": 3}, "replicas"),
    "bad-control-mode": ({"server": {"modelControlMode": "lazy"}}, "server.modelControlMode"),
    "bad-source": ({"modelRepository": {"source": "ftp"}}, "modelRepository.source"),
    "uri-without-location": ({"modelRepository": {"source": "uri"}}, "modelRepository.uri"),
    "bad-uri-scheme": (
        {"modelRepository": {"source": "uri", "uri": {"location": "ftp://x/y"}}},
        "modelRepository.uri.location",
    ),
    "archive-without-version-placeholder": (
        {
            "modelRepository": {
                "source": "archive",
                "archive": {"version": "v1", "urlTemplate": "https://x/a.tgz"},
            }
        },
        "modelRepository.archive.urlTemplate",
    ),
    "bad-instance-kind": ({"instanceKind": "KIND_TPU"}, "instanceKind"),
    "bool-as-string": ({"server": {"strictReadiness": "yes"}}, "server.strictReadiness"),
    "bad-quantity": ({"shm": {"sizeLimit": "lots"}}, "shm.sizeLimit"),
    "bad-pull-policy": ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
    "root-user": ({"podSecurityContext": {"runAsUser": 0}}, "podSecurityContext.runAsUser"),
    "unknown-resource": ({"resources": {"limits": {"gpu": 1}}}, "resources.limits"),
    "bad-toleration-operator": (
        {"tolerations": [{"key": "k", "operator": "Maybe"}]},
        "tolerations.0.operator",
    ),
    "cpu-target-above-100": (
        {"autoscaling": {"targetCPUUtilizationPercentage": 150}},
        "autoscaling.targetCPUUtilizationPercentage",
    ),
    "shm-below-minimum": (
        {"server": {"pythonShmDefaultByteSize": 1024}},
        "server.pythonShmDefaultByteSize",
    ),
    "alert-threshold-as-string": (
        {"metrics": {"prometheusRule": {"errorRate": {"threshold": "1%"}}}},
        "metrics.prometheusRule.errorRate.threshold",
    ),
    "alert-share-above-1": (
        {"metrics": {"prometheusRule": {"oovRate": {"threshold": 30}}}},
        "metrics.prometheusRule.oovRate.threshold",
    ),
    "alert-latency-as-float": (
        {"metrics": {"prometheusRule": {"p99Latency": {"thresholdMicroseconds": 60.5}}}},
        "metrics.prometheusRule.p99Latency.thresholdMicroseconds",
    ),
    "alert-bad-duration": (
        {"metrics": {"prometheusRule": {"scoreDrift": {"for": "1 hour"}}}},
        "metrics.prometheusRule.scoreDrift.for",
    ),
    "alert-bad-severity": (
        {"metrics": {"prometheusRule": {"queueTime": {"severity": "page"}}}},
        "metrics.prometheusRule.queueTime.severity",
    ),
    "alert-unknown-key": (
        {"metrics": {"prometheusRule": {"errorRate": {"treshold": 0.1}}}},
        "treshold",
    ),
    "alert-feature-regex": (
        {"metrics": {"prometheusRule": {"featureDrift": {"features": ["device|.*"]}}}},
        "metrics.prometheusRule.featureDrift.features.0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case: str, tmp_path: Path) -> None:
    values, field = BAD_VALUES[case]
    values_file = tmp_path / f"{case}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = run_helm(*_template_args(values_file, ()))
    assert result.returncode != 0, f"{case} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"),
            "autoscaling.maxReplicas must be >= autoscaling.minReplicas",
        ),
        (("server.grpcPort=8000",), "must differ"),
    ],
)
def test_cross_field_checks(sets: tuple[str, ...], message: str) -> None:
    result = run_helm(*_template_args(None, sets))
    assert result.returncode != 0
    assert message in result.stderr


def _schema_objects(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _schema_objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schema_objects(value, f"{path}[{index}]")


def test_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, node in _schema_objects(schema):
        if {"if", "then"} & set(path.split(".")):
            continue  # conditional refinements of objects that are closed where defined
        closed = node.get("additionalProperties")
        if "properties" in node:
            assert closed is False, f"{path} must set additionalProperties: false"
        else:  # a free-form map: its values must still be typed
            assert closed == {"type": "string"}, f"{path} is an untyped object"


def test_schema_describes_and_requires_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        # Every chart-specific object requires all its keys, so values.yaml documents them all.
        assert set(node.get("required", [])) == set(values), f"{path}: required != values.yaml"
        for key, value in values.items():
            child = node["properties"][key]
            assert child.get("description"), f"{path}.{key} has no description"
            # Shared Kubernetes shapes ($ref: resources, quantities) have optional fields.
            if isinstance(value, dict) and "properties" in child and "$ref" not in child:
                walk(value, child, f"{path}.{key}")

    walk(chart_values(), schema, "values")


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = [p for p in leaf_paths(chart_values(), schema) if f"`{p}`" not in readme]
    assert not missing, f"README.md values table misses: {missing}"


# --- checkov ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckovReport:
    summary: dict[str, Any]
    failed: list[str]  # "CKV_ID name (file resource)"
    skipped: list[tuple[str, str, str]]  # (check id, reason, resource)


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory: pytest.TempPathFactory) -> CheckovReport:
    """One checkov run over the manifests of the defaults and every example."""
    _require(CHECKOV)
    out = tmp_path_factory.mktemp("rendered")
    for values_file, name in zip(VALUE_SETS, VALUE_SET_IDS, strict=True):
        (out / f"{name}.yaml").write_text(_render_text(values_file, ()))
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(out), "--framework", "kubernetes",
         "--output", "json", "--skip-download", "--compact"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.stdout.strip(), f"checkov printed nothing:\n{result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    assert isinstance(report, dict) and report.get("check_type") == "kubernetes", str(report)[:500]
    results = report["results"]
    return CheckovReport(
        summary=report["summary"],
        failed=[
            f"{c['check_id']} {c['check_name']} ({c['file_path']} {c['resource']})"
            for c in results["failed_checks"]
        ],
        skipped=[
            (c["check_id"], c["check_result"].get("suppress_comment", ""), c["resource"])
            for c in results.get("skipped_checks", [])
        ],
    )


def test_checkov_finds_no_failed_checks(checkov_report: CheckovReport) -> None:
    assert checkov_report.summary["resource_count"] >= len(VALUE_SETS) * 8
    assert checkov_report.summary["parsing_errors"] == 0
    assert not checkov_report.failed, "checkov failed:\n" + "\n".join(checkov_report.failed)


def test_checkov_skips_are_justified(checkov_report: CheckovReport) -> None:
    assert checkov_report.skipped, "expected the documented skips (see ALLOWED_CHECKOV_SKIPS)"
    for check_id, reason, resource in checkov_report.skipped:
        assert check_id in ALLOWED_CHECKOV_SKIPS, f"{check_id} skipped on {resource}"
        assert len(reason) > 30 and reason != "No comment provided", (check_id, resource, reason)


# --- the chart's scripts, run for real -------------------------------------------------------


def _fetch_env(docs: list[Manifest], target: Path) -> tuple[str, dict[str, str]]:
    script = find(docs, "ConfigMap", "-fetch")["data"]["fetch_model_repository.py"]
    (init,) = find(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][-1].endswith("fetch_model_repository.py")
    env = {e["name"]: e["value"] for e in init["env"]}
    env["TARGET_DIR"] = str(target)
    return script, env


def _run_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_archive_fetcher_unpacks_a_verified_archive(local_http: LocalHttp, tmp_path: Path) -> None:
    url, handler = local_http
    archive = _tar_gz(
        {f"model_repository/{m}/config.pbtxt": f'name: "{m}"\n'.encode() for m in MODEL_LOAD_ORDER}
        | {"model_repository/recommender/1/.keep": b""}
    )
    handler.files["/repo-v7.tar.gz"] = archive
    sets = (
        "modelRepository.source=archive",
        "modelRepository.archive.version=v7",
        f"modelRepository.archive.urlTemplate={url}/repo-{{version}}.tar.gz",
        f"modelRepository.archive.sha256={hashlib.sha256(archive).hexdigest()}",
    )
    script, env = _fetch_env(render(None, *sets), tmp_path / "models")

    first = _run_script(script, env)
    assert first.returncode == 0, first.stdout + first.stderr
    models = sorted(p.parent.name for p in (tmp_path / "models").glob("*/config.pbtxt"))
    assert models == sorted(MODEL_LOAD_ORDER)
    again = _run_script(script, env)
    assert again.returncode == 0 and "already" in again.stdout

    shutil.rmtree(tmp_path / "models")
    tampered = _run_script(script, {**env, "ARCHIVE_SHA256": "0" * 64})
    assert tampered.returncode != 0 and "sha256 mismatch" in tampered.stdout


def test_archive_fetcher_refuses_escaping_paths(local_http: LocalHttp, tmp_path: Path) -> None:
    url, handler = local_http
    handler.files["/evil.tar.gz"] = _tar_gz({"../escaped/config.pbtxt": b"x"})
    sets = (
        "modelRepository.source=archive",
        "modelRepository.archive.version=evil",
        f"modelRepository.archive.urlTemplate={url}/{{version}}.tar.gz",
    )
    script, env = _fetch_env(render(None, *sets), tmp_path / "models")
    result = _run_script(script, env)
    assert result.returncode != 0
    assert "outside the target" in result.stderr
    assert not (tmp_path / "escaped").exists()


def _test_pod(docs: list[Manifest]) -> tuple[str, dict[str, str]]:
    pod = find(docs, "Pod", "test-inference")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"][:2] == ["python3", "-c"]
    return container["command"][2], {e["name"]: e["value"] for e in container["env"]}


def test_helm_test_pod_sends_one_recommendation_request(local_http: LocalHttp) -> None:
    url, handler = local_http
    script, env = _test_pod(render())
    assert env["TRITON_URL"] == f"http://{RELEASE}-recsys-triton.{NAMESPACE}.svc:8000"
    handler.reply = (
        200,
        {
            "model_name": "recommender",
            "outputs": [
                {
                    "name": "item_ids",
                    "datatype": "INT64",
                    "shape": [1, 5],
                    "data": [4, 8, 15, 16, 23],
                },
            ],
        },
    )
    result = _run_script(script, {**env, "TRITON_URL": url})
    assert result.returncode == 0, result.stdout + result.stderr
    ((path, body),) = handler.posts
    assert path == f"/v2/models/{ENSEMBLE_NAME}/infer"
    inputs = {i["name"]: i for i in body["inputs"]}
    assert inputs["user_id"]["datatype"] == "INT64" and inputs["user_id"]["shape"] == [1, 1]
    assert inputs["top_k"]["datatype"] == "INT32" and inputs["top_k"]["shape"] == [1, 1]

    handler.reply = (400, {"error": "unknown model"})
    assert _run_script(script, {**env, "TRITON_URL": url}).returncode != 0


def test_notes_render(tmp_path: Path) -> None:
    """NOTES.txt is only rendered by install; render it through `tpl` in a copy of the chart."""
    chart = tmp_path / "recsys-triton"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
    )
    result = run_helm(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--show-only",
        "templates/zz-notes.yaml",
    )
    assert result.returncode == 0, result.stderr
    notes = yaml.safe_load(result.stdout)["data"]["notes"]
    assert f"rollout status deployment/{RELEASE}-recsys-triton" in notes
    assert f"/v2/models/{ENSEMBLE_NAME}/infer" in notes


# --- the serving image -------------------------------------------------------------------------


def test_dockerfile_matches_the_chart() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    values = chart_values()
    instructions = [line.strip() for line in dockerfile.splitlines() if line.strip()]
    # An NGC Triton base, overridable with --build-arg TRITON_IMAGE=...
    assert "ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:" in dockerfile
    assert "FROM ${TRITON_IMAGE}" in instructions
    identity = values["podSecurityContext"]
    assert f"USER {identity['runAsUser']}" in instructions
    assert f"--uid {identity['runAsUser']} --gid {identity['runAsGroup']}" in dockerfile
    assert f"--model-repository={values['modelRepository']['mountPath']}" in dockerfile
    assert '"tritonserver"' in dockerfile
    deployment = find(render(), "Deployment")
    env = {e["name"]: e.get("value") for e in server_container([deployment])["env"]}
    assert f"HOME={env['HOME']}" in dockerfile
    assert "requirements.lock" in dockerfile


# --- the rendered readiness probe against a real tritonserver -----------------------------


def rendered_http_probe(probe: str) -> tuple[str, int]:
    """(path, container port) of the chart's rendered httpGet `probe` with the defaults."""
    container = server_container(render())
    get = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = ports[get["port"]] if isinstance(get["port"], str) else int(get["port"])
    return get["path"], port


def probe_status(server: Any, path: str) -> int:
    """What the kubelet sees: the HTTP status of GET `path` (0 if nothing answered)."""
    url = f"http://{server.http_url}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class ProbePoller:
    """Polls the rendered readiness path and /v2/health/ready every 0.1 s in a thread."""

    def __init__(self, server: Any, path: str) -> None:
        self.server, self.path = server, path
        self.seen: dict[str, list[int]] = {path: [], "/v2/health/ready": []}
        self._stop = threading.Event()
        self._thread = CheckedThread(self._run, name="readiness-poller")

    def _run(self) -> None:
        while not self._stop.is_set():
            for path, statuses in self.seen.items():
                statuses.append(probe_status(self.server, path))
            time.sleep(0.1)

    def __enter__(self) -> ProbePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def probe_server(
    trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonServer, TritonAdmin, Path]]:
    """A server of this module's own on a copy of the session's repository (promotions
    change what it serves), and its model-repository admin client."""
    repo = tmp_path_factory.mktemp("probe") / "model_repository"
    shutil.copytree(trained.repository, repo)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server_settings = trained.settings.server.model_copy(update=ports)
    log = repo.parent / "tritonserver.log"
    with TritonServer(repo, server_settings, log) as running:
        header = server_settings.restricted_api_header
        yield running, TritonAdmin(running.grpc_url, running.admin_key, header), repo


@pytest.mark.server
def test_readiness_probe_stays_ready_through_a_promotion(
    probe_server: tuple[TritonServer, TritonAdmin, Path], trained: TrainedSet
) -> None:
    """The kubelet's view while `make promote` loads a new version in place: the rendered
    probe answers 200 throughout, so the pod stays in the Service. /v2/health/ready (the
    chart's old probe) goes unready meanwhile: the test would fail with it."""
    server, admin, repo = probe_server
    path, _ = rendered_http_probe("readinessProbe")
    assert probe_status(server, path) == 200
    version = versions.publish(trained.artifacts, repo, trained.settings, log=lambda _: None)
    with ProbePoller(server, path) as poller:
        versions.promote(repo, version, admin, trained.settings.serving, log=lambda _: None)
        time.sleep(0.5)
    assert versions.serving_version(repo) == version
    ours, server_wide = poller.seen[path], poller.seen["/v2/health/ready"]
    assert len(ours) > 20, "the promotion was too short to observe"
    assert set(ours) == {200}, f"the readiness probe failed during the promotion: {ours}"
    assert set(server_wide) - {200}, "expected /v2/health/ready to flip while loading"


@pytest.mark.server
def test_readiness_probe_stays_ready_after_a_failed_candidate_load(
    probe_server: tuple[TritonServer, TritonAdmin, Path], trained: TrainedSet
) -> None:
    server, admin, repo = probe_server
    path, _ = rendered_http_probe("readinessProbe")
    quiet = lambda _: None  # noqa: E731
    serving_before = versions.serving_version(repo)
    broken = versions.publish(trained.artifacts, repo, trained.settings, log=lambda _: None)
    model_py = repo / "reorder" / str(broken) / "model.py"
    head, future, rest = model_py.read_text().partition("from __future__ import annotations\n")
    model_py.write_text(head + future + "raise RuntimeError('bad build')\n" + rest)
    shutil.rmtree(model_py.parent / "__pycache__", ignore_errors=True)
    versions.write_manifest(repo, broken, trained.artifacts, trained.settings)
    with ProbePoller(server, path) as poller:
        with pytest.raises(VersionError, match="bad build"):
            versions.promote(repo, broken, admin, trained.settings.serving, None, log=quiet)
        time.sleep(0.5)
    assert versions.serving_version(repo) == serving_before
    assert set(poller.seen[path]) == {200}, poller.seen[path]
    assert probe_status(server, path) == 200
    # The chart's old probe: the server stays unready after a failed load (every model
    # that serves is ready), which would have taken the pod out of the Service.
    assert set(poller.seen["/v2/health/ready"]) - {200}
    assert probe_status(server, "/v2/health/ready") != 200


@pytest.mark.server
def test_readiness_probe_fails_when_the_ensemble_cannot_serve(
    probe_server: tuple[TritonServer, TritonAdmin, Path],
) -> None:
    """With the ensemble unloaded no request can be answered: the pod must leave the
    Service. Loaded again, it is ready again."""
    server, admin, _ = probe_server
    path, _ = rendered_http_probe("readinessProbe")
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        client.unload_model(ENSEMBLE_NAME, headers=admin.headers)
        deadline = time.monotonic() + 60
        while probe_status(server, path) == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert probe_status(server, path) not in (0, 200)
        client.load_model(ENSEMBLE_NAME, headers=admin.headers)
    assert probe_status(server, path) == 200
