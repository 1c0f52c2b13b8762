"""Fixtures for the tool tests: the test MCP tool server as [[mcp_servers]] settings, its call log, and a real
uvicorn server in a thread for the HTTP cases (port 0; everything per test, so tests run in parallel)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from tool_helpers import ToolLog

from llm_runners.config import MCPServerSettings
from llm_runners.testing.mcp_tool_server import FAIL_ENV, LOG_ENV


@pytest.fixture
def tool_log(tmp_path: Path) -> ToolLog:
    return ToolLog(tmp_path / "tool-calls.jsonl")


@pytest.fixture
def tool_server(tool_log: ToolLog) -> Callable[..., MCPServerSettings]:
    """``tool_server(name="t", fail=False)``: settings of the stdio test server, logging to ``tool_log``."""

    def make(name: str = "t", *, fail: bool = False) -> MCPServerSettings:
        env = {LOG_ENV: str(tool_log.path)}
        if fail:
            env[FAIL_ENV] = "1"
        return MCPServerSettings(
            name, command=sys.executable, args=["-m", "llm_runners.testing.mcp_tool_server"], env=env
        )

    return make


@pytest.fixture
def run_asgi() -> Iterator[Callable[[Any], str]]:
    """``run_asgi(app)`` serves an ASGI app on 127.0.0.1 (port 0) in a thread and returns ``http://127.0.0.1:<port>``;
    stopped at teardown (its lifespan shutdown included)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> str:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 120  # the lifespan starts the MCP servers: slow on a loaded machine
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)
