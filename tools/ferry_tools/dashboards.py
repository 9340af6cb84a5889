"""Ferry's Grafana dashboards, generated with grafana-foundation-sdk: one each for the predictor, the transformer
and the explainer. The JSON under k8s/monitoring/dashboards/ is what this writes; tests/monitoring checks the two
agree and runs every query against a real Prometheus.

    python -m ferry_tools.dashboards            # rewrite k8s/monitoring/dashboards/*.json
    python -m ferry_tools.dashboards --check    # exit 1 if a committed file differs

Every query selects ``namespace=~"$namespace", job=~"$job"``: the labels the PodMonitors (and ``ferry up
--monitoring``) give each Ferry container, so one dashboard serves every workload of its kind."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "k8s" / "monitoring" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'namespace=~"$namespace", job=~"$job"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Graph:
    title: str
    unit: str  # Grafana's unit id; the live test checks values against it too
    queries: tuple[Query, ...]
    description: str = ""
    heatmap: bool = False


def legend_of(labels: str) -> str:
    """Grafana's legend for series grouped ``by (a, b)``: "{{a}} {{b}}"."""
    return " ".join(f"{{{{{label.strip()}}}}}" for label in labels.split(",") if label.strip())


def quantiles(metric: str, by: str = "", where: str = "") -> tuple[Query, ...]:
    """p50 and p99 of a histogram, per ``by`` labels if given, of the series matching ``where`` too. ``>= 0``
    drops the NaN of a series with no observations in the window (a protocol nobody used): no point rather than
    a NaN."""
    group = f"le, {by}" if by else "le"
    legend = f"{legend_of(by)} " if by else ""
    selector = f"{SEL}, {where}" if where else SEL
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}]))) >= 0",
            f"{legend}p{int(q * 100)}",
        )
        for q in (0.5, 0.99)
    )


def memory() -> Graph:
    return Graph(
        "Memory (resident)",
        "bytes",
        (Query(f"sum by (pod) (process_resident_memory_bytes{{{SEL}}})", "{{pod}}"),),
        "The server process's resident memory. The container limit and the FerryMemoryNearLimit alert use "
        "cAdvisor's working set, which adds the page cache.",
    )


# Inference requests: those that name a model. model="" is health probes, /metrics and metadata; "unknown" is a
# model the server does not hold (the client's 404s, shown: a misrouted client is worth seeing).
INFERENCE = 'model!=""'


def requests(status_by: str = "model, protocol, status", grpc: bool = True) -> Graph:
    """Requests per second; gRPC beside HTTP only where the server has a gRPC port (the explainer has none)."""
    http = f"ferry_http_requests_total{{{SEL}, {INFERENCE}}}"
    queries = [Query(f"sum by ({status_by}) (rate({http}[{RATE}]))", legend_of(status_by))]
    if grpc:
        grpc_requests = f"ferry_grpc_requests_total{{{SEL}, {INFERENCE}}}"
        queries.append(
            Query(f"sum by (model, code) (rate({grpc_requests}[{RATE}]))", "gRPC {{model}} {{code}}")
        )
    return Graph(
        "Requests per second",
        "reqps",
        tuple(queries),
        "Inference requests per model: HTTP by protocol and status class"
        + (", gRPC by status code." if grpc else "."),
    )


def request_latency() -> Graph:
    """The server time of inference requests, the latency objective's measure (predictor and transformer)."""
    return Graph(
        "Request latency",
        "s",
        quantiles("ferry_request_seconds", "model, protocol", INFERENCE),
        "Server time per HTTP inference request, p50 and p99 per model and protocol (the latency objective is "
        "99% under 250 ms).",
    )


PREDICTOR = (
    requests(),
    request_latency(),
    Graph(
        "Objectives: bad fraction over 5 minutes",
        "percentunit",
        (
            Query(
                f"namespace_job_model:ferry_request_errors:ratio_rate5m{{{SEL}}}",
                "{{model}} errors (budget 0.1%)",
            ),
            Query(
                f"namespace_job_model:ferry_request_slow:ratio_rate5m{{{SEL}}}",
                "{{model}} over 250 ms (budget 1%)",
            ),
        ),
        "The recording rules the burn-rate alerts read, per model (k8s/monitoring/rules.yaml).",
    ),
    Graph(
        "Batcher outcomes",
        "reqps",
        (
            Query(
                f"sum by (model, outcome) (rate(ferry_model_requests_total{{{SEL}}}[{RATE}]))",
                "{{model}} {{outcome}}",
            ),
        ),
        "Requests the batcher took, by outcome: ok, error, overloaded (queue full: 503), deadline, cancelled.",
    ),
    Graph(
        "Batch size distribution",
        "short",
        (
            Query(
                f"sum by (le) (rate(ferry_batch_rows_bucket{{{SEL}}}[{RATE}]))",
                "{{le}}",
            ),
        ),
        "Rows per executed batch (before padding): how much the dynamic batcher gathers.",
        heatmap=True,
    ),
    Graph(
        "Mean batch size",
        "short",
        (
            Query(
                f"sum by (model) (rate(ferry_batch_rows_sum{{{SEL}}}[{RATE}]))"
                f" / sum by (model) (rate(ferry_batch_rows_count{{{SEL}}}[{RATE}]))",
                "{{model}}",
            ),
        ),
    ),
    Graph(
        "Queue wait",
        "s",
        quantiles("ferry_queue_wait_seconds", "model"),
        "Time a request waits for its batch to start, p50 and p99.",
    ),
    Graph(
        "Model time per row",
        "s",
        (
            Query(
                f"sum by (model) (rate(ferry_compute_seconds_sum{{{SEL}}}[{RATE}]))"
                f" / sum by (model) (rate(ferry_batch_rows_sum{{{SEL}}}[{RATE}]))",
                "{{model}}",
            ),
        ),
        "Backend compute seconds divided by the rows computed: falls as batches grow.",
    ),
    Graph(
        "Rows per second",
        "short",
        (Query(f"sum by (model) (rate(ferry_batch_rows_sum{{{SEL}}}[{RATE}]))", "{{model}}"),),
        "Rows the model computed per second, every protocol together.",
    ),
    Graph(
        "Queued rows",
        "short",
        (Query(f"sum by (model) (ferry_queue_rows{{{SEL}}})", "{{model}}"),),
        "Rows waiting in the batch queue at scrape time.",
    ),
    Graph(
        "Model ready and load time",
        "short",
        (
            Query(f"min by (model) (ferry_model_ready{{{SEL}}})", "{{model}} ready"),
            Query(f"max by (model) (ferry_model_load_seconds{{{SEL}}})", "{{model}} load seconds"),
        ),
        "1 when every replica serves the model; the seconds the last load took (fetch, load, warm).",
    ),
    memory(),
)

TRANSFORMER = (
    requests(),
    request_latency(),
    Graph(
        "Feature lookup latency",
        "s",
        quantiles("ferry_feature_lookup_seconds"),
        "One online-store lookup per wave of requests (requests arriving together share it).",
    ),
    Graph(
        "Predictor (upstream) latency",
        "s",
        quantiles("ferry_upstream_request_seconds"),
        "One predictor request per wave, failed ones included.",
    ),
    Graph(
        "Upstream and feature-store errors",
        "reqps",
        (
            Query(f"sum by (job) (rate(ferry_upstream_errors_total{{{SEL}}}[{RATE}]))", "predictor errors"),
            Query(
                f"sum by (job) (rate(ferry_feature_lookup_errors_total{{{SEL}}}[{RATE}]))",
                "feature lookup errors",
            ),
        ),
        "Failed predictor requests and failed online-store lookups per second (each fails a whole wave).",
    ),
    memory(),
)

EXPLAINER = (
    requests("model, status", grpc=False),
    Graph(
        "Explanations by outcome",
        "reqps",
        (
            Query(
                f"sum by (outcome) (rate(ferry_explain_requests_total{{{SEL}}}[{RATE}]))",
                "{{outcome}}",
            ),
        ),
        "ok, invalid, overloaded (pool full: 503), timeout (504), error.",
    ),
    Graph(
        "Explanation latency",
        "s",
        quantiles("ferry_explain_seconds"),
        "Worker time per explanation, its predictor calls included.",
    ),
    Graph(
        "Predictor calls per explanation",
        "short",
        (
            Query(
                f"sum(rate(ferry_explain_predictor_requests_sum{{{SEL}}}[{RATE}]))"
                f" / sum(rate(ferry_explain_predictor_requests_count{{{SEL}}}[{RATE}]))",
                "mean",
            ),
            Query(
                f"histogram_quantile(0.99, sum by (le) (rate(ferry_explain_predictor_requests_bucket{{{SEL}}}[{RATE}])))",
                "p99",
            ),
        ),
        "How many predictor requests one explanation made (AnchorTabular and KernelShap sample the model).",
    ),
    Graph(
        "Explanations in progress",
        "short",
        (Query(f"sum by (pod) (ferry_explain_admitted{{{SEL}}})", "{{pod}}"),),
        "Running or waiting for a worker.",
    ),
    memory(),
)

DASHBOARDS = {
    "predictor": ("Ferry / Predictor", "predictor|predictor-onnx|predictor-gpu", PREDICTOR),
    "transformer": ("Ferry / Transformer", "transformer", TRANSFORMER),
    "explainer": ("Ferry / Explainer", "explainer", EXPLAINER),
}


def _panel(graph: Graph):
    panel = (heatmap.Panel() if graph.heatmap else timeseries.Panel()).title(graph.title).unit(graph.unit)
    panel = panel.datasource(DATASOURCE).height(8).span(12)
    if graph.description:
        panel = panel.description(graph.description)
    for ref, query in zip("ABCDEFGH", graph.queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref)
        if graph.heatmap:
            target = target.format(PromQueryFormat.HEATMAP)
        panel = panel.with_target(target)
    return panel


def build(name: str) -> dict:
    title, components, graphs = DASHBOARDS[name]
    variables = [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        db.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DATASOURCE)
        .query(f'label_values(up{{component=~"{components}"}}, namespace)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True),
        db.QueryVariable("job")
        .label("Workload")
        .datasource(DATASOURCE)
        .query(f'label_values(up{{component=~"{components}", namespace=~"$namespace"}}, job)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True),
    ]
    board = (
        db.Dashboard(title)
        .uid(f"ferry-{name}")
        .tags(["ferry"])
        .time("now-1h", "now")
        .refresh("30s")
        .variables(variables)
    )
    for graph in graphs:
        board = board.with_panel(_panel(graph))
    # Through the SDK's own encoder, then back to plain data so the file is stably sorted and indented.
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render(name: str) -> str:
    return json.dumps(build(name), indent=2, sort_keys=True) + "\n"


def expressions(board: dict) -> list[tuple[str, str, str]]:
    """(panel title, unit, expr) for every query of a dashboard's JSON."""
    found = []
    for panel in board["panels"]:
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        for target in panel.get("targets", []):
            found.append((panel["title"], unit, target["expr"]))
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for name in DASHBOARDS:
        path = OUT / f"{name}.json"
        text = render(name)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python -m ferry_tools.dashboards)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
