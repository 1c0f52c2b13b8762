"""The real Claude Code 2.1.197 driven through ClaudeCodeRunner against the fake model API (loopback only).

Each CLI run costs ~0.5 s; the suite makes about twenty. Every assertion about what reached the model is made on
the request the fake recorded, never on what the runner says it sent."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
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
from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api import FakeModelAPI, Reply
from llm_runners.types import ChatRequest, Done, ImagePart, Message, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478da63f8cfc000000301"
    "01009a7e1e5d0000000049454e44ae426082"
)


def claude_env(tmp_home: Any, base_url: str, key: str) -> dict[str, str]:
    """clis.md section 3: a throw-away HOME, the fake as the API, and no retries (a 401/500 would take ~3 min).
    The runner adds the telemetry/update switches itself; the tests rely on that for staying offline."""
    return {
        **tmp_home.env(),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }


def make_runner(
    tmp_home: Any,
    fake_api: FakeModelAPI,
    cli_bin: Callable[[str], Path],
    key: str = "dummy",
    base_url: str | None = None,
    **kw: Any,
) -> ClaudeCodeRunner:
    kw.setdefault("sessions", SessionStore())
    kw.setdefault("timeout", 60.0)
    return ClaudeCodeRunner(
        binary=str(cli_bin("claude")),
        env=claude_env(tmp_home, base_url or fake_api.anthropic_base_url, key),
        cwd=str(tmp_home.workdir),
        **kw,
    )


def ask(*texts: str, **kw: Any) -> ChatRequest:
    roles = ["user", "assistant"]
    return ChatRequest(messages=[Message(role=roles[i % 2], content=t) for i, t in enumerate(texts)], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ answers


async def test_plain_answer_usage_model_and_session(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, no_leftover_processes: None
) -> None:
    fake_api.script(Reply(text="four", input_tokens=500, output_tokens=1, cached_tokens=120))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    response = await runner.complete(ask("What is 2+2?"))
    assert response.content == "four"
    assert response.finish_reason == "stop"
    req = fake_api.last_main_request()
    assert req.last_user_text().endswith("What is 2+2?")
    # the CLI's own numbers: the whole prompt (uncached 380 + cache read 120) and the cache reads as a subset
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.cached_tokens, response.usage.output_tokens) == (500, 120, 1)
    assert response.usage.cost_usd is not None and response.usage.cost_usd > 0
    assert response.model == req.model  # the model the API served, as the stream reported it
    assert response.session_id == req.headers.get("x-claude-code-session-id")
    assert len(fake_api.main_requests()) == 1


async def test_tokens_stream_as_they_are_generated(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    chunks = ["Alpha", " beta", " gamma", " delta"]
    fake_api.script(Reply(chunks=chunks, chunk_delay=0.25))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    arrivals: list[tuple[float, str, bool]] = []
    events = []
    async for event in runner.stream(ask("count")):
        events.append(event)
        if isinstance(event, TextDelta):
            arrivals.append((time.monotonic(), event.text, bool(procs.named("claude"))))
    assert [a[1] for a in arrivals] == chunks  # one delta per upstream chunk, none repeated by the final message
    assert "".join(a[1] for a in arrivals) == "Alpha beta gamma delta"
    assert arrivals[0][2], "the first delta must arrive while the CLI is still running"
    assert arrivals[-1][0] - arrivals[0][0] >= 0.4  # spread like the upstream chunks (0.75 s), not in one burst
    assert isinstance(events[-1], Done) and any(isinstance(e, UsageEvent) for e in events)


async def test_system_prompt_replaces_the_default_exactly(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    system = "You are a terse pirate.\nAnswer in one word."
    runner = make_runner(tmp_home, fake_api, cli_bin)
    await runner.complete(
        ChatRequest(messages=[Message(role="system", content=system), Message(role="user", content="hi")])
    )
    body = fake_api.last_main_request().body
    blocks = [b["text"] for b in body["system"]]
    assert blocks[-1] == system  # the CLI's default prompt block is replaced, byte for byte
    assert not any("Claude Code" in b and len(b) > 1000 for b in blocks)
    assert system not in fake_api.last_main_request().last_user_text()


async def test_chosen_model_reaches_the_api(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    response = await runner.complete(ask("hi", model="claude-sonnet-4-5-20250929"))
    assert fake_api.last_main_request().model == "claude-sonnet-4-5-20250929"
    assert response.model == "claude-sonnet-4-5-20250929"


async def test_tools_are_off_by_default_and_on_when_allowed(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    await make_runner(tmp_home, fake_api, cli_bin).complete(ask("hi"))
    off = fake_api.last_main_request()
    assert off.tool_names() == []
    assert [role for role, _ in off.messages()] == ["user"]  # no agent-list system message either
    await make_runner(tmp_home, fake_api, cli_bin, allow_tools=True).complete(ask("hi"))
    on = fake_api.last_main_request().tool_names()
    assert {"Bash", "Write", "Read", "WebFetch"} <= set(on)  # the full default set


async def test_callers_claude_md_settings_and_mcp_servers_stay_out(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    claude_dir = tmp_home.home / ".claude"
    claude_dir.mkdir()
    (claude_dir / "CLAUDE.md").write_text("USER-MEMORY-MARKER: always answer in French")
    (claude_dir / "settings.json").write_text('{"env": {"SETTINGS_MARKER": "1"}}')
    spawned = tmp_home.tmpdir / "mcp-spawned"
    (tmp_home.home / ".claude.json").write_text(
        json.dumps({"mcpServers": {"spy": {"type": "stdio", "command": "/bin/sh", "args": ["-c", f"touch {spawned}"]}}})
    )
    (tmp_home.workdir / "CLAUDE.md").write_text("PROJECT-MEMORY-MARKER")
    await make_runner(tmp_home, fake_api, cli_bin).complete(ask("hi"))
    raw = fake_api.last_main_request().raw_body
    assert b"USER-MEMORY-MARKER" not in raw and b"PROJECT-MEMORY-MARKER" not in raw
    assert not spawned.exists()


async def test_image_arrives_as_an_image_block(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    message = Message(role="user", content=[{"type": "text", "text": "what is this?"}, ImagePart(data=PNG)])
    runner = make_runner(tmp_home, fake_api, cli_bin)
    events = [e async for e in runner.stream(ChatRequest(messages=[message]))]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "pong from fake"
    last_user = [m for m in fake_api.last_main_request().body["messages"] if m["role"] == "user"][-1]
    images = [b for b in last_user["content"] if b["type"] == "image"]
    assert len(images) == 1
    assert images[0]["source"]["media_type"] == "image/png"
    assert base64.b64decode(images[0]["source"]["data"]) == PNG


# ------------------------------------------------------------------------------------------------ sessions


async def test_later_turns_resume_the_cli_session(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    fake_api.script("BANANA noted", "CHERRY noted", "BANANA and CHERRY")
    runner = make_runner(tmp_home, fake_api, cli_bin)
    u1, u2, u3 = "remember the word BANANA", "also remember CHERRY", "which words?"
    first = await runner.complete(ask(u1))
    second = await runner.complete(ask(u1, first.content, u2))
    third = await runner.complete(ask(u1, first.content, u2, second.content, u3))
    assert third.content == "BANANA and CHERRY"
    assert first.session_id == second.session_id == third.session_id
    for req, expected in zip(
        fake_api.main_requests()[1:],
        ([u1, "BANANA noted", u2], [u1, "BANANA noted", u2, "CHERRY noted", u3]),
        strict=True,
    ):
        assert req.headers.get("x-claude-code-session-id") == first.session_id
        turns = [text for role, text in req.messages() if role in ("user", "assistant")]
        # the CLI re-sent its own history (every earlier user message survived in its session file) ...
        assert len(turns) == len(expected), turns
        assert turns[0].endswith(u1) and turns[1:-1] == expected[1:-1]
        # ... and our prompt carried only the new message, no replayed transcript
        assert turns[-1] == expected[-1]


async def test_lost_session_is_replayed_in_a_fresh_one(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    store = SessionStore()
    history = [Message(role="user", content="remember BANANA"), Message(role="assistant", content="ok")]
    # a session the CLI never had: resuming it fails with "No conversation found", the base replays the history
    store.remember("claude_code", None, history[:1], history[1], "0b9c2c1e-0000-4000-8000-000000000000")
    runner = make_runner(tmp_home, fake_api, cli_bin, sessions=store)
    response = await runner.complete(ChatRequest(messages=[*history, Message(role="user", content="which word?")]))
    assert response.content == "pong from fake"
    assert response.session_id != "0b9c2c1e-0000-4000-8000-000000000000"
    prompt = fake_api.last_main_request().last_user_text()
    assert "remember BANANA" in prompt and "which word?" in prompt
    assert len(fake_api.main_requests()) == 1  # the failed resume never reached the model


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("401", AuthenticationError),
        ("429", RateLimited),
        ("500", UpstreamError),
        ("context", ContextLengthExceeded),
        ("404", ModelNotFound),
    ],
)
async def test_api_errors_are_classified(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, kind: str, error: type[LLMError]
) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key=f"fake-err-{kind}")
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        await runner.complete(ask("hi"))
    assert type(info.value) is error, info.value
    assert info.value.provider == "claude_code"
    # retries off: one request, a quick failure. A 404 on the stream makes 2.1.197 try once more without streaming.
    assert [r.stream for r in fake_api.main_requests()] == ([True, False] if kind == "404" else [True])
    assert time.monotonic() - started < 10


async def test_connection_refused_is_an_upstream_error(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    with anyio.fail_after(15):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # a port nobody listens on any more
        runner = make_runner(tmp_home, fake_api, cli_bin, base_url=f"http://127.0.0.1:{port}")
        with pytest.raises(UpstreamError, match="Unable to connect"):
            await runner.complete(ask("hi"))


async def test_hang_times_out_and_kills_the_cli(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    # the idle limit must exceed claude's own start-up before its first request: ~2.5 s seen on a loaded machine,
    # over 4 s with the suite running in parallel beside other work
    runner = make_runner(tmp_home, fake_api, cli_bin, key="fake-err-hang", idle_timeout=10.0)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await runner.complete(ask("hi"))
    assert time.monotonic() - started < 40
    assert procs.wait_until_gone(procs.named("claude"), timeout=1.0) == []
    assert procs.named("claude") == []
    assert fake_api.last_main_request().wait_disconnected(2.0)


async def test_consumer_that_stops_reading_kills_the_cli(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    fake_api.script(Reply(chunks=[f" w{i}" for i in range(40)], chunk_delay=0.2))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    stream = runner.stream(ask("talk"))
    first = None
    async for event in stream:
        if isinstance(event, TextDelta):
            first = event
            break
    assert first is not None and first.text == " w0"
    running = procs.named("claude")
    assert running, "the CLI should still be streaming"
    await stream.aclose()  # type: ignore[attr-defined]
    assert procs.wait_until_gone(running, timeout=1.0) == []
    assert procs.named("claude") == []


# ------------------------------------------------------------------------------------------------ health


async def test_health_reports_version_and_auth(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    health = await make_runner(tmp_home, fake_api, cli_bin).health()
    assert health.installed and health.ready and health.authenticated is True
    assert health.version == "2.1.197"
