"""Tools: the text tool-call protocol, structured output, the MCP tool bridge and the agent loop.

``Agent`` and ``MCPBridge`` need the ``mcp`` SDK (the ``mcp`` extra); they are imported on first use, so the rest of
the package works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent
    from .mcp_bridge import MCPBridge

__all__ = ["Agent", "MCPBridge"]


def __getattr__(name: str) -> Any:
    if name == "Agent":
        from .agent import Agent

        return Agent
    if name == "MCPBridge":
        from .mcp_bridge import MCPBridge

        return MCPBridge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
