"""What the fake answers: a :class:`Reply` per request, and the :class:`Turn` it becomes once the request is known.

A reply is wire-neutral (text, chunks, tool calls, usage, error, timing). Each API module renders the same
:class:`Turn` in its own JSON and SSE shapes, so one script drives Claude Code, Codex, Gemini CLI and our HTTP
providers alike.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

#: Error kinds a reply (or an API key ``fake-err-<kind>``) can select. ``"529"`` means "overloaded": Anthropic
#: answers 529 ``overloaded_error``; OpenAI and Gemini, which have no 529, answer 503 in their own shape.
ErrorKind = Literal["401", "403", "404", "429", "500", "529", "context"]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)

#: ``"before"``: accept the request and never send a byte. ``"mid"``: send the stream's opening events and the
#: first chunk, then stall. Either way the fake waits until the client disconnects (or the server stops).
Hang = Literal["before", "mid"]

Finish = Literal["stop", "length"]

DEFAULT_TEXT = "pong from fake"


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call the fake model makes, rendered in each API's native format."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    #: the call id; a realistic one per API (``toolu_…``, ``call_…``) when omitted
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("FakeToolCall needs a name")
        json.dumps(dict(self.arguments))  # fail at scripting time, not inside the server


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Every field is optional; ``Reply()`` is the empty answer, ``Reply("hi")`` says hi.

    Usage numbers are deterministic: ``input_tokens`` defaults to ``len(request body) // 4`` and
    ``output_tokens`` to the number of text chunks plus tool calls. ``input_tokens`` is the whole prompt;
    ``cached_tokens`` of it are reported as cache reads (Anthropic reports the rest as ``input_tokens``).
    """

    text: str = ""
    #: explicit stream chunks; when given without ``text`` they define it, with ``text`` they must join to it
    chunks: Sequence[str] | None = None
    tool_calls: Sequence[FakeToolCall] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    #: ``"length"`` renders as max_tokens / length / incomplete / MAX_TOKENS
    finish: Finish = "stop"
    error: ErrorKind | None = None
    #: replaces the API's stock error message
    error_message: str | None = None
    #: seconds sent in ``retry-after`` with a 429
    retry_after: int = 1
    #: seconds before the first byte of the response (status line included)
    delay: float = 0.0
    #: seconds between stream chunks
    chunk_delay: float = 0.0
    hang: Hang | None = None

    def __post_init__(self) -> None:
        if self.chunks is not None:
            chunks = tuple(self.chunks)
            if not all(isinstance(c, str) for c in chunks):
                raise TypeError("Reply.chunks must be strings")
            joined = "".join(chunks)
            if self.text and self.text != joined:
                raise ValueError(f"Reply.chunks join to {joined!r}, not to text {self.text!r}")
            object.__setattr__(self, "chunks", chunks)
            object.__setattr__(self, "text", joined)
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.error is not None and self.error not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {self.error!r}; known: {', '.join(ERROR_KINDS)}")
        if self.hang is not None and self.hang not in get_args(Hang):
            raise ValueError(f"hang must be 'before' or 'mid', not {self.hang!r}")
        if self.finish not in get_args(Finish):
            raise ValueError(f"finish must be 'stop' or 'length', not {self.finish!r}")
        for name in ("delay", "chunk_delay", "cached_tokens", "reasoning_tokens", "retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"Reply.{name} must not be negative")

    def stream_chunks(self) -> tuple[str, ...]:
        return tuple(self.chunks) if self.chunks is not None else split_chunks(self.text)


def as_reply(reply: Reply | str) -> Reply:
    if isinstance(reply, Reply):
        return reply
    if isinstance(reply, str):
        return Reply(text=reply)
    raise TypeError(f"expected a Reply or a str, got {type(reply).__name__}")


def split_chunks(text: str) -> tuple[str, ...]:
    """Split into words (each keeping its leading whitespace) so streams have several deltas; texts of fewer
    than three words are cut into three even pieces, so any text of three or more characters streams in at least
    three chunks (``"pong from fake"`` → ``pong`` / `` from`` / `` fake``)."""
    words = re.findall(r"\s*\S+", text)
    if len(words) >= 3:
        words[-1] += text[sum(map(len, words)) :]  # trailing whitespace
        return tuple(words)
    size = len(text)
    if size < 3:
        return (text,) if text else ()
    return tuple(text[size * i // 3 : size * (i + 1) // 3] for i in range(3))


def split_arguments(arguments: str) -> tuple[str, ...]:
    """Tool-call arguments stream in two pieces, so a client must accumulate them."""
    if len(arguments) < 2:
        return (arguments,)
    half = len(arguments) // 2
    return (arguments[:half], arguments[half:])


def new_id() -> str:
    return uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ResolvedToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass(frozen=True)
class Turn:
    """A reply resolved against one request: what every renderer needs and nothing else."""

    model: str
    chunks: tuple[str, ...]
    tool_calls: tuple[ResolvedToolCall, ...]
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    finish: Literal["stop", "length", "tool_calls"]
    uid: str

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def build(cls, reply: Reply, *, model: str, request_size: int, tool_id_prefix: str) -> Turn:
        chunks = reply.stream_chunks()
        calls = tuple(
            ResolvedToolCall(id=tc.id or f"{tool_id_prefix}{new_id()}", name=tc.name, arguments=dict(tc.arguments))
            for tc in reply.tool_calls
        )
        input_tokens = reply.input_tokens if reply.input_tokens is not None else max(1, request_size // 4)
        output_tokens = reply.output_tokens if reply.output_tokens is not None else len(chunks) + len(calls)
        finish: Literal["stop", "length", "tool_calls"] = (
            "length" if reply.finish == "length" else "tool_calls" if calls else "stop"
        )
        return cls(
            model=model,
            chunks=chunks,
            tool_calls=calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=min(reply.cached_tokens, input_tokens),
            reasoning_tokens=reply.reasoning_tokens,
            finish=finish,
            uid=new_id(),
        )
