"""Responses front door, with the openai SDK as the client: input items, tools, streaming, previous_response_id."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from server_helpers import Served

from llm_runners.config import Settings
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


def _strict(s: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.v1, api_key="x", _strict_response_validation=True, max_retries=0)


def _conversation(client: openai.OpenAI) -> tuple[str, str]:
    """Two stored turns; the second's input items are the first's input and output, then its own input."""
    first = client.responses.create(
        model="scripted",
        input=[
            {"role": "developer", "content": "be terse"},
            {"role": "user", "content": [{"type": "input_text", "text": "remember BANANA"}]},
        ],
    )
    second = client.responses.create(model="scripted", input="which word?", previous_response_id=first.id)
    return first.id, second.id


def test_input_items_list_and_paginate(serve: Serve) -> None:
    s = serve(ScriptedProvider(["Remembered.", "BANANA."]))
    client = _strict(s)
    first, second = _conversation(client)
    page = client.responses.input_items.list(second, order="asc")
    items = page.data
    assert [(i.type, getattr(i, "role", None)) for i in items] == [
        ("message", "developer"),
        ("message", "user"),
        ("message", "assistant"),  # the first response's output
        ("message", "user"),
    ]
    assert items[2] == client.responses.retrieve(first).output[0]
    assert items[3].content[0].text == "which word?"  # type: ignore[union-attr]
    assert page.has_more is False and len({i.id for i in items}) == 4
    # the default order is newest first; the SDK pages on with `after` = the last id of each page
    assert client.responses.input_items.list(second).data == items[::-1]
    paged = client.responses.input_items.list(second, limit=3)
    assert paged.data == items[::-1][:3] and paged.has_more is True
    assert list(paged) == items[::-1]  # auto-pagination: the second page is the one item after the third
    ids = [i.id for i in items]
    after = client.responses.input_items.list(second, order="asc", after=ids[0], limit=2)
    assert [i.id for i in after.data] == ids[1:3]
    before = client.responses.input_items.list(second, order="asc", limit=2, extra_query={"before": ids[3]})
    assert [i.id for i in before.data] == ids[1:3] and before.has_more is True
    assert [i.id for i in client.responses.input_items.list(first, order="asc")] == ids[:2]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.input_items.list(second, after="msg_unknown")
    assert bad.value.body["param"] == "after"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.responses.input_items.list(second, limit=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_unknown")


def test_input_items_of_tool_calls_and_images(serve: Serve) -> None:
    pixel = (
        "data:image/png;base64,"
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    )
    s = serve(ScriptedProvider(["3"]))
    client = _strict(s)
    created = client.responses.create(
        model="scripted",
        input=[
            {"role": "user", "content": [{"type": "input_image", "image_url": pixel, "detail": "low"}]},
            {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "3"},
        ],
    )
    items = client.responses.input_items.list(created.id, order="asc", include=["message.input_image.image_url"])
    image, call, output = items.data
    assert image.type == "message" and image.content[0].type == "input_image"  # type: ignore[union-attr]
    assert image.content[0].image_url == pixel  # type: ignore[union-attr]
    assert call.type == "function_call" and (call.call_id, call.arguments) == ("call_1", '{"a": 1}')
    assert output.type == "function_call_output" and (output.call_id, output.output) == ("call_1", "3")


def test_input_tokens_count(serve: Serve) -> None:
    s = serve(ScriptedProvider(["Remembered.", "BANANA."]))
    client = _strict(s)
    short = client.responses.input_tokens.count(model="scripted", input="hi")
    assert short.object == "response.input_tokens" and short.input_tokens > 0
    longer = client.responses.input_tokens.count(model="scripted", input="hi " * 400, instructions="be terse")
    assert longer.input_tokens > short.input_tokens + 200
    assert client.responses.input_tokens.count().input_tokens > 0  # everything is optional
    first, _ = _conversation(client)
    alone = client.responses.input_tokens.count(input="which word?").input_tokens
    chained = client.responses.input_tokens.count(input="which word?", previous_response_id=first).input_tokens
    assert chained > alone  # the stored history is counted
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.input_tokens.count(input="x", previous_response_id="resp_unknown")
    assert bad.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_delete_then_retrieve_is_404(serve: Serve) -> None:
    s = serve(ScriptedProvider(["one", "two"]))
    client = _strict(s)
    first, second = _conversation(client)
    raw = client.responses.with_raw_response.delete(first)
    assert raw.status_code == 200 and json.loads(raw.text) == {"id": first, "object": "response", "deleted": True}
    assert client.responses.delete(second) is None  # the SDK's type
    for gone in (first, second):
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.retrieve(gone)
        assert info.value.body["code"] == "not_found" and gone in info.value.message  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            client.responses.input_items.list(gone)
        with pytest.raises(openai.NotFoundError):
            client.responses.delete(gone)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="scripted", input="again?", previous_response_id=second)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.delete("resp_never_issued")
    body = unknown.value.body
    assert body["type"] == "invalid_request_error" and body["param"] == "response_id"  # type: ignore[index]


def test_cancel_is_refused_without_background_responses(serve: Serve) -> None:
    s = serve(ScriptedProvider(["done"]))
    client = _strict(s)
    created = client.responses.create(model="scripted", input="x")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.cancel(created.id)
    assert "background" in info.value.message and info.value.body["param"] == "response_id"  # type: ignore[index]
    assert client.responses.retrieve(created.id).status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_never_issued")


def test_background_is_answered_with_a_finished_response_and_a_warning(serve: Serve) -> None:
    s = serve(ScriptedProvider(["done"]))
    raw = _strict(s).responses.with_raw_response.create(model="scripted", input="x", background=True)
    assert raw.parse().status == "completed"
    assert "background=true is not supported" in raw.headers["x-llm-runners-warnings"]


def test_redis_store_lists_input_items_and_deletes_on_every_replica(serve: Serve, redis_server: Any) -> None:
    settings = Settings(state=redis_server.url)
    a = _strict(serve(ScriptedProvider(["Remembered.", "BANANA."]), settings=settings))
    b = _strict(serve(ScriptedProvider(), settings=settings))
    first, second = _conversation(a)
    assert (
        b.responses.input_items.list(second, order="asc").data == a.responses.input_items.list(second, order="asc").data
    )
    assert b.responses.input_tokens.count(previous_response_id=first).input_tokens > 0
    b.responses.delete(first)  # a still holds it in its LRU
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(first)
    with pytest.raises(openai.NotFoundError):
        a.responses.delete(first)
    a.responses.delete(second)
    for client in (a, b):
        with pytest.raises(openai.NotFoundError):
            client.responses.input_items.list(second)
