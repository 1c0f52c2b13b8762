"""Fuzzing every endpoint of a real server (uvicorn on 127.0.0.1, the scripted provider echoing what it is sent).

Inputs: bodies built by hypothesis from the official SDKs' request types (:mod:`fuzz_strategies`), the same with
one node anywhere replaced by a value of the wrong type plus unknown fields, raw garbage (broken JSON, invalid
UTF-8, lone surrogate escapes, nesting 100,000 deep, NaN and 1e999, duplicate keys, huge bodies), garbage ids and
query strings on the GET routes, and SSE clients that hang up at a random byte of the stream.

Checked on every answer: never a 5xx; an error is in the envelope of the front door that was called; a 2xx JSON
body validates under the SDK's type with the SDK's strict validation; a stream validates event by event and ends
with its wire format's final event (or an error event in the envelope); after a test, the server still answers and
no provider stream is left open.

Size: ``LLM_RUNNERS_FUZZ_EXAMPLES`` examples per test (default 200: about 2,050 requests in 12 tests, about 50 s
on a quiet machine); e.g. ``LLM_RUNNERS_FUZZ_EXAMPLES=5000`` for a long run. Found and fixed with it (each answered 500
on every front door before): a nesting too deep for ``json.loads`` (``RecursionError``); a lone surrogate (``\\ud800``)
in any string, echoed into the answer, which could not be encoded as UTF-8: a 500 for JSON, and a stream cut after
its 200 with no error event; NaN / Infinity accepted as numbers and written back as invalid JSON.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import anthropic._models
import httpx2
import openai._models
import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from anthropic.types import message_count_tokens_params as count_params
from anthropic.types import message_create_params as messages_params
from fuzz_strategies import TEXT, encode, from_type, mutated, raw_bodies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat import completion_create_params as chat_params
from openai.types.responses import InputTokenCountResponse, Response, ResponseStreamEvent
from openai.types.responses import input_token_count_params as input_tokens_params
from openai.types.responses import response_create_params as responses_params
from server_helpers import Served

from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ChatRequest, ToolCall

Serve = Callable[..., Served]

EXAMPLES = int(os.environ.get("LLM_RUNNERS_FUZZ_EXAMPLES") or 200)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Endpoint:
    def __init__(self, path: str, flavor: str, params: Any, body: Any, event: Any = None, last: tuple[str, ...] = ()):
        self.path, self.flavor, self.params, self.body, self.event, self.last = path, flavor, params, body, event, last


ENDPOINTS = {
    "chat": Endpoint(
        "/v1/chat/completions",
        "openai",
        chat_params.CompletionCreateParamsNonStreaming,
        ChatCompletion,
        ChatCompletionChunk,
        ("[DONE]",),
    ),
    "responses": Endpoint(
        "/v1/responses",
        "openai",
        responses_params.ResponseCreateParamsNonStreaming,
        Response,
        ResponseStreamEvent,
        ("response.completed", "response.incomplete", "response.failed"),
    ),
    "messages": Endpoint(
        "/v1/messages",
        "anthropic",
        messages_params.MessageCreateParamsNonStreaming,
        Message,
        RawMessageStreamEvent,
        ("message_stop", "error"),
    ),
    "count_tokens": Endpoint(
        "/v1/messages/count_tokens", "anthropic", count_params.MessageCountTokensParams, MessageTokensCount
    ),
    "input_tokens": Endpoint(
        "/v1/responses/input_tokens", "openai", input_tokens_params.InputTokenCountParams, InputTokenCountResponse
    ),
}


class Tally:
    """What one test saw: requests by status class (the figures in the module docstring come from these)."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_status: dict[int, int] = {}

    def add(self, status: int) -> None:
        self.requests += 1
        self.by_status[status // 100] = self.by_status.get(status // 100, 0) + 1


def _reply(request: ChatRequest) -> Reply:
    """Echo the last user text (so whatever was fuzzed into it comes back out), with reasoning and a tool call
    sometimes, so every output item type is rendered."""
    text = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
    n = len(text) % 3
    calls = [ToolCall(id="call_1", name="t" + text[:5], arguments=json.dumps({"echo": text[:20]}))] if n == 1 else []
    return Reply(text="echo: " + text, reasoning=text[:10] if n == 2 else "", tool_calls=calls)


@pytest.fixture
def fuzz_server(serve: Serve) -> Served:
    return serve(ScriptedProvider(_reply, models=["scripted-1", "other"]))


def _check_error(ep_flavor: str, status: int, raw: bytes) -> None:
    body = json.loads(raw)
    if ep_flavor == "anthropic":
        assert body["type"] == "error" and isinstance(body["error"]["type"], str), raw[:300]
        assert isinstance(body["error"]["message"], str), raw[:300]
    else:
        error = body["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str), raw[:300]
        assert set(error) >= {"message", "type", "param", "code"}, raw[:300]


def _validate(flavor: str, type_: Any, value: Any) -> None:
    module = anthropic._models if flavor == "anthropic" else openai._models
    module.validate_type(type_=type_, value=value)


def _sse(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event; comments (heartbeats) skipped."""
    events = []
    for block in raw.decode("utf-8").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            events.append((name, "\n".join(data)))
    return events


def check(ep: Endpoint, status: int, content_type: str, raw: bytes) -> None:
    """The answer to one fuzzed request is well formed (see the module docstring)."""
    assert status < 500, (status, raw[:500])
    raw.decode("utf-8")  # strict: every answer is valid UTF-8
    if status >= 300:
        _check_error(ep.flavor, status, raw)
        return
    if content_type.startswith("text/event-stream"):
        events = _sse(raw)
        assert events, raw[:300]
        for name, data in events:
            if data == "[DONE]":
                continue
            value = json.loads(data)
            if "error" in value and (name in (None, "error")) and ep.flavor == "openai" and "type" not in value:
                _check_error("openai", 200, data.encode())  # chat's error chunk
            elif value.get("type") == "error" and ep.flavor == "anthropic":
                _check_error("anthropic", 200, data.encode())
            elif value.get("type") == "ping":
                continue
            else:
                _validate(ep.flavor, ep.event, value)
        name, data = events[-1]
        assert (name or data) in ep.last or data in ep.last or (ep.path.endswith("completions") and "error" in data), (
            events[-1]
        )
        return
    _validate(ep.flavor, ep.body, json.loads(raw))


def post(client: httpx2.Client, ep: Endpoint, content: bytes, tally: Tally) -> None:
    with client.stream("POST", ep.path, content=content, headers={"content-type": "application/json"}) as r:
        raw = r.read()
    tally.add(r.status_code)
    check(ep, r.status_code, r.headers.get("content-type", ""), raw)


def still_serving(s: Served) -> None:
    r = httpx2.post(
        s.v1 + "/chat/completions", json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hi"
    p = s.scripted()
    deadline = time.monotonic() + 10
    while p.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.open_streams == 0


def _client(s: Served) -> httpx2.Client:
    return httpx2.Client(base_url=s.url, timeout=30)


def _stream_flag(ep: Endpoint) -> st.SearchStrategy[dict[str, Any]]:
    if ep.event is None:
        return st.just({})
    return st.sampled_from([{}, {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}])


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_bodies_from_the_sdk_types(fuzz_server: Served, name: str) -> None:
    ep = ENDPOINTS[name]
    tally = Tally()
    with _client(fuzz_server) as client:

        @FUZZ
        @given(body=from_type(ep.params), extra=_stream_flag(ep))
        def run(body: dict[str, Any], extra: dict[str, Any]) -> None:
            post(client, ep, encode({**body, **extra}), tally)
            fuzz_server.scripted().requests.clear()

        run()
    still_serving(fuzz_server)
    assert tally.requests >= min(EXAMPLES, 50) and tally.by_status.get(2, 0) > 0, tally.by_status


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_wrong_types_anywhere_and_unknown_fields(fuzz_server: Served, name: str) -> None:
    ep = ENDPOINTS[name]
    tally = Tally()
    with _client(fuzz_server) as client:

        @FUZZ
        @given(body=mutated(from_type(ep.params)), extra=_stream_flag(ep))
        def run(body: Any, extra: dict[str, Any]) -> None:
            if isinstance(body, dict):
                body = {**body, **extra}
            post(client, ep, encode(body), tally)
            fuzz_server.scripted().requests.clear()

        run()
    still_serving(fuzz_server)
    assert tally.by_status.get(4, 0) > 0, tally.by_status


def test_raw_garbage_on_every_endpoint(fuzz_server: Served) -> None:
    tally = Tally()
    with _client(fuzz_server) as client:

        @FUZZ
        @given(name=st.sampled_from(sorted(ENDPOINTS)), body=raw_bodies(), stream=st.booleans())
        def run(name: str, body: bytes, stream: bool) -> None:
            if stream and body.startswith(b"{") and body.endswith(b"}") and len(body) > 2:
                body = b'{"stream":true,' + body[1:]
            post(client, ENDPOINTS[name], body, tally)
            fuzz_server.scripted().requests.clear()

        run()
    still_serving(fuzz_server)
    assert tally.by_status.get(4, 0) > 0, tally.by_status


def test_huge_bodies(fuzz_server: Served) -> None:
    tally = Tally()
    big = "x" * 5_000_000
    with _client(fuzz_server) as client:
        for name, ep in ENDPOINTS.items():
            body = {"model": "scripted", "max_tokens": 5, "input": big, "messages": [{"role": "user", "content": big}]}
            post(client, ep, encode(body), tally)
            many = {
                "model": "scripted",
                "max_tokens": 5,
                "input": [{"role": "user", "content": "x"}] * 20_000,
                "messages": [{"role": "user", "content": "x"}] * 20_000,
            }
            post(client, ep, encode(many), tally)
            assert name
    still_serving(fuzz_server)
    assert tally.by_status == {2: 2 * len(ENDPOINTS)}, tally.by_status


_GET_PATHS = st.sampled_from(
    ["/v1/responses/", "/v1/models/", "/responses/", "/v1/nothing/", "/health", "/ready", "/v1/models", "/metrics"]
)


def test_garbage_ids_and_query_strings(fuzz_server: Served) -> None:
    tally = Tally()
    stored = httpx2.post(fuzz_server.v1 + "/responses", json={"model": "scripted", "input": "keep"}).json()["id"]
    with _client(fuzz_server) as client:

        @FUZZ
        @given(
            path=_GET_PATHS,
            tail=st.one_of(st.just(stored), TEXT, st.just("scripted:scripted-1"), st.just("nope:x")),
            query=st.dictionaries(
                st.sampled_from(["stream", "starting_after", "detail", "include", "x"]), TEXT, max_size=3
            ),
        )
        def run(path: str, tail: str, query: dict[str, str]) -> None:
            url = path + (urllib.parse.quote(tail, safe=":") if path.endswith("/") else "")
            r = client.get(url, params=query)
            tally.add(r.status_code)
            assert r.status_code < 500 or (path == "/ready" and r.status_code == 503), (url, query, r.text[:300])
            r.content.decode("utf-8")
            if r.headers.get("content-type", "").startswith("application/json"):
                json.loads(r.content)
            if path == "/v1/responses/" and tail == stored and r.status_code == 200:
                ep = ENDPOINTS["responses"]
                check(ep, r.status_code, r.headers["content-type"], r.content)

        run()
    still_serving(fuzz_server)


def _hang_up_after(url: str, path: str, body: bytes, keep: int) -> bytes:
    """A raw HTTP/1.1 client that sends ``body``, reads ``keep`` bytes of the answer and closes the socket."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        got = b""
        while len(got) < keep:
            chunk = sock.recv(keep - len(got))
            if not chunk:
                break
            got += chunk
        return got


def test_sse_clients_that_hang_up_mid_stream(serve: Serve) -> None:
    slow = ScriptedProvider(lambda r: Reply(text="one two three four five six seven eight", chunk_delay=0.002))
    s = serve(slow)
    count = 0

    @settings(FUZZ, max_examples=max(20, EXAMPLES // 5))
    @given(name=st.sampled_from(["chat", "responses", "messages"]), keep=st.integers(0, 3000), text=TEXT)
    def run(name: str, keep: int, text: str) -> None:
        nonlocal count
        body = {
            "model": "scripted",
            "stream": True,
            "max_tokens": 50,
            "input": text,
            "messages": [{"role": "user", "content": text or "x"}],
        }
        _hang_up_after(s.url, ENDPOINTS[name].path, encode(body), keep)
        count += 1
        slow.requests.clear()

    run()
    still_serving_slow(s, slow)
    assert count >= 20


def still_serving_slow(s: Served, p: ScriptedProvider) -> None:
    deadline = time.monotonic() + 10
    while p.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.open_streams == 0
    r = httpx2.post(
        s.v1 + "/chat/completions", json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert r.status_code == 200
