"""The dashboards, recording rules and prometheus-adapter rule against a real Prometheus (the ``prometheus`` binary,
Debian's package): it scrapes the local stack (predictor, transformer, explainer, started as ``ferry up`` starts
them) every second while a short load runs, then every dashboard query and every recording rule is evaluated over
its HTTP API and must return series with plausible values.

Only the rule windows are shortened here (a test cannot wait an hour): [5m] -> [10s] and so on, the same
expressions otherwise."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from ferry.client import connect
from ferry_tools import cli, dashboards, monitoring
from support.servers import REPO, free_port, start, start_all

SCRAPE = "1s"
WINDOWS = {"5m": "10s", "30m": "20s", "1h": "30s", "6h": "1m", "2m": "2s", "10m": "5s", "15m": "5s"}
LOAD_SECONDS = 12
JOBS = {"predictor": "churn-predictor", "transformer": "churn-transformer", "explainer": "churn-explainer"}
# How each Grafana unit's values may look after the load: (low, high), inclusive.
PLAUSIBLE = {
    "reqps": (0, 100_000),
    "s": (0, 30),
    "percentunit": (0, 1),
    "short": (0, 100_000),
    "bytes": (10e6, 16e9),  # a Python server with its model: tens of MB to a few GB
}
ROW = [[24, 65.5, 1572.0, 1]]
# The one query allowed no series: `ferry up` starts the transformer without a gRPC port (--grpc_port=0), so its
# gRPC panel stays empty here; in a cluster it serves gRPC-V2 too.
NO_TRAFFIC = {("transformer", "ferry_grpc_requests_total")}


@pytest.fixture(scope="module")
def stack(demo_dir, tmp_path_factory):
    """The three servers from ``ferry up``'s own command lines, on free ports."""
    logs = tmp_path_factory.mktemp("stack")
    args = argparse.Namespace(
        predictor_port=free_port(),
        predictor_grpc_port=free_port(),
        transformer_port=free_port(),
        explainer_port=free_port(),
    )
    components = {c.name: c for c in cli.stack(Path(demo_dir), args)}
    assert set(components) == set(JOBS), "the stack lacks a component (scripts/envs.sh all)"

    def launch(name: str, port: int):
        return start(components[name].command, logs / f"{name}.log", http_port=port, timeout=240)

    servers = {"predictor": launch("predictor", args.predictor_port)}
    try:  # the predictor is stopped also when the others fail to start
        servers |= start_all(
            {
                "transformer": (launch, "transformer", args.transformer_port),
                "explainer": (launch, "explainer", args.explainer_port),
            }
        )
        yield servers, args
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    servers, args = stack
    workdir = tmp_path_factory.mktemp("prometheus")
    targets = {JOBS[name]: (f"127.0.0.1:{server.http_port}", name) for name, server in servers.items()}
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child process
    prom = monitoring.start_prometheus(
        workdir,
        free_port(),
        targets,
        scrape_interval=SCRAPE,
        windows=WINDOWS,
        rule_interval=SCRAPE,
        log=log,
    )
    try:
        # A counter's first sample must come before the load, or rate() never sees the increase.
        deadline = time.monotonic() + 30
        while len(prom.query('up{namespace="local"} == 1')) < len(JOBS):
            assert time.monotonic() < deadline, "Prometheus did not scrape every server within 30 s"
            time.sleep(0.2)
        _load(servers, args)
        time.sleep(3)  # the last scrape and rule evaluation after the load
        yield prom
    finally:
        prom.stop()
        log.close()


def _load(servers, args) -> None:
    """Every protocol of the predictor, the transformer and an explanation a second, for LOAD_SECONDS, from a few
    threads. Failures are counted: the stack must answer all of it (the error-ratio rules then read 0)."""
    predictor, transformer, explainer = (servers[n].url for n in ("predictor", "transformer", "explainer"))
    stop_at = time.monotonic() + LOAD_SECONDS
    failures: list[str] = []
    sent = {"n": 0}

    def http_loop(url: str, body: dict) -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop_at:
                response = client.post(url, json=body)
                sent["n"] += 1
                if response.status_code != 200:
                    failures.append(f"{url}: {response.status_code} {response.text[:200]}")

    async def grpc_requests() -> None:
        client = connect("grpc-v2", f"127.0.0.1:{args.predictor_grpc_port}", "churn", 10)
        await client.start()
        try:
            while time.monotonic() < stop_at:
                await client.infer("input-0", np.array(ROW, dtype=np.float32))
                sent["n"] += 1
        finally:
            await client.close()

    def grpc_loop() -> None:
        asyncio.run(grpc_requests())

    def explain() -> None:
        while time.monotonic() < stop_at:
            time.sleep(1)
            response = httpx.post(
                f"{explainer}/api/v1.0/explain", json={"data": {"ndarray": ROW}}, timeout=60
            )
            if response.status_code != 200:
                failures.append(f"explain: {response.status_code} {response.text[:200]}")

    v2 = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    jobs = [
        threading.Thread(target=http_loop, args=(f"{predictor}/v2/models/churn/infer", v2)),
        threading.Thread(target=http_loop, args=(f"{predictor}/v1/models/churn:predict", {"instances": ROW})),
        threading.Thread(
            target=http_loop, args=(f"{predictor}/api/v1.0/predictions", {"data": {"ndarray": ROW}})
        ),
        threading.Thread(
            target=http_loop,
            args=(f"{transformer}/v1/models/churn-transformer:predict", {"instances": ["C00001", "C00002"]}),
        ),
        threading.Thread(target=grpc_loop),
        threading.Thread(target=explain),
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
    assert not failures, failures[:5]
    assert sent["n"] > 100, sent


def _values(result: list[dict]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def test_every_target_is_scraped(prometheus):
    up = {s["metric"]["job"]: float(s["value"][1]) for s in prometheus.query('up{namespace="local"}')}
    assert up == dict.fromkeys(JOBS.values(), 1.0)


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_dashboard_query_returns_plausible_series(prometheus, name):
    board = json.loads((dashboards.OUT / f"{name}.json").read_text())
    queries = dashboards.expressions(board)
    assert len(queries) >= 6
    problems, seen = [], {}
    for title, unit, expr in queries:
        # Grafana's variables as a user picks them: the local namespace, this dashboard's workload.
        concrete = (
            expr.replace("$namespace", "local").replace("$job", JOBS[name]).replace("$__rate_interval", "30s")
        )
        values = _values(prometheus.query(concrete))
        low, high = PLAUSIBLE[unit]
        seen[f"{title}: {expr[:60]}"] = values[:4]
        if not values and (name, "ferry_grpc_requests_total") in NO_TRAFFIC and "ferry_grpc_" in expr:
            continue
        if not values:
            problems.append(f"{title}: no series for {concrete}")
        elif not all(math.isfinite(v) and low <= v <= high for v in values):
            problems.append(f"{title}: {values} outside {low}..{high} ({unit}) for {concrete}")
    print(json.dumps(seen, indent=1))  # the figures, for the record (pytest -s)
    assert not problems, "\n".join(problems)


def test_traffic_shows_where_it_was_sent(prometheus):
    """Numbers that move for the right reason: the predictor saw all four protocols and batched rows, the
    transformer looked features up and called the predictor, the explainer called the predictor many times."""
    by_protocol = {
        s["metric"]["protocol"]: float(s["value"][1])
        for s in prometheus.query(
            'sum by (protocol) (rate(ferry_http_requests_total{job="churn-predictor", status="2xx"}[30s]))'
        )
    }
    # "other" is Prometheus's own scrapes (and probes): about one a second.
    assert set(by_protocol) == {"v1", "v2", "seldon", "other"}, by_protocol
    assert min(by_protocol[p] for p in ("v1", "v2", "seldon")) > 10 and by_protocol["other"] < 3, by_protocol
    assert (
        _values(prometheus.query('sum(ferry_grpc_requests_total{job="churn-predictor", code="OK"})'))[0] > 10
    )
    # Inference requests name their model; probes and scrapes name none.
    models = {
        s["metric"].get("model", "")
        for s in prometheus.query('ferry_http_requests_total{job="churn-predictor"}')
        + prometheus.query('ferry_grpc_requests_total{job="churn-predictor", method="ModelInfer"}')
    }
    assert models == {"churn", ""}, models
    assert _values(prometheus.query('sum(ferry_batch_rows_sum{job="churn-predictor"})'))[0] > 100
    assert (
        _values(prometheus.query('sum(ferry_feature_lookup_seconds_count{job="churn-transformer"})'))[0] > 10
    )
    assert (
        _values(prometheus.query('sum(ferry_upstream_request_seconds_count{job="churn-transformer"})'))[0]
        > 10
    )
    calls = _values(prometheus.query('sum(ferry_explain_predictor_requests_sum{job="churn-explainer"})'))[0]
    assert calls >= 5, calls  # an explanation a second, each at least one predictor call


def test_every_recording_rule_returns_plausible_series(prometheus):
    rules = [r for g in monitoring.rule_groups()["groups"] for r in g["rules"] if "record" in r]
    assert len(rules) >= 10
    figures, problems = {}, []
    for rule in rules:
        result = prometheus.query(rule["record"])
        # Every rule is per model: "job/model" (the local stack's workloads serve one model each).
        values = {
            f"{s['metric'].get('job')}/{s['metric'].get('model')}": float(s["value"][1]) for s in result
        }
        figures[rule["record"]] = values
        if "churn-predictor/churn" not in values:
            problems.append(f"{rule['record']}: no series for churn-predictor's model churn ({values})")
        for series, value in values.items():
            if not math.isfinite(value) or value < 0:
                problems.append(f"{rule['record']} {series}: {value}")
            if ":ratio" in rule["record"] and value > 1:
                problems.append(f"{rule['record']} {series}: ratio {value} > 1")
    print(json.dumps(figures, indent=1))
    assert not problems, "\n".join(problems)
    assert figures["namespace_job_model:ferry_requests:rate5m"]["churn-predictor/churn"] > 10
    # Every request was answered: the availability objective's bad fraction is exactly 0 everywhere, for each
    # workload's model and nothing else (no series for probes, scrapes or unknown names).
    served = {"churn-predictor/churn", "churn-transformer/churn-transformer", "churn-explainer/churn"}
    for window in ("5m", "30m", "1h", "6h"):
        errors = figures[f"namespace_job_model:ferry_request_errors:ratio_rate{window}"]
        assert set(errors) == served and set(errors.values()) == {0.0}, errors
    # The latency objective covers the predictor and the transformer, never the explainer.
    assert set(figures["namespace_job_model:ferry_request_slow:ratio_rate5m"]) == {
        "churn-predictor/churn",
        "churn-transformer/churn-transformer",
    }
    assert 0 < figures["namespace_job_model:ferry_batch_rows:mean_rate5m"]["churn-predictor/churn"] < 1024


def test_rules_evaluate_without_errors_and_no_alert_fires(prometheus):
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in monitoring.rule_groups()["groups"])
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    assert firing == [], firing


def test_prometheus_adapter_rule_gives_the_hpa_its_metric(prometheus):
    """The adapter's rule as the adapter runs it: seriesQuery finds the pods, metricsQuery (with the label
    matchers and grouping the adapter fills in for a Pods metric) gives each pod its request rate."""
    values = yaml.safe_load((monitoring.MONITORING / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    hpa = yaml.safe_load_all((REPO / "k8s" / "base" / "seldon" / "sklearn-churn.yaml").read_text())
    wanted = {
        m["pods"]["metric"]["name"]
        for doc in hpa
        for p in doc["spec"]["predictors"]
        for c in p["componentSpecs"]
        for m in c["hpaSpec"]["metricsv2"]
        if m["type"] == "Pods"
    }
    assert wanted == {rule["name"]["as"]}
    pods = {s["metric"]["pod"] for s in prometheus.query(rule["seriesQuery"])}
    assert pods == set(JOBS.values())
    query = (
        rule["metricsQuery"]
        .replace("<<.LabelMatchers>>", 'namespace="local",pod=~"churn-predictor|churn-transformer"')
        .replace("<<.GroupBy>>", "pod")
        .replace("[2m]", "[30s]")
    )
    rates = {s["metric"]["pod"]: float(s["value"][1]) for s in prometheus.query(query)}
    assert set(rates) == {"churn-predictor", "churn-transformer"} and min(rates.values()) > 1, rates
