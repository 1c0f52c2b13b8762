"""What every HTTP API provider shares: the client, the request loop, and turning HTTP failures into the error tree.

A subclass supplies the wire mapping only: where it listens by default and how the key travels
(:attr:`HTTPProvider.default_base_url`, :attr:`HTTPProvider.key_header`), :meth:`HTTPProvider._build`
(ChatRequest -> URL path, JSON body),
:meth:`HTTPProvider._events` (server-sent events -> StreamEvents) and :meth:`HTTPProvider._from_json` (a plain JSON
answer, for servers that ignore ``"stream": true``). Transport failures, timeouts and error statuses are handled
here once, so both providers classify them the same way.
"""

from __future__ import annotations

import abc
import contextlib
import email.utils
import json
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, ClassVar, TypedDict

import anyio
import httpx2

from .. import redact
from ..errors import (
    AuthenticationError,
    ContextLengthExceeded,
    InvalidRequest,
    LLMError,
    Overloaded,
    PermissionDenied,
    ProviderTimeout,
    RateLimited,
    UpstreamError,
    from_http_status,
)
from ..provider import Provider
from ..types import Capabilities, ChatRequest, Health, ModelInfo, StreamEvent

log = logging.getLogger("llm_runners.http")

#: how upstream APIs word "your prompt does not fit" when they do not send ``code: context_length_exceeded``
_CONTEXT_RE = re.compile(
    r"context[ _-]?(length|window)|prompt is too long|maximum context|too many tokens|"
    r"input (is )?too long|exceeds? the (model'?s? )?(maximum )?(number of )?(context|token)",
    re.IGNORECASE,
)

_ERROR_BODY_LIMIT = 64 * 1024

#: what the HTTP APIs can all do; a provider whose API lacks something replaces just that
HTTP_CAPABILITIES = Capabilities(
    streaming=True,
    token_streaming=True,
    system_prompt=True,
    images=True,
    native_tools=True,
    temperature=True,
    top_p=True,
    max_tokens=True,
    stop=True,
    json_mode=True,
    usage=True,
    model_listing=True,
)


class HTTPOptions(TypedDict, total=False):
    """The keyword options of :class:`HTTPProvider`, for a subclass that adds its own and passes these on."""

    api_key: str | None
    model: str | None
    timeout: float
    headers: Mapping[str, str] | None
    transport: httpx2.AsyncBaseTransport | None
    max_retries: int
    max_retry_wait: float


def is_context_error(message: str, code: str | None = None) -> bool:
    return code == "context_length_exceeded" or bool(_CONTEXT_RE.search(message))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (``"7"``, ``"1.5"`` or an HTTP date); ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(body: Any, fallback: str) -> tuple[str, str | None, str | None]:
    """(message, code, type) from an OpenAI (``{"error": {...}}``) or Anthropic (``{"type":"error",...}``) body."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = err.get("message")
        code = err.get("code")
        etype = err.get("type")
        return (
            message if isinstance(message, str) and message else fallback,
            code if isinstance(code, str) else None,
            etype if isinstance(etype, str) else None,
        )
    if isinstance(err, str) and err:
        return err, None, None
    return fallback, None, None


def classify(
    status: int, message: str, *, code: str | None, provider: str, retry_after: float | None = None
) -> LLMError:
    """An upstream HTTP status + message -> the error tree (context length is a plain 400 told by its wording)."""
    if status in (400, 413, 422) and is_context_error(message, code):
        return ContextLengthExceeded(message, provider=provider, code="context_length_exceeded")
    if status == 408:
        return ProviderTimeout(message, provider=provider)
    return from_http_status(status, message, provider=provider, retry_after=retry_after)


def classify_stream_error(etype: str | None, message: str, *, code: str | None, provider: str) -> LLMError:
    """An error that arrives inside a 200 stream (Anthropic ``event: error``, or an OpenAI ``{"error": ...}`` chunk)."""
    if is_context_error(message, code):
        return ContextLengthExceeded(message, provider=provider, code="context_length_exceeded")
    if etype in ("overloaded_error",):
        return Overloaded(message, provider=provider)
    if etype in ("rate_limit_error",) or code == "rate_limit_exceeded":
        return RateLimited(message, provider=provider)
    if etype in ("invalid_request_error",):
        return InvalidRequest(message, provider=provider)
    status = {"authentication_error": 401, "permission_error": 403, "not_found_error": 404}.get(etype or "")
    if status is not None:
        return from_http_status(status, message, provider=provider)
    return UpstreamError(message, provider=provider)


def loads(data: str, provider: str) -> Any:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise UpstreamError(f"the API sent an event that is not JSON: {data[:200]!r}", provider=provider) from exc


class _Retryable(Exception):
    """Carries an error that another attempt may not meet (a 429 / 5xx, an overload), out of one attempt."""

    def __init__(self, error: LLMError) -> None:
        super().__init__(error.message)
        self.error = error


class HTTPProvider(Provider):
    """Base of the HTTP API providers (see the module docstring)."""

    capabilities: ClassVar[Capabilities] = HTTP_CAPABILITIES
    #: where the API is when ``base_url`` is not given
    default_base_url: ClassVar[str]
    #: the environment variable read for the key when ``api_key`` is not given
    api_key_env: ClassVar[str | None] = None
    #: the header that carries the key, and what goes before the key in it
    key_header: ClassVar[tuple[str, str]]
    #: headers this API wants on every request, key or not
    api_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 600.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        max_retries: int = 2,
        max_retry_wait: float = 20.0,
    ) -> None:
        base_url = self.default_base_url if base_url is None else base_url
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        if max_retry_wait < 0:
            raise ValueError(f"max_retry_wait must be 0 or more, got {max_retry_wait}")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.base_url = base_url.rstrip("/")
        if api_key is None and self.api_key_env:
            api_key = os.environ.get(self.api_key_env)
        self.api_key = api_key
        redact.register(api_key)
        self.model = model
        self.timeout = timeout
        if model:
            setattr(self, "default_model", model)  # noqa: B010 - shadows the class variable for this instance
        self._client = httpx2.AsyncClient(
            base_url=self.base_url,
            headers={**self._auth_headers(), **(headers or {})},
            # connect quickly or fail; between bytes of a stream wait up to the whole budget
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            trust_env=False,
        )

    def _auth_headers(self) -> dict[str, str]:
        name, prefix = self.key_header
        return {**self.api_headers, **({name: prefix + self.api_key} if self.api_key else {})}

    # -- wire mapping, per API -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def _build(self, request: ChatRequest, model: str) -> tuple[str, dict[str, Any]]:
        """(path relative to base_url, JSON body with streaming on)."""

    @abc.abstractmethod
    def _events(self, source: AsyncIterator[httpx2.ServerSentEvent]) -> AsyncIterator[StreamEvent]:
        """Server-sent events -> StreamEvents ending with Done; raises LLMError for in-stream errors."""

    @abc.abstractmethod
    def _from_json(self, body: Any) -> list[StreamEvent]:
        """A complete JSON answer -> the events a stream would have carried."""

    @abc.abstractmethod
    def _models_path(self) -> str: ...

    # -- Provider -----------------------------------------------------------------------------------------------
    def _model_for(self, request: ChatRequest) -> str:
        model = request.model or self.model
        if not model:
            raise InvalidRequest(
                f"no model given: pass one in the request or configure a default model for {self.name}",
                provider=self.name,
                param="model",
            )
        return model

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """One request, retried on a 429 or 5xx answer (and on a rate-limit or overload error inside the stream)
        only while nothing has reached the caller yet: up to ``max_retries`` more attempts, waiting what
        ``retry-after`` asks (no retry when it asks more than ``max_retry_wait``) or else 0.5 s, 1 s, 2 s …"""
        path, body = self._build(request, self._model_for(request))
        attempt = 0
        while True:
            sent = False
            try:
                async with contextlib.aclosing(self._attempt(path, body)) as events:
                    async for event in events:
                        sent = True
                        yield event
                return
            except _Retryable as retryable:
                error = retryable.error
                delay = None if sent else self._retry_delay(error, attempt)
                if delay is None:
                    raise error from error.__cause__
                log.warning(
                    "%s: %s (%s); retrying in %.1f s (retry %d of %d)",
                    self.name,
                    type(error).__name__,
                    error.message[:200],
                    delay,
                    attempt + 1,
                    self.max_retries,
                )
            attempt += 1
            await anyio.sleep(delay)

    def _retry_delay(self, error: LLMError, attempt: int) -> float | None:
        """Seconds to wait before retrying after ``error`` on attempt ``attempt`` (0-based); None: do not retry."""
        if attempt >= self.max_retries:
            return None
        if error.retry_after is not None:
            wait = float(error.retry_after)
            return wait if wait <= self.max_retry_wait else None
        return min(0.5 * 2.0**attempt, self.max_retry_wait)

    async def _attempt(self, path: str, body: dict[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        try:
            async with self._client.stream(
                "POST", path, json=body, headers={"accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    error = await self._status_error(response)
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Retryable(error)
                    raise error
                content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                if content_type == "application/json":
                    await response.aread()
                    for event in self._from_json(loads(response.text, self.name)):
                        yield event
                    return
                if content_type != "text/event-stream":
                    raise UpstreamError(
                        f"the API answered with content type {content_type or 'none'!r}, expected a stream",
                        provider=self.name,
                    )
                async for event in self._events(aiter(httpx2.EventSource(response))):
                    yield event
        except (RateLimited, Overloaded) as exc:  # said inside a 200 stream: retried too, if nothing was sent
            raise _Retryable(exc) from None
        except httpx2.TimeoutException as exc:
            raise ProviderTimeout(
                f"{self.base_url} did not answer within {self.timeout:g} s ({type(exc).__name__})", provider=self.name
            ) from exc
        except httpx2.ConnectError as exc:
            raise UpstreamError(f"cannot connect to {self.base_url}: {exc}", provider=self.name) from exc
        except httpx2.TransportError as exc:
            raise UpstreamError(
                f"connection to {self.base_url} failed: {type(exc).__name__}: {exc}", provider=self.name
            ) from exc

    async def _status_error(self, response: httpx2.Response) -> LLMError:
        raw = b""
        async for chunk in response.aiter_bytes():
            raw += chunk
            if len(raw) > _ERROR_BODY_LIMIT:
                break
        text = raw[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")
        try:
            body: Any = json.loads(text)
        except json.JSONDecodeError:
            body = None
        fallback = f"HTTP {response.status_code} from {self.base_url}" + (f": {text[:300]}" if text.strip() else "")
        error = self._error_for(
            response.status_code, body, fallback, parse_retry_after(response.headers.get("retry-after"))
        )
        error.detail = text
        return error

    def _error_for(self, status: int, body: Any, fallback: str, retry_after: float | None) -> LLMError:
        """An error status + its parsed JSON body (``None`` when not JSON) -> the error tree; an API with its own
        error shape overrides this."""
        message, code, _ = error_message(body, fallback)
        return classify(status, message, code=code, provider=self.name, retry_after=retry_after)

    def _model_ids(self, body: Any) -> list[str]:
        """The model ids of a model-list answer (OpenAI/Anthropic ``{"data": [{"id": ...}]}``)."""
        data = body.get("data")
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def models(self) -> list[ModelInfo]:
        """The API's live model list; the configured default model when the API cannot list."""
        try:
            response = await self._client.get(self._models_path())
            if response.status_code >= 400:
                raise await self._status_error(response)
            ids = self._model_ids(response.json())
        except (httpx2.HTTPError, LLMError, ValueError, AttributeError, TypeError) as exc:
            log.warning("%s: cannot list models at %s: %s", self.name, self.base_url, exc)
            return await super().models()
        return [ModelInfo(id=i, provider=self.name) for i in ids]

    async def health(self) -> Health:
        """Ready when the model list answers 200 with our key; a 401/403 means a bad key, anything else down."""
        base = {"provider": self.name, "installed": True, "path": self.base_url}
        try:
            response = await self._client.get(self._models_path(), timeout=min(self.timeout, 10.0))
        except httpx2.HTTPError as exc:
            return Health(
                **base,
                ready=False,
                reason=f"cannot reach {self.base_url}: {type(exc).__name__}",
                fix=f"check that the API at {self.base_url} is up and base_url is right",
            )
        if response.status_code in (401, 403) or self._refused_key(response):
            return Health(
                **base,
                ready=False,
                authenticated=False,
                reason=f"the API refused the key (HTTP {response.status_code})",
                fix=f"set a valid api_key for {self.name}" + (f" or ${self.api_key_env}" if self.api_key_env else ""),
            )
        if response.status_code >= 500:
            return Health(
                **base, ready=False, reason=f"the API answered HTTP {response.status_code}", fix="retry later"
            )
        # 404: some compatible servers cannot list models yet still chat; the key was not refused
        return Health(**base, ready=True, authenticated=True if self.api_key else None)

    def _refused_key(self, response: httpx2.Response) -> bool:
        """An error answer that says the key is bad though its status is not 401/403 (Gemini: 400
        ``API_KEY_INVALID``)."""
        if not 400 <= response.status_code < 500:
            return False
        try:
            body: Any = response.json()
        except ValueError:
            return False
        error = self._error_for(response.status_code, body, "", None)
        return isinstance(error, AuthenticationError | PermissionDenied)

    async def aclose(self) -> None:
        await self._client.aclose()
