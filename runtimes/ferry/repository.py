"""The models one server serves, by name. Anything a Ferry server serves is a ``Handler``: the predictor, the
Feast transformer, the explainer."""

from __future__ import annotations

import asyncio

import numpy as np

from ferry.errors import ModelControlOff, ModelNotFound, NotReady
from ferry.metrics import READY
from ferry.protocol import v1
from ferry.signature import Signature


class Handler:
    """What every front end (the lean server, kserve.ModelServer, MLServer) calls. V2 inference, metadata and the
    lifecycle are each handler's own; the other capabilities are declared here with their defaults, so a front end
    calls them and never probes for them:

    - ``predict_v1``: KServe V1 ``instances`` decoded against the signature and run through ``infer``;
    - ``explains`` / ``explain_v1``: no explanation (a predictor may forward explain to an explainer instead);
    - ``class_names``: the output columns' names, when the model knows them (Seldon's ``names``);
    - ``triton_config``: no Triton model configuration;
    - ``statistics``: no Triton statistics."""

    name: str
    version: str = "1"
    ready: bool = False
    signature: Signature | None = None
    class_names: list[str] | None = None
    explains: bool = False

    async def load(self) -> None:
        raise NotImplementedError

    async def infer(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def metadata(self) -> dict:
        raise NotImplementedError

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        self.ready = False

    async def predict_v1(self, body) -> dict:
        """``{"predictions": ...}``, numpy arrays inside (every front end serialises them)."""
        return v1.encode_v1(await self.infer(v1.decode_v1(body, self.signature)))

    async def explain_v1(self, body) -> dict:
        raise ModelNotFound(f"model {self.name!r} does not explain")

    def triton_config(self) -> dict:
        raise ModelNotFound(f"model {self.name!r} has no Triton model configuration")

    def statistics(self) -> dict:
        """Triton's model statistics (``inference_count``, ``execution_count``, ``inference_stats``)."""
        return {}


class Repository:
    """The handlers being served, by name and version: what every front end looks models up in. A name's default
    version (a request that names none) is its highest. With a ``control`` (``ferry.model_repository``), models
    are loaded, replaced and unloaded while serving: ``put`` and ``remove`` swap them in one step of the event loop,
    so a request finds either the old version or the new one, never neither."""

    def __init__(self, handlers: list[Handler], control=None):
        self._versions: dict[str, dict[str, Handler]] = {}
        self._latest: dict[str, Handler] = {}
        for handler in handlers:
            self._versions.setdefault(handler.name, {})[handler.version] = handler
            self._refresh(handler.name)
        self.control = control
        self.draining = False

    def __contains__(self, name: str) -> bool:
        return name in self._versions

    def __iter__(self):
        return (handler for versions in list(self._versions.values()) for handler in versions.values())

    @property
    def names(self) -> list[str]:
        return list(self._versions)

    @property
    def default(self) -> Handler:
        """The model that protocols without a model name in the path (Seldon's) address."""
        if not self._latest:
            raise ModelNotFound("this server has no model loaded")
        return next(iter(self._latest.values()))

    def versions(self, name: str) -> dict[str, Handler]:
        return dict(self._versions.get(name, {}))

    def get(self, name: str, version: str | None = None) -> Handler:
        if not version:
            handler = self._latest.get(name)
            if handler is None:
                raise ModelNotFound(f"model {name!r} not found; this server has {self.names}")
            return handler
        handler = self._versions.get(name, {}).get(version)
        if handler is None:
            if name not in self._versions:
                raise ModelNotFound(f"model {name!r} not found; this server has {self.names}")
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}; it has {sorted(self._versions[name], key=_order)}"
            )
        return handler

    def ready(self, name: str, version: str | None = None) -> Handler:
        handler = self._latest.get(name) if not version else None  # the hot path: one lookup
        if handler is None:
            handler = self.get(name, version)
        if (
            not handler.ready
        ):  # (draining only turns readiness probes false: requests are answered until the end)
            raise NotReady(f"model {name!r} is not ready")
        return handler

    @property
    def all_ready(self) -> bool:
        """Every model served is ready, and a model repository has loaded what it loads at start."""
        started = self.control is None or self.control.started
        return started and not self.draining and all(handler.ready for handler in self)

    def require_control(self):
        """The model repository that loads and unloads models, or the refusal a client gets without one."""
        if self.control is None:
            raise ModelControlOff(
                "this server serves a fixed set of models; start ferry-predictor with --model_repository "
                "and --model_control_mode=explicit to load and unload models"
            )
        return self.control.require_explicit()

    # The ``ferry_model_ready`` gauge is the repository's to set: a name is ready while it routes to a loaded
    # version, whichever version that is and whatever happens to the versions it replaced.
    def put(self, name: str, versions: dict[str, Handler]) -> dict[str, Handler]:
        """Serve ``versions`` (loaded, ready) as ``name``'s versions from now on; returns the ones replaced."""
        previous = self._versions.get(name, {})
        self._versions[name] = dict(versions)
        self._refresh(name)
        READY.labels(name).set(1 if name in self._latest else 0)
        return {v: h for v, h in previous.items() if versions.get(v) is not h}

    def remove(self, name: str) -> dict[str, Handler]:
        """Stop routing to ``name``; returns its versions, for the caller to drain and close."""
        self._latest.pop(name, None)
        READY.labels(name).set(0)
        return self._versions.pop(name, {})

    def _refresh(self, name: str) -> None:
        versions = self._versions.get(name)
        if versions:
            self._latest[name] = versions[max(versions, key=_order)]
        else:
            self._versions.pop(name, None)
            self._latest.pop(name, None)

    async def load(self) -> None:
        await asyncio.gather(*(handler.load() for handler in self))
        for name in self.names:
            READY.labels(name).set(1)
        if self.control is not None:
            await self.control.start()

    async def close(self, drain_timeout_s: float) -> None:
        self.draining = True
        for name in self.names:
            READY.labels(name).set(0)
        if self.control is not None:
            await self.control.stop()
        await asyncio.gather(*(h.close(drain_timeout_s) for h in self), return_exceptions=True)


def _order(version: str) -> tuple:
    """Numbered versions by number (10 after 9), then any others by name."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
