"""The servers measured, side by side: each peer is a command line (Ferry's predictor, or a script in this folder
run by the Python of its own environment), started pinned to the server CPU and stopped with its process group."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import BENCH, FERRY_PY, REPO, SERVER_CPU, START_TIMEOUT_S, TRITON_PY, mlserver_python

# ----------------------------------------------------------------------------------------------------- peers


@dataclass(frozen=True)
class Peer:
    label: str
    kinds: tuple[str, ...]  # payload kinds it serves
    python: Path | None = None  # None: FERRY_PY
    launcher: str = ""  # script under benchmarks/peers/, or "" for ferry-predictor
    flags: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    check: bool = True  # False for ceilings that answer a fixed body


ALL = ("v2json", "v2binary", "v1json", "grpc")
PEERS = {
    "ceiling-asgi": Peer("bare uvicorn ASGI, fixed JSON (ceiling)", ("v2json",), launcher="asgi_bare.py", check=False),
    "http-echo": Peer(
        "trivial server on Ferry's HTTP/1.1 transport, fixed JSON (transport cost)", ("v2json",),
        launcher="asgi_bare.py", flags=("--transport=ferry",), check=False,
    ),
    "grpc-echo": Peer("trivial grpc.aio server, fixed answer (grpc.aio's ceiling)", ("grpc",), launcher="grpc_echo.py", check=False),
    "grpc-echo-h2": Peer(
        "trivial server on Ferry's HTTP/2 transport, fixed answer (load generator ceiling)", ("grpc",),
        launcher="grpc_echo.py", flags=("--transport=h2",), check=False,
    ),
    "ferry-batch": Peer("Ferry lean server, batching on", ALL, flags=("--batching=true", "--max_batch_size=64")),
    "ferry-nobatch": Peer("Ferry lean server, batching off", ALL, flags=("--batching=false",)),
    "ferry-kserve": Peer(
        "Ferry kserve.Model in kserve.ModelServer (Ferry's codec on its inference routes)",
        ALL,
        flags=("--server=kserve",),
    ),
    "kserve-stock": Peer("stock KServe 0.21 custom kserve.Model + onnxruntime", ALL, launcher="kserve_stock.py"),
    "mlserver": Peer("MLServer 1.7.1 onnxruntime MLModel", ("v2json", "grpc"), python=mlserver_python(), launcher="mlserver_onnx.py"),
    "mlserver-adaptive": Peer(
        "MLServer 1.7.1 onnxruntime MLModel, adaptive batching 32/2 ms",
        ("v2json", "grpc"), python=mlserver_python(), launcher="mlserver_onnx.py", flags=("--adaptive",),
    ),
    "ferry-mlserver": Peer(
        "Ferry's MLServer runtime (FerryRuntime), Ferry batcher on",
        ("v2json", "grpc"), python=mlserver_python(), launcher="mlserver_onnx.py",
        flags=("--implementation=ferry.adapters.mlserver.FerryRuntime",),
    ),
    "triton": Peer(
        "Triton 2.51 Python backend via PyTriton 0.7.0, dynamic batcher (max 64, no delay)",
        ("v2json", "v2binary", "grpc"), python=TRITON_PY, launcher="triton_pytriton.py",
    ),
    "fastapi": Peer("minimal FastAPI V2 route + onnxruntime", ("v2json",), launcher="fastapi_v2.py"),
    "floor": Peer(
        "the floor: orjson and numpy, a batch, onnxruntime and Ferry's HTTP/1.1 transport; no checks, ids or metrics",
        ("v2json", "v2binary"), launcher="floor_v2.py",
    ),
    "floor-checked": Peer(
        "the checked floor: the floor plus Ferry's V2 codec and input checks, request ids, a bounded queue, "
        "deadlines and Ferry's HTTP metrics",
        ("v2json", "v2binary"), launcher="floor_v2.py", flags=("--checked",),
    ),
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    process: subprocess.Popen | None
    http_url: str
    grpc_address: str
    log_path: Path | None = None
    metrics_url: str = ""  # where its Prometheus metrics are, when not on http_url (MLServer's own port)

    def pids(self) -> list[int]:
        """Every live process of the server's process group (Triton and MLServer start children)."""
        if self.process is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[2]) == self.process.pid:  # field 5: pgrp
                        found.append(int(entry.name))
        return found

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                found = re.search(r"VmRSS:\s+(\d+) kB", status)
                total += int(found.group(1)) * 1024 if found else 0
        return total

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # only the group this harness started
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_server(name: str, model: str, directory: Path, log_dir: Path, extra_flags=()) -> Server:
    peer = PEERS[name]
    http_port, grpc_port = free_port(), free_port()
    common = [
        f"--model_dir={directory}",
        f"--model_name={model}",
        f"--http_port={http_port}",
        f"--grpc_port={grpc_port}",
    ]
    if peer.launcher:
        command = [
            str(peer.python or FERRY_PY),
            str(BENCH / "peers" / peer.launcher),
            *common,
            *peer.flags,
            *extra_flags,
        ]
    else:
        command = [str(FERRY_PY), "-m", "ferry", *common, "--host=127.0.0.1"]  # = ferry-predictor
        command += ["--intra_op_threads=1", "--log_level=warning", *peer.flags, *extra_flags]
    python_path = [
        str(BENCH / "peers"),
        str(REPO / "runtimes"),
        *filter(None, [os.environ.get("PYTHONPATH")]),
    ]
    env = {**os.environ, "PYTHONPATH": ":".join(python_path), **peer.env}
    metrics_url = ""
    if (
        peer.python == mlserver_python()
    ):  # MLServer serves metrics (Ferry's batcher's included) on a port of its own
        metrics_port = free_port()
        command.append(f"--metrics_port={metrics_port}")
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    if peer.python == TRITON_PY:
        import sysconfig

        command.append(f"--metrics_port={free_port()}")  # not http_port + 1, which may be taken

        # Triton's Python-backend stub links against libpython, which is not on the default search path.
        env["LD_LIBRARY_PATH"] = f"{sysconfig.get_config_var('LIBDIR')}:{env.get('LD_LIBRARY_PATH', '')}"
    log_path = log_dir / f"{name}-{model}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *command],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
        start_new_session=True,  # its own process group: RSS of all its processes, and a clean stop
    )
    server = Server(
        name, process, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log_path, metrics_url
    )
    grpc_only = peer.kinds == ("grpc",)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        if grpc_ready(server) if grpc_only else http_ready(server, f"/v2/models/{model}/ready"):
            return server
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"{name} not ready within {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def http_ready(server: Server, path: str) -> bool:
    """The model's own V2 readiness: server readiness can turn true before a model is bound (PyTriton)."""
    import httpx

    try:
        return httpx.get(server.http_url + path, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def grpc_ready(server: Server) -> bool:
    import grpc

    with grpc.insecure_channel(server.grpc_address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=2)
            return True
        except grpc.FutureTimeoutError:
            return False


def external(url: str) -> Server:
    """A server this harness did not start: no pinning, no RSS. gRPC at the same host, port from --grpc."""
    return Server("external", None, url.rstrip("/"), os.environ.get("BENCH_GRPC_ADDRESS", ""))
