"""The loopback MCP tool host (llm_runners.mcp.toolhost), driven by the official mcp SDK client over Streamable
HTTP: a lease serves its own tools behind its own bearer token, calls reach the lease's handler, and a revoked or
wrong token, or a Host header that is not loopback, is refused."""

from __future__ import annotations

import json

import httpx2
import pytest

from llm_runners.config import MCPServerSettings
from llm_runners.mcp.toolhost import ToolHost
from llm_runners.tools.mcp_bridge import MCPBridge, ToolResult
from llm_runners.types import ToolCall, ToolSpec

pytestmark = pytest.mark.anyio

ADD = ToolSpec(
    name="add",
    description="Add two numbers.",
    parameters={"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
)
SHOUT = ToolSpec(name="shout", parameters={"properties": {"text": {"type": "string"}}})


def call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(id="c", name=name, arguments=json.dumps(arguments))


async def test_each_lease_serves_its_own_tools_until_revoked() -> None:
    seen: list[ToolCall] = []

    async def add(tool_call: ToolCall) -> ToolResult:
        seen.append(tool_call)
        args = json.loads(tool_call.arguments)
        return ToolResult(str(args["a"] + args["b"]))

    async def shout(tool_call: ToolCall) -> ToolResult:
        return ToolResult(json.loads(tool_call.arguments)["text"].upper(), is_error=True)

    host = ToolHost()
    try:
        one = await host.lease([ADD], add)
        two = await host.lease([SHOUT], shout, name="other")
        assert one.token != two.token and one.url == two.url and one.url.startswith("http://127.0.0.1:")
        assert host.active() == 2
        ep = one.endpoint()
        assert ep["name"] == "llm_runners" and ep["tools"] == ["add"]
        assert ep["headers"] == {"Authorization": f"Bearer {one.token}"}

        async with MCPBridge([MCPServerSettings("one", url=ep["url"], headers=ep["headers"])]) as bridge:
            (listed,) = bridge.tools()
            assert listed.name == "add" and listed.parameters["properties"]["a"] == {"type": "number"}
            assert (await bridge.call(call("add", a=2, b=40))).text == "42"
            assert [json.loads(c.arguments) for c in seen] == [{"a": 2, "b": 40}]
            assert one.calls == seen and one.protocol_version
            one.revoke()
            assert host.active() == 1
            with pytest.raises(Exception, match="error"):
                await bridge.call(call("add", a=1, b=1))
            assert len(seen) == 1  # the revoked lease's handler was never called again

        ep2 = two.endpoint()
        async with MCPBridge([MCPServerSettings("two", url=ep2["url"], headers=ep2["headers"])]) as bridge:
            (listed,) = bridge.tools()
            assert listed.name == "shout" and listed.parameters["type"] == "object"  # the missing type added
            result = await bridge.call(call("shout", text="hi"))
            assert (result.text, result.is_error) == ("HI", True)
            bad = await bridge.connections[0].call("add", {"a": 1, "b": 2})  # another lease's tool
            assert bad.is_error and "no tool named 'add'" in bad.text

        async with httpx2.AsyncClient() as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            headers = {"accept": "application/json, text/event-stream"}
            for token in ("", "Bearer nope", f"Bearer {one.token}"):
                answer = await http.post(one.url, json=body, headers={**headers, "authorization": token})
                assert answer.status_code == 401
            rebound = await http.post(
                two.url, json=body, headers={**headers, "authorization": f"Bearer {two.token}", "host": "evil.example"}
            )
            assert rebound.status_code in (403, 421)  # DNS-rebinding protection
    finally:
        await host.aclose()
    assert host.active() == 0
