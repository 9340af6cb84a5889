"""What KServe's and Seldon's controllers make of Ferry's rendered manifests: the pods they would run.

Each function takes the documents ``kubectl kustomize k8s/overlays/<target>`` renders and returns one ``Pod`` per
pod a controller would create for a workload that runs a Ferry image. Nothing about Ferry is written here: args,
env, ports, probes, mounts, securityContext and resources all come from the manifests. What the controllers add
is written here as code, each rule with the controller source it follows:

- KServe v0.15-0.21 (``pkg/controller/v1beta1/inferenceservice``): a predictor ``model`` is the runtime's
  ``kserve-container`` merged with the InferenceService's (a strategic merge, except that args are the runtime's
  followed by the InferenceService's: ``utils.MergeRuntimeContainers``), then ``{{.Name}}``-style placeholders are
  filled from the InferenceService's metadata (``ReplacePlaceholders``); custom transformer and explainer
  containers get ``--model_name``, ``--predictor_host`` and ``--http_port`` (``transformer_custom.go``,
  ``explainer_custom.go``: the explainer's ``--http_port 8080`` is appended even when already given); a
  ``storageUri`` (or a ``STORAGE_URI`` env on a custom container) becomes the storage-initializer, which
  downloads it to ``/mnt/models``, mounted read-only into ``kserve-container``; the S3 Secret of the
  ServiceAccount becomes the initializer's environment (``pkg/credentials/s3``); every component is reached at
  ``<isvc>-<component>.<namespace>`` on port 80, forwarded to the container's port.
- Seldon Core 1 (v1.18, ``operator/controllers``): every graph container gets the ``PREDICTIVE_UNIT_*``
  environment and its endpoint's ports; the executor calls each model container at ``localhost:<httpPort>``;
  an ``explainer:`` becomes its own pod with the operator's argv (``seldondeployment_explainers.go``) and the
  ``modelUri`` downloaded to ``/mnt/models``; Services ``<sdep>-<predictor>`` and ``<sdep>-<predictor>-explainer``.
- Seldon Core 2 (v2.10, ServerConfig ``mlserver``): the Server's ``mlserver`` container merged by name over the
  stock container, whose environment is below; the agent places Models under ``/mnt/agent/models``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field

import yaml
from support.seldon_agent import SERVERCONFIG_MLSERVER_ENV

FERRY_IMAGES = "ghcr.io/ferry-serving/"
MODEL_MOUNT = "/mnt/models"  # constants.DefaultModelLocalMountPath
KSERVE_HTTP_PORT = "8080"  # constants.InferenceServiceDefaultHttpPort
SERVICE_PORT = 80  # Knative and raw-deployment Services both listen on 80 and forward to the container port

# pkg/credentials/s3/s3_secret.go: Secret annotations -> the storage-initializer's environment.
KSERVE_S3_ANNOTATIONS = {
    "serving.kserve.io/s3-endpoint": "S3_ENDPOINT",
    "serving.kserve.io/s3-usehttps": "S3_USE_HTTPS",
    "serving.kserve.io/s3-region": "AWS_DEFAULT_REGION",
    "serving.kserve.io/s3-verifyssl": "S3_VERIFY_SSL",
    "serving.kserve.io/s3-useanoncredential": "awsAnonymousCredential",
}
KSERVE_S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

# Seldon Core 1 operator: the metrics port and path it gives every graph container.
SELDON_METRICS_PORT = "6000"
SELDON_METRICS_PATH = "/prometheus"
SELDON_EXPLAINER_PORT = 9000  # constants.DefaultExplainerHttpPort... the explainer Service's port

SELDON_V2_AGENT_MODELS = "/mnt/agent/models"


@dataclass
class Download:
    """An init step: ``uri`` fetched into the volume mounted at ``MODEL_MOUNT``, with this environment."""

    uri: str
    env: dict[str, str]
    volume: str = "kserve-provision-location"


def provision(volumes: dict[str, dict], container: Container, uri: str, env: dict[str, str]) -> Download:
    """The storage-initializer's wiring (KServe's, and Seldon Core 1's for an explainer): an emptyDir, ``uri``
    downloaded into it before the pod starts, mounted read-only at /mnt/models in the main container."""
    download = Download(uri, env)
    volumes[download.volume] = {"name": download.volume, "emptyDir": {}}
    container.mounts.append({"volume": download.volume, "path": MODEL_MOUNT, "read_only": True})
    return download


@dataclass
class TrainedModel:
    """What KServe's agent does for a TrainedModel on a multi-model runtime (pkg/agent: puller, downloader):
    download ``uri`` to /mnt/models/<name>/ with a ``SUCCESS.<sha256 of the spec>`` marker beside the files, then
    POST http://localhost:8080/v2/repository/models/<name>/load with ``{}``; on removal, delete the folder first,
    then POST .../unload."""

    name: str
    uri: str
    spec: dict
    env: dict[str, str]
    volume: str = "model-dir"


@dataclass
class Container:
    name: str
    image: str
    command: list[str] | None
    args: list[str]
    env: dict[str, str]
    ports: list[int]
    mounts: list[dict]  # {"volume", "path", "read_only"}
    security: dict
    resources: dict
    readiness: dict | None  # httpGet {path, port} (port resolved to a number) or None


@dataclass
class Service:
    """A Kubernetes Service: the names it answers to and port -> container port."""

    names: list[str]
    ports: dict[int, int]


@dataclass
class Pod:
    workload: str  # "InferenceService/onnx-churn-classifier"
    name: str  # the Service name of the component: onnx-churn-classifier-predictor
    namespace: str
    containers: list[Container]
    volumes: dict[
        str, dict
    ]  # name -> {"emptyDir": {}} | {"configMap": {"name": ..}} | {"download": Download}
    service: Service
    downloads: list[Download] = field(default_factory=list)
    trained_models: list[TrainedModel] = field(default_factory=list)  # placed by KServe's agent once it runs


def service_names(name: str, namespace: str) -> list[str]:
    return [f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


# --- shared pieces ---------------------------------------------------------------------------------------------


def env_of(container: dict, secrets: dict[str, dict]) -> dict[str, str]:
    """``envFrom`` secrets first, then ``env`` (later entries win, as the kubelet does)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        env.update(secrets[source["secretRef"]["name"]]["stringData"])
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return env


def resolved_readiness(container: dict) -> dict | None:
    probe = (container.get("readinessProbe") or {}).get("httpGet")
    if not probe:
        return None
    port = probe["port"]
    if isinstance(port, str) and not port.isdigit():
        (port,) = [p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port]
    return {"path": probe["path"], "port": int(port)}


def container_of(spec: dict, secrets: dict[str, dict], extra_env: dict[str, str] | None = None) -> Container:
    return Container(
        name=spec["name"],
        image=spec["image"],
        command=spec.get("command"),
        args=[str(a) for a in spec.get("args") or []],
        env={**env_of(spec, secrets), **(extra_env or {})},
        ports=[int(p["containerPort"]) for p in spec.get("ports") or []],
        mounts=[
            {"volume": m["name"], "path": m["mountPath"], "read_only": bool(m.get("readOnly"))}
            for m in spec.get("volumeMounts") or []
        ],
        security=spec.get("securityContext") or {},
        resources=spec.get("resources") or {},
        readiness=resolved_readiness(spec),
    )


def strategic_merge(base: dict, override: dict) -> dict:
    """The container merge Kubernetes' strategic merge patch does for the fields Ferry's manifests use: maps merge
    key by key, lists of named items (env, ports, volumeMounts) merge by name or mount path, other lists and
    scalars are replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = strategic_merge(merged[key], value)
        elif isinstance(value, list) and key in ("env", "ports", "volumeMounts"):
            merge_key = {"env": "name", "ports": "containerPort", "volumeMounts": "mountPath"}[key]
            items = {item[merge_key]: item for item in merged.get(key) or []}
            for item in value:
                items[item[merge_key]] = {**items.get(item[merge_key], {}), **item}
            merged[key] = list(items.values())
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def fill_placeholders(text: str, metadata: dict) -> str:
    """Go's text/template over the InferenceService's ObjectMeta, for the forms runtimes use:
    ``{{.Name}}``, ``{{.Namespace}}``, ``{{index .Labels "k"}}``, ``{{index .Annotations "k"}}``."""

    def one(match: re.Match) -> str:
        expression = match.group(1).strip()
        if expression == ".Name":
            return metadata["name"]
        if expression == ".Namespace":
            return metadata["namespace"]
        index = re.fullmatch(r'index \.(Labels|Annotations) "([^"]+)"', expression)
        if index:
            return (metadata.get(index.group(1).lower()) or {})[index.group(2)]
        raise ValueError(f"placeholder {match.group(0)!r} is not one KServe fills")

    return re.sub(r"\{\{(.*?)\}\}", one, text)


def includes_arg(args: list[str], flag: str) -> bool:
    """KServe's utils.IncludesArg: any arg equal to, or starting with, the flag."""
    return any(a == flag or a.startswith(flag) for a in args)


# --- KServe --------------------------------------------------------------------------------------------------------


def kserve_s3_env(secret: dict) -> dict[str, str]:
    annotations = secret["metadata"].get("annotations") or {}
    env = {KSERVE_S3_ANNOTATIONS[k]: v for k, v in annotations.items() if k in KSERVE_S3_ANNOTATIONS}
    env.update({k: secret["stringData"][k] for k in KSERVE_S3_KEYS})
    if "S3_ENDPOINT" in env:
        scheme = "https" if env.get("S3_USE_HTTPS", "1") != "0" else "http"
        env["AWS_ENDPOINT_URL"] = f"{scheme}://{env['S3_ENDPOINT']}"
    return env


def kserve_pods(docs: list[dict], secrets: dict[str, dict]) -> list[Pod]:
    runtimes = {
        d["metadata"]["name"]: d for d in docs if d["kind"] in ("ClusterServingRuntime", "ServingRuntime")
    }
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "ServiceAccount"
    }
    pods = []
    for isvc in (d for d in docs if d["kind"] == "InferenceService"):
        for component in ("predictor", "transformer", "explainer"):
            spec = isvc["spec"].get(component)
            if spec is None:
                continue
            pod = kserve_component(isvc, component, spec, runtimes, accounts, secrets)
            if pod and any(c.image.startswith(FERRY_IMAGES) for c in pod.containers):
                if component == "predictor" and select_runtime(spec.get("model") or {}, runtimes, multi=True):
                    place_trained_models(pod, isvc, docs, accounts, secrets)
                pods.append(pod)
    return pods


def place_trained_models(pod: Pod, isvc: dict, docs: list[dict], accounts: dict, secrets: dict) -> None:
    """A multi-model predictor: the agent's model-dir emptyDir at /mnt/models (agent_injector.go), and the
    InferenceService's TrainedModels for the agent to place, with the credentials of the predictor's account."""
    name, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
    pod.volumes["model-dir"] = {"name": "model-dir", "emptyDir": {}}
    (container,) = [c for c in pod.containers if c.name == "kserve-container"]
    container.mounts.append({"volume": "model-dir", "path": MODEL_MOUNT, "read_only": False})
    account = accounts.get((namespace, isvc["spec"]["predictor"].get("serviceAccountName", "default")))
    env: dict[str, str] = {}
    for ref in (account or {}).get("secrets") or []:
        env.update(kserve_s3_env(secrets[ref["name"]]))
    for tm in docs:
        ours = tm["kind"] == "TrainedModel" and tm["metadata"].get("namespace") == namespace
        if ours and tm["spec"]["inferenceService"] == name:
            model = tm["spec"]["model"]
            pod.trained_models.append(TrainedModel(tm["metadata"]["name"], model["storageUri"], model, env))


def select_runtime(model: dict, runtimes: dict[str, dict], multi: bool = False) -> dict | None:
    """The runtime KServe picks among the rendered ones; None when it would be one installed with KServe. A
    predictor without a storageUri is a multi-model one (IsMMSPredictor), and only a ``multiModel`` runtime
    serves it; ``multi``: only that runtime, None for a single-model predictor."""
    is_mms = bool(model) and "storageUri" not in model
    if multi and not is_mms:
        return None
    if model.get("runtime"):
        runtime = runtimes.get(model["runtime"])
        return runtime if runtime and bool(runtime["spec"].get("multiModel")) == is_mms else None
    # Auto-selection: the first runtime whose supportedModelFormats has autoSelect for this format.
    wanted = model["modelFormat"]
    for runtime in runtimes.values():
        for supported in runtime["spec"].get("supportedModelFormats") or []:
            same_version = "version" not in wanted or supported.get("version") == wanted["version"]
            same_kind = bool(runtime["spec"].get("multiModel")) == is_mms
            if (
                supported.get("autoSelect")
                and supported["name"] == wanted["name"]
                and same_version
                and same_kind
            ):
                return runtime
    return None


def kserve_component(isvc, component, spec, runtimes, accounts, secrets) -> Pod | None:
    metadata = isvc["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    predictor_host = f"{name}-predictor.{namespace}"
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    storage_uri = None
    if "model" in spec:
        model = spec["model"]
        selected = select_runtime(model, runtimes)
        if selected is None:
            return None
        runtime = selected["spec"]
        (base,) = [c for c in runtime["containers"] if c["name"] == "kserve-container"]
        override = {k: v for k, v in model.items() if k not in ("modelFormat", "runtime", "storageUri",
                                                              "protocolVersion", "runtimeVersion")}  # fmt: skip
        args = [*(base.get("args") or []), *(override.pop("args", None) or [])]
        merged = strategic_merge(base, override)
        merged["args"] = args
        merged = json.loads(fill_placeholders(json.dumps(merged), metadata))
        volumes = {**{v["name"]: v for v in runtime.get("volumes") or []}, **volumes}
        storage_uri = model.get("storageUri")
    elif spec.get("containers"):
        merged = copy.deepcopy(spec["containers"][0])
        args = [str(a) for a in merged.get("args") or []]
        if component in ("transformer", "explainer"):
            if not includes_arg(args, "--model_name"):
                args += ["--model_name", name]
            if not includes_arg(args, "--predictor_host"):
                args += ["--predictor_host", predictor_host]
            if component == "explainer" or not includes_arg(args, "--http_port"):
                args += ["--http_port", KSERVE_HTTP_PORT]
        merged["args"] = args
        storage_uri = next((e["value"] for e in merged.get("env") or [] if e["name"] == "STORAGE_URI"), None)
    else:
        return None
    env = {"INFERENCE_SERVICE_NAME": name}
    container = container_of(merged, secrets, env)
    downloads = []
    if storage_uri:
        account = accounts.get((namespace, spec.get("serviceAccountName", "default")))
        download_env: dict[str, str] = {}
        for ref in (account or {}).get("secrets") or []:
            download_env.update(kserve_s3_env(secrets[ref["name"]]))
        downloads.append(provision(volumes, container, storage_uri, download_env))
    port = container.ports[0] if container.ports else int(KSERVE_HTTP_PORT)
    service_name = f"{name}-{component}"
    return Pod(
        workload=f"InferenceService/{name}",
        name=service_name,
        namespace=namespace,
        containers=[container],
        volumes=volumes,
        service=Service(service_names(service_name, namespace), {SERVICE_PORT: port}),
        downloads=downloads,
    )


# --- Seldon Core 1 ---------------------------------------------------------------------------------------------------


def graph_units(graph: dict) -> list[dict]:
    return [graph, *(u for child in graph.get("children") or [] for u in graph_units(child))]


def seldon_v1_pods(docs: list[dict], secrets: dict[str, dict]) -> list[Pod]:
    pods = []
    for sdep in (d for d in docs if d["kind"] == "SeldonDeployment"):
        metadata = sdep["metadata"]
        namespace = metadata["namespace"]
        for predictor in sdep["spec"]["predictors"]:
            units = {u["name"]: u for u in graph_units(predictor["graph"])}
            service_name = f"{metadata['name']}-{predictor['name']}"
            for index, component in enumerate(predictor.get("componentSpecs") or []):
                containers = []
                for spec in component["spec"]["containers"]:
                    unit = units.get(spec["name"])
                    if unit is None:
                        continue
                    endpoint = unit.get("endpoint") or {}
                    env = {
                        "PREDICTIVE_UNIT_SERVICE_PORT": str(endpoint.get("httpPort", 9000)),
                        "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(endpoint.get("httpPort", 9000)),
                        "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(endpoint.get("grpcPort", 9500)),
                        "PREDICTIVE_UNIT_ID": spec["name"],
                        "PREDICTIVE_UNIT_IMAGE": spec["image"],
                        "PREDICTIVE_UNIT_PARAMETERS": json.dumps(unit.get("parameters") or []),
                        "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": SELDON_METRICS_PORT,
                        "PREDICTIVE_UNIT_METRICS_ENDPOINT": SELDON_METRICS_PATH,
                        "PREDICTOR_ID": predictor["name"],
                        "PREDICTOR_LABELS": json.dumps(predictor.get("labels") or {}),
                        "SELDON_DEPLOYMENT_ID": metadata["name"],
                        "SELDON_EXECUTOR_ENABLED": "true",
                    }
                    # The kubelet sets the Secret's keys first; the operator's entries come after the user's.
                    container = container_of(spec, secrets)
                    container.env = {**container.env, **env}
                    containers.append(container)
                if not any(c.image.startswith(FERRY_IMAGES) for c in containers):
                    continue
                http = int((units[containers[0].name].get("endpoint") or {}).get("httpPort", 9000))
                pods.append(
                    Pod(
                        workload=f"SeldonDeployment/{metadata['name']}",
                        name=f"{service_name}-{index}",
                        namespace=namespace,
                        containers=containers,
                        volumes={v["name"]: v for v in component["spec"].get("volumes") or []},
                        # no-engine: the predictor Service points at the root model's port
                        service=Service(
                            service_names(service_name, namespace) if index == 0 else [], {http: http}
                        ),
                    )
                )
            explainer = predictor.get("explainer")
            if explainer:
                pods.append(seldon_explainer_pod(sdep, predictor, explainer, secrets))
    return pods


def seldon_explainer_pod(sdep: dict, predictor: dict, explainer: dict, secrets: dict[str, dict]) -> Pod:
    """seldondeployment_explainers.go: the container's args are the operator's, not the image's CMD."""
    metadata = sdep["metadata"]
    namespace = metadata["namespace"]
    root = predictor["graph"]
    engine = metadata.get("annotations", {}).get("seldon.io/no-engine") != "true"
    predictor_port = 8000 if engine else int((root.get("endpoint") or {}).get("httpPort", 9000))
    args = [
        f"--model_name={root['name']}",
        f"--predictor_host={metadata['name']}-{predictor['name']}.{namespace}:{predictor_port}",
        "--protocol=seldon.http",
        f"--http_port={SELDON_EXPLAINER_PORT}",
    ]
    spec = copy.deepcopy(explainer["containerSpec"])
    if explainer.get("modelUri"):
        args.append(f"--storage_uri={MODEL_MOUNT}")
    args.append(explainer["type"])
    args += [f"--{k}={v}" for k, v in sorted((explainer.get("config") or {}).items())]
    spec["args"] = args
    spec.setdefault("ports", [{"name": "http", "containerPort": SELDON_EXPLAINER_PORT}])
    container = container_of(spec, secrets)
    downloads, volumes = [], {}
    if explainer.get("modelUri"):
        secret = (
            secrets[explainer["envSecretRefName"]]["stringData"] if explainer.get("envSecretRefName") else {}
        )
        downloads.append(provision(volumes, container, explainer["modelUri"], rclone_to_s3_env(secret)))
    name = f"{metadata['name']}-{predictor['name']}-explainer"
    return Pod(
        workload=f"SeldonDeployment/{metadata['name']}",
        name=name,
        namespace=namespace,
        containers=[container],
        volumes=volumes,
        service=Service(service_names(name, namespace), {SELDON_EXPLAINER_PORT: SELDON_EXPLAINER_PORT}),
        downloads=downloads,
    )


# Seldon's storage initializer and agent use rclone; the downloader used here speaks S3 through boto3, so an rclone
# S3 remote's settings are handed over under boto3's names.
RCLONE_S3_SETTINGS = {
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "endpoint": "AWS_ENDPOINT_URL",
    "region": "AWS_DEFAULT_REGION",
}


def rclone_to_s3_env(env: dict[str, str]) -> dict[str, str]:
    """An rclone remote given as ``RCLONE_CONFIG_S3_<SETTING>`` variables (Seldon Core 1's envSecretRefName)."""
    prefix = "RCLONE_CONFIG_S3_"
    settings = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    return {RCLONE_S3_SETTINGS[k]: v for k, v in settings.items() if k in RCLONE_S3_SETTINGS}


# --- Seldon Core 2 ---------------------------------------------------------------------------------------------------


def seldon_v2_server_pods(docs: list[dict], secrets: dict[str, dict]) -> list[Pod]:
    """Each Server that runs a Ferry image. On Seldon's stock ``mlserver`` ServerConfig: its ``mlserver``
    container with the Server's merged over it by name (the image's own ENTRYPOINT and ENV apply underneath:
    neither sets a command). On a ServerConfig the overlay ships (``ferry``): that ServerConfig's server container,
    the Server's containers merged over its podSpec's by name, the pod's securityContext under the container's,
    the volume claim templates as emptyDirs. Seldon's agent and rclone containers are played by the tests."""
    configs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServerConfig"}
    pods = []
    for server in (d for d in docs if d["kind"] == "Server"):
        config_name = server["spec"].get("serverConfig")
        overrides = {c["name"]: c for c in (server["spec"].get("podSpec") or {}).get("containers") or []}
        if config_name == "mlserver":
            stock = {
                "name": "mlserver",
                "env": [{"name": k, "value": v} for k, v in SERVERCONFIG_MLSERVER_ENV],
                "ports": [{"name": "http", "containerPort": 9000}, {"name": "grpc", "containerPort": 9500}],
                "readinessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}},
                "volumeMounts": [{"name": "mlserver-models", "mountPath": SELDON_V2_AGENT_MODELS}],
            }
            merged = strategic_merge(stock, overrides["mlserver"])
            volumes = {v["name"]: v for v in server["spec"]["podSpec"].get("volumes") or []}
            volumes["mlserver-models"] = {"name": "mlserver-models", "emptyDir": {}}
        elif config_name in configs:
            pod_spec = configs[config_name]["spec"]["podSpec"]
            (base,) = [c for c in pod_spec["containers"] if c["image"].startswith(FERRY_IMAGES)]
            merged = strategic_merge(base, overrides.get(base["name"], {}))
            pod_security = pod_spec.get("securityContext") or {}
            merged["securityContext"] = {
                **{k: v for k, v in pod_security.items() if k in ("runAsUser", "runAsGroup", "runAsNonRoot")},
                **(merged.get("securityContext") or {}),
            }
            volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
            for claim in configs[config_name]["spec"].get("volumeClaimTemplates") or []:
                volumes[claim["name"]] = {"name": claim["name"], "emptyDir": {}}
        else:
            continue
        container = container_of(merged, secrets)
        name = f"{server['metadata']['name']}-0"
        namespace = server["metadata"]["namespace"]
        pods.append(
            Pod(
                workload=f"Server/{server['metadata']['name']}",
                name=name,
                namespace=namespace,
                containers=[container],
                volumes=volumes,
                service=Service(service_names(name, namespace), {9000: 9000, 9500: 9500}),
            )
        )
    return pods


def rclone_remote_env(secret: dict) -> dict[str, str]:
    """An rclone remote Secret (``stringData.<remote>``: rclone's YAML, as Seldon Core 2's agent reads it) as the
    S3 environment of the downloader used here."""
    (config,) = [yaml.safe_load(text) for text in secret["stringData"].values()]
    parameters = {"region": "us-east-1", **config["parameters"]}
    return {RCLONE_S3_SETTINGS[k]: v for k, v in parameters.items() if k in RCLONE_S3_SETTINGS}
