"""Fan one request out to several models at once ("model" given as an array).

Why a function over a callable rather than a Provider wrapper: routing ``"provider:model"`` to a provider is the
router's job, so the caller hands in ``complete(model) -> ChatResponse`` (already routed, limited, with its own
request) and gets one result per model back, in the order given. All run concurrently; a failure or timeout of one
model is recorded in its result and never cancels the others. Cancelling ``fan_out`` itself (client gone) cancels
every call.

Server use::

    async def one(model: str) -> ChatResponse:
        provider, name = router.resolve(model)
        return await provider.complete(request.model_copy(update={"model": name}))

    results = await fan_out(one, ["claude_code:sonnet", "codex"], per_model_timeout=settings.request_timeout)
    for r in results:
        r.model, r.elapsed, r.response        # ChatResponse, or None when it failed
        r.error_info                          # None, or ErrorInfo(kind, message, status, type) to render
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

from ..errors import InternalError, LLMError, ProviderTimeout
from ..types import ChatResponse

__all__ = ["ErrorInfo", "MultiplexResult", "fan_out", "fan_out_calls"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What a caller may see of a failed model: the error-tree kind, its message, HTTP status and OpenAI type."""

    kind: str
    message: str
    status: int
    type: str

    @classmethod
    def of(cls, error: LLMError) -> ErrorInfo:
        return cls(kind=error.kind, message=error.message, status=error.status, type=error.openai_type)


@dataclass(frozen=True, slots=True)
class MultiplexResult:
    """One model's outcome: exactly one of ``response`` and ``error`` is set. ``elapsed`` is in seconds."""

    model: str
    elapsed: float
    response: ChatResponse | None = None
    error: LLMError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_info(self) -> ErrorInfo | None:
        return None if self.error is None else ErrorInfo.of(self.error)


async def fan_out(
    complete: Callable[[str], Awaitable[ChatResponse]],
    models: list[str],
    per_model_timeout: float | None = None,
) -> list[MultiplexResult]:
    """Call ``complete(model)`` for every model concurrently; one result per model, in input order.

    ``per_model_timeout`` bounds each call separately (a slow model becomes a ``ProviderTimeout`` result). An
    exception that is not an :class:`LLMError` is a bug somewhere below; it becomes an ``InternalError`` result
    whose ``detail`` keeps the original for logs.
    """
    return await fan_out_calls([(model, functools.partial(complete, model)) for model in models], per_model_timeout)


async def fan_out_calls(
    calls: Sequence[tuple[str, Callable[[], Awaitable[ChatResponse]]]],
    per_model_timeout: float | None = None,
) -> list[MultiplexResult]:
    """:func:`fan_out` over ready-made ``(model, call)`` pairs: for a caller that prepares each entry itself (its
    own request, its own renderer), where one model name listed twice must still be two distinct entries."""
    if not calls:
        raise ValueError("fan_out needs at least one model")
    results: list[MultiplexResult | None] = [None] * len(calls)

    async def run(index: int, model: str, call: Callable[[], Awaitable[ChatResponse]]) -> None:
        started = time.monotonic()
        response: ChatResponse | None = None
        error: LLMError | None = None
        try:
            with anyio.fail_after(per_model_timeout):
                response = await call()
        except LLMError as exc:
            error = exc
        except TimeoutError as exc:
            if per_model_timeout is None:  # raised by the callee itself, not by our deadline
                error = ProviderTimeout(f"model {model!r} timed out", detail=repr(exc))
            else:
                error = ProviderTimeout(f"model {model!r} did not answer within {per_model_timeout:g} s")
        except Exception as exc:
            error = InternalError(f"model {model!r} failed with an internal error", detail=repr(exc))
        results[index] = MultiplexResult(model, time.monotonic() - started, response, error)

    async with anyio.create_task_group() as tg:
        for index, (model, call) in enumerate(calls):
            tg.start_soon(run, index, model, call)
    return [r for r in results if r is not None]
