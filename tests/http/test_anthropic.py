"""AnthropicProvider: request mapping and stream parsing over canned bytes, then against the fake model API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from canned_http import CannedResponse, req

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    RateLimited,
    UpstreamError,
)
from llm_runners.http.anthropic import AnthropicProvider
from llm_runners.testing.fake_api import FakeModelAPI, FakeToolCall, Reply
from llm_runners.types import (
    ChatRequest,
    Done,
    ImagePart,
    Message,
    ReasoningDelta,
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


def ev(name: str, **fields: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **fields})}\n\n".encode()


START = ev(
    "message_start",
    message={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 2,
            "output_tokens": 1,
        },
    },
)


class Canned(CannedResponse[AnthropicProvider]):
    provider_class, api_key, model = AnthropicProvider, "sk-ant", "claude-x"


async def test_text_thinking_and_tool_stream() -> None:
    body = b"".join(
        [
            START,
            ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
            ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hmm"}),
            ev("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "sig"}),
            ev("content_block_stop", index=0),
            ev("content_block_start", index=1, content_block={"type": "text", "text": ""}),
            b'event: ping\ndata: {"type": "ping"}\n\n',
            ev("content_block_delta", index=1, delta={"type": "text_delta", "text": "Let me "}),
            ev("content_block_delta", index=1, delta={"type": "text_delta", "text": "look."}),
            ev("content_block_stop", index=1),
            ev(
                "content_block_start",
                index=2,
                content_block={"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}},
            ),
            ev("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '{"path"'}),
            ev("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": ': "a"}'}),
            ev("content_block_stop", index=2),
            ev(
                "content_block_start",
                index=3,
                content_block={"type": "tool_use", "id": "toolu_2", "name": "Ls", "input": {}},
            ),
            ev("content_block_stop", index=3),
            ev("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 30}),
            ev("message_stop"),
        ]
    )
    canned = Canned(body=body)
    events = [e async for e in canned.provider().stream(req())]
    assert events == [
        ReasoningDelta("hmm"),
        TextDelta("Let me "),
        TextDelta("look."),
        # each call's fragments as they come (the start names it), then the whole call at its block's end
        ToolCallDelta(0, id="toolu_1", name="Read"),
        ToolCallDelta(0, '{"path"'),
        ToolCallDelta(0, ': "a"}'),
        ToolCallEvent(ToolCall(id="toolu_1", name="Read", arguments='{"path": "a"}')),
        ToolCallDelta(1, id="toolu_2", name="Ls"),
        ToolCallEvent(ToolCall(id="toolu_2", name="Ls", arguments="{}")),
        UsageEvent(Usage(input_tokens=17, output_tokens=30, cached_tokens=5, cache_write_tokens=2)),
        Done(finish_reason="tool_calls", model="claude-x"),
    ]
    request = canned.requests[0]
    assert request.url == "http://upstream.test/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant" and request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers


@pytest.mark.parametrize(
    ("etype", "error"),
    [
        ("overloaded_error", Overloaded),
        ("rate_limit_error", RateLimited),
        ("api_error", UpstreamError),
        ("authentication_error", AuthenticationError),
    ],
)
async def test_error_event_mid_stream(etype: str, error: type[Exception]) -> None:
    body = START + ev("error", error={"type": etype, "message": "went wrong"})
    with pytest.raises(error, match="went wrong"):
        await Canned(body=body).provider().complete(req())


async def test_stream_without_message_stop() -> None:
    body = START + ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "x"})
    with pytest.raises(UpstreamError, match="message_stop"):
        await Canned(body=body).provider().complete(req())


async def test_json_answer() -> None:
    message = {
        "type": "message",
        "model": "claude-x",
        "stop_reason": "max_tokens",
        "content": [
            {"type": "text", "text": "partial"},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 9},
    }
    response = (
        await Canned(body=json.dumps(message).encode(), content_type="application/json").provider().complete(req())
    )
    assert response.content == "partial" and response.finish_reason == "length"
    assert response.tool_calls == [ToolCall(id="t1", name="f", arguments='{"a": 1}')]
    assert response.usage == Usage(input_tokens=3, output_tokens=9)


async def test_native_stop_sequence_is_reported_streamed() -> None:
    body = b"".join(
        [
            START,
            ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "one two"}),
            ev("content_block_stop", index=0),
            ev(
                "message_delta",
                delta={"stop_reason": "stop_sequence", "stop_sequence": "THREE"},
                usage={"output_tokens": 3},
            ),
            ev("message_stop"),
        ]
    )
    canned = Canned(body=body)
    events = [e async for e in canned.provider().stream(req(stop=["THREE", "FOUR"]))]
    assert events[-1] == Done(finish_reason="stop", model="claude-x", stop_sequence="THREE")
    assert canned.sent()["stop_sequences"] == ["THREE", "FOUR"]
    response = await Canned(body=body).provider().complete(req(stop=["THREE"]))
    assert response.finish_reason == "stop" and response.stop_sequence == "THREE"
    assert response.content == "one two"


@pytest.mark.parametrize(
    ("reason", "sequence", "finish", "expected"),
    [
        ("stop_sequence", "END", "stop", "END"),
        ("end_turn", None, "stop", None),
        ("max_tokens", None, "length", None),
        ("end_turn", "END", "stop", None),  # a sequence beside another reason is not what stopped the answer
    ],
)
async def test_native_stop_sequence_is_reported_in_json(
    reason: str, sequence: str | None, finish: str, expected: str | None
) -> None:
    message = {
        "type": "message",
        "model": "claude-x",
        "stop_reason": reason,
        "stop_sequence": sequence,
        "content": [{"type": "text", "text": "before"}],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    canned = Canned(body=json.dumps(message).encode(), content_type="application/json")
    response = await canned.provider().complete(req(stop=["END"]))
    assert response.finish_reason == finish and response.stop_sequence == expected


@pytest.mark.parametrize(
    ("status", "etype", "message", "error"),
    [
        (401, "authentication_error", "invalid x-api-key", AuthenticationError),
        (404, "not_found_error", "model: nope", ModelNotFound),
        (429, "rate_limit_error", "slow", RateLimited),
        (529, "overloaded_error", "Overloaded", Overloaded),
        (400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum", ContextLengthExceeded),
        (400, "invalid_request_error", "max_tokens: Field required", InvalidRequest),
    ],
)
async def test_error_statuses(status: int, etype: str, message: str, error: type[Exception]) -> None:
    body = json.dumps({"type": "error", "error": {"type": etype, "message": message}}).encode()
    with pytest.raises(error, match=message.split(":")[0]):
        await Canned(status=status, body=body, content_type="application/json").provider().complete(req())


async def test_request_mapping() -> None:
    canned = Canned(body=START + ev("message_stop"))
    request = ChatRequest(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content=[TextPart(text="look"), ImagePart(data=b"\x89PNG", media_type="image/png")]),
            Message(
                role="assistant",
                content="calling",
                tool_calls=[ToolCall(id="t1", name="f", arguments='{"a":1}'), ToolCall(id="t2", name="g")],
            ),
            Message(role="tool", tool_call_id="t1", content="1"),
            Message(role="tool", tool_call_id="t2", content="2"),
            Message(role="system", content="Also this."),
            Message(role="user", content="thanks"),
        ],
        temperature=1.5,
        top_p=0.5,
        stop=["END"],
        tools=[ToolSpec(name="f", description="does f")],
        tool_choice=ToolChoice(mode="required"),
    )
    await canned.provider(default_max_tokens=123).complete(request)
    sent = canned.sent()
    assert sent["model"] == "claude-x" and sent["max_tokens"] == 123 and sent["stream"] is True
    assert sent["system"] == "Be brief.\n\nAlso this."
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "t2", "name": "g", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "1"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "2"},
            ],
        },
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
    ]
    assert sent["temperature"] == 1.0  # clamped to this API's range
    assert sent["top_p"] == 0.5 and sent["stop_sequences"] == ["END"]
    assert sent["tools"] == [
        {"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert sent["tool_choice"] == {"type": "any"}


async def test_bad_tool_arguments_in_history() -> None:
    request = ChatRequest(
        messages=[
            Message(role="user", content="x"),
            Message(role="assistant", tool_calls=[ToolCall(id="t1", name="f", arguments="{oops")]),
            Message(role="tool", tool_call_id="t1", content="1"),
        ]
    )
    with pytest.raises(InvalidRequest, match="t1 has arguments that are not JSON"):
        await Canned().provider().complete(request)


def test_capabilities() -> None:
    caps = AnthropicProvider.capabilities
    assert caps.native_tools and caps.temperature and caps.top_p and caps.max_tokens and caps.stop
    assert not caps.json_mode


# ------------------------------------------------------------------------------------------------ fake model API


async def test_against_fake_api(api: FakeModelAPI) -> None:
    async with AnthropicProvider(api.anthropic_base_url, api_key="dummy", model="fake-model") as provider:
        request = ChatRequest(
            messages=[Message(role="system", content="Be brief."), Message(role="user", content="hi")]
        )
        response = await provider.complete(request)
        assert response.content == "pong from fake" and response.model == "fake-model"
        assert response.usage is not None and response.usage.output_tokens == 3
        recorded = api.last_main_request()
        assert recorded.system_text() == "Be brief." and recorded.last_user_text() == "hi"
        assert recorded.headers["x-api-key"] == "dummy"

        api.script(Reply("using a tool", tool_calls=[FakeToolCall("Read", {"path": "b"})]))
        response = await provider.complete(req(tools=[ToolSpec(name="Read")]))
        assert response.content == "using a tool" and response.finish_reason == "tool_calls"
        assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [("Read", {"path": "b"})]


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("fake-err-401", AuthenticationError),
        ("fake-err-429", RateLimited),
        ("fake-err-context", ContextLengthExceeded),
        ("fake-err-529", Overloaded),
        ("fake-err-404", ModelNotFound),
    ],
)
async def test_fake_api_errors(api: FakeModelAPI, key: str, error: type[Exception]) -> None:
    async with AnthropicProvider(api.anthropic_base_url, api_key=key, model="fake-model") as provider:
        with pytest.raises(error) as info:
            await provider.complete(req())
    if error is RateLimited:
        assert info.value.retry_after == 1.0  # type: ignore[attr-defined]
