"""Gemini CLI's offline setup for the e2e tests (clis.md section 5): a throw-away HOME whose settings pick API-key
auth and turn retries, telemetry and usage statistics off, and the env pointing the CLI at the fake model API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

USER_SETTINGS: dict[str, Any] = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False, "maxAttempts": 1},
}


def gemini_env(home_env: dict[str, str], base_url: str, api_key: str = "dummy") -> dict[str, str]:
    """Write ``$HOME/.gemini/settings.json`` and return the runner env (HOME, TMPDIR, key, base URL)."""
    home = Path(home_env["HOME"])
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(USER_SETTINGS, indent=2))
    return {**home_env, "GEMINI_API_KEY": api_key, "GOOGLE_GEMINI_BASE_URL": base_url}
