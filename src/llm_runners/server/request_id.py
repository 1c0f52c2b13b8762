"""Request ids on every response, as pure ASGI middleware.

Both official SDKs surface a server's request id to their callers (``response._request_id``; it is also what a
user quotes in a bug report), each from its own header: Anthropic's ``request-id``, OpenAI's ``x-request-id``. Every
response gets the one of the wire format it answers in (:func:`~.limits.scope_flavor`), errors and streams included,
since this middleware is the outermost one.

Ids are ``req_`` + a random prefix drawn once per process + a counter: unique for the life of the process and across
restarts, and cheaper than a ``uuid4`` per request (it shows on the server's hot path).
"""

from __future__ import annotations

import itertools
import secrets

from .limits import ASGIApp, Message, Receive, Scope, Send, scope_flavor

__all__ = ["RequestId", "new_request_id"]

_PREFIX = "req_" + secrets.token_hex(8)
_COUNTER = itertools.count(1)
_HEADER = {"anthropic": b"request-id", "openai": b"x-request-id"}


def new_request_id() -> str:
    """``req_<16 random hex digits><counter as 8+ hex digits>``."""
    return f"{_PREFIX}{next(_COUNTER):08x}"


class RequestId:
    """Add a fresh request id header to each HTTP response (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (_HEADER[scope_flavor(scope)], new_request_id().encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, send_with_id)
