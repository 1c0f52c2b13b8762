"""Anthropic Messages (``POST …/v1/messages``), as Claude Code and the ``anthropic`` SDK speak it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from .script import ErrorKind, Turn, split_arguments
from .wire import ApiName, ErrorContext, ErrorResponse, Frame, WireApi, dicts, sse, text_of

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

_ERRORS: dict[str, tuple[int, str, str]] = {
    "401": (401, "authentication_error", "invalid x-api-key"),
    "403": (403, "permission_error", "Your API key does not have permission to use the specified resource."),
    "404": (404, "not_found_error", "model: {model}"),
    "429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    "500": (500, "api_error", "Internal server error"),
    "529": (529, "overloaded_error", "Overloaded"),
    "context": (400, "invalid_request_error", "prompt is too long: {tokens} tokens > 200000 maximum"),
    "invalid": (400, "invalid_request_error", "{message}"),
}


class AnthropicMessages(WireApi):
    name: ClassVar[ApiName] = "anthropic"
    tool_id_prefix: ClassVar[str] = "toolu_fake_"

    def system_text(self, body: dict[str, Any]) -> str:
        return text_of(body.get("system"))

    def messages(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        for message in dicts(body.get("messages")):
            content = message.get("content")
            blocks = dicts(content)
            results = [b for b in blocks if b.get("type") == "tool_result"]
            role = "tool" if results and len(results) == len(blocks) else str(message.get("role"))
            if results:  # tool results carry their text under "content", not "text"
                texts = (text_of(b.get("content")) if b.get("type") == "tool_result" else text_of(b) for b in blocks)
                out.append((role, "\n".join(t for t in texts if t)))
            else:
                out.append((role, text_of(content)))
        return out

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        return [str(t.get("name") or t.get("type")) for t in dicts(body.get("tools"))]

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str):
            return "model: Field required"
        if not isinstance(body.get("messages"), list):
            return "messages: Field required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        return None

    def error(self, kind: ErrorKind | Literal["invalid"], ctx: ErrorContext) -> ErrorResponse:
        status, etype, template = _ERRORS[kind]
        message = ctx.message or template.format(model=ctx.model, tokens=ctx.prompt_tokens + 200000, message="")
        headers = {"retry-after": str(ctx.retry_after)} if kind == "429" else {}
        return ErrorResponse(status, {"type": "error", "error": {"type": etype, "message": message}}, headers)

    def _message(self, turn: Turn, content: list[dict[str, Any]], stop_reason: str | None) -> dict[str, Any]:
        return {
            "id": f"msg_fake_{turn.uid}",
            "type": "message",
            "role": "assistant",
            "model": turn.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": turn.input_tokens - turn.cached_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": turn.cached_tokens,
                "output_tokens": turn.output_tokens if stop_reason else min(1, turn.output_tokens),
            },
        }

    def render_json(self, turn: Turn) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if turn.chunks or not turn.tool_calls:
            content.append({"type": "text", "text": turn.text})
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in turn.tool_calls]
        return self._message(turn, content, _STOP[turn.finish])

    def render_stream(self, turn: Turn, body: dict[str, Any]) -> list[Frame]:
        frames = [Frame(sse({"type": "message_start", "message": self._message(turn, [], None)}, "message_start"))]
        index = 0
        if turn.chunks or not turn.tool_calls:
            frames.append(_event("content_block_start", index=0, content_block={"type": "text", "text": ""}))
            frames.append(Frame(sse({"type": "ping"}, "ping")))
            for chunk in turn.chunks:
                frames.append(_event("content_block_delta", True, index=0, delta={"type": "text_delta", "text": chunk}))
            frames.append(_event("content_block_stop", index=0))
            index = 1
        for call in turn.tool_calls:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            frames.append(_event("content_block_start", index=index, content_block=block))
            for piece in split_arguments(call.arguments_json):
                delta = {"type": "input_json_delta", "partial_json": piece}
                frames.append(_event("content_block_delta", True, index=index, delta=delta))
            frames.append(_event("content_block_stop", index=index))
            index += 1
        final: dict[str, Any] = {"stop_reason": _STOP[turn.finish], "stop_sequence": None}
        frames.append(_event("message_delta", delta=final, usage={"output_tokens": turn.output_tokens}))
        frames.append(_event("message_stop"))
        return frames


def _event(event: str, chunk: bool = False, **fields: Any) -> Frame:
    return Frame(sse({"type": event, **fields}, event), chunk)
