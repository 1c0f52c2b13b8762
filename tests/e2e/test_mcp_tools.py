"""Server-executed tools through the real Claude Code's own MCP client: the official openai SDK -> our server
(``llm_runners.tool_execution: "server"``) -> the claude_code runner -> the real pinned ``claude`` with our loopback
MCP endpoint in its ``--mcp-config`` -> the tool call runs on the test MCP tool server (a stdio child of the
server) -> the result goes back to claude, which sends it to the fake model API -> the final answer.

What reached the model is asserted on the requests the fake recorded; that the tool ran, on the log the tool
server itself wrote. Two claude runs."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn

from llm_runners.config import MCPServerSettings, ProviderSettings, Settings
from llm_runners.router import SERVE_WARM, Router
from llm_runners.server import create_app
from llm_runners.testing.fake_api import FakeModelAPI, FakeToolCall, Reply
from llm_runners.testing.mcp_tool_server import LOG_ENV


def serve(settings: Settings) -> Iterator[tuple[str, Any]]:
    app = create_app(Router.from_settings(settings, warm=SERVE_WARM), settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # the lifespan starts the MCP tool server: slow on a loaded machine
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def claude_server(tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> Iterator[tuple[str, Any]]:
    env = {
        **tmp_home.env(),
        "ANTHROPIC_BASE_URL": fake_api.anthropic_base_url,
        "ANTHROPIC_API_KEY": "dummy",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    options = {"binary": str(cli_bin("claude")), "cwd": str(tmp_home.workdir), "timeout": 90.0, "env": env}
    tools = MCPServerSettings(
        "t",
        command=sys.executable,
        args=["-m", "llm_runners.testing.mcp_tool_server"],
        env={LOG_ENV: str(tmp_path / "tool-calls.jsonl")},
    )
    settings = Settings(
        providers={"claude_code": ProviderSettings(options=options)},
        default_provider="claude_code",
        mcp_servers=[tools],
    )
    yield from serve(settings)


def tool_log(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "tool-calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_claude_calls_the_servers_tools_through_its_own_mcp_client(
    claude_server: tuple[str, Any], fake_api: FakeModelAPI, tmp_path: Path, procs: Any
) -> None:
    url, app = claude_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=120)
    fake_api.script(
        Reply(tool_calls=[FakeToolCall("mcp__llm_runners__add", {"a": 2, "b": 40}, id="toolu_add_1")]),
        Reply(chunks=["The sum", " is", " 42."]),
    )
    completion = client.chat.completions.create(
        model="claude_code",
        messages=[{"role": "user", "content": "What is 2 + 40? Use the add tool."}],
        extra_body={"llm_runners": {"tool_execution": "server"}},
    )

    first, second = fake_api.main_requests()
    # claude offered exactly the MCP server's tools (under its own mcp__<server>__ names) and none of its built-ins
    assert sorted(t["name"] for t in first.body["tools"]) == [
        "mcp__llm_runners__add",
        "mcp__llm_runners__echo",
        "mcp__llm_runners__fail",
        "mcp__llm_runners__record",
        "mcp__llm_runners__slow",
    ]
    assert "Result of tool" not in first.system_text() and "<tool_call>" not in first.system_text()
    # the tool ran in the tool server process, and its result reached the model in claude's next request
    (logged,) = tool_log(tmp_path)
    assert logged["tool"] == "add" and logged["arguments"] == {"a": 2, "b": 40}
    results = [
        block
        for message in second.body["messages"]
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    (result,) = results
    assert result["tool_use_id"] == "toolu_add_1" and not result.get("is_error")
    assert json.loads(result["content"][0]["text"]) == {"result": 42}

    assert completion.choices[0].message.content == "The sum is 42."
    assert completion.choices[0].finish_reason == "stop" and not completion.choices[0].message.tool_calls
    (run,) = (completion.model_extra or {})["llm_runners"]["tool_runs"]
    assert (run["id"], run["name"], run["server"], run["is_error"]) == ("toolu_add_1", "add", "t", False)
    assert app.state.tools.host.active() == 0  # the request's token was revoked when it ended


def test_a_failing_tool_reaches_claude_as_an_error_and_streaming_shows_the_answer(
    claude_server: tuple[str, Any], fake_api: FakeModelAPI, tmp_path: Path
) -> None:
    url, app = claude_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=120)
    fake_api.script(
        Reply(tool_calls=[FakeToolCall("mcp__llm_runners__fail", {"reason": "disk on fire"}, id="toolu_f")]),
        Reply(chunks=["The", " tool", " failed."]),
    )
    chunks = list(
        client.chat.completions.create(
            model="claude_code",
            messages=[{"role": "user", "content": "Try the tool."}],
            stream=True,
            extra_body={"llm_runners": {"tool_execution": "server"}},
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "The tool failed." and len(texts) >= 3
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    (run,) = (last.model_extra or {})["llm_runners"]["tool_runs"]
    assert run["name"] == "fail" and run["is_error"] and "disk on fire" in run["result"]
    second = fake_api.main_requests()[1]
    (result,) = [
        b
        for m in second.body["messages"]
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    ]
    assert result.get("is_error") is True and "disk on fire" in json.dumps(result["content"])
    assert [c["tool"] for c in tool_log(tmp_path)] == ["fail"]
    assert app.state.tools.host.active() == 0
