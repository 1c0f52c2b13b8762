"""Request ids on every response (``request-id`` for Anthropic, ``x-request-id`` for OpenAI), the caller's own
envelope and list shape on shared routes (``/v1/models``, unknown paths), and how each format's stream ends when
the provider fails after streaming began. Checked with the official SDKs where they expose it."""

from __future__ import annotations

import json
from collections.abc import Callable

import anthropic
import httpx2
import openai
import pytest
from server_helpers import Served

from llm_runners.config import Settings
from llm_runners.errors import ProviderTimeout, UpstreamError
from llm_runners.testing.scripted import Reply, ScriptedProvider

Serve = Callable[..., Served]
USER = [{"role": "user", "content": "x"}]


def _is_id(value: str | None) -> bool:
    return value is not None and value.startswith("req_") and len(value) > 12


def test_anthropic_responses_carry_request_id(serve: Serve) -> None:
    s = serve(ScriptedProvider(["hello", Reply(text="a b", error=UpstreamError("CLI crashed"), error_after=1)]))
    client = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(model="scripted", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    first = raw.headers.get("request-id")
    assert _is_id(first) and "x-request-id" not in raw.headers
    assert raw.parse()._request_id == first
    counted = client.messages.with_raw_response.count_tokens(model="scripted", messages=USER)  # type: ignore[arg-type]
    assert _is_id(counted.headers.get("request-id")) and counted.headers["request-id"] != first
    with client.messages.with_streaming_response.create(
        model="scripted",
        max_tokens=5,
        messages=USER,  # type: ignore[arg-type]
        stream=True,
    ) as streamed:
        assert _is_id(streamed.headers.get("request-id"))
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="scripted", max_tokens=0, messages=USER)  # type: ignore[arg-type]
    assert _is_id(bad.value.request_id)
    with pytest.raises(anthropic.BadRequestError) as bad_count:
        client.messages.count_tokens(model="scripted", messages=[])
    assert _is_id(bad_count.value.request_id) and bad_count.value.request_id != bad.value.request_id


def test_openai_responses_carry_x_request_id(serve: Serve) -> None:
    s = serve(ScriptedProvider(["hello", "again"]))
    client = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0)
    completion = client.chat.completions.create(model="scripted", messages=USER)  # type: ignore[arg-type]
    response = client.responses.create(model="scripted", input="x")
    assert _is_id(completion._request_id) and _is_id(response._request_id)
    assert completion._request_id != response._request_id
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="scripted", messages=[])
    assert _is_id(bad.value.request_id)
    r = httpx2.post(s.v1 + "/chat/completions", json={"model": "scripted", "messages": USER, "stream": True})
    assert _is_id(r.headers.get("x-request-id")) and "request-id" not in r.headers


def test_middleware_refusals_carry_ids_in_the_callers_format(serve: Serve) -> None:
    s = serve(ScriptedProvider(), settings=Settings(api_keys=["right"], max_body_bytes=1000))
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=s.url, api_key="wrong", max_retries=0).messages.create(
            model="scripted",
            max_tokens=5,
            messages=USER,  # type: ignore[arg-type]
        )
    assert _is_id(refused.value.request_id)
    big = httpx2.post(s.v1 + "/chat/completions", content=b"x" * 2000, headers={"authorization": "Bearer right"})
    assert big.status_code == 413 and _is_id(big.headers.get("x-request-id"))


def test_models_list_with_both_sdks(serve: Serve) -> None:
    s = serve({"ok": ScriptedProvider(name="ok", models=["m1", "m2"])}, aliases={"fast": "ok:m1"})
    page = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0).models.list()
    assert [m.id for m in page.data] == ["ok:m1", "ok:m2", "fast"]
    assert all(m.type == "model" and m.display_name and m.created_at.year >= 1970 for m in page.data)
    assert page.has_more is False and page.first_id == "ok:m1" and page.last_id == "fast"
    assert [m.id for m in page] == ["ok:m1", "ok:m2", "fast"]  # auto-pagination stops on has_more=false
    models = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0).models.list()
    assert [(m.id, m.object, m.owned_by) for m in models] == [
        ("ok:m1", "model", "ok"),
        ("ok:m2", "model", "ok"),
        ("fast", "model", "alias"),
    ]


def test_shared_route_errors_answer_in_the_callers_envelope(serve: Serve) -> None:
    s = serve(ScriptedProvider(), settings=Settings(api_keys=["right"]))
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=s.url, api_key="wrong", max_retries=0).models.list()
    assert refused.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": refused.value.body["error"]["message"]},  # type: ignore[index]
    }
    assert _is_id(refused.value.request_id)
    with pytest.raises(anthropic.NotFoundError) as missing:
        anthropic.Anthropic(base_url=s.url, api_key="right", max_retries=0).models.retrieve("nope:no-such-model")
    assert isinstance(missing.value.body, dict) and missing.value.body["type"] == "error"
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(openai.AuthenticationError) as refused_oa:
        openai.OpenAI(base_url=s.v1, api_key="wrong", max_retries=0).models.list()
    assert isinstance(refused_oa.value.body, dict) and refused_oa.value.body["type"] == "authentication_error"
    assert _is_id(refused_oa.value.request_id)
    # raw callers: x-api-key alone marks an Anthropic client; nothing marks an OpenAI one
    r = httpx2.get(s.url + "/v1/nothing", headers={"x-api-key": "right"})
    assert r.status_code == 404 and r.json()["type"] == "error" and _is_id(r.headers.get("request-id"))
    r = httpx2.get(s.url + "/v1/nothing", headers={"authorization": "Bearer right"})
    assert r.status_code == 404 and "type" not in r.json() and r.json()["error"]["code"] == "not_found"
    assert _is_id(r.headers.get("x-request-id"))
    # a format's own route keeps its format whoever calls
    r = httpx2.post(s.v1 + "/chat/completions", json={}, headers={"x-api-key": "right", "anthropic-version": "1"})
    assert r.status_code == 400 and "type" not in r.json() and _is_id(r.headers.get("x-request-id"))


# ------------------------------------------------------------------ errors after a stream started, per format


def test_chat_stream_error_raises_api_error_in_the_openai_sdk(serve: Serve) -> None:
    s = serve(
        ScriptedProvider(
            [
                Reply(text="a b c", error=ProviderTimeout("CLI went quiet"), error_after=1),
                Reply(text="a b", error=UpstreamError("gone"), error_after=1),
            ]
        )
    )
    client = openai.OpenAI(base_url=s.v1, api_key="x", max_retries=0)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        stream = client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "x"}], stream=True
        )
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(got) == "a " and "CLI went quiet" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "timeout"
    # the body ends right after the error chunk: no [DONE] that would read as a normal end
    with httpx2.stream(
        "POST", s.v1 + "/chat/completions", json={"model": "scripted", "messages": USER, "stream": True}
    ) as r:
        raw = r.read()
    assert raw.endswith(b"\n\n") and b"[DONE]" not in raw
    assert json.loads(raw.split(b"data: ")[-1])["error"]["message"] == "gone"


def test_anthropic_stream_error_is_the_last_event(serve: Serve) -> None:
    s = serve(ScriptedProvider([Reply(text="a b c", error=UpstreamError("CLI crashed"), error_after=2)]))
    body = {"model": "scripted", "max_tokens": 5, "messages": USER, "stream": True}
    with httpx2.stream("POST", s.v1 + "/messages", json=body) as r:
        assert r.status_code == 200 and _is_id(r.headers.get("request-id"))
        raw = r.read().decode()
    frames = [f for f in raw.split("\n\n") if f.strip()]
    assert frames[-1].startswith("event: error\ndata: ")
    assert json.loads(frames[-1].split("data: ", 1)[1]) == {
        "type": "error",
        "error": {"type": "api_error", "message": "CLI crashed"},
    }
    assert "message_stop" not in raw
