"""Explain latency per engine on the demo churn model, and what each explanation costs the predictor.

    .venv-explainer/bin/python benchmarks/explainer_latency.py [--explanations 20] [--demo_dir .ferry/demo]

Starts Ferry's predictor (from ``.venv``) on the demo churn ONNX model and one ``ferry-explainer`` per engine
(AnchorTabular, KernelShap, shap; default settings, V2 to the predictor) on loopback, then explains
``--explanations`` different customers from the reference sample one after another (one client, as a person
asking "why?" would) and prints a markdown table: client-side p50/p95 latency, predictor requests and rows per
explanation (as the explainer reports them, checked against the predictor's own counters).

With two or more CPUs the predictor runs on CPU 0 and the explainer on CPU 1 (``taskset``), as separate pods
would. The demo is built with ``.venv`` into ``--demo_dir`` when missing (~30 s)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PREDICTOR_PYTHON = REPO / ".venv" / "bin" / "python"
ENGINES = ("AnchorTabular", "KernelShap", "shap")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(command: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu), *command]
    return command


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"not ready within {timeout} s: {url}")


def predictor_counts(url: str) -> tuple[float, float]:
    """(requests, rows) the predictor has served, from its Prometheus metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    requests = re.search(r'ferry_model_requests_total\{model="churn",outcome="ok"\} (\S+)', text)
    rows = re.search(r'ferry_batch_rows_sum\{model="churn"\} (\S+)', text)
    return float(requests[1]) if requests else 0.0, float(rows[1]) if rows else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ensure_demo(demo: Path) -> None:
    if (demo / "churn" / "reference.csv").exists() and (demo / "churn" / "onnx" / "model.onnx").exists():
        return
    print(f"building the demo into {demo} ...", file=sys.stderr)
    script = "import sys; from pathlib import Path; from ferry_tools.demo import build; build(Path(sys.argv[1]), quick=True)"
    subprocess.run([str(PREDICTOR_PYTHON), "-c", script, str(demo)], check=True, cwd=REPO, timeout=600)


REFERENCE = (
    "a plain kserve.Model in kserve.ModelServer running alibi's explainer, each predictor call a V1 request "
    "(benchmarks/peers/kserve_alibi_explainer.py), fitted alike"
)
REFERENCE_ENGINES = ("AnchorTabular", "KernelShap")
ANCHOR_THRESHOLD = 0.95  # the precision threshold both explainers use by default


def measure_reference(
    engine: str, predictor_port: int, demo: Path, instances, ferry_answers, args, spawn
) -> dict:
    """The reference explainer on the same predictor and customers: its explanations compared with Ferry's
    (the same prediction with the same anchor or both at the precision threshold; Shapley values within 1e-6),
    then its latency, one client, as for Ferry."""
    port, grpc_port = free_port(), free_port()
    process = spawn(
        pinned(
            [
                *(sys.executable, str(REPO / "benchmarks" / "peers" / "kserve_alibi_explainer.py")),
                *("--model_name=churn", f"--predictor_host=127.0.0.1:{predictor_port}", f"--engine={engine}"),
                *(
                    f"--reference_csv={demo / 'churn' / 'reference.csv'}",
                    f"--meta_json={demo / 'churn' / 'meta.json'}",
                ),
                *(f"--http_port={port}", f"--grpc_port={grpc_port}"),
            ],
            1,
        ),
        f"reference-{engine}",
    )
    url = f"http://127.0.0.1:{port}/v1/models/churn"
    wait_ready(url, process)
    latencies, differences, identical = [], [], 0
    with httpx.Client(timeout=120) as client:
        for i, instance in enumerate(instances):
            t0 = time.perf_counter()
            response = client.post(f"{url}:explain", json={"instances": [instance]})
            elapsed = time.perf_counter() - t0
            if response.status_code != 200:
                raise SystemExit(f"reference {engine}: {response.status_code} {response.text[:500]}")
            theirs, mine = response.json()["data"], ferry_answers[i]
            if engine == "AnchorTabular":
                # An anchor is a search result: with several engine instances in Ferry's pool (each seeded alike,
                # each drawing on its own), an instance may find another rule for the same prediction. Equal
                # answers: the same prediction, and the same anchor (the same conditions) or both at the precision
                # threshold.
                same_anchor = set(theirs["anchor"]) == set(mine["anchor"])  # the order is the search's
                identical += same_anchor
                differences.append(
                    not same_anchor
                    and not (
                        theirs["raw"]["prediction"] == mine["raw"]["prediction"]
                        and min(np.mean(theirs["precision"]), np.mean(mine["precision"])) >= ANCHOR_THRESHOLD
                    )
                )
            else:
                gap = np.max(np.abs(np.asarray(theirs["shap_values"]) - np.asarray(mine["shap_values"])))
                differences.append(bool(gap > 1e-6))
            if i >= args.warmup:
                latencies.append(elapsed * 1000)
    process.terminate()
    process.wait(30)
    if any(differences):
        raise SystemExit(
            f"reference {engine}: {sum(differences)} of {len(instances)} explanations differ from Ferry's"
        )
    return {
        "engine": engine,
        "p50": statistics.median(latencies),
        "p95": percentile(latencies, 95),
        "answers": f"{len(instances)} of {len(instances)}"
        + (f" ({identical} with the identical anchor)" if engine == "AnchorTabular" else ""),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo_dir", default=str(REPO / ".ferry" / "demo"))
    parser.add_argument("--explanations", type=int, default=20, help="explanations measured per engine")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--predictor_protocol", default="v2", choices=["v1", "v2"])
    parser.add_argument("--json", type=Path, help="also write the results here (benchmarks/run.py's suite)")
    args = parser.parse_args()

    demo = Path(args.demo_dir).resolve()
    ensure_demo(demo)
    with open(demo / "churn" / "reference.csv") as handle:
        rows = [[float(v) for v in row] for row in list(csv.reader(handle))[1:]]
    instances = [rows[i % len(rows)] for i in range(args.warmup + args.explanations)]

    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "ferry-explainer-bench"
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []

    def spawn(command: list[str], name: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        processes.append(process)
        return process

    results, answers, reference = [], {}, {}
    try:
        port = free_port()
        predictor_url = f"http://127.0.0.1:{port}"
        predictor = spawn(
            pinned(
                [
                    str(PREDICTOR_PYTHON),
                    "-m",
                    "ferry",
                    f"--model_dir={demo / 'churn' / 'onnx'}",
                    "--model_name=churn",
                    f"--http_port={port}",
                    "--grpc_port=0",
                    "--host=127.0.0.1",
                    "--max_batch_size=4096",  # a perturbation set runs as one batch
                ],
                0,
            ),
            "predictor",
        )
        wait_ready(f"{predictor_url}/v2/health/ready", predictor)
        for engine in args.engines.split(","):
            eport = free_port()
            url = f"http://127.0.0.1:{eport}"
            started = time.monotonic()
            explainer = spawn(
                pinned(
                    [
                        sys.executable,
                        "-m",
                        "ferry_explain",
                        "--model_name=churn",
                        f"--http_port={eport}",
                        "--host=127.0.0.1",
                        f"--predictor_host=127.0.0.1:{port}",
                        f"--predictor_protocol={args.predictor_protocol}",
                        f"--explainer_type={engine}",
                        f"--reference_uri={demo / 'churn' / 'reference.csv'}",
                        "--log_level=warning",
                    ],
                    1,
                ),
                f"explainer-{engine}",
            )
            wait_ready(f"{url}/v2/health/ready", explainer)
            startup_s = time.monotonic() - started
            latencies, requests, rows_sent, answers[engine] = [], [], [], []
            before = predictor_counts(predictor_url)
            with httpx.Client(timeout=120) as client:
                for i, instance in enumerate(instances):
                    t0 = time.perf_counter()
                    response = client.post(f"{url}/api/v1.0/explain", json={"data": {"ndarray": [instance]}})
                    elapsed = time.perf_counter() - t0
                    if response.status_code != 200:
                        raise SystemExit(f"{engine}: {response.status_code} {response.text[:500]}")
                    payload = response.json()
                    answers[engine].append(payload.get("data"))
                    requests.append(payload["predictor_requests"])
                    rows_sent.append(payload["predictor_rows"])
                    if i >= args.warmup:
                        latencies.append(elapsed * 1000)
            after = predictor_counts(predictor_url)
            seen = (after[0] - before[0], after[1] - before[1])
            if seen != (sum(requests), sum(rows_sent)):
                print(
                    f"warning: {engine}: predictor counted {seen}, explainer reported "
                    f"{(sum(requests), sum(rows_sent))}",
                    file=sys.stderr,
                )
            results.append(
                {
                    "engine": engine,
                    "p50": statistics.median(latencies),
                    "p95": percentile(latencies, 95),
                    "requests": statistics.mean(requests[args.warmup :]),
                    "requests_max": max(requests[args.warmup :]),
                    "rows": statistics.mean(rows_sent[args.warmup :]),
                    "startup_s": startup_s,
                }
            )
            explainer.terminate()
            explainer.wait(30)
        for engine in [e for e in args.engines.split(",") if e in REFERENCE_ENGINES]:
            reference[engine] = measure_reference(engine, port, demo, instances, answers[engine], args, spawn)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)

    print(
        f"\nExplain latency, demo churn model, {args.explanations} explanations per engine (+{args.warmup} warm-up), "
        f"one client, predictor protocol {args.predictor_protocol}, {platform.machine()} "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| engine | p50 ms | p95 ms | predictor requests / explanation (mean, max) | rows / explanation | "
        "start-up s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['engine']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['requests']:.1f} ({r['requests_max']}) | "
            f"{r['rows']:.0f} | {r['startup_s']:.1f} |"
        )
    if reference:
        print(
            f"\nReference: {REFERENCE}\n\n| engine | p50 ms | p95 ms | answers equal |\n|---|---:|---:|---|"
        )
        for engine, r in reference.items():
            print(f"| {engine} | {r['p50']:.1f} | {r['p95']:.1f} | {r['answers']} |")
    if args.json:
        record = {
            "reference_shape": REFERENCE,
            "reference": reference,
            "explanations": args.explanations,
            "warmup": args.warmup,
            "predictor_protocol": args.predictor_protocol,
            "load_average": os.getloadavg()[0],
            "engines": results,
        }
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
