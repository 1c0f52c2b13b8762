"""The CLI runner base: everything a CLI dialect has in common.

A runner is a dialect, not a program. A dialect module declares its binary, capabilities and defaults, builds an
:class:`Invocation` from a :class:`Turn`, and turns stdout lines into StreamEvents with a :class:`LineParser`.
This base resolves the binary, renders prompts, keeps session continuity, writes images and other per-run files,
starts the process through :mod:`llm_runners.process` (the only place that starts processes), and answers
``health()`` and ``models()``. Process lifecycles: a one-shot run per turn (here); with ``warm=N`` a fresh
conversation may be served by a spare process started ahead of need (:mod:`llm_runners.runners.warm`); with
``live_max=N`` (on by default with ``warm`` for a dialect that can) a conversation keeps its process across turns
(:mod:`llm_runners.runners.live`). Both pieces share only :mod:`llm_runners.runners.turn`. The library default,
``warm=0``, spawns every turn cold; ``llm-runners serve`` turns warm on.

The working directory is one empty directory per runner instance (or the operator's ``cwd``), not one per run:
Claude Code and Gemini CLI file their sessions under the working directory, so a resume only finds its session
when it runs in the same directory as the turn that created it. With the CLI's tools off nothing is written there.

**The user's CLI setup: login in, tools out.** Every runner (the ones here and every runner added later, ACP agents
included) draws the same line through the user's own CLI configuration:

- *Carried over*, always: how the CLI reaches its model and proves who the user is. Login files and credentials,
  the endpoint (base URL, gateway, Bedrock / Vertex / proxy selection), an auth or API-key helper, provider
  definitions, the selected auth type, the default model and its reasoning settings, and the environment variables
  those entries name (a provider's ``env_key``), which therefore pass the environment allow-list. The user's CLI
  answers in their terminal, so it answers through the runner.
- *Kept out* unless the operator sets ``user_config = true``: what the CLI *does* with its model. MCP servers,
  hooks, plugins, skills, extensions, custom commands and agents, permissions and approval policies, instruction
  files (CLAUDE.md, AGENTS.md, GEMINI.md), notify commands, status lines, shell environment policies. Each dialect
  reads the user's files, keeps only the carried part and hands that to the CLI (a filtered settings file, ``-c``
  overrides, a private CLI home); it never lets the CLI read the rest.

**Fail in seconds.** ``health()`` says whether the user's CLI would answer (:meth:`CLIRunner.auth_status`), with
the precise reason and fix when not; a request to a runner whose auth status is ``False`` fails at once with that
:class:`~llm_runners.errors.AuthenticationError` (the status is cached for :data:`AUTH_RECHECK` seconds, so a
login made meanwhile is seen on the next request after that). Each dialect bounds the CLI's own retry loop to
``retries`` retries (default 0: none), so an unreachable or failing API becomes an error naming the endpoint within
seconds: retrying is the server's decision (a fallback chain). Every retry the CLI still makes is logged as it
happens on the logger ``llm_runners.runners.<provider>`` at WARNING (``llm-runners chat`` prints them to stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypedDict

from .. import process
from ..errors import (
    AuthenticationError,
    BinaryNotFound,
    InvalidRequest,
    LLMError,
    Overloaded,
    ProviderTimeout,
    SessionNotFound,
    UpstreamError,
)
from ..prompt import conversation_messages, images_of, render_new_messages, render_transcript
from ..provider import Provider
from ..quotas import Quota, QuotaBook
from ..redact import redact, register_files
from ..sessions import DEFAULT_STORE, SessionStore
from ..types import (
    ChatRequest,
    Done,
    Health,
    Message,
    ModelInfo,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
)
from .live import LivePool, default_live_max
from .turn import Invocation, Shape, Turn, shape_of
from .warm import WarmPool

__all__ = ["EPHEMERAL_KEY", "CLIRunner", "Invocation", "LineParser", "RunnerOptions", "Turn"]

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
}


def json_object(line: bytes) -> dict[str, Any] | None:
    """A stdout line as a JSON object, or None when it is anything else: not JSON, invalid UTF-8, an array or
    scalar, or nested too deeply for the decoder (which raises RecursionError, not ValueError)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


#: a JSON string (kept), a comment (dropped) or a comma before a closing bracket (dropped): JSONC, as the CLIs
#: read their settings files
_JSONC_NOISE = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/|,(?=\s*[}\]])', re.S)


def read_text(path: Path) -> str:
    """A text file's content, or "" when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return ""


def read_jsonc(path: Path) -> dict[str, Any]:
    """A JSON settings file as the CLIs read it (comments and trailing commas allowed), or ``{}`` when it is
    missing, unreadable or not an object."""
    try:
        data = json.loads(_JSONC_NOISE.sub(lambda m: m.group(1) or "", read_text(path)))
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``, objects recursively (neither is changed)."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def write_if_changed(target: Path, data: str, mode: int = 0o644) -> None:
    """Write only when the content changed, and atomically: runs still going may be reading the file."""
    if read_text(target) == data:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def at_references(turn: Turn) -> str:
    """``@path`` references for the turn's images, appended after a blank line (Gemini CLI and its fork Qwen Code):
    the CLI reads each file itself and sends it upstream inline; the dialect adds the assets directory to the
    workspace with ``--include-directories`` because the CLI only reads files inside the workspace."""
    if not turn.images:
        return ""
    return "\n\n" + " ".join("@" + str(path).replace(" ", "\\ ") for path in turn.images)


def int_or_zero(value: object) -> int:
    """A token count from a CLI's JSON: the integer itself, 0 for anything else (absent, null, a bool, a string)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Unreadable:
    """The first few stdout lines a parser could not read, clipped. An error about a CLI that printed something
    else than its event stream (a banner, an HTML error page, a crash dump, binary noise) then quotes what it
    printed instead of only saying that the expected event never came."""

    __slots__ = ("chars", "count", "keep", "lines")

    def __init__(self, *, keep: int = 3, chars: int = 120) -> None:
        self.keep = keep
        self.chars = chars
        self.count = 0
        self.lines: list[str] = []

    def add(self, line: bytes) -> None:
        self.count += 1
        if len(self.lines) < self.keep:
            head = line[: self.chars * 4].decode("utf-8", "replace")  # a slice: a huge line is never copied whole
            self.lines.append(head if len(head) <= self.chars else head[: self.chars - 1] + "…")

    def excerpt(self) -> str:
        """`` (unreadable output: 'a' | 'b' | 2 more lines)``, or "" when every line was readable."""
        if not self.count:
            return ""
        more = self.count - len(self.lines)
        quoted = [repr(line) for line in self.lines] + ([f"{more} more line{'s' * (more > 1)}"] if more else [])
        return f" (unreadable output: {' | '.join(quoted)})"

    def annotate(self, error: LLMError) -> LLMError:
        """Append the excerpt to a generic UpstreamError (a classified error already says what went wrong)."""
        suffix = self.excerpt()
        if suffix and type(error) is UpstreamError:
            error.message += suffix
            error.args = (error.message,)
        return error


class LineParser(Protocol):
    session_id: str | None

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        """One stdout line -> events. Unknown lines are ignored; an unrecoverable error event may raise."""
        ...

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        """After exit: the remaining events ending with Done, or raise the classified LLMError."""
        ...


class ErrorWatch(Protocol):
    """Bounds a CLI's retry loop from outside when the CLI has no knob for it: :meth:`CLIRunner.error_watch` may
    return one per run, and :meth:`check` is called every ``interval`` seconds while the run lasts. An error it
    returns ends the run at once (the process group is killed) and is what the caller gets.

    Why there are two mechanisms for that job, this one and :attr:`process.ProcessSpec.stderr_watch` (a verdict per
    stderr line, with a delay the process layer's timer keeps): they are fed by different things. A stderr watch
    is pushed each line as the process layer reads it, which only that layer does, and it serves the ACP agents
    too, whose processes have no runner loop around them (qwen, opencode, gemini and the ACP dialects use it). This
    watch is polled, because what it reads arrives in no stderr line: the stdout events the dialect's parser holds
    (copilot's failed model calls), a log file the CLI writes (continue), or silence itself (cline's retry loop
    prints nothing). Folding one into the other would make the process layer parse stdout or poll files, or a
    runner read the stderr the process layer owns. What a bound is and the error a stopped run ends with are one
    function for both, :func:`retry_bound` (copilot's poll and qwen's stderr watch use it)."""

    interval: float

    def check(self) -> LLMError | None: ...


async def _watch(proc: process.Process, watch: ErrorWatch) -> None:
    while True:
        await asyncio.sleep(watch.interval)
        error = watch.check()
        if error is not None:
            proc.fail(error)
            return


#: seconds a CLI gets to report an error no retry can mend by itself before its run is stopped
FINAL_ERROR_GRACE = 1.0


def retry_bound(error: LLMError, deadline: float) -> tuple[float, LLMError]:
    """For a CLI retrying after ``error``: how many seconds after its first failure the run is stopped (``deadline``
    when another attempt may mend it, i.e. a transient error or a 401 that may be a token to refresh; else at most
    :data:`FINAL_ERROR_GRACE`), and the error the caller then gets, which says so."""
    mendable = error.transient or isinstance(error, AuthenticationError)
    limit = deadline if mendable else min(deadline, FINAL_ERROR_GRACE)
    stopped = copy.copy(error)
    stopped.message = f"{error.message} (the CLI was still retrying {limit:g} s after the first failure; run stopped)"
    stopped.args = (stopped.message,)
    return limit, stopped


#: characters of a failed run's stderr tail in its warning line
FAILED_RUN_STDERR_CHARS = 2000


def _log_failed_run(provider: str, returncode: int, error: LLMError, stderr: str) -> None:
    """A failed run at warning, on ``llm_runners.runners.<provider>``: the error, and the end of what the CLI wrote
    to stderr (which the error message may only summarise). Not at info: a CLI's stderr may quote the prompt."""
    tail = redact(stderr.strip()[-FAILED_RUN_STDERR_CHARS:])
    logging.getLogger(f"llm_runners.runners.{provider}").warning(
        "run failed",
        extra={
            "fields": {"exit": returncode, "error_kind": error.kind, "error": error.message, "stderr": tail or None}
        },
    )


#: ``ChatRequest.extra`` key: True marks a throw-away conversation (no session remembered, nothing to resume)
EPHEMERAL_KEY = "ephemeral"

#: seconds a runner trusts its last auth status before a request checks again (a few file stats and env lookups)
AUTH_RECHECK = 2.0


@dataclass(frozen=True)
class AuthStatus:
    """Whether the user's CLI setup would let the CLI answer, as far as it can be told without a model call."""

    #: True: credentials for the configured endpoint are there; False: the CLI cannot answer; None: cannot tell
    authenticated: bool | None
    #: why not (one line), when ``authenticated`` is False
    reason: str | None = None
    #: what to do about it (one line), when ``authenticated`` is False
    fix: str | None = None


#: attribute set on the log records of retry notices (``llm-runners chat`` prints those as plain lines)
RETRY_NOTICE = "retry_notice"


def retry_logger(provider: str) -> logging.Logger:
    """The logger a runner reports its CLI's retries on: ``llm_runners.runners.<provider>``."""
    return logging.getLogger(f"llm_runners.runners.{provider}")


class _LiveProcessLost(Exception):
    """A live process died before it answered anything of the turn handed to it: the turn runs again, cold."""


class RunnerOptions(TypedDict, total=False):
    """The keyword options of :class:`CLIRunner`, for dialects that add their own (``**options: Unpack[...]``)."""

    binary: str | None
    env: Mapping[str, str] | None
    cwd: str | None
    timeout: float
    idle_timeout: float | None
    allow_tools: bool
    model: str | None
    extra_args: Sequence[str]
    sessions: SessionStore | None
    user_config: bool
    retries: int
    warm: int
    warm_idle: float
    live_max: int | None
    live_idle: float


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@\[\]+-]{0,199}")


def check_model_name(model: str | None, provider: str) -> None:
    """A model name from a request ends up in a CLI's argv (``--model X``): one that starts with ``-`` would be read
    as an option (``--yolo``), so only plain names pass."""
    if model is not None and not _MODEL_NAME.fullmatch(model):
        raise InvalidRequest(
            f"{provider}: invalid model name {model[:80]!r}: letters, digits and . _ : / @ [ ] + - only, "
            "not starting with '-'",
            provider=provider,
            param="model",
        )


class CLIRunner(Provider):
    binary_name: ClassVar[str] = ""
    package: ClassVar[str] = ""
    #: how to install the CLI, when it is not an npm package (else ``npm install -g <package>``)
    install: ClassVar[str] = ""
    pass_env: ClassVar[tuple[str, ...]] = ()
    known_models: ClassVar[tuple[str, ...]] = ()
    version_args: ClassVar[tuple[str, ...]] = ("--version",)
    #: variables that make the CLI bill an API key instead of the user's subscription (see subscription_billed)
    api_key_env: ClassVar[tuple[str, ...]] = ()
    #: whether a spare process can wait for its prompt on stdin (see :mod:`llm_runners.runners.warm`)
    warmable: ClassVar[bool] = True
    #: whether the CLI can resume a session non-interactively. When it cannot, no session is remembered and every
    #: turn replays the whole conversation; ``Done.session_id`` is only what the CLI reported
    resumable: ClassVar[bool] = True
    #: whether one process can serve a conversation's successive turns on stdin (see
    #: :mod:`llm_runners.runners.live`); such a dialect says where a turn ends with :meth:`turn_over`
    live_turns: ClassVar[bool] = False
    #: the longest stdout line a run may print. A line is the one thing held whole in memory (its fragments, the
    #: joined bytes and the decoded JSON: ~3x), so this bounds a run's memory. The largest legitimate lines are a
    #: complete assistant message (128k output tokens: ~1 MB of JSON) or, with tools on, a tool result carrying a
    #: base64 image (5 MB -> ~7 MB); 16 MiB leaves twice that.
    max_line_bytes: int = 16 * 1024 * 1024
    #: all stdout of one run. Lines stream through and are dropped (only answer text is kept), so this is a
    #: runaway guard rather than a memory bound: a long tool-using turn may legitimately print tens of MB
    max_output_bytes: int = 256 * 1024 * 1024

    def __init__(
        self,
        *,
        binary: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = 600.0,
        idle_timeout: float | None = 300.0,
        allow_tools: bool = False,
        model: str | None = None,
        extra_args: Sequence[str] = (),
        sessions: SessionStore | None = None,
        user_config: bool = False,
        retries: int = 0,
        warm: int = 0,
        warm_idle: float = 300.0,
        live_max: int | None = None,
        live_idle: float = 300.0,
    ) -> None:
        if warm and not self.warmable:
            raise TypeError(f"{self.name}: the CLI cannot be kept warm, so the runner takes no 'warm' option")
        if live_max and not self.live_turns:
            raise TypeError(f"{self.name}: the CLI cannot keep a process per conversation, so no 'live_max' option")
        self.binary = binary
        self.env: dict[str, str] = dict(env or {})
        self.cwd = cwd
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.allow_tools = allow_tools
        self.model = model
        self.extra_args = list(extra_args)
        self.sessions = sessions if sessions is not None else DEFAULT_STORE
        #: the subscription's rate-limit windows as the CLI reports them (a dialect's parser notes them)
        self.quota_book = QuotaBook()
        #: let the CLI read ALL of the user's own configuration (MCP servers, hooks, instruction files …); without
        #: it only the login / endpoint / provider part carries over (see the module docstring)
        self.user_config = user_config
        if retries < 0:
            raise ValueError(f"{self.name}: retries must be 0 or more, got {retries}")
        #: how often the CLI itself may retry a failed model API call before the runner reports the error
        self.retries = retries
        self._auth_checked: tuple[float, AuthStatus] | None = None
        self._binary_path: str | None = None
        self._workdir: Path | None = None
        self._version: str | None = None
        self._owned: list[weakref.finalize[..., CLIRunner]] = []
        #: the spare processes (``warm`` > 0), or None: every run is spawned cold
        self.warm_pool = WarmPool(self, size=warm, idle=warm_idle) if warm else None
        if live_max is None:  # on with warm (the server's default), sized from memory; off for one-shot use
            live_max = default_live_max() if warm and self.live_turns else 0
        #: the live processes of conversations (``live_max`` > 0), or None: every turn ends its process
        self.live_pool = LivePool(self.name, size=live_max, idle=live_idle) if live_max else None
        #: the most processes (running, live and spare together) this runner keeps, when a concurrency limit set it
        self.process_limit: int | None = None
        self._running = 0

    # ------------------------------------------------------------------------------------------ dialect hooks
    def invocation(self, turn: Turn) -> Invocation:
        raise NotImplementedError

    def new_parser(self, turn: Turn) -> LineParser:
        raise NotImplementedError

    def turn_over(self, parser: LineParser) -> bool:
        """For a dialect with ``live_turns``: has the parser seen the end of the turn (the process stays up)?"""
        return False

    def parse_version(self, output: str) -> str | None:
        m = re.search(r"\d+\.\d+\.\d+[\w.+-]*", output)
        return m.group(0) if m else None

    def credential_files(self) -> list[Path]:
        """The user's files in which the CLI keeps its login or keys: their secrets are masked in everything we
        write (:meth:`register_credentials`). None by default."""
        return []

    def register_credentials(self) -> None:
        """Register the secrets of :meth:`credential_files` with :mod:`llm_runners.redact` (a file is read again
        only once it changed): before each auth check and health report, so they are masked before any output of
        the CLI can carry them."""
        try:
            paths = self.credential_files()
        except Exception:  # a broken setup is reported by the auth check, not here
            return
        register_files(paths)

    async def check_auth(self) -> tuple[bool | None, str | None]:
        """(authenticated?, one-line fix). None when it cannot be told without a model call."""
        return None, None

    async def auth_status(self) -> AuthStatus:
        """Whether the user's setup lets the CLI answer, with the precise reason and fix when it does not. The
        default wraps :meth:`check_auth`; a dialect that can say more (which variable is missing) overrides it."""
        authenticated, fix = await self.check_auth()
        if authenticated is False:
            return AuthStatus(False, f"{self.display_name or self.name} is not logged in", fix)
        return AuthStatus(authenticated)

    def endpoint(self) -> str | None:
        """The model API the CLI talks to (its base URL), named in errors about an API it cannot reach or that
        fails; None when unknown."""
        return None

    def name_endpoint(self, error: LLMError) -> None:
        """Add the endpoint to an error about an unreachable, failing or silent API (UpstreamError, Overloaded,
        ProviderTimeout), so the operator sees which URL did not answer."""
        if not isinstance(error, UpstreamError | Overloaded | ProviderTimeout):
            return
        try:
            endpoint = self.endpoint()
        except Exception:  # a broken setup file is reported by health(); it must not hide the real error
            return
        if endpoint and endpoint not in error.message:
            error.message += f" (model API: {endpoint})"
            error.args = (error.message,)

    def user_default_model(self) -> str | None:
        """The default model the user's own CLI setup names, for dialects that must pass a model explicitly."""
        return None

    async def ensure_ready(self) -> None:
        """Fail at once, with the fix, when the auth status says the CLI cannot answer (see the module docstring)."""
        now = time.monotonic()
        if self._auth_checked is None or now - self._auth_checked[0] > AUTH_RECHECK:
            self.register_credentials()
            self._auth_checked = (now, await self.auth_status())
        status = self._auth_checked[1]
        if status.authenticated is False:
            label = self.display_name or self.name
            reason = status.reason or f"{label} is not logged in"
            raise AuthenticationError(f"{reason}" + (f"; fix: {status.fix}" if status.fix else ""), provider=self.name)

    def log_retry(self, notice: str) -> None:
        """Report one retry the CLI makes (WARNING on ``llm_runners.runners.<provider>``)."""
        retry_logger(self.name).warning("%s: %s", self.name, notice, extra={RETRY_NOTICE: True})

    async def list_models(self) -> list[str] | None:
        """Models listed live by the CLI, or None when it cannot list them."""
        return None

    def error_watch(self, turn: Turn, parser: LineParser) -> ErrorWatch | None:
        """A watch that ends a run stuck in the CLI's own retry loop (see :class:`ErrorWatch`); None: no watch."""
        return None

    def child_env(self) -> dict[str, str]:
        """The variables every process of this runner gets (turns and helper runs such as ``--version``): the
        operator's ``env``. A dialect that needs more for every process (e.g. a private CLI home) extends it."""
        return dict(self.env)

    def owned_tempdir(self, label: str) -> Path:
        """A directory this runner owns: removed by :meth:`aclose`, or when the runner is garbage-collected or the
        interpreter exits, whichever comes first, so a runner nobody closed leaves nothing behind in the temp dir."""
        path = process.temp_dir(f"llm-runners-{self.name}-{label}")  # the watchdog removes it on a SIGKILL too
        self._owned.append(weakref.finalize(self, shutil.rmtree, str(path), True))
        return path

    # ------------------------------------------------------------------------------------------ resolution
    @classmethod
    def install_hint(cls) -> str:
        """The command that installs the CLI (``install``, else the npm line of its ``package``)."""
        return cls.install or f"npm install -g {cls.package}"

    def find_binary(self) -> str | None:
        """The configured binary: a path as given, else a name looked up in the runner's own PATH, then the
        server's."""
        name = self.binary or self.binary_name
        path_var = self.env.get("PATH")
        extra = path_var.split(os.pathsep) if path_var else ()
        return process.find_binary(name, extra)

    @property
    def binary_path(self) -> str:
        if self._binary_path is None:
            found = self.find_binary()
            if found is None:
                raise BinaryNotFound(
                    f"{self.display_name or self.name}: `{self.binary or self.binary_name}` was not found. "
                    f"Install it with `{self.install_hint()}` or set the runner's binary path.",
                    provider=self.name,
                )
            self._binary_path = found
        return self._binary_path

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            if self.cwd is not None:
                self._workdir = Path(self.cwd)
            else:
                self._workdir = self.owned_tempdir("work-")
        return self._workdir

    def getenv(self, name: str) -> str | None:
        """A variable as the CLI's processes get it: from the runner's ``env``, else from the server's environment."""
        return self.env[name] if name in self.env else os.environ.get(name)

    def home(self) -> Path:
        """The HOME the CLI sees (the runner's env may override it)."""
        return Path(self.env.get("HOME") or os.environ.get("HOME") or Path.home())

    def quotas(self) -> list[Quota]:
        return self.quota_book.all()

    def session_scope(self) -> str:
        """Where this runner's CLI keeps the sessions it can resume: the host, the CLI's home and the working
        directory (the CLIs file sessions under them). Part of the session store's key, so a replica resumes only
        sessions it can reach (:mod:`llm_runners.sessions`)."""
        return f"{socket.gethostname()}|{self.home()}|{self.workdir}"

    # ------------------------------------------------------------------------------------------ streaming
    def _turn(self, request: ChatRequest, resume: str | None, first_new: int) -> Turn:
        messages = request.messages
        if resume is not None:
            sent = conversation_messages(messages[first_new:])
            prompt = render_new_messages(sent)
        else:
            sent = conversation_messages(messages)
            prompt = render_transcript(sent)
        assets = process.temp_dir(f"llm-runners-{self.name}-run-")  # guarded while it waits for its process
        parts = images_of(sent)
        files: list[Path] = []
        for i, img in enumerate(parts, start=1):
            if img.data is None:
                continue
            path = assets / f"image-{i}{_EXTENSIONS.get(img.media_type, '.img')}"
            path.write_bytes(img.data)
            files.append(path)
        return Turn(
            request=request,
            prompt=prompt,
            system=request.system or None,
            model=request.model or self.model or self.user_default_model() or self.default_model,
            resume=resume,
            session=None if resume else str(uuid.uuid4()),
            images=files,
            image_parts=parts,
            workdir=self.workdir,
            assets=assets,
            sent=sent,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        binary = self.binary_path  # fail fast, before any session is claimed
        del binary
        check_model_name(request.model, self.name)
        await self.ensure_ready()
        if self.resumable:
            claim = await self.sessions.aclaim(
                self.name, request.conversation, request.messages, scope=self.session_scope()
            )
            resume, first_new = claim.session_id, claim.first_new
        else:
            resume, first_new = None, 0
        while True:
            turn = self._turn(request, resume, first_new)
            text: list[str] = []
            calls: list[ToolCall] = []
            try:
                # aclosing: a consumer that stops early must close _run too (it kills the process) at once, not at GC
                async with contextlib.aclosing(self._run(turn)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            text.append(event.text)
                        elif isinstance(event, ToolCallEvent):
                            calls.append(event.call)
                        elif isinstance(event, Done):
                            event = self._finish_done(event, turn, text, calls)
                            await self.sessions.flush()  # the next turn, on whichever replica, finds the session
                        yield event
                return
            except _LiveProcessLost:
                continue  # the same turn again, cold: the live process is gone from the pool
            except SessionNotFound as exc:
                if turn.resume is None:  # nothing was resumed: whatever the CLI means, it is not the caller's fault
                    raise UpstreamError(f"{self.name}: {exc.message}", provider=self.name, detail=exc.detail) from exc
                if text or calls:
                    raise
                resume, first_new = None, 0  # the CLI lost the session: replay the whole history once

    def _finish_done(self, done: Done, turn: Turn, text: list[str], calls: list[ToolCall]) -> Done:
        session_id = done.session_id or turn.resume or turn.session if self.resumable else done.session_id
        if session_id and self.resumable and not turn.request.extra.get(EPHEMERAL_KEY):
            reply = Message(role="assistant", content="".join(text), tool_calls=calls)
            self.sessions.remember(
                self.name,
                turn.request.conversation,
                turn.request.messages,
                reply,
                session_id,
                scope=self.session_scope(),
            )
        model = done.model or turn.model
        if session_id != done.session_id or model != done.model:
            done = dataclasses.replace(done, session_id=session_id, model=model)
        return done

    async def _run(self, turn: Turn) -> AsyncGenerator[StreamEvent, None]:
        cleanup = [turn.assets]
        try:
            invocation = self.invocation(turn)
            parser = self.new_parser(turn)
            spec = self.process_spec(turn, invocation, cleanup)
            live, shape = self._live_shape(turn)
        except BaseException:
            process.release_paths([turn.assets])
            raise
        # a dialect whose process reads turns from stdin gets stdin open: the process may serve the conversation's
        # next turn too, and otherwise stdin is closed when the turn ended (see the session-file note, claude_code)
        spec.keep_stdin_open = self.live_turns
        proc = await live.take(turn.resume, shape, spec) if live is not None and turn.resume is not None else None
        if proc is not None:
            process.release_paths([turn.assets])  # the live process keeps the files it was started with
        warm = self.warm_pool if turn.resume is None else None  # a resumed turn never takes a spare
        key = shape_of(spec, turn) if warm is not None else None
        if proc is None and warm is not None and key is not None:
            proc = await warm.take(key, spec, turn, keep_stdin=self.live_turns)
            if proc is not None:
                parser = self.new_parser(turn)  # the turn now carries the spare's session id
        was_live = proc is not None and turn.resume is not None and live is not None
        self._running += 1
        parked = False
        try:
            if proc is None:
                self._make_room()
                proc = await self._start(spec)
            watch = self.error_watch(turn, parser)
            watcher = asyncio.ensure_future(_watch(proc, watch)) if watch is not None else None
            lines = proc.lines()
            ended = False  # the turn's end seen on a process that stays up
            said = False  # an event reached the consumer
            closing = not self.live_turns
            try:
                async for line in lines:
                    for event in self._parse(parser.feed, line):
                        said = True
                        yield event
                    if not closing and self.turn_over(parser):
                        if live is not None:
                            ended = True
                            break
                        await proc.close_stdin()  # the turn is over: the CLI exits once it reads end of input
                        closing = True
            except LLMError as exc:
                self.name_endpoint(exc)
                raise
            finally:
                if watcher is not None:
                    watcher.cancel()
                if not ended:
                    await lines.aclose()  # type: ignore[attr-defined]
            if was_live and not ended and not said:
                # it died as the turn began (a crash just before, not yet seen as an exit): nothing was answered
                raise _LiveProcessLost
            returncode = 0 if ended else await proc.wait()
            stderr = proc.stderr_tail()
            try:
                events = self._parse(lambda _: parser.finish(returncode, stderr), None)
            except LLMError as exc:
                self.name_endpoint(exc)
                _log_failed_run(self.name, returncode, exc, stderr)
                raise
            # before the last events: a consumer may stop reading at Done
            if live is not None and shape is not None and ended:
                done = next((e for e in events if isinstance(e, Done)), None)
                session = (done.session_id if done else None) or turn.resume or turn.session
                if session:
                    live.park(session, shape, proc)
                    parked = True
            if warm is not None and key is not None and self._room_for_spare():
                warm.replenish(turn, key)
            for event in events:
                yield event
        finally:
            self._running -= 1
            if proc is not None and not parked:
                await proc.kill()

    async def _start(self, spec: process.ProcessSpec) -> process.Process:
        try:
            return await process.start(spec)
        except BinaryNotFound as exc:  # found, but it cannot run (bad interpreter, not an executable format)
            exc.message += f". Reinstall it with `{self.install_hint()}` or set the runner's binary path."
            exc.args = (exc.message,)
            raise

    def _live_shape(self, turn: Turn) -> tuple[LivePool | None, Shape | None]:
        """The live pool and this turn's shape as a live process sees it (the spec it would have as a fresh
        session, so ``--resume S`` and ``--session-id S`` compare equal); (None, None) when the turn's process
        cannot stay live (no pool, a throw-away conversation, a prompt naming its own files)."""
        live = self.live_pool
        if live is None or turn.request.extra.get(EPHEMERAL_KEY) is True:
            return None, None
        shell = dataclasses.replace(
            turn, resume=None, session=str(uuid.uuid4()), prompt="", images=[], image_parts=[], sent=[]
        )
        shape = shape_of(self.process_spec(shell, self.invocation(shell), []), shell)
        return (live, shape) if shape is not None else (None, None)

    # ------------------------------------------------------------------------------------------ process counts
    def processes(self) -> dict[str, int]:
        """This runner's CLI processes by state: ``running`` (serving a request), ``live`` (a conversation's,
        between its turns), ``spare`` (started ahead of need)."""
        return {
            "running": self._running,
            "live": len(self.live_pool) if self.live_pool is not None else 0,
            "spare": len(self.warm_pool) if self.warm_pool is not None else 0,
        }

    def limit_processes(self, limit: int) -> None:
        """Keep at most ``limit`` processes, running, live and spare together (the provider's concurrency limit):
        a turn that needs a new process first closes idle ones, least recently used live ones, then spares."""
        self.process_limit = limit

    def _make_room(self) -> None:
        """Close idle processes so that this runner's processes, the one about to start included, fit the limit."""
        if self.process_limit is None:
            return
        counts = self.processes()
        excess = counts["running"] + counts["live"] + counts["spare"] - self.process_limit
        if excess > 0 and self.live_pool is not None:
            excess -= self.live_pool.shed(excess)
        if excess > 0 and self.warm_pool is not None:
            self.warm_pool.shed(excess)

    def _room_for_spare(self) -> bool:
        if self.process_limit is None or self.warm_pool is None:
            return True
        counts = self.processes()
        return counts["running"] + counts["live"] + counts["spare"] + self.warm_pool.pending < self.process_limit

    def process_spec(self, turn: Turn, invocation: Invocation, cleanup: list[Path]) -> process.ProcessSpec:
        """How a turn's process is started (a warm spare is started from the same spec, minus the prompt)."""
        return process.ProcessSpec(
            argv=invocation.argv if invocation.extra_args_placed else [*invocation.argv, *self.extra_args],
            env={**self.child_env(), **invocation.env},
            pass_env=self.pass_env,
            cwd=turn.workdir,
            stdin=invocation.stdin,
            timeout=self.timeout,
            idle_timeout=self.idle_timeout,
            max_output_bytes=self.max_output_bytes,
            max_line_bytes=self.max_line_bytes,
            cleanup=cleanup,
            provider=self.name,
        )

    def _parse(self, step: Callable[[bytes], Iterable[StreamEvent]], line: bytes | None) -> list[StreamEvent]:
        """One parser step. Whatever the CLI printed, what escapes is events or an LLMError: a parser that trips
        over output it did not foresee (a KeyError, a TypeError) becomes an UpstreamError quoting the line."""
        try:
            return list(step(line or b""))
        except LLMError:
            raise
        except Exception as exc:
            quoted = Unreadable()
            if line is not None:
                quoted.add(line)
            where = f" on the line {quoted.lines[0]!r}" if quoted.lines else " at exit"
            raise UpstreamError(
                f"{self.name}: unexpected output from the CLI ({type(exc).__name__}: {exc}){where}",
                provider=self.name,
            ) from exc

    # ------------------------------------------------------------------------------------------ metadata
    async def version(self) -> str | None:
        if self._version is None:
            output = await self.run_quiet([self.binary_path, *self.version_args], limit=30.0)
            self._version = self.parse_version(output)
        return self._version

    async def run_quiet(self, argv: list[str], *, limit: float = 30.0) -> str:
        """Run a short helper command of the CLI (``--version``, a model list) and return its stdout."""
        spec = process.ProcessSpec(
            argv=argv,
            env=self.child_env(),
            pass_env=self.pass_env,
            cwd=self.workdir,
            timeout=limit,
            idle_timeout=None,
            max_output_bytes=self.max_line_bytes,  # held whole in memory, like one line
            max_line_bytes=self.max_line_bytes,
            provider=self.name,
        )
        out: list[bytes] = []
        async with await process.start(spec) as proc:
            async for line in proc.lines():
                out.append(line)
            await proc.wait()
        return b"\n".join(out).decode("utf-8", "replace")

    async def health(self) -> Health:
        self.register_credentials()
        path = self.find_binary()
        label = self.display_name or self.name
        if path is None:
            return Health(
                provider=self.name,
                installed=False,
                ready=False,
                reason=f"`{self.binary or self.binary_name}` not found",
                fix=self.install_hint(),
            )
        self._binary_path = path
        try:
            version = await self.version()
        except LLMError as exc:
            return Health(
                provider=self.name,
                installed=True,
                ready=False,
                path=path,
                reason=f"{label} did not start: {exc.message}",
                fix=f"reinstall it: {self.install_hint()}",
            )
        status = await self.auth_status()
        self._auth_checked = (time.monotonic(), status)
        failed = status.authenticated is False
        return Health(
            provider=self.name,
            processes=self.processes(),
            installed=True,
            ready=not failed,
            path=path,
            version=version,
            authenticated=status.authenticated,
            reason=(status.reason or f"{label} is not logged in") if failed else None,
            fix=status.fix if failed else None,
        )

    async def models(self) -> list[ModelInfo]:
        listed = await self.list_models()
        names = listed if listed else [m for m in (self.default_model, *self.known_models) if m]
        seen: dict[str, None] = dict.fromkeys(names)
        return [ModelInfo(id=n, provider=self.name) for n in seen]

    def subscription_billed(self) -> bool:
        """A CLI runs on the user's login (a subscription) unless one of its API-key variables is set."""
        return not any(self.getenv(name) for name in self.api_key_env)

    async def aclose(self) -> None:
        # first: the spares and live processes run in directories removed below
        if self.live_pool is not None:
            await self.live_pool.aclose()
        if self.warm_pool is not None:
            await self.warm_pool.aclose()
        for finalizer in self._owned:
            finalizer()
        self._owned.clear()
        if self.cwd is None:
            self._workdir = None
