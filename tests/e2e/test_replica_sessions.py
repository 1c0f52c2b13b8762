"""The conversation -> session map across two server replicas on one real redis-server, with the real Claude Code
2.1.197: a replica that can reach the CLI's session files (same host, HOME and working directory) resumes the
session another replica started; one that cannot (another working directory) replays the history instead."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from test_claude_code import claude_env

from llm_runners.config import Settings
from llm_runners.router import Router
from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.server import create_app
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api import FakeModelAPI

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def replica(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Callable[[str], Path], state: str, cwd: Path
) -> AsyncIterator[httpx2.AsyncClient]:
    """One server (its own runner, as a replica would have) on the shared state, called in-process."""
    runner = ClaudeCodeRunner(
        binary=str(cli_bin("claude")),
        env=claude_env(tmp_home, fake_api.anthropic_base_url, "dummy"),
        cwd=str(cwd),
        timeout=90.0,
        sessions=SessionStore(),  # its own: only the shared state the server gives it links it to the others
    )
    app = create_app(Router({"claude_code": runner}, "claude_code"), Settings(state=state))
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://replica", timeout=120) as client:
            yield client


async def chat(client: httpx2.AsyncClient, *texts: str) -> str:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]
    r = await client.post("/v1/chat/completions", json={"model": "claude_code", "messages": messages})
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


async def test_a_replica_resumes_what_another_started_when_it_can_reach_the_session(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, redis_server: Any, tmp_path: Path, no_leftover_processes: None
) -> None:
    fake_api.script("BANANA noted", "CHERRY noted", "pong")
    u1, u2, u3 = "remember the word BANANA", "also remember CHERRY", "which words?"
    elsewhere = tmp_path / "another-workdir"
    elsewhere.mkdir()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(replica(tmp_home, fake_api, cli_bin, redis_server.url, tmp_home.workdir))
        b = await stack.enter_async_context(replica(tmp_home, fake_api, cli_bin, redis_server.url, tmp_home.workdir))
        c = await stack.enter_async_context(replica(tmp_home, fake_api, cli_bin, redis_server.url, elsewhere))
        a1 = await chat(a, u1)
        first_session = fake_api.last_main_request().headers.get("x-claude-code-session-id")
        assert first_session
        # B shares HOME and working directory with A: it resumes A's session and sends only the new message
        a2 = await chat(b, u1, a1, u2)
        resumed = fake_api.last_main_request()
        assert resumed.headers.get("x-claude-code-session-id") == first_session
        turns = [text for role, text in resumed.messages() if role in ("user", "assistant")]
        assert len(turns) == 3 and turns[0].endswith(u1) and turns[1] == "BANANA noted" and turns[2] == u2
        # C cannot reach the session files (another working directory): the history is replayed, no error
        await chat(c, u1, a1, u2, a2, u3)
        replayed = fake_api.last_main_request()
        assert replayed.headers.get("x-claude-code-session-id") != first_session
        prompt = replayed.last_user_text()
        assert u1 in prompt and "CHERRY noted" in prompt and u3 in prompt
