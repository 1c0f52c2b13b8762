"""Raw HTTP (httpx2): malformed input, error envelopes per front door, errors mid-stream, client disconnects,
health and model listing."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx2
import pytest
from server_helpers import Served, wait_until

from llm_runners.errors import ProviderTimeout
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import Health

Serve = Callable[..., Served]
USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("path", "body", "param", "fragment"),
    [
        ("/v1/chat/completions", b"{not json", None, "not valid JSON"),
        ("/v1/chat/completions", b"[1, 2]", None, "must be a JSON object"),
        ("/v1/chat/completions", {"model": "scripted"}, "messages", "non-empty array"),
        ("/v1/chat/completions", {"messages": USER, "temperature": "hot"}, "temperature", "expected a number"),
        ("/v1/chat/completions", {"messages": USER, "temperature": 3}, "temperature", "out of range"),
        ("/v1/chat/completions", {"messages": USER, "max_tokens": 0}, "max_tokens", "at least 1"),
        ("/v1/chat/completions", {"messages": USER, "top_p": 1.5}, "top_p", "out of range"),
        ("/v1/chat/completions", {"messages": USER, "stop": [1]}, "stop", "strings"),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "robot"),
        ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, "messages[0]", "tool_call_id"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
            "messages[0].content[0].image_url",
            "data URI",
        ),
        ("/v1/responses", {"model": "scripted", "input": 5}, "input", "non-empty array"),
        ("/v1/responses", {"input": [{"type": "mystery"}]}, "input[0].type", "mystery"),
        # found by tests/server/test_fuzz.py: each of these answered 500 (or cut the stream) before
        ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"a\\ud800"}]}', "messages[0].content", "lone"),
        ("/v1/responses", b'{"input":"x","metadata":{"k":"\\udfff"}}', "metadata.k", "lone surrogate"),
        ("/v1/chat/completions", b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "nested too deeply"),
        ("/v1/chat/completions", b'{"temperature":NaN,"messages":[]}', None, "NaN is not a JSON number"),
        ("/v1/responses", b'{"input":"x","max_output_tokens":1e999}', None, "out of range"),
        ("/v1/responses", b'{"input":"\xff"}', None, "not valid UTF-8"),
        ("/v1/responses", {"input": [{"role": ["user"], "content": "x"}]}, "input[0].role", "expected user"),
        ("/v1/chat/completions", {"messages": [{"role": {"a": 1}, "content": "x"}]}, "messages[0].role", "unsupported"),
    ],
)
def test_bad_openai_input_is_a_400_naming_the_param(
    serve: Serve, path: str, body: object, param: str | None, fragment: str
) -> None:
    s = serve(ScriptedProvider())
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx2.post(s.url + path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert fragment in err["message"]


def test_bad_anthropic_input_uses_the_anthropic_envelope(serve: Serve) -> None:
    s = serve(ScriptedProvider())
    blocks = {"model": "scripted", "messages": [{"role": "user", "content": [{"type": ["text"]}]}]}
    r = httpx2.post(s.url + "/v1/messages", json=blocks)  # an unhashable block type was a 500
    assert r.status_code == 400 and "messages[0].content[0].type" in r.json()["error"]["message"]
    r = httpx2.post(s.url + "/v1/messages", json={"model": "scripted", "max_tokens": "ten", "messages": USER})
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: expected an integer, got a string"},
    }
    r = httpx2.post(s.url + "/v1/messages", json={"model": "nope:x", "max_tokens": 5, "messages": USER})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_unknown_route_and_method_get_envelopes(serve: Serve) -> None:
    s = serve(ScriptedProvider())
    r = httpx2.get(s.url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx2.get(s.url + "/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_bug_in_a_provider_is_a_500_envelope_not_a_traceback(serve: Serve) -> None:
    def boom(request: object) -> Reply:
        raise RuntimeError("secret internal detail")

    s = serve(ScriptedProvider(boom))
    r = httpx2.post(s.url + "/v1/chat/completions", json={"model": "scripted", "messages": USER})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["type"] == "server_error" and "RuntimeError" in err["message"]
    assert "secret internal detail" not in r.text


def test_error_after_streaming_began_openai_chunk_then_clean_end(serve: Serve) -> None:
    p = ScriptedProvider([Reply(text="a b c", error=ProviderTimeout("CLI went quiet"), error_after=1)])
    s = serve(p)
    body = {"model": "scripted", "messages": USER, "stream": True}
    with httpx2.stream("POST", s.url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    payloads = [json.loads(line[6:]) for line in lines]
    assert payloads[-1] == {
        "error": {"message": "CLI went quiet", "type": "timeout_error", "param": None, "code": "timeout"}
    }
    assert payloads[1]["choices"][0]["delta"] == {"content": "a "}


def test_responses_error_mid_stream_is_error_and_failed_events(serve: Serve) -> None:
    p = ScriptedProvider([Reply(text="a b", error=ProviderTimeout("slow"), error_after=1)])
    s = serve(p)
    with httpx2.stream("POST", s.url + "/v1/responses", json={"model": "scripted", "input": "x", "stream": True}) as r:
        events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[-2:] == ["error", "response.failed"]


def test_request_timeout_is_a_504(serve: Serve) -> None:
    from llm_runners.config import Settings

    p = ScriptedProvider([Reply(hang=True)])
    s = serve(p, settings=Settings(request_timeout=0.3))
    r = httpx2.post(s.url + "/v1/chat/completions", json={"model": "scripted", "messages": USER}, timeout=10)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert wait_until(lambda: p.open_streams == 0)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_client_disconnect_mid_stream_cancels_the_provider(serve: Serve, path: str) -> None:
    p = ScriptedProvider([Reply(text="first words", hang=True)])
    s = serve(p)
    body = {"model": "scripted", "messages": USER, "input": "x", "max_tokens": 5, "stream": True}
    with httpx2.stream("POST", s.url + path, json=body, timeout=10) as r:
        assert r.status_code == 200
        # iter_lines() buffers, so read raw chunks; and keep the iterator open (leaving a for loop with break
        # would close it, i.e. disconnect, before the assertion below)
        chunks = r.iter_raw()
        while b"first" not in next(chunks):
            pass
        assert p.open_streams == 1
    # The provider's ``finally`` lowers open_streams and raises cancelled in two steps, on the server's thread: wait
    # for both, or this thread may look in between and see the stream closed but not yet counted as cancelled.
    closed = wait_until(lambda: p.open_streams == 0 and p.cancelled == 1, timeout=1.0)
    assert closed, f"1 s after the disconnect: open_streams={p.open_streams}, cancelled={p.cancelled}"


def test_client_disconnect_while_waiting_for_a_one_shot_answer(serve: Serve) -> None:
    p = ScriptedProvider([Reply(hang=True)])
    s = serve(p)
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(s.url + "/v1/chat/completions", json={"model": "scripted", "messages": USER}, timeout=0.5)
    assert wait_until(lambda: p.open_streams == 0 and p.cancelled == 1, timeout=1.0)


def test_health_and_models(serve: Serve) -> None:
    broken = ScriptedProvider(
        name="broken",
        health=Health(provider="broken", installed=False, ready=False, reason="not on PATH", fix="npm i -g broken"),
    )
    ok = ScriptedProvider(name="ok", models=["m1", "m2"])
    s = serve({"ok": ok, "broken": broken}, default="ok", aliases={"fast": "ok:m1"})
    h = httpx2.get(s.url + "/ready")
    assert h.status_code == 200
    by_name = {p["provider"]: p for p in h.json()["providers"]}
    assert by_name["ok"]["ready"] is True and by_name["broken"]["fix"] == "npm i -g broken"
    ids = [m["id"] for m in httpx2.get(s.url + "/v1/models").json()["data"]]
    assert ids == ["ok:m1", "ok:m2", "broken:scripted-1", "fast"]


def test_ready_is_503_when_nothing_is_ready_while_health_stays_200(serve: Serve) -> None:
    down = ScriptedProvider(health=Health(provider="scripted", installed=True, ready=False, fix="log in"))
    s = serve(down)
    h = httpx2.get(s.url + "/ready")
    assert h.status_code == 503 and h.json()["status"] == "unavailable"
    live = httpx2.get(s.url + "/health")
    assert live.status_code == 200 and live.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("path", "body", "last"),
    [
        ("/v1/chat/completions", {"stream": True, "messages": USER}, b'"type":"server_error"'),
        ("/v1/responses", {"stream": True, "input": "x"}, b"event: response.failed"),
        ("/v1/messages", {"stream": True, "max_tokens": 5, "messages": USER}, b"event: error"),
    ],
)
def test_a_first_event_that_cannot_be_rendered_ends_the_stream_with_an_error_event(
    serve: Serve, path: str, body: dict[str, object], last: bytes
) -> None:
    """A provider's text with a lone surrogate cannot be encoded: the 200 is already out, so the stream must end
    with the format's error event, not be cut (it was, when the first event was the one that failed)."""
    s = serve(ScriptedProvider([Reply(chunks=["bad \ud800"])]))
    with httpx2.stream("POST", s.url + path, json=body) as r:
        raw = r.read()
    assert r.status_code == 200
    assert last in raw and raw.endswith(b"\n\n"), raw
