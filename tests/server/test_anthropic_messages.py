"""Anthropic Messages front door, with the official anthropic SDK as the client, plus what Claude Code sends."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx2
import pytest
from server_helpers import Served

from llm_runners.errors import AuthenticationError, UpstreamError
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ToolCall, Usage

Serve = Callable[..., Served]
TRANSCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "claude" / "request.json"


def test_message_with_system_blocks_image_and_stop_sequences(serve: Serve) -> None:
    p = ScriptedProvider([Reply(text="A cat.", usage=Usage(input_tokens=9, output_tokens=2, cached_tokens=4))])
    s = serve(p)
    client = anthropic.Anthropic(base_url=s.url, api_key="x")
    png = b"\x89PNG\r\n\x1a\nimg"
    out = client.messages.create(
        model="scripted",
        max_tokens=100,
        system=[{"type": "text", "text": "You describe images.", "cache_control": {"type": "ephemeral"}}],
        stop_sequences=["STOP"],
        extra_body={"temperature": 0.2},
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode()},
                    },
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )
    assert out.content[0].type == "text" and out.content[0].text == "A cat."
    assert out.stop_reason == "end_turn"
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.cache_read_input_tokens) == (5, 2, 4)
    req = p.last_request
    assert req.system == "You describe images."
    assert req.stop == ["STOP"] and req.max_tokens == 100 and req.temperature == 0.2
    assert req.messages[-1].images[0].data == png


def test_streaming_text(serve: Serve) -> None:
    s = serve(ScriptedProvider([Reply(text="streamed reply here", usage=Usage(input_tokens=3, output_tokens=4))]))
    client = anthropic.Anthropic(base_url=s.url, api_key="x")
    with client.messages.stream(model="scripted", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as st:
        deltas = list(st.text_stream)
        final = st.get_final_message()
    assert "".join(deltas) == "streamed reply here" and len(deltas) == 3
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4 and final.usage.input_tokens == 3


def test_tool_use_round_trip_streaming(serve: Serve) -> None:
    call = ToolCall(id="toolu_1", name="lookup", arguments='{"q": "llm"}')
    p = ScriptedProvider([Reply(text="Looking up.", tool_calls=[call]), Reply(text="Found it.")])
    s = serve(p)
    client = anthropic.Anthropic(base_url=s.url, api_key="x")
    tools = [
        {
            "name": "lookup",
            "description": "search",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    messages: list = [{"role": "user", "content": "find llm"}]
    with client.messages.stream(
        model="scripted", max_tokens=50, tools=tools, messages=messages, tool_choice={"type": "any"}
    ) as st:
        first = st.get_final_message()
    assert first.stop_reason == "tool_use"
    blocks = [b.model_dump() for b in first.content]
    assert blocks[0] == {"type": "text", "text": "Looking up.", "citations": None}
    assert blocks[1]["type"] == "tool_use" and blocks[1]["input"] == {"q": "llm"} and blocks[1]["id"] == "toolu_1"
    req1 = p.requests[0]
    assert req1.tools[0].name == "lookup" and req1.tool_choice is not None and req1.tool_choice.mode == "required"

    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
                {"type": "text", "text": "and?"},
            ],
        }
    )
    second = client.messages.create(model="scripted", max_tokens=50, tools=tools, messages=messages)
    assert second.content[0].type == "text" and second.content[0].text == "Found it."
    req2 = p.requests[1]
    assert [m.role for m in req2.messages] == ["user", "assistant", "tool", "user"]
    assert req2.messages[1].tool_calls[0].name == "lookup"
    assert json.loads(req2.messages[1].tool_calls[0].arguments) == {"q": "llm"}
    assert req2.messages[2].tool_call_id == "toolu_1" and req2.messages[2].text == "42"
    assert req2.messages[3].text == "and?"


def test_count_tokens_estimate_grows_with_the_prompt(serve: Serve) -> None:
    s = serve(ScriptedProvider())
    client = anthropic.Anthropic(base_url=s.url, api_key="x")
    small = client.messages.count_tokens(model="scripted", messages=[{"role": "user", "content": "hi"}])
    big = client.messages.count_tokens(
        model="scripted", system="x" * 4000, messages=[{"role": "user", "content": "hi"}]
    )
    assert small.input_tokens >= 1
    assert big.input_tokens - small.input_tokens == 1000 + 4  # 4000 chars / 4, plus one more message framing


def test_error_envelopes_before_and_after_streaming(serve: Serve) -> None:
    p = ScriptedProvider(
        [
            Reply(error=AuthenticationError("not logged in")),
            Reply(text="a b c", error=UpstreamError("CLI crashed"), error_after=2),
        ]
    )
    s = serve(p)
    client = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model="scripted", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.body == {"type": "error", "error": {"type": "authentication_error", "message": "not logged in"}}
    got: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as info2,
        client.messages.stream(model="scripted", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as st,
    ):
        got.extend(st.text_stream)
    assert "".join(got) == "a b "
    assert "CLI crashed" in str(info2.value)


def test_what_claude_code_sends_is_accepted(serve: Serve) -> None:
    """The real request Claude Code made (role:system inside messages, billing block, thinking, metadata)."""
    p = ScriptedProvider(["pong"])
    s = serve(p)
    captured = json.loads(TRANSCRIPT.read_text())
    body = next(
        r["body"]
        for r in captured
        if r["method"] == "POST" and any(m["role"] == "system" for m in r["body"]["messages"])
    )
    body["tools"] = [t for t in body["tools"] if isinstance(t, dict)]
    headers = {"x-api-key": "dummy", "anthropic-version": "2023-06-01", "X-Claude-Code-Session-Id": "abc"}
    with httpx2.Client(base_url=s.url, timeout=10) as http:
        assert http.head("/").status_code == 200
        with http.stream("POST", "/v1/messages?beta=true", json=body, headers=headers) as r:
            assert r.status_code == 200
            events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events and "message_delta" in events
    req = p.last_request
    session = json.loads(body["metadata"]["user_id"])["session_id"]
    assert req.conversation == f"claude-code:{session}"
    assert not any("x-anthropic-billing-header" in m.text for m in req.messages)
    assert req.messages[0].role == "system" and "Claude agent" in req.messages[0].text
    assert any(m.role == "system" and "Available agent types" in m.text for m in req.messages[1:])
    assert req.extra["thinking"] == {"type": "adaptive"}
    assert [t.name for t in req.tools] == ["Agent"]


@pytest.mark.parametrize("strict", [False, True])
def test_max_tokens_the_format_requires_is_dropped_without_a_warning(serve: Serve, strict: bool) -> None:
    from llm_runners.testing.scripted import FULL_CAPABILITIES

    caps = FULL_CAPABILITIES.model_copy(update={"max_tokens": False, "temperature": False})
    provider = ScriptedProvider(["fine"], capabilities=caps)
    s = serve(provider)
    s.router.providers["scripted"].inner.strict = strict  # type: ignore[attr-defined]  # the feature adapter
    client = anthropic.Anthropic(base_url=s.url, api_key="unused", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="scripted", max_tokens=512, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().content[0].text == "fine"  # type: ignore[union-attr]
    assert "x-llm-runners-warnings" not in raw.headers
    assert provider.requests[-1].max_tokens is None  # dropped: the provider cannot honour it
    if not strict:  # what the caller chose is still warned about
        raw = client.messages.with_raw_response.create(
            model="scripted",
            max_tokens=512,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"temperature": 0.2},
        )
        assert raw.headers["x-llm-runners-warnings"] == "temperature is not supported by scripted and was ignored"
    # the OpenAI formats carry max_tokens only when the caller sets it: there it is the caller's choice
    chat = httpx2.post(
        s.v1 + "/chat/completions",
        json={"model": "scripted", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    if strict:
        assert chat.status_code == 400 and "max_tokens" in chat.text
    else:
        assert chat.headers["x-llm-runners-warnings"] == "max_tokens is not supported by scripted and was ignored"
