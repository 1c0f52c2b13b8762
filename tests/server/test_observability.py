"""What an operator sees: the one log line per request (text and JSON), ``/metrics`` after real requests through
the official SDKs, ``/health`` and ``/ready`` with and without the key."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator

import anthropic
import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import Served, wait_until

from llm_runners import logs
from llm_runners.config import Settings
from llm_runners.errors import RateLimited
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import Health, Usage

Serve = Callable[..., Served]

KEY = "sk-test-observability-5f2e"
PROMPT = "the secret word is periwinkle"


class Lines:
    def __init__(self, stream: io.StringIO, handler: logging.Handler) -> None:
        self.stream = stream
        self.handler = handler

    def text(self) -> str:
        self.handler.flush()  # info lines are written in batches
        return self.stream.getvalue()

    def all(self) -> list[str]:
        return self.text().splitlines()

    def json(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.all()]


@pytest.fixture
def log_lines() -> Iterator[Callable[[str], Lines]]:
    """``log_lines("json" | "text")``: everything logged at info and above, formatted as the server would."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    streams: list[logging.Handler] = []

    def install(fmt: str) -> Lines:
        stream = io.StringIO()
        streams.append(logs.configure("info", fmt, stream=stream))
        return Lines(stream, streams[-1])

    yield install
    for handler in streams:
        handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _access(lines: Lines) -> list[dict[str, object]]:
    return [line for line in lines.json() if line["logger"] == "llm_runners.access"]


def test_one_json_line_per_request_with_every_field_and_no_prompt_or_key(
    serve: Serve, log_lines: Callable[[str], Lines]
) -> None:
    lines = log_lines("json")
    usage = Usage(input_tokens=1200, output_tokens=34, cached_tokens=1000, cost_usd=0.0123)
    ok = ScriptedProvider([Reply("an answer about periwinkle blue", usage=usage)], name="ok")
    busy = ScriptedProvider([Reply(error=RateLimited("busy: 4 running", provider="busy", retry_after=2))], name="busy")
    s = serve({"ok": ok, "busy": busy}, default="ok", settings=Settings(api_keys=[KEY]))
    client = openai.OpenAI(base_url=s.v1, api_key=KEY, max_retries=0)

    raw = client.chat.completions.with_raw_response.create(
        model="ok:m1", messages=[{"role": "user", "content": PROMPT}]
    )
    stream_ids = []
    with client.chat.completions.with_streaming_response.create(
        model="ok", messages=[{"role": "user", "content": PROMPT}], stream=True
    ) as streamed:
        stream_ids.append(streamed.headers["x-request-id"])
        for _ in streamed.iter_lines():
            pass
    with pytest.raises(openai.RateLimitError) as failed:
        client.chat.completions.create(model="busy", messages=[{"role": "user", "content": PROMPT}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=s.v1, api_key="sk-wrong-key", max_retries=0).models.list()

    access = _access(lines)
    assert len(access) == 4, access
    one, two, three, four = access
    assert one["request_id"] == raw.headers["x-request-id"]
    assert one["endpoint"] == "chat.completions" and one["route"] == "ok:m1" and one["stream"] is False
    assert one["status"] == 200 and one["tokens_in"] == 1200 and one["tokens_out"] == 34
    assert one["cost_usd"] == 0.0123 and one["level"] == "info" and one["message"] == "request"
    assert isinstance(one["ttfb_ms"], float) and isinstance(one["total_ms"], float)
    assert 0 <= one["ttfb_ms"] <= one["total_ms"] < 30_000
    assert "error_kind" not in one
    assert two["request_id"] == stream_ids[0] and two["stream"] is True and two["route"] == "ok:scripted-1"
    assert two["status"] == 200 and two["tokens_out"] == 34
    assert three["request_id"] == failed.value.response.headers["x-request-id"]
    assert three["status"] == 429 and three["route"] == "busy:scripted-1"
    assert three["error_kind"] == "rate_limit_exceeded" and three["error"] == "busy: 4 running"
    assert four["status"] == 401 and four["endpoint"] == "models" and four["error_kind"] == "authentication_error"
    text = "\n".join(lines.all())
    assert "periwinkle" not in text  # neither the prompt nor the answer
    assert KEY not in text and "sk-wrong-key" not in text


def test_text_format_carries_the_same_fields(serve: Serve, log_lines: Callable[[str], Lines]) -> None:
    lines = log_lines("text")
    s = serve(ScriptedProvider([Reply("hello there")]))
    client = anthropic.Anthropic(base_url=s.url, api_key="unused", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="scripted", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
    )
    access = [line for line in lines.all() if " llm_runners.access " in line]
    assert len(access) == 1
    line = access[0]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO llm_runners\.access request ", line)
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    assert fields["request_id"] == raw.headers["request-id"]
    assert fields["endpoint"] == "messages" and fields["route"] == "scripted:scripted-1"
    assert fields["stream"] == "false" and fields["status"] == "200"
    assert {"ttfb_ms", "total_ms", "tokens_in", "tokens_out"} <= set(fields)
    assert "periwinkle" not in lines.text()


def test_probes_are_not_logged_at_info(serve: Serve, log_lines: Callable[[str], Lines]) -> None:
    lines = log_lines("json")
    s = serve(ScriptedProvider())
    for path in ("/health", "/ready", "/metrics", "/"):
        assert httpx2.get(s.url + path).status_code == 200
    assert _access(lines) == []


def _scrape(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx2.get(url + "/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_requests(serve: Serve) -> None:
    usage = Usage(input_tokens=100, output_tokens=10, cached_tokens=40, reasoning_tokens=3, cost_usd=0.5)
    ok = ScriptedProvider([Reply("fine", usage=usage)], name="ok")
    busy = ScriptedProvider([Reply(error=RateLimited("full", code="queue_full", provider="busy"))], name="busy")
    s = serve({"ok": ok, "busy": busy}, default="ok")
    client = openai.OpenAI(base_url=s.v1, api_key="unused", max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="ok:m1", messages=[{"role": "user", "content": "hi"}])
    for _ in client.chat.completions.create(model="ok:m1", messages=[{"role": "user", "content": "hi"}], stream=True):
        pass
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="busy", messages=[{"role": "user", "content": "hi"}])

    m = _scrape(s.url)
    ok200 = {"provider": "ok", "model": "m1", "endpoint": "chat.completions", "status": "200"}
    assert _value(m, "llm_runners_requests_total", **ok200) == 4
    busy429 = {"provider": "busy", "model": "scripted-1", "endpoint": "chat.completions", "status": "429"}
    assert _value(m, "llm_runners_requests_total", **busy429) == 1
    ok_chat = {"provider": "ok", "endpoint": "chat.completions"}
    assert _value(m, "llm_runners_request_duration_seconds_count", **ok_chat) == 4
    assert _value(m, "llm_runners_time_to_first_token_seconds_count", **ok_chat) == 4
    assert _value(m, "llm_runners_request_duration_seconds_bucket", **ok_chat, le="+Inf") == 4
    assert 0 < _value(m, "llm_runners_request_duration_seconds_sum", **ok_chat) < 60
    for kind, per_request in (("input", 100), ("output", 10), ("cached", 40), ("reasoning", 3)):
        assert _value(m, "llm_runners_tokens_total", provider="ok", model="m1", kind=kind) == 4 * per_request
    assert _value(m, "llm_runners_cost_usd_total", provider="ok", model="m1") == pytest.approx(2.0)
    assert _value(m, "llm_runners_queue_rejections_total", provider="busy") == 1
    assert _value(m, "llm_runners_queue_rejections_total", provider="ok") == 0
    assert ("llm_runners_inflight_requests", (("provider", "ok"),)) in m
    assert _value(m, "llm_runners_inflight_requests", provider="ok") == 0
    # a scrape is no request of its own
    again = _scrape(s.url)
    assert _value(again, "llm_runners_requests_total", **ok200) == 4


def test_inflight_and_processes_are_read_live(serve: Serve) -> None:
    class Busy(ScriptedProvider):
        def processes(self) -> dict[str, int]:
            return {"running": 2, "live": 3, "spare": 1}

    slow = Busy([Reply("late", delay=3)], name="slow")
    s = serve(slow)
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    answered: list[int] = []
    thread = threading.Thread(
        target=lambda: answered.append(httpx2.post(s.v1 + "/chat/completions", json=body, timeout=60).status_code)
    )
    thread.start()
    try:
        assert wait_until(lambda: slow.open_streams == 1, 10)
        m = _scrape(s.url)
        assert _value(m, "llm_runners_inflight_requests", provider="slow") == 1
        assert _value(m, "llm_runners_processes", provider="slow", state="running") == 2
        assert _value(m, "llm_runners_processes", provider="slow", state="spare") == 1
        assert _value(m, "llm_runners_processes", provider="slow", state="live") == 3
    finally:
        thread.join(30)
    assert answered == [200]
    assert _value(_scrape(s.url), "llm_runners_inflight_requests", provider="slow") == 0


def test_metrics_need_the_key_unless_public(serve: Serve) -> None:
    s = serve(ScriptedProvider(), settings=Settings(api_keys=[KEY]))
    assert httpx2.get(s.url + "/metrics").status_code == 401
    assert _scrape(s.url, authorization=f"Bearer {KEY}")
    public = serve(ScriptedProvider(), settings=Settings(api_keys=[KEY], metrics_public=True))
    assert _scrape(public.url)
    off = serve(ScriptedProvider(), settings=Settings(metrics=False))
    assert httpx2.get(off.url + "/metrics").status_code == 404


def test_health_and_ready_with_and_without_the_key(serve: Serve) -> None:
    broken = ScriptedProvider(
        name="openai_compat",
        health=Health(provider="openai_compat", installed=True, ready=False, reason="no key", fix="set api_key"),
    )
    ok = ScriptedProvider(name="ok")
    s = serve({"local": broken, "ok": ok}, default="ok", settings=Settings(api_keys=[KEY]))
    auth = {"authorization": f"Bearer {KEY}"}

    live = httpx2.get(s.url + "/health")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert httpx2.get(s.url + "/health?detail=1").json() == {"status": "ok"}  # no key: no detail
    ready = httpx2.get(s.url + "/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}

    for url in (s.url + "/ready", s.url + "/health?detail=1"):
        detailed = httpx2.get(url, headers=auth)
        assert detailed.status_code == 200
        by_name = {p["provider"]: p for p in detailed.json()["providers"]}
        assert set(by_name) == {"local", "ok"}  # the configured names, not the provider type
        assert by_name["local"]["ready"] is False
        assert by_name["local"]["reason"] == "no key" and by_name["local"]["fix"] == "set api_key"
        assert by_name["ok"]["ready"] is True

    down = serve(
        ScriptedProvider(health=Health(provider="scripted", installed=False, ready=False)),
        settings=Settings(api_keys=[KEY]),
    )
    assert httpx2.get(down.url + "/ready").status_code == 503
    assert httpx2.get(down.url + "/health").status_code == 200
