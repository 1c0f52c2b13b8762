"""Cline dialect: argv, stdin, the private home and the ``--json`` parser over real captures in tests/fixtures/cline/.

``json.stdout`` and ``err401.stdout`` come from the shared captures; ``err429``, ``errcontext`` and ``err404`` are
the real CLI 3.0.65 against the fake model API answering 429 / 400 context_length_exceeded / 404."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    ProviderTimeout,
    RateLimited,
    UpstreamError,
)
from llm_runners.runners.base import Turn
from llm_runners.runners.cline import TOOL_IDS, ClineParser, ClineRunner, ClineWatch
from llm_runners.types import ChatRequest, Done, TextDelta, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cline"


@pytest.fixture(autouse=True)
def _private_homes_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for name in ("CLINE_DIR", "CLINE_DATA_DIR", "CLINE_PROVIDER_SETTINGS_PATH", "CLINE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def run(parser: ClineParser, name: str, returncode: int, stderr: str = "") -> list[object]:
    events: list[object] = []
    for line in (FIXTURES / name).read_bytes().splitlines():
        events.extend(parser.feed(line))
    events.extend(parser.finish(returncode, stderr))
    return events


def test_deltas_usage_and_done() -> None:
    events = run(ClineParser(model="asked"), "json.stdout", 0)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong", " from", " fake"]
    [usage] = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert (usage.input_tokens, usage.output_tokens, usage.cost_usd) == (11, 3, None)  # a cost of 0 is no report
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.model == "fake-model"
    assert done.session_id is None


@pytest.mark.parametrize(
    ("name", "error", "text"),
    [
        ("err401.stdout", AuthenticationError, "Incorrect API key"),
        ("err429.stdout", RateLimited, "Rate limit reached"),
        ("errcontext.stdout", ContextLengthExceeded, "context window"),
        ("err404.stdout", ModelNotFound, "does not exist"),
    ],
)
def test_errors_from_real_output(name: str, error: type[LLMError], text: str) -> None:
    with pytest.raises(error, match=text) as info:
        run(ClineParser(), name, 1, '{"ts":"…","type":"error","message":"…"}')
    assert type(info.value) is error and info.value.provider == "cline"


def test_done_without_run_result_is_still_the_answer() -> None:
    parser = ClineParser(model="asked")
    events: list[object] = []
    for line in (FIXTURES / "json.stdout").read_bytes().splitlines()[:-1]:  # the run_result line is missing
        events.extend(parser.feed(line))
    events.extend(parser.finish(0, ""))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong", " from", " fake"]
    assert [(e.usage.input_tokens, e.usage.output_tokens) for e in events if isinstance(e, UsageEvent)] == [(11, 3)]
    assert isinstance(events[-1], Done) and events[-1].model == "asked"


def test_an_error_only_on_stderr_and_a_silent_exit() -> None:
    parser = ClineParser()
    stderr = 'Warning: AI SDK Warning System\n{"ts":"x","type":"error","message":"Incorrect API key provided: k"}\n'
    with pytest.raises(AuthenticationError, match="Incorrect API key"):
        list(parser.finish(1, stderr))
    with pytest.raises(UpstreamError, match="without a run result"):
        list(ClineParser().finish(0, ""))


def test_the_watch_fires_only_while_the_api_is_silent() -> None:
    parser = ClineParser()
    watch = ClineWatch(parser, deadline=0.05)
    assert watch.check() is None  # no iteration started
    list(parser.feed(b'{"type":"agent_event","event":{"type":"iteration_start","iteration":1}}'))
    time.sleep(0.06)
    error = watch.check()
    assert isinstance(error, ProviderTimeout) and "0.05 s" in error.message
    list(parser.feed(b'{"type":"agent_event","event":{"type":"content_start","contentType":"text","text":"a"}}'))
    assert watch.check() is None  # the API answered: a slow answer is no retry loop


def _turn(runner: ClineRunner, tmp_path: Path, **kw: object) -> Turn:
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], **kw)
    return Turn(
        request=request,
        prompt="hi",
        system=request.system or None,
        model=request.model,
        resume=None,
        session=None,
        images=[],
        image_parts=[],
        workdir=tmp_path,
        assets=tmp_path,
    )


def test_argv_stdin_and_the_private_home(tmp_path: Path) -> None:
    user_home, data_dir = tmp_path / "user", tmp_path / "user-data"
    settings = data_dir / "settings"  # the user's CLINE_DATA_DIR
    settings.mkdir(parents=True)
    (settings / "providers.json").write_text('{"lastUsedProvider": "x", "providers": {"x": {"settings": {}}}}')
    (settings / "cline_mcp_settings.json").write_text("{}")
    runner = ClineRunner(binary="/bin/true", env={"HOME": str(user_home), "CLINE_DATA_DIR": str(data_dir)})
    turn = _turn(runner, tmp_path, model="m-1")
    turn.system = "SYS"
    invocation = runner.invocation(turn)
    assert invocation.argv[1:] == ["--json", "--auto-approve", "false", "-s", "SYS", "-m", "m-1", " "]
    assert invocation.stdin == b"hi"
    env = runner.child_env()
    home = Path(env["HOME"])
    assert home != user_home and "CLINE_DATA_DIR" not in env and env["CLINE_SESSION_BACKEND_MODE"] == "local"
    own = home / ".cline" / "data" / "settings"
    assert sorted(p.name for p in own.iterdir()) == ["global-settings.json", "providers.json"]
    assert json.loads((own / "global-settings.json").read_text())["disabledTools"] == list(TOOL_IDS)
    runner.allow_tools = True
    assert "disabledTools" not in json.loads(
        (Path(runner.child_env()["HOME"]) / own.relative_to(home) / "global-settings.json").read_text()
    )
    assert "--auto-approve" not in runner.invocation(turn).argv


def test_user_config_keeps_the_users_home(tmp_path: Path) -> None:
    runner = ClineRunner(binary="/bin/true", env={"HOME": str(tmp_path)}, user_config=True)
    assert runner.child_env()["HOME"] == str(tmp_path)
