"""Held client tool calls (llm_runners.tools.held) with a stand-in for a CLI's MCP client: a provider that, like
Claude Code, connects to the request's loopback MCP endpoint with the official mcp SDK client, calls the tools the
request's text names and answers with what they returned. The host, the held turns and the MCP traffic are real."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llm_runners.errors import InvalidRequest, ProviderTimeout
from llm_runners.mcp.toolhost import MCP_ENDPOINT_KEY, ToolHost
from llm_runners.provider import Provider
from llm_runners.tools.held import ClientToolsOverMCP, HeldCalls, wants_mcp_client_tools
from llm_runners.types import (
    Capabilities,
    ChatRequest,
    Done,
    Health,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
)

pytestmark = pytest.mark.anyio

LOOKUP = ToolSpec(name="lookup", parameters={"type": "object", "properties": {"q": {"type": "string"}}})
CLOCK = ToolSpec(name="clock")


class StandInCLI(Provider):
    """Calls, over MCP and all at once, each tool named in the last user message (``call lookup clock``)."""

    name = "standin"
    capabilities = Capabilities(mcp_tools=True)

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.requests: list[ChatRequest] = []

    async def health(self) -> Health:
        return Health(provider="standin", installed=True, ready=True)

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        self.started += 1
        self.requests.append(request)
        endpoint = request.extra[MCP_ENDPOINT_KEY]
        names = request.messages[-1].text.split()[1:]
        try:
            async with (
                create_mcp_http_client(headers=endpoint["headers"]) as http,
                Client(streamable_http_client(endpoint["url"], http_client=http), cache=None) as client,
            ):
                listed = [t.name for t in (await client.list_tools()).tools]
                yield TextDelta(f"tools: {','.join(listed)}. ")
                results = await asyncio.gather(*(client.call_tool(n, {"q": n}) for n in names))
            for name, result in zip(names, results, strict=True):
                yield TextDelta(f"{name}={result.content[0].text};")  # type: ignore[union-attr]
            yield Done()
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


def ask(text: str, *, tools: list[ToolSpec] = [LOOKUP, CLOCK]) -> ChatRequest:  # noqa: B006
    return ChatRequest(messages=[Message(role="user", content=text)], tools=tools)


def answer(first: ChatRequest, calls: list[ToolCall], results: dict[str, str]) -> ChatRequest:
    messages = [*first.messages, Message(role="assistant", tool_calls=calls)]
    messages += [Message(role="tool", tool_call_id=i, content=text) for i, text in results.items()]
    return first.model_copy(update={"messages": messages})


async def collect(stream: AsyncIterator[StreamEvent]) -> tuple[str, list[ToolCall], Done]:
    text, calls, done = "", [], None
    async for event in stream:
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, ToolCallEvent):
            calls.append(event.call)
        elif isinstance(event, Done):
            done = event
    assert done is not None
    return text, calls, done


@pytest.fixture
async def host() -> AsyncIterator[ToolHost]:
    host = ToolHost()
    yield host
    await host.aclose()


async def test_held_calls_are_answered_by_the_next_request_and_the_same_turn_continues(host: ToolHost) -> None:
    cli, held = StandInCLI(), HeldCalls(hold_timeout=30)
    provider = ClientToolsOverMCP(cli, host, held)
    first = ask("call lookup clock")
    text, calls, done = await collect(provider.stream(first))
    assert text == "tools: lookup,clock. " and done.finish_reason == "tool_calls"
    assert sorted(c.name for c in calls) == ["clock", "lookup"]  # made together, gathered into one answer
    assert {c.name: json.loads(c.arguments) for c in calls} == {"lookup": {"q": "lookup"}, "clock": {"q": "clock"}}
    assert cli.requests[0].tools == [] and MCP_ENDPOINT_KEY in cli.requests[0].extra  # natively, not as text
    assert len(held) == 1 and host.active() == 1

    by_name = {c.name: c.id for c in calls}
    with pytest.raises(InvalidRequest, match="missing"):
        await collect(provider.stream(answer(first, calls, {by_name["lookup"]: "L"})))
    text, calls2, done = await collect(
        provider.stream(answer(first, calls, {by_name["lookup"]: "found it", by_name["clock"]: "noon"}))
    )
    assert text == "lookup=found it;clock=noon;" and done.finish_reason == "stop" and calls2 == []
    assert cli.started == 1 and cli.cancelled == 0  # one turn of the CLI throughout
    assert len(held) == 0 and host.active() == 0


async def test_an_unanswered_held_call_cancels_the_turn(host: ToolHost) -> None:
    cli, held = StandInCLI(), HeldCalls(hold_timeout=0.3)
    provider = ClientToolsOverMCP(cli, host, held)
    first = ask("call lookup")
    _, calls, _ = await collect(provider.stream(first))
    for _ in range(200):
        if cli.cancelled:
            break
        await asyncio.sleep(0.02)
    assert cli.cancelled == 1 and host.active() == 0 and len(held) == 0
    late = answer(first, calls, {calls[0].id: "too late"})
    assert held.owns(late)
    with pytest.raises(ProviderTimeout, match=r"not answered within 0\.3 s"):
        await collect(provider.stream(late))


async def test_a_caller_gone_before_the_call_ends_the_turn(host: ToolHost) -> None:
    cli, held = StandInCLI(), HeldCalls(hold_timeout=30)
    stream = ClientToolsOverMCP(cli, host, held).stream(ask("call lookup"))
    first = await stream.__anext__()
    assert isinstance(first, TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(200):
        if cli.cancelled:
            break
        await asyncio.sleep(0.02)
    assert cli.cancelled == 1 and host.active() == 0 and len(held) == 0


def test_which_requests_take_the_mcp_path() -> None:
    cli = StandInCLI()
    plain = ChatRequest(messages=[Message(role="user", content="x")], tools=[LOOKUP])
    assert wants_mcp_client_tools(cli, plain, "mcp")
    assert not wants_mcp_client_tools(cli, plain, "text")
    assert wants_mcp_client_tools(cli, plain.model_copy(update={"extra": {"client_tools": "mcp"}}), "text")
    assert not wants_mcp_client_tools(cli, plain.model_copy(update={"tools": []}), "mcp")
    required = plain.model_copy(update={"tool_choice": ToolChoice(mode="required")})
    assert not wants_mcp_client_tools(cli, required, "mcp")  # cannot be enforced on the CLI's own tool use
    other: Any = StandInCLI()
    other.capabilities = Capabilities(mcp_tools=False)
    assert not wants_mcp_client_tools(other, plain, "mcp")
