"""API key check, as pure ASGI middleware.

The server lends out CLIs logged in to the operator's own accounts, so anything not on loopback must present a
key (:func:`llm_runners.config.check_bind_safety` refuses to start otherwise). A key is accepted from either header
the official clients send:

- ``Authorization: Bearer <key>`` (OpenAI SDK, Codex, most OpenAI-compatible clients)
- ``x-api-key: <key>`` (Anthropic SDK, Claude Code)

Every configured key is compared, in constant time, against a SHA-256 digest of the presented one, so neither the
position of a match nor the length of a key leaks through timing.

Exempt (answered without a key), by default ``HEAD /`` (Claude Code probes it before every run), ``GET /health``
and ``GET /ready`` (a load balancer's probes). They tell nothing without a key: for an exempt path the middleware
records in the scope whether a valid key came along (:func:`authenticated`), and ``/ready`` lists the providers
(which CLIs are installed and logged in, worth hiding from strangers) only when one did. The app adds
``GET /metrics`` when ``metrics_public`` is set. Pass ``exempt=`` to change the set (pairs of method and exact path).

A refusal is a 401 in the caller's wire format (:func:`~.limits.scope_flavor`: Anthropic's envelope under
``/v1/messages`` or from an Anthropic client on shared routes, OpenAI's otherwise) with
``WWW-Authenticate: Bearer``. With no keys configured the middleware passes everything through.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import AuthenticationError
from .limits import ASGIApp, Receive, Scope, Send, send_error

__all__ = ["DEFAULT_EXEMPT", "APIKeyAuth", "authenticated", "presented_key"]

DEFAULT_EXEMPT: frozenset[tuple[str, str]] = frozenset({("HEAD", "/"), ("GET", "/health"), ("GET", "/ready")})

_AUTHENTICATED = "llm_runners.authenticated"


def authenticated(scope: Mapping[str, Any]) -> bool:
    """Whether the request carried a valid key. True when no keys are configured, and for every path that is not
    exempt (a request without a key never gets past the middleware there)."""
    return bool(scope.get(_AUTHENTICATED, True))


def _digest(key: str | bytes) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hashlib.sha256(raw).digest()


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries: the Bearer token, else ``x-api-key``; ``None`` when it carries neither."""
    api_key: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.strip()
    return api_key


class APIKeyAuth:
    """Let a request through only with one of ``keys`` (see the module docstring). No keys = no check."""

    def __init__(
        self, app: ASGIApp, keys: Iterable[str], *, exempt: Iterable[tuple[str, str]] = DEFAULT_EXEMPT
    ) -> None:
        self.app = app
        self._digests = [_digest(k) for k in keys if k]
        self._exempt = frozenset((method.upper(), path) for method, path in exempt)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def accepts(self, key: bytes | None) -> bool:
        """Constant-time check of ``key`` against every configured key (no early exit on a match)."""
        if key is None:
            return False
        presented = _digest(key)
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(presented, digest)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._digests or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope.get("headers", ()))
        if scope["type"] == "http" and (scope.get("method", ""), scope.get("path", "")) in self._exempt:
            scope[_AUTHENTICATED] = self.accepts(key)
            await self.app(scope, receive, send)
            return
        if self.accepts(key):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "invalid API key"})
            return
        if key is None:
            message = "missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        else:
            message = "invalid API key"
        error = AuthenticationError(message, code="invalid_api_key")
        await send_error(send, scope, error, extra_headers={"www-authenticate": "Bearer"})
