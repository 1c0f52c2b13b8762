"""Responses front door, with the openai SDK as the client: input items, tools, streaming, previous_response_id."""

from __future__ import annotations

import json
from collections.abc import Callable

import openai
import pytest
from server_helpers import Served

from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ToolCall, Usage

Serve = Callable[..., Served]


def test_string_input_with_instructions(serve: Serve) -> None:
    p = ScriptedProvider([Reply(text="Bonjour", usage=Usage(input_tokens=4, output_tokens=1))])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    r = client.responses.create(
        model="scripted", input="Say hello in French", instructions="Be brief.", max_output_tokens=20, temperature=0.1
    )
    assert r.output_text == "Bonjour" and r.status == "completed"
    assert r.usage is not None and r.usage.total_tokens == 5
    req = p.last_request
    assert [m.role for m in req.messages] == ["system", "user"]
    assert req.system == "Be brief." and req.max_tokens == 20 and req.temperature == 0.1


def test_previous_response_id_carries_history_and_conversation(serve: Serve) -> None:
    p = ScriptedProvider(["Remembered BANANA.", "You said BANANA."])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    first = client.responses.create(model="scripted", input="remember BANANA", instructions="sys")
    second = client.responses.create(model="scripted", input="what word?", previous_response_id=first.id)
    assert second.output_text == "You said BANANA."
    r1, r2 = p.requests
    assert r1.conversation is not None and r2.conversation == r1.conversation
    assert [(m.role, m.text) for m in r2.messages] == [
        ("user", "remember BANANA"),
        ("assistant", "Remembered BANANA."),
        ("user", "what word?"),
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="scripted", input="x", previous_response_id="resp_nope")
    assert "resp_nope" in str(info.value) and info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert client.responses.retrieve(second.id).output_text == "You said BANANA."


def test_function_call_round_trip_streaming(serve: Serve) -> None:
    call = ToolCall(id="call_9", name="add", arguments='{"a": 1, "b": 2}')
    p = ScriptedProvider([Reply(tool_calls=[call]), Reply(text="3")])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    tools = [
        {
            "type": "function",
            "name": "add",
            "description": "adds",
            "strict": False,
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
        },
        {"type": "web_search"},
    ]
    with client.responses.stream(model="scripted", input="1+2?", tools=tools) as st:  # type: ignore[arg-type]
        kinds = [e.type for e in st]
        first = st.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    fc = first.output[0]
    assert fc.type == "function_call" and fc.call_id == "call_9" and json.loads(fc.arguments) == {"a": 1, "b": 2}
    assert [t.name for t in p.requests[0].tools] == ["add"]

    follow = [
        {"type": "function_call", "call_id": "call_9", "name": "add", "arguments": fc.arguments},
        {"type": "function_call_output", "call_id": "call_9", "output": "3"},
    ]
    second = client.responses.create(
        model="scripted", input=[{"role": "user", "content": "1+2?"}, *follow], tools=tools
    )  # type: ignore[arg-type]
    assert second.output_text == "3"
    req = p.requests[1]
    assert [m.role for m in req.messages] == ["user", "assistant", "tool"]
    assert req.messages[1].tool_calls == [call.model_copy(update={"arguments": fc.arguments})]
    assert req.messages[2].tool_call_id == "call_9" and req.messages[2].text == "3"


def test_streamed_text_events_and_json_schema(serve: Serve) -> None:
    p = ScriptedProvider([Reply(text='{"ok": true}', chunks=['{"ok"', ": true}"])])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    stream = client.responses.create(
        model="scripted",
        input=[
            {"role": "developer", "content": "json only"},
            {"role": "user", "content": [{"type": "input_text", "text": "ok?"}]},
        ],
        text={"format": {"type": "json_schema", "name": "r", "schema": schema}},
        stream=True,
    )
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ['{"ok"', ": true}"]
    done = next(e for e in events if e.type == "response.completed")
    assert json.loads(done.response.output_text) == {"ok": True}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    fmt = p.last_request.response_format
    assert fmt is not None and fmt.type == "json_schema" and fmt.json_schema == schema
    assert p.last_request.system == "json only"


def test_strict_sdk_types_accept_create_retrieve_and_the_replayed_stream(serve: Serve) -> None:
    call = ToolCall(id="call_3", name="lookup", arguments='{"q": "x"}')
    usage = Usage(input_tokens=7, output_tokens=3, cached_tokens=2, cache_write_tokens=1)
    p = ScriptedProvider([Reply(text="Found it.", reasoning="thinking", tool_calls=[call], usage=usage)])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x", _strict_response_validation=True, max_retries=0)
    created = client.responses.create(model="scripted", input="find x")
    assert created.usage is not None and created.usage.input_tokens_details.cache_write_tokens == 1
    assert [o.type for o in created.output] == ["reasoning", "message", "function_call"]
    assert client.responses.retrieve(created.id) == created
    events = list(client.responses.retrieve(created.id, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.output_text.delta" in kinds and "response.function_call_arguments.done" in kinds
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert done == created.output  # the stored ids, not new ones
    assert events[-1].response == created  # type: ignore[union-attr]
    later = list(client.responses.retrieve(created.id, stream=True, starting_after=len(events) - 3))
    assert [e.sequence_number for e in later] == [len(events) - 2, len(events) - 1]
    with pytest.raises(openai.BadRequestError):
        client.responses.retrieve(created.id, stream=True, starting_after="soon")  # type: ignore[arg-type]


def test_input_is_optional(serve: Serve) -> None:
    p = ScriptedProvider(["ok"])
    s = serve(p)
    client = openai.OpenAI(base_url=s.v1, api_key="x", _strict_response_validation=True, max_retries=0)
    assert client.responses.create(model="scripted").output_text == "ok"
    assert [(m.role, m.text) for m in p.last_request.messages] == [("user", "")]
    client.responses.create(model="scripted", instructions="Say ok.")
    assert [(m.role, m.text) for m in p.last_request.messages] == [("system", "Say ok."), ("user", "")]


def test_models_retrieve_in_both_sdks(serve: Serve) -> None:
    import anthropic

    s = serve(ScriptedProvider())
    client = openai.OpenAI(base_url=s.v1, api_key="x", _strict_response_validation=True, max_retries=0)
    listed = client.models.list().data
    assert client.models.retrieve(listed[0].id) == listed[0]
    assert client.models.retrieve("any-name").owned_by == "scripted"  # routed to the default provider
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope:x")
    claude = anthropic.Anthropic(base_url=s.url, api_key="x", _strict_response_validation=True, max_retries=0)
    page = claude.models.list()
    assert claude.models.retrieve(page.data[0].id) == page.data[0]
