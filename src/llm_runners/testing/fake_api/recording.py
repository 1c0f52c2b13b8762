"""Every request the fake receives, kept so a test can assert what a CLI or provider actually sent."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from .wire import ApiName, WireApi

#: ``main``: a conversation turn (consumes scripted replies). ``router``: Gemini CLI's model router.
#: ``title``: a title-generator call (OpenCode, Kilo). ``memory``: Qwen's memory-extraction subagent.
#: ``probe``: ``HEAD /`` or ``GET /``. ``other``: anything unrecognised (answered 404).
RequestKind = Literal["main", "router", "title", "memory", "count_tokens", "models", "probe", "other"]

_TITLE_MARK = "You are a title generator"
_MEMORY_MARK = "managed memory extraction subagent"


@dataclass(eq=False)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    #: header names lower-cased; a repeated header keeps its last value
    headers: dict[str, str]
    #: the parsed JSON body, or ``None`` when there was none or it was not JSON
    body: Any
    raw_body: bytes
    api: ApiName | None
    kind: RequestKind
    #: the model asked for (from the body, or from the URL for Gemini)
    model: str | None = None
    stream: bool = False
    #: the HTTP status the fake answered (0 while unanswered, e.g. during a hang)
    status: int = 0
    _wire: WireApi | None = field(default=None, repr=False)
    _disconnected: threading.Event = field(default_factory=threading.Event, repr=False)

    # -- what a test asserts on -----------------------------------------------------------------------------
    @property
    def api_key(self) -> str | None:
        """The key the client sent: ``x-api-key``, ``x-goog-api-key``, ``Authorization: Bearer`` or ``?key=``."""
        return api_key_of(self.headers, self.query)

    @property
    def is_main(self) -> bool:
        return self.kind == "main"

    def system_text(self) -> str:
        """The system prompt: Anthropic ``system``, Gemini ``systemInstruction``, Responses ``instructions``, plus
        the ``system``/``developer`` messages of the OpenAI APIs, text parts joined by newlines."""
        return self._wire.system_text(self._json()) if self._wire else ""

    def messages(self) -> list[tuple[str, str]]:
        """The conversation as ``(role, text)``: everything but the system prompt, text parts joined by newlines.
        Roles are ``user``, ``assistant`` (Gemini's ``model`` too), ``tool`` for tool results, and ``system``
        for system messages *inside* an Anthropic ``messages`` list (Claude Code sends one)."""
        return self._wire.messages(self._json()) if self._wire else []

    def user_texts(self) -> list[str]:
        return [text for role, text in self.messages() if role == "user"]

    def last_user_text(self) -> str:
        """Text of the last user message: where the prompt of the turn is."""
        texts = self.user_texts()
        return texts[-1] if texts else ""

    def tool_names(self) -> list[str]:
        """Names of the offered tools (the ``type`` for built-ins without a name, e.g. ``web_search``)."""
        return self._wire.tool_names(self._json()) if self._wire else []

    @property
    def disconnected(self) -> bool:
        """Whether the client went away while the fake was hanging on this request."""
        return self._disconnected.is_set()

    def wait_disconnected(self, timeout: float) -> bool:
        return self._disconnected.wait(timeout)

    def set_status(self, status: int) -> None:
        self.status = status

    def _json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


def api_key_of(headers: dict[str, str], query: dict[str, str]) -> str | None:
    for name in ("x-api-key", "x-goog-api-key"):
        if headers.get(name):
            return headers[name]
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return query.get("key")


def auxiliary_kind(system_text: str) -> RequestKind | None:
    """Side calls some CLIs make besides the turn itself, recognised by their system prompt."""
    if system_text.lstrip().startswith(_TITLE_MARK):
        return "title"
    if _MEMORY_MARK in system_text:
        return "memory"
    return None
