"""``ferry``: the project's own commands.

- ``ferry demo --out DIR``  build the demo artifacts (models, MLflow registry, feature data) into DIR.
- ``ferry up``              the local stack on loopback: predictor (8080 HTTP / 8081 gRPC), Feast transformer (8090)
                            and explainer (8100) for the demo churn model; builds what is missing first.
- ``ferry up --monitoring`` the same, plus Prometheus on 127.0.0.1:9090 scraping it with k8s/monitoring's rules.
- ``ferry up --check``      send the example clients' requests through a running stack; exit 0 only if all answer right.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DEMO_DIR = REPO / ".ferry" / "demo"


@dataclass
class Component:
    name: str
    command: list[str]
    ready_url: str
    endpoints: list[str]


def _venv_bin(venv: str, program: str) -> str:
    return str(REPO / venv / "bin" / program)


def stack(demo: Path, args: argparse.Namespace) -> list[Component]:
    """The processes of the local stack, each started from its own image's environment."""
    predictor = f"http://127.0.0.1:{args.predictor_port}"
    explainer_url = f"http://127.0.0.1:{args.explainer_port}"
    has_explainer = _module_exists(".venv-explainer", "ferry_explain.__main__")
    components = [
        Component(
            "predictor",
            [
                _venv_bin(".venv", "ferry-predictor"),
                "--model_name=churn",
                f"--model_dir={demo / 'churn' / 'onnx'}",
                f"--http_port={args.predictor_port}",
                f"--grpc_port={args.predictor_grpc_port}",
                "--host=127.0.0.1",
                # Seldon clients send explain to the predictor's address too (examples/seldon/seldon_client.py).
                *([f"--explainer_url={explainer_url}"] if has_explainer else []),
            ],
            f"{predictor}/v2/health/ready",
            [
                f"{predictor}/v2/models/churn/infer   (V2 REST; gRPC on 127.0.0.1:{args.predictor_grpc_port})",
                f"{predictor}/v1/models/churn:predict (KServe V1)",
                f"{predictor}/api/v1.0/predictions    (Seldon)",
                f"{predictor}/api/v1.0/explain        (Seldon, forwarded to the explainer)",
                f"{predictor}/metrics",
            ],
        )
    ]
    transformer_bin = _venv_bin(".venv", "ferry-transformer")
    if _module_exists(".venv", "ferry_feast.__main__"):
        url = f"http://127.0.0.1:{args.transformer_port}"
        components.append(
            Component(
                "transformer",
                [
                    transformer_bin,
                    "--model_name=churn-transformer",
                    f"--predictor_host=127.0.0.1:{args.predictor_port}",
                    "--predictor_model_name=churn",
                    "--predictor_protocol=v2",
                    f"--http_port={args.transformer_port}",
                    "--grpc_port=0",
                    f"--feature_repo={demo / 'feature_repo'}",
                    "--online_store=sqlite",
                    "--prepare",
                ],
                f"{url}/v2/health/ready",
                [f"{url}/v1/models/churn-transformer:predict  (customer ids in)"],
            )
        )
    if has_explainer:
        url = explainer_url
        components.append(
            Component(
                "explainer",
                [
                    _venv_bin(".venv-explainer", "ferry-explainer"),
                    "--model_name=churn",
                    f"--predictor_host=127.0.0.1:{args.predictor_port}",
                    "--predictor_protocol=v2",
                    f"--http_port={args.explainer_port}",
                    "--explainer_type=AnchorTabular",
                    f"--reference_uri={demo / 'churn' / 'reference.csv'}",
                ],
                f"{url}/v2/health/ready",
                [f"{url}/v1/models/churn:explain  (KServe)", f"{url}/api/v1.0/explain  (Seldon)"],
            )
        )
    return components


def _module_exists(venv: str, module: str) -> bool:
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        return False
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure_demo(demo: Path) -> None:
    if (demo / "manifest.json").exists():
        return
    from ferry_tools.demo import build

    print(f"==> building demo artifacts into {demo}")
    build(demo)


def _wait_ready(component: Component, process: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"ferry up: {component.name} exited with code {process.returncode}")
        try:
            if httpx.get(component.ready_url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"ferry up: {component.name} not ready within {timeout:.0f} s ({component.ready_url})")


def _start_monitoring(demo: Path, args: argparse.Namespace, processes: list) -> None:
    """Prometheus beside the stack (k8s/monitoring's rules, the targets labelled as the PodMonitors label pods),
    its data under the demo folder. Registered in ``processes`` so Ctrl-C stops it with the rest."""
    from ferry_tools import monitoring

    targets = {
        f"churn-{component.name}": (component.ready_url.split("/")[2], component.name)
        for component, _ in processes
    }
    print(f"==> starting prometheus on 127.0.0.1:{args.prometheus_port}")
    try:
        prometheus = monitoring.start_prometheus(
            demo.parent / "prometheus", args.prometheus_port, targets, scrape_interval="5s"
        )
    except (FileNotFoundError, RuntimeError) as exc:
        raise SystemExit(f"ferry up --monitoring: {exc}") from None
    endpoints = [
        f"{prometheus.url}   (scraping the stack every 5 s, Ferry's rules loaded)",
        f"{prometheus.url}/graph?g0.expr=namespace_job_model:ferry_requests:rate5m",
    ]
    processes.append(
        (Component("prometheus", [], f"{prometheus.url}/-/ready", endpoints), prometheus.process)
    )


def up(args: argparse.Namespace) -> int:
    demo = Path(args.demo_dir)
    if args.check:
        from ferry_tools.stack_check import run_checks

        return run_checks(args)
    ensure_demo(demo)
    processes: list[tuple[Component, subprocess.Popen]] = []

    def stop_all(*_):
        for _, process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
    # Ctrl-C is an orderly stop, also where the shell started us with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for component in stack(demo, args):
            print(f"==> starting {component.name}")
            process = subprocess.Popen(
                component.command, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
            )
            processes.append((component, process))
            _wait_ready(component, process, args.timeout)
        if args.monitoring:
            _start_monitoring(demo, args, processes)
        print("\nFerry's local stack is up:")
        for component, _ in processes:
            print(f"  {component.name}:")
            for endpoint in component.endpoints:
                print(f"    {endpoint}")
        print(
            "\nTry:\n"
            f"  curl -s -XPOST http://127.0.0.1:{args.predictor_port}/v2/models/churn/infer \\\n"
            '    -d \'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[[24,65.5,1572.0,1]]}]}\'\n'
            "  ferry up --check      (from another shell: the example clients' requests against this stack)\n"
            "Ctrl-C stops everything."
        )
        while all(process.poll() is None for _, process in processes):
            time.sleep(0.5)
        failed = [c.name for c, p in processes if p.poll() is not None]
        print(f"ferry up: {', '.join(failed)} stopped; shutting down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        print("\n==> stopping")
        return 0
    finally:
        stop_all()


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show at once, in a terminal or a CI log
    parser = argparse.ArgumentParser(
        prog="ferry", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build the demo artifacts")
    demo.add_argument("--out", default=str(DEFAULT_DEMO_DIR), help="output directory (default .ferry/demo)")
    demo.add_argument("--quick", action="store_true", help="small, fast versions (for tests)")
    fill = sub.add_parser("bucket", help="lay the demo out as the object store the k8s/ manifests read")
    fill.add_argument("--demo_dir", "--demo-dir", default=str(DEFAULT_DEMO_DIR))
    fill.add_argument("--out", required=True, help="a folder per bucket is written here (models/, mlflow/)")
    run = sub.add_parser("up", help="serve the local stack")
    run.add_argument("--demo_dir", "--demo-dir", default=str(DEFAULT_DEMO_DIR))
    run.add_argument("--predictor_port", type=int, default=8080)
    run.add_argument("--predictor_grpc_port", type=int, default=8081)
    run.add_argument("--transformer_port", type=int, default=8090)
    run.add_argument("--explainer_port", type=int, default=8100)
    run.add_argument(
        "--timeout", type=float, default=300, help="seconds each component may take to get ready"
    )
    run.add_argument(
        "--check", action="store_true", help="check a running stack with the example clients' requests"
    )
    run.add_argument(
        "--monitoring",
        action="store_true",
        help="also start Prometheus (the `prometheus` program) scraping the stack, with k8s/monitoring's rules",
    )
    run.add_argument("--prometheus_port", type=int, default=9090)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ferry_tools.demo import build

        result = build(Path(args.out), quick=args.quick)
        print(json.dumps({k: v for k, v in result.items() if k != "files"}, indent=2, default=str)[:2000])
        return 0
    if args.command == "bucket":
        from ferry_tools.demo import bucket

        for uri, folder in bucket.write(Path(args.demo_dir), Path(args.out)).items():
            print(f"{uri:45} <- {folder}")
        return 0
    return up(args)


if __name__ == "__main__":
    sys.exit(main())
