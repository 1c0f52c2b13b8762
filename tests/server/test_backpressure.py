"""Backpressure of a real ``llm-runners serve`` (a subprocess) whose Claude Code runner drives a stand-in
(tests/server/standin_serve.py).

- 200 concurrent streams against a provider limited to 4 (queue 16): never more than 4 CLI processes, 16 callers
  wait their turn and get their whole answer, every other caller is refused at once with 429 + ``retry-after`` in
  the front door's envelope; the server's memory stays bounded.
- A slow reader (one byte a second) of a CLI that floods output: the server does not hold the output. What holds
  is the chosen design (see ``process.py`` and ``server/sse.py``): the server writes to the client only as fast as
  the socket takes it (uvicorn's flow control makes ``send`` wait), so the call stops pulling events, the process's
  line queue reaches its high mark (4 MB) and reading of the pipe pauses, the pipe fills and the CLI blocks in
  ``write``. Proven by the CLI's own write count (``/proc/PID/io`` ``wchar``) standing still and the server's RSS.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from standin_serve import StandInServer, stand_in_server

from llm_runners.testing.procs import running

LIMIT, QUEUE, CALLERS = 4, 16, 200


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _wchar(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInServer]:
    with stand_in_server(
        tmp_path, monkeypatch, "request_timeout = 120.0", f"max_concurrency = {LIMIT}\nmax_queue = {QUEUE}"
    ) as s:
        yield s


def _request(port: int, prompt: str) -> bytes:
    body = json.dumps(
        {"model": "claude_code", "messages": [{"role": "user", "content": prompt}], "stream": True}
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _call(port: int) -> tuple[int, dict[str, str], bytes, float]:
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request(port, "slow"))
        await writer.drain()
        raw = await reader.read()  # connection: close, so the body ends with the connection
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return int(lines[0].split()[1]), headers, body, time.monotonic() - t0


def _dechunk(data: bytes) -> bytes:
    """A chunked body's payload; raises if its terminating zero-size chunk is missing (a cut stream)."""
    out = []
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2 :]


def test_200_streams_against_a_limit_of_4_queue_16_and_refuse_the_rest(server: StandInServer) -> None:
    url = server.wait_ready(60)
    port = int(url.rsplit(":", 1)[1])
    before = _rss_kb(server.proc.pid)
    most = 0
    done = threading.Event()

    def watch() -> None:  # in a thread: a /proc scan takes a while on a loaded machine
        nonlocal most
        while not done.is_set():
            most = max(most, len(running(server.script)))
            time.sleep(0.02)

    async def main() -> list[tuple[int, dict[str, str], bytes, float]]:
        return await asyncio.gather(*(_call(port) for _ in range(CALLERS)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results = asyncio.run(main())
    finally:
        done.set()
        watcher.join(10)
    after = _rss_kb(server.proc.pid)
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(served) + len(refused) == CALLERS, sorted({r[0] for r in results})
    assert most == LIMIT, f"{most} stand-in processes at once against a limit of {LIMIT}"
    # each run takes ~1.6 s, so the 200 arrive (well) within the first round: 4 running + 16 queued are served
    assert LIMIT + QUEUE <= len(served) <= LIMIT + QUEUE + 8, sorted(round(took, 1) for *_, took in served)
    for _status, _headers, body, _took in served:
        text = "".join(
            (c.get("delta") or {}).get("content") or ""
            for chunk in body.split(b"\n\n")
            if chunk.startswith(b"data: {")
            for c in json.loads(chunk[6:])["choices"]
        )
        assert text == "one two three four" and body.rstrip().endswith(b"data: [DONE]")
    assert max(took for *_, took in served) >= 4 * 1.2  # the queued waited their turn (>= 4 rounds of ~1.6 s)
    for _status, headers, body, _took in refused:
        assert int(headers["retry-after"]) >= 1
        error = json.loads(body)["error"]
        assert error["code"] == "queue_full" and error["type"]
    assert min(took for *_, took in refused) < 10
    assert after - before < 64 * 1024, f"server RSS grew {(after - before) / 1024:.0f} MB for {CALLERS} callers"
    assert running(server.script) == []


def test_a_slow_reader_blocks_the_cli_instead_of_filling_the_servers_memory(server: StandInServer) -> None:
    url = server.wait_ready(60)
    port = int(url.rsplit(":", 1)[1])
    before = _rss_kb(server.proc.pid)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a small window, as a slow client has
    try:
        sock.sendall(_request(port, "flood"))
        deadline = time.monotonic() + 30
        while not (pids := running(server.script)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 1
        (pid,) = pids
        samples = []
        for _ in range(10):  # the slow reader: one byte a second, while the CLI tries to write as fast as it can
            assert sock.recv(1)
            samples.append((_wchar(pid), _rss_kb(server.proc.pid)))
            time.sleep(1)
        written = [w for w, _ in samples]
        assert written[-1] == written[-4], f"the CLI is still writing: {written}"  # blocked on the full pipe
        assert written[-1] < 64 * 1024 * 1024, f"the CLI wrote {written[-1]} bytes for a reader of 10 bytes"
        grown = max(r for _, r in samples) - before
        assert grown < 32 * 1024, f"the server's RSS grew {grown / 1024:.0f} MB behind a slow reader"
    finally:
        sock.close()
    deadline = time.monotonic() + 10
    while running(server.script) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(server.script) == []  # the reader left: the CLI is killed
    print(f"CLI blocked after writing {written[-1] / 1e6:.1f} MB; server RSS +{grown / 1024:.1f} MB")
