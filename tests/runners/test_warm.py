"""Warm spare processes (``CLIRunner(warm=N)``) with a stand-in CLI that logs when it started and when its prompt
came: a spare is used only when it matches, everything else runs cold and still answers right, and every spare has
an owner (idle expiry, death, ``aclose()``). The real Claude Code is driven warm in tests/e2e/test_warm.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from llm_runners.runners.base import CLIRunner, Invocation, Turn
from llm_runners.runners.codex import CodexRunner
from llm_runners.runners.gemini import GeminiRunner
from llm_runners.sessions import SessionStore
from llm_runners.testing.procs import running
from llm_runners.types import Capabilities, ChatRequest, ImagePart, Message, TextPart

from .test_base import _Parser  # the stand-in CLI speaks the same JSON lines

pytestmark = pytest.mark.anyio

# argv: [script, --session S | --resume S, --log FILE, (--system FILE), (--model M), (--image FILE)...]. Logs its
# start time before reading stdin, then the prompt, the time it came and the system file's text; answers one JSON
# line per word. `--system` names a file in the run's assets directory, like Claude Code's --system-prompt-file.
STAND_IN = """#!{python}
import json, os, sys, time
started = time.time()
args = sys.argv[1:]
log = args[args.index("--log") + 1]
prompt = sys.stdin.read()
system = open(args[args.index("--system") + 1]).read() if "--system" in args else None
record = {{"pid": os.getpid(), "argv": args, "prompt": prompt, "system": system, "started": started,
          "prompt_at": time.time()}}
with open(log, "a") as f:
    f.write(json.dumps(record) + "\\n")
if not prompt:
    sys.exit(5)
session = args[args.index("--resume") + 1] if "--resume" in args else args[args.index("--session") + 1]
for word in ("answer", " to", " " + prompt.splitlines()[-1]):
    print(json.dumps({{"text": word}}), flush=True)
print(json.dumps({{"done": session}}), flush=True)
"""


class StandIn(CLIRunner):
    name = "standin"
    display_name = "Stand-in"
    capabilities: ClassVar[Capabilities] = Capabilities(sessions=True, images=True, system_prompt=True)
    binary_name = "standin"
    package = "standin-cli"
    #: like Codex: image files go to argv, so a request with images cannot be served by a spare
    images_in_argv = False

    def __init__(self, log: Path, **kw: Any) -> None:
        super().__init__(**kw)
        self.log = log

    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path]
        argv += ["--resume", turn.resume] if turn.resume else ["--session", turn.session or "none"]
        argv += ["--log", str(self.log)]
        if turn.system:
            argv += ["--system", str(turn.tempfile("system.md", turn.system))]
        if turn.model:
            argv += ["--model", turn.model]
        if self.images_in_argv:
            for path in turn.images:
                argv += ["--image", str(path)]
        return Invocation(argv=argv, stdin=turn.prompt.encode())

    def new_parser(self, turn: Turn) -> _Parser:
        return _Parser()


@pytest.fixture
def tmpdir_root(tmp_path: Path) -> Iterator[Path]:
    """Every temp dir the runner makes lands here, so a test can see that none is left."""
    root = tmp_path / "tmp"
    root.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(root)
    yield root
    tempfile.tempdir = saved


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "standin"
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(0o755)
    return path


def make(script: Path, **kw: Any) -> StandIn:
    kw.setdefault("warm", 1)
    return StandIn(script.parent / "log.jsonl", binary=str(script), sessions=SessionStore(), timeout=30, **kw)


def calls(runner: StandIn) -> list[dict[str, Any]]:
    return [json.loads(line) for line in runner.log.read_text().splitlines()] if runner.log.exists() else []


def ask(text: str, *, system: str | None = None, **kw: Any) -> ChatRequest:
    messages = [Message(role="system", content=system)] if system else []
    return ChatRequest(messages=[*messages, Message(role="user", content=text)], **kw)


def alive(runner: StandIn) -> list[int]:
    """Live processes running this test's stand-in script."""
    return running(runner.binary)


async def until(condition: Callable[[], bool], within: float = 5.0) -> bool:
    """Poll ``condition`` while the event loop runs (spares start and die in tasks); False if it never held."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.01)
    return True


async def settle(runner: StandIn, spares: int | None = None) -> None:
    """Wait until pending spare starts are done and, if given, exactly ``spares`` stand-ins are alive."""
    pool = runner.warm_pool
    assert pool is not None
    assert await until(lambda: not pool.pending and (spares is None or len(alive(runner)) == spares))


async def gone(runner: StandIn, within: float = 2.0) -> list[int]:
    await until(lambda: not alive(runner), within)
    return alive(runner)


def entries(root: Path) -> list[Path]:
    return list(root.iterdir())


def spares_dirs(root: Path) -> list[Path]:
    return list(root.glob("llm-runners-standin-warm-*/spare-*"))


# ------------------------------------------------------------------------------------------------ served warm


async def test_a_fresh_conversation_is_served_by_the_spare(script: Path) -> None:
    runner = make(script)
    try:
        first = await runner.complete(ask("q1", system="Be brief."))
        assert first.content == "answer to q1"
        await settle(runner, spares=1)
        assert runner.warm_pool is not None
        (spare_pid,) = runner.warm_pool.pids()
        asked_at = time.time()
        second = await runner.complete(ask("q2", system="Be brief."))
        assert second.content == "answer to q2"
        served = calls(runner)[1]
        assert served["pid"] == spare_pid
        # the spare's pid was listed before the request, so its process was running; its interpreter may still have
        # been starting up (so no comparison of its own start time), but the prompt only came with the request
        assert asked_at <= served["prompt_at"]
        assert served["system"] == "Be brief." and served["prompt"] == "q2"
        assert served["argv"][:2] == ["--session", second.session_id]  # the turn took the spare's session
        await settle(runner, spares=1)  # replaced by a new spare of the same shape
        assert runner.warm_pool.pids() != [spare_pid]
        # and the conversation it started continues (cold: a resume is never served by a spare)
        third = await runner.complete(
            ChatRequest(
                messages=[
                    Message(role="system", content="Be brief."),
                    Message(role="user", content="q2"),
                    Message(role="assistant", content=second.content),
                    Message(role="user", content="q3"),
                ]
            )
        )
        assert third.content == "answer to q3" and third.session_id == second.session_id
    finally:
        await runner.aclose()


async def test_a_different_system_prompt_or_model_runs_cold_and_right(script: Path) -> None:
    runner = make(script)
    try:
        await runner.complete(ask("q1", system="Be brief."))
        await settle(runner, spares=1)
        for request in (ask("q2", system="Be verbose."), ask("q3", system="Be brief.", model="other-model")):
            assert runner.warm_pool is not None
            spare_pids = runner.warm_pool.pids()
            asked_at = time.time()
            response = await runner.complete(request)
            assert response.content == f"answer to {request.messages[-1].text}"
            record = calls(runner)[-1]
            assert record["pid"] not in spare_pids and record["started"] >= asked_at  # cold
            assert record["system"] == request.system  # its own system prompt, not the spare's
            assert ("--model" in record["argv"]) == (request.model is not None)
            await settle(runner, spares=1)  # the spare of the old shape was evicted for the new one
    finally:
        await runner.aclose()


async def test_a_resumed_turn_runs_cold_and_leaves_the_spare(script: Path) -> None:
    runner = make(script)
    try:
        first = await runner.complete(ask("q1"))
        await settle(runner, spares=1)
        assert runner.warm_pool is not None
        spare_pids = runner.warm_pool.pids()
        follow = ChatRequest(
            messages=[
                Message(role="user", content="q1"),
                Message(role="assistant", content=first.content),
                Message(role="user", content="q2"),
            ]
        )
        second = await runner.complete(follow)
        assert second.content == "answer to q2" and second.session_id == first.session_id
        record = calls(runner)[-1]
        assert record["argv"][:2] == ["--resume", first.session_id] and record["pid"] not in spare_pids
        assert runner.warm_pool.pids() == spare_pids and alive(runner) == spare_pids
    finally:
        await runner.aclose()


async def test_a_dead_spare_is_discarded_and_replaced(script: Path) -> None:
    runner = make(script)
    try:
        await runner.complete(ask("q1"))
        await settle(runner, spares=1)
        assert runner.warm_pool is not None
        (dead,) = runner.warm_pool.pids()
        os.killpg(dead, signal.SIGKILL)
        assert await gone(runner) == []
        response = await runner.complete(ask("q2"))
        assert response.content == "answer to q2"
        assert calls(runner)[-1]["pid"] != dead
        await settle(runner, spares=1)
        assert runner.warm_pool.pids() != [dead]
    finally:
        await runner.aclose()


async def test_an_idle_spare_expires(script: Path, tmpdir_root: Path) -> None:
    runner = make(script, warm_idle=0.3)
    try:
        await runner.complete(ask("q1", system="Be brief."))
        await settle(runner, spares=1)
        assert runner.warm_pool is not None
        spare_dirs = spares_dirs(tmpdir_root)
        assert len(spare_dirs) == 1 and (spare_dirs[0] / "system.md").read_text() == "Be brief."
        assert await until(lambda: not alive(runner) and not spares_dirs(tmpdir_root), within=3.0)
        assert len(runner.warm_pool) == 0
        response = await runner.complete(ask("q2", system="Be brief."))  # cold again, and still right
        assert response.content == "answer to q2"
    finally:
        await runner.aclose()


async def test_aclose_leaves_no_process_and_no_directory(script: Path, tmpdir_root: Path) -> None:
    runner = make(script, warm=2)
    await runner.complete(ask("q1", system="A"))
    await runner.complete(ask("q2", system="B"))
    await settle(runner, spares=2)
    assert entries(tmpdir_root)
    await runner.aclose()
    assert alive(runner) == []  # aclose() waited for the kills
    assert entries(tmpdir_root) == []
    # a start still pending when aclose() comes: it kills what it started
    await runner.complete(ask("q3"))
    assert runner.warm_pool is not None and runner.warm_pool.pending
    await runner.aclose()
    assert await gone(runner, within=1.0) == [] and entries(tmpdir_root) == []
    # the runner still works after aclose(), and refills its pool
    assert (await runner.complete(ask("q4"))).content == "answer to q4"
    await settle(runner, spares=1)
    await runner.aclose()
    assert alive(runner) == [] and entries(tmpdir_root) == []


async def test_concurrent_requests_all_answer_and_leave_at_most_the_pool_size(script: Path) -> None:
    runner = make(script, warm=1)
    try:
        await runner.complete(ask("q0"))
        await settle(runner, spares=1)
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            results[i] = (await runner.complete(ask(f"q{i}"))).content

        async with anyio.create_task_group() as tg:
            for i in range(1, 6):
                tg.start_soon(one, i)
        assert results == {i: f"answer to q{i}" for i in range(1, 6)}
        await settle(runner)
        assert runner.warm_pool is not None and len(runner.warm_pool) <= 1
        assert await until(lambda: len(alive(runner)) <= 1, within=2.0)  # evicted spares die within their grace
        sessions = [c["argv"][1] for c in calls(runner)]
        assert len(set(sessions)) == len(sessions)  # no two conversations share a session
    finally:
        await runner.aclose()
    assert alive(runner) == []


async def test_a_prompt_with_images_in_argv_is_never_warm(script: Path) -> None:
    runner = make(script)
    runner.images_in_argv = True
    try:
        await runner.complete(ask("plain"))
        await settle(runner, spares=1)
        assert runner.warm_pool is not None
        plain_spare = runner.warm_pool.pids()
        img = ImagePart(media_type="image/png", data=b"\x89PNG-bytes")
        request = ChatRequest(messages=[Message(role="user", content=[TextPart(text="see"), img])])
        assert (await runner.complete(request)).content == "answer to [image 1]"
        assert calls(runner)[-1]["pid"] not in plain_spare
        await settle(runner)
        # no spare could ever serve that shape, so none was started for it and the one for plain prompts stays
        assert runner.warm_pool.pids() == plain_spare and alive(runner) == plain_spare
    finally:
        await runner.aclose()


async def test_the_default_starts_no_spare(script: Path) -> None:
    runner = make(script, warm=0)
    assert runner.warm_pool is None
    await runner.complete(ask("q1"))
    assert await gone(runner, within=1.0) == []
    await runner.aclose()


@pytest.mark.parametrize("warm", [-1, 1.5, True])
def test_a_bad_warm_option_is_a_clear_error(script: Path, warm: Any) -> None:
    with pytest.raises(ValueError, match="warm must be a whole number"):
        make(script, warm=warm)


def test_warm_idle_must_be_positive(script: Path) -> None:
    with pytest.raises(ValueError, match="warm_idle"):
        make(script, warm_idle=0)


def test_gemini_takes_no_warm_option_but_codex_does() -> None:
    # Gemini CLI gives up on a silent stdin after 0.5 s: a spare of it would exit before any request came
    with pytest.raises(TypeError, match="warm"):
        GeminiRunner(warm=1)  # type: ignore[call-arg]
    codex = CodexRunner(transport="exec", warm=2, warm_idle=60)
    assert codex.warm_pool is not None and (codex.warm_pool.size, codex.warm_pool.idle) == (2, 60)
