"""One error tree, mapped once to HTTP statuses and to the OpenAI and Anthropic error envelopes.

::

    LLMError
    ├── BinaryNotFound        the CLI is not installed / not on PATH            503  not transient
    ├── AuthenticationError   the CLI or API is not logged in / bad key         401  not transient
    ├── PermissionDenied      the key may not do this                           403  not transient
    ├── RateLimited           429 upstream or our own queue is full             429  transient (retry_after)
    ├── ContextLengthExceeded the prompt does not fit the model's window        400  not transient
    ├── ModelNotFound         unknown provider or model                         404  not transient
    ├── ProviderTimeout       total or idle timeout; the process was killed     504  transient
    ├── UpstreamError         the model API or CLI failed (5xx, crash, garbage) 502  transient
    ├── Overloaded            upstream says overloaded (529 / 503)              503  transient
    ├── InvalidRequest        the caller's request is malformed or unsupported  400  not transient
    │   └── SessionNotFound   a resumed CLI session is gone (runners replay)    400  not transient
    ├── GuardrailError        a guardrail or output check rejected the answer   422  not transient
    └── InternalError         a bug on our side                                 500  not transient

Every error carries ``provider`` (which provider raised it, when known) and ``detail`` (raw CLI output or stderr
tail, for logs; never shown to remote callers verbatim beyond ``message``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .redact import redact


class LLMError(Exception):
    kind: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    transient: ClassVar[bool] = False
    openai_type: ClassVar[str] = "server_error"
    anthropic_type: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.detail = detail
        self.retry_after = retry_after
        self.code = code
        self.param = param

    # message and detail are masked (llm_runners.redact) whenever they are read: a secret registered after the
    # error was made (a key the server learns at start-up, a CLI's env at spawn) is masked too
    @property
    def message(self) -> str:
        return redact(self._message)

    @message.setter
    def message(self, value: str) -> None:
        self._message = value

    @property
    def detail(self) -> str | None:
        return redact(self._detail) if self._detail else self._detail

    @detail.setter
    def detail(self, value: str | None) -> None:
        self._detail = value

    def __str__(self) -> str:
        return redact(super().__str__())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, provider={self.provider!r})"

    # -- the one mapping to wire envelopes ------------------------------------------------------------------
    def openai_envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.code or self.kind,
            }
        }

    def anthropic_envelope(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.anthropic_type, "message": self.message}}

    def headers(self) -> dict[str, str]:
        if self.retry_after is not None:
            return {"Retry-After": str(max(1, int(self.retry_after + 0.999)))}
        return {}


class BinaryNotFound(LLMError):
    kind = "binary_not_found"
    status = 503
    openai_type = "server_error"
    anthropic_type = "api_error"


class AuthenticationError(LLMError):
    kind = "authentication_error"
    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"


class PermissionDenied(LLMError):
    kind = "permission_denied"
    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class RateLimited(LLMError):
    kind = "rate_limit_exceeded"
    status = 429
    transient = True
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"


class ContextLengthExceeded(LLMError):
    kind = "context_length_exceeded"
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class ModelNotFound(LLMError):
    kind = "model_not_found"
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"


class ProviderTimeout(LLMError):
    kind = "timeout"
    status = 504
    transient = True
    openai_type = "timeout_error"
    anthropic_type = "timeout_error"


class UpstreamError(LLMError):
    kind = "upstream_error"
    status = 502
    transient = True
    openai_type = "server_error"
    anthropic_type = "api_error"


class Overloaded(LLMError):
    kind = "overloaded"
    status = 503
    transient = True
    openai_type = "server_error"
    anthropic_type = "overloaded_error"


class InvalidRequest(LLMError):
    kind = "invalid_request_error"
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class SessionNotFound(InvalidRequest):
    kind = "session_not_found"


class GuardrailError(LLMError):
    kind = "guardrail"
    status = 422
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class InternalError(LLMError):
    kind = "internal"


ERROR_KINDS: dict[str, type[LLMError]] = {
    cls.kind: cls
    for cls in (
        BinaryNotFound,
        AuthenticationError,
        PermissionDenied,
        RateLimited,
        ContextLengthExceeded,
        ModelNotFound,
        ProviderTimeout,
        UpstreamError,
        Overloaded,
        InvalidRequest,
        SessionNotFound,
        GuardrailError,
        InternalError,
    )
}


def from_http_status(
    status: int, message: str, *, provider: str | None = None, retry_after: float | None = None
) -> LLMError:
    """Classify an upstream HTTP status (as a CLI reported it) into the tree. Context length is decided by the
    caller from the message, since it arrives as a plain 400."""
    if status == 401:
        return AuthenticationError(message, provider=provider)
    if status == 403:
        return PermissionDenied(message, provider=provider)
    if status == 404:
        return ModelNotFound(message, provider=provider)
    if status == 429:
        return RateLimited(message, provider=provider, retry_after=retry_after)
    if status in (503, 529):
        return Overloaded(message, provider=provider, retry_after=retry_after)
    if 400 <= status < 500:
        return InvalidRequest(message, provider=provider)
    return UpstreamError(message, provider=provider)
