"""A one-node stand-in for a cluster, made of podman pods on a private bridge network.

Each ``Pod`` from controllers.py becomes a podman pod with its own IP (its containers share it, as a Kubernetes
pod's do), each container started with the podman flags its securityContext and resources mean; each Service
becomes a small forwarding container with its own IP that the names the Service answers to resolve to (in
every pod's /etc/hosts), forwarding its ports to the pod's, as kube-proxy does. Servers outside the cluster
(the S3 server, Feast's feature server, the MLflow registry) run on this host, bound to the bridge's gateway,
and get a Service with the in-cluster name the manifests use. Storage downloads run before the pod starts, in
a container of Ferry's ONNX image with KServe's own storage code, as KServe's storage-initializer does.

Nothing here is a mock: every process is the real image's, every byte goes over TCP."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from controllers import MODEL_MOUNT, Container, Download, Pod, TrainedModel
from support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / ".ferry" / "images" / "containers.conf"
LABEL = "io.ferry.pod-test"
SUBNET = ipaddress.ip_network(os.environ.get("FERRY_POD_SUBNET", "10.89.77.0/24"))
FORWARDER = Path(__file__).with_name("forwarder.py")
# The image the Service forwarders run in: the base every Ferry image is built on (scripts/images.sh).
FORWARDER_IMAGE = "docker.io/library/python:3.11-slim"
DOWNLOADER_IMAGE = "predictor-onnx"  # ships kserve-storage, the code of KServe's storage-initializer
# How long a pod may take to get ready (a Knative revision's default progress deadline is 600 s; Ferry's pods
# take seconds here, so a pod that is not ready after this long never will be).
READY_TIMEOUT = float(os.environ.get("FERRY_POD_READY_TIMEOUT", "240"))
DOWNLOAD = (
    "import sys; from kserve_storage import Storage; "
    "print(Storage.download(sys.argv[1], sys.argv[2]), flush=True)"
)


def podman(*args: str, check: bool = True, timeout: float = 300) -> str:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"podman {shlex.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return done.stdout.strip()


def quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def quantity_cpus(text: str) -> float:
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def run_flags(container: Container) -> list[str]:
    """The podman flags for what the kubelet enforces: securityContext and resource limits."""
    security, flags = container.security, []
    if "runAsUser" in security:
        flags += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
    if security.get("readOnlyRootFilesystem"):
        # No tmpfs on /tmp: a pod gets one only when the manifest mounts an emptyDir there.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for capability in (security.get("capabilities") or {}).get("drop") or []:
        flags += ["--cap-drop", capability]
    limits = container.resources.get("limits") or {}
    if "memory" in limits:
        flags += ["--memory", str(quantity_bytes(str(limits["memory"])))]
    if "cpu" in limits:
        flags += ["--cpus", str(quantity_cpus(str(limits["cpu"])))]
    return flags


@dataclass
class RunningPod:
    pod: Pod
    ip: str
    log_dir: Path
    container_ids: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    ready_s: float = 0.0  # from the pod's start (after its downloads) until every container was ready

    def url(self, port: int) -> str:
        return f"http://{self.ip}:{port}"

    def logs(self) -> str:
        return "\n".join(
            f"---- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in self.log_dir.glob("*.log")
        )


class Cluster:
    """Start with ``with Cluster(workdir, version) as cluster:``; everything it started is removed on exit."""

    def __init__(self, workdir: Path, version: str, registry: str = "ghcr.io/ferry-serving"):
        self.workdir = workdir
        self.version = version
        self.registry = registry
        self.network = f"ferry-pods-{os.getpid()}"
        hosts = SUBNET.hosts()
        self.gateway = str(next(hosts))
        self._addresses = hosts
        self.hosts: dict[str, str] = {}  # name -> IP, written into every pod's /etc/hosts
        self.services: dict[str, str] = {}  # first Service name -> its forwarder's IP
        self.pods: dict[str, RunningPod] = {}
        self.configmaps: dict[tuple[str, str], dict] = {}

    def __enter__(self) -> Cluster:
        self._cleanup()
        podman("network", "create", "--subnet", str(SUBNET), "--label", LABEL, self.network)
        return self

    def __exit__(self, *exc) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        for pod in podman("pod", "ps", "-q", "--filter", f"label={LABEL}").split():
            podman("pod", "rm", "-f", "-t", "5", pod, check=False)
        for container in podman("ps", "-aq", "--filter", f"label={LABEL}").split():
            podman("rm", "-f", "-t", "2", container, check=False)
        for network in podman("network", "ls", "-q", "--filter", f"label={LABEL}").split():
            podman("network", "rm", "-f", network, check=False)

    def image(self, name_or_reference: str) -> str:
        """A manifest's image, as built here: the tag is this checkout's version (kustomize's images component
        sets the same)."""
        if name_or_reference.startswith(self.registry):
            name = name_or_reference.removeprefix(self.registry + "/").partition(":")[0]
        else:
            name = name_or_reference
        return f"{self.registry}/{name}:{self.version}"

    # --- Services -----------------------------------------------------------------------------------------------

    def service(self, names: list[str], ports: dict[int, tuple[str, int]]) -> str:
        """A Service answering to ``names``: listen port -> (target IP, target port). Returns its IP."""
        ip = str(next(self._addresses))
        self._forwarder(ip, ports)
        for name in names:
            self.hosts[name] = ip
        if names:
            self.services[names[0]] = ip
        return ip

    def _forwarder(self, ip: str, ports: dict[int, tuple[str, int]]) -> None:
        routes = [f"{listen}={host}:{port}" for listen, (host, port) in sorted(ports.items())]
        podman(
            "run", "-d", "--rm", "--label", LABEL, "--name", f"{self.network}-svc-{ip.split('.')[-1]}",
            "--network", self.network, "--ip", ip, "-v", f"{FORWARDER}:/forwarder.py:ro,Z",
            FORWARDER_IMAGE, "python3", "/forwarder.py", *routes,
        )  # fmt: skip

    def external(self, names: list[str], port: int) -> tuple[str, int]:
        """A Service for a server on this host: returns the (address, port) the server must bind; the Service
        answers on ``port`` at ``names``."""
        host_port = free_port()
        self.service(names, {port: (self.gateway, host_port)})
        return self.gateway, host_port

    def wait_for_gateway(self, timeout: float = 30) -> None:
        """The bridge gets the gateway address when its first container starts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.socket() as sock:
                sock.bind((self.gateway, 0))
                return
            time.sleep(0.2)
        raise RuntimeError(f"the bridge never got {self.gateway}")

    # --- pods -------------------------------------------------------------------------------------------------

    def volume_dir(self, pod: Pod, name: str) -> Path:
        path = self.workdir / "volumes" / pod.namespace / pod.name / name
        if not path.exists():
            path.mkdir(parents=True)
            path.chmod(0o1777)  # an emptyDir is writable by the pod's user
            source = pod.volumes.get(name) or {}
            if "configMap" in source:
                data = self.configmaps[(pod.namespace, source["configMap"]["name"])]["data"]
                for key, value in data.items():
                    (path / key).write_text(value)
                path.chmod(0o755)
        return path

    def download(self, pod: Pod, download: Download, log: Path) -> None:
        """The storage-initializer: ``uri`` into the pod's model volume, in the pod's network, as root (as the
        init container runs), with the credentials' environment."""
        target = self.volume_dir(pod, download.volume)
        env_flags = [flag for k, v in sorted(download.env.items()) for flag in ("-e", f"{k}={v}")]
        outputs = []
        # The kubelet restarts a failed init container; so does this (podman 4.3 now and then starts a short
        # attached container without running it: no output, no files).
        for attempt in range(1, 4):
            output = podman(
                "run", "--rm", "--no-healthcheck", "--label", LABEL, "--network", self.network, *self.host_flags(),
                "-v", f"{target}:{MODEL_MOUNT}", "--entrypoint", "python", *env_flags,
                self.image(DOWNLOADER_IMAGE), "-c", DOWNLOAD, download.uri, MODEL_MOUNT,
                check=False, timeout=300,
            )  # fmt: skip
            outputs.append(f"---- attempt {attempt}\n{output}")
            if any(target.iterdir()):
                break
        log.write_text("\n".join(outputs))
        if not any(target.iterdir()):
            raise RuntimeError(
                f"{pod.workload}: storage-initializer fetched nothing from {download.uri}: {outputs}"
            )
        for path in target.rglob("*"):  # the initializer's files, readable by the serving user
            path.chmod(0o755 if path.is_dir() else 0o644)

    # --- KServe's agent, for a multi-model predictor ---------------------------------------------------------------

    def agent_place(self, running: RunningPod, model: TrainedModel, log: Path) -> httpx.Response:
        """The agent's puller for one TrainedModel: the download into /mnt/models/<name>/ beside a SUCCESS marker,
        then the load call to the server on localhost:8080, made from inside the pod as the agent makes it."""
        staging = Download(model.uri, model.env, volume=f"agent-{model.name}")
        self.download(running.pod, staging, log)
        target = self.volume_dir(running.pod, model.volume) / model.name
        shutil.copytree(self.volume_dir(running.pod, staging.volume), target)
        spec = json.dumps(model.spec)
        (target / f"SUCCESS.{hashlib.sha256(spec.encode()).hexdigest()}").write_text(spec)
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return self.agent_call(running, f"/v2/repository/models/{model.name}/load")

    def agent_remove(self, running: RunningPod, model: TrainedModel) -> httpx.Response:
        """The agent on a removed TrainedModel: its folder deleted first, then the unload call."""
        shutil.rmtree(self.volume_dir(running.pod, model.volume) / model.name)
        return self.agent_call(running, f"/v2/repository/models/{model.name}/unload")

    def agent_call(self, running: RunningPod, path: str) -> httpx.Response:
        """POST ``{}`` to http://localhost:8080``path`` in the pod's network namespace (puller.go's http.Post)."""
        (container_id, *_) = running.container_ids.values()
        script = (
            "import sys, urllib.request as u, urllib.error as e\n"
            "request = u.Request('http://localhost:8080' + sys.argv[1], b'{}', {'content-type': 'application/json'})\n"
            "try:\n    answer = u.urlopen(request, timeout=120)\n"
            "except e.HTTPError as error:\n    answer = error\n"
            "print(answer.status); print(answer.read().decode())\n"
        )
        output = podman("exec", container_id, "python", "-c", script, path, timeout=180)
        status, _, body = output.partition("\n")
        return httpx.Response(int(status), content=body.encode())

    def host_flags(self) -> list[str]:
        return [flag for name, ip in sorted(self.hosts.items()) for flag in ("--add-host", f"{name}:{ip}")]

    def deploy(self, pods: list[Pod], timeout: float = READY_TIMEOUT) -> list[RunningPod]:
        """Every pod and its Service at once, as ``kubectl apply`` would: addresses first (so each pod resolves
        every Service, whichever starts first), then the Services, the storage downloads and the pods; returns
        when all are ready."""
        planned = []
        for pod in pods:
            running = RunningPod(
                pod, str(next(self._addresses)), self.workdir / "logs" / pod.namespace / pod.name
            )
            running.log_dir.mkdir(parents=True, exist_ok=True)
            self.pods[pod.name] = running
            planned.append(running)
            if pod.service.names:
                service_ip = str(next(self._addresses))
                self.hosts.update((name, service_ip) for name in pod.service.names)
                self.services[pod.service.names[0]] = service_ip
        for running in planned:
            if running.pod.service.names:
                ports = {p: (running.ip, target) for p, target in running.pod.service.ports.items()}
                self._forwarder(self.services[running.pod.service.names[0]], ports)
        for running in planned:  # the init containers, before their pods start
            for index, download in enumerate(running.pod.downloads):
                self.download(running.pod, download, running.log_dir / f"storage-initializer-{index}.log")
        for running in planned:
            self._start(running)
        self.wait_ready(planned, timeout)
        return planned

    def _start(self, running: RunningPod) -> None:
        pod = running.pod
        running.started = time.monotonic()
        podman(
            "pod", "create", "--label", LABEL, "--name", f"{self.network}-{pod.name}",
            "--network", self.network, "--ip", running.ip, *self.host_flags(),
        )  # fmt: skip
        for container in pod.containers:
            mounts = []
            for mount in container.mounts:
                options = "ro" if mount["read_only"] else "rw"
                mounts += ["-v", f"{self.volume_dir(pod, mount['volume'])}:{mount['path']}:{options}"]
            env_flags = [flag for k, v in sorted(container.env.items()) for flag in ("-e", f"{k}={v}")]
            # A container's command replaces the image's ENTRYPOINT (and with it CMD), its args replace CMD.
            entrypoint = ["--entrypoint", json.dumps(container.command)] if container.command else []
            running.container_ids[container.name] = podman(
                "run", "-d", "--label", LABEL, "--pod", f"{self.network}-{pod.name}",
                "--name", f"{self.network}-{pod.name}-{container.name}", "--no-healthcheck",
                "--log-driver", "k8s-file", "--log-opt", f"path={running.log_dir / (container.name + '.log')}",
                *run_flags(container), *mounts, *env_flags, *entrypoint,
                self.image(container.image), *container.args,
            )  # fmt: skip

    def wait_ready(self, pods: list[RunningPod], timeout: float = READY_TIMEOUT) -> None:
        """Until every container's readiness probe answers 200 (or, without one, its first port accepts a
        connection, Knative's default), each pod's ``ready_s`` set to its own time from start to ready; fails
        with a pod's logs when one of its containers exits or it is not ready within ``timeout``."""
        pending = list(pods)
        last_state_check = 0.0
        while pending:
            now = time.monotonic()
            for running in list(pending):
                if all(self._ready(running, c) for c in running.pod.containers):
                    running.ready_s = time.monotonic() - running.started
                    pending.remove(running)
                elif now - running.started > timeout:
                    raise RuntimeError(f"{running.pod.workload} not ready in {timeout} s:\n{running.logs()}")
            if pending and now - last_state_check > 2:  # podman inspect is slow: every 2 s is enough
                last_state_check = now
                for running in pending:
                    for name, container_id in running.container_ids.items():
                        try:
                            state = podman("inspect", "--format", "{{.State.Status}}", container_id)
                        except RuntimeError:
                            state = "gone"
                        if state not in ("running", "created", "configured"):
                            raise RuntimeError(f"{running.pod.workload} {name} is {state}:\n{running.logs()}")
            time.sleep(0.3)

    def _ready(self, running: RunningPod, container: Container) -> bool:
        if container.readiness:
            with contextlib.suppress(httpx.HTTPError):
                url = running.url(container.readiness["port"]) + container.readiness["path"]
                return httpx.get(url, timeout=2).status_code == 200
            return False
        port = container.ports[0] if container.ports else 8080
        with contextlib.suppress(OSError), socket.create_connection((running.ip, port), timeout=2):
            return True
        return False

    def url(self, service: str, port: int) -> str:
        return f"http://{self.services[service]}:{port}"
