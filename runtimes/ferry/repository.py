"""The models one server serves, by name. Any object with the ``Handler`` shape can be served: the predictor,
the Feast transformer, the explainer."""

from __future__ import annotations

import asyncio
from typing import Protocol

import numpy as np

from ferry.errors import ModelNotFound, NotReady
from ferry.signature import Signature


class Handler(Protocol):
    name: str
    version: str
    ready: bool
    signature: Signature | None

    async def load(self) -> None: ...

    async def infer(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def metadata(self) -> dict: ...

    async def close(self, drain_timeout_s: float = 30.0) -> None: ...


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
