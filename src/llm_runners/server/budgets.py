"""Per-key budgets and rate limits (``[keys."sk-…"]``), as pure ASGI middleware on the shared state.

A key's table in the settings (the key must also be one of ``api_keys``)::

    [keys."sk-team-a"]
    requests_per_minute = 60        # at most 60 model requests in any 60 s (a sliding window, not a calendar minute)
    tokens_per_day = 2_000_000      # input + output tokens per UTC day
    usd_per_month = 50              # the usage's cost_usd (llm_runners.wrappers.cost) per UTC calendar month
    max_concurrent = 4              # model requests in flight at once

Every entry is optional. The limits apply to the model endpoints (``POST`` Chat Completions, Responses, Messages;
``count_tokens`` is free) and hold across every replica on one ``state = "redis://…"`` (:mod:`llm_runners.state`).
A refusal is a 429 ``rate_limit_exceeded`` in the caller's wire format with ``Retry-After`` (seconds until a slot,
the window or the budget frees up) and a ``code``: ``requests_per_minute``, ``max_concurrent``,
``tokens_per_day``, ``usd_per_month``, or ``budget_reserved`` (the budget is not spent yet but held by requests in
flight; retry in a second).

**No over-spend beyond one request's worth, under any concurrency.** Tokens and dollars are only known when a
request ends, so a request *reserves* its estimate when it is admitted, atomically (a check-and-consume on one
counter holding "spent + reserved"), and settles the difference when it ends. A request is admitted while spent +
reserved is still under the limit. The estimate is the largest request this key made so far in the window; a key
with no request yet in the window reserves the whole budget, so its first request runs alone and teaches the size.
Hence the total can pass the limit by at most the last admitted request's size (plus, if a request is larger than
every earlier one, by that difference). A cost the price table does not know counts as $0.

The usage a key sees is :func:`key_usage` (``GET /v1/usage``, :mod:`.usage`). Counters are namespaced under
``keys:<sha256(key)[:16]>:`` so no key is stored in Redis in the clear, and they expire with their window.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..config import KeyLimits, Settings
from ..errors import RateLimited
from ..quotas import most_used, publish
from ..router import Router
from ..state import State
from .auth import presented_key
from .limits import ASGIApp, Receive, Scope, Send, send_error
from .observe import RECORD_KEY, Record

__all__ = ["KeyBudgets", "UsageEndpoint", "Window", "is_model_call", "key_id", "key_usage"]

_DAY = 86_400.0


def key_id(key: str) -> str:
    """The name a key's counters are stored under: not the key itself."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def is_model_call(scope: Mapping[str, Any]) -> bool:
    """``POST`` to Chat Completions, Responses or Messages (with or without ``/v1``); ``count_tokens`` is not."""
    if scope.get("method") != "POST":
        return False
    path = str(scope.get("path", "")).rstrip("/")
    return path.endswith(("/chat/completions", "/responses", "/messages"))


@dataclass(frozen=True, slots=True)
class Window:
    """A calendar window in UTC: its id (part of the counter's key) and the seconds until it ends."""

    id: str
    ends_in: float
    resets_at: float

    @staticmethod
    def day(now: float) -> Window:
        start = math.floor(now / _DAY) * _DAY
        return Window(time.strftime("%Y-%m-%d", time.gmtime(now)), start + _DAY - now, start + _DAY)

    @staticmethod
    def month(now: float) -> Window:
        t = time.gmtime(now)
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        end = float(calendar.timegm((year, month, 1, 0, 0, 0)))
        return Window(f"{t.tm_year:04d}-{t.tm_mon:02d}", end - now, end)


class _Spend:
    """One spend budget (tokens per day, USD per month): the admission counter ``<name>:<window>`` holds spent +
    reserved, ``<name>-spent:<window>`` what was spent, ``<name>-max:<window>`` the largest request so far."""

    def __init__(self, state: State, name: str, limit: float, window: Window) -> None:
        self.state = state
        self.name = name
        self.limit = limit
        self.window = window
        self.key = f"{name}:{window.id}"
        self.ttl = window.ends_in + 3600  # a little past the window's end, so a late settle still finds it
        self.reserved = 0.0

    async def reserve(self) -> RateLimited | None:
        largest = await self.state.get(f"{self.name}-max:{self.window.id}")
        estimate = float(largest) if largest else self.limit  # the first request of the window runs alone
        got = await self.state.consume(self.key, estimate, self.limit, ttl=self.ttl, overdraw=True)
        if got.allowed:
            self.reserved = estimate
            return None
        spent = float(await self.state.get(f"{self.name}-spent:{self.window.id}") or 0)
        if spent >= self.limit:
            return RateLimited(
                f"this key's {self.name.replace('_', ' ')} budget of {self.limit:g} is spent; it resets in "
                f"{self.window.ends_in / 3600:.1f} h",
                retry_after=self.window.ends_in,
                code=self.name,
            )
        return RateLimited(
            f"this key's {self.name.replace('_', ' ')} budget is held by requests in flight; retry in a second",
            retry_after=1.0,
            code="budget_reserved",
        )

    async def settle(self, actual: float) -> None:
        if actual:
            await self.state.incr(f"{self.name}-spent:{self.window.id}", actual, ttl=self.ttl)
            largest = await self.state.get(f"{self.name}-max:{self.window.id}")
            if largest is None or actual > float(largest):  # a lost race here only makes one estimate smaller
                await self.state.set(f"{self.name}-max:{self.window.id}", repr(float(actual)), ttl=self.ttl)
        if actual != self.reserved:
            await self.state.incr(self.key, actual - self.reserved, ttl=self.ttl)


class KeyBudgets:
    """Enforce ``limits`` (key -> :class:`~llm_runners.config.KeyLimits`) on ``state`` (see the module docstring).
    ``lease_ttl`` bounds how long a crashed replica's concurrency slot can outlive it."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, KeyLimits], state: State, lease_ttl: float = 660.0) -> None:
        self.app = app
        self.limits = {key.encode("utf-8"): (key_id(key), lim) for key, lim in limits.items() if lim.any()}
        self.state = state.scoped("keys")
        self.lease_ttl = lease_ttl

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limits or not is_model_call(scope):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope.get("headers", ()))
        entry = self.limits.get(key) if key is not None else None
        if entry is None:
            await self.app(scope, receive, send)
            return
        kid, lim = entry
        state = self.state.scoped(kid)
        now = time.time()
        holder = uuid.uuid4().hex
        leased = False
        spends: list[_Spend] = []
        try:
            refusal = await self._admit(state, lim, now, holder, spends)
            if refusal is None and lim.max_concurrent is not None:
                lease = await state.lease("concurrent", holder, lim.max_concurrent, ttl=self.lease_ttl)
                leased = lease.granted
                if not leased:
                    refusal = RateLimited(
                        f"this key has {lim.max_concurrent} requests in flight (max_concurrent); retry when one ends",
                        retry_after=1.0,
                        code="max_concurrent",
                    )
            if refusal is not None:  # what the admission took so far is given back: a refused request costs nothing
                for spend in spends:
                    await spend.settle(0.0)
                spends.clear()
                if lim.requests_per_minute is not None and refusal.code != "requests_per_minute":
                    await state.release("rpm", holder)
                await send_error(send, scope, refusal)
                return
            await self.app(scope, receive, send)
        finally:
            if leased:
                await state.release("concurrent", holder)
            if spends:
                record = scope.get(RECORD_KEY)
                usage = record.usage if isinstance(record, Record) else None
                for spend in spends:
                    if spend.name == "tokens_per_day":
                        actual = float(usage.total_tokens) if usage is not None else 0.0
                    else:
                        actual = float(usage.cost_usd or 0.0) if usage is not None else 0.0
                    await spend.settle(actual)

    async def _admit(
        self, state: State, lim: KeyLimits, now: float, holder: str, spends: list[_Spend]
    ) -> RateLimited | None:
        if lim.requests_per_minute is not None:
            got = await state.lease("rpm", holder, lim.requests_per_minute, ttl=60.0)
            if not got.granted:
                return RateLimited(
                    f"this key made {lim.requests_per_minute} requests in the last minute (requests_per_minute)",
                    retry_after=got.free_in or 1.0,
                    code="requests_per_minute",
                )
        for name, limit, window in (
            ("tokens_per_day", lim.tokens_per_day, Window.day(now)),
            ("usd_per_month", lim.usd_per_month, Window.month(now)),
        ):
            if limit is None:
                continue
            spend = _Spend(state, name, float(limit), window)
            refusal = await spend.reserve()
            if refusal is not None:
                return refusal
            spends.append(spend)
        return None


async def key_usage(state: State, key: str, lim: KeyLimits | None, now: float | None = None) -> dict[str, Any]:
    """What a key used and may still use, as the ``key`` part of ``GET /v1/usage``."""
    now = time.time() if now is None else now
    s = state.scoped("keys").scoped(key_id(key))
    day, month = Window.day(now), Window.month(now)
    tokens = float(await s.get(f"tokens_per_day-spent:{day.id}") or 0)
    usd = float(await s.get(f"usd_per_month-spent:{month.id}") or 0)
    out: dict[str, Any] = {
        "key": _masked(key),
        "requests_last_minute": await s.leases("rpm"),
        "in_flight": await s.leases("concurrent"),
        "tokens_today": int(tokens),
        "usd_this_month": round(usd, 6),
        "tokens_reset_at": int(day.resets_at),
        "usd_reset_at": int(month.resets_at),
        "limits": lim.as_dict() if lim is not None else {},
    }
    return out


def _masked(key: str) -> str:
    return key[:5] + "…" + key[-2:] if len(key) > 10 else "…"


class UsageEndpoint:
    """``GET /v1/usage``: the caller's own key (its limits and what it used, see :func:`key_usage`) and the quotas
    of the subscriptions behind the providers (:mod:`llm_runners.quotas`), merged across replicas through the
    shared state. A key sees only itself: there is no admin view of other keys (their usage is theirs; an operator
    has ``/metrics`` and the access log). With no ``api_keys`` configured, ``key`` is ``null``."""

    def __init__(self, router: Router, settings: Settings, state: State) -> None:
        self.router = router
        self.limits = settings.keys
        self.auth = bool(settings.api_keys)
        self.state = state

    async def __call__(self, request: Request) -> Response:
        raw = presented_key(request.scope.get("headers", ()))
        key = raw.decode("utf-8", "replace") if raw is not None and self.auth else None
        body: dict[str, Any] = {"object": "usage", "key": None, "quotas": {}}
        if key is not None:
            lim = self.limits.get(key)
            body["key"] = (
                await key_usage(self.state, key, lim) if lim is not None else {"key": _masked(key), "limits": {}}
            )
        for name, provider in self.router.providers.items():
            quotas = await publish(self.state, name, provider.quotas())
            if quotas:
                body["quotas"][name] = {
                    "percent_used": most_used(quotas),
                    "windows": [q.as_dict() for q in quotas],
                }
        return Response(json.dumps(body), media_type="application/json")
