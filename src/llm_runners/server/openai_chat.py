"""OpenAI Chat Completions front door: ``POST /v1/chat/completions``, JSON and SSE.

Request → :class:`ChatRequest` (once), stream events → wire chunks (once). Choices made where the wire format
leaves room:

- ``developer`` messages are system messages. Refused with a 400 naming the parameter, because the caller would
  otherwise wait for something that never comes: the legacy ``functions`` / ``function_call`` parameters and
  ``function`` messages or assistant ``function_call`` fields (use ``tools``), non-function tools, audio output
  (``modalities`` with ``"audio"``, ``audio``) and ``n`` other than 1.
- Parameters a ChatRequest has no field for (``seed``, ``presence_penalty``, ``frequency_penalty``,
  ``logit_bias``, ``logprobs``, ``top_logprobs``, ``parallel_tool_calls``, ``reasoning_effort``, ``user``) travel
  in ``ChatRequest.extra`` under their own names; the feature adapter warns about (or, strict, rejects) the
  sampling ones a provider cannot honour (``choices[].logprobs`` stays ``null``). ``store``, ``prediction``,
  ``service_tier``, ``metadata`` and ``stream_options`` outside a stream are accepted and have no effect.
- **Conversation key** (CLI session continuity): ``metadata.conversation_id``, else the header
  ``X-LLM-Runners-Conversation``. ``user`` is *not* used: it names a person, not a conversation, and one person's
  separate chats must not share a CLI session.
- **Warnings** (``Done.warnings``): the ``x-llm-runners-warnings`` header on JSON responses; on streams a
  ``"warnings": [...]`` field on the chunk carrying ``finish_reason`` (only when there are any).
- Reasoning is sent as ``reasoning_content`` (the field most OpenAI-compatible servers use).
- ``model`` given as an array of names asks them all at once (:mod:`.multiplex`).
- **Server-side tools**: ``"llm_runners": {"tool_execution": "server", "max_turns": n}`` in the body (or
  ``tool_execution = "server"`` in the provider's settings) runs the model's tool calls on the server's
  ``[[mcp_servers]]`` (:mod:`llm_runners.tools.agent`); the answer lists them in ``llm_runners.tool_runs`` (on the
  JSON body, or on the stream's chunk carrying ``finish_reason``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from ..errors import InvalidRequest, LLMError
from ..provider import Provider
from ..router import Route, Router
from ..tools.agent import ServerTools, agent_options, render_tool_runs
from ..types import (
    ChatRequest,
    ChatResponse,
    Done,
    ImagePart,
    Message,
    ReasoningDelta,
    ResponseFormat,
    Role,
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
from .errors import (
    from_validation,
    opt_bool,
    opt_dict,
    opt_int,
    opt_list,
    opt_number,
    opt_str,
    read_json,
)
from .multiplex import MultiplexCall, multiplex_models
from .observe import note_route
from .sse import (
    CompletionCall,
    Render,
    StreamedCalls,
    StreamingCall,
    cost_fields,
    dumps,
    json_string,
    sse_data,
    warnings_headers,
)

__all__ = ["ChatCompletions", "parse_chat_request"]

CONVERSATION_HEADER = "x-llm-runners-conversation"

_EXTRA_PARAMS = (
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "parallel_tool_calls",
    "reasoning_effort",
    "user",
    "web_search_options",
)
_ROLES: dict[Any, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


# ------------------------------------------------------------------------------------------------ parsing


def _content(value: Any, param: str) -> list[TextPart | ImagePart]:
    if value is None:
        return []
    if isinstance(value, str):
        return [TextPart(text=value)] if value else []
    if not isinstance(value, list):
        raise InvalidRequest(f"{param}: expected a string or an array of content parts", param=param)
    parts: list[TextPart | ImagePart] = []
    for i, part in enumerate(value):
        p = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"{p}: expected a content part object", param=p)
        kind = part.get("type")
        if kind == "text":
            text = opt_str(part, "text", f"{p}.text")
            if text is None:
                raise InvalidRequest(f"{p}.text: required", param=f"{p}.text")
            parts.append(TextPart(text=text))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise InvalidRequest(f"{p}.image_url.url: expected a string", param=f"{p}.image_url")
            try:
                parts.append(ImagePart.from_data_uri(url))
            except ValueError as exc:
                raise InvalidRequest(f"{p}.image_url: {exc}", param=f"{p}.image_url") from None
        elif kind == "refusal":
            parts.append(TextPart(text=str(part.get("refusal") or "")))
        else:
            raise InvalidRequest(
                f"{p}.type: unsupported content part type {kind!r} (supported: text, image_url)", param=f"{p}.type"
            )
    return parts


def _tool_calls(value: Any, param: str) -> list[ToolCall]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{param}: expected an array", param=param)
    calls = []
    for i, call in enumerate(value):
        p = f"{param}[{i}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
            raise InvalidRequest(f"{p}: expected {{id, type: 'function', function: {{name, arguments}}}}", param=p)
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            args = dumps(args)
        calls.append(ToolCall(id=call["id"], name=fn["name"], arguments=args or "{}"))
    return calls


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest("messages: expected a non-empty array of messages", param="messages")
    out = []
    for i, msg in enumerate(value):
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise InvalidRequest(f"{p}: expected a message object", param=p)
        role = _ROLES.get(msg.get("role")) if isinstance(msg.get("role"), str) else None
        if msg.get("function_call") is not None:
            raise InvalidRequest(
                f"{p}.function_call: the legacy function_call is not supported; use tool_calls",
                param=f"{p}.function_call",
            )
        if role is None:
            raise InvalidRequest(
                f"{p}.role: unsupported role {msg.get('role')!r} (supported: system, developer, user, assistant, tool)",
                param=f"{p}.role",
            )
        try:
            out.append(
                Message(
                    role=role,
                    content=_content(msg.get("content"), f"{p}.content"),
                    tool_calls=_tool_calls(msg.get("tool_calls"), f"{p}.tool_calls") if role == "assistant" else [],
                    tool_call_id=opt_str(msg, "tool_call_id", f"{p}.tool_call_id"),
                    name=opt_str(msg, "name", f"{p}.name"),
                )
            )
        except ValidationError as exc:
            raise from_validation(exc, p) from None
    return out


def _tools(value: Any) -> list[ToolSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("tools: expected an array", param="tools")
    specs = []
    for i, tool in enumerate(value):
        p = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise InvalidRequest(f"{p}: only function tools are supported", param=p)
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(f"{p}.function.name: required", param=f"{p}.function")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest(f"{p}.function.parameters: expected a JSON schema object", param=p)
        specs.append(
            ToolSpec(
                name=fn["name"],
                description=str(fn.get("description") or ""),
                parameters=params or {"type": "object", "properties": {}},
            )
        )
    return specs


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ToolChoice(mode=value)
    if isinstance(value, dict) and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        if isinstance(name, str) and name:
            return ToolChoice(mode="tool", name=name)
    raise InvalidRequest(
        "tool_choice: expected 'auto', 'none', 'required' or {type: 'function', function: {name}}", param="tool_choice"
    )


def _response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("response_format: expected an object", param="response_format")
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidRequest(
                "response_format.json_schema: expected {name, schema, strict}", param="response_format.json_schema"
            )
        return ResponseFormat(
            type="json_schema",
            name=spec.get("name"),
            json_schema=spec.get("schema") or {},
            strict=bool(spec.get("strict", False)),
        )
    raise InvalidRequest(
        f"response_format.type: unsupported {kind!r} (text, json_object, json_schema)", param="response_format.type"
    )


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise InvalidRequest("stop: expected a string or an array of strings", param="stop")


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """Parameters asking for something no provider here produces: a 400, never a silently different answer."""
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise InvalidRequest(
                f"{legacy}: the legacy functions API is not supported; use tools and tool_choice", param=legacy
            )
    modalities = opt_list(body, "modalities") or []
    if any(m != "text" for m in modalities):
        raise InvalidRequest("modalities: only text output is supported", param="modalities")
    if body.get("audio") is not None:
        raise InvalidRequest("audio: audio output is not supported", param="audio")


def parse_chat_request(body: dict[str, Any], headers: Any = None) -> tuple[ChatRequest, bool, bool]:
    """Body of a Chat Completions request → (ChatRequest, stream?, include_usage?). Raises InvalidRequest."""
    model = opt_str(body, "model")
    _refuse_unsupported(body)
    n = opt_int(body, "n")
    if n not in (None, 1):
        raise InvalidRequest("n: only n=1 is supported", param="n")
    stream = bool(opt_bool(body, "stream"))
    stream_options = opt_dict(body, "stream_options") or {}
    include_usage = bool(opt_bool(stream_options, "include_usage", "stream_options.include_usage"))
    max_tokens = opt_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = opt_int(body, "max_tokens")
    metadata = opt_dict(body, "metadata") or {}
    conversation = metadata.get("conversation_id")
    if not isinstance(conversation, str) or not conversation:
        conversation = headers.get(CONVERSATION_HEADER) if headers is not None else None
    extra = {k: body[k] for k in _EXTRA_PARAMS if body.get(k) is not None}
    extra.update(agent_options(body))
    try:
        request = ChatRequest(
            messages=_messages(body.get("messages")),
            model=model,
            temperature=opt_number(body, "temperature", 0.0, 2.0),
            top_p=opt_number(body, "top_p", 0.0, 1.0),
            max_tokens=max_tokens,
            stop=_stop(body.get("stop")),
            tools=_tools(opt_list(body, "tools")),
            tool_choice=_tool_choice(body.get("tool_choice")),
            response_format=_response_format(body.get("response_format")),
            conversation=conversation or None,
            extra=extra,
        )
    except ValidationError as exc:
        raise from_validation(exc) from None
    return request, stream, include_usage


# ------------------------------------------------------------------------------------------------ rendering


def _finish(reason: str) -> str:
    return "stop" if reason == "error" else reason


def usage_dict(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        **cost_fields(u),
    }


def _tool_call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def render_completion(response: ChatResponse, model: str) -> tuple[bytes, dict[str, str]]:
    message: dict[str, Any] = {"role": "assistant", "content": response.content or None, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = [_tool_call_dict(c) for c in response.tool_calls]
    if response.reasoning:
        message["reasoning_content"] = response.reasoning
    body: dict[str, Any] = {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(response.finish_reason)}
        ],
        "usage": usage_dict(response.usage),
        "system_fingerprint": None,
    }
    if response.tool_runs:
        body["llm_runners"] = {"tool_runs": render_tool_runs(response.tool_runs)}
    return dumps(body).encode(), warnings_headers(response.warnings)


class ChunkRenderer:
    """Stream events → ``chat.completion.chunk`` SSE lines. The constant part of every chunk is encoded once."""

    heartbeat = b": keep-alive\n\n"

    def __init__(self, model: str, include_usage: bool) -> None:
        cid = "chatcmpl-" + uuid.uuid4().hex
        self._base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        head = dumps(self._base)[:-1]
        self._prefix = ("data: " + head + ',"choices":[{"index":0,"delta":').encode()
        self._suffix = b',"logprobs":null,"finish_reason":null}]}\n\n'
        # the two deltas of nearly every event, with only the text to encode
        self._content = self._prefix + b'{"content":'
        self._reasoning = self._prefix + b'{"reasoning_content":'
        self._end = b"}" + self._suffix
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.tool_index = 0
        self.streamed = StreamedCalls()
        self.done = False

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._prefix + dumps(delta).encode() + self._suffix

    def head(self) -> bytes:
        return self._delta({"role": "assistant", "content": ""})

    def event(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._content + json_string(event.text).encode() + self._end if event.text else b""
        if isinstance(event, ReasoningDelta):
            return self._reasoning + json_string(event.text).encode() + self._end if event.text else b""
        if isinstance(event, ToolCallDelta):
            return self._tool_delta(event)
        if isinstance(event, ToolCallEvent):
            streamed = self.streamed.finished(event.call)
            if streamed is not None:  # its fragments went out: only what they lacked (a call sent with no arguments)
                rest = streamed.rest(event.call)
                return (
                    self._delta({"tool_calls": [{"index": streamed.slot, "function": {"arguments": rest}}]})
                    if rest
                    else b""
                )
            call = dict(_tool_call_dict(event.call), index=self.tool_index)
            self.tool_index += 1
            return self._delta({"tool_calls": [call]})
        if isinstance(event, UsageEvent):
            self.usage = event.usage if self.usage is None else self.usage + event.usage
            return b""
        if isinstance(event, Done):
            self.done = True
            last: dict[str, Any] = dict(
                self._base,
                choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": _finish(event.finish_reason)}],
            )
            if event.warnings:
                last["warnings"] = list(event.warnings)
            if event.tool_runs:
                last["llm_runners"] = {"tool_runs": render_tool_runs(event.tool_runs)}
            out = sse_data(last)
            if self.include_usage:
                out += sse_data(dict(self._base, choices=[], usage=usage_dict(self.usage)))
            return out + b"data: [DONE]\n\n"
        return b""

    def _tool_delta(self, event: ToolCallDelta) -> bytes:
        found = self.streamed.fragment(event, self._next_index)
        if found is None:
            return b""
        call, first = found
        if first:
            head = {"index": call.slot, "id": call.id, "type": "function"}
            return self._delta({"tool_calls": [dict(head, function={"name": call.name, "arguments": event.arguments})]})
        if not event.arguments:
            return b""
        return self._delta({"tool_calls": [{"index": call.slot, "function": {"arguments": event.arguments}}]})

    def _next_index(self) -> tuple[int, str]:
        self.tool_index += 1
        return self.tool_index - 1, ""

    def error(self, exc: LLMError) -> bytes:
        return sse_data(exc.openai_envelope())


# ------------------------------------------------------------------------------------------------ endpoint


class ChatCompletions:
    """The endpoint: parse, route, then hand the call to a streaming or one-shot runner."""

    def __init__(self, router: Router, timeout: float | None, *, tools: ServerTools | None = None) -> None:
        self.router = router
        self.timeout = timeout
        self.tools = tools

    async def __call__(self, request: Request) -> StreamingCall | CompletionCall | MultiplexCall:
        body = await read_json(request)
        models = multiplex_models(body)
        if models is not None:
            chat, _, _ = parse_chat_request(dict(body, model=None), request.headers)
            note_route(request.scope, "multiplex", None, False)
            return MultiplexCall(self.router, chat, models, _prepare, "openai", timeout=self.timeout)
        chat, stream, include_usage = parse_chat_request(body, request.headers)
        route = await self.router.resolve(chat.model)
        note_route(request.scope, route.name, route.model or route.provider.default_model, stream)
        chat.model = route.model
        model = chat_model_name(body.get("model"), route.qualified)
        provider: Provider = self.tools.provider_for(route, chat) if self.tools is not None else route.provider
        if stream:
            return StreamingCall(provider, chat, ChunkRenderer(model, include_usage), "openai", timeout=self.timeout)
        return CompletionCall(provider, chat, lambda r: render_completion(r, model), "openai", timeout=self.timeout)


def _prepare(chat: ChatRequest, asked: str, route: Route) -> Render:
    model = chat_model_name(asked, route.qualified)
    return lambda r: render_completion(r, model)


def chat_model_name(asked: Any, qualified: str) -> str:
    """The model name echoed back: what the caller asked for (clients match on it), else ``provider:model``."""
    return asked if isinstance(asked, str) and asked else qualified
