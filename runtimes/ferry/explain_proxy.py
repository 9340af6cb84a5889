"""Explanations asked of the predictor's own address, answered by its explainer.

Seldon Core 1 clients (and the user's ``seldon_client.py``) send predict and explain to one address, replacing
``/predictions`` with ``/explain``. Ferry's explainer cannot run inside the predictor: alibi needs numpy < 2 and
is under the Business Source License, while the predictor's environment (Feast, kserve 0.21) needs numpy >= 2 and
is kept licence-clean. So the predictor forwards: with ``--explainer_url`` set, ``POST /api/v1.0/explain`` (and
``/explain``) go to the explainer's Seldon route and ``POST /v1/models/{m}:explain`` to its KServe V1 route, the
body unchanged, the request id and trace headers along, a timeout on the call, and the explainer's answer (or
its error, through the one upstream-status table) back to the caller."""

from __future__ import annotations

import httpx
import orjson

from ferry.context import propagated
from ferry.errors import DeadlineExceeded, UpstreamError, upstream_status_error


class ExplainerProxy:
    def __init__(self, url: str, model_name: str, timeout_s: float):
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None  # made on the serving loop, at the first call

    async def explain(self, body: object, *, seldon: bool) -> dict:
        path = "/api/v1.0/explain" if seldon else f"/v1/models/{self.model_name}:explain"
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        headers = {"content-type": "application/json", **propagated()}
        try:
            response = await self._client.post(self.url + path, content=orjson.dumps(body), headers=headers)
        except httpx.TimeoutException:
            raise DeadlineExceeded(
                f"explainer at {self.url} gave no answer within {self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"explainer at {self.url} unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise upstream_status_error(
                response.status_code, response.content, f"POST {path}", service="explainer"
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"explainer at {self.url} answered 200 with a body that is not JSON"
            ) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
