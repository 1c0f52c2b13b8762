"""Claude Code dialect: argv building and stream-json parsing, over real captures of the pinned CLI (no process)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from llm_runners.errors import (
    AuthenticationError,
    BinaryNotFound,
    ContextLengthExceeded,
    InvalidRequest,
    LLMError,
    ModelNotFound,
    Overloaded,
    RateLimited,
    SessionNotFound,
    UpstreamError,
)
from llm_runners.runners.base import Turn
from llm_runners.runners.claude_code import (
    LOGIN_HINT,
    OFFLINE_ENV,
    ClaudeCodeParser,
    ClaudeCodeRunner,
)
from llm_runners.types import (
    ChatRequest,
    Done,
    ImagePart,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Usage,
    UsageEvent,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude"


def lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines()


def run_parser(
    name_or_lines: str | list[bytes], returncode: int = 0, stderr: str = "", **kwargs: str | None
) -> tuple[ClaudeCodeParser, list[StreamEvent]]:
    parser = ClaudeCodeParser(**kwargs)
    events: list[StreamEvent] = []
    for line in lines(name_or_lines) if isinstance(name_or_lines, str) else name_or_lines:
        events.extend(parser.feed(line))
    events.extend(parser.finish(returncode, stderr))
    return parser, events


def texts(events: Iterable[StreamEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


# ------------------------------------------------------------------------------------------------ parsing


def test_partial_messages_stream_each_delta_once() -> None:
    parser, events = run_parser("stream-json-partial.stdout")
    assert texts(events) == ["pong", " from", " fake"]  # the complete `assistant` event adds nothing
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert usage == [Usage(input_tokens=3200, output_tokens=3, cached_tokens=0, cost_usd=0.016075)]
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "stop"
    assert done.model == "claude-opus-4-8"  # what the API said it served
    assert done.session_id == parser.session_id == "4b70a333-b69e-47c8-8701-27842d7b79e5"
    assert done.warnings == ()


def test_without_partial_messages_the_complete_message_is_the_text() -> None:
    _, events = run_parser("stream-json.stdout")
    assert texts(events) == ["pong from fake"]
    assert isinstance(events[-1], Done)


def test_thinking_deltas_are_reasoning_and_not_repeated() -> None:
    _, events = run_parser("thinking.stream.stdout")
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["Let me", " think."]
    assert texts(events) == ["pong", " from", " fake"]
    # the fixture's fake reported 100 uncached + 7 cache-read input tokens: Usage counts the whole prompt
    usage = next(e.usage for e in events if isinstance(e, UsageEvent))
    assert (usage.input_tokens, usage.cached_tokens, usage.output_tokens) == (107, 7, 3)


def test_session_id_is_known_from_the_first_line() -> None:
    parser = ClaudeCodeParser()
    assert list(parser.feed(lines("stream-json-partial.stdout")[0])) == []
    assert parser.session_id == "4b70a333-b69e-47c8-8701-27842d7b79e5"


def test_noise_and_unknown_lines_are_ignored() -> None:
    noise = [b"", b"not json", b"[1,2]", b'{"type":"mystery"}', b'{"type":"stream_event","event":"x"}']
    _, events = run_parser(noise + lines("stream-json-partial.stdout"))
    assert "".join(texts(events)) == "pong from fake"


def test_retries_before_success_become_warnings() -> None:
    retry = next(line for line in lines("err401-default-retries.stdout") if b'"api_retry"' in line)
    ok = lines("stream-json-partial.stdout")
    _, events = run_parser([ok[0], retry, *ok[1:]])
    done = events[-1]
    assert isinstance(done, Done)
    assert len(done.warnings) == 1 and "HTTP 401" in done.warnings[0] and "attempt 1/10" in done.warnings[0]


def test_max_tokens_is_length() -> None:
    ok = [line.replace(b'"stop_reason":"end_turn"', b'"stop_reason":"max_tokens"') for line in lines("resume.stdout")]
    _, events = run_parser(ok)
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "length"


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("fixture", "error", "words"),
    [
        ("err401.stdout", AuthenticationError, "Invalid API key"),
        ("err401-default-retries.stdout", AuthenticationError, "Invalid API key"),
        ("err429.stream.stdout", RateLimited, "429"),
        ("err500.stream.stdout", UpstreamError, "500 Internal server error"),
        ("err529.stream.stdout", Overloaded, "529"),
        ("err404.stream.stdout", ModelNotFound, "issue with the selected model"),
        ("err-context.stream.stdout", ContextLengthExceeded, "Prompt is too long"),
        ("refused.stream.stdout", UpstreamError, "Unable to connect"),
        ("notloggedin.stream.stdout", AuthenticationError, "Not logged in"),
    ],
)
def test_api_errors_are_read_from_stdout_whatever_the_exit_code(
    fixture: str, error: type[LLMError], words: str
) -> None:
    for returncode in (1, 0):  # the CLI exits 1, but the result event decides
        with pytest.raises(LLMError) as info:
            run_parser(fixture, returncode=returncode)
        assert type(info.value) is error
        assert words in info.value.message
        assert info.value.provider == "claude_code"
        assert info.value.detail  # the raw result is kept for logs


def test_synthetic_error_message_never_becomes_text() -> None:
    parser = ClaudeCodeParser()
    out: list[StreamEvent] = []
    for line in lines("err500.stream.stdout"):
        out.extend(parser.feed(line))
    assert out == []


def test_auth_errors_say_how_to_log_in() -> None:
    with pytest.raises(AuthenticationError, match="claude login"):
        run_parser("notloggedin.stream.stdout", returncode=1)
    assert "ANTHROPIC_API_KEY" in LOGIN_HINT


def test_unknown_resume_id_is_session_not_found() -> None:
    stderr = (FIXTURES / "noresume.stream.stderr").read_text()
    with pytest.raises(SessionNotFound, match="99999999-2222-4333-8444-555555555555"):
        run_parser("noresume.stream.stdout", returncode=1, stderr=stderr)
    with pytest.raises(SessionNotFound):  # stderr alone (e.g. json/text output modes)
        run_parser([], returncode=1, stderr=stderr)
    with pytest.raises(SessionNotFound):  # the result's `errors` alone
        run_parser("noresume.stream.stdout", returncode=1, stderr="")


def test_usage_error_without_result_falls_back_to_the_exit() -> None:
    stderr = "Error: When using --print, --output-format=stream-json requires --verbose\n"
    with pytest.raises(LLMError) as info:
        run_parser([], returncode=1, stderr=stderr)
    assert "requires --verbose" in info.value.message


def test_clean_exit_without_result_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="without a result"):
        run_parser(lines("stream-json-partial.stdout")[:-1], returncode=0)


def test_bad_request_400_without_context_words_is_invalid_request() -> None:
    result = json.loads(lines("err429.stream.stdout")[-1])
    result.update(api_error_status=400, result="API Error: 400 messages: text content blocks must be non-empty")
    with pytest.raises(InvalidRequest) as info:
        run_parser([json.dumps(result).encode()], returncode=1)
    assert not isinstance(info.value, ContextLengthExceeded)


# ------------------------------------------------------------------------------------------------ argv


def make_turn(tmp_path: Path, request: ChatRequest, **overrides: object) -> Turn:
    assets = tmp_path / "assets"
    assets.mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "request": request,
        "prompt": request.messages[-1].text,
        "system": request.system or None,
        "model": request.model,
        "resume": None,
        "session": "11111111-2222-4333-8444-555555555555",
        "images": [],
        "image_parts": [p for m in request.messages for p in m.images],
        "workdir": tmp_path,
        "assets": assets,
    }
    fields.update(overrides)
    return Turn(**fields)  # type: ignore[arg-type]


def runner(**kwargs: object) -> ClaudeCodeRunner:
    kwargs.setdefault("binary", "/bin/true")
    kwargs.setdefault("env", {"ANTHROPIC_API_KEY": "k"})
    return ClaudeCodeRunner(**kwargs)  # type: ignore[arg-type]


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_default_argv_is_streaming_and_safe(tmp_path: Path) -> None:
    inv = runner().invocation(make_turn(tmp_path, ChatRequest(messages=[Message(role="user", content="hi")])))
    argv = inv.argv
    assert argv[:2] == ["/bin/true", "-p"]
    assert flag(argv, "--input-format") == "stream-json"
    assert flag(argv, "--output-format") == "stream-json"
    assert "--verbose" in argv and "--include-partial-messages" in argv
    assert flag(argv, "--tools") == ""
    assert flag(argv, "--setting-sources") == ""
    assert "--strict-mcp-config" in argv and "--bare" in argv  # an API key is configured
    assert flag(argv, "--session-id") == "11111111-2222-4333-8444-555555555555"
    assert "--resume" not in argv and "--no-session-persistence" not in argv
    assert "--model" not in argv and "--system-prompt-file" not in argv
    assert "hi" not in argv  # the prompt goes to stdin
    assert inv.env == {**OFFLINE_ENV, "CLAUDE_CODE_MAX_RETRIES": "0"}  # the runner's retries bound


def test_prompt_goes_to_stdin_as_one_user_message(tmp_path: Path) -> None:
    long = "x" * 300_000
    inv = runner().invocation(make_turn(tmp_path, ChatRequest(messages=[Message(role="user", content=long)])))
    assert inv.stdin is not None and inv.stdin.endswith(b"\n") and inv.stdin.count(b"\n") == 1
    message = json.loads(inv.stdin)
    assert message == {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": long}]}}
    assert all(len(a) < 1000 for a in inv.argv)


def test_images_are_inline_base64_blocks_in_order(tmp_path: Path) -> None:
    png, jpg = b"\x89PNG\r\n\x1a\nfake", b"\xff\xd8\xfffake"
    msg = Message(
        role="user",
        content=[
            {"type": "text", "text": "compare"},
            ImagePart(media_type="image/png", data=png),
            ImagePart(media_type="image/jpeg", data=jpg),
        ],
    )
    turn = make_turn(tmp_path, ChatRequest(messages=[msg]), prompt="compare\n[image 1]\n[image 2]")
    content = json.loads(runner().invocation(turn).stdin or b"")["message"]["content"]
    assert content[0] == {"type": "text", "text": "compare\n[image 1]\n[image 2]"}
    assert content[1] == {"type": "text", "text": "[image 1]"}
    assert content[2]["source"] == {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode()}
    assert content[4]["source"]["media_type"] == "image/jpeg"
    assert base64.b64decode(content[4]["source"]["data"]) == jpg


def test_model_system_prompt_and_resume(tmp_path: Path) -> None:
    request = ChatRequest(
        model="claude-sonnet-4-5",
        messages=[Message(role="system", content="Be brief.\nVery."), Message(role="user", content="hi")],
    )
    turn = make_turn(tmp_path, request, resume="abc-123", session=None)
    argv = runner().invocation(turn).argv
    assert flag(argv, "--model") == "claude-sonnet-4-5"
    path = flag(argv, "--system-prompt-file")
    assert path is not None and Path(path).parent == turn.assets
    assert Path(path).read_text() == "Be brief.\nVery."  # exactly, no added newline
    assert flag(argv, "--resume") == "abc-123" and "--session-id" not in argv


def test_ephemeral_conversation_writes_no_session(tmp_path: Path) -> None:
    request = ChatRequest(messages=[Message(role="user", content="hi")], extra={"ephemeral": True})
    argv = runner().invocation(make_turn(tmp_path, request)).argv
    assert "--no-session-persistence" in argv and "--session-id" not in argv


def test_allow_tools_restores_the_default_tool_set(tmp_path: Path) -> None:
    argv = (
        runner(allow_tools=True)
        .invocation(make_turn(tmp_path, ChatRequest(messages=[Message(role="user", content="hi")])))
        .argv
    )
    assert "--tools" not in argv and "--bare" not in argv  # --bare would cut the tool set to Bash, Edit, Read
    assert flag(argv, "--permission-mode") == "acceptEdits"
    assert "--strict-mcp-config" in argv  # MCP servers and settings stay off


def test_no_bare_without_an_api_key_so_oauth_logins_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    argv = (
        runner(env={}).invocation(make_turn(tmp_path, ChatRequest(messages=[Message(role="user", content="hi")]))).argv
    )
    assert "--bare" not in argv
    assert flag(argv, "--setting-sources") == "" and flag(argv, "--tools") == ""


def test_operator_env_overrides_the_offline_switches(tmp_path: Path) -> None:
    r = runner(env={"ANTHROPIC_API_KEY": "k", "DISABLE_TELEMETRY": "0"})
    inv = r.invocation(make_turn(tmp_path, ChatRequest(messages=[Message(role="user", content="hi")])))
    assert "DISABLE_TELEMETRY" not in inv.env and inv.env["DISABLE_AUTOUPDATER"] == "1"


# ------------------------------------------------------------------------------------------------ metadata


def test_version_parsing() -> None:
    assert runner().parse_version("2.1.197 (Claude Code)\n") == "2.1.197"


@pytest.mark.anyio
async def test_auth_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    assert await runner(env={"HOME": str(home)}).check_auth() == (False, LOGIN_HINT)
    assert await runner(env={"HOME": str(home), "ANTHROPIC_API_KEY": "k"}).check_auth() == (True, None)
    (home / ".claude").mkdir()
    (home / ".claude" / ".credentials.json").write_text("{}")
    assert await runner(env={"HOME": str(home)}).check_auth() == (True, None)


@pytest.mark.anyio
async def test_models_are_the_known_aliases_and_names() -> None:
    ids = [m.id for m in await runner().models()]
    assert {"opus", "sonnet", "haiku"} <= set(ids) and "claude-opus-4-8" in ids
    assert len(ids) == len(set(ids))


@pytest.mark.anyio
async def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    r = ClaudeCodeRunner(binary=str(tmp_path / "nope" / "claude"))
    with pytest.raises(BinaryNotFound, match="npm install -g @anthropic-ai/claude-code"):
        async for _ in r.stream(ChatRequest(messages=[Message(role="user", content="hi")])):
            pass
    health = await r.health()
    assert not health.installed and not health.ready and health.fix == "npm install -g @anthropic-ai/claude-code"


# ------------------------------------------------------------------------------------------------ run (a stand-in CLI)


def test_session_file_is_flushed_before_the_result(tmp_path: Path) -> None:
    """Without CLAUDE_CODE_EAGER_FLUSH the real CLI loses the turn's user message from its session file in ~1 run of
    5 when stdin is closed up front (the e2e resume tests catch that); the runner must always set it."""
    inv = runner().invocation(make_turn(tmp_path, ChatRequest(messages=[Message(role="user", content="hi")])))
    assert inv.stdin is not None and inv.env.get("CLAUDE_CODE_EAGER_FLUSH") == "1"


def test_an_mcp_endpoint_goes_to_the_cli_in_a_per_run_file(tmp_path: Path) -> None:
    """The request's tools on the loopback tool host (llm_runners.mcp.toolhost): one HTTP server in --mcp-config,
    its token only in that file, exactly its tools allowed, and the CLI told to wait for them."""
    from llm_runners.mcp.toolhost import MCP_ENDPOINT_KEY
    from llm_runners.runners.turn import shape_of

    endpoint = {
        "name": "llm_runners",
        "url": "http://127.0.0.1:4321/mcp",
        "headers": {"Authorization": "Bearer secret-token-1"},
        "tools": ["add", "echo"],
    }
    request = ChatRequest(messages=[Message(role="user", content="hi")], extra={MCP_ENDPOINT_KEY: endpoint})
    r = runner()
    turn = make_turn(tmp_path, request)
    inv = r.invocation(turn)
    config = json.loads(Path(flag(inv.argv, "--mcp-config") or "").read_text())
    assert config == {
        "mcpServers": {
            "llm_runners": {
                "type": "http",
                "url": "http://127.0.0.1:4321/mcp",
                "headers": {"Authorization": "Bearer secret-token-1"},
            }
        }
    }
    assert flag(inv.argv, "--allowed-tools") == "mcp__llm_runners__add,mcp__llm_runners__echo"
    assert "--strict-mcp-config" in inv.argv and flag(inv.argv, "--tools") == ""  # no built-in tool comes back
    assert not any("secret-token-1" in a for a in inv.argv)
    assert inv.env["MCP_CONNECTION_NONBLOCKING"] == "0"
    # another request's token makes another shape: such a turn never takes a spare started without it
    other = dict(endpoint, headers={"Authorization": "Bearer secret-token-2"})
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    turn2 = make_turn(tmp_path / "b", request.model_copy(update={"extra": {MCP_ENDPOINT_KEY: other}}))
    spec1 = r.process_spec(turn, inv, [])
    spec2 = r.process_spec(turn2, r.invocation(turn2), [])
    assert shape_of(spec1, turn) != shape_of(spec2, turn2)
    plain = runner().invocation(make_turn(tmp_path / "c", ChatRequest(messages=[Message(role="user", content="x")])))
    assert "--mcp-config" not in plain.argv and "MCP_CONNECTION_NONBLOCKING" not in plain.env


def test_rate_limit_events_are_reported_as_quotas() -> None:
    from llm_runners.quotas import Quota
    from llm_runners.runners.claude_code import rate_limit_quota

    seen: list[Quota] = []
    parser = ClaudeCodeParser(on_quota=seen.append)
    events = [e for line in lines("rate-limit.stream.stdout") for e in parser.feed(line)]
    events += parser.finish(0, "")
    assert texts(events) == ["pong from fake"]
    [quota] = seen
    assert quota.window == "five_hour" and quota.percent_used == 95.0 and quota.status == "allowed_warning"
    assert quota.resets_at == 1796177181 and quota.source == "claude_code:rate_limit_event"
    below = rate_limit_quota({"status": "allowed", "resetsAt": 1796171765, "rateLimitType": "five_hour"})
    assert below is not None and below.percent_used is None and below.status == "allowed"
    assert rate_limit_quota("nonsense") is None
