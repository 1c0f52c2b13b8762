"""The wrappers through the whole server, built from a TOML file the way ``llm-runners serve`` builds it: fallback
chains as model names (the report headers on every front door), the cache (a hit proven by the fake model API's
request count, counts in /metrics), guardrails (redaction of a streamed answer seen through the openai SDK, errors
in each front door's envelope), the quality gate. The official openai and anthropic SDKs are the clients."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx2
import openai
import pytest
from server_helpers import Served

from llm_runners.config import ConfigError, load_settings
from llm_runners.errors import AuthenticationError, UpstreamError
from llm_runners.provider import Provider
from llm_runners.router import Router
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.testing.fake_api import Reply as FakeReply
from llm_runners.testing.scripted import Reply, ScriptedProvider

MSG = [{"role": "user", "content": "hi"}]


def build(tmp_path: Path, toml: str, extra: dict[str, Provider] | None = None) -> tuple[Router, object]:
    path = tmp_path / "llm-runners.toml"
    path.write_text(textwrap.dedent(toml))
    settings = load_settings(str(path), env={})
    return Router.from_settings(settings, extra=extra), settings


@pytest.fixture
def fake_api() -> Iterator[FakeModelAPI]:
    with FakeModelAPI() as api:
        yield api


def oa(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.v1, api_key="unused", max_retries=0, timeout=30)


def an(served: Served) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key="unused", max_retries=0, timeout=30)


# ------------------------------------------------------------------------------------------------ fallback


def chain_server(tmp_path: Path, serve: Callable[..., Served]) -> tuple[Served, ScriptedProvider, ScriptedProvider]:
    down = ScriptedProvider(lambda r: Reply(error=UpstreamError("upstream said 500")), name="down")
    up = ScriptedProvider(lambda r: Reply(text=f"up answered as {r.model}", chunks=None), name="up")
    router, settings = build(
        tmp_path,
        """
        [fallbacks.fast]
        models = ["down:m1", "up:m2"]
        retries = 1
        backoff = 0.01
        """,
        {"down": down, "up": up},
    )
    return serve(router=router, settings=settings), down, up


def test_fallback_chain_on_every_front_door(tmp_path: Path, serve: Callable[..., Served]) -> None:
    served, down, _up = chain_server(tmp_path, serve)
    client = oa(served)

    raw = client.chat.completions.with_raw_response.create(model="fast", messages=MSG)  # type: ignore[arg-type]
    assert raw.parse().choices[0].message.content == "up answered as m2"
    assert raw.headers["x-llm-runners-fallback-answered"] == "up:m2"
    assert raw.headers["x-llm-runners-fallback-failed"] == "down:m1=upstream_error"
    assert len(down.requests) == 2 and down.last_request.model == "m1"  # one retry on a transient error

    with client.chat.completions.with_streaming_response.create(
        model="fast",
        messages=MSG,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        assert response.headers["x-llm-runners-fallback-answered"] == "up:m2"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "up answered as m2"

    resp = client.responses.with_raw_response.create(model="fast", input="hi")
    assert resp.parse().output_text == "up answered as m2"
    assert resp.headers["x-llm-runners-fallback-answered"] == "up:m2"

    with client.responses.with_streaming_response.create(model="fast", input="hi", stream=True) as response:
        assert response.headers["x-llm-runners-fallback-failed"] == "down:m1=upstream_error"
        kinds = [e.type for e in response.parse()]
    assert kinds[-1] == "response.completed"

    msg = an(served).messages.with_raw_response.create(model="fast", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    assert msg.parse().content[0].text == "up answered as m2"  # type: ignore[union-attr]
    assert msg.headers["x-llm-runners-fallback-answered"] == "up:m2"

    with an(served).messages.with_streaming_response.create(
        model="fast",
        max_tokens=50,
        messages=MSG,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        assert response.headers["x-llm-runners-fallback-answered"] == "up:m2"

    models = {m.id for m in client.models.list()}
    assert "fast" in models
    metrics = httpx2.get(served.url + "/metrics").text
    assert 'llm_runners_fallback_attempts_total{chain="fast",entry="up:m2",outcome="answered"} 6.0' in metrics
    # five failures in a row opened the circuit: the sixth request skipped the entry
    assert 'llm_runners_fallback_attempts_total{chain="fast",entry="down:m1",outcome="upstream_error"} 5.0' in metrics
    assert 'llm_runners_fallback_attempts_total{chain="fast",entry="down:m1",outcome="circuit_open"} 1.0' in metrics
    assert len(down.requests) == 10


def test_fallback_all_failing_is_an_error_in_each_envelope(tmp_path: Path, serve: Callable[..., Served]) -> None:
    a = ScriptedProvider(lambda r: Reply(error=AuthenticationError("not logged in")), name="a")
    b = ScriptedProvider(lambda r: Reply(error=UpstreamError("crashed")), name="b")
    router, settings = build(tmp_path, '[fallbacks]\nsafe = ["a", "b"]\n', {"a": a, "b": b})
    served = serve(router=router, settings=settings)
    with pytest.raises(openai.APIStatusError) as info:
        oa(served).chat.completions.create(model="safe", messages=MSG)  # type: ignore[arg-type]
    assert info.value.status_code == 502
    assert "every entry of fallback chain 'safe' failed" in info.value.message
    assert info.value.response.headers["x-llm-runners-fallback-failed"] == "a=authentication_error, b=upstream_error"
    with pytest.raises(anthropic.APIStatusError) as ainfo:
        an(served).messages.create(model="safe", max_tokens=10, messages=MSG)  # type: ignore[arg-type]
    assert ainfo.value.status_code == 502 and ainfo.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_fallback_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names no provider 'nope'"):
        build(tmp_path, '[fallbacks]\nfast = ["nope:x"]\n', {"a": ScriptedProvider(name="a")})
    with pytest.raises(ValueError, match="has the name of a provider"):
        build(tmp_path, '[fallbacks]\na = ["a"]\n', {"a": ScriptedProvider(name="a")})
    with pytest.raises(ValueError, match="chains do not nest"):
        build(tmp_path, '[fallbacks]\nx = ["a"]\ny = ["x"]\n', {"a": ScriptedProvider(name="a")})
    with pytest.raises(ConfigError, match="non-empty list"):
        build(tmp_path, "[fallbacks]\nfast = []\n")
    with pytest.raises(ConfigError, match=r"unknown key 'fallbacks\.fast\.retry'"):
        build(tmp_path, '[fallbacks.fast]\nmodels = ["a"]\nretry = 2\n')
    with pytest.raises(ConfigError, match=r"'cache\.ttl' must be a number"):
        build(tmp_path, '[cache]\nttl = "long"\n')
    with pytest.raises(ConfigError, match=r"guardrails\.pii"):
        build(tmp_path, '[guardrails]\npii = "mask"\n')
    with pytest.raises(ValueError, match="not a valid regular expression"):
        build(tmp_path, '[guardrails]\nblocked = ["("]\n', {"a": ScriptedProvider(name="a")})


# ------------------------------------------------------------------------------------------------ cache


def test_cache_hit_proven_by_the_fake_api_request_count(
    tmp_path: Path, serve: Callable[..., Served], fake_api: FakeModelAPI
) -> None:
    fake_api.default_reply = FakeReply(text="cached words here", chunks=["cached ", "words ", "here"])
    router, settings = build(
        tmp_path,
        f"""
        [providers.openai_compat.options]
        base_url = "{fake_api.openai_base_url}"
        api_key = "sk-test"
        model = "fake-model"
        max_retries = 0

        [cache]
        ttl = 60
        """,
    )
    served = serve(router=router, settings=settings)
    client = oa(served)
    first = client.chat.completions.with_raw_response.create(model="openai_compat", messages=MSG)  # type: ignore[arg-type]
    second = client.chat.completions.with_raw_response.create(model="openai_compat", messages=MSG)  # type: ignore[arg-type]
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content
    assert (first.headers["x-llm-runners-cache"], second.headers["x-llm-runners-cache"]) == ("miss", "hit")
    assert len(fake_api.main_requests()) == 1

    # a streamed answer is stored and replayed as a stream; another question misses
    chunks = client.chat.completions.create(model="openai_compat", messages=MSG, stream=True)  # type: ignore[arg-type]
    replayed = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(replayed) == "cached words here"
    assert len(fake_api.main_requests()) == 1
    other = [{"role": "user", "content": "something else"}]
    client.chat.completions.create(model="openai_compat", messages=other, stream=True)  # type: ignore[arg-type]
    streamed = list(client.chat.completions.create(model="openai_compat", messages=other, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "cached words here"
    assert len(fake_api.main_requests()) == 2
    # sampled requests bypass it
    for _ in range(2):
        client.chat.completions.create(model="openai_compat", messages=MSG, temperature=0.9)  # type: ignore[arg-type]
    assert len(fake_api.main_requests()) == 4
    # errors are never cached
    fake_api.script(FakeReply(error="500"))
    err = [{"role": "user", "content": "fails once"}]
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="openai_compat", messages=err)  # type: ignore[arg-type]
    assert client.chat.completions.create(model="openai_compat", messages=err).choices[0].message.content  # type: ignore[arg-type]

    metrics = httpx2.get(served.url + "/metrics").text
    assert 'llm_runners_cache_requests_total{provider="openai_compat",result="hit"} 3.0' in metrics
    assert 'llm_runners_cache_requests_total{provider="openai_compat",result="bypass"} 2.0' in metrics
    assert 'llm_runners_cache_requests_total{provider="openai_compat",result="miss"} 4.0' in metrics


# ------------------------------------------------------------------------------------------------ guardrails


def test_guardrail_redacts_a_streamed_answer_through_the_openai_sdk(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    chunks = ["Contact ", "jane.d", "oe@exa", "mple.com", " or 555-", "123-45", "67 today."]
    bot = ScriptedProvider([Reply(chunks=chunks, chunk_delay=0.01)], name="bot")
    router, settings = build(tmp_path, '[guardrails]\npii = "redact"\n', {"bot": bot})
    served = serve(router=router, settings=settings)
    stream = oa(served).chat.completions.create(model="bot", messages=MSG, stream=True)  # type: ignore[arg-type]
    deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == "Contact [REDACTED:email] or [REDACTED:phone] today."
    assert not any("@" in d or "555" in d for d in deltas)
    assert len(deltas) >= 3  # it streamed, not buffered into one piece


def test_guardrail_errors_in_each_envelope(tmp_path: Path, serve: Callable[..., Served]) -> None:
    bot = ScriptedProvider([Reply(chunks=["fine so far, ", "then BEGIN PRIVATE", " KEY leaks"])], name="bot")
    router, settings = build(tmp_path, '[guardrails]\npii = "reject"\nblocked = ["BEGIN PRIVATE KEY"]\n', {"bot": bot})
    served = serve(router=router, settings=settings)
    pii = [{"role": "user", "content": "my ssn is 123-45-6789"}]
    with pytest.raises(openai.UnprocessableEntityError) as info:
        oa(served).chat.completions.create(model="bot", messages=pii)  # type: ignore[arg-type]
    assert info.value.code == "pii"
    with pytest.raises(anthropic.UnprocessableEntityError) as ainfo:
        an(served).messages.create(model="bot", max_tokens=10, messages=pii)  # type: ignore[arg-type]
    assert ainfo.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert not bot.requests
    # mid-stream: what was sent stays sent, then the stream ends with the guardrail error event
    stream = oa(served).chat.completions.create(model="bot", messages=MSG, stream=True)  # type: ignore[arg-type]
    got: list[str] = []
    with pytest.raises(openai.APIError, match="blocked pattern"):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    sent = "".join(got)
    assert sent.startswith("fine so far, ") and "PRIVATE KEY" not in sent


# ------------------------------------------------------------------------------------------------ quality


def test_quality_gate_through_the_server(tmp_path: Path, serve: Callable[..., Served]) -> None:
    bot = ScriptedProvider(["", "I cannot help with that.", "4"], name="bot")
    router, settings = build(tmp_path, "[quality]\nretries = 2\n", {"bot": bot})
    served = serve(router=router, settings=settings)
    out = oa(served).chat.completions.with_raw_response.create(model="bot", messages=MSG)  # type: ignore[arg-type]
    assert out.parse().choices[0].message.content == "4"
    assert len(bot.requests) == 3
    assert "asked again" in out.headers["x-llm-runners-warnings"]
