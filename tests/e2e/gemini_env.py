"""Gemini CLI's offline setup for the e2e tests (clis.md section 5), and bait for the user-config isolation tests.

The throw-away HOME plays the *user's* real home: its ``.gemini/settings.json`` holds only the user's choice of
auth (``security.auth.selectedType``; with ``GOOGLE_GEMINI_BASE_URL`` set the CLI refuses to run without it), which
the runner must carry into its private CLI home. Retries off (``general.maxAttempts: 1``: a 500 is otherwise
retried for ~200 s) is the operator's choice, passed as the runner's ``settings``. (A system settings file would
not do: the CLI skips it unless every directory above it is root-owned and not group/world-writable; /tmp is.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bait_mcp import write_bait_mcp_server

USER_SETTINGS: dict[str, Any] = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
#: the runner's ``settings`` option in the e2e tests (telemetry, usage statistics, updates: the runner's own)
RUNNER_SETTINGS: dict[str, Any] = {"general": {"maxAttempts": 1}}

#: what the bait puts into the user's config; none of it may reach the model API unless ``user_config=True``
GEMINI_MD_MARKER = "USER-GEMINI-MD-MARKER-7f3a"
EXTENSION_MARKER = "USER-EXTENSION-CONTEXT-MARKER-91c2"
MCP_TOOL = "mcp_userbait_bait_marker_tool"


def gemini_env(home_env: dict[str, str], base_url: str, api_key: str | None = "dummy") -> dict[str, str]:
    """Write the user's ``$HOME/.gemini/settings.json``; return the runner env (HOME, TMPDIR, key, base URL).
    ``api_key=None`` leaves the key out of the env."""
    home = Path(home_env["HOME"])
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(USER_SETTINGS, indent=2))
    env = {**home_env, "GOOGLE_GEMINI_BASE_URL": base_url}
    if api_key is not None:
        env["GEMINI_API_KEY"] = api_key
    return env


def bait_user_config(home: Path) -> Path:
    """Give the user's home a GEMINI.md, an extension with a context file and a trusted MCP server (on top of the
    settings :func:`gemini_env` wrote). Returns the file the MCP server creates when the CLI starts it."""
    gemini = home / ".gemini"
    (gemini / "GEMINI.md").write_text(f"Always mention {GEMINI_MD_MARKER}.\n")
    extension = gemini / "extensions" / "baitext"
    extension.mkdir(parents=True)
    (extension / "gemini-extension.json").write_text(json.dumps({"name": "baitext", "version": "1.0.0"}))
    (extension / "GEMINI.md").write_text(f"{EXTENSION_MARKER}\n")
    server, started = write_bait_mcp_server(home)
    settings = json.loads((gemini / "settings.json").read_text())
    # trust: without it the CLI's headless policy keeps an MCP tool out of the request
    settings["mcpServers"] = {
        "userbait": {"command": sys.executable, "args": [str(server), str(started)], "trust": True}
    }
    (gemini / "settings.json").write_text(json.dumps(settings, indent=2))
    return started
