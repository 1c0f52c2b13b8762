"""Response cache: an exact-match answer for an exact-match request, without asking the provider again.

- **The key** is a SHA-256 of the provider's routing name (``label``) and the normalised request: messages (images
  included), model, sampling (temperature, top_p, max_tokens, stop, the extra sampling parameters), tools,
  tool_choice and response format, serialised canonically (sorted keys, no whitespace). The ``conversation`` key
  is not part of it: two callers asking the same thing get the same answer.
- **Sampled requests bypass it**: a request with ``temperature > 0`` asks for variety, so it is not answered from
  the cache (nor stored) unless ``sampled = true``. No temperature (the provider's default) is cached.
- **Only complete answers are stored**: a stream that raised, was closed early or ended without ``Done`` stores
  nothing, and errors are never cached. An answer larger than ``max_entry_bytes`` is not stored.
- **Streams replay as streams**: a stored answer keeps its events (text chunks as they came, reasoning, tool
  calls, usage, the final event) and a hit plays them back in order; ``complete()`` folds the same events. A
  streamed answer serves a later non-streamed request and the reverse.
- **A hit costs nothing**: its usage keeps the original token counts (what the answer is made of) with
  ``cost_usd = 0``. The CLI session id of the original answer is never replayed (it belongs to another caller).
- **Bounds**: ``ttl`` seconds per entry; ``max_entries`` entries in memory (least recently used evicted first).
  With the shared state (Redis) entries expire by TTL and the server's memory limit bounds them.

Each request is counted as ``hit``, ``miss`` or ``bypass`` per provider (:class:`CacheStats`, shown in
``/metrics`` as ``llm_runners_cache_requests_total{provider,result}``), and the HTTP front doors send
``x-llm-runners-cache: hit|miss|bypass``. A store that fails (Redis down) counts as a miss and is logged; the
answer is still served.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from ..provider import Provider, collect
from ..types import (
    ChatRequest,
    ChatResponse,
    Done,
    ImagePart,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
    UsageEvent,
)
from .base import Wrapper
from .meta import CACHE_HEADER, note_header
from .store import KeyValue, MemoryKeyValue

__all__ = ["Cache", "CacheStats", "cache_key"]

log = logging.getLogger(__name__)


class CacheStats:
    """Hit / miss / bypass counts per provider, shared by every :class:`Cache` of one server."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def count(self, provider: str, result: str) -> None:
        key = (provider, result)
        self.counts[key] = self.counts.get(key, 0) + 1

    def get(self, provider: str, result: str) -> int:
        return self.counts.get((provider, result), 0)


def cache_key(provider: str, request: ChatRequest) -> str:
    """``cache:<sha256>`` of the provider name and the normalised request (see the module docstring): the
    request's canonical JSON (pydantic's, fields in model order, defaults left out), so equal requests give equal
    keys; two ``extra`` tables with the same items in another order only miss each other."""
    body = request.model_dump_json(exclude=_NOT_KEYED, exclude_defaults=True)
    digest = hashlib.sha256(provider.encode())
    digest.update(b"\0")
    digest.update(body.encode())
    for message in request.messages:  # image bytes, in order (JSON would need them to be UTF-8)
        for part in message.content:
            if isinstance(part, ImagePart) and part.data is not None:
                digest.update(b"\0image\0%d\0" % len(part.data))
                digest.update(part.data)
    return "cache:" + digest.hexdigest()


#: left out of the key's JSON: the conversation key (see the module docstring) and image bytes (hashed apart)
_NOT_KEYED: Any = {"conversation": True, "messages": {"__all__": {"content": {"__all__": {"data"}}}}}


class Cache(Wrapper):
    """``inner`` with an exact-match response cache (see the module docstring)."""

    def __init__(
        self,
        inner: Provider,
        store: KeyValue | None = None,
        *,
        ttl: float = 300.0,
        max_entries: int = 1000,
        max_entry_bytes: int = 1 << 20,
        sampled: bool = False,
        stats: CacheStats | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(inner)
        #: the provider's routing name: part of every key and the metrics label (two providers of one type
        #: share a class name, never a routing name)
        self.label = label or self.name
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.store: KeyValue = store if store is not None else MemoryKeyValue(max_entries)
        self.ttl = ttl
        self.max_entry_bytes = max_entry_bytes
        self.sampled = sampled
        self.stats = stats or CacheStats()

    def _key(self, request: ChatRequest) -> str | None:
        if request.temperature and not self.sampled:
            self._count("bypass")
            return None
        return cache_key(self.label, request)

    def _count(self, result: str) -> None:
        self.stats.count(self.label, result)
        note_header(CACHE_HEADER, result)

    async def _lookup(self, key: str) -> list[StreamEvent] | None:
        try:
            raw = await self.store.get(key)
        except Exception as exc:
            log.warning("cache lookup failed (%r); asking the provider", exc)
            raw = None
        if raw is not None:
            try:
                events = _decode(raw)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("cache entry unreadable (%r); asking the provider", exc)
            else:
                self._count("hit")
                return events
        self._count("miss")
        return None

    async def _store(self, key: str, events: list[StreamEvent]) -> None:
        raw = _encode(events)
        if len(raw) > self.max_entry_bytes:
            return
        try:
            await self.store.set(key, raw, self.ttl)
        except Exception as exc:
            log.warning("cache store failed (%r); the answer is not cached", exc)

    # -- Provider ------------------------------------------------------------------------------------------
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        key = self._key(request)
        if key is not None:
            hit = await self._lookup(key)
            if hit is not None:
                for event in hit:
                    yield event
                return
        seen: list[StreamEvent] = []
        async with aclosing(self.inner.stream(request)) as events:  # type: ignore[type-var]
            async for event in events:
                if key is not None:
                    seen.append(event)
                    if type(event) is Done:
                        await self._store(key, seen)
                yield event

    async def complete(self, request: ChatRequest) -> ChatResponse:
        key = self._key(request)
        if key is None:
            return await self.inner.complete(request)
        hit = await self._lookup(key)
        if hit is not None:
            return await collect(_replay(hit), provider=self.name)
        response = await self.inner.complete(request)
        await self._store(key, _events_of(response))
        return response


async def _replay(events: list[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event


def _events_of(response: ChatResponse) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    if response.reasoning:
        events.append(ReasoningDelta(response.reasoning))
    if response.content:
        events.append(TextDelta(response.content))
    events += [ToolCallEvent(call) for call in response.tool_calls]
    if response.usage is not None:
        events.append(UsageEvent(response.usage))
    events.append(
        Done(
            finish_reason=response.finish_reason,
            model=response.model,
            warnings=tuple(response.warnings),
            stop_sequence=response.stop_sequence,
        )
    )
    return events


# ------------------------------------------------------------------------------------------------ encoding


def _encode(events: list[StreamEvent]) -> bytes:
    out: list[list[Any]] = []
    for event in events:
        if isinstance(event, TextDelta):
            out.append(["t", event.text])
        elif isinstance(event, ReasoningDelta):
            out.append(["r", event.text])
        elif isinstance(event, ToolCallEvent):
            out.append(["c", event.call.model_dump()])
        elif isinstance(event, UsageEvent):
            out.append(["u", event.usage.model_dump()])
        elif isinstance(event, Done):  # the session id and fallback route belong to the original request
            out.append(["d", event.finish_reason, event.model, list(event.warnings), event.stop_sequence])
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(raw: bytes) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for item in json.loads(raw):
        tag = item[0]
        if tag == "t":
            events.append(TextDelta(str(item[1])))
        elif tag == "r":
            events.append(ReasoningDelta(str(item[1])))
        elif tag == "c":
            events.append(ToolCallEvent(ToolCall.model_validate(item[1])))
        elif tag == "u":
            usage = Usage.model_validate(item[1])
            events.append(UsageEvent(usage.model_copy(update={"cost_usd": 0.0, "cost_estimated": False})))
        elif tag == "d":
            events.append(Done(finish_reason=item[1], model=item[2], warnings=tuple(item[3]), stop_sequence=item[4]))
        else:
            raise ValueError(f"unknown cached event {tag!r}")
    if not events or type(events[-1]) is not Done:
        raise ValueError("cached answer without a final event")
    return events
