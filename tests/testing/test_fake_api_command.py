"""``python -m llm_runners.testing.fake_api`` with the options a user scripts a client test with: the reply and its
chunking, tool calls, errors, delays and the request log, seen through the official SDKs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import openai
import pytest

from llm_runners.testing.fake_api.__main__ import build_parser, chunks_of


@contextmanager
def fake_api(*args: str) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "llm_runners.testing.fake_api", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("fake model API listening on http://127.0.0.1:"), process.stderr
        yield line.rsplit(" ", 1)[1].strip()
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_reply_in_word_chunks_then_tool_calls_and_a_request_log(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    args = ["--reply", "one two three four five", "--chunk-words", "2", "--log", str(log)]
    args += ["--tool-call", 'get_weather:{"city": "Paris"}', "--tool-call", "now:{}"]
    with fake_api(*args) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="any", max_retries=0)
        chunks = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "weather?"}], stream=True
        )
        texts, calls = [], {}
        for chunk in chunks:
            delta = chunk.choices[0].delta if chunk.choices else None
            if delta and delta.content:
                texts.append(delta.content)
            for call in (delta.tool_calls or []) if delta else []:
                entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                entry["name"] += call.function.name or "" if call.function else ""
                entry["arguments"] += call.function.arguments or "" if call.function else ""
        assert texts == ["one two", " three four", " five"]
        assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
            ("get_weather", {"city": "Paris"}),
            ("now", {}),
        ]
        message = anthropic.Anthropic(base_url=url, api_key="any", max_retries=0).messages.create(
            model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].text == "one two three four five"  # type: ignore[union-attr]
        assert [b.name for b in message.content if b.type == "tool_use"] == ["get_weather", "now"]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["method"], x["api"], x["kind"], x["model"], x["stream"], x["status"]) for x in lines] == [
        ("POST", "openai_chat", "main", "gpt-test", True, 200),
        ("POST", "anthropic", "main", "claude-test", False, 200),
    ]
    assert all(x["path"] and x["time"].endswith("Z") for x in lines)


@pytest.mark.parametrize(
    ("kind", "error"),
    [("401", openai.AuthenticationError), ("429", openai.RateLimitError), ("500", openai.InternalServerError)],
)
def test_error_answers_in_the_api_own_shape(kind: str, error: type[Exception]) -> None:
    with fake_api("--error", kind) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="any", max_retries=0)
        with pytest.raises(error):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def test_context_error_and_delay() -> None:
    with fake_api("--error", "context", "--delay", "0.6") as url:
        client = anthropic.Anthropic(base_url=url, api_key="any", max_retries=0)
        started = time.monotonic()
        with pytest.raises(anthropic.BadRequestError) as failed:
            client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert time.monotonic() - started >= 0.6
        assert "prompt is too long" in str(failed.value) or "context" in str(failed.value).lower()


def test_bad_options_are_refused() -> None:
    parser = build_parser()
    for argv in (["--tool-call", "nojson"], ["--tool-call", "f:[1]"], ["--chunk-words", "0"], ["--error", "418"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def test_chunks_join_back_to_the_text() -> None:
    assert chunks_of("a  b c ", 2) == ["a  b", " c "]
    assert "".join(chunks_of(" x y z w ", 3)) == " x y z w "
    assert chunks_of("", 2) == []
