"""The real Continue CLI 1.5.47 (``cn``) driven through ContinueRunner against the fake model API (loopback only).

Each CLI run costs ~1.2 s (more on a loaded machine), so several honest assertions share one run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from continue_env import MCP_TOOL_MARKER, RULE_MARKER, config_file, continue_user_setup
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
from llm_runners.runners.continue_cli import ContinueRunner
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.testing.fake_api.script import Reply
from llm_runners.types import ChatRequest, Done, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio


def make_runner(
    tmp_home: Any, fake_api: Any, cli_bin: Callable[[str], Path], key: str = "sk-fake", bait: bool = False, **kw: Any
) -> ContinueRunner:
    continue_user_setup(tmp_home.home, fake_api.openai_base_url, api_key=key, bait=bait)
    kw.setdefault("timeout", 60.0)
    return ContinueRunner(binary=str(cli_bin("cn")), env=tmp_home.env(), **kw)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


async def test_answer_system_rule_model_usage_and_no_tools(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    fake_api.script(Reply(chunks=["Hel", "lo ", "world"], input_tokens=40, output_tokens=3))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    prompt = "first line\n\n  second line with @nothing and /slash"
    request = ChatRequest(
        messages=[{"role": "system", "content": "You are a terse test bot."}, {"role": "user", "content": prompt}],
        model="fake-continue-model-x",
    )
    events = [event async for event in runner.stream(request)]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello world"]  # once, at the end
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert len(usage) == 1 and (usage[0].input_tokens, usage[0].output_tokens) == (40, 3)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.model == "fake-continue-model-x"
    assert done.session_id
    [main] = fake_api.main_requests()
    assert main.model == "fake-continue-model-x"
    system = main.system_text()
    assert system.count("You are a terse test bot.") == 1  # appended once, as the config's rule
    assert main.messages() == [("user", prompt)]
    assert main.tool_names() == []
    await runner.aclose()


@pytest.mark.parametrize("user_config", [False, True])
async def test_user_model_carries_over_the_rest_only_when_asked(
    tmp_home: Any, fake_api: Any, cli_bin: Any, user_config: bool
) -> None:
    """The user's model definition (key, base URL, model) is used either way; with the CLI's tools on (so an MCP
    tool could be declared) their config's MCP server and rules reach the model only with ``user_config=True``."""
    runner = make_runner(
        tmp_home, fake_api, cli_bin, key="sk-user-key", bait=True, allow_tools=True, user_config=user_config
    )
    answer = await runner.complete(ask("hi"))
    assert answer.content == "pong from fake"
    main = fake_api.last_main_request()
    assert main.api_key == "sk-user-key" and main.model == "fake-model"
    assert "Bash" in main.tool_names()  # allow_tools: the CLI's own tools are declared either way
    assert (RULE_MARKER in main.system_text()) is user_config
    assert any(MCP_TOOL_MARKER in name for name in main.tool_names()) is user_config
    assert (tmp_home.home / "bait-mcp-started").exists() is user_config
    await runner.aclose()


async def test_two_turns_resume_the_conversations_session(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    """Two conversations interleaved: each second turn resumes its own session (the CLI replays that history
    upstream), although the CLI itself can only resume its last session."""
    runner = make_runner(tmp_home, fake_api, cli_bin)
    fake_api.script("BANANA noted", "CHERRY noted")
    first_a = await runner.complete(ask("remember BANANA"))
    first_b = await runner.complete(ask("remember CHERRY"))
    assert first_a.session_id and first_b.session_id and first_a.session_id != first_b.session_id
    fake_api.script("the word was BANANA")
    second = await runner.complete(
        ChatRequest(
            messages=[
                {"role": "user", "content": "remember BANANA"},
                {"role": "assistant", "content": first_a.content},
                {"role": "user", "content": "what word?"},
            ]
        )
    )
    assert second.content == "the word was BANANA" and second.session_id == first_a.session_id
    msgs = fake_api.last_main_request().messages()
    assert msgs == [("user", "remember BANANA"), ("assistant", "BANANA noted"), ("user", "what word?")]
    await runner.aclose()


@pytest.mark.parametrize(
    ("kind", "error"),
    [("401", AuthenticationError), ("context", ContextLengthExceeded), ("404", ModelNotFound)],
)
async def test_errors(tmp_home: Any, fake_api: Any, cli_bin: Any, kind: str, error: type[LLMError]) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key=f"fake-err-{kind}")
    with pytest.raises(error) as info:
        await runner.complete(ask("hi"))
    assert type(info.value) is error
    assert len(fake_api.main_requests()) == 1  # not retried
    await runner.aclose()


@pytest.mark.parametrize(("kind", "error"), [("500", UpstreamError), ("429", RateLimited)])
async def test_retry_loop_is_cut_short_with_the_last_error(
    tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any, kind: str, error: type[LLMError]
) -> None:
    """A 5xx or 429 is retried 33 times over ~112 s; the runner stops it ``retry_deadline`` s after the first retry
    and reports the error the CLI kept retrying."""
    runner = make_runner(tmp_home, fake_api, cli_bin, key=f"fake-err-{kind}", retry_deadline=2.0)
    before = set(procs.descendants())
    started = time.monotonic()
    with pytest.raises(error, match=r"retried it \d+ time") as info:
        await runner.complete(ask("hi"))
    assert type(info.value) is error and kind in info.value.message
    assert time.monotonic() - started < 20
    assert len(fake_api.main_requests()) >= 2
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_hang_times_out_and_kills(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key="fake-err-hang", timeout=6.0)
    before = set(procs.descendants())
    with pytest.raises(ProviderTimeout, match="total timeout"):
        await runner.complete(ask("hi"))
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_consumer_stops_reading(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    """No deltas before the end: a consumer that gives up while the CLI waits for the model kills it."""
    fake_api.script(Reply(chunks=["a", "b"], delay=30.0))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    before = set(procs.descendants())
    stream = runner.stream(ask("hi"))
    consumer = asyncio.ensure_future(stream.__anext__())
    await asyncio.to_thread(fake_api.wait_for_requests, 1, timeout=30.0, main_only=True)
    assert not consumer.done() and procs.named("cn"), "the CLI should be waiting for the model"
    stopped = time.monotonic()
    consumer.cancel()  # the consumer gives up
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await stream.aclose()  # type: ignore[attr-defined]
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    assert time.monotonic() - stopped < 1.0
    await runner.aclose()


async def test_health(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    health = await runner.health()
    assert health.ready and health.version == "1.5.47" and health.authenticated
    assert [m.id for m in await runner.models()] == ["fake-model"]
    config_file(tmp_home.home).unlink()
    health = await runner.health()
    assert not health.ready and health.fix and "config.yaml" in health.fix
    await runner.aclose()


def test_through_the_server_with_the_openai_sdk(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    """``llm-runners serve``'s path (settings file -> router -> server) with the official openai SDK as the client:
    a chat completion answered by the real CLI, the system prompt (as a rule) and the model upstream."""
    continue_user_setup(tmp_home.home, fake_api.openai_base_url)
    options = {"binary": str(cli_bin("cn")), "timeout": 120.0, "env": tmp_home.env()}
    config = write_config(tmp_path / "llm-runners.toml", {"continue": options}, default_provider="continue")
    fake_api.script(Reply(text="four", input_tokens=50, output_tokens=1))
    with serving(config) as url:
        out = openai_client(url).chat.completions.create(
            model="continue:fake-model-2",
            messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"}],
        )
    assert out.choices[0].message.content == "four" and out.choices[0].finish_reason == "stop"
    assert out.usage is not None and (out.usage.prompt_tokens, out.usage.completion_tokens) == (50, 1)
    [main] = fake_api.main_requests()
    assert main.model == "fake-model-2" and "Be terse." in main.system_text()
    assert main.last_user_text() == "What is 2+2?"
