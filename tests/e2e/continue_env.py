"""Continue's offline setup for the e2e tests (clis.md section 11), and bait for the user-config isolation tests.

The throw-away HOME plays the *user's* real home: ``~/.continue/config.yaml`` holds their model definition (the fake
as an ``openai`` provider). The bait, which must stay out unless ``user_config=True``: an MCP server and a rule in
that same config.yaml, and a global rule file in ``~/.continue/rules``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from bait_mcp import write_bait_mcp_server

RULE_MARKER = "USER-CONTINUE-RULE-MARKER-3b8a"
MCP_TOOL_MARKER = "bait_marker_tool"


def config_file(home: Path) -> Path:
    return home / ".continue" / "config.yaml"


def continue_user_setup(
    home: Path, base_url: str, api_key: str = "sk-fake", model: str = "fake-model", bait: bool = False
) -> Path | None:
    """The user's config.yaml with one model; with ``bait`` also an MCP server and rules. Returns the file the MCP
    server creates when the CLI starts it (with ``bait``)."""
    config: dict[str, object] = {
        "name": "user-assistant",
        "version": "1.0.0",
        "schema": "v1",
        "models": [
            {
                "name": "user-model",
                "provider": "openai",
                "model": model,
                "apiBase": base_url,
                "apiKey": api_key,
                "roles": ["chat", "edit", "apply"],
            }
        ],
    }
    started = None
    if bait:
        server, started = write_bait_mcp_server(home)
        config["mcpServers"] = [{"name": "userbait", "command": sys.executable, "args": [str(server), str(started)]}]
        config["rules"] = [f"Always mention {RULE_MARKER}."]
        rules = home / ".continue" / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        (rules / "bait.md").write_text(f"Also mention {RULE_MARKER}-FILE.\n")
    path = config_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return started
