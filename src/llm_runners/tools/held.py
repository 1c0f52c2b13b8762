"""Client tools through a CLI's own MCP client: the CLI's tool call is held open while the caller runs the tool.

A plain OpenAI ``tools`` request to a CLI that takes MCP servers (``capabilities.mcp_tools``: Claude Code), when the
provider's settings say ``client_tools = "mcp"`` (or the body says ``"llm_runners": {"client_tools": "mcp"}``):

1. the request's tools are served to the CLI on the loopback tool host (:mod:`llm_runners.mcp.toolhost`) and the
   CLI's turn runs in a task of its own (which owns the CLI process);
2. when the CLI calls one of them, the MCP call is *held*: the HTTP response ends with that call as a normal
   ``tool_calls`` entry (``finish_reason`` ``tool_calls``), the CLI process keeps waiting for its MCP answer;
3. the caller's next request brings the ``tool`` message for that call id: its text answers the held MCP call and
   the *same* CLI turn continues; its output is the answer to that second request;
4. a held call not answered within ``hold_timeout`` seconds cancels the turn (the CLI process is killed); a result
   sent for it later is an error saying so.

Calls the CLI makes together (several tool uses in one model message) are gathered for ``gather`` seconds after
the first, so they go back to the caller in one response. Every pending call of a turn must be answered in the
same request. ``tool_choice`` ``required`` / a named tool cannot be enforced on a CLI's own tool use: those requests
keep the text tool protocol. The continuation is matched by call id alone (a held call is the caller's to answer:
whoever knows the id holds the turn), never by history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest, LLMError, ProviderTimeout, UpstreamError
from ..mcp.toolhost import MCP_ENDPOINT_KEY, Lease, ToolHost
from ..provider import Provider
from ..types import (
    ChatRequest,
    Done,
    StreamEvent,
    ToolCall,
    ToolCallEvent,
)
from ..wrappers.base import Wrapper
from .mcp_bridge import ToolResult

__all__ = ["CLIENT_TOOLS_KEY", "ClientToolsOverMCP", "HeldCalls", "wants_mcp_client_tools"]

log = logging.getLogger(__name__)

#: ``ChatRequest.extra`` key (from the body's ``llm_runners.client_tools``): ``"mcp"`` or ``"text"``
CLIENT_TOOLS_KEY = "client_tools"


def wants_mcp_client_tools(provider: Provider, request: ChatRequest, configured: str = "text") -> bool:
    """Should this request's tools go to the CLI over MCP (held calls) rather than the text tool protocol?"""
    mode = request.extra.get(CLIENT_TOOLS_KEY) or configured
    choice = request.tool_choice.mode if request.tool_choice is not None else "auto"
    return mode == "mcp" and bool(request.tools) and provider.capabilities.mcp_tools and choice == "auto"


@dataclass
class _Held:
    call: ToolCall


_END = object()


@dataclass
class _Turn:
    """One CLI turn running in its own task, paused on its held calls between the caller's requests."""

    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    pending: dict[str, asyncio.Future[ToolResult]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    lease: Lease | None = None
    timer: asyncio.TimerHandle | None = None
    done: bool = False


class HeldCalls:
    """The turns paused on client tool calls, by call id (one registry per server)."""

    def __init__(self, hold_timeout: float = 300.0, gather: float = 0.25) -> None:
        self.hold_timeout = hold_timeout
        self.gather = gather
        self._turns: dict[str, _Turn] = {}
        self._expired: dict[str, float] = {}  # call id -> when it was given up (kept an hour, for the error)

    def __len__(self) -> int:
        return len({id(t) for t in self._turns.values()})

    def answers(self, request: ChatRequest) -> list[tuple[str, str]]:
        """The trailing ``tool`` messages of ``request`` as (call id, text)."""
        out: list[tuple[str, str]] = []
        for message in reversed(request.messages):
            if message.role != "tool":
                break
            out.append((message.tool_call_id or "", message.text))
        return out[::-1]

    def owns(self, request: ChatRequest) -> bool:
        ids = [i for i, _ in self.answers(request)]
        if any(i in self._expired for i in ids):
            return True  # answered too late: the error comes from ClientToolsOverMCP
        return any(i in self._turns for i in ids)

    def _turn_of(self, request: ChatRequest) -> tuple[_Turn, list[tuple[str, str]]]:
        answers = self.answers(request)
        late = [i for i, _ in answers if i in self._expired]
        if late:
            raise ProviderTimeout(
                f"the tool call {late[0]} was not answered within {self.hold_timeout:g} s; its CLI turn was cancelled",
                code="tool_call_expired",
            )
        turns = {id(self._turns[i]): self._turns[i] for i, _ in answers if i in self._turns}
        if len(turns) != 1:
            raise InvalidRequest("the tool results answer calls of different turns", param="messages")
        (turn,) = turns.values()
        missing = sorted(set(turn.pending) - {i for i, _ in answers})
        if missing:
            raise InvalidRequest(
                f"the tool results must answer every pending call of the turn; missing: {', '.join(missing)}",
                param="messages",
            )
        return turn, answers

    def _hold(self, turn: _Turn, call: ToolCall, future: asyncio.Future[ToolResult]) -> None:
        turn.pending[call.id] = future
        self._turns[call.id] = turn

    def _pause(self, turn: _Turn) -> None:
        loop = asyncio.get_running_loop()
        turn.timer = loop.call_later(self.hold_timeout, self._expire, turn)

    def _expire(self, turn: _Turn) -> None:
        log.warning(
            "held tool calls %s were not answered within %g s: the CLI turn is cancelled",
            list(turn.pending),
            self.hold_timeout,
        )
        now = time.monotonic()
        self._expired = {k: v for k, v in self._expired.items() if now - v < 3600}
        for call_id in turn.pending:
            self._expired[call_id] = now
        self._drop(turn)

    def _drop(self, turn: _Turn) -> None:
        if turn.timer is not None:
            turn.timer.cancel()
            turn.timer = None
        for call_id, future in list(turn.pending.items()):
            self._turns.pop(call_id, None)
            if not future.done():
                future.set_exception(UpstreamError("the tool call was not answered; the turn was cancelled"))
        turn.pending.clear()
        if turn.lease is not None:
            turn.lease.revoke()
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()  # the task's stream closes: the CLI process is killed

    async def aclose(self) -> None:
        turns = {id(t): t for t in self._turns.values()}.values()
        tasks = [t.task for t in turns if t.task is not None]
        for turn in list(turns):
            self._drop(turn)
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


class ClientToolsOverMCP(Wrapper):
    """``inner`` with the request's tools served to its CLI over MCP and held calls (see the module docstring).
    Made per request: :meth:`aclose` leaves ``inner`` (the router's provider) alone."""

    def __init__(self, inner: Provider, host: ToolHost, held: HeldCalls) -> None:
        super().__init__(inner)
        self.host = host
        self.held = held

    async def aclose(self) -> None:
        pass

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        if self.held.owns(request):
            turn, answers = self.held._turn_of(request)
            if turn.timer is not None:
                turn.timer.cancel()
                turn.timer = None
            for call_id, text in answers:
                future = turn.pending.pop(call_id, None)
                self.held._turns.pop(call_id, None)
                if future is not None and not future.done():
                    future.set_result(ToolResult(text or "(no output)"))
        else:
            turn = await self._start(request)
        async for event in self._follow(turn):
            yield event

    async def _start(self, request: ChatRequest) -> _Turn:
        turn = _Turn()
        held = self.held

        async def handler(call: ToolCall) -> ToolResult:
            future: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
            held._hold(turn, call, future)
            await turn.queue.put(_Held(call))
            return await future

        turn.lease = await self.host.lease(request.tools, handler)
        extra = {k: v for k, v in request.extra.items() if k != CLIENT_TOOLS_KEY}
        extra[MCP_ENDPOINT_KEY] = turn.lease.endpoint()
        step = request.model_copy(update={"tools": [], "tool_choice": None, "extra": extra})

        async def pump() -> None:
            try:
                async with aclosing(self.inner.stream(step)) as events:  # type: ignore[type-var]
                    async for event in events:
                        await turn.queue.put(event)
                await turn.queue.put(_END)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                await turn.queue.put(exc)
            finally:
                if turn.lease is not None:
                    turn.lease.revoke()

        turn.task = asyncio.get_running_loop().create_task(pump(), name="llm-runners-held-turn")
        return turn

    async def _follow(self, turn: _Turn) -> AsyncGenerator[StreamEvent, None]:
        """Pass the turn's events on until it ends (Done) or pauses on held calls (their ToolCallEvents + Done)."""
        paused = False
        done: Done | None = None
        try:
            while True:
                item = await turn.queue.get()
                if isinstance(item, _Held):
                    calls = [item.call]
                    deadline = asyncio.get_running_loop().time() + self.held.gather
                    while True:  # calls the CLI makes together go back together
                        remaining = deadline - asyncio.get_running_loop().time()
                        try:
                            nxt = await asyncio.wait_for(turn.queue.get(), timeout=max(remaining, 0.0))
                        except TimeoutError:
                            break
                        if isinstance(nxt, _Held):
                            calls.append(nxt.call)
                        else:
                            turn.queue.put_nowait(nxt)  # not expected while the CLI waits; keep it for later
                            break
                    for call in calls:
                        yield ToolCallEvent(call)
                    paused = True
                    self.held._pause(turn)
                    yield Done(finish_reason="tool_calls", model=done.model if done else None)
                    return
                if item is _END:
                    if done is None:
                        raise UpstreamError("the provider's stream ended without a final event", provider=self.name)
                    turn.done = True
                    yield done
                    return
                if isinstance(item, BaseException):
                    turn.done = True
                    if isinstance(item, LLMError):
                        raise item
                    raise UpstreamError(f"{self.name}: {item!r}", provider=self.name) from item
                if isinstance(item, Done):
                    done = item  # passed on once the stream has ended (the lease is revoked by then)
                    continue
                yield item
        finally:
            if not paused:
                self.held._drop(turn)
