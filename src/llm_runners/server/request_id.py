"""Request ids on every response, as pure ASGI middleware.

Both official SDKs surface a server's request id to their callers (``response._request_id``; it is also what a
user quotes in a bug report), each from its own header: Anthropic's ``request-id``, OpenAI's ``x-request-id``. Every
response gets the one of the wire format it answers in (:func:`~.limits.scope_flavor`), errors and streams included,
since this middleware is the outermost one.

With an :class:`~.observe.Observer` it also keeps the request's :class:`~.observe.Record` (the id, the status, the
first body byte) and hands it to the observer once the response is finished: the log line and the metrics.

Ids are ``req_`` + a random prefix drawn once per process + a counter: unique for the life of the process and across
restarts, and cheaper than a ``uuid4`` per request (it shows on the server's hot path).
"""

from __future__ import annotations

import itertools
import secrets
import time

from .limits import ASGIApp, Message, Receive, Scope, Send, scope_flavor
from .observe import Observer, Record, note_error

__all__ = ["RequestId", "new_request_id"]

_PREFIX = "req_" + secrets.token_hex(8)
_COUNTER = itertools.count(1)
_HEADER = {"anthropic": b"request-id", "openai": b"x-request-id"}


def new_request_id() -> str:
    """``req_<16 random hex digits><counter as 8+ hex digits>``."""
    return f"{_PREFIX}{next(_COUNTER):08x}"


class RequestId:
    """Add a fresh request id header to each HTTP response (see the module docstring)."""

    def __init__(self, app: ASGIApp, observer: Observer | None = None) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        header = (_HEADER[scope_flavor(scope)], request_id.encode())
        observer = self.observer
        if observer is None:

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", ()), header]}
                await send(message)

            await self.app(scope, receive, send_with_id)
            return

        record = Record(request_id, scope.get("path", ""))
        observer.attach(scope, record)

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif record.first_byte is None:
                record.first_byte = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except BaseException as exc:
            if not record.status:
                record.status = 500
            note_error(scope, exc)
            raise
        finally:
            observer.finished(record)
