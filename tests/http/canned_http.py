"""The canned-response transport of the HTTP provider tests: each test module adds ``provider()`` for its API."""

from __future__ import annotations

import json
from typing import Any

import httpx2


class CannedResponse:
    """A MockTransport handler answering every request with one canned response and remembering the requests."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "text/event-stream", **headers: str):
        self.requests: list[httpx2.Request] = []
        self.status, self.body, self.headers = status, body, {"content-type": content_type, **headers}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return httpx2.Response(self.status, content=self.body, headers=self.headers)

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)

    def sent(self) -> dict[str, Any]:
        """The JSON body of the last request."""
        body: dict[str, Any] = json.loads(self.requests[-1].content)
        return body
