"""The response cache over scripted providers: keys, bypass, TTL and size bounds, streams, errors, stores."""

from __future__ import annotations

import time

import anyio
import pytest

from llm_runners.errors import UpstreamError
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ChatRequest, Done, ImagePart, Message, TextDelta, TextPart, ToolSpec, Usage, UsageEvent
from llm_runners.wrappers.cache import Cache, cache_key
from llm_runners.wrappers.meta import CACHE_HEADER, collect_headers
from llm_runners.wrappers.store import MemoryKeyValue

pytestmark = pytest.mark.anyio


def req(text: str = "hi", **kw: object) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)  # type: ignore[list-item,arg-type]


def counting(prefix: str = "answer") -> ScriptedProvider:
    calls = {"n": 0}

    def reply(request: ChatRequest) -> Reply:
        calls["n"] += 1
        return Reply(text=f"{prefix} {calls['n']}", usage=Usage(input_tokens=10, output_tokens=2, cost_usd=0.5))

    return ScriptedProvider(reply)


async def test_second_identical_request_is_a_hit() -> None:
    inner = counting()
    cache = Cache(inner)
    first = await cache.complete(req())
    with collect_headers() as headers:
        second = await cache.complete(req())
    assert first.content == second.content == "answer 1"
    assert len(inner.requests) == 1
    assert headers == {CACHE_HEADER: "hit"}
    assert cache.stats.get("scripted", "miss") == 1 and cache.stats.get("scripted", "hit") == 1
    assert second.usage is not None and second.usage.input_tokens == 10 and second.usage.cost_usd == 0.0


async def test_key_covers_messages_model_sampling_tools_and_format() -> None:
    base = req()
    variants = [
        req("other"),
        req(model="m2"),
        req(max_tokens=10),
        req(top_p=0.5),
        req(stop=["x"]),
        req(tools=[ToolSpec(name="t")]),
        req(response_format={"type": "json_object"}),
        req(extra={"seed": 7}),
    ]
    keys = {cache_key("p", r) for r in variants}
    assert cache_key("p", base) not in keys and len(keys) == len(variants)
    assert cache_key("p", base) != cache_key("q", base)  # per provider
    assert cache_key("p", base) == cache_key("p", req(conversation="someone-else"))


def test_key_covers_image_bytes() -> None:
    def with_image(data: bytes) -> ChatRequest:
        return ChatRequest(
            messages=[Message(role="user", content=[TextPart(text="what is it?"), ImagePart(data=data)])]
        )

    png = b"\x89PNG\r\n\x1a\n\xff\xfe\x00"
    assert cache_key("p", with_image(png)) == cache_key("p", with_image(png))
    assert cache_key("p", with_image(png)) != cache_key("p", with_image(png + b"\x01"))
    assert cache_key("p", with_image(png)) != cache_key("p", req("what is it?"))


async def test_sampled_requests_bypass_unless_configured() -> None:
    inner = counting()
    cache = Cache(inner)
    await cache.complete(req(temperature=0.7))
    await cache.complete(req(temperature=0.7))
    assert len(inner.requests) == 2 and cache.stats.get("scripted", "bypass") == 2
    await cache.complete(req(temperature=0))
    await cache.complete(req(temperature=0))
    assert len(inner.requests) == 3
    sampled = Cache(inner, sampled=True)
    await sampled.complete(req(temperature=0.7))
    await sampled.complete(req(temperature=0.7))
    assert len(inner.requests) == 4


async def test_streamed_answer_is_replayed_as_the_same_stream() -> None:
    inner = ScriptedProvider([Reply(chunks=["one ", "two ", "three"], session_id="sess-of-caller-1")])
    cache = Cache(inner)
    first = [e async for e in cache.stream(req())]
    second = [e async for e in cache.stream(req())]
    assert len(inner.requests) == 1
    texts = [e.text for e in second if isinstance(e, TextDelta)]
    assert texts == ["one ", "two ", "three"]
    assert [type(e) for e in first] == [type(e) for e in second]
    done = second[-1]
    assert isinstance(done, Done) and done.session_id is None  # another caller's session is never replayed
    usage = next(e for e in second if isinstance(e, UsageEvent))
    assert usage.usage.cost_usd == 0.0
    # a streamed answer serves a non-streamed request
    assert (await cache.complete(req())).content == "one two three"
    assert len(inner.requests) == 1


async def test_errors_and_unfinished_streams_are_not_cached() -> None:
    inner = ScriptedProvider([Reply(error=UpstreamError("boom")), Reply(text="a b c d"), "good"])
    cache = Cache(inner)
    with pytest.raises(UpstreamError):
        await cache.complete(req())
    stream = cache.stream(req())
    await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    assert (await cache.complete(req())).content == "good"
    assert (await cache.complete(req())).content == "good"
    assert len(inner.requests) == 3


async def test_ttl_expires_entries() -> None:
    inner = counting()
    cache = Cache(inner, ttl=0.05)
    await cache.complete(req())
    await anyio.sleep(0.1)
    assert (await cache.complete(req())).content == "answer 2"


async def test_size_bounds() -> None:
    inner = counting()
    cache = Cache(inner, max_entries=2)
    for text in ("a", "b", "c"):
        await cache.complete(req(text))
    await cache.complete(req("a"))  # evicted (least recently used)
    assert len(inner.requests) == 4
    big = ScriptedProvider([Reply(text="x" * 5000)])
    small = Cache(big, max_entry_bytes=1000)
    await small.complete(req())
    await small.complete(req())
    assert len(big.requests) == 2


async def test_a_failing_store_is_a_miss_and_the_answer_is_served() -> None:
    class Down:
        async def get(self, key: str) -> bytes | None:
            raise ConnectionError("down")

        async def set(self, key: str, value: bytes, ttl: float) -> None:
            raise ConnectionError("down")

    inner = counting()
    cache = Cache(inner, Down())
    assert (await cache.complete(req())).content == "answer 1"
    assert (await cache.complete(req())).content == "answer 2"
    assert cache.stats.get("scripted", "miss") == 2


async def test_shared_store_serves_another_instance() -> None:
    store = MemoryKeyValue()
    one, two = counting("one"), counting("two")
    await Cache(one, store).complete(req())
    assert (await Cache(two, store).complete(req())).content == "one 1"  # same provider name, same key


async def test_slow_provider_is_cached_once_it_answers() -> None:
    inner = ScriptedProvider([Reply(text="slow answer", delay=0.05)])
    cache = Cache(inner)
    started = time.monotonic()
    await cache.complete(req())
    assert time.monotonic() - started >= 0.05
    assert (await cache.complete(req())).content == "slow answer"
    assert len(inner.requests) == 1
