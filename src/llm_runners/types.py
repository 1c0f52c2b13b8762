"""The one internal model.

Every front door (OpenAI Chat Completions, OpenAI Responses, Anthropic Messages, MCP, the library) translates its
wire format into a :class:`ChatRequest` exactly once, and renders :class:`StreamEvent` / :class:`ChatResponse`
back into its wire format exactly once. Nothing translates between two wire formats directly.

Requests, responses and capabilities are pydantic models (validation, JSON schema). Stream events are slotted
frozen dataclasses instead: one is made per token on the hottest path of the project, and a dataclass costs a
fraction of a validated model to build.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------------------------------- content parts


class TextPart(_Model):
    type: Literal["text"] = "text"
    text: str


_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.S)


class ImagePart(_Model):
    """An image, carried as bytes (``data``) or as a URL the caller gave (``url``)."""

    type: Literal["image"] = "image"
    media_type: str = "image/png"
    data: bytes | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImagePart:
        if self.data is None and self.url is None:
            raise ValueError("an image needs data or a url")
        return self

    @classmethod
    def from_data_uri(cls, uri: str) -> ImagePart:
        """Decode ``data:image/png;base64,...``; a plain http(s) URL is kept as a URL."""
        m = _DATA_URI.match(uri)
        if m is None:
            if uri.startswith(("http://", "https://")):
                return cls(url=uri)
            raise ValueError("image_url must be a data URI (data:<type>;base64,<data>) or an http(s) URL")
        try:
            raw = base64.b64decode(m.group("data"), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"image data URI is not valid base64: {exc}") from exc
        return cls(media_type=m.group("mime") or "image/png", data=raw)

    @classmethod
    def from_base64(cls, data: str, media_type: str) -> ImagePart:
        try:
            raw = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"image data is not valid base64: {exc}") from exc
        return cls(media_type=media_type, data=raw)

    def base64(self) -> str:
        return base64.b64encode(self.data or b"").decode("ascii")

    def data_uri(self) -> str:
        if self.data is None:
            return self.url or ""
        return f"data:{self.media_type};base64,{self.base64()}"


ContentPart: TypeAlias = Annotated[TextPart | ImagePart, Field(discriminator="type")]


# --------------------------------------------------------------------------------------------- tools


class ToolSpec(_Model):
    """A function the model may call. ``parameters`` is a JSON schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolCall(_Model):
    """A call the model made. ``arguments`` is the JSON text of the arguments, as the wire formats carry it."""

    id: str
    name: str
    arguments: str = "{}"


class ToolRun(_Model):
    """A tool call the server executed itself (server-side tool execution, :mod:`llm_runners.tools.agent`): the
    call, the MCP server that ran it, and the result text the model was given."""

    call: ToolCall
    server: str | None = None
    result: str = ""
    is_error: bool = False


class ToolChoice(_Model):
    """``auto`` (the model decides), ``none``, ``required`` (at least one call), or ``tool`` (call ``name``)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.mode == "tool" and not self.name:
            raise ValueError("tool_choice mode 'tool' needs a tool name")
        return self


class ResponseFormat(_Model):
    """``text``; ``json_object`` (any JSON object); ``json_schema`` (JSON valid against ``json_schema``)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    json_schema: dict[str, Any] | None = None
    strict: bool = False


# --------------------------------------------------------------------------------------------- messages


class Message(_Model):
    """One chat message. ``content`` is always a list of parts; a plain string is accepted and wrapped.

    An assistant message may carry ``tool_calls``; a ``tool`` message answers the call ``tool_call_id``.
    """

    role: Role
    content: list[ContentPart] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _wrap_text(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [TextPart(text=value)] if value else []
        return value

    @model_validator(mode="after")
    def _tool_message(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    @property
    def text(self) -> str:
        """The text parts joined; images are left out."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]


class ChatRequest(_Model):
    """A provider-neutral chat request.

    ``conversation`` is the caller's key for session continuity: requests with the same key continue the same CLI
    session. Without it, continuity is found from the history itself (see :mod:`llm_runners.sessions`).
    ``extra`` carries provider-specific options by name; a provider reads only the keys it knows.
    """

    messages: list[Message]
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    conversation: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return value

    @model_validator(mode="after")
    def _non_empty(self) -> ChatRequest:
        if not self.messages:
            raise ValueError("messages must not be empty")
        return self

    @property
    def system(self) -> str:
        """All system messages joined, in order."""
        return "\n\n".join(m.text for m in self.messages if m.role == "system" and m.text)


# --------------------------------------------------------------------------------------------- responses


class Usage(_Model):
    """Token counts as the provider reported them. ``cached_tokens`` (cache reads), ``cache_write_tokens`` and
    ``reasoning_tokens`` are subsets of ``input_tokens`` and ``output_tokens``.

    ``cost_usd`` is the CLI's own figure when it reports one, else what the tokens cost at the list prices of
    :mod:`llm_runners.pricing` (the router fills it in; ``None`` only for a model no price is known for).
    ``cost_estimated`` is true when the figure is not an API bill: computed from the price table, or reported by a
    CLI that runs on a subscription (what the tokens would have cost on the API)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    cost_estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        cost: float | None
        if self.cost_usd is None and other.cost_usd is None:
            cost = None
        else:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost_usd=cost,
            cost_estimated=self.cost_estimated or other.cost_estimated,
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One fallback-chain entry that did not answer: its label (``claude_code:haiku``), the error-tree kind of
    its last failure (``circuit_open`` when the circuit breaker skipped it), the message, and how many times it
    was tried (0 when skipped)."""

    entry: str
    kind: str
    message: str = ""
    tries: int = 1


@dataclass(frozen=True, slots=True)
class FallbackInfo:
    """Which entry of a fallback chain answered (:mod:`llm_runners.wrappers.fallback`), and what failed before it."""

    chain: str
    answered: str
    failed: tuple[Attempt, ...] = ()


class ChatResponse(_Model):
    content: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage | None = None
    finish_reason: FinishReason = "stop"
    model: str | None = None
    provider: str | None = None
    session_id: str | None = None
    warnings: list[str] = Field(default_factory=list)
    stop_sequence: str | None = None  # which of ChatRequest.stop ended the answer, when one did
    fallback: FallbackInfo | None = None  # set when a fallback chain answered
    #: the tool calls the server executed on the way to this answer (server-side tool execution), in order
    tool_runs: list[ToolRun] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------- stream events


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str
    type: Literal["reasoning"] = "reasoning"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call as the model streams it (the HTTP providers). ``index`` is the call's ordinal in
    this answer (0, 1, …); the first fragment of a call carries its ``id`` and ``name``, the later ones only more
    ``arguments`` text. The whole call still follows as a :class:`ToolCallEvent` with the same ``id`` once it is
    complete: a consumer that renders fragments (the front doors) treats that event as the call's end, any other
    consumer can ignore the fragments."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None
    type: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """A complete tool call (CLIs and the text tool protocol produce whole calls, not argument fragments; the HTTP
    providers send :class:`ToolCallDelta` fragments before it)."""

    call: ToolCall
    type: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True)
class AgentToolEvent:
    """An agent's *own* tool at work (an ACP ``tool_call`` / ``tool_call_update``): for showing and logging only.
    It is no call for the caller to answer (that is :class:`ToolCallEvent`) and no part of the answer; front doors
    without a place for it leave it out. With tools off a refused call still shows, with ``status`` ``failed``."""

    id: str
    title: str | None = None
    #: ACP's tool kind: ``read``, ``edit``, ``delete``, ``move``, ``search``, ``execute``, ``fetch``, ``other``…
    kind: str | None = None
    #: ``pending``, ``in_progress``, ``completed`` or ``failed``
    status: str | None = None
    type: Literal["agent_tool"] = "agent_tool"


@dataclass(frozen=True, slots=True)
class UsageEvent:
    usage: Usage
    type: Literal["usage"] = "usage"


@dataclass(frozen=True, slots=True)
class Done:
    """The last event of every successful stream. A failed stream raises an :class:`~llm_runners.errors.LLMError`
    instead of yielding ``Done``."""

    finish_reason: FinishReason = "stop"
    model: str | None = None
    session_id: str | None = None
    warnings: tuple[str, ...] = field(default=())
    type: Literal["done"] = "done"
    stop_sequence: str | None = None  # which of ChatRequest.stop ended the answer, when one did
    fallback: FallbackInfo | None = None  # set when a fallback chain answered
    #: the tool calls the server executed on the way to this answer (server-side tool execution), in order
    tool_runs: tuple[ToolRun, ...] = field(default=())


StreamEvent: TypeAlias = TextDelta | ReasoningDelta | ToolCallDelta | ToolCallEvent | AgentToolEvent | UsageEvent | Done


# --------------------------------------------------------------------------------------------- provider metadata


class Capabilities(_Model):
    """What a provider can do, as data. The server reads it to decide what to pass, emulate, warn about or reject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    streaming: bool = True
    token_streaming: bool = False  # text arrives as it is generated, not once at the end
    system_prompt: bool = True  # the system prompt replaces the CLI's own (not just prepended to the user turn)
    images: bool = False
    native_tools: bool = False  # the caller's function tools reach the model as real tools
    #: the CLI takes tools from an MCP server of ours (:mod:`llm_runners.mcp.toolhost`) and calls them itself:
    #: server-executed tools (:mod:`llm_runners.tools.agent`) go to it that way instead of the text tool protocol
    mcp_tools: bool = False
    agent_tools: bool = False  # the CLI's own tools (shell, files) can be turned on by the operator
    sessions: bool = False  # continuity through the CLI's own resume
    temperature: bool = False
    top_p: bool = False
    max_tokens: bool = False
    stop: bool = False
    json_mode: bool = False  # a native structured-output switch
    usage: bool = True
    cost: bool = False
    model_listing: bool = False  # models() asks the CLI or API live
    #: proven here against the real program it drives: the pinned CLI binary, run in the loopback-only namespace
    #: against the fake model API. False for runners built from a CLI's published formats only (its binary cannot
    #: be installed here) and for the HTTP providers (tested against the fake API's rendering of the wire format,
    #: never against the live service)
    verified: bool = False


class ModelInfo(_Model):
    id: str
    provider: str
    display_name: str | None = None
    context_window: int | None = None


class Health(_Model):
    """Readiness of one provider. ``fix`` is a one-line instruction when ``ready`` is false."""

    provider: str
    installed: bool
    ready: bool
    path: str | None = None
    version: str | None = None
    authenticated: bool | None = None
    reason: str | None = None
    fix: str | None = None
    #: :attr:`Capabilities.verified` of the provider, filled in by the listings (``providers``, ``/ready``)
    verified: bool | None = None
    #: a process runner's CLI processes by state ("running", "live", "spare"), when it has any notion of them
    processes: dict[str, int] | None = None
