"""GitHub Copilot CLI's offline setup for the e2e tests (clis.md section 8).

The fake model API is a BYOK provider (``COPILOT_PROVIDER_BASE_URL`` / ``_API_KEY`` and ``COPILOT_MODEL``), which
is how a user points Copilot at their own provider; the runner then turns on ``COPILOT_OFFLINE`` itself. The first
run in a fresh cache unpacks ~238 MB into ``$XDG_CACHE_HOME/copilot`` (+0.8 s), so every test of a session shares one
cache directory; HOME, the user's ``COPILOT_HOME`` and the runner's private home stay per test.
"""

from __future__ import annotations

import json
from pathlib import Path

from bait_mcp import write_bait_mcp_server

#: text of the user's own instruction file and the marker an MCP server of theirs leaves when it is started
INSTRUCTIONS_MARKER = "USER-COPILOT-INSTRUCTIONS-7731"
MCP_TOOL = "bait_marker_tool"


def copilot_env(home_env: dict[str, str], base_url: str, cache: Path, api_key: str = "sk-fake") -> dict[str, str]:
    """The runner env: the test's HOME/TMPDIR, the shared unpack cache, the user's ``COPILOT_HOME`` and the fake
    provider."""
    user_home = Path(home_env["HOME"]) / ".copilot"
    user_home.mkdir(parents=True, exist_ok=True)
    return {
        **home_env,
        "XDG_CACHE_HOME": str(cache),
        "COPILOT_HOME": str(user_home),
        "COPILOT_PROVIDER_BASE_URL": base_url,
        "COPILOT_PROVIDER_API_KEY": api_key,
        "COPILOT_MODEL": "fake-model",
    }


def bait_user_config(user_home: Path, python: str) -> Path:
    """The user's own Copilot setup beyond the login: an instruction file and an MCP server. Returns the file the
    server leaves when it is started."""
    user_home.mkdir(parents=True, exist_ok=True)
    (user_home / "copilot-instructions.md").write_text(f"Always say {INSTRUCTIONS_MARKER}.\n")
    server, started = write_bait_mcp_server(user_home)
    config = {
        "mcpServers": {
            "bait": {"type": "local", "command": python, "args": [str(server), str(started)], "tools": ["*"]}
        }
    }
    (user_home / "mcp-config.json").write_text(json.dumps(config))
    return started
