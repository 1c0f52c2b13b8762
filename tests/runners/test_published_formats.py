"""The runners built from published formats only (cursor_agent, goose, kiro, warp; ``verified=False``): each real
runner class drives a stand-in binary through the real process layer. The stand-in (a Python script written to
``tmp_path`` under the CLI's binary name) logs its argv, stdin and environment and replays a transcript from
``tests/fixtures/<cli>/`` written from the CLI's sources (see each runner module's docstring), so argv, tools-off
switches, prompt delivery, error classification, session resumption and process cleanup are checked end to end."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from llm_runners.acp import DIALECTS, AcpRunner
from llm_runners.errors import (
    AuthenticationError,
    BinaryNotFound,
    ContextLengthExceeded,
    InvalidRequest,
    LLMError,
    ProviderTimeout,
    RateLimited,
    UpstreamError,
)
from llm_runners.provider import collect
from llm_runners.runners import REGISTRY, CLIRunner
from llm_runners.runners.cursor_agent import CursorAgentRunner
from llm_runners.runners.goose import GooseRunner, classify_error
from llm_runners.runners.kiro import KiroRunner
from llm_runners.runners.warp import WarpRunner
from llm_runners.sessions import SessionStore
from llm_runners.testing import procs
from llm_runners.types import ChatRequest, Done, Message, StreamEvent, TextDelta, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

STAND_IN = """#!{python}
import json, os, sys, time
from pathlib import Path

argv = sys.argv[1:]
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
keep = ("GOOSE_MODE", "NO_COLOR", "CURSOR_API_KEY", "KIRO_API_KEY", "WARP_API_KEY")
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps({{"argv": argv, "stdin": stdin, "env": {{k: os.environ.get(k) for k in keep}},
                          "pid": os.getpid()}}) + "\\n")
if argv[:1] == ["--version"]:
    print("9.9.9")
    sys.exit(0)
scenario = os.environ["STANDIN_SCENARIO"]
if scenario == "hang":
    time.sleep(120)
base = Path(os.environ["STANDIN_DIR"])
resumed = any(a.startswith("--resume") for a in argv)
if resumed and any(base.glob(scenario + "-resume.*")):
    scenario += "-resume"
out, err, code = (base / (scenario + s) for s in (".stdout", ".stderr", ".exit"))
for line in (out.read_bytes().splitlines(keepends=True) if out.exists() else []):
    sys.stdout.buffer.write(line)
    sys.stdout.flush()
    time.sleep(0.02)
if err.exists():
    sys.stderr.write(err.read_text())
sys.exit(int(code.read_text()) if code.exists() else 0)
"""

RUNNERS: dict[str, type[CLIRunner]] = {
    "cursor_agent": CursorAgentRunner,
    "goose": GooseRunner,
    "kiro": KiroRunner,
    "warp": WarpRunner,
}
#: what makes each runner's auth check pass (the stand-in ignores it)
KEYS = {"CURSOR_API_KEY": "k", "KIRO_API_KEY": "k", "WARP_API_KEY": "k", "GOOSE_PROVIDER": "openai"}


def stand_in(tmp_path: Path, cls: type[CLIRunner]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / cls.binary_name
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    return script


def make(tmp_path: Path, cls: type[CLIRunner], scenario: str = "ok", **kw: Any) -> CLIRunner:
    script = stand_in(tmp_path, cls)
    env = {
        "STANDIN_LOG": str(tmp_path / "calls.jsonl"),
        "STANDIN_DIR": str(FIXTURES / cls.name),
        "STANDIN_SCENARIO": scenario,
        "HOME": str(tmp_path),
        **KEYS,
    }
    options: dict[str, Any] = {"timeout": 30.0, "idle_timeout": 30.0, "sessions": SessionStore(), **kw}
    if cls is WarpRunner:
        options.setdefault("profile", "NoToolsProfile1")
    return cls(binary=str(script), env=env, **options)


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "calls.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [e for e in entries if e["argv"][:1] != ["--version"]]


def ask(*texts: str, conversation: str | None = None, system: str | None = None) -> ChatRequest:
    messages = [Message(role="system", content=system)] if system else []
    for i, text in enumerate(texts):
        messages.append(Message(role="user" if i % 2 == 0 else "assistant", content=text))
    return ChatRequest(messages=messages, conversation=conversation)


async def events_of(runner: CLIRunner, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in runner.stream(request)]


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def prompt_of(call: dict[str, Any], name: str) -> str:
    """The prompt as the CLI received it: stdin (goose), after ``--`` (cursor, kiro) or ``--prompt`` (warp)."""
    argv = call["argv"]
    if name == "goose":
        return str(call["stdin"])
    if name == "warp":
        return str(argv[argv.index("--prompt") + 1])
    return str(argv[argv.index("--") + 1])


def gone_within(marker: Path, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while procs.running(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    return procs.running(marker)


# ------------------------------------------------------------------------------------------------ registry
def test_the_four_are_registered_unverified_each_with_an_install_hint_that_is_not_npm() -> None:
    for name, cls in RUNNERS.items():
        assert REGISTRY[name] is cls
        assert cls.capabilities.verified is False
        assert cls.install_hint().startswith("install ") and "npm" not in cls.install_hint()
        doc = sys.modules[cls.__module__].__doc__ or ""
        assert "Not verified" in doc and ("http" in doc or "block/goose" in doc), name  # the sources are named


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(RUNNERS))
async def test_a_missing_binary_says_so_with_the_install_line(name: str, tmp_path: Path) -> None:
    cls = RUNNERS[name]
    runner = cls(binary=str(tmp_path / "absent" / cls.binary_name), env={"HOME": str(tmp_path), **KEYS})
    health = await runner.health()
    assert (health.installed, health.ready) == (False, False)
    assert health.reason == f"`{tmp_path / 'absent' / cls.binary_name}` not found"
    assert health.fix == cls.install_hint()
    with pytest.raises(BinaryNotFound, match="Install it with `install "):
        await events_of(runner, ask("hi"))
    await runner.aclose()


# ------------------------------------------------------------------------------------------------ answers
@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(RUNNERS))
async def test_a_plain_answer_through_the_process_layer_with_tools_off_in_argv(name: str, tmp_path: Path) -> None:
    cls = RUNNERS[name]
    runner = make(tmp_path, cls, model="fake-model")
    request = ask("say pong", system="Be terse.")
    events = await events_of(runner, request)
    expected = {"kiro": "pong from fake\nsecond line", "warp": "pong from fake"}.get(name, "pong from fake")
    assert text_of(events) == expected
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"
    (call,) = calls(tmp_path)
    argv = call["argv"]
    prompt = prompt_of(call, name)
    assert "say pong" in prompt
    assert argv[argv.index("--model") + 1] == "fake-model"
    if name == "goose":
        assert argv[:5] == ["run", "--output-format", "stream-json", "-i", "-"]
        assert "--no-profile" in argv and call["env"]["GOOSE_MODE"] == "chat"  # no extensions, no tools
        assert argv[argv.index("--system") + 1] == "Be terse." and "Be terse." not in prompt
        assert argv[argv.index("--name") + 1] == events[-1].session_id
        assert [e.usage.input_tokens for e in events if isinstance(e, UsageEvent)] == [14]
    else:
        assert prompt.startswith("Be terse.\n\n")  # no system-prompt flag: in front of the prompt
    if name == "cursor_agent":
        assert argv[:5] == ["-p", "--output-format", "stream-json", "--stream-partial-output", "--trust"]
        assert argv[argv.index("--mode") + 1] == "ask" and "--force" not in argv and "--approve-mcps" not in argv
        assert events[-1].session_id == "c6b62c6f-7ead-4fd6-9922-e952131177ff"
        # the deltas and then the whole message again: the repeat adds nothing
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong", " from", " fake"]
    if name == "kiro":
        assert argv[:2] == ["chat", "--no-interactive"] and "--trust-tools=" in argv
        assert "--trust-all-tools" not in argv
    if name == "warp":
        assert argv[:5] == ["agent", "run", "--output-format", "text", "--profile"]
        assert argv[argv.index("--profile") + 1] == "NoToolsProfile1"
    assert not gone_within(tmp_path / "bin", 5.0)  # nothing left running
    await runner.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(RUNNERS))
async def test_allow_tools_is_the_operators_explicit_choice(name: str, tmp_path: Path) -> None:
    runner = make(tmp_path, RUNNERS[name], allow_tools=True)
    await events_of(runner, ask("hi"))
    (call,) = calls(tmp_path)
    argv = call["argv"]
    if name == "goose":
        assert call["env"]["GOOSE_MODE"] == "auto"
    elif name == "cursor_agent":
        assert argv[argv.index("--mode") + 1] == "agent" and "--force" in argv
    elif name == "kiro":
        assert "--trust-all-tools" in argv and "--trust-tools=" not in argv
    await runner.aclose()


@pytest.mark.anyio
async def test_a_prompt_that_looks_like_an_option_stays_the_prompt(tmp_path: Path) -> None:
    for cls in (CursorAgentRunner, KiroRunner):
        (tmp_path / cls.name).mkdir()
        runner = make(tmp_path / cls.name, cls)
        await events_of(runner, ask("--force --yolo"))
        (call,) = calls(tmp_path / cls.name)
        argv = call["argv"]
        assert argv[-2:] == ["--", "--force --yolo"] and "--yolo" not in argv[:-1]
        await runner.aclose()


@pytest.mark.anyio
async def test_goose_tool_requests_are_not_answer_text_and_run_nothing(tmp_path: Path) -> None:
    runner = make(tmp_path, GooseRunner, "tool")
    events = await events_of(runner, ask("create the file pwned"))
    assert text_of(events) == "I cannot run commands here."
    assert not (runner.workdir / "pwned").exists()
    await runner.aclose()


# ------------------------------------------------------------------------------------------------ sessions
@pytest.mark.anyio
@pytest.mark.parametrize("name", ["goose", "cursor_agent"])
async def test_a_second_turn_resumes_the_session_and_sends_only_the_new_message(name: str, tmp_path: Path) -> None:
    runner = make(tmp_path, RUNNERS[name])
    first = await collect(runner.stream(ask("first question", conversation="c1")))
    session = first.session_id
    assert session
    second = await collect(runner.stream(ask("first question", first.content, "second question", conversation="c1")))
    assert second.content == "second answer"
    one, two = calls(tmp_path)
    assert not any(a.startswith("--resume") for a in one["argv"])
    if name == "goose":
        assert two["argv"][two["argv"].index("--resume") + 1 : two["argv"].index("--resume") + 3] == ["--name", session]
        assert second.reasoning == "the user said hi again" and second.model == "fake-model-2"
    else:
        assert f"--resume={session}" in two["argv"]
    prompt = prompt_of(two, name)
    assert "second question" in prompt and "first question" not in prompt
    await runner.aclose()


@pytest.mark.anyio
async def test_goose_lost_session_is_replayed_once_into_a_new_one(tmp_path: Path) -> None:
    runner = make(tmp_path, GooseRunner, "nosession")
    first = await collect(runner.stream(ask("first question", conversation="c2")))
    second = await collect(runner.stream(ask("first question", first.content, "again", conversation="c2")))
    assert second.content == "fresh start"
    _, resumed, replay = calls(tmp_path)
    assert "--resume" in resumed["argv"] and "--resume" not in replay["argv"]
    assert "first question" in replay["stdin"] and "again" in replay["stdin"]
    await runner.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["kiro", "warp"])
async def test_without_sessions_every_turn_replays_the_conversation(name: str, tmp_path: Path) -> None:
    runner = make(tmp_path, RUNNERS[name])
    await events_of(runner, ask("first question", conversation="c3"))
    await events_of(runner, ask("first question", "an answer", "second question", conversation="c3"))
    second = prompt_of(calls(tmp_path)[1], name)
    assert "first question" in second and "an answer" in second and "second question" in second
    await runner.aclose()


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "scenario", "kind"),
    [
        ("goose", "err401", AuthenticationError),
        ("goose", "err429", RateLimited),
        ("goose", "errcontext", ContextLengthExceeded),
        ("goose", "errserver", UpstreamError),
        ("cursor_agent", "err401", AuthenticationError),
        ("cursor_agent", "err429", RateLimited),
        ("kiro", "err401", AuthenticationError),
        ("warp", "err401", AuthenticationError),
    ],
)
async def test_errors_are_classified(name: str, scenario: str, kind: type[LLMError], tmp_path: Path) -> None:
    runner = make(tmp_path, RUNNERS[name], scenario)
    with pytest.raises(LLMError) as caught:
        await events_of(runner, ask("hi"))
    assert type(caught.value) is kind, caught.value
    assert caught.value.provider == name
    if kind is RateLimited and name == "cursor_agent":
        assert caught.value.retry_after == 20.0
    assert not gone_within(tmp_path / "bin", 5.0)
    await runner.aclose()


def test_goose_error_texts_map_onto_the_tree() -> None:
    assert isinstance(classify_error("Authentication error: bad key"), AuthenticationError)
    assert isinstance(classify_error("Credits exhausted: top up"), RateLimited)
    assert isinstance(classify_error("Context length exceeded: too long"), ContextLengthExceeded)
    assert type(classify_error("Execution error: something odd")) is UpstreamError


@pytest.mark.anyio
async def test_a_hanging_cli_times_out_and_is_gone(tmp_path: Path) -> None:
    runner = make(tmp_path, GooseRunner, "hang", timeout=1.5)
    with pytest.raises(ProviderTimeout):
        await events_of(runner, ask("hi"))
    assert not gone_within(tmp_path / "bin", 5.0)
    await runner.aclose()


@pytest.mark.anyio
async def test_a_consumer_that_stops_reading_ends_the_process(tmp_path: Path) -> None:
    runner = make(tmp_path, CursorAgentRunner)
    stream = runner.stream(ask("hi"))
    async for event in stream:
        assert isinstance(event, TextDelta)
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert not gone_within(tmp_path / "bin", 1.0)
    await runner.aclose()


# ------------------------------------------------------------------------------------------------ warp, acp
@pytest.mark.anyio
async def test_warp_refuses_to_run_with_its_permissive_default_profile(tmp_path: Path) -> None:
    runner = make(tmp_path, WarpRunner, profile=None)
    runner.profile = None
    health = await runner.health()
    assert health.installed and not health.ready and "profile" in (health.fix or "")
    with pytest.raises(InvalidRequest, match="tools-off agent profile"):
        await events_of(runner, ask("hi"))
    assert calls(tmp_path) == []  # nothing was started
    await runner.aclose()


@pytest.mark.parametrize(("name", "transport"), [("cursor_agent", "exec"), ("goose", "exec"), ("kiro", "acp")])
def test_the_acp_dialects_start_the_agents_acp_mode(name: str, transport: str, tmp_path: Path) -> None:
    dialect = DIALECTS[name]
    assert dialect.default_transport == transport
    script = stand_in(tmp_path, RUNNERS[name])
    runner = AcpRunner(name, binary=str(script), env={"HOME": str(tmp_path), **KEYS})
    spec = runner.process_spec()
    assert spec.argv == [str(script), "acp"]
    assert runner.capabilities.verified is False
