"""Qwen Code's offline setup for the e2e tests (clis.md section 7).

The fake model API is the user's OpenAI-compatible provider, given the way a Qwen user gives it: ``OPENAI_BASE_URL``,
``OPENAI_API_KEY`` and ``OPENAI_MODEL`` (or, in :func:`bait_user_config`, the ``security.auth`` block of their
``~/.qwen/settings.json``). The runner writes its own private ``QWEN_HOME``; the user's is per test.
"""

from __future__ import annotations

import json
from pathlib import Path

from bait_mcp import write_bait_mcp_server

#: text of the user's own QWEN.md, and the tool of the MCP server of theirs (tests/e2e/bait_mcp.py)
INSTRUCTIONS_MARKER = "USER-QWEN-MD-5521"
MCP_TOOL = "bait_marker_tool"


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


def bait_user_config(user_home: Path, python: str, base_url: str, api_key: str) -> Path:
    """The user's own Qwen setup: their provider in settings.json (``security.auth``: type, key, base URL; and
    ``model.name``), an MCP server, and a QWEN.md with a marker. Returns the file the server leaves when started."""
    user_home.mkdir(parents=True, exist_ok=True)
    (user_home / "QWEN.md").write_text(f"Always say {INSTRUCTIONS_MARKER}.\n")
    server, started = write_bait_mcp_server(user_home)
    settings = {
        "security": {"auth": {"selectedType": "openai", "apiKey": api_key, "baseUrl": base_url}},
        "model": {"name": "users-own-model"},
        "mcpServers": {"bait": {"command": python, "args": [str(server), str(started)], "trust": True}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }
    (user_home / "settings.json").write_text(json.dumps(settings))
    return started
