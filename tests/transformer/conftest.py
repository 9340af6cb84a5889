"""Shared, expensive parts, built once per session: the demo-shaped feature data and churn model, prepared Feast
repos (SQLite, Redis), a real redis-server, Feast's feature server and Ferry's predictor, all on loopback."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.models import export, mlp
from support.servers import free_port, start, start_predictor

ROWS = 200  # customers C00001..C00200


def _import_feast_now() -> None:
    """Feast decorates its classes with typeguard, which compiles their source as Feast's modules are imported.
    CPython 3.11.7 can fail that compile ("AST constructor recursion depth mismatch") once the thread's recursion
    counters have been disturbed by what ran before in the process (seen when other suites' tests precede these in
    one pytest run). So Feast's modules that the tests reach are imported here, at collection, before any test
    runs; the transformer image imports Feast once on its main thread at start for the same reason."""
    import importlib

    for module in (
        "feast",
        "feast.feature_server",
        "feast.infra.online_stores.sqlite",
        "feast.infra.online_stores.redis",
        "feast.infra.offline_stores.dask",
        "feast.infra.offline_stores.file_source",
        "feast.infra.passthrough_provider",
    ):
        importlib.import_module(module)


_import_feast_now()


def write_feature_data(directory: Path) -> Path:
    """The demo's offline feature files (``ferry demo``'s feast/ layout) for ROWS customers."""
    from ferry_tools.demo.data import churn_frame

    directory.mkdir(parents=True, exist_ok=True)
    frame = churn_frame(ROWS)
    stats = ["customer_id", "event_timestamp", "tenure", "monthly_charges", "total_charges", "contract"]
    frame[[*stats, "loyalty_score"]].to_parquet(directory / "customer_stats.parquet", index=False)
    frame[["customer_id", "event_timestamp", "txn_count_7d"]].to_parquet(
        directory / "transaction_stats.parquet", index=False
    )
    return directory


@pytest.fixture(scope="session")
def feature_data(tmp_path_factory) -> Path:
    return write_feature_data(tmp_path_factory.mktemp("feast-data"))


@pytest.fixture(scope="session")
def expected_features(feature_data):
    """customer id -> the model's four features, straight from the offline data."""
    import pandas as pd

    frame = pd.read_parquet(feature_data / "customer_stats.parquet")
    columns = ["tenure", "monthly_charges", "total_charges", "contract"]
    return {row.customer_id: [float(getattr(row, c)) for c in columns] for row in frame.itertuples()}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A churn-shaped ONNX model: input-0 FP32 [-1, 4] -> probabilities FP32 [-1, 2]."""
    return export(mlp(4, 16, 2, seed=5), tmp_path_factory.mktemp("model") / "churn", "onnx", 4, 2)


@pytest.fixture(scope="session")
def reference(model_dir):
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    return lambda rows: session.run(None, {"input-0": np.asarray(rows, dtype=np.float32)})[0]


@pytest.fixture(scope="session")
def sqlite_repo(tmp_path_factory, feature_data) -> Path:
    from ferry_feast.store import prepare

    return prepare(tmp_path_factory.mktemp("repo-sqlite"), feature_data)


@pytest.fixture(scope="session")
def predictor(model_dir, tmp_path_factory):
    proc = start_predictor(model_dir, tmp_path_factory.mktemp("logs") / "predictor.log", "--model_name=churn")
    yield proc
    proc.stop()


class RedisServer:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        # An RDB snapshot on shutdown, so a restarted server comes back with the materialised features.
        self.process = subprocess.Popen(
            [
                *(
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                ),
                *("--save", "3600 1", "--appendonly", "no", "--protected-mode", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # saves the snapshot, then exits
            self.process.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed (make test installs it: scripts/system-deps.sh redis-server)"
        )
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_repo(tmp_path_factory, feature_data, redis_server) -> Path:
    from ferry_feast.store import prepare

    return prepare(
        tmp_path_factory.mktemp("repo-redis"), feature_data, online_store="redis", redis_url=redis_server.url
    )


@pytest.fixture(scope="session")
def feature_server(sqlite_repo, tmp_path_factory):
    """Feast's own HTTP feature server (``feast serve``) over the SQLite repo."""
    port = free_port()
    feast = str(Path(sys.executable).with_name("feast"))
    proc = start(
        [feast, "-c", str(sqlite_repo), "serve", "-h", "127.0.0.1", "-p", str(port)],
        tmp_path_factory.mktemp("logs") / "feast-serve.log",
        http_port=port,
        ready_path="/health",
        timeout=120,
    )
    yield proc
    proc.stop()


def wait_http(url: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=0.5)
            return
        time.sleep(0.05)
