"""The cache and the circuit breaker in the shared state: two routers built from one settings file (two replicas)
on one real redis-server; Redis killed mid-run leaves both serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_runners.config import load_settings
from llm_runners.errors import UpstreamError
from llm_runners.router import Router
from llm_runners.state import open_state
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ChatRequest

pytestmark = pytest.mark.anyio


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}])  # type: ignore[list-item]


REQ = ask("shared?")


def replica(path: Path, bot: ScriptedProvider, down: ScriptedProvider) -> Router:
    return Router.from_settings(load_settings(str(path), env={}), extra={"bot": bot, "down": down})


def counting(name: str) -> ScriptedProvider:
    return ScriptedProvider(lambda r: Reply(text=f"{name} answered"), name="bot")


async def test_cache_and_breaker_shared_by_two_replicas_and_redis_loss(tmp_path: Path, redis_server: Any) -> None:
    path = tmp_path / "llm-runners.toml"
    path.write_text(
        f'state = "{redis_server.url}"\n'
        "[cache]\nttl = 60\n"
        '[fallbacks.chain]\nmodels = ["down", "bot"]\nretries = 0\n'
        "[circuit_breaker]\nfailures = 2\ncooldown = 60\n"
    )
    settings = load_settings(str(path), env={})
    one_bot, two_bot = counting("one"), counting("two")
    failing = Reply(error=UpstreamError("down"))
    one_down = ScriptedProvider(lambda r: failing, name="down")
    two_down = ScriptedProvider(lambda r: failing, name="down")
    one, two = replica(path, one_bot, one_down), replica(path, two_bot, two_down)
    state_one, state_two = open_state(settings.state), open_state(settings.state)
    one.use_state(state_one)
    two.use_state(state_two)
    try:
        # the cache: answered once on replica one, a hit on replica two
        assert (await (await one.resolve("bot")).provider.complete(REQ)).content == "one answered"
        assert (await (await two.resolve("bot")).provider.complete(REQ)).content == "one answered"
        assert len(one_bot.requests) == 1 and not two_bot.requests
        assert two.cache_stats is not None and two.cache_stats.get("bot", "hit") == 1

        # the breaker: two failures on replica one open the circuit of "down" for replica two as well
        for n in range(2):
            question = ask(f"chain {n}")
            await (await one.resolve("chain")).provider.complete(question)
        assert len(one_down.requests) == 2
        question = ask("chain on two")
        out = await (await two.resolve("chain")).provider.complete(question)
        assert out.fallback is not None and out.fallback.failed[0].kind == "circuit_open"
        assert not two_down.requests

        # Redis gone: both replicas keep answering (each from its own memory now)
        redis_server.kill()
        fresh = ask("after redis died")
        assert (await (await one.resolve("bot")).provider.complete(fresh)).content == "one answered"
        assert (await (await two.resolve("bot")).provider.complete(fresh)).content == "two answered"
        chained = await (await two.resolve("chain")).provider.complete(fresh)
        assert chained.content == "two answered"
    finally:
        await state_one.aclose()
        await state_two.aclose()
        await one.aclose()
        await two.aclose()


async def test_memory_state_keeps_the_bounded_stores(tmp_path: Path) -> None:
    path = tmp_path / "llm-runners.toml"
    path.write_text("[cache]\nmax_entries = 1\n")
    router = Router.from_settings(load_settings(str(path), env={}), extra={"bot": counting("x")})
    router.use_state(open_state("memory"))
    provider = (await router.resolve("bot")).provider
    for text in ("a", "b", "a"):
        await provider.complete(ask(text))
    assert router.cache_stats is not None and router.cache_stats.get("bot", "miss") == 3  # "a" was evicted


async def test_two_providers_of_one_type_never_share_cache_entries(tmp_path: Path) -> None:
    path = tmp_path / "llm-runners.toml"
    path.write_text("[cache]\n")
    one = ScriptedProvider(lambda r: Reply(text="from one"), name="scripted")
    two = ScriptedProvider(lambda r: Reply(text="from two"), name="scripted")  # the same class name
    router = Router.from_settings(load_settings(str(path), env={}), extra={"one": one, "two": two})
    assert (await (await router.resolve("one")).provider.complete(REQ)).content == "from one"
    assert (await (await router.resolve("two")).provider.complete(REQ)).content == "from two"
    assert router.cache_stats is not None and router.cache_stats.get("two", "miss") == 1
