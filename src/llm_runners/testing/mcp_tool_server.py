"""A small MCP tool server for tests, on the official ``mcp`` SDK (v2).

``python -m llm_runners.testing.mcp_tool_server`` speaks MCP over stdio; :func:`build_server` gives the same
server for Streamable HTTP (``build_server().streamable_http_app()``).

Tools:

=========  ==========================================================================================
``add``     ``a`` + ``b`` (numbers): the sum, as text and as structured output ``{"result": …}``
``echo``    ``text``: the same text back
``record``  ``note``: appends it to the call log and answers ``recorded: <note>``
``fail``    ``reason``: always a tool error (``isError``) carrying the reason
``slow``    ``seconds``: sleeps that long, then answers ``slept <seconds>``
=========  ==========================================================================================

Every call (each tool, before it runs) is appended as one JSON line ``{"tool", "arguments", "pid"}`` to the file
named by ``$LLM_RUNNERS_TOOL_LOG`` when it is set, so a test can check that a call really reached this process.
``$LLM_RUNNERS_TOOL_SERVER_FAIL`` set to anything makes the process exit with status 3 before it speaks MCP (a
server that fails to start).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio

LOG_ENV = "LLM_RUNNERS_TOOL_LOG"
FAIL_ENV = "LLM_RUNNERS_TOOL_SERVER_FAIL"

__all__ = ["FAIL_ENV", "LOG_ENV", "build_server", "main"]


def _log(tool: str, arguments: dict[str, Any]) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"tool": tool, "arguments": arguments, "pid": os.getpid()}) + "\n")


def build_server(name: str = "llm-runners-test-tools") -> Any:
    """The test server (an ``mcp.server.mcpserver.MCPServer``)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer(name, instructions="Tools for llm-runners tests.")

    @server.tool(description="Add two numbers and return the sum.")
    def add(a: float, b: float) -> dict[str, float]:
        _log("add", {"a": a, "b": b})
        total = a + b
        return {"result": int(total) if total == int(total) else total}

    @server.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        _log("echo", {"text": text})
        return text

    @server.tool(description="Record a note in the call log.")
    def record(note: str) -> str:
        _log("record", {"note": note})
        return f"recorded: {note}"

    @server.tool(description="Always fails with the given reason.")
    def fail(reason: str = "failed on purpose") -> str:
        _log("fail", {"reason": reason})
        raise ToolError(reason)

    @server.tool(description="Sleep for the given number of seconds, then answer.")
    async def slow(seconds: float = 1.0) -> str:
        _log("slow", {"seconds": seconds})
        await anyio.sleep(seconds)
        return f"slept {seconds:g}"

    return server


def main() -> int:
    if os.environ.get(FAIL_ENV):
        print("mcp_tool_server: failing on purpose ($LLM_RUNNERS_TOOL_SERVER_FAIL)", file=sys.stderr)
        return 3
    build_server().run("stdio")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
