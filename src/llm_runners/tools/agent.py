"""The agent loop: the model's tool calls run on MCP tool servers and the results go back to the model, until it
answers (or ``max_turns`` model turns have been made).

::

    from llm_runners.tools import Agent
    from llm_runners.config import MCPServerSettings

    files = MCPServerSettings("files", command="mcp-files")
    async with Agent(provider, tools=[my_function], mcp_servers=[files]) as agent:
        response = await agent.complete(ChatRequest(messages=[Message(role="user", content="…")]))
        response.content      # the final answer
        response.tool_runs    # every call that was executed, its server and its result

An :class:`Agent` is a :class:`~llm_runners.provider.Provider` around a provider, so everything that takes a
provider takes it (the server wraps a route's provider in one when a request runs its tools on the server, see
:class:`ServerTools`). Each model turn is one ``stream()`` of the inner provider with the tools of every MCP
server plus the request's own tools. The calls reach the loop as :class:`~llm_runners.types.ToolCallEvent`\\ s,
whichever way the provider makes them: native tool calls where it has them (HTTP APIs), the text tool protocol
(:mod:`llm_runners.tools.protocol`, through the :class:`~llm_runners.wrappers.features.FeatureAdapter`)
otherwise; the Agent adds the adapter itself when the provider it is given has none.

Choices:

- Text streams as it is generated, every turn's (so the final answer streams as it is written); tool calls the
  loop executes are not passed on, the final ``Done`` lists them in ``tool_runs``, in order.
- A call to one of the *request's* tools (not offered by an MCP server) cannot run here: it ends the loop and goes
  back to the caller as a normal tool call (``finish_reason`` ``tool_calls``), the calls of that turn that an MCP
  server offers being run first.
- A tool that fails (``isError``) or arguments that are no JSON object give an error *result* the model sees and
  can correct; an MCP server that cannot answer at all fails the request (an :class:`UpstreamError`).
- After ``max_turns`` turns that all called tools, the loop stops with what was said so far, ``finish_reason``
  ``length`` and a warning.
- Usage of every turn is passed on (the totals add up).
- A provider whose CLI takes MCP servers (``capabilities.mcp_tools``: Claude Code) runs the loop itself: the MCP
  servers' tools are served to it for the request on the loopback tool host (:mod:`llm_runners.mcp.toolhost`), the
  CLI calls them natively and each call is run on its MCP server and answered at once. ``max_turns`` is then the
  CLI's business; the calls are listed in ``tool_runs`` all the same.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from ..config import MCPServerSettings, Settings
from ..errors import InvalidRequest, UpstreamError
from ..mcp.toolhost import MCP_ENDPOINT_KEY, ToolHost
from ..provider import Provider
from ..types import (
    ChatRequest,
    Done,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallEvent,
    ToolRun,
    ToolSpec,
    UsageEvent,
)
from ..wrappers.base import Wrapper
from .held import CLIENT_TOOLS_KEY, ClientToolsOverMCP, HeldCalls, wants_mcp_client_tools
from .mcp_bridge import MCPBridge, MCPConnection, ToolResult

if TYPE_CHECKING:
    from ..router import Route

__all__ = [
    "DEFAULT_MAX_TURNS",
    "MAX_TURNS_KEY",
    "TOOL_EXECUTION_KEY",
    "Agent",
    "ServerTools",
    "agent_options",
    "render_tool_runs",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_TURNS = 10
#: ``ChatRequest.extra`` keys a front door fills from the body's ``llm_runners`` object
TOOL_EXECUTION_KEY = "tool_execution"
MAX_TURNS_KEY = "max_turns"
_OWN_KEYS = (TOOL_EXECUTION_KEY, MAX_TURNS_KEY, CLIENT_TOOLS_KEY)


def agent_options(body: Any) -> dict[str, Any]:
    """The ``llm_runners`` object of a request body (``{"llm_runners": {"tool_execution": "server", "max_turns":
    4}}``, what the OpenAI SDK sends with ``extra_body``) as ``ChatRequest.extra`` entries; checked here, so a bad
    value is a 400 naming the parameter."""
    options = body.get("llm_runners") if isinstance(body, dict) else None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidRequest("llm_runners: expected an object", param="llm_runners")
    out: dict[str, Any] = {}
    mode = options.get(TOOL_EXECUTION_KEY)
    if mode is not None:
        if mode not in ("client", "server"):
            raise InvalidRequest(
                f"llm_runners.tool_execution: expected 'client' or 'server', got {mode!r}",
                param="llm_runners.tool_execution",
            )
        out[TOOL_EXECUTION_KEY] = mode
    client = options.get(CLIENT_TOOLS_KEY)
    if client is not None:
        if client not in ("text", "mcp"):
            raise InvalidRequest(
                f"llm_runners.client_tools: expected 'text' or 'mcp', got {client!r}", param="llm_runners.client_tools"
            )
        out[CLIENT_TOOLS_KEY] = client
    turns = options.get(MAX_TURNS_KEY)
    if turns is not None:
        if isinstance(turns, bool) or not isinstance(turns, int) or not 1 <= turns <= 100:
            raise InvalidRequest(
                "llm_runners.max_turns: expected an integer from 1 to 100", param="llm_runners.max_turns"
            )
        out[MAX_TURNS_KEY] = turns
    return out


def render_tool_runs(runs: Sequence[ToolRun]) -> list[dict[str, Any]]:
    """The calls the server executed, as every front door lists them in its answer's ``llm_runners.tool_runs``:
    ``{"id", "name", "arguments" (JSON text), "server", "result", "is_error"}``."""
    return [
        {
            "id": r.call.id,
            "name": r.call.name,
            "arguments": r.call.arguments,
            "server": r.server,
            "result": r.result,
            "is_error": r.is_error,
        }
        for r in runs
    ]


def _adapted(provider: Provider) -> Provider:
    """``provider`` with a feature adapter somewhere in its chain (added around it when there is none), so tools
    reach a provider without native ones through the text tool protocol."""
    from ..wrappers.features import FeatureAdapter

    inner: Any = provider
    while isinstance(inner, Provider):
        if isinstance(inner, FeatureAdapter):
            return provider
        inner = getattr(inner, "inner", None)
    return FeatureAdapter(provider)


def _local_server(tools: Sequence[Callable[..., Any]]) -> Any:
    """Python functions as an in-process MCP server (the SDK derives each tool's schema from the signature)."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("local")
    for fn in tools:
        if not callable(fn):
            raise TypeError(f"Agent tools must be functions, got {type(fn).__name__}")
        server.add_tool(fn, description=inspect.getdoc(fn) or None)
    return server


class Agent(Wrapper):
    """A provider that runs the agent loop around ``provider`` (see the module docstring).

    ``tools``: Python functions (sync or async) offered as tools, served in-process; ``mcp_servers``: MCP servers
    to start (settings or dicts of them), or ``bridge``: an :class:`MCPBridge` that is already started and that the
    Agent does not close (the server shares one between requests).
    """

    def __init__(
        self,
        provider: Provider,
        tools: Sequence[Callable[..., Any]] = (),
        mcp_servers: Sequence[MCPServerSettings | dict[str, Any]] = (),
        max_turns: int = DEFAULT_MAX_TURNS,
        *,
        bridge: MCPBridge | None = None,
        host: ToolHost | None = None,
    ) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        super().__init__(provider)
        self.model = _adapted(provider)
        self.max_turns = max_turns
        self._owned: MCPBridge | None = None
        if bridge is not None and (tools or mcp_servers):
            raise ValueError("give either bridge, or tools / mcp_servers for the Agent to start")
        if bridge is None:
            settings = [s if isinstance(s, MCPServerSettings) else MCPServerSettings(**s) for s in mcp_servers]
            bridge = MCPBridge(settings)
            if tools:
                bridge.connections.insert(0, MCPConnection.in_process("local", _local_server(tools)))
            self._owned = bridge
        self.bridge = bridge
        self.host = host
        self._own_host: ToolHost | None = None

    # -- the MCP servers it started -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._owned is not None and not self._owned.started:
            await self._owned.start()

    async def aclose(self) -> None:
        """Close the MCP servers this Agent started (not the provider, not a bridge it was given)."""
        if self._owned is not None:
            await self._owned.aclose()
        if self._own_host is not None:
            await self._own_host.aclose()
            self._own_host = None

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    # -- the loop ---------------------------------------------------------------------------------------------
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._loop(request)

    async def _loop(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        await self.start()
        served = self.bridge.tools()
        names = {t.name for t in served}
        own = [t for t in request.tools if t.name not in names]
        tools: list[ToolSpec] = [*served, *own]
        extra = {k: v for k, v in request.extra.items() if k not in _OWN_KEYS}
        max_turns = request.extra.get(MAX_TURNS_KEY) or self.max_turns
        messages = list(request.messages)
        runs: list[ToolRun] = []
        warnings: list[str] = []
        if served and self.inner.capabilities.mcp_tools:
            async for event in self._native(request, served, own, extra, runs):
                yield event
            return
        for turn in range(1, max_turns + 1):
            step = request.model_copy(update={"messages": messages, "tools": tools, "extra": extra})
            text: list[str] = []
            calls: list[ToolCall] = []
            done: Done | None = None
            async with aclosing(self.model.stream(step)) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, TextDelta | ReasoningDelta | UsageEvent):
                        if isinstance(event, TextDelta):
                            text.append(event.text)
                        yield event
                    elif isinstance(event, ToolCallEvent):
                        calls.append(event.call)
                    elif isinstance(event, Done):
                        done = event
            if done is None:
                raise UpstreamError("the provider's stream ended without a final event", provider=self.name)
            warnings += done.warnings
            mine = [c for c in calls if c.name in names]
            theirs = [c for c in calls if c.name not in names]
            if not calls:
                yield self._done(done, done.finish_reason, runs, warnings)
                return
            results = [await self._run(call) for call in mine]
            runs += results
            if theirs:
                for call in theirs:
                    yield ToolCallEvent(call)
                yield self._done(done, "tool_calls", runs, warnings)
                return
            messages += [Message(role="assistant", content="".join(text), tool_calls=mine)]
            messages += [
                Message(role="tool", tool_call_id=r.call.id, name=r.call.name, content=[TextPart(text=_result_text(r))])
                for r in results
            ]
            if turn == max_turns:
                warnings.append(
                    f"the agent stopped after {max_turns} model turns that all called tools (max_turns); "
                    "the answer may be unfinished"
                )
                yield self._done(done, "length", runs, warnings)
                return

    async def _native(
        self,
        request: ChatRequest,
        served: list[ToolSpec],
        own: list[ToolSpec],
        extra: dict[str, Any],
        runs: list[ToolRun],
    ) -> AsyncGenerator[StreamEvent, None]:
        """A CLI that takes MCP servers runs the loop itself: the served tools go to it on a loopback endpoint
        (:mod:`llm_runners.mcp.toolhost`) for this request only, each call it makes is run on the bridge and
        answered at once. The request's own tools still go the text-protocol way and back to the caller."""
        host = self.host
        if host is None:
            host = self._own_host = self._own_host or ToolHost()

        async def handler(call: ToolCall) -> ToolResult:
            run = await self._run(call)
            runs.append(run)
            return ToolResult(run.result, run.is_error)

        done: Done | None = None
        async with host.leased(served, handler) as lease:
            step = request.model_copy(update={"tools": own, "extra": {**extra, MCP_ENDPOINT_KEY: lease.endpoint()}})
            async with aclosing(self.model.stream(step)) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, Done):
                        done = event
                        break
                    yield event
        # the token is revoked before the caller hears the answer
        if done is None:
            raise UpstreamError("the provider's stream ended without a final event", provider=self.name)
        yield self._done(done, done.finish_reason, runs, list(done.warnings))

    async def _run(self, call: ToolCall) -> ToolRun:
        server = self.bridge.server_of(call.name)
        result = await self.bridge.call(call)
        log.info("tool %s on MCP server %s: %s", call.name, server, "error" if result.is_error else "ok")
        return ToolRun(call=call, server=server, result=result.text, is_error=result.is_error)

    @staticmethod
    def _done(done: Done, finish: Any, runs: list[ToolRun], warnings: list[str]) -> Done:
        return Done(
            finish_reason=finish,
            model=done.model,
            session_id=done.session_id,
            warnings=tuple(dict.fromkeys(warnings)),
            stop_sequence=done.stop_sequence,
            tool_runs=tuple(runs),
        )


def _result_text(run: ToolRun) -> str:
    text = run.result or "(no output)"
    return f"Error: {text}" if run.is_error else text


class ServerTools:
    """What the HTTP server does with a request's tools: a request that asks for server-side execution
    (``tool_execution = "server"`` in its provider's settings, or ``llm_runners.tool_execution`` in the body) is
    answered by an :class:`Agent` around the route's provider on the server's ``[[mcp_servers]]``."""

    def __init__(self, bridge: MCPBridge | None, settings: Settings, *, max_turns: int = DEFAULT_MAX_TURNS) -> None:
        self.bridge = bridge
        self.settings = settings
        self.max_turns = max_turns
        #: the loopback endpoint for CLIs that take MCP servers (started on first use)
        self.host = ToolHost()
        #: CLI turns paused on the callers' tool calls, per provider (each its own hold timeout)
        self.held: dict[str, HeldCalls] = {}

    async def aclose(self) -> None:
        for held in self.held.values():
            await held.aclose()
        await self.host.aclose()

    def _held(self, name: str) -> HeldCalls:
        if name not in self.held:
            self.held[name] = HeldCalls(self.settings.provider(name).hold_timeout)
        return self.held[name]

    def provider_for(self, route: Route, request: ChatRequest) -> Provider:
        settings = self.settings.provider(route.name)
        mode = request.extra.get(TOOL_EXECUTION_KEY) or settings.tool_execution
        if mode != "server":
            held = self.held.get(route.name)
            if (held is not None and held.owns(request)) or wants_mcp_client_tools(
                route.provider, request, settings.client_tools
            ):
                return ClientToolsOverMCP(route.provider, self.host, self._held(route.name))
            return route.provider
        if self.bridge is None or not self.bridge.tools():
            raise InvalidRequest(
                "tool_execution 'server' needs MCP tool servers: add [[mcp_servers]] to the server's config "
                + ("(none of the configured ones started, see /ready)" if self.bridge is not None else ""),
                param="llm_runners.tool_execution",
            )
        return Agent(route.provider, bridge=self.bridge, max_turns=self.max_turns, host=self.host)
