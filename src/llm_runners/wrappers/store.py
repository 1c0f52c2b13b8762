"""Where the cache and the circuit breaker keep their state: a two-method key-value interface.

:class:`KeyValue` is structural (a :class:`typing.Protocol`), so the shared state of several replicas
(:mod:`llm_runners.state`, memory or Redis) backs it without importing it. :class:`MemoryKeyValue` is the
per-process default: expiry on read, and at most ``max_entries`` keys (the least recently used go first).

A store that raises is treated by its users as a miss (the cache) or as no shared state (the breaker): a request
is never failed because the state is unreachable. :class:`StateKeyValue` puts the shared state behind this
interface; :class:`Switchable` lets the server swap it in after the wrappers were built.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol, runtime_checkable

__all__ = ["KeyValue", "MemoryKeyValue", "StateKeyValue", "Switchable", "TextKeyValue"]


@runtime_checkable
class KeyValue(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value, or None when missing or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (> 0), replacing any value."""
        ...


class MemoryKeyValue:
    """A :class:`KeyValue` in this process's memory: TTL per key, LRU bound on the number of keys."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._now = time.monotonic

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._now():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        items = self._items
        items[key] = (self._now() + ttl, value)
        items.move_to_end(key)
        while len(items) > self.max_entries:
            items.popitem(last=False)


class TextKeyValue(Protocol):
    """The part of :class:`llm_runners.state.State` this module uses: ``str`` values, keyword TTL."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None: ...


class StateKeyValue:
    """A :class:`KeyValue` over the shared state (:mod:`llm_runners.state`, whose values are text): the values
    stored here are UTF-8 JSON, so they cross as text unchanged."""

    def __init__(self, state: TextKeyValue) -> None:
        self.state = state

    async def get(self, key: str) -> bytes | None:
        value = await self.state.get(key)
        return None if value is None else value.encode()

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.state.set(key, value.decode(), ttl=ttl)


class Switchable:
    """A :class:`KeyValue` that forwards to ``target``, which the server may replace once its shared state is
    open (the wrappers are built before it is)."""

    def __init__(self, target: KeyValue) -> None:
        self.target = target

    async def get(self, key: str) -> bytes | None:
        return await self.target.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.target.set(key, value, ttl)
