"""OpenCode and Kilo dialects without the CLIs: the parser on their real outputs (tests/fixtures/<cli>, copied from
shared/cli-transcripts), error classification, the retry watch on real log lines, and the private home."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

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
from llm_runners.runners.kilo import KiloRunner
from llm_runners.runners.opencode import (
    AGENT,
    NO_SYSTEM_PROMPT,
    OpenCodeParser,
    OpenCodeRunner,
    RetryWatch,
    classify_error_event,
    log_fields,
)
from llm_runners.types import Done, StreamEvent, TextDelta, Usage, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: real ``--print-logs --log-level ERROR`` lines of OpenCode 1.18.33 (a 500, retried; a 401, given up on)
STREAM_ERROR_500 = (
    b'timestamp=2026-12-01T20:01:40.787Z level=ERROR run=d0f5c26e message="stream error" providerID=fake '
    b"modelID=fake-model session.id=ses_dcccd2ca5ffekKaVIJy44V3pa5 small=false agent=build mode=primary "
    b'error.error="AI_APICallError: The server had an error while processing your request. Sorry about that!"'
)
STREAM_ERROR_429 = (
    b'timestamp=2026-12-01T20:02:36.571Z level=ERROR run=446b2ff1 message="stream error" providerID=fake '
    b'modelID=fake-model error.error="AI_APICallError: Rate limit reached for fake-model on tokens per min (TPM): '
    b'Limit 30000, Used 30000, Requested 7678. Please try again in 1s."'
)
PROCESS_ERROR_401 = (
    b"timestamp=2026-12-01T20:04:05.707Z level=ERROR run=44fb6b3e message=process "
    b'session.id=ses_dcccb0ab4ffeXxWpuKC97g41lH messageID=msg_23335027f001q9r5RfXSQ1Wxfh error="Incorrect API key '
    b'provided: fake-err-401." stack="AI_APICallError: Incorrect API key provided: fake-err-401.\\n    at <anonymous>"'
)
UNKNOWN_MODEL_LOG = (
    "timestamp=2026-12-01T20:02:50.598Z level=ERROR run=972a9f2c message=failed ref=err_17f98341 "
    'error="ProviderModelNotFoundError: Model not found: fake/nope." cause="ProviderModelNotFoundError: Model not '
    'found: fake/nope.\\n    at <anonymous> (/$bunfs/root/chunk-dn9bw1yz.js:439:94601)"'
)


@pytest.fixture(autouse=True)
def _private_homes_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def parse(name: str, cli: str = "opencode", returncode: int = 0, stderr: str = "") -> list[StreamEvent]:
    parser = OpenCodeParser(provider=cli, model="fake/fake-model")
    events: list[StreamEvent] = []
    for line in (FIXTURES / cli / name).read_bytes().splitlines():
        events.extend(parser.feed(line))
    events.extend(parser.finish(returncode, stderr))
    return events


@pytest.mark.parametrize("cli", ["opencode", "kilo"])
@pytest.mark.parametrize("name", ["json.stdout", "resume.stdout"])
def test_real_answer_text_usage_session(cli: str, name: str) -> None:
    events = parse(name, cli)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong from fake"]
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert usage == [Usage(input_tokens=11, output_tokens=3, cost_usd=0.0)]
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.model == "fake/fake-model"
    assert done.session_id and done.session_id.startswith("ses_")


@pytest.mark.parametrize("cli", ["opencode", "kilo"])
def test_real_401_is_an_authentication_error(cli: str) -> None:
    with pytest.raises(AuthenticationError, match="Incorrect API key") as info:
        parse("err401.stdout", cli, returncode=1)
    assert info.value.provider == cli and info.value.detail and "invalid_api_key" in info.value.detail


def test_steps_add_up_cache_counts_as_input_and_parts_are_paragraphs() -> None:
    parser = OpenCodeParser()
    lines = [
        {"type": "text", "sessionID": "ses_1", "part": {"id": "p1", "type": "text", "text": "one"}},
        {"type": "reasoning", "sessionID": "ses_1", "part": {"id": "r1", "type": "reasoning", "text": "hmm"}},
        {"type": "step_finish", "part": {"reason": "tool-calls", "tokens": {"input": 5, "output": 2}, "cost": 0.5}},
        {"type": "text", "sessionID": "ses_1", "part": {"id": "p2", "type": "text", "text": "two"}},
        {"type": "text", "sessionID": "ses_1", "part": {"id": "p2", "type": "text", "text": "two"}},  # repeated
        {
            "type": "step_finish",
            "part": {
                "reason": "length",
                "tokens": {"input": 1, "output": 4, "reasoning": 1, "cache": {"read": 7, "write": 2}},
                "cost": 0.25,
            },
        },
    ]
    events = [e for line in lines for e in parser.feed(json.dumps(line).encode())]
    events += list(parser.finish(0, ""))
    assert [getattr(e, "text", None) for e in events[:3]] == ["one", "hmm", "\n\ntwo"]
    assert events[-2] == UsageEvent(
        Usage(input_tokens=15, output_tokens=6, cached_tokens=7, reasoning_tokens=1, cost_usd=0.75)
    )
    assert events[-1] == Done(finish_reason="length", session_id="ses_1")


def test_garbage_and_no_finish_are_upstream_errors_quoting_the_output() -> None:
    parser = OpenCodeParser()
    assert list(parser.feed(b"<html>oops</html>")) == []
    with pytest.raises(UpstreamError, match="oops"):
        list(parser.finish(0, ""))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            {"name": "ContextOverflowError", "data": {"message": "This model's maximum context length is 128000"}},
            ContextLengthExceeded,
        ),
        ({"name": "APIError", "data": {"message": "Rate limit reached", "statusCode": 429}}, RateLimited),
        ({"name": "APIError", "data": {"message": "The model `x` does not exist", "statusCode": 404}}, ModelNotFound),
        ({"name": "APIError", "data": {"message": "boom", "statusCode": 500, "isRetryable": True}}, UpstreamError),
        (
            {
                "name": "APIError",
                "data": {
                    "message": "too long",
                    "statusCode": 400,
                    "responseBody": '{"error":{"code":"context_length_exceeded"}}',
                },
            },
            ContextLengthExceeded,
        ),
        ({"name": "ProviderAuthError", "data": {"message": "no key"}}, AuthenticationError),
        ({"name": "UnknownError", "data": {"message": "Unexpected server error."}}, UpstreamError),
    ],
)
def test_error_events(error: dict[str, Any], kind: type[LLMError]) -> None:
    exc = classify_error_event(error, provider="opencode")
    assert type(exc) is kind and exc.message.startswith("opencode: ")


def test_unknown_model_is_named_by_the_log() -> None:
    exc = classify_error_event(
        {"name": "UnknownError", "data": {"message": "Unexpected server error. Check server logs for details."}},
        provider="opencode",
        stderr=UNKNOWN_MODEL_LOG + "\n",
    )
    assert type(exc) is ModelNotFound and "Model not found: fake/nope." in exc.message


def test_lost_session_on_resume() -> None:
    parser = OpenCodeParser(resume="ses_gone")
    with pytest.raises(SessionNotFound):
        list(parser.finish(1, "Error: Session not found: ses_gone"))


def test_log_fields() -> None:
    fields = log_fields(PROCESS_ERROR_401.decode())
    assert fields["message"] == "process" and fields["error"] == "Incorrect API key provided: fake-err-401."
    assert fields["stack"].startswith("AI_APICallError") and "\n" in fields["stack"]


def test_retry_watch_arms_on_an_error_fires_on_a_retry_and_stands_down_when_the_cli_gives_up() -> None:
    watch = RetryWatch(provider="opencode", deadline=1.0)
    assert watch(b"timestamp=x level=INFO message=stream") is None
    first = watch(STREAM_ERROR_500)
    assert first is not None and first.after == 1.0 and type(first.error) is UpstreamError
    assert first.error.message.startswith("opencode: The server had an error")
    again = watch(STREAM_ERROR_429)
    assert again is not None and again.after == 0.0 and type(again.error) is RateLimited
    assert again.error.retry_after == 1.0 and "2 attempts" in again.error.message
    gave_up = watch(PROCESS_ERROR_401)
    assert gave_up is not None and gave_up.error is None


# ------------------------------------------------------------------------------------------------ the private home


def user_home(tmp_path: Path, app: str = "opencode", name: str = "opencode.jsonc") -> Path:
    """A user's home whose global config defines a provider, a default model, an MCP server, instructions, a
    plugin and an agent, with an auth.json, an AGENTS.md and a ~/.opencode agent."""
    home = tmp_path / "user"
    config = home / ".config" / app
    config.mkdir(parents=True)
    (config / name).write_text(
        "// the user's own config\n"
        + json.dumps(
            {
                "model": "corp/big",
                "provider": {"corp": {"options": {"baseURL": "https://llm.corp", "apiKey": "{env:CORP_KEY}"}}},
                "mcp": {"bait": {"type": "local", "command": ["bait"]}},
                "instructions": ["RULES.md"],
                "plugin": ["bait-plugin"],
                "agent": {"bait": {"prompt": "bait"}},
            }
        )[:-1]
        + ",}"  # a trailing comma, as JSONC allows
    )
    (config / "AGENTS.md").write_text("bait instructions")
    data = home / ".local" / "share" / app
    data.mkdir(parents=True)
    (data / "auth.json").write_text('{"anthropic": {"type": "api", "key": "sk-user"}}')
    return home


@pytest.mark.parametrize("cls", [OpenCodeRunner, KiloRunner])
def test_private_home_carries_login_and_provider_only(tmp_path: Path, cls: type[OpenCodeRunner]) -> None:
    home = user_home(tmp_path, cls.app, "opencode.jsonc" if cls is OpenCodeRunner else "kilo.json")
    runner = cls(env={"HOME": str(home), "CORP_KEY": "sk-corp"})
    env = runner.child_env()
    private = Path(env["HOME"])
    assert private != home and private.is_relative_to(tmp_path)
    prefix = cls.env_prefix
    assert env[f"{prefix}_CONFIG"] == str(private / "llm-runners.json")
    assert env[f"{prefix}_DISABLE_PROJECT_CONFIG"] == env[f"{prefix}_DISABLE_AUTOCOMPACT"] == "1"
    assert env["XDG_CONFIG_HOME"] == str(private / ".config") and env["CORP_KEY"] == "sk-corp"
    config = json.loads((private / "llm-runners.json").read_text())
    assert config["model"] == "corp/big" and set(config["provider"]) == {"corp"}
    assert not {"mcp", "instructions", "plugin"} & set(config) and list(config["agent"]) == [AGENT]
    assert config["default_agent"] == AGENT
    assert config["agent"][AGENT]["tools"] == {"*": False} and config["agent"][AGENT]["prompt"] == NO_SYSTEM_PROMPT
    assert set(config["permission"].values()) == {"deny"}
    auth = private / ".local" / "share" / cls.app / "auth.json"
    assert auth.is_symlink() and auth.resolve() == (home / ".local" / "share" / cls.app / "auth.json")
    assert not list((private / ".config").rglob("AGENTS.md"))
    assert runner.cli_model("small") == "corp/small" and runner.cli_model("x/y") == "x/y"


def test_cloud_logins_in_the_real_home_stay_reachable(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    adc = tmp_path / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True)
    adc.write_text("{}")
    env = OpenCodeRunner(env={"HOME": str(tmp_path)}).child_env()
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == str(tmp_path / ".aws" / "credentials")
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == str(adc) and "AWS_CONFIG_FILE" not in env
    own = OpenCodeRunner(env={"HOME": str(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": "/x.json"}).child_env()
    assert own["GOOGLE_APPLICATION_CREDENTIALS"] == "/x.json"


def test_kilo_switches_daemon_telemetry_and_retries_off(tmp_path: Path) -> None:
    env = KiloRunner(env={"HOME": str(tmp_path)}).child_env()
    assert env["KILO_NO_DAEMON"] == "1" and env["KILO_TELEMETRY_LEVEL"] == "off"
    assert env["KILO_SESSION_RETRY_LIMIT"] == "1" and "OPENCODE_CONFIG" not in env


def test_user_config_uses_the_real_home_and_allow_tools_keeps_the_tools(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    runner = OpenCodeRunner(env={"HOME": str(home)}, user_config=True, allow_tools=True)
    env = runner.child_env()
    assert env["HOME"] == str(home) and "OPENCODE_CONFIG" not in env and "OPENCODE_DISABLE_PROJECT_CONFIG" not in env
    config = runner.config("Be terse.")
    assert "provider" not in config and "permission" not in config  # the CLI reads the user's own config
    assert config["agent"][AGENT] == {"description": "llm-runners chat agent", "mode": "primary", "prompt": "Be terse."}


def test_registry_and_capabilities() -> None:
    assert REGISTRY["opencode"] is OpenCodeRunner and REGISTRY["kilo"] is KiloRunner
    assert OpenCodeRunner.capabilities.system_prompt and not KiloRunner.capabilities.system_prompt
    assert not OpenCodeRunner.capabilities.token_streaming and not KiloRunner.capabilities.token_streaming
