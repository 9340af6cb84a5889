"""RESULTS.md and the plots, rebuilt whole from one run's results folder (``run.py`` clears it first): the load-test
cases, the suites, run.json (commit, date, machine, packages, command). Nothing here is typed in: every figure,
verdict and note is computed from that folder."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
from pathlib import Path

from cases import CASES, HOSTS
from common import FERRY_PY, REPO, TRITON_PY, mlserver_python
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


def commit() -> dict:
    """The commit measured, and whether the working tree differed from it (then the figures are not its)."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short=12", "HEAD") or None,
        "commit_date": git("show", "-s", "--format=%ci", "HEAD") or None,
        # What a run itself rewrites (its results, RESULTS.md, the plots) does not make the tree differ.
        "dirty": bool(
            git(
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!benchmarks/results",
                ":!benchmarks/RESULTS.md",
                ":!benchmarks/plots",
            )
        ),
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


def large_budget(records: dict, suites: dict) -> list[str]:
    """Per request on the 1.6M MLP at c=64: the model's time per row in the server, Ferry's transport alone
    (http-echo), the handling without sockets (request_cost.py), and what none of them accounts for."""
    lines = []
    echo = point(records, "small-v2json", "http-echo", 64).get("rps")
    handling = suites.get("request_cost", {}).get("us_per_request", {})
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
        line += f"; 0.6 of raw leaves the rest {1e6 / (0.6 * raw) - model_us:.1f} µs at this model time"
        floor = point(records, case, "floor", 64)
        if floor.get("rps") and floor.get("model_us_per_row"):
            line += (
                f"; the floor takes {1e6 / floor['rps']:.1f} µs per request, {floor['model_us_per_row']:.1f} of "
                f"them the model's ({floor.get('rows_per_batch') or 0:.0f} rows a batch), "
                f"{1e6 / floor['rps'] - floor['model_us_per_row']:.1f} the rest"
            )
        lines.append(line + ".")
    return lines


LAST_LAYER = "RestApp.handle (all of it)"  # request_cost.py's cumulative figure


def miss_notes(rows: list[tuple], records: dict, suites: dict) -> list[str]:
    """Why a target was missed, in this run's own figures (profiles, budgets, the runs' spread)."""
    missed = [name for name, *_, verdict in rows if verdict == "MISS"]
    if not missed:
        return []
    out = ["Where a target is missed, this run's own figures:", ""]
    if any("bare uvicorn ASGI app" in name for name in missed):
        out += ceiling_note(records, suites)
    if any(name.startswith("small V2 JSON c=64: Ferry / MLServer") for name in missed):
        out += mlserver_note(suites)
    if any("raw onnxruntime" in name for name in missed):
        out += [
            "- *rows/s vs raw onnxruntime*: the server and the model share one core, so a request costs the model's",
            "  time per row plus everything else (transport alone: the http-echo peer; handling without sockets:",
            "  `request_cost.py`); the figures per case:",
            *large_budget(records, suites),
        ]
    engine = suites.get("engine", {})
    if any("beyond the raw batch" in name for name in missed) and engine.get(
        "asyncio_64_tasks_around_raw_batch_us"
    ):
        raw, around = engine["raw_batch64_us"], engine["asyncio_64_tasks_around_raw_batch_us"]
        own = engine["engine_64_requests_batch64_us"] - around
        out.append(
            f"- *engine, 64 one-row requests*: a batch of 64 took {engine['engine_64_requests_batch64_us']:.0f} µs "
            f"through the engine; the raw call took {raw:.0f} µs, and {around:.0f} µs with 64 asyncio tasks "
            f"awaiting it (those tasks alone: {engine['asyncio_64_waiting_tasks_us']:.0f} µs): the engine's own "
            f"{own:.0f} µs is {own / 64:.1f} µs per request, where 10 % of the raw call allows "
            f"{raw * 0.1 / 64:.1f} (validation, the job and its queue, the merge, the split)."
        )
    if any(name.startswith("transformer inside kserve.ModelServer") for name in missed):
        out += transformer_host_note(suites.get("transformer", {}))
    for host_name, (ferry, _stock, label) in HOSTS.items():
        if any(label in name for name in missed):
            out.append(
                f"- *{label}*: µs of the server's core per request at c=64 (1e6 / req/s, the median of the rounds "
                "measured in turns):"
            )
            host = suites.get("hosts", {}).get("hosts", {}).get(host_name, {})
            for case, d in host.get("cases", {}).items():
                mine, theirs = statistics.median(d["rps_ferry"]), statistics.median(d["rps_host"])
                out.append(
                    f"  - {case}: Ferry inside {1e6 / mine:.0f}, the host's own {1e6 / theirs:.0f}"
                    + host_bound(records, case, ferry, theirs)
                )
            out.append(f"  (where the time goes: the {ferry} per-request budgets below)")
    spread = []
    for name in records:
        for entry in records[name]["peers"].values():
            runs = entry.get("points", {}).get("64", {}).get("runs_rps") or []
            if len(runs) > 1 and min(runs) > 0:
                spread.append(max(runs) / min(runs) - 1)
    if spread:
        out.append(
            f"- run-to-run spread at c=64 in this run (best / worst run - 1, over {len(spread)} points): median "
            f"{sorted(spread)[len(spread) // 2] * 100:.1f} %, largest {max(spread) * 100:.1f} %."
        )
    return out


def transformer_host_note(data: dict, added_p50_ms: float = 2.0) -> list[str]:
    """The transformer inside kserve.ModelServer against the same configuration on Ferry's server: with a fixed
    number of connections, each waiting for its answer, a request's mean time is connections / req/s (Little's
    law), so the added-p50 target is a rate, and the rate a time per request."""
    configs, direct = data.get("configs", []), data.get("direct", {})
    if not configs or not direct.get("p50"):
        return []
    connections = data["connections"]
    needed = connections / ((direct["p50"] + added_p50_ms) / 1e3)
    out = [
        f"- *transformer inside kserve.ModelServer*: at {connections} connections a request's mean time is "
        f"connections / req/s (Little's law). An added p50 of {added_p50_ms:g} ms over the predictor's "
        f"{direct['p50']:.2f} ms needs {needed:,.0f} req/s, {1e6 / needed:.0f} µs per request:"
    ]
    for hosted in (c for c in configs if c["server"] == "kserve"):
        lean = next(
            (
                c
                for c in configs
                if c["server"] == "ferry" and (c["store"], c["mode"]) == (hosted["store"], hosted["mode"])
            ),
            None,
        )
        line = (
            f"  - {hosted['store']}, {hosted['mode']}: {hosted['rps']:,.0f} req/s, {1e6 / hosted['rps']:.0f} µs per "
            f"request ({connections} / req/s = {connections / hosted['rps'] * 1e3:.2f} ms; measured p50 "
            f"{hosted['p50']:.2f} ms)"
        )
        if lean:
            line += (
                f"; the same transformer on Ferry's server {1e6 / lean['rps']:.0f} µs, so the host's request "
                f"handling takes {1e6 / hosted['rps'] - 1e6 / lean['rps']:.0f} µs"
            )
        out.append(line)
    return out


def ceiling_us(suites: dict) -> dict[str, float]:
    """µs of the core per request at c=64 for each server of ceiling.py: 1e6 / the median of its rounds' req/s."""
    peers = suites.get("ceiling", {}).get("peers", {})
    return {peer: 1e6 / entry["rps_median"] for peer, entry in peers.items() if entry.get("rps_median")}


def ceiling_note(records: dict, suites: dict) -> list[str]:
    """Small V2 JSON at c=64, µs of the core per request (the medians of ceiling.py's rounds): Ferry's whole
    request, bare uvicorn's constant, Ferry's own transport answering a constant (http-echo), the two floors, and
    Ferry's budget by category when profiled (in the case's run)."""
    us = ceiling_us(suites)
    if "ferry-batch" not in us or "ceiling-asgi" not in us:
        return []
    line = (
        "- *Ferry / bare uvicorn*: µs of the core per request at c=64 (the medians of the rounds measured in "
        f"turns): Ferry {us['ferry-batch']:.1f}, bare uvicorn "
        f"answering a constant {us['ceiling-asgi']:.1f}"
    )
    if "http-echo" in us:
        line += (
            f", Ferry's own HTTP/1.1 transport answering a constant {us['http-echo']:.1f}; so everything between "
            f"the transport and the model, and the model, must fit in {us['ceiling-asgi'] - us['http-echo']:.1f} "
            f"and takes {us['ferry-batch'] - us['http-echo']:.1f}"
        )
    profile = records.get("small-v2json", {}).get("peers", {}).get("ferry-batch", {}).get("profile")
    if profile:
        line += (
            " (by category, profiled in the case's run: "
            + ", ".join(f"{where} {value:.1f}" for where, value in profile["budget_us"].items())
            + ")"
        )
    if "floor" in us:
        line += (
            f". The floor (orjson, numpy, the batch, one onnxruntime call, Ferry's transport; nothing else) takes "
            f"{us['floor']:.1f}"
        )
        if us["floor"] < us["ceiling-asgi"]:
            line += (
                ", so a server on these parts can meet the target, and what Ferry does on top of the floor "
                "(routing, validation and its error messages, request ids, metrics, the batcher's bounds, deadlines "
                f"and cancellation) costs {us['ferry-batch'] - us['floor']:.1f} where "
                f"{us['ceiling-asgi'] - us['floor']:.1f} is allowed"
            )
        else:
            line += ", so no server on these parts meets the target in this run"
    if "floor-checked" in us:
        checked = us["floor-checked"]
        line += (
            f". The checked floor (the floor plus what the standards ask of every request, with Ferry's own parts: "
            f"its V2 codec and input checks with worded errors, request ids, a bounded queue, deadlines, its HTTP "
            f"metrics) takes {checked:.1f}"
        )
        if "floor" in us:
            line += f": those cost {checked - us['floor']:.1f}"
        line += (
            ", so a server on these parts that does what the standards ask "
            + ("can meet" if checked <= us["ceiling-asgi"] else "does not meet")
            + f" the target in this run; Ferry's routing, repository and general batcher cost "
            f"{us['ferry-batch'] - checked:.1f} over the checked floor"
        )
    return [line + "."]


def host_bound(records: dict, case: str, ferry: str, stock_rps: float) -> str:
    """From the profile of Ferry inside the host: the µs per request the host's own stack takes (web framework,
    request models, its own code), and so the most any runtime inside that host could gain over the stock one
    (its whole request, over the host's part alone)."""
    profile = records.get(case, {}).get("peers", {}).get(ferry, {}).get("profile")
    if not profile:
        return ""
    host_us = sum(us for where, us in profile["budget_us"].items() if where.startswith("host:"))
    if not host_us:
        return ""
    share = 100 * host_us / profile["us_per_request"]
    return (
        f"; the host's own stack {host_us:.0f} µs of Ferry's ({share:.0f} %, py-spy), so no runtime inside this "
        f"host can exceed {1e6 / stock_rps / host_us:.2f}x the stock one here"
    )


def table_head(align: str, *columns: str) -> list[str]:
    """A markdown table's header and rule: ``align`` has an ``l`` (left) or ``r`` (right) per column."""
    assert len(align) == len(columns), (align, columns)
    rule = "".join("---|" if a == "l" else "---:|" for a in align)
    return ["| " + " | ".join(columns) + " |", "|" + rule]


def transformer_section(suites: dict) -> list[str]:
    """``transformer_latency.py``: added latency per configuration, and Ferry against the reference shape."""
    data = suites.get("transformer")
    if not data:
        return []
    direct = data["direct"]
    out = [
        "## Transformer: Feast lookup, predictor call, interpretation",
        "",
        f"`benchmarks/transformer_latency.py`; wrk, {data['connections']} connections, best of {data['runs']} x "
        f"{data['duration']} s, V1 JSON, one random id of {data['customers']:,} per request. The predictor called "
        f"directly: p50 {direct['p50']:.2f} ms, p99 {direct['p99']:.2f} ms, {direct['rps']:,.0f} req/s.",
        "",
        *table_head(
            "lllrrrrr",
            "store",
            "predictor",
            "server",
            "e2e p50 ms",
            "e2e p99 ms",
            "added p50 ms",
            "added p99 ms",
            "req/s",
        ),
        *(
            f"| {c['store']} | {c['mode']} | {c['server']} | {c['p50']:.2f} | {c['p99']:.2f} | "
            f"{c['added_p50_ms']:.2f} | {c['added_p99_ms']:.2f} | {c['rps']:,.0f} |"
            for c in data["configs"]
        ),
        "",
    ]
    shapes = data.get("shapes")
    if shapes:
        out += [
            f"Against the reference shape ({data['reference_shape']}), the same predictor and SQLite store; "
            f"answers compared first: {data['answers_checked']} customers, max abs difference "
            f"{data['answers_max_abs_diff']:.2g}.",
            "",
            *table_head(
                "lrrrrr",
                "transformer",
                "conc.",
                "req/s",
                "p50 ms",
                "p99 ms",
                "failed (timeouts past 10 s included)",
            ),
            *(
                f"| {who} | {c} | {p['rps']:,.0f} | {p['p50']:.2f} | {p['p99']:.2f} | {p.get('errors', 0)} |"
                for who, points in shapes.items()
                for c, p in points.items()
            ),
            "",
        ]
    return out


def explainer_section(suites: dict) -> list[str]:
    """``explainer_latency.py``: latency and predictor calls per explanation, per engine, and the reference."""
    data = suites.get("explainer")
    if not data:
        return []
    out = [
        "## Explainer: latency and predictor calls per explanation",
        "",
        f"`benchmarks/explainer_latency.py`; {data['explanations']} different customers explained one after another "
        f"(one client), predictor over {data['predictor_protocol']}.",
        "",
        *table_head(
            "llrrrr",
            "explainer",
            "engine",
            "p50 ms",
            "p95 ms",
            "predictor requests / explanation (mean, max)",
            "rows / explanation",
        ),
    ]
    for r in data["engines"]:
        out.append(
            f"| Ferry | {r['engine']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['requests']:.1f} ({r['requests_max']}) "
            f"| {r['rows']:.0f} |"
        )
    for r in data.get("reference", {}).values():
        out.append(f"| reference | {r['engine']} | {r['p50']:.1f} | {r['p95']:.1f} | – | – |")
    if data.get("reference_shape"):
        answers = ", ".join(f"{r['engine']} {r['answers']}" for r in data["reference"].values())
        out += ["", f"Reference: {data['reference_shape']}; explanations equal to Ferry's: {answers}."]
    return [*out, ""]


def mlserver_batching_section(suites: dict) -> list[str]:
    """``mlserver_batching.py``: Ferry's batcher vs MLServer's adaptive batching inside one ``mlserver start``."""
    data = suites.get("mlserver-batching")
    if not data:
        return []
    return [
        "## Batching inside MLServer: Ferry's batcher vs MLServer's adaptive batching",
        "",
        f"`benchmarks/mlserver_batching.py`: one `mlserver start` (0 workers), three models over the demo churn ONNX "
        f"model, 1-row V2 REST JSON, wrk {data['duration']} s per point, {data['placement']}.",
        "",
        *table_head("lrrrrrr", "setup", "conc.", "req/s", "p50 ms", "p99 ms", "non-2xx", "Ferry rows/batch"),
        *(
            f"| {r['label']} | {r['connections']} | {r['rps']:,.0f} | {r['p50'] * 1e3:.2f} | {r['p99'] * 1e3:.2f} | "
            f"{r['errors']} | {fmt(r['rows_per_batch'], digits=1)} |"
            for r in data["rows"]
        ),
        "",
    ]


def one_client_section(suites: dict) -> list[str]:
    """``one_client.py``: batching on and off at one connection, measured in turns."""
    data = suites.get("one-client")
    if not data:
        return []
    out = [
        "## One client: batching on and off, measured in turns",
        "",
        f"`{data['command']}`: Ferry's lean server with batching on and with it off, started side by side on CPU 0; "
        "in each round both get one wrk run at one connection, the order alternating. The figure is the median of "
        "the rounds' ratios.",
        "",
        *table_head(
            "lrrrrr", "case", "rounds", "p50 on, µs", "p50 off, µs", "p50 on / off", "mean latency on / off"
        ),
    ]
    for case, d in data["cases"].items():
        out.append(
            f"| {case} | {d['rounds']} × {d['seconds']:g} s | {statistics.median(d['p50_on_us']):.0f} | "
            f"{statistics.median(d['p50_off_us']):.0f} | {d['p50_ratio_median']:.3f} | "
            f"{d['mean_latency_ratio_median']:.3f} |"
        )
    return [*out, ""]


def grpc_rest_section(suites: dict) -> list[str]:
    """``grpc_rest.py``: Ferry's gRPC and REST JSON on one server, measured in turns."""
    data = suites.get("grpc-rest")
    if not data:
        return []
    out = [
        "## gRPC and REST JSON on one server, measured in turns",
        "",
        f"`{data['command']}`: one Ferry lean server (batching on, CPU 0) serving the {data['model']} model; in each "
        f"of {data['rounds']} rounds of {data['seconds']:g} s it gets one REST JSON run (wrk) and one gRPC run "
        "(h2load) at the same connections, the order alternating. The figure is the median of the rounds' ratios.",
        "",
        *table_head(
            "rrrrrr", "connections", "REST req/s", "gRPC req/s", "REST p50, µs", "gRPC p50, µs", "gRPC / REST"
        ),
    ]
    for connections, d in data["connections"].items():
        out.append(
            f"| {connections} | {statistics.median(d['rps_rest']):,.0f} | {statistics.median(d['rps_grpc']):,.0f} | "
            f"{statistics.median(d['p50_rest_us']):.0f} | {statistics.median(d['p50_grpc_us']):.0f} | "
            f"{d['rps_ratio_median']:.3f} |"
        )
    return [*out, ""]


def mlserver_note(suites: dict) -> list[str]:
    """Ferry / MLServer: what ten times MLServer's rate leaves a request, beside what Ferry and the floors take."""
    us = ceiling_us(suites)
    if "ferry-batch" not in us or "mlserver" not in us:
        return []
    line = (
        f"- *Ferry / MLServer*: µs of the core per request at c=64 (the medians of the rounds measured in turns): "
        f"MLServer {us['mlserver']:.1f}, so ten times its rate leaves {us['mlserver'] / 10:.1f}; Ferry takes "
        f"{us['ferry-batch']:.1f}"
    )
    line += "".join(
        f", {what} {us[peer]:.1f}"
        for peer, what in (("floor-checked", "the checked floor"), ("floor", "the floor"))
        if peer in us
    )
    return [line + "."]


def ceiling_section(suites: dict) -> list[str]:
    """``ceiling.py``: Ferry, the floors, the ceilings and MLServer, up at once, measured in turns."""
    data = suites.get("ceiling")
    if not data:
        return []
    out = [
        "## Ferry, the floors and the ceilings, measured in turns",
        "",
        f"`{data['command']}`: {data['load']} at {data['connections']} connections; the servers run side by side "
        f"(all on CPU 0), and in each of {data['rounds']} rounds of {data['seconds']:g} s each gets one wrk run, the "
        "order reversing between rounds. The figures are the medians of the rounds.",
        "",
        *table_head("lrrr", "server", "req/s", "µs of the core per request", "p50, ms"),
    ]
    for entry in data["peers"].values():
        out.append(
            f"| {entry['label']} | {entry['rps_median']:,.0f} | {1e6 / entry['rps_median']:.1f} | "
            f"{statistics.median(entry['p50_ms']):.2f} |"
        )
    out += ["", *table_head("lr", "ratio of req/s, per round", "median")]
    out += [f"| {ratio} | {value:.3f} |" for ratio, value in data["rps_ratio_medians"].items()]
    return [*out, ""]


def hosts_section(suites: dict) -> list[str]:
    """``hosts.py``: Ferry inside each host and the host's own runtime, up at once, measured in turns."""
    data = suites.get("hosts")
    if not data:
        return []
    out = [
        "## Inside the hosts: Ferry and the host's own runtime, measured in turns",
        "",
        f"`{data['command']}`: for each case, Ferry inside the host and the host's own runtime run side by side "
        f"(both on CPU 0); in each of {data['rounds']} rounds each gets one load run at {data['connections']} "
        "connections, the order alternating. The figure is the median of the rounds' ratios.",
        "",
        *table_head(
            "llrrrrrr",
            "host",
            "case",
            "run, s",
            "Ferry req/s",
            "host's own req/s",
            "Ferry p50, ms",
            "host's own p50, ms",
            "Ferry / host's own",
        ),
    ]
    for host, h in data["hosts"].items():
        for case, d in h["cases"].items():
            out.append(
                f"| {host} | {case} | {d['seconds']:g} | {statistics.median(d['rps_ferry']):,.0f} | "
                f"{statistics.median(d['rps_host']):,.0f} | {statistics.median(d['p50_ferry_ms']):.2f} | "
                f"{statistics.median(d['p50_host_ms']):.2f} | {d['rps_ratio_median']:.3f} |"
            )
    return [*out, ""]


def request_cost_section(suites: dict) -> list[str]:
    cost = suites.get("request_cost")
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
        *table_head("l" + "r" * len(layers), "case", *layers),
        *(
            f"| {case} | " + " | ".join(f"{v:.1f}" for v in row.values()) + " |"
            for case, row in table.items()
        ),
        "",
    ]


def targets(records: dict, suites: dict) -> list[tuple]:
    """Every target any benchmark script defines, computed from this run: (name, value, wanted, op, verdict)."""
    rps = lambda case, peer, c=64: point(records, case, peer, c).get("rps")  # noqa: E731
    rows = []
    ferry = rps("small-v2json", "ferry-batch")
    # Ferry against bare uvicorn and against MLServer: the servers up side by side, measured in turns
    # (ceiling.py), never the cases' points, which are minutes apart. The floor (nothing but codec, batch and
    # transport) and the checked floor (the floor plus what the standards ask of every request: checked input,
    # worded errors, request ids, a bounded queue, deadlines, metrics) say, for reference, what a server on these
    # parts reaches: where the checked floor misses a target too, no server that does what the standards ask
    # meets it in this run.
    ceiling = suites.get("ceiling", {})
    medians = ceiling.get("rps_ratio_medians", {})
    in_turns = f"median of {ceiling.get('rounds')} rounds measured in turns"
    for peer, what, host, target in (
        ("ferry-batch", "Ferry", "ceiling-asgi", 1.0),
        ("floor", "the floor", "ceiling-asgi", 1.0),
        ("floor-checked", "the checked floor", "ceiling-asgi", 1.0),
        ("ferry-batch", "Ferry", "mlserver", 10),
        ("floor-checked", "the checked floor", "mlserver", 10),
    ):
        against = (
            "bare uvicorn ASGI app answering a constant" if host == "ceiling-asgi" else PEERS[host].label
        )
        reference = "" if peer == "ferry-batch" else " (for reference)"
        rows.append(
            target_row(
                f"small V2 JSON c=64: {what} / {against}, req/s, {in_turns}{reference}",
                medians.get(f"{peer}/{host}"),
                target,
            )
        )
    for peer, target in (("fastapi", 2), ("kserve-stock", 10), ("triton", 5)):
        rows.append(
            ratio_row(
                f"small V2 JSON c=64: Ferry / {PEERS[peer].label}", ferry, rps("small-v2json", peer), target
            )
        )
    on, off = rps("large-v2json", "ferry-batch"), rps("large-v2json", "ferry-nobatch")
    rows.append(ratio_row("1.6M MLP c=64: batching on / off", on, off, 1.5))
    for case in ("large-v2json", "large-v2binary"):
        for peer, what in (
            ("ferry-batch", ""),
            ("floor", "the floor's "),
            ("floor-checked", "the checked floor's "),
        ):
            large = point(records, case, peer, 64)
            raw = interpolate(
                records.get(case, {}).get("raw_onnxruntime_rows_per_s", {}), large.get("rows_per_batch")
            )
            reference = " (for reference)" if peer != "ferry-batch" else ""
            rows.append(
                ratio_row(
                    f"{case} c=64: {what}rows/s / raw onnxruntime at the batch formed ({fmt(large.get('rows_per_batch'), digits=1)} rows){reference}",
                    rps(case, peer), raw, 0.6,
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
    # One client: from benchmarks/one_client.py, which measures batching on and off in turns (the cases' c=1
    # points are minutes apart, longer than this machine holds its speed to within the 10 % allowed).
    one_client = suites.get("one-client", {}).get("cases", {})
    for case in ("small-v2json", "large-v2json"):
        measured = one_client.get(case, {})
        rows.append(
            target_row(
                f"{case} c=1: p50 batching on / off (the batcher's cost to one client), median of "
                f"{measured.get('rounds', 0)} rounds measured in turns",
                measured.get("p50_ratio_median"),
                1.1,
                "<=",
            )
        )
    # gRPC against REST: from benchmarks/grpc_rest.py, both protocols on one server in turns (the cases' points
    # are minutes apart, and the machine drifts by more over minutes than the two protocols differ).
    protocols = suites.get("grpc-rest", {})
    rows.append(
        target_row(
            f"small c=64: Ferry gRPC / Ferry REST JSON, one server, req/s, median of {protocols.get('rounds', 0)} "
            "rounds measured in turns",
            protocols.get("connections", {}).get("64", {}).get("rps_ratio_median"),
            1.0,
        )
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
    return rows + host_targets(suites) + suite_targets(suites) + gpu_targets(suites)


# Where compute dominates a request, Ferry's batcher inside a host must at least double the host's own runtime.
COMPUTE_BOUND = {"large-v2json", "large-v2binary", "image-v2binary", "image-v2json"}


def host_targets(suites: dict) -> list[tuple]:
    """Inside each host, Ferry against the host's own runtime at c=64, on every case that has both: from
    ``hosts.py``, the two servers up at once and measured in turns (the cases' points are minutes apart, and two
    full runs at the same code gave one pair 1.38 and 0.92)."""
    rows = []
    measured = suites.get("hosts", {})
    for name, (ferry, stock, label) in HOSTS.items():
        host = measured.get("hosts", {}).get(name, {})
        for case in CASES:
            if ferry in case.peers and stock in case.peers:
                wanted = 2.0 if case.name in COMPUTE_BOUND else 1.0
                rows.append(
                    target_row(
                        f"{case.name} c=64: {label}, req/s, median of {measured.get('rounds', 0)} rounds measured "
                        "in turns",
                        host.get("cases", {}).get(case.name, {}).get("rps_ratio_median"),
                        wanted,
                    )
                )
    return rows


def suite_targets(suites: dict) -> list[tuple]:
    """The targets of the suites: the engine in process, the transformer, the explainer, many models."""
    rows = []
    engine = suites.get("engine", {})
    for key, label in (
        (
            "engine_own_overhead_64_requests_pct",
            "engine in process: 64 one-row requests batched vs one raw batch of 64, overhead % beyond the raw "
            "batch with the 64 asyncio tasks any server holds across it",
        ),
        (
            "overhead_64_requests_pct",
            "engine in process: 64 one-row requests batched vs one raw batch of 64, overhead % all in "
            "(for reference)",
        ),
        ("overhead_one_request_pct", "engine in process: one 64-row request vs the raw call, overhead %"),
    ):
        rows.append(target_row(label, engine.get(key), 10, "<="))
    rows.append(
        target_row(
            "engine in process: one client, p50 with batching on vs off, cost %",
            engine.get("c1_latency_batching_cost_pct"),
            5,
            "<=",
        )
    )
    transformer = suites.get("transformer", {})
    configs = transformer.get("configs", [])
    # By host: Ferry's lean server (the transformer image's default), and kserve.ModelServer (--server=kserve,
    # where KServe's own stack is part of every request).
    for host, label in (("ferry", "on Ferry's server"), ("kserve", "inside kserve.ModelServer")):
        hosted = [c for c in configs if c["server"] == host]
        for key, wanted in (("added_p50_ms", 2.0), ("added_p99_ms", 10.0)):
            worst = max(hosted, key=lambda c: c[key]) if hosted else {}
            where = f" ({worst['store']}, {worst['mode']})" if worst else ""
            rows.append(
                target_row(
                    f"transformer {label}, c={transformer.get('connections', '?')}: {key[:-3].replace('_', ' ')} ms "
                    f"over calling the predictor directly, the worst of {len(hosted)} configurations{where}",
                    worst.get(key),
                    wanted,
                    "<=",
                )
            )
    # transformer_latency.py labels its two shapes for the table: the reference's label starts "reference".
    shapes = transformer.get("shapes", {})
    ferry_shape = next((p for who, p in shapes.items() if not who.startswith("reference")), {})
    reference_shape = next((p for who, p in shapes.items() if who.startswith("reference")), {})
    for c in (1, 16, 64):
        mine, theirs = ferry_shape.get(str(c), {}), reference_shape.get(str(c), {})
        rows.append(
            ratio_row(
                f"transformer c={c}: Ferry / a kserve.Model calling Feast's get_online_features and the predictor "
                "over V1, req/s",
                mine.get("rps"),
                theirs.get("rps"),
                1.0,
            )
        )
    explainer = suites.get("explainer", {})
    for engine, entry in explainer.get("reference", {}).items():
        mine = next((r for r in explainer.get("engines", []) if r["engine"] == engine), {})
        rows.append(
            ratio_row(
                f"explainer {engine}, one client: p50 Ferry / a kserve.Model wrapping alibi around V1 predictor calls",
                mine.get("p50"),
                entry.get("p50"),
                1.0,
                "<=",
            )
        )
    multi = suites.get("multi-model", {})
    rows.append(
        target_row(
            "many models: Ferry's marginal RSS per model / MLServer's with one worker (Seldon Core 2's default)",
            multi.get("marginal_rss_ratio"),
            0.10,
            "<=",
        )
    )
    return rows


def gpu_targets(suites: dict) -> list[tuple]:
    """The GPU case's two targets, each the weakest over every model, backend and precision measured."""
    gpu = suites.get("gpu")
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


def load_run(results: Path) -> tuple[dict, dict, dict]:
    """One run's folder: the load-test cases by name, the suites' results by name, and run.json."""
    records, suites = {}, {}
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        if "case" in data:
            records[data["case"] + ("-external" if data.get("url") else "")] = data
        elif path.stem != "run":
            suites[path.stem] = data
    run = results / "run.json"
    return records, suites, json.loads(run.read_text()) if run.exists() else {}


def header(run: dict) -> list[str]:
    """What was measured, where, with what and by which command: the run's own record."""
    if not run:
        return ["**No run.json: these results are not from one recorded run.**", ""]
    packages = ", ".join(f"{k} {v}" for k, v in run.get("packages", {}).items() if v)
    commit = f"`{run.get('commit')}` ({run.get('commit_date')})"
    if run.get("dirty"):
        commit += " **with uncommitted changes: these figures are not that commit's**"
    lines = [
        f"- commit: {commit}",
        f"- run: {run.get('started')}, {run.get('elapsed_s', 0) / 60:.0f} min, mode **{run.get('mode')}**, "
        f"load average before {fmt(run.get('load_average_before'), digits=2)}",
        f"- command: `{run.get('command')}`",
        f"- machine: {run.get('cpu')}, {run.get('cpus')} CPUs, Linux {run.get('kernel')}, Python {run.get('python')}",
        f"- packages: {packages}",
        f"- tools: {', '.join(f'{v}' for v in run.get('tools', {}).values() if v)}",
    ]
    suites = run.get("suites", {})
    if suites:
        lines.append(
            "- suites: "
            + ", ".join(
                f"{name} ({entry['seconds']:.0f} s"
                + (
                    f", CPU busy {entry['cpu_busy_before']:.0%} before"
                    if entry.get("cpu_busy_before") is not None
                    else ""
                )
                + (
                    f", skipped: {entry['skipped']}"
                    if entry.get("skipped")
                    else ""
                    if entry["rc"] == 0
                    else f", **failed: {entry['rc']}**"
                )
                + ")"
                for name, entry in suites.items()
            )
        )
    if run.get("mode") != "full":
        lines += ["", f"**A {run.get('mode')} run, for development: not for comparison.**"]
    return [*lines, ""]


def write_report(results: Path, report: Path, plots: Path) -> None:
    records, suites, run = load_run(results)
    order = [c.name for c in CASES]
    names = sorted(records, key=lambda n: order.index(n) if n in order else len(order))
    out = ["# Benchmark results", ""]
    out += [
        "Generated whole by `benchmarks/run.py` from one run (below); do not edit by hand. Server pinned to CPU 0,",
        "load generator on CPU 1, loopback only. HTTP: wrk (1 thread) + `benchmarks/lua/post.lua`; gRPC: h2load",
        "with framed ModelInfer messages. Each point: best of its runs (req/s), latency percentiles of that run; peak",
        "RSS of the server's process group over all runs. Every server's answer was checked against in-process",
        "onnxruntime (max abs error <= 1e-4) before it was measured.",
        "",
        *header(run),
    ]
    out += ["## Targets", "", *table_head("lrrl", "target", "achieved", "wanted", "result")]
    rows = targets(records, suites)
    for name, value, target, op, verdict in rows:
        out.append(f"| {name} | {fmt(value, digits=2)} | {op} {target} | {verdict} |")
    out += ["", *miss_notes(rows, records, suites), ""]
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
            *table_head(
                "lrrrrrrrrr",
                "peer",
                "conc.",
                "req/s",
                "rows/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "rows/batch",
                "model µs/row",
                "peak RSS MB",
            ),
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
                    *table_head("lr", "where", "µs / request"),
                    *(f"| {k} | {v:.1f} |" for k, v in profile["budget_us"].items()),
                    "",
                    "Innermost Python frames (% of samples): "
                    + "; ".join(
                        f"`{k}` {v:.1f}%" for k, v in list(profile["top_functions_pct"].items())[:10]
                    ),
                    "",
                ]
    out += transformer_section(suites)
    out += explainer_section(suites)
    out += mlserver_batching_section(suites)
    out += one_client_section(suites)
    out += grpc_rest_section(suites)
    out += ceiling_section(suites)
    out += hosts_section(suites)
    out += request_cost_section(suites)
    out += engine_section(suites)
    out += multi_model_section(suites)
    out += gpu_section(suites)
    report.write_text("\n".join(out))
    plot(records, plots)


def gpu_section(suites: dict) -> list[str]:
    """The GPU case (``benchmarks/gpu.py``, results/gpu.json), or how to take it where none was measured."""
    gpu = suites.get("gpu")
    head = ["## GPU case: digits CNN and ResNet-18, ONNX CUDA and torch CUDA, fp32 and fp16", ""]
    if not gpu:
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
        *table_head(
            "lllrrrrrrrr",
            *("model", "backend", "precision", "c", "on req/s", "off req/s", "rows/batch"),
            *("in-process at that batch", "on / off (>= 3)", "on / in-process (>= 0.8)", "on p99 ms"),
        ),
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


def engine_section(suites: dict) -> list[str]:
    """The in-process engine figures of ``benchmarks/engine_overhead.py`` when recorded."""
    engine = suites.get("engine")
    if not engine:
        return []
    return [
        "## Engine overhead, in process (no HTTP)",
        "",
        f"`{engine.get('command', 'benchmarks/engine_overhead.py')}`; 1.6M-parameter MLP 512-1024-1024-10, one "
        f"intra-op thread, uvloop; {engine.get('machine', '')}; load average before {engine.get('load_average', '?')}.",
        "",
        *per_process_line(engine),
        *table_head("lr", "measure", "value"),
        *(f"| {k} | {v:.1f} |" for k, v in engine.items() if isinstance(v, float)),
        "",
    ]


def per_process_line(engine: dict) -> list[str]:
    """How the engine figures were taken when ``--processes`` was given: medians, and each target per process."""
    processes = engine.get("processes")
    if not processes:
        return []
    suffix = "_per_process"  # engine_overhead.py keeps each target's values under its name with this suffix
    runs = "; ".join(
        f"{key.removesuffix(suffix)}: {', '.join(f'{value:.1f}' for value in values)}"
        for key, values in engine.items()
        if key.endswith(suffix)
    )
    return [
        f"Each figure is the median over {processes} fresh processes, one after another. Per process: {runs}.",
        "",
    ]


def multi_model_section(suites: dict) -> list[str]:
    """Many models on one server (``benchmarks/multi_model.py``, results/multi-model.json), when recorded."""
    data = suites.get("multi-model")
    if not data:
        return []
    servers = data["servers"]
    mib = 2**20
    out = [
        f"## Many models on one server: {data['models']} distinct MLP 85k models, Ferry vs MLServer",
        "",
        f"`benchmarks/multi_model.py`, {data['when']}. Each server pinned to CPU 0 starts with one model and loads "
        "the rest through `POST /v2/repository/models/{m}/load`. Marginal RSS: least-squares slope over models "
        "2..N. Reloads: wrk, 16 connections on `m00`, one reload every 0.5 s.",
        "",
        *table_head(
            "lrrrrr",
            "server",
            "RSS, 1 model",
            "RSS, all loaded",
            "marginal RSS per model",
            "N one-model servers",
            "load time median / max",
        ),
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
        *table_head("llrrrrr", "server", "scenario", "req/s", "p50", "p99", "failed requests", "reloads"),
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


def plot(records: dict, plots: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    for stale in plots.glob("*.png"):  # a case whose results file is gone loses its plot too
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
        fig.savefig(plots / f"{name}.png", dpi=90)
        plt.close(fig)
