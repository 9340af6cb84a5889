"""benchmarks/RESULTS.md and the plots, rebuilt whole from every results file present."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from cases import CASES
from common import BENCH, FERRY_PY, PLOTS, RESULTS, TRITON_PY, mlserver_python
from peers import PEERS

# ------------------------------------------------------------------------------------------------ reporting


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    model = re.search(r"Model name:\s+(.*)", lscpu)
    versions = {}
    for python, packages in (
        (FERRY_PY, ("kserve", "onnxruntime", "fastapi", "uvicorn", "grpcio", "orjson", "numpy", "torch")),
        (mlserver_python(), ("mlserver",)),
        (TRITON_PY, ("nvidia-pytriton",)),
    ):
        if Path(python).exists():
            code = (
                "import importlib.metadata as m, json, sys; v = {}\n"
                "for p in sys.argv[1:]:\n"
                "    try: v[p] = m.version(p)\n"
                "    except Exception: v[p] = None\n"
                "print(json.dumps(v))"
            )
            done = subprocess.run(
                [str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60
            )
            with contextlib.suppress(json.JSONDecodeError):
                versions.update(json.loads(done.stdout))
    tools = {}
    for tool, flag in (("wrk", "-v"), ("h2load", "--version")):
        done = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
        tools[tool] = (done.stdout + done.stderr).strip().splitlines()[0] if shutil.which(tool) else None
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": versions,
        "tools": tools,
    }


def fmt(value, scale=1.0, digits=0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:,.{digits}f}"


def point(records: dict, case: str, peer: str, connections: int) -> dict:
    return records.get(case, {}).get("peers", {}).get(peer, {}).get("points", {}).get(str(connections), {})


def ratio_row(name: str, numerator, denominator, target: float, op: str = ">=") -> tuple:
    value = numerator / denominator if numerator and denominator else None
    return target_row(name, value, target, op)


def target_row(name: str, value, target: float, op: str = ">=") -> tuple:
    if value is None:
        return (name, None, target, op, "n/a (not measured)")
    ok = value >= target if op == ">=" else value <= target
    return (name, value, target, op, "PASS" if ok else "MISS")


def interpolate(table: dict, batch: float) -> float | None:
    """Raw onnxruntime rows/s at a (fractional) batch size, linear in log2(batch) between measured sizes."""
    sizes = sorted(int(k) for k in table)
    if not sizes or batch is None:
        return None
    batch = min(max(batch, sizes[0]), sizes[-1])
    for low, high in itertools.pairwise(sizes):
        if low <= batch <= high:
            t = (math.log2(batch) - math.log2(low)) / (math.log2(high) - math.log2(low))
            return table[str(low)] + t * (table[str(high)] - table[str(low)])
    return table[str(sizes[0])]


MISS_NOTES_LARGE = [
    "Where a target is missed, why (the per-request budgets below are py-spy profiles of the runs above):",
    "",
    "- *rows/s vs raw onnxruntime (1.6M MLP, one row per request)*: the server and the model share one core, so",
    "  a request costs the model's time per row plus everything else, and 0.6 of raw leaves everything else",
    "  under 20 µs (split per case below). Ferry's HTTP/1.1 transport alone, answering fixed JSON and parsing",
    "  nothing, takes 14 of them (the http-echo peer), bare uvicorn twice that: the target needs the V2 parse,",
    "  checks, batching and the answer in a few µs, in Python, on the core that also runs the model. Without",
    "  sockets they take 16-34 µs (`benchmarks/request_cost.py`, table 'Request handling without sockets'), and",
    "  a served request costs ~10 µs more than transport and handling apart (`perf record` of the server under",
    "  this load, 2026-12-01: libpython 38% of the core, onnxruntime 38%, the kernel 13%). Batches are full (the",
    "  batcher reads what has arrived before an inline batch: 64 rows, not 24) and JSON floats reach numpy",
    "  without Python floats (simdjson); on 2026-12-01 08:47, before both, the ratios were 0.26 and 0.43.",
]
MISS_NOTES_REST = [
    "- *Ferry / MLServer (small V2 JSON)*: close to 10x, and MLServer's own rate moves about 10% between runs",
    "  here (2,076-2,283 req/s at c=64 on 2026-12-01).",
]


def request_cost() -> dict:
    """``benchmarks/request_cost.py``'s figures (µs of CPU per request besides the model, no sockets), if any."""
    path = RESULTS / "request_cost.json"
    return json.loads(path.read_text()) if path.exists() else {}


def large_budget(records: dict) -> list[str]:
    """Per request on the 1.6M MLP at c=64: the model's time per row in the server, Ferry's transport alone
    (http-echo), the handling without sockets (request_cost.py), and what none of them accounts for."""
    lines = []
    echo = point(records, "small-v2json", "http-echo", 64).get("rps")
    handling = request_cost().get("us_per_request", {})
    for case in ("large-v2json", "large-v2binary"):
        large = point(records, case, "ferry-batch", 64)
        model_us, rps = large.get("model_us_per_row"), large.get("rps")
        raw = interpolate(
            records.get(case, {}).get("raw_onnxruntime_rows_per_s", {}), large.get("rows_per_batch")
        )
        if not (model_us and rps and raw):
            continue
        per_request, rest = 1e6 / rps, 1e6 / rps - model_us
        line = (
            f"  - {case}, c=64: {per_request:.1f} µs of the core per request = the model {model_us:.1f} µs per row "
            f"in the server (raw onnxruntime at {large['rows_per_batch']:.0f} rows: {1e6 / raw:.1f} µs) + "
            f"{rest:.1f} µs for the rest"
        )
        handled = handling.get(f"mlp1.6m {case.split('-')[1]}", {}).get(LAST_LAYER)
        if echo and handled:
            line += (
                f" (transport alone {1e6 / echo:.1f}, handling without sockets {handled:.1f}, unaccounted "
                f"{rest - 1e6 / echo - handled:.1f})"
            )
        lines.append(
            f"{line}; 0.6 of raw leaves the rest {1e6 / (0.6 * raw) - model_us:.1f} µs at this model time."
        )
    return lines


LAST_LAYER = "RestApp.handle (all of it)"  # request_cost.py's cumulative figure


def request_cost_section() -> list[str]:
    cost = request_cost()
    if not cost:
        return []
    table = cost["us_per_request"]
    layers = list(next(iter(table.values())))
    return [
        "## Request handling without sockets",
        "",
        f"`{cost['command']}`; {cost['when']}; {cost['machine']}; load average before {cost['load_average']}. "
        f"µs of CPU per request besides the model's own time, {cost['callers']} concurrent callers on one event "
        "loop, cumulative from the model call (predictor checks + batcher) to all of `RestApp.handle` (routing, "
        "request id, metrics); lowest of three runs.",
        "",
        "| case | " + " | ".join(layers) + " |",
        "|---|" + "---:|" * len(layers),
        *(
            f"| {case} | " + " | ".join(f"{v:.1f}" for v in row.values()) + " |"
            for case, row in table.items()
        ),
        "",
    ]


def targets(records: dict) -> list[tuple]:
    rps = lambda case, peer, c=64: point(records, case, peer, c).get("rps")  # noqa: E731
    p50 = lambda case, peer, c=1: point(records, case, peer, c).get("p50")  # noqa: E731
    rows = []
    ferry = rps("small-v2json", "ferry-batch")
    rows.append(
        ratio_row(
            "small V2 JSON c=64: Ferry / bare ASGI ceiling", ferry, rps("small-v2json", "ceiling-asgi"), 0.5
        )
    )
    for peer, target in (("fastapi", 2), ("kserve-stock", 10), ("mlserver", 10), ("triton", 5)):
        rows.append(
            ratio_row(f"small V2 JSON c=64: Ferry / {peer}", ferry, rps("small-v2json", peer), target)
        )
    on, off = rps("large-v2json", "ferry-batch"), rps("large-v2json", "ferry-nobatch")
    rows.append(ratio_row("1.6M MLP c=64: batching on / off", on, off, 1.5))
    for case in ("large-v2json", "large-v2binary"):
        large = point(records, case, "ferry-batch", 64)
        raw = interpolate(
            records.get(case, {}).get("raw_onnxruntime_rows_per_s", {}), large.get("rows_per_batch")
        )
        rows.append(
            ratio_row(
                f"{case} c=64: rows/s / raw onnxruntime at the batch formed ({fmt(large.get('rows_per_batch'), digits=1)} rows)",
                rps(case, "ferry-batch"), raw, 0.6,
            )
        )  # fmt: skip
    # The most any server could reach here if its whole per-request cost were bare ASGI's (a server that parses
    # nothing and returns fixed JSON), with the model's compute on the same core: 1 / (1/asgi + 1/raw).
    asgi, raw = (
        rps("small-v2json", "ceiling-asgi"),
        interpolate(
            records.get("large-v2json", {}).get("raw_onnxruntime_rows_per_s", {}),
            point(records, "large-v2json", "ferry-batch", 64).get("rows_per_batch"),
        ),
    )
    bound = 1 / (1 / asgi + 1 / raw) if asgi and raw else None
    rows.append(
        ratio_row(
            "1.6M MLP c=64: bound at bare ASGI's per-request cost, rows/s / raw (for reference)",
            bound,
            raw,
            0.6,
        )
    )
    echo = rps("small-v2json", "http-echo")
    if echo:  # the same bound with the per-request cost of Ferry's own transport answering fixed JSON
        rows.append(
            ratio_row(
                "1.6M MLP c=64: bound at Ferry's HTTP transport cost alone, rows/s / raw (for reference)",
                1 / (1 / echo + 1 / raw) if raw else None,
                raw,
                0.6,
            )
        )
    rows.append(
        ratio_row(
            "224x224 binary c=64: Ferry / stock KServe binary",
            rps("image-v2binary", "ferry-batch"), rps("image-v2binary", "kserve-stock"), 40,
        )
    )  # fmt: skip
    rows.append(
        ratio_row(
            "224x224 c=64: Ferry binary / Ferry JSON",
            rps("image-v2binary", "ferry-batch"), rps("image-v2json", "ferry-batch"), 10,
        )
    )  # fmt: skip
    for case in ("small-v2json", "large-v2json"):
        rows.append(
            ratio_row(
                f"{case} c=1: p50 batching on / off",
                p50(case, "ferry-batch"),
                p50(case, "ferry-nobatch"),
                1.1,
                "<=",
            )
        )
    rows.append(
        ratio_row("small c=64: Ferry gRPC / Ferry REST JSON", rps("small-grpc", "ferry-batch"), ferry, 1.0)
    )
    rss = lambda c: point(records, "memory", "ferry-batch", c).get("peak_rss_mb")  # noqa: E731
    rows.append(
        ratio_row("memory: peak RSS at 10x overload (640) / at capacity (64)", rss(640), rss(64), 1.5, "<=")
    )
    rows.append(
        ratio_row(
            "load generator headroom, HTTP: bare ASGI / Ferry (c=64)",
            rps("small-v2json", "ceiling-asgi"),
            ferry,
            1.0,
        )
    )
    if echo:
        rows.append(
            ratio_row(
                "load generator headroom, HTTP: echo server on Ferry's HTTP/1.1 transport / Ferry (c=64)",
                echo,
                ferry,
                1.0,
            )
        )
    rows.append(
        ratio_row(
            "load generator headroom, gRPC: echo server on Ferry's HTTP/2 transport / Ferry (c=64)",
            rps("small-grpc", "grpc-echo-h2"), rps("small-grpc", "ferry-batch"), 1.0,
        )
    )  # fmt: skip
    return rows + gpu_targets()


def gpu_targets() -> list[tuple]:
    """The GPU case's two targets, each the weakest over every model, backend and precision measured."""
    gpu = gpu_results()
    measured = [c["targets"] for c in gpu["configs"].values() if "targets" in c] if gpu else []
    rows = []
    for key, label, target in (
        ("batching_on_over_off", "batching on / off, c=64", 3),
        ("server_over_in_process", "Ferry / in-process at the batch formed, c=64", 0.8),
    ):
        values = [t[key] for t in measured if t.get(key) is not None]
        weakest = min(values) if values else None
        rows.append(target_row(f"GPU ({len(values)} configs, the weakest): {label}", weakest, target))
    return rows


def gpu_results() -> dict | None:
    """``benchmarks/gpu.py``'s results/gpu.json, if a GPU machine has written one."""
    path = RESULTS / "gpu.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_report(command: str) -> None:
    records = {}
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        if "case" in data:  # machine.json and engine.json are not load-test cases
            records[data["case"] + ("-external" if data.get("url") else "")] = data
    info = json.loads((RESULTS / "machine.json").read_text()) if (RESULTS / "machine.json").exists() else {}
    order = [c.name for c in CASES]
    names = sorted(records, key=lambda n: order.index(n) if n in order else len(order))
    out = ["# Benchmark results", ""]
    out += [
        "Generated by `benchmarks/run.py`; do not edit by hand. Server pinned to CPU 0, load generator on CPU 1,",
        "loopback only. HTTP: wrk (1 thread) + `benchmarks/lua/post.lua`; gRPC: h2load with framed ModelInfer",
        "messages. Each point: best of its runs (req/s), latency percentiles of that run; peak RSS of the",
        "server's process group over all runs. Every server's answer was checked against in-process onnxruntime",
        "(max abs error <= 1e-4) before it was measured.",
        "",
    ]
    if info:
        packages = ", ".join(f"{k} {v}" for k, v in info.get("packages", {}).items() if v)
        out += [
            f"- machine: {info.get('cpu')}, {info.get('cpus')} CPUs, Linux {info.get('kernel')}, Python {info.get('python')}",
            f"- packages: {packages}",
            f"- tools: {', '.join(f'{v}' for v in info.get('tools', {}).values() if v)}",
            f"- command: `{info.get('command', command)}`",
            "",
        ]
    quick = [n for n in names if records[n].get("quick")]
    if quick:
        out += [f"**Quick smoke-run data (1 run of 2 s) in: {', '.join(quick)}. Not for comparison.**", ""]
    out += ["## Targets", "", "| target | achieved | wanted | result |", "|---|---:|---:|---|"]
    for name, value, target, op, verdict in targets(records):
        out.append(f"| {name} | {fmt(value, digits=2)} | {op} {target} | {verdict} |")
    out += ["", *MISS_NOTES_LARGE, *large_budget(records), *MISS_NOTES_REST, ""]
    for name in names:
        record = records[name]
        out += [f"## {name}: {record['title']}", ""]
        load = record.get("load_before") or [None]
        out += [
            f"{record['runs']} run(s) of {record['seconds']:.0f} s per point; {record['when']}; "
            f"load average before {fmt(load[0], digits=2)}; took {fmt(record.get('elapsed_s'))} s "
            f"(this model's cases together). Plot: `plots/{name}.png`.",
            "",
        ]
        raw = record.get("raw_onnxruntime_rows_per_s")
        if raw:
            out += [
                "Raw in-process onnxruntime (1 thread, CPU 0), rows/s: "
                + ", ".join(f"batch {k}: {fmt(v)}" for k, v in raw.items()),
                "",
            ]
        out += [
            "| peer | conc. | req/s | rows/s | p50 ms | p99 ms | errors | rows/batch | model µs/row | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for peer, entry in record["peers"].items():
            label = PEERS[peer].label if peer in PEERS else entry.get("label", peer)
            if "error" in entry and not entry.get("points"):
                out.append(f"| {label} | – | – | – | – | – | {entry['error'][:160]} | – | – | – |")
                continue
            for conc, p in entry.get("points", {}).items():
                if "error" in p:
                    out.append(f"| {label} | {conc} | – | – | – | – | {p['error'][:160]} | – | – | – |")
                    continue
                errors = p.get("non_2xx", 0) + p.get("socket_errors", 0)
                out.append(
                    f"| {label} | {conc} | {fmt(p['rps'])} | {fmt(p['rps'])} | {fmt(p['p50'], 1e3, 2)} | "
                    f"{fmt(p['p99'], 1e3, 2)} | {errors} | {fmt(p.get('rows_per_batch'), digits=1)} | "
                    f"{fmt(p.get('model_us_per_row'), digits=1)} | {fmt(p.get('peak_rss_mb'))} |"
                )
        out.append("")
        for peer, entry in record["peers"].items():
            profile = entry.get("profile")
            if profile:
                out += [
                    f"### Per-request CPU budget, {peer} at c=64 (py-spy, {profile['samples']} samples)",
                    "",
                    f"{fmt(profile['us_per_request'], digits=1)} µs of one core per request at the measured rate.",
                    "",
                    "| where | µs / request |",
                    "|---|---:|",
                    *(f"| {k} | {v:.1f} |" for k, v in profile["budget_us"].items()),
                    "",
                    "Innermost Python frames (% of samples): "
                    + "; ".join(
                        f"`{k}` {v:.1f}%" for k, v in list(profile["top_functions_pct"].items())[:10]
                    ),
                    "",
                ]
    out += gpu_section()
    out += request_cost_section()
    out += engine_section()
    out += multi_model_section()
    (BENCH / "RESULTS.md").write_text("\n".join(out))
    plot(records)


def gpu_section() -> list[str]:
    """The GPU case (``benchmarks/gpu.py``, results/gpu.json), or how to take it where none was measured."""
    gpu = gpu_results()
    head = ["## GPU case: digits CNN and ResNet-18, ONNX CUDA and torch CUDA, fp32 and fp16", ""]
    if gpu is None:
        return [
            *head,
            "Not measured: no machine with a GPU has run it yet. `python benchmarks/gpu.py` on one writes",
            "results/gpu.json, which this section then shows (targets: batching on / off >= 3 at 64 connections,",
            "the server >= 0.8 of in-process throughput at the batch size it formed); benchmarks/README.md says",
            "what to install. The same code runs on CPU in the test suite (`tests/predictor/test_gpu_benchmark.py`).",
            "",
        ]
    out = [
        *head,
        f"Device: **{gpu['device']}**; {gpu['when']}; server on CPUs {gpu['server_cpus']}, wrk on "
        f"{gpu['client_cpus']}; {gpu['runs']} run(s) of {gpu['seconds']:.0f} s per point; ResNet input "
        f"3x{gpu['side']}x{gpu['side']}; V2 REST binary; `{gpu['command']}`.",
        "",
        "| model | backend | precision | c | on req/s | off req/s | rows/batch | in-process at that batch | "
        "on / off (>= 3) | on / in-process (>= 0.8) | on p99 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for record in gpu["configs"].values():
        label = f"| {record['model']} | {record['backend']} | {record['dtype']} |"
        if "error" in record:
            out.append(f"{label} – | – | – | – | – | – | – | {record['error'][:160]} |")
            continue
        t = record.get("targets", {})
        c = str(t.get("connections", 64))
        on = record.get("batching_on", {}).get("points", {}).get(c, {})
        off = record.get("batching_off", {}).get("points", {}).get(c, {})

        def verdict(value, ok):
            return f"{fmt(value, digits=2)} {'PASS' if ok else 'MISS'}" if value is not None else "n/a"

        out.append(
            f"{label} {c} | {fmt(on.get('rps'))} | {fmt(off.get('rps'))} | "
            f"{fmt(t.get('rows_per_batch'), digits=1)} | {fmt(t.get('in_process_at_batch_rows_per_s'))} | "
            f"{verdict(t.get('batching_on_over_off'), t.get('batching_pass'))} | "
            f"{verdict(t.get('server_over_in_process'), t.get('in_process_pass'))} | {fmt(on.get('p99'), 1e3, 2)} |"
        )
    return [*out, ""]


def engine_section() -> list[str]:
    """The in-process engine figures of ``benchmarks/engine_overhead.py`` when recorded."""
    path = BENCH / "results" / "engine.json"
    if not path.exists():
        return []
    engine = json.loads(path.read_text())
    return [
        "## Engine overhead, in process (no HTTP)",
        "",
        f"`{engine.get('command', 'benchmarks/engine_overhead.py')}`; 1.6M-parameter MLP 512-1024-1024-10, one "
        f"intra-op thread, uvloop; {engine.get('machine', '')}; load average before {engine.get('load_average', '?')}.",
        "",
        "| measure | value |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in engine.items() if isinstance(v, float)),
        "",
    ]


def multi_model_section() -> list[str]:
    """Many models on one server (``benchmarks/multi_model.py``, results/multi-model.json), when recorded."""
    path = RESULTS / "multi-model.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    servers = data["servers"]
    mib = 2**20
    out = [
        f"## Many models on one server: {data['models']} distinct MLP 85k models, Ferry vs MLServer",
        "",
        f"`benchmarks/multi_model.py`, {data['when']}. Each server pinned to CPU 0 starts with one model and loads "
        "the rest through `POST /v2/repository/models/{m}/load`. Marginal RSS: least-squares slope over models "
        "2..N. Reloads: wrk, 16 connections on `m00`, one reload every 0.5 s.",
        "",
        "| server | RSS, 1 model | RSS, all loaded | marginal RSS per model | N one-model servers | load time median / max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, entry in servers.items():
        rss = entry["rss_bytes_by_models"]
        out.append(
            f"| {name} | {rss['1'] / mib:.1f} MiB | {rss[str(data['models'])] / mib:.1f} MiB | "
            f"{entry['marginal_rss_bytes'] / mib:.2f} MiB | "
            f"{data['models'] * entry['one_model_server_rss_bytes'] / mib:.0f} MiB | "
            f"{entry['load_seconds']['median'] * 1000:.0f} / {entry['load_seconds']['max'] * 1000:.0f} ms |"
        )
    ratio = data["marginal_rss_ratio"]
    out += [
        "",
        f"Ferry's marginal memory per model is {ratio:.3f} of MLServer's as Seldon Core 2 runs it (one worker "
        f"process; target <= 0.10: "
        f"**{'met' if ratio <= 0.10 else 'missed'}**). One more onnxruntime session of the same model, warmed at "
        f"batch 1 and 64, costs {data['bare_session_bytes'] / mib:.2f} MiB in a bare process: the floor for a "
        "server that gives each model its own session.",
        *weights_note(data, servers["mlserver-1-worker"]["marginal_rss_bytes"]),
        "",
        "| server | scenario | req/s | p50 | p99 | failed requests | reloads |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, entry in servers.items():
        for scenario, point in entry["scenarios"].items():
            failed = point["non_2xx"] + point["socket_errors"]
            out.append(
                f"| {name} | {scenario} | {point['rps']:.0f} | {point['p50'] * 1000:.2f} ms | "
                f"{point['p99'] * 1000:.2f} ms | {failed} | {point['reloads']} |"
            )
    return [*out, ""]


def weights_note(data: dict, mlserver_bytes: float) -> list[str]:
    """Whether the memory goal is reachable at all: a model's weights are the least a server can hold for it."""
    weights = data.get("weights_bytes")
    if not weights:
        return []
    goal = 0.10 * mlserver_bytes
    return [
        f"The model's weights alone are {weights / 2**20:.2f} MiB, {weights / mlserver_bytes:.2f} of MLServer's "
        f"marginal memory; the goal, {goal / 2**20:.3f} MiB per model, is "
        + (
            "below them: no server that keeps a model's weights in memory can reach it."
            if goal < weights
            else "above them."
        )
    ]


def plot(records: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    for stale in PLOTS.glob("*.png"):  # a case whose results file is gone loses its plot too
        if stale.stem not in records:
            stale.unlink()
    for name, record in records.items():
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        for peer, entry in record["peers"].items():
            points = {int(c): p for c, p in entry.get("points", {}).items() if "rps" in p}
            if not points:
                continue
            xs = sorted(points)
            (line,) = left.plot(xs, [points[c]["rps"] for c in xs], marker="o", label=peer)
            p50 = [points[c]["p50"] * 1e3 if points[c].get("p50") else None for c in xs]
            p99 = [points[c]["p99"] * 1e3 if points[c].get("p99") else None for c in xs]
            right.plot(xs, p50, marker="o", color=line.get_color(), label=f"{peer} p50")
            right.plot(xs, p99, marker="x", linestyle="--", color=line.get_color(), label=f"{peer} p99")
        left.set(xscale="log", xlabel="concurrent connections", ylabel="requests/s", title=record["title"])
        right.set(
            xscale="log",
            yscale="log",
            xlabel="concurrent connections",
            ylabel="latency (ms)",
            title="p50 (o) and p99 (x)",
        )
        for axis in (left, right):  # label the measured concurrencies, not powers of ten
            axis.set_xticks(record["concurrency"], [str(c) for c in record["concurrency"]])
            axis.minorticks_off()
        left.legend(fontsize=7)
        left.grid(alpha=0.3)
        right.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(PLOTS / f"{name}.png", dpi=90)
        plt.close(fig)
