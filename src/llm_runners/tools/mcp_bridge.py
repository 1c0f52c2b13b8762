"""MCP tool servers as a tool box: connect to each, list its tools, route a call to the server that offers it.

A server is a ``[[mcp_servers]]`` entry (:class:`~llm_runners.config.MCPServerSettings`): ``command`` / ``args`` /
``env`` for stdio, ``url`` / ``headers`` for Streamable HTTP. The client side is the official ``mcp`` SDK (v2,
``mcp.Client``), with one difference for stdio: the SDK never spawns the server. The process layer does
(:func:`llm_runners.process.start`: environment allow-list, own process group, watchdog, killed at close), and
:func:`process_transport` hands the SDK the process's stdin and stdout as JSON-RPC message streams, as
:mod:`llm_runners.acp.transport` does for ACP agents.

Each connection lives in a task of its own (the SDK's client is a context manager with task groups inside, which
must be entered and left in one task), so :class:`MCPBridge` can be started in one place (the server's lifespan,
an ``async with``) and called from any request. A server that fails to start (cannot be spawned, exits, does
not answer ``initialize`` within ``start_timeout``, or its ``tools/list`` fails) is logged, reported by
:meth:`MCPBridge.reports`, and left out; the others keep working. :meth:`MCPBridge.aclose` ends every connection
and kills every stdio server's process group.

Tool names: a tool keeps its server's name when no other server offers the same name; a clash is resolved by the
first server in the configuration order (a warning names the one left out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from .. import process
from ..config import MCPServerSettings
from ..errors import InvalidRequest, LLMError, UpstreamError
from ..types import ToolCall, ToolSpec

if TYPE_CHECKING:
    from mcp import Client
    from mcp.client._transport import TransportStreams

__all__ = ["MCPBridge", "MCPConnection", "ServerReport", "ToolResult", "process_transport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave: its text (the content blocks rendered as text), whether it is an error, and the
    structured content when the tool returned one."""

    text: str
    is_error: bool = False
    structured: Any = None


@dataclass
class ServerReport:
    """One MCP server's state, for logs and readiness: ``ready`` with its tools, or the reason it is left out."""

    name: str
    transport: str
    ready: bool
    tools: list[str] = field(default_factory=list)
    reason: str | None = None
    protocol_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "transport": self.transport, "ready": self.ready, "tools": self.tools}
        if self.protocol_version:
            out["protocol_version"] = self.protocol_version
        if self.reason:
            out["reason"] = self.reason
        return out


def render_content(blocks: Sequence[Any]) -> str:
    """MCP content blocks as text for a model: text as is, anything else as its JSON (images are named, not sent)."""
    parts: list[str] = []
    for block in blocks:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(str(block.text))
        elif kind == "image":
            parts.append(f"[image {getattr(block, 'mime_type', '')}]")
        else:
            dump = block.model_dump(mode="json", exclude_none=True) if hasattr(block, "model_dump") else block
            parts.append(json.dumps(dump, ensure_ascii=False))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- stdio transport


@contextlib.asynccontextmanager
async def process_transport(proc: process.Process) -> AsyncIterator[TransportStreams]:
    """The SDK's transport streams over a running stdio MCP server: one JSON-RPC message per line each way.
    Leaving the context closes stdin, gives the server a moment to exit, then kills its group."""
    import mcp_types
    from mcp.shared.message import SessionMessage

    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](16)

    stdout_ended = anyio.Event()

    async def reader() -> None:
        async with read_writer:
            try:
                async for line in proc.lines():
                    proc.reset_output_count()  # the cap is per message for a long-lived server, not per lifetime
                    if not line.strip():
                        continue
                    try:
                        message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except ValueError as exc:
                        log.debug("%s: skipped a stdout line that is no JSON-RPC message: %r", proc.name, line[:200])
                        await read_writer.send(exc)
                        continue
                    await read_writer.send(SessionMessage(message))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            except LLMError as exc:  # killed, output cap: the server is gone
                log.debug("%s: reading the MCP server's stdout failed: %r", proc.name, exc)
            finally:
                stdout_ended.set()

    async def writer() -> None:
        async with write_reader:
            try:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await proc.send(data.encode() + b"\n")
            except (LLMError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
                log.debug("%s: writing to the MCP server failed: %r", proc.name, exc)
                await read_writer.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield read_stream, write_stream
        finally:
            with anyio.CancelScope(shield=True):
                await write_stream.aclose()
                await proc.close_stdin()
                with anyio.move_on_after(1.0):
                    await stdout_ended.wait()  # a moment to exit on its own, then its group is killed
                await proc.kill()
                await read_stream.aclose()
            tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------- one connection


class MCPConnection:
    """One MCP server, connected in a task of its own until :meth:`aclose`."""

    def __init__(
        self, settings: MCPServerSettings, *, start_timeout: float = 30.0, call_timeout: float = 300.0
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self.tools: list[ToolSpec] = []
        self.client: Client | None = None
        self.proc: process.Process | None = None
        self.report = ServerReport(
            self.name, "stdio" if settings.command else "http", ready=False, reason="not started"
        )
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._server: Any = None  # an in-process MCPServer (see in_process)

    @classmethod
    def in_process(cls, name: str, server: Any) -> MCPConnection:
        """A connection to an ``MCPServer`` running in this process (the Agent's Python function tools)."""
        conn = cls(MCPServerSettings(name=name))
        conn._server = server
        conn.report.transport = "in-process"
        return conn

    @property
    def ready(self) -> bool:
        return self.client is not None and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Connect and list the tools; raises (an :class:`UpstreamError` naming the server) when it cannot."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mcp-server-{self.name}")
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, self._task}, timeout=self.start_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self.client is None:
            if self._task.done():
                error = self._error or UpstreamError("the connection ended at once")
            else:
                error = UpstreamError(f"no answer within {self.start_timeout:g} s")
            await self.aclose()
            reason = _describe(error)
            stderr = self.proc.stderr_tail().strip() if self.proc is not None else ""
            if stderr:
                reason += f" (stderr: {stderr[-500:]})"
            self.report = ServerReport(self.name, self.report.transport, ready=False, reason=reason)
            raise UpstreamError(f"MCP server {self.name!r} did not start: {reason}")
        self.report = ServerReport(
            self.name,
            self.report.transport,
            ready=True,
            tools=[t.name for t in self.tools],
            protocol_version=self.client.protocol_version,
        )

    async def _run(self) -> None:
        from mcp import Client

        try:
            async with contextlib.AsyncExitStack() as stack:
                transport: Any
                if self._server is not None:
                    transport = self._server
                elif self.settings.command:
                    self.proc = await process.start(
                        process.ProcessSpec(
                            argv=[self.settings.command, *self.settings.args],
                            env=self.settings.env,
                            cwd=self.settings.cwd,
                            keep_stdin_open=True,
                            timeout=None,
                            provider=f"mcp:{self.name}",
                        )
                    )
                    stack.push_async_callback(self.proc.kill)
                    transport = process_transport(self.proc)
                else:
                    from mcp.client.streamable_http import streamable_http_client
                    from mcp.shared._httpx_utils import create_mcp_http_client

                    assert self.settings.url is not None
                    http = await stack.enter_async_context(create_mcp_http_client(headers=self.settings.headers))
                    transport = streamable_http_client(self.settings.url, http_client=http)
                client = await stack.enter_async_context(
                    Client(transport, read_timeout_seconds=self.call_timeout, cache=None)
                )
                listing = await client.list_tools()
                tools = list(listing.tools)
                cursor = listing.next_cursor
                while cursor:
                    listing = await client.list_tools(cursor=cursor)
                    tools += listing.tools
                    cursor = listing.next_cursor
                self.tools = [
                    ToolSpec(name=t.name, description=t.description or "", parameters=dict(t.input_schema))
                    for t in tools
                ]
                self.client = client
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:
            self._error = exc
            if self.client is not None:
                log.warning("MCP server %s: the connection ended: %s", self.name, _describe(exc))
        finally:
            self.client = None

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        client = self.client
        if client is None:
            raise UpstreamError(f"MCP server {self.name!r} is not connected", provider=f"mcp:{self.name}")
        try:
            result = await client.call_tool(name, arguments)
        except Exception as exc:
            raise UpstreamError(
                f"MCP server {self.name!r}: calling {name!r} failed: {_describe(exc)}", provider=f"mcp:{self.name}"
            ) from exc
        return ToolResult(render_content(result.content), result.is_error, result.structured_content)

    async def aclose(self) -> None:
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.proc is not None:
            await self.proc.kill()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, LLMError):
        return exc.message
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------- the tool box


class MCPBridge:
    """Several MCP servers as one tool box. ``async with MCPBridge(settings):`` or :meth:`start` / :meth:`aclose`."""

    def __init__(
        self, servers: Sequence[MCPServerSettings], *, start_timeout: float = 30.0, call_timeout: float = 300.0
    ) -> None:
        self.connections = [MCPConnection(s, start_timeout=start_timeout, call_timeout=call_timeout) for s in servers]
        self._owners: dict[str, MCPConnection] = {}
        self.started = False

    async def start(self) -> None:
        """Connect to every server at once; one that fails is logged and left out (see :meth:`reports`)."""
        began = time.monotonic()

        async def one(conn: MCPConnection) -> None:
            try:
                await conn.start()
            except Exception as exc:
                log.warning("%s; it is left out, the other MCP servers are used", _describe(exc))

        async with anyio.create_task_group() as tg:
            for conn in self.connections:
                tg.start_soon(one, conn)
        self._owners.clear()
        for conn in self.connections:
            for tool in conn.tools if conn.ready else ():
                other = self._owners.get(tool.name)
                if other is not None:
                    log.warning("MCP tool %r of %s is left out: %s offers it too", tool.name, conn.name, other.name)
                    continue
                self._owners[tool.name] = conn
        self.started = True
        ready = [c.name for c in self.connections if c.ready]
        if self.connections:
            log.info(
                "MCP servers ready in %.2f s: %s (%d tools)",
                time.monotonic() - began,
                ", ".join(ready) or "none",
                len(self._owners),
            )

    def reports(self) -> list[ServerReport]:
        return [c.report for c in self.connections]

    def tools(self) -> list[ToolSpec]:
        """The tools of every connected server (each name once)."""
        return [t for name, conn in self._owners.items() if conn.ready for t in conn.tools if t.name == name]

    def server_of(self, tool: str) -> str | None:
        conn = self._owners.get(tool)
        return conn.name if conn is not None and conn.ready else None

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one call on the server offering it. Arguments that are no JSON object, or a tool no server offers,
        raise :class:`InvalidRequest`; a server that fails raises :class:`UpstreamError`. A tool's own failure is
        a result with ``is_error`` (the model sees it and may try again)."""
        conn = self._owners.get(call.name)
        if conn is None or not conn.ready:
            raise InvalidRequest(f"no MCP server offers the tool {call.name!r}", param="tools")
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            return ToolResult(f"the arguments of {call.name} are not valid JSON: {call.arguments[:200]}", True)
        if not isinstance(arguments, dict):
            return ToolResult(f"the arguments of {call.name} must be a JSON object", True)
        return await conn.call(call.name, arguments)

    async def aclose(self) -> None:
        for conn in self.connections:
            await conn.aclose()
        self._owners.clear()

    async def __aenter__(self) -> MCPBridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
