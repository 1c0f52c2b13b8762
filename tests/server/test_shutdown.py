"""Graceful shutdown of a real ``llm-runners serve`` (a subprocess) with real dialect runners pointed at a stand-in
Claude Code, so requests are in flight with a CLI process each when SIGTERM comes.

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
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from test_serve_command import _Server

from llm_runners import process
from llm_runners.testing.procs import running

# A stand-in Claude Code: "slow" answers in 4 deltas 0.4 s apart; "hang" sends a partial delta, then nothing,
# ignoring SIGTERM (only the group's SIGKILL ends it).
CLAUDE = r"""#!{python} -IS
import json, signal, sys, time
line = json.loads(sys.stdin.buffer.readline())
content = line["message"]["content"]
text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
sid = sys.argv[sys.argv.index("--session-id") + 1] if "--session-id" in sys.argv else "s"
def event(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
def delta(t):
    event({{"type": "stream_event", "session_id": sid,
           "event": {{"type": "content_block_delta", "delta": {{"type": "text_delta", "text": t}}}}}})
event({{"type": "system", "subtype": "init", "session_id": sid, "model": "stand-in"}})
if "hang" in text:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    delta("partial")
    time.sleep(300)
for part in ("one ", "two ", "three ", "four"):
    delta(part)
    time.sleep(0.4)
event({{"type": "result", "subtype": "success", "is_error": False, "result": "one two three four",
       "session_id": sid, "usage": {{"input_tokens": 1, "output_tokens": 4}}}})
"""

GRACE = 2.0


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    script = tmp_path / "claude-stand-in"
    script.write_text(CLAUDE.format(python=sys.executable))
    script.chmod(0o755)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    config = tmp_path / "llm-runners.toml"
    config.write_text(
        f'default_provider = "claude_code"\nshutdown_grace = {GRACE}\n\n'
        "[providers.claude_code]\nmax_concurrency = 8\n\n"
        f'[providers.claude_code.options]\nbinary = "{script}"\nwarm = 0\nidle_timeout = 300.0\n'
        f'env = {{ ANTHROPIC_API_KEY = "k", HOME = "{home}" }}\n'
    )
    monkeypatch.setenv("TMPDIR", str(tmp))  # the server's temp root goes there (the _Server env copies ours)
    s = _Server(config)
    s.script, s.tmp = script, tmp  # type: ignore[attr-defined]
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(10)


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


def test_sigterm_finishes_what_it_can_then_ends_the_rest_cleanly(server: Any) -> None:
    url = server.wait_ready()
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


def test_the_openai_sdk_sees_the_shutdown_as_an_api_error(server: Any) -> None:
    url = server.wait_ready()
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
