"""GitHub Copilot CLI (``copilot``, ``@github/copilot``) as a provider.

How a turn runs (facts measured on 1.0.102, see ``clis.md`` section 8):

- ``copilot --output-format json -s --no-auto-update … --usage-output-file <file>`` with the prompt on stdin (no
  ``-p``): stdin reaches the model verbatim, after the CLI's own ``<current_datetime>…</current_datetime>`` prefix.
- Token streaming: one ``assistant.message_delta`` (``deltaContent``) per upstream chunk; ``assistant.message``
  repeats the whole text and is used only for a message whose deltas never came. ``result`` carries the session id
  and ``exitCode``.
- Usage: no token counts appear in the JSON events. ``--usage-output-file`` makes the CLI write its final
  statistics (``modelMetrics.<model>.usage``: input, output, cache read/write and reasoning tokens) to a file when
  it exits; the parser reads it in :meth:`CopilotParser.finish`. It covers the whole process: a turn whose tool
  calls were refused makes two model calls, and both are counted.
- System prompt: there is no flag. An agent file ``<assets>/.github/agents/<name>.agent.md`` (front matter ``name``,
  ``description``, ``tools: []``, the text as body) loaded with ``--add-dir <assets> --agent <name>``: the CLI
  embeds the body in ``<agent_instructions>`` near the end of a shorter default prompt, framed as subordinate to
  the instructions above it. So the system prompt is an *addition*, never a replacement (capabilities say so).
- Sessions: ``--session-id=<uuid>`` starts one with our id, ``--resume=<id>`` continues it (the CLI re-sends the
  history). An unknown id: ``SessionNotFound`` and the base replays the history.
- Images: ``--attachment <file>`` per image.

Safety and the user's setup:
- Tools off: ``--available-tools=<a name no tool has>`` leaves the model no tool at all (the request declares
  ``tools: []``; a tool call the model makes anyway is answered "Tool 'bash' does not exist"). ``--no-ask-user``
  always; ``--disable-builtin-mcps`` (GitHub's MCP servers) and ``--no-custom-instructions`` (AGENTS.md,
  ``copilot-instructions.md``) unless ``user_config``. ``allow_tools=True`` drops the allow-list and adds
  ``--allow-all-tools``.
- A private ``COPILOT_HOME`` (:meth:`CopilotRunner.cli_home`, a runner-owned directory) holds only the user's login
  state: a link to their ``config.json`` (the CLI's own managed file: the GitHub login and first-run state) and a
  ``settings.json`` with the user's model choice (:data:`USER_SETTINGS_KEYS`). Their MCP servers
  (``mcp-config.json``), agents, skills, plugins, hooks and instruction files stay out. The BYOK provider
  (``COPILOT_PROVIDER_*``), ``COPILOT_MODEL`` and the GitHub token variables pass through. ``user_config=True``
  uses the user's real home. ``COPILOT_OFFLINE=true`` (no GitHub auth, telemetry, web tools, auto-update) is set
  when a BYOK provider is configured; telemetry is off in every case (``--disable-client-telemetry``).

Errors: exit 1 with ``session.error`` (``errorType`` authentication / rate_limit / query, ``statusCode``) and
``model.call_failure`` events (``statusCode``, ``errorMessage`` with the upstream body) before it. Measured: a 401 is
tried 3 times (2.8 s), a 429 6 times (6.2 s), a 500 6 times (17 s); a 404 or a context-length 400 once. There is no
knob for that loop, so the runner bounds it: from the first ``model.call_failure`` a run has
``error_deadline`` seconds (default 5; 1 s for an error no retry mends), then it is killed and the last failure is
raised, classified from its status and upstream body (:class:`RetryWatch`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from typing_extensions import Unpack

from .. import process
from ..errors import (
    AuthenticationError,
    ContextLengthExceeded,
    InvalidRequest,
    LLMError,
    ModelNotFound,
    RateLimited,
    SessionNotFound,
    UpstreamError,
    from_http_status,
)
from ..types import Capabilities, Done, StreamEvent, TextDelta, Usage, UsageEvent
from .base import (
    CLIRunner,
    ErrorWatch,
    Invocation,
    LineParser,
    RunnerOptions,
    Turn,
    Unreadable,
    int_or_zero,
    json_object,
    read_jsonc,
    retry_bound,
    write_if_changed,
)

PROVIDER = "copilot"

#: a tool name no tool has: as the only entry of ``--available-tools`` it leaves the model no tool at all
NO_TOOL = "llm_runners_no_tool"

#: flags of every run: JSONL events, no update, no telemetry, no questions to a user who is not there
BASE_ARGS: tuple[str, ...] = (
    "--output-format",
    "json",
    "-s",
    "--no-auto-update",
    "--disable-client-telemetry",
    "--no-ask-user",
)
#: unless ``user_config``: no GitHub MCP servers, no instruction files (AGENTS.md, copilot-instructions.md)
NO_USER_CONFIG_ARGS: tuple[str, ...] = ("--disable-builtin-mcps", "--no-custom-instructions")

#: the user's ``settings.json`` keys the private home keeps: their model choice and how their login is stored
USER_SETTINGS_KEYS: tuple[str, ...] = ("model", "reasoningEffort", "storeTokenPlaintext", "copilotUrl")
#: the user's own files the private home links to: the CLI-managed state that holds the login
LOGIN_FILES: tuple[str, ...] = ("config.json",)

_CONTEXT = re.compile(r"context[_ ]length|maximum context|context window|too many tokens|prompt is too long", re.I)
_MODEL = re.compile(r"model_not_found|model .{0,80}(?:not found|does not exist|not available|not supported)", re.I)
_NO_SESSION = re.compile(r"session .{0,80}(?:not found|does not exist|no such)|no session", re.I)
_STATUS_IN_TEXT = re.compile(r"\b(?:HTTP |Last error: )(\d{3})\b")


def prepare_cli_home(home: Path, user_home: Path) -> None:
    """Lay out a private ``COPILOT_HOME``: links to the user's login state (:data:`LOGIN_FILES`) and a
    ``settings.json`` with only :data:`USER_SETTINGS_KEYS` of theirs. Idempotent and cheap: runs before every turn,
    so a login made after the runner started is picked up. ``user_home`` is the user's own ``COPILOT_HOME``."""
    home.mkdir(parents=True, exist_ok=True)
    for name in LOGIN_FILES:
        source, link = user_home / name, home / name
        if source.is_file() and not os.path.lexists(link):
            link.symlink_to(source)
    user = read_jsonc(user_home / "settings.json")
    settings = {key: user[key] for key in USER_SETTINGS_KEYS if key in user}
    write_if_changed(home / "settings.json", json.dumps(settings, indent=2))


def agent_file(system: str) -> tuple[str, str]:
    """(agent name, file text) of the agent that carries a system prompt: tools none, the text as its body."""
    name = "llm-runners-" + hashlib.sha256(system.encode("utf-8")).hexdigest()[:12]
    front = f"---\nname: {name}\ndescription: system prompt of an llm-runners request\ntools: []\n---\n"
    return name, front + system + ("" if system.endswith("\n") else "\n")


def classify_failure(status: int | None, message: str, *, error_type: str | None = None) -> LLMError:
    """A failed model call or session error (its HTTP status, its message or upstream body) -> the error tree."""
    msg = f"copilot: {message.strip()}"
    if status is None:
        found = _STATUS_IN_TEXT.search(message)
        status = int(found.group(1)) if found else None
    error: LLMError
    if _CONTEXT.search(message):
        error = ContextLengthExceeded(msg, provider=PROVIDER)
    elif status == 401 or error_type == "authentication":
        error = AuthenticationError(msg, provider=PROVIDER)
    elif status == 429 or error_type == "rate_limit":
        error = RateLimited(msg, provider=PROVIDER, retry_after=process.parse_retry_after(message))
    elif status == 404 or _MODEL.search(message):
        error = ModelNotFound(msg, provider=PROVIDER)
    elif status is not None:
        error = from_http_status(status, msg, provider=PROVIDER)
    else:
        error = UpstreamError(msg, provider=PROVIDER)
    return error


def _upstream_message(raw: object) -> str:
    """The message inside a ``model.call_failure`` ``errorMessage`` (the upstream body, often JSON)."""
    if not isinstance(raw, str):
        return ""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    if isinstance(data, dict):
        inner = data.get("error") if isinstance(data.get("error"), dict) else data
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return raw


class CopilotParser:
    """``--output-format json`` lines of one run -> events; errors are raised from :meth:`finish`."""

    def __init__(self, *, model: str | None, resume: str | None, usage_file: Path) -> None:
        self.session_id: str | None = None
        self.unreadable = Unreadable()
        self.model = model
        self.resume = resume
        self.usage_file = usage_file
        #: the last failed model call while the CLI retries, and when the first one came (see :class:`RetryWatch`)
        self.retrying: LLMError | None = None
        self.failing_since: float | None = None
        self.error: LLMError | None = None
        self.exit_code: int | None = None
        self._streamed: set[str] = set()
        self._text = False

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json_object(line)
        if event is None:
            self.unreadable.add(line)
            return ()
        kind = event.get("type")
        raw = event.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if kind == "assistant.message_delta":
            text = data.get("deltaContent")
            if isinstance(data.get("messageId"), str):
                self._streamed.add(data["messageId"])
            if isinstance(text, str) and text:
                self._text = True
                return (TextDelta(text),)
        elif kind == "assistant.message":
            if isinstance(data.get("model"), str) and data["model"]:
                self.model = data["model"]
            content = data.get("content")
            if data.get("messageId") not in self._streamed and isinstance(content, str) and content:
                self._text = True
                return (TextDelta(content),)
        elif kind == "model.call_failure":
            status = data.get("statusCode")
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            self.retrying = classify_failure(
                status if isinstance(status, int) else None, _upstream_message(data.get("errorMessage"))
            )
        elif kind == "session.error":
            status = data.get("statusCode")
            text = data.get("message")
            message = text if isinstance(text, str) else json.dumps(data)
            error_type = data.get("errorType") if isinstance(data.get("errorType"), str) else None
            self.error = self._session_error(status if isinstance(status, int) else None, message, error_type)
        elif kind == "result":
            if isinstance(event.get("sessionId"), str):
                self.session_id = event["sessionId"]
            if isinstance(event.get("exitCode"), int):
                self.exit_code = event["exitCode"]
        return ()

    def _session_error(self, status: int | None, message: str, error_type: str | None) -> LLMError:
        """The final error; the upstream body of the last failed call says more than the CLI's summary."""
        error = classify_failure(status, message, error_type=error_type)
        last = self.retrying
        if last is not None and type(last) is not UpstreamError and type(error) in (UpstreamError, type(last)):
            error = type(last)(f"{error.message} ({last.message.removeprefix('copilot: ')})", provider=PROVIDER)
        return error

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        usage = self._read_usage()
        if self.error is not None:
            self.error.detail = stderr or None
            raise self.error
        if returncode != 0 or (self.exit_code or 0) != 0:
            if self.resume and _NO_SESSION.search(stderr):
                raise SessionNotFound(f"copilot: session {self.resume!r} cannot be resumed", provider=PROVIDER)
            if self.retrying is not None:
                raise self.retrying
            if "require an explicit model" in stderr:
                raise InvalidRequest(
                    "copilot: a BYOK provider (COPILOT_PROVIDER_BASE_URL) needs a model: set COPILOT_MODEL, the "
                    "runner's model option, or the request's model",
                    provider=PROVIDER,
                    param="model",
                    detail=stderr,
                )
            raise self.unreadable.annotate(process.classify_exit(returncode, stderr, provider=PROVIDER))
        if self.session_id is None:
            raise UpstreamError(
                "copilot exited without a result event" + self.unreadable.excerpt(),
                provider=PROVIDER,
                detail=stderr or None,
            )
        events: list[StreamEvent] = []
        if usage is not None:
            events.append(UsageEvent(usage))
        events.append(Done(finish_reason="stop", model=self.model, session_id=self.session_id))
        return events

    def _read_usage(self) -> Usage | None:
        """The token counts of the usage file the CLI wrote at exit (then removed), summed over its models."""
        try:
            data = json.loads(self.usage_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        finally:
            self.usage_file.unlink(missing_ok=True)
        metrics = data.get("modelMetrics") if isinstance(data, dict) else None
        if not isinstance(metrics, dict):
            return None
        total = Usage()
        for entry in metrics.values():
            usage = entry.get("usage") if isinstance(entry, dict) else None
            if isinstance(usage, dict):
                total = total + Usage(
                    input_tokens=int_or_zero(usage.get("inputTokens")),
                    output_tokens=int_or_zero(usage.get("outputTokens")),
                    cached_tokens=int_or_zero(usage.get("cacheReadTokens")),
                    reasoning_tokens=int_or_zero(usage.get("reasoningTokens")),
                )
        return total


class RetryWatch:
    """Ends a run the CLI keeps retrying: ``deadline`` seconds after the first failed model call (1 s for an error
    no retry can mend: unknown model, context length), with the last failure as the error."""

    interval = 0.25

    def __init__(self, parser: CopilotParser, deadline: float) -> None:
        self.parser = parser
        self.deadline = deadline

    def check(self) -> LLMError | None:
        since, error = self.parser.failing_since, self.parser.retrying
        if since is None or error is None:
            return None
        limit, stopped = retry_bound(error, self.deadline)
        return stopped if time.monotonic() - since >= limit else None


class CopilotRunner(CLIRunner):
    """GitHub Copilot CLI in prompt mode with JSONL output: token streaming, sessions, images, system prompt as an
    agent file (an addition to the CLI's own prompt)."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "GitHub Copilot CLI"
    capabilities: ClassVar[Capabilities] = Capabilities(
        verified=True,
        streaming=True,
        token_streaming=True,
        system_prompt=False,  # an agent file's body is embedded in the CLI's prompt, subordinate to it
        images=True,
        native_tools=False,
        agent_tools=True,
        sessions=True,
        usage=True,
    )
    #: None: the CLI's own choice (``COPILOT_MODEL``, the user's settings, or their Copilot plan's default)
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "copilot"
    package: ClassVar[str] = "@github/copilot"
    #: the session id and the usage file are per turn, so no spare could be started ahead of the turn
    warmable: ClassVar[bool] = False
    pass_env: ClassVar[tuple[str, ...]] = (
        "COPILOT_PROVIDER_BASE_URL",
        "COPILOT_PROVIDER_TYPE",
        "COPILOT_PROVIDER_API_KEY",
        "COPILOT_PROVIDER_API_KEY_COMMAND",
        "COPILOT_PROVIDER_BEARER_TOKEN",
        "COPILOT_PROVIDER_WIRE_API",
        "COPILOT_PROVIDER_TRANSPORT",
        "COPILOT_PROVIDER_AZURE_API_VERSION",
        "COPILOT_PROVIDER_MODEL_ID",
        "COPILOT_PROVIDER_WIRE_MODEL",
        "COPILOT_PROVIDER_MAX_PROMPT_TOKENS",
        "COPILOT_PROVIDER_MAX_OUTPUT_TOKENS",
        "COPILOT_PROVIDER_HEADERS",
        "COPILOT_PROVIDER_GHES_HOST",
        "COPILOT_MODEL",
        "COPILOT_OFFLINE",
        "COPILOT_GITHUB_TOKEN",
        "GH_TOKEN",
        "GITHUB_TOKEN",
        "GH_HOST",
        "COPILOT_GH_HOST",
        "COPILOT_HOME",
    )

    def __init__(self, *, error_deadline: float = 5.0, **options: Unpack[RunnerOptions]) -> None:
        super().__init__(**options)
        #: seconds a run may go on after the first failed model call before it is stopped (see
        #: :class:`RetryWatch`). A 401 costs 2.8 s of the CLI's own tries, a 429 6.2 s, a 500 17 s: 5 s is enough
        #: for a retry to succeed and short enough to fail in seconds. 0 turns the watch off.
        self.error_deadline = error_deadline
        self._cli_home: Path | None = None
        self._usage_dir: Path | None = None

    # ------------------------------------------------------------------------------------------ CLI home
    def user_cli_home(self) -> Path:
        """The user's own ``COPILOT_HOME`` (else ``~/.copilot``)."""
        configured = self.getenv("COPILOT_HOME")
        return Path(configured) if configured else self.home() / ".copilot"

    def cli_home(self) -> Path:
        """The ``COPILOT_HOME`` runs use: the runner's private one (made on first use, kept for the runner's
        lifetime so sessions resume, brought up to date on every call), or the user's with ``user_config``."""
        if self.user_config:
            return self.user_cli_home()
        if self._cli_home is None:
            self._cli_home = self.owned_tempdir("home-")
        prepare_cli_home(self._cli_home, self.user_cli_home())
        return self._cli_home

    def child_env(self) -> dict[str, str]:
        """Every process of this runner (turns, ``--version``, an ACP agent): the private ``COPILOT_HOME``, no
        auto-update, no colour, and offline mode when a BYOK provider is configured."""
        env = super().child_env()
        env["COPILOT_HOME"] = str(self.cli_home())
        env.setdefault("COPILOT_AUTO_UPDATE", "false")
        env.setdefault("NO_COLOR", "1")
        if self.getenv("COPILOT_PROVIDER_BASE_URL") and self.getenv("COPILOT_OFFLINE") is None:
            env["COPILOT_OFFLINE"] = "true"
        return env

    def usage_path(self, turn: Turn) -> Path:
        """The path of one run's ``--usage-output-file``: named after the run's (unique) assets directory, but
        outside it, since that is removed when the process ends, before the parser reads the file."""
        if self._usage_dir is None:
            self._usage_dir = self.owned_tempdir("usage-")
        return self._usage_dir / f"{turn.assets.name}.json"

    # ------------------------------------------------------------------------------------------ argv
    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, *BASE_ARGS]
        if not self.user_config:
            argv += NO_USER_CONFIG_ARGS
        if self.allow_tools:
            argv.append("--allow-all-tools")
        else:
            argv.append(f"--available-tools={NO_TOOL}")
        if turn.model:
            argv += ["--model", turn.model]
        if turn.system:
            name, text = agent_file(turn.system)
            agents = turn.assets / ".github" / "agents"
            agents.mkdir(parents=True, exist_ok=True)
            (agents / f"{name}.agent.md").write_text(text, encoding="utf-8")
            argv += ["--add-dir", str(turn.assets), "--agent", name]
        for image in turn.images:
            argv += ["--attachment", str(image)]
        if turn.resume:
            argv.append(f"--resume={turn.resume}")
        elif turn.session:
            argv.append(f"--session-id={turn.session}")
        argv += ["--usage-output-file", str(self.usage_path(turn))]
        return Invocation(argv=argv, stdin=turn.prompt.encode("utf-8"))

    def new_parser(self, turn: Turn) -> CopilotParser:
        return CopilotParser(model=turn.model, resume=turn.resume, usage_file=self.usage_path(turn))

    def error_watch(self, turn: Turn, parser: LineParser) -> ErrorWatch | None:
        if not isinstance(parser, CopilotParser) or self.error_deadline <= 0:
            return None
        return RetryWatch(parser, self.error_deadline)

    # ------------------------------------------------------------------------------------------ metadata
    def parse_version(self, output: str) -> str | None:
        """``GitHub Copilot CLI 1.0.102.`` (a sentence: the last dot is not part of the version)."""
        m = re.search(r"\d+\.\d+\.\d+(?:-[\w.]*\w)?", output)
        return m.group(0) if m else None

    def credential_files(self) -> list[Path]:
        """The config, which holds the login's tokens when no system keychain is available (``copilot_tokens``)."""
        return [self.user_cli_home() / "config.json"]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        if self.getenv("COPILOT_PROVIDER_BASE_URL"):
            return True, None  # BYOK: the provider's key (if it needs one) is its own business
        if any(self.getenv(v) for v in ("COPILOT_GITHUB_TOKEN", "GH_TOKEN", "GITHUB_TOKEN")):
            return True, None
        config = read_jsonc(self.user_cli_home() / "config.json")
        if config.get("logged_in_users") or config.get("last_logged_in_user") or config.get("copilot_tokens"):
            return True, None
        if (self.user_cli_home() / "config.json").is_file():
            return None, None  # the token may be in the system keychain, which cannot be checked from here
        return False, (
            "run `copilot login` (GitHub account with Copilot), set COPILOT_GITHUB_TOKEN, or point "
            "COPILOT_PROVIDER_BASE_URL (+ COPILOT_PROVIDER_API_KEY, COPILOT_MODEL) at your own model provider"
        )

    async def aclose(self) -> None:
        """The base removes the private home (its sessions with it; links are removed, never followed)."""
        self._cli_home = None
        self._usage_dir = None
        await super().aclose()
