"""Cost on every usage: a wrapper that fills in ``Usage.cost_usd`` and ``Usage.cost_estimated``.

- A cost the provider reported itself (Claude Code's ``total_cost_usd``) is kept. It is flagged ``estimated``
  when the provider runs on a subscription (:meth:`~llm_runners.provider.Provider.subscription_billed`): then it is
  what the tokens would have cost on the API, not a bill.
- Otherwise the cost is computed from the price table (:mod:`llm_runners.pricing`) for the model the answer names
  (``Done.model``, else the request's, else the provider's default) and is always ``estimated``. A model the
  table does not know leaves ``cost_usd`` ``None``: unknown, never a silent $0.

Usage events are held until the stream's ``Done`` (they come right before it in every provider), since only
``Done`` names the model that actually answered.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from ..pricing import PriceTable
from ..provider import Provider
from ..types import ChatRequest, ChatResponse, Done, StreamEvent, Usage, UsageEvent
from .base import Wrapper

__all__ = ["Priced"]


class Priced(Wrapper):
    """``inner`` with a cost on every usage (see the module docstring)."""

    def __init__(self, inner: Provider, table: PriceTable | None = None) -> None:
        super().__init__(inner)
        self.table = table or PriceTable()

    def priced(self, usage: Usage, model: str | None) -> Usage:
        if usage.cost_usd is not None:
            estimated = usage.cost_estimated or self.inner.subscription_billed()
            return usage if estimated == usage.cost_estimated else usage.model_copy(update={"cost_estimated": True})
        cost = self.table.cost(usage, model)
        if cost is None:
            return usage
        return usage.model_copy(update={"cost_usd": cost, "cost_estimated": True})

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        model = request.model or self.inner.default_model
        held: list[Usage] = []
        async with aclosing(self.inner.stream(request)) as events:  # type: ignore[type-var]
            async for event in events:
                kind = type(event)
                if kind is UsageEvent:
                    held.append(event.usage)  # type: ignore[union-attr]
                    continue
                if kind is Done and held:
                    answered = event.model or model  # type: ignore[union-attr]
                    for usage in held:
                        yield UsageEvent(self.priced(usage, answered))
                    held.clear()
                yield event

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response = await self.inner.complete(request)
        if response.usage is not None:
            model = response.model or request.model or self.inner.default_model
            response.usage = self.priced(response.usage, model)
        return response
