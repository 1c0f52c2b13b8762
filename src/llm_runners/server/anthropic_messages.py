"""Anthropic Messages front door: ``POST /v1/messages`` (JSON and SSE) and ``POST /v1/messages/count_tokens``.

It accepts what the real Claude Code CLI sends when pointed at this server (see ``cli-transcripts/claude``):
``?beta=true``, ``{"role": "system"}`` messages inside ``messages``, ``system`` as blocks with ``cache_control``,
``thinking``, ``context_management``, ``output_config`` and ``metadata.user_id`` as a JSON-encoded string.

Choices made where the wire format leaves room:

- The ``x-anthropic-billing-header: ...`` system block Claude Code prepends is dropped: it is bookkeeping for
  Anthropic's billing, not an instruction, and would only cost the model context.
- ``thinking`` and ``top_k`` travel in ``ChatRequest.extra``; ``cache_control``, ``context_management`` and
  ``output_config`` are accepted and ignored (prompt caching is the provider's business). Server tools (typed
  tools without ``input_schema``, e.g. ``web_search_20250305``) are skipped with a warning header.
- Assistant ``thinking`` / ``redacted_thinking`` blocks in the history are skipped: a CLI cannot take them back.
- **Conversation key**: ``X-LLM-Runners-Conversation`` header; else Claude Code's session
  (``X-Claude-Code-Session-Id`` header, or ``session_id`` inside ``metadata.user_id``) as
  ``claude-code:<session id>``, so each Claude Code session maps to one provider session.
- **Warnings**: the ``x-llm-runners-warnings`` header on JSON responses; on streams a ``"warnings"`` list in the
  ``message_delta`` event.
- ``model`` given as an array of names asks them all at once (:mod:`.multiplex`).
- ``"llm_runners": {"tool_execution": "server"}`` in the body runs the tools on the server's MCP servers
  (:mod:`llm_runners.tools.agent`); the executed calls are listed in ``llm_runners.tool_runs`` on the message, or on
  the stream's ``message_delta``.
- ``max_tokens`` is optional here (the real API requires it): a CLI has no such limit to pass, and clients that
  omit it mean "no particular limit". Given, it must be a positive integer; a provider without a token limit drops
  it *without* a warning, since every request of this format carries it. ``anthropic-version`` and
  ``anthropic-beta`` headers are accepted whatever their value.
- ``stop_reason`` is ``stop_sequence`` with the matching ``stop_sequence`` when one of ``stop_sequences`` ended
  the answer (emulated by the feature adapter for providers without native stop sequences).
- Unsupported content blocks (``document``, ``search_result``, ``container_upload``…) are a 400 naming the block.
- **count_tokens** is an estimate, not a tokenizer: ``ceil(characters / 4)`` over the system prompt, every text
  part, tool-call arguments, tool results and the tools' names, descriptions and JSON schemas, plus 1,600 tokens per
  image (Anthropic's cost of a ~1.15 megapixel image) and 4 per message for framing. Good for budgeting, off by
  tens of percent for code or non-English text.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..errors import InvalidRequest, LLMError
from ..router import Route, Router
from ..tools.agent import ServerTools, agent_options, render_tool_runs
from ..types import (
    ChatRequest,
    ChatResponse,
    Done,
    ImagePart,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    Usage,
    UsageEvent,
)
from ..wrappers.features import FORMAT_REQUIRED_KEY
from .errors import from_validation, opt_bool, opt_dict, opt_int, opt_list, opt_number, opt_str, read_json
from .multiplex import MultiplexCall, multiplex_models
from .observe import note_route
from .openai_chat import CONVERSATION_HEADER, chat_model_name
from .sse import (
    CompletionCall,
    Render,
    StreamedCalls,
    StreamingCall,
    cost_fields,
    dumps,
    json_string,
    sse_event,
    warnings_headers,
)

__all__ = ["AnthropicMessages", "CountTokens", "estimate_tokens", "parse_messages_request"]

_BILLING_PREFIX = "x-anthropic-billing-header:"
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}
IMAGE_TOKENS = 1600


# ------------------------------------------------------------------------------------------------ parsing


def _image(block: dict[str, Any], param: str) -> ImagePart:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest(f"{param}.source: expected an object", param=f"{param}.source")
    try:
        if source.get("type") == "base64":
            data, media = source.get("data"), source.get("media_type")
            if not isinstance(data, str) or not isinstance(media, str):
                raise ValueError("a base64 source needs string 'data' and 'media_type'")
            return ImagePart.from_base64(data, media)
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return ImagePart(url=source["url"])
    except ValueError as exc:
        raise InvalidRequest(f"{param}.source: {exc}", param=f"{param}.source") from None
    raise InvalidRequest(f"{param}.source.type: expected 'base64' or 'url'", param=f"{param}.source.type")


def _text_of(block: dict[str, Any], param: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"{param}.text: expected a string", param=f"{param}.text")
    return text


def _tool_result(block: dict[str, Any], param: str) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{param}.tool_use_id: required", param=f"{param}.tool_use_id")
    content = block.get("content")
    parts: list[TextPart | ImagePart] = []
    if isinstance(content, str):
        parts = [TextPart(text=content)] if content else []
    elif isinstance(content, list):
        for j, sub in enumerate(content):
            sp = f"{param}.content[{j}]"
            kind = sub.get("type") if isinstance(sub, dict) else None
            if kind == "text":
                parts.append(TextPart(text=_text_of(sub, sp)))
            elif kind == "image":
                parts.append(_image(sub, sp))
            else:
                raise InvalidRequest(f"{sp}.type: expected 'text' or 'image'", param=f"{sp}.type")
    elif content is not None:
        raise InvalidRequest(f"{param}.content: expected a string or blocks", param=f"{param}.content")
    if block.get("is_error"):
        parts.insert(0, TextPart(text="[tool error] "))
    return Message(role="tool", content=parts, tool_call_id=call_id)


def _message(msg: Any, param: str) -> list[Message]:
    if not isinstance(msg, dict):
        raise InvalidRequest(f"{param}: expected a message object", param=param)
    role = msg.get("role")
    if role not in ("user", "assistant", "system"):
        raise InvalidRequest(f"{param}.role: expected 'user', 'assistant' or 'system'", param=f"{param}.role")
    content = msg.get("content")
    if isinstance(content, str):
        return [Message(role=role, content=content)]
    if not isinstance(content, list):
        raise InvalidRequest(f"{param}.content: expected a string or an array of blocks", param=f"{param}.content")
    parts: list[TextPart | ImagePart] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for i, block in enumerate(content):
        p = f"{param}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(TextPart(text=_text_of(block, p)))
        elif kind == "image":
            parts.append(_image(block, p))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise InvalidRequest(f"{p}: a tool_use block needs string 'id' and 'name'", param=p)
            calls.append(ToolCall(id=block["id"], name=block["name"], arguments=dumps(block.get("input") or {})))
        elif kind == "tool_result" and role == "user":
            results.append(_tool_result(block, p))
        elif isinstance(kind, str) and kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise InvalidRequest(f"{p}.type: unsupported block type {kind!r} in a {role} message", param=f"{p}.type")
    out = results
    if parts or calls or not results:
        out.append(Message(role=role, content=parts, tool_calls=calls))
    return out


def _system(value: Any) -> list[Message]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Message(role="system", content=value)] if value else []
    if not isinstance(value, list):
        raise InvalidRequest("system: expected a string or an array of text blocks", param="system")
    texts = []
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise InvalidRequest(f"system[{i}]: expected a text block", param=f"system[{i}]")
        text = _text_of(block, f"system[{i}]")
        if not text.startswith(_BILLING_PREFIX):
            texts.append(text)
    joined = "\n\n".join(t for t in texts if t)
    return [Message(role="system", content=joined)] if joined else []


def _tools(value: list[Any] | None, warnings: list[str]) -> list[ToolSpec]:
    specs = []
    for i, tool in enumerate(value or []):
        p = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"{p}: expected {{name, description, input_schema}}", param=p)
        schema = tool.get("input_schema")
        if schema is None and tool.get("type") not in (None, "custom"):
            warnings.append(f"server tool {tool['name']!r} ({tool.get('type')}) is not supported and was ignored")
            continue
        if not isinstance(schema, dict):
            raise InvalidRequest(f"{p}.input_schema: expected a JSON schema object", param=f"{p}.input_schema")
        specs.append(ToolSpec(name=tool["name"], description=str(tool.get("description") or ""), parameters=schema))
    return specs


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("auto", "none"):
        return ToolChoice(mode=kind)
    if kind == "any":
        return ToolChoice(mode="required")
    if kind == "tool" and isinstance(value.get("name"), str):
        return ToolChoice(mode="tool", name=value["name"])
    raise InvalidRequest("tool_choice: expected {type: auto | any | none | tool, name?}", param="tool_choice")


def _conversation(body: dict[str, Any], headers: Any) -> str | None:
    if headers is not None:
        explicit = headers.get(CONVERSATION_HEADER)
        if explicit:
            return str(explicit)
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and user_id.startswith("{"):
        try:
            session = json.loads(user_id).get("session_id")
        except (ValueError, AttributeError, RecursionError):
            session = None
        if isinstance(session, str) and session:
            return f"claude-code:{session}"
    session = headers.get("x-claude-code-session-id") if headers is not None else None
    return f"claude-code:{session}" if session else None


def parse_messages_request(body: dict[str, Any], headers: Any = None) -> tuple[ChatRequest, bool, list[str]]:
    """Body of a Messages request → (ChatRequest, stream?, warnings). Raises InvalidRequest."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("messages: expected a non-empty array of messages", param="messages")
    warnings: list[str] = []
    stop = opt_list(body, "stop_sequences") or []
    if not all(isinstance(s, str) for s in stop):
        raise InvalidRequest("stop_sequences: expected an array of strings", param="stop_sequences")
    extra: dict[str, Any] = {}
    if body.get("thinking") is not None:
        extra["thinking"] = opt_dict(body, "thinking")
    top_k = opt_int(body, "top_k")
    if top_k is not None:
        extra["top_k"] = top_k
    extra.update(agent_options(body))
    max_tokens = opt_int(body, "max_tokens")
    if max_tokens is not None:
        extra[FORMAT_REQUIRED_KEY] = ("max_tokens",)  # the format requires it: not the caller's choice
    try:
        messages = _system(body.get("system"))
        for i, msg in enumerate(raw):
            messages.extend(_message(msg, f"messages[{i}]"))
        request = ChatRequest(
            messages=messages,
            model=opt_str(body, "model"),
            max_tokens=max_tokens,
            temperature=opt_number(body, "temperature", 0.0, 1.0),
            top_p=opt_number(body, "top_p", 0.0, 1.0),
            stop=stop,
            tools=_tools(opt_list(body, "tools"), warnings),
            tool_choice=_tool_choice(body.get("tool_choice")),
            conversation=_conversation(body, headers),
            extra=extra,
        )
    except ValidationError as exc:
        raise from_validation(exc) from None
    return request, bool(opt_bool(body, "stream")), warnings


def estimate_tokens(request: ChatRequest) -> int:
    """The count_tokens heuristic (see the module docstring)."""
    chars = 0
    images = 0
    for m in request.messages:
        chars += 16
        for part in m.content:
            if isinstance(part, TextPart):
                chars += len(part.text)
            else:
                images += 1
        for call in m.tool_calls:
            chars += len(call.name) + len(call.arguments)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(dumps(tool.parameters))
    return math.ceil(chars / 4) + images * IMAGE_TOKENS


# ------------------------------------------------------------------------------------------------ rendering


def _usage(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    return {
        "input_tokens": max(0, u.input_tokens - u.cached_tokens - u.cache_write_tokens),
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        **cost_fields(u),
    }


def _input_of(call: ToolCall) -> Any:
    try:
        value = json.loads(call.arguments or "{}")
    except (ValueError, RecursionError):
        value = None
    return value if isinstance(value, dict) else {"_raw_arguments": call.arguments}


def _stop(finish_reason: str, stop_sequence: str | None) -> tuple[str, str | None]:
    """``stop_reason`` and ``stop_sequence``: ``stop_sequence`` names the one that ended the answer, if any."""
    if stop_sequence and finish_reason == "stop":
        return "stop_sequence", stop_sequence
    return _STOP_REASONS.get(finish_reason, "end_turn"), None


def render_message(response: ChatResponse, model: str, warnings: list[str]) -> tuple[bytes, dict[str, str]]:
    content: list[dict[str, Any]] = []
    if response.reasoning:
        content.append({"type": "thinking", "thinking": response.reasoning, "signature": ""})
    if response.content:
        content.append({"type": "text", "text": response.content})
    for call in response.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _input_of(call)})
    stop_reason, stop_sequence = _stop(response.finish_reason, response.stop_sequence)
    body: dict[str, Any] = {
        "id": "msg_" + uuid.uuid4().hex,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(response.usage),
    }
    if response.tool_runs:
        body["llm_runners"] = {"tool_runs": render_tool_runs(response.tool_runs)}
    return dumps(body).encode(), warnings_headers([*warnings, *response.warnings])


# what _delta({"type": "text_delta", ...}) renders, with only the index and the text left to fill in
_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":%s}}\n\n'
)


class MessageStreamRenderer:
    """Stream events → Messages SSE: one content block per run of text / thinking, one per tool call.

    The format streams block by block, so a tool call whose fragments are streaming keeps its ``tool_use`` block
    open until its whole :class:`ToolCallEvent`: whatever else would render meanwhile (text, reasoning, the
    fragments of other calls, whole calls), as an upstream interleaving parallel calls sends it, is held back in
    arrival order and replayed once that block is closed. ``Done`` and errors let out what is held first. What is
    held is never more than the upstream sent."""

    heartbeat = b'event: ping\ndata: {"type":"ping"}\n\n'

    def __init__(self, model: str, input_estimate: int, warnings: list[str]) -> None:
        self.model = model
        self.input_estimate = input_estimate
        self.warnings = warnings
        self.index = -1
        self.open: str | None = None
        self.usage: Usage | None = None
        self.streamed = StreamedCalls()
        #: the ordinal of the streamed call whose block is open and not finished, and what waits for its end
        self.streaming: int | None = None
        self.held: list[StreamEvent] = []
        self.done = False

    def head(self) -> bytes:
        message: dict[str, Any] = {
            "id": "msg_" + uuid.uuid4().hex,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_estimate, "output_tokens": 0},
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        self.streaming = None
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _start(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.open = block["type"]
        return out + sse_event(
            "content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block}
        )

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse_event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def _waits(self, event: StreamEvent) -> bool:
        """Whether ``event`` must wait for the streaming call's block to close (it is no part of that call)."""
        if self.streaming is None or isinstance(event, UsageEvent | Done):
            return False
        if isinstance(event, ToolCallDelta):
            return event.index != self.streaming
        if isinstance(event, ToolCallEvent):
            streamed = self.streamed.finished(event.call)
            return streamed is None or streamed is not self.streamed.by_ordinal.get(self.streaming)
        return isinstance(event, TextDelta | ReasoningDelta)

    def _replay(self) -> bytes:
        """What is held and may go out now, in arrival order (a replayed call's first fragment holds again)."""
        out = b""
        while self.held and self.streaming is None:
            out += self._render(self.held.pop(0))
            if self.streaming is not None:  # the replayed call's own events go out, the rest keep waiting
                own = [e for e in self.held if not self._waits(e)]
                self.held = [e for e in self.held if self._waits(e)]
                for event in own:
                    out += self._render(event)
        return out

    def _flush(self) -> bytes:
        """Everything held, whether or not the calls streaming now ever finish (the stream ends)."""
        out = b""
        while self.held:
            self.streaming = None
            out += self._replay()
        return out

    def event(self, event: StreamEvent) -> bytes:
        if self._waits(event):
            self.held.append(event)
            return b""
        if isinstance(event, Done):
            return self._flush() + self._render(event)
        return self._render(event) + self._replay()

    def _render(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = b"" if self.open == "text" else self._start({"type": "text", "text": ""})
            return out + _TEXT_DELTA % (self.index, json_string(event.text).encode())
        if isinstance(event, ReasoningDelta):
            if not event.text:
                return b""
            out = b"" if self.open == "thinking" else self._start({"type": "thinking", "thinking": "", "signature": ""})
            return out + self._delta({"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, ToolCallDelta):
            return self._tool_delta(event)
        if isinstance(event, ToolCallEvent):
            call = event.call
            streamed = self.streamed.finished(call)
            if streamed is not None and self.open == "tool_use" and self.index == streamed.slot:
                # its block is the open one: what the fragments lacked, then the block's end
                rest = streamed.rest(call) if "".join(streamed.sent) else (call.arguments or "{}")
                out = self._delta({"type": "input_json_delta", "partial_json": rest}) if rest else b""
                return out + self._close()
            if streamed is not None:  # its block was closed when the stream ended early: it went out as it was
                return b""
            out = self._start({"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            out += self._delta({"type": "input_json_delta", "partial_json": call.arguments or "{}"})
            return out + self._close()
        if isinstance(event, UsageEvent):
            self.usage = event.usage if self.usage is None else self.usage + event.usage
            return b""
        if isinstance(event, Done):
            self.done = True
            stop_reason, stop_sequence = _stop(event.finish_reason, event.stop_sequence)
            delta: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": _usage(self.usage),
            }
            warnings = [*self.warnings, *event.warnings]
            if warnings:
                delta["warnings"] = warnings
            if event.tool_runs:
                delta["llm_runners"] = {"tool_runs": render_tool_runs(event.tool_runs)}
            return (
                self._close() + sse_event("message_delta", delta) + sse_event("message_stop", {"type": "message_stop"})
            )
        return b""

    def _tool_delta(self, event: ToolCallDelta) -> bytes:
        """A call's first fragment opens its ``tool_use`` block, which stays the open one until the whole call (see
        the class docstring); each fragment is an ``input_json_delta`` in it."""
        out = b""

        def open_block() -> tuple[int, str]:
            nonlocal out
            out = self._start({"type": "tool_use", "id": event.id, "name": event.name, "input": {}})
            self.streaming = event.index
            return self.index, ""

        found = self.streamed.fragment(event, open_block)
        if found is None or not event.arguments:
            return out
        if self.open != "tool_use" or self.index != found[0].slot:
            found[0].sent.pop()  # a fragment after its call's end (the stream ended early): it cannot go out
            return out
        return out + self._delta({"type": "input_json_delta", "partial_json": event.arguments})

    def error(self, exc: LLMError) -> bytes:
        return self._flush() + sse_event("error", exc.anthropic_envelope())


# ------------------------------------------------------------------------------------------------ endpoints


class AnthropicMessages:
    def __init__(self, router: Router, timeout: float | None, *, tools: ServerTools | None = None) -> None:
        self.router = router
        self.timeout = timeout
        self.tools = tools

    async def __call__(self, request: Request) -> StreamingCall | CompletionCall | MultiplexCall:
        body = await read_json(request)
        models = multiplex_models(body)
        if models is not None:
            chat, _, warnings = parse_messages_request(dict(body, model=None), request.headers)

            def prepare(chat: ChatRequest, asked: str, route: Route) -> Render:
                model = chat_model_name(asked, route.qualified)
                return lambda r: render_message(r, model, warnings)

            note_route(request.scope, "multiplex", None, False)
            return MultiplexCall(
                self.router, chat, models, prepare, "anthropic", warnings=warnings, timeout=self.timeout
            )
        chat, stream, warnings = parse_messages_request(body, request.headers)
        route = await self.router.resolve(chat.model)
        note_route(request.scope, route.name, route.model or route.provider.default_model, stream)
        chat.model = route.model
        model = chat_model_name(body.get("model"), route.qualified)
        provider = self.tools.provider_for(route, chat) if self.tools is not None else route.provider
        if stream:
            renderer = MessageStreamRenderer(model, estimate_tokens(chat), warnings)
            return StreamingCall(provider, chat, renderer, "anthropic", timeout=self.timeout)
        return CompletionCall(
            provider, chat, lambda r: render_message(r, model, warnings), "anthropic", timeout=self.timeout
        )


class CountTokens:
    """``/v1/messages/count_tokens``: the estimate of the module docstring; the model is not resolved or run."""

    async def __call__(self, request: Request) -> Response:
        body = await read_json(request)
        body.setdefault("model", None)
        chat, _, _ = parse_messages_request(body, None)
        return Response(dumps({"input_tokens": estimate_tokens(chat)}), media_type="application/json")
