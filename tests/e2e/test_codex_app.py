"""The real Codex CLI 0.169.0 on its long-lived ``codex app-server`` (``CodexRunner(transport="app-server")``)
against the fake model API (loopback only).

The server starts once per runner (~0.3 s) and then serves turns without a spawn; most tests make a few turns on
one runner and assert several things about them."""

from __future__ import annotations

import os
import signal
import time
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
from llm_runners.runners.codex_app import CodexAppRunner
from llm_runners.testing.fake_api import FakeModelAPI, Reply
from llm_runners.types import ChatRequest, Done, ImagePart, StreamEvent, TextDelta, Usage, UsageEvent

pytestmark = pytest.mark.anyio

BASE_PROMPT_MARK = "You are a coding agent running in the Codex CLI"


def make_runner(
    tmp_home: Any,
    fake_api: FakeModelAPI,
    cli_bin: Callable[[str], Path],
    key: str = "dummy",
    base_url: str | None = None,
    **kw: Any,
) -> CodexAppRunner:
    env = codex_env(tmp_home.env(), key)
    kw.setdefault("model", "fake-model")
    runner = CodexRunner(
        transport="app-server",
        binary=str(cli_bin("codex")),
        env=env,
        extra_args=fake_provider_args(base_url or fake_api.openai_base_url),
        **kw,
    )
    assert isinstance(runner, CodexAppRunner)
    return runner


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


def server_pid(runner: CodexAppRunner) -> int:
    assert runner._server is not None and runner._server.alive
    return runner._server.proc.pid


async def timed(runner: CodexAppRunner, request: ChatRequest) -> list[tuple[float, StreamEvent]]:
    out = []
    async for event in runner.stream(request):
        out.append((time.monotonic(), event))
    return out


async def test_answer_system_prompt_model_usage_and_no_tools(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    fake_api.script(
        Reply(chunks=["Ahoy", " there", " matey"], input_tokens=321, cached_tokens=21, output_tokens=9,
              reasoning_tokens=4, chunk_delay=0.2)
    )  # fmt: skip
    runner = make_runner(tmp_home, fake_api, cli_bin)
    system = "You are a pirate.\nAnswer in three words."
    prompt = 'first line\n\n  second line with "quotes", $HOME and -dashes  \n'
    request = ChatRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}], model="gpt-test-chosen"
    )
    events = [e for _, e in await timed(runner, request)]
    # token streaming: the three chunks arrive as three deltas, in order, then usage, then Done
    assert events[:3] == [TextDelta("Ahoy"), TextDelta(" there"), TextDelta(" matey")]
    assert events[3] == UsageEvent(Usage(input_tokens=321, cached_tokens=21, output_tokens=9, reasoning_tokens=4))
    done = events[4]
    assert isinstance(done, Done) and done.session_id and done.model == "gpt-test-chosen"
    assert any("Model metadata for `gpt-test-chosen` not found" in w for w in done.warnings)
    main = fake_api.last_main_request()
    assert main.model == "gpt-test-chosen"
    assert developer_texts(main.body) == [system]  # baseInstructions replaced the 17 KB base prompt
    assert BASE_PROMPT_MARK not in main.raw_body.decode()
    assert main.messages() == [("user", prompt)]
    assert main.tool_names() == []
    # without a system prompt codex keeps its own; still no tools
    response = await runner.complete(ask("hi"))
    assert response.content == "pong from fake" and response.model == "fake-model"
    assert developer_texts(fake_api.last_main_request().body)[0].startswith(BASE_PROMPT_MARK)
    assert fake_api.last_main_request().tool_names() == []
    await runner.aclose()


async def test_token_deltas_arrive_well_before_the_end(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    chunks = ["one", " two", " three", " four", " five"]
    fake_api.script(Reply(chunks=chunks, chunk_delay=0.8))  # the fake streams for ~3.2 s
    runner = make_runner(tmp_home, fake_api, cli_bin)
    stamped = await timed(runner, ask("count"))
    texts = [(t, e.text) for t, e in stamped if isinstance(e, TextDelta)]
    assert [text for _, text in texts] == chunks
    end = stamped[-1][0]
    assert isinstance(stamped[-1][1], Done)
    assert end - texts[0][0] >= 2.0  # the first text came long before the end (generous: 3.2 s streamed)
    assert texts[-1][0] - texts[0][0] >= 1.5  # deltas spread over the stream, not one burst at the end
    await runner.aclose()


async def test_two_turns_on_one_live_thread(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    fake_api.script(
        Reply("BANANA noted", input_tokens=100, output_tokens=2),
        Reply("the word was BANANA", input_tokens=150, output_tokens=4),
    )
    runner = make_runner(tmp_home, fake_api, cli_bin)
    system = {"role": "system", "content": "Remember words."}
    first = await runner.complete(ChatRequest(messages=[system, {"role": "user", "content": "remember BANANA"}]))
    pid = server_pid(runner)
    history = [
        system,
        {"role": "user", "content": "remember BANANA"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "what word?"},
    ]
    second = await runner.complete(ChatRequest(messages=history))
    assert second.content == "the word was BANANA"
    assert first.session_id and second.session_id == first.session_id
    assert server_pid(runner) == pid  # the same server process: no spawn for the second turn
    resumed = fake_api.last_main_request()
    # codex re-sent the history; our turn/start held only the new user message (else the last user text would be
    # the whole transcript)
    assert resumed.messages() == [("user", "remember BANANA"), ("assistant", "BANANA noted"), ("user", "what word?")]
    assert developer_texts(resumed.body) == ["Remember words."]
    assert second.usage == Usage(input_tokens=150, output_tokens=4)  # the turn's own usage
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
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        await runner.complete(ask("hi"))
    assert type(info.value) is error and info.value.provider == "codex"
    assert time.monotonic() - started < 15.0  # fails in seconds
    assert len(fake_api.main_requests()) == 1  # no retries
    assert runner._server is not None and runner._server.alive  # an API error does not cost the server
    await runner.aclose()


async def test_refused_connection_is_upstream_error(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    runner = make_runner(tmp_home, fake_api, cli_bin, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(UpstreamError, match="Connection failed"):
        await runner.complete(ask("hi"))
    await runner.aclose()


async def test_hang_times_out_interrupts_and_the_server_serves_on(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    fake_api.script(Reply(hang="before"), "after the hang")
    runner = make_runner(tmp_home, fake_api, cli_bin, idle_timeout=2.0, timeout=20.0)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await runner.complete(ask("hi"))
    assert time.monotonic() - started < 12.0
    hung = fake_api.main_requests()[0]
    assert await anyio.to_thread.run_sync(hung.wait_disconnected, 5.0)  # the interrupt dropped the upstream call
    assert (await runner.complete(ask("again"))).content == "after the hang"
    await runner.aclose()


async def test_client_disconnect_interrupts_the_turn(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    # the fake sends the first chunk, then stalls until its client goes away
    fake_api.script(Reply(chunks=[" w0", " w1", " w2"], hang="mid"), "next turn")
    runner = make_runner(tmp_home, fake_api, cli_bin)
    stream = runner.stream(ask("long answer"))
    async for event in stream:
        assert event == TextDelta(" w0")
        break
    pid = server_pid(runner)
    started = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 5.0
    upstream = fake_api.main_requests()[0]
    assert await anyio.to_thread.run_sync(upstream.wait_disconnected, 5.0)  # turn/interrupt stopped the call
    assert server_pid(runner) == pid  # the server itself lives on
    assert (await runner.complete(ask("hi"))).content == "next turn"
    await runner.aclose()


async def test_killed_server_resumes_the_thread_and_a_turn_it_took_down_is_a_clean_error(
    tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any, no_leftover_processes: None
) -> None:
    fake_api.script(
        "KIWI noted",
        "the fruit was KIWI",
        Reply(chunks=[" w0", " w1", " w2"], hang="mid"),
        "replayed answer",
    )
    runner = make_runner(tmp_home, fake_api, cli_bin)
    history: list[dict[str, Any]] = [{"role": "user", "content": "remember KIWI"}]
    first = await runner.complete(ChatRequest(messages=history))
    pid = server_pid(runner)
    # killed between turns: the next turn starts a new server, which resumes the thread from its rollout
    os.killpg(pid, signal.SIGKILL)
    assert procs.wait_until_gone([pid], timeout=5.0) == []
    history += [{"role": "assistant", "content": first.content}, {"role": "user", "content": "which fruit?"}]
    second = await runner.complete(ChatRequest(messages=history))
    assert second.content == "the fruit was KIWI" and second.session_id == first.session_id
    assert server_pid(runner) != pid
    assert fake_api.last_main_request().messages() == [
        ("user", "remember KIWI"),
        ("assistant", "KIWI noted"),
        ("user", "which fruit?"),
    ]
    # killed during a turn: that turn fails at once with a clean error, the next request works
    pid = server_pid(runner)
    history += [{"role": "assistant", "content": second.content}, {"role": "user", "content": "say many words"}]
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="app-server exited"):
        async for event in runner.stream(ChatRequest(messages=history)):
            if isinstance(event, TextDelta):
                os.killpg(pid, signal.SIGKILL)
    assert time.monotonic() - started < 10.0
    assert procs.wait_until_gone([pid], timeout=5.0) == []
    third = await runner.complete(ChatRequest(messages=history))
    assert third.content == "replayed answer"
    # the failed turn used up its session (as with exec): the history is replayed into a fresh thread
    assert third.session_id != first.session_id
    replay = fake_api.last_main_request().messages()
    assert len(replay) == 1 and "remember KIWI" in replay[0][1] and replay[0][1].rstrip().endswith("say many words")
    await runner.aclose()


async def test_models_from_model_list_and_nothing_left_after_aclose(
    tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any
) -> None:
    before = set(procs.descendants())
    cold = make_runner(tmp_home, fake_api, cli_bin)
    await cold.start()
    assert cold._server is None  # without warm the server starts on the first request
    await cold.aclose()
    runner = make_runner(tmp_home, fake_api, cli_bin, warm=1)
    await runner.start()  # warm: the server runs before any request
    assert runner.warm_pool is None and fake_api.main_requests() == []
    started_pid = server_pid(runner)
    models = {m.id: m for m in await runner.models()}
    assert server_pid(runner) == started_pid
    assert "gpt-5.5" in models and models["gpt-5.5"].display_name == "GPT-5.5"
    assert "codex-auto-review" not in models
    pid = server_pid(runner)
    assert (await runner.complete(ask("hi"))).content == "pong from fake"
    assert procs.pid_alive(pid)
    await runner.aclose()
    assert procs.wait_until_gone(timeout=2.0, exclude=before) == []
    assert not procs.pid_alive(pid)


async def test_two_conversations_interleave_on_one_server(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    fake_api.default_reply = Reply(chunks=["slow", " answer", " here"], chunk_delay=0.6)
    runner = make_runner(tmp_home, fake_api, cli_bin)
    await runner.server()
    pid = server_pid(runner)
    answers: dict[str, Any] = {}

    async def first_turn(word: str) -> None:
        answers[word] = await runner.complete(ask(f"remember {word}"))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(first_turn, "APPLE")
        tg.start_soon(first_turn, "PEAR")
    both = time.monotonic() - started
    assert answers["APPLE"].content == answers["PEAR"].content == "slow answer here"
    assert answers["APPLE"].session_id != answers["PEAR"].session_id  # a thread per conversation
    # they ran at the same time on the one server (one turn streams for 1.2 s; in sequence they would take 2.4+)
    assert both < 2.4 + 1.0 and server_pid(runner) == pid
    fake_api.default_reply = Reply("ok")
    for word in ("PEAR", "APPLE"):
        history = [
            {"role": "user", "content": f"remember {word}"},
            {"role": "assistant", "content": answers[word].content},
            {"role": "user", "content": "which word?"},
        ]
        second = await runner.complete(ChatRequest(messages=history))
        assert second.session_id == answers[word].session_id
        assert fake_api.last_main_request().messages() == [
            ("user", f"remember {word}"),
            ("assistant", "slow answer here"),
            ("user", "which word?"),
        ]
    await runner.aclose()


async def test_image_and_long_prompt(tmp_home: Any, fake_api: Any, cli_bin: Any) -> None:
    import base64

    from test_codex import PNG

    runner = make_runner(tmp_home, fake_api, cli_bin)
    request = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is this?"}, ImagePart(data=PNG)]}]
    )
    assert (await runner.complete(request)).content == "pong from fake"
    user = [i for i in fake_api.last_main_request().body["input"] if i.get("role") == "user"][-1]
    images = [p["image_url"] for p in user["content"] if p.get("type") == "input_image"]
    assert images == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    assert any(p.get("type") == "input_text" and "what is this?" in p["text"] for p in user["content"])
    prompt = "".join(f'line {i}: ünïcode ✓ "q" $X `y`\n' for i in range(12000))  # ~400 KB in one JSON line
    assert (await runner.complete(ask(prompt))).content == "pong from fake"
    assert fake_api.last_main_request().messages() == [("user", prompt)]
    await runner.aclose()


async def test_a_thread_another_runner_owned_is_replayed(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    """Each runner's server has a private CODEX_HOME: a thread id from another (closed) runner is unknown to it
    (``no rollout found``), which is SessionNotFound, and the base replays the history into a new thread."""
    from llm_runners.sessions import SessionStore

    store = SessionStore()
    fake_api.script("noted", "replayed answer")
    first_runner = make_runner(tmp_home, fake_api, cli_bin, sessions=store)
    first = await first_runner.complete(ask("remember KIWI"))
    await first_runner.aclose()
    second_runner = make_runner(tmp_home, fake_api, cli_bin, sessions=store)
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


async def test_a_runner_dropped_without_aclose_takes_its_server_along(
    tmp_home: Any, fake_api: Any, cli_bin: Any, procs: Any
) -> None:
    import gc

    runner = make_runner(tmp_home, fake_api, cli_bin)
    assert (await runner.complete(ask("hi"))).content == "pong from fake"
    pid = server_pid(runner)
    del runner
    gc.collect()
    assert procs.wait_until_gone([pid], timeout=5.0) == []


async def test_a_cancelled_request_interrupts_the_turn(
    tmp_home: Any, fake_api: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    """The HTTP server cancels a request's task when its client goes away: the turn is interrupted all the same."""
    fake_api.script(Reply(chunks=[" w0", " w1", " w2"], hang="mid"), "next turn")
    runner = make_runner(tmp_home, fake_api, cli_bin)
    got_text = anyio.Event()

    async def consume() -> None:
        async for event in runner.stream(ask("long answer")):
            if isinstance(event, TextDelta):
                got_text.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        with anyio.fail_after(30):
            await got_text.wait()
        tg.cancel_scope.cancel()
    upstream = fake_api.main_requests()[0]
    assert await anyio.to_thread.run_sync(upstream.wait_disconnected, 5.0)
    assert (await runner.complete(ask("hi"))).content == "next turn"
    await runner.aclose()
