"""Per-provider concurrency limit with a bounded FIFO wait queue.

Why: every CLI stream is a child process with its own memory and a share of the operator's rate limit, so a burst
of requests must not start a burst of processes. At most ``max_concurrency`` streams run at once; up to
``max_queue`` more callers wait in arrival order; anyone after that gets :class:`~llm_runners.errors.RateLimited`
*at once* (the server turns it into 429 with ``Retry-After``) instead of waiting behind a queue that cannot drain in
time. ``Retry-After`` is estimated from how long recent streams took, never less than one second.

The slot is taken when the stream starts (its first ``__anext__``, so ``RateLimited`` surfaces before any event)
and held until the stream ends, raises, is closed early (``aclose()``) or is cancelled. ``complete()`` holds a slot
around the inner provider's own ``complete()``, so providers with a better one-shot form keep it.

Usage::

    limited = ConcurrencyLimit(provider, max_concurrency=4, max_queue=16)
    async for event in limited.stream(request): ...
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ..errors import RateLimited
from ..provider import Provider, _aclose
from ..types import ChatRequest, ChatResponse, StreamEvent
from .base import Wrapper

__all__ = ["ConcurrencyLimit"]

_RECENT = 32  # how many recent durations feed the Retry-After estimate


class ConcurrencyLimit(Wrapper):
    """A :class:`Provider` that runs at most ``max_concurrency`` streams of ``inner`` at once (see module doc)."""

    def __init__(self, inner: Provider, max_concurrency: int = 4, max_queue: int = 16) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {max_queue}")
        super().__init__(inner)
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        # idle processes (live conversations, spares) count against the limit too: the provider closes them first
        inner.limit_processes(max_concurrency)
        self._semaphore = anyio.Semaphore(max_concurrency)
        self._waiting = 0
        self._durations: deque[float] = deque(maxlen=_RECENT)

    # -- observability ------------------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Streams holding a slot right now."""
        return self.max_concurrency - self._semaphore.value

    @property
    def waiting(self) -> int:
        """Callers queued for a slot right now."""
        return self._waiting

    def retry_after(self) -> float:
        """Seconds until a queued caller would likely get a slot: queue length / slots x mean recent duration."""
        if not self._durations:
            return 1.0
        mean = sum(self._durations) / len(self._durations)
        rounds = (self._waiting + 1) / self.max_concurrency
        return max(1.0, rounds * mean)

    # -- the slot -------------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        # a free slot is taken without a wait, so a caller that got one is never counted as waiting (``acquire()``
        # yields even on its fast path: in a burst, the first callers then took queue places from the last ones)
        try:
            self._semaphore.acquire_nowait()
        except anyio.WouldBlock:
            if self._waiting >= self.max_queue:
                raise RateLimited(
                    f"provider {self.name or type(self.inner).__name__!r} is busy: {self.max_concurrency} requests "
                    f"running and {self._waiting} waiting; retry later",
                    provider=self.name or None,
                    retry_after=self.retry_after(),
                    code="queue_full",
                ) from None
            self._waiting += 1
            try:
                await self._semaphore.acquire()
            finally:
                self._waiting -= 1
        started = time.monotonic()
        try:
            yield
        finally:
            self._durations.append(time.monotonic() - started)
            self._semaphore.release()

    # -- Provider -----------------------------------------------------------------------------------------------
    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        async with self._slot():
            events = self.inner.stream(request)
            try:
                async for event in events:
                    yield event
            finally:
                await _aclose(events)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        async with self._slot():
            return await self.inner.complete(request)
