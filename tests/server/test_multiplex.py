"""Multiplex (``model`` as an array) over raw HTTP (httpx2): one JSON object with a slot per entry, each slot the
single-model body (or error envelope) of its front door, entries concurrent and independent."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from openai.types.chat import ChatCompletion
from server_helpers import Served, wait_until

from llm_runners.config import Settings
from llm_runners.errors import RateLimited
from llm_runners.server.multiplex import MAX_MODELS
from llm_runners.testing.scripted import Reply, ScriptedProvider

Serve = Callable[..., Served]
USER = [{"role": "user", "content": "hi"}]


def _post(s: Served, path: str, body: dict[str, Any], timeout: float = 10) -> httpx2.Response:
    return httpx2.post(s.url + path, json=body, timeout=timeout)


def test_one_failing_provider_does_not_sink_the_other(serve: Serve) -> None:
    good = ScriptedProvider(["fine answer"], name="good")
    bad = ScriptedProvider([Reply(error=RateLimited("slow down", retry_after=3))], name="bad")
    s = serve({"good": good, "bad": bad})
    r = _post(s, "/v1/chat/completions", {"model": ["good", "bad:big"], "messages": USER, "temperature": 0.2})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "multiplex" and out["elapsed_ms"] >= 0
    ok, failed = out["results"]
    assert (ok["index"], ok["model"], ok["provider"], ok["resolved"], ok["status"]) == (
        0,
        "good",
        "good",
        "good:scripted-1",
        200,
    )
    completion = ChatCompletion.model_validate(ok["body"])  # the single-model body, readable by the SDK's model
    assert completion.choices[0].message.content == "fine answer"
    assert completion.model == "good"
    assert (failed["index"], failed["model"], failed["provider"], failed["status"]) == (1, "bad:big", "bad", 429)
    assert failed["body"] == RateLimited("slow down").openai_envelope()  # what a single request would answer
    assert failed["body"]["error"]["type"] == "rate_limit_error"
    assert ok["warnings"] == [] and failed["warnings"] == []
    # each provider got the same parsed request, with its own model
    assert good.last_request.temperature == 0.2 and good.last_request.model is None
    assert bad.last_request.model == "big" and bad.last_request.messages == good.last_request.messages


def test_entries_run_concurrently_with_their_own_timing(serve: Serve) -> None:
    # 1 s entries: one after the other they take 2 s; the bound leaves 0.8 s for a loaded machine's scheduling
    a = ScriptedProvider([Reply(text="a", delay=1.0)], name="a")
    b = ScriptedProvider([Reply(text="b", delay=1.0)], name="b")
    quick = ScriptedProvider(["q"], name="quick")
    s = serve({"a": a, "b": b, "quick": quick})
    t0 = time.monotonic()
    r = _post(s, "/v1/chat/completions", {"model": ["a", "b", "quick"], "messages": USER})
    wall = time.monotonic() - t0
    assert r.status_code == 200, r.text
    slots = r.json()["results"]
    assert [x["body"]["choices"][0]["message"]["content"] for x in slots] == ["a", "b", "q"]
    assert slots[0]["elapsed_ms"] >= 990 and slots[1]["elapsed_ms"] >= 990
    assert slots[2]["elapsed_ms"] < 700  # its own time, not the slowest entry's
    assert wall < 1.8, f"two 1 s entries took {wall:.3f} s: not concurrent"
    assert 990 <= r.json()["elapsed_ms"] < 1800


def test_unknown_model_is_a_404_in_its_slot_only(serve: Serve) -> None:
    s = serve(ScriptedProvider(["hello"]))
    r = _post(s, "/v1/chat/completions", {"model": ["nope:x", "scripted"], "messages": USER})
    assert r.status_code == 200, r.text
    missing, found = r.json()["results"]
    assert (missing["status"], missing["provider"], missing["resolved"]) == (404, None, None)
    assert missing["body"]["error"]["code"] == "model_not_found"
    assert "unknown provider 'nope'" in missing["body"]["error"]["message"]
    assert found["status"] == 200 and found["body"]["choices"][0]["message"]["content"] == "hello"


def test_duplicates_are_separate_calls_with_separate_sessions(serve: Serve) -> None:
    p = ScriptedProvider(["one", "two", "three"])
    s = serve(p)
    body = {"model": ["scripted", "scripted:other", "scripted"], "messages": USER, "metadata": {"conversation_id": "c"}}
    r = _post(s, "/v1/chat/completions", body)
    assert [x["status"] for x in r.json()["results"]] == [200, 200, 200]
    assert len(p.requests) == 3
    # one provider: the first entry keeps the conversation, later ones get their own, so no session is resumed twice
    assert sorted(str(req.conversation) for req in p.requests) == ["c", "c#2", "c#3"]
    assert sorted(str(req.model) for req in p.requests) == ["None", "None", "other"]


def test_entry_timeout_and_warnings_are_per_slot(serve: Serve) -> None:
    slow = ScriptedProvider([Reply(hang=True)], name="slow")
    warn = ScriptedProvider([Reply(text="ok", warnings=["temperature ignored"])], name="warn")
    s = serve({"slow": slow, "warn": warn}, settings=Settings(request_timeout=0.3))
    r = _post(s, "/v1/chat/completions", {"model": ["slow", "warn"], "messages": USER})
    timed_out, fine = r.json()["results"]
    assert timed_out["status"] == 504 and timed_out["body"]["error"]["code"] == "timeout"
    assert fine["status"] == 200 and fine["warnings"] == ["temperature ignored"]
    assert wait_until(lambda: slow.open_streams == 0)


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": [], "messages": USER}, "model", "at least one"),
        ({"model": ["scripted"] * (MAX_MODELS + 1), "messages": USER}, "model", f"at most {MAX_MODELS}"),
        ({"model": ["scripted", 7], "messages": USER}, "model[1]", "expected a string"),
        ({"model": ["scripted", "scripted"], "messages": USER, "stream": True}, "stream", "cannot be streamed"),
        ({"model": ["scripted"], "messages": []}, "messages", "non-empty array"),
    ],
)
def test_bad_multiplex_requests_are_a_400(serve: Serve, body: dict[str, Any], param: str, fragment: str) -> None:
    p = ScriptedProvider()
    s = serve(p)
    r = _post(s, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and fragment in r.json()["error"]["message"]
    assert p.requests == []


def test_anthropic_messages_multiplex_uses_its_own_bodies_and_envelopes(serve: Serve) -> None:
    s = serve(ScriptedProvider(["from claude side"]))
    body = {"model": ["scripted", "ghost:1"], "max_tokens": 20, "messages": USER}
    r = _post(s, "/v1/messages", body)
    assert r.status_code == 200, r.text
    ok, missing = r.json()["results"]
    assert ok["body"]["type"] == "message" and ok["body"]["model"] == "scripted"
    assert ok["body"]["content"] == [{"type": "text", "text": "from claude side"}]
    assert missing["status"] == 404 and missing["body"]["type"] == "error"
    assert missing["body"]["error"]["type"] == "not_found_error"
    r = _post(s, "/v1/messages", {**body, "stream": True})
    assert r.status_code == 400 and r.json()["type"] == "error"


def test_responses_multiplex_stores_each_entry(serve: Serve) -> None:
    a = ScriptedProvider(["answer a"], name="a")
    b = ScriptedProvider(["answer b"], name="b")
    s = serve({"a": a, "b": b})
    r = _post(s, "/v1/responses", {"model": ["a", "b"], "input": "hi", "instructions": "be brief"})
    assert r.status_code == 200, r.text
    slots = r.json()["results"]
    ids = [x["body"]["id"] for x in slots]
    assert len(set(ids)) == 2
    for slot, text in zip(slots, ["answer a", "answer b"], strict=True):
        assert slot["body"]["object"] == "response" and slot["body"]["status"] == "completed"
        assert slot["body"]["output"][0]["content"][0]["text"] == text
    # each stored response continues on its own
    follow = _post(s, "/v1/responses", {"model": "b", "input": "more", "previous_response_id": ids[1]})
    assert follow.status_code == 200
    assert [m.text for m in b.last_request.messages] == ["hi", "answer b", "more"]
    assert a.last_request.conversation != b.requests[0].conversation  # separate responses: separate sessions


def test_client_disconnect_cancels_every_entry(serve: Serve) -> None:
    a = ScriptedProvider([Reply(hang=True)], name="a")
    b = ScriptedProvider([Reply(hang=True)], name="b")
    s = serve({"a": a, "b": b})
    with pytest.raises(httpx2.ReadTimeout):
        _post(s, "/v1/chat/completions", {"model": ["a", "b"], "messages": USER}, timeout=0.5)
    assert wait_until(lambda: a.open_streams == 0 and b.open_streams == 0 and a.cancelled + b.cancelled == 2, 1.0)
