"""The example model repository (examples/mlserver) is valid for MLServer and for Ferry's runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ferry.settings import ModelSettings
from support.servers import REPO

EXAMPLES = REPO / "examples" / "mlserver"
MODELS = sorted(EXAMPLES.glob("*/model-settings.json"))

# Run apart: importing mlserver registers its `inference.*` protobuf messages, which clash with
# tritonclient.grpc's copy in the test process.
_VALIDATE = """
import json, sys
from mlserver.settings import ModelSettings, Settings
settings = Settings.model_validate(json.load(open(sys.argv[1])))
models = [ModelSettings.model_validate(json.load(open(path))) for path in sys.argv[2:]]
print(json.dumps({"parallel_workers": settings.parallel_workers,
                  "models": [[m.implementation_, m.max_batch_size] for m in models]}))
"""


def test_mlserver_accepts_the_settings():
    done = subprocess.run(
        [sys.executable, "-c", _VALIDATE, str(EXAMPLES / "settings.json"), *map(str, MODELS)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(done.stdout)
    assert found["parallel_workers"] == 0  # one process owns the model (and its GPU)
    assert len(found["models"]) == 3
    for implementation, max_batch_size in found["models"]:
        assert implementation == "ferry.adapters.mlserver.FerryRuntime"
        assert max_batch_size <= 1  # MLServer's adaptive batching off: Ferry batches


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.parent.name)
def test_ferry_accepts_the_extra_settings(path):
    ModelSettings.model_validate(json.loads(path.read_text())["parameters"]["extra"])
