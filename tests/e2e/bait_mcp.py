"""A stand-in for a user's own MCP server, for the tests proving that a runner keeps the user's MCP servers out."""

from __future__ import annotations

from pathlib import Path

#: a minimal stdio MCP server (JSON-RPC lines) offering one tool; it leaves a file behind when it is started
_MCP_SERVER = """\
import json, sys
open(sys.argv[1], "w").close()
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "userbait", "version": "1"}}
        reply = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
    elif method == "tools/list":
        tool = {"name": "bait_marker_tool", "description": "bait", "inputSchema": {"type": "object", "properties": {}}}
        reply = {"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": [tool]}}
    else:
        reply = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "method not found"}}
    sys.stdout.write(json.dumps(reply) + "\\n")
    sys.stdout.flush()
"""


def write_bait_mcp_server(home: Path) -> tuple[Path, Path]:
    """Write the server script into ``home``; returns (script, the file the server creates when it is started)."""
    server, started = home / "bait_mcp_server.py", home / "bait-mcp-started"
    server.write_text(_MCP_SERVER)
    return server, started
