"""Qwen Code's offline setup for the e2e tests (clis.md section 7).

The fake model API is the user's OpenAI-compatible provider, given the way a Qwen user gives it: ``OPENAI_BASE_URL``,
``OPENAI_API_KEY`` and ``OPENAI_MODEL`` (or, in :func:`bait_user_config`, the ``security.auth`` block of their
``~/.qwen/settings.json``). The runner writes its own private ``QWEN_HOME``; the user's is per test.
"""

from __future__ import annotations

import json
from pathlib import Path

#: text of the user's own QWEN.md and the name of the tool of an MCP server of theirs
INSTRUCTIONS_MARKER = "USER-QWEN-MD-5521"
MCP_TOOL = "bait_tool"


def qwen_env(home_env: dict[str, str], base_url: str, api_key: str = "sk-fake") -> dict[str, str]:
    """The runner env: the test's HOME/TMPDIR/XDG dirs, the user's ``QWEN_HOME`` and the fake provider."""
    user_home = Path(home_env["HOME"]) / ".qwen"
    user_home.mkdir(parents=True, exist_ok=True)
    return {
        **home_env,
        "QWEN_HOME": str(user_home),
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": api_key,
        "OPENAI_MODEL": "fake-model",
    }


def mcp_server_script(marker: Path, tool: str) -> str:
    """A minimal stdio MCP server that leaves ``marker`` when it is started and offers one tool."""
    return (
        "import pathlib,sys,json\n"
        f"pathlib.Path({str(marker)!r}).write_text('started')\n"
        "for line in sys.stdin:\n"
        "    msg=json.loads(line)\n"
        "    if msg.get('method')=='initialize':\n"
        "        print(json.dumps({'jsonrpc':'2.0','id':msg['id'],'result':{'protocolVersion':"
        "msg['params']['protocolVersion'],'capabilities':{'tools':{}},'serverInfo':{'name':'bait','version':'1'}}}),"
        "flush=True)\n"
        "    elif msg.get('method')=='tools/list':\n"
        "        print(json.dumps({'jsonrpc':'2.0','id':msg['id'],'result':{'tools':[{'name':"
        f"{tool!r},'description':'d','inputSchema':{{'type':'object','properties':{{}}}}}}]}}}}),flush=True)\n"
        "    elif 'id' in msg:\n"
        "        print(json.dumps({'jsonrpc':'2.0','id':msg['id'],'result':{}}),flush=True)\n"
    )


def bait_user_config(user_home: Path, python: str, marker: Path, base_url: str, api_key: str) -> None:
    """The user's own Qwen setup: their provider in settings.json (``security.auth``: type, key, base URL; and
    ``model.name``), an MCP server that leaves ``marker`` when started, and a QWEN.md with a marker."""
    user_home.mkdir(parents=True, exist_ok=True)
    (user_home / "QWEN.md").write_text(f"Always say {INSTRUCTIONS_MARKER}.\n")
    server = user_home / "bait_mcp.py"
    server.write_text(mcp_server_script(marker, MCP_TOOL))
    settings = {
        "security": {"auth": {"selectedType": "openai", "apiKey": api_key, "baseUrl": base_url}},
        "model": {"name": "users-own-model"},
        "mcpServers": {"bait": {"command": python, "args": [str(server)], "trust": True}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }
    (user_home / "settings.json").write_text(json.dumps(settings))
