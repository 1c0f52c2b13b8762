"""Continue dialect: argv, the per-run config, sessions, the log watch and error classification over real captures
in tests/fixtures/continue/ (stderr of the real cn 1.5.47 against the fake model API answering 401 / 400 context /
404, its verbose log during a 500 retry loop, and a session file)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    SessionNotFound,
    UpstreamError,
)
from llm_runners.runners.base import Turn
from llm_runners.runners.continue_cli import (
    SESSION_VAR,
    ContinueParser,
    ContinueRunner,
    ContinueWatch,
    choose_model,
    run_config,
    user_models,
)
from llm_runners.types import ChatRequest, Done, TextDelta, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "continue"
MODEL = {"name": "mine", "provider": "openai", "model": "gpt-x", "apiKey": "k", "apiBase": "http://127.0.0.1:1/v1"}


@pytest.fixture(autouse=True)
def _private_dirs_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("CONTINUE_GLOBAL_DIR", raising=False)


def parser_for(tmp_path: Path, session: Path | None = None) -> ContinueParser:
    target = tmp_path / "s.json"
    if session is not None:
        shutil.copy(session, target)
    return ContinueParser(session_file=target, session_id="sid-1", model="asked", log=tmp_path / "cn.log")


def test_answer_and_usage_from_the_session_file(tmp_path: Path) -> None:
    parser = parser_for(tmp_path, FIXTURES / "session.json")
    events = [*parser.feed(b"pong from fake"), *parser.finish(0, "")]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong from fake"]
    [usage] = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert (usage.input_tokens, usage.output_tokens, usage.cost_usd) == (1378, 3, None)
    done = events[-1]
    assert isinstance(done, Done) and done.session_id == "sid-1" and done.model == "fake-model"


def test_a_multi_line_answer_keeps_its_lines(tmp_path: Path) -> None:
    parser = parser_for(tmp_path)
    events = [*parser.feed(b"line one"), *parser.feed(b""), *parser.feed(b"  line three"), *parser.finish(0, "")]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["line one\n\n  line three"]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("err401.stderr", AuthenticationError),
        ("errcontext.stderr", ContextLengthExceeded),
        ("err404.stderr", ModelNotFound),
    ],
)
def test_errors_from_real_stderr(tmp_path: Path, name: str, error: type[LLMError]) -> None:
    stderr = (FIXTURES / name).read_text()
    with pytest.raises(error) as info:
        list(parser_for(tmp_path).finish(1, stderr))
    assert type(info.value) is error and info.value.provider == "continue"


def test_an_unknown_failure_quotes_stderr(tmp_path: Path) -> None:
    with pytest.raises(UpstreamError, match="exited with code 2"):
        list(parser_for(tmp_path).finish(2, "something odd happened\n"))


def test_the_watch_reports_the_last_retried_error_after_the_deadline(tmp_path: Path) -> None:
    log = tmp_path / "cn.log"
    log.write_text('2026-12-01 20:00:00.000 [old] [debug]: Retry attempt {"error":"429 from an earlier turn"}\n')
    parser = parser_for(tmp_path)  # the run starts here: earlier lines are not its own
    watch = ContinueWatch(parser, deadline=0.05)
    assert watch.check() is None
    lines = (FIXTURES / "retry500.log").read_text()
    with log.open("a") as f:
        f.write(lines[: len(lines) // 2])  # a partial line is kept until its end arrives
    watch.check()
    with log.open("a") as f:
        f.write(lines[len(lines) // 2 :])
    time.sleep(0.06)
    error = watch.check()
    assert isinstance(error, UpstreamError) and "500 The server had an error" in error.message
    assert "retried it 2 times" in error.message


def test_choose_model_and_the_run_config() -> None:
    other = {**MODEL, "name": "other", "model": "gpt-y"}
    assert choose_model([MODEL, other], None) == [MODEL, other]
    assert choose_model([MODEL, other], "gpt-y")[0] == other
    assert choose_model([MODEL, other], "other")[0] == other
    chosen = choose_model([MODEL, other], "brand-new")
    assert chosen[0] == {**MODEL, "name": "brand-new", "model": "brand-new"} and chosen[1] == other
    config = yaml.safe_load(run_config([MODEL], "SYSTEM\nwith: a colon"))
    assert config["models"] == [MODEL] and config["rules"] == ["SYSTEM\nwith: a colon"]
    assert "rules" not in json.loads(run_config([MODEL], None))


def test_user_models_take_only_the_models() -> None:
    text = yaml.safe_dump({"name": "x", "models": [MODEL, "not a mapping"], "mcpServers": [{"name": "m"}]})
    assert user_models(text) == [MODEL]
    assert user_models("") == [] and user_models("models: [unclosed") == [] and user_models("- a list") == []


def _turn(tmp_path: Path, *, resume: str | None = None, model: str | None = None) -> Turn:
    return Turn(
        request=ChatRequest(messages=[{"role": "user", "content": "hi"}]),
        prompt="hi",
        system="SYS",
        model=model,
        resume=resume,
        session=None if resume else "sess-new",
        images=[],
        image_parts=[],
        workdir=tmp_path,
        assets=tmp_path,
    )


def test_argv_env_and_per_conversation_global_dirs(tmp_path: Path) -> None:
    user_home = tmp_path / "user"
    (user_home / ".continue").mkdir(parents=True)
    (user_home / ".continue" / "config.yaml").write_text(yaml.safe_dump({"models": [MODEL], "rules": ["USER"]}))
    runner = ContinueRunner(binary="/bin/true", env={"HOME": str(user_home)})
    invocation = runner.invocation(_turn(tmp_path, model="gpt-z"))
    argv = invocation.argv
    assert argv[argv.index("--exclude") + 1] == "*" and argv[-1] == "-p" and "--resume" not in argv
    assert invocation.stdin == b"hi" and invocation.env[SESSION_VAR] == "sess-new"
    config = yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text())
    assert config["rules"] == ["SYS"] and config["models"][0]["model"] == "gpt-z"
    global_dir = Path(invocation.env["CONTINUE_GLOBAL_DIR"])
    assert global_dir != user_home / ".continue" and global_dir.name == "sess-new"
    with pytest.raises(SessionNotFound):  # its session file was never written
        runner.invocation(_turn(tmp_path, resume="sess-new"))
    (global_dir / "sessions").mkdir()
    (global_dir / "sessions" / "sess-new.json").write_text("{}")
    resumed = runner.invocation(_turn(tmp_path, resume="sess-new"))
    assert "--resume" in resumed.argv and SESSION_VAR not in resumed.env
    assert resumed.env["CONTINUE_GLOBAL_DIR"] == str(global_dir)
    with pytest.raises(SessionNotFound):
        runner.invocation(_turn(tmp_path, resume="../escape"))


def test_no_model_is_an_authentication_error_with_the_fix(tmp_path: Path) -> None:
    runner = ContinueRunner(binary="/bin/true", env={"HOME": str(tmp_path)})
    with pytest.raises(AuthenticationError, match=r"config\.yaml"):
        runner.invocation(_turn(tmp_path))


CN_STANDIN = """#!{python} -IS
import json, os, sys
args = sys.argv[1:]
config = json.load(open(args[args.index("--config") + 1]))
key = config["models"][0]["apiKey"]
home = os.environ["CONTINUE_GLOBAL_DIR"]
os.makedirs(os.path.join(home, "logs"), exist_ok=True)
with open(os.path.join(home, "logs", "cn.log"), "a") as log:  # what --verbose writes: headers and bodies
    log.write("request headers: {{'Authorization': 'Bearer " + key + "'}}\\n")
sys.stdin.read()
if os.environ.get("STANDIN_FAIL"):
    sys.stderr.write(json.dumps({{"status": "error", "message": "401 Incorrect API key provided: " + key}}) + "\\n")
    sys.exit(1)
os.makedirs(os.path.join(home, "sessions"), exist_ok=True)
sid = os.environ["CONTINUE_CLI_TEST_SESSION_ID"]
json.dump({{"history": []}}, open(os.path.join(home, "sessions", sid + ".json"), "w"))
print("the answer")
"""


@pytest.mark.parametrize("fail", [False, True])
def test_the_verbose_log_with_the_key_goes_with_the_run_and_the_key_never_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    import sys

    import anyio

    from llm_runners.errors import LLMError as _LLMError

    key = "cn-key-MARKER-5d1e77aa"
    user_home = tmp_path / "user"
    (user_home / ".continue").mkdir(parents=True)
    (user_home / ".continue" / "config.yaml").write_text(yaml.safe_dump({"models": [{**MODEL, "apiKey": key}]}))
    binary = tmp_path / "cn"
    binary.write_text(CN_STANDIN.format(python=sys.executable))
    binary.chmod(0o755)
    env = {"HOME": str(user_home), **({"STANDIN_FAIL": "1"} if fail else {})}
    runner = ContinueRunner(binary=str(binary), env=env, timeout=30)

    async def run() -> str:
        try:
            response = await runner.complete(ChatRequest(messages=[{"role": "user", "content": "hi"}]))
            return response.content
        except _LLMError as exc:
            return f"{exc} | {exc.detail} | {exc.openai_envelope()}"
        finally:
            root = runner.root()
            logs = sorted(str(p) for p in root.rglob("cn.log"))
            await runner.aclose()
            assert logs == [], logs  # removed when the run ended, before the runner closed

    out = anyio.run(run)
    assert "MARKER" not in out
    assert ("401" in out) if fail else (out == "the answer")
