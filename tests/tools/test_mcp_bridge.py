"""The MCP tool bridge against the real test tool server (llm_runners.testing.mcp_tool_server, official mcp SDK),
over stdio (started by the process layer) and over Streamable HTTP; and the [[mcp_servers]] settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tool_helpers import ToolLog

from llm_runners.config import ConfigError, MCPServerSettings, load_settings
from llm_runners.errors import InvalidRequest
from llm_runners.testing.mcp_tool_server import build_server
from llm_runners.testing.procs import alive
from llm_runners.tools.mcp_bridge import MCPBridge
from llm_runners.types import ToolCall

pytestmark = pytest.mark.anyio


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(id=f"call_{name}", name=name, arguments=json.dumps(arguments))


async def test_stdio_server_lists_and_runs_tools_in_its_own_process(
    tool_server: Callable[..., MCPServerSettings], tool_log: ToolLog
) -> None:
    async with MCPBridge([tool_server("t")], start_timeout=60) as bridge:
        assert {t.name for t in bridge.tools()} == {"add", "echo", "record", "fail", "slow"}
        add = next(t for t in bridge.tools() if t.name == "add")
        assert add.parameters["required"] == ["a", "b"] and add.description.startswith("Add two numbers")
        (report,) = bridge.reports()
        assert report.ready and report.transport == "stdio" and report.protocol_version

        result = await bridge.call(call("add", a=2, b=40))
        assert not result.is_error and json.loads(result.text) == {"result": 42}
        assert result.structured == {"result": 42}
        assert (await bridge.call(call("record", note="hello"))).text == "recorded: hello"

        failed = await bridge.call(call("fail", reason="on purpose"))
        assert failed.is_error and "on purpose" in failed.text
        bad = await bridge.call(ToolCall(id="x", name="echo", arguments="{not json"))
        assert bad.is_error and "not valid JSON" in bad.text
        with pytest.raises(InvalidRequest, match="no MCP server offers the tool 'nope'"):
            await bridge.call(call("nope"))

        conn = bridge.connections[0]
        assert conn.proc is not None
        pid = conn.proc.pid
        logged = tool_log.calls()
        assert [c["tool"] for c in logged] == ["add", "record", "fail"]
        assert {c["pid"] for c in logged} == {pid}  # the calls ran in the process the bridge started
        assert logged[0]["arguments"] == {"a": 2, "b": 40}
        assert alive(pid)
    assert not alive(pid), "the stdio MCP server outlived the bridge"


async def test_a_server_that_fails_to_start_is_reported_and_left_out(
    tool_server: Callable[..., MCPServerSettings], tool_log: ToolLog
) -> None:
    servers = [
        tool_server("broken", fail=True),
        MCPServerSettings("missing", command="/nonexistent/mcp-server"),
        tool_server("good"),
    ]
    async with MCPBridge(servers, start_timeout=60) as bridge:
        reports = {r.name: r for r in bridge.reports()}
        assert not reports["broken"].ready and "failing on purpose" in (reports["broken"].reason or "")
        assert not reports["missing"].ready and "not found" in (reports["missing"].reason or "")
        assert reports["good"].ready and "echo" in reports["good"].tools
        assert bridge.server_of("echo") == "good"
        assert (await bridge.call(call("echo", text="still works"))).text == "still works"
    assert [c["tool"] for c in tool_log.calls()] == ["echo"]


async def test_a_tool_offered_twice_goes_to_the_first_server(tool_server: Callable[..., MCPServerSettings]) -> None:
    async with MCPBridge([tool_server("one"), tool_server("two")], start_timeout=60) as bridge:
        assert bridge.server_of("add") == "one"
        assert [t.name for t in bridge.tools()].count("add") == 1


class RequireHeader:
    """An ASGI wrapper refusing every HTTP request without ``x-test-token: secret`` (proves the headers are sent)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.refused = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (b"x-test-token", b"secret") not in scope["headers"]:
            self.refused += 1
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no token"})
            return
        await self.app(scope, receive, send)


async def test_streamable_http_server_with_headers(
    run_asgi: Callable[[Any], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "http-calls.jsonl"
    monkeypatch.setenv("LLM_RUNNERS_TOOL_LOG", str(log))  # the HTTP server runs in this process
    guarded = RequireHeader(build_server().streamable_http_app())
    url = run_asgi(guarded) + "/mcp"

    refused = MCPBridge([MCPServerSettings("h", url=url)], start_timeout=30)
    async with refused:
        assert not refused.reports()[0].ready and refused.tools() == []
    assert guarded.refused >= 1

    async with MCPBridge([MCPServerSettings("h", url=url, headers={"x-test-token": "secret"})]) as bridge:
        (report,) = bridge.reports()
        assert report.ready and report.transport == "http"
        result = await bridge.call(call("add", a=1.5, b=2))
        assert json.loads(result.text) == {"result": 3.5}
    assert [json.loads(line)["tool"] for line in log.read_text().splitlines()] == ["add"]


# ------------------------------------------------------------------------------------------------ settings


def test_mcp_servers_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        """
[providers.scripted]
tool_execution = "server"

[[mcp_servers]]
name = "files"
command = "mcp-files"
args = ["--root", "/srv"]
env = { LOG_LEVEL = "warn" }

[[mcp_servers]]
name = "search"
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "Bearer x" }
"""
    )
    settings = load_settings(str(path), env={})
    assert settings.provider("scripted").tool_execution == "server"
    assert settings.provider("other").tool_execution == "client"
    files, search = settings.mcp_servers
    assert (files.name, files.command, files.args, files.env) == (
        "files",
        "mcp-files",
        ["--root", "/srv"],
        {"LOG_LEVEL": "warn"},
    )
    assert (search.url, search.headers, search.command) == (
        "http://127.0.0.1:9000/mcp",
        {"Authorization": "Bearer x"},
        None,
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[mcp_servers]]\ncommand = "x"', "needs a 'name'"),
        ('[[mcp_servers]]\nname = "a"', "needs either 'command'"),
        ('[[mcp_servers]]\nname = "a"\ncommand = "x"\nurl = "http://h"', "needs either 'command'"),
        ('[[mcp_servers]]\nname = "a"\nurl = "http://h"\nargs = ["x"]', "args, env and cwd are for a stdio server"),
        ('[[mcp_servers]]\nname = "a"\ncommand = "x"\nheaders = {a = "b"}', "headers are for a Streamable HTTP"),
        ('[[mcp_servers]]\nname = "a"\ncommand = "x"\n[[mcp_servers]]\nname = "a"\ncommand = "y"', "used twice"),
        ('[[mcp_servers]]\nname = "a"\ncommand = "x"\nport = 1', "unknown key 'mcp_servers[0].port'"),
        ('mcp_servers = "x"', "array of tables"),
        ('[providers.p]\ntool_execution = "both"', "must be 'client' or 'server'"),
    ],
)
def test_bad_mcp_settings_are_refused(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace("[", r"\[")):
        load_settings(str(path), env={})
