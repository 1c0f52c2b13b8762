"""OpenAI Responses front door: ``POST /v1/responses`` (JSON and SSE), and on the store: ``GET /v1/responses/{id}``
and its ``DELETE``, ``GET /v1/responses/{id}/input_items``, ``POST /v1/responses/input_tokens`` (the estimate of
``count_tokens``) and ``POST /v1/responses/{id}/cancel`` (a 400: there are no background responses).

``previous_response_id`` is served from a bounded in-memory LRU :class:`ResponseStore`: each stored response keeps
the whole conversation so far (messages plus the assistant's answer) and a **conversation key**. A follow-up gets
that history prepended *and* the same key, so a CLI provider resumes its own session instead of having the
history replayed. The key is the caller's (``conversation``, ``prompt_cache_key`` as Codex sends it,
``metadata.conversation_id`` or the ``X-LLM-Runners-Conversation`` header), else ``responses:<first response id>``.
``store: false`` keeps a response out of the store (as the OpenAI API does). An unknown ``previous_response_id`` is
a 400 with ``param: previous_response_id``.

Other choices: ``developer`` and ``system`` items and ``instructions`` are system messages; non-function tools
(``web_search``, ``custom``, …) are skipped with a warning (Codex always sends some); ``reasoning`` input items are
skipped; ``text.format`` maps to the response format. Warnings: ``x-llm-runners-warnings`` header on JSON
responses, ``warnings`` on the response object of ``response.completed`` when streaming. ``model`` given as an
array of names asks them all at once (:mod:`.multiplex`); each entry's response is stored under its own id.

Failures after the stream began: an ``error`` event carrying our precise code (``timeout``, ``tool_call_missing``…),
then ``response.failed`` whose ``error.code`` is one of OpenAI's own values, picked for what Codex does with it
(:func:`failed_code`). An id not in the store (unknown, deleted, expired, ``store: false``) is a 404 on every
``/v1/responses/{id}`` route.

Server-side tools: ``"llm_runners": {"tool_execution": "server"}`` in the body runs the tools on the server's MCP
servers (:mod:`llm_runners.tools.agent`); the executed calls are listed in ``llm_runners.tool_runs`` on the response
object (JSON, and ``response.completed`` when streamed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..errors import (
    AuthenticationError,
    BinaryNotFound,
    ContextLengthExceeded,
    GuardrailError,
    InvalidRequest,
    LLMError,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    RateLimited,
)
from ..router import Route, Router
from ..state import State
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
from .anthropic_messages import estimate_tokens
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
from .openai_chat import CONVERSATION_HEADER, chat_model_name
from .sse import (
    CompletionCall,
    Render,
    StreamedCall,
    StreamedCalls,
    StreamingCall,
    cost_fields,
    dumps,
    sse_event,
    warnings_headers,
)

__all__ = ["ResponseStore", "Responses", "StoredResponse", "parse_responses_request", "replay"]

log = logging.getLogger("llm_runners.server")


# ------------------------------------------------------------------------------------------------ the store


@dataclass
class StoredResponse:
    messages: list[Message]
    conversation: str
    body: dict[str, Any]
    #: what ``GET /v1/responses/{id}/input_items`` lists: the input the model saw (the previous responses' input and
    #: output items, then this request's), each item with its id (:func:`input_items`)
    input_items: list[dict[str, Any]] = field(default_factory=list)


class ResponseStore:
    """Finished responses by id: a bounded, thread-safe LRU in this process, and, given a ``shared`` state
    (Redis), a copy there too, so a follow-up with ``previous_response_id`` is served by any replica.

    :meth:`put` stores in the LRU at once and starts the shared write; :meth:`flush` waits for it (the front door
    does before the response id reaches the caller, so a follow-up sent to another replica at once finds it).
    :meth:`get` reads the LRU (a hit costs one small read of the shared state: was it deleted through another
    replica?), then the shared state. Shared copies expire after ``ttl`` seconds (OpenAI keeps stored responses 30
    days)."""

    def __init__(self, max_items: int = 1000, *, shared: State | None = None, ttl: float = 30 * 86_400.0) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()
        self.shared = shared.scoped("responses") if shared is not None else None
        self.ttl = ttl
        self._writes: dict[str, asyncio.Task[None]] = {}

    def _local(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            item = self._items.get(response_id)
            if item is not None:
                self._items.move_to_end(response_id)
            return item

    def _keep(self, response_id: str, item: StoredResponse) -> None:
        with self._lock:
            self._items[response_id] = item
            self._items.move_to_end(response_id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    async def get(self, response_id: str) -> StoredResponse | None:
        item = self._local(response_id)
        if self.shared is None:
            return item
        if item is not None:
            if await self.shared.get(_DELETED + response_id) is None:
                return item
            with self._lock:  # deleted through another replica
                self._items.pop(response_id, None)
            return None
        raw = await self.shared.get(response_id)
        if raw is None:
            return None
        try:
            item = _decode_stored(raw)
        except (ValueError, TypeError, KeyError, ValidationError):
            log.warning("stored response %s in the shared state is unreadable; treated as missing", response_id)
            return None
        self._keep(response_id, item)
        return item

    def put(self, response_id: str, item: StoredResponse) -> None:
        self._keep(response_id, item)
        if self.shared is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): this replica keeps it only
            return
        task = loop.create_task(self._write(self.shared, response_id, _encode_stored(item)))
        self._writes[response_id] = task
        task.add_done_callback(lambda _: self._writes.pop(response_id, None))

    async def _write(self, shared: State, response_id: str, raw: str) -> None:
        await shared.set(response_id, raw, ttl=self.ttl)

    async def delete(self, response_id: str) -> bool:
        """Remove ``response_id`` from this replica and from the shared state; False when neither had it."""
        await self.flush(response_id)  # a shared write still under way would bring it back
        with self._lock:
            found = self._items.pop(response_id, None) is not None
        if self.shared is not None:
            # the mark tells the replicas that still hold it in their LRU that it is gone (checked on each get)
            gone = await self.shared.get(_DELETED + response_id) is not None
            await self.shared.set(_DELETED + response_id, "1", ttl=self.ttl)
            found = await self.shared.pop(response_id) is not None or (found and not gone)
        return found

    async def flush(self, response_id: str) -> None:
        """Wait until the shared copy of ``response_id`` is written (at once when there is none pending)."""
        task = self._writes.get(response_id)
        if task is not None:
            await asyncio.shield(task)

    def __len__(self) -> int:
        return len(self._items)


#: prefix of the shared state's mark of a deleted response
_DELETED = "deleted:"


def _encode_stored(item: StoredResponse) -> str:
    messages = []
    for m in item.messages:
        raw = m.model_dump(mode="python", exclude_none=True)
        for part in raw.get("content", []):
            if isinstance(part.get("data"), bytes):
                part["data"] = base64.b64encode(part["data"]).decode("ascii")
        messages.append(raw)
    return dumps(
        {"messages": messages, "conversation": item.conversation, "body": item.body, "input_items": item.input_items}
    )


def _decode_stored(raw: str) -> StoredResponse:
    data = json.loads(raw)
    messages = []
    for m in data["messages"]:
        for part in m.get("content", []):
            if isinstance(part.get("data"), str):
                part["data"] = base64.b64decode(part["data"])
        messages.append(Message.model_validate(m))
    items = data.get("input_items") or []  # a copy written before input items were kept has none
    return StoredResponse(messages, str(data["conversation"]), dict(data["body"]), [dict(i) for i in items])


# ------------------------------------------------------------------------------------------------ parsing

_MESSAGE_ROLES: dict[Any, Role] = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _parts(content: Any, param: str) -> list[TextPart | ImagePart]:
    if isinstance(content, str):
        return [TextPart(text=content)] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{param}: expected a string or an array of content parts", param=param)
    parts: list[TextPart | ImagePart] = []
    for i, part in enumerate(content):
        p = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"{p}.text: expected a string", param=f"{p}.text")
            parts.append(TextPart(text=text))
        elif kind == "refusal":
            parts.append(TextPart(text=str(part.get("refusal") or "")))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest(
                    f"{p}.image_url: expected a data URI or URL (file_id is not supported)", param=f"{p}.image_url"
                )
            try:
                parts.append(ImagePart.from_data_uri(url))
            except ValueError as exc:
                raise InvalidRequest(f"{p}.image_url: {exc}", param=f"{p}.image_url") from None
        else:
            raise InvalidRequest(
                f"{p}.type: unsupported content type {kind!r} (input_text, input_image, output_text)", param=f"{p}.type"
            )
    return parts


def _input(value: Any) -> list[Message]:
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("input: expected a string or a non-empty array of items", param="input")
    out: list[Message] = []
    for i, item in enumerate(value):
        p = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{p}: expected an item object", param=p)
        kind = item.get("type", "message")
        if kind == "message":
            role = _MESSAGE_ROLES.get(item.get("role")) if isinstance(item.get("role"), str) else None
            if role is None:
                raise InvalidRequest(f"{p}.role: expected user, assistant, system or developer", param=f"{p}.role")
            out.append(Message(role=role, content=_parts(item.get("content"), f"{p}.content")))
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise InvalidRequest(f"{p}: a function_call needs string call_id and name", param=p)
            args = item.get("arguments", "{}")
            call = ToolCall(id=call_id, name=name, arguments=args if isinstance(args, str) else dumps(args))
            if out and out[-1].role == "assistant":
                out[-1].tool_calls.append(call)
            else:
                out.append(Message(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise InvalidRequest(f"{p}.call_id: required", param=f"{p}.call_id")
            output = item.get("output")
            parts = _parts(output, f"{p}.output") if output is not None else []
            out.append(Message(role="tool", content=parts, tool_call_id=call_id))
        elif kind == "reasoning":
            continue
        else:
            raise InvalidRequest(
                f"{p}.type: unsupported item type {kind!r} (message, function_call, function_call_output)",
                param=f"{p}.type",
            )
    return out


_ITEM_PREFIXES = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


def _listed_part(part: Any, assistant: bool) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        if assistant:
            return {"type": "output_text", "text": part["text"], "annotations": part.get("annotations") or []}
        return {"type": "input_text", "text": part["text"]}
    if kind == "input_image":
        return {"type": "input_image", "image_url": part["image_url"], "detail": part.get("detail") or "auto"}
    return dict(part)


def input_items(value: Any) -> list[dict[str, Any]]:
    """A request's ``input`` (already checked by :func:`_input`) as ``input_items`` lists it back: every item with an
    ``id`` (the caller's, else a new one) and ``status``, a message's string content as one text part."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    out: list[dict[str, Any]] = []
    for raw in value:
        item = dict(raw)
        kind = item.setdefault("type", "message")
        if not isinstance(item.get("id"), str):
            item["id"] = _new_id(_ITEM_PREFIXES.get(kind, "item_"))
        if kind in ("message", "function_call", "function_call_output"):
            item.setdefault("status", "completed")
        if kind == "message":
            assistant = item.get("role") == "assistant"
            content = item.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}] if content else []
            item["content"] = [_listed_part(part, assistant) for part in content or []]
        elif kind == "function_call" and not isinstance(item.get("arguments"), str):
            item["arguments"] = dumps(item.get("arguments", {}))
        out.append(item)
    return out


def _tools(value: list[Any] | None, warnings: list[str]) -> list[ToolSpec]:
    specs = []
    for i, tool in enumerate(value or []):
        p = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{p}: expected a tool object", param=p)
        if tool.get("type") != "function":
            warnings.append(f"tool type {tool.get('type')!r} is not supported and was ignored")
            continue
        if not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"{p}.name: required", param=f"{p}.name")
        params = tool.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest(f"{p}.parameters: expected a JSON schema object", param=f"{p}.parameters")
        specs.append(
            ToolSpec(
                name=tool["name"],
                description=str(tool.get("description") or ""),
                parameters=params or {"type": "object", "properties": {}},
            )
        )
    return specs


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ToolChoice(mode=value)
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return ToolChoice(mode="tool", name=value["name"])
    raise InvalidRequest(
        "tool_choice: expected 'auto', 'none', 'required' or {type: 'function', name}", param="tool_choice"
    )


def _format(text: dict[str, Any] | None) -> ResponseFormat | None:
    fmt = (text or {}).get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        return ResponseFormat(
            type="json_schema", name=fmt.get("name"), json_schema=fmt["schema"], strict=bool(fmt.get("strict", False))
        )
    raise InvalidRequest("text.format: expected {type: text | json_object | json_schema, schema?}", param="text.format")


def _conversation(body: dict[str, Any], headers: Any) -> str | None:
    conv = body.get("conversation")
    if isinstance(conv, dict):
        conv = conv.get("id")
    if isinstance(conv, str) and conv:
        return conv
    key = body.get("prompt_cache_key")
    if isinstance(key, str) and key:
        return key
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("conversation_id"), str):
        return str(metadata["conversation_id"])
    header = headers.get(CONVERSATION_HEADER) if headers is not None else None
    return str(header) if header else None


async def parse_responses_request(
    body: dict[str, Any], headers: Any, store: ResponseStore
) -> tuple[ChatRequest, bool, list[str], StoredResponse | None]:
    """Body → (ChatRequest with the prior history, stream?, warnings, the previous stored response)."""
    warnings: list[str] = []
    previous: StoredResponse | None = None
    prev_id = opt_str(body, "previous_response_id")
    if prev_id:
        previous = await store.get(prev_id)
        if previous is None:
            raise InvalidRequest(
                f"previous response {prev_id!r} not found (unknown, expired from the store, or "
                "created with store=false)",
                param="previous_response_id",
                code="previous_response_not_found",
            )
    extra: dict[str, Any] = {}
    for key in ("reasoning", "parallel_tool_calls", "user", "truncation"):
        if body.get(key) is not None:
            extra[key] = body[key]
    extra.update(agent_options(body))
    if body.get("background"):
        warnings.append("background=true is not supported: the response ran to completion before it was returned")
    try:
        messages: list[Message] = []
        instructions = opt_str(body, "instructions")
        if instructions:
            messages.append(Message(role="system", content=instructions))
        if previous is not None:
            messages.extend(previous.messages)
        if body.get("input") is not None:
            messages.extend(_input(body["input"]))
        if not any(m.role != "system" for m in messages):
            # input is optional in the Responses API (a stored prompt or conversation may supply it): with none
            # here, the turn is an empty user message rather than a request the provider cannot take
            messages.append(Message(role="user", content=""))
        request = ChatRequest(
            messages=messages,
            model=opt_str(body, "model"),
            temperature=opt_number(body, "temperature", 0.0, 2.0),
            top_p=opt_number(body, "top_p", 0.0, 1.0),
            max_tokens=opt_int(body, "max_output_tokens"),
            tools=_tools(opt_list(body, "tools"), warnings),
            tool_choice=_tool_choice(body.get("tool_choice")),
            response_format=_format(opt_dict(body, "text")),
            conversation=_conversation(body, headers) or (previous.conversation if previous else None),
            extra=extra,
        )
    except ValidationError as exc:
        raise from_validation(exc) from None
    return request, bool(opt_bool(body, "stream")), warnings, previous


# ------------------------------------------------------------------------------------------------ rendering


def _usage(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
        **cost_fields(u),
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else [],
    }


def _call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if status == "completed" else "",
        "status": status,
    }


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}] if text else []}


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool of the request as the response object lists it (the tools ignored are not listed)."""
    params = tool.get("parameters")
    strict = tool.get("strict")
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description") if isinstance(tool.get("description"), str) else None,
        "parameters": params if isinstance(params, dict) else None,
        "strict": strict if isinstance(strict, bool) else None,
    }


def _echo_format(fmt: ResponseFormat | None) -> dict[str, Any]:
    if fmt is None or fmt.type == "text":
        return {"type": "text"}
    if fmt.type == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.json_schema, "strict": fmt.strict}


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


class _Turn:
    """What one call builds: the response object's skeleton, and the storing of the conversation when done."""

    def __init__(
        self,
        body: dict[str, Any],
        chat: ChatRequest,
        model: str,
        store: ResponseStore,
        previous: StoredResponse | None,
        warnings: list[str],
    ) -> None:
        self.id = _new_id("resp_")
        self.chat = chat
        self.store = store
        self.warnings = warnings
        self.should_store = body.get("store") is not False
        self.input_items: list[dict[str, Any]] = []
        if self.should_store:
            if previous is not None:
                self.input_items += [*previous.input_items, *(previous.body.get("output") or [])]
            self.input_items += input_items(body.get("input"))
        # instructions are not carried over to a follow-up (as in the OpenAI API): keep them out of the history
        self.history_start = 1 if body.get("instructions") else 0
        if chat.conversation is None:
            chat.conversation = f"responses:{self.id}"
        metadata = body.get("metadata")
        truncation = body.get("truncation")
        parallel = body.get("parallel_tool_calls")
        self.skeleton: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "model": model,
            "output": [],
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            # the request's values, echoed only in the shapes the Response type allows (the SDK validates them)
            "metadata": {k: v for k, v in metadata.items() if isinstance(v, str)} if isinstance(metadata, dict) else {},
            "previous_response_id": body.get("previous_response_id"),
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "parallel_tool_calls": parallel if isinstance(parallel, bool) else True,
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": [
                _echo_tool(t) for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"
            ],
            "text": {"format": _echo_format(chat.response_format)},
            "truncation": truncation if truncation in ("auto", "disabled") else "disabled",
            "store": self.should_store,
            "usage": None,
        }

    def final(
        self,
        output: list[dict[str, Any]],
        text: str,
        calls: list[ToolCall],
        usage: Usage | None,
        finish: str,
        warnings: list[str],
    ) -> dict[str, Any]:
        body = dict(self.skeleton, output=output, usage=_usage(usage), status="completed")
        if finish == "length":
            body["status"] = "incomplete"
            body["incomplete_details"] = {"reason": "max_output_tokens"}
        if warnings:
            body["warnings"] = warnings
        if self.should_store:
            history = [
                *self.chat.messages[self.history_start :],
                Message(role="assistant", content=text, tool_calls=calls),
            ]
            conversation = self.chat.conversation or f"responses:{self.id}"
            self.store.put(self.id, StoredResponse(history, conversation, body, self.input_items))
        return body

    async def settle(self) -> None:
        """Before the response id reaches the caller: the stored copy is where every replica can read it."""
        await self.store.flush(self.id)

    def render(self, response: ChatResponse) -> tuple[bytes, dict[str, str]]:
        output: list[dict[str, Any]] = []
        if response.reasoning:
            output.append(_reasoning_item(_new_id("rs_"), response.reasoning))
        if response.content:
            output.append(_message_item(_new_id("msg_"), response.content))
        output += [_call_item(_new_id("fc_"), c) for c in response.tool_calls]
        warnings = [*self.warnings, *response.warnings]
        body = self.final(
            output, response.content, response.tool_calls, response.usage, response.finish_reason, warnings
        )
        if response.tool_runs:
            body["llm_runners"] = {"tool_runs": render_tool_runs(response.tool_runs)}
        return dumps(body).encode(), warnings_headers(warnings)


class ResponseStreamRenderer:
    """Stream events → Responses SSE events (``sequence_number`` on each), one output item per run of text or
    reasoning and one per function call."""

    heartbeat = b": keep-alive\n\n"

    def __init__(self, turn: _Turn) -> None:
        self.turn = turn
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: str | None = None
        self.item_id = ""
        self.buffer: list[str] = []
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.usage: Usage | None = None
        self.streamed = StreamedCalls()
        self.done = False

    def _ev(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return sse_event(kind, data)

    def head(self) -> bytes:
        return self._ev("response.created", response=self.turn.skeleton) + self._ev(
            "response.in_progress", response=self.turn.skeleton
        )

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        text = "".join(self.buffer)
        idx = len(self.output)
        ids = {"item_id": self.item_id, "output_index": idx}
        if self.open == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            item = _message_item(self.item_id, text)
            out = self._ev("response.output_text.done", **ids, content_index=0, text=text, logprobs=[]) + self._ev(
                "response.content_part.done", **ids, content_index=0, part=part
            )
        else:
            item = _reasoning_item(self.item_id, text)
            part = {"type": "summary_text", "text": text}
            out = self._ev("response.reasoning_summary_text.done", **ids, summary_index=0, text=text) + self._ev(
                "response.reasoning_summary_part.done", **ids, summary_index=0, part=part
            )
        self.output.append(item)
        self.open = None
        self.buffer = []
        return out + self._ev("response.output_item.done", output_index=idx, item=item)

    def _open(self, kind: str) -> bytes:
        out = self._close()
        idx = len(self.output)
        if kind == "message":
            self.item_id = _new_id("msg_")
            out += self._ev(
                "response.output_item.added", output_index=idx, item=_message_item(self.item_id, "", "in_progress")
            )
            out += self._ev(
                "response.content_part.added",
                item_id=self.item_id,
                output_index=idx,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            )
        else:
            self.item_id = _new_id("rs_")
            out += self._ev("response.output_item.added", output_index=idx, item=_reasoning_item(self.item_id, ""))
            out += self._ev(
                "response.reasoning_summary_part.added",
                item_id=self.item_id,
                output_index=idx,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        self.open = kind
        return out

    def event(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = b"" if self.open == "message" else self._open("message")
            self.buffer.append(event.text)
            self.text.append(event.text)
            return out + self._ev(
                "response.output_text.delta",
                item_id=self.item_id,
                output_index=len(self.output),
                content_index=0,
                delta=event.text,
                logprobs=[],
            )
        if isinstance(event, ReasoningDelta):
            if not event.text:
                return b""
            out = b"" if self.open == "reasoning" else self._open("reasoning")
            self.buffer.append(event.text)
            return out + self._ev(
                "response.reasoning_summary_text.delta",
                item_id=self.item_id,
                output_index=len(self.output),
                summary_index=0,
                delta=event.text,
            )
        if isinstance(event, ToolCallDelta):
            return self._tool_delta(event)
        if isinstance(event, ToolCallEvent):
            streamed = self.streamed.finished(event.call)
            if streamed is not None:
                return self._tool_done(streamed, event.call)
            out = self._close()
            call = event.call
            self.calls.append(call)
            idx = len(self.output)
            item_id = _new_id("fc_")
            ids = {"item_id": item_id, "output_index": idx}
            item = _call_item(item_id, call)
            out += self._ev(
                "response.output_item.added", output_index=idx, item=_call_item(item_id, call, "in_progress")
            )
            out += self._ev("response.function_call_arguments.delta", **ids, delta=call.arguments)
            out += self._ev("response.function_call_arguments.done", **ids, name=call.name, arguments=call.arguments)
            self.output.append(item)
            return out + self._ev("response.output_item.done", output_index=idx, item=item)
        if isinstance(event, UsageEvent):
            self.usage = event.usage if self.usage is None else self.usage + event.usage
            return b""
        if isinstance(event, Done):
            self.done = True
            out = self._close()
            body = self.turn.final(
                self.output,
                "".join(self.text),
                self.calls,
                self.usage,
                event.finish_reason,
                [*self.turn.warnings, *event.warnings],
            )
            if event.tool_runs:
                body["llm_runners"] = {"tool_runs": render_tool_runs(event.tool_runs)}
            kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
            return out + self._ev(kind, response=body)
        return b""

    def _tool_delta(self, event: ToolCallDelta) -> bytes:
        """A call's first fragment adds its output item (its place in ``output`` is kept from then on, so text
        after it becomes the next item); each fragment is an ``arguments.delta``."""
        out = b""

        def add_item() -> tuple[int, str]:
            nonlocal out
            out = self._close()
            idx, item_id = len(self.output), _new_id("fc_")
            item = _call_item(item_id, ToolCall(id=event.id or "", name=event.name or "", arguments=""), "in_progress")
            self.output.append(item)
            out += self._ev("response.output_item.added", output_index=idx, item=item)
            return idx, item_id

        found = self.streamed.fragment(event, add_item)
        if found is None or not event.arguments:
            return out
        call = found[0]
        return out + self._ev(
            "response.function_call_arguments.delta",
            item_id=call.item_id,
            output_index=call.slot,
            delta=event.arguments,
        )

    def _tool_done(self, streamed: StreamedCall, call: ToolCall) -> bytes:
        ids = {"item_id": streamed.item_id, "output_index": streamed.slot}
        rest = streamed.rest(call)
        out = self._ev("response.function_call_arguments.delta", **ids, delta=rest) if rest else b""
        out += self._ev("response.function_call_arguments.done", **ids, name=call.name, arguments=call.arguments)
        item = _call_item(streamed.item_id, call)
        self.output[streamed.slot] = item
        self.calls.append(call)
        return out + self._ev("response.output_item.done", output_index=streamed.slot, item=item)

    def error(self, exc: LLMError) -> bytes:
        failed = dict(
            self.turn.skeleton,
            status="failed",
            output=self.output,
            error={"code": failed_code(exc), "message": exc.message},
        )
        return self._ev("error", code=exc.code or exc.kind, message=exc.message, param=exc.param) + self._ev(
            "response.failed", response=failed
        )


#: ``response.failed`` codes for our error kinds: OpenAI's own ``ResponseError.code`` values (plus the two Codex
#: also reads), chosen for what Codex does with each: ``invalid_prompt`` stops with the message, a rate limit or
#: ``server_is_overloaded`` backs off, ``context_length_exceeded`` asks to compact, anything else is retried.
_FAILED_CODES: tuple[tuple[type[LLMError], str], ...] = (
    (ContextLengthExceeded, "context_length_exceeded"),
    (RateLimited, "rate_limit_exceeded"),
    (Overloaded, "server_is_overloaded"),
    (InvalidRequest, "invalid_prompt"),
    (GuardrailError, "invalid_prompt"),
    (ModelNotFound, "invalid_prompt"),
    (AuthenticationError, "invalid_prompt"),
    (PermissionDenied, "invalid_prompt"),
    (BinaryNotFound, "invalid_prompt"),
)


def failed_code(exc: LLMError) -> str:
    """The ``error.code`` of a ``response.failed`` event (the ``error`` event before it keeps our precise code)."""
    for kind, code in _FAILED_CODES:
        if isinstance(exc, kind):
            return code
    return "server_error"


# ------------------------------------------------------------------------------------------------ endpoints


class Responses:
    def __init__(
        self, router: Router, timeout: float | None, store: ResponseStore, *, tools: ServerTools | None = None
    ) -> None:
        self.router = router
        self.timeout = timeout
        self.store = store
        self.tools = tools

    async def __call__(self, request: Request) -> StreamingCall | CompletionCall | MultiplexCall:
        body = await read_json(request)
        models = multiplex_models(body)
        if models is not None:
            one = dict(body, model=None)
            chat, _, warnings, previous = await parse_responses_request(one, request.headers, self.store)

            def prepare(chat: ChatRequest, asked: str, route: Route) -> Render:
                return _Turn(one, chat, chat_model_name(asked, route.qualified), self.store, previous, warnings).render

            note_route(request.scope, "multiplex", None, False)
            return MultiplexCall(self.router, chat, models, prepare, "openai", warnings=warnings, timeout=self.timeout)
        chat, stream, warnings, previous = await parse_responses_request(body, request.headers, self.store)
        route = await self.router.resolve(chat.model)
        note_route(request.scope, route.name, route.model or route.provider.default_model, stream)
        chat.model = route.model
        model = chat_model_name(body.get("model"), route.qualified)
        turn = _Turn(body, chat, model, self.store, previous, warnings)
        provider = self.tools.provider_for(route, chat) if self.tools is not None else route.provider
        if stream:
            renderer = ResponseStreamRenderer(turn)
            return StreamingCall(provider, chat, renderer, "openai", timeout=self.timeout, settle=turn.settle)
        return CompletionCall(provider, chat, turn.render, "openai", timeout=self.timeout, settle=turn.settle)

    async def _stored(self, request: Request) -> tuple[str, StoredResponse]:
        response_id = request.path_params["response_id"]
        item = await self.store.get(response_id)
        if item is None:
            raise _not_found(response_id)
        return response_id, item

    async def retrieve(self, request: Request) -> Response:
        _, item = await self._stored(request)
        stream = request.query_params.get("stream", "false").lower()
        if stream not in ("true", "false", "1", "0"):
            raise InvalidRequest("stream: expected true or false", param="stream")
        if stream in ("false", "0"):
            return Response(dumps(item.body), media_type="application/json")
        after = request.query_params.get("starting_after")
        try:
            start = -1 if after is None else int(after)
        except ValueError:
            raise InvalidRequest("starting_after: expected an integer", param="starting_after") from None
        return Response(replay(item.body, start), media_type="text/event-stream; charset=utf-8")

    async def delete(self, request: Request) -> Response:
        """``DELETE /v1/responses/{id}``: out of the store (this replica's and the shared state); a follow-up naming
        it is then refused as unknown."""
        response_id = request.path_params["response_id"]
        if not await self.store.delete(response_id):
            raise _not_found(response_id)
        return Response(
            dumps({"id": response_id, "object": "response", "deleted": True}), media_type="application/json"
        )

    async def cancel(self, request: Request) -> Response:
        """``POST /v1/responses/{id}/cancel``: only a response created with ``background: true`` can be cancelled, and
        this server runs none in the background, so a stored one is answered as the API answers for a synchronous
        response: a 400 saying why (an unknown id is a 404)."""
        response_id, _ = await self._stored(request)
        raise InvalidRequest(
            f"response {response_id!r} cannot be cancelled: only a response created with background=true can be, "
            "and this server runs no background responses (each one has finished by the time its id is returned)",
            param="response_id",
        )

    async def input_items(self, request: Request) -> Response:
        """``GET /v1/responses/{id}/input_items``: a cursor page (``after`` / ``before`` an item id, ``limit`` 1-100,
        default 20, ``order`` ``desc`` by default) of the stored input items. ``include`` is accepted; none of the
        fields it can ask for (tool results, image URLs of tools…) exist here."""
        _, item = await self._stored(request)
        query = request.query_params
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order: expected asc or desc", param="order")
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit: expected an integer from 1 to 100", param="limit")
        items = item.input_items if order == "asc" else item.input_items[::-1]
        ids = [i.get("id") for i in items]
        start, end = 0, len(items)
        for param in ("after", "before"):
            cursor = query.get(param)
            if cursor is None:
                continue
            if cursor not in ids:
                raise InvalidRequest(f"{param}: no input item {cursor!r} in this response", param=param)
            if param == "after":
                start = ids.index(cursor) + 1
            else:
                end = ids.index(cursor)
        window = items[start:end]
        # with only `before`, the page is the items just before it
        page = window[-limit:] if "before" in query and "after" not in query else window[:limit]
        body = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(window) > len(page),
        }
        return Response(dumps(body), media_type="application/json")

    async def input_tokens(self, request: Request) -> Response:
        """``POST /v1/responses/input_tokens``: the estimate ``/v1/messages/count_tokens`` gives, of the request as
        ``POST /v1/responses`` would send it (``previous_response_id``'s history included); nothing is run."""
        body = await read_json(request)
        chat, _, _, _ = await parse_responses_request(body, request.headers, self.store)
        count = {"object": "response.input_tokens", "input_tokens": estimate_tokens(chat)}
        return Response(dumps(count), media_type="application/json")


def _not_found(response_id: str) -> ModelNotFound:
    return ModelNotFound(
        f"response {response_id!r} not found (unknown, deleted, expired from the store, or created with store=false)",
        param="response_id",
        code="not_found",
    )


def replay(body: dict[str, Any], starting_after: int = -1) -> bytes:
    """A stored response as the SSE events that would have streamed it (``GET /v1/responses/{id}?stream=true``):
    ``response.created`` … one run of events per output item … ``response.completed`` (or ``incomplete``), with
    the stored ids; events numbered ``starting_after`` and below are left out, as the OpenAI API does."""
    events: list[tuple[str, dict[str, Any]]] = []
    started = dict(body, status="in_progress", output=[], usage=None, incomplete_details=None)
    started.pop("warnings", None)
    events += [("response.created", {"response": started}), ("response.in_progress", {"response": started})]
    for idx, item in enumerate(body.get("output") or []):
        ids = {"item_id": item.get("id"), "output_index": idx}
        kind = item.get("type")
        if kind == "message":
            events.append(
                (
                    "response.output_item.added",
                    {"output_index": idx, "item": _message_item(item["id"], "", "in_progress")},
                )
            )
            for c, part in enumerate(item.get("content") or []):
                text = part.get("text", "")
                empty = dict(part, text="")
                events += [
                    ("response.content_part.added", {**ids, "content_index": c, "part": empty}),
                    ("response.output_text.delta", {**ids, "content_index": c, "delta": text, "logprobs": []}),
                    ("response.output_text.done", {**ids, "content_index": c, "text": text, "logprobs": []}),
                    ("response.content_part.done", {**ids, "content_index": c, "part": part}),
                ]
        elif kind == "function_call":
            pending = dict(item, arguments="", status="in_progress")
            events += [
                ("response.output_item.added", {"output_index": idx, "item": pending}),
                ("response.function_call_arguments.delta", {**ids, "delta": item.get("arguments", "")}),
                (
                    "response.function_call_arguments.done",
                    {**ids, "name": item.get("name"), "arguments": item.get("arguments", "")},
                ),
            ]
        elif kind == "reasoning":
            events.append(
                ("response.output_item.added", {"output_index": idx, "item": _reasoning_item(item["id"], "")})
            )
            for n, part in enumerate(item.get("summary") or []):
                text = part.get("text", "")
                events += [
                    ("response.reasoning_summary_part.added", {**ids, "summary_index": n, "part": dict(part, text="")}),
                    ("response.reasoning_summary_text.delta", {**ids, "summary_index": n, "delta": text}),
                    ("response.reasoning_summary_text.done", {**ids, "summary_index": n, "text": text}),
                    ("response.reasoning_summary_part.done", {**ids, "summary_index": n, "part": part}),
                ]
        else:
            events.append(("response.output_item.added", {"output_index": idx, "item": item}))
        events.append(("response.output_item.done", {"output_index": idx, "item": item}))
    final = "response.incomplete" if body.get("status") == "incomplete" else "response.completed"
    events.append((final, {"response": body}))
    return b"".join(
        sse_event(kind, {"type": kind, "sequence_number": seq, **fields})
        for seq, (kind, fields) in enumerate(events)
        if seq > starting_after
    )
