"""Many models per server: ``ferry-predictor --model_repository`` with Triton's layout, version policies and model
control modes, driven by tritonclient's repository, configuration and statistics calls over HTTP and gRPC; live
reload under concurrent load with exact answers; bad models and names refused with a 4xx while the others serve;
the memory budget."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.models import export, mlp, reference
from support.servers import start_predictor

X = np.array([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)


def write_model(folder: Path, seed: int) -> np.ndarray:
    """An ONNX MLP with weights from ``seed`` in ``folder``; returns its answer to ``X``."""
    module = mlp(seed=seed)
    export(module, folder, "onnx", 4, 2)
    return reference(module, X)


def infer(url: str, name: str, version: str | None = None, client=httpx) -> httpx.Response:
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": X.ravel().tolist()}]}
    return client.post(url + path, json=body, timeout=30)


def answer(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, -1)


@pytest.fixture
def repository(tmp_path) -> tuple[Path, dict]:
    """alpha (one version), beta (versions 1 and 2), gamma (one version): their answers by (name, version)."""
    root = tmp_path / "repository"
    answers = {
        ("alpha", "1"): write_model(root / "alpha", seed=1),
        ("beta", "1"): write_model(root / "beta" / "1", seed=2),
        ("beta", "2"): write_model(root / "beta" / "2", seed=3),
        ("gamma", "1"): write_model(root / "gamma", seed=4),
    }
    return root, answers


def serve(root: Path, tmp_path: Path, *flags: str):
    return start_predictor(root, tmp_path / "predictor.log", f"--model_repository={root}", *flags)


def test_none_mode_serves_every_model_and_the_latest_version_and_refuses_control(repository, tmp_path):
    root, answers = repository
    server = serve(root, tmp_path)
    try:
        for name in ("alpha", "beta", "gamma"):
            latest = "2" if name == "beta" else "1"
            np.testing.assert_allclose(answer(infer(server.url, name)), answers[(name, latest)], rtol=1e-5)
        missing = infer(server.url, "beta", "1")  # the default policy serves the latest version only
        assert missing.status_code == 404 and "'beta' has no version '1'" in missing.json()["error"]
        index = httpx.post(f"{server.url}/v2/repository/index", json={}).json()
        assert {(row["name"], row["version"], row["state"]) for row in index} == {
            ("alpha", "1", "READY"),
            ("beta", "2", "READY"),
            ("gamma", "1", "READY"),
        }
        refused = httpx.post(f"{server.url}/v2/repository/models/alpha/unload")
        assert refused.status_code == 409 and "--model_control_mode=explicit" in refused.json()["error"]
        assert infer(server.url, "alpha").status_code == 200
    finally:
        server.stop()


def test_explicit_mode_with_tritonclient_over_http(repository, tmp_path):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    root, answers = repository
    (root / "beta" / "ferry.json").write_text(json.dumps({"version_policy": {"all": {}}}))
    server = serve(root, tmp_path, "--model_control_mode=explicit", "--load_model=alpha")
    client = triton.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        index = {row["name"]: row for row in client.get_model_repository_index()}
        assert index["alpha"]["state"] == "READY" and index["beta"]["state"] == "UNAVAILABLE"
        assert infer(server.url, "beta").status_code == 404
        client.load_model("beta")  # version_policy all: both versions, each with its own weights
        for version in ("1", "2"):
            np.testing.assert_allclose(
                answer(infer(server.url, "beta", version)), answers[("beta", version)], rtol=1e-5
            )
        assert client.is_model_ready("beta", "1") and client.is_model_ready("beta", "2")
        # A config sent with the load overrides the folder's: batching off, and the latest version only.
        client.load_model("beta", config=json.dumps({"max_batch_size": 0, "version_policy": {"latest": {}}}))
        assert client.get_model_config("beta")["max_batch_size"] == 0
        assert infer(server.url, "beta", "1").status_code == 404
        # Files sent with the load (base64 in JSON: tritonclient's HTTP client cannot send them, its gRPC one
        # can, below): a model the repository does not hold, served under its own name.
        delta = tmp_path / "upload"
        expected = write_model(delta / "1", seed=9)
        content = base64.b64encode((delta / "1" / "model.onnx").read_bytes()).decode()
        parameters = {"config": json.dumps({"max_batch_size": 8}), "file:1/model.onnx": content}
        loaded = httpx.post(f"{server.url}/v2/repository/models/delta/load", json={"parameters": parameters})
        assert loaded.status_code == 200, loaded.text
        np.testing.assert_allclose(answer(infer(server.url, "delta")), expected, rtol=1e-5)
        assert not (root / "delta").exists()  # uploads never land in the repository
        client.unload_model("alpha")
        gone = infer(server.url, "alpha")
        assert gone.status_code == 404 and "'alpha' not found" in gone.json()["error"]
        index = {row["name"]: row for row in client.get_model_repository_index()}
        assert index["alpha"]["state"] == "UNAVAILABLE" and index["alpha"]["reason"] == "unloaded"
        with pytest.raises(InferenceServerException, match="'nope' is not in the repository"):
            client.load_model("nope")
        stats = client.get_inference_statistics("delta")["model_stats"][0]
        assert stats["inference_count"] >= 1 and stats["execution_count"] >= 1
        every = {(m["name"], m["version"]) for m in client.get_inference_statistics()["model_stats"]}
        assert every == {("beta", "2"), ("delta", "1")}
    finally:
        client.close()
        server.stop()


def test_explicit_mode_with_tritonclient_over_grpc(repository, tmp_path):
    import tritonclient.grpc as triton

    root, answers = repository
    server = serve(root, tmp_path, "--model_control_mode=explicit")
    client = triton.InferenceServerClient(server.grpc_address)
    try:
        assert {m["name"] for m in client.get_model_repository_index(as_json=True)["models"]} == {
            "alpha",
            "beta",
            "gamma",
        }
        client.load_model("gamma")
        # A model sent as files, over gRPC as tritonclient sends them (bytes parameters).
        expected = write_model(tmp_path / "upload" / "3", seed=8)
        files = {"file:3/model.onnx": (tmp_path / "upload" / "3" / "model.onnx").read_bytes()}
        client.load_model("zeta", config=json.dumps({"max_batch_size": 4}), files=files)
        assert client.get_model_config("zeta", as_json=True)["config"]["max_batch_size"] == 4
        np.testing.assert_allclose(answer(infer(server.url, "zeta", "3")), expected, rtol=1e-5)
        config = client.get_model_config("gamma", as_json=True)["config"]
        assert config["name"] == "gamma" and config["max_batch_size"] == 64
        assert [i["name"] for i in config["input"]] == ["input-0"] and config["input"][0][
            "data_type"
        ] == "TYPE_FP32"
        inputs = [triton.InferInput("input-0", [1, 4], "FP32")]
        inputs[0].set_data_from_numpy(X)
        result = client.infer("gamma", inputs).as_numpy("probabilities")
        np.testing.assert_allclose(result, answers[("gamma", "1")], rtol=1e-5)
        stats = client.get_inference_statistics("gamma", as_json=True)["model_stats"][0]
        assert stats["name"] == "gamma" and int(stats["inference_count"]) == 1
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="not allowed"):
            client.load_model("../gamma")  # gRPC carries any string: a name that would leave the repository
        # A reload: the replaced version drains and closes in the background; the name stays ready throughout.
        client.load_model("zeta", config=json.dumps({"max_batch_size": 8}), files=files)
        client.unload_model("gamma")
        index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
        assert index["gamma"]["state"] == "UNAVAILABLE" and index["gamma"]["reason"] == "unloaded"
        assert index["zeta"]["state"] == "READY" and index["zeta"]["version"] == "3"
        time.sleep(0.5)  # the old zeta's close has run by now
        assert ready_gauges(server.url) == {"gamma": 0.0, "zeta": 1.0}  # alpha and beta were never loaded
    finally:
        client.close()
        server.stop()


def ready_gauges(url: str) -> dict[str, float]:
    """``ferry_model_ready`` by model, as scraped."""
    gauges = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("ferry_model_ready{"):
            labels, value = line.rsplit(" ", 1)
            gauges[labels.split('model="')[1].split('"')[0]] = float(value)
    return gauges


def test_a_server_of_a_fixed_set_refuses_load_and_unload_over_both_protocols(tmp_path):
    import grpc
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    write_model(tmp_path / "model", seed=5)
    server = start_predictor(tmp_path / "model", tmp_path / "predictor.log", "--model_name=solo")
    client = triton.InferenceServerClient(server.grpc_address)
    try:
        index = httpx.post(f"{server.url}/v2/repository/index", json={}, timeout=10).json()
        assert index == [{"name": "solo", "version": "1", "state": "READY", "reason": ""}]
        for action in ("load", "unload"):
            refused = httpx.post(f"{server.url}/v2/repository/models/solo/{action}", json={}, timeout=10)
            assert refused.status_code == 409 and "--model_repository" in refused.json()["error"], (
                refused.text
            )
        with pytest.raises(InferenceServerException, match="--model_repository") as refusal:
            client.unload_model("solo")
        assert refusal.value.status() == str(grpc.StatusCode.FAILED_PRECONDITION)
        assert ready_gauges(server.url) == {"solo": 1.0}
        assert infer(server.url, "solo").status_code == 200  # refusals leave the model serving
    finally:
        client.close()
        server.stop()


def test_a_new_version_under_load_switches_with_no_failed_request(repository, tmp_path):
    """16 clients call alpha without pause while version 2 is added and loaded: every answer is exactly version
    1's or version 2's, none fails, and once a client has seen version 2 it never sees version 1 again."""
    root, answers = repository
    server = serve(root, tmp_path, "--model_control_mode=explicit", "--load_model=alpha")
    old = answers[("alpha", "1")]
    new = write_model(root / "alpha-v2" / "2", seed=5)

    async def run() -> list[list[str]]:
        stop = asyncio.Event()
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16)) as client:

            async def caller() -> list[str]:
                seen = []
                while not stop.is_set():
                    got = answer(await infer(server.url, "alpha", client=client))
                    seen.append(
                        "old"
                        if np.allclose(got, old, rtol=1e-5)
                        else "new"
                        if np.allclose(got, new, rtol=1e-5)
                        else "?"
                    )
                return seen

            callers = [asyncio.create_task(caller()) for _ in range(16)]
            await asyncio.sleep(1.0)
            # Triton's layout for version 2: alpha/1/ (the current model) and alpha/2/.
            (root / "alpha" / "1").mkdir()
            (root / "alpha" / "model.onnx").rename(root / "alpha" / "1" / "model.onnx")
            shutil.move(root / "alpha-v2" / "2", root / "alpha" / "2")
            loaded = await client.post(f"{server.url}/v2/repository/models/alpha/load", json={}, timeout=60)
            assert loaded.status_code == 200, loaded.text
            await asyncio.sleep(1.0)
            stop.set()
            return await asyncio.gather(*callers)

    try:
        sequences = asyncio.run(run())
        flat = [s for seq in sequences for s in seq]
        assert "?" not in flat and flat.count("old") > 0 and flat.count("new") > 0
        for seq in sequences:
            first_new = seq.index("new") if "new" in seq else len(seq)
            assert "old" not in seq[first_new:], seq
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_bad_models_and_names_are_refused_and_the_others_keep_serving(repository, tmp_path):
    root, answers = repository
    (root / "corrupt").mkdir()
    (root / "corrupt" / "model.onnx").write_bytes(b"this is not an onnx file")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no model here")
    pickled = root / "pickled"
    pickled.mkdir()
    (pickled / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n"
    )
    (pickled / "model.pkl").write_bytes(b"\x80\x04N.")
    server = serve(root, tmp_path, "--model_control_mode=explicit", "--load_model=alpha")
    try:
        for name, status, text in [
            ("corrupt", 400, "'corrupt' does not load"),
            ("empty", 400, "holds no model"),
            ("pickled", 400, "allow_unpickle"),
            ("missing", 404, "'missing' is not in the repository"),
            ("%2E%2E", 400, "not allowed"),  # a client that does not normalise '..' away
            ("-dash", 400, "not allowed"),
        ]:
            response = httpx.post(f"{server.url}/v2/repository/models/{name}/load", json={}, timeout=60)
            assert response.status_code == status, (name, response.text)
            assert text in response.json()["error"], (name, response.text)
            np.testing.assert_allclose(answer(infer(server.url, "alpha")), answers[("alpha", "1")], rtol=1e-5)
        index = {row["name"]: row for row in httpx.post(f"{server.url}/v2/repository/index").json()}
        assert index["corrupt"]["state"] == "UNAVAILABLE" and "does not load" in index["corrupt"]["reason"]
        escape = httpx.post(
            f"{server.url}/v2/repository/models/x/load",
            json={"parameters": {"file:../../escape.onnx": "AAAA"}},
        )
        assert escape.status_code == 400 and "leaves the model's folder" in escape.json()["error"]
        assert not (tmp_path / "escape.onnx").exists()
        garbage = httpx.post(f"{server.url}/v2/repository/models/alpha/load", content=b"{not json")
        assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]
        assert server.process.poll() is None
    finally:
        server.stop()


def test_a_load_past_the_memory_budget_is_refused_naming_it(repository, tmp_path):
    root, _ = repository
    # Each small model is charged about 8 MiB: a 20 MiB budget holds two.
    server = serve(root, tmp_path, "--model_control_mode=explicit", f"--max_model_memory_bytes={20 << 20}")
    try:
        for name in ("alpha", "gamma"):
            assert httpx.post(f"{server.url}/v2/repository/models/{name}/load", timeout=60).status_code == 200
        refused = httpx.post(f"{server.url}/v2/repository/models/beta/load", timeout=60)
        assert refused.status_code == 409, refused.text
        assert "max_model_memory_bytes budget of 20.0 MiB" in refused.json()["error"]
        httpx.post(f"{server.url}/v2/repository/models/alpha/unload", timeout=60).raise_for_status()
        assert httpx.post(f"{server.url}/v2/repository/models/beta/load", timeout=60).status_code == 200
    finally:
        server.stop()


def test_poll_mode_follows_the_folder(repository, tmp_path):
    root, _ = repository
    server = serve(root, tmp_path, "--model_control_mode=poll", "--repository_poll_s=0.3")
    try:
        assert infer(server.url, "gamma").status_code == 200
        shutil.rmtree(root / "gamma")
        expected = write_model(tmp_path / "staging" / "epsilon", seed=7)
        shutil.move(tmp_path / "staging" / "epsilon", root / "epsilon")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (
                infer(server.url, "gamma").status_code == 404
                and infer(server.url, "epsilon").status_code == 200
            ):
                break
            time.sleep(0.2)
        np.testing.assert_allclose(answer(infer(server.url, "epsilon")), expected, rtol=1e-5)
        assert infer(server.url, "gamma").status_code == 404
        refused = httpx.post(f"{server.url}/v2/repository/models/alpha/load")
        assert refused.status_code == 409
    finally:
        server.stop()


# -- the rules, on their own -----------------------------------------------------------------------------------
def test_version_policies_choose_as_tritons_do():
    from ferry.errors import InvalidInput
    from ferry.model_repository import VersionPolicy

    available = ["1", "3", "10", "2"]
    assert VersionPolicy.parse(None, "m").select(available) == ["10"]
    assert VersionPolicy.parse({"latest": {"num_versions": 2}}, "m").select(available) == ["3", "10"]
    assert VersionPolicy.parse({"all": {}}, "m").select(available) == ["1", "2", "3", "10"]
    assert VersionPolicy.parse({"specific": {"versions": [2, 7]}}, "m").select(available) == ["2"]
    for bad in ({"newest": {}}, {"latest": {"num_versions": 0}}, {"specific": {}}, "all"):
        with pytest.raises(InvalidInput, match="version_policy"):
            VersionPolicy.parse(bad, "m")


def test_threads_are_divided_among_the_models_and_a_config_maps_onto_settings(tmp_path):
    from ferry.errors import InvalidInput
    from ferry.model_repository import ModelRepository, check_name, versions_in
    from ferry.settings import ModelSettings, available_cpus

    for name in ("a", "b", "c"):
        write_model(tmp_path / name / "1", seed=0)
    (tmp_path / "a" / "7").mkdir()  # an empty version folder is not a version
    assert versions_in(tmp_path / "a") == {"1": tmp_path / "a" / "1"}
    repository = ModelRepository(tmp_path, ModelSettings(), memory_budget_bytes=1 << 30)
    settings = repository._settings_for("a", {})
    assert settings.intra_op_threads == max(1, available_cpus() // 3)
    config = {
        "max_batch_size": 8,
        "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 500},
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
    }
    settings = repository._settings_for("a", config)
    assert (settings.max_batch_size, settings.preferred_batch_sizes, settings.instances) == (8, (4, 8), 2)
    assert settings.max_queue_delay_ms == pytest.approx(0.5)
    assert repository._settings_for("a", {"max_batch_size": 0}).batching is False
    with pytest.raises(InvalidInput, match="max_batch_size"):
        repository._settings_for("a", {"max_batch_size": -1})
    for bad in ("..", "../etc", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(InvalidInput, match="not allowed"):
            check_name(bad)


def test_explicit_mode_waits_for_a_repository_an_agent_creates(tmp_path):
    """Seldon's agent creates the repository folder when it places the first model: until then the server is
    ready with no model, and a model placed later loads."""
    root = tmp_path / "agent" / "models"
    server = start_predictor(
        tmp_path, tmp_path / "predictor.log", f"--model_repository={root}", "--model_control_mode=explicit"
    )
    try:
        assert httpx.post(f"{server.url}/v2/repository/index").json() == []
        expected = write_model(root / "late_1" / "1", seed=6)
        assert httpx.post(f"{server.url}/v2/repository/models/late_1/load", timeout=60).status_code == 200
        np.testing.assert_allclose(answer(infer(server.url, "late_1")), expected, rtol=1e-5)
    finally:
        server.stop()


def test_an_unload_lets_the_requests_in_flight_finish(tmp_path):
    """A request of a slow model is computing when its unload arrives: it still gets its answer, the unload
    returns once it has, and the model is gone after."""
    import threading

    from support.models import slow_convnet

    root = tmp_path / "repository"
    export(slow_convnet(side=96, layers=6), root / "slow", "onnx", 16, 10)
    server = serve(
        root, tmp_path, "--model_control_mode=explicit", "--load_model=slow", "--max_batch_size=64"
    )
    # 64 rows of ~8 ms each on one core: the request computes for a few tenths of a second at least (two
    # intra-op threads halve it), many times the 0.05 s the unload waits for it to be under way.
    rows = 64
    body = {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [rows, 16], "data": [0.1] * rows * 16}]
    }
    answers, finished = [], {}

    def call() -> None:
        answers.append(httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=60))
        finished["request"] = time.monotonic()

    request = threading.Thread(target=call)
    try:
        request.start()
        time.sleep(0.05)
        in_flight = "request" not in finished
        unloaded = httpx.post(f"{server.url}/v2/repository/models/slow/unload", timeout=60)
        request.join(60)
        assert in_flight, "the request had already been answered: make the model slower"
        assert unloaded.status_code == 200, unloaded.text
        # Answered in full: an unload that did not drain would have failed it (503, model shutting down).
        assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
        assert len(answers[0].json()["outputs"][0]["data"]) == rows * 10
        assert httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=60).status_code == 404
    finally:
        server.stop()
