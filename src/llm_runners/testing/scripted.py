"""A provider that plays back scripted replies: offline tests and benchmarks with no subprocess.

Why it is public: users test their own code against the library or the server with it, and the server's benchmark
uses it to measure the server alone. It is therefore FAST: it never sleeps unless a reply asks for a delay.

It also watches itself, so a test can assert on what happened at the provider boundary:

- ``requests``: every :class:`ChatRequest` received, in order;
- ``open_streams``: streams started and not yet closed (a client disconnect must bring it back to 0);
- ``cancelled``: streams closed before they finished (``aclose()`` or cancellation mid-stream);
- ``completed``: streams that yielded their :class:`Done`.

Replies come from a list (played in order; the last one repeats) or from a function of the request. With neither,
the provider echoes: ``"You said: <last user text>"``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from ..errors import LLMError
from ..provider import Provider
from ..types import (
    Capabilities,
    ChatRequest,
    Done,
    FinishReason,
    Health,
    ModelInfo,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
    UsageEvent,
)

__all__ = ["FULL_CAPABILITIES", "Reply", "ScriptedProvider"]

#: everything on: with these the feature adapter passes requests through unchanged
FULL_CAPABILITIES = Capabilities(
    streaming=True,
    token_streaming=True,
    system_prompt=True,
    images=True,
    native_tools=True,
    sessions=True,
    temperature=True,
    top_p=True,
    max_tokens=True,
    stop=True,
    json_mode=True,
    usage=True,
    model_listing=True,
)

_WORDS = re.compile(r"\s*\S+\s*|\s+")


@dataclass
class Reply:
    """One scripted answer.

    ``text`` is split into word chunks (or exactly ``chunks`` when given). ``error`` is raised after
    ``error_after`` text chunks (0 = before anything). ``delay`` is slept once before the first event and
    ``chunk_delay`` between chunks; ``hang`` waits forever after the text (until the stream is closed), which is
    how a test simulates a CLI that never answers.
    """

    text: str = ""
    chunks: Sequence[str] | None = None
    reasoning: str = ""
    tool_calls: Sequence[ToolCall] = ()
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    error: LLMError | None = None
    error_after: int = 0
    delay: float = 0.0
    chunk_delay: float = 0.0
    hang: bool = False
    warnings: Sequence[str] = ()
    model: str | None = None
    session_id: str | None = None

    def text_chunks(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        return _WORDS.findall(self.text)

    def finish(self) -> FinishReason:
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


ReplySource = Sequence["Reply | str"] | Callable[[ChatRequest], "Reply | str"] | None


@dataclass
class _Counters:
    open_streams: int = 0
    cancelled: int = 0
    completed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ScriptedProvider(Provider):
    """Plays scripted :class:`Reply` objects (see the module docstring).

    ``name``, ``capabilities``, ``default_model``, ``models`` and ``health`` are per instance so one test can route
    between several differently configured scripted providers.
    """

    name = "scripted"
    display_name = "Scripted (tests)"
    default_model = "scripted-1"

    def __init__(
        self,
        replies: ReplySource = None,
        *,
        name: str = "scripted",
        capabilities: Capabilities = FULL_CAPABILITIES,
        default_model: str | None = "scripted-1",
        models: Sequence[str] | None = None,
        health: Health | None = None,
        usage: Usage | None = None,
    ) -> None:
        # Instance attributes shadow the class-level declarations on purpose (see the class docstring).
        self.name = name  # type: ignore[misc]
        self.capabilities = capabilities  # type: ignore[misc]
        self.default_model = default_model  # type: ignore[misc,assignment]
        self._replies = replies
        self._index = 0
        self._models = list(models) if models is not None else ([default_model] if default_model else [])
        self._health = health
        self._usage = usage
        self.requests: list[ChatRequest] = []
        self._counters = _Counters()
        self.closed = False

    # -- observation ---------------------------------------------------------------------------------------
    @property
    def open_streams(self) -> int:
        return self._counters.open_streams

    @property
    def cancelled(self) -> int:
        return self._counters.cancelled

    @property
    def completed(self) -> int:
        return self._counters.completed

    @property
    def last_request(self) -> ChatRequest:
        if not self.requests:
            raise AssertionError("the scripted provider has received no request")
        return self.requests[-1]

    # -- the Provider contract -----------------------------------------------------------------------------
    def _next_reply(self, request: ChatRequest) -> Reply:
        source = self._replies
        if source is None:
            last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
            reply: Reply | str = f"You said: {last_user}"
        elif callable(source):
            reply = source(request)
        else:
            if not source:
                raise ValueError("ScriptedProvider was given an empty list of replies")
            reply = source[min(self._index, len(source) - 1)]
            self._index += 1
        return Reply(text=reply) if isinstance(reply, str) else reply

    def _estimate_usage(self, request: ChatRequest, reply: Reply) -> Usage:
        prompt_chars = sum(len(m.text) for m in request.messages)
        out_chars = len(reply.text) + sum(len(c.arguments) for c in reply.tool_calls)
        return Usage(input_tokens=math.ceil(prompt_chars / 4), output_tokens=math.ceil(out_chars / 4))

    def _bump(self, attr: str, delta: int) -> None:
        with self._counters.lock:
            setattr(self._counters, attr, getattr(self._counters, attr) + delta)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        reply = self._next_reply(request)
        self._bump("open_streams", 1)
        finished = False
        try:
            if reply.delay:
                await anyio.sleep(reply.delay)
            if reply.error is not None and reply.error_after <= 0:
                raise reply.error
            if reply.reasoning:
                yield ReasoningDelta(reply.reasoning)
            for i, chunk in enumerate(reply.text_chunks()):
                if reply.error is not None and i >= reply.error_after:
                    raise reply.error
                if i and reply.chunk_delay:
                    await anyio.sleep(reply.chunk_delay)
                yield TextDelta(chunk)
            if reply.error is not None:
                raise reply.error
            if reply.hang:
                await anyio.sleep_forever()
            for call in reply.tool_calls:
                yield ToolCallEvent(call)
            usage = reply.usage or self._usage or self._estimate_usage(request, reply)
            yield UsageEvent(usage)
            finished = True
            yield Done(
                finish_reason=reply.finish(),
                model=reply.model or request.model or self.default_model,
                session_id=reply.session_id,
                warnings=tuple(reply.warnings),
            )
        finally:
            self._bump("open_streams", -1)
            if finished:
                self._bump("completed", 1)
            elif reply.error is None:
                self._bump("cancelled", 1)

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, provider=self.name) for m in self._models]

    async def health(self) -> Health:
        if self._health is not None:
            return self._health
        return Health(provider=self.name, installed=True, ready=True, version="scripted")

    async def aclose(self) -> None:
        self.closed = True
