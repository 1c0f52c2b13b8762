"""Tests of the process layer against real child processes (tests/process_children/child.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_runners import errors
from llm_runners.process import (  # the guard against pid 0
    NESTING_MARKERS,
    LineFramer,
    LineTooLong,
    Process,
    ProcessSpec,
    StderrVerdict,
    _group_alive,
    _signal_group,
    build_env,
    classify_exit,
    find_binary,
    parse_retry_after,
    start,
)
from llm_runners.testing.procs import alive

CHILD = str(Path(__file__).parent / "process_children" / "child.py")
PY = [sys.executable, "-I", "-S", CHILD]

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Every process test runs on plain asyncio and on uvloop (the server's loop): uvloop's transports are not
    asyncio's classes, and a layer that assumed they were once failed every request made through the server."""
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


def spec(*args: str, **kw: object) -> ProcessSpec:
    kw.setdefault("timeout", 30.0)
    kw.setdefault("kill_grace", 0.2)
    return ProcessSpec(argv=[*PY, *args], **kw)  # type: ignore[arg-type]


def exists(path: Path) -> bool:
    return path.exists()


def reaped(pid: int) -> bool:
    """Not even a zombie is left: the parent collected the exit status."""
    return not exists(Path(f"/proc/{pid}"))


async def gone_within(pids: Iterable[int], seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.01)
    return True


async def read_pids(proc: Process) -> list[int]:
    line = await proc.lines().__anext__()
    return [int(x) for x in line.split()]


async def collect(proc: Process) -> list[bytes]:
    return [line async for line in proc.lines()]


# ------------------------------------------------------------------------------------------------ spawning
async def test_argv_is_passed_verbatim_never_through_a_shell() -> None:
    args = ["$HOME", "a b", "; echo pwned", "*", "`id`", "'\"", ""]
    async with await start(spec("args", *args)) as proc:
        assert await collect(proc) == [a.encode() for a in args]
        assert await proc.wait() == 0


async def test_child_leads_its_own_process_group_and_session() -> None:
    async with await start(spec("ids")) as proc:
        info = json.loads((await collect(proc))[0])
        assert info["pid"] == proc.pid
        assert info["pgid"] == proc.pid != os.getpgid(0)
        assert info["sid"] == proc.pid


async def test_missing_binary_raises_binary_not_found_naming_it(tmp_path: Path) -> None:
    leftover = tmp_path / "image.png"
    leftover.write_bytes(b"x")
    with pytest.raises(errors.BinaryNotFound, match="no-such-cli-xyz") as info:
        await start(ProcessSpec(argv=["no-such-cli-xyz", "--help"], cleanup=[leftover], provider="fake"))
    assert info.value.provider == "fake"
    assert "not found" in info.value.message
    assert not leftover.exists()  # the layer owns cleanup paths even when the start fails


async def test_non_executable_file_and_directory_raise_binary_not_found(tmp_path: Path) -> None:
    script = tmp_path / "cli"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(errors.BinaryNotFound, match="cannot be executed"):
        await start(ProcessSpec(argv=[str(script)]))
    with pytest.raises(errors.BinaryNotFound, match=str(tmp_path)):
        await start(ProcessSpec(argv=[str(tmp_path)]))
    script.chmod(0o755)
    async with await start(ProcessSpec(argv=[str(script)])) as proc:
        assert await collect(proc) == [b"hi"]


async def test_missing_interpreter_is_binary_not_found(tmp_path: Path) -> None:
    script = tmp_path / "cli"
    script.write_text("#!/nonexistent/node\n")
    script.chmod(0o755)
    with pytest.raises(errors.BinaryNotFound, match="interpreter"):
        await start(ProcessSpec(argv=[str(script)]))


async def test_bad_argv_and_missing_cwd_are_invalid_requests(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidRequest, match="argv"):
        await start(ProcessSpec(argv=[]))
    with pytest.raises(errors.InvalidRequest, match="NUL"):
        await start(ProcessSpec(argv=["echo", "a\0b"]))
    with pytest.raises(errors.InvalidRequest, match="working directory"):
        await start(spec("ids", cwd=tmp_path / "missing"))


async def test_instant_exit_is_handled_and_never_signals_our_own_group() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda sig, frame: received.append(sig))
    try:
        _signal_group(0, signal.SIGUSR1)  # pid not known yet must not mean "my own group"
        assert not _group_alive(0)
        for _ in range(30):  # /bin/true can exit before start() returns
            async with await start(ProcessSpec(argv=["/bin/true"])) as proc:
                assert proc.pid > 0
                assert await proc.wait() == 0
        await anyio.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []


# --------------------------------------------------------------------------------------------- environment
async def test_environment_allow_list_pass_env_overrides_and_nesting_markers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SECRET_TOKEN": "leak",
        "AWS_SECRET_ACCESS_KEY": "leak",
        "MY_CLI_API_KEY": "k1",
        "LC_ALL": "C.UTF-8",
        "XDG_CONFIG_HOME": "/x",
        "HTTPS_PROXY": "http://p:1",
        "no_proxy": "localhost",
        "SSL_CERT_FILE": "/ca.pem",
        "CLAUDECODE": "1",
        "CLAUDE_CODE_ENTRYPOINT": "cli",
        "CODEX_SANDBOX": "seatbelt",
        "GEMINI_CLI": "1",
        "HOME": "/home/parent",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MY_UNSET_VAR", raising=False)
    async with await start(
        spec(
            "env",
            pass_env=["MY_CLI_API_KEY", "MY_UNSET_VAR", "CLAUDECODE"],
            env={"HOME": "/home/throwaway", "NO_COLOR": "1", "GEMINI_CLI": "1"},
        )
    ) as proc:
        env = json.loads((await collect(proc))[0])["env"]
    assert "SECRET_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["MY_CLI_API_KEY"] == "k1"
    assert "MY_UNSET_VAR" not in env
    assert env["LC_ALL"] == "C.UTF-8" and env["XDG_CONFIG_HOME"] == "/x"
    assert env["HTTPS_PROXY"] == "http://p:1" and env["no_proxy"] == "localhost" and env["SSL_CERT_FILE"] == "/ca.pem"
    assert env["PATH"] == os.environ["PATH"]
    assert env["HOME"] == "/home/throwaway"  # spec.env wins
    assert env["NO_COLOR"] == "1"
    for marker in ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "CODEX_SANDBOX", "GEMINI_CLI"):
        assert marker not in env  # removed even when passed through or set explicitly


def test_build_env_is_pure_over_a_given_parent() -> None:
    parent = {"PATH": "/bin", "LC_CTYPE": "C", "TOKEN": "t", "OTHER": "o", "CODEX_SANDBOX_NETWORK_DISABLED": "1"}
    env = build_env({"X": "1"}, ["TOKEN", "CODEX_SANDBOX_NETWORK_DISABLED"], parent=parent)
    assert env == {"PATH": "/bin", "LC_CTYPE": "C", "TOKEN": "t", "X": "1"}
    assert {"CLAUDECODE", "CLAUDE_CODE_SSE_PORT", "CODEX_SANDBOX_NETWORK_DISABLED"} <= NESTING_MARKERS


# ----------------------------------------------------------------------------------------- working directory
async def test_default_cwd_is_a_fresh_empty_temp_dir_removed_at_exit(tmp_path: Path) -> None:
    extra = tmp_path / "prompt-image.png"
    extra.write_bytes(b"png")
    proc = await start(spec("env", cleanup=[extra]))
    info = json.loads((await collect(proc))[0])
    cwd = Path(info["cwd"])
    assert info["listing"] == []
    assert str(cwd.parent) == tempfile.gettempdir()
    assert await proc.wait() == 0  # wait() after the end of stdout finishes the process: cleanup happens
    assert not exists(cwd) and not exists(extra)
    await proc.kill()  # idempotent


async def test_given_cwd_is_used_and_kept(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    async with await start(spec("env", cwd=tmp_path)) as proc:
        info = json.loads((await collect(proc))[0])
    assert Path(info["cwd"]) == tmp_path and info["listing"] == ["file.txt"]
    assert exists(tmp_path / "file.txt")


async def test_two_processes_get_different_temp_dirs() -> None:
    async with await start(spec("env")) as a, await start(spec("env")) as b:
        dir_a = json.loads((await collect(a))[0])["cwd"]
        dir_b = json.loads((await collect(b))[0])["cwd"]
    assert dir_a != dir_b


# -------------------------------------------------------------------------------------------------- stdin
async def test_no_stdin_means_an_empty_closed_pipe_not_the_parents() -> None:
    async with await start(spec("env")) as proc:
        info = json.loads((await collect(proc))[0])
    assert info["stdin_fifo"] is True and info["stdin"] == ""


async def test_multi_megabyte_stdin_cannot_deadlock_against_a_child_that_writes_first() -> None:
    payload = b"HEAD" + b"p" * (8 * 1024 * 1024) + b"TAIL0000"
    async with await start(spec("write-then-read", str(2 * 1024 * 1024), stdin=payload)) as proc:
        lines = await collect(proc)
        assert len(lines[0]) == 2 * 1024 * 1024
        assert lines[1] == f"{len(payload)} HEADpppp TAIL0000".encode()
        assert await proc.wait() == 0


async def test_warm_start_then_send_prompt_later() -> None:
    async with await start(spec("cat", keep_stdin_open=True, idle_timeout=5.0)) as proc:
        lines = proc.lines()
        assert await lines.__anext__() == b"ready"
        await anyio.sleep(0.2)  # started ahead of need; the prompt arrives later
        assert proc.returncode is None
        await proc.send(b"first prompt\n")
        assert await lines.__anext__() == b"first prompt"
        await proc.send(b"second " + b"q" * 300_000 + b"\n")  # bigger than a pipe buffer
        assert await lines.__anext__() == b"second " + b"q" * 300_000
        await proc.close_stdin()
        await proc.close_stdin()  # idempotent
        assert [line async for line in lines] == []
        assert await proc.wait() == 0


async def test_send_misuse_and_send_after_exit() -> None:
    async with await start(spec("args", "x")) as proc:
        with pytest.raises(errors.InternalError, match="keep_stdin_open"):
            await proc.send(b"x")
    async with await start(spec("cat", keep_stdin_open=True)) as proc:
        await proc.close_stdin()
        with pytest.raises(errors.InternalError, match="close_stdin"):
            await proc.send(b"x")
    async with await start(spec("args", "x", keep_stdin_open=True)) as proc:
        assert await proc.wait() == 0
        with pytest.raises(errors.UpstreamError, match="exited"):
            await proc.send(b"late\n")


async def test_reset_deadline_gives_a_warm_process_a_fresh_budget() -> None:
    async with await start(spec("cat", keep_stdin_open=True, timeout=0.3)) as proc:
        proc.reset_deadline(30.0)
        await anyio.sleep(0.6)
        await proc.send(b"still here\n")
        lines = proc.lines()
        assert await lines.__anext__() == b"ready"
        assert await lines.__anext__() == b"still here"
        proc.reset_deadline(0.2)
        with pytest.raises(errors.ProviderTimeout, match="total timeout"):
            await proc.wait()


# ------------------------------------------------------------------------------------------------ framing
def frame_reference(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return [p[:-1] if p.endswith(b"\r") else p for p in parts]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


lines_strategy = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    lines=lines_strategy,
    endings=st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=30, max_size=30),
    last=st.binary(max_size=10).map(lambda b: b.replace(b"\n", b"")),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40),
)
def test_framer_gives_the_same_lines_whatever_the_chunk_boundaries(
    lines: list[bytes], endings: list[bytes], last: bytes, cuts: list[int]
) -> None:
    data = b"".join(line + end for line, end in zip(lines, endings, strict=False)) + last
    framer = LineFramer()
    out: list[bytes] = []
    for chunk in chunked(data, cuts):
        out += framer.feed(chunk)
    out += framer.finish()
    assert out == frame_reference(data)
    expected = list(lines) + ([last[:-1] if last.endswith(b"\r") else last] if last else [])
    assert out == expected


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), limit=st.integers(min_value=1, max_value=20))
def test_framer_line_limit_holds_for_any_split(data: bytes, limit: int) -> None:
    framer = LineFramer(limit)
    out: list[bytes] = []
    try:
        for i in range(0, len(data), 7):
            out += framer.feed(data[i : i + 7])
        out += framer.finish()
    except LineTooLong:
        assert any(len(line) > limit for line in frame_reference(data))
    else:
        assert all(len(line) <= limit for line in out)
        assert out == frame_reference(data)


def test_framer_joins_a_huge_line_fed_in_small_pieces_in_linear_time() -> None:
    framer = LineFramer()
    piece = b"a" * 4096
    for _ in range(5000):  # 20 MB; quadratic re-scanning would take minutes
        assert framer.feed(piece) == []
    assert framer.pending == 5000 * 4096
    assert framer.feed(b"\r\nnext") == [b"a" * (5000 * 4096)]
    assert framer.finish() == [b"next"]


async def test_process_lines_cope_with_split_crlf_and_unterminated_last_line() -> None:
    data = b"one\r\ntwo\n\nthree\r\n" + b"four" * 1000 + b"\nlast-no-newline"
    pieces = [data[:2], data[2:4], data[4:9], data[9:12], data[12:1500], data[1500:]]
    async with await start(spec("chunks", *(p.hex() for p in pieces))) as proc:
        assert await collect(proc) == frame_reference(data)


async def test_a_20_mb_line_is_read_whole() -> None:
    size = 20 * 1024 * 1024
    async with await start(spec("big-line", str(size))) as proc:
        lines = await collect(proc)
    assert [len(x) for x in lines] == [size, 3] and lines[1] == b"end"
    assert lines[0][:5] == b"yyyyy" and lines[0][-5:] == b"yyyyy"


# --------------------------------------------------------------------------------------------------- caps
async def test_a_line_over_max_line_bytes_kills_with_upstream_error() -> None:
    proc = await start(spec("big-line", str(2_000_000), max_line_bytes=1_000_000))
    with pytest.raises(errors.UpstreamError, match="output exceeded") as info:
        await collect(proc)
    assert "max_line_bytes" in info.value.message
    assert proc.returncode is not None and not alive(proc.pid)


async def test_total_output_over_max_output_bytes_kills_with_upstream_error() -> None:
    proc = await start(spec("many", "100000", "100", max_output_bytes=1_000_000))
    with pytest.raises(errors.UpstreamError, match="output exceeded 1000000 bytes"):
        await collect(proc)
    assert not alive(proc.pid)
    with pytest.raises(errors.UpstreamError):  # the run failed; wait() says so too
        await proc.wait()


# ------------------------------------------------------------------------------------------------- stderr
async def test_stderr_flood_never_blocks_and_keeps_a_bounded_tail() -> None:
    async with await start(spec("stderr-flood", str(10 * 1024 * 1024), stderr_tail_bytes=4096)) as proc:
        assert await collect(proc) == [b"done"]
        assert await proc.wait() == 0
        tail = proc.stderr_tail()
    assert tail.endswith("LAST-STDERR-LINE\n")
    assert "\ufffd" in tail  # invalid UTF-8 decoded leniently
    assert len(tail.encode("utf-8", "replace")) <= 4096 * 3


# ----------------------------------------------------------------------------------------- timeouts, kill
async def test_idle_timeout_kills_child_and_grandchild() -> None:
    # limits of 1.5 s and more: the child (a Python interpreter) must print its pids before they strike, which took
    # over 0.3 s on a loaded machine
    proc = await start(spec("hang", idle_timeout=1.5))
    pids = await read_pids(proc)
    with pytest.raises(errors.ProviderTimeout, match=r"no output for 1.5 s \(idle timeout\)"):
        await proc.lines().__anext__()
    assert await gone_within(pids)


async def test_partial_output_counts_as_activity_for_the_idle_timeout() -> None:
    async with await start(spec("hang", "chatty", idle_timeout=1.5, timeout=4.0)) as proc:
        pids = await read_pids(proc)
        with pytest.raises(errors.ProviderTimeout, match="total timeout"):
            await proc.lines().__anext__()
    assert await gone_within(pids)


async def test_total_timeout_in_wait_kills_a_sigterm_trapping_group() -> None:
    proc = await start(spec("hang", "trap", timeout=1.5, kill_grace=0.2))
    pids = await read_pids(proc)
    with pytest.raises(errors.ProviderTimeout, match=r"still running after 1.5 s \(total timeout\)") as info:
        await proc.wait()
    assert info.value.status == 504
    assert await gone_within(pids)
    assert proc.returncode == -signal.SIGKILL


async def test_total_timeout_kills_even_when_nobody_is_reading() -> None:
    proc = await start(spec("hang", timeout=1.5))
    pids = await read_pids(proc)
    await anyio.sleep(1.7)
    assert await gone_within(pids)
    with pytest.raises(errors.ProviderTimeout):
        await proc.wait()


async def test_consumer_that_stops_reading_kills_the_group_within_a_second() -> None:
    proc = await start(spec("hang", "trap", kill_grace=0.3))
    lines = proc.lines()
    pids = [int(x) for x in (await lines.__anext__()).split()]
    await lines.aclose()  # type: ignore[attr-defined]
    assert await gone_within(pids, 1.0)
    assert reaped(proc.pid)


async def test_cancelling_the_reading_task_kills_the_group() -> None:
    proc = await start(spec("hang", "trap"))
    pids = await read_pids(proc)
    with anyio.move_on_after(0.2) as scope:
        await collect(proc)
    assert scope.cancelled_caught
    assert await gone_within(pids)


async def test_asyncio_task_cancel_kills_the_group() -> None:
    proc = await start(spec("hang"))
    pids = await read_pids(proc)
    task = asyncio.get_running_loop().create_task(proc.wait())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone_within(pids)


async def test_leaving_async_with_kills_a_sigterm_trapping_group() -> None:
    async with await start(spec("hang", "trap", kill_grace=0.2)) as proc:
        pids = await read_pids(proc)
    assert await gone_within(pids)
    assert proc.returncode == -signal.SIGKILL


async def test_leaving_async_with_on_error_kills_the_group() -> None:
    with pytest.raises(RuntimeError, match="consumer failed"):
        async with await start(spec("hang")) as proc:
            pids = await read_pids(proc)
            raise RuntimeError("consumer failed")
    assert await gone_within(pids)
    assert proc.returncode == -signal.SIGTERM


async def test_kill_is_idempotent_and_reaps() -> None:
    proc = await start(spec("hang"))
    pids = await read_pids(proc)
    await proc.kill()
    await proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert reaped(proc.pid)
    assert await gone_within(pids)
    assert await proc.wait() == -signal.SIGTERM


async def test_leftovers_of_a_finished_process_are_killed_and_stdout_ends() -> None:
    async with await start(spec("orphan")) as proc:  # the grandchild keeps stdout open
        lines = await collect(proc)
        pids = [int(x) for x in lines[0].split()]
        assert await proc.wait() == 0
    assert await gone_within(pids)


# ---------------------------------------------------------------------------------------------- exit code
async def test_wait_returns_the_exit_code_and_sets_returncode() -> None:
    async with await start(spec("exit", "3", "boom")) as proc:
        assert proc.returncode is None or proc.returncode == 3
        assert await proc.wait() == 3
        assert proc.returncode == 3
        assert proc.stderr_tail() == "boom"


async def test_wait_drains_unread_stdout_so_a_chatty_child_can_exit() -> None:
    async with await start(spec("many", "20000", "1000")) as proc:  # 20 MB nobody reads
        assert await proc.wait() == 0


# -------------------------------------------------------------------------------------------- find_binary
def test_find_binary_prefers_extra_dirs_and_needs_executable_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, on_path = tmp_path / "first", tmp_path / "second", tmp_path / "path"
    for d in (first, second, on_path):
        d.mkdir()
    (first / "tool").write_text("not executable")
    (second / "tool").write_text("#!/bin/sh\n")
    (second / "tool").chmod(0o755)
    (on_path / "tool").write_text("#!/bin/sh\n")
    (on_path / "tool").chmod(0o755)
    (on_path / "adir").mkdir()
    monkeypatch.setenv("PATH", str(on_path))
    assert find_binary("tool", [first, second]) == str(second / "tool")
    assert find_binary("tool", [first]) == str(on_path / "tool")
    assert find_binary("tool") == str(on_path / "tool")
    assert find_binary("adir") is None
    assert find_binary("absent-tool", [first]) is None
    assert find_binary(str(second / "tool")) == str(second / "tool")
    assert find_binary(str(first / "tool")) is None
    assert find_binary("") is None
    mode = (second / "tool").stat().st_mode
    assert mode & stat.S_IXUSR


# ----------------------------------------------------------------------------------------- classify_exit
CLASSIFY_CASES: list[tuple[int, str, type[errors.LLMError], str]] = [
    (1, "Error: 401 Unauthorized", errors.AuthenticationError, "401"),
    (1, "[API Error: 401 Incorrect API key provided: fake (fake 401)]", errors.AuthenticationError, "Incorrect"),
    (1, "Invalid API key · Please run /login", errors.AuthenticationError, "login"),
    (1, "You are not logged in.", errors.AuthenticationError, "not logged in"),
    (1, "request failed: unauthorised", errors.AuthenticationError, "unauthorised"),
    (1, "HTTP 429 Too Many Requests", errors.RateLimited, "429"),
    (1, "rate limit exceeded, retry after 30s", errors.RateLimited, "rate limit"),
    (1, '{"status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded"}', errors.RateLimited, "Quota"),
    (1, "prompt is too long: 250000 tokens > 200000 maximum", errors.ContextLengthExceeded, "too long"),
    (1, "This model's maximum context length is 128000 tokens", errors.ContextLengthExceeded, "context length"),
    (1, "input token count exceeds the maximum number of tokens allowed", errors.ContextLengthExceeded, "exceeds"),
    (1, "Error: model 'gpt-9' not found", errors.ModelNotFound, "gpt-9"),
    (1, "unknown model: foo", errors.ModelNotFound, "unknown model"),
    (1, "invalid model specified", errors.ModelNotFound, "invalid model"),
    (1, "API Error: 529 overloaded_error", errors.Overloaded, "529"),
    (1, "Service Unavailable", errors.Overloaded, "Service Unavailable"),
    (1, "upstream returned status 500: internal", errors.UpstreamError, "500"),
    (1, "Error: 403 Forbidden", errors.PermissionDenied, "403"),
    (127, "sh: claude: command not found", errors.BinaryNotFound, "command not found"),
    (-9, "", errors.UpstreamError, "killed by signal 9 (SIGKILL)"),
    (-15, "partial output", errors.UpstreamError, "signal 15 (SIGTERM)"),
    (2, "something odd happened", errors.UpstreamError, "exited with code 2:\nsomething odd happened"),
    (1, "", errors.UpstreamError, "exited with code 1"),
    # a stack-trace line number is not a status code; start-up noise does not decide, the last error line does
    (1, "at Object.<anonymous> (/app/cli.js:401:12)\nTypeError: x is undefined", errors.UpstreamError, "code 1"),
    (1, "Loaded cached credentials.\nError: 429 quota exceeded", errors.RateLimited, "429"),
]


@pytest.mark.parametrize(("code", "stderr", "kind", "needle"), CLASSIFY_CASES)
def test_classify_exit(code: int, stderr: str, kind: type[errors.LLMError], needle: str) -> None:
    error = classify_exit(code, stderr, provider="fake")
    assert type(error) is kind, (stderr, error)
    assert needle in error.message
    assert error.provider == "fake"
    assert error.message.startswith("fake")
    assert error.detail == (stderr or None)


def test_classify_exit_keeps_only_the_last_twenty_lines_in_the_message() -> None:
    stderr = "\n".join(f"line {i}" for i in range(100))
    message = classify_exit(1, stderr).message
    assert "line 99" in message and "line 80" in message and "line 79" not in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("429 rate limit, retry after 30s", 30.0),
        ("HTTP 429; Retry-After: 12", 12.0),
        ('{"code": 429, "retryDelay": "20s"}', 20.0),
        ("quota exceeded, please try again in 500ms", 0.5),
        ("rate limited; try again in 2 minutes", 120.0),
        ("rate limited", None),
    ],
)
def test_retry_after_is_parsed(text: str, seconds: float | None) -> None:
    assert parse_retry_after(text) == seconds
    error = classify_exit(1, text)
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after == seconds


# ------------------------------------------------------------------------------------------------ stderr watch


def _watch_script(*steps: str) -> list[str]:
    """A child that runs the given Python statements in order (stderr writes, sleeps, stdout prints)."""
    return [sys.executable, "-I", "-S", "-c", "import sys, time\n" + "\n".join(steps)]


class _Watch:
    """Fails on a line ``failed: <why>`` after ``after`` seconds; ``gave up`` withdraws the failure."""

    def __init__(self, after: float) -> None:
        self.after = after
        self.seen: list[bytes] = []

    def __call__(self, line: bytes) -> StderrVerdict | None:
        self.seen.append(line)
        if line.startswith(b"failed: "):
            return StderrVerdict(errors.RateLimited(line.decode()[8:], provider="t"), after=self.after)
        if line == b"gave up":
            return StderrVerdict(None)
        return None


async def test_stderr_watch_verdict_kills_a_retrying_child() -> None:
    watch = _Watch(after=0.2)
    argv = _watch_script(
        "sys.stderr.write('noise\\nfailed: first'); sys.stderr.flush(); time.sleep(0.05)",
        "sys.stderr.write(' try\\nfailed: second try\\n'); sys.stderr.flush()",
        "print('working', flush=True); time.sleep(30)",
    )
    started = time.monotonic()
    async with await start(ProcessSpec(argv=argv, timeout=30.0, kill_grace=0.2, stderr_watch=watch)) as proc:
        with pytest.raises(errors.RateLimited, match="second try") as info:
            await collect(proc)
        assert time.monotonic() - started < 10  # not the child's 30 s
        assert await gone_within([proc.pid])
    assert watch.seen[:3] == [b"noise", b"failed: first try", b"failed: second try"]  # lines, split across writes
    assert info.value.detail and "noise" in info.value.detail


async def test_stderr_watch_withdrawn_or_outlived_verdict_changes_nothing() -> None:
    withdrawn = _script_run(_Watch(after=0.3), "sys.stderr.write('failed: x\\ngave up\\n'); sys.stderr.flush()")
    outlived = _script_run(_Watch(after=5.0), "sys.stderr.write('failed: y\\n'); sys.stderr.flush()")
    for run in (withdrawn, outlived):
        lines, code = await run
        assert (lines, code) == ([b"done"], 0)


async def _script_run(watch: _Watch, step: str) -> tuple[list[bytes], int]:
    argv = _watch_script(step, "time.sleep(0.6)", "print('done', flush=True)")
    async with await start(ProcessSpec(argv=argv, timeout=30.0, kill_grace=0.2, stderr_watch=watch)) as proc:
        lines = await collect(proc)
        return lines, await proc.wait()


async def test_stdin_through_a_fifo_on_every_loop() -> None:
    """A pipe is a FIFO on asyncio but a socket on uvloop; a CLI that reads piped input only from a FIFO (Cline)
    gets it through one on either loop, also when it is larger than a pipe's buffer."""
    data = b"line one\nline two\n" + b"x" * 300_000
    probe = (
        "import os, stat, sys; d = sys.stdin.buffer.read(); print(stat.S_ISFIFO(os.fstat(0).st_mode), len(d), d[:8])"
    )
    argv = [sys.executable, "-I", "-S", "-c", probe]
    async with await start(ProcessSpec(argv=argv, stdin=data, stdin_fifo=True, timeout=30.0)) as proc:
        lines = [line async for line in proc.lines()]
        assert await proc.wait() == 0
    assert lines == [f"True {len(data)} b'line one'".encode()]


async def test_a_fifo_the_child_never_reads_does_not_outlive_it() -> None:
    argv = [sys.executable, "-I", "-S", "-c", "print('not reading')"]
    async with await start(ProcessSpec(argv=argv, stdin=b"y" * 1_000_000, stdin_fifo=True, timeout=30.0)) as proc:
        assert [line async for line in proc.lines()] == [b"not reading"]
        assert await proc.wait() == 0
    assert proc._fifo is None


async def test_every_stdio_pipe_is_a_real_pipe_on_every_loop() -> None:
    """The process layer's own spawn (Popen, vfork) gives the child real pipes on asyncio and uvloop alike; uvloop's
    spawn made them sockets, which some CLIs treat differently."""
    probe = "import os, stat; print(*(stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in (0, 1, 2)))"
    argv = [sys.executable, "-I", "-S", "-c", probe]
    async with await start(ProcessSpec(argv=argv, stdin=b"x", timeout=30.0)) as proc:
        lines = [line async for line in proc.lines()]
        assert await proc.wait() == 0
    assert lines == [b"True True True"]


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


async def test_spawns_cancelled_at_any_point_leave_no_descriptor_and_no_process() -> None:
    """Each pipe end has one owner (the loop's transport once handed over, else the spawn): many spawns, some of
    them cancelled while starting, leave the process's descriptors as they were (none leaked, none of the loop's own
    closed by mistake), and no child."""
    await _spawn_some(3)  # the loop's own descriptors (its self-pipe, the watchdog pipe) exist before the count
    before = _open_fds()
    pids = await _spawn_some(60)
    await asyncio.sleep(0.05)
    assert _open_fds() == before
    assert not [pid for pid in pids if alive(pid)]


async def _spawn_some(n: int) -> list[int]:
    pids: list[int] = []

    async def one(i: int) -> None:
        argv = [sys.executable, "-I", "-S", "-c", "import sys; sys.stdin.read(); print('ok')"]
        task = asyncio.ensure_future(start(ProcessSpec(argv=argv, stdin=b"in", timeout=30.0, kill_grace=0.2)))
        if i % 3 == 0:
            for _ in range(i % 5):
                await asyncio.sleep(0)  # cancelled at a different step of the start each time
            task.cancel()
        try:
            proc = await task
        except asyncio.CancelledError:
            return
        pids.append(proc.pid)
        async with proc:
            if i % 2:
                assert [line async for line in proc.lines()] == [b"ok"]

    await asyncio.gather(*(one(i) for i in range(n)))
    return pids


async def test_the_loops_own_spawn_still_works_where_there_is_no_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    import llm_runners.process as process_module

    monkeypatch.setattr(process_module, "_PIDFD", False)
    data = b"y" * 200_000
    argv = [sys.executable, "-I", "-S", "-c", "import sys; print(len(sys.stdin.buffer.read()))"]
    async with await start(ProcessSpec(argv=argv, stdin=data, timeout=30.0)) as proc:
        assert [line async for line in proc.lines()] == [str(len(data)).encode()]
        assert await proc.wait() == 0
    async with await start(ProcessSpec(argv=argv, stdin=data, stdin_fifo=True, timeout=30.0)) as proc:
        assert [line async for line in proc.lines()] == [str(len(data)).encode()]
