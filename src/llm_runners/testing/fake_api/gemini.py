"""Gemini API (``POST /v1beta/models/{model}:generateContent`` / ``:streamGenerateContent?alt=sse`` /
``:countTokens``), as Gemini CLI (google-genai SDK) speaks it.

Gemini CLI in model ``auto`` first asks a *router* call (plain ``generateContent`` whose ``generationConfig``
carries a JSON schema with ``complexity_score``) which model to use; :meth:`Gemini.is_router` recognises it so the
fake can answer it apart from the scripted conversation.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from .script import ErrorKind, Turn
from .wire import ApiName, ErrorContext, ErrorResponse, Frame, WireApi, dicts, sse, text_of

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}

_ERRORS: dict[str, tuple[int, str, str]] = {
    "401": (401, "UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    "403": (403, "PERMISSION_DENIED", "The caller does not have permission"),
    "404": (
        404,
        "NOT_FOUND",
        "models/{model} is not found for API version v1beta, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods.",
    ),
    "429": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "500": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    ),
    "529": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "context": (
        400,
        "INVALID_ARGUMENT",
        "The input token count ({big}) exceeds the maximum number of tokens allowed (1048576).",
    ),
    "invalid": (400, "INVALID_ARGUMENT", "{message}"),
}


class Gemini(WireApi):
    name: ClassVar[ApiName] = "gemini"
    tool_id_prefix: ClassVar[str] = "gemini_call_"

    def system_text(self, body: dict[str, Any]) -> str:
        instruction = body.get("systemInstruction", body.get("system_instruction"))
        return text_of(instruction.get("parts")) if isinstance(instruction, dict) else text_of(instruction)

    def messages(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        for content in dicts(body.get("contents")):
            parts = [p for p in dicts(content.get("parts")) if not p.get("thought")]
            responses = [p for p in parts if isinstance(p.get("functionResponse"), dict)]
            role = str(content.get("role", "user"))
            role = "tool" if responses and len(responses) == len(parts) else "assistant" if role == "model" else role
            texts = (json.dumps(p["functionResponse"].get("response")) if p in responses else text_of(p) for p in parts)
            out.append((role, "\n".join(t for t in texts if t)))
        return out

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        names = []
        for tool in dicts(body.get("tools")):
            for key, value in tool.items():
                if key in ("functionDeclarations", "function_declarations"):
                    names += [str(d.get("name")) for d in dicts(value)]
                else:
                    names.append(key)
        return names

    def is_router(self, body: dict[str, Any]) -> bool:
        config = body.get("generationConfig")
        if not isinstance(config, dict):
            return False
        schema = config.get("responseJsonSchema", config.get("responseSchema"))
        return schema is not None and "complexity_score" in json.dumps(schema)

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("contents"), list):
            return "* GenerateContentRequest.contents: contents is not specified"
        return None

    def error(self, kind: ErrorKind | Literal["invalid"], ctx: ErrorContext) -> ErrorResponse:
        status, code_name, template = _ERRORS[kind]
        message = ctx.message or template.format(model=ctx.model, big=ctx.prompt_tokens + 1048576, message="")
        headers = {"retry-after": str(ctx.retry_after)} if kind == "429" else {}
        return ErrorResponse(status, {"error": {"code": status, "message": message, "status": code_name}}, headers)

    def _usage(self, turn: Turn) -> dict[str, Any]:
        usage = {
            "promptTokenCount": turn.input_tokens,
            "candidatesTokenCount": turn.output_tokens,
            "totalTokenCount": turn.total_tokens + turn.reasoning_tokens,
        }
        if turn.cached_tokens:
            usage["cachedContentTokenCount"] = turn.cached_tokens
        if turn.reasoning_tokens:
            usage["thoughtsTokenCount"] = turn.reasoning_tokens
        return usage

    def _chunk(self, turn: Turn, parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        chunk: dict[str, Any] = {"candidates": [candidate]}
        if last:
            candidate["finishReason"] = _FINISH[turn.finish]
            chunk["usageMetadata"] = self._usage(turn)
        chunk["modelVersion"] = turn.model
        chunk["responseId"] = f"fake{turn.uid}"
        return chunk

    def _call_parts(self, turn: Turn) -> list[dict[str, Any]]:
        return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in turn.tool_calls]

    def render_json(self, turn: Turn) -> dict[str, Any]:
        parts = ([{"text": turn.text}] if turn.chunks or not turn.tool_calls else []) + self._call_parts(turn)
        return self._chunk(turn, parts, True)

    def stream_chunks(self, turn: Turn) -> list[tuple[dict[str, Any], bool]]:
        """The streamed chunks as ``(chunk, is_content_delta)``, the finish reason and usage on the last one."""
        pieces: list[list[dict[str, Any]]] = [[{"text": text}] for text in turn.chunks]
        if turn.tool_calls:
            pieces.append(self._call_parts(turn))
        if not pieces:
            pieces.append([{"text": ""}])
        return [(self._chunk(turn, parts, i == len(pieces) - 1), True) for i, parts in enumerate(pieces)]

    def render_stream(self, turn: Turn, body: dict[str, Any]) -> list[Frame]:
        return [Frame(sse(chunk), is_chunk) for chunk, is_chunk in self.stream_chunks(turn)]

    def render_json_array(self, turn: Turn) -> list[dict[str, Any]]:
        """``streamGenerateContent`` without ``alt=sse`` answers one JSON array of the same chunks."""
        return [chunk for chunk, _ in self.stream_chunks(turn)]
