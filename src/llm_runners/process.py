"""The process layer: the only place in llm-runners that starts processes.

INTERFACE STUB — the signatures below are the contract the runners code against; the bodies are being written.

Rules it enforces:
- argv lists, never a shell; each child in its own process group (``start_new_session``);
- an environment allow-list (PATH, HOME, LANG, LC_*, TERM, USER, LOGNAME, TZ, TMPDIR, SSL/proxy CA vars, XDG_*)
  plus the variables the runner names (its own auth and config variables) plus ``spec.env``; nesting markers
  (``CLAUDECODE``, ``CLAUDE_CODE_ENTRYPOINT``, ``CODEX_SANDBOX*``, ``GEMINI_CLI``) are always removed;
- an isolated working directory by default (a fresh empty temp dir removed when the process ends);
- stdin: the prompt bytes written then closed, or an empty closed stdin, or kept open for a warm process;
- stdout read as lines with framing that copes with partial reads and multi-megabyte lines; an output cap;
- stderr drained concurrently into a bounded tail buffer (for error messages), never blocking the child;
- a total timeout and an idle timeout (no stdout for N s) raising ProviderTimeout after killing the group;
- timeout, cancellation, ``aclose()`` of the line iterator and leaving the ``async with`` all kill the whole
  process group: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .errors import LLMError


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
    #: for error messages
    provider: str | None = None


class Process:
    """A running child. Use as ``async with await start(spec) as proc:``; leaving the block kills the group."""

    pid: int
    returncode: int | None

    async def send(self, data: bytes) -> None:
        """Write to stdin (only with ``keep_stdin_open``)."""
        raise NotImplementedError

    async def close_stdin(self) -> None:
        raise NotImplementedError

    def lines(self) -> AsyncIterator[bytes]:
        """stdout lines, without the trailing newline; a last unterminated line is yielded too. Enforces the idle
        and total timeouts and the output caps. Closing the iterator early kills the process group."""
        raise NotImplementedError

    async def wait(self) -> int:
        """Wait for exit (bounded by the total timeout) and return the exit code."""
        raise NotImplementedError

    def stderr_tail(self) -> str:
        """The kept tail of stderr, decoded leniently."""
        raise NotImplementedError

    async def kill(self) -> None:
        """SIGTERM the whole process group, SIGKILL after ``kill_grace``; idempotent; reaps the child."""
        raise NotImplementedError

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.kill()


async def start(spec: ProcessSpec) -> Process:
    """Start the process. A binary that cannot be found or executed raises BinaryNotFound."""
    raise NotImplementedError


def find_binary(name: str, extra_dirs: Sequence[str | Path] = ()) -> str | None:
    """Resolve a binary on PATH (and in ``extra_dirs`` first); None when absent."""
    raise NotImplementedError


def classify_exit(returncode: int, stderr: str, *, provider: str | None = None) -> LLMError:
    """Generic classification of a failed exit from its code and stderr text (auth / rate limit / context
    length / not found / upstream). Runners try their own dialect's parsing first and fall back to this."""
    raise NotImplementedError
