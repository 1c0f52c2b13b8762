"""Gemini CLI dialect: argv, stdin and the stream-json parser over real captures in tests/fixtures/gemini/.

The ``*-stream.result.json`` files are the ``result`` lines the real CLI 0.61.0 printed against the fake model API
answering 429 / 500 / 400 (context) / 404 and a refused connection; the other files come from the shared captures.
"""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import anyio
import pytest

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    ModelNotFound,
    RateLimited,
    SessionNotFound,
    UpstreamError,
)
from llm_runners.runners.base import Turn, read_jsonc
from llm_runners.runners.gemini import (
    SAFE_SETTINGS,
    TOOLS_SETTINGS,
    GeminiParser,
    GeminiRunner,
    auth_env,
)
from llm_runners.types import ChatRequest, Done, TextDelta, Usage, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"


@pytest.fixture(autouse=True)
def _private_homes_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runners' private CLI homes (mkdtemp) land in this test's tmp_path, and HOME is a throw-away one."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    monkeypatch.delenv("GEMINI_CLI_HOME", raising=False)


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


#: what the runner writes by default: tools off, and 1 attempt per API call (``retries=0``)
RUNNER_SETTINGS = {**SAFE_SETTINGS, "general": {**SAFE_SETTINGS["general"], "maxAttempts": 1}}


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
    assert settings == RUNNER_SETTINGS and settings["tools"]["core"] == []


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


# ---------------------------------------------------------------------------------------------- private CLI home


def user_home(tmp_path: Path) -> Path:
    """A user's real home with everything the CLI would read from it."""
    home = tmp_path / "user"
    gemini = home / ".gemini"
    (gemini / "extensions" / "ext").mkdir(parents=True)
    (gemini / "commands").mkdir()
    settings = (
        "{\n  // the user's choice of login\n"
        '  "security": {"auth": {"selectedType": "oauth-personal"}, "folderTrust": {"enabled": true}},\n'
        '  "mcpServers": {"mine": {"command": "my-mcp", "trust": true}}, /* and more */\n'
        '  "general": {"maxAttempts": 3}, "model": {"name": "x // not a comment"}\n}'
    )
    (gemini / "settings.json").write_text(settings)
    (gemini / "oauth_creds.json").write_text('{"refresh_token": "r"}')
    (gemini / "google_accounts.json").write_text('{"active": "me@example.com"}')
    (gemini / "installation_id").write_text("inst-1")
    (gemini / "GEMINI.md").write_text("personal memory")
    (gemini / ".env").write_text("export GEMINI_API_KEY=k1\nGEMINI_SYSTEM_MD=/x.md\nGOOGLE_CLOUD_PROJECT: p1\n")
    (home / ".env").write_text("GOOGLE_API_KEY=from-home-env\n")
    return home


def test_private_home_holds_only_what_auth_needs(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    r = GeminiRunner(binary="/bin/true", env={"HOME": str(home)})
    r.invocation(make_turn(tmp_path))
    private = Path(r.child_env()["GEMINI_CLI_HOME"])
    assert private.is_dir() and private != home and home not in private.parents
    own = private / ".gemini"
    assert sorted(p.name for p in own.iterdir()) == [
        ".env",
        "google_accounts.json",
        "oauth_creds.json",
        "settings.json",
    ]
    for name in ("oauth_creds.json", "google_accounts.json"):
        assert (own / name).is_symlink() and (own / name).resolve() == (home / ".gemini" / name).resolve()
    settings = json.loads((own / "settings.json").read_text())
    # the user's login choice and model selection carry over; their maxAttempts, MCP server and trust do not
    assert settings == {
        **RUNNER_SETTINGS,
        "security": {"auth": {"selectedType": "oauth-personal"}},
        "model": {"name": "x // not a comment"},
    }
    assert (own / ".env").read_text() == "export GEMINI_API_KEY=k1\nGOOGLE_CLOUD_PROJECT: p1\n"
    assert stat.S_IMODE((own / ".env").stat().st_mode) == 0o600
    # stable for the runner's lifetime (sessions live in it), also for --version and health
    assert r.child_env()["GEMINI_CLI_HOME"] == str(private)


def test_token_refresh_writes_through_to_the_users_file_and_aclose_keeps_it(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    r = GeminiRunner(binary="/bin/true", env={"HOME": str(home)})
    private = r.cli_home()
    # what the CLI does on a refresh: fs.writeFile(path), which follows the link
    with open(private / ".gemini" / "oauth_creds.json", "w") as f:
        f.write('{"refresh_token": "r2"}')
    assert (home / ".gemini" / "oauth_creds.json").read_text() == '{"refresh_token": "r2"}'
    anyio.run(r.aclose)
    assert not private.exists()
    assert (home / ".gemini" / "oauth_creds.json").read_text() == '{"refresh_token": "r2"}'
    assert (home / ".gemini" / "GEMINI.md").is_file()


def test_private_home_follows_the_user_logging_in_later(tmp_path: Path) -> None:
    home = tmp_path / "user"
    r = GeminiRunner(binary="/bin/true", env={"HOME": str(home)})
    own = r.cli_home() / ".gemini"
    assert sorted(p.name for p in own.iterdir()) == ["settings.json"]
    assert json.loads((own / "settings.json").read_text()) == RUNNER_SETTINGS
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "oauth_creds.json").write_text("{}")
    (home / ".env").write_text("GOOGLE_API_KEY=g\nOTHER=x\n")  # used when there is no ~/.gemini/.env
    r.cli_home()
    assert (own / "oauth_creds.json").is_symlink() and (own / ".env").read_text() == "GOOGLE_API_KEY=g\n"
    (home / ".env").unlink()
    r.cli_home()
    assert not (own / ".env").exists()


def test_gemini_cli_home_of_the_env_is_the_users_home(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    r = GeminiRunner(binary="/bin/true", env={"HOME": str(tmp_path / "elsewhere"), "GEMINI_CLI_HOME": str(home)})
    r.invocation(make_turn(tmp_path))
    assert r.child_env()["GEMINI_CLI_HOME"] != str(home)  # the private home wins over the operator's
    assert (Path(r.child_env()["GEMINI_CLI_HOME"]) / ".gemini" / "oauth_creds.json").is_symlink()


def test_user_config_runs_in_the_users_home(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    r = GeminiRunner(binary="/bin/true", env={"HOME": str(home)}, user_config=True)
    inv = r.invocation(make_turn(tmp_path))
    assert "GEMINI_CLI_HOME" not in inv.env and "GEMINI_CLI_HOME" not in r.child_env()
    assert r.cli_home() == home
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("llm-runners-gemini-home-")]


def test_operator_settings_and_allow_tools(tmp_path: Path) -> None:
    operator = {"general": {"maxAttempts": 1}, "mcp": {"allowed": ["ops"]}}
    r = GeminiRunner(binary="/bin/true", env={"HOME": str(tmp_path / "u")}, allow_tools=True, settings=operator)
    turn = make_turn(tmp_path)
    r.invocation(turn)
    expected = {
        **TOOLS_SETTINGS,
        "general": {**TOOLS_SETTINGS["general"], "maxAttempts": 1},
        "mcp": {"allowed": ["ops"]},
    }
    assert json.loads((turn.workdir / ".gemini" / "settings.json").read_text()) == expected
    private = Path(r.child_env()["GEMINI_CLI_HOME"]) / ".gemini" / "settings.json"
    assert json.loads(private.read_text()) == expected


def test_read_settings_and_auth_env(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"a": "http://x//y", /* c */ "b": [1, 2] // tail\n}')
    assert read_jsonc(path) == {"a": "http://x//y", "b": [1, 2]}
    path.write_text("{broken")
    assert read_jsonc(path) == {} and read_jsonc(tmp_path / "missing.json") == {}
    text = "# c\nGEMINI_API_KEY='a b'\n  export GOOGLE_GENAI_USE_VERTEXAI=true\nNODE_OPTIONS=--x\nGEMINI_API_KEYS=n\n"
    assert auth_env(text) == "GEMINI_API_KEY='a b'\n  export GOOGLE_GENAI_USE_VERTEXAI=true\n"


@pytest.mark.anyio
async def test_version_runs_with_the_same_cli_home(tmp_path: Path) -> None:
    script = tmp_path / "fake-gemini"
    script.write_text('#!/bin/sh\necho "0.61.0 $GEMINI_CLI_HOME"\n')
    script.chmod(0o755)
    r = GeminiRunner(binary=str(script), env={"HOME": str(tmp_path / "u")})
    out = await r.run_quiet([str(script), "--version"])
    assert out.strip() == f"0.61.0 {r.cli_home()}"
    assert await r.version() == "0.61.0"
    await r.aclose()


@pytest.mark.anyio
async def test_check_auth_reads_the_users_login_files_and_dotenv(tmp_path: Path) -> None:
    home = tmp_path / "u"
    (home / ".gemini").mkdir(parents=True)
    env = {"HOME": str(home), "GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}
    assert (await GeminiRunner(env=env).check_auth())[0] is False
    (home / ".gemini" / ".env").write_text("GEMINI_API_KEY=\n")
    assert (await GeminiRunner(env=env).check_auth())[0] is False
    (home / ".gemini" / ".env").write_text("GEMINI_API_KEY=k\n")
    assert await GeminiRunner(env=env).check_auth() == (True, None)
    (home / ".gemini" / ".env").unlink()
    (home / ".gemini" / "gemini-credentials.json").write_text("x")
    assert await GeminiRunner(env=env).check_auth() == (True, None)
