"""Copilot and Qwen dialects without the CLIs: the parsers on their real outputs (tests/fixtures/<cli>, copied from
shared/cli-transcripts), error classification, the retry watches on real lines, and the private homes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    RateLimited,
    SessionNotFound,
    UpstreamError,
)
from llm_runners.runners import REGISTRY
from llm_runners.runners.copilot import CopilotParser, RetryWatch, agent_file, classify_failure, prepare_cli_home
from llm_runners.runners.qwen import QwenParser, classify_api_error, login_settings
from llm_runners.runners.qwen import RetryWatch as QwenRetryWatch
from llm_runners.runners.qwen import prepare_cli_home as prepare_qwen_home
from llm_runners.types import Done, StreamEvent, TextDelta, Usage, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def feed_all(parser: CopilotParser | QwenParser, name: str) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for line in (FIXTURES / name).read_bytes().splitlines():
        events.extend(parser.feed(line))
    return events


# ------------------------------------------------------------------------------------------------ copilot


def test_copilot_json_output_streams_deltas_once_and_reads_the_usage_file(tmp_path: Path) -> None:
    usage_file = tmp_path / "usage.json"
    usage_file.write_text(
        json.dumps(
            {
                "modelMetrics": {
                    "fake-model": {
                        "usage": {"inputTokens": 3187, "outputTokens": 3, "cacheReadTokens": 5, "reasoningTokens": 1}
                    }
                }
            }
        )
    )
    parser = CopilotParser(model=None, resume=None, usage_file=usage_file)
    events = feed_all(parser, "copilot/json.stdout")
    assert events == [TextDelta("pong"), TextDelta(" from"), TextDelta(" fake")]  # assistant.message not repeated
    done = list(parser.finish(0, ""))
    assert done == [
        UsageEvent(Usage(input_tokens=3187, output_tokens=3, cached_tokens=5, reasoning_tokens=1)),
        Done(finish_reason="stop", model="fake-model", session_id="1f78351a-9a59-418f-b81c-d96faf14eac2"),
    ]
    assert not usage_file.exists()  # read once, then removed


def test_copilot_401_transcript_is_an_authentication_error(tmp_path: Path) -> None:
    parser = CopilotParser(model="fake-model", resume=None, usage_file=tmp_path / "absent.json")
    assert feed_all(parser, "copilot/err401.stdout") == []
    assert isinstance(parser.retrying, AuthenticationError) and parser.failing_since is not None
    with pytest.raises(AuthenticationError, match="Authentication failed with provider"):
        list(parser.finish(1, ""))


def test_copilot_message_without_deltas_is_the_answer(tmp_path: Path) -> None:
    """``--stream off`` (or a provider that does not stream): only assistant.message carries the text."""
    parser = CopilotParser(model=None, resume=None, usage_file=tmp_path / "u.json")
    lines = [
        {"type": "assistant.message", "data": {"messageId": "m1", "model": "fake-model", "content": "whole"}},
        {"type": "result", "sessionId": "s1", "exitCode": 0},
    ]
    events = [e for line in lines for e in parser.feed(json.dumps(line).encode())]
    assert events == [TextDelta("whole")]
    assert list(parser.finish(0, "")) == [Done(finish_reason="stop", model="fake-model", session_id="s1")]


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (401, "Incorrect API key provided: x", AuthenticationError),
        (429, "Rate limit reached. Please try again in 2s.", RateLimited),
        (500, "The server had an error", UpstreamError),
        (400, "This model's maximum context length is 128000 tokens.", ContextLengthExceeded),
        (404, "The model `x` does not exist", ModelNotFound),
        (None, "Failed to get response from the AI model; retried 5 times Last error: 500 boom", UpstreamError),
    ],
)
def test_copilot_failures_are_classified(status: int | None, message: str, error: type[LLMError]) -> None:
    assert type(classify_failure(status, message)) is error


def test_copilot_unknown_resume_id_is_session_not_found(tmp_path: Path) -> None:
    parser = CopilotParser(model=None, resume="gone", usage_file=tmp_path / "u.json")
    stderr = "Error: No session, task, or name matched 'gone'.\n\nTo resume by session or task ID: …"
    with pytest.raises(SessionNotFound):
        list(parser.finish(1, stderr))


def test_copilot_retry_watch_waits_for_the_deadline_but_not_for_a_final_error(tmp_path: Path) -> None:
    parser = CopilotParser(model=None, resume=None, usage_file=tmp_path / "u.json")
    watch = RetryWatch(parser, deadline=5.0)
    assert watch.check() is None
    parser.feed(b'{"type":"model.call_failure","data":{"statusCode":500,"errorMessage":"{\\"message\\":\\"boom\\"}"}}')
    assert watch.check() is None  # the CLI may still recover
    assert parser.failing_since is not None
    parser.failing_since -= 5.1
    stopped = watch.check()
    assert isinstance(stopped, UpstreamError) and "boom" in stopped.message and "run stopped" in stopped.message
    final = CopilotParser(model=None, resume=None, usage_file=tmp_path / "v.json")
    final.feed(b'{"type":"model.call_failure","data":{"statusCode":404,"errorMessage":"model does not exist"}}')
    assert final.failing_since is not None
    final.failing_since = time.monotonic() - 1.1
    assert isinstance(RetryWatch(final, deadline=5.0).check(), ModelNotFound)  # 1 s, not 5


def test_copilot_private_home_keeps_login_and_model_only(tmp_path: Path) -> None:
    user, home = tmp_path / "user", tmp_path / "home"
    user.mkdir()
    (user / "config.json").write_text("// managed\n{}")
    (user / "settings.json").write_text(json.dumps({"model": "m", "hooks": {"x": 1}, "logLevel": "all"}))
    (user / "mcp-config.json").write_text("{}")
    prepare_cli_home(home, user)
    prepare_cli_home(home, user)  # idempotent
    assert (home / "config.json").resolve() == user / "config.json"
    assert json.loads((home / "settings.json").read_text()) == {"model": "m"}
    assert not (home / "mcp-config.json").exists()


def test_copilot_agent_file_names_the_agent_by_its_text() -> None:
    name, text = agent_file("Be brief.")
    assert name.startswith("llm-runners-") and agent_file("Be brief.")[0] == name != agent_file("Other")[0]
    assert text.startswith(f"---\nname: {name}\n") and "tools: []" in text and text.endswith("Be brief.\n")


# ------------------------------------------------------------------------------------------------ qwen


def test_qwen_partial_messages_stream_once_with_usage_and_session() -> None:
    parser = QwenParser(model=None, resume=None)
    events = feed_all(parser, "qwen/stream-json-partial.stdout")
    assert events == [TextDelta("pong"), TextDelta(" from"), TextDelta(" fake")]
    done = list(parser.finish(0, ""))
    assert done[0] == UsageEvent(Usage(input_tokens=11, output_tokens=3))
    assert isinstance(done[1], Done) and done[1].model == "fake-model" and done[1].session_id


def test_qwen_without_partial_messages_the_assistant_event_is_the_answer() -> None:
    parser = QwenParser(model=None, resume=None)
    assert feed_all(parser, "qwen/stream-json.stdout") == [TextDelta("pong from fake")]
    assert isinstance(list(parser.finish(0, ""))[-1], Done)


def test_qwen_api_error_that_exits_0_is_never_an_answer() -> None:
    parser = QwenParser(model=None, resume=None)
    assert feed_all(parser, "qwen/err401-stream-json.stdout") == []
    with pytest.raises(AuthenticationError, match="Incorrect API key"):
        list(parser.finish(0, ""))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[API Error: 401 Incorrect API key provided: fake (fake 401)]", AuthenticationError),
        ("[API Error: 429 Rate limit reached for m. Please try again in 1s.]", RateLimited),
        ("[API Error: 500 The server had an error]", UpstreamError),
        ("[API Error: 400 This model's maximum context length is 128000 tokens.]", ContextLengthExceeded),
        ("[API Error: 404 The model `x` does not exist or you do not have access to it.]", ModelNotFound),
    ],
)
def test_qwen_api_errors_are_classified(text: str, error: type[LLMError]) -> None:
    assert type(classify_api_error(text)) is error


def test_qwen_unknown_resume_id_is_session_not_found() -> None:
    parser = QwenParser(model=None, resume="gone")
    stderr = "No saved session found with ID gone. Run `qwen --resume` without an ID to choose from existing sessions."
    with pytest.raises(SessionNotFound):
        list(parser.finish(1, stderr))


def test_qwen_retry_watch_reads_the_debug_log_lines() -> None:
    """Real 0.15.10 debug-log lines (a 500, retried)."""
    watch = QwenRetryWatch(deadline=5.0)
    assert watch(b"2026-12-01T20:02:28.405Z [INFO] Config initialization started") is None
    first = watch(
        b"2026-12-01T20:02:28.574Z [ERROR] [OPENAI_ERROR] OpenAI API Error: 500 The server had an error while "
        b"processing your request. Sorry about that!"
    )
    assert first is not None and isinstance(first.error, UpstreamError) and 4.9 < first.after <= 5.0
    retry = watch(
        b"2026-12-01T20:02:28.588Z [ERROR] [RETRY] Attempt 1 failed with status 500. Retrying with backoff... "
        b"Error: 500 The server had an error while processing your request. Sorry about that!"
    )
    assert retry is not None and retry.after <= first.after  # the same deadline, from the first failure
    assert retry.error is not None and retry.error.message.startswith("qwen: 500 The server had an error")
    assert watch(b"2026-12-01T20:02:29.000Z [ERROR] [OPENAI_ERROR] OpenAI API Error: Request was aborted.") is None
    final = QwenRetryWatch(deadline=5.0)(
        b"2026-12-01T20:02:28.574Z [ERROR] [OPENAI_ERROR] OpenAI API Error: 404 The model `x` does not exist"
    )
    assert final is not None and isinstance(final.error, ModelNotFound) and final.after <= 1.0


def test_qwen_private_home_keeps_login_provider_and_model_only(tmp_path: Path) -> None:
    user, home = tmp_path / "user", tmp_path / "home"
    user.mkdir()
    (user / "oauth_creds.json").write_text("{}")
    settings = {
        "security": {"auth": {"selectedType": "openai", "apiKey": "k", "baseUrl": "http://x"}},
        "model": {"name": "m", "generationConfig": {"timeout": 1}},
        "modelProviders": {"openai": [{"id": "m"}]},
        "mcpServers": {"bait": {"command": "x"}},
        "hooks": {"Stop": []},
    }
    (user / "settings.json").write_text(json.dumps(settings))
    assert login_settings(settings) == {
        "security": settings["security"],
        "model": {"name": "m"},
        "modelProviders": settings["modelProviders"],
    }
    prepare_qwen_home(home, user, {"tools": {"core": ["none"]}})
    written = json.loads((home / "settings.json").read_text())
    assert written["security"] == settings["security"] and written["model"] == {"name": "m"}
    assert "mcpServers" not in written and "hooks" not in written and written["tools"] == {"core": ["none"]}
    assert (home / "oauth_creds.json").resolve() == user / "oauth_creds.json"


def test_both_are_registered() -> None:
    assert REGISTRY["copilot"].capabilities.token_streaming and not REGISTRY["copilot"].capabilities.system_prompt
    assert REGISTRY["qwen"].capabilities.system_prompt and REGISTRY["qwen"].capabilities.token_streaming
