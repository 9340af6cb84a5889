"""Where models come from: a local directory (KServe mounts ``/mnt/models``), a storage URI fetched through
KServe's own storage library (s3://, gs://, https://, azure, hf://…), ``pvc://`` (mounted by the controller),
or an MLflow ``models:/`` / ``runs:/`` URI. Also: what format a directory holds, and model repositories."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

from ferry.errors import InvalidInput, NotReady

log = logging.getLogger(__name__)

MODEL_SUFFIXES = {
    ".onnx": "onnx",
    ".pt2": "torch_export",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".torchscript": "torchscript",
}
METADATA_FILE = "ferry.json"


def is_remote(uri: str) -> bool:
    """A URI that names a model somewhere else (to fetch), rather than a local path."""
    return uri.startswith(("models:/", "runs:/", "pvc://")) or (
        "://" in uri and not uri.startswith("file://")
    )


def fetch(uri: str, cache_dir: Path, *, attempts: int = 3, backoff_s: float = 1.0) -> Path:
    """A local directory holding the model named by ``uri``; remote sources are retried a bounded number of
    times (storage that is still starting up), then the error is raised so the process exits non-zero."""
    if uri.startswith(("models:/", "runs:/")):
        from ferry.backends.mlflow import download

        return _retry(lambda: download(uri, _cache_path(cache_dir, uri)), uri, attempts, backoff_s)
    if uri.startswith("pvc://"):
        # KServe mounts the claim into the pod; the path after the claim name is relative to the mount.
        claim_path = uri.removeprefix("pvc://").partition("/")[2]
        return _local(Path(os.environ.get("FERRY_PVC_ROOT", "/mnt/pvc")) / claim_path, uri)
    if "://" in uri and not uri.startswith("file://"):
        from kserve_storage import Storage

        # kserve's S3 download runs a multiprocessing.Pool. Forking a process whose gRPC and event-loop threads
        # are already running can deadlock the child (seen: a download that never finished), so workers start
        # from a clean fork server instead.
        if multiprocessing.get_start_method(allow_none=True) != "forkserver":
            multiprocessing.set_start_method("forkserver", force=True)
        target = _cache_path(cache_dir, uri)
        return _retry(lambda: Path(Storage.download(uri, out_dir=str(target))), uri, attempts, backoff_s)
    return _local(Path(uri.removeprefix("file://")), uri)


def _local(path: Path, uri: str) -> Path:
    if not path.exists():
        raise InvalidInput(f"model_dir {uri!r} does not exist")
    return path


def _cache_path(cache_dir: Path, uri: str) -> Path:
    return cache_dir / hashlib.sha256(uri.encode()).hexdigest()[:16]


def _retry(action, uri: str, attempts: int, backoff_s: float) -> Path:
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except InvalidInput:
            raise
        except Exception as exc:
            if attempt == attempts:
                raise NotReady(
                    f"cannot fetch {uri!r} after {attempts} attempts: {type(exc).__name__}: {exc}"
                ) from exc
            log.warning("fetching %s failed (%s); retry %d/%d", uri, exc, attempt, attempts - 1)
            time.sleep(backoff_s * attempt)
    raise AssertionError("unreachable")


def model_files(directory: Path) -> list[Path]:
    """Model files at the top of a directory or one level down (Triton-style ``1/model.onnx``)."""
    found = [p for p in sorted(directory.iterdir()) if p.is_file() and p.suffix in MODEL_SUFFIXES]
    if not found:
        for sub in sorted(p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()):
            found += [p for p in sorted(sub.iterdir()) if p.is_file() and p.suffix in MODEL_SUFFIXES]
    return found


def is_model_dir(directory: Path) -> bool:
    return (directory / "MLmodel").is_file() or bool(model_files(directory))


def detect_format(directory: Path, wanted: str = "auto") -> tuple[str, Path]:
    """(format, path) of the model in ``directory``: the MLmodel directory or the single model file."""
    if directory.is_file():
        kind = MODEL_SUFFIXES.get(directory.suffix)
        if kind is None:
            raise InvalidInput(
                f"{directory.name}: unknown model file type (expected {sorted(MODEL_SUFFIXES)})"
            )
        return (wanted if wanted != "auto" else kind), directory
    if wanted == "mlflow" or (wanted == "auto" and (directory / "MLmodel").is_file()):
        if not (directory / "MLmodel").is_file():
            raise InvalidInput(f"{directory}: format mlflow needs an MLmodel file")
        return "mlflow", directory
    files = model_files(directory)
    if wanted != "auto":
        files = [p for p in files if MODEL_SUFFIXES[p.suffix] == wanted]
    if not files:
        present = sorted(p.name for p in directory.iterdir())[:10]
        raise InvalidInput(
            f"{directory}: no {wanted if wanted != 'auto' else ''} model file found (has {present})"
        )
    if len(files) > 1:
        raise InvalidInput(
            f"{directory}: several model files {[p.name for p in files]}; set --format or keep one"
        )
    return MODEL_SUFFIXES[files[0].suffix] if wanted == "auto" else wanted, files[0]


def discover(root: Path, default_name: str) -> dict[str, Path]:
    """Models to serve: ``root`` itself, or each model directory inside it (a model repository)."""
    if root.is_file() or is_model_dir(root):
        return {default_name: root}
    models = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and is_model_dir(p)}
    if not models:
        raise InvalidInput(f"model_dir {str(root)!r} holds no model (no .onnx/.pt/.pt2 file, no MLmodel)")
    return models


def read_metadata(model_path: Path) -> dict:
    """Optional ``ferry.json`` beside the model: signature (names, datatypes, shapes) and batching overrides."""
    directory = model_path if model_path.is_dir() else model_path.parent
    for candidate in (directory / METADATA_FILE, directory.parent / METADATA_FILE):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except ValueError as exc:
                raise InvalidInput(f"{candidate}: not valid JSON: {exc}") from None
    return {}
