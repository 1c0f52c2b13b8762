"""The shared-state interface, the same checks against both backends: memory, and a real redis-server of the
test's own (two clients standing for two replicas). Expiry, atomicity under concurrency, namespacing, and Redis
killed mid-run: no exception, a warning, memory answers, Redis used again once it is back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from llm_runners.state import MemoryState, RedisState, State, open_state

pytestmark = pytest.mark.anyio

Pair = tuple[State, State]


@pytest.fixture(params=["memory", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """Two handles on one state: the same MemoryState twice, or two RedisState clients of one redis-server."""
    if request.param == "memory":
        m = MemoryState()
        yield m, m
        return
    server = request.getfixturevalue("redis_server")
    a, b = RedisState(server.url), RedisState(server.url)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_get_set_delete_pop_add(pair: Pair) -> None:
    a, b = pair
    assert await a.get("k") is None
    await a.set("k", "v1")
    assert await b.get("k") == "v1"
    assert await b.ttl("k") is None
    assert not await b.add("k", "v2")
    assert await a.add("fresh", "x", ttl=30)
    assert await b.get("fresh") == "x"
    assert await b.pop("k") == "v1"
    assert await a.pop("k") is None and await a.get("k") is None
    await a.delete("fresh", "never-there")
    assert await b.get("fresh") is None


async def test_expiry(pair: Pair) -> None:
    a, b = pair
    await a.set("short", "v", ttl=0.3)
    await a.set("long", "v", ttl=60)
    assert await a.incr("n", 2, ttl=0.3) == 2
    assert 0 < (await b.ttl("long") or 0) <= 60
    await anyio.sleep(0.8)
    assert await b.get("short") is None
    assert await b.get("long") == "v"
    # the counter expired with its key: it starts again from zero with a fresh TTL
    assert await b.incr("n", 1, ttl=60) == 1
    assert await a.ttl("n") is not None


async def test_incr_keeps_the_ttl_it_was_created_with(pair: Pair) -> None:
    a, _ = pair
    await a.incr("c", 1, ttl=0.4)
    await a.incr("c", 1, ttl=60)  # does not extend the window
    assert (await a.ttl("c") or 99) <= 0.4
    await anyio.sleep(0.8)
    assert await a.get("c") is None


async def test_incr_floats_and_negative(pair: Pair) -> None:
    a, b = pair
    assert await a.incr("usd", 0.25) == 0.25
    assert await b.incr("usd", 0.5) == 0.75
    assert await a.incr("usd", -0.75) == 0
    assert float(await b.get("usd") or "nan") == 0


async def _together(n: int, job: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n

    async def run(i: int) -> None:
        results[i] = await job(i)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(run, i)
    return results


async def test_concurrent_increments_lose_nothing(pair: Pair) -> None:
    a, b = pair
    await _together(200, lambda i: (a if i % 2 else b).incr("hits", 0.5, ttl=60))
    assert await a.get("hits") == "100"


async def test_consume_is_atomic_under_concurrency(pair: Pair) -> None:
    a, b = pair
    got = await _together(200, lambda i: (a if i % 2 else b).consume("rpm", 1, 50, ttl=60))
    assert sum(c.allowed for c in got) == 50
    assert await a.get("rpm") == "50"
    refused = [c for c in got if not c.allowed]
    assert all(c.value == 50 and c.reset_in is not None and 0 < c.reset_in <= 60 for c in refused)
    assert all(1 <= c.retry_after <= 60 for c in refused)


async def test_consume_amounts_and_overdraw(pair: Pair) -> None:
    a, _ = pair
    assert (await a.consume("tok", 70, 100, ttl=60)).allowed
    refused = await a.consume("tok", 40, 100, ttl=60)
    assert not refused.allowed and refused.value == 70
    # overdraw: allowed while the counter is still under the limit, whatever the amount
    over = await a.consume("tok", 40, 100, ttl=60, overdraw=True)
    assert over.allowed and over.value == 110
    assert not (await a.consume("tok", 1, 100, ttl=60, overdraw=True)).allowed
    # without a TTL the counter never expires
    free = await a.consume("forever", 1, 2)
    assert free.allowed and free.reset_in is None and free.retry_after == 1


async def test_lease_is_a_semaphore_across_clients(pair: Pair) -> None:
    a, b = pair
    got = await _together(50, lambda i: (a if i % 2 else b).lease("slots", f"h{i}", 3, ttl=60))
    winners = [f"h{i}" for i, ok in enumerate(got) if ok]
    assert len(winners) == 3
    assert await a.leases("slots") == 3
    assert await b.lease("slots", winners[0], 3, ttl=60)  # a holder renewing its own slot is not a new one
    assert not await b.lease("slots", "late", 3, ttl=60)
    await a.release("slots", winners[1])
    assert await b.leases("slots") == 2
    assert await b.lease("slots", "late", 3, ttl=60)


async def test_a_lease_not_released_expires(pair: Pair) -> None:
    a, b = pair
    assert await a.lease("slots", "crashed-replica", 1, ttl=0.3)
    assert not await b.lease("slots", "other", 1, ttl=60)
    await anyio.sleep(0.8)
    assert await b.leases("slots") == 0
    assert await b.lease("slots", "other", 1, ttl=60)


async def test_only_one_caller_pops_a_key(pair: Pair) -> None:
    a, b = pair
    await a.set("session", "s-1", ttl=60)
    got = await _together(20, lambda i: (a if i % 2 else b).pop("session"))
    assert got.count("s-1") == 1 and got.count(None) == 19


async def test_namespaces_do_not_collide(pair: Pair) -> None:
    a, b = pair
    x, y = a.scoped("x"), b.scoped("y")
    await x.set("k", "in-x")
    await y.set("k", "in-y")
    assert await a.scoped("x").get("k") == "in-x"
    assert await b.scoped("y").get("k") == "in-y"
    assert await a.get("x:k") == "in-x"
    assert await x.scoped("inner").incr("n") == 1
    assert await a.get("x:inner:n") == "1"
    with pytest.raises(ValueError):
        a.scoped("a:b")


async def test_redis_keys_carry_the_project_prefix(redis_server: Any) -> None:
    from redis.asyncio import Redis

    state = RedisState(redis_server.url)
    raw = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await state.scoped("responses").set("resp_1", "{}", ttl=60)
        assert await raw.keys("*") == ["llm_runners:responses:resp_1"]
        assert 0 < await raw.pttl("llm_runners:responses:resp_1") <= 60_000
    finally:
        await raw.aclose()
        await state.aclose()


async def test_redis_killed_mid_run_degrades_to_memory_and_comes_back(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llm_runners.state")
    a = RedisState(redis_server.url, retry_interval=0.3)
    b = RedisState(redis_server.url, retry_interval=0.3)
    try:
        await a.set("shared", "yes")
        assert await b.get("shared") == "yes" and not a.degraded
        redis_server.kill()
        # nothing raises: every operation is answered from this replica's own memory
        assert await a.get("shared") is None
        assert a.degraded and a.backend == "redis"
        await a.set("local", "only-a")
        assert await a.get("local") == "only-a"
        assert (await a.consume("rpm", 1, 1, ttl=60)).allowed
        assert not (await a.consume("rpm", 1, 1, ttl=60)).allowed
        assert await a.lease("slots", "h", 1, ttl=60)
        assert await a.incr("n") == 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "one warning per outage, not one per operation"
        assert "unreachable" in warnings[0].getMessage()
        redis_server.start()
        await anyio.sleep(0.5)  # past retry_interval: the next operation tries Redis again
        await a.set("after", "back")
        assert not a.degraded
        assert await b.get("after") == "back"
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await a.aclose()
        await b.aclose()


async def test_unreachable_from_the_start_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = open_state(f"redis://127.0.0.1:{port}/0")
    try:
        assert isinstance(state, RedisState)
        with anyio.fail_after(10):
            await state.set("k", "v", ttl=60)
            assert await state.get("k") == "v"
        assert state.degraded
    finally:
        await state.aclose()


def test_open_state_names() -> None:
    assert isinstance(open_state(None), MemoryState)
    assert isinstance(open_state("memory"), MemoryState)
    with pytest.raises(ValueError, match="redis://"):
        open_state("postgres://x")


async def test_memory_state_is_bounded() -> None:
    m = MemoryState(max_keys=10)
    for i in range(25):
        await m.set(f"k{i}", "v")
    assert len(m) == 10
    assert await m.get("k0") is None and await m.get("k24") == "v"
