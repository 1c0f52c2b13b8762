"""OpenAICompatProvider: request mapping and stream parsing over canned bytes (httpx2.MockTransport), then against
the fake model API on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from canned_http import CannedResponse, req

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    ProviderTimeout,
    RateLimited,
    UpstreamError,
)
from llm_runners.http.openai_compat import OpenAICompatProvider
from llm_runners.provider import collect
from llm_runners.testing.fake_api import FakeModelAPI, FakeToolCall, Reply
from llm_runners.types import (
    ChatRequest,
    Done,
    ImagePart,
    Message,
    ReasoningDelta,
    ResponseFormat,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    Usage,
    UsageEvent,
)

pytestmark = pytest.mark.anyio


def sse(*objs: Any) -> bytes:
    return b"".join(f"data: {o if isinstance(o, str) else json.dumps(o)}\n\n".encode() for o in objs)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"model": "m1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


class Canned(CannedResponse[OpenAICompatProvider]):
    provider_class, base_url, api_key, model = OpenAICompatProvider, "http://upstream.test/v1", "sk-x", "m0"


async def test_text_stream_with_usage_and_reasoning() -> None:
    canned = Canned(
        body=sse(
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "think"}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            {
                "model": "m1",
                "choices": [],
                "usage": {
                    "prompt_tokens": 7,
                    "completion_tokens": 2,
                    "prompt_tokens_details": {"cached_tokens": 3},
                    "completion_tokens_details": {"reasoning_tokens": 1},
                },
            },
            "[DONE]",
        )
    )
    events = [e async for e in canned.provider().stream(req())]
    assert events == [
        ReasoningDelta("think"),
        TextDelta("Hel"),
        TextDelta("lo"),
        UsageEvent(Usage(input_tokens=7, output_tokens=2, cached_tokens=3, reasoning_tokens=1)),
        Done(finish_reason="stop", model="m1"),
    ]
    request = canned.requests[0]
    assert request.url == "http://upstream.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-x"
    assert canned.sent()["stream"] is True and canned.sent()["stream_options"] == {"include_usage": True}
    assert canned.sent()["model"] == "m0"  # the default model, since the request names none


async def test_tool_call_fragments_are_assembled() -> None:
    canned = Canned(
        body=sse(
            chunk({"role": "assistant", "content": None}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
            chunk({}, "tool_calls"),
            "[DONE]",
        )
    )
    response = await canned.provider().complete(req())
    assert response.tool_calls == [
        ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_b", name="get_time", arguments="{}"),
    ]
    assert response.finish_reason == "tool_calls" and response.content == ""


async def test_tool_call_fragments_are_passed_on_as_deltas_before_the_whole_calls() -> None:
    """Interleaved parallel calls keep their ordinals; arguments sent before the name wait for it; the id the first
    delta announced is the whole call's id even when the server names it late (then it is ``call_<index>``)."""
    canned = Canned(
        body=sse(
            chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "get_weather", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz"'}}]}),  # no name yet
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"name": "get_time", "arguments": ': "CET"}'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "late_id"}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
            chunk({}, "tool_calls"),
            "[DONE]",
        )
    )
    events = [e async for e in canned.provider().stream(req())]
    calls = [e for e in events if isinstance(e, ToolCallDelta | ToolCallEvent)]
    assert calls == [
        ToolCallDelta(0, "", id="call_a", name="get_weather"),
        ToolCallDelta(0, '{"city":'),
        ToolCallDelta(1, '{"tz": "CET"}', id="call_1", name="get_time"),
        ToolCallDelta(0, ' "Paris"}'),
        ToolCallEvent(ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}')),
        ToolCallEvent(ToolCall(id="call_1", name="get_time", arguments='{"tz": "CET"}')),
    ]


async def test_stop_after_tool_calls_becomes_tool_calls_and_missing_done_is_tolerated() -> None:
    canned = Canned(
        body=sse(
            chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": {"a": 1}}}]}),
            chunk({}, "stop"),
        )
    )
    response = await canned.provider().complete(req())
    assert response.tool_calls == [ToolCall(id="c", name="f", arguments='{"a":1}')]
    assert response.finish_reason == "tool_calls"


async def test_stream_cut_short_is_an_upstream_error() -> None:
    canned = Canned(body=sse(chunk({"content": "Hel"})))
    with pytest.raises(UpstreamError, match="ended before"):
        await canned.provider().complete(req())


async def test_error_chunk_mid_stream() -> None:
    canned = Canned(
        body=sse(
            chunk({"content": "a"}),
            {"error": {"message": "overloaded now", "type": "server_error", "code": "rate_limit_exceeded"}},
        )
    )
    with pytest.raises(RateLimited, match="overloaded now"):
        await canned.provider().complete(req())


async def test_garbage_event_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="not JSON"):
        await Canned(body=b"data: {nope\n\n").provider().complete(req())


async def test_json_answer_to_a_stream_request() -> None:
    body = {
        "model": "m1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {
                    "role": "assistant",
                    "content": "cut",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}],
                },
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1},
    }
    canned = Canned(body=json.dumps(body).encode(), content_type="application/json")
    response = await canned.provider().complete(req())
    assert response.content == "cut" and response.finish_reason == "length"
    assert response.tool_calls == [ToolCall(id="c1", name="f", arguments='{"x":1}')]
    assert response.usage == Usage(input_tokens=4, output_tokens=1)


async def test_unexpected_content_type() -> None:
    with pytest.raises(UpstreamError, match="text/html"):
        await Canned(body=b"<html>", content_type="text/html").provider().complete(req())


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "check"),
    [
        (401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}, {}, AuthenticationError, None),
        (404, {"error": {"message": "no such model"}}, {}, ModelNotFound, None),
        (429, {"error": {"message": "slow down"}}, {"retry-after": "7"}, RateLimited, lambda e: e.retry_after == 7.0),
        (400, {"error": {"message": "too big", "code": "context_length_exceeded"}}, {}, ContextLengthExceeded, None),
        (
            400,
            {"error": {"message": "This model's maximum context length is 8192 tokens"}},
            {},
            ContextLengthExceeded,
            None,
        ),
        (400, {"error": {"message": "bad temperature"}}, {}, InvalidRequest, None),
        (503, {"error": {"message": "busy"}}, {}, Overloaded, None),
        (500, "<html>oops</html>", {}, UpstreamError, lambda e: "HTTP 500" in e.message and "oops" in e.detail),
    ],
)
async def test_error_statuses(
    status: int, body: Any, headers: dict[str, str], error: type[Exception], check: Callable[[Any], bool] | None
) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    canned = Canned(status=status, body=raw, content_type="application/json", **headers)
    with pytest.raises(error) as info:
        await canned.provider().complete(req())
    assert getattr(info.value, "provider", None) == "openai_compat"
    if check is not None:
        assert check(info.value)


async def test_transport_failures() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out")

    with pytest.raises(UpstreamError, match="cannot connect"):
        await OpenAICompatProvider("http://x.test/v1", model="m", transport=httpx2.MockTransport(refuse)).complete(
            req()
        )
    with pytest.raises(ProviderTimeout):
        await OpenAICompatProvider("http://x.test/v1", model="m", transport=httpx2.MockTransport(slow)).complete(req())


async def test_request_mapping() -> None:
    canned = Canned(body=sse(chunk({}, "stop"), "[DONE]"))
    request = ChatRequest(
        model="gpt-x",
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content=[TextPart(text="look"), ImagePart(data=b"\x89PNG", media_type="image/png")]),
            Message(role="assistant", content="", tool_calls=[ToolCall(id="c1", name="f", arguments='{"a":1}')]),
            Message(role="tool", tool_call_id="c1", content="42"),
        ],
        temperature=0.5,
        top_p=0.9,
        max_tokens=100,
        stop=["END"],
        tools=[ToolSpec(name="f", description="does f", parameters={"type": "object", "properties": {}})],
        tool_choice=ToolChoice(mode="tool", name="f"),
        response_format=ResponseFormat(type="json_schema", name="out", json_schema={"type": "object"}, strict=True),
    )
    await canned.provider().complete(request)
    sent = canned.sent()
    assert sent["model"] == "gpt-x"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["stop"]) == (0.5, 0.9, 100, ["END"])
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "does f", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }


async def test_no_model_anywhere_is_invalid() -> None:
    provider = OpenAICompatProvider("http://x.test/v1", transport=httpx2.MockTransport(Canned()))
    with pytest.raises(InvalidRequest, match="no model"):
        await provider.complete(req())


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="base_url"):
        OpenAICompatProvider("ftp://x")
    with pytest.raises(ValueError, match="timeout"):
        OpenAICompatProvider("http://x", timeout=0)


def test_capabilities() -> None:
    caps = OpenAICompatProvider.capabilities
    assert caps.native_tools and caps.temperature and caps.top_p and caps.max_tokens and caps.stop
    assert caps.token_streaming and caps.images and caps.json_mode


# ------------------------------------------------------------------------------------------------ fake model API


async def test_against_fake_api(api: FakeModelAPI) -> None:
    async with OpenAICompatProvider(api.openai_base_url, api_key="dummy", model="fake-model") as provider:
        events = [e async for e in provider.stream(req())]
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong", " from", " fake"]
        assert isinstance(events[-1], Done) and events[-1].model == "fake-model"
        assert any(isinstance(e, UsageEvent) and e.usage.output_tokens == 3 for e in events)

        api.script(Reply(tool_calls=[FakeToolCall("Read", {"path": "a.txt"}), FakeToolCall("Ls", {})]))
        response = await provider.complete(req(tools=[ToolSpec(name="Read"), ToolSpec(name="Ls")]))
        assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
            ("Read", {"path": "a.txt"}),
            ("Ls", {}),
        ]
        assert response.finish_reason == "tool_calls"
        recorded = api.last_main_request()
        assert recorded.tool_names() == ["Read", "Ls"] and recorded.stream

        assert [m.id for m in await provider.models()] == ["fake-model", "fake-model-2"]
        assert (await provider.health()).ready


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("fake-err-401", AuthenticationError),
        ("fake-err-429", RateLimited),
        ("fake-err-context", ContextLengthExceeded),
        ("fake-err-529", Overloaded),
        ("fake-err-500", UpstreamError),
    ],
)
async def test_fake_api_errors(api: FakeModelAPI, key: str, error: type[Exception]) -> None:
    async with OpenAICompatProvider(api.openai_base_url, api_key=key, model="fake-model") as provider:
        with pytest.raises(error):
            await collect(provider.stream(req()))


async def test_health_and_models_with_a_refused_key() -> None:
    canned = Canned(status=401, body=b'{"error": {"message": "bad key"}}', content_type="application/json")
    async with canned.provider() as provider:
        health = await provider.health()
        assert not health.ready and health.authenticated is False
        assert health.fix is not None and "OPENAI_API_KEY" in health.fix
        assert [m.id for m in await provider.models()] == ["m0"]  # falls back to the configured model
    assert canned.requests[0].url == "http://upstream.test/v1/models"


async def test_timeout_against_hanging_api(api: FakeModelAPI) -> None:
    async with OpenAICompatProvider(api.openai_base_url, api_key="fake-err-hang", model="m", timeout=0.3) as provider:
        with pytest.raises(ProviderTimeout, match=r"0\.3 s"):
            await provider.complete(req())


async def test_health_when_api_is_down() -> None:
    with FakeModelAPI() as fake:
        base = fake.openai_base_url
    async with OpenAICompatProvider(base, api_key="k") as provider:
        health = await provider.health()
        assert not health.ready and "cannot reach" in (health.reason or "")
        with pytest.raises(UpstreamError, match="cannot connect"):
            await provider.complete(req(model="m"))
