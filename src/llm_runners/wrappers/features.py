"""Honour every request feature on every provider: tools, tool_choice, response_format and sampling parameters.

:class:`FeatureAdapter` wraps one provider and reads its :class:`~llm_runners.types.Capabilities`:

- **tools** reach a provider with ``native_tools`` untouched; for any other, the text tool protocol
  (:mod:`llm_runners.tools.protocol`) puts the catalogue in the system prompt, rewrites tool traffic in the history
  as text, clears ``tools`` and parses ``<tool_call>`` blocks out of the streamed answer. ``tool_choice``
  ``required`` or a named tool is enforced: an answer without the call is retried once with a reminder (unless
  ``retry=False``), then fails with :class:`~llm_runners.errors.GuardrailError`. While such a call is still
  owed, prose is held back, so a retried attempt never leaks text to the caller.
- **response_format** reaches a provider with ``json_mode`` untouched; otherwise a JSON-only instruction is added,
  the answer is buffered, extracted, validated (with one corrective retry) and sent as one canonical JSON delta.
- **temperature, top_p, max_tokens** the provider lacks are dropped with a warning in ``Done.warnings``, or rejected
  with :class:`~llm_runners.errors.InvalidRequest` in strict mode; images likewise. So are the sampling parameters
  the front doors carry in ``request.extra`` (:data:`EXTRA_SAMPLING`: ``seed``, the penalties, ``logit_bias``,
  ``logprobs``, ``top_logprobs``, ``top_k``), unless the provider lists the name in an ``extra_params`` attribute
  (a set of the extra keys it honours); they stay in ``extra`` either way. Neutral values (``false``, ``0``
  penalties, an empty ``logit_bias``) ask for nothing and are not reported. **stop** is emulated for every
  provider: the text is cut at the first stop sequence (the inner stream is still drained, so usage and the
  session id are not lost).

Strict mode is the adapter's ``strict`` argument, or ``request.extra["strict"]`` (a bool) per request.

A request that needs none of this is handed to the inner provider as it is: ``stream`` returns the inner stream
itself, so the adapter costs one capability check on the hot path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ..errors import GuardrailError, InvalidRequest, LLMError, UpstreamError
from ..provider import Provider, collect
from ..tools.protocol import ToolCallStreamParser, render_history, render_tool_instructions
from ..tools.structured import (
    JSONAnswerError,
    canonical_answer,
    check_format,
    invalid_answer,
    is_structured,
    json_instruction,
)
from ..types import (
    Capabilities,
    ChatRequest,
    ChatResponse,
    Done,
    Health,
    ImagePart,
    Message,
    ModelInfo,
    ResponseFormat,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallEvent,
)

_SAMPLING = ("temperature", "top_p", "max_tokens")

#: ``ChatRequest.extra`` key: the parameters the caller's wire format makes every request carry (Anthropic's
#: ``max_tokens``). One the provider cannot honour is dropped without a warning (or, strict, an error): the caller
#: did not choose it, so a warning on every request would be noise
FORMAT_REQUIRED_KEY = "format_required"

#: sampling parameters carried in ``ChatRequest.extra``, with the values that ask for nothing
EXTRA_SAMPLING: dict[str, tuple[object, ...]] = {
    "seed": (),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logit_bias": ({},),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "top_k": (),
    "web_search_options": (),  # not sampling, but the same rule: a provider that cannot search must say so
}


class StopCutter:
    """Cut streamed text at the first stop sequence, holding back only a tail that could start one."""

    __slots__ = ("_buf", "_stops", "matched", "stopped")

    def __init__(self, stops: list[str]) -> None:
        self._stops = list(dict.fromkeys(s for s in stops if s))
        self._buf = ""
        self.stopped = False
        self.matched: str | None = None  # the stop sequence that cut the text

    def _held(self, text: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        text = self._buf + delta
        cut = -1
        for stop in self._stops:
            found = text.find(stop)
            if found != -1 and (cut == -1 or found < cut):
                cut = found
                self.matched = stop
        if cut != -1:
            self.stopped = True
            self._buf = ""
            return text[:cut]
        held = self._held(text)
        self._buf = text[len(text) - held :] if held else ""
        return text[: len(text) - held]

    def close(self) -> str:
        text, self._buf = self._buf, ""
        return "" if self.stopped else text


@dataclass
class _Plan:
    """What the adapter does to one request (built once, before the inner provider runs)."""

    request: ChatRequest
    warnings: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    parse_tools: bool = False
    allowed: frozenset[str] | None = None
    require: str | None = None  # "" = any tool, else the tool's name
    fmt: ResponseFormat | None = None


class _Attempt:
    """The processing of one inner answer: stop cutting, tool parsing, holding and buffering of prose."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.cutter = StopCutter(plan.stop) if plan.stop else None
        self.parser = ToolCallStreamParser(plan.allowed) if plan.parse_tools else None
        self.buffer_all = plan.fmt is not None
        self.hold = plan.require is not None
        self.passthrough = self.cutter is None and self.parser is None and not self.buffer_all and not self.hold
        self.raw: list[str] = []  # the model's text after stop cutting, for a corrective retry
        self.held: list[str] = []
        self.calls: list[ToolCall] = []

    def text(self, delta: str) -> list[StreamEvent]:
        if self.cutter is not None:
            delta = self.cutter.feed(delta)
            if not delta:
                return []
        return self._cut_text(delta)

    def _cut_text(self, delta: str) -> list[StreamEvent]:
        self.raw.append(delta)
        if self.parser is None:
            return self._route([TextDelta(delta)])
        return self._route(self.parser.feed(delta))

    def _route(self, events: list[TextDelta | ToolCallEvent]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for event in events:
            if isinstance(event, ToolCallEvent):
                self.calls.append(event.call)
                if self.hold:
                    self.hold = False
                    if not self.buffer_all:
                        out += self._release()
                out.append(event)
            elif self.buffer_all or self.hold:
                self.held.append(event.text)
            else:
                out.append(event)
        return out

    def _release(self) -> list[StreamEvent]:
        text = "".join(self.held)
        self.held.clear()
        return [TextDelta(text)] if text else []

    def finish(self) -> tuple[list[StreamEvent], str | None]:
        """Flush held-back text; return the last events and the reason this answer fails, if it does."""
        out: list[StreamEvent] = []
        if self.cutter is not None:
            tail = self.cutter.close()
            if tail:
                out += self._cut_text(tail)
        if self.parser is not None:
            out += self._route(self.parser.close())
        if self.hold:
            return out, self._missing_call()
        if self.plan.fmt is not None and not self.calls:
            try:
                canonical = canonical_answer("".join(self.held), self.plan.fmt)
            except JSONAnswerError as exc:
                return out, str(exc)
            return [*out, TextDelta(canonical)], None
        return out + self._release(), None

    def _missing_call(self) -> str:
        wanted = f"a call to {self.plan.require!r}" if self.plan.require else "a tool call"
        reason = f"tool_choice requires {wanted} but the model answered without one"
        if self.parser is not None and self.parser.warnings:
            reason += f" ({self.parser.warnings[0]})"
        return reason

    def correction(self) -> list[Message]:
        """The messages that ask the model to fix this answer on a retry."""
        if self.plan.require is not None:
            wanted = f"the tool {self.plan.require}" if self.plan.require else "at least one tool"
            ask = (
                f"Your answer did not call a tool. You must call {wanted} now: write a <tool_call> block exactly "
                "as described in the system prompt."
            )
        else:
            ask = "Your answer was not the JSON that was asked for. Answer again with only the JSON, nothing else."
        said = "".join(self.raw).strip() or "(empty answer)"
        return [Message(role="assistant", content=said), Message(role="user", content=ask)]


class FeatureAdapter(Provider):
    """A provider that honours tools, tool_choice, response_format and sampling parameters on top of ``inner``.

    ``strict``: reject (instead of drop with a warning) a parameter or images the inner provider cannot take.
    ``retry``: give the model one corrective retry when it misses a required tool call or the requested JSON.
    """

    def __init__(self, inner: Provider, *, strict: bool = False, retry: bool = True) -> None:
        self.inner = inner
        self.strict = strict
        self.retry = retry

    # -- delegation -------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def display_name(self) -> str:  # type: ignore[override]
        return self.inner.display_name

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.inner.capabilities

    @property
    def default_model(self) -> str | None:  # type: ignore[override]
        return self.inner.default_model

    async def models(self) -> list[ModelInfo]:
        return await self.inner.models()

    async def health(self) -> Health:
        return await self.inner.health()

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def processes(self) -> dict[str, int]:
        return self.inner.processes()

    def limit_processes(self, limit: int) -> None:
        self.inner.limit_processes(limit)

    # -- requests ---------------------------------------------------------------------------------------------
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        try:
            plan = self.plan(request)
        except LLMError as exc:
            return _raise(exc)
        if plan is None:
            return self.inner.stream(request)
        return self._adapted(plan)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        plan = self.plan(request)
        if plan is None:
            return await self.inner.complete(request)
        stream = self._adapted(plan)
        try:
            return await collect(stream, provider=self.name)
        finally:
            await stream.aclose()

    def plan(self, request: ChatRequest) -> _Plan | None:
        """Decide what to rewrite, emulate, drop or reject; ``None`` when the request passes through untouched."""
        caps = self.inner.capabilities
        label = self.inner.name or "this provider"
        strict = request.extra.get("strict", self.strict) is True
        updates: dict[str, Any] = {}
        plan = _Plan(request=request)
        system: list[str] = []
        messages = request.messages

        def unsupported(param: str) -> None:
            if strict:
                raise InvalidRequest(f"{param} is not supported by {label}", provider=label, param=param)
            plan.warnings.append(f"{param} is not supported by {label} and was ignored")

        _check_tool_choice(request)
        required: tuple[str, ...] = request.extra.get(FORMAT_REQUIRED_KEY, ()) if request.extra else ()
        for param in _SAMPLING:
            if getattr(request, param) is not None and not getattr(caps, param):
                if param not in required:
                    unsupported(param)
                updates[param] = None
        if request.extra:
            honoured: frozenset[str] = getattr(self.inner, "extra_params", frozenset())
            for param, neutral in EXTRA_SAMPLING.items():
                value = request.extra.get(param)
                if (
                    value is None
                    or param in honoured
                    or any(value == n and (value is False) == (n is False) for n in neutral)
                ):
                    continue
                unsupported(param)
        if request.stop and not caps.stop:
            plan.stop = list(request.stop)
            updates["stop"] = []
        if not caps.images:
            count = sum(len(m.images) for m in messages)
            if count:
                if strict:
                    raise InvalidRequest(f"images are not supported by {label}", provider=label, param="messages")
                plan.warnings.append(f"images are not supported by {label}; {count} image(s) were removed")
                messages = [_without_images(m) if m.images else m for m in messages]
        if not caps.native_tools:
            if any(m.role == "tool" or m.tool_calls for m in messages):
                messages = render_history(messages)
            if request.tools:
                choice = request.tool_choice
                system.append(render_tool_instructions(request.tools, choice))
                mode = choice.mode if choice else "auto"
                plan.parse_tools = mode != "none"
                if mode == "tool" and choice is not None and choice.name:
                    plan.allowed = frozenset((choice.name,))
                    plan.require = choice.name
                else:
                    plan.allowed = frozenset(t.name for t in request.tools)
                    plan.require = "" if mode == "required" else None
            if request.tools or request.tool_choice is not None:
                updates["tools"] = []
                updates["tool_choice"] = None
        fmt = request.response_format
        if fmt is not None and is_structured(fmt):
            check_format(fmt)
            if not caps.json_mode:
                plan.fmt = fmt
                system.append(json_instruction(fmt))
                updates["response_format"] = None
        if system:
            messages = _with_system(messages, "\n\n".join(system))
        if messages is not request.messages:
            updates["messages"] = messages
        if not updates and not plan.warnings:
            return None
        plan.request = request.model_copy(update=updates)
        return plan

    async def _adapted(self, plan: _Plan) -> AsyncGenerator[StreamEvent, None]:
        request = plan.request
        attempts = 2 if self.retry and (plan.require is not None or plan.fmt is not None) else 1
        notes: list[str] = []
        for attempt in range(1, attempts + 1):
            state = _Attempt(plan)
            done: Done | None = None
            async with aclosing(self.inner.stream(request)) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, TextDelta):
                        if state.passthrough:
                            yield event
                        else:
                            for out in state.text(event.text):
                                yield out
                    elif isinstance(event, Done):
                        done = event
                    else:
                        yield event
            if done is None:
                raise UpstreamError("the provider's stream ended without a final event", provider=self.name)
            tail, failure = state.finish()
            if failure is None:
                for out in tail:
                    yield out
                yield self._done(done, plan, state, notes)
                return
            if attempt == attempts:
                raise self._failure(failure, plan, retried=attempts > 1)
            notes.append(f"the first answer was rejected ({failure}); the model was asked once more")
            request = request.model_copy(update={"messages": [*request.messages, *state.correction()]})

    def _done(self, done: Done, plan: _Plan, state: _Attempt, notes: list[str]) -> Done:
        finish = done.finish_reason
        stop_sequence = done.stop_sequence
        if state.calls:
            finish = "tool_calls"
        elif state.cutter is not None and state.cutter.stopped:
            finish, stop_sequence = "stop", state.cutter.matched
        warnings = (*done.warnings, *plan.warnings, *notes, *(state.parser.warnings if state.parser else ()))
        return Done(
            finish_reason=finish,
            model=done.model,
            session_id=done.session_id,
            warnings=warnings,
            stop_sequence=stop_sequence,
        )

    def _failure(self, reason: str, plan: _Plan, *, retried: bool) -> LLMError:
        suffix = " (also after one corrective retry)" if retried else ""
        if plan.require is not None:
            return GuardrailError(reason + suffix, provider=self.name, code="tool_call_missing", param="tool_choice")
        assert plan.fmt is not None
        error = invalid_answer(reason, plan.fmt, provider=self.name)
        error.message += suffix
        error.args = (error.message,)
        return error


def _check_tool_choice(request: ChatRequest) -> None:
    choice = request.tool_choice
    if choice is None or choice.mode in ("auto", "none"):
        return
    if not request.tools:
        raise InvalidRequest(f"tool_choice {choice.mode!r} needs at least one tool in tools", param="tool_choice")
    if choice.mode == "tool" and choice.name not in {t.name for t in request.tools}:
        raise InvalidRequest(f"tool_choice names {choice.name!r}, which is not among the tools", param="tool_choice")


def _without_images(message: Message) -> Message:
    content = [p for p in message.content if not isinstance(p, ImagePart)]
    if not content and not message.tool_calls:
        content = [TextPart(text="[image omitted: this model cannot see images]")]
    return message.model_copy(update={"content": content})


def _with_system(messages: list[Message], text: str) -> list[Message]:
    """Add ``text`` as a system message right after the leading system messages."""
    index = 0
    while index < len(messages) and messages[index].role == "system":
        index += 1
    return [*messages[:index], Message(role="system", content=text), *messages[index:]]


async def _raise(error: LLMError) -> AsyncIterator[StreamEvent]:
    """A stream that fails on first use, like any provider's stream (not when ``stream()`` is called)."""
    raise error
    yield  # pragma: no cover  (makes this an async generator)
