"""Live processes (``live_max``) with a stand-in CLI speaking Claude Code's stream-json dialect, one turn per stdin
line, logging every line it reads with its pid: the pool logic (reuse, shape changes, LRU, idle expiry, the process
limit, a process that dies, a client that goes away, ``aclose()``). The real Claude Code runs in
tests/e2e/test_live.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.runners.live import LivePool, default_live_max
from llm_runners.sessions import SessionStore
from llm_runners.testing.procs import running as alive
from llm_runners.testing.scripted import ScriptedProvider
from llm_runners.types import ChatRequest, Message, TextDelta
from llm_runners.wrappers.limits import ConcurrencyLimit

pytestmark = pytest.mark.anyio

# One stream-json turn per stdin line, as `claude -p --input-format stream-json` does. STANDIN_MODE=die2 exits
# without a word when the second line comes (a process that crashed between turns); slow streams 50 deltas.
STAND_IN = r"""#!{python} -IS
import json, os, sys, time, uuid
args = sys.argv[1:]
after = lambda flag: args[args.index(flag) + 1] if flag in args else None
sid = after("--resume") or after("--session-id") or str(uuid.uuid4())
log, mode = os.environ["STANDIN_LOG"], os.environ.get("STANDIN_MODE", "")
def event(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
n = 0
for line in sys.stdin:
    n += 1
    text = "".join(b["text"] for b in json.loads(line)["message"]["content"] if b["type"] == "text")
    with open(log, "a") as f:
        f.write(json.dumps({{"pid": os.getpid(), "argv": args, "text": text}}) + "\n")
    if mode == "die2" and n == 2:
        sys.exit(3)
    event({{"type": "system", "subtype": "init", "session_id": sid}})
    words = ["w"] * 50 if mode == "slow" and n == 2 else ["turn %d:" % n, " " + text.splitlines()[-1]]
    for word in words:
        event({{"type": "stream_event", "session_id": sid,
               "event": {{"type": "content_block_delta", "delta": {{"type": "text_delta", "text": word}}}}}})
        if mode == "slow":
            time.sleep(0.1)
    event({{"type": "result", "subtype": "success", "is_error": False, "session_id": sid,
           "usage": {{"input_tokens": 1, "output_tokens": 1}}}})
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    path = tmp_path / "claude-standin"
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(0o755)
    return path


def make(stand_in: Path, mode: str = "", **kw: Any) -> ClaudeCodeRunner:
    kw.setdefault("live_max", 2)
    env = {"STANDIN_LOG": str(stand_in.parent / "log.jsonl"), "STANDIN_MODE": mode}
    env |= {"HOME": str(stand_in.parent), "ANTHROPIC_API_KEY": "k"}  # a user who is logged in (fail-fast auth)
    return ClaudeCodeRunner(binary=str(stand_in), env=env, sessions=SessionStore(), timeout=30, **kw)


def log(stand_in: Path) -> list[dict[str, Any]]:
    path = stand_in.parent / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ask(*texts: str, system: str | None = None, conversation: str = "A") -> ChatRequest:
    roles = ["user", "assistant"]
    messages = [Message(role="system", content=system)] if system else []
    messages += [Message(role=roles[i % 2], content=t) for i, t in enumerate(texts)]  # type: ignore[misc]
    return ChatRequest(messages=messages, conversation=conversation)


async def until(condition: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.01)
    return True


async def test_turns_of_a_conversation_run_on_one_process_that_reads_only_the_new_message(stand_in: Path) -> None:
    runner = make(stand_in)
    try:
        r1 = await runner.complete(ask("q1"))
        r2 = await runner.complete(ask("q1", r1.content, "q2"))
        r3 = await runner.complete(ask("q1", r1.content, "q2", r2.content, "q3"))
        assert (r1.content, r2.content, r3.content) == ("turn 1: q1", "turn 2: q2", "turn 3: q3")
        lines = log(stand_in)
        assert [line["text"] for line in lines] == ["q1", "q2", "q3"]  # only the new message, each turn
        assert len({line["pid"] for line in lines}) == 1  # one process
        assert "--session-id" in lines[0]["argv"] and r1.session_id == r2.session_id == r3.session_id
        assert runner.processes() == {"running": 0, "live": 1, "spare": 0}
        health = await runner.health()
        assert health.processes == {"running": 0, "live": 1, "spare": 0}
    finally:
        await runner.aclose()
    assert await until(lambda: alive(stand_in) == [])
    assert runner.processes() == {"running": 0, "live": 0, "spare": 0}


async def test_another_model_closes_the_live_process_and_resumes_cold(stand_in: Path) -> None:
    runner = make(stand_in)
    try:
        r1 = await runner.complete(ask("q1"))
        r2 = await runner.complete(ask("q1", r1.content, "q2").model_copy(update={"model": "other"}))
        assert r2.content == "turn 1: q2"  # a new process, started with the other model
        first, second = log(stand_in)
        assert first["pid"] != second["pid"] and second["argv"][second["argv"].index("--model") + 1] == "other"
        assert second["argv"][second["argv"].index("--resume") + 1] == r1.session_id
        assert await until(lambda: alive(stand_in) == [second["pid"]])  # the first one was closed
    finally:
        await runner.aclose()


async def test_least_recently_used_is_closed_first_and_resumes_cold(stand_in: Path) -> None:
    runner = make(stand_in, live_max=2)
    try:
        a = await runner.complete(ask("a1", conversation="A"))
        b = await runner.complete(ask("b1", conversation="B"))
        await runner.complete(ask("a1", a.content, "a2", conversation="A"))  # A is now the most recently used
        c = await runner.complete(ask("c1", conversation="C"))  # evicts B
        pool = runner.live_pool
        assert pool is not None and list(pool.pids()) == [a.session_id, c.session_id]
        assert await until(lambda: len(alive(stand_in)) == 2)
        b2 = await runner.complete(ask("b1", b.content, "b2", conversation="B"))
        assert b2.content == "turn 1: b2"  # a cold resume of B's session
        assert log(stand_in)[-1]["argv"][log(stand_in)[-1]["argv"].index("--resume") + 1] == b.session_id
        assert list(pool.pids()) == [c.session_id, b.session_id]  # and A, the least recently used, made room
    finally:
        await runner.aclose()
    assert await until(lambda: alive(stand_in) == [])


async def test_an_idle_live_process_is_closed(stand_in: Path) -> None:
    runner = make(stand_in, live_idle=0.3)
    try:
        await runner.complete(ask("q1"))
        assert len(alive(stand_in)) == 1
        assert await until(lambda: alive(stand_in) == [] and runner.processes()["live"] == 0)
    finally:
        await runner.aclose()


async def test_the_process_limit_counts_live_processes(stand_in: Path) -> None:
    runner = make(stand_in, live_max=5)
    limited = ConcurrencyLimit(runner, max_concurrency=2)
    assert runner.process_limit == 2
    try:
        for name in "ABC":
            await limited.complete(ask(f"{name}1", conversation=name))
        assert limited.processes() == {"running": 0, "live": 2, "spare": 0}  # the third turn made room
        assert await until(lambda: len(alive(stand_in)) == 2)
    finally:
        await limited.aclose()
    assert await until(lambda: alive(stand_in) == [])


async def test_a_live_process_that_died_means_the_turn_runs_cold(stand_in: Path) -> None:
    runner = make(stand_in, "die2")
    try:
        r1 = await runner.complete(ask("q1"))
        r2 = await runner.complete(ask("q1", r1.content, "q2"))  # the live one exits as the message comes
        assert r2.content == "turn 1: q2" and r2.session_id == r1.session_id
        lines = log(stand_in)
        assert [line["text"] for line in lines] == ["q1", "q2", "q2"]
        assert "--resume" in lines[2]["argv"] and lines[2]["pid"] != lines[0]["pid"]
        # killed between turns: found dead, cold
        pid = lines[2]["pid"]
        os.killpg(pid, signal.SIGKILL)
        assert await until(lambda: pid not in alive(stand_in))
        r3 = await runner.complete(ask("q1", r1.content, "q2", r2.content, "q3"))
        assert r3.content == "turn 1: q3"
    finally:
        await runner.aclose()
    assert await until(lambda: alive(stand_in) == [])


async def test_a_client_that_goes_away_mid_turn_ends_the_process(stand_in: Path) -> None:
    runner = make(stand_in, "slow")
    try:
        r1 = await runner.complete(ask("q1"))
        events = runner.stream(ask("q1", r1.content, "q2"))
        async for event in events:
            if isinstance(event, TextDelta):
                break
        await events.aclose()  # type: ignore[attr-defined]
        assert await until(lambda: alive(stand_in) == [], within=3.0)
        assert runner.processes() == {"running": 0, "live": 0, "spare": 0}
        r2 = await runner.complete(ask("q1", r1.content, "q2 again"))  # the history is replayed into a new session
        assert r2.content.startswith("turn 1:") and r2.session_id != r1.session_id
    finally:
        await runner.aclose()


async def test_throw_away_conversations_never_stay_live(stand_in: Path) -> None:
    runner = make(stand_in)
    try:
        request = ask("q1").model_copy(update={"extra": {"ephemeral": True}})
        assert (await runner.complete(request)).content == "turn 1: q1"
        assert runner.processes()["live"] == 0
        assert await until(lambda: alive(stand_in) == [])
    finally:
        await runner.aclose()


async def test_live_is_on_with_warm_and_off_without() -> None:
    assert ClaudeCodeRunner().live_pool is None
    warm = ClaudeCodeRunner(warm=1)
    assert warm.live_pool is not None and warm.live_pool.size == default_live_max()
    assert ClaudeCodeRunner(warm=1, live_max=0).live_pool is None
    from llm_runners.runners.codex import CodexRunner

    assert CodexRunner(warm=1).live_pool is None
    with pytest.raises(TypeError, match="live_max"):
        CodexRunner(live_max=2)
    with pytest.raises(ValueError, match="live_idle"):
        LivePool("x", size=1, idle=0)
    assert ScriptedProvider().processes() == {}


def test_the_default_bound_is_sized_from_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable:    4000000 kB\n")
    assert default_live_max(rss=200 * 1024 * 1024, meminfo=str(meminfo)) == 4  # a quarter of 3.8 GiB / 200 MiB
    meminfo.write_text("MemAvailable: 100 kB\n")
    assert default_live_max(meminfo=str(meminfo)) == 1
    meminfo.write_text("MemAvailable: 900000000 kB\n")
    assert default_live_max(meminfo=str(meminfo)) == 16
    assert default_live_max(meminfo=str(tmp_path / "missing")) == 4


async def test_each_turn_on_a_live_process_gets_the_whole_output_cap(stand_in: Path) -> None:
    runner = make(stand_in)
    runner.max_output_bytes = 1500  # one turn prints ~600 bytes: three turns together would pass the cap
    try:
        r1 = await runner.complete(ask("q1"))
        r2 = await runner.complete(ask("q1", r1.content, "q2"))
        r3 = await runner.complete(ask("q1", r1.content, "q2", r2.content, "q3"))
        assert r3.content == "turn 3: q3"
        assert len({line["pid"] for line in log(stand_in)}) == 1
    finally:
        await runner.aclose()
