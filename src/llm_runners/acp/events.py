"""ACP ``session/update`` notifications and the prompt result -> StreamEvents (no I/O: unit-tested on transcripts).

- ``agent_message_chunk`` -> TextDelta; ``agent_thought_chunk`` -> ReasoningDelta.
- Tool calls (``tool_call``, ``tool_call_update``) are the agent's own tools, not the caller's functions, so they
  are no ToolCallEvent (the caller would be asked to run them): each becomes an :class:`AgentToolEvent` (id,
  title, kind, status; an update carries what changed, the event the last known title and kind), is logged, and
  is kept in ``tool_calls``.
- Usage: the prompt result's ``usage`` (OpenCode, Kilo, Copilot), its ``_meta.quota.token_count`` (Gemini), or
  the ``_meta.usage`` of a (usually empty) message chunk (Qwen).
- ``stopReason``: ``end_turn`` -> stop, ``max_tokens`` / ``max_turn_requests`` -> length, ``refusal`` ->
  content_filter; ``cancelled`` we did not ask for is an UpstreamError.
- Status text (Copilot): chunks matching the dialect's ``status_text`` before any answer text are held back
  (``Info: Disabled tools: …``, ``Info: Request failed … Retrying...``) and dropped (logged) once the answer
  starts; a turn that ends without usage after an ``Error:`` chunk raises the error those lines name; a turn
  whose only text they were returns them as its answer.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from acp.schema import AgentMessageChunk, AgentThoughtChunk, PromptResponse, ToolCallProgress, ToolCallStart

from .. import process
from ..errors import LLMError, UpstreamError
from ..runners.base import int_or_zero
from ..types import AgentToolEvent, FinishReason, ReasoningDelta, StreamEvent, TextDelta, Usage, UsageEvent

log = logging.getLogger(__name__)

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "max_turn_requests": "length",
    "refusal": "content_filter",
}


def usage_of(data: object) -> Usage | None:
    """ACP usage (``inputTokens``, ``outputTokens``, ``cachedReadTokens``, ``thoughtTokens``) or Gemini's
    ``{input_tokens, output_tokens}``, as a dict; None when it holds no counts."""
    if not isinstance(data, dict):
        return None
    inp = data.get("inputTokens", data.get("input_tokens"))
    out = data.get("outputTokens", data.get("output_tokens"))
    if inp is None and out is None:
        return None
    return Usage(
        input_tokens=int_or_zero(inp),
        output_tokens=int_or_zero(out),
        cached_tokens=int_or_zero(data.get("cachedReadTokens")),
        reasoning_tokens=int_or_zero(data.get("thoughtTokens")),
    )


class UpdateMapper:
    """The events of one turn. ``feed`` each update in order, then ``finish`` with the prompt result."""

    def __init__(self, provider: str, status_text: re.Pattern[str] | None = None) -> None:
        self.provider = provider
        self.status_text = status_text
        self.text: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.meta_usage: Usage | None = None
        self._held: list[str] = []
        self._known: dict[str, tuple[str | None, str | None]] = {}  # tool call id -> its last title and kind

    def feed(self, update: Any) -> list[StreamEvent]:
        if isinstance(update, AgentMessageChunk):
            meta = update.field_meta
            if isinstance(meta, dict) and (usage := usage_of(meta.get("usage"))) is not None:
                self.meta_usage = usage
            text = getattr(update.content, "text", None)
            if not isinstance(text, str) or not text:
                return []
            if not self.text and self.status_text is not None and self.status_text.fullmatch(text):
                self._held.append(text)  # a status line before the answer: not part of it
                return []
            if self._held:
                log.info("%s: agent status before the answer: %s", self.provider, " | ".join(self._held))
                self._held = []
            return [self._text(text)]
        if isinstance(update, AgentThoughtChunk):
            text = getattr(update.content, "text", None)
            return [ReasoningDelta(text)] if isinstance(text, str) and text else []
        if isinstance(update, ToolCallStart | ToolCallProgress):
            call = update.model_dump(by_alias=True, exclude_none=True, mode="json")
            self.tool_calls.append(call)
            call_id = str(call.get("toolCallId", ""))
            title, kind = self._known.get(call_id, (None, None))
            title, kind = call.get("title") or title, call.get("kind") or kind
            self._known[call_id] = (title, kind)
            event = AgentToolEvent(call_id, title=title, kind=kind, status=call.get("status"))
            log.info("%s: agent tool %s %r: %s", self.provider, call_id, title, event.status or "update")
            return [event]
        return []

    def _text(self, text: str) -> TextDelta:
        self.text.append(text)
        return TextDelta(text)

    def _release(self) -> list[StreamEvent]:
        held, self._held = self._held, []
        return [self._text(t) for t in held]

    def finish(self, result: PromptResponse) -> tuple[list[StreamEvent], FinishReason]:
        """The last events (held text, usage) and the finish reason; raises the error a failed turn stands for."""
        usage = usage_of(result.usage.model_dump(by_alias=True)) if result.usage is not None else None
        meta = result.field_meta
        if usage is None and isinstance(meta, dict):
            quota = meta.get("quota")
            usage = usage_of(quota.get("token_count")) if isinstance(quota, dict) else None
        usage = usage or self.meta_usage
        if self._held and usage is None and any(t.lstrip().startswith("Error:") for t in self._held):
            raise self.status_error()
        if result.stop_reason == "cancelled":
            raise UpstreamError(f"{self.provider}: the agent cancelled the turn", provider=self.provider)
        events = self._release()
        if usage is not None:
            events.append(UsageEvent(usage))
        return events, _FINISH.get(result.stop_reason, "stop")

    def status_error(self) -> LLMError:
        text = "\n".join(t.strip() for t in self._held)
        errors = [line for line in text.splitlines() if line.startswith("Error:")] or [text]
        error = process.classify_text(text, provider=self.provider) or UpstreamError(
            f"{self.provider}: {errors[-1]}", provider=self.provider
        )
        error.detail = text
        return error
