"""The feature layer over a real CLI: tools through the text tool protocol and JSON output, with the real Claude Code
and Codex against the fake model API. The model's answer is scripted on the fake; what is asserted is what the CLI
sent upstream (the tool catalogue in the system prompt, the tool result in the history) and what the caller got
back (parsed tool calls, validated JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_claude_code import make_runner as claude_runner
from test_codex import make_runner as codex_runner

from llm_runners.errors import GuardrailError
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api import FakeModelAPI, Reply
from llm_runners.types import ChatRequest, Message, ResponseFormat, ToolCallEvent, ToolChoice, ToolSpec
from llm_runners.wrappers.features import FeatureAdapter

pytestmark = pytest.mark.anyio

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


async def test_tool_call_round_trip_through_claude_code(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Callable[[str], Path]
) -> None:
    provider = FeatureAdapter(claude_runner(tmp_home, fake_api, cli_bin))
    fake_api.script(
        Reply(text='Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'),
        "It is sunny in Oslo.",
    )
    first_request = ChatRequest(
        messages=[Message(role="user", content="Weather in Oslo?")],
        tools=[WEATHER],
        tool_choice=ToolChoice(mode="required"),
    )
    events = [e async for e in provider.stream(first_request)]
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"})]
    first = fake_api.main_requests()[0]
    assert "get_weather" in first.system_text() and first.tool_names() == []  # catalogue as text, no CLI tools

    answer = await provider.complete(
        ChatRequest(
            messages=[
                *first_request.messages,
                Message(role="assistant", content="Let me check.", tool_calls=calls),
                Message(role="tool", content='{"sky": "sunny"}', tool_call_id=calls[0].id, name="get_weather"),
            ],
            tools=[WEATHER],
        )
    )
    assert answer.content == "It is sunny in Oslo." and answer.finish_reason == "stop"
    second = fake_api.main_requests()[1]
    assert '{"sky": "sunny"}' in second.last_user_text()


async def test_json_schema_answer_is_validated_through_codex(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Callable[[str], Path]
) -> None:
    runner = codex_runner(tmp_home, fake_api, cli_bin, cwd=str(tmp_home.workdir), sessions=SessionStore())
    provider = FeatureAdapter(runner, retry=False)
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    fmt = ResponseFormat(type="json_schema", name="person", json_schema=schema)
    fake_api.script('```json\n{"age": 42}\n```', '{"age": "old"}')
    ok = await provider.complete(ChatRequest(messages=[Message(role="user", content="How old?")], response_format=fmt))
    assert json.loads(ok.content) == {"age": 42}
    assert "age" in fake_api.main_requests()[0].system_text()  # the schema instruction reached the model
    with pytest.raises(GuardrailError, match="age"):
        await provider.complete(ChatRequest(messages=[Message(role="user", content="Again?")], response_format=fmt))
