"""``GET /health`` and ``GET /v1/models``.

``/health`` asks every provider at once and answers 200 when at least one is ready (the server can serve
something), else 503; each provider's entry carries its one-line ``fix`` when it is not ready.

``/v1/models`` lists each provider's models live, as ``provider:model`` ids, then the aliases. It answers in the
OpenAI list shape, or in Anthropic's when the caller sends an ``anthropic-version`` header (the Anthropic SDK does).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..router import Router
from .sse import dumps

__all__ = ["HealthEndpoints"]


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


class HealthEndpoints:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def health(self, request: Request) -> Response:
        reports = await self.router.health()
        ready = any(h.ready for h in reports)
        body = {
            "status": "ok" if ready else "unavailable",
            "default_provider": self.router.default,
            "providers": [h.model_dump(exclude_none=True) for h in reports],
        }
        return _json(body, 200 if ready else 503)

    async def models(self, request: Request) -> Response:
        models = await self.router.models()
        if "anthropic-version" in request.headers:
            data = [
                {
                    "type": "model",
                    "id": m.id,
                    "display_name": m.display_name or m.id,
                    "created_at": "1970-01-01T00:00:00Z",
                }
                for m in models
            ]
            return _json(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
            )
        items = []
        for m in models:
            item: dict[str, Any] = {"id": m.id, "object": "model", "created": 0, "owned_by": m.provider}
            if m.context_window:
                item["context_window"] = m.context_window
            if m.provider == "alias":
                item["alias_of"] = m.display_name
            items.append(item)
        return _json({"object": "list", "data": items})
