"""The real Qwen Code 0.15.10 driven through QwenRunner against the fake model API (loopback only).

A run costs ~2 s (the CLI's start-up), so most tests make one run and assert several things about it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from qwen_env import INSTRUCTIONS_MARKER, MCP_TOOL, bait_user_config, qwen_env
from test_cli_command import write_config
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
from llm_runners.runners.qwen import QwenRunner
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api import FakeModelAPI, Reply
from llm_runners.types import ChatRequest, Done, TextDelta, Usage, UsageEvent

pytestmark = pytest.mark.anyio

DEFAULT_PROMPT_MARK = "You are Qwen Code"


def make_runner(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, key: str = "sk-fake", **kw: Any) -> QwenRunner:
    env = qwen_env(tmp_home.env(), fake_api.openai_base_url, key)
    env.update(kw.pop("env", {}))
    for name in kw.pop("unset", ()):
        env.pop(name, None)
    return QwenRunner(binary=str(cli_bin("qwen")), env=env, **kw)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def sent(text: str) -> str:
    """What the CLI sends for a prompt given on stdin: the prompt, then the "\\n\\n" it appends."""
    assert text.endswith("\n\n"), repr(text[-20:])
    return text[:-2]


async def test_tokens_stream_with_usage_model_session_and_no_tools(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    chunks = ["Alpha", " beta", " gamma", " delta"]
    fake_api.script(Reply(chunks=chunks, chunk_delay=0.25, input_tokens=321, cached_tokens=21, output_tokens=7))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    prompt = 'first line\n\n  second line with "quotes", $HOME and -dashes'
    arrivals: list[tuple[float, str, bool]] = []
    events = []
    async for event in runner.stream(ask(prompt, model="fake-model-2")):
        events.append(event)
        if isinstance(event, TextDelta):
            arrivals.append((time.monotonic(), event.text, bool(procs.named("qwen"))))
    assert [a[1] for a in arrivals] == chunks  # one delta per upstream chunk, not repeated by the assistant event
    assert arrivals[0][2], "the first delta must arrive while the CLI is still running"
    assert arrivals[-1][0] - arrivals[0][0] >= 0.4
    assert [type(e) for e in events[len(chunks) :]] == [UsageEvent, Done]
    usage = events[-2]
    assert isinstance(usage, UsageEvent) and usage.usage == Usage(input_tokens=321, output_tokens=7, cached_tokens=21)
    done = events[-1]
    assert isinstance(done, Done) and done.model == "fake-model-2" and done.session_id
    main = fake_api.last_main_request()
    assert main.model == "fake-model-2"
    assert sent(main.last_user_text()) == prompt
    assert main.tool_names() == []
    assert main.system_text().startswith(DEFAULT_PROMPT_MARK)
    assert [r.kind for r in fake_api.requests] == ["main"]  # no memory extractor, no other side call
    await runner.aclose()


async def test_system_prompt_replaces_the_default(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    system = "You are a pirate.\nAnswer in three words.\n" + "x" * 140_000  # more than one argv string may hold
    request = ChatRequest(messages=[{"role": "system", "content": system}, {"role": "user", "content": "hi"}])
    response = await runner.complete(request)
    assert response.content == "pong from fake" and response.provider == "qwen"
    main = fake_api.last_main_request()
    assert main.system_text().startswith(system)
    assert DEFAULT_PROMPT_MARK not in main.system_text()
    assert main.tool_names() == []
    await runner.aclose()


async def test_two_turns_resume_the_session(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    fake_api.script("BANANA noted", "the word was BANANA")
    runner = make_runner(tmp_home, fake_api, cli_bin)
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
    assert [role for role, _ in resumed] == ["user", "assistant", "user"]
    assert sent(resumed[0][1]) == "remember BANANA" and resumed[1][1] == "BANANA noted"
    assert sent(resumed[2][1]) == "what word?"
    await runner.aclose()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("401", AuthenticationError),
        ("429", RateLimited),  # the CLI alone: 7 attempts with backoff (~90 s); the runner's error deadline stops it
        ("500", UpstreamError),  # the CLI alone: 7 attempts, ~80 s
        ("context", ContextLengthExceeded),
        ("404", ModelNotFound),
    ],
)
async def test_api_errors_are_classified_in_seconds(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any, kind: str, error: type[LLMError]
) -> None:
    """Qwen exits 0 with the error as the answer text (``[API Error: …]``): never an answer here. Timed from the
    first upstream request (the CLI's start-up varies with the machine's load)."""
    runner = make_runner(tmp_home, fake_api, cli_bin, key=f"fake-err-{kind}")
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
    assert info.value.provider == "qwen"
    # the runner's error deadline (5 s from the first failure) plus the kill; a final error even sooner
    assert elapsed < (8 if error.transient else 5), elapsed
    assert len(fake_api.main_requests()) < 7
    print(f"qwen {kind}: {type(info.value).__name__} {elapsed:.2f} s after the first request, "
          f"{len(fake_api.main_requests())} requests: {info.value.message[:140]}")  # fmt: skip
    assert procs.wait_until_gone(procs.named("qwen"), timeout=1.0) == []
    await runner.aclose()


async def test_hang_times_out_and_kills_the_cli(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key="fake-err-hang", timeout=30.0)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await runner.complete(ask("hi"))
    assert time.monotonic() - started < 45  # the total timeout (generous: start-up under load) and the kill
    assert procs.wait_until_gone(procs.named("qwen"), timeout=1.0) == []
    assert fake_api.last_main_request().wait_disconnected(2.0)
    await runner.aclose()


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
    running = procs.named("qwen")
    assert running, "the CLI should still be streaming"
    started = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]
    assert procs.wait_until_gone(running, timeout=1.0) == []
    assert time.monotonic() - started < 1.0
    await runner.aclose()


@pytest.mark.parametrize("user_config", [False, True])
async def test_users_provider_carries_over_their_mcp_and_qwen_md_do_not(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, tmp_path: Path, user_config: bool
) -> None:
    marker = bait_user_config(tmp_home.home / ".qwen", sys.executable, fake_api.openai_base_url, "sk-users-key")
    runner = make_runner(
        tmp_home, fake_api, cli_bin, user_config=user_config, allow_tools=user_config,
        unset=["OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"],
    )  # fmt: skip
    response = await runner.complete(ask("hi"))
    assert response.content == "pong from fake"
    main = fake_api.last_main_request()
    # the provider, key and model of the user's settings.json are used
    assert main.api_key == "sk-users-key" and main.model == "users-own-model"
    assert (INSTRUCTIONS_MARKER in main.system_text()) is user_config
    assert marker.exists() is user_config
    assert (MCP_TOOL in main.raw_body.decode()) is user_config  # 0.15.10 lists MCP tools as deferred tools
    await runner.aclose()


async def test_health_reports_version_and_auth(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    health = await runner.health()
    assert health.installed and health.ready and health.authenticated is True
    assert health.version == "0.15.10"
    bare = make_runner(tmp_home, fake_api, cli_bin, unset=["OPENAI_API_KEY"])
    health = await bare.health()
    assert not health.ready and health.authenticated is False and health.fix and "OPENAI_API_KEY" in health.fix
    await runner.aclose()
    await bare.aclose()


async def test_lost_session_is_replayed_in_a_fresh_one(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    """A session id the CLI does not know (another runner's runtime directory here) is SessionNotFound; the base
    then replays the whole history in a fresh session."""
    store = SessionStore()
    fake_api.script("noted", "replayed answer")
    first_runner = make_runner(tmp_home, fake_api, cli_bin, sessions=store)
    first = await first_runner.complete(ask("remember KIWI"))
    await first_runner.aclose()  # its runtime directory, and the session in it, are gone
    second_runner = make_runner(tmp_home, fake_api, cli_bin, sessions=store)
    history = [
        {"role": "user", "content": "remember KIWI"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "which fruit?"},
    ]
    second = await second_runner.complete(ChatRequest(messages=history))
    assert second.content == "replayed answer" and second.session_id != first.session_id
    replay = fake_api.last_main_request().messages()
    assert len(replay) == 1 and "remember KIWI" in replay[0][1] and sent(replay[0][1]).endswith("which fruit?")
    await second_runner.aclose()


def test_exec_transport_answers_through_the_server_with_the_openai_sdk(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    env = qwen_env(tmp_home.env(), fake_api.openai_base_url)
    options = {"binary": str(cli_bin("qwen")), "transport": "exec", "timeout": 60.0, "env": env}
    config = write_config(tmp_path / "llm-runners.toml", {"qwen": options}, default_provider="qwen")
    fake_api.script(Reply(chunks=["four", " it", " is"], input_tokens=40, output_tokens=3))
    with serving(config) as url:
        client = openai_client(url)
        stream = client.chat.completions.create(
            model="qwen:fake-model-3",
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
    assert main.model == "fake-model-3" and main.system_text().startswith("Be terse.")
    assert sent(main.last_user_text()) == "2+2?"
