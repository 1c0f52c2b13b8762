"""ACP: one client and one runner for every agent that speaks the Agent Client Protocol (see :mod:`.runner`)."""

from .agent import AgentProcess, permission_answer
from .dialects import DIALECTS, AcpDialect
from .events import UpdateMapper
from .runner import MCP_SERVERS_KEY, AcpRunner

__all__ = [
    "DIALECTS",
    "MCP_SERVERS_KEY",
    "AcpDialect",
    "AcpRunner",
    "AgentProcess",
    "UpdateMapper",
    "permission_answer",
]
