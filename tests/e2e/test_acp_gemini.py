"""The real Gemini CLI 0.61.0 in ACP mode (``gemini --acp``) through AcpRunner, against the fake model API.

One warm agent process per test serves every turn of the test, so several honest assertions share a process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gemini_env import RUNNER_SETTINGS, gemini_env

from llm_runners.acp import AcpRunner
from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    Overloaded,
    RateLimited,
    UpstreamError,
)
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api.script import FakeToolCall, Reply
from llm_runners.types import ChatRequest, Done, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio

MODEL = "gemini-2.5-flash"


def make_runner(
    tmp_home: Any, fake_api: Any, cli_bin: Callable[[str], Path], key: str = "dummy", **kw: Any
) -> AcpRunner:
    env = gemini_env(tmp_home.env(), fake_api.gemini_base_url, key)
    kw.setdefault("settings", RUNNER_SETTINGS)
    kw.setdefault("model", MODEL)
    return AcpRunner(
        "gemini",
        binary=str(cli_bin("gemini")),
        env=env,
        sessions=SessionStore(),
        transcript=tmp_home.tmpdir / "acp.jsonl",
        **kw,
    )


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def follow_up(first: ChatRequest, answer: str, text: str, **kw: Any) -> ChatRequest:
    messages = [*first.messages, {"role": "assistant", "content": answer}, {"role": "user", "content": text}]
    return ChatRequest(messages=messages, conversation=first.conversation, **kw)


def prompts_sent(tmp_home: Any) -> list[str]:
    """The text of every session/prompt our client sent (from the runner's ACP transcript)."""
    out = []
    for line in (tmp_home.tmpdir / "acp.jsonl").read_text().splitlines():
        msg = json.loads(line)["msg"]
        if msg.get("method") == "session/prompt":
            out.append("".join(b.get("text", "") for b in msg["params"]["prompt"]))
    return out


async def test_answer_streams_with_system_prompt_usage_and_model(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    fake_api.script(Reply(chunks=["Hel", "lo ", "world"], input_tokens=40, output_tokens=3, chunk_delay=0.4))
    runner = make_runner(tmp_home, fake_api, cli_bin, warm=True)
    await runner.start()
    request = ChatRequest(
        messages=[{"role": "system", "content": "You are a terse test bot."}, {"role": "user", "content": "hi"}],
        model="fake-gemini-model-x",
    )
    stamps: list[tuple[float, Any]] = []
    async for event in runner.stream(request):
        stamps.append((time.monotonic(), event))
    texts = [(t, e.text) for t, e in stamps if isinstance(e, TextDelta)]
    assert [text for _, text in texts] == ["Hel", "lo ", "world"]
    assert texts[-1][0] - texts[0][0] > 0.6  # streamed as generated, not at the end
    usage = [e.usage for _, e in stamps if isinstance(e, UsageEvent)]
    assert len(usage) == 1 and (usage[0].input_tokens, usage[0].output_tokens) == (40, 3)
    done = stamps[-1][1]
    assert isinstance(done, Done) and done.session_id and done.model == "fake-gemini-model-x"
    main = fake_api.last_main_request()
    assert main.model == "fake-gemini-model-x"  # session/set_model reached the API
    user = main.last_user_text()
    assert "<system_instructions>\nYou are a terse test bot.\n</system_instructions>\n\nhi" in user
    assert main.tool_names() == []  # the exec runner's private home: the CLI's tools stay off
    await runner.aclose()


async def test_second_turn_resumes_and_conversations_do_not_cross(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    fake_api.default_reply = Reply(chunks=["slow ", "answer ", "here"], chunk_delay=0.3)

    async def talk(name: str) -> tuple[str, str]:
        first = ask(f"I am {name}", conversation=name)
        a1 = (await runner.complete(first)).content
        a2 = (await runner.complete(follow_up(first, a1, f"who am I, {name}?"))).content
        return a1, a2

    results = await asyncio.gather(talk("alice"), talk("bob"))
    assert all(a == "slow answer here" for pair in results for a in pair)
    assert len(runner.agents) == 1  # one process served both conversations
    main = fake_api.main_requests()
    assert len(main) == 4
    for name, other in (("alice", "bob"), ("bob", "alice")):
        second = [r for r in main if any(f"who am I, {name}?" in t for t in r.user_texts())]
        assert len(second) == 1
        body = json.dumps(second[0].body)
        assert f"I am {name}" in body and f"I am {other}" not in body  # the history upstream is its own
        roles = [role for role, _ in second[0].messages()]
        assert roles[-3:] == ["user", "assistant", "user"]
    # our prompts carried only the new message on the second turn (the agent keeps the history)
    sent = prompts_sent(tmp_home)
    assert sorted(sent) == sorted(["I am alice", "I am bob", "who am I, alice?", "who am I, bob?"])
    await runner.aclose()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("401", AuthenticationError),
        ("429", RateLimited),
        ("404", ModelNotFound),
        ("context", ContextLengthExceeded),
        ("500", UpstreamError),
        ("529", Overloaded),
    ],
)
async def test_error_kinds(tmp_home: Any, fake_api: Any, cli_bin: Any, kind: str, error: type[LLMError]) -> None:
    fake_api.script(Reply(error=kind))  # type: ignore[arg-type]
    runner = make_runner(tmp_home, fake_api, cli_bin)
    with pytest.raises(error) as info:
        await runner.complete(ask("hi"))
    assert type(info.value) is error
    # the process survives an API error and answers the next turn
    assert (await runner.complete(ask("again"))).content == "pong from fake"
    assert len(runner.agents) == 1
    await runner.aclose()


async def test_agent_killed_mid_turn_fails_cleanly_and_the_next_request_works(
    tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any
) -> None:
    fake_api.script(Reply(chunks=["one ", "two ", "three"], chunk_delay=5.0))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    stream = runner.stream(ask("count", conversation="c"))
    first = await stream.__anext__()
    assert isinstance(first, TextDelta)
    pid = runner.agents[0].pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    with pytest.raises(UpstreamError, match="agent process"):
        async for _ in stream:
            pass
    assert procs.wait_until_gone([pid], timeout=5.0) == []
    answer = await runner.complete(ask("still there?"))
    assert answer.content == "pong from fake"
    assert runner.agents[0].pid != pid
    await runner.aclose()


async def test_client_disconnect_cancels_the_turn_and_the_process_keeps_serving(
    tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any
) -> None:
    fake_api.script(Reply(chunks=["never ", "ends"], hang="mid"))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    stream = runner.stream(ask("talk forever"))
    assert isinstance(await stream.__anext__(), TextDelta)
    pid = runner.agents[0].pid
    hung = fake_api.last_main_request()
    await stream.aclose()  # the client went away
    assert await asyncio.to_thread(hung.wait_disconnected, 10.0)  # the agent dropped the upstream request
    sent = [json.loads(line)["msg"] for line in (tmp_home.tmpdir / "acp.jsonl").read_text().splitlines()]
    assert any(m.get("method") == "session/cancel" for m in sent)
    assert procs.pid_alive(pid)
    assert (await runner.complete(ask("next"))).content == "pong from fake"
    assert runner.agents[0].pid == pid
    await runner.aclose()
    assert procs.wait_until_gone([pid], timeout=5.0) == []


async def test_permission_requests_are_rejected_nothing_runs(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    """The CLI's own tools are registered again (the operator's settings undo the runner's ``tools.core: []``), but
    ``allow_tools`` is off: the agent asks permission, the runner rejects, nothing is executed or written.

    (Naming the tools in ``tools.core`` instead would make Gemini CLI run them without asking: measured, see
    the README.)"""
    target = tmp_home.workdir / "written-by-the-agent.txt"
    marker = tmp_home.workdir / "touched-by-the-shell"
    fake_api.script(
        Reply(tool_calls=[FakeToolCall("run_shell_command", {"command": f"touch {marker}"})]),
        Reply(tool_calls=[FakeToolCall("write_file", {"file_path": str(target), "content": "pwned"})]),
        Reply("gave up"),
    )
    settings = {**RUNNER_SETTINGS, "tools": {"core": None}}
    runner = make_runner(tmp_home, fake_api, cli_bin, settings=settings, cwd=str(tmp_home.workdir))
    answer = await runner.complete(ask("please run the shell and write the file"))
    assert "run_shell_command" in fake_api.main_requests()[0].tool_names()
    asked = [p for agent in runner.agents for p in agent.permissions]
    assert len(asked) == 2, asked  # the shell command and the file write
    assert [kind for *_, kind in asked] == ["reject_once", "reject_once"]
    assert not marker.exists() and not target.exists()
    assert answer.content  # the turn ended normally
    await runner.aclose()
