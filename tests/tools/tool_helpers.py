"""Helpers of the tool tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ToolLog:
    """The calls the test tool server received (its ``$LLM_RUNNERS_TOOL_LOG``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def calls(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
