"""A model repository served live: Triton's folder layout and model control modes, and the repository extension's
index / load / unload, behind the serving ``Repository``.

**Layout.** One folder per model under the root. Inside, either the model itself (served as version "1") or
numbered version folders (``1/``, ``2/``, ...), each holding a model Ferry loads (ONNX, TorchScript, torch.export,
MLflow). An optional ``ferry.json`` in the model folder gives the signature, batching overrides (for every version)
and a ``version_policy`` in Triton's form: ``{"latest": {"num_versions": N}}`` (the default, N = 1), ``{"all": {}}``
or ``{"specific": {"versions": [1, 3]}}``.

**Control modes.** ``none``: every model loaded at start, load and unload refused. ``explicit``: the models named by
``--load_model`` loaded at start (``*``: all), then load and unload on request (KServe's and Seldon's agents).
``poll``: every model loaded at start and the folder read again every ``--repository_poll_s``: new and changed
models (re)loaded, removed ones unloaded.

**A load** reads the model's folder, chooses its versions by the policy, checks the memory budget, loads and warms
each version beside what serves, then swaps the model's versions in one step of the event loop
(``Repository.put``): a request finds the old versions or the new ones, never neither. Versions no longer served
finish their in-flight requests, then close. A load that fails changes nothing that serves, and the index says why.
**An unload** stops routing to the model at once, then drains and closes it.

**Rules.** CPU threads: a model whose ``intra_op_threads`` is 0 gets the container's CPUs divided by the number of
models in the repository (at least 1), so N models do not each start a thread per CPU. Memory: a version is charged
``MEMORY_PER_FILE_BYTE`` x its files' size plus ``MEMORY_PER_MODEL`` (what the process really grew by is logged, and
measured per model in ``benchmarks/``; a process's growth cannot be charged per model, as the first load also pulls
in the runtime's libraries); a load whose charge would take the total past the budget is refused with a 409 naming
the budget, before anything is read into memory."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Literal

from ferry import storage
from ferry.errors import ErrorCode, InvalidInput, ModelControlOff, ModelNotFound, ServingError
from ferry.repository import Handler, Repository
from ferry.settings import ModelSettings, available_cpus, memory_share

log = logging.getLogger(__name__)

ControlMode = Literal["none", "explicit", "poll"]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MEMORY_PER_FILE_BYTE = 2.0  # the weights as read, plus the runtime's own copy (pre-packed, arena)
MEMORY_PER_MODEL = 8 << 20  # a session, its threads' stacks, the batcher


class OverBudget(ServingError):
    """A load would take the models' memory past ``--max_model_memory_bytes``."""

    code = ErrorCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class VersionPolicy:
    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value, where: str) -> VersionPolicy:
        """Triton's ``version_policy`` (JSON form); None or {} is the default, the latest version."""
        if not value:
            return cls()
        if not isinstance(value, dict) or len(value) != 1:
            raise InvalidInput(f"{where}: version_policy must be one of latest, all, specific; got {value!r}")
        kind, body = next(iter(value.items()))
        body = body or {}
        if kind == "latest":
            count = body.get("num_versions", 1)
            if not isinstance(count, int) or count < 1:
                raise InvalidInput(f"{where}: version_policy.latest.num_versions must be >= 1, got {count!r}")
            return cls("latest", num_versions=count)
        if kind == "all":
            return cls("all")
        if kind == "specific":
            versions = body.get("versions")
            if not isinstance(versions, list) or not versions:
                raise InvalidInput(f"{where}: version_policy.specific.versions must list version numbers")
            return cls("specific", versions=tuple(str(v) for v in versions))
        raise InvalidInput(f"{where}: version_policy must be one of latest, all, specific; got {kind!r}")

    def select(self, available: list[str]) -> list[str]:
        ordered = sorted(available, key=int)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :]


@dataclass
class ModelStatus:
    """What the index says of one model: its state and why (a failed load's reason stays until the next load)."""

    state: str = "UNAVAILABLE"
    reason: str = ""
    charged: dict[str, int] = field(default_factory=dict)  # version -> bytes charged against the budget
    fingerprint: tuple = ()  # the folder's files as last loaded (poll mode: what changed)
    folder: Path | None = None


class ModelRepository:
    def __init__(
        self,
        root: Path,
        settings: ModelSettings,
        *,
        control_mode: ControlMode = "none",
        startup_models: tuple[str, ...] = (),
        poll_interval_s: float = 15.0,
        memory_budget_bytes: int = 0,
        cache_dir: Path = Path("/tmp/ferry-models"),
        drain_timeout_s: float = 30.0,
    ):
        self.root = root
        self.settings = settings
        self.control_mode = control_mode
        self.startup_models = startup_models
        self.poll_interval_s = poll_interval_s
        self.memory_budget_bytes = memory_budget_bytes or memory_share(0.9)
        self.cache_dir = cache_dir
        self.drain_timeout_s = drain_timeout_s
        self.serving = Repository([], control=self)
        self.status: dict[str, ModelStatus] = {}
        self._lock = asyncio.Lock()  # one load or unload at a time: the budget and the RSS deltas stay exact
        self._poller: asyncio.Task | None = None
        self._retiring: set[asyncio.Task] = set()
        self.started = False  # the models loaded at start are loaded (server readiness waits for it)

    # -- life cycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.root.is_dir():
            if self.control_mode != "explicit":
                raise InvalidInput(f"model_repository {str(self.root)!r} is not a folder")
            # An agent beside the server (Seldon's) creates it when it places the first model.
            log.warning("model repository %s does not exist yet; serving no model until it does", self.root)
        shutil.rmtree(self.cache_dir / "repository-uploads", ignore_errors=True)  # a previous run's
        if self.control_mode == "explicit":
            names = self.on_disk() if "*" in self.startup_models else list(self.startup_models)
        else:
            names = self.on_disk()
        for name in names:
            try:
                await self.load(name, _startup=True)
            except ServingError as exc:
                log.error("model %s not loaded: %s", name, exc.message)
        self.started = True
        if self.control_mode == "poll":
            self._poller = asyncio.create_task(self._poll())
        log.info(
            "model repository %s (%s control): serving %s; memory budget %.0f MiB, %.0f MiB charged",
            self.root,
            self.control_mode,
            self.serving.names,
            self.memory_budget_bytes / 2**20,
            self.charged_bytes / 2**20,
        )

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    # -- the repository extension ------------------------------------------------------------------------------
    def on_disk(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))

    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's index: a row per served version, and one per model not served with its state and reason."""
        rows = []
        for name in sorted(set(self.on_disk()) | set(self.status) | set(self.serving.names)):
            versions = self.serving.versions(name)
            status = self.status.get(name, ModelStatus())
            for version, handler in sorted(versions.items(), key=lambda kv: int(kv[0])):
                state = "READY" if handler.ready else "UNAVAILABLE"
                rows.append({"name": name, "version": version, "state": state, "reason": ""})
            if not versions and not ready_only:
                rows.append({"name": name, "version": "", "state": status.state, "reason": status.reason})
        return [row for row in rows if row["state"] == "READY"] if ready_only else rows

    async def load(
        self,
        name: str,
        config: dict | None = None,
        files: dict[str, bytes] | None = None,
        *,
        _startup: bool = False,
    ) -> None:
        """Load (or reload) ``name`` from its folder, or from ``files`` sent with the request (Triton's
        ``file:<path>`` parameters), with ``config`` overriding the folder's ferry.json."""
        if not _startup:
            self.require_explicit()
        check_name(name)
        async with self._lock:
            status = self.status.setdefault(name, ModelStatus())
            folder = self._write_files(name, files) if files else self.root / name
            previous = status.folder
            status.state, status.reason = "LOADING", ""
            try:
                await self._load(name, folder, config or {}, status)
            except Exception as exc:
                status.state = "READY" if self.serving.versions(name) else "UNAVAILABLE"
                if files:
                    shutil.rmtree(folder, ignore_errors=True)
                if isinstance(exc, ServingError):
                    status.reason = exc.message
                    raise
                # A backend that cannot read the file: the model's fault, not the server's.
                status.reason = f"model {name!r} does not load: {type(exc).__name__}: {exc}"
                log.warning("%s", status.reason, exc_info=True)
                raise InvalidInput(status.reason) from None
            status.state = "READY"
            if previous is not None and previous != folder:
                self._forget_upload(previous)

    def require_explicit(self) -> ModelRepository:
        if self.control_mode != "explicit":
            raise ModelControlOff(
                f"model control mode is {self.control_mode!r}: load and unload need --model_control_mode=explicit"
            )
        return self

    async def unload(self, name: str) -> None:
        self.require_explicit()
        check_name(name)
        async with self._lock:
            await self._unload(name)

    async def _unload(self, name: str) -> None:
        removed = self.serving.remove(name)
        if not removed and name not in self.status:
            raise ModelNotFound(f"model {name!r} is not loaded; this server has {self.serving.names}")
        status = self.status.setdefault(name, ModelStatus())
        status.state, status.reason, status.charged = "UNLOADING", "", {}
        await self._close(removed)
        if status.folder is not None:
            self._forget_upload(status.folder)
        status.state, status.reason, status.fingerprint, status.folder = "UNAVAILABLE", "unloaded", (), None
        log.info("model %s unloaded", name)

    # -- loading -----------------------------------------------------------------------------------------------
    async def _load(self, name: str, folder: Path, config: dict, status: ModelStatus) -> None:
        from ferry.model import Predictor

        if not folder.is_dir():
            raise ModelNotFound(f"model {name!r} is not in the repository {str(self.root)!r}")
        metadata = storage.read_metadata(folder) if (folder / storage.METADATA_FILE).is_file() else {}
        policy = VersionPolicy.parse(
            config.get("version_policy", metadata.get("version_policy")), f"model {name!r}"
        )
        available = versions_in(folder)
        if not available:
            raise InvalidInput(
                f"model {name!r}: {str(folder)!r} holds no model (no .onnx/.pt/.pt2 file, no MLmodel, "
                "no numbered version folder with one)"
            )
        chosen = policy.select(list(available))
        if not chosen:
            raise InvalidInput(
                f"model {name!r}: version_policy {policy.kind} {list(policy.versions)} matches none of the "
                f"versions {sorted(available, key=int)}"
            )
        settings = self._settings_for(name, config)
        served = self.serving.versions(name)
        fingerprint = fingerprint_of(folder)
        reload = fingerprint != status.fingerprint or folder != status.folder or bool(config)
        keep = {v: served[v] for v in chosen if v in served and not reload}
        loading = [v for v in chosen if v not in keep]
        estimate = {v: estimate_bytes(available[v]) for v in loading}
        self._check_budget(name, sum(estimate.values()))
        loaded: dict[str, Handler] = {}
        charged = {v: status.charged[v] for v in keep if v in status.charged}
        try:
            for version in loading:
                before = resident_bytes()
                predictor = Predictor(name, available[version], settings, self.cache_dir, version=version)
                loaded[version] = predictor
                await predictor.load()
                charged[version] = estimate[version]
                log.info(
                    "model %s version %s: charged %.1f MiB, the process grew %.1f MiB loading it",
                    name,
                    version,
                    estimate[version] / 2**20,
                    (resident_bytes() - before) / 2**20,
                )
        except BaseException:
            await self._close(loaded)
            raise
        replaced = self.serving.put(name, {**keep, **loaded})
        status.charged, status.fingerprint, status.folder = charged, fingerprint, folder
        log.info(
            "model %s: serving versions %s (loaded %s, %.1f MiB charged)",
            name,
            sorted({**keep, **loaded}, key=int),
            loading,
            sum(charged.values()) / 2**20,
        )
        if replaced:  # in-flight requests on them finish first; the caller does not wait for that
            task = asyncio.create_task(self._close(replaced))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def _settings_for(self, name: str, config: dict) -> ModelSettings:
        """The repository's model settings, threads divided among the models, and a request's Triton config
        (``max_batch_size``, ``dynamic_batching``, ``instance_group``) on top."""
        update = {}
        if not self.settings.intra_op_threads:
            update["intra_op_threads"] = max(1, available_cpus() // max(1, len(self.on_disk())))
        if "max_batch_size" in config:
            size = config["max_batch_size"]
            if not isinstance(size, int) or size < 0:
                raise InvalidInput(
                    f"model {name!r}: config max_batch_size must be an integer >= 0, got {size!r}"
                )
            update["batching"] = size > 0
            if size > 0:
                update["max_batch_size"] = size
        batching = config.get("dynamic_batching")
        if isinstance(batching, dict):
            if "preferred_batch_size" in batching:
                update["preferred_batch_sizes"] = tuple(batching["preferred_batch_size"])
            if "max_queue_delay_microseconds" in batching:
                update["max_queue_delay_ms"] = float(batching["max_queue_delay_microseconds"]) / 1000
        groups = config.get("instance_group")
        if isinstance(groups, list) and groups and isinstance(groups[0], dict) and "count" in groups[0]:
            update["instances"] = groups[0]["count"]
        if not update:
            return self.settings
        try:
            return type(self.settings).model_validate({**self.settings.model_dump(), **update})
        except ValueError as exc:
            raise InvalidInput(f"model {name!r}: config does not fit: {exc}") from None

    def _check_budget(self, name: str, needed: int) -> None:
        total = self.charged_bytes
        if total + needed > self.memory_budget_bytes:
            raise OverBudget(
                f"loading model {name!r} needs about {needed / 2**20:.1f} MiB; {total / 2**20:.1f} MiB of the "
                f"max_model_memory_bytes budget of {self.memory_budget_bytes / 2**20:.1f} MiB is in use"
            )

    @property
    def charged_bytes(self) -> int:
        return sum(sum(status.charged.values()) for status in self.status.values())

    def _write_files(self, name: str, files: dict[str, bytes]) -> Path:
        """Files sent with a load request, written to a folder of their own (never into the repository)."""
        folder = self.cache_dir / "repository-uploads" / f"{name}-{uuid.uuid4().hex[:8]}"
        for relative, content in files.items():
            path = (folder / relative).resolve()
            if not relative or Path(relative).is_absolute() or not path.is_relative_to(folder.resolve()):
                raise InvalidInput(f"model {name!r}: file path {relative!r} leaves the model's folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return folder

    def _forget_upload(self, folder: Path) -> None:
        """A folder written from a load request's files, once nothing serves from it."""
        uploads = self.cache_dir / "repository-uploads"
        if folder.is_relative_to(uploads):
            shutil.rmtree(folder, ignore_errors=True)

    async def _close(self, handlers: dict[str, Handler]) -> None:
        await asyncio.gather(
            *(h.close(self.drain_timeout_s) for h in handlers.values()), return_exceptions=True
        )

    # -- poll mode ---------------------------------------------------------------------------------------------
    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.rescan()
            except Exception:
                log.exception("model repository poll failed")

    async def rescan(self) -> None:
        """Load new and changed models, unload removed ones."""
        on_disk = set(self.on_disk())
        for name in sorted(on_disk):
            status = self.status.get(name)
            if status is None or status.fingerprint != fingerprint_of(self.root / name):
                try:
                    await self.load(name, _startup=True)
                except ServingError as exc:
                    log.error("model %s not (re)loaded: %s", name, exc.message)
        for name in sorted(set(self.serving.names) - on_disk):
            async with self._lock:
                await self._unload(name)


# ------------------------------------------------------------------------------------------------- the folders
def check_name(name: str) -> None:
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidInput(
            f"model name {name!r} is not allowed: letters, digits, '_', '-' and '.', starting with a letter or "
            "digit (a name cannot leave the repository)"
        )


def versions_in(folder: Path) -> dict[str, Path]:
    """A model folder's versions: its numbered sub-folders that hold a model, or the folder itself as "1"."""
    numbered = {
        p.name: p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and storage.is_model_dir(p)
    }
    if numbered:
        return {str(int(v)): p for v, p in numbered.items()}
    direct = [p for p in folder.iterdir() if p.is_file() and p.suffix in storage.MODEL_SUFFIXES]
    if (folder / "MLmodel").is_file() or direct:
        return {"1": folder}
    return {}


def fingerprint_of(folder: Path) -> tuple:
    if not folder.is_dir():
        return ()
    return tuple(
        sorted(
            (str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns)
            for path in folder.rglob("*")
            if S_ISREG((stat := path.stat()).st_mode)
        )
    )


def estimate_bytes(version_folder: Path) -> int:
    size = sum(p.stat().st_size for p in version_folder.rglob("*") if p.is_file())
    return int(size * MEMORY_PER_FILE_BYTE) + MEMORY_PER_MODEL


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096
    except OSError:
        return 0


def decode_load_parameters(parameters: dict, where: str) -> tuple[dict | None, dict[str, bytes]]:
    """Triton's load parameters: ``config`` (a JSON string) and ``file:<path>`` (base64 in JSON, bytes in gRPC)."""
    config, files = None, {}
    for key, value in (parameters or {}).items():
        if key == "config":
            try:
                config = json.loads(value) if isinstance(value, str) else value
            except ValueError as exc:
                raise InvalidInput(f"{where}: parameters.config is not JSON: {exc}") from None
            if not isinstance(config, dict):
                raise InvalidInput(f"{where}: parameters.config must be a JSON object")
        elif key.startswith("file:"):
            if isinstance(value, str):
                try:
                    value = base64.b64decode(value, validate=True)
                except ValueError:
                    raise InvalidInput(f"{where}: parameters[{key!r}] is not base64") from None
            files[key[5:]] = bytes(value)
    return config, files
