"""What every wire-format module provides, and the small helpers they share.

Each API (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses, Gemini) is one :class:`WireApi`: it reads
a recorded body (system text, messages, tool names), validates the little the fake insists on, renders a
:class:`~.script.Turn` as JSON or as SSE frames, and renders errors in its own body shape.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .script import ErrorKind, Turn

ApiName = Literal["anthropic", "openai_chat", "openai_responses", "gemini"]


@dataclass(frozen=True)
class Frame:
    """One SSE event (or raw body piece). ``chunk`` marks content deltas: chunk delays go between them and a
    mid-stream hang stalls right after the first one."""

    data: bytes
    chunk: bool = False


@dataclass(frozen=True)
class ErrorContext:
    model: str
    api_key: str | None
    prompt_tokens: int
    message: str | None
    retry_after: int


@dataclass(frozen=True)
class ErrorResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def text_of(content: Any) -> str:
    """Text of a content value in any of the shapes the APIs use: a string, a list of parts with ``text``, or a
    part itself. Non-text parts (images, tool calls) contribute nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if isinstance(content, list):
        return "\n".join(t for t in (text_of(part) for part in content) if t)
    return ""


def dicts(value: Any) -> list[dict[str, Any]]:
    """The dict items of a list; anything else (a recorded body can be arbitrary JSON) reads as empty."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


class WireApi(ABC):
    name: ClassVar[ApiName]
    #: prefix of generated tool-call ids (``toolu_``, ``call_``)
    tool_id_prefix: ClassVar[str] = "call_"

    @abstractmethod
    def system_text(self, body: dict[str, Any]) -> str: ...

    @abstractmethod
    def messages(self, body: dict[str, Any]) -> list[tuple[str, str]]: ...

    @abstractmethod
    def tool_names(self, body: dict[str, Any]) -> list[str]: ...

    @abstractmethod
    def validate(self, body: dict[str, Any]) -> str | None:
        """A clear message when the body lacks what the real API requires, else ``None``."""

    @abstractmethod
    def error(self, kind: ErrorKind | Literal["invalid"], ctx: ErrorContext) -> ErrorResponse: ...

    @abstractmethod
    def render_json(self, turn: Turn) -> dict[str, Any]: ...

    @abstractmethod
    def render_stream(self, turn: Turn, body: dict[str, Any]) -> list[Frame]: ...
