"""Offline checks of the Kubernetes manifests in k8s/ (no cluster here).

1. Every YAML document under k8s/ and every kustomize rendering validates: CRD kinds against the strict
   schemas in shared/k8s/schemas, core kinds with kubernetes-validate (strict). A kind with no schema fails.
2. The admission rules a schema cannot express (Seldon traffic, shadows, routers, hpaSpec form; KServe canary
   percent, replica bounds, runtime priorities, runtime references; InferenceGraph weights; Knative
   autoscaling annotations).
3. Every container's command line is accepted by that image's entrypoint (``--dry_run``).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
SHARED = Path(os.environ.get("FERRY_SHARED_DIR") or (REPO / "../shared")).resolve()
SCHEMAS = SHARED / "k8s" / "schemas"
KUBERNETES_VERSION = "1.30.0"
KUSTOMIZATIONS = [".", "overlays/cpu", "overlays/gpu", "overlays/autoselect"]

# KServe's own ClusterServingRuntimes (config/runtimes, KServe 0.12-0.20): the auto-selected formats and their
# priorities, so Ferry's runtimes are checked against what a cluster already has.
KSERVE_BUILTIN_AUTOSELECT = {
    "kserve-tritonserver": [
        ("tensorrt", "8", 1),
        ("tensorflow", "1", 1),
        ("tensorflow", "2", 1),
        ("onnx", "1", 1),
        ("triton", "2", 1),
    ],
    "kserve-torchserve": [("pytorch", "1", 2)],
    "kserve-mlserver": [
        ("sklearn", "0", 3),
        ("sklearn", "1", 3),
        ("xgboost", "1", 3),
        ("xgboost", "2", 3),
        ("lightgbm", "3", 3),
        ("lightgbm", "4", 3),
        ("mlflow", "1", 1),
        ("mlflow", "2", 1),
    ],
    "kserve-sklearnserver": [("sklearn", "1", 2)],
    "kserve-xgbserver": [("xgboost", "2", 2)],
    "kserve-lgbserver": [("lightgbm", "4", 2)],
    "kserve-predictiveserver": [("sklearn", "1", 1), ("xgboost", "2", 1), ("lightgbm", "4", 1)],
    "kserve-tensorflow-serving": [("tensorflow", "1", 2), ("tensorflow", "2", 2)],
    "kserve-huggingfaceserver": [("huggingface", "1", 1)],
}
# Seldon Core 1: built-in routers/combiners in the orchestrator and the prepackaged servers of seldon-config.
SELDON_IMPLEMENTATIONS = {
    "UNKNOWN_IMPLEMENTATION",
    "SIMPLE_MODEL",
    "SIMPLE_ROUTER",
    "RANDOM_ABTEST",
    "AVERAGE_COMBINER",
    "SKLEARN_SERVER",
    "XGBOOST_SERVER",
    "TENSORFLOW_SERVER",
    "MLFLOW_SERVER",
    "TRITON_SERVER",
    "HUGGINGFACE_SERVER",
    "TEMPO_SERVER",
}
SELDON_ROUTERS = {"RANDOM_ABTEST", "SIMPLE_ROUTER"}
SELDON_TYPES = {"MODEL", "ROUTER", "COMBINER", "TRANSFORMER", "OUTPUT_TRANSFORMER", "UNKNOWN_TYPE"}


# --------------------------------------------------------------------------------------------- loading
def _is_kustomization(path: Path) -> bool:
    return path.name in {"kustomization.yaml", "kustomization.yml", "Kustomization"}


def source_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.y*ml") if not _is_kustomization(p))


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


@functools.cache
def kustomize_command() -> list[str] | None:
    """The real kustomize: $KUSTOMIZE (a kustomize binary), else `kustomize build`, else `kubectl kustomize`."""
    if os.environ.get("KUSTOMIZE"):
        return [os.environ["KUSTOMIZE"], "build"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize: install kubectl (kubectl kustomize) or set KUSTOMIZE=/path/to/kustomize")
    result = subprocess.run(
        [*command, str(K8S / kustomization)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kustomize {kustomization} failed:\n{result.stderr}"
    return tuple(load_documents(result.stdout))


def everything() -> tuple[dict[str, Any], ...]:
    return render(".")


def doc_id(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


# ------------------------------------------------------------------------------------------ validation
@functools.cache
def _crd_validator(kind: str, version: str) -> jsonschema.protocols.Validator | None:
    path = SCHEMAS / f"{kind.lower()}_{version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Errors against the API server's schema for this kind; no schema at all is an error too."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if not api_version or not kind:
        return ["document has no apiVersion/kind"]
    version = api_version.rpartition("/")[2]
    validator = _crd_validator(kind, version)
    if validator is not None:
        return [
            f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {api_version} {kind}: not in {SCHEMAS} nor Kubernetes {KUBERNETES_VERSION}"]
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return [f"{path or '<root>'}: {exc.message}"]
    return []


# ---------------------------------------------------------------------------------- admission rules
def _replica_bounds(where: str, spec: dict[str, Any] | None) -> list[str]:
    if not spec:
        return []
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if low is not None and high is not None and low > high:
        return [f"{where}: minReplicas {low} > maxReplicas {high}"]
    if high is not None and high < 1:
        return [f"{where}: maxReplicas {high} < 1"]
    return []


def _knative_annotations(where: str, annotations: dict[str, str]) -> list[str]:
    errors = []
    ranges = {
        "autoscaling.knative.dev/target-utilization-percentage": (1, 100),
        "autoscaling.knative.dev/panic-window-percentage": (1, 100),
        "autoscaling.knative.dev/panic-threshold-percentage": (110, 1000),
    }
    for key, (low, high) in ranges.items():
        if key in annotations and not low <= float(annotations[key]) <= high:
            errors.append(f"{where}: {key}={annotations[key]} outside {low}..{high}")
    if (
        "autoscaling.knative.dev/target" in annotations
        and float(annotations["autoscaling.knative.dev/target"]) <= 0
    ):
        errors.append(f"{where}: autoscaling.knative.dev/target must be > 0")
    window = annotations.get("autoscaling.knative.dev/window")
    if window is not None:
        match = re.fullmatch(r"(\d+)(s|m|h)", window)
        seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]] if match else -1
        if not 6 <= seconds <= 3600:
            errors.append(f"{where}: autoscaling.knative.dev/window={window} not a duration in 6s..1h")
    return errors


def _seldon_graph_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("children") or []:
        yield from _seldon_graph_nodes(child)


def _seldon_errors(where: str, spec: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    predictors = spec.get("predictors") or []
    live = [p for p in predictors if not p.get("shadow")]
    for p in predictors:
        if p.get("shadow") and p.get("traffic"):
            errors.append(f"{where}: shadow predictor {p['name']!r} carries traffic {p['traffic']}")
    if not live:
        errors.append(f"{where}: no non-shadow predictor")
    elif len(live) > 1 or any("traffic" in p for p in live):
        total = sum(p.get("traffic", 0) for p in live)
        if total != 100:
            errors.append(f"{where}: traffic over non-shadow predictors sums to {total}, not 100")
    for p in predictors:
        images = {
            c["name"]: c.get("image")
            for cs in p.get("componentSpecs") or []
            for c in ((cs.get("spec") or {}).get("containers") or [])
        }
        for node in _seldon_graph_nodes(p["graph"]):
            impl, kind = node.get("implementation"), node.get("type")
            at = f"{where}: predictor {p['name']!r} node {node['name']!r}"
            if impl is not None and impl not in SELDON_IMPLEMENTATIONS:
                errors.append(f"{at}: implementation {impl!r} is not a documented value")
            if kind is not None and kind not in SELDON_TYPES:
                errors.append(f"{at}: type {kind!r} is not a documented value")
            if kind == "ROUTER" and impl is not None and impl not in SELDON_ROUTERS:
                errors.append(f"{at}: router implementation {impl!r} is not a router")
            if impl in SELDON_ROUTERS and len(node.get("children") or []) < 2:
                errors.append(f"{at}: router {impl} needs at least two children")
            if impl is None and node["name"] not in images:
                errors.append(f"{at}: no implementation and no container named {node['name']!r}")
            if impl is not None and images.get(node["name"]):
                # A prepackaged server with a custom image runs Seldon's server, not the image's entrypoint.
                errors.append(
                    f"{at}: implementation {impl} with custom image {images[node['name']]}; drop one"
                )
            if impl == "RANDOM_ABTEST":
                ratio = {q["name"]: q for q in node.get("parameters") or []}.get("ratioA")
                if ratio is None or ratio.get("type") != "FLOAT" or not 0 <= float(ratio["value"]) <= 1:
                    errors.append(f"{at}: RANDOM_ABTEST needs a FLOAT parameter ratioA in 0..1")
        for cs in p.get("componentSpecs") or []:
            hpa = cs.get("hpaSpec")
            if not hpa:
                continue
            errors += _replica_bounds(f"{where}: predictor {p['name']!r} hpaSpec", hpa)
            if "metrics" in hpa:
                errors.append(
                    f"{where}: predictor {p['name']!r} hpaSpec.metrics is the autoscaling/v2beta1 form; "
                    "put autoscaling/v2 metrics under hpaSpec.metricsv2"
                )
            if not hpa.get("metricsv2"):
                errors.append(f"{where}: predictor {p['name']!r} hpaSpec has no metricsv2")
    return errors


def _isvc_errors(where: str, doc: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    spec = doc["spec"]
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get("serving.kserve.io/deploymentMode") == "RawDeployment"
    for component in ("predictor", "transformer", "explainer"):
        part = spec.get(component)
        if not part:
            continue
        errors += _replica_bounds(f"{where}: {component}", part)
        canary = part.get("canaryTrafficPercent")
        if canary is not None:
            if not 0 <= canary <= 100:
                errors.append(f"{where}: {component}.canaryTrafficPercent {canary} outside 0..100")
            if raw:
                errors.append(f"{where}: canaryTrafficPercent needs Serverless mode, not RawDeployment")
    if "serving.kserve.io/canaryTrafficPercent" in annotations:
        errors.append(f"{where}: serving.kserve.io/canaryTrafficPercent is not an annotation KServe reads")
    errors += _knative_annotations(where, annotations)
    return errors


def admission_errors(doc: dict[str, Any]) -> list[str]:
    """Rules for one object that the API server's webhooks enforce beyond the schema."""
    kind, spec, where = doc.get("kind"), doc.get("spec") or {}, doc_id(doc)
    if kind == "SeldonDeployment":
        return _seldon_errors(where, spec)
    if kind == "InferenceService":
        return _isvc_errors(where, doc)
    if kind == "HorizontalPodAutoscaler":
        return _replica_bounds(where, spec)
    if kind in {"Server", "Model"}:
        return _replica_bounds(where, spec)
    if kind == "InferenceGraph":
        errors = []
        for name, node in (spec.get("nodes") or {}).items():
            if node.get("routerType") == "Splitter":
                total = sum(step.get("weight", 0) for step in node.get("steps") or [])
                if total != 100:
                    errors.append(f"{where}: Splitter node {name!r} weights sum to {total}, not 100")
        return errors
    if kind == "Experiment":
        names = [c["name"] for c in spec.get("candidates") or []]
        errors = [f"{where}: duplicate candidate"] if len(set(names)) != len(names) else []
        if spec.get("default") and spec["default"] not in names:
            errors.append(f"{where}: default {spec['default']!r} is not a candidate")
        return errors
    return []


def runtime_priority_errors(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
    """Among auto-selected runtimes (ours and KServe's built-ins), one priority per format and version; an
    auto-selected format served by another runtime too carries a priority."""
    entries: list[tuple[str, str, str | None, int | None]] = [
        (runtime, fmt, version, priority)
        for runtime, formats in KSERVE_BUILTIN_AUTOSELECT.items()
        for fmt, version, priority in formats
    ]
    errors = []
    for doc in docs:
        if doc.get("kind") not in {"ClusterServingRuntime", "ServingRuntime"}:
            continue
        spec = doc["spec"]
        if spec.get("disabled"):
            continue
        for fmt in spec.get("supportedModelFormats") or []:
            if fmt.get("autoSelect"):
                entries.append(
                    (doc["metadata"]["name"], fmt["name"], fmt.get("version"), fmt.get("priority"))
                )
    for i, (runtime, fmt, version, priority) in enumerate(entries):
        for other, fmt2, version2, priority2 in entries[i + 1 :]:
            if fmt != fmt2 or other == runtime:
                continue
            if priority is None or priority2 is None:
                errors.append(f"{runtime}/{other}: auto-selected format {fmt} without a priority")
            elif priority == priority2 and (version == version2 or None in (version, version2)):
                errors.append(f"{runtime}/{other}: same priority {priority} for format {fmt} {version}")
    return errors


def runtime_reference_errors(docs: tuple[dict[str, Any], ...]) -> list[str]:
    """An InferenceService naming a Ferry runtime uses a format and protocol that runtime lists."""
    runtimes = {d["metadata"]["name"]: d["spec"] for d in docs if d.get("kind") == "ClusterServingRuntime"}
    errors = []
    for doc in docs:
        if doc.get("kind") != "InferenceService":
            continue
        model = doc["spec"]["predictor"].get("model") or {}
        name = model.get("runtime")
        if name is None:
            continue
        if name not in runtimes:
            if name not in KSERVE_BUILTIN_AUTOSELECT:
                errors.append(f"{doc_id(doc)}: runtime {name!r} is not defined")
            continue
        rt = runtimes[name]
        fmt = model.get("modelFormat") or {}
        offered = [
            f
            for f in rt.get("supportedModelFormats") or []
            if f["name"] == fmt.get("name") and (fmt.get("version") in (None, f.get("version")))
        ]
        if not offered:
            errors.append(f"{doc_id(doc)}: runtime {name} does not serve format {fmt}")
        protocol = model.get("protocolVersion", "v1")
        if protocol not in (rt.get("protocolVersions") or ["v1"]):
            errors.append(f"{doc_id(doc)}: runtime {name} does not speak protocol {protocol}")
    return errors


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_source_file_validates(path: Path) -> None:
    docs = load_documents(path.read_text())
    assert docs, f"{path} holds no document"
    problems = [f"{doc_id(d)}: {e}" for d in docs for e in schema_errors(d) + admission_errors(d)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendering_validates(kustomization: str) -> None:
    docs = render(kustomization)
    assert len(docs) > 10
    problems = [f"{doc_id(d)}: {e}" for d in docs for e in schema_errors(d) + admission_errors(d)]
    problems += runtime_priority_errors(docs) + runtime_reference_errors(docs)
    ids = [doc_id(d) for d in docs]
    problems += [f"duplicate object {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    problems += [
        f"{doc_id(d)}: local-config object rendered"
        for d in docs
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "ferry-storage"
    ]
    assert not problems, "\n".join(problems)


def test_overlays_differ_as_documented() -> None:
    cpu = {doc_id(d) for d in render("overlays/cpu")}
    gpu = {doc_id(d) for d in render("overlays/gpu")}
    assert {doc_id(d) for d in everything()} == gpu
    assert gpu - cpu == {
        "InferenceService/kserve-models/pytorch-image-classifier",
        "InferenceService/kserve-models/tensorflow-recommender",
        "InferenceService/kserve-models/triton-ensemble",
    }
    for doc in render("overlays/cpu"):
        for container in _all_containers(doc):
            assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {})) or (
                doc["kind"] == "ClusterServingRuntime"
            ), doc_id(doc)


def test_autoselect_is_opt_in() -> None:
    def auto(docs):
        return {
            (d["metadata"]["name"], f["name"])
            for d in docs
            if d.get("kind") == "ClusterServingRuntime"
            for f in d["spec"]["supportedModelFormats"]
            if f.get("autoSelect")
        }

    assert auto(everything()) == set()
    assert auto(render("overlays/autoselect")) == {
        ("ferry-predictor", "onnx"),
        ("ferry-predictor", "pytorch"),
        ("ferry-predictor", "mlflow"),
    }


def test_storage_bucket_is_set_once() -> None:
    uris = [u for d in everything() for u in re.findall(r"(?:s3|gs)://[^\s\"',]+", json.dumps(d))]
    assert uris
    buckets = {u.split("/")[2] for u in uris}
    assert buckets == {"models", "mlflow"}, buckets


# --- the rules themselves, on manifests broken on purpose
def _first(kind: str, name: str | None = None) -> dict[str, Any]:
    for doc in everything():
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name):
            return copy.deepcopy(doc)
    raise AssertionError(f"no {kind} {name}")


def test_typo_field_is_rejected_and_named() -> None:
    doc = _first("InferenceService", "churn-canary")
    doc["spec"]["predictor"]["canaryTrafficPrecent"] = doc["spec"]["predictor"].pop("canaryTrafficPercent")
    errors = schema_errors(doc)
    assert errors and any("canaryTrafficPrecent" in e for e in errors), errors

    hpa = _first("HorizontalPodAutoscaler")
    hpa["spec"]["maxReplica"] = hpa["spec"].pop("maxReplicas")
    errors = schema_errors(hpa)
    assert errors and any("maxReplica" in e for e in errors), errors


def test_unknown_kind_is_an_error() -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    assert any("no schema" in e for e in schema_errors(doc))


def test_admission_rules_catch_broken_manifests() -> None:
    canary = _first("SeldonDeployment", "canary-deployment")
    canary["spec"]["predictors"][1]["traffic"] = 30
    assert any("sums to 110" in e for e in admission_errors(canary))

    shadow = _first("SeldonDeployment", "shadow-deployment")
    shadow["spec"]["predictors"][1]["traffic"] = 10
    assert any("shadow predictor" in e for e in admission_errors(shadow))

    router = _first("SeldonDeployment", "multi-model-router")
    router["spec"]["predictors"][0]["graph"]["implementation"] = "RANDOM_AB_TEST"
    assert any("not a documented value" in e for e in admission_errors(router))

    hpa = _first("SeldonDeployment", "sklearn-churn")
    spec = hpa["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"]
    spec["metrics"] = spec.pop("metricsv2")
    assert any("metricsv2" in e for e in admission_errors(hpa))

    isvc = _first("InferenceService", "churn-canary")
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 120
    isvc["spec"]["predictor"]["maxReplicas"] = 1
    errors = admission_errors(isvc)
    assert any("outside 0..100" in e for e in errors) and any(
        "minReplicas 2 > maxReplicas 1" in e for e in errors
    )

    ab = _first("InferenceGraph", "churn-ab-test")
    ab["spec"]["nodes"]["root"]["steps"][0]["weight"] = 60
    assert any("sum to 110" in e for e in admission_errors(ab))

    runtime = copy.deepcopy(
        [d for d in render("overlays/autoselect") if d["kind"] == "ClusterServingRuntime"]
    )
    for doc in runtime:
        if doc["metadata"]["name"] == "ferry-mlserver":
            doc["spec"]["supportedModelFormats"][0].update(autoSelect=True, priority=10)
    assert any("same priority 10 for format onnx" in e for e in runtime_priority_errors(runtime))
    for doc in runtime:
        if doc["metadata"]["name"] == "ferry-predictor":
            doc["spec"]["supportedModelFormats"][0].pop("priority")
    assert any("without a priority" in e for e in runtime_priority_errors(runtime))


# ------------------------------------------------------------------------------------ entrypoints
VENV_PREDICTOR = REPO / ".venv"
VENV_EXPLAINER = REPO / ".venv-explainer"
VENV_MLSERVER = REPO / ".venv-mlserver"
ENTRYPOINTS = {
    "ghcr.io/ferry-serving/predictor": VENV_PREDICTOR / "bin" / "ferry-predictor",
    "ghcr.io/ferry-serving/predictor-gpu": VENV_PREDICTOR / "bin" / "ferry-predictor",
    "ghcr.io/ferry-serving/transformer": VENV_PREDICTOR / "bin" / "ferry-transformer",
    "ghcr.io/ferry-serving/explainer": VENV_EXPLAINER / "bin" / "ferry-explainer",
}
MLSERVER_IMAGE = "ghcr.io/ferry-serving/mlserver"
# What an InferenceService must add to the transformer/explainer runtimes (their own predictor to call).
RUNTIME_EXAMPLE_ARGS = {
    "ferry-transformer": ["--predictor_host=example-predictor.default"],
    "ferry-explainer": ["--predictor_host=example-predictor.default"],
}


def _all_containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    def walk(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"containers", "initContainers"} and isinstance(value, list):
                    yield from (c for c in value if isinstance(c, dict))
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(doc.get("spec") or {})


def _image_name(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def command_lines() -> list[tuple[str, str, list[str], dict[str, str]]]:
    """(where, image, args, env) for every container Ferry's images run, as the pod will run it: a KServe
    runtime's args with {{.Name}} filled in and the InferenceService's args appended."""
    docs = everything()
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterServingRuntime"}
    lines = []

    def env_of(container: dict[str, Any], name: str) -> dict[str, str]:
        return {
            e["name"]: str(e["value"]).replace("{{.Name}}", name)
            for e in container.get("env") or []
            if "value" in e
        }

    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "ClusterServingRuntime":
            for c in doc["spec"]["containers"]:
                args = [a.replace("{{.Name}}", "example") for a in c.get("args") or []]
                args += RUNTIME_EXAMPLE_ARGS.get(name, [])
                lines.append((doc_id(doc), c["image"], c.get("command", []) + args, env_of(c, "example")))
            continue
        if doc["kind"] == "InferenceService":
            model = doc["spec"]["predictor"].get("model") or {}
            runtime = runtimes.get(model.get("runtime", ""))
            if runtime is not None:
                c = runtime["spec"]["containers"][0]
                args = [a.replace("{{.Name}}", name) for a in c.get("args") or []] + model.get("args", [])
                env = env_of(c, name) | env_of(model, name)
                lines.append((doc_id(doc) + " predictor", c["image"], c.get("command", []) + args, env))
        for c in _all_containers(doc):
            if c.get("image") and _image_name(c["image"]) in {*ENTRYPOINTS, MLSERVER_IMAGE}:
                lines.append(
                    (
                        f"{doc_id(doc)} {c['name']}",
                        c["image"],
                        c.get("command", []) + c.get("args", []),
                        env_of(c, name),
                    )
                )
    return lines


def _entry_module(script: Path) -> str | None:
    match = re.search(r"^from ([\w.]+) import", script.read_text(errors="replace"), re.MULTILINE)
    return match[1] if match else None


def _module_exists(python: Path, module: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)"
    result = subprocess.run([str(python), "-c", probe, module], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


def _run_dry(binary: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    return subprocess.run(
        [str(binary), *args, "--dry_run"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean | env,
        check=False,
    )


def test_every_ferry_image_is_used() -> None:
    images = {_image_name(image) for _, image, _, _ in command_lines()}
    assert images == {*ENTRYPOINTS, MLSERVER_IMAGE}


@pytest.mark.parametrize("image", sorted(ENTRYPOINTS))
def test_container_args_accepted_by_entrypoint(image: str) -> None:
    binary = ENTRYPOINTS[image]
    if not binary.exists():
        pytest.skip(f"{binary.relative_to(REPO)} not installed yet (scripts/envs.sh)")
    module = _entry_module(binary)
    if module is not None and not _module_exists(binary.parent / "python", module):
        pytest.skip(f"{binary.name}: module {module} not written yet")
    jobs: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], list[str]] = {}
    for where, img, args, env in command_lines():
        if _image_name(img) == image:
            jobs.setdefault((tuple(args), tuple(sorted(env.items()))), []).append(where)
    assert jobs
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        runs = pool.map(lambda key: _run_dry(binary, list(key[0]), dict(key[1])), jobs)
        results = dict(zip(jobs, runs, strict=True))
    failures = [
        f"{', '.join(jobs[key])}: {binary.name} {' '.join(key[0])} --dry_run -> exit {r.returncode}\n"
        f"{r.stderr.strip() or r.stdout.strip()}"
        for key, r in results.items()
        if r.returncode != 0
    ]
    assert not failures, "\n\n".join(failures)


MLSERVER_CHECK = """
import importlib, json, os, sys
from mlserver.settings import ModelSettings, Settings
Settings()
for text in json.loads(sys.argv[1]):
    settings = ModelSettings.model_validate_json(text)
    assert settings.implementation_ == "ferry.adapters.mlserver.FerryRuntime", settings.implementation_
if os.environ.get("MLSERVER_MODEL_IMPLEMENTATION"):
    assert ModelSettings().implementation_ == "ferry.adapters.mlserver.FerryRuntime"
importlib.import_module("ferry.adapters.mlserver").FerryRuntime
"""


def test_mlserver_containers() -> None:
    """`mlserver start DIR`, and settings (variables, model-settings.json) that MLServer 1.7.1 accepts."""
    lines = [line for line in command_lines() if _image_name(line[1]) == MLSERVER_IMAGE]
    assert lines
    model_settings = [
        d["data"]["model-settings.json"]
        for d in everything()
        if d["kind"] == "ConfigMap" and "model-settings.json" in d.get("data", {})
    ]
    for text in model_settings:
        json.loads(text)
    for where, _, args, _ in lines:
        if where.startswith("Server/"):
            continue  # Seldon Core 2: the stock mlserver ServerConfig supplies the command line
        assert args[:2] == ["mlserver", "start"] and len(args) == 3 and args[2].startswith("/"), (where, args)
    python = VENV_MLSERVER / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{python.relative_to(REPO)} not installed yet (scripts/envs.sh mlserver)")
    help_run = subprocess.run(
        [str(VENV_MLSERVER / "bin" / "mlserver"), "start", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert help_run.returncode == 0, help_run.stderr
    for where, _, _, env in lines:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
        result = subprocess.run(
            [str(python), "-c", MLSERVER_CHECK, json.dumps(model_settings)],
            capture_output=True,
            text=True,
            timeout=120,
            env=clean | env,
            check=False,
        )
        assert result.returncode == 0, f"{where}:\n{result.stderr}"


def test_entrypoint_check_catches_a_bad_flag() -> None:
    binary = ENTRYPOINTS["ghcr.io/ferry-serving/predictor"]
    if not binary.exists() or not _module_exists(binary.parent / "python", _entry_module(binary) or "ferry"):
        pytest.skip("ferry-predictor not installed yet")
    result = _run_dry(binary, ["--model_name=x", "--max_batch_size=0"], {})
    assert result.returncode == 2 and "max_batch_size" in result.stderr, result.stderr
