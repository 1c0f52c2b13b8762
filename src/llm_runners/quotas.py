"""Quotas of the subscriptions behind the CLIs: how much of each rate-limit window is used, and when it resets.

Where they come from (a provider reports what its CLI tells it; nothing is polled behind the operator's back):

- **Claude Code**: ``rate_limit_event`` lines in stream-json (``rate_limit_info``: ``status``, ``resetsAt``,
  ``rateLimitType`` such as ``five_hour`` / ``seven_day``, ``utilization``), which the CLI derives from the API's
  ``anthropic-ratelimit-unified-*`` response headers.
- **Codex app-server**: the ``rateLimits`` snapshot (``primary`` / ``secondary`` windows with ``usedPercent``,
  ``windowDurationMins``, ``resetsAt``) of ``account/rateLimits/read`` and of ``account/rateLimits/updated``.

A :class:`QuotaBook` keeps the latest :class:`Quota` per window for one provider.
:meth:`~llm_runners.provider.Provider.quotas` lists them and :meth:`~llm_runners.provider.Provider.quota_used`
gives the highest percent used over the windows not yet reset (``None``: nothing known), which is what a fallback
chain compares with its threshold to skip a provider before it answers 429. ``GET /v1/usage`` and ``/metrics``
report them per provider; with a shared state the server publishes them (:func:`publish`, :func:`shared_quotas`),
so every replica reports the newest any replica saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .state import State

__all__ = ["Quota", "QuotaBook", "most_used", "publish", "shared_quotas"]


@dataclass(frozen=True, slots=True)
class Quota:
    """One rate-limit window of one subscription."""

    #: the window's name as the CLI gives it: ``five_hour``, ``seven_day``, ``primary``, ``secondary`` …
    window: str
    #: 0-100; None when the CLI said only a status
    percent_used: float | None
    #: Unix time (seconds) the window resets; None when unknown
    resets_at: float | None = None
    #: ``allowed``, ``allowed_warning``, ``rejected`` (Claude Code), None when not said
    status: str | None = None
    #: the window's length in minutes, when said (Codex)
    window_minutes: int | None = None
    #: where it was read, e.g. ``claude_code:rate_limit_event``
    source: str = ""
    observed_at: float = field(default_factory=time.time)

    def current(self, now: float | None = None) -> bool:
        """False once the window has reset (what was used then no longer counts)."""
        return self.resets_at is None or self.resets_at > (time.time() if now is None else now)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def most_used(quotas: Iterable[Quota], now: float | None = None) -> float | None:
    """The highest percent used over the windows that have not reset; a ``rejected`` status counts as 100."""
    values = [
        100.0 if q.status == "rejected" else q.percent_used
        for q in quotas
        if q.current(now) and (q.percent_used is not None or q.status == "rejected")
    ]
    return max((v for v in values if v is not None), default=None)


class QuotaBook:
    """The latest :class:`Quota` per window of one provider (an older observation never replaces a newer one)."""

    def __init__(self) -> None:
        self._by_window: dict[str, Quota] = {}

    def note(self, quota: Quota) -> None:
        known = self._by_window.get(quota.window)
        if known is None or quota.observed_at >= known.observed_at:
            self._by_window[quota.window] = quota

    def all(self) -> list[Quota]:
        return sorted(self._by_window.values(), key=lambda q: q.window)

    def used(self) -> float | None:
        return most_used(self._by_window.values())


def _from_dict(raw: Any) -> Quota | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("window"), str):
        return None
    try:
        return Quota(**{k: raw[k] for k in Quota.__dataclass_fields__ if k in raw})
    except TypeError:
        return None


#: how long a published quota is kept when nobody refreshes it
QUOTA_TTL = 8 * 24 * 3600.0


async def publish(state: State, provider: str, quotas: Iterable[Quota]) -> list[Quota]:
    """Merge this replica's ``quotas`` of ``provider`` with the shared ones (newest per window wins), store the
    result and return it."""
    merged = QuotaBook()
    for q in await shared_quotas(state, provider):
        merged.note(q)
    mine = list(quotas)
    for q in mine:
        merged.note(q)
    result = merged.all()
    if mine:
        await state.scoped("quotas").set(provider, json.dumps([q.as_dict() for q in result]), ttl=QUOTA_TTL)
    return result


async def shared_quotas(state: State, provider: str) -> list[Quota]:
    raw = await state.scoped("quotas").get(provider)
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    return [q for q in (_from_dict(i) for i in items if isinstance(items, list)) if q is not None]
