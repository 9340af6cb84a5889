"""``ferry up`` and ``ferry up --check`` end to end: the README's main command starts the three servers from the
project's environments, every endpoint answers the user's requests with the in-process reference's answers,
``--check`` fails when a component is down or answers wrong, and Ctrl-C stops everything."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from ferry_tools import monitoring
from support.models import export, mlp
from support.seldon_client import run_seldon_client
from support.servers import REPO, free_port, start_predictor

FERRY = REPO / ".venv" / "bin" / "ferry"


def _ports() -> dict[str, int]:
    return {
        name: free_port()
        for name in (
            "predictor_port",
            "predictor_grpc_port",
            "transformer_port",
            "explainer_port",
            "prometheus_port",
        )
    }


def _flags(ports: dict[str, int]) -> list[str]:
    return [f"--{name}={port}" for name, port in ports.items()]


def _check(demo_dir: Path, ports: dict[str, int]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(FERRY), "up", "--check", f"--demo_dir={demo_dir}", *_flags(ports)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        children = Path(f"/proc/{queue.pop()}/task")
        for task in children.glob("*/children") if children.exists() else []:
            for child in task.read_text().split():
                found.append(int(child))
                queue.append(int(child))
    return found


@pytest.fixture(scope="module")
def stack(demo_dir, tmp_path_factory):
    """``ferry up --monitoring`` on free ports over the quick demo build, as a user starts it (its own process
    group): the stack and the Prometheus beside it."""
    ports = _ports()
    log_path = tmp_path_factory.mktemp("up") / "up.log"
    log = open(log_path, "w")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        [str(FERRY), "up", "--monitoring", f"--demo_dir={demo_dir}", *_flags(ports)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    deadline = time.monotonic() + 420
    while "local stack is up" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"ferry up did not come up (exit {process.poll()}):\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    yield process, ports, log_path
    if process.poll() is None:
        process.kill()
    log.close()


def test_check_passes_on_the_running_stack(stack, demo_dir):
    _, ports, _ = stack
    done = _check(demo_dir, ports)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed, 0 failed" in done.stdout
    # Each answer was compared with the in-process model, not just accepted.
    assert done.stdout.count("matches the in-process model") == 5, done.stdout


def test_monitoring_prometheus_scrapes_the_stack_with_the_rules(stack):
    """The URL printed, the three servers scraped, every committed rule loaded and healthy, and the requests of
    the --check above counted (run after it)."""
    _, ports, log_path = stack
    url = f"http://127.0.0.1:{ports['prometheus_port']}"
    assert f"  prometheus:\n    {url}" in log_path.read_text()

    def query(expr: str) -> list[dict]:
        return httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()["data"]["result"]

    expr = 'sum by (job) (ferry_http_requests_total{namespace="local", protocol!="other", status="2xx"})'
    deadline = time.monotonic() + 30  # scrapes every 5 s
    while True:
        up = {s["metric"]["job"]: s["value"][1] for s in query('up{namespace="local"}')}
        served = {s["metric"]["job"]: float(s["value"][1]) for s in query(expr)}
        # All three in both answers: a target first scraped between the two queries is in the second only.
        if (len(up) == 3 and set(up.values()) == {"1"} and len(served) == 3) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert up == {"churn-predictor": "1", "churn-transformer": "1", "churn-explainer": "1"}, up
    assert served["churn-predictor"] >= 4 and served["churn-transformer"] >= 1, served
    groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in monitoring.rule_groups()["groups"])
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), [
        r for r in rules if r["health"] == "err"
    ]


def test_check_fails_when_a_component_is_down(stack, demo_dir):
    _, ports, _ = stack
    down = {**ports, "explainer_port": free_port()}  # nothing listens there
    done = _check(demo_dir, down)
    assert done.returncode == 1, done.stdout
    assert "FAIL  Seldon explain (the explainer)" in done.stdout and "6 passed, 1 failed" in done.stdout


def test_check_fails_when_the_predictor_answers_wrong(stack, demo_dir, tmp_path):
    """A predictor with the churn model's signature but other weights: every answer arrives and is well formed,
    only the values differ from the reference."""
    _, ports, _ = stack
    impostor = start_predictor(
        export(mlp(4, 8, 2, seed=7), tmp_path / "impostor", "onnx", 4, 2),
        tmp_path / "log",
        "--model_name=churn",
    )
    try:
        done = _check(
            demo_dir,
            {**ports, "predictor_port": impostor.http_port, "predictor_grpc_port": impostor.grpc_port},
        )
    finally:
        impostor.stop()
    assert done.returncode == 1, done.stdout
    for name in ("KServe V2 predict (REST)", "KServe V2 predict (gRPC)", "KServe V1 predict"):
        assert f"FAIL  {name}" in done.stdout and "expected" in done.stdout, done.stdout


def test_the_users_seldon_client_runs_unchanged(stack, tmp_path):
    """examples/seldon/seldon_client.py, verbatim but for its URL: predict and explain at one address."""
    _, ports, _ = stack
    url = f"http://127.0.0.1:{ports['predictor_port']}/api/v1.0/predictions"
    prediction, explanation = run_seldon_client(url, tmp_path, REPO / ".venv" / "bin" / "python")
    assert prediction["data"]["names"] == ["no_churn", "churn"] and len(prediction["data"]["ndarray"]) == 1
    predicted = prediction["data"]["names"][max(range(2), key=lambda i: prediction["data"]["ndarray"][0][i])]
    assert explanation["summary"]["prediction"] == predicted, explanation


def test_ctrl_c_stops_every_component(stack):
    process, ports, log_path = stack
    children = _descendants(process.pid)
    assert len(children) >= 4, children  # predictor, transformer, explainer, prometheus
    process.send_signal(signal.SIGINT)
    assert process.wait(90) == 0, log_path.read_text()[-3000:]
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in children):
        assert time.monotonic() < deadline, f"still running after Ctrl-C: {children}"
        time.sleep(0.2)
    assert not any(_listening(port) for port in ports.values()), ports


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    return True
