"""Per-key budgets and rate limits (``[keys."…"]``) through a real server: 429 with Retry-After in every front
door's envelope, ``GET /v1/usage``, and no over-spend beyond one request's worth under 200 concurrent requests, on
memory and on a real redis-server shared by two servers."""

from __future__ import annotations

from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest
from server_helpers import Served

from llm_runners.config import ConfigError, KeyLimits, Settings, load_settings
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import Usage

KEY, OTHER = "sk-team-a-0123456789", "sk-team-b-0123456789"
PER_REQUEST = Usage(input_tokens=12, output_tokens=8, cost_usd=0.01)  # 20 tokens, one cent


def _settings(state: str = "memory", **limits: Any) -> Settings:
    return Settings(api_keys=[KEY, OTHER], keys={KEY: KeyLimits(**limits)}, state=state)


def _provider(delay: float = 0.0) -> ScriptedProvider:
    return ScriptedProvider([Reply(text="ok", usage=PER_REQUEST, delay=delay)])


def _chat(url: str, key: str = KEY) -> httpx2.Response:
    return httpx2.post(
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


def test_requests_per_minute_is_a_429_with_retry_after_in_each_front_doors_envelope(serve: Any) -> None:
    served: Served = serve(_provider(), settings=_settings(requests_per_minute=3))
    for _ in range(3):
        assert _chat(served.url).status_code == 200
    refused = _chat(served.url)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "requests_per_minute"
    # another key is not limited by this one
    assert _chat(served.url, OTHER).status_code == 200

    oa = openai.OpenAI(base_url=served.v1, api_key=KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as responses_error:
        oa.responses.create(model="scripted", input="hi")
    assert responses_error.value.response.headers["retry-after"]
    an = anthropic.Anthropic(base_url=served.url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as messages_error:
        an.messages.create(model="scripted", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    body = messages_error.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert messages_error.value.response.headers["retry-after"]
    # count_tokens is not a model call: never limited
    counted = httpx2.post(
        served.url + "/v1/messages/count_tokens",
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert counted.status_code == 200


def test_tokens_per_day_and_usd_per_month(serve: Any) -> None:
    served: Served = serve(_provider(), settings=_settings(tokens_per_day=100))
    for _ in range(5):  # 5 x 20 tokens = the budget
        assert _chat(served.url).status_code == 200
    refused = _chat(served.url)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "tokens_per_day"
    assert int(refused.headers["retry-after"]) <= 86_400
    usage = httpx2.get(served.url + "/v1/usage", headers={"authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert usage["key"]["tokens_today"] == 100
    assert usage["key"]["limits"]["tokens_per_day"] == 100
    assert KEY not in str(usage)  # the key is masked

    served = serve(_provider(), settings=_settings(usd_per_month=0.03))
    for _ in range(3):
        assert _chat(served.url).status_code == 200
    refused = _chat(served.url)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "usd_per_month"
    usage = httpx2.get(served.url + "/v1/usage", headers={"x-api-key": KEY}, timeout=30).json()
    assert usage["key"]["usd_this_month"] == pytest.approx(0.03)


def test_max_concurrent(serve: Any) -> None:
    served: Served = serve(_provider(delay=3.0), settings=_settings(max_concurrent=2))
    statuses: list[int] = []

    async def one(client: httpx2.AsyncClient) -> None:
        r = await client.post(
            served.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]},
        )
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "max_concurrent" and r.headers["retry-after"] == "1"

    async def main() -> None:
        async with httpx2.AsyncClient(timeout=60) as client, anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one, client)

    anyio.run(main)
    assert sorted(statuses) == [200, 200, 429, 429, 429, 429]
    # the slots came back when the requests ended
    assert _chat(served.url).status_code == 200


def test_usage_shows_only_the_callers_own_key(serve: Any) -> None:
    served: Served = serve(_provider(), settings=_settings(requests_per_minute=10))
    assert _chat(served.url).status_code == 200
    mine = httpx2.get(served.url + "/v1/usage", headers={"authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert mine["object"] == "usage" and mine["key"]["requests_last_minute"] == 1
    theirs = httpx2.get(served.url + "/v1/usage", headers={"authorization": f"Bearer {OTHER}"}, timeout=30).json()
    assert theirs["key"]["limits"] == {} and "requests_last_minute" not in theirs["key"]
    assert httpx2.get(served.url + "/v1/usage", timeout=30).status_code == 401


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_200_concurrent_requests_overspend_at_most_one_requests_worth(
    serve: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    limit = 1000  # 50 requests of 20 tokens
    state = request.getfixturevalue("redis_server").url if backend == "redis" else "memory"
    settings = _settings(state, tokens_per_day=limit)
    servers: list[Served] = [serve(_provider(delay=0.05), settings=settings)]
    if backend == "redis":  # two servers on one Redis: the budget holds across both
        servers.append(serve(_provider(delay=0.05), settings=settings))
    assert _chat(servers[0].url).status_code == 200  # the key's first request of the day runs alone
    statuses: list[int] = []

    async def one(i: int, client: httpx2.AsyncClient) -> None:
        r = await client.post(
            servers[i % len(servers)].url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]},
        )
        statuses.append(r.status_code)
        if r.status_code != 200:
            assert r.status_code == 429 and r.json()["error"]["code"] in ("tokens_per_day", "budget_reserved")

    async def main() -> None:
        limits = httpx2.Limits(max_connections=250)
        async with httpx2.AsyncClient(timeout=120, limits=limits) as client, anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i, client)

    anyio.run(main)
    answered = 1 + statuses.count(200)
    spent = sum(p.scripted().completed for p in servers) * 20
    assert answered * 20 == spent
    assert spent <= limit + 20, f"over-spent: {spent} tokens for a budget of {limit}"
    assert spent >= limit - 20 * len(servers), "the budget was not used up: admission refused too much"
    usage = httpx2.get(servers[-1].url + "/v1/usage", headers={"authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert usage["key"]["tokens_today"] == spent


def test_a_budget_for_a_key_the_server_does_not_accept_is_refused(tmp_path: Any) -> None:
    config = tmp_path / "c.toml"
    config.write_text('api_keys = ["sk-a"]\n[keys."sk-b"]\nrequests_per_minute = 5\n')
    with pytest.raises(ConfigError, match="api_keys"):
        load_settings(str(config), env={})
    config.write_text('api_keys = ["sk-a"]\n[keys."sk-a"]\nrequests_per_minute = 5\nusd_per_month = 2.5\n')
    limits = load_settings(str(config), env={}).keys["sk-a"]
    assert limits == KeyLimits(requests_per_minute=5, usd_per_month=2.5)
    config.write_text('api_keys = ["sk-a"]\n[keys."sk-a"]\nrequests_per_hour = 5\n')
    with pytest.raises(ConfigError, match="requests_per_hour"):
        load_settings(str(config), env={})
