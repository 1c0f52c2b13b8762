"""Warm spares with the real Claude Code 2.1.197 against the fake model API (loopback only): a spare answers what a
cold run answers, sends the same request upstream, serves a new conversation that can be resumed, and nothing is
left running after ``aclose()``. Time to first text, warm vs cold, is printed (``-s`` shows it), not asserted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_claude_code import ask, make_runner

from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.types import ChatRequest, Message, TextDelta

pytestmark = pytest.mark.anyio

REQUEST = ChatRequest(messages=[Message(role="system", content="Be brief."), Message(role="user", content="Say pong.")])


async def first_text(runner: ClaudeCodeRunner, request: ChatRequest) -> tuple[float, str]:
    """Seconds to the first TextDelta, and the whole answer."""
    start = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    async for event in runner.stream(request):
        if isinstance(event, TextDelta):
            first = time.perf_counter() - start if first is None else first
            text.append(event.text)
    assert first is not None
    return first, "".join(text)


async def spare_ready(runner: ClaudeCodeRunner) -> int:
    """Wait until the pool holds one started spare, then give its start-up (~0.35 s of CPU) time to finish; its pid."""
    pool = runner.warm_pool
    assert pool is not None
    with anyio.fail_after(10):
        while not (len(pool) == 1 and not pool.pending):  # noqa: ASYNC110 - the start is a task of the pool's
            await anyio.sleep(0.02)
    await anyio.sleep(1.5)
    (pid,) = pool.pids()
    return pid


def session_of(pid: int) -> str:
    """The ``--session-id`` a claude process was started with."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return argv[argv.index(b"--session-id") + 1].decode()


async def test_a_spare_answers_like_a_cold_run_and_is_gone_after_aclose(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any, no_leftover_processes: None
) -> None:
    cold = make_runner(tmp_home, fake_api, cli_bin)
    warm = make_runner(tmp_home, fake_api, cli_bin, warm=1, live_max=0)  # a spare alone: it ends with its run
    try:
        await cold.complete(REQUEST)  # the first run of a fresh HOME writes Claude's config files
        cold_first, cold_text = await first_text(cold, REQUEST)
        cold_upstream = fake_api.last_main_request()
        await warm.complete(REQUEST)  # cold: no spare yet; it starts one afterwards
        pid = await spare_ready(warm)
        assert pid in procs.named("claude")
        session = session_of(pid)
        warm_first, warm_text = await first_text(warm, REQUEST)
        served = fake_api.last_main_request()
        assert warm_text == cold_text == "pong from fake"
        assert served.headers.get("x-claude-code-session-id") == session  # the spare made the upstream call
        assert procs.wait_until_gone([pid], timeout=2.0) == []  # it served its one request and ended
        assert served.system_text() == cold_upstream.system_text()
        assert served.model == cold_upstream.model
        assert served.messages() == cold_upstream.messages()
        print(f"\ntime to first text: cold {cold_first * 1000:.0f} ms, warm {warm_first * 1000:.0f} ms")
        await spare_ready(warm)  # replaced
    finally:
        await warm.aclose()
        await cold.aclose()
    assert procs.wait_until_gone(procs.named("claude"), timeout=2.0) == []


async def test_a_conversation_started_by_a_spare_resumes(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any, no_leftover_processes: None
) -> None:
    fake_api.script("first noted", "BANANA noted", "BANANA it was")
    runner = make_runner(tmp_home, fake_api, cli_bin, warm=1)
    u1, u2 = "remember the word BANANA", "which word?"
    try:
        await runner.complete(ask("warm-up", conversation="A"))
        pid = await spare_ready(runner)
        session = session_of(pid)
        first = await runner.complete(ask(u1, conversation="B"))
        assert first.content == "BANANA noted" and first.session_id == session  # served by the spare
        second = await runner.complete(ask(u1, first.content, u2, conversation="B"))  # a resume: cold
        assert second.content == "BANANA it was" and second.session_id == session
        upstream = fake_api.last_main_request()
        assert upstream.headers.get("x-claude-code-session-id") == session
        turns = [text for role, text in upstream.messages() if role in ("user", "assistant")]
        assert len(turns) == 3 and turns[0].endswith(u1) and turns[1:] == ["BANANA noted", u2]
    finally:
        await runner.aclose()
    assert procs.wait_until_gone(procs.named("claude"), timeout=2.0) == []
