"""The real ACP agents other than Gemini (its own module) through AcpRunner, against the fake model API.

Each agent's offline setup is its exec runner's (the same options): the tests only write the *user's* config the
way that runner's own e2e tests do. One agent process per test serves every turn of the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from copilot_env import copilot_env
from opencode_env import KILO, OPENCODE, Flavor, write_user_config
from qwen_env import qwen_env

from llm_runners.acp import AcpRunner
from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    RateLimited,
    UpstreamError,
)
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.testing.fake_api.script import DEFAULT_TEXT, ErrorKind, Reply
from llm_runners.types import ChatRequest, Done, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Agent:
    name: str
    #: writes the user's config into the test's HOME; returns runner options
    setup: Callable[[Any, FakeModelAPI, str], dict[str, Any]]
    #: a model name a request may ask for, and the name the model API then receives
    model: tuple[str, str]
    #: whether the agent advertises ``session/close`` (Qwen does not: its sessions end with the process)
    closes_sessions: bool = True
    #: the most requests one failing turn may make: the agent's own retry loop, bounded by the runner where the
    #: agent logs it (Copilot does not: its 429 / 5xx take 6 requests, ~15 s)
    attempts: int = 3
    #: extra runner options
    options: dict[str, Any] = field(default_factory=dict)
    #: whether text chunks reliably arrive as the model generates them (OpenCode 1.18.33 often sends a turn's
    #: chunks together at its end: 2 s of upstream streaming arrived within 0.2 s in 3 of 4 runs, 1.4 s apart once)
    realtime: bool = True


def _opencode_like(flavor: Flavor) -> Callable[[Any, FakeModelAPI, str], dict[str, Any]]:
    def setup(tmp_home: Any, fake_api: FakeModelAPI, key: str) -> dict[str, Any]:
        write_user_config(flavor, tmp_home.home, fake_api.openai_base_url, key)
        return {"env": tmp_home.env()}

    return setup


def _qwen(tmp_home: Any, fake_api: FakeModelAPI, key: str) -> dict[str, Any]:
    return {"env": qwen_env(tmp_home.env(), fake_api.openai_base_url, key)}


def _copilot(tmp_home: Any, fake_api: FakeModelAPI, key: str) -> dict[str, Any]:
    # a cache per test: the first run of a fresh cache unpacks the CLI (+0.8 s), acceptable for an ACP process
    return {"env": copilot_env(tmp_home.env(), fake_api.openai_base_url, tmp_home.home / ".cache", key)}


AGENTS = [
    Agent(
        "opencode",
        _opencode_like(OPENCODE),
        ("fake-model-2", "fake-model-2"),
        realtime=False,
    ),
    Agent(
        "kilo",
        _opencode_like(KILO),
        ("fake-model-2", "fake-model-2"),
    ),
    # Qwen advertises only the configured model (and its OAuth model): a name maps to its ``$runtime|…`` id
    Agent("qwen", _qwen, ("fake-model", "fake-model"), closes_sessions=False),
    # Copilot offers no model selection over ACP (only its process's COPILOT_MODEL): a warning says so
    Agent("copilot", _copilot, ("fake-model-2", "fake-model"), attempts=6),
]


@pytest.fixture(params=AGENTS, ids=[a.name for a in AGENTS])
def agent(request: pytest.FixtureRequest) -> Agent:
    value: Agent = request.param
    return value


def make_runner(
    agent: Agent, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Callable[[str], Path], key: str = "sk-fake", **kw: Any
) -> AcpRunner:
    options = {**agent.setup(tmp_home, fake_api, key), **agent.options, **kw}
    options.setdefault("timeout", 120.0)
    return AcpRunner(
        agent.name,
        binary=str(cli_bin(agent.name)),
        sessions=SessionStore(),
        transcript=tmp_home.tmpdir / "acp.jsonl",
        **options,
    )


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def follow_up(first: ChatRequest, answer: str, text: str, **kw: Any) -> ChatRequest:
    messages = [*first.messages, {"role": "assistant", "content": answer}, {"role": "user", "content": text}]
    return ChatRequest(messages=messages, conversation=first.conversation, **kw)


def sent_messages(tmp_home: Any) -> list[dict[str, Any]]:
    lines = (tmp_home.tmpdir / "acp.jsonl").read_text().splitlines()
    return [json.loads(line)["msg"] for line in lines if json.loads(line)["dir"] == "client->agent"]


def received_stop_reasons(tmp_home: Any) -> list[str]:
    lines = [json.loads(line) for line in (tmp_home.tmpdir / "acp.jsonl").read_text().splitlines()]
    results = [line["msg"].get("result") for line in lines if line["dir"] == "agent->client"]
    return [r["stopReason"] for r in results if isinstance(r, dict) and "stopReason" in r]


def prompts_sent(tmp_home: Any) -> list[str]:
    return [
        "".join(b.get("text", "") for b in m["params"]["prompt"])
        for m in sent_messages(tmp_home)
        if m.get("method") == "session/prompt"
    ]


async def test_answer_streams_with_system_prompt_usage_and_model(
    agent: Agent, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, no_leftover_processes: None
) -> None:
    fake_api.script(Reply(chunks=["Hel", "lo ", "world"], input_tokens=40, output_tokens=3, chunk_delay=1.0))
    runner = make_runner(agent, tmp_home, fake_api, cli_bin, warm=True)
    await runner.start()
    asked, upstream = agent.model
    request = ChatRequest(
        messages=[{"role": "system", "content": "You are a terse test bot."}, {"role": "user", "content": "hi"}],
        model=asked,
    )
    stamps: list[tuple[float, Any]] = []
    async for event in runner.stream(request):
        stamps.append((time.monotonic(), event))
    texts = [(t, e.text) for t, e in stamps if isinstance(e, TextDelta)]
    assert [text for _, text in texts] == ["Hel", "lo ", "world"]  # one chunk per upstream chunk, in order
    if agent.realtime:  # streamed as generated: 2 s upstream (a loaded machine compressed Kilo's spread to 0.5 s)
        assert texts[-1][0] - texts[0][0] > 0.3
    usage = [e.usage for _, e in stamps if isinstance(e, UsageEvent)]
    assert len(usage) == 1 and (usage[0].input_tokens, usage[0].output_tokens) == (40, 3)
    done = stamps[-1][1]
    assert isinstance(done, Done) and done.session_id
    main = fake_api.last_main_request()
    assert main.model == upstream
    assert bool(done.warnings) is (asked != upstream)  # a model the agent could not select is never silent
    assert "<system_instructions>\nYou are a terse test bot.\n</system_instructions>" in main.last_user_text()
    assert main.tool_names() == []  # the exec runner's setup: the CLI's tools stay off
    await runner.aclose()


async def test_second_turn_resumes_and_conversations_do_not_cross(
    agent: Agent, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, no_leftover_processes: None
) -> None:
    runner = make_runner(agent, tmp_home, fake_api, cli_bin)
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
        assert [role for role, _ in second[0].messages()][-3:] == ["user", "assistant", "user"]
    assert sorted(prompts_sent(tmp_home)) == sorted(["I am alice", "I am bob", "who am I, alice?", "who am I, bob?"])
    await runner.aclose()


ERROR_KINDS: list[tuple[ErrorKind, type[LLMError]]] = [
    ("401", AuthenticationError),
    ("429", RateLimited),
    ("500", UpstreamError),
    ("404", ModelNotFound),
    ("context", ContextLengthExceeded),
]


async def test_every_error_kind_fails_fast_and_the_process_serves_on(
    agent: Agent, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    """Every API error becomes its own error kind, never an answer (Copilot streams them as answer text); a retry
    loop of the agent's is cut short; the same process answers the next turn."""
    runner = make_runner(agent, tmp_home, fake_api, cli_bin)
    pids = set()
    for kind, error in ERROR_KINDS:
        fake_api.reset()
        fake_api.default_reply = Reply(error=kind)  # every attempt fails
        with pytest.raises(LLMError) as info:
            await runner.complete(ask(f"hi ({kind})"))
        assert type(info.value) is error, (kind, info.value)
        assert 1 <= len(fake_api.main_requests()) <= agent.attempts, kind
        fake_api.default_reply = Reply(DEFAULT_TEXT)
        assert (await runner.complete(ask("again"))).content == DEFAULT_TEXT, kind
        pids.update(a.pid for a in runner.agents)
    assert len(pids) == 1  # one process throughout: a turn cut short was cancelled, not killed
    await runner.aclose()


async def test_agent_killed_mid_turn_fails_cleanly_and_the_next_request_works(
    agent: Agent, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    fake_api.script(Reply(chunks=["one ", "two ", "three"], chunk_delay=5.0))
    runner = make_runner(agent, tmp_home, fake_api, cli_bin)
    stream = runner.stream(ask("count", conversation="c"))
    assert isinstance(await stream.__anext__(), TextDelta)
    pid = runner.agents[0].pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    with pytest.raises(UpstreamError, match="agent process"):
        async for _ in stream:
            pass
    assert procs.wait_until_gone([pid], timeout=5.0) == []
    assert (await runner.complete(ask("still there?"))).content == "pong from fake"
    assert runner.agents[0].pid != pid
    await runner.aclose()


async def test_client_disconnect_cancels_the_turn_and_the_process_keeps_serving(
    agent: Agent, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    fake_api.script(Reply(chunks=["never ", "ends"], hang="mid"))
    runner = make_runner(agent, tmp_home, fake_api, cli_bin)
    stream = runner.stream(ask("talk forever"))
    assert isinstance(await stream.__anext__(), TextDelta)
    pid = runner.agents[0].pid
    hung = fake_api.last_main_request()
    # another conversation on the same process is answered while this turn hangs (measured: every agent here
    # runs turns of different sessions at once; the server's limits bound how many)
    other = await runner.complete(ask("meanwhile", conversation="other"))
    assert other.content == "pong from fake" and runner.agents[0].pid == pid
    await stream.aclose()  # the client went away
    assert any(m.get("method") == "session/cancel" for m in sent_messages(tmp_home))
    assert received_stop_reasons(tmp_home) == ["end_turn", "cancelled"]  # stopped within the grace
    # and dropped the upstream request (OpenCode and Kilo with a TCP reset)
    assert await asyncio.to_thread(hung.wait_disconnected, 10.0)
    assert procs.pid_alive(pid)
    assert (await runner.complete(ask("next"))).content == "pong from fake"
    assert runner.agents[0].pid == pid
    await runner.aclose()
    assert procs.wait_until_gone([pid], timeout=5.0) == []


async def test_sessions_of_ended_conversations_are_closed(
    agent: Agent, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    """``max_sessions=1``: bob's conversation pushes alice's session out; it is closed in the agent where the agent
    supports ``session/close``, and alice's next turn is replayed into a new session on the same process."""
    runner = make_runner(agent, tmp_home, fake_api, cli_bin, max_sessions=1)
    first = ask("I am alice", conversation="alice")
    a1 = (await runner.complete(first)).content
    pid = runner.agents[0].pid
    await runner.complete(ask("I am bob", conversation="bob"))
    await asyncio.sleep(0)  # the close runs beside the caller
    for _ in range(100):
        if not agent.closes_sessions or any("result" in m for m in close_answers(tmp_home)):
            break
        await asyncio.sleep(0.1)
    closes = [m for m in sent_messages(tmp_home) if m.get("method") == "session/close"]
    news = [m for m in sent_messages(tmp_home) if m.get("method") == "session/new"]
    if agent.closes_sessions:
        assert len(closes) == 1 and [a.get("error") for a in close_answers(tmp_home)] == [None]
    else:
        assert closes == []
    again = await runner.complete(follow_up(first, a1, "who am I?"))
    assert again.content == "pong from fake" and runner.agents[0].pid == pid
    assert len([m for m in sent_messages(tmp_home) if m.get("method") == "session/new"]) == len(news) + 1
    replay = fake_api.last_main_request()
    assert "I am alice" in json.dumps(replay.body) and "I am bob" not in json.dumps(replay.body)
    await runner.aclose()


def close_answers(tmp_home: Any) -> list[dict[str, Any]]:
    """The agent's answers to our session/close requests."""
    lines = [json.loads(line) for line in (tmp_home.tmpdir / "acp.jsonl").read_text().splitlines()]
    ids = {line["msg"]["id"] for line in lines if line["msg"].get("method") == "session/close"}
    return [line["msg"] for line in lines if line["dir"] == "agent->client" and line["msg"].get("id") in ids]
