"""The real GitHub Copilot CLI 1.0.102 driven through CopilotRunner against the fake model API (loopback only).

A run costs ~0.7 s; the unpacked CLI cache is shared by the session (copilot_env), everything else is per test."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from copilot_env import INSTRUCTIONS_MARKER, MCP_TOOL, bait_user_config, copilot_env
from test_cli_command import write_config
from test_codex import PNG
from test_server_real_cli import openai_client, serving

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    ProviderTimeout,
    RateLimited,
    UpstreamError,
)
from llm_runners.runners.copilot import CopilotRunner
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api import FakeModelAPI, Reply
from llm_runners.types import ChatRequest, Done, ImagePart, TextDelta, Usage, UsageEvent

pytestmark = pytest.mark.anyio

DEFAULT_PROMPT_MARK = "You are the GitHub Copilot CLI"


def make_runner(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, cache: Path, key: str = "sk-fake", **kw: Any
) -> CopilotRunner:
    env = copilot_env(tmp_home.env(), fake_api.openai_base_url, cache, key)
    env.update(kw.pop("env", {}))
    for name in kw.pop("unset", ()):
        env.pop(name, None)
    return CopilotRunner(binary=str(cli_bin("copilot")), env=env, cwd=kw.pop("cwd", None), **kw)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def user_text(text: str) -> str:
    """What the CLI sends for our prompt: its own date prefix, then the prompt verbatim."""
    assert text.startswith("<current_datetime>") and "</current_datetime>\n\n" in text, text[:200]
    return text.split("</current_datetime>\n\n", 1)[1]


async def test_tokens_stream_with_usage_model_session_and_no_tools(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path, procs: Any
) -> None:
    chunks = ["Alpha", " beta", " gamma", " delta"]
    fake_api.script(Reply(chunks=chunks, chunk_delay=0.25, input_tokens=321, cached_tokens=21, output_tokens=7))
    runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache)
    prompt = 'first line\n\n  second line with "quotes", $HOME and -dashes'
    arrivals: list[tuple[float, str, bool]] = []
    events = []
    async for event in runner.stream(ask(prompt, model="fake-model-2")):
        events.append(event)
        if isinstance(event, TextDelta):
            arrivals.append((time.monotonic(), event.text, bool(procs.named("copilot"))))
    assert [a[1] for a in arrivals] == chunks  # one delta per upstream chunk, not repeated by assistant.message
    assert arrivals[0][2], "the first delta must arrive while the CLI is still running"
    assert arrivals[-1][0] - arrivals[0][0] >= 0.4  # spread like the upstream chunks, not in one burst
    assert [type(e) for e in events[len(chunks) :]] == [UsageEvent, Done]
    usage = events[-2]
    assert isinstance(usage, UsageEvent)
    assert usage.usage == Usage(input_tokens=321, output_tokens=7, cached_tokens=21)
    done = events[-1]
    assert isinstance(done, Done) and done.model == "fake-model-2" and done.session_id
    main = fake_api.last_main_request()
    assert main.model == "fake-model-2"  # request.model reaches the API
    assert user_text(main.last_user_text()) == prompt  # stdin verbatim
    assert main.tool_names() == []
    assert main.system_text().startswith(DEFAULT_PROMPT_MARK)
    assert len(fake_api.main_requests()) == 1
    await runner.aclose()


async def test_system_prompt_arrives_as_agent_instructions(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path
) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache)
    system = "You are a pirate.\nAnswer in three words."
    request = ChatRequest(messages=[{"role": "system", "content": system}, {"role": "user", "content": "hi"}])
    response = await runner.complete(request)
    assert response.content == "pong from fake" and response.provider == "copilot"
    main = fake_api.last_main_request()
    text = main.system_text()
    assert "<agent_instructions>" in text and system in text.split("<agent_instructions>", 1)[1]
    assert main.tool_names() == []  # the agent declares none, and the allow-list leaves none
    assert user_text(main.last_user_text()) == "hi"
    await runner.aclose()


async def test_two_turns_resume_the_session(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path
) -> None:
    fake_api.script("BANANA noted", "the word was BANANA")
    runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache)
    first = await runner.complete(ask("remember BANANA"))
    history = [
        {"role": "user", "content": "remember BANANA"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "what word?"},
    ]
    second = await runner.complete(ChatRequest(messages=history))
    assert second.content == "the word was BANANA"
    assert first.session_id and second.session_id == first.session_id
    resumed = fake_api.last_main_request().messages()
    # the CLI re-sent the history; our prompt held only the new user message
    assert [role for role, _ in resumed] == ["user", "assistant", "user"]
    assert user_text(resumed[0][1]) == "remember BANANA" and resumed[1][1] == "BANANA noted"
    assert user_text(resumed[2][1]) == "what word?"
    await runner.aclose()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("401", AuthenticationError),  # the CLI alone: 3 tries, 2.8 s
        ("429", RateLimited),  # the CLI alone: 6 tries, 6.2 s
        ("500", UpstreamError),  # the CLI alone: 6 tries, 17 s; the runner's error deadline stops it
        ("context", ContextLengthExceeded),
        ("404", ModelNotFound),
    ],
)
async def test_api_errors_are_classified_in_seconds(
    tmp_home: Any,
    fake_api: FakeModelAPI,
    cli_bin: Any,
    copilot_cache: Path,
    procs: Any,
    kind: str,
    error: type[LLMError],
) -> None:
    """Timed from the first upstream request (the CLI's start-up varies with the machine's load)."""
    runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache, key=f"fake-err-{kind}")
    first: list[float] = []

    async def stamp_first_request() -> None:
        await anyio.to_thread.run_sync(lambda: fake_api.wait_for_requests(1, timeout=60, main_only=True))
        first.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(stamp_first_request)
        with pytest.raises(LLMError) as info:
            await runner.complete(ask("hi"))
    elapsed = time.monotonic() - first[0]
    assert type(info.value) is error, info.value
    assert info.value.provider == "copilot"
    # the runner's error deadline (5 s from the first failure) plus the kill; a final error even sooner
    assert elapsed < (8 if error.transient else 5), elapsed
    assert len(fake_api.main_requests()) < 6
    print(f"copilot {kind}: {type(info.value).__name__} {elapsed:.2f} s after the first request, "
          f"{len(fake_api.main_requests())} requests: {info.value.message[:140]}")  # fmt: skip
    assert procs.wait_until_gone(procs.named("copilot"), timeout=1.0) == []
    await runner.aclose()


async def test_hang_times_out_and_kills_the_cli(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path, procs: Any
) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache, key="fake-err-hang", timeout=30.0)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await runner.complete(ask("hi"))
    assert time.monotonic() - started < 45  # the total timeout (generous: start-up under load) and the kill
    assert procs.wait_until_gone(procs.named("copilot"), timeout=1.0) == []
    assert fake_api.last_main_request().wait_disconnected(2.0)
    await runner.aclose()


async def test_consumer_that_stops_reading_kills_the_cli(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path, procs: Any
) -> None:
    fake_api.script(Reply(chunks=[f" w{i}" for i in range(40)], chunk_delay=0.2))
    runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache)
    stream = runner.stream(ask("talk"))
    first = None
    async for event in stream:
        if isinstance(event, TextDelta):
            first = event
            break
    assert first is not None and first.text == " w0"
    running = procs.named("copilot")
    assert running, "the CLI should still be streaming"
    started = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]
    assert procs.wait_until_gone(running, timeout=1.0) == []
    assert time.monotonic() - started < 1.0
    await runner.aclose()


@pytest.mark.parametrize("user_config", [False, True])
async def test_users_login_and_model_carry_over_their_mcp_and_instructions_do_not(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path, tmp_path: Path, user_config: bool
) -> None:
    user_home = tmp_home.home / ".copilot"
    marker = bait_user_config(user_home, sys.executable)
    (user_home / "settings.json").write_text(json.dumps({"model": "users-own-model", "logLevel": "all"}))
    (user_home / "config.json").write_text("// managed\n" + json.dumps({"firstLaunchAt": "2026-01-01T00:00:00Z"}))
    runner = make_runner(
        tmp_home, fake_api, cli_bin, copilot_cache, user_config=user_config, allow_tools=user_config,
        env={"COPILOT_MODEL": "users-own-model"},
    )  # fmt: skip
    response = await runner.complete(ask("hi"))
    assert response.content == "pong from fake"
    main = fake_api.last_main_request()
    assert main.model == "users-own-model"  # the user's model choice (COPILOT_MODEL) carries over
    assert main.api_key == "sk-fake"  # and so does their BYOK provider
    assert (INSTRUCTIONS_MARKER in main.system_text()) is user_config
    assert (MCP_TOOL in " ".join(main.tool_names())) is user_config
    assert marker.exists() is user_config
    if not user_config:
        private = Path(runner.child_env()["COPILOT_HOME"])
        assert private != user_home and (private / "config.json").resolve() == (user_home / "config.json")
        assert not (private / "mcp-config.json").exists()
        assert json.loads((private / "settings.json").read_text()) == {"model": "users-own-model"}
    await runner.aclose()


async def test_health_reports_version_and_auth(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path
) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache)
    health = await runner.health()
    assert health.installed and health.ready and health.authenticated is True
    assert health.version == "1.0.102"
    bare = make_runner(tmp_home, fake_api, cli_bin, copilot_cache, unset=["COPILOT_PROVIDER_BASE_URL"])
    health = await bare.health()
    assert not health.ready and health.authenticated is False
    assert health.fix and "copilot login" in health.fix and "COPILOT_PROVIDER_BASE_URL" in health.fix
    await runner.aclose()
    await bare.aclose()


async def test_lost_session_is_replayed_in_a_fresh_one(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path
) -> None:
    """A session id the CLI does not know (another runner's private home here) is SessionNotFound; the base then
    replays the whole history in a fresh session."""
    store = SessionStore()
    fake_api.script("noted", "replayed answer")
    first_runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache, sessions=store)
    first = await first_runner.complete(ask("remember KIWI"))
    await first_runner.aclose()  # its private home, and the session in it, are gone
    second_runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache, sessions=store)
    history = [
        {"role": "user", "content": "remember KIWI"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "which fruit?"},
    ]
    second = await second_runner.complete(ChatRequest(messages=history))
    assert second.content == "replayed answer" and second.session_id != first.session_id
    replay = fake_api.last_main_request().messages()
    assert len(replay) == 1 and "remember KIWI" in replay[0][1] and replay[0][1].rstrip().endswith("which fruit?")
    await second_runner.aclose()


async def test_image_arrives_as_an_attachment(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path
) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, copilot_cache)
    request = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is this?"}, ImagePart(data=PNG)]}]
    )
    response = await runner.complete(request)
    assert response.content == "pong from fake"
    user = [m for m in fake_api.last_main_request().body["messages"] if m.get("role") == "user"][-1]
    parts = user["content"] if isinstance(user["content"], list) else []
    images = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    assert images == ["data:image/png;base64," + base64.b64encode(PNG).decode()], str(user)[:500]
    await runner.aclose()


def test_exec_transport_answers_through_the_server_with_the_openai_sdk(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path
) -> None:
    env = copilot_env(tmp_home.env(), fake_api.openai_base_url, copilot_cache)
    options = {"binary": str(cli_bin("copilot")), "transport": "exec", "timeout": 60.0, "env": env}
    config = write_config(tmp_path / "llm-runners.toml", {"copilot": options}, default_provider="copilot")
    fake_api.script(Reply(chunks=["four", " it", " is"], input_tokens=40, output_tokens=3))
    with serving(config) as url:
        client = openai_client(url)
        stream = client.chat.completions.create(
            model="copilot:fake-model-3",
            messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "four it is"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].prompt_tokens == 40 and usage[-1].completion_tokens == 3
    main = fake_api.last_main_request()
    assert main.model == "fake-model-3" and "Be terse." in main.system_text()
    assert user_text(main.last_user_text()) == "2+2?"
