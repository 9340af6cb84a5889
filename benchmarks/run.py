"""Ferry against KServe, MLServer, Triton and a hand-written FastAPI route: the whole benchmark in one command.

    .venv/bin/python benchmarks/run.py                      # the full run: what benchmarks/RESULTS.md holds
    .venv/bin/python benchmarks/run.py --quick              # development: every case and suite, briefly
    .venv/bin/python benchmarks/run.py --cases small-v2json,small-grpc --peers ferry-batch,kserve-stock --suites none
    .venv/bin/python benchmarks/run.py --url http://HOST --model_name NAME --cases small-v2json  # any target
    .venv/bin/python benchmarks/run.py --report             # only rewrite RESULTS.md and the plots

A run is the load-test cases, then the suites (in-process engine overhead, request cost without sockets, many
models per server, the transformer and the explainer against their reference shapes, the batcher's cost to one
client over HTTP, gRPC against REST on one server, batching inside MLServer), each suite a script of its own run by the Python of its environment. The full run (no --quick, --cases, --peers,
--suites or --url) clears benchmarks/results and regenerates RESULTS.md and plots/ from what it measured alone,
recording the commit, date, machine, packages and command in results/run.json. Every other run writes to
benchmarks/.work/results and .work/RESULTS-dev.md instead, so development numbers never mix with the full run's.

Method: each server runs pinned to CPU 0 (``taskset -c 0``, its child processes included), the load generator
on CPU 1, loopback only. HTTP load: wrk + benchmarks/lua/post.lua. gRPC load: h2load sending framed ModelInfer
messages. Every server's answer is checked once against in-process onnxruntime (1e-4) before it is measured.
Each point keeps the best of its runs; the peak RSS of the server's process group is sampled during each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
from cases import CASES, QUICK, Case
from common import (
    BENCH,
    DEV_PLOTS,
    DEV_REPORT,
    DEV_RESULTS,
    EXPLAINER_PY,
    FERRY_PY,
    PLOTS,
    REPO,
    REPORT,
    RESULTS,
    SERVER_CPU,
    TRITON_PY,
    mlserver_python,
)
from load import payloads
from load.measure import check, load_once, measure_point, summarise_profile
from models import example_input, model_dir, ort_session, raw_ort
from peers import PEERS, external, start_server
from report import commit, machine, write_report

# ----------------------------------------------------------------------------------------------------- cases


def run_cases(cases: list[Case], args, log_dir: Path) -> None:
    """Group cases by model so that each server starts once per model, then measure every point."""
    runs, seconds = (1, 2.0) if args.quick else (args.runs, args.seconds)
    models = {}
    for case in cases:
        models.setdefault(case.model, []).append(case)
    for model, model_cases in models.items():
        directory = model_dir(model)
        session = ort_session(directory)
        x = example_input(session)
        expected = session.run(None, {session.get_inputs()[0].name: x})[0]
        input_name = session.get_inputs()[0].name
        started = time.time()
        records = {case.name: new_record(case, args, runs, seconds) for case in model_cases}
        if not args.url:
            for record in records.values():
                record["raw_onnxruntime_rows_per_s"] = raw_ort(directory)
        peer_names = [args.url and "external"] if args.url else []
        if not args.url:
            for case in model_cases:
                peer_names += [
                    p for p in case.peers if p not in peer_names and (not args.peers or p in args.peers)
                ]
        for peer_name in peer_names:
            wanted = [c for c in model_cases if args.url or peer_name in c.peers]
            if not wanted:
                continue
            name = args.model_name if args.url else model
            try:
                server = external(args.url) if args.url else start_server(peer_name, name, directory, log_dir)
            except Exception as exc:
                print(f"!! {peer_name} ({model}): did not start: {exc}", file=sys.stderr)
                for case in wanted:
                    records[case.name]["peers"][peer_name] = {"error": f"did not start: {str(exc)[-600:]}"}
                continue
            try:
                for case in wanted:
                    records[case.name]["peers"][peer_name] = measure_peer(
                        server, peer_name, case, name, input_name, x, expected, runs, seconds, args, log_dir
                    )
            finally:
                server.stop()
        for case in model_cases:
            record = records[case.name]
            record["elapsed_s"] = time.time() - started
            record["load_after"] = os.getloadavg()
            suffix = "-external" if args.url else ""
            (args.out / f"{case.name}{suffix}.json").write_text(json.dumps(record, indent=2))


def new_record(case: Case, args, runs: int, seconds: float) -> dict:
    return {
        "case": case.name,
        "title": case.title,
        "model": case.model,
        "kind": case.kind,
        "concurrency": list(
            case.concurrency if not args.quick else case.concurrency[:: len(case.concurrency) - 1 or 1]
        ),
        "runs": runs,
        "seconds": seconds,
        "quick": bool(args.quick),
        "url": args.url or None,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_before": os.getloadavg(),
        "peers": {},
    }


def measure_peer(server, peer_name, case, model_name, input_name, x, expected, runs, seconds, args, log_dir):
    peer = PEERS.get(peer_name)
    if peer is not None and case.kind not in peer.kinds:
        return {"error": f"does not serve {case.kind}"}
    payload = payloads.build(case.kind, model_name, input_name, x)
    body = payloads.grpc_frame(payload.body) if case.kind == "grpc" else payload.body
    body_file = log_dir / f"{case.name}.body"
    body_file.write_bytes(body)
    entry = {"label": peer.label if peer else f"external: {server.http_url}", "points": {}}
    if peer is None or peer.check:
        problem = check(server, payload, expected)
        entry["correct"] = not problem
        if problem:
            print(f"!! {peer_name} {case.name}: wrong answer: {problem}", file=sys.stderr)
            entry["error"] = f"wrong answer: {problem}"
            return entry
    concurrency = case.concurrency if not args.quick else case.concurrency[:: len(case.concurrency) - 1 or 1]
    try:  # warm-up: connections, allocator, caches, the batcher's timings
        load_once(server, payload, body_file, 16, 1)
    except Exception as exc:
        entry["error"] = f"load generator failed: {str(exc)[-600:]}"
        return entry
    for connections in concurrency:
        profile_to = None
        if args.profile and (case.name, peer_name) in PROFILED and connections == 64:
            profile_to = args.out / f"profile-{peer_name}-{case.name}-c64.txt"
        try:
            point = measure_point(
                server, payload, body_file, model_name, connections, runs, seconds, profile_to
            )
        except Exception as exc:
            point = {"error": str(exc)[-600:]}
        entry["points"][str(connections)] = point
        shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in point.items() if k != "runs_rps"}
        print(f"{case.name:15} {peer_name:18} c={connections:<4} {shown}", file=sys.stderr)
    if profile_to is not None and profile_to.exists():
        entry["profile"] = summarise_profile(profile_to, entry["points"]["64"].get("rps"))
    return entry


# ------------------------------------------------------------------------------------------ py-spy budget

# --profile (always on in the full run): py-spy at c=64 on these (case, peer): Ferry's lean server, and Ferry
# inside each host, whose budgets show where the host's time goes.
PROFILED = {
    ("small-v2json", "ferry-batch"),
    ("small-grpc", "ferry-batch"),
    ("small-v2json", "ferry-kserve"),
    ("small-grpc", "ferry-kserve"),
    ("small-grpc", "ferry-mlserver"),
    ("small-v2json", "ferry-mlserver"),
    ("large-v2json", "ferry-kserve"),
    ("large-v2json", "ferry-mlserver"),
    ("image-v2json", "ferry-mlserver"),
    ("image-v2binary", "ferry-kserve"),
}

# ------------------------------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class Suite:
    """A benchmark script of its own, run after the load-test cases; it writes results/<name>.json."""

    name: str
    python: Path
    script: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    pin: str | None = None  # taskset CPU list for the whole script (in-process measurements)
    timeout_s: int = 1800
    needs_gpu: bool = False  # skipped (and recorded as not measured) on a machine without nvidia-smi


SUITES = (
    Suite("engine", FERRY_PY, "engine_overhead.py", ("--seconds", "4", "--processes", "5"), ("--seconds", "1"), pin=SERVER_CPU),
    Suite("request_cost", FERRY_PY, "request_cost.py", ("--seconds", "2"), ("--seconds", "0.5"), pin=SERVER_CPU),
    Suite("multi-model", FERRY_PY, "multi_model.py", (), ("--models", "4", "--seconds", "2")),
    Suite("transformer", FERRY_PY, "transformer_latency.py", ("--duration", "6"), ("--quick", "--duration", "2", "--runs", "1")),
    Suite("explainer", EXPLAINER_PY, "explainer_latency.py", (), ("--explanations", "4", "--warmup", "1")),
    Suite("one-client", FERRY_PY, "one_client.py", ("--rounds", "8", "--seconds", "2"), ("--rounds", "2", "--seconds", "1")),
    Suite("grpc-rest", FERRY_PY, "grpc_rest.py", ("--rounds", "8", "--seconds", "2"), ("--rounds", "2", "--seconds", "1")),
    Suite("ceiling", FERRY_PY, "ceiling.py", ("--rounds", "6", "--seconds", "2"), ("--rounds", "2", "--seconds", "1")),
    Suite("hosts", FERRY_PY, "hosts.py", ("--rounds", "6", "--seconds", "2"), ("--rounds", "2", "--seconds", "1", "--cases", "small-v2json,small-grpc")),
    Suite("mlserver-batching", mlserver_python(), "mlserver_batching.py", ("--duration", "6"), ("--duration", "2")),
    Suite("gpu", FERRY_PY, "gpu.py", (), ("--quick",), needs_gpu=True),
)  # fmt: skip


def cpu_busy(cpu: str, seconds: float) -> float:
    """The share of ``seconds`` that CPU ``cpu`` spent on anything but idling (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            line = next(row for row in stat if row.startswith(f"cpu{cpu} "))
        ticks = [int(field) for field in line.split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    return 1 - (idle2 - idle) / max(1, total2 - total)


def wait_for_quiet(cpu: str, busy_below: float = 0.05, timeout_s: float = 90.0) -> dict:
    """Before an in-process measurement: wait until CPU ``cpu`` is idle (a server of the cases still shutting
    down, or anything else on it, would slow the suite's Python and skew its figures); what was found is recorded."""
    started = time.monotonic()
    busy = cpu_busy(cpu, 1.0)
    while busy >= busy_below and time.monotonic() - started < timeout_s:
        busy = cpu_busy(cpu, 1.0)
    return {"cpu_busy_before": round(busy, 3), "waited_s": round(time.monotonic() - started, 1)}


def run_suites(suites: list[Suite], args) -> dict:
    """Each suite in turn, each after its CPU went quiet; what each did (command, seconds, exit status, how busy
    the CPU was before it) goes into run.json."""
    done = {}
    for suite in suites:
        if suite.needs_gpu and shutil.which("nvidia-smi") is None:
            done[suite.name] = {"command": suite.script, "seconds": 0, "skipped": "no GPU on this machine"}
            continue
        quiet = wait_for_quiet(suite.pin or SERVER_CPU)
        command = [str(suite.python), str(BENCH / suite.script), *(suite.quick if args.quick else suite.full)]
        command += ["--json", str(args.out / f"{suite.name}.json")]
        if suite.pin:
            command = ["taskset", "-c", suite.pin, *command]
        print(f"==> suite {suite.name}: {' '.join(command)}", file=sys.stderr)
        started = time.time()
        try:
            rc = subprocess.run(command, cwd=REPO, timeout=suite.timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        done[suite.name] = {
            "command": " ".join(command),
            "seconds": round(time.time() - started, 1),
            "rc": rc,
            **quiet,
        }
        if rc != 0:
            print(f"!! suite {suite.name} failed: {rc}", file=sys.stderr)
    return done  # ------------------------------------------------------------------------------------------------------ main


def ensure_triton_env() -> None:
    """Triton's peer runs from its own environment (PyTriton's pins clash with Ferry's); made here on a machine
    that lacks it, so that a full run never leaves Triton out for want of a set-up step."""
    if TRITON_PY.exists():
        return
    print(f"==> creating {TRITON_PY.parents[1]} (nvidia-pytriton 0.7.0, onnxruntime 1.32.0)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(TRITON_PY.parents[1])], check=True)
    subprocess.run(
        [str(TRITON_PY), "-m", "pip", "install", "-q", "nvidia-pytriton==0.7.0", "onnxruntime==1.32.0"],
        check=True,
        timeout=1800,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="development: 1 run of 2 s, c=1 and 64, short suites"
    )
    parser.add_argument(
        "--cases", default="", help=f"comma-separated, from: {', '.join(c.name for c in CASES)}"
    )
    parser.add_argument("--peers", default="", help=f"comma-separated, from: {', '.join(PEERS)}")
    parser.add_argument(
        "--suites", default=None, help=f"comma-separated, or none, from: {', '.join(s.name for s in SUITES)}"
    )
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument(
        "--url", default="", help="measure this server instead (gRPC: BENCH_GRPC_ADDRESS=host:port)"
    )
    parser.add_argument("--model_name", default="model", help="with --url: the model's name there")
    parser.add_argument("--profile", action="store_true", help="py-spy at c=64 (always on in the full run)")
    parser.add_argument("--report", action="store_true", help="only rebuild RESULTS.md and plots")
    args = parser.parse_args()
    args.peers = [p for p in args.peers.split(",") if p]
    full = not (args.quick or args.cases or args.peers or args.url or args.suites is not None)
    args.out, report, plots = (RESULTS, REPORT, PLOTS) if full else (DEV_RESULTS, DEV_REPORT, DEV_PLOTS)
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    if args.report:
        write_report(RESULTS, REPORT, PLOTS)
        return
    for tool in ("wrk", "h2load", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool}: apt-get install -y wrk nghttp2-client util-linux")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs 2 CPUs: the server on CPU 0, the load generator on CPU 1")
    if not args.url and (not args.peers or "triton" in args.peers):
        ensure_triton_env()
    wanted = [c for c in args.cases.split(",") if c] or (
        list(QUICK) if args.quick else [c.name for c in CASES]
    )
    unknown = set(wanted) - {c.name for c in CASES}
    suites = [s for s in SUITES if args.suites is None or s.name in args.suites.split(",")]
    unknown |= set((args.suites or "").split(",")) - {s.name for s in SUITES} - {"", "none"}
    if unknown:
        sys.exit(f"unknown cases or suites: {', '.join(sorted(unknown))}")
    args.profile = args.profile or full
    # Every file of the results folder is this run's: what an earlier run left there is gone first.
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    started = time.time()
    info = {
        **commit(),
        "mode": "full" if full else "quick" if args.quick else "partial",
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_before": os.getloadavg()[0],
        **machine(),
    }
    print(f"==> load average {os.getloadavg()[0]:.2f}; cases: {', '.join(wanted)}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        run_cases([c for c in CASES if c.name in wanted], args, Path(tmp))
    info["suites"] = run_suites(suites, args) if not args.url else {}
    info["elapsed_s"] = round(time.time() - started)
    (args.out / "run.json").write_text(json.dumps(info, indent=2))
    write_report(args.out, report, plots)
    print(f"==> done in {time.time() - started:.0f} s; see {report}", file=sys.stderr)


if __name__ == "__main__":
    main()
