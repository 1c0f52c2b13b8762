"""CLI runners: one small dialect module per CLI, and the registry the router and the command line read.

Adding a CLI = one module here + one entry in ``REGISTRY`` + one e2e test.
"""

from __future__ import annotations

from .base import CLIRunner, Invocation, LineParser, Turn
from .claude_code import ClaudeCodeRunner
from .cline import ClineRunner
from .codex import CodexRunner
from .continue_cli import ContinueRunner
from .copilot import CopilotRunner
from .cursor_agent import CursorAgentRunner
from .gemini import GeminiRunner
from .goose import GooseRunner
from .kilo import KiloRunner
from .kiro import KiroRunner
from .opencode import OpenCodeRunner
from .qwen import QwenRunner
from .warp import WarpRunner

#: provider name -> runner class
REGISTRY: dict[str, type[CLIRunner]] = {
    cls.name: cls
    for cls in (
        ClaudeCodeRunner,
        CodexRunner,
        GeminiRunner,
        OpenCodeRunner,
        KiloRunner,
        ClineRunner,
        CopilotRunner,
        QwenRunner,
        ContinueRunner,
        # from published formats only (verified=False): their CLIs cannot be installed here
        CursorAgentRunner,
        GooseRunner,
        WarpRunner,
        KiroRunner,
    )
}


def runner_class(name: str) -> type[CLIRunner]:
    """The runner class of a provider name; KeyError when there is none."""
    return REGISTRY[name]


__all__ = ["REGISTRY", "CLIRunner", "Invocation", "LineParser", "Turn", "runner_class"]
