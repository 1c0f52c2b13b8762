"""The conversation -> session map on a shared state (two stores = two replicas on one redis-server): a replica
with the same scope (it can reach the CLI's session files) resumes what another started, one with another scope
finds nothing and replays; a claim has one winner across replicas; nothing crosses conversations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from llm_runners.sessions import SessionStore
from llm_runners.state import MemoryState, RedisState, State
from llm_runners.types import Message

pytestmark = pytest.mark.anyio


def u(text: str) -> Message:
    return Message(role="user", content=text)


def a(text: str) -> Message:
    return Message(role="assistant", content=text)


@pytest.fixture(params=["memory", "redis"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[tuple[State, State]]:
    if request.param == "memory":
        m = MemoryState()
        yield m, m
        return
    server: Any = request.getfixturevalue("redis_server")
    one, two = RedisState(server.url), RedisState(server.url)
    try:
        yield one, two
    finally:
        await one.aclose()
        await two.aclose()


async def test_another_replica_resumes_when_it_can_reach_the_session(shared: tuple[State, State]) -> None:
    on_a, on_b = SessionStore(shared=shared[0]), SessionStore(shared=shared[1])
    on_a.remember("claude_code", "conv-1", [u("u1")], a("a1"), "sess-1", scope="host|/home|/srv/work")
    await on_a.flush()
    # a replica with another working directory cannot reach the session: nothing to resume, it replays
    other = await on_b.aclaim("claude_code", "conv-1", [u("u1"), a("a1"), u("u2")], scope="host|/home|/tmp/w2")
    assert other.session_id is None and other.first_new == 0
    same = await on_b.aclaim("claude_code", "conv-1", [u("u1"), a("a1"), u("u2")], scope="host|/home|/srv/work")
    assert same.session_id == "sess-1" and same.first_new == 2
    # claimed: the entry is gone for every replica
    again = await on_a.aclaim("claude_code", "conv-1", [u("u1"), a("a1"), u("u2")], scope="host|/home|/srv/work")
    assert again.session_id is None


async def test_one_winner_across_replicas_and_no_crossing_conversations(shared: tuple[State, State]) -> None:
    stores = [SessionStore(shared=shared[i % 2]) for i in range(10)]
    stores[0].remember("p", "conv-A", [u("u1")], a("a1"), "sess-A", scope="s")
    await stores[0].flush()
    assert (await stores[1].aclaim("p", "conv-B", [u("u1"), a("a1"), u("u2")], scope="s")).session_id is None
    got: list[str | None] = []

    async def claim(store: SessionStore) -> None:
        got.append((await store.aclaim("p", "conv-A", [u("u1"), a("a1"), u("u2")], scope="s")).session_id)

    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(claim, store)
    assert got.count("sess-A") == 1 and got.count(None) == 9


async def test_entries_expire() -> None:
    store = SessionStore(shared=MemoryState(), ttl=0.2)
    store.remember("p", None, [u("u1")], a("a1"), "sess-1")
    await store.flush()
    await anyio.sleep(0.5)
    assert (await store.aclaim("p", None, [u("u1"), a("a1"), u("u2")])).session_id is None


async def test_without_a_shared_state_aclaim_is_the_local_claim() -> None:
    store = SessionStore()
    store.remember("p", None, [u("u1")], a("a1"), "sess-1", scope="x")
    await store.flush()
    assert len(store) == 1
    # one process: the scope does not split entries (a session its CLI cannot find is replayed by the runner)
    assert (await store.aclaim("p", None, [u("u1"), a("a1"), u("u2")], scope="y")).session_id == "sess-1"
