"""The agent loop (llm_runners.tools.Agent) and server-side tool execution through the HTTP server.

The model is the fake model API (llm_runners.testing.FakeModelAPI) behind our OpenAI-compatible provider (native
tool calls), or a scripted provider without native tools (the text tool protocol); the tools run on the real test
MCP server (a child process) or as Python functions; the server's client is the official openai SDK."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from tool_helpers import ToolLog

from llm_runners.config import MCPServerSettings, ProviderSettings, Settings
from llm_runners.http import OpenAICompatProvider
from llm_runners.router import Router
from llm_runners.server import create_app
from llm_runners.testing import FakeModelAPI, FakeToolCall, Reply
from llm_runners.testing.scripted import Reply as ScriptedReply
from llm_runners.testing.scripted import ScriptedProvider
from llm_runners.tools import Agent
from llm_runners.types import Capabilities, ChatRequest, Message, TextDelta

pytestmark = pytest.mark.anyio


def ask(text: str, **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kwargs)


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_native_tool_calls_run_on_the_mcp_server_and_the_results_reach_the_model(
    tool_server: Callable[..., MCPServerSettings], tool_log: ToolLog
) -> None:
    with FakeModelAPI() as api:
        api.script(Reply(tool_calls=[FakeToolCall("add", {"a": 2, "b": 40}, id="call_add")]), "The sum is 42.")
        provider = OpenAICompatProvider(base_url=api.openai_base_url, api_key="k", model="m")
        async with Agent(provider, mcp_servers=[tool_server()]) as agent:
            response = await agent.complete(ask("What is 2 + 40?"))
        first, second = api.main_requests()

    assert response.content == "The sum is 42." and response.finish_reason == "stop"
    assert {t["function"]["name"] for t in first.body["tools"]} == {"add", "echo", "record", "fail", "slow"}
    assert tool_messages(first.body) == []
    (result,) = tool_messages(second.body)
    assert result["tool_call_id"] == "call_add" and json.loads(result["content"]) == {"result": 42}
    assert second.body["messages"][-2]["tool_calls"][0]["function"]["name"] == "add"
    assert [c["tool"] for c in tool_log.calls()] == ["add"]
    (run,) = response.tool_runs
    assert (run.call.id, run.call.name, run.server, run.is_error) == ("call_add", "add", "t", False)
    assert json.loads(run.result) == {"result": 42}
    assert response.usage is not None and response.usage.output_tokens >= 2  # both turns counted


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


async def test_text_tool_protocol_for_a_provider_without_native_tools() -> None:
    seen: list[ChatRequest] = []

    def reply(request: ChatRequest) -> ScriptedReply:
        seen.append(request)
        if len(seen) == 1:
            return ScriptedReply(
                'Let me compute.\n<tool_call>{"name": "multiply", "arguments": {"a": 6, "b": 7}}</tool_call>'
            )
        return ScriptedReply("It is 42.")

    plain = ScriptedProvider(reply, capabilities=Capabilities(native_tools=False))
    async with Agent(plain, tools=[multiply]) as agent:
        events = [e async for e in agent.stream(ask("6 times 7?"))]

    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Let me compute.It is 42."
    assert "multiply" in seen[0].system and "<tool_call>" in seen[0].system  # the catalogue went in as text
    assert seen[0].tools == []  # and not as native tools, which this provider cannot take
    assert "Result of tool multiply" in seen[1].messages[-1].text and "42" in seen[1].messages[-1].text
    done = events[-1]
    assert done.type == "done" and [r.result for r in done.tool_runs] == ["42"]


async def test_tool_errors_reach_the_model_and_max_turns_stops_the_loop(
    tool_server: Callable[..., MCPServerSettings],
) -> None:
    with FakeModelAPI() as api:
        api.script(*[Reply(tool_calls=[FakeToolCall("fail", {"reason": f"try {i}"})]) for i in range(5)])
        provider = OpenAICompatProvider(base_url=api.openai_base_url, api_key="k", model="m")
        async with Agent(provider, mcp_servers=[tool_server()], max_turns=3) as agent:
            response = await agent.complete(ask("go"))
        requests = api.main_requests()

    assert len(requests) == 3
    assert [r.is_error for r in response.tool_runs] == [True, True, True]
    assert "try 0" in tool_messages(requests[1].body)[0]["content"]
    assert tool_messages(requests[1].body)[0]["content"].startswith("Error: ")
    assert response.finish_reason == "length"
    assert any("max_turns" in w for w in response.warnings)


async def test_a_call_to_a_callers_tool_goes_back_to_the_caller(tool_server: Callable[..., MCPServerSettings]) -> None:
    from llm_runners.types import ToolSpec

    with FakeModelAPI() as api:
        api.script(Reply(tool_calls=[FakeToolCall("echo", {"text": "x"}), FakeToolCall("lookup", {"q": "y"})]))
        provider = OpenAICompatProvider(base_url=api.openai_base_url, api_key="k", model="m")
        async with Agent(provider, mcp_servers=[tool_server()]) as agent:
            response = await agent.complete(ask("go", tools=[ToolSpec(name="lookup")]))
        (request,) = api.main_requests()

    assert "lookup" in {t["function"]["name"] for t in request.body["tools"]}
    assert response.finish_reason == "tool_calls"
    assert [c.name for c in response.tool_calls] == ["lookup"]
    assert [r.call.name for r in response.tool_runs] == ["echo"]


# ------------------------------------------------------------------------------------------------ the server


def served(run_asgi: Callable[[Any], str], api: FakeModelAPI, settings: Settings) -> openai.OpenAI:
    provider = OpenAICompatProvider(base_url=api.openai_base_url, api_key="k", model="m")
    router = Router({"fake": provider}, "fake")
    url = run_asgi(create_app(router, settings))
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_server_side_execution_by_request_extra(
    run_asgi: Callable[[Any], str], tool_server: Callable[..., MCPServerSettings], tool_log: ToolLog
) -> None:
    with FakeModelAPI() as api:
        settings = Settings(mcp_servers=[tool_server("t"), tool_server("broken", fail=True)])
        client = served(run_asgi, api, settings)
        api.script(
            Reply(tool_calls=[FakeToolCall("record", {"note": "from the model"}, id="call_1")]),
            Reply(chunks=["Recorded", " it", " for", " you."]),
        )
        completion = client.chat.completions.create(
            model="fake",
            messages=[{"role": "user", "content": "please record"}],
            extra_body={"llm_runners": {"tool_execution": "server"}},
        )
        second = api.main_requests()[1]

        assert completion.choices[0].message.content == "Recorded it for you."
        assert completion.choices[0].finish_reason == "stop" and not completion.choices[0].message.tool_calls
        (run,) = (completion.model_extra or {})["llm_runners"]["tool_runs"]
        assert run == {
            "id": "call_1",
            "name": "record",
            "arguments": '{"note":"from the model"}',
            "server": "t",
            "result": "recorded: from the model",
            "is_error": False,
        }
        assert tool_messages(second.body) == [
            {"role": "tool", "tool_call_id": "call_1", "content": "recorded: from the model"}
        ]
        assert [c["tool"] for c in tool_log.calls()] == ["record"]

        # streamed: the final answer arrives in several chunks, the executed calls on the last one
        api.script(Reply(tool_calls=[FakeToolCall("add", {"a": 1, "b": 2})]), Reply(chunks=["The", " sum", " is 3."]))
        chunks = list(
            client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": "1+2?"}],
                stream=True,
                extra_body={"llm_runners": {"tool_execution": "server"}},
            )
        )
        texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert texts == ["The", " sum", " is 3."]
        last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
        assert [r["name"] for r in (last.model_extra or {})["llm_runners"]["tool_runs"]] == ["add"]

        # without the extra, the tool call goes back to the client as usual
        api.script(Reply(tool_calls=[FakeToolCall("add", {"a": 1, "b": 2})]))
        plain = client.chat.completions.create(
            model="fake",
            messages=[{"role": "user", "content": "1+2?"}],
            tools=[{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
        )
        assert plain.choices[0].finish_reason == "tool_calls"
        assert "llm_runners" not in (plain.model_extra or {})
        assert [c["tool"] for c in tool_log.calls()] == ["record", "add"]

        with urllib.request.urlopen(str(client.base_url).removesuffix("/v1/") + "/ready") as answer:
            ready = json.load(answer)
        servers = {s["name"]: s for s in ready["mcp_servers"]}
        assert servers["t"]["ready"] and "add" in servers["t"]["tools"]
        assert not servers["broken"]["ready"] and "failing on purpose" in servers["broken"]["reason"]


def test_server_side_execution_by_provider_settings(
    run_asgi: Callable[[Any], str], tool_server: Callable[..., MCPServerSettings]
) -> None:
    with FakeModelAPI() as api:
        settings = Settings(mcp_servers=[tool_server()], providers={"fake": ProviderSettings(tool_execution="server")})
        client = served(run_asgi, api, settings)
        api.script(Reply(tool_calls=[FakeToolCall("echo", {"text": "hi"})]), "Echoed.")
        completion = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "echo hi"}])
        assert completion.choices[0].message.content == "Echoed."
        assert (completion.model_extra or {})["llm_runners"]["tool_runs"][0]["result"] == "hi"

        with pytest.raises(openai.BadRequestError, match=r"llm_runners\.tool_execution"):
            client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": "x"}],
                extra_body={"llm_runners": {"tool_execution": "sometimes"}},
            )


def test_server_side_execution_needs_mcp_servers(run_asgi: Callable[[Any], str]) -> None:
    with FakeModelAPI() as api:
        client = served(run_asgi, api, Settings())
        with pytest.raises(openai.BadRequestError, match=r"needs MCP tool servers"):
            client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": "x"}],
                extra_body={"llm_runners": {"tool_execution": "server"}},
            )
        assert api.main_requests() == []


def test_server_side_execution_in_the_anthropic_and_responses_formats(
    run_asgi: Callable[[Any], str], tool_server: Callable[..., MCPServerSettings]
) -> None:
    import anthropic

    with FakeModelAPI() as api:
        provider = OpenAICompatProvider(base_url=api.openai_base_url, api_key="k", model="m")
        url = run_asgi(create_app(Router({"fake": provider}, "fake"), Settings(mcp_servers=[tool_server()])))
        server_side = {"llm_runners": {"tool_execution": "server"}}
        claude_sdk = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)

        api.script(Reply(tool_calls=[FakeToolCall("echo", {"text": "one"})]), "Said one.")
        message = claude_sdk.messages.create(
            model="fake", max_tokens=100, messages=[{"role": "user", "content": "say one"}], extra_body=server_side
        )
        assert message.content[0].type == "text" and message.content[0].text == "Said one."
        assert [r["result"] for r in (message.model_extra or {})["llm_runners"]["tool_runs"]] == ["one"]

        api.script(Reply(tool_calls=[FakeToolCall("echo", {"text": "two"})]), "Said two.")
        with claude_sdk.messages.stream(
            model="fake", max_tokens=100, messages=[{"role": "user", "content": "say two"}], extra_body=server_side
        ) as stream:
            events = list(stream)
        assert stream.get_final_message().content[0].text == "Said two."  # type: ignore[union-attr]
        delta = next(e for e in events if e.type == "message_delta")
        assert [r["result"] for r in (delta.model_extra or {})["llm_runners"]["tool_runs"]] == ["two"]

        responses = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0).responses
        api.script(Reply(tool_calls=[FakeToolCall("echo", {"text": "three"})]), "Said three.")
        response = responses.create(model="fake", input="say three", extra_body=server_side)
        assert response.output_text == "Said three."
        assert [r["result"] for r in (response.model_extra or {})["llm_runners"]["tool_runs"]] == ["three"]

        api.script(Reply(tool_calls=[FakeToolCall("echo", {"text": "four"})]), "Said four.")
        done = [e for e in responses.create(model="fake", input="say four", stream=True, extra_body=server_side)]
        completed = next(e for e in done if e.type == "response.completed")
        assert completed.response.output_text == "Said four."  # type: ignore[union-attr]
        assert [r["result"] for r in (completed.response.model_extra or {})["llm_runners"]["tool_runs"]] == ["four"]  # type: ignore[union-attr]
