"""The real OpenCode 1.18.33 driven through OpenCodeRunner against the fake model API (loopback only).

The test bodies take a ``flavor`` fixture: test_kilo.py runs the same ones against the real Kilo 7.7.7 (an
OpenCode fork). A run costs ~2.5 s (OpenCode) / ~6 s (Kilo) on an idle machine, so several honest assertions
share one run, and only the error cases that differ between the two run for both."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from opencode_env import (
    AGENTS_MD_MARKER,
    INSTRUCTIONS_MARKER,
    MCP_TOOL,
    OPENCODE,
    Flavor,
    bait_user_config,
    write_user_config,
)
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
from llm_runners.runners.opencode import OpenCodeRunner
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.testing.fake_api.script import Reply
from llm_runners.types import ChatRequest, Done, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio


@pytest.fixture
def flavor() -> Flavor:
    return OPENCODE


def make_runner(
    flavor: Flavor,
    tmp_home: Any,
    fake_api: FakeModelAPI,
    cli_bin: Callable[[str], Path],
    key: str = "sk-fake",
    **kw: Any,
) -> OpenCodeRunner:
    write_user_config(flavor, tmp_home.home, fake_api.openai_base_url, key)
    kw.setdefault("timeout", 120.0)
    return flavor.runner(binary=str(cli_bin(flavor.cli)), env=tmp_home.env(), **kw)


def started_with(env_entry: bytes, wait: float = 2.0) -> list[int]:
    """Live processes anywhere on the machine (a daemon is re-parented away from us) whose environment holds
    ``env_entry``, polled until there are none or ``wait`` seconds passed."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in os.listdir("/proc"):
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes() if entry.isdigit() else b""
            except OSError:
                continue
            if env_entry in environ:
                found.append(int(entry))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


async def test_answer_system_model_usage_and_the_users_setup(
    flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    """One run: the answer, usage, session id; the system prompt and the model upstream; the prompt verbatim from
    stdin; no title request and no tools; the user's provider used, their MCP server and instructions not; nothing
    left running (Kilo: no daemon)."""
    fake_api.script(Reply(chunks=["Hel", "lo ", "world"], input_tokens=40, output_tokens=3, cached_tokens=5))
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin)
    mcp_started = bait_user_config(flavor, tmp_home.home)
    prompt = 'first line\n\n  second "quoted" line with /slash  \n'
    request = ChatRequest(
        messages=[{"role": "system", "content": "You are a terse test bot."}, {"role": "user", "content": prompt}],
        model="fake-model-2",  # a bare name: the provider of the user's default model is put in front
    )
    before = set(procs.descendants())
    events = [event async for event in runner.stream(request)]
    assert procs.wait_until_gone(timeout=2.0, exclude=before) == []
    assert started_with(f"HOME={runner.cli_home()}\0".encode()) == []  # no detached daemon either
    assert [type(e) for e in events] == [TextDelta, UsageEvent, Done]  # whole text part, usage, done: in order
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello world"
    [usage] = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (40, 3, 5)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.model == "fake/fake-model-2"
    assert done.session_id and done.session_id.startswith("ses_")
    [main] = fake_api.main_requests()
    assert all(r.kind != "title" for r in fake_api.requests)
    assert main.model == "fake-model-2" and main.api_key == "sk-fake"
    assert "You are a terse test bot." in main.system_text()
    if flavor.runner.capabilities.system_prompt:  # OpenCode: ours replaces the CLI's prompt (a model line follows)
        assert main.system_text().startswith("You are a terse test bot.\n")
    assert main.last_user_text().startswith(prompt.rstrip())  # verbatim (Kilo appends environment details)
    assert main.tool_names() == []
    body = json.dumps(main.body)
    assert INSTRUCTIONS_MARKER not in body and AGENTS_MD_MARKER not in body and MCP_TOOL not in body
    assert not mcp_started.exists()
    await runner.aclose()


async def test_the_users_instructions_reach_the_model_only_with_user_config(
    flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    """The isolation test above is not vacuous: with ``user_config=True`` the same bait arrives."""
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin, user_config=True)
    bait_user_config(flavor, tmp_home.home)
    assert (await runner.complete(ask("hi"))).content == "pong from fake"
    body = json.dumps(fake_api.last_main_request().body)
    assert INSTRUCTIONS_MARKER in body and AGENTS_MD_MARKER in body
    await runner.aclose()


async def test_the_users_login_carries_over(
    flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    """The key is not in the user's config but in their ``auth.json`` (what ``<cli> auth login`` writes): the runner's
    private home links it, and the request carries it."""
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin)
    config_path = tmp_home.home / ".config" / flavor.app / flavor.config_name
    config = json.loads(config_path.read_text())
    del config["provider"]["fake"]["options"]["apiKey"]
    config_path.write_text(json.dumps(config))
    auth = tmp_home.home / ".local" / "share" / flavor.app / "auth.json"
    auth.parent.mkdir(parents=True, exist_ok=True)
    auth.write_text(json.dumps({"fake": {"type": "api", "key": "key-from-auth-json"}}))
    assert (await runner.complete(ask("hi"))).content == "pong from fake"
    assert fake_api.last_main_request().api_key == "key-from-auth-json"
    await runner.aclose()
    assert auth.is_file()  # the link was removed with the private home, never the user's file


async def test_two_turns_resume_the_cli_session(
    flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    fake_api.script("BANANA noted", "the word was BANANA")
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin)
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
    assert second.content == "the word was BANANA" and second.session_id == first.session_id
    msgs = fake_api.last_main_request().messages()
    assert [m for m in msgs if m[0] == "assistant"] == [("assistant", "BANANA noted")]
    assert msgs[-1][1].startswith("what word?") and "remember BANANA" not in msgs[-1][1]
    assert msgs[0][0] == "user" and msgs[0][1].startswith("remember BANANA")
    # the session lives in the runner's private home, never in the user's
    assert not (tmp_home.home / ".local" / "share" / flavor.app / f"{flavor.app}.db").exists()
    await runner.aclose()


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
async def test_errors_fail_in_seconds_with_one_request(
    flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, kind: str, error: type[LLMError]
) -> None:
    """Every error costs one upstream request: the CLI's own retries of a 429 / 500 are cut by the runner."""
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin, key=f"fake-err-{kind}")
    started = time.monotonic()
    with pytest.raises(error) as info:
        await runner.complete(ask("hi"))
    elapsed = time.monotonic() - started
    print(f"{flavor.cli} {kind}: {type(info.value).__name__} after {elapsed:.2f} s: {info.value.message}")
    assert type(info.value) is error
    assert len(fake_api.main_requests()) == 1
    assert elapsed < 180  # generous (a loaded machine); the proof is the one request: the CLI would send 2-6
    await runner.aclose()


async def test_unknown_model_is_model_not_found_before_any_request(
    flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin)
    with pytest.raises(ModelNotFound, match="fake/no-such-model"):
        await runner.complete(ask("hi", model="fake/no-such-model"))
    assert fake_api.main_requests() == []
    await runner.aclose()


async def test_hang_times_out_and_kills(
    flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin, key="fake-err-hang", idle_timeout=None, timeout=25.0)
    before = set(procs.descendants())
    with pytest.raises(ProviderTimeout):
        await runner.complete(ask("hi"))
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_consumer_that_stops_reading_kills_the_cli(
    flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    """``run`` prints the text part only when it is complete, so the consumer gives up while the answer is still
    streaming upstream (cancellation): the CLI is gone within 1 s."""
    fake_api.script(Reply(chunks=["a", "b", "c", "d"], chunk_delay=5.0))
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin)
    before = set(procs.descendants())
    got: list[object] = []

    async def consume() -> None:
        async for event in runner.stream(ask("hi")):
            got.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.to_thread.run_sync(lambda: fake_api.wait_for_requests(1, timeout=240, main_only=True))
        assert procs.named(flavor.cli), "the CLI should still be running"
        tg.cancel_scope.cancel()
    assert got == []
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_health_and_models(flavor: Flavor, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> None:
    runner = make_runner(flavor, tmp_home, fake_api, cli_bin)
    health = await runner.health()
    assert health.ready and health.authenticated and health.version
    assert [m.id for m in await runner.models()] == ["fake/fake-model", "fake/fake-model-2"]
    await runner.aclose()


def test_through_the_server_with_the_openai_sdk(
    flavor: Flavor, tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    """``llm-runners serve``'s path (settings file -> router -> server) with the official openai SDK as the client:
    a streamed chat completion answered by the real CLI, the system prompt and the model upstream."""
    write_user_config(flavor, tmp_home.home, fake_api.openai_base_url)
    # the exec runner, cold (the server's default for these CLIs is their ACP transport, tested with the ACP runner;
    # a spare started next to the one request would only slow Kilo's ~6 s start-up down)
    options = {"binary": str(cli_bin(flavor.cli)), "env": tmp_home.env(), "transport": "exec", "warm": 0}
    options["timeout"] = 120.0
    config = write_config(tmp_path / "llm-runners.toml", {flavor.cli: options}, default_provider=flavor.cli)
    fake_api.script(Reply(text="four", input_tokens=50, output_tokens=1))
    with serving(config) as url:
        # a generous timeout: Kilo's ~6 s start-up takes a minute on a loaded 2-core machine
        client = openai_client(url).with_options(timeout=240)
        chunks = list(
            client.chat.completions.create(
                model=f"{flavor.cli}:fake/fake-model-2",
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
    assert main.model == "fake-model-2" and "Be terse." in main.system_text()
    assert main.last_user_text().startswith("What is 2+2?")
