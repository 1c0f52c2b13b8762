"""The real Codex CLI 0.169.0 driven through CodexRunner(transport="exec") against the fake model API (loopback only).

A run costs ~0.3-0.6 s, so most tests make one run and assert several things about it."""

from __future__ import annotations

import base64
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from codex_env import codex_env, fake_provider_args

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    ProviderTimeout,
    RateLimited,
    UpstreamError,
)
from llm_runners.runners.codex import CodexRunner
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api import FakeModelAPI, FakeToolCall, Reply
from llm_runners.types import ChatRequest, Done, ImagePart, TextDelta, Usage, UsageEvent

pytestmark = pytest.mark.anyio


def _png(width: int, height: int) -> bytes:
    """A valid RGB PNG (codex decodes images and drops one with a bad checksum: "could not be processed")."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = _png(2, 2)
BASE_PROMPT_MARK = "You are a coding agent running in the Codex CLI"


def make_runner(
    tmp_home: Any,
    fake_api: FakeModelAPI,
    cli_bin: Callable[[str], Path],
    key: str = "dummy",
    home_env: dict[str, str] | None = None,
    **kw: Any,
) -> CodexRunner:
    env = codex_env(home_env or tmp_home.env(), key)
    kw.setdefault("model", "fake-model")
    return CodexRunner(
        transport="exec",
        binary=str(cli_bin("codex")),
        env=env,
        extra_args=fake_provider_args(fake_api.openai_base_url),
        **kw,
    )


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def developer_texts(body: dict[str, Any]) -> list[str]:
    return [
        part["text"]
        for item in body["input"]
        if item.get("role") == "developer"
        for part in item["content"]
        if part.get("type") == "input_text"
    ]


async def test_answer_system_prompt_model_usage_and_no_tools(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    fake_api.script(
        Reply(chunks=["Ahoy", " there", " matey"], input_tokens=321, cached_tokens=21, output_tokens=9,
              reasoning_tokens=4, chunk_delay=0.2)
    )  # fmt: skip
    runner = make_runner(tmp_home, fake_api, cli_bin)
    system = "You are a pirate.\nAnswer in three words."
    prompt = 'first line\n\n  second line with "quotes", $HOME and -dashes  \n'
    request = ChatRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        model="gpt-test-chosen",
    )
    events, stamps = [], []
    async for event in runner.stream(request):
        events.append(event)
        stamps.append(time.monotonic())
    # codex exec has no token streaming: the answer arrives whole, exact, in order, then usage, then Done
    assert [type(e) for e in events] == [TextDelta, UsageEvent, Done]
    assert events[0] == TextDelta("Ahoy there matey")
    assert events[1] == UsageEvent(Usage(input_tokens=321, cached_tokens=21, output_tokens=9, reasoning_tokens=4))
    done = events[2]
    assert isinstance(done, Done) and done.session_id and done.model == "gpt-test-chosen"
    assert any("Model metadata for `gpt-test-chosen` not found" in w for w in done.warnings)

    main = fake_api.last_main_request()
    assert main.model == "gpt-test-chosen"
    # the developer message is exactly our system prompt: the 17 KB base prompt and the preambles are gone
    assert developer_texts(main.body) == [system]
    assert BASE_PROMPT_MARK not in main.raw_body.decode()
    assert main.messages() == [("user", prompt)]  # byte-exact, and nothing else in the conversation
    assert main.tool_names() == []
    await runner.aclose()


async def test_complete_without_system_keeps_codex_prompt(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    response = await runner.complete(ask("hi"))
    assert response.content == "pong from fake" and response.provider == "codex"
    assert response.model == "fake-model" and response.usage is not None and response.usage.output_tokens == 3
    main = fake_api.last_main_request()
    assert main.model == "fake-model"
    assert developer_texts(main.body)[0].startswith(BASE_PROMPT_MARK)
    assert main.tool_names() == []
    await runner.aclose()


async def test_two_turns_resume_the_thread(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    fake_api.script(
        Reply("BANANA noted", input_tokens=100, output_tokens=2),
        Reply("the word was BANANA", input_tokens=150, output_tokens=4),
    )
    runner = make_runner(tmp_home, fake_api, cli_bin)
    system = {"role": "system", "content": "Remember words."}
    first = await runner.complete(ChatRequest(messages=[system, {"role": "user", "content": "remember BANANA"}]))
    second = await runner.complete(
        ChatRequest(
            messages=[
                system,
                {"role": "user", "content": "remember BANANA"},
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": "what word?"},
            ]
        )
    )
    assert second.content == "the word was BANANA"
    assert first.session_id and second.session_id == first.session_id
    # the CLI re-sent the history; our prompt held only the new user message
    resumed = fake_api.last_main_request()
    assert resumed.messages() == [("user", "remember BANANA"), ("assistant", "BANANA noted"), ("user", "what word?")]
    assert developer_texts(resumed.body) == ["Remember words."]
    # usage is the second turn's own, not the thread's running total that codex prints
    assert second.usage == Usage(input_tokens=150, output_tokens=4)
    assert not any("running total" in w for w in second.warnings)
    await runner.aclose()


async def test_lost_thread_replays_the_history(tmp_home: Any, fake_api: Any, cli_bin: Any, tmp_path: Path) -> None:
    """A resume id the CLI does not know (another CODEX_HOME here) is SessionNotFound, and the base replays."""
    store = SessionStore()
    fake_api.script("noted", "replayed answer")
    first_runner = make_runner(tmp_home, fake_api, cli_bin, sessions=store)
    first = await first_runner.complete(ask("remember KIWI"))
    other_home = {**tmp_home.env(), "HOME": str(tmp_path / "other-home")}
    await anyio.Path(other_home["HOME"]).mkdir()
    second_runner = make_runner(tmp_home, fake_api, cli_bin, sessions=store, home_env=other_home)
    history = [
        {"role": "user", "content": "remember KIWI"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "which fruit?"},
    ]
    second = await second_runner.complete(ChatRequest(messages=history))
    assert second.content == "replayed answer" and second.session_id != first.session_id
    replay = fake_api.last_main_request().messages()
    assert len(replay) == 1 and "remember KIWI" in replay[0][1] and replay[0][1].rstrip().endswith("which fruit?")
    await first_runner.aclose()
    await second_runner.aclose()


async def test_image_arrives_as_input_image(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    request = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is this?"}, ImagePart(data=PNG)]}]
    )
    response = await runner.complete(request)
    assert response.content == "pong from fake"
    user = [i for i in fake_api.last_main_request().body["input"] if i.get("role") == "user"][-1]
    images = [p["image_url"] for p in user["content"] if p.get("type") == "input_image"]
    assert images == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    assert any(p.get("type") == "input_text" and "what is this?" in p["text"] for p in user["content"])
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
async def test_errors(tmp_home: Any, fake_api: Any, cli_bin: Any, kind: str, error: type[LLMError]) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key=f"fake-err-{kind}")
    with pytest.raises(LLMError) as info:
        await runner.complete(ask("hi"))
    assert type(info.value) is error and info.value.provider == "codex"
    assert len(fake_api.main_requests()) == 1  # no retries (and a Reconnecting notice would not be the error)
    await runner.aclose()


async def test_refused_connection_is_upstream_error(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    env = codex_env(tmp_home.env())
    runner = CodexRunner(
        transport="exec",
        binary=str(cli_bin("codex")),
        env=env,
        model="fake-model",
        extra_args=fake_provider_args("http://127.0.0.1:9/v1"),
    )
    with pytest.raises(UpstreamError, match="Connection failed"):
        await runner.complete(ask("hi"))
    await runner.aclose()


async def test_hang_times_out_and_kills(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key="fake-err-hang", idle_timeout=2.0, timeout=20.0)
    before = set(procs.descendants())
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await runner.complete(ask("hi"))
    assert time.monotonic() - started < 10.0
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_consumer_stops_mid_stream(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    # the first answer has text and a call of a tool codex does not have: codex prints the text, answers the call
    # with "unsupported call" and asks again; that second request hangs, so the CLI is still running
    fake_api.script(Reply("first part", tool_calls=[FakeToolCall("no_such_tool", {})]), Reply(hang="before"))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    before = set(procs.descendants())
    stream = runner.stream(ask("hi"))
    async for event in stream:
        assert event == TextDelta("first part")
        break
    running = [p for p in procs.descendants() if p not in before]
    assert running, "the CLI should still be running (its second request hangs)"
    await stream.aclose()  # type: ignore[attr-defined]
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_health_and_models(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    health = await runner.health()
    assert health.installed and health.version == "0.169.0"
    assert health.ready and health.authenticated  # the fake provider of extra_args has its key variable
    del runner.env["FAKE_OPENAI_API_KEY"]
    health = await runner.health()
    assert not health.ready and health.reason and "FAKE_OPENAI_API_KEY" in health.reason
    builtin = CodexRunner(binary=str(cli_bin("codex")), env=codex_env(tmp_home.env()))
    health = await builtin.health()
    assert health.authenticated is False and health.fix and "codex login" in health.fix  # a bare CODEX_HOME
    await anyio.Path(runner.env["CODEX_HOME"], "auth.json").write_text("{}")
    assert (await builtin.health()).ready
    await builtin.aclose()
    models = {m.id: m for m in await runner.models()}
    assert "gpt-5.5" in models and models["gpt-5.5"].context_window == 272000
    assert "codex-auto-review" not in models  # hidden models are not listed
    await runner.aclose()


async def test_long_prompt_goes_through_stdin_intact(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    prompt = "".join(f'line {i}: ünïcode ✓ "q" $X `y`\n' for i in range(12000))  # ~400 KB, beyond one argv string
    runner = make_runner(tmp_home, fake_api, cli_bin)
    assert (await runner.complete(ask(prompt))).content == "pong from fake"
    assert fake_api.last_main_request().messages() == [("user", prompt)]
    await runner.aclose()
