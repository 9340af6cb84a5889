"""The Triton path: a Triton model repository for the demo churn model.

``write_repository(out_dir, onnx_model, feature_names)`` writes ``out_dir/triton/``::

    preprocessing/config.pbtxt + 1/model.py   Python backend: one FP32 [batch, 1] input per raw feature ->
                                              "input-0" FP32 [batch, n] (contract clipped to 0..2; a
                                              request with a NaN or infinite value gets an error response)
    classifier/config.pbtxt + 1/model.onnx    the churn ONNX model (a copy): "input-0" FP32 [batch, n] ->
                                              "probabilities" FP32 [batch, 2]
    ensemble/config.pbtxt + 1/                preprocessing -> classifier; inputs the raw features, output
                                              "probabilities"

That folder is the repository root Triton is started with (``--model-repository``); upload it as a whole to
the Triton InferenceService's ``storageUri`` (``s3://models/triton/ensemble`` in
``k8s/components/gpu/triton-ensemble.yaml``) and call the ``ensemble`` model.

The configs are written from text templates, so a demo build needs no ``tritonclient``; the tests parse every
one with Triton's own ``ModelConfig`` protobuf. ``ensemble/1/`` holds only a ``.keep`` file: Triton needs the
version folder of an ensemble although it reads nothing from it, and object stores (S3, GCS) do not keep empty
folders, so an uploaded repository would otherwise lose it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

#: Triton model names; each is also the model's folder.
PREPROCESSING = "preprocessing"
CLASSIFIER = "classifier"
ENSEMBLE = "ensemble"
#: The churn model's tensors (see ``ferry_tools.demo.models``) and the ensemble's name for the tensor between steps.
MODEL_INPUT = "input-0"
MODEL_OUTPUT = "probabilities"
FEATURES_TENSOR = "features"
CLASSES = 2
MAX_BATCH_SIZE = 64
#: Categorical features and their valid code range; the preprocessing model clips them into it.
CLIP = {"contract": (0, 2)}
#: What a feature name may look like: it becomes a Triton tensor name inside the configs' quotes.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

_PREPROCESSING_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
{inputs}
output {{
  name: "{output}"
  data_type: TYPE_FP32
  dims: [ {width} ]
}}
dynamic_batching {{
}}
instance_group {{
  count: 1
  kind: KIND_CPU
}}
"""

_CLASSIFIER_CONFIG = """\
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input {{
  name: "{input}"
  data_type: TYPE_FP32
  dims: [ {width} ]
}}
output {{
  name: "{output}"
  data_type: TYPE_FP32
  dims: [ {classes} ]
}}
dynamic_batching {{
}}
instance_group {{
  count: 1
  kind: KIND_CPU
}}
"""

_ENSEMBLE_CONFIG = """\
name: "{name}"
platform: "ensemble"
max_batch_size: {max_batch_size}
{inputs}
output {{
  name: "{output}"
  data_type: TYPE_FP32
  dims: [ {classes} ]
}}
ensemble_scheduling {{
  step {{
    model_name: "{preprocessing}"
    model_version: -1
{feature_map}
    output_map {{
      key: "{model_input}"
      value: "{features}"
    }}
  }}
  step {{
    model_name: "{classifier}"
    model_version: -1
    input_map {{
      key: "{model_input}"
      value: "{features}"
    }}
    output_map {{
      key: "{model_output}"
      value: "{output}"
    }}
  }}
}}
"""

_FEATURE_INPUT = """\
input {{
  name: "{name}"
  data_type: TYPE_FP32
  dims: [ 1 ]
}}"""

_FEATURE_MAP = """\
    input_map {{
      key: "{name}"
      value: "{name}"
    }}"""

_MODEL_PY = '''\
"""Triton Python-backend model "{name}", written by ``ferry_tools.demo.triton``: the churn model's raw
features, one FP32 [batch, 1] input each, joined into its "{output}" FP32 [batch, {width}] input."""

import numpy as np
import triton_python_backend_utils as pb_utils

FEATURES = {features}
OUTPUT = "{output}"
#: feature index -> (low, high): categorical codes clipped into their valid range.
CLIP = {clip}


class TritonPythonModel:
    def initialize(self, args):
        self.features = list(FEATURES)
        self.output = OUTPUT

    def execute(self, requests):
        responses = []
        for request in requests:
            columns = []
            for name in self.features:
                values = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                columns.append(np.asarray(values, dtype=np.float32).reshape(-1, 1))
            features = np.concatenate(columns, axis=1)
            bad = ~np.isfinite(features)
            if bad.any():
                names = sorted({{self.features[column] for column in np.nonzero(bad)[1]}})
                error = pb_utils.TritonError("NaN or infinite values in input(s): " + ", ".join(names))
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            for column, (low, high) in CLIP.items():
                features[:, column] = np.clip(features[:, column], low, high)
            output = pb_utils.Tensor(self.output, features)
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses

    def finalize(self):
        pass
'''


def write_repository(out_dir: Path, onnx_model: Path, feature_names: list[str]) -> Path:
    """Write the Triton model repository ``out_dir/triton`` (replacing one already there) and return its path.

    ``onnx_model`` is the churn classifier (input "input-0" FP32 [batch, len(feature_names)], output
    "probabilities" FP32 [batch, 2]); ``feature_names`` become the ensemble's and the preprocessing model's
    input names, in the order the classifier expects them."""
    features = list(feature_names)
    if not features or len(set(features)) != len(features) or not all(map(_NAME.fullmatch, features)):
        raise ValueError(f"feature_names must be distinct, plain names and not empty: {features}")
    root = Path(out_dir) / "triton"
    if root.exists():
        shutil.rmtree(root)
    width = len(features)
    inputs = "\n".join(_FEATURE_INPUT.format(name=name) for name in features)

    preprocessing = root / PREPROCESSING
    (preprocessing / "1").mkdir(parents=True)
    (preprocessing / "config.pbtxt").write_text(
        _PREPROCESSING_CONFIG.format(
            name=PREPROCESSING, max_batch_size=MAX_BATCH_SIZE, inputs=inputs, output=MODEL_INPUT, width=width
        )
    )
    clip = {features.index(name): bounds for name, bounds in CLIP.items() if name in features}
    (preprocessing / "1" / "model.py").write_text(
        _MODEL_PY.format(
            name=PREPROCESSING, output=MODEL_INPUT, width=width, features=json.dumps(features), clip=clip
        )
    )

    classifier = root / CLASSIFIER
    (classifier / "1").mkdir(parents=True)
    shutil.copyfile(onnx_model, classifier / "1" / "model.onnx")
    (classifier / "config.pbtxt").write_text(
        _CLASSIFIER_CONFIG.format(
            name=CLASSIFIER,
            max_batch_size=MAX_BATCH_SIZE,
            input=MODEL_INPUT,
            output=MODEL_OUTPUT,
            width=width,
            classes=CLASSES,
        )
    )

    ensemble = root / ENSEMBLE
    (ensemble / "1").mkdir(parents=True)
    (ensemble / "1" / ".keep").write_text("")
    (ensemble / "config.pbtxt").write_text(
        _ENSEMBLE_CONFIG.format(
            name=ENSEMBLE,
            max_batch_size=MAX_BATCH_SIZE,
            inputs=inputs,
            output=MODEL_OUTPUT,
            classes=CLASSES,
            preprocessing=PREPROCESSING,
            classifier=CLASSIFIER,
            feature_map="\n".join(_FEATURE_MAP.format(name=name) for name in features),
            model_input=MODEL_INPUT,
            model_output=MODEL_OUTPUT,
            features=FEATURES_TENSOR,
        )
    )
    return root
