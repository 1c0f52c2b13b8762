"""Guardrails: checks on the request before a provider sees it and on the answer before the caller does.

Checks (all optional; configured in ``[guardrails]``):

- **Length limits**: ``max_request_chars`` (the text of every message together) and ``max_response_chars`` (the
  answer's text). A request over the limit is refused; an answer over it is ended with the error.
- **Blocked patterns**: ``blocked`` regular expressions searched in the request's messages and in the answer.
- **PII**: ``pii = "reject"`` refuses a request or answer that contains personal data of the kinds in
  ``pii_kinds`` (default every kind of :data:`PII_PATTERNS`: ``email``, ``phone``, ``credit_card`` (Luhn
  checked), ``ssn``, ``ipv4``, ``secret`` — API keys of the common shapes); ``pii = "redact"`` replaces each
  occurrence with ``[REDACTED:<kind>]`` instead, in the request's messages and in the answer.
- **Your own hook**: ``hook = "package.module:function"``, called as ``function(stage, text)`` with ``stage``
  ``"request"`` (each message's text) or ``"response"`` (the whole answer, once it is complete). It returns None
  to accept, or a string: the reason the text is refused.

A refusal is a :class:`~llm_runners.errors.GuardrailError` (HTTP 422, ``code`` naming the check:
``request_too_long``, ``response_too_long``, ``blocked_pattern``, ``pii``, ``hook``), in the caller's envelope.

**Streamed answers are checked as they stream.** Text is handed on as soon as no check can still change it:
redaction holds back only a tail that could be the start of a PII match (the trailing word or number, typically a
few characters), so a match split across two deltas is still redacted whole. A violation found mid-stream ends the
stream with the guardrail error (an error event in the front door's SSE dialect); **what was already sent is not
un-sent**. Blocked patterns are searched in a window of the text that includes the previous ``window`` characters,
so a pattern matching at most that many characters is caught where it completes, before the delta that completes
it is sent; the hook sees the whole answer only at the end, after it streamed (when it refuses, the stream ends
with the error but the text went out). Tool-call arguments are checked like text at the end of the answer.
Patterns with look-ahead beyond the text seen so far are evaluated on what has arrived.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from ..errors import GuardrailError
from ..provider import Provider
from ..types import (
    ChatRequest,
    ChatResponse,
    Message,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallEvent,
)
from .base import Wrapper

__all__ = ["PII_PATTERNS", "Guardrails", "Hook", "PiiKind", "Redactor", "load_hook"]

#: ``hook(stage, text)`` -> None (accept) or the reason the text is refused
Hook = Callable[[Literal["request", "response"], str], "str | None"]


@dataclass(frozen=True)
class PiiKind:
    """One kind of personal data: the pattern of a whole occurrence, and ``prefix``: a pattern anchored at the end
    of the text that matches wherever a future occurrence could have begun (so streaming holds that tail back)."""

    name: str
    pattern: re.Pattern[str]
    prefix: re.Pattern[str]
    check: Callable[[str], bool] | None = None


def _luhn(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_WORD_TAIL = re.compile(r"[A-Za-z0-9_.%+\-@]+\Z")
_NUMBER_TAIL = re.compile(r"(?<![A-Za-z0-9])[+(]?\d[\d ().\-]{0,22}\Z|[+(]\Z")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1?\d?\d)"

PII_PATTERNS: dict[str, PiiKind] = {
    kind.name: kind
    for kind in (
        PiiKind(
            "email",
            re.compile(
                r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
            ),
            _WORD_TAIL,
        ),
        PiiKind(
            "credit_card",
            re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d])"),
            _NUMBER_TAIL,
            _luhn,
        ),
        PiiKind("ssn", re.compile(r"(?<![\d\-])\d{3}-\d{2}-\d{4}(?![\d\-])"), _NUMBER_TAIL),
        PiiKind(
            "phone",
            re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{3}\)|\d{3})[ .\-]?\d{3}[ .\-]?\d{4}(?![\w])"),
            _NUMBER_TAIL,
        ),
        PiiKind("ipv4", re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\d.])"), _NUMBER_TAIL),
        PiiKind(
            "secret",
            re.compile(
                r"(?<![A-Za-z0-9])(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,200}|(?<![A-Z0-9])AKIA[0-9A-Z]{16}(?![A-Z0-9])|gh[pousr]_[A-Za-z0-9]{36}"
            ),
            _WORD_TAIL,
        ),
    )
}

_CONTEXT = 8  # characters of already-sent text kept for look-behind and word boundaries


class Redactor:
    """Finds PII in text that arrives in pieces (see the module docstring).

    ``feed(delta)`` returns the text that can be handed on now, redacted; ``close()`` the rest. ``found`` lists
    the kinds seen. With ``redact=False`` the first occurrence raises :class:`GuardrailError` instead.
    """

    def __init__(self, kinds: Sequence[PiiKind], *, redact: bool = True) -> None:
        self.kinds = list(kinds)
        self.redact = redact
        self.found: list[str] = []
        self._buf = ""
        self._ctx = ""

    def _hold(self, text: str, start: int) -> int:
        """Where the tail that could still begin an occurrence starts (``len(text)`` when none can)."""
        hold = len(text)
        for kind in self.kinds:
            m = kind.prefix.search(text, start)
            if m is not None:
                hold = min(hold, m.start())
        return hold

    def _next(self, text: str, pos: int) -> tuple[int, int, PiiKind] | None:
        best: tuple[int, int, PiiKind] | None = None
        for kind in self.kinds:
            for m in kind.pattern.finditer(text, pos):
                if kind.check is not None and not kind.check(m.group()):
                    continue
                if best is None or m.start() < best[0]:
                    best = (m.start(), m.end(), kind)
                break
        return best

    def _scan(self, final: bool) -> str:
        text = self._ctx + self._buf
        start = len(self._ctx)
        hold = len(text) if final else self._hold(text, start)
        out: list[str] = []
        pos = start
        while True:
            found = self._next(text, pos)
            if found is None or found[0] >= hold:
                break
            begin, end, kind = found
            if end > hold and not final:  # an occurrence that may still grow: wait for more text
                hold = begin
                break
            self.found.append(kind.name)
            if not self.redact:
                raise GuardrailError(f"the text contains personal data ({kind.name})", code="pii")
            out.append(text[pos:begin])
            out.append(f"[REDACTED:{kind.name}]")
            pos = end
            hold = max(hold, end)
        cut = max(hold, pos)
        out.append(text[pos:cut])
        self._buf = text[cut:]
        self._ctx = text[max(0, cut - _CONTEXT) : cut]
        return "".join(out)

    def feed(self, delta: str) -> str:
        self._buf += delta
        return self._scan(final=False)

    def close(self) -> str:
        return self._scan(final=True)

    def whole(self, text: str) -> str:
        """Redact (or check) one complete text."""
        self._buf, self._ctx = text, ""
        return self._scan(final=True)


def load_hook(spec: str) -> Hook:
    """``package.module:function`` -> the function (a ValueError naming what is wrong otherwise)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"guardrail hook {spec!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"guardrail hook {spec!r} cannot be loaded: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"guardrail hook {spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


class Guardrails(Wrapper):
    """``inner`` with request and response checks (see the module docstring)."""

    def __init__(
        self,
        inner: Provider,
        *,
        max_request_chars: int | None = None,
        max_response_chars: int | None = None,
        blocked: Sequence[str] = (),
        pii: Literal["off", "reject", "redact"] = "off",
        pii_kinds: Sequence[str] | None = None,
        hook: Hook | None = None,
        window: int = 256,
    ) -> None:
        super().__init__(inner)
        self.max_request_chars = max_request_chars
        self.max_response_chars = max_response_chars
        self.blocked = [re.compile(p) for p in blocked]
        if pii not in ("off", "reject", "redact"):
            raise ValueError(f"pii must be 'off', 'reject' or 'redact', not {pii!r}")
        unknown = sorted(set(pii_kinds or ()) - set(PII_PATTERNS))
        if unknown:
            raise ValueError(f"unknown pii_kinds {unknown} (known: {', '.join(PII_PATTERNS)})")
        self.pii = pii
        self.pii_kinds = [PII_PATTERNS[k] for k in (pii_kinds if pii_kinds is not None else PII_PATTERNS)]
        self.hook = hook
        self.window = window

    def _redactor(self) -> Redactor | None:
        if self.pii == "off" or not self.pii_kinds:
            return None
        return Redactor(self.pii_kinds, redact=self.pii == "redact")

    def _error(self, message: str, code: str) -> GuardrailError:
        return GuardrailError(message, provider=self.name or None, code=code)

    def _blocked(self, text: str, where: str) -> None:
        for pattern in self.blocked:
            if pattern.search(text):
                raise self._error(f"the {where} matches a blocked pattern", "blocked_pattern")

    def _hooked(self, stage: Literal["request", "response"], text: str) -> None:
        if self.hook is not None and (reason := self.hook(stage, text)) is not None:
            raise self._error(f"the {stage} was refused: {reason}", "hook")

    # -- the request ---------------------------------------------------------------------------------------
    def check_request(self, request: ChatRequest) -> ChatRequest:
        """The request as the provider may see it (redacted), or a GuardrailError."""
        if self.max_request_chars is not None:
            size = sum(len(m.text) for m in request.messages)
            if size > self.max_request_chars:
                raise self._error(
                    f"the request has {size} characters of text, more than the limit of {self.max_request_chars}",
                    "request_too_long",
                )
        changed: list[Message] | None = None
        for index, message in enumerate(request.messages):
            text = message.text
            if not text:
                continue
            self._blocked(text, "request")
            self._hooked("request", text)
            redactor = self._redactor()
            if redactor is None:
                continue
            clean = _redacted_parts(message, redactor)
            if clean is not message:
                changed = changed if changed is not None else list(request.messages)
                changed[index] = clean
        return request if changed is None else request.model_copy(update={"messages": changed})

    # -- the answer ----------------------------------------------------------------------------------------
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        request = self.check_request(request)
        redactor = self._redactor()
        window = self.window
        seen = ""  # the answer's text so far (after redaction): for the length limit, patterns and the hook
        async with aclosing(self.inner.stream(request)) as events:  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, TextDelta):
                    text = redactor.feed(event.text) if redactor is not None else event.text
                    if text:
                        self._answer_text(seen[-window:] + text)
                        seen += text
                        self._length(len(seen))
                        yield TextDelta(text)
                    continue
                if redactor is not None:  # the held tail goes out before any other event
                    tail = redactor.close()
                    if tail:
                        self._answer_text(seen[-window:] + tail)
                        seen += tail
                        self._length(len(seen))
                        yield TextDelta(tail)
                if isinstance(event, ToolCallDelta) and self.blocked:
                    continue  # the call is checked whole (its ToolCallEvent) before any of it goes out
                if isinstance(event, ToolCallEvent):
                    self._answer_text(event.call.arguments)
                if event.type == "done":
                    self._hooked("response", seen)
                yield event

    def _answer_text(self, text: str) -> None:
        self._blocked(text, "answer")

    def _length(self, size: int) -> None:
        if self.max_response_chars is not None and size > self.max_response_chars:
            raise self._error(
                f"the answer is longer than the limit of {self.max_response_chars} characters", "response_too_long"
            )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        request = self.check_request(request)
        response = await self.inner.complete(request)
        redactor = self._redactor()
        if redactor is not None and response.content:
            response.content = redactor.whole(response.content)
        self._length(len(response.content))
        self._blocked(response.content, "answer")
        for call in response.tool_calls:
            self._blocked(call.arguments, "answer")
        self._hooked("response", response.content)
        return response


def _redacted_parts(message: Message, redactor: Redactor) -> Message:
    parts = []
    changed = False
    for part in message.content:
        if isinstance(part, TextPart):
            clean = Redactor(redactor.kinds, redact=redactor.redact).whole(part.text)
            if clean != part.text:
                changed = True
                part = TextPart(text=clean)
        parts.append(part)
    return message.model_copy(update={"content": parts}) if changed else message
