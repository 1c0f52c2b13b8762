"""Streamed tool calls reach the client as deltas through every front door, from every HTTP provider.

The chain, all on 127.0.0.1: the official SDK client -> our server (Chat Completions, Responses or Messages) ->
an HTTP provider (``openai_compat``, ``anthropic``, ``gemini_api``) -> the fake model API, which streams each tool
call's arguments in two pieces (Gemini: each call whole) with ``chunk_delay`` between stream chunks. Each test
checks that the arguments arrive in the pieces the upstream sent, the first one well before the stream ends (not
gathered at the end), and that the SDK's own stream accumulator builds the complete calls from them.

The interleaved cases play what an upstream streaming parallel calls may send (fragments of two calls alternating,
text between one call's fragments, a whole call while another streams) through a scripted provider, and check with
each SDK's accumulator that every call comes out whole, with the arguments sent."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import openai
import pytest
from server_helpers import Served

from llm_runners.http import AnthropicProvider, GeminiProvider, OpenAICompatProvider
from llm_runners.testing.fake_api import FakeModelAPI, FakeToolCall, Reply
from llm_runners.testing.scripted import ScriptedProvider
from llm_runners.types import (
    ChatRequest,
    Done,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    Usage,
    UsageEvent,
)

CALLS = [FakeToolCall("get_weather", {"city": "Paris", "unit": "celsius"}), FakeToolCall("get_time", {"tz": "CET"})]
EXPECTED = [(c.name, dict(c.arguments)) for c in CALLS]
DELAY = 0.4
TOOLS_OPENAI = [{"type": "function", "function": {"name": c.name, "parameters": {"type": "object"}}} for c in CALLS]
TOOLS_RESPONSES = [{"type": "function", "name": c.name, "parameters": {"type": "object"}} for c in CALLS]
TOOLS_ANTHROPIC = [{"name": c.name, "input_schema": {"type": "object"}} for c in CALLS]
#: pieces of each call's arguments the upstream sends: two (OpenAI, Anthropic), or the call whole (Gemini)
PIECES = {"openai": 2, "anthropic": 2, "gemini": 1}


@pytest.fixture
def api() -> Any:
    with FakeModelAPI() as fake:
        fake.default_reply = Reply(chunks=["Let me ", "check."], tool_calls=CALLS, chunk_delay=DELAY)
        yield fake


@pytest.fixture
def server(serve: Callable[..., Served], api: FakeModelAPI) -> Served:
    providers = {
        "openai": OpenAICompatProvider(api.openai_base_url, api_key="k", model="fake-model"),
        "anthropic": AnthropicProvider(api.anthropic_base_url, api_key="k", model="fake-model"),
        "gemini": GeminiProvider(api.gemini_base_url, api_key="k", model="fake-model"),
    }
    return serve(providers, default="openai")


def check_pieces(upstream: str, pieces: dict[int, list[tuple[float, str]]], end: float) -> None:
    """Per call: the upstream's number of pieces, joined into its arguments; the first piece came early."""
    assert sorted(pieces) == [0, 1], pieces
    for index, (name, arguments) in enumerate(EXPECTED):
        got = [text for _, text in pieces[index] if text]
        assert len(got) == PIECES[upstream], (upstream, index, got)
        assert json.loads("".join(got)) == arguments, (name, got)
    if PIECES[upstream] > 1:  # Gemini sends its calls whole, in its last chunk
        first = min(t for t, text in pieces[0] if text)
        # the first call's arguments were on the wire while the upstream still had chunks to send
        assert end - first >= DELAY / 2, (upstream, end - first)


@pytest.mark.parametrize("upstream", ["openai", "anthropic", "gemini"])
def test_chat_completions_streams_tool_call_deltas(upstream: str, server: Served) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="none")
    pieces: dict[int, list[tuple[float, str]]] = {}
    heads: dict[int, tuple[str | None, str | None]] = {}
    with client.chat.completions.stream(
        model=f"{upstream}:fake-model",
        messages=[{"role": "user", "content": "weather and time?"}],
        tools=TOOLS_OPENAI,  # type: ignore[arg-type]
    ) as stream:
        for event in stream:
            if event.type == "chunk":
                for call in event.chunk.choices[0].delta.tool_calls or []:
                    if call.id:
                        heads[call.index] = (call.id, call.function.name if call.function else None)
                    text = call.function.arguments if call.function and call.function.arguments else ""
                    pieces.setdefault(call.index, []).append((time.monotonic(), text))
        final = stream.get_final_completion()
    end = time.monotonic()
    check_pieces(upstream, pieces, end)
    assert [h[1] for _, h in sorted(heads.items())] == [name for name, _ in EXPECTED]  # named once, at the start
    message = final.choices[0].message
    assert message.content == "Let me check." and final.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []] == EXPECTED
    assert [c.id for c in message.tool_calls or []] == [heads[0][0], heads[1][0]]


@pytest.mark.parametrize("upstream", ["openai", "anthropic", "gemini"])
def test_responses_streams_function_call_argument_deltas(upstream: str, server: Served) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="none")
    pieces: dict[int, list[tuple[float, str]]] = {}
    items: dict[str, int] = {}
    added: list[str] = []
    with client.responses.stream(
        model=f"{upstream}:fake-model",
        input="weather and time?",
        tools=TOOLS_RESPONSES,  # type: ignore[arg-type]
    ) as stream:
        for event in stream:
            if event.type == "response.output_item.added" and event.item.type == "function_call":
                items[event.item.id or ""] = len(items)
                added.append(event.item.name)
            elif event.type == "response.function_call_arguments.delta":
                pieces.setdefault(items[event.item_id], []).append((time.monotonic(), event.delta))
        final = stream.get_final_response()
    end = time.monotonic()
    check_pieces(upstream, pieces, end)
    assert added == [name for name, _ in EXPECTED]
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == EXPECTED
    assert final.output_text == "Let me check."


@pytest.mark.parametrize("upstream", ["openai", "anthropic", "gemini"])
def test_messages_streams_input_json_deltas(upstream: str, server: Served) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="none")
    pieces: dict[int, list[tuple[float, str]]] = {}
    blocks: dict[int, int] = {}
    with client.messages.stream(
        model=f"{upstream}:fake-model",
        max_tokens=256,
        messages=[{"role": "user", "content": "weather and time?"}],
        tools=TOOLS_ANTHROPIC,  # type: ignore[arg-type]
    ) as stream:
        for event in stream:
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                blocks[event.index] = len(blocks)
            elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                pieces.setdefault(blocks[event.index], []).append((time.monotonic(), event.delta.partial_json))
        final = stream.get_final_message()
    end = time.monotonic()
    check_pieces(upstream, pieces, end)
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in uses] == EXPECTED
    assert final.stop_reason == "tool_use"
    assert "".join(b.text for b in final.content if b.type == "text") == "Let me check."


# ------------------------------------------------------------------ interleavings an upstream may stream (issue 8)

WEATHER = ToolCall(id="call_w", name="get_weather", arguments='{"city": "Paris", "unit": "celsius"}')
TIME = ToolCall(id="call_t", name="get_time", arguments='{"tz": "CET"}')


def _halves(index: int, call: ToolCall) -> tuple[ToolCallDelta, ToolCallDelta]:
    cut = len(call.arguments) // 2
    return ToolCallDelta(index, call.arguments[:cut], id=call.id, name=call.name), ToolCallDelta(
        index, call.arguments[cut:]
    )


W1, W2 = _halves(0, WEATHER)
T1, T2 = _halves(1, TIME)
#: the events a provider streams, per case: the calls' fragments alternating; text between one call's fragments;
#: a call arriving whole while another one streams
INTERLEAVED: dict[str, list[StreamEvent]] = {
    "alternating": [W1, T1, W2, T2, ToolCallEvent(WEATHER), ToolCallEvent(TIME)],
    "text-between": [
        *(TextDelta("Let me "), W1, TextDelta("check"), W2, T1, TextDelta("."), T2),
        *(ToolCallEvent(WEATHER), ToolCallEvent(TIME)),
    ],
    "whole-call-inside": [W1, ToolCallEvent(TIME), W2, ToolCallEvent(WEATHER)],
}
TEXT = {"alternating": "", "text-between": "Let me check.", "whole-call-inside": ""}
SENT = {c.id: (c.name, json.loads(c.arguments)) for c in (WEATHER, TIME)}


class _PlaysEvents(ScriptedProvider):
    """Streams exactly the events of one case, then usage and the end."""

    def __init__(self, events: list[StreamEvent]) -> None:
        super().__init__(name="events")
        self.events = events

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        for event in self.events:
            yield event
        yield UsageEvent(Usage(input_tokens=3, output_tokens=5))
        yield Done(finish_reason="tool_calls")


@pytest.mark.parametrize("case", sorted(INTERLEAVED))
def test_chat_completions_interleaved_tool_calls(case: str, serve: Callable[..., Served]) -> None:
    server = serve(_PlaysEvents(INTERLEAVED[case]))
    client = openai.OpenAI(base_url=server.v1, api_key="none")
    with client.chat.completions.stream(
        model="events",
        messages=[{"role": "user", "content": "weather and time?"}],
        tools=TOOLS_OPENAI,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    got = {c.id: (c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []}
    assert got == SENT
    assert (message.content or "") == TEXT[case]


@pytest.mark.parametrize("case", sorted(INTERLEAVED))
def test_responses_interleaved_tool_calls(case: str, serve: Callable[..., Served]) -> None:
    server = serve(_PlaysEvents(INTERLEAVED[case]))
    client = openai.OpenAI(base_url=server.v1, api_key="none")
    with client.responses.stream(model="events", input="weather and time?", tools=TOOLS_RESPONSES) as stream:  # type: ignore[arg-type]
        final = stream.get_final_response()
    got = {o.call_id: (o.name, json.loads(o.arguments)) for o in final.output if o.type == "function_call"}
    assert got == SENT
    assert final.output_text == TEXT[case]


@pytest.mark.parametrize("case", sorted(INTERLEAVED))
def test_messages_interleaved_tool_calls(case: str, serve: Callable[..., Served]) -> None:
    server = serve(_PlaysEvents(INTERLEAVED[case]))
    client = anthropic.Anthropic(base_url=server.url, api_key="none")
    with client.messages.stream(
        model="events",
        max_tokens=256,
        messages=[{"role": "user", "content": "weather and time?"}],
        tools=TOOLS_ANTHROPIC,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_message()
    got = {b.id: (b.name, b.input) for b in final.content if b.type == "tool_use"}
    assert got == SENT
    assert len([b for b in final.content if b.type == "tool_use"]) == 2  # each call in one block of its own
    assert "".join(b.text for b in final.content if b.type == "text") == TEXT[case]


def test_messages_stream_ending_inside_a_call_still_sends_what_was_held(serve: Callable[..., Served]) -> None:
    """A call that never gets its whole event (the upstream stopped): the text held behind it still goes out."""
    server = serve(_PlaysEvents([TextDelta("Let me "), W1, TextDelta("check."), T1]))
    client = anthropic.Anthropic(base_url=server.url, api_key="none")
    with client.messages.stream(
        model="events", max_tokens=256, messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "text", "tool_use"]
    assert "".join(b.text for b in final.content if b.type == "text") == "Let me check."
    assert [b.id for b in final.content if b.type == "tool_use"] == [WEATHER.id, TIME.id]
