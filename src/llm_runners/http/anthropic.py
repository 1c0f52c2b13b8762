"""Anthropic Messages over HTTP (``POST {base_url}/v1/messages``).

``base_url`` has no version suffix, as the ``anthropic`` SDK's and Claude Code's ``ANTHROPIC_BASE_URL`` do not
(``https://api.anthropic.com``). The key goes in ``x-api-key``.

Mapping: all system messages become the top-level ``system``; ``tool`` messages become ``tool_result`` blocks in a
user turn (consecutive results share one turn, as the API requires); assistant tool calls become ``tool_use``
blocks. ``max_tokens`` is mandatory on this API, so ``default_max_tokens`` fills it when the request has none.
JSON mode has no native switch here (``json_mode`` is False), so the server's emulation applies.

Streaming: ``text_delta`` -> :class:`TextDelta`, ``thinking_delta`` -> :class:`ReasoningDelta`, each
``tool_use`` block -> a :class:`ToolCallDelta` at its start (id, name) and one per ``input_json_delta``, then one
:class:`ToolCallEvent` at its ``content_block_stop``; input usage from
``message_start`` and output usage from ``message_delta`` -> one :class:`UsageEvent`; ``event: error`` inside
the stream raises the matching error. An answer the API ended on one of ``stop_sequences``
(``stop_reason: "stop_sequence"``) finishes with ``"stop"`` and names the sequence in ``Done.stop_sequence``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Unpack

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
from ._base import HTTP_CAPABILITIES, HTTPOptions, HTTPProvider, classify_stream_error, error_message, loads

__all__ = ["AnthropicProvider"]

ANTHROPIC_VERSION = "2023-06-01"

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider(HTTPProvider):
    name: ClassVar[str] = "anthropic"
    display_name: ClassVar[str] = "Anthropic API"
    capabilities = HTTP_CAPABILITIES.model_copy(update={"json_mode": False})
    default_base_url = "https://api.anthropic.com"
    api_key_env = "ANTHROPIC_API_KEY"
    key_header = ("x-api-key", "")
    api_headers: ClassVar[Mapping[str, str]] = {"anthropic-version": ANTHROPIC_VERSION}

    def __init__(
        self, base_url: str | None = None, *, default_max_tokens: int = 4096, **options: Unpack[HTTPOptions]
    ) -> None:
        if default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be at least 1, got {default_max_tokens}")
        self.default_max_tokens = default_max_tokens
        super().__init__(base_url, **options)

    def _models_path(self) -> str:
        return "/v1/models"

    # -- request ------------------------------------------------------------------------------------------------
    def _build(self, request: ChatRequest, model: str) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": _messages(request.messages),
            "stream": True,
        }
        if system := request.system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)  # this API's range is 0..1
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = request.stop
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
            ]
        if request.tool_choice is not None:
            mode = request.tool_choice.mode
            if mode == "tool":
                body["tool_choice"] = {"type": "tool", "name": request.tool_choice.name}
            else:
                body["tool_choice"] = {"type": {"auto": "auto", "none": "none", "required": "any"}[mode]}
        return "/v1/messages", body

    # -- streamed answer ----------------------------------------------------------------------------------------
    async def _events(self, source: AsyncIterator[httpx2.ServerSentEvent]) -> AsyncIterator[StreamEvent]:
        model: str | None = None
        usage = Usage()
        finish: FinishReason = "stop"
        stop_sequence: str | None = None
        blocks: dict[int, dict[str, Any]] = {}  # open tool_use blocks by index
        calls = 0  # tool_use blocks so far: the ordinal of the next one
        async for sse in source:
            if not sse.data.strip():
                continue
            data = loads(sse.data, self.name)
            if not isinstance(data, dict):
                raise UpstreamError(
                    f"the API sent an event that is not an object: {sse.data[:200]!r}", provider=self.name
                )
            kind = data.get("type") or sse.event
            if kind == "message_start":
                message = data.get("message") or {}
                model = message.get("model") or model
                usage = _usage(message.get("usage") or {})
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                index = int(data.get("index", 0))
                if block.get("type") == "tool_use":
                    initial = block.get("input")
                    blocks[index] = {
                        "id": block.get("id") or f"toolu_{index}",
                        "name": block.get("name") or "",
                        "json": "",
                        "initial": initial if initial else None,
                        "ordinal": calls,
                    }
                    calls += 1
                    yield ToolCallDelta(blocks[index]["ordinal"], id=blocks[index]["id"], name=blocks[index]["name"])
                elif block.get("type") == "text" and block.get("text"):
                    yield TextDelta(str(block["text"]))
                elif block.get("type") == "thinking" and block.get("thinking"):
                    yield ReasoningDelta(str(block["thinking"]))
            elif kind == "content_block_delta":
                delta = data.get("delta") or {}
                dtype = delta.get("type")
                if dtype == "text_delta" and delta.get("text"):
                    yield TextDelta(str(delta["text"]))
                elif dtype == "thinking_delta" and delta.get("thinking"):
                    yield ReasoningDelta(str(delta["thinking"]))
                elif dtype == "input_json_delta":
                    open_block = blocks.get(int(data.get("index", 0)))
                    partial = str(delta.get("partial_json") or "")
                    if open_block is not None and partial:
                        open_block["json"] += partial
                        yield ToolCallDelta(open_block["ordinal"], partial)
            elif kind == "content_block_stop":
                closed = blocks.pop(int(data.get("index", 0)), None)
                if closed is not None:
                    yield ToolCallEvent(_tool_call(closed))
            elif kind == "message_delta":
                delta = data.get("delta") or {}
                reason = delta.get("stop_reason")
                if reason:
                    finish = _FINISH.get(reason, "stop")
                    stop_sequence = _stop_sequence(reason, delta.get("stop_sequence"))
                output_tokens = (data.get("usage") or {}).get("output_tokens")
                if output_tokens is not None:
                    usage = usage.model_copy(update={"output_tokens": int(output_tokens)})  # cumulative
            elif kind == "message_stop":
                yield UsageEvent(usage)
                yield Done(finish_reason=finish, model=model, stop_sequence=stop_sequence)
                return
            elif kind == "error":
                message, code, etype = error_message(data, "the API reported an error mid-stream")
                raise classify_stream_error(etype, message, code=code, provider=self.name)
            # ping and unknown events are ignored, as the API's versioning policy asks
        raise UpstreamError("the API's stream ended before message_stop", provider=self.name)

    def _from_json(self, body: Any) -> list[StreamEvent]:
        if not isinstance(body, dict) or body.get("type") != "message":
            raise UpstreamError(
                "the API answered JSON that is not a message", provider=self.name, detail=str(body)[:2000]
            )
        events: list[StreamEvent] = []
        for block in body.get("content") or []:
            if block.get("type") == "text" and block.get("text"):
                events.append(TextDelta(str(block["text"])))
            elif block.get("type") == "thinking" and block.get("thinking"):
                events.append(ReasoningDelta(str(block["thinking"])))
            elif block.get("type") == "tool_use":
                call = ToolCall(
                    id=str(block.get("id") or ""),
                    name=str(block.get("name") or ""),
                    arguments=json.dumps(block.get("input") or {}),
                )
                events.append(ToolCallEvent(call))
        events.append(UsageEvent(_usage(body.get("usage") or {})))
        reason = body.get("stop_reason") or "end_turn"
        events.append(
            Done(
                finish_reason=_FINISH.get(reason, "stop"),
                model=body.get("model"),
                stop_sequence=_stop_sequence(reason, body.get("stop_sequence")),
            )
        )
        return events


def _stop_sequence(reason: str, sequence: Any) -> str | None:
    """The sequence the API stopped on, when it says it stopped on one (``stop_sequence`` is null otherwise)."""
    return sequence if reason == "stop_sequence" and isinstance(sequence, str) else None


def _usage(raw: dict[str, Any]) -> Usage:
    """This API's ``input_tokens`` excludes cache reads and writes; ``Usage`` counts the whole prompt, with the cache
    reads as ``cached_tokens`` (a subset), as the OpenAI formats do."""
    cached = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0) + cached + written,
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=cached,
        cache_write_tokens=written,
    )


def _tool_call(block: dict[str, Any]) -> ToolCall:
    arguments = block["json"]
    if not arguments.strip():
        arguments = json.dumps(block["initial"]) if block["initial"] else "{}"
    return ToolCall(id=block["id"], name=block["name"], arguments=arguments)


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue  # joined into the top-level "system"
        if m.role == "tool":
            result = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text}
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and _all_tool_results(last["content"]):
                last["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
            continue
        content: list[dict[str, Any]] = [_block(p) for p in m.content if not (isinstance(p, TextPart) and not p.text)]
        if m.role == "assistant":
            if m.images:
                raise InvalidRequest("images are only allowed in user messages, not assistant", param="messages")
            for call in m.tool_calls:
                content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _parse_arguments(call)})
        if not content:
            content = [{"type": "text", "text": ""}] if m.role == "user" else []
            if not content:
                continue  # an empty assistant turn carries nothing
        out.append({"role": m.role, "content": content})
    return out


def _all_tool_results(content: list[dict[str, Any]]) -> bool:
    return bool(content) and all(b.get("type") == "tool_result" for b in content)


def _block(p: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if p.data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": p.media_type, "data": p.base64()}}
    return {"type": "image", "source": {"type": "url", "url": p.url}}


def _parse_arguments(call: ToolCall) -> Any:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"tool call {call.id} has arguments that are not JSON: {exc.msg}", param="messages"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"tool call {call.id} arguments must be a JSON object", param="messages")
    return value
