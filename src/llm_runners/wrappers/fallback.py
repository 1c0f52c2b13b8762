"""Fallback chains: one model name that tries several entries in order until one answers.

Configured as ``[fallbacks] fast = ["claude_code:haiku", "gemini:gemini-2.5-flash", "local"]``; ``fast`` is then
a model name like any other (the router resolves every entry the way it resolves a caller's model name).

The rules, per request:

- **Entries in order.** Each entry gets ``1 + retries`` tries. A try fails when the entry raises before its first
  event: nothing has reached the caller yet, so trying again is invisible to them. ``complete()`` calls each
  entry's own ``complete()``: nothing reaches the caller before the whole answer, so a failure at any point moves on.
- **Never after the first byte.** Once an entry's first event was handed on, that entry owns the answer: a later
  error ends the stream with that error, as it would without a chain (a stream cannot be taken back).
- **Transient errors are retried** (rate limited, overloaded, timeout, upstream failure: ``LLMError.transient``)
  after an exponential backoff with full jitter: ``uniform(0, min(max_backoff, backoff * 2**n))`` before try
  ``n + 1``. A ``retry-after`` the error carries is honoured: the wait is at least that long, and when it is longer
  than ``max_retry_wait`` the entry is not waited for: the chain moves on at once.
- **Permanent errors move on or stop.** An error whose kind is in ``stop_on`` (default: ``invalid_request_error``
  and ``guardrail``: the request itself is at fault, so every entry would refuse it) is raised at once. Every other
  permanent error (auth, permission, binary not found, model not found, context length — a later entry may have
  a longer window —, internal) moves on to the next entry without a retry.
- **Circuit breaker.** An entry that failed ``failures`` times in a row (every failure that moved the chain on,
  transient or not; ``stop_on`` errors and context length do not count) is skipped for ``cooldown`` seconds. After
  the cool-down one request probes it (half-open): success closes the circuit, failure opens it for another
  cool-down. Requests meanwhile skip the entry (reported as ``circuit_open``). When every entry is open the chain
  fails at once with ``Overloaded`` (503) and a ``retry-after`` until the first probe.
- **Quotas.** With ``skip_above`` (percent), an entry whose provider reports more of its subscription quota used
  (``quota_used()``, where the provider knows it) is moved to the end of the chain: the others are tried first,
  instead of waiting for its 429 (reported as ``quota``).
- **When all fail** the last error is raised (its kind and status), its message naming every entry's failure.

What answered: ``Done.fallback`` / ``ChatResponse.fallback`` (:class:`~llm_runners.types.FallbackInfo`: the chain,
the entry that answered, the entries that failed before it), and two response headers on every HTTP front door
(:mod:`.meta`): ``x-llm-runners-fallback-answered: gemini:gemini-2.5-flash`` and
``x-llm-runners-fallback-failed: claude_code:haiku=upstream_error`` (also sent with an error response).

The breaker's state lives in a :class:`~.store.KeyValue` (this process's memory by default; the shared state when
several replicas run, so a circuit opened on one is open on all). Its updates are read-modify-write, not atomic:
two replicas failing at once may count one failure instead of two, which only delays opening by a failure.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TypeVar

import anyio

from ..errors import ERROR_KINDS, LLMError, ModelNotFound, Overloaded, UpstreamError
from ..provider import Provider, _aclose
from ..types import Attempt, ChatRequest, ChatResponse, Done, FallbackInfo, Health, ModelInfo, StreamEvent
from .meta import FALLBACK_ANSWERED_HEADER, FALLBACK_FAILED_HEADER, note_header
from .store import KeyValue, MemoryKeyValue

__all__ = ["STOP_ON", "CircuitBreaker", "Fallback", "Resolve"]

log = logging.getLogger(__name__)

#: error kinds that stop the chain: the request is at fault, not the entry
STOP_ON = frozenset({"invalid_request_error", "guardrail"})

#: kinds that move the chain on without counting against the entry's circuit
_NOT_COUNTED = frozenset({"context_length_exceeded"})

T = TypeVar("T")

#: ``entry`` -> the provider that serves it and the model to ask it for
Resolve = Callable[[str], Awaitable[tuple[Provider, str | None]]]


# ------------------------------------------------------------------------------------------------ circuit breaker


@dataclass(frozen=True, slots=True)
class _Circuit:
    failures: int = 0  # in a row
    open_until: float = 0.0  # wall clock (shared across replicas), 0 = closed
    probe_until: float = 0.0  # a half-open probe is running until then


class CircuitBreaker:
    """Per-entry circuits (see the module docstring) kept in ``store`` under ``breaker:<entry>``.

    ``failures``: failures in a row that open the circuit; ``cooldown``: seconds it stays open; ``probe_timeout``:
    how long one half-open probe holds the entry before another request may probe (a probe that hangs must not
    keep the entry out for ever). Times are wall-clock seconds, so replicas sharing the store agree on them.
    """

    def __init__(
        self,
        store: KeyValue | None = None,
        *,
        failures: int = 5,
        cooldown: float = 30.0,
        probe_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures must be at least 1, got {failures}")
        self.store: KeyValue = store if store is not None else MemoryKeyValue()
        self.failures = failures
        self.cooldown = cooldown
        self.probe_timeout = probe_timeout
        self.clock = clock

    def _ttl(self) -> float:
        return max(self.cooldown, self.probe_timeout) * 4 + 60

    async def _load(self, entry: str) -> _Circuit:
        try:
            raw = await self.store.get(f"breaker:{entry}")
        except Exception as exc:  # unreachable shared state: no breaker rather than no answer
            log.warning("circuit breaker state unavailable (%r): treating %s as closed", exc, entry)
            return _Circuit()
        if not raw:
            return _Circuit()
        try:
            data = json.loads(raw)
            return _Circuit(int(data["f"]), float(data["o"]), float(data["p"]))
        except (ValueError, KeyError, TypeError):
            return _Circuit()

    async def _save(self, entry: str, circuit: _Circuit) -> None:
        raw = json.dumps({"f": circuit.failures, "o": circuit.open_until, "p": circuit.probe_until}).encode()
        try:
            await self.store.set(f"breaker:{entry}", raw, self._ttl())
        except Exception as exc:
            log.warning("circuit breaker state not saved (%r) for %s", exc, entry)

    async def state(self, entry: str) -> str:
        """``closed``, ``open`` or ``half_open`` (the cool-down is over: the next request probes)."""
        circuit = await self._load(entry)
        if not circuit.open_until:
            return "closed"
        return "open" if self.clock() < circuit.open_until else "half_open"

    async def allow(self, entry: str) -> float | None:
        """None when ``entry`` may be tried now; else the seconds until it may be probed."""
        circuit = await self._load(entry)
        if not circuit.open_until:
            return None
        now = self.clock()
        if now < circuit.open_until:
            return circuit.open_until - now
        if now < circuit.probe_until:  # another request is probing it
            return circuit.probe_until - now
        await self._save(entry, replace(circuit, probe_until=now + self.probe_timeout))
        return None

    async def success(self, entry: str) -> None:
        circuit = await self._load(entry)
        if circuit.failures or circuit.open_until:
            await self._save(entry, _Circuit())

    async def failure(self, entry: str) -> None:
        circuit = await self._load(entry)
        failures = circuit.failures + 1
        now = self.clock()
        if circuit.open_until or failures >= self.failures:  # a failed probe reopens at once
            if not circuit.open_until:
                log.warning("circuit for %s opened after %d failures in a row (%g s)", entry, failures, self.cooldown)
            await self._save(entry, _Circuit(failures, now + self.cooldown, 0.0))
        else:
            await self._save(entry, _Circuit(failures, 0.0, 0.0))


# ------------------------------------------------------------------------------------------------ the chain


class _Failed(Exception):
    """Internal: the entry did not answer (its error and the tries it took)."""

    def __init__(self, error: LLMError, tries: int) -> None:
        self.error = error
        self.tries = tries


class Fallback(Provider):
    """A fallback chain called ``name`` over ``entries`` (see the module docstring).

    ``resolve(entry)`` gives the provider and model of an entry (the router's resolution in the server). Library
    use without a router: pass ``providers={"entry": provider}`` and entries ``"entry"`` or ``"entry:model"``.
    """

    def __init__(
        self,
        name: str,
        entries: Sequence[str],
        resolve: Resolve | None = None,
        *,
        providers: dict[str, Provider] | None = None,
        retries: int = 1,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_wait: float = 30.0,
        stop_on: frozenset[str] = STOP_ON,
        skip_above: float | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not entries:
            raise ValueError(f"fallback chain {name!r} needs at least one entry")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        unknown = sorted(set(stop_on) - set(ERROR_KINDS))
        if unknown:
            raise ValueError(f"stop_on: unknown error kinds {unknown} (known: {', '.join(sorted(ERROR_KINDS))})")
        if resolve is None:
            if providers is None:
                raise ValueError("Fallback needs resolve or providers")
            resolve = _resolver(providers)
        self.name = name  # type: ignore[misc]
        self.display_name = f"fallback {name}"  # type: ignore[misc]
        self.entries = list(entries)
        self.resolve = resolve
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_wait = max_retry_wait
        self.stop_on = stop_on
        self.skip_above = skip_above
        #: (entry, outcome) -> requests: ``answered``, the error kind that moved the chain on, ``circuit_open``
        #: or ``quota`` (skipped)
        self.counts: dict[tuple[str, str], int] = {}
        self.breaker = breaker or CircuitBreaker()
        self._sleep = sleep
        self._jitter = jitter

    # -- one entry -------------------------------------------------------------------------------------------
    def _wait(self, error: LLMError, tried: int) -> float | None:
        """Seconds to wait before try ``tried + 1`` of the same entry; None: do not retry it."""
        if not error.transient or tried > self.retries:
            return None
        wait: float = self._jitter() * min(self.max_backoff, self.backoff * 2.0 ** (tried - 1))
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_wait:
                return None
            wait = max(wait, error.retry_after)
        return wait

    async def _retrying(self, entry: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds or may not be retried (then :class:`_Failed`)."""
        tried = 0
        while True:
            tried += 1
            try:
                return await attempt()
            except LLMError as exc:
                error = exc
            wait = None if error.kind in self.stop_on else self._wait(error, tried)
            if wait is None:
                raise _Failed(error, tried)
            log.info("fallback %s: %s failed (%s), try %d in %.2f s", self.name, entry, error.kind, tried + 1, wait)
            await self._sleep(wait)

    async def _answer(
        self, request: ChatRequest, call: Callable[[Provider, ChatRequest], Awaitable[T]]
    ) -> tuple[T, FallbackInfo]:
        """The first entry's answer (``call(provider, request)``, retried per the rules), and what failed before."""
        failed: list[Attempt] = []
        last: LLMError | None = None
        soonest: float | None = None
        queue = list(self.entries)
        deferred: set[str] = set()
        while queue:
            entry = queue.pop(0)
            wait = await self.breaker.allow(entry)
            if wait is not None:
                failed.append(Attempt(entry, "circuit_open", f"circuit open for {wait:.1f} s more", tries=0))
                self._count(entry, "circuit_open")
                soonest = wait if soonest is None else min(soonest, wait)
                continue
            try:
                provider, model = await self.resolve(entry)
                if entry not in deferred and self.skip_above is not None:
                    used = quota_used(provider)
                    if used is not None and used >= self.skip_above:  # tried last, if every other entry fails
                        deferred.add(entry)
                        queue.append(entry)
                        failed.append(Attempt(entry, "quota", f"{used:.0f} % of its quota used", tries=0))
                        self._count(entry, "quota")
                        continue
                asked = request.model_copy(update={"model": model})
                answer = await self._retrying(entry, functools.partial(call, provider, asked))
            except (_Failed, LLMError) as exc:
                last, tries = (exc.error, exc.tries) if isinstance(exc, _Failed) else (exc, 1)
                failed.append(Attempt(entry, last.kind, last.message, tries))
                self._count(entry, last.kind)
                if last.kind in self.stop_on:
                    _note(None, failed)
                    raise last from None
                if last.kind not in _NOT_COUNTED:
                    await self.breaker.failure(entry)
                continue
            await self.breaker.success(entry)
            self._count(entry, "answered")
            _note(entry, failed)
            return answer, FallbackInfo(self.name, entry, tuple(failed))
        _note(None, failed)
        raise self._exhausted(failed, last, soonest)

    # -- Provider ------------------------------------------------------------------------------------------
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        (events, first), info = await self._answer(request, _opened)
        async with aclosing(events):  # type: ignore[type-var]
            yield _with_info(first, info)
            async for event in events:
                yield _with_info(event, info)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Each entry's own one-shot ``complete()`` (nothing reaches the caller before the whole answer, so any
        failure may move on), with the same rules as :meth:`stream`."""
        response, info = await self._answer(request, _completed)
        response.fallback = info
        response.provider = self.name
        return response

    def _count(self, entry: str, outcome: str) -> None:
        key = (entry, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    def _exhausted(self, failed: list[Attempt], last: LLMError | None, soonest: float | None) -> LLMError:
        summary = "; ".join(f"{a.entry}: {a.kind}" + (f" ({a.message})" if a.message else "") for a in failed)
        message = f"every entry of fallback chain {self.name!r} failed: {summary}"
        if last is None:  # every entry's circuit is open
            return Overloaded(message, provider=self.name, retry_after=soonest, code="circuit_open")
        return type(last)(message, provider=self.name, detail=last.detail, retry_after=last.retry_after, code=last.code)

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=self.name, provider=self.name, display_name=" -> ".join(self.entries))]

    async def health(self) -> Health:
        """Ready when any entry is (entries resolved and asked concurrently is the router's job; here in order)."""
        reasons = []
        for entry in self.entries:
            try:
                provider, _ = await self.resolve(entry)
                health = await provider.health()
            except LLMError as exc:
                reasons.append(f"{entry}: {exc}")
                continue
            if health.ready and await self.breaker.state(entry) != "open":
                return Health(provider=self.name, installed=True, ready=True, reason=f"{entry} is ready")
            reasons.append(f"{entry}: {health.reason or 'not ready'}")
        return Health(
            provider=self.name,
            installed=True,
            ready=False,
            reason="; ".join(reasons),
            fix=f"make one entry of fallback chain {self.name!r} ready (`llm-runners providers`)",
        )


def quota_used(provider: Provider) -> float | None:
    """Percent of its subscription quota the provider (or one it wraps) reports used; None when unknown."""
    used = provider.quota_used()
    return float(used) if isinstance(used, int | float) else None


async def _opened(provider: Provider, request: ChatRequest) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
    """The provider's stream and its first event (the stream closed again when there is none)."""
    events = provider.stream(request)
    try:
        return events, await events.__anext__()
    except StopAsyncIteration:
        await _aclose(events)
        raise UpstreamError("the provider's stream ended without any event", provider=provider.name or None) from None
    except BaseException:
        await _aclose(events)
        raise


async def _completed(provider: Provider, request: ChatRequest) -> ChatResponse:
    return await provider.complete(request)


def _with_info(event: StreamEvent, info: FallbackInfo) -> StreamEvent:
    return replace(event, fallback=info) if type(event) is Done else event


def _note(answered: str | None, failed: list[Attempt]) -> None:
    if answered is not None:
        note_header(FALLBACK_ANSWERED_HEADER, answered)
    if failed:
        note_header(FALLBACK_FAILED_HEADER, ", ".join(f"{a.entry}={a.kind}" for a in failed))


def _resolver(providers: dict[str, Provider]) -> Resolve:
    async def resolve(entry: str) -> tuple[Provider, str | None]:
        name, _, model = entry.partition(":")
        if name not in providers:
            raise ModelNotFound(f"fallback entry {entry!r}: no provider {name!r}", code="model_not_found")
        return providers[name], model or None

    return resolve
