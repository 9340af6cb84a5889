"""What every part of the benchmark shares: where things live, which CPU runs what, which Pythons run the peers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / ".work"  # git-ignored: built models, the Triton and (fallback) MLServer environments
# A full run (no --quick, --cases, --peers or --url) writes benchmarks/results, RESULTS.md and plots/, cleared first
# so that everything in them is that one run's. Every other run writes under .work, never beside it.
RESULTS = BENCH / "results"
PLOTS = BENCH / "plots"
REPORT = BENCH / "RESULTS.md"
DEV_RESULTS = WORK / "results"
DEV_PLOTS = WORK / "plots"
DEV_REPORT = WORK / "RESULTS-dev.md"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "runtimes"))

SERVER_CPU, CLIENT_CPU = "0", "1"
# The Python that runs Ferry and the Python peers; FERRY_BENCH_PYTHON points elsewhere (a GPU machine's own
# Python with Ferry on PYTHONPATH, benchmarks/gpu.py).
FERRY_PY = Path(os.environ.get("FERRY_BENCH_PYTHON", REPO / ".venv" / "bin" / "python"))
EXPLAINER_PY = REPO / ".venv-explainer" / "bin" / "python"
TRITON_PY = WORK / "pytriton-venv" / "bin" / "python"
START_TIMEOUT_S = 180  # MLServer and Triton take several seconds to import and load on one core
TOLERANCE = 1e-4


def mlserver_python() -> Path:
    """The MLServer environment of the repo when it exists, else the harness's own (benchmarks/.work)."""
    own = REPO / ".venv-mlserver" / "bin" / "python"
    return own if own.exists() else WORK / "mlserver-venv" / "bin" / "python"


def cpu_set(spec: str) -> set[int]:
    """taskset's list form ("0", "0-3", "0,2-3") as CPU numbers."""
    found = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


def in_turns(names: tuple[str, ...], rounds: int, once) -> dict[str, list]:
    """``once(name)`` for every name in each of ``rounds`` rounds, the order alternating between rounds (a, b;
    b, a; ...) so that a drift of the machine within a round favours none: each name's results, in round order."""
    runs: dict[str, list] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            runs[name].append(once(name))
    return runs
