"""Quality gate: an empty answer or a refusal is asked again, with feedback, up to ``retries`` times.

- **Empty**: no text (whitespace only) and no tool call.
- **Refusal**: the answer's text matches one of ``refusals`` (regular expressions searched case-insensitively;
  default :data:`REFUSALS`, the common "I can't help with that" openings). Only the first ``scan_chars``
  characters are searched, so a long answer that quotes a refusal somewhere is not retried.

A retry sends the same request with the rejected answer and a short user message saying what was wrong
(:data:`FEEDBACK`) appended, so the model knows why it is asked again. When every try fails the gate, the last
answer is returned with a warning (``on_failure = "return"``, the default) or a
:class:`~llm_runners.errors.GuardrailError` (422, code ``quality``) is raised (``on_failure = "error"``).

**Non-streamed only**: a streamed answer reaches the caller as it is generated, so it cannot be judged before it
was sent; ``stream()`` passes through unchanged. Usage of every try is added up in the returned answer.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from ..errors import GuardrailError
from ..provider import Provider
from ..types import ChatRequest, ChatResponse, Message, StreamEvent
from .base import Wrapper

__all__ = ["FEEDBACK", "REFUSALS", "QualityGate"]

#: refusal openings, searched case-insensitively in the first ``scan_chars`` characters of the answer
REFUSALS: tuple[str, ...] = (
    r"^\W*(?:i'?m|i am) sorry,? (?:but )?i (?:can(?:no|')t|am unable to|won'?t)",
    r"^\W*i (?:can(?:no|')t|am unable to|won'?t) (?:help|assist|do that|comply|answer)",
    r"^\W*(?:sorry|unfortunately),? i (?:can(?:no|')t|am unable to)",
    r"^\W*as an ai(?: language model)?,? i (?:can(?:no|')t|am unable to)",
)

#: what the model is told before a retry, by reason
FEEDBACK = {
    "empty": "Your previous answer was empty. Please answer the request above.",
    "refusal": (
        "Your previous answer declined the request. If it can be answered safely, please answer it directly; "
        "otherwise explain briefly what part you cannot do and answer the rest."
    ),
}


class QualityGate(Wrapper):
    """``inner`` whose non-streamed answers are checked and retried (see the module docstring)."""

    def __init__(
        self,
        inner: Provider,
        *,
        retries: int = 1,
        refusals: Sequence[str] = REFUSALS,
        empty: bool = True,
        scan_chars: int = 300,
        on_failure: Literal["return", "error"] = "return",
    ) -> None:
        super().__init__(inner)
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        if on_failure not in ("return", "error"):
            raise ValueError(f"on_failure must be 'return' or 'error', not {on_failure!r}")
        self.retries = retries
        self.refusals = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in refusals]
        self.empty = empty
        self.scan_chars = scan_chars
        self.on_failure = on_failure

    def judge(self, response: ChatResponse) -> str | None:
        """None when the answer passes; else ``"empty"`` or ``"refusal"``."""
        if response.tool_calls:
            return None
        text = response.content.strip()
        if not text:
            return "empty" if self.empty else None
        head = text[: self.scan_chars]
        if any(p.search(head) for p in self.refusals):
            return "refusal"
        return None

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self.inner.stream(request)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response = await self.inner.complete(request)
        usage = response.usage
        asked = request
        notes: list[str] = []
        for attempt in range(self.retries + 1):
            reason = self.judge(response)
            if reason is None:
                break
            if attempt == self.retries:
                note = f"the answer failed the quality gate ({reason}) after {self.retries + 1} tries"
                if self.on_failure == "error":
                    raise GuardrailError(note, provider=self.name or None, code="quality")
                notes.append(note)
                break
            asked = asked.model_copy(
                update={
                    "messages": [
                        *asked.messages,
                        Message(role="assistant", content=response.content),
                        Message(role="user", content=FEEDBACK[reason]),
                    ],
                    "conversation": None,  # the retry is a new turn of its own, not the caller's session
                }
            )
            response = await self.inner.complete(asked)
            if response.usage is not None:
                usage = response.usage if usage is None else usage + response.usage
            notes.append(f"the model was asked again after a {reason} answer")
        response.usage = usage
        response.warnings.extend(notes)
        return response
