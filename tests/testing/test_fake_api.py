"""The fake model API, driven by the official ``openai`` / ``anthropic`` SDKs and raw httpx2 (Gemini, HEAD, SSE
framing). Real CLIs against it are the e2e suite's business; here every wire shape, error, delay and hang."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_runners.testing import FakeModelAPI, FakeToolCall, Reply
from llm_runners.testing.fake_api import ERROR_KINDS, split_chunks

ANTHROPIC_BODY = {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
CHAT_BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY = {"model": "gpt-x", "input": "hi"}
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}

# (path, body) of a non-streaming request per API
ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "anthropic": ("/v1/messages", ANTHROPIC_BODY),
    "openai_chat": ("/v1/chat/completions", CHAT_BODY),
    "openai_responses": ("/v1/responses", RESPONSES_BODY),
    "gemini": ("/v1beta/models/gemini-x:generateContent", GEMINI_BODY),
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelAPI]:
    with FakeModelAPI() as api:
        yield api


@pytest.fixture
def api(server: FakeModelAPI) -> FakeModelAPI:
    server.reset()
    server.default_reply = "pong from fake"
    server.router_score = 10
    return server


@pytest.fixture
def http(api: FakeModelAPI) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=api.url, timeout=5) as client:
        yield client


@pytest.fixture
def oai(api: FakeModelAPI) -> openai.OpenAI:
    return openai.OpenAI(base_url=api.openai_base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def claude(api: FakeModelAPI) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=api.anthropic_base_url, api_key="sk-ant-test", max_retries=0)


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events


# -- Anthropic Messages ---------------------------------------------------------------------------------------
def test_anthropic_json_reply_and_usage(api: FakeModelAPI, claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(**ANTHROPIC_BODY)  # type: ignore[call-overload]
    assert message.content[0].type == "text" and message.content[0].text == "pong from fake"
    assert message.id.startswith("msg_") and message.model == "claude-x"
    assert message.stop_reason == "end_turn"
    recorded = api.last_main_request()
    assert message.usage.input_tokens == len(recorded.raw_body) // 4
    assert message.usage.output_tokens == 3


def test_anthropic_sse_event_sequence(api: FakeModelAPI, http: httpx2.Client) -> None:
    response = http.post("/v1/messages?beta=true", json={**ANTHROPIC_BODY, "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
    assert payloads[0]["message"]["usage"]["input_tokens"] == len(api.last_main_request().raw_body) // 4
    assert "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta") == "pong from fake"
    assert payloads[-2]["delta"]["stop_reason"] == "end_turn" and payloads[-2]["usage"]["output_tokens"] == 3


def test_anthropic_sdk_stream_with_tool_call(api: FakeModelAPI, claude: anthropic.Anthropic) -> None:
    api.script(Reply("Let me look.", tool_calls=[FakeToolCall("Read", {"path": "a.txt", "lines": [1, 2]})]))
    with claude.messages.stream(**ANTHROPIC_BODY) as stream:  # type: ignore[arg-type]
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Let me look." and len(texts) == 3
    assert final.stop_reason == "tool_use"
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.name == "Read" and tool.input == {"path": "a.txt", "lines": [1, 2]}
    assert tool.id.startswith("toolu_")


def test_anthropic_accepts_claude_code_body(api: FakeModelAPI, http: httpx2.Client) -> None:
    body = {
        "model": "claude-opus-4-8",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>date</system-reminder>"},
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {"role": "system", "content": "Available agent types for the Agent tool"},
        ],
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}, {"name": "Read", "input_schema": {}}],
        "metadata": {"user_id": json.dumps({"device_id": "d", "session_id": "s"})},
        "max_tokens": 64000,
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "stream": True,
    }
    headers = {"x-api-key": "dummy", "anthropic-version": "2023-06-01", "User-Agent": "claude-cli/2.1.197"}
    response = http.post("/v1/messages?beta=true", json=body, headers=headers)
    assert response.status_code == 200 and "pong" in response.text
    recorded = api.last_main_request()
    assert recorded.api == "anthropic" and recorded.stream and recorded.model == "claude-opus-4-8"
    assert recorded.query == {"beta": "true"} and recorded.path == "/v1/messages"
    assert recorded.headers["user-agent"] == "claude-cli/2.1.197" and recorded.api_key == "dummy"
    assert recorded.system_text() == "x-anthropic-billing-header: cc_version=2.1.197\nBe brief."
    assert recorded.messages() == [
        ("user", "<system-reminder>date</system-reminder>\nhi"),
        ("system", "Available agent types for the Agent tool"),
    ]
    assert recorded.last_user_text().endswith("hi")
    assert recorded.tool_names() == ["Bash", "Read"]


def test_anthropic_tool_result_history_reads_as_tool_role(api: FakeModelAPI, claude: anthropic.Anthropic) -> None:
    claude.messages.create(
        model="m",
        max_tokens=10,
        messages=[
            {"role": "user", "content": "read it"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "FILE BODY"}]},
            {"role": "assistant", "content": "again"},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "MORE"}]},
                    {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                ],
            },
        ],
    )
    assert api.last_main_request().messages() == [
        ("user", "read it"),
        ("assistant", ""),
        ("tool", "FILE BODY"),
        ("assistant", "again"),
        ("user", "MORE\n<system-reminder>x</system-reminder>"),
    ]


def test_anthropic_count_tokens(api: FakeModelAPI, claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hi"}])
    recorded = api.requests[-1]
    assert recorded.kind == "count_tokens" and counted.input_tokens == len(recorded.raw_body) // 4
    assert api.main_requests() == []


def test_head_and_get_root_probe(api: FakeModelAPI, http: httpx2.Client) -> None:
    head = http.head("/")
    get = http.get("/")
    assert (head.status_code, head.content, get.status_code, get.content) == (200, b"", 200, b"")
    assert [r.kind for r in api.requests] == ["probe", "probe"] and api.main_requests() == []


# -- OpenAI Chat Completions ----------------------------------------------------------------------------------
def test_chat_json(api: FakeModelAPI, oai: openai.OpenAI) -> None:
    api.script(Reply("scripted", input_tokens=100, output_tokens=7, cached_tokens=40, reasoning_tokens=2))
    completion = oai.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "scripted" and completion.choices[0].finish_reason == "stop"
    assert completion.id.startswith("chatcmpl-") and completion.model == "gpt-x"
    usage = completion.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 7, 107)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 40
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 2


def test_chat_stream_with_usage_chunk(api: FakeModelAPI, http: httpx2.Client) -> None:
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(http.post("/v1/chat/completions", json=body).text)
    assert all(name is None for name, _ in events) and events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert contents == ["pong", " from", " fake"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_chat_stream_without_include_usage_has_no_usage_chunk(api: FakeModelAPI, oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "pong from fake"


def test_chat_tool_calls_json_and_stream(api: FakeModelAPI, oai: openai.OpenAI) -> None:
    calls = [FakeToolCall("bash", {"cmd": "ls"}, id="call_fixed"), FakeToolCall("read", {"path": "x"})]
    api.script(Reply(tool_calls=calls), Reply(tool_calls=calls))
    message = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices[0]
    assert message.finish_reason == "tool_calls" and message.message.content is None
    got = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.message.tool_calls or []]  # type: ignore[union-attr]
    assert got[0] == ("call_fixed", "bash", {"cmd": "ls"}) and got[1][1:] == ("read", {"path": "x"})

    stream = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    pieces: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            slot = pieces.setdefault(delta.index, {"id": "", "name": "", "args": ""})
            slot["id"] += delta.id or ""
            slot["name"] += (delta.function and delta.function.name) or ""
            slot["args"] += (delta.function and delta.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(p["name"], json.loads(p["args"])) for p in pieces.values()] == [
        ("bash", {"cmd": "ls"}),
        ("read", {"path": "x"}),
    ]
    assert pieces[0]["id"] == "call_fixed" and pieces[1]["id"].startswith("call_")


def test_chat_recording_helpers(api: FakeModelAPI, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(
        model="fake-model",
        messages=[
            {"role": "system", "content": "SYSTEM-PROMPT-MARKER"},
            {"role": "user", "content": [{"type": "text", "text": "This is the context"}]},
            {"role": "assistant", "content": "Got it."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "tool output"},
        ],
        tools=[{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}],
    )
    recorded = api.last_main_request()
    assert recorded.api == "openai_chat" and recorded.model == "fake-model" and not recorded.stream
    assert recorded.system_text() == "SYSTEM-PROMPT-MARKER"
    assert recorded.messages() == [
        ("user", "This is the context"),
        ("assistant", "Got it."),
        ("user", "hi"),
        ("tool", "tool output"),
    ]
    assert recorded.tool_names() == ["bash"] and recorded.api_key == "sk-test"
    assert recorded.headers["authorization"] == "Bearer sk-test"


def test_title_generator_call_does_not_consume_script(api: FakeModelAPI, oai: openai.OpenAI) -> None:
    api.script("the scripted answer")
    title = oai.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "You are a title generator. You output ONLY a thread title."},
            {"role": "user", "content": "hi"},
        ],
    )
    main = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert title.choices[0].message.content == "Fake title"
    assert main.choices[0].message.content == "the scripted answer"
    assert [r.kind for r in api.requests] == ["title", "main"] and len(api.main_requests()) == 1


# -- OpenAI Responses -----------------------------------------------------------------------------------------
RESPONSES_TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_responses_stream_event_sequence(api: FakeModelAPI, http: httpx2.Client) -> None:
    events = sse_events(http.post("/v1/responses", json={**RESPONSES_BODY, "stream": True}).text)
    payloads = [json.loads(data) for _, data in events]
    assert [name for name, _ in events] == RESPONSES_TEXT_EVENTS
    assert [p["type"] for p in payloads] == RESPONSES_TEXT_EVENTS
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    created, completed = payloads[0]["response"], payloads[-1]["response"]
    assert created["id"] == completed["id"] and created["id"].startswith("resp_")
    assert created["status"] == "in_progress" and completed["status"] == "completed"
    item = payloads[-2]["item"]
    assert item["id"].startswith("msg_") and item["content"][0]["text"] == "pong from fake"
    assert all(p["item_id"] == item["id"] for p in payloads[3:9])
    usage = completed["usage"]
    assert usage == {
        "input_tokens": len(api.last_main_request().raw_body) // 4,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["input_tokens"] + 3,
    }


def test_responses_sdk_json_stream_and_function_call(api: FakeModelAPI, oai: openai.OpenAI) -> None:
    api.script("plain json", Reply("calling", tool_calls=[FakeToolCall("exec_command", {"cmd": "ls"})]))
    assert oai.responses.create(model="m", input="hi").output_text == "plain json"
    with oai.responses.stream(model="m", input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "calling"
    call = final.output[1]
    assert call.type == "function_call" and call.name == "exec_command" and json.loads(call.arguments) == {"cmd": "ls"}
    assert call.call_id.startswith("call_") and (call.id or "").startswith("fc_")
    assert kinds.count("response.function_call_arguments.delta") == 2 and kinds[-1] == "response.completed"


def test_responses_recording_helpers_codex_shape(api: FakeModelAPI, http: httpx2.Client) -> None:
    def message(role: str, kind: str, text: str) -> dict[str, Any]:
        return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}

    body = {
        "model": "fake-model",
        "stream": True,
        "input": [
            message("developer", "input_text", "You are a coding agent running in the Codex CLI"),
            message("user", "input_text", "hi"),
            message("assistant", "output_text", "pong from fake"),
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
            message("user", "input_text", "what word?"),
        ],
        "tools": [{"type": "function", "name": "exec_command", "parameters": {}}, {"type": "web_search"}],
    }
    http.post("/v1/responses", json=body, headers={"authorization": "Bearer dummy"})
    recorded = api.last_main_request()
    assert recorded.system_text() == "You are a coding agent running in the Codex CLI"
    assert recorded.messages() == [
        ("user", "hi"),
        ("assistant", "pong from fake"),
        ("tool", "done"),
        ("user", "what word?"),
    ]
    assert recorded.tool_names() == ["exec_command", "web_search"]
    assert recorded.api == "openai_responses" and recorded.api_key == "dummy"


# -- Gemini ---------------------------------------------------------------------------------------------------
def test_gemini_generate_content_json(api: FakeModelAPI, http: httpx2.Client) -> None:
    body = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=GEMINI_BODY).json()
    candidate = body["candidates"][0]
    assert candidate["content"] == {"role": "model", "parts": [{"text": "pong from fake"}]}
    assert candidate["finishReason"] == "STOP" and body["modelVersion"] == "gemini-2.5-flash"
    usage = body["usageMetadata"]
    assert usage["candidatesTokenCount"] == 3 and usage["totalTokenCount"] == usage["promptTokenCount"] + 3


def test_gemini_stream_sse(api: FakeModelAPI, http: httpx2.Client) -> None:
    text = http.post(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        json=GEMINI_BODY,
        headers={"x-goog-api-key": "dummy"},
    ).text
    events = sse_events(text)
    assert len(events) == 3 and all(name is None for name, _ in events)
    chunks = [json.loads(data) for _, data in events]
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["pong", " from", " fake"]
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP" and last["modelVersion"] == "gemini-2.5-flash"
    assert set(last["usageMetadata"]) >= {"promptTokenCount", "candidatesTokenCount", "totalTokenCount"}
    recorded = api.last_main_request()
    assert recorded.stream and recorded.model == "gemini-2.5-flash" and recorded.api_key == "dummy"


def test_gemini_stream_without_alt_is_a_json_array(api: FakeModelAPI, http: httpx2.Client) -> None:
    chunks = http.post("/v1beta/models/g:streamGenerateContent", json=GEMINI_BODY).json()
    assert isinstance(chunks, list) and len(chunks) == 3 and chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_function_call_and_count_tokens(api: FakeModelAPI, http: httpx2.Client) -> None:
    api.script(Reply(tool_calls=[FakeToolCall("read_file", {"path": "a"})]))
    chunks = sse_events(http.post("/v1beta/models/g:streamGenerateContent?alt=sse", json=GEMINI_BODY).text)
    part = json.loads(chunks[-1][1])["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "read_file", "args": {"path": "a"}}}
    counted = http.post("/v1beta/models/g:countTokens", json=GEMINI_BODY)
    assert counted.json() == {"totalTokens": len(api.requests[-1].raw_body) // 4}


def _router_body(schema_key: str = "responseJsonSchema") -> dict[str, Any]:
    schema = {
        "type": "OBJECT",
        "properties": {"complexity_reasoning": {"type": "STRING"}, "complexity_score": {"type": "INTEGER"}},
        "required": ["complexity_reasoning", "complexity_score"],
    }
    return {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "systemInstruction": {"role": "user", "parts": [{"text": "You are a specialized Task Routing AI."}]},
        "generationConfig": {"responseMimeType": "application/json", schema_key: schema},
    }


@pytest.mark.parametrize("schema_key", ["responseJsonSchema", "responseSchema"])
def test_gemini_router_gets_json_and_leaves_script(api: FakeModelAPI, http: httpx2.Client, schema_key: str) -> None:
    api.script(Reply(error="500"))
    routed = http.post("/v1beta/models/gemini-3.5-flash-lite:generateContent", json=_router_body(schema_key))
    verdict = json.loads(routed.json()["candidates"][0]["content"]["parts"][0]["text"])
    assert verdict["complexity_score"] >= 1 and isinstance(verdict["complexity_reasoning"], str)
    assert api.pending() == 1 and api.requests[-1].kind == "router" and api.main_requests() == []
    api.router_score = 77
    again = http.post("/v1beta/models/gemini-3.5-flash-lite:generateContent", json=_router_body(schema_key))
    assert json.loads(again.json()["candidates"][0]["content"]["parts"][0]["text"])["complexity_score"] == 77


def test_gemini_recording_helpers(api: FakeModelAPI, http: httpx2.Client) -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "<session_context>"}, {"text": "remember BANANA"}]},
            {"role": "model", "parts": [{"text": "ok", "thought": False}, {"thought": True, "text": "hmm"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {"output": "x"}}}]},
        ],
        "systemInstruction": {"parts": [{"text": "You are Gemini CLI"}]},
        "tools": [{"functionDeclarations": [{"name": "read_file"}, {"name": "glob"}]}, {"googleSearch": {}}],
    }
    http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", json=body)
    recorded = api.last_main_request()
    assert recorded.system_text() == "You are Gemini CLI"
    assert recorded.messages() == [
        ("user", "<session_context>\nremember BANANA"),
        ("assistant", "ok"),
        ("tool", '{"output": "x"}'),
    ]
    assert recorded.tool_names() == ["read_file", "glob", "googleSearch"]


# -- model lists ----------------------------------------------------------------------------------------------
def test_model_lists(api: FakeModelAPI, oai: openai.OpenAI, claude: anthropic.Anthropic, http: httpx2.Client) -> None:
    assert [m.id for m in oai.models.list()] == ["fake-model", "fake-model-2"]
    assert [m.id for m in claude.models.list()] == ["fake-model", "fake-model-2"]
    gemini = http.get("/v1beta/models").json()["models"]
    assert [m["name"] for m in gemini] == ["models/fake-model", "models/fake-model-2"]
    assert {r.kind for r in api.requests} == {"models"}


# -- errors ---------------------------------------------------------------------------------------------------
# kind -> status per API (anthropic, openai, gemini)
STATUS = {
    "401": (401, 401, 401),
    "403": (403, 403, 403),
    "404": (404, 404, 404),
    "429": (429, 429, 429),
    "500": (500, 500, 500),
    "529": (529, 503, 503),
    "context": (400, 400, 400),
}
OPENAI_CODES = {
    "401": "invalid_api_key",
    "404": "model_not_found",
    "429": "rate_limit_exceeded",
    "context": "context_length_exceeded",
}
GEMINI_STATUS = {
    "401": "UNAUTHENTICATED",
    "403": "PERMISSION_DENIED",
    "404": "NOT_FOUND",
    "429": "RESOURCE_EXHAUSTED",
    "500": "INTERNAL",
    "529": "UNAVAILABLE",
    "context": "INVALID_ARGUMENT",
}
ANTHROPIC_TYPES = {
    "401": "authentication_error",
    "403": "permission_error",
    "404": "not_found_error",
    "429": "rate_limit_error",
    "500": "api_error",
    "529": "overloaded_error",
    "context": "invalid_request_error",
}


def assert_error_shape(api_name: str, kind: str, response: httpx2.Response) -> None:
    column = {"anthropic": 0, "openai_chat": 1, "openai_responses": 1, "gemini": 2}[api_name]
    assert response.status_code == STATUS[kind][column]
    body = response.json()
    if api_name == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == ANTHROPIC_TYPES[kind]
        assert set(body["error"]) == {"type", "message"}
    elif api_name == "gemini":
        assert body["error"]["code"] == response.status_code and body["error"]["status"] == GEMINI_STATUS[kind]
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == OPENAI_CODES.get(kind)
    assert body["error"]["message"]
    if kind == "429":
        assert response.headers["retry-after"] == "1"
    if kind == "context":
        assert any(word in body["error"]["message"] for word in ("context", "too long", "token count"))


@pytest.mark.parametrize("kind", ERROR_KINDS)
@pytest.mark.parametrize("api_name", list(ENDPOINTS))
def test_scripted_errors_in_each_api_shape(api: FakeModelAPI, http: httpx2.Client, api_name: str, kind: str) -> None:
    path, body = ENDPOINTS[api_name]
    api.script(Reply(error=kind))  # type: ignore[arg-type]
    assert_error_shape(api_name, kind, http.post(path, json=body))
    assert api.pending() == 0
    assert http.post(path, json=body).status_code == 200  # consumed: the next request is fine


@pytest.mark.parametrize("kind", ERROR_KINDS)
@pytest.mark.parametrize("api_name", list(ENDPOINTS))
def test_key_selected_errors(api: FakeModelAPI, http: httpx2.Client, api_name: str, kind: str) -> None:
    path, body = ENDPOINTS[api_name]
    header = {"anthropic": "x-api-key", "gemini": "x-goog-api-key"}.get(api_name, "authorization")
    key = f"fake-err-{kind}"
    value = f"Bearer {key}" if header == "authorization" else key
    response = http.post(path, json={**body, "stream": True}, headers={header: value})
    assert_error_shape(api_name, kind, response)
    recorded = api.requests[-1]
    assert recorded.api_key == key and recorded.status == response.status_code


def test_key_error_via_gemini_query_key_and_errors_are_stream_safe(api: FakeModelAPI, http: httpx2.Client) -> None:
    response = http.post("/v1beta/models/g:streamGenerateContent?alt=sse&key=fake-err-401", json=GEMINI_BODY)
    assert response.status_code == 401 and response.headers["content-type"] == "application/json"


def test_unknown_fake_error_key_is_a_clear_400(api: FakeModelAPI, http: httpx2.Client) -> None:
    response = http.post("/v1/chat/completions", json=CHAT_BODY, headers={"authorization": "Bearer fake-err-teapot"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "fake-err-teapot" in message and "context" in message and "hang" in message


def test_sdks_classify_the_errors(api: FakeModelAPI, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    expected_anthropic = {
        "401": anthropic.AuthenticationError,
        "403": anthropic.PermissionDeniedError,
        "404": anthropic.NotFoundError,
        "429": anthropic.RateLimitError,
        "500": anthropic.InternalServerError,
        "529": anthropic.OverloadedError,
        "context": anthropic.BadRequestError,
    }
    expected_openai = {
        "401": openai.AuthenticationError,
        "403": openai.PermissionDeniedError,
        "404": openai.NotFoundError,
        "429": openai.RateLimitError,
        "500": openai.InternalServerError,
        "529": openai.InternalServerError,
        "context": openai.BadRequestError,
    }
    for kind in ERROR_KINDS:
        api.script(Reply(error=kind), Reply(error=kind))  # type: ignore[arg-type]
        with pytest.raises(expected_anthropic[kind]):
            claude.messages.create(**ANTHROPIC_BODY)  # type: ignore[call-overload]
        with pytest.raises(expected_openai[kind]) as caught:
            oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
        assert caught.value.code == OPENAI_CODES.get(kind)


def test_custom_error_message(api: FakeModelAPI, claude: anthropic.Anthropic) -> None:
    api.script(Reply(error="401", error_message="custom words"))
    with pytest.raises(anthropic.AuthenticationError, match="custom words"):
        claude.messages.create(**ANTHROPIC_BODY)  # type: ignore[call-overload]


def test_bad_requests_get_clear_errors(api: FakeModelAPI, http: httpx2.Client) -> None:
    missing = http.post("/v1/messages", json={"model": "m", "max_tokens": 5})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    assert "messages" in missing.json()["error"]["message"]
    not_json = http.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "JSON object" in not_json.json()["error"]["message"]
    no_route = http.post("/v2/completions", json={})
    assert no_route.status_code == 404 and "/v2/completions" in no_route.json()["error"]["message"]
    assert api.pending() == 0 and [r.status for r in api.requests] == [400, 400, 404]


# -- delays and hangs -----------------------------------------------------------------------------------------
def test_delay_before_first_byte_and_between_chunks(api: FakeModelAPI, http: httpx2.Client) -> None:
    api.script(Reply("a b c", delay=0.3), Reply("a b c", chunk_delay=0.15))
    started = time.monotonic()
    http.post("/v1/chat/completions", json=CHAT_BODY)
    assert time.monotonic() - started >= 0.3
    arrivals = []
    with http.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as response:
        started = time.monotonic()
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.monotonic() - started)
    # two chunk delays of 0.15 s; the event loop may fire a timer up to ~1 ms early, so not exactly 0.3
    assert len(arrivals) == 3 and arrivals[2] - arrivals[0] >= 0.28


def test_hang_before_answer_until_client_disconnects(api: FakeModelAPI) -> None:
    api.script(Reply(hang="before"), "after the hang")
    with httpx2.Client(base_url=api.url, timeout=0.3) as client, pytest.raises(httpx2.ReadTimeout):
        client.post("/v1/messages", json=ANTHROPIC_BODY)
    hung = api.main_requests()[0]
    assert hung.wait_disconnected(2) and hung.status == 0
    with httpx2.Client(base_url=api.url, timeout=5) as client:
        assert "after the hang" in client.post("/v1/messages", json=ANTHROPIC_BODY).text


def test_hang_mid_stream_after_first_chunk(api: FakeModelAPI) -> None:
    api.script(Reply("one two three", hang="mid"))
    seen: list[str] = []
    with httpx2.Client(base_url=api.url, timeout=0.5) as client, pytest.raises(httpx2.ReadTimeout):  # noqa: SIM117
        with client.stream("POST", "/v1/responses", json={**RESPONSES_BODY, "stream": True}) as response:
            seen.extend(line for line in response.iter_lines() if line.startswith("event: "))
    # the stream got as far as the first text delta, and no further
    assert seen[-1] == "event: response.output_text.delta" and seen.count("event: response.output_text.delta") == 1
    assert api.main_requests()[0].wait_disconnected(2)


def test_hang_ends_when_the_client_resets_the_connection(api: FakeModelAPI) -> None:
    """OpenCode and Kilo (Bun) drop an aborted request with a TCP reset, not a FIN: still a disconnect."""
    api.script(Reply("one two three", hang="mid"))
    body = json.dumps({**CHAT_BODY, "stream": True}).encode()
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b'"content":"one' not in received:
            received += sock.recv(65536)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends a reset
    assert api.main_requests()[0].wait_disconnected(5)


def test_hang_selected_by_key(api: FakeModelAPI) -> None:
    with httpx2.Client(base_url=api.url, timeout=0.3) as client, pytest.raises(httpx2.ReadTimeout):
        client.post("/v1beta/models/g:generateContent", json=GEMINI_BODY, headers={"x-goog-api-key": "fake-err-hang"})
    assert api.requests[-1].wait_disconnected(2)


# -- scripting and recording ----------------------------------------------------------------------------------
def test_script_order_default_and_reset(api: FakeModelAPI, oai: openai.OpenAI) -> None:
    def ask() -> str | None:
        return (
            oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            .choices[0]
            .message.content
        )

    api.script("first", Reply(chunks=["sec", "ond"]))
    assert api.pending() == 2
    assert [ask(), ask(), ask()] == ["first", "second", "pong from fake"]
    api.default_reply = "new default"
    api.script("queued")
    api.reset()
    assert api.pending() == 0 and api.requests == []
    assert ask() == "new default"


def test_usage_defaults_follow_chunks_and_body(api: FakeModelAPI, http: httpx2.Client) -> None:
    api.script(Reply(chunks=["a", "b", "c", "d", "e"]), Reply("x", input_tokens=1000, cached_tokens=300))
    first = http.post("/v1/messages", json=ANTHROPIC_BODY).json()["usage"]
    assert first["output_tokens"] == 5 and first["input_tokens"] == len(api.requests[-1].raw_body) // 4
    second = http.post("/v1/messages", json=ANTHROPIC_BODY).json()["usage"]
    assert (second["input_tokens"], second["cache_read_input_tokens"]) == (700, 300)


def test_length_finish_in_each_api(api: FakeModelAPI, http: httpx2.Client) -> None:
    api.script(*[Reply("cut", finish="length")] * 4)
    anthropic_body = http.post("/v1/messages", json=ANTHROPIC_BODY).json()
    chat_body = http.post("/v1/chat/completions", json=CHAT_BODY).json()
    responses_events = sse_events(http.post("/v1/responses", json={**RESPONSES_BODY, "stream": True}).text)
    gemini_body = http.post("/v1beta/models/g:generateContent", json=GEMINI_BODY).json()
    assert anthropic_body["stop_reason"] == "max_tokens"
    assert chat_body["choices"][0]["finish_reason"] == "length"
    final = json.loads(responses_events[-1][1])
    assert (
        final["type"] == "response.incomplete"
        and final["response"]["incomplete_details"]["reason"] == "max_output_tokens"
    )
    assert gemini_body["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_reply_validation() -> None:
    with pytest.raises(ValueError, match="join"):
        Reply("abc", chunks=["a", "x"])
    with pytest.raises(ValueError, match="error kind"):
        Reply(error="418")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hang"):
        Reply(hang="forever")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        Reply(delay=-1)
    with pytest.raises(TypeError):
        FakeToolCall("t", {"x": object()})
    with pytest.raises(TypeError):
        FakeModelAPI().script(42)  # type: ignore[arg-type]
    assert Reply(chunks=["a", "b"]).text == "ab"


@given(st.text())
def test_split_chunks_round_trips(text: str) -> None:
    chunks = split_chunks(text)
    assert "".join(chunks) == text
    assert all(chunks)
    if len(text) >= 3:
        assert len(chunks) >= 3


def test_concurrent_requests_consume_each_reply_once(api: FakeModelAPI) -> None:
    api.script(*[f"reply-{i}" for i in range(40)])
    answers: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx2.Client(base_url=api.url, timeout=5) as client:
            for _ in range(5):
                text = client.post("/v1/chat/completions", json=CHAT_BODY).json()["choices"][0]["message"]["content"]
                with lock:
                    answers.append(text)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == sorted(f"reply-{i}" for i in range(40))
    assert len(api.main_requests()) == 40


def test_wait_for_requests(api: FakeModelAPI, http: httpx2.Client) -> None:
    with pytest.raises(TimeoutError):
        api.wait_for_requests(1, timeout=0.05)
    http.head("/")
    http.post("/v1/messages", json=ANTHROPIC_BODY)
    assert len(api.wait_for_requests(2, timeout=1)) == 2
    assert [r.kind for r in api.wait_for_requests(1, timeout=1, main_only=True)] == ["main"]


def test_gzip_and_chunked_request_bodies(api: FakeModelAPI, http: httpx2.Client) -> None:
    raw = json.dumps(CHAT_BODY).encode()
    zipped = http.post("/v1/chat/completions", content=gzip.compress(raw), headers={"content-encoding": "gzip"})
    assert zipped.status_code == 200

    def pieces() -> Iterator[bytes]:
        yield raw[:10]
        yield raw[10:]

    chunked = http.post("/v1/chat/completions", content=pieces())
    assert chunked.status_code == 200
    assert [r.body for r in api.requests] == [CHAT_BODY, CHAT_BODY]


def test_base_urls(api: FakeModelAPI) -> None:
    assert api.url == f"http://127.0.0.1:{api.port}"
    assert api.anthropic_base_url == api.url == api.gemini_base_url
    assert api.openai_base_url == api.url + "/v1"


# -- lifecycle ------------------------------------------------------------------------------------------------
def test_stop_is_quick_with_a_hung_connection_and_frees_the_port() -> None:
    api = FakeModelAPI().start()
    port = api.port
    api.script(Reply(hang="before"))
    sock = socket.create_connection(("127.0.0.1", port))
    body = json.dumps(CHAT_BODY).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    api.wait_for_requests(1, timeout=2)

    def server_threads() -> int:
        return sum(t.name == "fake-model-api" for t in threading.enumerate())

    before = server_threads()
    started = time.monotonic()
    api.stop()
    assert time.monotonic() - started < 1.0
    assert not api.running and server_threads() == before - 1
    sock.settimeout(2)
    assert sock.recv(100) == b""  # the server closed the hung connection
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    api.stop()  # idempotent
    with FakeModelAPI(port=port) as again:  # the port is reusable at once
        assert again.port == port


def test_standalone_module_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "llm_runners.testing.fake_api", "--port", "0", "--reply", "standalone hi"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("fake model API listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        reply = httpx2.post(url + "/v1/chat/completions", json=CHAT_BODY, timeout=5).json()
        assert reply["choices"][0]["message"]["content"] == "standalone hi"
        process.terminate()
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
