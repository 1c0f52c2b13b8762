"""OpenCode's and Kilo's offline setup for the e2e tests (clis.md sections 6 and 10), and bait for the isolation tests.

The throw-away HOME plays the *user's* real home: its ``$XDG_CONFIG_HOME/<app>/`` config defines the user's provider
(``fake``, an OpenAI-compatible endpoint at the fake model API, with two models), their default model and
``enabled_providers`` (so Kilo never looks up its gateway), which the runner must carry over. The bait: the same
config also names an MCP server, an instructions file and an agent, the config dir holds an AGENTS.md, and
``~/.<app>/agent/`` an agent file; none of it may reach the model unless ``user_config=True``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bait_mcp import write_bait_mcp_server

from llm_runners.runners.kilo import KiloRunner
from llm_runners.runners.opencode import OpenCodeRunner

INSTRUCTIONS_MARKER = "USER-INSTRUCTIONS-MARKER-5be1"
AGENTS_MD_MARKER = "USER-AGENTS-MD-MARKER-a7d0"
MCP_TOOL = "userbait_bait_marker_tool"


@dataclass(frozen=True)
class Flavor:
    """What differs between OpenCode and its fork Kilo in these tests."""

    cli: str
    runner: type[OpenCodeRunner]
    #: the user's global config file name
    config_name: str

    @property
    def app(self) -> str:
        return self.runner.app


OPENCODE = Flavor("opencode", OpenCodeRunner, "opencode.json")
KILO = Flavor("kilo", KiloRunner, "kilo.json")


def user_config(base_url: str, api_key: str = "sk-fake") -> dict[str, Any]:
    return {
        "model": "fake/fake-model",
        "enabled_providers": ["fake"],
        "provider": {
            "fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": {"baseURL": base_url, "apiKey": api_key},
                "models": {"fake-model": {"name": "Fake Model"}, "fake-model-2": {"name": "Fake Model 2"}},
            }
        },
    }


def write_user_config(flavor: Flavor, home: Path, base_url: str, api_key: str = "sk-fake") -> Path:
    """The user's global config (XDG_CONFIG_HOME is ``home/.config`` in the e2e env); returns its path."""
    path = home / ".config" / flavor.app / flavor.config_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(user_config(base_url, api_key), indent=2))
    return path


def bait_user_config(flavor: Flavor, home: Path) -> Path:
    """Add an MCP server, an instructions file, an AGENTS.md and a home agent dir to the user's config (on top of
    :func:`write_user_config`). Returns the file the MCP server creates when the CLI starts it."""
    config_dir = home / ".config" / flavor.app
    path = config_dir / flavor.config_name
    config = json.loads(path.read_text())
    server, started = write_bait_mcp_server(home)
    rules = home / "RULES.md"
    rules.write_text(f"Always mention {INSTRUCTIONS_MARKER}.\n")
    config["mcp"] = {"userbait": {"type": "local", "command": [sys.executable, str(server), str(started)]}}
    config["instructions"] = [str(rules)]
    path.write_text(json.dumps(config, indent=2))
    (config_dir / "AGENTS.md").write_text(f"{AGENTS_MD_MARKER}\n")
    return started
