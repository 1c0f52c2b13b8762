"""Chat Completions front door, with the official openai SDK (sync, async, streaming) as the client."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import openai
import pytest
from server_helpers import Served

from llm_runners.errors import RateLimited
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ImagePart, ToolCall, Usage

Serve = Callable[..., Served]
HI: list = [{"role": "user", "content": "x"}]


def test_sync_completion_carries_the_request_and_usage(serve: Serve) -> None:
    p = ScriptedProvider([Reply(text="Hello there", usage=Usage(input_tokens=7, output_tokens=2))])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    out = client.chat.completions.create(
        model="scripted:fancy",
        messages=[
            {"role": "developer", "content": "be terse"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        temperature=0.5,
        top_p=0.9,
        max_completion_tokens=33,
        stop=["END"],
        seed=4,
        metadata={"conversation_id": "conv-1"},
    )
    assert out.choices[0].message.content == "Hello there"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == "scripted:fancy"
    assert out.usage is not None and (out.usage.prompt_tokens, out.usage.completion_tokens) == (7, 2)
    req = p.last_request
    assert [m.role for m in req.messages] == ["system", "user"]
    assert req.system == "be terse"
    assert req.model == "fancy"
    assert (req.temperature, req.top_p, req.max_tokens, req.stop) == (0.5, 0.9, 33, ["END"])
    assert req.extra == {"seed": 4}
    assert req.conversation == "conv-1"


def test_image_data_uri_reaches_the_provider(serve: Serve) -> None:
    p = ScriptedProvider(["seen"])
    s = serve(p)
    png = b"\x89PNG\r\n\x1a\nfake"
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    client.chat.completions.create(
        model="scripted",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": uri}}],
            }
        ],
    )
    images = p.last_request.messages[0].images
    assert len(images) == 1 and isinstance(images[0], ImagePart)
    assert images[0].data == png and images[0].media_type == "image/png"


@pytest.mark.anyio
async def test_async_streaming_chunks_usage_and_done(serve: Serve) -> None:
    p = ScriptedProvider([Reply(text="one two three", usage=Usage(input_tokens=5, output_tokens=3))])
    s = serve(p)
    client = openai.AsyncOpenAI(base_url=s.v1, api_key="x")
    stream = await client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 8
    await client.close()


def test_streaming_without_include_usage_has_no_usage_chunk(serve: Serve) -> None:
    s = serve(ScriptedProvider(["a b"]))
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    chunks = list(client.chat.completions.create(model="scripted", messages=HI, stream=True))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_call_round_trip(serve: Serve) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    p = ScriptedProvider([Reply(tool_calls=[call]), Reply(text="It is sunny in Paris.")])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    messages: list = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="scripted", messages=messages, tools=tools, tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    tc = choice.message.tool_calls[0]
    assert (tc.id, tc.function.name, json.loads(tc.function.arguments)) == ("call_1", "get_weather", {"city": "Paris"})
    req1 = p.requests[0]
    assert [t.name for t in req1.tools] == ["get_weather"]
    assert req1.tools[0].parameters["required"] == ["city"]
    assert req1.tool_choice is not None and req1.tool_choice.mode == "auto"

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'})
    second = client.chat.completions.create(model="scripted", messages=messages, tools=tools)
    assert second.choices[0].message.content == "It is sunny in Paris."
    req2 = p.requests[1]
    assert [m.role for m in req2.messages] == ["user", "assistant", "tool"]
    assert req2.messages[1].tool_calls == [call]
    assert req2.messages[2].tool_call_id == "call_1" and req2.messages[2].text == '{"temp": 21}'


def test_streamed_tool_call_deltas(serve: Serve) -> None:
    calls = [ToolCall(id="c1", name="a", arguments="{}"), ToolCall(id="c2", name="b", arguments='{"x":1}')]
    s = serve(ScriptedProvider([Reply(text="let me check", tool_calls=calls)]))
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    with client.chat.completions.stream(model="scripted", messages=[{"role": "user", "content": "go"}]) as stream:
        final = stream.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == "let me check"
    assert msg.tool_calls is not None
    assert [(t.id, t.function.name, t.function.arguments) for t in msg.tool_calls] == [
        ("c1", "a", "{}"),
        ("c2", "b", '{"x":1}'),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_json_schema_response_format_is_carried(serve: Serve) -> None:
    p = ScriptedProvider(['{"name": "Ada", "age": 36}'])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    out = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "who?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    assert json.loads(out.choices[0].message.content or "") == {"name": "Ada", "age": 36}
    fmt = p.last_request.response_format
    assert fmt is not None and fmt.type == "json_schema" and fmt.name == "person" and fmt.strict
    assert fmt.json_schema == schema


def test_warnings_surface_in_header_and_final_chunk(serve: Serve) -> None:
    s = serve(ScriptedProvider([Reply(text="ok", warnings=["temperature ignored"])]))
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    raw = client.chat.completions.with_raw_response.create(model="scripted", messages=HI)
    assert raw.headers["x-llm-runners-warnings"] == "temperature ignored"
    chunks = list(client.chat.completions.create(model="scripted", messages=HI, stream=True))
    last = chunks[-1].model_dump()
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["warnings"] == ["temperature ignored"]


def test_rate_limit_before_streaming_is_a_real_429(serve: Serve) -> None:
    p = ScriptedProvider([Reply(error=RateLimited("queue full", retry_after=3))])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="scripted", messages=HI, stream=True)
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.body is not None and info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]


def test_unknown_model_is_404_naming_what_exists(serve: Serve) -> None:
    s = serve(
        {"alpha": ScriptedProvider(name="alpha"), "beta": ScriptedProvider(name="beta")}, aliases={"fast": "alpha"}
    )
    client = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gamma:x", messages=HI)
    msg = str(info.value)
    assert "alpha" in msg and "beta" in msg and "fast" in msg
