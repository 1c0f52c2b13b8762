"""OpenAI Chat Completions over HTTP: OpenAI itself and every compatible server (vLLM, Ollama, LM Studio,
llama.cpp, OpenRouter, LiteLLM, …).

``base_url`` includes the version prefix, as the ``openai`` SDK's does (``https://api.openai.com/v1``,
``http://127.0.0.1:11434/v1``); requests go to ``{base_url}/chat/completions``.

Streaming: content deltas become :class:`TextDelta`; ``reasoning_content`` / ``reasoning`` deltas (DeepSeek,
vLLM, OpenRouter) become :class:`ReasoningDelta`; tool-call fragments are passed on as they come as
:class:`ToolCallDelta` (from the first fragment that names the call; arguments that came before the name go out
with it) and assembled per ``index`` into whole :class:`ToolCallEvent` when the choice finishes; the usage chunk
(``stream_options.include_usage``) becomes one :class:`UsageEvent`. A server that ignores ``"stream": true`` and
answers JSON is handled too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx2

from ..errors import InvalidRequest, UpstreamError
from ..types import (
    ChatRequest,
    Done,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    Usage,
    UsageEvent,
)
from ._base import HTTPProvider, classify_stream_error, error_message, loads

__all__ = ["OpenAICompatProvider"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAICompatProvider(HTTPProvider):
    name: ClassVar[str] = "openai_compat"
    display_name: ClassVar[str] = "OpenAI-compatible API"
    default_base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"
    key_header = ("authorization", "Bearer ")

    def _models_path(self) -> str:
        return "/models"

    # -- request ------------------------------------------------------------------------------------------------
    def _build(self, request: ChatRequest, model: str) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.stop:
            body["stop"] = request.stop
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            choice = request.tool_choice
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}} if choice.mode == "tool" else choice.mode
            )
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif fmt is not None and fmt.type == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": fmt.name or "response", "schema": fmt.json_schema or {}, "strict": fmt.strict},
            }
        return "/chat/completions", body

    # -- streamed answer ----------------------------------------------------------------------------------------
    async def _events(self, source: AsyncIterator[httpx2.ServerSentEvent]) -> AsyncIterator[StreamEvent]:
        state = _StreamState()
        async for sse in source:
            if sse.data.strip() == "[DONE]":
                state.done = True
                break
            if not sse.data.strip():
                continue
            chunk = loads(sse.data, self.name)
            if not isinstance(chunk, dict):
                raise UpstreamError(
                    f"the API sent a chunk that is not an object: {sse.data[:200]!r}", provider=self.name
                )
            for event in state.feed(chunk, self.name):
                yield event
        if not state.done and state.finish is None:
            raise UpstreamError("the API's stream ended before the answer was complete", provider=self.name)
        for event in state.finish_events():
            yield event

    def _from_json(self, body: Any) -> list[StreamEvent]:
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
            raise UpstreamError("the API answered JSON without choices", provider=self.name, detail=str(body)[:2000])
        choice = body["choices"][0]
        message = choice.get("message") or {}
        events: list[StreamEvent] = []
        if reasoning := message.get("reasoning_content") or message.get("reasoning"):
            events.append(ReasoningDelta(str(reasoning)))
        if content := message.get("content"):
            events.append(TextDelta(str(content)))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            events.append(
                ToolCallEvent(
                    ToolCall(
                        id=str(call.get("id") or ""),
                        name=str(function.get("name") or ""),
                        arguments=_arguments(function.get("arguments")),
                    )
                )
            )
        if usage := _usage(body.get("usage")):
            events.append(UsageEvent(usage))
        events.append(
            Done(finish_reason=_FINISH.get(choice.get("finish_reason") or "stop", "stop"), model=body.get("model"))
        )
        return events


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""
    #: the id the first ToolCallDelta announced (the whole call keeps it), "" until then
    announced: str = ""
    #: how much of ``arguments`` went out in deltas
    sent: int = 0


class _StreamState:
    """Folds chat.completion.chunk objects; tool calls and usage are held until the answer is complete."""

    def __init__(self) -> None:
        self.calls: dict[int, _PartialCall] = {}
        self.usage: Usage | None = None
        self.model: str | None = None
        self.finish: FinishReason | None = None
        self.done = False
        self._calls_sent = False

    def feed(self, chunk: dict[str, Any], provider: str) -> list[StreamEvent]:
        if "error" in chunk and not chunk.get("choices"):
            message, code, etype = error_message(chunk, "the API reported an error mid-stream")
            raise classify_stream_error(etype, message, code=code, provider=provider)
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        if usage := _usage(chunk.get("usage")):
            self.usage = usage
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is not requested; ignore any extra choices
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                events.append(ReasoningDelta(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                events.append(TextDelta(content))
            for fragment in delta.get("tool_calls") or []:
                events.extend(self._add_fragment(fragment, provider))
            reason = choice.get("finish_reason")
            if reason:
                self.finish = _FINISH.get(reason, "stop")
                events.extend(self._call_events())
        return events

    def _add_fragment(self, fragment: Any, provider: str) -> list[StreamEvent]:
        if not isinstance(fragment, dict):
            raise UpstreamError(f"malformed tool call fragment: {fragment!r}", provider=provider)
        index = int(fragment.get("index", len(self.calls)))
        call = self.calls.setdefault(index, _PartialCall())
        if fragment.get("id"):
            call.id = str(fragment["id"])
        function = fragment.get("function") or {}
        if function.get("name") and not call.name:  # some servers repeat the name in every fragment
            call.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments += arguments
        elif isinstance(arguments, dict):  # a few servers send the arguments already parsed
            call.arguments += _dumps(arguments)
        if self._calls_sent or not call.name:
            return []  # not named yet: its fragments wait for the name
        ordinal = sorted(self.calls).index(index)
        new = call.arguments[call.sent :]
        call.sent = len(call.arguments)
        if not call.announced:
            call.announced = call.id or f"call_{index}"
            return [ToolCallDelta(ordinal, new, id=call.announced, name=call.name)]
        return [ToolCallDelta(ordinal, new)] if new else []

    def _call_events(self) -> list[StreamEvent]:
        if self._calls_sent:
            return []
        self._calls_sent = True
        return [
            ToolCallEvent(ToolCall(id=c.announced or c.id or f"call_{i}", name=c.name, arguments=c.arguments or "{}"))
            for i, c in sorted(self.calls.items())
        ]

    def finish_events(self) -> list[StreamEvent]:
        events = self._call_events()
        if self.usage is not None:
            events.append(UsageEvent(self.usage))
        finish = self.finish or "stop"
        if finish == "stop" and self.calls:
            finish = "tool_calls"  # some servers say "stop" after tool calls
        events.append(Done(finish_reason=finish, model=self.model))
        return events


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(prompt.get("cached_tokens") or 0) if isinstance(prompt, dict) else 0,
        reasoning_tokens=int(completion.get("reasoning_tokens") or 0) if isinstance(completion, dict) else 0,
    )


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text}
    out: dict[str, Any] = {"role": m.role}
    if m.name:
        out["name"] = m.name
    if m.role == "assistant":
        out["content"] = m.text or None
        if m.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        return out
    if m.images:
        if m.role != "user":
            raise InvalidRequest(f"images are only allowed in user messages, not {m.role}", param="messages")
        out["content"] = [_part(p) for p in m.content]
    else:
        out["content"] = m.text
    return out


def _part(p: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    return {"type": "image_url", "image_url": {"url": p.data_uri()}}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _arguments(value: Any) -> str:
    if isinstance(value, dict):
        return _dumps(value)
    return value if isinstance(value, str) and value else "{}"
