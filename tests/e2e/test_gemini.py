"""The real Gemini CLI 0.61.0 driven through GeminiRunner against the fake model API (loopback only).

Each CLI run costs ~1.8 s, so several honest assertions share one run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gemini_env import EXTENSION_MARKER, GEMINI_MD_MARKER, MCP_TOOL, RUNNER_SETTINGS, bait_user_config, gemini_env

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    ProviderTimeout,
    RateLimited,
    UpstreamError,
)
from llm_runners.runners.gemini import GeminiRunner
from llm_runners.testing.fake_api.script import Reply
from llm_runners.types import ChatRequest, Done, ImagePart, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478da63f8cfc000000301"
    "01009a7e1e5d0000000049454e44ae426082"
)


def make_runner(
    tmp_home: Any, fake_api: Any, cli_bin: Callable[[str], Path], key: str | None = "dummy", **kw: Any
) -> GeminiRunner:
    env = gemini_env(tmp_home.env(), fake_api.gemini_base_url, key)
    return GeminiRunner(binary=str(cli_bin("gemini")), env=env, settings=RUNNER_SETTINGS, **kw)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


async def test_answer_streaming_system_model_tools_off_and_usage(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    fake_api.script(
        Reply(chunks=["Hel", "lo ", "world"], input_tokens=40, output_tokens=3, cached_tokens=5, chunk_delay=0.3)
    )
    runner = make_runner(tmp_home, fake_api, cli_bin)
    mcp_started = bait_user_config(tmp_home.home)
    prompt = "first line\n\n  second line with @nothing and /slash  \n"
    request = ChatRequest(
        messages=[{"role": "system", "content": "You are a terse test bot."}, {"role": "user", "content": prompt}],
        model="fake-gemini-model-x",
    )
    events, stamps = [], []
    async for event in runner.stream(request):
        events.append(event)
        stamps.append(time.monotonic())
    texts = [(e.text, t) for e, t in zip(events, stamps, strict=True) if isinstance(e, TextDelta)]
    assert [t for t, _ in texts] == ["Hel", "lo ", "world"]
    assert texts[-1][1] - texts[0][1] > 0.3  # chunks arrived as generated, not all at the end
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert len(usage) == 1 and (usage[0].input_tokens, usage[0].output_tokens, usage[0].cached_tokens) == (40, 3, 5)
    done = events[-1]
    assert isinstance(done, Done) and done.session_id and done.model == "fake-gemini-model-x"
    main = fake_api.last_main_request()
    assert main.model == "fake-gemini-model-x"
    assert main.system_text() == "You are a terse test bot."
    assert main.body["contents"][0]["parts"][-1]["text"] == prompt  # byte-exact
    assert main.tool_names() == []
    assert all(r.kind != "router" for r in fake_api.requests)
    # the user's GEMINI.md, extension context and MCP server stay out (the CLI home is the runner's own)
    body = json.dumps(main.body)
    assert GEMINI_MD_MARKER not in body and EXTENSION_MARKER not in body and not mcp_started.exists()
    await runner.aclose()


@pytest.mark.parametrize("user_config", [False, True])
async def test_user_config_only_when_asked(tmp_home: Any, fake_api: Any, cli_bin: Any, user_config: bool) -> None:
    """With the CLI's tools on (so an MCP tool could be declared), the user's GEMINI.md, extension context and
    trusted MCP server reach the model only with ``user_config=True``."""
    runner = make_runner(tmp_home, fake_api, cli_bin, allow_tools=True, user_config=user_config)
    mcp_started = bait_user_config(tmp_home.home)
    await runner.complete(ask("hi"))
    main = fake_api.last_main_request()
    body = json.dumps(main.body)
    assert "read_file" in main.tool_names()  # allow_tools: the CLI's own tools are declared either way
    assert (GEMINI_MD_MARKER in main.system_text()) is user_config
    assert (EXTENSION_MARKER in body) is user_config
    assert (MCP_TOOL in main.tool_names()) is user_config
    assert mcp_started.exists() is user_config
    await runner.aclose()


async def test_auth_from_the_users_dotenv_and_selected_type(
    tmp_home: Any, fake_api: Any, cli_bin: Any, monkeypatch: Any
) -> None:
    """No key in any env: the key comes from the user's ``~/.gemini/.env`` and the auth type from their settings,
    both through the private home; the .env's other variables do not."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_GCA"):
        monkeypatch.delenv(name, raising=False)
    runner = make_runner(tmp_home, fake_api, cli_bin, key=None)
    leaked = tmp_home.home / "leaked-system.md"
    leaked.write_text("LEAKED-SYSTEM-PROMPT")
    (tmp_home.home / ".gemini" / ".env").write_text(
        f"export GEMINI_API_KEY=key-from-user-dotenv\nGEMINI_SYSTEM_MD={leaked}\n"
    )
    assert await runner.check_auth() == (True, None)
    answer = await runner.complete(ask("hi"))
    assert answer.content == "pong from fake"
    main = fake_api.last_main_request()
    assert main.api_key == "key-from-user-dotenv"
    assert "LEAKED-SYSTEM-PROMPT" not in json.dumps(main.body)
    await runner.aclose()


async def test_two_turns_resume(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
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
    assert second.content == "the word was BANANA" and second.session_id == first.session_id
    msgs = fake_api.last_main_request().messages()
    assert [m for m in msgs if m[0] == "assistant"] == [("assistant", "BANANA noted")]
    assert msgs[-1][1].endswith("what word?") and "remember BANANA" not in msgs[-1][1]
    assert any("remember BANANA" in text for role, text in msgs[:-1] if role == "user")
    # the session lives in the runner's CLI home, not in the user's; aclose removes it, never the user's files
    home = runner.cli_home()
    assert list(home.glob(".gemini/tmp/*/chats/session-*")) and (home / ".gemini" / "projects.json").is_file()
    assert sorted(p.name for p in (tmp_home.home / ".gemini").iterdir()) == ["settings.json"]
    await runner.aclose()
    assert not home.exists() and (tmp_home.home / ".gemini" / "settings.json").is_file()


async def test_image_arrives_inline(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin)
    request = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is this?"}, ImagePart(data=PNG)]}]
    )
    await runner.complete(request)
    parts = fake_api.last_main_request().body["contents"][-1]["parts"]
    inline = [p["inlineData"] for p in parts if "inlineData" in p]
    assert inline and inline[0]["mimeType"] == "image/png"
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
    with pytest.raises(error) as info:
        await runner.complete(ask("hi"))
    assert type(info.value) is error
    await runner.aclose()


async def test_hang_times_out_and_kills(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, key="fake-err-hang", idle_timeout=None, timeout=6.0)
    before = set(procs.descendants())
    with pytest.raises(ProviderTimeout):
        await runner.complete(ask("hi"))
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()


async def test_consumer_stops_mid_stream(tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any) -> None:
    fake_api.script(Reply(chunks=["a", "b", "c", "d"], chunk_delay=2.0))
    runner = make_runner(tmp_home, fake_api, cli_bin)
    before = set(procs.descendants())
    stream = runner.stream(ask("hi"))
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert procs.wait_until_gone(timeout=1.0, exclude=before) == []
    await runner.aclose()
