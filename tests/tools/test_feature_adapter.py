"""FeatureAdapter: what the inner provider sees and what the caller gets, for every emulated feature."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import pytest

from llm_runners.errors import GuardrailError, InvalidRequest
from llm_runners.provider import Provider, collect
from llm_runners.types import (
    Capabilities,
    ChatRequest,
    Done,
    Health,
    ImagePart,
    Message,
    ReasoningDelta,
    ResponseFormat,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    Usage,
    UsageEvent,
)
from llm_runners.wrappers.features import FeatureAdapter, StopCutter

pytestmark = pytest.mark.anyio

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec(name="get_time", description="The time in a timezone.")
PERSON = ResponseFormat(
    type="json_schema",
    json_schema={"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
)


class Scripted(Provider):
    """Answers the n-th request with the n-th script (text deltas, then usage and Done) and records requests."""

    name = "scripted"

    def __init__(self, *scripts: Sequence[StreamEvent | str], caps: Capabilities | None = None) -> None:
        self.scripts = list(scripts)
        self.capabilities = caps or Capabilities()  # type: ignore[misc]
        self.requests: list[ChatRequest] = []
        self.closed = 0

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        script = self.scripts[len(self.requests) - 1]
        return self._run(script)

    async def _run(self, script: Sequence[StreamEvent | str]) -> AsyncIterator[StreamEvent]:
        try:
            for item in script:
                yield TextDelta(item) if isinstance(item, str) else item
            yield UsageEvent(Usage(input_tokens=10, output_tokens=5))
            yield Done(finish_reason="stop", model="m1", session_id="s1", warnings=("inner note",))
        finally:
            self.closed += 1

    async def health(self) -> Health:
        return Health(provider=self.name, installed=True, ready=True)


def _request(**kwargs: object) -> ChatRequest:
    messages = kwargs.pop("messages", [Message(role="system", content="Be brief."), Message(role="user", content="Hi")])
    return ChatRequest(messages=messages, **kwargs)


async def _events(adapter: FeatureAdapter, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in adapter.stream(request)]


# --------------------------------------------------------------------------------------------- pass-through


async def test_plain_request_is_the_inner_stream_itself() -> None:
    inner = Scripted(["unused"], ["Hello", " world"])
    adapter = FeatureAdapter(inner)
    request = _request(stop=["never"])  # stop given but nothing else: still adapted (stop is emulated)
    assert adapter.plan(_request()) is None
    stream = adapter.stream(_request())
    assert stream.__class__.__name__ == "async_generator" and stream.__qualname__ == "Scripted._run"  # type: ignore[attr-defined]
    await stream.aclose()  # type: ignore[attr-defined]
    assert adapter.plan(request) is not None
    response = await adapter.complete(_request())
    assert response.content == "Hello world" and response.warnings == ["inner note"]
    assert inner.requests[-1] == _request()


async def test_delegates_metadata() -> None:
    caps = Capabilities(native_tools=True, temperature=True)
    adapter = FeatureAdapter(Scripted(caps=caps))
    assert adapter.name == "scripted" and adapter.capabilities is caps
    assert (await adapter.health()).ready


async def test_native_tools_pass_through() -> None:
    call = ToolCall(id="call_n", name="get_weather", arguments='{"city":"Oslo"}')
    inner = Scripted([ToolCallEvent(call)], caps=Capabilities(native_tools=True))
    request = _request(tools=[WEATHER], tool_choice=ToolChoice(mode="required"))
    response = await FeatureAdapter(inner).complete(request)
    assert inner.requests == [request]
    assert response.tool_calls == [call]


# --------------------------------------------------------------------------------------------- text tool protocol


async def test_text_protocol_rewrites_request_and_parses_calls() -> None:
    answer = (
        "Let me check.\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    )
    inner = Scripted([answer[:20], answer[20:50], answer[50:]])
    history = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather?"),
        Message(role="assistant", tool_calls=[ToolCall(id="call_0", name="get_weather", arguments='{"city":"Rome"}')]),
        Message(role="tool", tool_call_id="call_0", content="20 C"),
        Message(role="user", content="And Paris, and the time?"),
    ]
    events = await _events(FeatureAdapter(inner), _request(messages=history, tools=[WEATHER, TIME]))

    seen = inner.requests[0]
    assert seen.tools == [] and seen.tool_choice is None
    assert [m.role for m in seen.messages] == ["system", "system", "user", "assistant", "user", "user"]
    assert seen.messages[0].text == "Be brief."
    assert "## get_weather" in seen.messages[1].text and "<tool_call>" in seen.messages[1].text
    assert seen.messages[3].text == '<tool_call>{"name":"get_weather","arguments":{"city":"Rome"}}</tool_call>'
    assert seen.messages[4].text == "Result of tool get_weather (call_0):\n20 C"

    response = await collect(_aiter(events))
    assert response.content == "Let me check."
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("get_weather", '{"city":"Paris"}'),
        ("get_time", "{}"),
    ]
    assert all(c.id.startswith("call_") for c in response.tool_calls)
    assert response.finish_reason == "tool_calls"
    assert response.usage == Usage(input_tokens=10, output_tokens=5)
    assert response.session_id == "s1" and response.model == "m1"


async def test_prose_streams_before_the_call_closes() -> None:
    inner = Scripted(["Thinking", " aloud ", '<tool_call>{"name":"get_time"}', "</tool_call>"])
    events = await _events(FeatureAdapter(inner), _request(tools=[TIME]))
    kinds = [(type(e).__name__, getattr(e, "text", None)) for e in events]
    assert kinds[:3] == [("TextDelta", "Thinking"), ("TextDelta", " aloud"), ("ToolCallEvent", None)]


async def test_answer_without_calls_keeps_finish_reason_and_text() -> None:
    inner = Scripted(["No tool ", "needed."])
    response = await FeatureAdapter(inner).complete(_request(tools=[WEATHER]))
    assert response.content == "No tool needed." and response.tool_calls == []
    assert response.finish_reason == "stop"


async def test_malformed_call_is_text_and_warning() -> None:
    inner = Scripted(['<tool_call>{"name": "get_weather", "arguments": 3}</tool_call>'])
    response = await FeatureAdapter(inner).complete(_request(tools=[WEATHER]))
    assert response.tool_calls == []
    assert response.content.startswith("<tool_call>")
    assert any("malformed tool call" in w for w in response.warnings)


async def test_tool_choice_none_sends_no_catalogue_and_parses_nothing() -> None:
    inner = Scripted(['<tool_call>{"name": "get_weather"}</tool_call>'])
    response = await FeatureAdapter(inner).complete(_request(tools=[WEATHER], tool_choice=ToolChoice(mode="none")))
    system = inner.requests[0].messages[1].text
    assert "Do not call any tool" in system and "## get_weather" not in system
    assert response.tool_calls == [] and response.finish_reason == "stop"


async def test_required_call_retries_once_then_succeeds_without_leaking_first_answer() -> None:
    inner = Scripted(
        ["I think it is sunny."],
        ["Calling now. ", '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'],
    )
    request = _request(tools=[WEATHER, TIME], tool_choice=ToolChoice(mode="required"))
    response = await FeatureAdapter(inner).complete(request)
    assert "MUST call at least one tool" in inner.requests[0].messages[1].text
    assert response.content == "Calling now."
    assert [c.name for c in response.tool_calls] == ["get_weather"]
    assert response.usage == Usage(input_tokens=20, output_tokens=10)  # both attempts are counted
    retry = inner.requests[1].messages
    assert retry[-2].role == "assistant" and retry[-2].text == "I think it is sunny."
    assert retry[-1].role == "user" and "must call at least one tool" in retry[-1].text
    assert any("asked once more" in w for w in response.warnings)


async def test_required_call_fails_after_retry() -> None:
    inner = Scripted(["No."], ["Still no."])
    with pytest.raises(GuardrailError, match=r"tool_choice requires a tool call.*after one corrective retry") as info:
        await FeatureAdapter(inner).complete(_request(tools=[WEATHER], tool_choice=ToolChoice(mode="required")))
    assert info.value.param == "tool_choice" and info.value.status == 422
    assert len(inner.requests) == 2 and inner.closed == 2


async def test_named_tool_enforced_wrong_tool_is_rejected_without_retry() -> None:
    inner = Scripted(['<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'])
    choice = ToolChoice(mode="tool", name="get_time")
    with pytest.raises(GuardrailError, match=r"a call to 'get_time'.*no tool named 'get_weather'"):
        await FeatureAdapter(inner, retry=False).complete(_request(tools=[WEATHER, TIME], tool_choice=choice))
    assert len(inner.requests) == 1
    catalogue = inner.requests[0].messages[1].text
    assert "## get_time" in catalogue and "## get_weather" not in catalogue


async def test_named_tool_success() -> None:
    inner = Scripted(['<tool_call>{"name": "get_time"}</tool_call>'])
    choice = ToolChoice(mode="tool", name="get_time")
    response = await FeatureAdapter(inner).complete(_request(tools=[WEATHER, TIME], tool_choice=choice))
    assert [c.name for c in response.tool_calls] == ["get_time"] and response.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([], ToolChoice(mode="required"), "needs at least one tool"),
        ([WEATHER], ToolChoice(mode="tool", name="get_time"), "not among the tools"),
    ],
)
async def test_bad_tool_choice_is_invalid_request(tools: list[ToolSpec], choice: ToolChoice, message: str) -> None:
    inner = Scripted(["x"])
    stream = FeatureAdapter(inner).stream(_request(tools=tools, tool_choice=choice))
    with pytest.raises(InvalidRequest, match=message):
        await stream.__anext__()
    assert inner.requests == []


# --------------------------------------------------------------------------------------------- response_format


async def test_json_schema_from_fenced_answer() -> None:
    inner = Scripted(["Here:\n```json\n", '{"age": ', "42}\n```"])
    events = await _events(FeatureAdapter(inner), _request(response_format=PERSON))
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ['{"age":42}']
    seen = inner.requests[0]
    assert seen.response_format is None
    assert seen.messages[1].role == "system" and "Answer only with JSON" in seen.messages[1].text


async def test_json_object_success_and_native_json_mode_passes_through() -> None:
    inner = Scripted(['{"ok": true}'])
    response = await FeatureAdapter(inner).complete(_request(response_format=ResponseFormat(type="json_object")))
    assert response.content == '{"ok":true}'
    native = Scripted(["not even json"], caps=Capabilities(json_mode=True))
    request = _request(response_format=PERSON)
    response = await FeatureAdapter(native).complete(request)
    assert native.requests == [request] and response.content == "not even json"


async def test_json_failure_after_retry() -> None:
    inner = Scripted(['{"age": "old"}'], ["I refuse."])
    with pytest.raises(GuardrailError) as info:
        await FeatureAdapter(inner).complete(_request(response_format=PERSON))
    assert info.value.message == (
        "the model's answer is not valid JSON for the requested schema: no JSON object was found in the answer "
        "(also after one corrective retry)"
    )
    assert "Answer again with only the JSON" in inner.requests[1].messages[-1].text


async def test_json_retry_recovers() -> None:
    inner = Scripted(['{"age": "old"}'], ['{"age": 7}'])
    response = await FeatureAdapter(inner).complete(_request(response_format=PERSON))
    assert response.content == '{"age":7}'
    assert inner.requests[1].messages[-2].text == '{"age": "old"}'


async def test_invalid_schema_is_rejected_before_the_model_runs() -> None:
    inner = Scripted(["x"])
    bad = ResponseFormat(type="json_schema", json_schema={"type": 12})
    with pytest.raises(InvalidRequest, match="not a valid JSON schema"):
        await FeatureAdapter(inner).complete(_request(response_format=bad))
    assert inner.requests == []


# --------------------------------------------------------------------------------------------- parameters


async def test_unsupported_params_dropped_with_warnings() -> None:
    inner = Scripted(["ok"], caps=Capabilities(max_tokens=True))
    response = await FeatureAdapter(inner).complete(_request(temperature=0.2, top_p=0.9, max_tokens=50))
    seen = inner.requests[0]
    assert (seen.temperature, seen.top_p, seen.max_tokens) == (None, None, 50)
    assert response.warnings == [
        "inner note",
        "temperature is not supported by scripted and was ignored",
        "top_p is not supported by scripted and was ignored",
    ]


async def test_strict_rejects_unsupported_params() -> None:
    inner = Scripted(["ok"])
    with pytest.raises(InvalidRequest, match="temperature is not supported by scripted") as info:
        await FeatureAdapter(inner, strict=True).complete(_request(temperature=0.2))
    assert info.value.param == "temperature"
    with pytest.raises(InvalidRequest, match="top_p"):
        await FeatureAdapter(inner).complete(_request(top_p=0.5, extra={"strict": True}))
    assert inner.requests == []


async def test_supported_params_pass_through() -> None:
    caps = Capabilities(temperature=True, top_p=True, stop=True)
    inner = Scripted(["a STOP b"], caps=caps)
    request = _request(temperature=0.3, top_p=0.5, stop=["STOP"])
    response = await FeatureAdapter(inner).complete(request)
    assert inner.requests == [request] and response.content == "a STOP b"


async def test_images_removed_with_warning_or_rejected() -> None:
    image = ImagePart(data=b"\x89PNG", media_type="image/png")
    messages = [
        Message(role="user", content=[TextPart(text="What is this?"), image]),
        Message(role="user", content=[image]),
    ]
    inner = Scripted(["a cat"])
    response = await FeatureAdapter(inner).complete(_request(messages=messages))
    seen = inner.requests[0].messages
    assert all(not m.images for m in seen)
    assert seen[0].text == "What is this?" and "image omitted" in seen[1].text
    assert "images are not supported by scripted; 2 image(s) were removed" in response.warnings
    with pytest.raises(InvalidRequest, match="images are not supported"):
        await FeatureAdapter(Scripted(["x"]), strict=True).complete(_request(messages=messages))
    vision = Scripted(["a cat"], caps=Capabilities(images=True))
    request = _request(messages=messages)
    await FeatureAdapter(vision).complete(request)
    assert vision.requests == [request]


# --------------------------------------------------------------------------------------------- stop emulation


async def test_stop_is_emulated_across_deltas() -> None:
    inner = Scripted(["one two th", "ree END", "ING four"])
    events = await _events(FeatureAdapter(inner), _request(stop=["END", "three END"]))
    assert inner.requests[0].stop == []
    texts = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert texts == "one two "
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.session_id == "s1"
    assert any(isinstance(e, UsageEvent) for e in events)  # the inner stream was drained for usage


async def test_stop_before_a_tool_call_and_other_events_pass() -> None:
    inner = Scripted([ReasoningDelta("hmm"), "Answer.\n##", '<tool_call>{"name": "get_time"}</tool_call>'])
    response = await FeatureAdapter(inner).complete(_request(tools=[TIME], stop=["##"]))
    assert response.content == "Answer.\n" and response.tool_calls == []
    assert response.reasoning == "hmm" and response.finish_reason == "stop"


def test_stop_cutter_split_invariance() -> None:
    text = "abcab abd xx abdx"
    cases = {("abd",): "abcab ", ("x", "b a"): "abca", ("zz",): text, ("", "dx"): "abcab abd xx ab"}
    for stops, expected in cases.items():
        for size in range(1, len(text) + 1):
            cutter = StopCutter(list(stops))
            out = "".join(cutter.feed(text[i : i + size]) for i in range(0, len(text), size)) + cutter.close()
            assert out == expected, (stops, size)


# --------------------------------------------------------------------------------------------- lifecycle


async def test_early_close_closes_the_inner_stream() -> None:
    inner = Scripted(["a", "b", "c"])
    stream = FeatureAdapter(inner).stream(_request(tools=[TIME]))
    assert await stream.__anext__() == TextDelta("a")
    await stream.aclose()  # type: ignore[attr-defined]
    assert inner.closed == 1


async def test_combined_tools_and_json_tool_call_wins() -> None:
    inner = Scripted(['<tool_call>{"name": "get_time"}</tool_call>'])
    response = await FeatureAdapter(inner).complete(_request(tools=[TIME], response_format=PERSON))
    system = inner.requests[0].messages[1].text
    assert "## get_time" in system and "Answer only with JSON" in system
    assert [c.name for c in response.tool_calls] == ["get_time"] and response.content == ""
    assert json.loads(inner.requests[0].model_dump_json())["tools"] == []


async def _aiter(events: list[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event
