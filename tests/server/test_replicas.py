"""Two ``llm-runners serve`` PROCESSES on one real redis-server: a Responses conversation started on one continues
on the other with ``previous_response_id`` (openai SDK), a per-key rate limit of N holds across both, and with
redis-server killed mid-run both keep serving (a warning logged, never a 500)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from server_helpers import ServeProcess

from llm_runners.testing.fake_api import FakeModelAPI

KEY = "sk-replica-test-0123"


@pytest.fixture
def fake_api() -> Iterator[FakeModelAPI]:
    with FakeModelAPI() as api:
        yield api


def _config(tmp_path: Path, state: str, api: FakeModelAPI, name: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'state = "{state}"\napi_keys = ["{KEY}"]\ndefault_provider = "up"\n\n'
        f'[providers.up.options]\ntype = "openai_compat"\nbase_url = "{api.url}/v1"\napi_key = "k"\n'
        f'model = "fake-model"\n\n{extra}'
    )
    return path


@pytest.fixture
def replicas(tmp_path: Path, redis_server: Any, fake_api: FakeModelAPI) -> Iterator[Any]:
    started: list[ServeProcess] = []

    def start(extra: str = "") -> tuple[ServeProcess, ServeProcess]:
        for name in ("a", "b"):
            started.append(ServeProcess(_config(tmp_path, redis_server.url, fake_api, name, extra)))
        return started[-2], started[-1]

    yield start
    for server in started:
        server.stop()


def _client(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.wait_ready(90) + "/v1", api_key=KEY, max_retries=0)


def _texts(request_body: Any) -> str:
    return str(request_body)


def test_a_responses_conversation_continues_on_the_other_replica(replicas: Any, fake_api: FakeModelAPI) -> None:
    a, b = replicas()
    on_a, on_b = _client(a), _client(b)
    fake_api.script("Nice to meet you, Ada.")
    first = on_a.responses.create(model="up", input="My name is Ada Lovelace.")
    assert first.output_text == "Nice to meet you, Ada."
    fake_api.script("You are Ada Lovelace.")
    second = on_b.responses.create(model="up", previous_response_id=first.id, input="What is my name?")
    assert second.output_text == "You are Ada Lovelace."
    upstream = str(fake_api.last_main_request().body)  # what replica B sent: the history from A's turn
    assert "My name is Ada Lovelace." in upstream and "Nice to meet you, Ada." in upstream
    assert "What is my name?" in upstream
    # streamed on B, continued on A: the stored copy is written before response.completed reaches the caller
    fake_api.script("Streamed answer.")
    with on_b.responses.stream(model="up", previous_response_id=second.id, input="Say more.") as stream:
        third = stream.get_final_response()
    fake_api.script("Fourth.")
    on_a.responses.create(model="up", previous_response_id=third.id, input="And?")
    upstream = str(fake_api.last_main_request().body)
    for text in ("My name is Ada Lovelace.", "You are Ada Lovelace.", "Streamed answer.", "And?"):
        assert text in upstream
    # either replica retrieves a stored response
    assert on_a.responses.retrieve(second.id).output_text == "You are Ada Lovelace."
    with pytest.raises(openai.BadRequestError) as unknown:
        on_b.responses.create(model="up", previous_response_id="resp_" + "0" * 32, input="x")
    assert unknown.value.code == "previous_response_not_found"


def test_a_rate_limit_of_n_holds_across_both_replicas(replicas: Any) -> None:
    a, b = replicas(f'[keys."{KEY}"]\nrequests_per_minute = 4\n')
    urls = [a.wait_ready(90), b.wait_ready(90)]
    statuses = []
    for i in range(10):
        r = httpx2.post(
            urls[i % 2] + "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "up", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "requests_per_minute" and int(r.headers["retry-after"]) >= 1
    assert statuses.count(200) == 4 and statuses.count(429) == 6
    usage = httpx2.get(urls[1] + "/v1/usage", headers={"authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert usage["key"]["requests_last_minute"] == 4


def test_redis_killed_mid_run_both_replicas_keep_serving(replicas: Any, redis_server: Any) -> None:
    a, b = replicas(f'[keys."{KEY}"]\nrequests_per_minute = 1000\n')
    clients = [_client(a), _client(b)]
    first = clients[0].responses.create(model="up", input="before the outage")
    redis_server.kill()
    for client in clients * 3:
        out = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "during"}])
        assert out.choices[0].message.content
    # a conversation continues where its first turn was stored (this replica kept its own copy)
    follow = clients[0].responses.create(model="up", previous_response_id=first.id, input="still there?")
    assert follow.output_text
    for server in (a, b):
        logged = "".join(server.lines)
        assert "unreachable" in logged and "keeps serving from its own memory" in logged
        assert "Traceback" not in logged
    redis_server.start()
    for client in clients:  # and when Redis is back, they use it again
        out = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "after"}])
        assert out.choices[0].message.content
