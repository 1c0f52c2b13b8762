"""Shared state: one small async key-value interface, in this process's memory or in Redis.

Why: one server process is a single point of failure, and what several replicas must agree on (the Responses
store, which CLI session continues which conversation, per-key budgets and rate limits, the cache, circuit
breakers) cannot live in one process's memory. ``state = "redis://host:6379/0"`` in the settings puts it in
Redis; the default, ``"memory"``, keeps it in the process.

The interface (:class:`State`), every value a ``str`` (callers store JSON), every TTL in seconds:

==========================================  ==============================================================
``await get(key)``                          the value, or ``None`` (missing or expired)
``await set(key, value, ttl=None)``         store; ``ttl=None`` keeps it until deleted
``await add(key, value, ttl=None)``         store only if absent (``SET NX``); ``True`` when stored
``await pop(key)``                          get and delete in one step (``GETDEL``): exactly one caller wins
``await delete(*keys)``                     remove
``await incr(key, amount=1, ttl=None)``     atomic add to a number (a float), returns the new value; the TTL is
                                            set when the key is created, not refreshed by later increments
``await consume(key, amount, limit, ttl)``  atomic check-and-consume: add ``amount`` only if the result stays
                                            ``<= limit`` (or, with ``overdraw=True``, if the counter is still
                                            ``< limit`` before adding); returns a :class:`Consumed`
``await lease(key, holder, limit, ttl)``    take one of ``limit`` slots for ``holder`` (a semaphore across
                                            replicas); a slot not released expires after ``ttl``; returns a
                                            :class:`Leased` (true when granted). Never released, it is a
                                            sliding-window rate limit: at most ``limit`` per ``ttl``
``await release(key, holder)``              give the slot back
``await leases(key)``                       slots held right now
``await ttl(key)``                          seconds until the key expires, ``None`` when it does not
``scoped(namespace)``                       a view whose keys all live under ``namespace:``
==========================================  ==============================================================

Keys are namespaced: every key is stored as ``<prefix><namespace>:<key>`` (prefix ``llm_runners:``), so one Redis
database can be shared with other applications and ``SCAN llm_runners:*`` shows everything this project wrote.

Atomicity: :class:`MemoryState` runs every operation without awaiting in between, so on one event loop each is
atomic. :class:`RedisState` runs each compound operation as one Lua script (``incr``, ``consume``, ``lease``), so it
is atomic across replicas; the lease uses Redis's own clock, so replicas' clocks need not agree.

Redis unreachable: :class:`RedisState` never raises for a connection problem. The operation is answered from a
per-replica :class:`MemoryState` instead, a warning is logged once per outage (logger ``llm_runners.state``), and
Redis is tried again every ``retry_interval`` seconds; when it answers, an info line is logged and Redis is used
again. What was written to memory during the outage stays in that replica (it is not copied to Redis), so during an
outage each replica enforces limits on its own and a conversation started there continues only there.

Usage::

    state = open_state("redis://127.0.0.1:6379/0")     # or open_state("memory") / open_state(None)
    sessions = state.scoped("sessions")
    await sessions.set("abc", "{...}", ttl=3600)
    got = await state.consume("rpm:team-a:29131", 1, limit=60, ttl=60)
    if not got.allowed: raise RateLimited(..., retry_after=got.retry_after)
    await state.aclose()
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["PREFIX", "Consumed", "Leased", "MemoryState", "RedisState", "ScopedState", "State", "open_state"]

log = logging.getLogger("llm_runners.state")

#: every key this project stores starts with this
PREFIX = "llm_runners:"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Consumed:
    """The outcome of :meth:`State.consume`: whether the amount was taken, the counter's value afterwards (or as it
    stands, when refused) and the seconds until the counter expires (``None``: it does not)."""

    allowed: bool
    value: float
    reset_in: float | None

    @property
    def retry_after(self) -> float:
        """Seconds a refused caller should wait: until the counter expires, at least one."""
        return max(1.0, math.ceil(self.reset_in)) if self.reset_in is not None else 1.0


@dataclass(frozen=True, slots=True)
class Leased:
    """The outcome of :meth:`State.lease`: whether the slot was taken, how many are held now (this one included
    when taken), and, when refused, the seconds until the earliest held slot expires. True when granted."""

    granted: bool
    held: int
    free_in: float | None = None

    def __bool__(self) -> bool:
        return self.granted


class State(ABC):
    """The interface every backend implements (see the module docstring)."""

    #: ``"memory"`` or ``"redis"``
    backend: str = "memory"

    @abstractmethod
    async def get(self, key: str) -> str | None: ...

    @abstractmethod
    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None: ...

    @abstractmethod
    async def add(self, key: str, value: str, *, ttl: float | None = None) -> bool: ...

    @abstractmethod
    async def pop(self, key: str) -> str | None: ...

    @abstractmethod
    async def delete(self, *keys: str) -> None: ...

    @abstractmethod
    async def incr(self, key: str, amount: float = 1, *, ttl: float | None = None) -> float: ...

    @abstractmethod
    async def consume(
        self, key: str, amount: float, limit: float, *, ttl: float | None = None, overdraw: bool = False
    ) -> Consumed: ...

    @abstractmethod
    async def lease(self, key: str, holder: str, limit: int, *, ttl: float) -> Leased: ...

    @abstractmethod
    async def release(self, key: str, holder: str) -> None: ...

    @abstractmethod
    async def leases(self, key: str) -> int: ...

    @abstractmethod
    async def ttl(self, key: str) -> float | None: ...

    async def aclose(self) -> None:
        """Release connections (the memory backend has none)."""

    @property
    def degraded(self) -> bool:
        """True while a shared backend is unreachable and this replica answers from its own memory."""
        return False

    def scoped(self, namespace: str) -> ScopedState:
        """A view of this state whose keys live under ``namespace:`` (nestable: ``scoped("a").scoped("b")``)."""
        return ScopedState(self, namespace)


class ScopedState(State):
    """Every key of ``inner`` prefixed with ``namespace:``; closing a view does not close ``inner``."""

    def __init__(self, inner: State, namespace: str) -> None:
        if not namespace or ":" in namespace:
            raise ValueError(f"a namespace is a non-empty name without ':', got {namespace!r}")
        self.inner = inner
        self.namespace = namespace
        self._prefix = namespace + ":"
        self.backend = inner.backend

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> str | None:
        return await self.inner.get(self._k(key))

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        await self.inner.set(self._k(key), value, ttl=ttl)

    async def add(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        return await self.inner.add(self._k(key), value, ttl=ttl)

    async def pop(self, key: str) -> str | None:
        return await self.inner.pop(self._k(key))

    async def delete(self, *keys: str) -> None:
        await self.inner.delete(*(self._k(k) for k in keys))

    async def incr(self, key: str, amount: float = 1, *, ttl: float | None = None) -> float:
        return await self.inner.incr(self._k(key), amount, ttl=ttl)

    async def consume(
        self, key: str, amount: float, limit: float, *, ttl: float | None = None, overdraw: bool = False
    ) -> Consumed:
        return await self.inner.consume(self._k(key), amount, limit, ttl=ttl, overdraw=overdraw)

    async def lease(self, key: str, holder: str, limit: int, *, ttl: float) -> Leased:
        return await self.inner.lease(self._k(key), holder, limit, ttl=ttl)

    async def release(self, key: str, holder: str) -> None:
        await self.inner.release(self._k(key), holder)

    async def leases(self, key: str) -> int:
        return await self.inner.leases(self._k(key))

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(self._k(key))

    @property
    def degraded(self) -> bool:
        return self.inner.degraded


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")


# ------------------------------------------------------------------------------------------------ memory


class MemoryState(State):
    """This process's memory. Expired keys are dropped when read and swept every ``sweep_every`` writes; beyond
    ``max_keys`` the keys stored longest ago go first (callers that need a bound of their own keep it)."""

    backend = "memory"

    def __init__(
        self, *, max_keys: int = 1_000_000, sweep_every: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # key -> (value, expires_at or inf); a lease set is a dict holder -> expires_at
        self._data: dict[str, tuple[Any, float]] = {}
        self.max_keys = max_keys
        self._sweep_every = sweep_every
        self._writes = 0
        self._clock = clock

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str) -> tuple[Any, float] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._data[key]
            return None
        return entry

    def _store(self, key: str, value: Any, expires: float) -> None:
        self._data.pop(key, None)  # re-inserted last: dict order is storage order
        self._data[key] = (value, expires)
        self._writes += 1
        if self._writes % self._sweep_every == 0:
            now = self._clock()
            for k in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[k]
        while len(self._data) > self.max_keys:
            del self._data[next(iter(self._data))]

    def _expiry(self, ttl: float | None) -> float:
        _check_ttl(ttl)
        return self._clock() + ttl if ttl is not None else math.inf

    async def get(self, key: str) -> str | None:
        entry = self._live(key)
        return None if entry is None or not isinstance(entry[0], str) else entry[0]

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        self._store(key, value, self._expiry(ttl))

    async def add(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        expires = self._expiry(ttl)
        if self._live(key) is not None:
            return False
        self._store(key, value, expires)
        return True

    async def pop(self, key: str) -> str | None:
        entry = self._live(key)
        if entry is None:
            return None
        del self._data[key]
        return entry[0] if isinstance(entry[0], str) else None

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    def _number(self, key: str) -> tuple[float, float]:
        entry = self._live(key)
        if entry is None:
            return 0.0, math.inf
        try:
            return float(entry[0]), entry[1]
        except (TypeError, ValueError):
            raise ValueError(f"state key {key!r} does not hold a number") from None

    async def incr(self, key: str, amount: float = 1, *, ttl: float | None = None) -> float:
        _check_ttl(ttl)
        current, expires = self._number(key)
        if expires == math.inf and ttl is not None:
            expires = self._clock() + ttl
        value = current + amount
        self._store(key, _number_text(value), expires)
        return value

    async def consume(
        self, key: str, amount: float, limit: float, *, ttl: float | None = None, overdraw: bool = False
    ) -> Consumed:
        _check_ttl(ttl)
        current, expires = self._number(key)
        ok = current < limit if overdraw else current + amount <= limit
        if ok:
            if expires == math.inf and ttl is not None:
                expires = self._clock() + ttl
            current += amount
            self._store(key, _number_text(current), expires)
        return Consumed(ok, current, None if expires == math.inf else max(0.0, expires - self._clock()))

    def _holders(self, key: str) -> dict[str, float]:
        entry = self._live(key)
        if entry is None or not isinstance(entry[0], dict):
            return {}
        now = self._clock()
        holders: dict[str, float] = entry[0]
        for h in [h for h, exp in holders.items() if exp <= now]:
            del holders[h]
        return holders

    async def lease(self, key: str, holder: str, limit: int, *, ttl: float) -> Leased:
        _check_ttl(ttl)
        holders = self._holders(key)
        if holder not in holders and len(holders) >= limit:
            return Leased(False, len(holders), max(0.0, min(holders.values()) - self._clock()))
        now = self._clock()
        holders[holder] = now + ttl
        self._store(key, holders, max(holders.values()))
        return Leased(True, len(holders))

    async def release(self, key: str, holder: str) -> None:
        self._holders(key).pop(holder, None)

    async def leases(self, key: str) -> int:
        return len(self._holders(key))

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None or entry[1] == math.inf:
            return None
        return max(0.0, entry[1] - self._clock())


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ------------------------------------------------------------------------------------------------ redis

# KEYS[1] counter; ARGV: amount, ttl_ms (0 = none)
_INCR = """
local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""

# KEYS[1] counter; ARGV: amount, limit, ttl_ms (0 = none), overdraw ('1' / '0'). Returns {allowed, value, pttl}.
_CONSUME = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local ok
if ARGV[4] == '1' then ok = cur < limit else ok = cur + amount <= limit end
local value = tostring(cur)
if ok then
  value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
  if tonumber(ARGV[3]) > 0 and redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
end
return {ok and 1 or 0, value, redis.call('PTTL', KEYS[1])}
"""

# KEYS[1] sorted set holder -> expiry (ms, Redis's clock); ARGV: holder, limit, ttl_ms.
# Returns {granted, held, ms until the earliest slot expires (-1 when granted)}.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and held >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, held, tonumber(first[2]) - now}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, redis.call('ZCARD', KEYS[1]), -1}
"""

_LEASES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


def _ms(ttl: float | None) -> int:
    _check_ttl(ttl)
    return 0 if ttl is None else max(1, math.ceil(ttl * 1000))


def _seconds(pttl: int) -> float | None:
    return None if pttl < 0 else pttl / 1000


class RedisState(State):
    """Redis through the ``redis`` package's asyncio client; a per-replica :class:`MemoryState` answers while
    Redis is unreachable (see the module docstring). Keys are stored under ``prefix``."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = PREFIX,
        retry_interval: float = 2.0,
        connect_timeout: float = 5.0,
        timeout: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.prefix = prefix
        self.retry_interval = retry_interval
        # A bounded pool that callers queue on: a burst of 200 requests shares ``max_connections`` connections
        # instead of opening 200 at once (which, on a loaded machine, times out and would look like an outage).
        # No retries inside the client (``_run`` retries a refused or closed connection once, at once: a pooled
        # connection that went stale when Redis restarted is replaced instead of counting as an outage).
        # Generous timeouts: on a starved machine a connect can take seconds, and a timeout counts as an outage.
        # driver_info=None: no CLIENT SETINFO round trips on each new connection.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=2 * timeout,
            driver_info=None,
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self._client: Redis = Redis(connection_pool=pool)
        self._incr = self._client.register_script(_INCR)
        self._consume = self._client.register_script(_CONSUME)
        self._lease = self._client.register_script(_LEASE)
        self._leases = self._client.register_script(_LEASES)
        self.memory = MemoryState()
        self._down_since: float | None = None
        self._retry_at = 0.0

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def _run(self, on_redis: Callable[[], Awaitable[T]], on_memory: Callable[[], Awaitable[T]]) -> T:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if self._down_since is not None and time.monotonic() < self._retry_at:
            return await on_memory()
        try:
            try:
                result = await on_redis()
            except (RedisConnectionError, ConnectionError) as exc:
                if isinstance(exc, RedisTimeoutError | TimeoutError):
                    raise
                result = await on_redis()  # a stale pooled connection: the client has dropped it, try a fresh one
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                log.warning(
                    "redis at %s unreachable (%s: %s): this replica keeps serving from its own memory and retries "
                    "every %g s",
                    _safe_url(self.url),
                    type(exc).__name__,
                    exc,
                    self.retry_interval,
                )
            self._retry_at = now + self.retry_interval
            return await on_memory()
        if self._down_since is not None:
            log.info(
                "redis at %s reachable again after %.1f s: shared state back on",
                _safe_url(self.url),
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        return result

    async def get(self, key: str) -> str | None:
        async def r() -> str | None:
            return cast("str | None", await self._client.get(self._k(key)))

        return await self._run(r, lambda: self.memory.get(key))

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        ms = _ms(ttl)

        async def r() -> None:
            await self._client.set(self._k(key), value, px=ms or None)

        await self._run(r, lambda: self.memory.set(key, value, ttl=ttl))

    async def add(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        ms = _ms(ttl)

        async def r() -> bool:
            return bool(await self._client.set(self._k(key), value, px=ms or None, nx=True))

        return await self._run(r, lambda: self.memory.add(key, value, ttl=ttl))

    async def pop(self, key: str) -> str | None:
        async def r() -> str | None:
            return cast("str | None", await self._client.getdel(self._k(key)))

        return await self._run(r, lambda: self.memory.pop(key))

    async def delete(self, *keys: str) -> None:
        if not keys:
            return

        async def r() -> None:
            await self._client.delete(*(self._k(k) for k in keys))

        await self._run(r, lambda: self.memory.delete(*keys))

    async def incr(self, key: str, amount: float = 1, *, ttl: float | None = None) -> float:
        ms = _ms(ttl)

        async def r() -> float:
            return float(await self._incr(keys=[self._k(key)], args=[repr(float(amount)), ms]))

        return await self._run(r, lambda: self.memory.incr(key, amount, ttl=ttl))

    async def consume(
        self, key: str, amount: float, limit: float, *, ttl: float | None = None, overdraw: bool = False
    ) -> Consumed:
        ms = _ms(ttl)

        async def r() -> Consumed:
            ok, value, pttl = await self._consume(
                keys=[self._k(key)], args=[repr(float(amount)), repr(float(limit)), ms, "1" if overdraw else "0"]
            )
            return Consumed(bool(ok), float(value), _seconds(int(pttl)))

        return await self._run(r, lambda: self.memory.consume(key, amount, limit, ttl=ttl, overdraw=overdraw))

    async def lease(self, key: str, holder: str, limit: int, *, ttl: float) -> Leased:
        ms = _ms(ttl)

        async def r() -> Leased:
            granted, held, free_ms = await self._lease(keys=[self._k(key)], args=[holder, limit, ms])
            return Leased(bool(granted), int(held), None if granted else max(0, int(free_ms)) / 1000)

        return await self._run(r, lambda: self.memory.lease(key, holder, limit, ttl=ttl))

    async def release(self, key: str, holder: str) -> None:
        async def r() -> None:
            await self._client.zrem(self._k(key), holder)

        await self._run(r, lambda: self.memory.release(key, holder))

    async def leases(self, key: str) -> int:
        async def r() -> int:
            return int(await self._leases(keys=[self._k(key)], args=[]))

        return await self._run(r, lambda: self.memory.leases(key))

    async def ttl(self, key: str) -> float | None:
        async def r() -> float | None:
            return _seconds(int(await self._client.pttl(self._k(key))))

        return await self._run(r, lambda: self.memory.ttl(key))

    async def ping(self) -> bool:
        """Whether Redis answers right now (a probe for ``/ready``; never raises)."""
        from redis.exceptions import RedisError

        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        await self._client.aclose(close_connection_pool=True)


def _safe_url(url: str) -> str:
    """``url`` without a password, for log lines."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***@' if user else '***@'}{host}"


def open_state(url: str | None = None) -> State:
    """The backend a ``state`` setting names: ``None``, ``""`` or ``"memory"`` = :class:`MemoryState`;
    ``redis://``, ``rediss://`` or ``unix://`` = :class:`RedisState` (no connection is made until first use)."""
    if not url or url == "memory":
        return MemoryState()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisState(url)
    raise ValueError(f"state must be 'memory' or a redis:// URL, got {url!r}")
