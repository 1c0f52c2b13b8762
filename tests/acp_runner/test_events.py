"""UpdateMapper on real ACP transcripts (tests/fixtures/acp: the pinned agents against the fake model API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import acp
import pytest
from acp.schema import PromptResponse, SessionNotification

from llm_runners.acp import DIALECTS, UpdateMapper
from llm_runners.acp.agent import request_error
from llm_runners.acp.runner import ModelChoice
from llm_runners.errors import AuthenticationError, UpstreamError
from llm_runners.types import AgentToolEvent, TextDelta, Usage, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "acp"


def messages(name: str) -> list[dict[str, Any]]:
    return [json.loads(line)["msg"] for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]


def session_new(name: str) -> dict[str, Any]:
    results = [m.get("result") for m in messages(name)]
    return next(r for r in results if isinstance(r, dict) and "sessionId" in r)


def first_turn(name: str) -> tuple[list[Any], dict[str, Any]]:
    """The session updates and the answer of the transcript's first session/prompt."""
    msgs = messages(name)
    prompt_id = next(m["id"] for m in msgs if m.get("method") == "session/prompt")
    start = next(i for i, m in enumerate(msgs) if m.get("id") == prompt_id and "method" in m)
    updates, answer = [], None
    for m in msgs[start + 1 :]:
        if m.get("method") == "session/update":
            updates.append(SessionNotification.model_validate(m["params"]).update)
        elif m.get("id") == prompt_id and "method" not in m:
            answer = m
            break
    assert answer is not None
    return updates, answer


def replay(name: str, dialect: str) -> tuple[list[Any], Any]:
    updates, answer = first_turn(name)
    mapper = UpdateMapper(dialect, DIALECTS[dialect].status_text)
    events = [e for u in updates for e in mapper.feed(u)]
    last, finish = mapper.finish(PromptResponse.model_validate(answer["result"]))
    return events + last, finish


@pytest.mark.parametrize(
    ("name", "usage"),
    [
        ("opencode", Usage(input_tokens=11, output_tokens=3)),
        ("kilo", Usage(input_tokens=11, output_tokens=3)),
        ("copilot", Usage(input_tokens=11, output_tokens=3)),
        ("qwen", Usage(input_tokens=11, output_tokens=3)),  # from the empty chunk's _meta
        ("gemini", Usage(input_tokens=5256, output_tokens=3)),  # from the result's _meta.quota
    ],
)
def test_answer_text_usage_and_finish(name: str, usage: Usage) -> None:
    events, finish = replay(name, name)
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(texts) in ("pong from fake", "Hello world")
    assert len(texts) == 3  # one delta per upstream chunk
    assert [e.usage for e in events if isinstance(e, UsageEvent)] == [usage]
    assert finish == "stop"


def test_copilot_401_streamed_as_text_is_an_authentication_error() -> None:
    updates, answer = first_turn("copilot-err401")
    mapper = UpdateMapper("copilot", DIALECTS["copilot"].status_text)
    assert [e for u in updates for e in mapper.feed(u)] == []  # nothing reaches the caller as an answer
    with pytest.raises(AuthenticationError, match="401"):
        mapper.finish(PromptResponse.model_validate(answer["result"]))


def test_gemini_401_json_rpc_error_is_an_authentication_error() -> None:
    error = next(m["error"] for m in messages("gemini-err401") if "error" in m)
    exc = acp.RequestError(error["code"], error["message"])
    classified = request_error("gemini", exc, "session/prompt", None, DIALECTS["gemini"].classify_error)
    assert isinstance(classified, AuthenticationError)
    assert "API key not valid" in classified.message


def test_cline_session_new_needs_an_account_login() -> None:
    error = next(m["error"] for m in messages("cline") if "error" in m)
    classified = request_error("cline", acp.RequestError(error["code"], error["message"]), "session/new", None)
    assert isinstance(classified, AuthenticationError)


@pytest.mark.parametrize(
    ("name", "asked", "value", "config_id"),
    [
        ("opencode", "fake-model", "fake/fake-model", "model"),
        ("kilo", "fake/fake-model", "fake/fake-model", "model"),
        ("qwen", "fake-model", "$runtime|openai|fake-model(openai)", "model"),
        ("gemini", "gemini-2.5-pro", "gemini-2.5-pro", None),
    ],
)
def test_model_choice_from_session_new(name: str, asked: str, value: str, config_id: str | None) -> None:
    choice = ModelChoice.of(session_new(name))
    assert choice is not None and choice.config_id == config_id
    assert choice.resolve(asked) == value
    assert choice.resolve("no-such-model") is None


def test_copilot_offers_no_model_choice() -> None:
    assert ModelChoice.of(session_new("copilot")) is None


def tool_events(name: str, dialect: str) -> tuple[list[AgentToolEvent], list[TextDelta]]:
    updates, _ = first_turn(name)
    mapper = UpdateMapper(dialect, DIALECTS[dialect].status_text)
    events = [e for u in updates for e in mapper.feed(u)]
    return [e for e in events if isinstance(e, AgentToolEvent)], [e for e in events if isinstance(e, TextDelta)]


@pytest.mark.parametrize("name", ["opencode", "kilo", "qwen", "copilot", "gemini"])
def test_refused_tool_calls_show_as_failed_agent_tool_events(name: str) -> None:
    """Tools off: the fake model called the shell, read, write and read tools; each call shows, and ends failed."""
    tools, texts = tool_events(f"{name}-tools-off", name)
    if name == "gemini":  # with tools.core empty the CLI drops calls of tools it never declared, silently
        assert tools == []
    else:
        last = {e.id: e for e in tools}
        assert len(last) == 4 and all(e.status == "failed" for e in last.values()), tools
    assert "".join(t.text for t in texts) == "done"  # the tool calls are no part of the answer


@pytest.mark.parametrize("name", ["gemini", "copilot"])
def test_allowed_tool_calls_show_their_kind_title_and_completion(name: str) -> None:
    tools, _ = tool_events(f"{name}-tools-on", name)
    last = {e.id: e for e in tools}
    completed = {e.kind for e in last.values() if e.status == "completed"}
    assert completed == {"edit", "execute", "read"}, tools  # the shell, the write and the reads
    assert all(e.title for e in last.values() if e.status == "completed")


def test_qwen_answers_a_turn_cancelled_in_its_retry_loop_with_an_error() -> None:
    """The runner cancelled the turn when Qwen's log showed its retry loop; Qwen then answers the prompt with a
    JSON-RPC error, which the runner's cancel counts as the turn stopped (no kill)."""
    msgs = messages("qwen-err500")
    cancel = next(i for i, m in enumerate(msgs) if m.get("method") == "session/cancel")
    prompt_id = next(m["id"] for m in msgs if m.get("method") == "session/prompt")
    answer = next(m for m in msgs[cancel:] if m.get("id") == prompt_id and "method" not in m)
    exc = acp.RequestError(answer["error"]["code"], answer["error"]["message"], answer["error"].get("data"))
    classified = request_error("qwen", exc, "session/prompt", None, DIALECTS["qwen"].classify_error)
    assert type(classified) is UpstreamError and "Request was aborted" in (classified.detail or "")
