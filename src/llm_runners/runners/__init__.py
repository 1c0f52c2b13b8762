"""CLI runners: one small dialect module per CLI, and the registry the router and the command line read.

Adding a CLI = one module here + one entry in ``_MODULES`` + one e2e test.
"""

from __future__ import annotations

import importlib

from .base import CLIRunner, Invocation, LineParser, Turn

#: provider name -> "module:Class"
_MODULES: dict[str, str] = {
    "claude_code": "llm_runners.runners.claude_code:ClaudeCodeRunner",
    "codex": "llm_runners.runners.codex:CodexRunner",
    "gemini": "llm_runners.runners.gemini:GeminiRunner",
}


def runner_class(name: str) -> type[CLIRunner]:
    target = _MODULES.get(name)
    if target is None:
        raise KeyError(name)
    module_name, _, attr = target.partition(":")
    cls: type[CLIRunner] = getattr(importlib.import_module(module_name), attr)
    return cls


def _load_registry() -> dict[str, type[CLIRunner]]:
    out: dict[str, type[CLIRunner]] = {}
    for name in _MODULES:
        try:
            out[name] = runner_class(name)
        except (ImportError, AttributeError):  # a dialect module that is absent or broken leaves the others usable
            continue
    return out


#: provider name -> runner class, for every dialect that imports cleanly
REGISTRY: dict[str, type[CLIRunner]] = _load_registry()

__all__ = ["REGISTRY", "CLIRunner", "Invocation", "LineParser", "Turn", "runner_class"]
