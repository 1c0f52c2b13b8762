"""OpenAI Responses (``POST …/responses``): Codex and the ``openai`` SDK's ``client.responses``.

Codex reads the full event sequence (created, in_progress, output_item/content_part added, text deltas, the
matching ``done`` events, completed with detailed usage), so the stream renders all of it, numbered by
``sequence_number``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from .openai_chat import openai_error
from .script import ErrorKind, Turn, split_arguments
from .wire import ApiName, ErrorContext, ErrorResponse, Frame, WireApi, dicts, sse, text_of

_SYSTEM_ROLES = ("system", "developer")


class OpenAIResponses(WireApi):
    name: ClassVar[ApiName] = "openai_responses"
    tool_id_prefix: ClassVar[str] = "call_"

    def system_text(self, body: dict[str, Any]) -> str:
        parts = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
        parts += [text_of(i.get("content")) for i in dicts(body.get("input")) if i.get("role") in _SYSTEM_ROLES]
        return "\n".join(parts)

    def messages(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        items = body.get("input")
        if isinstance(items, str):
            return [("user", items)]
        out = []
        for item in dicts(items):
            kind = item.get("type", "message")
            if kind == "message" and item.get("role") not in _SYSTEM_ROLES:
                out.append((str(item.get("role")), text_of(item.get("content"))))
            elif kind == "function_call_output":
                output = item.get("output")
                out.append(("tool", output if isinstance(output, str) else text_of(output)))
        return out

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        return [str(t.get("name") or t.get("type")) for t in dicts(body.get("tools"))]

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str):
            return "Missing required parameter: 'model'."
        if not isinstance(body.get("input"), str | list):
            return "Missing required parameter: 'input'."
        return None

    def error(self, kind: ErrorKind | Literal["invalid"], ctx: ErrorContext) -> ErrorResponse:
        return openai_error(kind, ctx, responses=True)

    # -- rendering ------------------------------------------------------------------------------------------
    def _items(self, turn: Turn, done: bool) -> list[dict[str, Any]]:
        status = "completed" if done else "in_progress"
        items: list[dict[str, Any]] = []
        if turn.chunks or not turn.tool_calls:
            content = [_text_part(turn.text)] if done else []
            items.append(
                {
                    "id": f"msg_fake_{turn.uid}",
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": content,
                }
            )
        for index, call in enumerate(turn.tool_calls):
            items.append(
                {
                    "id": f"fc_fake_{turn.uid}_{index}",
                    "type": "function_call",
                    "status": status,
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments_json if done else "",
                }
            )
        return items

    def _response(self, turn: Turn, body: dict[str, Any], done: bool) -> dict[str, Any]:
        incomplete = turn.finish == "length"
        status = ("incomplete" if incomplete else "completed") if done else "in_progress"
        return {
            "id": f"resp_fake_{turn.uid}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if done and incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": turn.model,
            "output": self._items(turn, True) if done else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", False),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": self._usage(turn) if done else None,
            "metadata": {},
        }

    def _usage(self, turn: Turn) -> dict[str, Any]:
        return {
            "input_tokens": turn.input_tokens,
            "input_tokens_details": {"cached_tokens": turn.cached_tokens},
            "output_tokens": turn.output_tokens,
            "output_tokens_details": {"reasoning_tokens": turn.reasoning_tokens},
            "total_tokens": turn.total_tokens,
        }

    def render_json(self, turn: Turn) -> dict[str, Any]:
        return self._response(turn, {}, True)

    def render_stream(self, turn: Turn, body: dict[str, Any]) -> list[Frame]:
        frames: list[Frame] = []

        def emit(event: str, is_chunk: bool = False, **fields: Any) -> None:
            payload = {"type": event, "sequence_number": len(frames), **fields}
            frames.append(Frame(sse(payload, event), is_chunk))

        emit("response.created", response=self._response(turn, body, False))
        emit("response.in_progress", response=self._response(turn, body, False))
        started, finished = self._items(turn, False), self._items(turn, True)
        for index, (item, final) in enumerate(zip(started, finished, strict=True)):
            emit("response.output_item.added", output_index=index, item=item)
            where = {"item_id": item["id"], "output_index": index}
            if item["type"] == "message":
                emit("response.content_part.added", **where, content_index=0, part=_text_part(""))
                for text in turn.chunks:
                    emit("response.output_text.delta", True, **where, content_index=0, delta=text, logprobs=[])
                emit("response.output_text.done", **where, content_index=0, text=turn.text, logprobs=[])
                emit("response.content_part.done", **where, content_index=0, part=_text_part(turn.text))
            else:
                for piece in split_arguments(final["arguments"]):
                    emit("response.function_call_arguments.delta", True, **where, delta=piece)
                emit("response.function_call_arguments.done", **where, name=final["name"], arguments=final["arguments"])
            emit("response.output_item.done", output_index=index, item=final)
        final_response = self._response(turn, body, True)
        emit("response.incomplete" if turn.finish == "length" else "response.completed", response=final_response)
        return frames


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
