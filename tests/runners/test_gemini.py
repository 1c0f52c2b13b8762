"""Gemini CLI dialect: argv, stdin and the stream-json parser over real captures in tests/fixtures/gemini/.

The ``*-stream.result.json`` files are the ``result`` lines the real CLI 0.61.0 printed against the fake model API
answering 429 / 500 / 400 (context) / 404 and a refused connection; the other files come from the shared captures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    ModelNotFound,
    RateLimited,
    SessionNotFound,
    UpstreamError,
)
from llm_runners.runners.base import Turn
from llm_runners.runners.gemini import SAFE_SETTINGS, GeminiParser, GeminiRunner
from llm_runners.types import ChatRequest, Done, TextDelta, Usage, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"


def run(parser: GeminiParser, lines: list[bytes], returncode: int, stderr: str = "") -> list[object]:
    events: list[object] = []
    for line in lines:
        events.extend(parser.feed(line))
    events.extend(parser.finish(returncode, stderr))
    return events


def fixture_lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines()


def test_stream_json_deltas_usage_and_done() -> None:
    parser = GeminiParser(model="auto-requested")
    events = run(parser, fixture_lines("stream-json.stdout"), 0)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong", " from", " fake"]
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert usage == [Usage(input_tokens=8536, output_tokens=7, cached_tokens=0)]
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop"
    assert done.session_id == "f04ac3f8-add1-40a0-b2e0-03f9eda6adc7"
    # init.model is "auto" in this capture: the requested model is kept instead
    assert done.model == "auto-requested"
    assert parser.session_id == done.session_id


def test_cached_tokens_reported_as_given() -> None:
    line = b'{"type":"result","status":"success","stats":{"input_tokens":100,"output_tokens":3,"cached":7,"input":93}}'
    events = run(GeminiParser(), [line], 0)
    assert events[0] == UsageEvent(Usage(input_tokens=100, output_tokens=3, cached_tokens=7))


def test_noise_and_user_echo_are_ignored() -> None:
    lines = [
        b"Warning: 256-color support not detected.",
        b"",
        b'{"type":"message","role":"user","content":"hi"}',
        b'{"type":"init","session_id":"s1","model":"gemini-2.5-flash"}',
        b'{"type":"message","role":"assistant","content":"ok","delta":true}',
        b'{"type":"result","status":"success","stats":{}}',
    ]
    events = run(GeminiParser(), lines, 0, stderr="Ripgrep is not available. Falling back to GrepTool.")
    assert events[0] == TextDelta("ok")
    assert events[-1] == Done(finish_reason="stop", model="gemini-2.5-flash", session_id="s1")


@pytest.mark.parametrize(
    ("fixture", "returncode", "error", "text"),
    [
        ("err401-stream.stdout", 145, AuthenticationError, "API key not valid"),
        ("err429-stream.result.json", 173, RateLimited, "Quota exceeded"),
        ("err500-stream.result.json", 244, UpstreamError, "Internal error"),
        ("err400-stream.result.json", 144, ContextLengthExceeded, "exceeds the maximum"),
        ("err404-stream.result.json", 148, ModelNotFound, "is not found"),
        ("refused-stream.result.json", 1, UpstreamError, "fetch failed"),
    ],
)
def test_api_errors(fixture: str, returncode: int, error: type[Exception], text: str) -> None:
    parser = GeminiParser()
    with pytest.raises(error) as info:
        run(parser, fixture_lines(fixture), returncode, stderr="Warning: 256-color support not detected.")
    assert type(info.value) is error
    assert text in str(info.value)


def test_exit_code_alone_gives_the_status() -> None:
    # a 429 whose message carries no JSON: the exit code (429 mod 256) still classifies it
    line = json.dumps({"type": "result", "status": "error", "error": {"message": "[API Error: slow down]"}})
    with pytest.raises(RateLimited):
        run(GeminiParser(), [line.encode()], 173)


def test_unknown_resume_id_is_session_not_found() -> None:
    stderr = 'Error resuming session: Invalid session identifier "nope".\n'
    with pytest.raises(SessionNotFound):
        run(GeminiParser(resume="nope"), [], 42, stderr)


def test_missing_auth_method() -> None:
    with pytest.raises(AuthenticationError) as info:
        run(GeminiParser(), [], 41, "Invalid auth method selected.")
    assert "GEMINI_API_KEY" in str(info.value)


def test_clean_exit_without_result_is_an_error() -> None:
    with pytest.raises(UpstreamError):
        run(GeminiParser(), [b'{"type":"init","session_id":"s"}'], 0)


def make_turn(tmp_path: Path, **kw: object) -> Turn:
    assets = tmp_path / "assets"
    workdir = tmp_path / "work"
    assets.mkdir(parents=True)
    workdir.mkdir()
    values: dict[str, object] = {
        "request": ChatRequest(messages=[{"role": "user", "content": "hi"}]),
        "prompt": "line one\n\n  line two  \n",
        "system": None,
        "model": "gemini-2.5-flash",
        "resume": None,
        "session": "11111111-2222-4333-8444-555555555555",
        "images": [],
        "image_parts": [],
        "workdir": workdir,
        "assets": assets,
    }
    values.update(kw)
    return Turn(**values)  # type: ignore[arg-type]


def runner() -> GeminiRunner:
    return GeminiRunner(binary="/bin/true")


def test_argv_prompt_on_stdin_and_safe_settings(tmp_path: Path) -> None:
    turn = make_turn(tmp_path)
    inv = runner().invocation(turn)
    assert inv.argv[1:7] == ["-p", "", "-o", "stream-json", "-m", "gemini-2.5-flash"]
    assert inv.argv[inv.argv.index("--session-id") + 1] == turn.session
    assert "--resume" not in inv.argv
    assert inv.stdin == b"line one\n\n  line two  \n"
    assert "line one" not in " ".join(inv.argv)
    assert inv.env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"
    assert "GEMINI_SYSTEM_MD" not in inv.env
    settings = json.loads((turn.workdir / ".gemini" / "settings.json").read_text())
    assert settings == SAFE_SETTINGS and settings["tools"]["core"] == []


def test_argv_resume_system_prompt_and_images(tmp_path: Path) -> None:
    image = tmp_path / "assets" / "image-1.png"
    turn = make_turn(tmp_path, resume="abc", session=None, system="Be terse.", images=[image])
    inv = runner().invocation(turn)
    assert inv.argv[inv.argv.index("--resume") + 1] == "abc"
    assert "--session-id" not in inv.argv
    assert Path(inv.env["GEMINI_SYSTEM_MD"]).read_text() == "Be terse."
    assert inv.argv[inv.argv.index("--include-directories") + 1] == str(turn.assets)
    assert inv.stdin is not None and inv.stdin.endswith(f"\n\n@{image}".encode())


def test_default_model_when_turn_has_none(tmp_path: Path) -> None:
    inv = runner().invocation(make_turn(tmp_path, model=None))
    assert inv.argv[inv.argv.index("-m") + 1] == GeminiRunner.default_model


def test_allow_tools_keeps_cli_defaults_and_cwd_is_never_written(tmp_path: Path) -> None:
    turn = make_turn(tmp_path)
    inv = GeminiRunner(binary="/bin/true", allow_tools=True).invocation(turn)
    assert "--allowed-mcp-server-names" not in inv.argv
    assert "tools" not in json.loads((turn.workdir / ".gemini" / "settings.json").read_text())
    other = make_turn(tmp_path / "x")
    GeminiRunner(binary="/bin/true", cwd=str(other.workdir)).invocation(other)
    assert not (other.workdir / ".gemini").exists()


@pytest.mark.anyio
async def test_check_auth(tmp_path: Path) -> None:
    ok = GeminiRunner(env={"HOME": str(tmp_path), "GEMINI_API_KEY": "k"})
    assert await ok.check_auth() == (True, None)
    missing = GeminiRunner(env={"HOME": str(tmp_path), "GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""})
    authenticated, fix = await missing.check_auth()
    assert authenticated is False and fix is not None and "GEMINI_API_KEY" in fix
