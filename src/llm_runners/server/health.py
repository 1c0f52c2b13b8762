"""``GET /health``, ``GET /ready`` and ``GET /v1/models``.

- ``/health`` is liveness: the process answers, so it is always ``200 {"status": "ok"}``, without a key, and says
  nothing else. ``/health?detail=1`` from a caller with a key (or when no keys are configured) is ``/ready``.
- ``/ready`` is readiness: every provider is asked at once (answers kept :data:`READY_TTL` seconds, so a probe every
  second does not start a CLI every second); 200 when at least one is ready (the server can serve something), else
  503. Without a key it answers only ``{"status": "ready" | "unavailable"}``; with one, each provider by its
  configured name with ``ready``, and the ``reason`` and one-line ``fix`` when it is not; and each ``[[mcp_servers]]``
  entry (``mcp_servers``: ``ready``, its ``tools``, the ``reason`` it was left out).

``/v1/models`` lists each provider's models live, as ``provider:model`` ids, then the aliases. It answers in the
OpenAI list shape, or in Anthropic's when the caller sends an ``anthropic-version`` header (the Anthropic SDK does).
``/v1/models/{id}`` answers one model in the same two shapes.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..redact import redact
from ..router import Router
from ..tools.mcp_bridge import MCPBridge
from ..types import Health, ModelInfo
from .auth import authenticated
from .sse import dumps

__all__ = ["READY_TTL", "HealthEndpoints"]

#: seconds a readiness answer is reused
READY_TTL = 5.0

_TRUE = frozenset({"1", "true", "yes", "on"})


def _json(body: Any, status: int = 200) -> Response:
    return Response(redact(dumps(body)), status_code=status, media_type="application/json")


class HealthEndpoints:
    def __init__(self, router: Router, bridge: MCPBridge | None = None) -> None:
        self.router = router
        self.bridge = bridge
        self._reports: tuple[float, list[Health]] | None = None

    async def health(self, request: Request) -> Response:
        if request.query_params.get("detail", "").lower() in _TRUE and authenticated(request.scope):
            return await self.ready(request)
        return _json({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        now = time.monotonic()
        if self._reports is None or now - self._reports[0] > READY_TTL:
            self._reports = (now, await self.router.health())
        reports = self._reports[1]
        ready = any(h.ready for h in reports)
        body: dict[str, Any] = {"status": "ready" if ready else "unavailable"}
        if authenticated(request.scope):
            body["default_provider"] = self.router.default
            body["providers"] = [h.model_dump(exclude_none=True) for h in reports]
            if self.bridge is not None:
                body["mcp_servers"] = [r.as_dict() for r in self.bridge.reports()]
        return _json(body, 200 if ready else 503)

    async def models(self, request: Request) -> Response:
        models = await self.router.models()
        if "anthropic-version" in request.headers:
            data = [_anthropic_model(m) for m in models]
            return _json(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
            )
        return _json({"object": "list", "data": [_openai_model(m) for m in models]})

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{id}``: a listed model, or any name the router would serve (it routes to a provider, as a
        request naming it would); an unknown provider prefix is a 404."""
        model_id = request.path_params["model_id"]
        route = await self.router.resolve(model_id)
        listed = {m.id: m for m in await self.router.models()}
        info = listed.get(model_id) or ModelInfo(
            id=model_id,
            provider=route.name,
            context_window=getattr(listed.get(route.qualified), "context_window", None),
        )
        if "anthropic-version" in request.headers:
            return _json(_anthropic_model(info))
        return _json(_openai_model(info))


def _openai_model(m: ModelInfo) -> dict[str, Any]:
    item: dict[str, Any] = {"id": m.id, "object": "model", "created": 0, "owned_by": m.provider}
    if m.context_window:
        item["context_window"] = m.context_window
    if m.provider == "alias":
        item["alias_of"] = m.display_name
    return item


def _anthropic_model(m: ModelInfo) -> dict[str, Any]:
    return {
        "type": "model",
        "id": m.id,
        "display_name": m.display_name or m.id,
        "created_at": "1970-01-01T00:00:00Z",
        "lifecycle": "active",
        "max_input_tokens": m.context_window,
    }
