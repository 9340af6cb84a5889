"""Many models on one server: Ferry's model repository against MLServer's multi-model serving, in one run.

    .venv/bin/python benchmarks/multi_model.py [--models 20] [--seconds 8]

Each server (Ferry; MLServer in-process, as benchmarks/run.py runs it, and with the one worker process Seldon
Core 2's stock ServerConfig gives it) starts pinned to CPU 0 with one small ONNX model (the MLP 85k of benchmarks/run.py) and loads the
others through the repository API (``POST /v2/repository/models/{m}/load``), one at a time:

- **models**: N copies of the MLP with weights nudged apart, so no two files are alike;
- **memory**: the RSS of the server's process group after each load; the marginal RSS of one more model is the
  least-squares slope over models 2..N (the first load also pulls in the runtime's libraries), set against one
  server per model (N x the one-model server's RSS);
- **load time** per model, as the load call takes it;
- **reloads under load**: wrk at 16 connections on model ``m00`` for ``--seconds``, alone, then while ``m01`` is
  reloaded every 0.5 s, then while ``m00`` itself is reloaded every 0.5 s; p50, p99 and failed requests of each.
  Ferry reloads a model whose files changed (they are touched first); MLServer reloads on every load call.

Writes ``--json`` (benchmarks/results/multi-model.json); ``benchmarks/run.py`` runs it as a suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
from common import RESULTS
from load import payloads
from load.measure import load_once
from models import example_input, model_dir, ort_session
from peers import start_server
from report import machine

SOURCE_MODEL = "mlp85k"
RELOAD_EVERY_S = 0.5


def distinct_models(source: Path, folder: Path, names: list[str]) -> dict[str, Path]:
    """One model folder per name: the source model with its weights nudged by a seed of its own, so no two
    files are alike (a server could otherwise share one copy)."""
    import onnx
    from onnx import numpy_helper

    made = {}
    for seed, name in enumerate(names):
        model = onnx.load(source / "model.onnx")
        rng = np.random.default_rng(seed)
        for init in model.graph.initializer:
            weights = numpy_helper.to_array(init)
            nudged = (weights + rng.normal(0, 1e-3, weights.shape)).astype(weights.dtype)
            init.CopyFrom(numpy_helper.from_array(nudged, init.name))
        (folder / name).mkdir(parents=True)
        onnx.save(model, folder / name / "model.onnx")
        made[name] = folder / name
    return made


BARE_SESSIONS = """
import sys, numpy as np, onnxruntime as ort
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096
def session(path):
    options = ort.SessionOptions(); options.intra_op_num_threads = 1
    made = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for rows in (1, 64):  # as Ferry warms a model: the smallest and the largest batch
        made.run(None, {"input-0": np.zeros((rows, 64), np.float32)})
    return made
kept = [session(sys.argv[1])]
before = rss()
kept += [session(path) for path in sys.argv[2:]]
print((rss() - before) / (len(sys.argv) - 2))
"""


def bare_session_bytes(folders: list[Path]) -> float:
    """What one more onnxruntime session of these models costs in a bare process (no server): the floor under
    any server that gives each model its own session."""
    import subprocess

    paths = [str(folder / "model.onnx") for folder in folders]
    done = subprocess.run(
        [sys.executable, "-c", BARE_SESSIONS, *paths], capture_output=True, text=True, check=True, timeout=300
    )
    return float(done.stdout.strip())


def weights_bytes(path: Path) -> int:
    """The bytes of a model's initializers: what any server that holds the model in memory must hold."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(init).nbytes for init in onnx.load(path).graph.initializer)


def mlserver_model(root: Path, name: str, source: Path) -> None:
    (root / name).mkdir(parents=True)
    settings = {"name": name, "implementation": "mlserver_onnx.OnnxModel", "parameters": {"uri": str(source)}}
    (root / name / "model-settings.json").write_text(json.dumps(settings))


def load(server, name: str) -> float:
    started = time.perf_counter()
    response = httpx.post(f"{server.http_url}/v2/repository/models/{name}/load", json={}, timeout=300)
    response.raise_for_status()
    return time.perf_counter() - started


def slope(xs: list[int], ys: list[int]) -> float:
    return float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 else float("nan")


def measure(kind: str, server, names: list[str], before_load, payload_dir: Path, seconds: float) -> dict:
    rss = {1: server.rss_bytes()}
    load_s = []
    for count, name in enumerate(names[1:], start=2):
        before_load(name)
        load_s.append(load(server, name))
        time.sleep(0.3)  # allocator settles
        rss[count] = server.rss_bytes()
    counts = sorted(rss)
    marginal = slope(counts[1:], [rss[c] for c in counts[1:]])
    x = example_input(ort_session(model_dir(SOURCE_MODEL)))  # the same input shape for every copy
    payload = payloads.build("v2json", names[0], "input-0", x)
    body_file = payload_dir / f"{kind}.body"
    body_file.write_bytes(payload.body)
    load_once(server, payload, body_file, 16, 1)  # warm-up
    scenarios = {}
    for scenario, target in (
        ("steady", None),
        ("another model reloads", names[1]),
        ("this model reloads", names[0]),
    ):
        stop = threading.Event()
        reloads, failures = [0], []

        def reloader(target=target, stop=stop, reloads=reloads, failures=failures):
            while target and not stop.wait(RELOAD_EVERY_S):
                try:
                    before_load(target, reload=True)
                    load(server, target)
                    reloads[0] += 1
                except Exception as exc:
                    failures.append(str(exc)[:200])

        thread = threading.Thread(target=reloader, daemon=True)
        thread.start()
        point = load_once(server, payload, body_file, 16, seconds)
        stop.set()
        thread.join(60)
        scenarios[scenario] = {**point, "reloads": reloads[0], "reload_failures": failures[:3]}
        print(f"{kind:9} {scenario:22} {point} reloads={reloads[0]}", file=sys.stderr)
    return {
        "rss_bytes_by_models": rss,
        "marginal_rss_bytes": marginal,
        "load_seconds": {"median": float(np.median(load_s)), "max": float(max(load_s)), "all": load_s},
        "scenarios": scenarios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=RESULTS / "multi-model.json")
    args = parser.parse_args()
    names = [f"m{i:02d}" for i in range(args.models)]
    results = {"models": args.models, "source_model": SOURCE_MODEL, "seconds": args.seconds, "servers": {}}
    with tempfile.TemporaryDirectory(prefix="ferry-mm-") as tmp:
        tmp = Path(tmp)
        # Ferry: the repository holds every model; explicit control, m00 loaded at start.
        root = tmp / "ferry-repository"
        folders = distinct_models(model_dir(SOURCE_MODEL), root, names)
        results["bare_session_bytes"] = bare_session_bytes(list(folders.values()))
        results["weights_bytes"] = weights_bytes(folders[names[0]] / "model.onnx")

        def ferry_prepare(name: str, reload: bool = False) -> None:
            if reload:  # Ferry reloads a model whose files changed; a load of the same files is a no-op
                for path in (root / name).rglob("*"):
                    os.utime(path)

        flags = (f"--model_repository={root}", "--model_control_mode=explicit", f"--load_model={names[0]}")
        server = start_server("ferry-batch", names[0], folders[names[0]], tmp, flags)
        try:
            results["servers"]["ferry"] = measure("ferry", server, names, ferry_prepare, tmp, args.seconds)
        finally:
            server.stop()
        single = start_server("ferry-batch", names[0], folders[names[0]], tmp)
        results["servers"]["ferry"]["one_model_server_rss_bytes"] = single.rss_bytes()
        single.stop()

        # MLServer, as benchmarks/run.py runs it (parallel_workers 0) and as Seldon Core 2's stock ServerConfig
        # runs it (1 worker process): its repository starts with m00; each further model's settings are written
        # before its load, naming the same model files Ferry loads.
        for label, workers in (("mlserver", 0), ("mlserver-1-worker", 1)):
            repository = tmp / f"{label}-repository"

            def mlserver_prepare(name: str, reload: bool = False, repository=repository) -> None:
                if not (repository / name).exists():
                    mlserver_model(repository, name, folders[name])

            flags = (f"--repository={repository}", f"--parallel_workers={workers}")
            server = start_server("mlserver", names[0], folders[names[0]], tmp, flags)
            try:
                results["servers"][label] = measure(label, server, names, mlserver_prepare, tmp, args.seconds)
            finally:
                server.stop()
            shutil.rmtree(repository, ignore_errors=True)
            single = start_server("mlserver", names[0], folders[names[0]], tmp, flags)
            results["servers"][label]["one_model_server_rss_bytes"] = single.rss_bytes()
            single.stop()
    ferry, mlserver = results["servers"]["ferry"], results["servers"]["mlserver-1-worker"]
    results["marginal_rss_ratio"] = ferry["marginal_rss_bytes"] / mlserver["marginal_rss_bytes"]
    results["machine"] = machine()
    results["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(
        f"marginal RSS per model: Ferry {ferry['marginal_rss_bytes'] / 2**20:.2f} MiB, "
        f"MLServer (1 worker, Seldon's default) {mlserver['marginal_rss_bytes'] / 2**20:.2f} MiB "
        f"(ratio {results['marginal_rss_ratio']:.3f})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
