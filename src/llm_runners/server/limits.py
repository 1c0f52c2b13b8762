"""Request body size limit, as pure ASGI middleware.

Why pure ASGI (not Starlette's ``BaseHTTPMiddleware``): it adds no task or buffering per request, and it can see
the body as it streams in, so a client that lies about (or omits) ``Content-Length`` is still cut off after
``max_bytes`` instead of filling memory.

Two checks:

1. ``Content-Length`` larger than the limit: 413 at once; the app never runs and the body is never read.
2. Chunked or lying clients: the ``receive`` channel counts body bytes; past the limit it raises
   :class:`RequestTooLarge` into the app. Whatever the app then does (a 500 page, a 400, re-raising), this
   middleware throws its answer away and sends the 413 itself, unless the app had already started a response.

Errors are rendered in the wire format the caller speaks (see :func:`scope_flavor` and :func:`send_error`, which
:mod:`llm_runners.server.auth` shares).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from ..errors import InvalidRequest, LLMError
from .observe import note_error

# Minimal ASGI typing, so this module needs no Starlette import.
Scope = dict[str, Any]
Message = dict[str, Any]

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "BodySizeLimit",
    "PayloadTooLarge",
    "RequestTooLarge",
    "is_anthropic_path",
    "is_openai_path",
    "scope_flavor",
    "send_error",
]


class PayloadTooLarge(InvalidRequest):
    """The request body is over the server's limit (HTTP 413)."""

    kind = "request_too_large"
    status = 413
    anthropic_type = "request_too_large"


class RequestTooLarge(Exception):
    """Raised from ``receive`` inside the app once the streamed body passes the limit."""


def is_anthropic_path(path: str) -> bool:
    """``/v1/messages`` (or ``/messages``, for clients without the version prefix) and everything under it speak
    Anthropic; every other path speaks OpenAI."""
    p = path.rstrip("/")
    return p.endswith("/messages") or "/messages/" in p


def is_openai_path(path: str) -> bool:
    """``/v1/chat/completions`` and ``/v1/responses`` (and what is under it) speak OpenAI whoever calls."""
    p = path.rstrip("/")
    return p.endswith(("/chat/completions", "/responses")) or "/responses/" in p


#: request headers only Anthropic's clients send (the SDK and Claude Code send both; OpenAI's send neither)
_ANTHROPIC_HEADERS = (b"anthropic-version", b"x-api-key")


def scope_flavor(scope: Mapping[str, Any]) -> Literal["openai", "anthropic"]:
    """The wire format to answer in: the path's when it belongs to one format; on shared routes (``/v1/models``,
    ``/health``, unknown paths) Anthropic's when the caller is clearly an Anthropic client (it sent
    ``anthropic-version`` or ``x-api-key``), else OpenAI's."""
    path: str = scope.get("path", "")
    if is_anthropic_path(path):
        return "anthropic"
    if is_openai_path(path):
        return "openai"
    for name, _ in scope.get("headers", ()):
        if name in _ANTHROPIC_HEADERS:
            return "anthropic"
    return "openai"


async def send_error(send: Send, scope: Scope, error: LLMError, *, extra_headers: dict[str, str] | None = None) -> None:
    """Send ``error`` as a complete JSON response in the envelope the caller expects (:func:`scope_flavor`)."""
    note_error(scope, error)
    envelope = error.anthropic_envelope() if scope_flavor(scope) == "anthropic" else error.openai_envelope()
    body = json.dumps(envelope).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for name, value in {**error.headers(), **(extra_headers or {})}.items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the server's limit of {max_bytes} bytes")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server rejects malformed lengths itself; counting still protects us
    return None


class BodySizeLimit:
    """Reject request bodies larger than ``max_bytes`` with 413 (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await send_error(send, scope, _too_large(self.max_bytes), extra_headers={"connection": "close"})
            return

        received = 0
        exceeded = False
        app_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise RequestTooLarge(f"request body is larger than {self.max_bytes} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise RequestTooLarge(f"request body is larger than {self.max_bytes} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started
            if exceeded and not app_started:
                return  # the app's answer to our exception is replaced by the 413 below
            if message["type"] == "http.response.start":
                app_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not app_started:
            await send_error(send, scope, _too_large(self.max_bytes), extra_headers={"connection": "close"})
