"""What the HTTP provider tests share: a request, and handlers that answer the provider under test through an
``httpx2.MockTransport`` (each test module names its provider in a subclass)."""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

import httpx2

from llm_runners.http._base import HTTPProvider
from llm_runners.types import ChatRequest, Message

P = TypeVar("P", bound=HTTPProvider)


def req(**kw: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="hi")], **kw)


class MockAPI(Generic[P]):
    """A MockTransport handler; :meth:`provider` makes the provider of ``provider_class`` that it answers (the
    class attributes give its base URL, key and model, ``**kw`` its other options)."""

    provider_class: type[P]
    base_url = "http://upstream.test"
    api_key = "k"
    model = "m"

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        raise NotImplementedError

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)

    def provider(self, **kw: Any) -> P:
        return self.provider_class(
            self.base_url, api_key=self.api_key, model=self.model, transport=self.transport(), **kw
        )


class CannedResponse(MockAPI[P]):
    """Answers every request with one canned response and remembers the requests."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "text/event-stream", **headers: str):
        self.requests: list[httpx2.Request] = []
        self.status, self.body, self.headers = status, body, {"content-type": content_type, **headers}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return httpx2.Response(self.status, content=self.body, headers=self.headers)

    def sent(self) -> dict[str, Any]:
        """The JSON body of the last request."""
        body: dict[str, Any] = json.loads(self.requests[-1].content)
        return body
