"""The real Cline CLI 3.0.65 driven through ClineRunner against the fake model API (loopback only).

Each CLI run costs ~1.3 s, so several honest assertions share one run."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cline_env import MCP_TOOL_MARKER, RULE_MARKER, bait_user_config, cline_user_setup, providers_file
from test_cli_command import write_config
from test_server_real_cli import openai_client, serving

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    ProviderTimeout,
    RateLimited,
)
from llm_runners.runners.cline import ClineRunner
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.testing.fake_api.script import Reply
from llm_runners.types import ChatRequest, Done, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio


def make_runner(
    tmp_home: Any, fake_api: Any, cli_bin: Callable[[str], Path], key: str = "sk-fake", **kw: Any
) -> ClineRunner:
    cline_user_setup(tmp_home.home, fake_api.openai_base_url, api_key=key)
    kw.setdefault("timeout", 60.0)
    return ClineRunner(binary=str(cli_bin("cline")), env=tmp_home.env(), **kw)


def hub_daemons(workdir: Path) -> list[int]:
    """Every Cline hub daemon on the machine (not only among our descendants: it detaches) started for ``workdir``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        if b"--cline-hub-daemon" in cmdline and str(workdir).encode() in cmdline:
            found.append(int(entry))
    return found


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


async def test_answer_streaming_system_model_usage_and_no_tools(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    fake_api.script(Reply(chunks=["Hel", "lo ", "world"], input_tokens=40, output_tokens=3, chunk_delay=0.3))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    prompt = "first line\n\n  second line with @nothing and /slash"
    request = ChatRequest(
        messages=[{"role": "system", "content": "You are a terse test bot."}, {"role": "user", "content": prompt}],
        model="fake-cline-model-x",
    )
    events, stamps = [], []
    async for event in runner.stream(request):
        events.append(event)
        stamps.append(time.monotonic())
    texts = [(e.text, t) for e, t in zip(events, stamps, strict=True) if isinstance(e, TextDelta)]
    assert [t for t, _ in texts] == ["Hel", "lo ", "world"]
    assert texts[-1][1] - texts[0][1] > 0.3  # chunks arrived as generated, not all at the end
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert len(usage) == 1 and (usage[0].input_tokens, usage[0].output_tokens) == (40, 3)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.model == "fake-cline-model-x"
    [main] = fake_api.main_requests()
    assert main.model == "fake-cline-model-x"
    assert main.system_text() == "You are a terse test bot."  # -s replaces the whole system prompt
    assert main.messages() == [("user", prompt)]
    assert main.tool_names() == []
    # CLINE_SESSION_BACKEND_MODE=local: no detached hub daemon (parent PID 1) was left for this working directory
    assert hub_daemons(runner.workdir) == []
    # -m went into the private copy of providers.json, never into the user's
    assert (
        json.loads(providers_file(tmp_home.home).read_text())["providers"]["openai-compatible"]["settings"]["model"]
        == "fake-model"
    )
    await runner.aclose()


@pytest.mark.parametrize("user_config", [False, True])
async def test_user_provider_carries_over_the_rest_only_when_asked(
    tmp_home: Any, fake_api: Any, cli_bin: Any, user_config: bool
) -> None:
    """The user's provider (key, base URL, model) is used either way; with the CLI's tools on (so an MCP tool
    could be declared) their global rules and MCP server reach the model only with ``user_config=True``."""
    runner = make_runner(tmp_home, fake_api, cli_bin, key="sk-user-key", allow_tools=True, user_config=user_config)
    mcp_started = bait_user_config(tmp_home.home)
    answer = await runner.complete(ask("hi there"))
    assert answer.content == "pong from fake"
    main = fake_api.last_main_request()
    assert main.api_key == "sk-user-key" and main.model == "fake-model"
    assert "run_commands" in main.tool_names()  # allow_tools: the CLI's own tools are declared either way
    assert (RULE_MARKER in main.system_text()) is user_config
    assert any(MCP_TOOL_MARKER in name for name in main.tool_names()) is user_config
    assert mcp_started.exists() is user_config
    await runner.aclose()


async def test_two_turns_replay_the_history(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    fake_api.script("BANANA noted", "the word was BANANA")
    runner = make_runner(tmp_home, fake_api, cli_bin)
    first = await runner.complete(ask("remember BANANA"))
    second = await runner.complete(
        ChatRequest(
            messages=[
                {"role": "user", "content": "remember BANANA"},
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": "what word?"},
            ]
        )
    )
    assert second.content == "the word was BANANA"
    assert first.session_id is None and second.session_id is None  # nothing to resume: no session claimed
    [(role, text)] = fake_api.last_main_request().messages()
    assert role == "user"
    assert text.index("remember BANANA") < text.index("BANANA noted") < text.index("what word?")
    await runner.aclose()


@pytest.mark.parametrize(
    ("kind", "error"),
    [("401", AuthenticationError), ("429", RateLimited), ("context", ContextLengthExceeded), ("404", ModelNotFound)],
)
async def test_errors(tmp_home: Any, fake_api: Any, cli_bin: Any, kind: str, error: type[LLMError]) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key=f"fake-err-{kind}")
    with pytest.raises(error) as info:
        await runner.complete(ask("hi there"))
    assert type(info.value) is error
    await runner.aclose()


async def test_silent_retry_loop_is_cut_short(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    """A 500 is retried silently for ~63 s; the runner's deadline stops the run after ``retry_deadline``."""
    runner = make_runner(tmp_home, fake_api, cli_bin, key="fake-err-500", retry_deadline=4.0)
    before = set(procs.descendants())
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="retries failing model requests silently"):
        await runner.complete(ask("hi there"))
    assert time.monotonic() - started < 40  # cline's own loop takes ~63 s; 20 s seen under heavy load
    assert len(fake_api.main_requests()) >= 2  # it was retrying, and nothing of it was printed
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_hang_times_out_and_kills(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key="fake-err-hang", retry_deadline=0, timeout=6.0)
    before = set(procs.descendants())
    with pytest.raises(ProviderTimeout, match="total timeout"):
        await runner.complete(ask("hi there"))
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_consumer_stops_mid_stream(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    fake_api.script(Reply(chunks=["a", "b", "c", "d"], chunk_delay=2.0))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    before = set(procs.descendants())
    stream = runner.stream(ask("hi there"))
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    stopped = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    assert time.monotonic() - stopped < 1.0
    await runner.aclose()


async def test_health(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    health = await runner.health()
    assert health.ready and health.version == "3.0.65" and health.authenticated
    providers_file(tmp_home.home).unlink()
    health = await runner.health()
    assert not health.ready and health.fix and "cline auth" in health.fix
    await runner.aclose()


def test_through_the_server_with_the_openai_sdk(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    """``llm-runners serve``'s path (settings file -> router -> server) with the official openai SDK as the client:
    a streamed chat completion answered by the real CLI, the system prompt and the model upstream."""
    cline_user_setup(tmp_home.home, fake_api.openai_base_url)
    options = {"binary": str(cli_bin("cline")), "timeout": 120.0, "env": tmp_home.env()}
    config = write_config(tmp_path / "llm-runners.toml", {"cline": options}, default_provider="cline")
    fake_api.script(Reply(text="four", input_tokens=50, output_tokens=1))
    with serving(config) as url:
        chunks = list(
            openai_client(url).chat.completions.create(
                model="cline:fake-model-2",
                messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "four"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    final = chunks[-1]
    assert final.usage is not None and (final.usage.prompt_tokens, final.usage.completion_tokens) == (50, 1)
    [main] = fake_api.main_requests()
    assert main.model == "fake-model-2" and main.system_text() == "Be terse."
    assert main.last_user_text() == "What is 2+2?"
