"""The text tool protocol: function tools for providers that cannot take them natively.

Most CLI providers cannot hand the caller's function tools to the model as real tools. For those, the tool
catalogue is written into the system prompt, the model is asked to call a tool by writing ::

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

and the calls are parsed back out of its answer. An XML-ish tag around one JSON object was chosen because models
follow tag instructions reliably, the tag is unambiguous in prose and in streamed text (it cannot start a JSON or
Markdown construct), and one tag per call lets a turn hold several calls.

History is rendered the same way, so the transcript the model sees stays consistent: an assistant message with
``tool_calls`` becomes text holding those ``<tool_call>`` blocks, and a ``tool`` message becomes a user message
``Result of tool NAME (CALL_ID):`` followed by the result.

Parsing rules, shared by the one-shot :func:`parse_tool_calls` and the streaming :class:`ToolCallStreamParser`
(a property test holds them equal for every split of the text):

- a call is ``<tool_call>`` ... the first ``</tool_call>``; its body is one JSON object ``{"name", "arguments"}``
  (or an array of them), optionally in a code fence; ``arguments`` may be an object, a JSON string holding an
  object, or absent (``{}``);
- a body that does not decode, or names a tool outside the catalogue, stays in the text and adds a warning;
- whitespace touching a valid call is dropped, so ``"Let me look.\\n<tool_call>…</tool_call>"`` gives the
  content ``"Let me look."``; all other text is kept verbatim.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..types import ContentPart, Message, TextDelta, TextPart, ToolCall, ToolCallEvent, ToolChoice, ToolSpec

OPEN = "<tool_call>"
CLOSE = "</tool_call>"

IdFactory = Callable[[], str]


def new_call_id() -> str:
    """A fresh ``call_…`` id, in the shape OpenAI clients expect."""
    return "call_" + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------------------------- rendering


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render_tool_instructions(tools: list[ToolSpec], tool_choice: ToolChoice | None = None) -> str:
    """The system-prompt text that describes the tools and how to call them.

    ``tool_choice`` ``none`` gives a short "do not call tools" note and no catalogue; a named tool narrows the
    catalogue to that one tool, so the model cannot pick another.
    """
    mode = tool_choice.mode if tool_choice else "auto"
    if mode == "none" or not tools:
        return (
            "Do not call any tool in this answer and do not write <tool_call> blocks: answer in plain text, "
            "using the tool results already in the conversation if there are any."
        )
    if mode == "tool":
        tools = [t for t in tools if t.name == (tool_choice.name if tool_choice else None)]
    lines = [
        "# Tools",
        "",
        "You can call the following tools. Each takes one JSON object of arguments that matches its JSON schema.",
    ]
    for tool in tools:
        lines += ["", f"## {tool.name}"]
        if tool.description:
            lines.append(tool.description.strip())
        lines.append(f"Parameters (JSON schema): {json.dumps(tool.parameters, ensure_ascii=False)}")
    lines += [
        "",
        "## How to call a tool",
        "To call a tool, write exactly one line like this per call, with the tool's name and a JSON object of "
        "arguments:",
        f'{OPEN}{{"name": "TOOL_NAME", "arguments": {{"ARGUMENT": "VALUE"}}}}{CLOSE}',
        f"- Write the {OPEN} tags literally; the JSON inside must be valid (double quotes, no comments).",
        "- You may call several tools in one answer: write one block per call.",
        "- After your calls, stop and wait. Each result comes back in the next message, starting with "
        '"Result of tool TOOL_NAME (CALL_ID):". Never write a result yourself.',
        f"- Only call the tools listed above. Never write {OPEN} except to call a tool.",
    ]
    if mode == "required":
        lines.append("- In this answer you MUST call at least one tool.")
    elif mode == "tool" and tool_choice is not None:
        lines.append(f"- In this answer you MUST call the tool {tool_choice.name}.")
    else:
        lines.append("- If no tool is needed, answer in plain text without any block.")
    return "\n".join(lines)


def format_call(call: ToolCall) -> str:
    """One call in the protocol's format (arguments that are not JSON are carried as a string)."""
    try:
        arguments: Any = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        arguments = call.arguments
    return f"{OPEN}{_compact({'name': call.name, 'arguments': arguments})}{CLOSE}"


def render_history(messages: list[Message]) -> list[Message]:
    """Rewrite tool traffic as plain text for a provider without native tools.

    Assistant ``tool_calls`` become ``<tool_call>`` blocks after the message's text; each ``tool`` message becomes
    ``Result of tool NAME (CALL_ID):`` text in a user message (consecutive results share one message). Other
    messages are returned unchanged (the same objects).
    """
    names: dict[str, str] = {}
    out: list[Message] = []
    results: list[ContentPart] = []

    def flush() -> None:
        if results:
            out.append(Message(role="user", content=list(results)))
            results.clear()

    for message in messages:
        if message.role == "tool":
            call_id = message.tool_call_id or ""
            name = message.name or names.get(call_id, "unknown")
            if results:
                results.append(TextPart(text="\n\n"))
            results.append(TextPart(text=f"Result of tool {name} ({call_id}):\n"))
            results.extend(message.content or [TextPart(text="(no output)")])
            continue
        flush()
        if message.role == "assistant" and message.tool_calls:
            for call in message.tool_calls:
                names[call.id] = call.name
            blocks = "\n".join(format_call(c) for c in message.tool_calls)
            text = message.text
            out.append(Message(role="assistant", content=f"{text}\n{blocks}" if text else blocks))
        else:
            out.append(message)
    flush()
    return out


# --------------------------------------------------------------------------------------------- decoding

_FENCE = re.compile(r"^```[\w+-]*[ \t]*\n?(?P<body>.*?)\n?[ \t]*```$", re.S)


class _BadCall(ValueError):
    pass


def _decode_body(body: str, allowed: Collection[str] | None) -> list[tuple[str, str]]:
    """Decode one ``<tool_call>`` body into ``(name, compact arguments)`` pairs, or raise :class:`_BadCall`."""
    text = body.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    if not text:
        raise _BadCall("the block is empty")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _BadCall(f"the block is not valid JSON ({exc})") from None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _BadCall("the block holds an empty list")
    decoded = []
    for item in items:
        if not isinstance(item, dict):
            raise _BadCall('the block must be a JSON object {"name": …, "arguments": {…}}')
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise _BadCall('the call has no "name"')
        if allowed is not None and name not in allowed:
            raise _BadCall(f"there is no tool named {name!r}")
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                raise _BadCall(f"the arguments of {name!r} are not valid JSON") from None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise _BadCall(f"the arguments of {name!r} must be a JSON object")
        decoded.append((name, _compact(arguments)))
    return decoded


def _warning(reason: str, raw: str) -> str:
    snippet = raw if len(raw) <= 120 else raw[:117] + "..."
    return f"a malformed tool call was kept as text: {reason}: {snippet}"


# --------------------------------------------------------------------------------------------- one-shot parsing


@dataclass
class ParsedAnswer:
    """An answer split into prose and tool calls."""

    content: str
    calls: list[ToolCall] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_CALL_RE = re.compile(re.escape(OPEN) + r"(?P<body>.*?)" + re.escape(CLOSE), re.S)


def parse_tool_calls(
    text: str, allowed: Collection[str] | None = None, id_factory: IdFactory = new_call_id
) -> ParsedAnswer:
    """Split a whole answer into prose and calls. ``allowed`` restricts the tool names (``None``: any name)."""
    # Segments are prose strings or lists of calls; a malformed block is merged into the prose around it.
    segments: list[str | list[ToolCall]] = []
    warnings: list[str] = []
    prose = ""
    pos = 0
    for match in _CALL_RE.finditer(text):
        prose += text[pos : match.start()]
        pos = match.end()
        try:
            decoded = _decode_body(match.group("body"), allowed)
        except _BadCall as exc:
            warnings.append(_warning(str(exc), match.group(0)))
            prose += match.group(0)
            continue
        segments += [prose, [ToolCall(id=id_factory(), name=n, arguments=a) for n, a in decoded]]
        prose = ""
    tail = text[pos:]
    if OPEN in tail:
        start = tail.index(OPEN)
        warnings.append(_warning("the block was never closed", tail[start:]))
    segments.append(prose + tail)

    parts: list[str] = []
    calls: list[ToolCall] = []
    for i, segment in enumerate(segments):
        if isinstance(segment, list):
            calls += segment
            continue
        if i > 0:
            segment = segment.lstrip()
        if i < len(segments) - 1:
            segment = segment.rstrip()
        parts.append(segment)
    return ParsedAnswer(content="".join(parts), calls=calls, warnings=warnings)


# --------------------------------------------------------------------------------------------- streaming parsing


def _partial_open(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``<tool_call>``."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:size]):
            return size
    return 0


class ToolCallStreamParser:
    """Feed text deltas, get prose and tool calls back as soon as they are known.

    Prose is emitted at once, except a tail that could be the start of ``<tool_call>`` (at most 10 characters)
    and trailing whitespace (dropped if a call follows). A call is emitted when its closing tag arrives. The result
    of any split equals :func:`parse_tool_calls` on the whole text.
    """

    __slots__ = ("_after_call", "_allowed", "_body", "_buf", "_id_factory", "_in_call", "_pre_ws", "calls", "warnings")

    def __init__(self, allowed: Collection[str] | None = None, id_factory: IdFactory = new_call_id) -> None:
        self._allowed = allowed
        self._id_factory = id_factory
        self._buf = ""  # prose not yet emitted: trailing whitespace and/or a partial opening tag
        self._in_call = False
        self._body = ""  # text after <tool_call> while inside a call
        self._pre_ws = ""  # whitespace held back before the current call (restored if it is malformed)
        self._after_call = False  # drop leading whitespace: the last thing emitted was a valid call
        self.calls: list[ToolCall] = []
        self.warnings: list[str] = []

    def _prose(self, text: str, out: list[TextDelta | ToolCallEvent]) -> None:
        if self._after_call:
            text = text.lstrip()
            if not text:
                return
            self._after_call = False
        if text:
            out.append(TextDelta(text))

    def feed(self, delta: str) -> list[TextDelta | ToolCallEvent]:
        if not self._in_call and not self._after_call and "<" not in delta and "<" not in self._buf:
            # Hot path: plain prose; at most trailing whitespace is held back.
            text = self._buf + delta
            stripped = text.rstrip()
            self._buf = text[len(stripped) :]
            return [TextDelta(stripped)] if stripped else []
        out: list[TextDelta | ToolCallEvent] = []
        self._consume(delta, out)
        return out

    def _consume(self, delta: str, out: list[TextDelta | ToolCallEvent]) -> None:
        while delta:
            if self._in_call:
                self._body += delta
                end = self._body.find(CLOSE)
                if end == -1:
                    return
                body, delta = self._body[:end], self._body[end + len(CLOSE) :]
                self._body = ""
                self._in_call = False
                self._finish_call(body, out)
                continue
            text = self._buf + delta
            delta = ""
            start = text.find(OPEN)
            if start != -1:
                before = text[:start]
                kept = before.rstrip()
                self._prose(kept, out)
                self._pre_ws = before[len(kept) :]
                self._buf = ""
                self._in_call = True
                delta = text[start + len(OPEN) :]
                if not delta:
                    return
                continue
            hold = _partial_open(text)
            safe = text[: len(text) - hold]
            kept = safe.rstrip()
            self._prose(kept, out)
            self._buf = text[len(kept) :]

    def _finish_call(self, body: str, out: list[TextDelta | ToolCallEvent]) -> None:
        try:
            decoded = _decode_body(body, self._allowed)
        except _BadCall as exc:
            raw = OPEN + body + CLOSE
            self.warnings.append(_warning(str(exc), raw))
            # Malformed: it is prose after all, with the whitespace that was held before it.
            self._prose(self._pre_ws + raw, out)
            self._pre_ws = ""
            return
        self._pre_ws = ""
        for name, arguments in decoded:
            call = ToolCall(id=self._id_factory(), name=name, arguments=arguments)
            self.calls.append(call)
            out.append(ToolCallEvent(call))
        self._after_call = True

    def close(self) -> list[TextDelta | ToolCallEvent]:
        """End of the answer: flush what was held back (an unclosed call is kept as text, with a warning)."""
        out: list[TextDelta | ToolCallEvent] = []
        if self._in_call:
            raw = OPEN + self._body
            self.warnings.append(_warning("the block was never closed", raw))
            self._prose(self._pre_ws + raw, out)
            self._in_call = False
            self._body = self._pre_ws = ""
        elif self._buf:
            self._prose(self._buf, out)
        self._buf = ""
        return out


def collect_text(events: Iterable[TextDelta | ToolCallEvent]) -> str:
    """The prose of a list of parser events (a small helper for callers and tests)."""
    return "".join(e.text for e in events if isinstance(e, TextDelta))
