"""The real Gemini CLI 0.61.0 driven through GeminiRunner against the fake model API (loopback only).

Each CLI run costs ~1.8 s, so several honest assertions share one run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gemini_env import gemini_env

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
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.testing.fake_api.script import Reply
from llm_runners.types import ChatRequest, Done, ImagePart, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake_api() -> Iterator[FakeModelAPI]:
    """Shadows the shared fixture, whose ``async with`` does not fit FakeModelAPI (a sync context manager)."""
    with FakeModelAPI() as api:
        yield api


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478da63f8cfc000000301"
    "01009a7e1e5d0000000049454e44ae426082"
)


def make_runner(
    tmp_home: Any, fake_api: Any, cli_bin: Callable[[str], Path], key: str = "dummy", **kw: Any
) -> GeminiRunner:
    env = gemini_env(tmp_home.env(), fake_api.gemini_base_url, key)
    return GeminiRunner(binary=str(cli_bin("gemini")), env=env, **kw)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


async def test_answer_streaming_system_model_tools_off_and_usage(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    fake_api.script(
        Reply(chunks=["Hel", "lo ", "world"], input_tokens=40, output_tokens=3, cached_tokens=5, chunk_delay=0.3)
    )
    runner = make_runner(tmp_home, fake_api, cli_bin)
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
    await runner.aclose()


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
