"""Qwen Code (``qwen``, ``@qwen-code/qwen-code``) as a provider.

How a turn runs (facts measured on 0.15.10, see ``clis.md`` section 7):

- ``qwen -o stream-json --include-partial-messages …`` with the prompt on stdin (the model receives it followed by
  ``"\\n\\n"``, which the CLI appends). Token streaming comes from the ``stream_event`` wrappers
  (``content_block_delta`` ``text_delta`` / ``thinking_delta``); the complete ``assistant`` event repeats the text
  and is used only for a message whose deltas never came. ``result`` carries usage (``input_tokens`` is the whole
  prompt, ``cache_read_input_tokens`` the cached part of it) and the session id.
- The system prompt goes into a per-run file named by ``QWEN_SYSTEM_MD``, which replaces the default ~24 KB base
  prompt exactly as ``--system-prompt X`` does, but keeps a long prompt off argv (one argv string is limited to
  128 KiB on Linux). The CLI appends its short ``## Deferred Tools`` section when it has deferred tools (with tools
  off it has none) and its own ``output-language.md`` context. ``-m`` is passed verbatim.
- Sessions: ``--session-id <uuid>`` starts one with our id, ``-r <id>`` continues it (the CLI re-sends the history).
- A private CLI home (:meth:`QwenRunner.cli_home`, ``QWEN_HOME``): a ``settings.json`` with telemetry, usage
  statistics, auto-update, managed auto-memory (a second model call per run) and the startup context pair off,
  SDK retries 0, no context files, and the tools off: ``tools.core`` holds only a name no tool has and
  ``tools.exclude`` every tool 0.15.10 has, so the request declares ``tools: []``. The user's login and provider
  choice carry over: their ``security.auth`` (selected type, key, base URL), ``model.name`` and ``modelProviders``,
  a link to their Qwen OAuth credentials, and the ``OPENAI_*`` / ``DASHSCOPE_*`` variables. Their MCP servers,
  hooks, extensions, skills, QWEN.md / AGENTS.md and other settings stay out unless ``user_config=True`` (then the
  user's real ``~/.qwen`` is used as it is). ``allow_tools=True`` keeps the CLI's tool set, ``--approval-mode
  auto-edit``.
- ``QWEN_RUNTIME_DIR`` (runtime output: debug logs, temp files, session data) is always a directory of the runner.
- Images: ``@<path>`` references after the prompt (as for Gemini CLI, which Qwen Code forks) with the run's assets
  directory in ``--include-directories``; the CLI reads each file itself, also with every tool excluded, and sends it
  as an ``image_url`` part (a data URL), provided the model's ``modalities`` allow images: the CLI guesses them from
  the model name (a name it does not know gets none), so the private settings declare ``image: true`` (measured on
  0.15.10 against the fake API: without it the image becomes the text ``[Unsupported image file …]``).

Errors. The JSON modes exit 0 on API errors: the error is the assistant text (``[API Error: 401 Incorrect API key
provided: …]``) with ``is_error: false``. The parser never yields such a message as an answer; it classifies it
(401 -> AuthenticationError, 429 -> RateLimited, 404 / unknown model -> ModelNotFound, context length, 5xx).
Retry loop: a 429 or 5xx is tried 7 times with backoff (~80-100 s; the 7 is hard-coded, ``maxRetries: 0`` only
removes the SDK's own retries) and **nothing is printed while it retries**. The CLI writes each failed attempt
(``[RETRY] Attempt 1 failed with status 500…``) to its debug log ``<runtime dir>/debug/<session>.txt``; the runner
makes that file a link to the process's stderr, so :class:`RetryWatch` reads the attempts as they happen; from the first
one the run has ``error_deadline`` seconds (default 5; 1 s for an error no retry mends) before it is killed and the
last error raised. Measured: a 401 fails in ~2 s (1 request), a 500 in ~7 s instead of ~80 s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from typing_extensions import Unpack

from .. import process
from ..errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    RateLimited,
    SessionNotFound,
    UpstreamError,
    from_http_status,
)
from ..types import Capabilities, Done, ReasoningDelta, StreamEvent, TextDelta, Usage, UsageEvent
from .base import (
    CLIRunner,
    Invocation,
    RunnerOptions,
    Turn,
    Unreadable,
    at_references,
    int_or_zero,
    json_object,
    merged,
    read_jsonc,
    retry_bound,
    write_if_changed,
)

PROVIDER = "qwen"

#: a tool name no tool has: the only entry of ``tools.core``
NO_TOOL = "llm_runners_no_tool"
#: every tool of Qwen Code 0.15.10, excluded on top (the deferred and agent tools are not "core" tools)
ALL_TOOLS: tuple[str, ...] = (
    "agent",
    "ask_user_question",
    "edit",
    "exit_plan_mode",
    "glob",
    "grep_search",
    "list_directory",
    "lsp",
    "read_file",
    "read_many_files",
    "run_shell_command",
    "save_memory",
    "send_message",
    "skill",
    "task_stop",
    "todo_write",
    "tool_search",
    "web_fetch",
    "web_search",
    "write_file",
)
#: the settings of every run (tools off are added unless ``allow_tools``)
BASE_SETTINGS: dict[str, Any] = {
    "general": {"enableAutoUpdate": False, "checkpointing": {"enabled": False}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "memory": {"enableManagedAutoMemory": False},
    # image input declared: the CLI otherwise decides from the model's name whether it may send an image, and
    # replaces the image by "[Unsupported image file …]" text for names it does not know (the fake model's too)
    "model": {"skipStartupContext": True, "generationConfig": {"maxRetries": 0, "modalities": {"image": True}}},
    "context": {"fileName": ["LLM_RUNNERS_NO_CONTEXT_FILE.md"]},
}
NO_TOOLS_SETTINGS: dict[str, Any] = {"tools": {"core": [NO_TOOL], "exclude": list(ALL_TOOLS)}}
#: the user's login files in their ``~/.qwen`` the private home links to
LOGIN_FILES: tuple[str, ...] = ("oauth_creds.json",)

_API_ERROR = re.compile(r"^\s*\[API Error: (.*)\]\s*$", re.S)
_STATUS = re.compile(r"(?<![\w.])([45]\d\d)(?![\w.])")
_CONTEXT = re.compile(r"context[_ ]length|maximum context|context window|too many tokens|input is too long", re.I)
_MODEL = re.compile(r"model_not_found|model .{0,80}(?:not found|does not exist|not available|not supported)", re.I)
_RETRY_LINE = re.compile(r"\[RETRY\] Attempt \d+ failed(?: with status (\d{3}))?[^:]*?(?:Error: (.*))?$")
_OPENAI_ERROR_LINE = re.compile(r"\[OPENAI_ERROR\] OpenAI API Error: (.*)$")
_NO_SESSION = re.compile(r"No saved session found|session .{0,80}not found|Invalid session|cannot resume", re.I)


def classify_api_error(text: str) -> LLMError:
    """``[API Error: 401 Incorrect API key…]`` (or a retry notice's message) -> the error tree."""
    m = _API_ERROR.match(text)
    inner = m.group(1) if m else text.strip()
    status_match = _STATUS.search(inner[:12]) or _STATUS.search(inner)
    status = int(status_match.group(1)) if status_match else None
    msg = f"qwen: {inner}"
    error: LLMError
    if _CONTEXT.search(inner):
        error = ContextLengthExceeded(msg, provider=PROVIDER)
    elif status == 401:
        error = AuthenticationError(msg, provider=PROVIDER)
    elif status == 429:
        error = RateLimited(msg, provider=PROVIDER, retry_after=process.parse_retry_after(inner))
    elif status == 404 or _MODEL.search(inner):
        error = ModelNotFound(msg, provider=PROVIDER)
    elif status is not None:
        error = from_http_status(status, msg, provider=PROVIDER)
    else:
        error = UpstreamError(msg, provider=PROVIDER)
    return error


class QwenParser:
    """stream-json lines of one run (and its debug log on stderr) -> events; errors are raised from :meth:`finish`."""

    def __init__(self, *, model: str | None, resume: str | None, debug_link: Path | None = None) -> None:
        self.session_id: str | None = None
        self.unreadable = Unreadable()
        self.model = model
        self.resume = resume
        self.debug_link = debug_link
        self.error: LLMError | None = None
        self.result: dict[str, Any] | None = None
        self._streamed: set[str] = set()
        self._current: str | None = None

    # ------------------------------------------------------------------------------------------ stdout
    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json_object(line)
        if event is None:
            self.unreadable.add(line)
            return ()
        if isinstance(event.get("session_id"), str) and event["session_id"]:
            self.session_id = event["session_id"]
        kind = event.get("type")
        if kind == "stream_event":
            inner = event.get("event")
            return self._stream_event(inner) if isinstance(inner, dict) else ()
        if kind == "assistant":
            return self._assistant(event.get("message"))
        if kind == "system" and event.get("subtype") == "init" and isinstance(event.get("model"), str):
            self.model = event["model"] or self.model
        elif kind == "result":
            self.result = event
        return ()

    def _stream_event(self, event: dict[str, Any]) -> Iterable[StreamEvent]:
        etype = event.get("type")
        if etype == "message_start":
            message = event.get("message")
            if isinstance(message, dict) and isinstance(message.get("id"), str):
                self._current = message["id"]
        elif etype == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return ()
            if self._current is not None:
                self._streamed.add(self._current)
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
                return (TextDelta(delta["text"]),)
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str) and delta["thinking"]:
                return (ReasoningDelta(delta["thinking"]),)
        return ()

    def _assistant(self, message: object) -> Iterable[StreamEvent]:
        """A complete message: its text streamed already, unless no delta of it came (then it may be an API error
        dressed as an answer)."""
        if not isinstance(message, dict):
            return ()
        if isinstance(message.get("model"), str) and message["model"]:
            self.model = message["model"]
        message_id = message.get("id")
        if isinstance(message_id, str) and message_id in self._streamed:
            return ()
        if isinstance(message_id, str):
            self._streamed.add(message_id)
        content = message.get("content")
        events: list[StreamEvent] = []
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
                if _API_ERROR.match(block["text"]):
                    self.error = classify_api_error(block["text"])
                    return ()
                events.append(TextDelta(block["text"]))
            elif block.get("type") == "thinking" and isinstance(block.get("thinking"), str) and block["thinking"]:
                events.append(ReasoningDelta(block["thinking"]))
        return events

    # ------------------------------------------------------------------------------------------ exit
    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if self.debug_link is not None:
            self.debug_link.unlink(missing_ok=True)
        result = self.result
        if self.error is None and result is not None:
            text = result.get("result")
            if isinstance(text, str) and _API_ERROR.match(text):
                self.error = classify_api_error(text)
            elif result.get("is_error") is True:
                self.error = classify_api_error(str(text or result.get("error") or "qwen reported an error"))
        if self.error is not None:
            self.error.detail = json.dumps(result)[:4000] if result else (stderr[-4000:] or None)
            raise self.error
        if result is None:
            if self.resume and _NO_SESSION.search(stderr):
                raise SessionNotFound(
                    f"qwen: session {self.resume!r} cannot be resumed", provider=PROVIDER, detail=stderr[-4000:]
                )
            if returncode == 0:
                raise UpstreamError(
                    "qwen exited without a result event" + self.unreadable.excerpt(),
                    provider=PROVIDER,
                    detail=stderr[-4000:] or None,
                )
            raise self.unreadable.annotate(process.classify_exit(returncode, _without_debug(stderr), provider=PROVIDER))
        events: list[StreamEvent] = []
        usage = result.get("usage")
        if isinstance(usage, dict):
            events.append(
                UsageEvent(
                    Usage(
                        input_tokens=int_or_zero(usage.get("input_tokens")),
                        output_tokens=int_or_zero(usage.get("output_tokens")),
                        cached_tokens=int_or_zero(usage.get("cache_read_input_tokens")),
                    )
                )
            )
        events.append(Done(finish_reason="stop", model=self.model, session_id=self.session_id))
        return events


class RetryWatch:
    """Reads the CLI's debug log (linked to stderr) as it arrives and ends a run the CLI keeps retrying:
    ``deadline`` seconds after the first failed attempt (1 s for an error no retry mends), with the last failure
    as the error (see the module docstring)."""

    def __init__(self, *, deadline: float) -> None:
        self.deadline = deadline
        self.first: float | None = None

    def __call__(self, raw: bytes) -> process.StderrVerdict | None:
        if b"[OPENAI_ERROR]" in raw:
            m = _OPENAI_ERROR_LINE.search(raw.decode("utf-8", "replace"))
            if not m or "aborted" in m.group(1):  # "Request was aborted": the run is being stopped
                return None
            error = classify_api_error(m.group(1))
        elif b"[RETRY]" in raw:
            m = _RETRY_LINE.search(raw.decode("utf-8", "replace"))
            if not m:
                return None
            status, message = m.group(1) or "", (m.group(2) or "").strip()
            error = classify_api_error((message if message.startswith(status) else f"{status} {message}").strip())
        else:
            return None
        now = time.monotonic()
        if self.first is None:
            self.first = now
        limit, stopped = retry_bound(error, self.deadline)
        return process.StderrVerdict(stopped, after=max(0.0, self.first + limit - now))


def _without_debug(stderr: str) -> str:
    """stderr without the debug-log lines the runner routes there (``2026-…Z [LEVEL] …``)."""
    return "\n".join(line for line in stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z \[", line))


def login_settings(user: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the user's settings that says how they log in and which provider and model they use."""
    out: dict[str, Any] = {}
    security = user.get("security")
    if isinstance(security, dict) and isinstance(security.get("auth"), dict):
        out["security"] = {"auth": dict(security["auth"])}
    model = user.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        out["model"] = {"name": model["name"]}
    if isinstance(user.get("modelProviders"), dict):
        out["modelProviders"] = user["modelProviders"]
    return out


def prepare_cli_home(home: Path, user_home: Path, settings: Mapping[str, Any]) -> None:
    """Lay out a private ``QWEN_HOME``: ``settings`` over the user's login settings, and links to their login
    files. Idempotent and cheap: runs before every turn, so a login made after the runner started is picked up."""
    home.mkdir(parents=True, exist_ok=True)
    for name in LOGIN_FILES:
        source, link = user_home / name, home / name
        if source.is_file() and not os.path.lexists(link):
            link.symlink_to(source)
    text = json.dumps(merged(login_settings(read_jsonc(user_home / "settings.json")), settings), indent=2)
    write_if_changed(home / "settings.json", text)


class QwenRunner(CLIRunner):
    """Qwen Code in headless stream-json mode: token streaming, system prompt, sessions, usage."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Qwen Code"
    capabilities: ClassVar[Capabilities] = Capabilities(
        verified=True,
        streaming=True,
        token_streaming=True,
        system_prompt=True,
        images=True,
        native_tools=False,
        agent_tools=True,
        sessions=True,
        usage=True,
    )
    #: None: the CLI's own choice (the user's ``model.name``, ``OPENAI_MODEL``, or its default)
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "qwen"
    package: ClassVar[str] = "@qwen-code/qwen-code"
    #: the session id (and the debug-log link named after it) is per turn, so no spare could be started ahead
    warmable: ClassVar[bool] = False
    pass_env: ClassVar[tuple[str, ...]] = (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "DASHSCOPE_API_KEY",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "QWEN_HOME",
    )

    def __init__(self, *, error_deadline: float = 5.0, **options: Unpack[RunnerOptions]) -> None:
        super().__init__(**options)
        #: seconds a run may go on after the first failed attempt of the CLI's retry loop (see
        #: :class:`RetryWatch`): its first retry comes 1.5 s after the failure and the backoff doubles, so 5 s
        #: allows two retries. 0 turns the watch off.
        self.error_deadline = error_deadline
        self._cli_home: Path | None = None
        self._runtime_dir: Path | None = None

    # ------------------------------------------------------------------------------------------ CLI home
    def user_cli_home(self) -> Path:
        """The user's own Qwen home: ``QWEN_HOME``, else ``~/.qwen``."""
        configured = self.getenv("QWEN_HOME")
        return Path(configured) if configured else self.home() / ".qwen"

    def own_settings(self) -> dict[str, Any]:
        return BASE_SETTINGS if self.allow_tools else merged(BASE_SETTINGS, NO_TOOLS_SETTINGS)

    def cli_home(self) -> Path:
        """The ``QWEN_HOME`` runs use: the runner's private one (made on first use, brought up to date on every
        call), or the user's with ``user_config``."""
        if self.user_config:
            return self.user_cli_home()
        if self._cli_home is None:
            self._cli_home = self.owned_tempdir("home-")
        prepare_cli_home(self._cli_home, self.user_cli_home(), self.own_settings())
        return self._cli_home

    def runtime_dir(self) -> Path:
        """``QWEN_RUNTIME_DIR``: debug logs, temp files and session data, kept for the runner's lifetime."""
        if self._runtime_dir is None:
            self._runtime_dir = self.owned_tempdir("runtime-")
        return self._runtime_dir

    def child_env(self) -> dict[str, str]:
        """Every process of this runner (turns, ``--version``, an ACP agent): the private ``QWEN_HOME`` and the
        runner's runtime directory."""
        env = super().child_env()
        env["QWEN_HOME"] = str(self.cli_home())
        env["QWEN_RUNTIME_DIR"] = str(self.runtime_dir())
        env.setdefault("NO_COLOR", "1")
        return env

    def debug_link(self, session: str) -> Path:
        """``<runtime>/debug/<session>.txt``, linked to the process's stderr, so the parser sees the retry loop."""
        debug = self.runtime_dir() / "debug"
        debug.mkdir(parents=True, exist_ok=True)
        link = debug / f"{session}.txt"
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/stderr")
        return link

    # ------------------------------------------------------------------------------------------ argv
    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, "-o", "stream-json", "--include-partial-messages"]
        if self.allow_tools:
            argv += ["--approval-mode", "auto-edit"]
        if turn.model:
            argv += ["-m", turn.model]
        if turn.resume:
            argv += ["-r", turn.resume]
        elif turn.session:
            argv += ["--session-id", turn.session]
        if turn.images:
            argv += ["--include-directories", str(turn.assets)]
        env = {"QWEN_SYSTEM_MD": str(turn.tempfile("system.md", turn.system))} if turn.system else {}
        return Invocation(argv=argv, stdin=(turn.prompt + at_references(turn)).encode("utf-8"), env=env)

    def new_parser(self, turn: Turn) -> QwenParser:
        session = turn.resume or turn.session
        link = self.debug_link(session) if session else None
        return QwenParser(model=turn.model, resume=turn.resume, debug_link=link)

    def process_spec(self, turn: Turn, invocation: Invocation, cleanup: list[Path]) -> process.ProcessSpec:
        spec = super().process_spec(turn, invocation, cleanup)
        if self.error_deadline <= 0:
            return spec
        return dataclasses.replace(spec, stderr_watch=RetryWatch(deadline=self.error_deadline))

    # ------------------------------------------------------------------------------------------ metadata
    def credential_files(self) -> list[Path]:
        """The OAuth login and the settings (``security.auth.apiKey``)."""
        user = self.user_cli_home()
        return [*(user / name for name in LOGIN_FILES), user / "settings.json"]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        if self.getenv("OPENAI_API_KEY") or self.getenv("DASHSCOPE_API_KEY"):
            return True, None
        user = self.user_cli_home()
        if (user / "oauth_creds.json").is_file():
            return True, None
        auth = login_settings(read_jsonc(user / "settings.json")).get("security", {}).get("auth", {})
        if auth.get("apiKey") or auth.get("selectedType") in ("qwen-oauth", "vertex-ai"):
            return True, None
        return False, (
            "run `qwen` once and choose a login (Qwen OAuth or an API key), or set OPENAI_API_KEY "
            "(+ OPENAI_BASE_URL, OPENAI_MODEL) for an OpenAI-compatible provider"
        )

    async def aclose(self) -> None:
        self._cli_home = None
        self._runtime_dir = None
        await super().aclose()
