"""GeminiProvider: request mapping and stream parsing over canned bytes, then against the fake Gemini endpoints."""

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
    PermissionDenied,
    RateLimited,
    UpstreamError,
)
from llm_runners.http.gemini import GeminiProvider
from llm_runners.router import HTTP_TYPES
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


def chunk(parts: list[dict[str, Any]], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    data: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-x"}
    if usage:
        data["usageMetadata"] = usage
    return f"data: {json.dumps(data)}\r\n\r\n".encode()


USAGE = {
    "promptTokenCount": 100,
    "cachedContentTokenCount": 40,
    "candidatesTokenCount": 7,
    "thoughtsTokenCount": 5,
    "totalTokenCount": 112,
}


class Canned(CannedResponse[GeminiProvider]):
    provider_class, api_key, model = GeminiProvider, "g-key", "gemini-x"


async def test_text_thought_and_tool_stream() -> None:
    body = b"".join(
        [
            chunk([{"text": "planning", "thought": True}]),
            chunk([{"text": "Let me "}]),
            chunk([{"text": "look."}]),
            chunk(
                [{"functionCall": {"name": "Read", "args": {"path": "a"}}}, {"functionCall": {"name": "Ls"}}],
                finish="STOP",
                usage=USAGE,
            ),
        ]
    )
    canned = Canned(body=body)
    events = [e async for e in canned.provider().stream(req())]
    assert events == [
        ReasoningDelta("planning"),
        TextDelta("Let me "),
        TextDelta("look."),
        # the API sends calls whole: one fragment with all the arguments, then the call
        ToolCallDelta(0, '{"path": "a"}', id="call_1", name="Read"),
        ToolCallEvent(ToolCall(id="call_1", name="Read", arguments='{"path": "a"}')),
        ToolCallDelta(1, "{}", id="call_2", name="Ls"),
        ToolCallEvent(ToolCall(id="call_2", name="Ls", arguments="{}")),
        UsageEvent(Usage(input_tokens=100, output_tokens=12, cached_tokens=40, reasoning_tokens=5)),
        Done(finish_reason="tool_calls", model="gemini-x"),
    ]
    request = canned.requests[0]
    assert request.url == "http://upstream.test/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
    assert request.headers["x-goog-api-key"] == "g-key" and "authorization" not in request.headers


@pytest.mark.parametrize(
    ("reason", "finish"), [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter")]
)
async def test_finish_reasons(reason: str, finish: str) -> None:
    response = await Canned(body=chunk([{"text": "x"}], finish=reason)).provider().complete(req())
    assert response.finish_reason == finish and response.content == "x"


async def test_blocked_prompt_is_content_filter() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    body = f"data: {json.dumps(blocked)}\n\n"
    response = await Canned(body=body.encode()).provider().complete(req())
    assert response.finish_reason == "content_filter" and response.content == ""
    assert response.usage is not None and response.usage.input_tokens == 3


async def test_stream_cut_before_finish_reason() -> None:
    with pytest.raises(UpstreamError, match="finishReason"):
        await Canned(body=chunk([{"text": "x"}])).provider().complete(req())


async def test_error_chunk_mid_stream() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    body = chunk([{"text": "x"}]) + f"data: {json.dumps(error)}\n\n".encode()
    with pytest.raises(Overloaded, match="overloaded"):
        await Canned(body=body).provider().complete(req())


async def test_json_answers() -> None:
    one = {
        "candidates": [{"content": {"parts": [{"text": "whole"}]}, "finishReason": "MAX_TOKENS", "index": 0}],
        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1},
        "modelVersion": "gemini-x",
    }
    canned = Canned(body=json.dumps(one).encode(), content_type="application/json")
    response = await canned.provider().complete(req())
    assert response.content == "whole" and response.finish_reason == "length"
    assert response.usage == Usage(input_tokens=2, output_tokens=1)
    # streamGenerateContent without alt=sse answers a JSON array of the chunks
    array = [
        {"candidates": [{"content": {"parts": [{"text": "a"}]}}]},
        {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"}]},
    ]
    canned = Canned(body=json.dumps(array).encode(), content_type="application/json")
    assert (await canned.provider().complete(req())).content == "ab"


def error_body(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "status": status, "details": details or []}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            error_body(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
            ),
            AuthenticationError,
        ),
        (
            401,
            error_body(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
            AuthenticationError,
        ),
        (403, error_body(403, "PERMISSION_DENIED", "The caller does not have permission"), PermissionDenied),
        (404, error_body(404, "NOT_FOUND", "models/nope is not found for API version v1beta"), ModelNotFound),
        (
            400,
            error_body(
                400,
                "INVALID_ARGUMENT",
                "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
            ),
            ContextLengthExceeded,
        ),
        (400, error_body(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), InvalidRequest),
        (500, error_body(500, "INTERNAL", "An internal error has occurred."), UpstreamError),
        (503, error_body(503, "UNAVAILABLE", "The model is overloaded."), Overloaded),
        (502, b"<html>Bad Gateway</html>", UpstreamError),
    ],
)
async def test_error_statuses(status: int, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        await Canned(status=status, body=body, content_type="application/json").provider().complete(req())
    assert type(info.value) is error


async def test_rate_limit_retry_delay_from_details_and_header() -> None:
    body = error_body(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota.",
        [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
    )
    with pytest.raises(RateLimited) as info:
        await Canned(status=429, body=body, content_type="application/json").provider().complete(req())
    assert info.value.retry_after == 37.0
    canned = Canned(status=429, body=body, content_type="application/json", **{"retry-after": "3"})
    with pytest.raises(RateLimited) as info:
        await canned.provider().complete(req())
    assert info.value.retry_after == 3.0  # the header wins


async def test_request_mapping() -> None:
    canned = Canned(body=chunk([], finish="STOP"))
    request = ChatRequest(
        model="models/gemini-y",
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content=[TextPart(text="look"), ImagePart(data=b"\x89PNG", media_type="image/png")]),
            Message(role="user", content=[ImagePart(url="https://example.test/a.jpg", media_type="image/jpeg")]),
            Message(
                role="assistant",
                content="calling",
                tool_calls=[ToolCall(id="t1", name="f", arguments='{"a":1}'), ToolCall(id="t2", name="g")],
            ),
            Message(role="tool", tool_call_id="t1", content='{"ok": true}'),
            Message(role="tool", tool_call_id="t2", content="plain"),
            Message(role="system", content="Also this."),
            Message(role="user", content="thanks"),
        ],
        temperature=1.5,
        top_p=0.5,
        max_tokens=99,
        stop=["END"],
        tools=[ToolSpec(name="f", description="does f", parameters={"type": "object", "properties": {"a": {}}})],
        tool_choice=ToolChoice(mode="tool", name="f"),
        response_format=ResponseFormat(type="json_schema", json_schema={"type": "object"}),
    )
    await canned.provider().complete(request)
    assert canned.requests[0].url.path == "/v1beta/models/gemini-y:streamGenerateContent"
    sent = canned.sent()
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nAlso this."}]}
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}}]},
        {"role": "user", "parts": [{"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.test/a.jpg"}}]},
        {
            "role": "model",
            "parts": [
                {"text": "calling"},
                {"functionCall": {"name": "f", "args": {"a": 1}}},
                {"functionCall": {"name": "g", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "f", "response": {"ok": True}}},
                {"functionResponse": {"name": "g", "response": {"result": "plain"}}},
            ],
        },
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]
    assert sent["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.5,
        "maxOutputTokens": 99,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "f",
                    "description": "does f",
                    "parametersJsonSchema": {"type": "object", "properties": {"a": {}}},
                }
            ]
        }
    ]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}


async def test_bad_tool_arguments_in_history() -> None:
    request = ChatRequest(
        messages=[
            Message(role="user", content="x"),
            Message(role="assistant", tool_calls=[ToolCall(id="t1", name="f", arguments="[1]")]),
            Message(role="tool", tool_call_id="t1", content="1"),
        ]
    )
    with pytest.raises(InvalidRequest, match="t1 arguments must be a JSON object"):
        await Canned().provider().complete(request)


async def test_health_says_a_bad_key_though_the_status_is_400() -> None:
    body = error_body(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    )
    canned = Canned(status=400, body=body, content_type="application/json")
    health = await canned.provider().health()
    assert not health.ready and health.authenticated is False and "refused the key" in (health.reason or "")
    assert "GEMINI_API_KEY" in (health.fix or "")
    assert canned.requests[0].url.path == "/v1beta/models"
    # a 400 that is not about the key leaves the provider ready (the API still chats)
    other = Canned(
        status=400, body=error_body(400, "INVALID_ARGUMENT", "bad page token"), content_type="application/json"
    )
    assert (await other.provider().health()).ready


def test_registered_as_http_type() -> None:
    assert HTTP_TYPES["gemini_api"] == "llm_runners.http:GeminiProvider"
    with pytest.raises(ValueError, match="api_version"):
        GeminiProvider(api_version="latest")


# ------------------------------------------------------------------------------------------------ fake model API


async def test_against_fake_api(api: FakeModelAPI) -> None:
    async with GeminiProvider(api.gemini_base_url, api_key="dummy", model="fake-model") as provider:
        request = ChatRequest(
            messages=[Message(role="system", content="Be brief."), Message(role="user", content="hi")]
        )
        response = await provider.complete(request)
        assert response.content == "pong from fake" and response.model == "fake-model"
        recorded = api.last_main_request()
        assert recorded.system_text() == "Be brief." and recorded.last_user_text() == "hi"
        assert recorded.api_key == "dummy" and recorded.query.get("alt") == "sse" and recorded.model == "fake-model"

        api.script(Reply(chunks=["one ", "two"], cached_tokens=2, reasoning_tokens=4, input_tokens=10, output_tokens=3))
        events = [e async for e in provider.stream(req())]
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["one ", "two"]
        usage = next(e.usage for e in events if isinstance(e, UsageEvent))
        assert usage == Usage(input_tokens=10, output_tokens=7, cached_tokens=2, reasoning_tokens=4)

        api.script(Reply("using a tool", tool_calls=[FakeToolCall("Read", {"path": "b"})]))
        response = await provider.complete(req(tools=[ToolSpec(name="Read")]))
        assert response.content == "using a tool" and response.finish_reason == "tool_calls"
        assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [("Read", {"path": "b"})]
        assert api.last_main_request().body["tools"][0]["functionDeclarations"][0]["name"] == "Read"

        assert [m.id for m in await provider.models()] == api.models
        assert (await provider.health()).ready


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("fake-err-401", AuthenticationError),
        ("fake-err-429", RateLimited),
        ("fake-err-500", UpstreamError),
        ("fake-err-context", ContextLengthExceeded),
        ("fake-err-529", Overloaded),
        ("fake-err-404", ModelNotFound),
    ],
)
async def test_fake_api_errors(api: FakeModelAPI, key: str, error: type[Exception]) -> None:
    async with GeminiProvider(api.gemini_base_url, api_key=key, model="fake-model") as provider:
        with pytest.raises(error) as info:
            await provider.complete(req())
    assert type(info.value) is error
    if error is RateLimited:
        assert info.value.retry_after == 1.0  # type: ignore[attr-defined]
