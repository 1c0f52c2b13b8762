"""Wire-format details real clients rely on, checked against the official SDKs' types and Codex's own error
classification: what we refuse clearly, what we warn about, statuses and error codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest
from server_helpers import Served

from llm_runners.errors import GuardrailError, InvalidRequest, LLMError, Overloaded, RateLimited, UpstreamError
from llm_runners.testing.scripted import FULL_CAPABILITIES, Reply, ScriptedProvider
from llm_runners.types import ChatRequest, Message
from llm_runners.wrappers.features import FeatureAdapter

Serve = Callable[..., Served]
USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        (
            {
                "messages": [
                    *USER,
                    {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                ]
            },
            "messages[1].function_call",
        ),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ],
)
def test_what_we_cannot_honour_in_chat_is_a_clear_400(serve: Serve, body: dict[str, object], param: str) -> None:
    s = serve(ScriptedProvider(["never"]))
    client = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{"model": "scripted", "messages": USER, **body})  # type: ignore[call-overload]
    assert caught.value.param == param
    assert s.scripted().requests == []


def test_text_only_modalities_are_accepted(serve: Serve) -> None:
    s = serve(ScriptedProvider(["ok"]))
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    out = client.chat.completions.create(model="scripted", messages=USER, modalities=["text"])  # type: ignore[arg-type]
    assert out.choices[0].message.content == "ok"


def test_sampling_params_no_provider_honours_are_warned_about(serve: Serve) -> None:
    s = serve(ScriptedProvider(["ok"]))
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    raw = client.chat.completions.with_raw_response.create(
        model="scripted",
        messages=USER,  # type: ignore[arg-type]
        seed=7,
        logprobs=True,
        top_logprobs=2,
        frequency_penalty=0,  # neutral values ask for nothing
        presence_penalty=0.5,
        web_search_options={},  # a search the provider cannot do is said, not silently skipped
    )
    warned = raw.headers["x-llm-runners-warnings"]
    for name in ("seed", "logprobs", "top_logprobs", "presence_penalty", "web_search_options"):
        assert f"{name} is not supported" in warned
    assert "frequency_penalty" not in warned
    assert raw.parse().choices[0].message.content == "ok"
    assert s.scripted().last_request.extra["seed"] == 7  # still there for a provider that knows it


def test_top_k_is_warned_about_and_strict_mode_rejects_such_params(serve: Serve) -> None:
    s = serve(ScriptedProvider(["ok"]))
    client = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="scripted",
        max_tokens=5,
        messages=USER,  # type: ignore[arg-type]
        extra_body={"top_k": 5},
    )
    assert "top_k is not supported" in raw.headers["x-llm-runners-warnings"]
    strict = FeatureAdapter(ScriptedProvider(["ok"]), strict=True)
    with pytest.raises(InvalidRequest) as caught:
        anyio.run(strict.complete, ChatRequest(messages=[Message(role="user", content="x")], extra={"top_k": 5}))
    assert caught.value.param == "top_k"


def test_unknown_stored_response_is_a_404(serve: Serve) -> None:
    s = serve(ScriptedProvider(["ok"]))
    client = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (GuardrailError("no tool call", code="tool_call_missing"), "invalid_prompt"),
        (RateLimited("busy, try again in 3s", retry_after=3), "rate_limit_exceeded"),
        (Overloaded("overloaded"), "server_is_overloaded"),
        (UpstreamError("CLI crashed"), "server_error"),
    ],
)
def test_response_failed_carries_a_code_from_the_official_list(serve: Serve, error: LLMError, code: str) -> None:
    """Codex decides from ``response.failed``'s ``error.code`` whether to retry: ``invalid_prompt`` stops it,
    ``server_is_overloaded`` / ``rate_limit_exceeded`` back off, anything else is retried as a transient fault."""
    s = serve(ScriptedProvider([Reply(text="a b", error=error, error_after=1)]))
    client = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0)
    events = list(client.responses.create(model="scripted", input="x", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed" and failed.response.error is not None
    assert failed.response.error.code == code
    assert failed.response.error.message == error.message
    assert events[-2].code == (error.code or error.kind)  # the precise kind stays on the error event


def test_tool_message_with_text_parts_and_named_messages(serve: Serve) -> None:
    s = serve(ScriptedProvider(["ok"]))
    client = openai.OpenAI(base_url=s.v1, api_key="x")
    client.chat.completions.create(
        model="scripted",
        messages=[
            {"role": "user", "content": "weather?", "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"}]},
        ],
    )
    user, assistant, tool = s.scripted().last_request.messages
    assert user.name == "ann" and assistant.tool_calls[0].name == "w" and assistant.content == []
    assert tool.tool_call_id == "c1" and tool.text == "sunny"


def test_raw_404_and_405_bodies(serve: Serve) -> None:
    s = serve(ScriptedProvider())
    r = httpx2.get(s.url + "/v1/messages/batches")
    assert r.status_code == 404 and json.loads(r.text)["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_reports_the_stop_sequence_that_ended_the_answer(serve: Serve, stream: bool) -> None:
    """A provider without native stop sequences gets them emulated; the answer says which one matched, as the
    Messages API does (``stop_reason: stop_sequence``)."""
    caps = FULL_CAPABILITIES.model_copy(update={"stop": False})
    s = serve(ScriptedProvider(["one two END three", "no stop here"], capabilities=caps))
    client = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
    kwargs: dict[str, Any] = {"model": "scripted", "max_tokens": 50, "messages": USER, "stop_sequences": ["END", "X"]}
    if stream:
        with client.messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    assert message.content[0].type == "text" and message.content[0].text == "one two "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
    plain = client.messages.create(**kwargs)
    assert (plain.stop_reason, plain.stop_sequence) == ("end_turn", None)
