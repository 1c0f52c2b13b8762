"""The whole stack with a real CLI behind it: the official ``openai`` and ``anthropic`` SDKs -> our server (built from
a TOML settings file exactly as ``llm-runners serve`` builds it, run by uvicorn on 127.0.0.1 in a thread) -> the
claude_code runner -> the real pinned ``claude`` -> the fake model API. Loopback only.

What reached the model is asserted on the requests the fake recorded. About six CLI runs in all (~0.5 s each).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import uvicorn
from test_cli_command import claude_options, write_config

from llm_runners.config import load_settings
from llm_runners.router import Router
from llm_runners.server import create_app
from llm_runners.testing.fake_api import FakeModelAPI, Reply


@contextlib.contextmanager
def serving(config: Path, *, warm: int | None = None) -> Iterator[str]:
    """Settings file -> Router.from_settings -> create_app, the path ``llm-runners serve`` takes (its limits and
    feature-adapter wrappers included; ``warm=SERVE_WARM`` for serve's warm default), on a free loopback port;
    yields the server's URL."""
    settings = load_settings(str(config), env={})
    app = create_app(Router.from_settings(settings, warm=warm), settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def server_url(tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> Iterator[str]:
    config = write_config(
        tmp_path / "llm-runners.toml",
        {"claude_code": claude_options(tmp_home, cli_bin, fake_api.anthropic_base_url)},
        default_provider="claude_code",
    )
    with serving(config) as url:
        yield url


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=60)


# ------------------------------------------------------------------------------------------------ openai


def test_chat_completion_plain_and_streamed(server_url: str, fake_api: FakeModelAPI) -> None:
    fake_api.script(Reply(text="four", input_tokens=500, output_tokens=1, cached_tokens=120))
    client = openai_client(server_url)
    out = client.chat.completions.create(
        model="claude_code:claude-sonnet-4-5",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"}],
    )
    assert out.choices[0].message.content == "four"
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (500, 1)
    assert out.usage.prompt_tokens_details is not None and out.usage.prompt_tokens_details.cached_tokens == 120
    # the CLI's own cost (total_cost_usd), at Sonnet's list prices: 380 fresh + 120 cache-read input, 1 output
    assert out.usage.model_extra is not None
    assert out.usage.model_extra["cost_usd"] == pytest.approx((380 * 3.0 + 120 * 0.30 + 1 * 15.0) / 1e6, rel=0.05)
    first = fake_api.last_main_request()
    assert first.model == "claude-sonnet-4-5"
    assert first.body["system"][-1]["text"] == "Be terse."
    assert first.last_user_text().endswith("What is 2+2?")

    chunks = list(
        client.chat.completions.create(
            model="claude_code",
            messages=[{"role": "user", "content": f"stream please {uuid.uuid4()}"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert deltas == ["pong", " from", " fake"]  # one delta per upstream chunk, nothing repeated
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.usage.completion_tokens == 3 and final.usage.prompt_tokens > 0
    assert len(fake_api.main_requests()) == 2


def test_conversation_continues_through_the_clis_own_session(server_url: str, fake_api: FakeModelAPI) -> None:
    """[u1] -> a1, then [u1, a1, u2] under the same conversation id: the second run resumes the CLI session (the
    CLI re-sends its own history upstream) and our prompt carries only u2."""
    a1 = "BANANA noted"
    fake_api.script(a1, "it was BANANA")
    client = openai_client(server_url)
    meta = {"conversation_id": f"conv-{uuid.uuid4()}"}
    u1, u2 = "remember the word BANANA", "which word was it?"
    first = client.chat.completions.create(
        model="claude_code", messages=[{"role": "user", "content": u1}], metadata=meta
    )
    assert first.choices[0].message.content == a1
    second = client.chat.completions.create(
        model="claude_code",
        messages=[
            {"role": "user", "content": u1},
            {"role": "assistant", "content": a1},
            {"role": "user", "content": u2},
        ],
        metadata=meta,
    )
    assert second.choices[0].message.content == "it was BANANA"
    one, two = fake_api.main_requests()
    session = one.headers.get("x-claude-code-session-id")
    assert session and two.headers.get("x-claude-code-session-id") == session  # a --resume of the same session
    turns = [(role, text) for role, text in two.messages() if role in ("user", "assistant")]
    assert [role for role, _ in turns] == ["user", "assistant", "user"], turns
    assert turns[0][1].endswith(u1) and turns[1][1] == a1
    assert turns[2][1] == u2  # exactly the new message: no replayed transcript on the CLI's stdin
    assert sum(text.count(u1) for _, text in turns) == 1


def test_client_disconnect_mid_stream_kills_the_cli(server_url: str, fake_api: FakeModelAPI, procs: Any) -> None:
    fake_api.script(Reply(chunks=[f" w{i}" for i in range(40)], chunk_delay=0.2))
    client = openai_client(server_url)
    stream = client.chat.completions.create(
        model="claude_code", messages=[{"role": "user", "content": f"talk {uuid.uuid4()}"}], stream=True
    )
    first = next(c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content)
    assert first == " w0"
    running = procs.named("claude")
    assert running, "the CLI should still be streaming"
    stream.close()
    assert procs.wait_until_gone(running, timeout=1.0) == [], "the claude process outlived its client by 1 s"
    assert procs.named("claude") == []
    assert len(fake_api.main_requests()) == 1


# ------------------------------------------------------------------------------------------------ anthropic


def test_anthropic_messages_one_turn(server_url: str, fake_api: FakeModelAPI) -> None:
    fake_api.script(Reply(text="Ahoy there", input_tokens=300, output_tokens=2))
    prompt = f"greet me {uuid.uuid4()}"
    client = anthropic.Anthropic(base_url=server_url, api_key="unused-on-loopback", max_retries=0, timeout=60)
    raw = client.messages.with_raw_response.create(
        model="claude_code",
        max_tokens=256,
        system="You are a pirate.",
        messages=[{"role": "user", "content": prompt}],
    )
    assert "x-llm-runners-warnings" not in raw.headers  # max_tokens is the format's, not the caller's choice
    message = raw.parse()
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Ahoy there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 2 and message.usage.input_tokens > 0
    [request] = fake_api.main_requests()
    assert request.body["system"][-1]["text"] == "You are a pirate."
    assert request.last_user_text().endswith(prompt)
