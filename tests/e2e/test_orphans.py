"""The orphan guarantee and graceful shutdown of a real ``llm-runners serve`` (a subprocess) with the real pinned
``claude`` streaming from the fake model API, which streams slowly so the request is in flight when the signal
comes. Loopback only.

- SIGKILL of the server: 0 claude processes 2 s later, and its private TMPDIR empty: the temp root with the
  runner's working directory and the run's files in it, and nothing beside it (the watchdog);
- SIGTERM: the in-flight stream completes, exit 0, no claude process, no temp root;
- a second SIGTERM during the grace period exits at once, still killing claude;
- a stream still running when a short grace is over ends with the front door's error event, then exit 0.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from test_cli_command import claude_options, write_config

from llm_runners import process
from llm_runners.testing.fake_api import FakeModelAPI, Reply

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_helpers import ServeProcess, serve_env

CHUNKS = [f"word{i} " for i in range(12)]


def _claude_pids(tmp_home: Any) -> list[int]:
    """Live processes (any parent) whose command line names the pinned claude and whose HOME is this test's."""
    found = []
    for name in Path("/proc").iterdir():
        if not name.name.isdigit():
            continue
        try:
            cmd = (name / "cmdline").read_bytes()
            env = (name / "environ").read_bytes()
            state = (name / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"claude" in cmd and f"HOME={tmp_home.home}".encode() in env.split(b"\0") and state != b"Z":
            found.append(int(name.name))
    return found


class _Server(ServeProcess):
    """``llm-runners serve`` with a TMPDIR of its own (``tmp``): every temp dir it makes, and nothing else, is there."""

    def __init__(self, config: Path, tmp: Path) -> None:
        tmp.mkdir()
        self.tmp = tmp
        super().__init__(config, env={**serve_env(), "TMPDIR": str(tmp)})


def _serve(
    tmp_path: Path,
    tmp_home: Any,
    fake_api: FakeModelAPI,
    cli_bin: Any,
    grace: float,
    extra: dict[str, Any] | None = None,
) -> Iterator[_Server]:
    config = write_config(
        tmp_path / "llm-runners.toml",
        {
            "claude_code": {**claude_options(tmp_home, cli_bin, fake_api.anthropic_base_url), "warm": 0},
            **(extra or {}),
        },
        default_provider="claude_code",
        shutdown_grace=grace,
    )
    s = _Server(config, tmp_path / "serve-tmp")
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(5)


@pytest.fixture
def server(tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> Iterator[_Server]:
    yield from _serve(tmp_path, tmp_home, fake_api, cli_bin, 30.0)


@pytest.fixture
def homes_server(tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> Iterator[_Server]:
    """With an opencode provider too, never asked: its health check lays out its private CLI home (a runner-owned
    temp dir)."""
    opencode = {"binary": str(cli_bin("opencode")), "env": tmp_home.env(), "timeout": 60.0}
    yield from _serve(tmp_path, tmp_home, fake_api, cli_bin, 30.0, {"opencode": opencode})


@pytest.fixture
def short_grace_server(tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any) -> Iterator[_Server]:
    yield from _serve(tmp_path, tmp_home, fake_api, cli_bin, 2.0)


def _stream_in_background(url: str) -> tuple[threading.Thread, list[str], list[BaseException], threading.Event]:
    got: list[str] = []
    errors: list[BaseException] = []
    first = threading.Event()

    def run() -> None:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        try:
            stream = client.chat.completions.create(
                model="claude_code:claude-sonnet-4-5", messages=[{"role": "user", "content": "count"}], stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
                    first.set()
        except BaseException as exc:
            errors.append(exc)
        first.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got, errors, first


def _instance_roots(tmp: Path, pid: int) -> list[Path]:
    return list(tmp.glob(f"{process.INSTANCE_PREFIX}{pid}-*"))


def test_sigkill_of_the_server_leaves_no_claude(homes_server: _Server, fake_api: FakeModelAPI, tmp_home: Any) -> None:
    server = homes_server
    url = server.wait_ready()
    assert httpx2.get(url + "/health?detail=1", timeout=60).status_code == 200
    fake_api.script(Reply(chunks=CHUNKS, chunk_delay=1.0))
    _, _, errors, first = _stream_in_background(url)
    assert first.wait(60) and not errors, (errors, "".join(server.lines))
    assert _claude_pids(tmp_home), "claude is not running while its stream is in flight"
    tmp = server.tmp
    roots = _instance_roots(tmp, server.proc.pid)
    assert [p.name for p in tmp.iterdir()] == [r.name for r in roots] and len(roots) == 1, list(tmp.iterdir())
    made = sorted("-".join(p.name.split("-")[:-1]) for p in roots[0].iterdir() if p.is_dir())
    # the run's files, and opencode's private CLI home and working directory
    assert made == ["llm-runners-claude_code-run", "llm-runners-opencode-home", "llm-runners-opencode-work"], made
    server.proc.kill()
    server.proc.wait(10)
    t0 = time.monotonic()
    while _claude_pids(tmp_home) and time.monotonic() - t0 < 2.0:
        time.sleep(0.02)
    gone_after = time.monotonic() - t0
    assert _claude_pids(tmp_home) == [], "claude outlived the server by 2 s"
    while list(tmp.iterdir()) and time.monotonic() - t0 < 2.0:
        time.sleep(0.02)
    assert list(tmp.iterdir()) == []
    print(f"no claude {gone_after:.2f} s after SIGKILL, temp root gone {time.monotonic() - t0:.2f} s after")


def test_sigterm_lets_the_stream_finish_then_exits_0_clean(
    server: _Server, fake_api: FakeModelAPI, tmp_home: Any
) -> None:
    url = server.wait_ready()
    fake_api.script(Reply(chunks=CHUNKS[:6], chunk_delay=0.7))
    thread, got, errors, first = _stream_in_background(url)
    assert first.wait(60) and not errors, (errors, "".join(server.lines))
    roots = _instance_roots(server.tmp, server.proc.pid)
    server.proc.terminate()
    thread.join(60)
    assert not errors, errors
    assert "".join(got).split() == [c.strip() for c in CHUNKS[:6]]
    assert server.proc.wait(30) == 0, "".join(server.lines)
    assert _claude_pids(tmp_home) == []
    assert roots and list(server.tmp.iterdir()) == []  # the temp root and everything else


def test_a_second_signal_exits_at_once_killing_claude(server: _Server, fake_api: FakeModelAPI, tmp_home: Any) -> None:
    url = server.wait_ready()
    fake_api.script(Reply(chunks=CHUNKS, chunk_delay=3.0))
    _, _, errors, first = _stream_in_background(url)
    assert first.wait(60) and not errors, (errors, "".join(server.lines))
    roots = _instance_roots(server.tmp, server.proc.pid)
    server.proc.terminate()
    time.sleep(0.5)
    assert server.proc.poll() is None, "the first SIGTERM did not wait for the stream"
    t0 = time.monotonic()
    server.proc.terminate()
    assert server.proc.wait(10) == 1
    assert time.monotonic() - t0 < 5
    assert _claude_pids(tmp_home) == []
    assert roots and list(server.tmp.iterdir()) == []  # the temp root and everything else


def test_a_stream_still_running_when_the_grace_is_over_ends_with_an_error_event(
    short_grace_server: _Server, fake_api: FakeModelAPI, tmp_home: Any
) -> None:
    """shutdown_grace = 2 s, a claude stream that would take 12 s more: after the grace the SDK gets the front
    door's error event (``server_shutting_down``, an ``APIError``) and a complete body, not a cut connection; claude
    is killed, the temp root removed, exit 0."""
    server = short_grace_server
    url = server.wait_ready()
    fake_api.script(Reply(chunks=CHUNKS, chunk_delay=1.0))
    _, got, errors, first = _stream_in_background(url)
    assert first.wait(60) and not errors, (errors, "".join(server.lines))
    roots = _instance_roots(server.tmp, server.proc.pid)
    t0 = time.monotonic()
    server.proc.terminate()
    assert server.proc.wait(30) == 0, "".join(server.lines)
    took = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(errors) == 1 and isinstance(errors[0], openai.APIError), errors
    assert "shutting down" in str(errors[0]), errors[0]
    assert 0 < len(got) < len(CHUNKS)
    assert 2.0 <= took < 15, took
    assert _claude_pids(tmp_home) == []
    assert roots and list(server.tmp.iterdir()) == []  # the temp root and everything else
