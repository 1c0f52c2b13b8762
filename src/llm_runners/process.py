"""The process layer: the only place in llm-runners that starts processes.

Rules it enforces:
- argv lists, never a shell; each child in its own process group (``start_new_session``);
- an environment allow-list (PATH, HOME, LANG, LC_*, TERM, USER, LOGNAME, TZ, TMPDIR, SHELL, XDG_*, CA and proxy
  variables) plus the variables the runner names (its own auth and config variables) plus ``spec.env``; nesting
  markers (``CLAUDECODE``, ``CLAUDE_CODE_ENTRYPOINT``, ``CODEX_SANDBOX*``, ``GEMINI_CLI`` …) are always removed;
- an isolated working directory by default (a fresh empty temp dir removed when the process ends);
- stdin: the prompt bytes written then closed, or an empty closed stdin, or kept open for a warm process;
- stdout read as lines with framing that copes with partial reads and multi-megabyte lines; an output cap;
- stderr drained concurrently into a bounded tail buffer (for error messages), never blocking the child;
- a total timeout and an idle timeout (no stdout for N s) raising ProviderTimeout after killing the group;
- an optional stderr watch, for CLIs that log an API error and then retry it with no knob to stop them: its
  verdict fails the run (after a grace period, unless the process ends first) and kills the group;
- timeout, cancellation, ``aclose()`` of the line iterator and leaving the ``async with`` all kill the whole
  process group: SIGTERM, then SIGKILL after a grace period. When the main process exits on its own, whatever it
  left behind in its group is terminated too: no child outlives its request.

How it works: the child is started with :class:`subprocess.Popen` (``vfork`` + ``exec``: under a millisecond of the
event loop whatever the server's size; see :func:`_spawn`), its pipes are connected to the event loop and its exit
is seen through a pidfd, so stdout, stderr and the exit arrive as callbacks of a small protocol (without pidfds,
:meth:`asyncio.loop.subprocess_exec` does the same). stdout chunks are split into lines on arrival by
:class:`LineFramer` (each byte is scanned once; a partial line is kept as fragments and joined once) and queued;
reading the pipe is paused while the consumer is behind, so a slow consumer applies back-pressure to the child
instead of growing memory. stderr is appended to a tail buffer and never paused. stdin bytes are handed to the pipe
transport, which writes them as the child reads, so a multi-megabyte prompt cannot deadlock against a child that
writes before it reads. Waiting uses futures and loop timers (no task per process, no polling) and cleanup is
shielded from cancellation.

The orphan guarantee (:func:`guard`, called by ``llm-runners serve`` at start-up): when the server dies, even by
SIGKILL, every child group dies with it. Chosen: one watchdog process per server (a tiny ``python -I -S -c``
started once, ~30 ms) holding the read end of a pipe whose only writer is the server. :func:`start` writes
``+pgid`` to it after each spawn and :meth:`Process._finalize` ``-pgid``: two ``write()`` calls of a few bytes
(~30 µs per spawn under load, against a CLI run of hundreds of milliseconds), no per-spawn shim, no ``preexec_fn``
(which would force fork+exec in Python instead of the loop's fast spawn). When the server is gone the pipe reaches
EOF, and the watchdog SIGKILLs every registered group — the direct child *and* its grandchildren, which sit in the
child's group (``start_new_session``) — then removes the instance's temp root. Why not the others:
``PR_SET_PDEATHSIG`` covers only the direct child (not claude's helpers in its group), needs a pre-exec hook, and
fires on the death of the spawning *thread*; a subreaper only re-parents orphans to us, which is no help when we
are the one dying; cgroups need a delegated hierarchy we cannot count on. The watchdog runs in a session of its own,
so a ``kill -9 -<pgid>`` of the program's group (how a shell or a test harness ends a job) does not reach it (it
used to die with the group and leave the CLIs and every temp dir behind), and it ignores SIGINT / SIGTERM / SIGHUP:
only EOF ends it. Long-lived processes (live claude processes, the codex app-server, ACP agents, warm spares) start
through :func:`start` like any other and are covered the same way. While guarded, ``tempfile`` creates every temp
dir under the instance's root ``$TMPDIR/llm-runners-serve-<pid>-<start time>`` (its ``owner`` file holds
``<pid>:<start time>``), and every child carries ``LLM_RUNNERS_OWNER=<pid>:<start time>``. If the watchdog was
killed too (a ``kill -9`` of the watchdog itself, the OOM killer), :func:`reap_dead_instances` at the next start-up
kills the processes so marked and removes the roots whose owner is dead — a pid *and* start time no live process
has, so a live instance and every other program's processes and directories are left alone.

Library use (a program using a runner, ``llm-runners chat``) gets the same guarantee without calling anything: the
first :func:`start` of a process that is not guarded starts its watchdog (:func:`_library_guard`). It has no temp
root and leaves ``tempfile`` alone (the program's own temp files are none of ours); each process's working
directory and cleanup paths, and each runner-owned directory (:func:`guard_path`), are registered with the
watchdog instead and unregistered once removed. ``atexit`` kills what is still registered at a normal exit; a child
made by ``os.fork`` drops the inherited guard and starts its own on its first spawn.

Every temp dir llm-runners makes comes from :func:`temp_dir`, registered with the guard the moment it exists (and
under a server's temp root while it is guarded): a process's fresh working directory, a run's files (made before
the request may wait for a process slot or a spare), each runner-owned directory (private CLI homes, working
directories, the warm pool's root, whose spares' files live inside it). The only other temp files are the atomic
writes of ``runners.base.write_if_changed``, a ``.<name>.*`` file renamed at once, always inside one of those dirs.
Measured (tests/test_process_guard.py): a program with a hanging Claude Code run, a live and a spare process,
OpenCode and Kilo runs and an ACP agent (8 processes, 13 temp dirs) SIGKILLed: 0 processes and 0 entries in its
TMPDIR within 2 s; tests/e2e/test_orphans.py the same for ``llm-runners serve`` with the real ``claude``.

Not covered: a CLI that starts its own session (``setsid``) and scrubs its environment; temp files a CLI writes
itself outside our temp root (its TMPDIR is the caller's); a SIGKILL in the microseconds between ``mkdtemp`` and
its registration; for library use, a ``kill -9`` of the watchdog too (no reaper runs at a library's start-up; the
next ``llm-runners serve`` kills the processes marked with a dead owner, but library dirs have no owner file, so
they stay).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import NoReturn, cast

import anyio

from . import redact
from .errors import (
    AuthenticationError,
    BinaryNotFound,
    ContextLengthExceeded,
    InternalError,
    InvalidRequest,
    LLMError,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    ProviderTimeout,
    RateLimited,
    UpstreamError,
)

__all__ = [
    "ENV_ALLOW_LIST",
    "ENV_ALLOW_PREFIXES",
    "NESTING_MARKERS",
    "LineFramer",
    "LineTooLong",
    "Process",
    "ProcessSpec",
    "StderrVerdict",
    "build_env",
    "classify_exit",
    "classify_text",
    "find_binary",
    "guard",
    "guard_path",
    "parse_retry_after",
    "reap_dead_instances",
    "release_paths",
    "start",
    "temp_dir",
    "unguard",
    "watchdog_pid",
]


@dataclass(frozen=True)
class StderrVerdict:
    """What a :attr:`ProcessSpec.stderr_watch` concluded from a stderr line: fail the run with ``error`` ``after``
    seconds from now unless the process ends first (a later verdict replaces a pending one); ``error=None``
    withdraws a pending failure. For CLIs that log an API error and then retry it with no knob to stop them."""

    error: LLMError | None
    after: float = 0.0


@dataclass
class ProcessSpec:
    argv: Sequence[str]
    #: variables set for the child on top of the allow-listed parent environment
    env: Mapping[str, str] = field(default_factory=dict)
    #: names of further parent variables to pass through when set (a runner's auth variables)
    pass_env: Sequence[str] = ()
    #: working directory; None = a fresh empty temp dir, removed when the process ends
    cwd: str | Path | None = None
    #: bytes written to stdin, then stdin is closed. None = empty, closed stdin (unless keep_stdin_open)
    stdin: bytes | None = None
    #: keep stdin open for later ``send()`` (warm start, long-lived stream-json / ACP processes)
    keep_stdin_open: bool = False
    #: give ``stdin`` through a FIFO (``os.pipe``) even where the event loop's own spawn is used (no pidfd), whose
    #: stdin pipe under uvloop is a socket: for CLIs that read piped input only when fd 0 is a FIFO (Cline). Not with
    #: ``keep_stdin_open``.
    stdin_fifo: bool = False
    #: whole-run limit in seconds (None = none)
    timeout: float | None = 600.0
    #: longest silence on stdout in seconds before the process counts as hung (None = none)
    idle_timeout: float | None = None
    #: total stdout bytes before the process is killed with UpstreamError
    max_output_bytes: int = 256 * 1024 * 1024
    #: one stdout line longer than this is an UpstreamError (garbage / runaway output)
    max_line_bytes: int = 64 * 1024 * 1024
    #: how much of stderr's tail is kept for error messages
    stderr_tail_bytes: int = 64 * 1024
    #: files and directories removed when the process ends (image temp files, throw-away dirs)
    cleanup: list[Path] = field(default_factory=list)
    #: seconds between SIGTERM and SIGKILL
    kill_grace: float = 0.5
    #: called with each complete stderr line as it arrives; a :class:`StderrVerdict` it returns can fail the run
    #: (the group is killed and ``lines()`` / ``wait()`` raise the verdict's error)
    stderr_watch: Callable[[bytes], StderrVerdict | None] | None = None
    #: for error messages
    provider: str | None = None


# ---------------------------------------------------------------------------------------------- environment
#: parent variables every child gets when they are set
ENV_ALLOW_LIST: frozenset[str] = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TERM",
        "USER",
        "LOGNAME",
        "TZ",
        "TMPDIR",
        "SHELL",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
    }
)
#: parent variables with these prefixes are passed too (locale, XDG base directories)
ENV_ALLOW_PREFIXES: tuple[str, ...] = ("LC_", "XDG_")
#: variables by which a CLI recognises that it runs inside another agent; never passed, whatever the spec says,
#: so a CLI started from inside Claude Code / Codex / Gemini behaves like a top-level one
NESTING_MARKERS: frozenset[str] = frozenset(
    {
        "CLAUDECODE",
        "CLAUDE_CODE_ENTRYPOINT",
        "CLAUDE_CODE_SSE_PORT",
        "CODEX_SANDBOX",
        "CODEX_SANDBOX_NETWORK_DISABLED",
        "GEMINI_CLI",
    }
)


def build_env(
    env: Mapping[str, str] = {},
    pass_env: Sequence[str] = (),
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The child's environment: allow-listed parent variables, then ``pass_env`` names copied from the parent when
    set, then ``env`` (wins); nesting markers removed last."""
    source = os.environ if parent is None else parent
    out = {k: v for k, v in source.items() if k in ENV_ALLOW_LIST or k.startswith(ENV_ALLOW_PREFIXES)}
    for name in pass_env:
        value = source.get(name)
        if value is not None:
            out[name] = value
    out.update(env)
    for name in NESTING_MARKERS:
        out.pop(name, None)
    redact.register_env(out)  # a credential a child gets is masked in every log line and error message
    return out


# --------------------------------------------------------------------------------------------------- framing
class LineTooLong(ValueError):
    """A line grew past the framer's limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"a line of at least {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class LineFramer:
    """Splits a byte stream arriving in arbitrary chunks into lines (``\\n`` or ``\\r\\n`` endings removed).

    Each chunk is split once with :meth:`bytes.split`; an unterminated tail is kept as a list of fragments and
    joined once when its newline arrives, so a 20 MB line fed in 256 KB chunks costs O(n), not O(n²).
    """

    __slots__ = ("_fragments", "_partial", "max_line_bytes")

    def __init__(self, max_line_bytes: int | None = None) -> None:
        self.max_line_bytes = max_line_bytes
        self._fragments: list[bytes] = []
        self._partial = 0

    @property
    def pending(self) -> int:
        """Bytes of the unterminated line held so far."""
        return self._partial

    def feed(self, data: bytes) -> list[bytes]:
        """Complete lines in ``data`` (joined with what earlier chunks left). Raises LineTooLong."""
        limit = self.max_line_bytes
        if data.find(b"\n") < 0:
            if data:
                self._fragments.append(data)
                self._partial += len(data)
                # a trailing "\r" may yet turn out to be half of a "\r\n" ending: not counted
                if limit is not None and self._partial - data.endswith(b"\r") > limit:
                    raise LineTooLong(self._partial, limit)
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        if self._fragments:
            self._fragments.append(lines[0])
            lines[0] = b"".join(self._fragments)
        self._fragments = [tail] if tail else []
        self._partial = len(tail)
        if b"\r" in data or lines[0].endswith(b"\r"):
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if limit is not None:
            longest = max(map(len, lines))
            if longest > limit:
                raise LineTooLong(longest, limit)
            if self._partial - tail.endswith(b"\r") > limit:
                raise LineTooLong(self._partial, limit)
        return lines

    def finish(self) -> list[bytes]:
        """The last, unterminated line (if any) at end of stream."""
        if not self._fragments:
            return []
        line = b"".join(self._fragments)
        self._fragments = []
        self._partial = 0
        return [line[:-1] if line.endswith(b"\r") else line]


# --------------------------------------------------------------------------------------------------- process
#: reading stdout pauses while this many bytes of complete lines wait for the consumer, and resumes below the low mark
_QUEUE_HIGH = 4 * 1024 * 1024
_QUEUE_LOW = 1024 * 1024
#: after SIGKILL, how long to wait for the exit before giving up (a process stuck in the kernel)
_KILL_WAIT = 5.0
#: termination tasks still running, so they are not garbage-collected when their caller was cancelled
_BACKGROUND: set[asyncio.Task[None]] = set()


class _Protocol(asyncio.SubprocessProtocol):
    """Forwards the transport's callbacks to the Process (kept separate so Process has no protocol methods)."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports (the server runs on uvloop) do not subclass asyncio's ABCs
        proc_transport = cast(asyncio.SubprocessTransport, transport)
        self._proc._transport = proc_transport
        # set here, not after subprocess_exec returns: a quick child's exit callback can run before that
        self._proc.pid = proc_transport.get_pid()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._proc._on_stdout(data)
        else:
            self._proc._on_stderr(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._proc._on_pipe_lost(fd)

    def process_exited(self) -> None:
        self._proc._on_exit()

    def pause_writing(self) -> None:
        self._proc._stdin_paused = True

    def resume_writing(self) -> None:
        self._proc._stdin_paused = False
        self._proc._wake()


class _Lines:
    """The stdout line iterator of a Process (one per process). ``aclose()`` before the end kills the group."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc
        self.finished = False  # end of stdout was reached
        self.closed = False
        self.active = 0  # consumers currently waiting in __anext__

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> bytes:
        p = self._proc
        while True:
            if p._error is not None:
                await p._raise_error()
            if p._queue:
                line = p._queue.popleft()
                p._queued -= len(line)
                if p._reading_paused and p._queued < _QUEUE_LOW:
                    p._resume_reading()
                return line
            if p._stdout_eof or self.closed:
                self.finished = True
                raise StopAsyncIteration
            self.active += 1
            try:
                await p._wait_stdout()
            finally:
                self.active -= 1

    async def aclose(self) -> None:
        """Stop reading. Before the end of stdout this kills the process group (the consumer lost interest)."""
        if self.closed:
            return
        self.closed = True
        if not self.finished and not self._proc._stdout_eof:
            await self._proc.kill()


class Process:
    """A running child. Use as ``async with await start(spec) as proc:``; leaving the block kills the group.

    ``lines()`` yields stdout lines; ``wait()`` returns the exit code; ``stderr_tail()`` the end of stderr. A warm
    process (``keep_stdin_open=True``) is started ahead of need and handed its prompt with ``send()`` later;
    ``reset_deadline()`` then restarts the total-timeout clock for the request it now serves.
    """

    pid: int
    returncode: int | None

    def __init__(self, spec: ProcessSpec, *, name: str, cleanup: list[Path]) -> None:
        self.spec = spec
        self.name = name
        self.pid = 0
        self.returncode = None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.SubprocessTransport | None = None
        self._cleanup = cleanup
        # stdout
        self._framer = LineFramer(spec.max_line_bytes)
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._total = 0
        self._reading_paused = False
        self._stdout_eof = False
        self._lines = _Lines(self)
        # stderr
        self._stderr = bytearray()
        self._stderr_line = bytearray()  # the unfinished stderr line, only with a stderr_watch
        self._verdict: asyncio.TimerHandle | None = None
        # stdin
        self._stdin: asyncio.WriteTransport | None = None
        self._fifo: asyncio.BaseTransport | None = None  # stdin given through a FIFO (``spec.stdin_fifo``)
        self._stdin_closed = False
        self._stdin_lost = False
        self._stdin_paused = False
        # state shared by every waiter
        self._waiters: list[asyncio.Future[object]] = []
        self._error: LLMError | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._term_sent_at: float | None = None
        self._term_task: asyncio.Task[None] | None = None
        self._finished = False

    # ------------------------------------------------------------------------------------------ public API
    async def send(self, data: bytes) -> None:
        """Write to stdin (only with ``keep_stdin_open``); waits while the pipe is full."""
        if self._stdin is None or not self.spec.keep_stdin_open:
            raise InternalError("send() needs a process started with keep_stdin_open=True", provider=self.spec.provider)
        if self._stdin_closed:
            raise InternalError("send() after close_stdin()", provider=self.spec.provider)
        if self._error is not None:
            await self._raise_error()
        if self._stdin_lost or self.returncode is not None or self._finished:
            raise UpstreamError(
                f"{self.name}: cannot write to stdin, the process has exited",
                provider=self.spec.provider,
                detail=self.stderr_tail(),
            )
        self._stdin.write(data)
        while self._stdin_paused and not self._stdin_lost and not self._finished and self._error is None:
            await self._wait_change()

    async def close_stdin(self) -> None:
        """Close stdin (after what was written has been flushed); idempotent."""
        if self._stdin is not None and not self._stdin_closed:
            self._stdin_closed = True
            self._stdin.close()

    def lines(self) -> AsyncIterator[bytes]:
        """stdout lines, without the trailing newline; a last unterminated line is yielded too. Enforces the idle
        and total timeouts and the output caps. Closing the iterator early kills the process group.

        There is one iterator per process: every call returns the same object. ``async for`` with ``break`` does
        not close it; call ``aclose()`` (or leave the process's ``async with``)."""
        return self._lines

    async def wait(self) -> int:
        """Wait for exit (bounded by the total timeout) and return the exit code.

        stdout nobody is reading is drained and discarded (so a chatty child cannot block on a full pipe). Once
        stdout has ended and the process has exited, leftovers in its group are terminated and its working
        directory removed, as :meth:`kill` would."""
        lines = self._lines
        try:
            if not lines.finished and not lines.closed and not lines.active:
                async for _ in lines:
                    pass
            while self.returncode is None:
                if self._error is not None:
                    await self._raise_error()
                await self._wait_change()
        except BaseException:
            await self.kill()
            raise
        if self._error is not None:
            await self._raise_error()
        if self._stdout_eof:
            await self.kill()
        return self.returncode

    def stderr_tail(self) -> str:
        """The kept tail of stderr, decoded leniently."""
        keep = self.spec.stderr_tail_bytes
        tail = self._stderr[-keep:] if len(self._stderr) > keep else self._stderr
        return bytes(tail).decode("utf-8", errors="replace")

    async def kill(self) -> None:
        """SIGTERM the whole process group, SIGKILL after ``kill_grace``; idempotent; reaps the child.

        Also closes the pipes and removes the working directory and ``spec.cleanup`` paths. Shielded: a
        cancelled caller still gets a dead process group."""
        if self._finished:
            return
        if self.returncode is not None and self._term_task is None and not self._group_alive():
            self._finalize()
            return
        task = self._start_termination()
        with anyio.CancelScope(shield=True):
            await asyncio.shield(task)

    def fail(self, error: LLMError) -> None:
        """Stop the run with ``error``: the group is killed at once and ``lines()`` / ``wait()`` raise it (a runner's
        own watch, e.g. one that bounds a CLI's silent retry loop, ends a run this way)."""
        self._fail(error)

    def kill_soon(self) -> asyncio.Task[None] | None:
        """Start killing the group (as :meth:`kill`) without waiting; the task (None when already finished) can be
        awaited later. For owners that end idle processes from timers and callbacks."""
        if self._finished:
            return None
        if self.returncode is not None and self._term_task is None and not self._group_alive():
            self._finalize()
            return None
        return self._start_termination()

    def abandon(self) -> None:
        """SIGKILL the group and remove the cleanup paths at once, without the event loop: for a process whose
        loop is gone (a runner used from a second ``asyncio.run``), which can no longer be awaited."""
        if self.pid > 0 and not self._finished:
            _signal_group(self.pid, signal.SIGKILL)
            if _GUARD is not None and _GUARD.pid == os.getpid():
                _GUARD.discard(self.pid)
        release_paths(self._cleanup)

    def reset_output_count(self) -> None:
        """Start counting ``max_output_bytes`` from zero: a live process serving a conversation's next turn gets
        the whole cap for that turn, not what is left after the earlier ones."""
        self._total = 0

    def has_exited(self) -> bool:
        """Has the main process exited (or been killed)? Also true in the moment before the event loop has heard of
        it (a zombie not yet reaped): ``waitid`` with WNOWAIT looks without reaping, so the pidfd watch (or the
        loop's child watcher) still gets the exit status. For processes waiting between requests (spares, live
        conversations)."""
        if self.returncode is not None or self._finished:
            return True
        waitid = getattr(os, "waitid", None)
        if waitid is None or self.pid <= 0:
            return False
        try:
            return waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # already reaped by the child watcher
            return True

    def reset_deadline(self, timeout: float | None) -> None:
        """Restart the total-timeout clock now with ``timeout`` seconds (None = no limit): a warm process that
        waited in a pool gets its full budget for the request it is handed."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if timeout is not None and not self._finished:
            self._deadline = self._loop.call_later(timeout, self._on_deadline, timeout)

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.kill()

    def __del__(self) -> None:
        # last resort for a Process dropped without kill(): never leave the group running
        if not getattr(self, "_finished", True) and self.pid and self.returncode is None:
            _signal_group(self.pid, signal.SIGKILL)
            if _GUARD is not None and _GUARD.pid == os.getpid():
                _GUARD.discard(self.pid)

    # ------------------------------------------------------------------------------------- transport events
    def _on_stdout(self, data: bytes) -> None:
        if self._error is not None or self._finished:
            return
        self._total += len(data)
        spec = self.spec
        if self._total > spec.max_output_bytes:
            self._fail(
                UpstreamError(
                    f"{self.name}: output exceeded {spec.max_output_bytes} bytes (max_output_bytes); process killed",
                    provider=spec.provider,
                )
            )
            return
        try:
            lines = self._framer.feed(data)
        except LineTooLong as exc:
            self._framer = LineFramer(spec.max_line_bytes)  # drop the runaway line's fragments now
            self._fail(
                UpstreamError(
                    f"{self.name}: output exceeded the line limit: a stdout line of {exc.length}+ bytes is longer "
                    f"than {exc.limit} bytes (max_line_bytes); process killed",
                    provider=spec.provider,
                )
            )
            return
        if lines:
            self._queue.extend(lines)
            self._queued += sum(map(len, lines))
            if self._queued > _QUEUE_HIGH and not self._reading_paused:
                self._pause_reading()
        self._wake()

    def _on_stderr(self, data: bytes) -> None:
        buf = self._stderr
        buf += data
        keep = self.spec.stderr_tail_bytes
        if len(buf) > 2 * keep:
            del buf[:-keep]
        if self.spec.stderr_watch is not None:
            self._watch_stderr(data)

    def _watch_stderr(self, data: bytes) -> None:
        watch, pending = self.spec.stderr_watch, self._stderr_line
        assert watch is not None
        *complete, rest = (bytes(pending) + data).split(b"\n")
        pending[:] = rest[: self.spec.stderr_tail_bytes]  # a runaway line is cut, never held whole
        for line in complete:
            verdict = watch(line)
            if verdict is None or self._error is not None or self._finished:
                continue
            if self._verdict is not None:
                self._verdict.cancel()
                self._verdict = None
            if verdict.error is not None:
                self._verdict = self._loop.call_later(max(0.0, verdict.after), self._on_verdict, verdict.error)

    def _on_verdict(self, error: LLMError) -> None:
        self._verdict = None
        if self.returncode is None:
            self._fail(error)

    def _on_pipe_lost(self, fd: int) -> None:
        if fd == 1:
            if not self._stdout_eof:
                self._stdout_eof = True
                # after a failure nobody reads the rest: joining a partial line would only copy it
                rest = self._framer.finish() if self._error is None else []
                self._queue.extend(rest)
                self._queued += sum(map(len, rest))
        elif fd == 0:
            self._stdin_lost = True
        self._wake()

    def _on_exit(self) -> None:
        assert self._transport is not None
        self.returncode = self._transport.get_returncode()
        # whatever the main process left in its group (daemons, helpers holding stdout open) goes with it
        if self._term_sent_at is None and self._group_alive():
            self._signal(signal.SIGTERM)
            self._sweep = self._loop.call_later(self.spec.kill_grace, self._sweep_group)
        self._wake()

    def _sweep_group(self) -> None:
        self._sweep = None
        if self._group_alive():
            self._signal(signal.SIGKILL)

    def _on_deadline(self, timeout: float) -> None:
        self._deadline = None
        if self.returncode is None:
            self._fail(
                ProviderTimeout(
                    f"{self.name}: still running after {timeout:g} s (total timeout); process killed",
                    provider=self.spec.provider,
                )
            )

    # ------------------------------------------------------------------------------------------- internals
    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait_change(self, limit: float | None = None) -> bool:
        """Wait until something happens (data, EOF, exit, error). False when ``limit`` seconds passed first."""
        fut: asyncio.Future[object] = self._loop.create_future()
        self._waiters.append(fut)
        timer = self._loop.call_later(limit, _set_if_pending, fut, False) if limit is not None else None
        try:
            return await fut is not False
        finally:
            if timer is not None:
                timer.cancel()

    async def _wait_stdout(self) -> None:
        """Wait for more stdout; an idle timeout or cancellation kills the group."""
        idle = self.spec.idle_timeout
        try:
            if not await self._wait_change(idle):
                self._fail(
                    ProviderTimeout(
                        f"{self.name}: no output for {idle:g} s (idle timeout); process killed",
                        provider=self.spec.provider,
                    )
                )
        except BaseException:
            await self.kill()
            raise

    def _fail(self, error: LLMError) -> None:
        """Record the run's error and start killing the group now, even if nobody is awaiting."""
        if self._error is None and not self._finished:
            self._error = error
            self._start_termination()
        self._wake()

    async def _raise_error(self) -> NoReturn:
        await self.kill()
        error = self._error
        assert error is not None
        if error.detail is None:
            error.detail = self.stderr_tail() or None
        raise error

    def _pause_reading(self) -> None:
        pipe = self._transport.get_pipe_transport(1) if self._transport else None
        if pipe is not None:  # uvloop's pipe transports do not subclass asyncio.ReadTransport
            cast(asyncio.ReadTransport, pipe).pause_reading()
            self._reading_paused = True

    def _resume_reading(self) -> None:
        pipe = self._transport.get_pipe_transport(1) if self._transport else None
        self._reading_paused = False
        if pipe is not None:
            cast(asyncio.ReadTransport, pipe).resume_reading()

    def _group_alive(self) -> bool:
        return _group_alive(self.pid)

    def _signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGTERM and self._term_sent_at is None:
            self._term_sent_at = self._loop.time()
        _signal_group(self.pid, sig)

    def _start_termination(self) -> asyncio.Task[None]:
        if self._term_task is None:
            if self._term_sent_at is None:
                self._signal(signal.SIGTERM)  # at once, before any await: cancellation cannot skip it
            task = self._loop.create_task(self._terminate())
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
            self._term_task = task
        return self._term_task

    async def _terminate(self) -> None:
        try:
            assert self._term_sent_at is not None
            loop = self._loop
            deadline = self._term_sent_at + self.spec.kill_grace
            while self.returncode is None and loop.time() < deadline:
                await self._wait_change(deadline - loop.time())
            pause = 0.005
            while self._group_alive() and loop.time() < deadline:
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                pause = min(pause * 2, 0.05)
            killed = self.returncode is None or self._group_alive()
            if killed:
                self._signal(signal.SIGKILL)
            deadline = loop.time() + _KILL_WAIT
            while self.returncode is None and loop.time() < deadline:
                await self._wait_change(deadline - loop.time())
            # the rest of the group dies of the same SIGKILL, but not at the same instant as the main process (on a
            # loaded machine a grandchild may wait to be scheduled to exit): wait for it too, so that nothing of the
            # group is left when kill() returns
            pause = 0.002
            while killed and self._group_alive() and loop.time() < deadline:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
        finally:
            self._finalize()

    def _finalize(self) -> None:
        """Release everything: timers, pipes, the working directory and cleanup paths; wake every waiter."""
        if self._finished:
            return
        self._finished = True
        g = _GUARD if _GUARD is not None and _GUARD.pid == os.getpid() else None
        if g is not None:
            g.discard(self.pid)
        for handle in (self._deadline, self._sweep, self._verdict):
            if handle is not None:
                handle.cancel()
        self._deadline = self._sweep = self._verdict = None
        if self._transport is not None:
            self._transport.close()
        if self._fifo is not None:
            with contextlib.suppress(Exception):
                cast(asyncio.WriteTransport, self._fifo).abort()
            self._fifo = None
        self._stdout_eof = True
        self._stdin_lost = True
        # an unterminated line is never delivered now, and queued lines are not once the run failed or its reader
        # left: drop them at once (the Process sits in reference cycles, so it may wait for the cyclic GC, and a
        # flooded line is up to max_line_bytes)
        self._framer = LineFramer(self.spec.max_line_bytes)
        if self._error is not None or self._lines.closed:
            self._queue.clear()
            self._queued = 0
        release_paths(self._cleanup)
        self._wake()


# ---------------------------------------------------------------------------------------------- the guard
#: the environment variable every guarded child carries: ``<server pid>:<its start time>`` (the start-up reaper's mark)
OWNER_ENV = "LLM_RUNNERS_OWNER"
#: prefix of an instance's temp root in the system temp dir: ``llm-runners-serve-<pid>-<start time>``
INSTANCE_PREFIX = "llm-runners-serve-"

# The watchdog: started once per guarded process, reads "+pgid" / "-pgid" / "r<dir>" / "u<dir>" lines from a pipe
# whose only writer is that process. EOF (it is gone, however it died) = SIGKILL every registered group, remove the
# registered dirs.
_WATCHDOG = r"""
import os, shutil, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
groups, dirs, buf = set(), set(), b""
while True:
    try:
        data = os.read(0, 65536)
    except InterruptedError:
        continue
    if not data:
        break
    buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        kind, arg = line[:1], line[1:].decode()
        if kind == b"+":
            groups.add(int(arg))
        elif kind == b"-":
            groups.discard(int(arg))
        elif kind == b"r":
            dirs.add(arg)
        elif kind == b"u":
            dirs.discard(arg)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, an identity
    that a recycled pid does not share."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split(b" ")[19].decode()


class _Guard:
    """The orphan guarantee of one process (see :func:`guard`): its watchdog, the groups and paths registered with it
    and, for a server, the instance's temp root (``None`` for the automatic guard of library use)."""

    def __init__(self) -> None:
        me = os.getpid()
        self.pid = me
        self.owner = f"{me}:{_start_time(me)}"
        self.root: Path | None = None
        read, self._fd = os.pipe()
        os.set_inheritable(self._fd, False)
        try:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG], stdin=read, close_fds=True, start_new_session=True
            )
        except BaseException:
            os.close(self._fd)
            raise
        finally:
            os.close(read)
        self.groups: set[int] = set()

    def make_root(self) -> Path:
        """The instance's temp root (a server's): ``$TMPDIR/llm-runners-serve-<pid>-<start time>``, its ``owner``
        file naming the instance for the start-up reaper."""
        if self.root is None:
            root = Path(tempfile.gettempdir()) / f"{INSTANCE_PREFIX}{self.owner.replace(':', '-')}"
            root.mkdir(mode=0o700, exist_ok=True)
            (root / "owner").write_text(self.owner + "\n")
            self._send(f"r{root}")
            self.root = root
        return self.root

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._fd, (line + "\n").encode())

    def add(self, pgid: int) -> None:
        self.groups.add(pgid)
        self._send(f"+{pgid}")

    def discard(self, pgid: int) -> None:
        if pgid in self.groups:
            self.groups.discard(pgid)
            self._send(f"-{pgid}")

    def covers(self, path: Path) -> bool:
        """Is ``path`` under the instance's temp root (removed with it, so not registered on its own)?"""
        return self.root is not None and path.is_relative_to(self.root)

    def add_path(self, path: Path) -> None:
        if "\n" not in str(path) and not self.covers(path):
            self._send(f"r{path}")

    def discard_path(self, path: Path) -> None:
        if "\n" not in str(path) and not self.covers(path):
            self._send(f"u{path}")

    def forget(self) -> None:
        """In a forked child: drop the parent's pipe without killing anything (the groups are the parent's)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self.groups.clear()

    def close(self) -> None:
        """Kill every registered group, remove the instance's temp root, stop the watchdog (the server's exit)."""
        for pgid in list(self.groups):
            _signal_group(pgid, signal.SIGKILL)
        self.groups.clear()
        with contextlib.suppress(OSError):
            os.close(self._fd)  # EOF: the watchdog sweeps (the registered paths) and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.watchdog.wait(5)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


_GUARD: _Guard | None = None


def guard() -> Path:
    """Tie every child started from now on to this process's life (``llm-runners serve`` calls it at start-up).

    Returns the instance's temp root: ``tempfile`` puts every temp dir there from now on. Idempotent. (Library use
    needs no call: :func:`start` guards the process by itself, see :func:`_library_guard`.)"""
    root = _library_guard().make_root()
    tempfile.tempdir = str(root)
    return root


def _library_guard() -> _Guard:
    """The guard of a process that never called :func:`guard` (a program using a runner, ``llm-runners chat``):
    started by the first :func:`start`, so its children die with it even when it is SIGKILLed. It has no temp root
    and leaves ``tempfile`` alone (the program's own temp files are not ours); instead each process's cleanup
    paths (its working directory, the run's temp files) and each runner-owned directory (:func:`guard_path`) are
    registered with the watchdog, and unregistered when removed. At a normal exit (``atexit``) the groups still
    registered are killed. A child forked with ``os.fork`` (multiprocessing) gets a guard of its own on its first
    :func:`start`."""
    global _GUARD
    if _GUARD is None or _GUARD.pid != os.getpid():
        _drop_guard()
        _GUARD = _Guard()
    return _GUARD


def _drop_guard() -> None:
    """Forget a guard inherited through ``os.fork`` (it is the parent's; its pipe is closed here, nothing killed)."""
    global _GUARD
    if _GUARD is not None and _GUARD.pid != os.getpid():
        _GUARD.forget()
        _GUARD = None


def guard_path(path: str | Path) -> None:
    """Remove ``path`` (a directory) if this process dies without removing it: for directories that live longer
    than one process (a runner's working directory, a CLI home it owns). Nothing to do under a server's guard,
    whose temp root holds them."""
    g = _GUARD if _GUARD is not None and _GUARD.pid == os.getpid() else _library_guard()
    g.add_path(Path(path))


def temp_dir(prefix: str) -> Path:
    """A fresh directory in the temp dir (under a server's temp root while it is guarded), registered with the
    guard before anything is put in it (see :func:`guard_path`): the one way llm-runners makes its temp dirs.
    Remove it with :func:`release_paths`."""
    g = _library_guard()
    path = Path(tempfile.mkdtemp(prefix=prefix))
    g.add_path(path)
    return path


def release_paths(paths: Sequence[str | Path]) -> None:
    """Remove paths (directories or files) made by :func:`temp_dir` or registered with :func:`guard_path`, and
    unregister them from the guard."""
    g = _GUARD if _GUARD is not None and _GUARD.pid == os.getpid() else None
    for path in map(Path, paths):
        _remove_paths([path])
        if g is not None:
            g.discard_path(path)


def watchdog_pid() -> int | None:
    """The pid of this process's watchdog (None before the first child): tests that count their descendants
    leave it out."""
    return _GUARD.watchdog.pid if _GUARD is not None and _GUARD.pid == os.getpid() else None


def unguard() -> None:
    """The guarded process's last act: kill every child group still registered, remove the temp root, stop the
    watchdog."""
    global _GUARD
    g, _GUARD = _GUARD, None
    if g is not None and g.pid == os.getpid():
        if g.root is not None:
            tempfile.tempdir = None
        g.close()
    elif g is not None:
        g.forget()


atexit.register(unguard)
os.register_at_fork(after_in_child=_drop_guard)


def reap_dead_instances(tmp: str | Path | None = None) -> list[str]:
    """Remove what crashed instances left: their processes (marked with :data:`OWNER_ENV`) and their temp roots.

    An instance counts as dead when no process has its pid *and* start time, so a live server (this one or another)
    and every other program are left alone. Returns the owners reaped."""
    base = Path(tmp) if tmp is not None else Path(tempfile.gettempdir())
    dead: dict[str, Path | None] = {}
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            if not entry.name.startswith(INSTANCE_PREFIX) or not entry.is_dir() or entry.is_symlink():
                continue
            try:
                owner = (entry / "owner").read_text().strip()
            except OSError:
                continue
            if not _owner_alive(owner) and entry.name == INSTANCE_PREFIX + owner.replace(":", "-"):
                dead[owner] = entry
    marks: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(OWNER_ENV.encode() + b"="):
                marks[int(name)] = var.split(b"=", 1)[1].decode(errors="replace")
    for pid, owner in marks.items():
        if owner not in dead and _owner_alive(owner):
            continue
        dead.setdefault(owner, None)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for root in dead.values():
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    return sorted(dead)


def _owner_alive(owner: str) -> bool:
    pid, _, start = owner.partition(":")
    return pid.isdigit() and _start_time(int(pid)) == start


def _set_if_pending(fut: asyncio.Future[object], value: object) -> None:
    if not fut.done():
        fut.set_result(value)


def _group_alive(pgid: int) -> bool:
    """Does the process group still have a running (non-zombie) member?

    ``killpg(pgid, 0)`` answers for the common case. It also succeeds for a group of zombies only: orphans whose
    new parent does not reap them (a container whose PID 1 is not an init). So a success is confirmed by the
    group's leader (one read of its /proc stat: running, and still in the group), and only when the leader is gone
    is /proc scanned, so dead leftovers do not cost the whole kill grace on every run. (A scan on every check made
    the kill loop of a CLI that ignores SIGTERM cost ~20 ms of the event loop per poll on a loaded machine.)"""
    if pgid <= 0:  # never ask about (or signal) our own group
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pgid}/stat", "rb") as f:
            leader = f.read()
    except OSError:
        pass  # the leader is gone: another member keeps the group
    else:
        fields = leader[leader.rfind(b")") + 2 :].split(b" ", 3)
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split(b" ", 3)
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 0:  # killpg(0) would signal our own process group
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _remove_paths(paths: Sequence[Path]) -> None:
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass


def _checked_cwd(cwd: str | Path, provider: str | None) -> str:
    """Checked before the spawn as well: uvloop reports a failed chdir without naming the directory."""
    if not os.path.isdir(cwd):
        raise InvalidRequest(f"cannot use working directory {str(cwd)!r}: not a directory", provider=provider)
    return str(cwd)


def _pidfd_works() -> bool:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False
    try:
        os.close(pidfd_open(os.getpid()))
    except OSError:  # a kernel before 5.3, or a sandbox that filters the call
        return False
    return True


#: children are started with Popen and watched through a pidfd (Linux >= 5.3); otherwise with the loop's own spawn
_PIDFD = _pidfd_works()


class _PipeEnd(asyncio.Protocol):
    """One of a child's pipes, connected to the event loop: forwards to the child's protocol with its fd number."""

    def __init__(self, protocol: _Protocol, fd: int) -> None:
        self._protocol = protocol
        self._fd = fd

    def data_received(self, data: bytes) -> None:
        self._protocol.pipe_data_received(self._fd, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.pipe_connection_lost(self._fd, exc)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


class _Child:
    """A child started by :func:`_spawn`: its pipes are the loop's pipe transports, its exit is seen through a pidfd
    (readable once the child has exited; then it is reaped). The part of :class:`asyncio.SubprocessTransport` that
    :class:`Process` uses."""

    def __init__(self, loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes], protocol: _Protocol) -> None:
        self._loop = loop
        self._popen = popen
        self._protocol = protocol
        self._pipes: dict[int, asyncio.BaseTransport] = {}
        self._pidfd = os.pidfd_open(popen.pid)
        self._watching = False
        self._closed = False

    def get_pid(self) -> int:
        return self._popen.pid

    def get_returncode(self) -> int | None:
        return self._popen.returncode

    def get_pipe_transport(self, fd: int) -> asyncio.BaseTransport | None:
        return self._pipes.get(fd)

    def watch(self) -> None:
        if not self._watching and self._pidfd >= 0:
            self._watching = True
            self._loop.add_reader(self._pidfd, self._exited)

    def _exited(self) -> None:
        if self._popen.poll() is None:  # reaps it when it has exited
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        if not self._closed:
            self._protocol.process_exited()

    def close(self) -> None:
        """Close the pipes. A child still running is SIGKILLed, and reaped when it goes (never left a zombie)."""
        if self._closed:
            return
        self._closed = True
        for pipe in self._pipes.values():
            pipe.close()
        if self._pidfd >= 0:
            if self._popen.poll() is None:
                with contextlib.suppress(OSError):
                    self._popen.kill()
            self.watch()


#: stdout's pipe capacity: a pipe holds 64 KiB by default, so a chatty child's output would arrive in reads of at most
#: 64 KiB, many more of them, and each a heap allocation that fragments the server's memory (the soak's RSS grew
#: ~30 % with them); 1 MiB (Linux's default pipe-max-size) lets the loop read as much at once as from a socket pair
_PIPE_SIZE = 1 << 20


def _widen(fd: int) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):  # over the system's pipe-max-size, or the user's pipe quota: keep 64 KiB
            fcntl.fcntl(fd, set_size, _PIPE_SIZE)


async def _spawn(
    loop: asyncio.AbstractEventLoop, protocol: _Protocol, argv: list[str], stdin: int, env: dict[str, str], cwd: str
) -> None:
    """Start a child with :class:`subprocess.Popen`, which uses ``vfork``: ~0.7 ms of the event loop whatever the
    server's size, where uvloop's spawn (a ``fork``, copying the page tables) held the loop ~12 ms at 80 MB RSS and
    more as the server grows (measured side by side; asyncio's own spawn is Popen too, plus a watcher thread per
    child). The pipes are real pipes on every loop (uvloop's were socket pairs).

    The pipes are made here, not by Popen, so each descriptor has exactly one owner: an end handed to the loop is
    closed by the loop's transport (libuv closes it itself under uvloop, so its file object must not close it a
    second time: a late double close would shut whatever socket got the number meanwhile); an end not handed yet
    when something fails is closed here."""
    pairs = {fd: os.pipe() for fd in ((0, 1, 2) if stdin == subprocess.PIPE else (1, 2))}
    _widen(pairs[1][0])
    child_ends = {fd: (r if fd == 0 else w) for fd, (r, w) in pairs.items()}
    ours = {fd: (w if fd == 0 else r) for fd, (r, w) in pairs.items()}
    popen: subprocess.Popen[bytes] | None = None
    child: _Child | None = None
    try:
        try:
            popen = subprocess.Popen(  # noqa: ASYNC220 (deliberate: vfork + exec, see above)
                argv,
                stdin=child_ends.get(0, stdin),
                stdout=child_ends[1],
                stderr=child_ends[2],
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            for fd in child_ends.values():
                os.close(fd)
        child = _Child(loop, popen, protocol)
        protocol.connection_made(cast(asyncio.BaseTransport, child))
        closefd = not type(loop).__module__.startswith("uvloop")  # libuv closes a pipe's descriptor itself
        while ours:
            fd, end = ours.popitem()
            pipe = io.FileIO(end, "w" if fd == 0 else "r", closefd=closefd)
            connect = loop.connect_write_pipe if fd == 0 else loop.connect_read_pipe
            child._pipes[fd], _ = await connect(lambda fd=fd: _PipeEnd(protocol, fd), pipe)  # type: ignore[misc]
    except BaseException:  # failed or cancelled on the way: the ends not handed to the loop, and the child, go
        for end in ours.values():
            os.close(end)
        if popen is not None:
            _signal_group(popen.pid, signal.SIGKILL)
            if child is None:
                popen.wait()
            else:
                child.close()  # closes what the loop took, and reaps the child when it has gone
        raise
    child.watch()


async def _spawn_with_loop(
    loop: asyncio.AbstractEventLoop, protocol: _Protocol, argv: list[str], stdin: int, env: dict[str, str], cwd: str
) -> None:
    """Where there is no pidfd: the loop's own spawn (asyncio's child watcher, or libuv's)."""
    await loop.subprocess_exec(
        lambda: protocol,
        *argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


async def start(spec: ProcessSpec) -> Process:
    """Start the process. A binary that cannot be found or executed raises BinaryNotFound.

    From here on the process layer owns ``spec.cleanup``: the paths are removed when the process ends, or at once
    if it cannot be started."""
    argv = list(spec.argv)
    cleanup = [Path(p) for p in spec.cleanup]
    try:
        if not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise InvalidRequest(f"argv must be a non-empty list of strings, got {spec.argv!r}", provider=spec.provider)
        if any("\0" in a for a in argv):
            raise InvalidRequest("argv must not contain NUL bytes", provider=spec.provider)
        g = _library_guard()
        if spec.cwd is not None:
            cwd = _checked_cwd(spec.cwd, spec.provider)
        else:
            cwd = str(temp_dir("llm-runners-"))
            cleanup.append(Path(cwd))
        for path in cleanup:
            g.add_path(path)  # before the spawn: a SIGKILL while it runs leaves them to the watchdog too
        env = build_env(spec.env, spec.pass_env)
        env[OWNER_ENV] = g.owner
        name = spec.provider or os.path.basename(argv[0])
        proc = Process(spec, name=name, cleanup=cleanup)
        loop = proc._loop
        if spec.stdin_fifo and spec.keep_stdin_open:
            raise InvalidRequest("stdin_fifo cannot be combined with keep_stdin_open", provider=spec.provider)
        stdin_fd, fifo_fd = os.pipe() if spec.stdin_fifo else (None, None)
        try:
            spawn = _spawn if _PIDFD else _spawn_with_loop
            await spawn(loop, _Protocol(proc), argv, stdin_fd if stdin_fd is not None else subprocess.PIPE, env, cwd)
        except OSError as exc:
            if exc.filename is not None and str(exc.filename) == cwd:
                raise InvalidRequest(
                    f"cannot use working directory {cwd!r}: {exc.strerror}", provider=spec.provider
                ) from exc
            raise BinaryNotFound(_not_found_message(argv[0], spec.provider, exc), provider=spec.provider) from exc
        except BaseException:
            if fifo_fd is not None:
                os.close(fifo_fd)
            raise
        finally:
            if stdin_fd is not None:
                os.close(stdin_fd)  # the child has its own descriptor
    except BaseException:
        release_paths(cleanup)
        raise
    transport = proc._transport
    assert transport is not None
    g.add(proc.pid)
    if fifo_fd is not None:
        proc._stdin_closed = True
        fifo, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(fifo_fd, "wb", buffering=0))
        proc._fifo = fifo
        if spec.stdin:
            fifo.write(spec.stdin)
        fifo.close()  # after the buffer is written; a child that never reads gets it aborted when it ends
        proc.reset_deadline(spec.timeout)
        return proc
    pipe = transport.get_pipe_transport(0)
    assert pipe is not None
    stdin = cast(asyncio.WriteTransport, pipe)  # not isinstance: uvloop's pipe transports are not asyncio's classes
    proc._stdin = stdin
    if spec.stdin:
        stdin.write(spec.stdin)
    if not spec.keep_stdin_open:
        proc._stdin_closed = True
        stdin.close()
    proc.reset_deadline(spec.timeout)
    return proc


def _not_found_message(binary: str, provider: str | None, exc: OSError) -> str:
    who = f"{provider}: " if provider else ""
    if isinstance(exc, FileNotFoundError):
        where = "" if "/" in binary else " on PATH"
        return f"{who}binary {binary!r} not found{where} (or its interpreter is missing)"
    return f"{who}binary {binary!r} cannot be executed: {exc.strerror or exc}"


def find_binary(name: str, extra_dirs: Sequence[str | Path] = ()) -> str | None:
    """Resolve a binary on PATH (and in ``extra_dirs`` first); None when absent. Only executable regular files
    count; a name with a slash is checked as a path."""
    if not name:
        return None
    if os.sep in name:
        return name if _is_executable(name) else None
    dirs = [str(d) for d in extra_dirs]
    dirs += os.environ.get("PATH", os.defpath).split(os.pathsep)
    for directory in dirs:
        if not directory:
            continue
        candidate = os.path.join(directory, name)
        if _is_executable(candidate):
            return candidate
    return None


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


# ------------------------------------------------------------------------------------------ exit classification
def _code(pattern: str) -> str:
    """An HTTP-status-like number standing alone (not part of a path, version, line:column or larger number)."""
    return rf"(?<![\w:./-])(?:{pattern})(?!\w|[.:/-]\d)"


_Factory = Callable[[str, str | None, float | None], LLMError]

#: (pattern, label, factory) tried in order on each stderr line, last line first
_RULES: list[tuple[re.Pattern[str], str, _Factory]] = [
    (
        re.compile(
            r"context[ _-]?(?:length|window)|too long|maximum context|token count exceeds|exceeds the (?:maximum|"
            r"context)|too many (?:input )?tokens",
            re.I,
        ),
        "context length exceeded",
        lambda m, p, r: ContextLengthExceeded(m, provider=p),
    ),
    (
        re.compile(
            _code("401") + r"|unauthori[sz]ed|invalid[ _-]?(?:x-)?api[ _-]?key|incorrect api key|api key not valid|"
            r"not logged in|\blog ?in\b|authentication (?:failed|error|required)",
            re.I,
        ),
        "authentication failed",
        lambda m, p, r: AuthenticationError(m, provider=p),
    ),
    (
        re.compile(
            _code("429") + r"|rate[ _-]?limit|too many requests|quota|resource[ _-]?exhausted|usage limit", re.I
        ),
        "rate limited",
        lambda m, p, r: RateLimited(m, provider=p, retry_after=r),
    ),
    (
        re.compile(_code("403") + r"|\bforbidden\b", re.I),
        "permission denied",
        lambda m, p, r: PermissionDenied(m, provider=p),
    ),
    (
        re.compile(
            r"model_not_found|(?:unknown|invalid|unsupported) model|no such model|"
            r"model\b[^\n]{0,80}(?:not found|does not exist|is not available|not supported)",
            re.I,
        ),
        "model not found",
        lambda m, p, r: ModelNotFound(m, provider=p),
    ),
    (
        re.compile(_code("529|503") + r"|overloaded|service unavailable|over capacity", re.I),
        "overloaded",
        lambda m, p, r: Overloaded(m, provider=p, retry_after=r),
    ),
    (
        re.compile(_code(r"5\d\d") + r"|internal server error|bad gateway|gateway timeout", re.I),
        "upstream server error",
        lambda m, p, r: UpstreamError(m, provider=p),
    ),
]

_RETRY_RES = [
    re.compile(r"retry[-_ ]?after[\"']?\s*[:=]?\s*[\"']?(\d+(?:\.\d+)?)\s*([a-z]*)", re.I),
    re.compile(r"retry[-_ ]?delay[\"']?\s*[:=]\s*[\"']?(\d+(?:\.\d+)?)\s*([a-z]*)", re.I),
    re.compile(r"(?:retry|try again)\s+(?:in|after)\s+(\d+(?:\.\d+)?)\s*([a-z]*)", re.I),
]
_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0, "ms": 0.001}
_UNITS.update({"m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0})
_TAIL_LINES = 20
_LINE_CHARS = 500


def parse_retry_after(text: str) -> float | None:
    """Seconds to wait from a "retry after 30s" / "retryDelay": "20s" / "try again in 500ms" style hint."""
    for pattern in _RETRY_RES:
        for match in pattern.finditer(text):
            unit = match.group(2).lower()
            if unit in _UNITS:
                return float(match.group(1)) * _UNITS[unit]
    return None


def classify_exit(returncode: int, stderr: str, *, provider: str | None = None) -> LLMError:
    """Generic classification of a failed exit from its code and stderr text (auth / rate limit / context
    length / not found / upstream). Runners try their own dialect's parsing first and fall back to this.

    Signals and exit 127 are decided by the code; otherwise stderr lines are matched from the last one up (the
    last error line is the most telling; earlier lines are often start-up noise), each against the rules in
    priority order. The matching line becomes the message; the whole stderr text goes to ``detail``."""
    who = provider or "process"
    detail = stderr or None
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if returncode < 0:
        try:
            signame = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            signame = ""
        return UpstreamError(
            f"{who} was killed by signal {-returncode}{signame}{_tail_suffix(lines)}", provider=provider, detail=detail
        )
    if returncode == 127:
        last = f": {_clip(lines[-1])}" if lines else ""
        return BinaryNotFound(f"{who}: command not found (exit 127){last}", provider=provider, detail=detail)
    match = _match_rule(lines)
    if match is not None:
        line, label, factory = match
        error = factory(f"{who}: {label} (exit {returncode}): {_clip(line)}", provider, parse_retry_after(stderr))
        error.detail = detail
        return error
    return UpstreamError(f"{who} exited with code {returncode}{_tail_suffix(lines)}", provider=provider, detail=detail)


def classify_text(text: str, *, provider: str | None = None) -> LLMError | None:
    """The error kind an error message names (the rules of :func:`classify_exit`, last line first), or None when
    no rule matches: for errors that arrive as text rather than as an exit (an ACP agent's error reply, or an
    error it streams as answer text)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    match = _match_rule(lines)
    if match is None:
        return None
    line, label, factory = match
    error = factory(f"{provider or 'agent'}: {label}: {_clip(line)}", provider, parse_retry_after(text))
    error.detail = text
    return error


def _match_rule(lines: list[str]) -> tuple[str, str, _Factory] | None:
    for line in reversed(lines):
        for pattern, label, factory in _RULES:
            if pattern.search(line):
                return line, label, factory
    return None


def _clip(line: str) -> str:
    return line if len(line) <= _LINE_CHARS else line[: _LINE_CHARS - 1] + "…"


def _tail_suffix(lines: list[str]) -> str:
    if not lines:
        return ""
    return ":\n" + "\n".join(_clip(line) for line in lines[-_TAIL_LINES:])
