"""The Provider base class: the one contract every CLI runner, HTTP provider and wrapper implements.

Streaming is the primitive. A subclass implements :meth:`Provider.stream`; :meth:`Provider.complete` collects it
through :func:`collect`, so both paths do the same processing (usage, finish reason, errors). A provider with a
better one-shot form may override ``complete`` but must return what ``collect(stream())`` would.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import ClassVar

from .errors import UpstreamError
from .quotas import Quota, most_used
from .types import (
    Capabilities,
    ChatRequest,
    ChatResponse,
    Done,
    Health,
    ModelInfo,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallEvent,
    Usage,
    UsageEvent,
)


class Provider(abc.ABC):
    #: short identifier used in routing (``claude_code:sonnet``)
    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    default_model: ClassVar[str | None] = None

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yield events as they arrive; the last one is :class:`Done`. Errors raise :class:`LLMError`.

        Closing the iterator early (``aclose()``, cancellation, a consumer that stops reading) must release
        everything the stream holds, including killing any child process.
        """

    async def complete(self, request: ChatRequest) -> ChatResponse:
        stream = self.stream(request)
        try:
            return await collect(stream, provider=self.name)
        finally:
            await _aclose(stream)

    async def models(self) -> list[ModelInfo]:
        if self.default_model:
            return [ModelInfo(id=self.default_model, provider=self.name)]
        return []

    @abc.abstractmethod
    async def health(self) -> Health:
        """Installed? Version? Authenticated? And a one-line fix when not ready."""

    async def start(self) -> None:
        """Start what the provider is configured to keep warm (an ACP agent with ``warm = true``) ahead of the
        first request; the server calls it at start-up. A no-op by default."""

    async def aclose(self) -> None:
        """Release long-lived resources (warm processes, HTTP clients)."""

    def processes(self) -> dict[str, int]:
        """The provider's child processes by state (``running``, ``live``, ``spare``); empty when it has none."""
        return {}

    def limit_processes(self, limit: int) -> None:
        """Keep at most ``limit`` child processes in every state together (set by a concurrency limit, so idle
        processes count against it); a provider without processes ignores it."""

    def subscription_billed(self) -> bool:
        """True when this provider runs on a subscription rather than a metered API key, so a cost it reports is
        what the tokens would cost on the API, not a bill (:mod:`llm_runners.wrappers.cost`). A wrapper answers
        for the provider it wraps."""
        inner = getattr(self, "inner", None)
        return inner.subscription_billed() if isinstance(inner, Provider) else False

    def quotas(self) -> list[Quota]:
        """The subscription's rate-limit windows as the CLI last reported them (:mod:`llm_runners.quotas`); empty
        when it reports none. A wrapper answers for the provider it wraps."""
        inner = getattr(self, "inner", None)
        return inner.quotas() if isinstance(inner, Provider) else []

    def quota_used(self) -> float | None:
        """The highest percent used (0-100) over the windows of :meth:`quotas` not yet reset, ``None`` when
        unknown: what a fallback chain compares with its threshold to skip this provider before it answers 429.
        A wrapper answers for the provider it wraps (its own way of counting included)."""
        inner = getattr(self, "inner", None)
        return inner.quota_used() if isinstance(inner, Provider) else most_used(self.quotas())

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _aclose(stream: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def collect(events: AsyncIterator[StreamEvent], *, provider: str | None = None) -> ChatResponse:
    """Fold a stream of events into one :class:`ChatResponse`. Several usage events are added up."""
    text: list[str] = []
    reasoning: list[str] = []
    calls = []
    usage: Usage | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, ToolCallEvent):
            calls.append(event.call)
        elif isinstance(event, UsageEvent):
            usage = event.usage if usage is None else usage + event.usage
        elif isinstance(event, Done):
            return ChatResponse(
                content="".join(text),
                reasoning="".join(reasoning) or None,
                tool_calls=calls,
                usage=usage,
                finish_reason=event.finish_reason,
                model=event.model,
                provider=provider,
                session_id=event.session_id,
                warnings=list(event.warnings),
                stop_sequence=event.stop_sequence,
                fallback=event.fallback,
                tool_runs=list(event.tool_runs),
            )
    raise UpstreamError("the provider's stream ended without a final event", provider=provider)
