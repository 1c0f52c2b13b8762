"""The tool host: a loopback MCP endpoint of our own that serves a request's tools to a CLI's own MCP client.

A CLI agent is trained on its own tool-calling format, so where a CLI can take MCP servers (Claude Code's
``--mcp-config``, ACP's ``session/new mcpServers``), the tools a request brings are served to it over MCP instead
of being described in the prompt (the text tool protocol stays the fallback). One host per owner (the server, or a
library :class:`~llm_runners.tools.Agent`) listens on 127.0.0.1 (a port from the OS) and speaks Streamable HTTP
(the official ``mcp`` SDK's low-level server, stateless, DNS-rebinding protection on). Each request gets a
:class:`Lease`: its tools, the handler that answers their calls, and a random bearer token; the token is the only
way to reach that request's tools and is revoked when the request ends (a later call gets 401).

Facts measured with Claude Code 2.1.197 (see /work/brief/facts.md and ``tests/e2e/test_mcp_tools.py``): it
negotiates the handshake-era revision 2025-11-25 (``initialize``, then ``tools/list``), sees tools listed with only
``name`` / ``description`` / ``inputSchema``, and connects to MCP servers in the background unless
``MCP_CONNECTION_NONBLOCKING=0`` (the runner sets it, or the first model request would go out without the tools).
A tool result reaches the model as its text content (its ``structuredContent`` when there is one, which the host
never sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..tools.mcp_bridge import ToolResult
from ..tools.protocol import new_call_id
from ..types import ToolCall, ToolSpec

__all__ = ["DEFAULT_SERVER_NAME", "MCP_ENDPOINT_KEY", "Lease", "ToolHandler", "ToolHost"]

log = logging.getLogger(__name__)

#: ``ChatRequest.extra`` key: the loopback MCP endpoint a CLI runner hands its CLI (:meth:`Lease.endpoint`)
MCP_ENDPOINT_KEY = "mcp_endpoint"
#: the MCP server name the CLI sees; Claude Code names the tools ``mcp__llm_runners__<tool>``
DEFAULT_SERVER_NAME = "llm_runners"

ToolHandler = Callable[[ToolCall], Awaitable[ToolResult]]

_LEASE = "llm_runners.lease"


@dataclass
class Lease:
    """One request's tools on the host, behind ``token``."""

    host: ToolHost
    token: str
    tools: list[ToolSpec]
    handler: ToolHandler
    server_name: str = DEFAULT_SERVER_NAME
    #: calls answered so far, in order
    calls: list[ToolCall] = field(default_factory=list)
    revoked: bool = False
    #: the MCP revision the CLI's client negotiated (seen on its ``tools/list``)
    protocol_version: str | None = None

    @property
    def url(self) -> str:
        return self.host.url

    def endpoint(self) -> dict[str, Any]:
        """What a CLI runner needs (``ChatRequest.extra[MCP_ENDPOINT_KEY]``): the server name, the URL, the headers
        and the tool names (plain JSON)."""
        return {
            "name": self.server_name,
            "url": self.url,
            "headers": {"Authorization": f"Bearer {self.token}"},
            "tools": [t.name for t in self.tools],
        }

    def revoke(self) -> None:
        self.revoked = True
        self.host._leases.pop(self.token, None)


class _QuietServer:
    """uvicorn's server without its signal handlers (the host runs inside someone else's process)."""

    @staticmethod
    def build(app: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        return Server(config)


class ToolHost:
    """The loopback endpoint (see the module docstring). Started on first use by :meth:`lease`; :meth:`aclose`
    stops it (every lease is revoked)."""

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the tool host is not started")
        return f"http://127.0.0.1:{self.port}/mcp"

    def active(self) -> int:
        """Leases not revoked yet (requests whose tools are being served)."""
        return len(self._leases)

    async def lease(self, tools: Sequence[ToolSpec], handler: ToolHandler, *, name: str = DEFAULT_SERVER_NAME) -> Lease:
        """Serve ``tools`` (their calls answered by ``handler``) behind a fresh token until :meth:`Lease.revoke`."""
        await self.start()
        token = secrets.token_urlsafe(32)
        lease = Lease(self, token, list(tools), handler, name)
        self._leases[token] = lease
        return lease

    @contextlib.asynccontextmanager
    async def leased(self, tools: Sequence[ToolSpec], handler: ToolHandler, *, name: str = DEFAULT_SERVER_NAME) -> Any:
        lease = await self.lease(tools, handler, name=name)
        try:
            yield lease
        finally:
            lease.revoke()

    async def start(self) -> None:
        async with self._lock:
            if self._task is not None and not self._task.done():
                return
            server = _QuietServer.build(self._app())
            self._server = server
            self._task = asyncio.get_running_loop().create_task(server.serve(), name="llm-runners-tool-host")
            while not server.started:
                if self._task.done():
                    error = self._task.exception() if not self._task.cancelled() else None
                    raise RuntimeError(f"the MCP tool host did not start: {error!r}")
                await asyncio.sleep(0.005)
            self.port = server.servers[0].sockets[0].getsockname()[1]
            log.info("MCP tool host listening on %s", self.url)

    async def aclose(self) -> None:
        for lease in list(self._leases.values()):
            lease.revoke()
        task, server = self._task, self._server
        self._task = None
        if task is None or task.done():
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------------------------------ the app
    def _app(self) -> Any:
        import mcp_types as types
        from mcp.server.lowlevel import Server

        def lease_of(ctx: Any) -> Lease:
            request = getattr(ctx, "request", None)
            lease = request.scope.get(_LEASE) if request is not None else None
            if not isinstance(lease, Lease) or lease.revoked:
                raise PermissionError("this tool lease has been revoked")
            return lease

        async def list_tools(ctx: Any, params: Any) -> Any:
            lease = lease_of(ctx)
            if lease.protocol_version is None:
                lease.protocol_version = getattr(ctx, "protocol_version", None)
                log.info("MCP tool host: a client listed the tools (MCP revision %s)", lease.protocol_version)
            return types.ListToolsResult(
                tools=[
                    types.Tool(name=t.name, description=t.description or t.name, input_schema=_object_schema(t))
                    for t in lease.tools
                ]
            )

        async def call_tool(ctx: Any, params: Any) -> Any:
            lease = lease_of(ctx)
            if params.name not in {t.name for t in lease.tools}:
                return _error_result(types, f"no tool named {params.name!r}")
            meta: Any = getattr(params, "meta", None)
            if meta is not None and not isinstance(meta, dict):
                meta = meta.model_dump(by_alias=True)
            call_id = meta.get("claudecode/toolUseId") if isinstance(meta, dict) else None
            call = ToolCall(
                id=call_id if isinstance(call_id, str) and call_id else new_call_id(),
                name=params.name,
                arguments=json.dumps(params.arguments or {}, separators=(",", ":"), ensure_ascii=False),
            )
            lease.calls.append(call)
            try:
                result = await lease.handler(call)
            except Exception as exc:
                log.warning("tool %s failed in the host: %r", call.name, exc)
                return _error_result(types, f"the tool {call.name} failed: {exc}")
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=result.text)], is_error=result.is_error
            )

        server: Any = Server(DEFAULT_SERVER_NAME, on_list_tools=list_tools, on_call_tool=call_tool)
        inner = server.streamable_http_app(streamable_http_path="/mcp", stateless_http=True, host="127.0.0.1")
        leases = self._leases

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                lease = leases.get(_bearer(scope))
                if lease is None:
                    await send(
                        {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
                    )
                    await send({"type": "http.response.body", "body": b"unknown or revoked token"})
                    return
                scope[_LEASE] = lease
            await inner(scope, receive, send)

        return app


def _bearer(scope: Any) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            text = bytes(value).decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip()
    return ""


def _object_schema(tool: ToolSpec) -> dict[str, Any]:
    schema = dict(tool.parameters or {})
    schema.setdefault("type", "object")
    if schema["type"] == "object":
        schema.setdefault("properties", {})
    return schema


def _error_result(types: Any, text: str) -> Any:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
