"""What an explainer is built from: a reference sample (CSV/parquet) with feature names, class names and
categorical maps (flags, else ``meta.json``, else the sample's header), or a saved alibi explainer.

A saved alibi explainer is dill-pickled: loading it runs code from the file. So it loads only with
``--allow_unpickle`` or when ``--explainer_sha256`` matches the folder's digest (``directory_sha256``, printed
by ``python -m ferry_explain.artifacts DIR``), checked before anything is unpickled.

Run as a module: ``python -m ferry_explain.artifacts DIR`` prints DIR's digest for ``--explainer_sha256``."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ferry.errors import InvalidInput

log = logging.getLogger(__name__)

SAVED_MARKER = "meta.dill"  # alibi's save_explainer writes meta.dill + explainer.dill
REFERENCE_NAMES = ("reference.parquet", "reference.csv")


@dataclass(frozen=True)
class Features:
    names: tuple[str, ...]
    class_names: tuple[str, ...]
    #: alibi's form: feature index -> category names, the code being the position (0..k-1).
    categorical: dict[int, list[str]]

    @property
    def count(self) -> int:
        return len(self.names)

    def class_name(self, index: int | None) -> str | None:
        if index is None:
            return None
        return self.class_names[index] if index < len(self.class_names) else f"class_{index}"


@dataclass(frozen=True)
class Artifacts:
    features: Features
    reference: np.ndarray | None  # [rows, features] float64; None when a saved explainer is loaded
    saved_dir: Path | None


def directory_sha256(directory: Path) -> str:
    """sha256 over every file's relative path and sha256, in sorted order: one value for a whole folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(directory).as_posix()}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_saved_explainer(directory: Path | None) -> bool:
    return directory is not None and (directory / SAVED_MARKER).is_file()


def check_unpickle_allowed(directory: Path, allow_unpickle: bool, expected_sha256: str) -> None:
    """Refuse to unpickle a saved explainer unless the operator opted in or pinned its digest."""
    if expected_sha256:
        actual = directory_sha256(directory)
        if actual != expected_sha256:
            raise InvalidInput(
                f"saved explainer {directory} has sha256 {actual}, not the expected --explainer_sha256 "
                f"{expected_sha256}; refusing to unpickle it"
            )
        return
    if not allow_unpickle:
        raise InvalidInput(
            f"{directory} holds a saved alibi explainer, which is dill-pickled (loading it runs code from the "
            f"file); pass --explainer_sha256={directory_sha256(directory)} to pin this exact artifact, or "
            "--allow_unpickle to trust it"
        )


def local_path(uri: str, cache_dir: str) -> Path | None:
    """A local path for ``uri`` (fetched through Ferry's storage layer when remote), or None if it is absent."""
    if not uri:
        return None
    from ferry import storage

    if storage.is_remote(uri):
        import importlib.util

        if uri.split("://")[0] not in ("models:", "runs:", "pvc:") and not importlib.util.find_spec(
            "kserve_storage"
        ):
            # This image has no storage client: KServe's storage-initializer fills /mnt/models instead.
            raise InvalidInput(
                f"cannot fetch {uri!r}: this environment has no kserve_storage; let KServe's "
                "storage-initializer download it to --model_dir (storageUri / STORAGE_URI), or mount it"
            )
        return storage.fetch(uri, Path(cache_dir))
    path = Path(uri.removeprefix("file://"))
    return path if path.exists() else None


def resolve(
    *,
    model_dir: Path | None,
    reference: Path | None,
    feature_names: tuple[str, ...],
    class_names: tuple[str, ...],
    categorical_map: dict[str, dict[str, str]],
) -> Artifacts:
    """Work out what to build from: a saved explainer in ``model_dir``, else a reference sample (the given
    one, else one in ``model_dir``); names from the flags, else ``meta.json`` beside either, else the header."""
    saved = model_dir if is_saved_explainer(model_dir) else None
    if reference is not None and reference.is_dir():
        reference = _reference_in(reference)
    if reference is None and saved is None and model_dir is not None and model_dir.is_dir():
        reference = _reference_in(model_dir)
    if reference is None and saved is None:
        raise InvalidInput(
            f"nothing to explain with: --model_dir {model_dir} holds neither a saved alibi explainer "
            f"({SAVED_MARKER}) nor {' / '.join(REFERENCE_NAMES)}, and --reference_uri is not set"
        )
    meta = _meta([d for d in (model_dir, reference.parent if reference else None) if d is not None])
    frame = _read_table(reference) if reference is not None else None
    names = tuple(feature_names) or tuple(meta.get("feature_names", ()))
    if not names and frame is not None:
        names = tuple(str(c) for c in frame.columns)
    if not names:
        raise InvalidInput("feature names unknown: pass --feature_names or provide meta.json")
    data = None
    if frame is not None:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise InvalidInput(f"reference sample {reference} lacks the feature columns {missing}")
        try:
            data = frame[list(names)].to_numpy(dtype=np.float64)
        except ValueError as exc:
            raise InvalidInput(f"reference sample {reference} has non-numeric values: {exc}") from None
        if len(data) == 0:
            raise InvalidInput(f"reference sample {reference} has no rows")
    categorical = _categorical(names, categorical_map or meta.get("categorical_names", {}))
    classes = tuple(class_names) or tuple(meta.get("class_names", ()))
    return Artifacts(Features(names, classes, categorical), data, saved)


def _reference_in(directory: Path) -> Path | None:
    for name in REFERENCE_NAMES:
        if (directory / name).is_file():
            return directory / name
    found = sorted([*directory.glob("*.parquet"), *directory.glob("*.csv")])
    return found[0] if len(found) == 1 else None


def _meta(directories: list[Path]) -> dict:
    for directory in directories:
        path = directory / "meta.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path} is not valid JSON: {exc}") from None
    return {}


def _read_table(path: Path):
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:
        raise InvalidInput(f"cannot read reference sample {path}: {type(exc).__name__}: {exc}") from None


def _categorical(names: tuple[str, ...], mapping: dict) -> dict[int, list[str]]:
    """{feature name: {code: label}} -> alibi's {feature index: [label of code 0, of code 1, ...]}."""
    result: dict[int, list[str]] = {}
    for feature, labels in mapping.items():
        if feature not in names:
            raise InvalidInput(f"categorical feature {feature!r} is not one of the features {list(names)}")
        if isinstance(labels, list):
            labels = dict(enumerate(labels))
        try:
            by_code = {int(code): str(label) for code, label in labels.items()}
        except (TypeError, ValueError, AttributeError):
            raise InvalidInput(f"categorical map of {feature!r} must map integer codes to names") from None
        if sorted(by_code) != list(range(len(by_code))):
            raise InvalidInput(
                f"categorical codes of {feature!r} must be 0..{len(by_code) - 1}, got {sorted(by_code)}"
            )
        result[names.index(feature)] = [by_code[code] for code in range(len(by_code))]
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ferry_explain.artifacts SAVED_EXPLAINER_DIR")
    print(directory_sha256(Path(sys.argv[1])))
