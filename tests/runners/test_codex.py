"""Codex dialect: argv, stdin and the ``exec --json`` parser over real captures in tests/fixtures/codex/ (see its
README: copies of the shared captures plus error cases captured for this runner)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    RateLimited,
    SessionNotFound,
    UpstreamError,
)
from llm_runners.runners.base import Turn
from llm_runners.runners.codex import NO_TOOLS_ARGS, CodexParser, CodexRunner, classify_error
from llm_runners.types import ChatRequest, Done, ReasoningDelta, TextDelta, Usage, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
METADATA_WARNING = "Model metadata for `fake-model` not found"


def run(parser: CodexParser, lines: list[bytes], returncode: int, stderr: str = "") -> list[object]:
    events: list[object] = []
    for line in lines:
        events.extend(parser.feed(line))
    events.extend(parser.finish(returncode, stderr))
    return events


def fixture_lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines()


def fail(name: str) -> BaseException:
    parser = CodexParser()
    with pytest.raises(Exception) as info:
        run(parser, fixture_lines(name), 1)
    return info.value


# ------------------------------------------------------------------------------------------------ parser


def test_answer_usage_session_and_metadata_warning() -> None:
    parser = CodexParser(model="fake-model")
    events = run(parser, fixture_lines("json.stdout"), 0)
    assert events[:2] == [
        TextDelta("pong from fake"),
        UsageEvent(Usage(input_tokens=5265, cached_tokens=0, output_tokens=3, reasoning_tokens=0)),
    ]
    done = events[-1]
    assert isinstance(done, Done) and len(events) == 3
    assert done.session_id == "01a211b1-2d07-7d32-8b48-61c5e0f9cfea" == parser.session_id
    assert done.model == "fake-model" and done.finish_reason == "stop"
    # the `error` item about missing model metadata is a warning, not a failure
    assert len(done.warnings) == 1 and METADATA_WARNING in done.warnings[0]


def test_known_model_has_no_warning() -> None:
    events = run(CodexParser(model="gpt-5.5"), fixture_lines("json-known-model.stdout"), 0)
    done = events[-1]
    assert isinstance(done, Done) and done.warnings == ()
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("pong from fake")]


def test_reasoning_item_and_usage_fields_exactly_as_reported() -> None:
    events = run(CodexParser(), fixture_lines("reasoning.stdout"), 0)
    assert events[:3] == [
        ReasoningDelta("thinking hard"),
        TextDelta("pong from fake"),
        UsageEvent(Usage(input_tokens=100, cached_tokens=40, output_tokens=7, reasoning_tokens=2)),
    ]
    assert isinstance(events[3], Done)


def test_resumed_turn_reports_its_own_usage_when_the_previous_total_is_known() -> None:
    remembered: dict[str, Usage] = {}
    first = CodexParser(remember=remembered.__setitem__)
    run(first, fixture_lines("json.stdout"), 0)
    thread = "01a211b1-2d07-7d32-8b48-61c5e0f9cfea"
    assert remembered == {thread: Usage(input_tokens=5265, output_tokens=3)}
    # resume.stdout is the same thread's next turn: its turn.completed says 10612 / 6, the running total
    second = CodexParser(resume=thread, baseline=remembered[thread], remember=remembered.__setitem__)
    events = run(second, fixture_lines("resume.stdout"), 0)
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert usage == [Usage(input_tokens=10612 - 5265, output_tokens=3)]
    assert remembered[thread] == Usage(input_tokens=10612, output_tokens=6)
    done = events[-1]
    assert isinstance(done, Done) and not any("running total" in w for w in done.warnings)


def test_resumed_turn_without_a_known_total_reports_it_as_given_with_a_warning() -> None:
    events = run(CodexParser(resume="01a211b1-2d07-7d32-8b48-61c5e0f9cfea"), fixture_lines("resume.stdout"), 0)
    assert [e.usage for e in events if isinstance(e, UsageEvent)] == [Usage(input_tokens=10612, output_tokens=6)]
    done = events[-1]
    assert isinstance(done, Done) and any("running total" in w for w in done.warnings)


def test_several_agent_messages_and_growing_items() -> None:
    lines = [
        {"type": "thread.started", "thread_id": "t1"},
        {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "Looking."}},
        {"type": "item.started", "item": {"id": "item_1", "type": "command_execution", "command": "ls"}},
        {"type": "item.updated", "item": {"id": "item_2", "type": "agent_message", "text": "Do"}},
        {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "Done."}},
        {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 2}},
    ]
    events = run(CodexParser(), [json.dumps(x).encode() for x in lines], 0)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Looking.\n\nDone."


def test_garbage_and_unknown_lines_are_ignored() -> None:
    lines = [b"not json", b"[1,2]", b'{"type":"mystery"}', *fixture_lines("json-known-model.stdout")]
    events = run(CodexParser(), lines, 0)
    assert isinstance(events[-1], Done) and TextDelta("pong from fake") in events


def test_exit_zero_without_turn_completed_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="without completing"):
        run(CodexParser(), fixture_lines("json.stdout")[:3], 0)


# ------------------------------------------------------------------------------------------------ errors


def test_401_is_authentication_error() -> None:
    error = fail("err401.stdout")
    assert isinstance(error, AuthenticationError) and "Incorrect API key" in error.message


def test_401_after_default_retries_ignores_the_reconnecting_notices() -> None:
    parser = CodexParser()
    with pytest.raises(AuthenticationError) as info:
        run(parser, fixture_lines("err401-default-retries.stdout"), 1)
    assert parser.retries == 5 and "Reconnecting" not in info.value.message


def test_429_is_rate_limited() -> None:
    error = fail("err429.stdout")
    assert isinstance(error, RateLimited) and "429" in error.message


def test_500_high_demand_is_upstream_error() -> None:
    error = fail("err500.stdout")
    assert type(error) is UpstreamError and "high demand" in error.message


def test_503_is_overloaded() -> None:
    assert isinstance(fail("err503.stdout"), Overloaded)


def test_context_window_is_context_length_exceeded() -> None:
    error = fail("err-context.stdout")
    assert isinstance(error, ContextLengthExceeded) and "context window" in error.message


def test_unknown_model_is_model_not_found() -> None:
    error = fail("err404.stdout")
    assert isinstance(error, ModelNotFound) and "`nope` does not exist" in error.message


def test_stream_failure_and_refused_connection_are_upstream_errors() -> None:
    failed = fail("failed-stream.stdout")
    assert type(failed) is UpstreamError and "internal failure xyz" in failed.message
    refused = fail("refused.stdout")
    assert type(refused) is UpstreamError and "Connection failed" in refused.message


def test_unknown_resume_id_is_session_not_found() -> None:
    stderr = (FIXTURES / "resume-unknown.stderr").read_text()
    with pytest.raises(SessionNotFound):
        run(CodexParser(resume="01a211f2-0000-7000-8000-000000000000"), [], 1, stderr)


def test_config_error_is_invalid_request() -> None:
    stderr = "Error loading config.toml: unknown configuration field `x` in -c/--config override\n"
    with pytest.raises(InvalidRequest, match="unknown configuration field"):
        run(CodexParser(), [], 1, stderr)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("rate limit exceeded: Rate limit reached for requests. Please try again in 1.5s.", RateLimited),
        ("unexpected status 403 Forbidden: nope, url: http://x/v1/responses", PermissionDenied),
        ("Your input exceeds the context window of this model.", ContextLengthExceeded),
        ("stream disconnected before completion: boom", UpstreamError),
    ],
)
def test_classify_error_messages(message: str, kind: type) -> None:
    assert isinstance(classify_error(message), kind)


def test_rate_limit_keeps_the_retry_hint() -> None:
    error = classify_error("rate limit exceeded: Please try again in 1.5s.")
    assert isinstance(error, RateLimited) and error.retry_after == 1.5


# ------------------------------------------------------------------------------------------------ argv


def make_turn(tmp_path: Path, *, system: str | None = None, resume: str | None = None, images: int = 0) -> Turn:
    assets = tmp_path / "assets"
    assets.mkdir(exist_ok=True)
    files = []
    for i in range(images):
        path = assets / f"image-{i + 1}.png"
        path.write_bytes(b"png")
        files.append(path)
    return Turn(
        request=ChatRequest(messages=[{"role": "user", "content": "hi"}]),
        prompt="a long\nprompt " * 1000,
        system=system,
        model="gpt-5.5",
        resume=resume,
        session=None,
        images=files,
        image_parts=[],
        workdir=tmp_path,
        assets=assets,
    )


def runner(**kw: Any) -> CodexRunner:
    return CodexRunner(binary="/bin/true", transport="exec", **kw)


def test_argv_fresh_turn_is_safe_and_prompt_goes_to_stdin(tmp_path: Path) -> None:
    turn = make_turn(tmp_path, system='Be a pirate.\nSay "arr" \\ always.', images=2)
    inv = runner().invocation(turn)
    argv = inv.argv
    assert argv[:4] == ["/bin/true", "exec", "--json", "--skip-git-repo-check"]
    assert "--ignore-user-config" in argv
    assert argv[argv.index("-s") + 1] == "read-only"
    assert "danger-full-access" not in " ".join(argv)
    for flag in NO_TOOLS_ARGS:
        assert flag in argv
    assert argv[-1] == "-" and inv.stdin == turn.prompt.encode()
    assert not any("prompt" in a and "a long" in a for a in argv)
    assert argv[argv.index("-m") + 1] == "gpt-5.5"
    assert [a for a in argv if a.startswith("--image=")] == [f"--image={p}" for p in turn.images]
    assert "resume" not in argv
    # the system prompt file is named by a valid TOML string and holds exactly our text
    setting = next(argv[i + 1] for i, a in enumerate(argv) if a == "-c" and argv[i + 1].startswith("model_instr"))
    path = Path(tomllib.loads(setting)["model_instructions_file"])
    assert path.parent == turn.assets and path.read_text() == turn.system


def test_argv_resume_puts_every_option_before_the_subcommand(tmp_path: Path) -> None:
    inv = runner().invocation(make_turn(tmp_path, resume="01a2-thread", images=1))
    argv = inv.argv
    assert argv[-3:] == ["resume", "01a2-thread", "-"]
    assert all(not a.startswith("--") for a in argv[-3:])
    assert argv.index("--image=" + str(tmp_path / "assets" / "image-1.png")) < argv.index("resume")


def test_argv_tools_on_uses_workspace_write_and_user_config_opt_in(tmp_path: Path) -> None:
    argv = runner(allow_tools=True, user_config=True).invocation(make_turn(tmp_path)).argv
    assert argv[argv.index("-s") + 1] == "workspace-write"
    assert "shell_tool" not in argv and "--ignore-user-config" not in argv
    assert not any(a.startswith("model_instructions_file") for a in argv)


def test_new_parser_gets_the_threads_previous_total(tmp_path: Path) -> None:
    r = runner()
    first = r.new_parser(make_turn(tmp_path))
    run(first, fixture_lines("json.stdout"), 0)
    parser = r.new_parser(make_turn(tmp_path, resume="01a211b1-2d07-7d32-8b48-61c5e0f9cfea"))
    assert parser.baseline == Usage(input_tokens=5265, output_tokens=3)
    assert r.new_parser(make_turn(tmp_path, resume="other")).baseline is None


@pytest.mark.anyio
async def test_check_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "CODEX_API_KEY", "CODEX_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "codex-home"
    home.mkdir()
    ok, fix = await runner(env={"CODEX_HOME": str(home)}).check_auth()
    assert ok is False and fix is not None and "codex login" in fix and "OPENAI_API_KEY" in fix
    (home / "auth.json").write_text("{}")
    assert (await runner(env={"CODEX_HOME": str(home)}).check_auth())[0] is True
    assert (await runner(env={"CODEX_HOME": str(tmp_path), "OPENAI_API_KEY": "k"}).check_auth())[0] is True


def test_capabilities_are_honest() -> None:
    caps = CodexRunner.capabilities
    assert caps.token_streaming is False and caps.sessions and caps.images and caps.system_prompt
