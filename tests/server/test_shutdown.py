"""Graceful shutdown of a real ``llm-runners serve`` (a subprocess) with the real Claude Code runner pointed at a
stand-in (tests/server/standin_serve.py), so requests are in flight with a CLI process each when SIGTERM comes.

- requests that finish within ``shutdown_grace`` finish normally;
- the rest are ended when the grace is over: a stream that started gets its front door's error event
  (``server_shutting_down``) and then the end of its body (no cut chunked stream), a JSON call its 503 envelope;
- new connections are refused once the signal came; the server exits 0 with no stand-in process and no temp dir.

The same with the real ``claude``: tests/e2e/test_orphans.py.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from standin_serve import StandInServer, stand_in_server

from llm_runners import process
from llm_runners.testing.procs import running

GRACE = 2.0


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInServer]:
    with stand_in_server(tmp_path, monkeypatch, f"shutdown_grace = {GRACE}", "max_concurrency = 8") as s:
        yield s


def _collect(client: httpx2.Client, path: str, body: dict[str, Any], out: dict[str, Any]) -> None:
    """POST and read the whole response; records status, body and whether it ended cleanly."""
    try:
        with client.stream("POST", path, json=body) as response:
            out["status"] = response.status_code
            chunks = []
            for chunk in response.iter_raw():
                chunks.append(chunk)
                if b"partial" in chunk or b"one" in chunk:
                    out["first"] = time.monotonic()
            out["body"] = b"".join(chunks).decode()
            out["complete"] = True
    except Exception as exc:  # a stream cut without its end shows here
        out["error"] = repr(exc)


def _events(body: str) -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = []
    for block in body.split("\n\n"):
        name = None
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out


def test_sigterm_finishes_what_it_can_then_ends_the_rest_cleanly(server: StandInServer) -> None:
    url = server.wait_ready(60)
    client = httpx2.Client(base_url=url, timeout=60)
    messages = [{"role": "user", "content": "hang please"}]
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "chat_stream": ("/v1/chat/completions", {"model": "claude_code", "messages": messages, "stream": True}),
        "anthropic_stream": (
            "/v1/messages",
            {"model": "claude_code", "max_tokens": 50, "messages": messages, "stream": True},
        ),
        "responses_stream": ("/v1/responses", {"model": "claude_code", "input": "hang please", "stream": True}),
        "chat_json": ("/v1/chat/completions", {"model": "claude_code", "messages": messages}),
        "slow_stream": (
            "/v1/chat/completions",
            {"model": "claude_code", "messages": [{"role": "user", "content": "slow"}], "stream": True},
        ),
    }
    results: dict[str, dict[str, Any]] = {name: {} for name in calls}
    threads = [
        threading.Thread(target=_collect, args=(client, path, body, results[name]), daemon=True)
        for name, (path, body) in calls.items()
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(running(server.script)) < len(calls) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(running(server.script)) == len(calls), "".join(server.lines)
    while not all("first" in results[n] for n in calls if n != "chat_json") and time.monotonic() < deadline:
        time.sleep(0.05)
    roots = list(server.tmp.glob(f"{process.INSTANCE_PREFIX}{server.proc.pid}-*"))
    assert len(roots) == 1
    port = int(url.rsplit(":", 1)[1])
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # stopped accepting
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    for t in threads:
        t.join(60)
    assert server.proc.wait(30) == 0, "".join(server.lines)
    took = time.monotonic() - signalled
    assert GRACE <= took < GRACE + 15, took

    slow = results["slow_stream"]  # finished within the grace, normally
    assert slow.get("complete"), slow
    slow_events = _events(slow["body"])
    assert slow_events[-1] == (None, "[DONE]")
    text = "".join(
        (c.get("delta") or {}).get("content") or "" for _, e in slow_events if isinstance(e, dict) for c in e["choices"]
    )
    assert text == "one two three four"

    for name in ("chat_stream", "anthropic_stream", "responses_stream", "chat_json"):
        r = results[name]
        assert r.get("complete") and "error" not in r, (name, r)  # the body ended cleanly, nothing cut
    chat = _events(results["chat_stream"]["body"])
    assert results["chat_stream"]["status"] == 200
    assert chat[-1][1]["error"]["code"] == "server_shutting_down", chat[-2:]
    assert "partial" in results["chat_stream"]["body"]
    anthropic = _events(results["anthropic_stream"]["body"])
    assert anthropic[-1][0] == "error" and anthropic[-1][1]["error"]["type"] == "overloaded_error", anthropic[-2:]
    responses = _events(results["responses_stream"]["body"])
    assert [n for n, _ in responses[-2:]] == ["error", "response.failed"], responses[-2:]
    assert responses[-1][1]["response"]["status"] == "failed"
    assert results["chat_json"]["status"] == 503
    assert json.loads(results["chat_json"]["body"])["error"]["code"] == "server_shutting_down"

    assert running(server.script) == []
    assert not roots[0].exists()
    assert "Traceback" not in "".join(server.lines)


def test_the_openai_sdk_sees_the_shutdown_as_an_api_error(server: StandInServer) -> None:
    url = server.wait_ready(60)
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model="claude_code", messages=[{"role": "user", "content": "hang"}], stream=True
    )
    chunks = iter(stream)
    got = ""
    while "partial" not in got:
        chunk = next(chunks)
        got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    server.proc.send_signal(signal.SIGTERM)
    with pytest.raises(openai.APIError, match="shutting down"):
        for _ in chunks:
            pass
    assert server.proc.wait(30) == 0
    assert running(server.script) == []
