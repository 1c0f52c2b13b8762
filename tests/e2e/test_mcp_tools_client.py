"""Client tools through the real Claude Code's own MCP client, with the CLI's call held open between two HTTP
requests: the openai SDK sends a plain ``tools`` request -> our server serves the tools to ``claude`` on the
loopback MCP endpoint (``client_tools = "mcp"``) -> the fake model calls ``mcp__llm_runners__get_weather`` ->
claude's MCP call is held and the HTTP response ends with that ``tool_calls`` entry -> the client sends the
``tool`` result -> it answers the held call and the same claude turn (same process, same session) continues to
the final answer. And a held call nobody answers: the turn is cancelled and claude killed.

What reached the model is asserted on the requests the fake recorded; the process by its pid."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import uvicorn

from llm_runners.config import ProviderSettings, Settings
from llm_runners.router import Router
from llm_runners.server import create_app
from llm_runners.testing.fake_api import FakeModelAPI, FakeToolCall, Reply

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def start_server(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> Iterator[Callable[..., tuple[str, Any]]]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(hold_timeout: float = 120.0) -> tuple[str, Any]:
        env = {
            **tmp_home.env(),
            "ANTHROPIC_BASE_URL": fake_api.anthropic_base_url,
            "ANTHROPIC_API_KEY": "dummy",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        options = {"binary": str(cli_bin("claude")), "cwd": str(tmp_home.workdir), "timeout": 180.0, "env": env}
        provider = ProviderSettings(options=options, client_tools="mcp", hold_timeout=hold_timeout)
        settings = Settings(providers={"claude_code": provider}, default_provider="claude_code")
        app = create_app(Router.from_settings(settings), settings)  # no spares: the only claude is the turn's
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", app

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)


def client_of(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=120)


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        block
        for message in body["messages"]
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


def test_the_held_mcp_call_is_answered_by_the_clients_next_request(
    start_server: Callable[..., tuple[str, Any]], fake_api: FakeModelAPI, procs: Any
) -> None:
    url, app = start_server()
    client = client_of(url)
    fake_api.script(
        Reply(
            text="Let me look.",
            tool_calls=[FakeToolCall("mcp__llm_runners__get_weather", {"city": "Paris"}, id="toolu_w1")],
        ),
        Reply(chunks=["It is", " sunny", " in Paris."]),
    )
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="claude_code", messages=question, tools=[WEATHER])  # type: ignore[list-item]

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.id == "toolu_w1" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    (asked,) = fake_api.main_requests()
    assert [t["name"] for t in asked.body["tools"]] == ["mcp__llm_runners__get_weather"]  # natively, no built-ins
    assert "<tool_call>" not in asked.system_text()  # not the text tool protocol
    held = procs.named("claude")
    assert len(held) == 1, f"one claude process, waiting on its MCP call: {held}"
    (pid,) = held

    time.sleep(1.0)  # the CLI waits on the held call: still there, nothing sent upstream meanwhile
    assert procs.pid_alive(pid) and len(fake_api.main_requests()) == 1

    second = client.chat.completions.create(
        model="claude_code",
        messages=[
            *question,
            {"role": "assistant", "content": choice.message.content, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": "toolu_w1", "content": "sunny, 24 C"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert second.choices[0].finish_reason == "stop"
    first_req, second_req = fake_api.main_requests()
    (result,) = tool_results(second_req.body)
    assert result["tool_use_id"] == "toolu_w1" and json.dumps(result["content"]).count("sunny, 24 C") == 1
    # the same CLI turn went on: the same process, the same claude session, no other claude started
    assert second_req.headers.get("x-claude-code-session-id") == first_req.headers.get("x-claude-code-session-id")
    assert set(procs.named("claude")) <= {pid}
    assert app.state.tools.host.active() == 0
    assert procs.wait_until_gone([pid], timeout=15) == []


def test_a_held_call_nobody_answers_cancels_the_turn(
    start_server: Callable[..., tuple[str, Any]], fake_api: FakeModelAPI, procs: Any
) -> None:
    url, app = start_server(hold_timeout=2.0)
    client = client_of(url)
    fake_api.script(Reply(tool_calls=[FakeToolCall("mcp__llm_runners__get_weather", {"city": "Oslo"}, id="toolu_w2")]))
    question = [{"role": "user", "content": "Weather in Oslo?"}]
    first = client.chat.completions.create(model="claude_code", messages=question, tools=[WEATHER])  # type: ignore[list-item]
    (call,) = first.choices[0].message.tool_calls or []
    (pid,) = procs.named("claude")

    assert procs.wait_until_gone([pid], timeout=30) == [], "the CLI outlived its unanswered held call"
    assert app.state.tools.host.active() == 0
    with pytest.raises(openai.APIStatusError, match="not answered within 2 s"):
        client.chat.completions.create(
            model="claude_code",
            messages=[
                *question,
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": "toolu_w2", "content": "snow"},
            ],
            tools=[WEATHER],  # type: ignore[list-item]
        )
    assert len(fake_api.main_requests()) == 1
