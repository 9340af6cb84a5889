"""A Prometheus beside the local stack: the committed rules (k8s/monitoring/rules.yaml) as a Prometheus rule file,
a scrape configuration that labels the local servers as the PodMonitors label pods (namespace, job, component,
pod), and the Debian/upstream ``prometheus`` binary started on loopback. ``ferry up --monitoring`` and the tests
use it."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "k8s" / "monitoring"
RULES = MONITORING / "rules.yaml"
LOCAL_NAMESPACE = "local"
_RANGE = re.compile(r"\[(\d+[smhdw])\]")


def rule_groups(windows: dict[str, str] | None = None, interval: str | None = None) -> dict[str, Any]:
    """The PrometheusRule's groups as a Prometheus rule file. ``windows`` replaces range selectors (``{"1h":
    "15s"}``: a test cannot wait an hour) and must name every window the rules use; ``interval`` sets each
    group's evaluation interval. Without both, the rules are exactly what a cluster evaluates."""
    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    if windows is not None:

        def shorten(match: re.Match) -> str:
            if match[1] not in windows:
                raise KeyError(f"no replacement given for the window [{match[1]}]")
            return f"[{windows[match[1]]}]"

        for group in groups:
            for rule in group["rules"]:
                rule["expr"] = _RANGE.sub(shorten, rule["expr"])
                if "for" in rule:
                    rule["for"] = windows.get(rule["for"], rule["for"])
    if interval is not None:
        for group in groups:
            group["interval"] = interval
    return {"groups": groups}


def scrape_config(
    targets: dict[str, tuple[str, str]], rule_file: Path, scrape_interval: str = "5s"
) -> dict[str, Any]:
    """``targets``: job -> (host:port, component). Each target carries the labels the PodMonitors give a pod, so
    the committed rules and dashboards work unchanged."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(rule_file)],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [address],
                        "labels": {"namespace": LOCAL_NAMESPACE, "component": component, "pod": job},
                    }
                ],
            }
            for job, (address, component) in targets.items()
        ],
    }


@dataclass
class Prometheus:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (``[{"metric": {...}, "value": [t, "v"]}]``); an invalid query raises."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def start_prometheus(
    workdir: Path,
    port: int,
    targets: dict[str, tuple[str, str]],
    *,
    scrape_interval: str = "5s",
    windows: dict[str, str] | None = None,
    rule_interval: str | None = None,
    log=None,
    timeout: float = 30,
) -> Prometheus:
    """Write the rule file and configuration into ``workdir`` (storage too), start Prometheus on loopback, and
    wait until it is ready. ``log``: a file for its output (default: discarded)."""
    binary = prometheus_binary()
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    rule_file = workdir / "ferry.rules.yaml"
    rule_file.write_text(yaml.safe_dump(rule_groups(windows, rule_interval), sort_keys=False))
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, rule_file, scrape_interval), sort_keys=False))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
        ],
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    prometheus = Prometheus(process, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {process.returncode}")
        try:
            if httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200:
                return prometheus
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    prometheus.stop()
    raise RuntimeError(f"prometheus not ready within {timeout:.0f} s")
