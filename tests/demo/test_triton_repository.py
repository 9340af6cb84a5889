"""The demo's Triton model repository (``ferry_tools.demo.triton``), checked without Triton:
every config parsed with Triton's own ``ModelConfig`` protobuf, the ensemble wired consistently, the classifier
config matching its ONNX file, and the preprocessing model's ``execute`` run against a stand-in for
``triton_python_backend_utils``, its output fed to the ONNX classifier."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ferry_tools.demo.triton import write_repository
from google.protobuf import text_format

FEATURES = ["tenure", "monthly_charges", "total_charges", "contract"]
MODELS = ["preprocessing", "classifier", "ensemble"]
#: Triton's TYPE_* name -> numpy dtype, for the types these configs use.
TRITON_DTYPES = {"TYPE_FP32": np.float32}
#: ONNX tensor element types (onnxruntime's names) -> Triton's TYPE_* names.
ONNX_TO_TRITON = {"tensor(float)": "TYPE_FP32"}


def _model_config_pb2() -> types.ModuleType:
    """tritonclient's ``model_config_pb2``, without importing ``tritonclient.grpc``.

    The package imports tritonclient's ``grpc_service.proto``, whose "inference" messages collide with kserve's
    copy of the same protocol in protobuf's default pool (``duplicate symbol``) once kserve is imported in this
    process; ``model_config.proto`` alone does not."""
    loaded = sys.modules.get("tritonclient.grpc.model_config_pb2")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("tritonclient")
    if package is None or not package.submodule_search_locations:
        pytest.skip("tritonclient is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("_ferry_tests_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pb2() -> types.ModuleType:
    return _model_config_pb2()


@pytest.fixture(scope="module")
def repository(demo_dir) -> Path:
    return Path(demo_dir).resolve() / "triton"


@pytest.fixture(scope="module")
def configs(repository, pb2) -> dict:
    """model name -> its config.pbtxt parsed into Triton's ModelConfig (a parse error fails every test)."""
    return {
        name: text_format.Parse((repository / name / "config.pbtxt").read_text(), pb2.ModelConfig())
        for name in MODELS
    }


@pytest.fixture(scope="module")
def onnx_session(repository):
    import onnxruntime

    return onnxruntime.InferenceSession(
        str(repository / "classifier" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def rows(demo_dir) -> np.ndarray:
    """Held-out customers' raw features."""
    frame = pd.read_parquet(Path(demo_dir) / "churn" / "data" / "churn.parquet")
    return frame.loc[frame["split"] == "test", FEATURES].to_numpy(np.float32)[:50]


def _tensors(config, kind: str) -> dict:
    return {tensor.name: tensor for tensor in getattr(config, kind)}


def _dtype_name(pb2, tensor) -> str:
    return pb2.DataType.Name(tensor.data_type)


# --- layout and manifest -------------------------------------------------------------------------------------


def test_layout(repository, demo_dir):
    assert sorted(path.name for path in repository.iterdir()) == sorted(MODELS)
    for name in MODELS:
        assert (repository / name / "config.pbtxt").is_file()
        assert (repository / name / "1").is_dir()
    assert (repository / "preprocessing" / "1" / "model.py").is_file()
    classifier = repository / "classifier" / "1" / "model.onnx"
    assert classifier.read_bytes() == (Path(demo_dir) / "churn" / "onnx" / "model.onnx").read_bytes()
    # Nothing for Triton to read in the ensemble's version folder, only a file that keeps it in object stores.
    assert [path.name for path in (repository / "ensemble" / "1").iterdir()] == [".keep"]


def test_manifest_records_the_repository(demo_dir, repository):
    manifest = json.loads((Path(demo_dir) / "manifest.json").read_text())
    assert manifest["triton"] == {"repository": str(repository), "models": MODELS}


# --- configs -------------------------------------------------------------------------------------------------


def test_configs_name_their_folders_and_backends(configs, pb2):
    for name, config in configs.items():
        assert config.name == name
        assert config.max_batch_size == 64
    assert (configs["preprocessing"].backend, configs["preprocessing"].platform) == ("python", "")
    assert (configs["classifier"].platform, configs["classifier"].backend) == ("onnxruntime_onnx", "")
    assert configs["ensemble"].platform == "ensemble"
    for name in ("preprocessing", "classifier"):
        assert configs[name].HasField("dynamic_batching")
        assert [group.kind for group in configs[name].instance_group] == [pb2.ModelInstanceGroup.KIND_CPU]


def test_preprocessing_takes_each_feature_and_gives_the_model_input(configs, pb2):
    config = configs["preprocessing"]
    assert [tensor.name for tensor in config.input] == FEATURES
    for tensor in config.input:
        assert (_dtype_name(pb2, tensor), list(tensor.dims)) == ("TYPE_FP32", [1])
    assert [(t.name, _dtype_name(pb2, t), list(t.dims)) for t in config.output] == [
        ("input-0", "TYPE_FP32", [len(FEATURES)])
    ]


def test_ensemble_wiring_is_consistent(configs, pb2):
    """Every step names a model in the repository and only its tensors; every tensor a step reads is an
    ensemble input or an earlier step's output, with the same type and dims on both sides; every ensemble
    output is produced; batching limits fit."""
    ensemble = configs["ensemble"]
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == ["preprocessing", "classifier"]
    assert [tensor.name for tensor in ensemble.input] == FEATURES
    assert [tensor.name for tensor in ensemble.output] == ["probabilities"]

    # ensemble tensor name -> (data type, dims without the batch dimension)
    available = {t.name: (_dtype_name(pb2, t), list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert step.model_version == -1
        assert model.max_batch_size >= ensemble.max_batch_size > 0
        inputs, outputs = _tensors(model, "input"), _tensors(model, "output")
        assert set(step.input_map) == set(inputs), f"{step.model_name}: every input mapped"
        for key, source in step.input_map.items():
            assert source in available, f"{step.model_name} reads {source!r} before anything writes it"
            assert available[source] == (_dtype_name(pb2, inputs[key]), list(inputs[key].dims)), key
        for key, target in step.output_map.items():
            assert key in outputs, f"{step.model_name} has no output {key!r}"
            assert target not in available, f"{target!r} written twice"
            available[target] = (_dtype_name(pb2, outputs[key]), list(outputs[key].dims))
    for tensor in ensemble.output:
        assert available.get(tensor.name) == (_dtype_name(pb2, tensor), list(tensor.dims))

    # The preprocessing output feeds the classifier input: same name inside the ensemble, type and dims.
    first, second = ensemble.ensemble_scheduling.step
    assert first.output_map["input-0"] == second.input_map["input-0"]
    produced = _tensors(configs["preprocessing"], "output")["input-0"]
    consumed = _tensors(configs["classifier"], "input")["input-0"]
    assert (produced.data_type, list(produced.dims)) == (consumed.data_type, list(consumed.dims))
    assert _dtype_name(pb2, consumed) == "TYPE_FP32"


def test_classifier_config_matches_the_onnx_file(configs, onnx_session, pb2):
    config = configs["classifier"]
    for kind, tensors in (("input", onnx_session.get_inputs()), ("output", onnx_session.get_outputs())):
        declared = _tensors(config, kind)
        assert sorted(declared) == sorted(tensor.name for tensor in tensors), kind
        for tensor in tensors:
            batch, *rest = tensor.shape
            # With max_batch_size > 0 Triton adds the batch dimension: the model's must be variable.
            assert not isinstance(batch, int) or batch < 0, f"{tensor.name}: fixed batch size {batch}"
            assert list(declared[tensor.name].dims) == rest, tensor.name
            assert _dtype_name(pb2, declared[tensor.name]) == ONNX_TO_TRITON[tensor.type], tensor.name


# --- the Python model, run against a stand-in for triton_python_backend_utils ---------------------------------


class _Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _Response:
    def __init__(self, output_tensors=(), error=None):
        self.output_tensors, self.error = list(output_tensors), error


class _TritonError(Exception):
    def message(self) -> str:
        return str(self.args[0])


class _Request:
    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = [_Tensor(name, array) for name, array in tensors.items()]


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor
    module.InferenceResponse = _Response
    module.TritonError = _TritonError
    module.get_input_tensor_by_name = lambda request, name: next(
        (tensor for tensor in request.tensors if tensor.name() == name), None
    )
    module.get_output_tensor_by_name = lambda response, name: next(
        (tensor for tensor in response.output_tensors if tensor.name() == name), None
    )
    return module


@pytest.fixture(scope="module")
def python_model(repository, configs):
    """preprocessing/1/model.py's TritonPythonModel, initialised the way Triton does it."""
    path = repository / "preprocessing" / "1" / "model.py"
    compile(path.read_text(), str(path), "exec")
    fake = _fake_pb_utils()
    previous = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = fake
    try:
        spec = importlib.util.spec_from_file_location("_ferry_tests_triton_preprocessing", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            sys.modules.pop("triton_python_backend_utils", None)
        else:
            sys.modules["triton_python_backend_utils"] = previous
    model = module.TritonPythonModel()
    model_config = json.dumps({"name": configs["preprocessing"].name})
    model.initialize(
        {"model_config": model_config, "model_instance_kind": "CPU", "model_name": "preprocessing"}
    )
    yield model, fake
    model.finalize()


def _request(rows: np.ndarray) -> _Request:
    """One Triton request: each feature a separate FP32 [batch, 1] tensor."""
    return _Request({name: rows[:, [index]].astype(np.float32) for index, name in enumerate(FEATURES)})


def test_preprocessing_then_classifier_equals_the_onnx_model(python_model, onnx_session, rows):
    model, pb_utils = python_model
    # Triton hands a batch of requests to one execute(): here three, of different sizes.
    parts = [rows[:1], rows[1:17], rows[17:]]
    responses = model.execute([_request(part) for part in parts])
    assert len(responses) == len(parts)
    for part, response in zip(parts, responses, strict=True):
        assert response.error is None
        features = pb_utils.get_output_tensor_by_name(response, "input-0").as_numpy()
        assert features.dtype == np.float32
        assert features.shape == (len(part), len(FEATURES))
        through_triton = onnx_session.run(["probabilities"], {"input-0": features})[0]
        direct = onnx_session.run(["probabilities"], {"input-0": part})[0]
        np.testing.assert_allclose(through_triton, direct, rtol=0, atol=1e-6)


def test_preprocessing_clips_contract(python_model, onnx_session):
    model, pb_utils = python_model
    raw = np.array([[24, 65.5, 1572.0, 7], [12, 45.0, 540.0, -3], [5, 30.0, 150.0, 1]], dtype=np.float32)
    (response,) = model.execute([_request(raw)])
    features = pb_utils.get_output_tensor_by_name(response, "input-0").as_numpy()
    expected = raw.copy()
    expected[:, 3] = [2, 0, 1]
    np.testing.assert_array_equal(features, expected)
    np.testing.assert_allclose(
        onnx_session.run(["probabilities"], {"input-0": features})[0],
        onnx_session.run(["probabilities"], {"input-0": expected})[0],
        rtol=0,
        atol=1e-6,
    )


def test_preprocessing_rejects_nan_per_request(python_model, rows):
    model, pb_utils = python_model
    bad = rows[:4].copy()
    bad[2, 1] = np.nan
    good, rejected = model.execute([_request(rows[:4]), _request(bad)])
    assert good.error is None
    assert pb_utils.get_output_tensor_by_name(good, "input-0") is not None
    assert isinstance(rejected.error, pb_utils.TritonError)
    assert "monthly_charges" in rejected.error.message()
    assert rejected.output_tensors == []


# --- write_repository on its own --------------------------------------------------------------------------------


def test_write_repository_replaces_a_previous_one(tmp_path, demo_dir):
    onnx_model = Path(demo_dir) / "churn" / "onnx" / "model.onnx"
    stale = tmp_path / "triton" / "old-model" / "config.pbtxt"
    stale.parent.mkdir(parents=True)
    stale.write_text("stale")
    root = write_repository(tmp_path, onnx_model, FEATURES)
    assert root == tmp_path / "triton"
    assert sorted(path.name for path in root.iterdir()) == sorted(MODELS)
    # Deterministic: the demo build's repository has the same bytes.
    for name in MODELS:
        for relative in ("config.pbtxt", "1/model.py"):
            ours, demo = root / name / relative, Path(demo_dir) / "triton" / name / relative
            assert ours.exists() == demo.exists()
            if ours.exists():
                assert ours.read_text() == demo.read_text()


@pytest.mark.parametrize("names", [[], ["a", "a"], ['with"quote']])
def test_write_repository_rejects_bad_feature_names(tmp_path, demo_dir, names):
    with pytest.raises(ValueError, match="feature_names"):
        write_repository(tmp_path, Path(demo_dir) / "churn" / "onnx" / "model.onnx", names)
