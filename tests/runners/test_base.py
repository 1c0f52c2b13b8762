"""The runner base with a tiny stand-in CLI: session continuity, replay on a lost session, extra args, images,
ephemeral conversations and early close. The real dialects are proven against the real CLIs in tests/e2e."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import pytest

from llm_runners.errors import BinaryNotFound, InvalidRequest, SessionNotFound, UpstreamError
from llm_runners.runners.base import CLIRunner, Invocation, Turn
from llm_runners.sessions import SessionStore
from llm_runners.testing.procs import running
from llm_runners.types import (
    Capabilities,
    ChatRequest,
    Done,
    ImagePart,
    Message,
    StreamEvent,
    TextDelta,
    TextPart,
)

# The stand-in CLI: argv is [script, --session S | --resume S, --log FILE, extra...]; reads the prompt on stdin,
# answers with one JSON line per word, logs what it got. A resume of an id listed in LOST fails like a real CLI.
STAND_IN = """#!{python}
import json, sys, time
args = sys.argv[1:]
log = args[args.index("--log") + 1]
prompt = sys.stdin.read()
record = {{"argv": args, "prompt": prompt}}
with open(log, "a") as f:
    f.write(json.dumps(record) + "\\n")
if "--resume" in args and args[args.index("--resume") + 1].startswith("lost"):
    print("no such session", file=sys.stderr)
    sys.exit(3)
if "--sleep" in args:
    print(json.dumps({{"text": "first "}}), flush=True)
    time.sleep(60)
session = args[args.index("--resume") + 1] if "--resume" in args else args[args.index("--session") + 1]
for word in ("answer", " to", " " + prompt.splitlines()[-1]):
    print(json.dumps({{"text": word}}), flush=True)
print(json.dumps({{"done": session}}), flush=True)
"""


class _Parser:
    def __init__(self) -> None:
        self.session_id: str | None = None

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json.loads(line)
        if "text" in event:
            yield TextDelta(event["text"])
        if "done" in event:
            self.session_id = event["done"]

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if returncode == 3:
            raise SessionNotFound(stderr.strip(), provider="standin")
        if returncode != 0:
            raise UpstreamError(f"exit {returncode}", provider="standin")
        return [Done(session_id=self.session_id)]


class StandIn(CLIRunner):
    name = "standin"
    display_name = "Stand-in"
    capabilities: ClassVar[Capabilities] = Capabilities(sessions=True, images=True)
    binary_name = "standin"
    package = "standin-cli"

    def __init__(self, log: Path, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.log = log
        self.seen_images: list[list[bytes]] = []
        self.seen_paths: list[Path] = []

    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path]
        argv += ["--resume", turn.resume] if turn.resume else ["--session", turn.session or "none"]
        argv += ["--log", str(self.log)]
        self.seen_images.append([p.read_bytes() for p in turn.images])
        self.seen_paths += [*turn.images, turn.assets]
        return Invocation(argv=argv, stdin=turn.prompt.encode())

    def new_parser(self, turn: Turn) -> _Parser:
        return _Parser()


@pytest.fixture
def standin(tmp_path: Path) -> StandIn:
    script = tmp_path / "standin"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    return StandIn(tmp_path / "log.jsonl", binary=str(script), sessions=SessionStore(), timeout=30)


def calls(runner: StandIn) -> list[dict[str, object]]:
    return [json.loads(line) for line in runner.log.read_text().splitlines()]


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str) -> Message:
    return Message(role="assistant", content=text)


@pytest.mark.anyio
async def test_second_turn_resumes_with_only_the_new_message(standin: StandIn) -> None:
    first = await standin.complete(ChatRequest(messages=[user("u1")]))
    assert first.content == "answer to u1" and first.session_id
    second = await standin.complete(ChatRequest(messages=[user("u1"), assistant(first.content), user("u2")]))
    assert second.session_id == first.session_id
    log = calls(standin)
    assert log[1]["prompt"] == "u2"
    assert log[1]["argv"][:2] == ["--resume", first.session_id]  # type: ignore[index]


@pytest.mark.anyio
async def test_a_lost_session_is_replayed_once_in_a_fresh_one(standin: StandIn) -> None:
    standin.sessions.remember("standin", None, [user("u1")], assistant("a1"), "lost-1")
    response = await standin.complete(ChatRequest(messages=[user("u1"), assistant("a1"), user("u2")]))
    log = calls(standin)
    assert len(log) == 2 and log[0]["argv"][:2] == ["--resume", "lost-1"]  # type: ignore[index]
    assert log[1]["argv"][0] == "--session"  # type: ignore[index]
    assert "u1" in str(log[1]["prompt"]) and "a1" in str(log[1]["prompt"]) and "u2" in str(log[1]["prompt"])
    assert response.session_id != "lost-1"


@pytest.mark.anyio
async def test_a_failed_run_is_a_warning_with_its_stderr_tail(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    standin.sessions.remember("standin", None, [user("u1")], assistant("a1"), "lost-2")
    with caplog.at_level(logging.INFO, logger="llm_runners.runners.standin"):
        await standin.complete(ChatRequest(messages=[user("u1"), assistant("a1"), user("u2")]))
    (record,) = [r for r in caplog.records if r.name == "llm_runners.runners.standin"]
    assert record.levelno == logging.WARNING and record.getMessage() == "run failed"
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["exit"] == 3 and fields["error_kind"] == "session_not_found"
    assert fields["stderr"] == "no such session"


@pytest.mark.anyio
async def test_two_conversations_never_share_a_session(standin: StandIn) -> None:
    a = await standin.complete(ChatRequest(messages=[user("same")], conversation="A"))
    b = await standin.complete(ChatRequest(messages=[user("same")], conversation="B"))
    assert a.session_id != b.session_id
    follow = await standin.complete(
        ChatRequest(messages=[user("same"), assistant(a.content), user("next")], conversation="B")
    )
    assert follow.session_id == b.session_id


@pytest.mark.anyio
async def test_ephemeral_conversations_are_not_remembered(standin: StandIn) -> None:
    first = await standin.complete(ChatRequest(messages=[user("u1")], extra={"ephemeral": True}))
    await standin.complete(ChatRequest(messages=[user("u1"), assistant(first.content), user("u2")]))
    assert calls(standin)[1]["argv"][0] == "--session"  # type: ignore[index]


@pytest.mark.anyio
async def test_extra_args_are_appended_unless_the_dialect_placed_them(standin: StandIn) -> None:
    standin.extra_args = ["--flag", "x"]
    await standin.complete(ChatRequest(messages=[user("u1")]))
    assert calls(standin)[0]["argv"][-2:] == ["--flag", "x"]  # type: ignore[index]


@pytest.mark.anyio
async def test_images_are_files_during_the_run_and_gone_after(standin: StandIn) -> None:
    img = ImagePart(media_type="image/png", data=b"\x89PNG-bytes")
    await standin.complete(ChatRequest(messages=[Message(role="user", content=[TextPart(text="see"), img])]))
    assert standin.seen_images == [[b"\x89PNG-bytes"]]
    assert "[image 1]" in str(calls(standin)[0]["prompt"])
    assert standin.seen_paths and not any(p.exists() for p in standin.seen_paths)


@pytest.mark.anyio
async def test_closing_the_stream_early_kills_the_cli(standin: StandIn) -> None:
    standin.extra_args = ["--sleep"]
    stream = standin.stream(ChatRequest(messages=[user("u1")]))
    first = await stream.__anext__()
    assert first == TextDelta("first ")
    alive = _standin_pids(standin)
    assert len(alive) == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert _wait_gone(standin, 1.0) == []


def _wait_gone(runner: StandIn, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while _standin_pids(runner) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _standin_pids(runner)


def _standin_pids(runner: StandIn) -> list[int]:
    return running(runner.binary)


@pytest.mark.anyio
async def test_missing_binary_is_a_clear_error_with_the_fix(tmp_path: Path) -> None:
    runner = StandIn(tmp_path / "log", binary=str(tmp_path / "absent"))
    with pytest.raises(BinaryNotFound, match="npm install -g standin-cli"):
        await runner.complete(ChatRequest(messages=[user("u1")]))
    health = await runner.health()
    assert not health.installed and health.fix == "npm install -g standin-cli"


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["--yolo", "-m", "a b", "x\0y", "", "../../etc"])
async def test_a_model_name_cannot_smuggle_an_option_into_argv(standin: StandIn, model: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid model name"):
        await standin.complete(ChatRequest(messages=[user("u1")], model=model))
    assert not standin.log.exists()  # no process was started


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["claude-opus-4-8[1m]", "gpt-5.5", "fake/fake-model", "models/gemini-2.5-flash"])
async def test_real_model_names_pass(standin: StandIn, model: str) -> None:
    assert (await standin.complete(ChatRequest(messages=[user("u1")], model=model))).content == "answer to u1"


@pytest.mark.anyio
async def test_session_not_found_on_a_fresh_session_is_an_upstream_error(standin: StandIn) -> None:
    class LosesFresh(StandIn):
        def invocation(self, turn: Turn) -> Invocation:
            inv = super().invocation(turn)
            inv.argv[1:3] = ["--resume", "lost-anyway"]  # the CLI reports a missing session although none was asked
            return inv

    runner = LosesFresh(standin.log, binary=standin.binary, sessions=SessionStore())
    with pytest.raises(UpstreamError, match="no such session"):
        await runner.complete(ChatRequest(messages=[user("u1")]))
