"""Every CLI dialect against a CLI that misbehaves: the project's robustness standard, proven per runner.

"Bad input gets a clear error and loses nothing: malformed requests, garbage or huge CLI output, a CLI that hangs,
crashes or is missing, a client that disconnects mid-stream. No child process outlives its request."

Each real runner class (Claude Code, Codex, Gemini) runs a stand-in binary written to ``tmp_path``: one Python
script that speaks the dialect named in ``STANDIN_DIALECT`` (stream-json, ``exec --json`` or Gemini's stream-json)
and misbehaves as ``STANDIN_MODE`` says. Its answer names the session it ran in (``new <id>`` or ``resumed <id>``)
and the prompt's last line, so crossed sessions show. Processes are found by the stand-in's path, which every
process of it (including the grandchild it spawns) carries on its command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llm_runners.errors import BinaryNotFound, LLMError, ProviderTimeout, UpstreamError
from llm_runners.runners.base import CLIRunner
from llm_runners.runners.claude_code import ClaudeCodeParser, ClaudeCodeRunner
from llm_runners.runners.codex import CodexParser, CodexRunner
from llm_runners.runners.gemini import GeminiParser, GeminiRunner
from llm_runners.sessions import SessionStore
from llm_runners.testing.procs import running as live
from llm_runners.testing.standin import DIALECT_EVENTS
from llm_runners.types import ChatRequest, Done, Message, StreamEvent, TextDelta

RUNNERS: list[type[CLIRunner]] = [ClaudeCodeRunner, CodexRunner, GeminiRunner]
PARSERS: dict[str, Callable[[], Any]] = {"claude_code": ClaudeCodeParser, "codex": CodexParser, "gemini": GeminiParser}

# ------------------------------------------------------------------------------------------------ the stand-in
STAND_IN = r"""#!{python} -IS
import json, os, signal, subprocess, sys, time, uuid

DIALECT, MODE = os.environ["STANDIN_DIALECT"], os.environ.get("STANDIN_MODE", "ok")
args = sys.argv[1:]


def after(flag):
    return args[args.index(flag) + 1] if flag in args else None


# Claude Code reads one stream-json line per turn (its stdin stays open until the turn's result)
raw = (sys.stdin.buffer.readline() if DIALECT == "claude_code" else sys.stdin.buffer.read()).decode()
if DIALECT == "claude_code":
    blocks = json.loads(raw)["message"]["content"]
    raw = "".join(b["text"] for b in blocks if b["type"] == "text")
last = [line for line in raw.splitlines() if line.strip()][-1]
resume = after("--resume") or (after("resume") if DIALECT == "codex" else None)
sid = resume or after("--session-id") or str(uuid.uuid4())
out = sys.stdout.buffer


{dialect_events}

def garbage():
    emit(b"Loading the model, please wait...")  # a banner: the first unreadable line errors quote
    emit(os.urandom(300).replace(b"\n", b"."))
    emit(b"\xff\xfe\xc3\x28 invalid utf-8 \xed\xa0\x80")
    emit(b"[1, 2, 3]")
    emit(b"[" * 100000)  # nested too deep for the JSON decoder (RecursionError, not ValueError)
    for line in ("null", '"a string"', "42", "{{}}", '{{"type": 7}}', '{{"type": null, "event": []}}'):
        emit(line.encode())
    for obj in (  # every dialect's event types, with fields of the wrong type
        {{"type": "stream_event", "event": [1]}},
        {{"type": "stream_event",
          "event": {{"type": "content_block_delta", "delta": {{"type": "text_delta", "text": 5}}}}}},
        {{"type": "stream_event", "event": {{"type": "message_start", "message": {{"id": [], "model": {{}}}}}}}},
        {{"type": "assistant", "message": {{"id": [1], "content": "not a list"}}}},
        {{"type": "assistant", "message": "not a dict"}},
        {{"type": "system", "subtype": "api_retry", "attempt": [], "error": 3}},
        {{"type": "item.completed", "item": "not a dict"}},
        {{"type": "item.completed", "item": {{"type": "agent_message", "text": ["x"]}}}},
        {{"type": "thread.started", "thread_id": 12}},
        {{"type": "error", "message": {{"nested": True}}}},
        {{"type": "message", "role": "assistant", "content": ["x"]}},
        {{"type": "message", "role": ["assistant"], "content": "x"}},
        {{"type": "init", "session_id": 5, "model": [1]}},
    ):
        event(obj)


def grandchild():
    # same process group, holds stdout open, ignores SIGTERM: only a SIGKILL of the group ends it
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    subprocess.Popen([sys.executable, "-IS", "-c", code, sys.argv[0]])


answer = "%s %s: %s" % ("resumed" if resume else "new", sid, last)
if MODE == "ok":
    start(); delta(answer); end(answer)
elif MODE == "mixed":
    garbage(); start(); garbage(); delta(answer); garbage(); end(answer); garbage()
elif MODE == "garbage":
    garbage()
elif MODE == "silent":
    pass
elif MODE == "stderr":
    sys.stderr.write("fatal: something broke in the stand-in\n")
    sys.exit(3)
elif MODE == "sigkill":
    start(); delta("partial")
    os.kill(os.getpid(), signal.SIGKILL)
elif MODE == "hang_after":
    start(); delta("partial"); grandchild()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
elif MODE == "hang_before":
    grandchild()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
elif MODE == "huge":
    start()
    chunk = b"x" * (1 << 20)
    for _ in range(80):  # an 80 MB line with no newline
        out.write(chunk)
    out.flush()
elif MODE == "flood":
    start()
    for n in range(10 ** 9):
        delta("y" * 1000, n)
"""


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temp dir for every ``tempfile`` call of the test (runs, working dirs, CLI homes), so leftovers
    are this test's own and not those of tests running in parallel."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    script = tmp_path / "stand-in-cli"
    script.write_text(STAND_IN.format(python=sys.executable, dialect_events=DIALECT_EVENTS))
    script.chmod(0o755)
    return script


def one_shot(cls: type[CLIRunner]) -> dict[str, Any]:
    """The option that makes a runner spawn one process per turn (the stand-in imitates those CLIs): codex's
    default transport is its long-lived app-server, tested in test_codex_app and tests/e2e/test_codex_app.py."""
    return {"transport": "exec"} if cls is CodexRunner else {}


#: credentials for each dialect, so the runners' fail-fast auth check lets the stand-in run
STAND_IN_KEYS = {"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k", "GEMINI_API_KEY": "k"}


def make(cls: type[CLIRunner], script: Path, mode: str = "ok", **kw: Any) -> CLIRunner:
    home = script.parent / "home"
    home.mkdir(exist_ok=True)
    env = {"STANDIN_DIALECT": cls.name, "STANDIN_MODE": mode, "HOME": str(home), **STAND_IN_KEYS}
    options: dict[str, Any] = {"timeout": 30.0, "idle_timeout": 30.0, "sessions": SessionStore(), **one_shot(cls), **kw}
    return cls(binary=str(script), env=env, **options)


def ask(text: str, conversation: str | None = None) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], conversation=conversation)


async def streamed(runner: CLIRunner, request: ChatRequest) -> tuple[list[StreamEvent], LLMError | None]:
    """Every event of a stream and the error that ended it (or None)."""
    events: list[StreamEvent] = []
    stream = runner.stream(request)
    try:
        async for event in stream:
            events.append(event)
    except LLMError as exc:
        return events, exc
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return events, None


async def completed(runner: CLIRunner, request: ChatRequest) -> tuple[list[StreamEvent], LLMError | None]:
    """``complete()`` in the same shape: its text as one delta, or its error."""
    try:
        response = await runner.complete(request)
    except LLMError as exc:
        return [], exc
    return [TextDelta(response.content), Done(session_id=response.session_id)], None


MODES = {"complete": completed, "stream": streamed}


def text_of(events: Iterable[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def names(directory: Path) -> list[str]:
    return os.listdir(directory)


def gone_within(marker: Path, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while live(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    return live(marker)


# ------------------------------------------------------------------------------------------------ garbage
@pytest.mark.anyio
@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("cls", RUNNERS)
async def test_garbage_around_valid_events_is_ignored(cls: type[CLIRunner], how: str, stand_in: Path) -> None:
    runner = make(cls, stand_in, "mixed")
    events, error = await MODES[how](runner, ask("q1"))
    assert error is None
    (done,) = [e for e in events if isinstance(e, Done)]
    assert text_of(events) == f"new {done.session_id}: q1"
    assert gone_within(stand_in, 1.0) == []


@pytest.mark.anyio
@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("cls", RUNNERS)
async def test_garbage_instead_of_events_is_an_upstream_error_quoting_it(
    cls: type[CLIRunner], how: str, stand_in: Path
) -> None:
    runner = make(cls, stand_in, "garbage")
    events, error = await MODES[how](runner, ask("q1"))
    assert isinstance(error, UpstreamError) and error.provider == runner.name
    assert "unreadable output: 'Loading the model, please wait...'" in error.message
    assert "more lines" in error.message and len(error.message) < 1000  # an excerpt, not the whole output
    assert text_of(events) == ""


@pytest.mark.anyio
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_parser_tripping_over_unforeseen_output_is_an_upstream_error(
    cls: type[CLIRunner], stand_in: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: whatever a dialect's parser raises on a line it did not foresee leaves as an LLMError."""
    runner = make(cls, stand_in, "ok")

    def feed(self: Any, line: bytes) -> Iterable[StreamEvent]:
        return [TextDelta(json.loads(line)["no such key"])]

    monkeypatch.setattr(PARSERS[cls.name], "feed", feed)
    _events, error = await streamed(runner, ask("q1"))
    assert isinstance(error, UpstreamError) and error.provider == runner.name
    assert "KeyError" in error.message and "on the line '{" in error.message
    assert gone_within(stand_in, 1.0) == []


_KEYS = st.sampled_from(
    [
        "type", "subtype", "event", "message", "delta", "id", "model", "content", "text", "thinking", "result",
        "is_error", "api_error_status", "usage", "modelUsage", "errors", "session_id", "thread_id", "item",
        "status", "error", "stats", "role", "stop_reason", "permission_denials", "total_cost_usd", "terminal_reason",
    ]
)  # fmt: skip
_TYPES = st.sampled_from(
    [
        "system", "stream_event", "assistant", "result", "content_block_delta", "message_start", "message_delta",
        "text_delta", "thinking_delta", "text", "thinking", "thread.started", "item.started", "item.updated",
        "item.completed", "turn.completed", "turn.failed", "error", "agent_message", "reasoning", "init",
        "message", "success", "init", "api_retry", "assistant",
    ]
)  # fmt: skip
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20), _TYPES)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(_KEYS, st.text()), inner, max_size=6)
    ),
    max_leaves=25,
)
_EVENT = st.fixed_dictionaries({"type": _TYPES}, optional={k: _JSON for k in ("event", "message", "item", "delta")})
_LINE = st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda e, extra: json.dumps({**extra, **e}).encode(), _EVENT, st.dictionaries(_KEYS, _JSON, max_size=6)),
)


@pytest.mark.parametrize("dialect", PARSERS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_LINE, max_size=12),
    returncode=st.integers(-15, 260),
    stderr=st.one_of(st.text(max_size=80), st.sampled_from(["", "Error resuming session", "HTTP 429", "401"])),
)
# the crashers found by hand: a JSON nesting too deep for the decoder, an unhashable message id
@example(
    lines=[b"[" * 100_000, b'{"type": "assistant", "message": {"id": [1], "content": []}}'], returncode=0, stderr=""
)
@example(lines=[b'{"type": "result", "status": "error", "error": {"message": "{\\"a\\": ' + b"[" * 100_000 + b'}"}}'],
         returncode=1, stderr="")  # fmt: skip
def test_parsers_turn_any_lines_into_events_or_an_llm_error(
    dialect: str, lines: list[bytes], returncode: int, stderr: str
) -> None:
    parser = PARSERS[dialect]()
    for line in lines:
        for event in parser.feed(line):
            assert isinstance(event, StreamEvent.__args__)  # type: ignore[attr-defined]
    try:
        final = list(parser.finish(returncode, stderr))
    except LLMError:
        return
    assert final and isinstance(final[-1], Done)


# ------------------------------------------------------------------------------------------------ huge output
@pytest.mark.anyio
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_huge_line_is_an_upstream_error_with_bounded_memory(cls: type[CLIRunner], stand_in: Path) -> None:
    runner = make(cls, stand_in, "huge")
    assert runner.max_line_bytes == 16 * 1024 * 1024
    tracemalloc.start()
    try:
        _events, error = await streamed(runner, ask("q1"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, UpstreamError) and "max_line_bytes" in error.message
    assert peak < 2 * runner.max_line_bytes  # the 80 MB line was never held: reading stopped at the cap
    assert gone_within(stand_in, 1.0) == []


@pytest.mark.anyio
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_flood_beyond_the_output_cap_is_an_upstream_error(cls: type[CLIRunner], stand_in: Path) -> None:
    runner = make(cls, stand_in, "flood")
    runner.max_output_bytes = 2 * 1024 * 1024
    results = await asyncio.gather(completed(runner, ask("q1")), streamed(runner, ask("q2")))
    for events, error in results:
        assert isinstance(error, UpstreamError) and "max_output_bytes" in error.message
        assert not any(isinstance(e, Done) for e in events)
        assert len(text_of(events)) <= runner.max_output_bytes
    assert gone_within(stand_in, 1.0) == []


# ------------------------------------------------------------------------------------------------ exits
@pytest.mark.anyio
@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("cls", RUNNERS)
async def test_exit_0_without_output_is_an_upstream_error(cls: type[CLIRunner], how: str, stand_in: Path) -> None:
    events, error = await MODES[how](make(cls, stand_in, "silent"), ask("q1"))
    assert isinstance(error, UpstreamError) and error.provider == cls.name
    assert "without" in error.message and events == []


@pytest.mark.anyio
@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_failed_exit_with_only_stderr_names_the_code_and_the_message(
    cls: type[CLIRunner], how: str, stand_in: Path
) -> None:
    events, error = await MODES[how](make(cls, stand_in, "stderr"), ask("q1"))
    assert isinstance(error, UpstreamError) and error.provider == cls.name
    assert "exited with code 3" in error.message and "something broke in the stand-in" in error.message
    assert events == []


@pytest.mark.anyio
@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_cli_killed_mid_stream_is_an_error_naming_the_signal(
    cls: type[CLIRunner], how: str, stand_in: Path
) -> None:
    events, error = await MODES[how](make(cls, stand_in, "sigkill"), ask("q1"))
    assert isinstance(error, UpstreamError) and "SIGKILL" in error.message
    assert not any(isinstance(e, Done) for e in events)  # the partial text is never passed off as an answer
    if how == "stream":
        assert text_of(events) == "partial"


# ------------------------------------------------------------------------------------------------ hangs
@pytest.mark.anyio
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_cli_hanging_after_one_delta_hits_the_idle_timeout(cls: type[CLIRunner], stand_in: Path) -> None:
    runner = make(cls, stand_in, "hang_after", idle_timeout=0.5)
    began = time.monotonic()
    results = await asyncio.gather(completed(runner, ask("q1")), streamed(runner, ask("q2")))
    elapsed = time.monotonic() - began
    for _events, error in results:
        assert isinstance(error, ProviderTimeout) and "idle timeout" in error.message
    assert text_of(results[1][0]) == "partial"
    assert elapsed < 0.5 + 1.5  # the limit, the kill grace for a CLI that ignores SIGTERM, some slack
    assert live(stand_in) == []  # the grandchild too: gone by the time the error is raised


@pytest.mark.anyio
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_cli_hanging_before_any_output_hits_the_total_timeout(cls: type[CLIRunner], stand_in: Path) -> None:
    runner = make(cls, stand_in, "hang_before", timeout=0.6, idle_timeout=None)
    began = time.monotonic()
    results = await asyncio.gather(completed(runner, ask("q1")), streamed(runner, ask("q2")))
    elapsed = time.monotonic() - began
    for events, error in results:
        assert isinstance(error, ProviderTimeout) and "total timeout" in error.message
        assert events == []
    assert elapsed < 0.6 + 1.5
    assert live(stand_in) == []


@pytest.mark.anyio
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_consumer_that_stops_after_the_first_event_leaves_no_process(
    cls: type[CLIRunner], stand_in: Path
) -> None:
    """Both ways a consumer stops, at once (each costs the kill grace: the stand-in ignores SIGTERM)."""
    runner = make(cls, stand_in, "hang_after")

    async def close_early() -> None:
        stream = runner.stream(ask("q1"))
        assert await stream.__anext__() == TextDelta("partial")
        await asyncio.sleep(0.1)  # the grandchild is up
        assert len(live(stand_in)) >= 2
        await stream.aclose()  # type: ignore[attr-defined]

    async def disconnect() -> None:  # a client disconnect: the task serving the stream is cancelled
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in runner.stream(ask("q2")):
                first.set()

        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(first.wait(), 10)
        await asyncio.sleep(0.1)
        assert len(live(stand_in)) >= 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await asyncio.gather(close_early(), disconnect())
    assert gone_within(stand_in, 1.0) == []


# ------------------------------------------------------------------------------------------------ binaries
@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["missing", "not executable", "directory"])
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_missing_or_unusable_binary_is_binary_not_found_with_the_install_hint(
    cls: type[CLIRunner], kind: str, tmp_path: Path, private_tmp: Path
) -> None:
    path = tmp_path / "cli"
    if kind == "not executable":
        path.write_text("#!/bin/sh\necho hi\n")
        path.chmod(0o644)
    elif kind == "directory":
        path.mkdir()
    runner = cls(binary=str(path), env={"HOME": str(tmp_path)}, sessions=SessionStore(), **one_shot(cls))
    for how in MODES.values():
        _events, error = await how(runner, ask("q1"))
        assert isinstance(error, BinaryNotFound) and f"npm install -g {cls.package}" in error.message
    health = await runner.health()
    assert not health.installed and not health.ready and health.fix == f"npm install -g {cls.package}"
    await runner.aclose()
    assert names(private_tmp) == []


@pytest.mark.anyio
@pytest.mark.parametrize("cls", RUNNERS)
async def test_a_binary_that_cannot_start_is_binary_not_found_with_the_reinstall_hint(
    cls: type[CLIRunner], tmp_path: Path, private_tmp: Path
) -> None:
    path = tmp_path / "cli"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    runner = cls(
        binary=str(path), env={"HOME": str(tmp_path), **STAND_IN_KEYS}, sessions=SessionStore(), **one_shot(cls)
    )
    for how in MODES.values():
        _events, error = await how(runner, ask("q1"))
        assert isinstance(error, BinaryNotFound) and f"npm install -g {cls.package}" in error.message
    health = await runner.health()
    assert health.installed and not health.ready and health.fix and cls.package in health.fix
    await runner.aclose()
    assert names(private_tmp) == []


# ------------------------------------------------------------------------------------------------ concurrency
@pytest.mark.anyio
@pytest.mark.parametrize("cls", RUNNERS)
async def test_twenty_concurrent_conversations_on_one_runner_never_cross(
    cls: type[CLIRunner], stand_in: Path, private_tmp: Path
) -> None:
    runner = make(cls, stand_in, "ok")
    n = 20
    first = await asyncio.gather(*(runner.complete(ask(f"q{i}", conversation=f"c{i}")) for i in range(n)))
    sessions = [r.session_id for r in first]
    assert len(set(sessions)) == n and all(sessions)
    assert [r.content for r in first] == [f"new {sessions[i]}: q{i}" for i in range(n)]
    assert len(runner.sessions) == n

    def follow_up(i: int) -> ChatRequest:
        history = [
            Message(role="user", content=f"q{i}"),
            Message(role="assistant", content=first[i].content),
            Message(role="user", content=f"r{i}"),
        ]
        return ChatRequest(messages=history, conversation=f"c{i}")

    second = await asyncio.gather(*(runner.complete(follow_up(i)) for i in range(n)))
    assert [r.content for r in second] == [f"resumed {sessions[i]}: r{i}" for i in range(n)]
    assert [r.session_id for r in second] == sessions
    assert len(runner.sessions) == n  # each claimed entry replaced by its longer history, nothing else
    assert live(stand_in) == []
    leftovers = names(private_tmp)
    assert not [name for name in leftovers if "-run-" in name]  # every run's scratch dir is gone
    await runner.aclose()
    assert names(private_tmp) == []
