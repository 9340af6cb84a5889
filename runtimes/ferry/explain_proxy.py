"""Explanations asked of the predictor's own address, answered by its explainer.

Seldon Core 1 clients (and the user's ``seldon_client.py``) send predict and explain to one address, replacing
``/predictions`` with ``/explain``. Ferry's explainer cannot run inside the predictor: alibi needs numpy < 2 and
is under the Business Source License, while the predictor's environment (Feast, kserve 0.21) needs numpy >= 2 and
is kept licence-clean. So the predictor forwards: with ``--explainer_url`` set, ``POST /api/v1.0/explain`` (and
``/explain``) go to the explainer's Seldon route and ``POST /v1/models/{m}:explain`` to its KServe V1 route, the
body unchanged, the request id and trace headers along, a timeout on the call, and the explainer's answer (or
its error, through the one upstream-status table) back to the caller."""

from __future__ import annotations

import orjson

from ferry.client import AsyncHttp


class ExplainerProxy:
    def __init__(self, url: str, model_name: str, timeout_s: float):
        self.model_name = model_name
        self.http = AsyncHttp(url, timeout_s, service="explainer")

    async def explain(self, body: object, *, seldon: bool) -> dict:
        path = "/api/v1.0/explain" if seldon else f"/v1/models/{self.model_name}:explain"
        return await self.http.call("POST", path, orjson.dumps(body))

    async def close(self) -> None:
        await self.http.close()
