"""The models one server serves, by name. Anything a Ferry server serves is a ``Handler``: the predictor, the
Feast transformer, the explainer."""

from __future__ import annotations

import asyncio

import numpy as np

from ferry.errors import ModelNotFound, NotReady
from ferry.protocol import v1
from ferry.signature import Signature


class Handler:
    """What every front end (the lean server, kserve.ModelServer, MLServer) calls. V2 inference, metadata and the
    lifecycle are each handler's own; the other capabilities are declared here with their defaults, so a front end
    calls them and never probes for them:

    - ``predict_v1``: KServe V1 ``instances`` decoded against the signature and run through ``infer``;
    - ``explains`` / ``explain_v1``: no explanation (a predictor may forward explain to an explainer instead);
    - ``class_names``: the output columns' names, when the model knows them (Seldon's ``names``);
    - ``triton_config``: no Triton model configuration."""

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


class Repository:
    def __init__(self, handlers: list[Handler]):
        self._handlers = {handler.name: handler for handler in handlers}
        self.draining = False

    def __iter__(self):
        return iter(self._handlers.values())

    @property
    def names(self) -> list[str]:
        return list(self._handlers)

    @property
    def default(self) -> Handler:
        """The model that protocols without a model name in the path (Seldon's) address."""
        return next(iter(self._handlers.values()))

    def get(self, name: str, version: str | None = None) -> Handler:
        handler = self._handlers.get(name)
        if handler is None:
            raise ModelNotFound(f"model {name!r} not found; this server has {self.names}")
        if version not in (None, "", handler.version):
            raise ModelNotFound(f"model {name!r} has no version {version!r}; it has [{handler.version!r}]")
        return handler

    def ready(self, name: str, version: str | None = None) -> Handler:
        handler = self.get(name, version)
        if self.draining or not handler.ready:
            raise NotReady(f"model {name!r} is {'shutting down' if self.draining else 'not ready'}")
        return handler

    @property
    def all_ready(self) -> bool:
        return not self.draining and all(handler.ready for handler in self._handlers.values())

    async def load(self) -> None:
        await asyncio.gather(*(handler.load() for handler in self._handlers.values()))

    async def close(self, drain_timeout_s: float) -> None:
        self.draining = True
        await asyncio.gather(
            *(h.close(drain_timeout_s) for h in self._handlers.values()), return_exceptions=True
        )
