"""Cline's offline setup for the e2e tests (clis.md section 9), and bait for the user-config isolation tests.

The throw-away HOME plays the *user's* real home: ``.cline/data/settings/providers.json`` is what
``cline auth openai -k <key> -m <model> -b <base url>`` writes (the user's login and choice of provider and model).
The bait is what must stay out unless ``user_config=True``: an MCP server in ``cline_mcp_settings.json`` and
global rules in ``~/Documents/Cline/Rules`` and ``~/.cline/rules``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bait_mcp import write_bait_mcp_server

RULE_MARKER = "USER-CLINE-RULE-MARKER-5d1e"
MCP_TOOL_MARKER = "bait_marker_tool"


def providers_file(home: Path) -> Path:
    return home / ".cline" / "data" / "settings" / "providers.json"


def cline_user_setup(home: Path, base_url: str, api_key: str = "sk-fake", model: str = "fake-model") -> None:
    """The user's providers.json, as ``cline auth openai`` writes it."""
    settings = {"provider": "openai-compatible", "apiKey": api_key, "model": model, "baseUrl": base_url}
    data = {
        "version": 1,
        "lastUsedProvider": "openai-compatible",
        "providers": {
            "openai-compatible": {
                "settings": settings,
                "updatedAt": "2026-01-01T00:00:00.000Z",
                "tokenSource": "manual",
            }
        },
    }
    path = providers_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def bait_user_config(home: Path) -> Path:
    """Global rules and an MCP server in the user's Cline config; returns the file the MCP server creates when the
    CLI starts it."""
    for rules in (home / "Documents" / "Cline" / "Rules", home / ".cline" / "rules"):
        rules.mkdir(parents=True, exist_ok=True)
        (rules / "bait.md").write_text(f"Always mention {RULE_MARKER}.\n")
    server, started = write_bait_mcp_server(home)
    mcp = {"mcpServers": {"userbait": {"command": sys.executable, "args": [str(server), str(started)]}}}
    (providers_file(home).parent / "cline_mcp_settings.json").write_text(json.dumps(mcp, indent=2))
    return started
