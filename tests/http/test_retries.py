"""Retries of the HTTP providers: a 429 / 5xx (or an overload said at the start of a stream) is retried, honouring
``retry-after``, only while nothing has reached the caller; an error after the first event is the caller's."""

from __future__ import annotations

import json
import time

import httpx2
import pytest
from canned_http import MockAPI, req

from llm_runners.errors import ContextLengthExceeded, Overloaded, RateLimited, UpstreamError
from llm_runners.http import AnthropicProvider, GeminiProvider, OpenAICompatProvider
from llm_runners.http._base import HTTPProvider
from llm_runners.testing.fake_api import FakeModelAPI, Reply
from llm_runners.types import TextDelta

pytestmark = pytest.mark.anyio

OK = b'data: {"choices":[{"index":0,"delta":{"content":"fine"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'


def error(status: int, message: str = "busy", **headers: str) -> httpx2.Response:
    body = json.dumps({"error": {"message": message, "type": "x"}}).encode()
    return httpx2.Response(status, content=body, headers={"content-type": "application/json", **headers})


def stream(body: bytes) -> httpx2.Response:
    return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})


class Sequence(MockAPI[OpenAICompatProvider]):
    """Answers each request with the next canned response and remembers when each request came."""

    provider_class, base_url = OpenAICompatProvider, "http://upstream.test/v1"

    def __init__(self, *responses: httpx2.Response) -> None:
        self.responses = list(responses)
        self.times: list[float] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.times.append(time.monotonic())
        return self.responses.pop(0)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 529])
async def test_a_429_or_5xx_before_the_first_byte_is_retried(status: int) -> None:
    seq = Sequence(error(status, **{"retry-after": "0"}), stream(OK))
    response = await seq.provider().complete(req())
    assert response.content == "fine" and len(seq.times) == 2


async def test_retry_after_is_honoured() -> None:
    seq = Sequence(error(429, **{"retry-after": "0.4"}), error(503, **{"retry-after": "0.4"}), stream(OK))
    response = await seq.provider().complete(req())
    assert response.content == "fine" and len(seq.times) == 3
    assert seq.times[1] - seq.times[0] >= 0.35 and seq.times[2] - seq.times[1] >= 0.35


async def test_without_retry_after_the_wait_backs_off() -> None:
    seq = Sequence(error(500), error(500), stream(OK))
    assert (await seq.provider().complete(req())).content == "fine"
    assert seq.times[1] - seq.times[0] >= 0.45 and seq.times[2] - seq.times[1] >= 0.95


async def test_retries_are_bounded_and_the_last_error_is_raised() -> None:
    seq = Sequence(*(error(503, f"overloaded {i}", **{"retry-after": "0"}) for i in range(4)))
    with pytest.raises(Overloaded, match="overloaded 2"):
        await seq.provider(max_retries=2).complete(req())
    assert len(seq.times) == 3
    seq = Sequence(error(429, **{"retry-after": "0"}), stream(OK))
    with pytest.raises(RateLimited):
        await seq.provider(max_retries=0).complete(req())
    assert len(seq.times) == 1


async def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    seq = Sequence(error(429, **{"retry-after": "120"}), stream(OK))
    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await seq.provider(max_retry_wait=20).complete(req())
    assert len(seq.times) == 1 and info.value.retry_after == 120.0
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_a_client_error_is_not_retried(status: int) -> None:
    seq = Sequence(error(status, "no"), stream(OK))
    with pytest.raises(Exception) as info:
        await seq.provider().complete(req())
    assert len(seq.times) == 1 and getattr(info.value, "status", None) is not None


async def test_an_overload_inside_the_stream_before_any_event_is_retried() -> None:
    overloaded = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    ok = b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
        for e in [
            {"type": "message_start", "message": {"model": "c", "usage": {"input_tokens": 1}}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "fine"}},
            {"type": "message_stop"},
        ]
    )
    seq = Sequence(stream(overloaded), stream(ok))
    provider = AnthropicProvider("http://upstream.test", api_key="k", model="c", transport=seq.transport())
    assert (await provider.complete(req())).content == "fine" and len(seq.times) == 2


async def test_an_error_after_the_first_event_reached_the_caller_is_not_retried() -> None:
    text = b'data: {"choices":[{"index":0,"delta":{"content":"half"}}]}\n\n'
    broken = text + b'data: {"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}\n\n'
    seq = Sequence(stream(broken), stream(OK))
    seen: list[str] = []
    with pytest.raises(RateLimited):
        async for event in seq.provider().stream(req()):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    assert seen == ["half"] and len(seq.times) == 1


async def test_a_gemini_error_chunk_after_text_is_not_retried() -> None:
    text = b'data: {"candidates":[{"content":{"parts":[{"text":"half"}]},"index":0}]}\n\n'
    broken = text + b'data: {"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}\n\n'
    seq = Sequence(stream(broken))
    provider = GeminiProvider("http://upstream.test", api_key="k", model="g", transport=seq.transport())
    with pytest.raises(Overloaded):
        await provider.complete(req())
    assert len(seq.times) == 1


async def test_a_broken_stream_is_not_retried() -> None:
    seq = Sequence(stream(b"data: {not json\n\n"), stream(OK))
    with pytest.raises(UpstreamError):
        await seq.provider().complete(req())
    assert len(seq.times) == 1


@pytest.mark.parametrize("cls", [OpenAICompatProvider, AnthropicProvider, GeminiProvider])
def test_every_http_provider_takes_the_retry_options(cls: type[HTTPProvider]) -> None:
    provider = cls(api_key="k", max_retries=5, max_retry_wait=1.5)  # type: ignore[call-arg]
    assert provider.max_retries == 5 and provider.max_retry_wait == 1.5
    with pytest.raises(ValueError, match="max_retries"):
        cls(api_key="k", max_retries=-1)  # type: ignore[call-arg]


async def test_retried_against_the_fake_api() -> None:
    with FakeModelAPI() as api:
        api.script(Reply(error="429", retry_after=1), Reply(error="500"), Reply("after two retries"))
        async with GeminiProvider(api.gemini_base_url, api_key="k", model="fake-model") as provider:
            response = await provider.complete(req())
        assert response.content == "after two retries"
        assert [r.status for r in api.main_requests()] == [429, 500, 200]
        api.script(Reply(error="context"))
        async with GeminiProvider(api.gemini_base_url, api_key="k", model="fake-model") as provider:
            with pytest.raises(ContextLengthExceeded):
                await provider.complete(req())
        assert [r.status for r in api.main_requests()][3:] == [400]
