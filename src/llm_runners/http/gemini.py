"""Gemini API over HTTP (``POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse``).

``base_url`` has no version suffix, as the google-genai SDK's and Gemini CLI's ``GOOGLE_GEMINI_BASE_URL`` do not
(``https://generativelanguage.googleapis.com``). The key goes in ``x-goog-api-key`` (``$GEMINI_API_KEY``).

Mapping: system messages become ``systemInstruction``; the conversation becomes ``contents`` with roles ``user`` /
``model``; images become ``inlineData`` parts (bytes) or ``fileData`` parts (a URL); assistant tool calls become
``functionCall`` parts and ``tool`` messages ``functionResponse`` parts in a user turn (named after the call they
answer, consecutive results sharing one turn); tools become ``functionDeclarations`` with their JSON Schema as
``parametersJsonSchema``; ``tool_choice`` becomes ``toolConfig.functionCallingConfig`` (``AUTO`` / ``NONE`` /
``ANY``, ``allowedFunctionNames`` for one tool); sampling, ``maxOutputTokens``, ``stopSequences`` and JSON mode
(``responseMimeType`` + ``responseJsonSchema``) go in ``generationConfig``.

Streaming: each chunk is a whole ``GenerateContentResponse``; ``text`` parts -> :class:`TextDelta`, parts marked
``thought`` -> :class:`ReasoningDelta`, each ``functionCall`` part (the API sends calls whole) -> one
:class:`ToolCallDelta` holding the whole arguments, then the :class:`ToolCallEvent`; the last chunk's
``finishReason`` and ``usageMetadata`` -> :class:`Done` and one :class:`UsageEvent`. ``promptTokenCount`` counts
the whole prompt with ``cachedContentTokenCount`` as a subset (it is :attr:`Usage.cached_tokens`);
``thoughtsTokenCount`` is outside ``candidatesTokenCount`` on this API, so it is added to the output and reported
as :attr:`Usage.reasoning_tokens`.

Errors come as ``{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT", "details": [...]}}``; a bad
key is a 400 with reason ``API_KEY_INVALID`` on the real API (401 ``UNAUTHENTICATED`` elsewhere), both
:class:`AuthenticationError`; ``RESOURCE_EXHAUSTED`` with a ``RetryInfo.retryDelay`` gives ``retry_after``; an
``{"error": ...}`` chunk inside a 200 stream raises the matching error; a prompt blocked by safety
(``promptFeedback.blockReason``) finishes with ``content_filter``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Unpack

import httpx2

from ..errors import AuthenticationError, InvalidRequest, LLMError, UpstreamError
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
from ._base import HTTPOptions, HTTPProvider, classify, loads

__all__ = ["GeminiProvider"]

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

#: google.rpc status names -> the HTTP status they stand for, for errors inside a 200 stream
_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 408,
}

_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiProvider(HTTPProvider):
    name: ClassVar[str] = "gemini_api"
    display_name: ClassVar[str] = "Gemini API"
    default_base_url = "https://generativelanguage.googleapis.com"
    api_key_env = "GEMINI_API_KEY"
    key_header = ("x-goog-api-key", "")

    def __init__(
        self, base_url: str | None = None, *, api_version: str = "v1beta", **options: Unpack[HTTPOptions]
    ) -> None:
        if not re.fullmatch(r"v\d+(alpha|beta)?\d*", api_version):
            raise ValueError(f"api_version must look like v1beta or v1, got {api_version!r}")
        self.api_version = api_version
        super().__init__(base_url, **options)

    def _models_path(self) -> str:
        return f"/{self.api_version}/models"

    def _model_ids(self, body: Any) -> list[str]:
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise ValueError("the model list has no 'models' array")
        return [
            m["name"].removeprefix("models/") for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)
        ]

    # -- request ------------------------------------------------------------------------------------------------
    def _build(self, request: ChatRequest, model: str) -> tuple[str, dict[str, Any]]:
        model = model.removeprefix("models/")
        body: dict[str, Any] = {"contents": _contents(request.messages)}
        if system := request.system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        config: dict[str, Any] = {}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.top_p is not None:
            config["topP"] = request.top_p
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        if request.stop:
            config["stopSequences"] = request.stop
        fmt = request.response_format
        if fmt is not None and fmt.type in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
            if fmt.type == "json_schema" and fmt.json_schema:
                config["responseJsonSchema"] = fmt.json_schema
        if config:
            body["generationConfig"] = config
        if request.tools:
            body["tools"] = [
                {
                    "functionDeclarations": [
                        {"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters}
                        for t in request.tools
                    ]
                }
            ]
        if request.tool_choice is not None:
            mode = request.tool_choice.mode
            calling: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}[mode]}
            if mode == "tool" and request.tool_choice.name:
                calling["allowedFunctionNames"] = [request.tool_choice.name]
            body["toolConfig"] = {"functionCallingConfig": calling}
        return f"/{self.api_version}/models/{model}:streamGenerateContent?alt=sse", body

    # -- errors -------------------------------------------------------------------------------------------------
    def _error_for(self, status: int, body: Any, fallback: str, retry_after: float | None) -> LLMError:
        return _error(status, body, fallback, self.name, retry_after)

    # -- streamed answer ----------------------------------------------------------------------------------------
    async def _events(self, source: AsyncIterator[httpx2.ServerSentEvent]) -> AsyncIterator[StreamEvent]:
        state = _State(self.name)
        async for sse in source:
            if not sse.data.strip():
                continue
            for event in state.chunk(loads(sse.data, self.name)):
                yield event
        for event in state.finish():
            yield event

    def _from_json(self, body: Any) -> list[StreamEvent]:
        state = _State(self.name)
        events: list[StreamEvent] = []
        for chunk in body if isinstance(body, list) else [body]:
            events += state.chunk(chunk)
        return events + state.finish()


class _State:
    """What a stream has told so far: the chunks' usage and finish reason are the last ones seen."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.blocked = False
        self.calls = 0
        self.model: str | None = None

    def chunk(self, data: Any) -> list[StreamEvent]:
        if not isinstance(data, dict):
            raise UpstreamError(
                f"the API sent a chunk that is not an object: {str(data)[:200]!r}", provider=self.provider
            )
        if isinstance(data.get("error"), dict):
            status = data["error"].get("code")
            if not isinstance(status, int):
                status = _STATUS.get(str(data["error"].get("status")), 500)
            raise _error(status, data, "the API reported an error mid-stream", self.provider, None)
        self.model = data.get("modelVersion") or self.model
        if isinstance(data.get("usageMetadata"), dict):
            self.usage = _usage(data["usageMetadata"])
        feedback = data.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self.blocked = True
        events: list[StreamEvent] = []
        for candidate in data.get("candidates") or []:
            if not isinstance(candidate, dict) or candidate.get("index", 0) != 0:
                continue  # one answer: candidateCount is never asked for
            content = candidate.get("content")
            for part in (content.get("parts") if isinstance(content, dict) else None) or []:
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("functionCall"), dict):
                    call = part["functionCall"]
                    self.calls += 1
                    whole = ToolCall(
                        id=str(call.get("id") or f"call_{self.calls}"),
                        name=str(call.get("name") or ""),
                        arguments=json.dumps(call.get("args") or {}),
                    )
                    # the API sends each call whole: one fragment, then the call
                    events.append(ToolCallDelta(self.calls - 1, whole.arguments, id=whole.id, name=whole.name))
                    events.append(ToolCallEvent(whole))
                elif isinstance(part.get("text"), str) and part["text"]:
                    events.append(ReasoningDelta(part["text"]) if part.get("thought") else TextDelta(part["text"]))
            if candidate.get("finishReason"):
                self.finish_reason = str(candidate["finishReason"])
        return events

    def finish(self) -> list[StreamEvent]:
        if self.finish_reason is None and not self.blocked:
            raise UpstreamError("the API's stream ended before a finishReason", provider=self.provider)
        finish: FinishReason
        if self.blocked:
            finish = "content_filter"
        elif self.calls and self.finish_reason == "STOP":
            finish = "tool_calls"
        else:
            finish = _FINISH.get(self.finish_reason or "STOP", "stop")
        return [UsageEvent(self.usage or Usage()), Done(finish_reason=finish, model=self.model)]


def _usage(raw: dict[str, Any]) -> Usage:
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(raw.get("promptTokenCount") or 0) + int(raw.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(raw.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(raw.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _error(status: int, body: Any, fallback: str, provider: str, retry_after: float | None) -> LLMError:
    """An error body of this API -> the error tree (see the module docstring)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return classify(status, fallback, code=None, provider=provider, retry_after=retry_after)
    raw = err.get("message")
    message = raw if isinstance(raw, str) and raw else fallback
    details = [d for d in err.get("details") or [] if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if d.get("reason")}
    if "API_KEY_INVALID" in reasons or err.get("status") == "UNAUTHENTICATED":
        return AuthenticationError(message, provider=provider)
    for detail in details:
        delay = detail.get("retryDelay") if str(detail.get("@type", "")).endswith("RetryInfo") else None
        if retry_after is None and isinstance(delay, str) and (match := _DELAY.match(delay)):
            retry_after = float(match.group(1))
    return classify(status, message, code=None, provider=provider, retry_after=retry_after)


def _contents(messages: list[Message]) -> list[dict[str, Any]]:
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue  # joined into systemInstruction
        if m.role == "tool":
            part = {
                "functionResponse": {
                    "name": names.get(m.tool_call_id or "", m.tool_call_id or ""),
                    "response": _result(m.text),
                }
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and all("functionResponse" in p for p in last["parts"]):
                last["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
            continue
        parts = [_part(p) for p in m.content if not (isinstance(p, TextPart) and not p.text)]
        if m.role == "assistant":
            if m.images:
                raise InvalidRequest("images are only allowed in user messages, not assistant", param="messages")
            parts += [{"functionCall": {"name": c.name, "args": _arguments(c)}} for c in m.tool_calls]
        if not parts:
            if m.role == "assistant":
                continue  # an empty model turn carries nothing
            parts = [{"text": ""}]
        out.append({"role": "model" if m.role == "assistant" else "user", "parts": parts})
    return out


def _result(text: str) -> dict[str, Any]:
    """A functionResponse's ``response`` must be an object: a JSON object result as it is, anything else wrapped."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _part(p: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"text": p.text}
    if p.data is not None:
        return {"inlineData": {"mimeType": p.media_type, "data": p.base64()}}
    return {"fileData": {"mimeType": p.media_type, "fileUri": p.url}}


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"tool call {call.id} has arguments that are not JSON: {exc.msg}", param="messages"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"tool call {call.id} arguments must be a JSON object", param="messages")
    return value
