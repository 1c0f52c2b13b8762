"""OpenAI Chat Completions (``POST …/chat/completions``): OpenCode, Qwen, Copilot, Cline, Kilo, Continue and the
``openai`` SDK. Also holds the OpenAI error bodies, which the Responses API shares."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from .script import ErrorKind, Turn, split_arguments
from .wire import ApiName, ErrorContext, ErrorResponse, Frame, WireApi, dicts, sse, text_of

_SYSTEM_ROLES = ("system", "developer")

# kind -> (status, type, code, param, message template)
_ERRORS: dict[str, tuple[int, str, str | None, str | None, str]] = {
    "401": (401, "invalid_request_error", "invalid_api_key", None, "Incorrect API key provided: {key}."),
    "403": (403, "invalid_request_error", None, None, "You are not allowed to sample from this model"),
    "404": (
        404,
        "invalid_request_error",
        "model_not_found",
        None,
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    "429": (
        429,
        "tokens",
        "rate_limit_exceeded",
        None,
        "Rate limit reached for {model} on tokens per min (TPM): Limit 30000, Used 30000, Requested {tokens}. "
        "Please try again in {retry}s.",
    ),
    "500": (
        500,
        "server_error",
        None,
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "529": (503, "server_error", None, None, "The engine is currently overloaded, please try again later"),
    "context": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
        "This model's maximum context length is 128000 tokens. However, your messages resulted in {big} tokens. "
        "Please reduce the length of the messages.",
    ),
    "invalid": (400, "invalid_request_error", None, None, "{message}"),
}

_RESPONSES_CONTEXT = "Your input exceeds the context window of this model. Please adjust your input and try again."


def openai_error(kind: ErrorKind | Literal["invalid"], ctx: ErrorContext, *, responses: bool = False) -> ErrorResponse:
    status, etype, code, param, template = _ERRORS[kind]
    if responses and kind == "context":
        param, template = "input", _RESPONSES_CONTEXT
    message = ctx.message or template.format(
        key=ctx.api_key or "",
        model=ctx.model,
        tokens=ctx.prompt_tokens,
        retry=ctx.retry_after,
        big=ctx.prompt_tokens + 128000,
        message="",
    )
    headers = {"retry-after": str(ctx.retry_after)} if kind == "429" else {}
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return ErrorResponse(status, body, headers)


class OpenAIChat(WireApi):
    name: ClassVar[ApiName] = "openai_chat"
    tool_id_prefix: ClassVar[str] = "call_"

    def system_text(self, body: dict[str, Any]) -> str:
        return "\n".join(
            text_of(m.get("content")) for m in dicts(body.get("messages")) if m.get("role") in _SYSTEM_ROLES
        )

    def messages(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (str(m.get("role")), text_of(m.get("content")))
            for m in dicts(body.get("messages"))
            if m.get("role") not in _SYSTEM_ROLES
        ]

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        names = []
        for tool in dicts(body.get("tools")):
            function = tool.get("function")
            names.append(
                str(function.get("name") if isinstance(function, dict) else tool.get("name") or tool.get("type"))
            )
        return names

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str):
            return "you must provide a model parameter"
        if not isinstance(body.get("messages"), list):
            return "Missing required parameter: 'messages'."
        return None

    def error(self, kind: ErrorKind | Literal["invalid"], ctx: ErrorContext) -> ErrorResponse:
        return openai_error(kind, ctx)

    def _usage(self, turn: Turn) -> dict[str, Any]:
        return {
            "prompt_tokens": turn.input_tokens,
            "completion_tokens": turn.output_tokens,
            "total_tokens": turn.total_tokens,
            "prompt_tokens_details": {"cached_tokens": turn.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": turn.reasoning_tokens},
        }

    def _envelope(self, turn: Turn, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake{turn.uid}",
            "object": obj,
            "created": int(time.time()),
            "model": turn.model,
            "system_fingerprint": None,
        }

    def render_json(self, turn: Turn) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": turn.text if turn.chunks or not turn.tool_calls else None,
        }
        if turn.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                for c in turn.tool_calls
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": turn.finish}
        return {**self._envelope(turn, "chat.completion"), "choices": [choice], "usage": self._usage(turn)}

    def render_stream(self, turn: Turn, body: dict[str, Any]) -> list[Frame]:
        envelope = self._envelope(turn, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None, is_chunk: bool = False) -> Frame:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return Frame(sse({**envelope, "choices": [choice]}), is_chunk)

        frames = [chunk({"role": "assistant", "content": ""})]
        frames += [chunk({"content": text}, is_chunk=True) for text in turn.chunks]
        for index, call in enumerate(turn.tool_calls):
            head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            frames.append(chunk({"tool_calls": [head]}))
            for piece in split_arguments(call.arguments_json):
                frames.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, is_chunk=True)
                )
        frames.append(chunk({}, turn.finish))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            frames.append(Frame(sse({**envelope, "choices": [], "usage": self._usage(turn)})))
        frames.append(Frame(sse("[DONE]")))
        return frames
