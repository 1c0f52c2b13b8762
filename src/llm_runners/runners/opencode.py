"""OpenCode (``opencode``, ``opencode-ai``) as a provider, and the base of its fork Kilo (:mod:`.kilo`).

How a turn runs (facts measured on 1.18.33, see ``clis.md`` section 6):

- ``opencode run --format json --title <t> --agent llm-runners --thinking --print-logs --log-level ERROR`` with the
  prompt on stdin: stdin reaches the model verbatim, whereas a multi-word positional prompt arrives wrapped in
  literal double quotes. ``--title`` skips the title-generation request a new session otherwise makes first;
  ``--thinking`` adds the ``reasoning`` events (reasoning deltas).
- ``run`` prints one NDJSON event per finished part (``step_start``, ``text``, ``reasoning``, ``tool_use``,
  ``step_finish``, ``error``), each with the session id (``ses_…``). A ``text`` event holds a whole text part:
  there are no token deltas in this mode (``opencode acp`` streams; that is the ACP runner's job).
  ``step_finish`` carries the finish reason, ``tokens`` (input without the cache, output, reasoning,
  ``cache.read`` / ``cache.write``) and ``cost``.
- A private CLI home per runner (:meth:`OpenCodeRunner.cli_home`): ``HOME`` and the four ``XDG_*`` directories
  point into a directory the runner owns, so the user's global config, ``~/.opencode`` (agents, commands,
  plugins), AGENTS.md, skills and session database stay out; project config is off
  (``OPENCODE_DISABLE_PROJECT_CONFIG``), and so are Claude Code's files, plugins, sharing, updates, model
  fetches and auto-compaction (a context overflow is an error, not a hidden summarising request). What carries
  over is the user's login and choice of provider: the ``provider``, ``model``, ``small_model``,
  ``enabled_providers`` and ``disabled_providers`` of their config files (``$XDG_CONFIG_HOME/opencode/*.json[c]``
  and ``OPENCODE_CONFIG``), their ``auth.json`` (linked, so refreshed tokens are written back) and the variables
  those configs name (``{env:NAME}``) plus the usual provider key variables, and the cloud logins of the real
  HOME (``~/.aws``, gcloud application-default credentials) through the variables the SDKs read.
  ``user_config=True`` runs the CLI with the user's real home and config instead.
- The system prompt: an agent ``llm-runners`` defined in the run's own config file (``OPENCODE_CONFIG``). Its
  prompt replaces OpenCode's ~9.7 KB coding prompt; the CLI still appends one line naming the model and an
  ``<env>`` block (working directory, platform, date). Without a system message the agent gets
  :data:`NO_SYSTEM_PROMPT` (an empty prompt would bring the coding prompt back).
- Tools off: the agent's ``tools`` are ``{"*": false}`` and every permission is ``deny``: the request carries no
  ``tools`` at all. ``allow_tools`` drops both (the CLI's defaults).
- Images: each file is attached with ``-f <path>``; the CLI reads it (shown upstream as a ``Read`` call it made
  itself) and sends it as an ``image_url`` part when the model's ``modalities.input`` includes ``image`` (catalogue
  models say so; a custom provider's model needs it in the user's config, otherwise the CLI sends the text
  ``ERROR: Cannot read "…" (this model does not support image input)``). Every permission stays denied and the
  model still gets no tools. Measured on 1.18.33 against the fake API. (Kilo refuses such an attachment while its
  ``read`` permission is denied, and allowing it offers the model the ``read`` tool, so Kilo's exec transport takes
  no images; its ACP transport, the default, sends image blocks.)
- Models are ``provider/model``; a bare name gets the provider of the configured default model. ``models()``
  asks ``opencode models`` (offline: the user's providers plus the bundled catalogue).
- Sessions: ``--session ses_…`` resumes (the CLI re-sends the whole history upstream); sessions live in the
  private home's database, kept for the runner's lifetime.
- Errors: exit 1 and one ``{"type":"error"}`` line on stdout: ``APIError`` with the HTTP ``statusCode``,
  ``ContextOverflowError``, ``UnknownError`` (an unknown model: the name is only in the log,
  ``ProviderModelNotFoundError``).
- Retries: a 401 / 404 / context overflow is not retried, but a 429 or 5xx is retried up to 6 times (~70 s),
  with no knob. The runner therefore reads the CLI's own error log (``--print-logs --log-level ERROR``): every
  failed attempt logs ``message="stream error" … error.error="…"``, and a failure the CLI gives up on is followed
  at once by a ``message=process … error=`` line. A ``stream error`` not followed by that line within
  ``error_deadline`` seconds (default 1 s; the CLI's first retry waits >= 1 s), or a second ``stream error``, ends
  the run: the process is killed and the last error reported, classified from its message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
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
    Overloaded,
    RateLimited,
    SessionNotFound,
    UpstreamError,
    from_http_status,
)
from ..types import (
    Capabilities,
    Done,
    FinishReason,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Usage,
    UsageEvent,
)
from .base import (
    CLIRunner,
    Invocation,
    RunnerOptions,
    Turn,
    Unreadable,
    int_or_zero,
    json_object,
    read_jsonc,
    write_if_changed,
)

#: the agent every run uses; defined in the run's config file
AGENT = "llm-runners"
#: the agent prompt when the request has no system message (an empty one would bring back the CLI's coding prompt)
NO_SYSTEM_PROMPT = "You are a helpful assistant."
#: the keys of the user's config that carry over: their login and choice of model provider
PROVIDER_KEYS: tuple[str, ...] = ("provider", "model", "small_model", "enabled_providers", "disabled_providers")
#: every permission the CLI asks for, denied (tools off)
DENY_ALL: dict[str, str] = {
    name: "deny"
    for name in (
        "edit",
        "bash",
        "webfetch",
        "websearch",
        "codesearch",
        "read",
        "glob",
        "grep",
        "list",
        "task",
        "skill",
        "lsp",
        "todowrite",
        "todoread",
        "question",
        "external_directory",
        "doom_loop",
    )
}


#: API-key variables of the providers the CLI knows without configuration (their names in its catalogue)
PROVIDER_KEY_VARS: tuple[str, ...] = (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "GROQ_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENERATIVE_AI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY",
    "XAI_API_KEY",
    "TOGETHER_API_KEY",
    "FIREWORKS_API_KEY",
    "CEREBRAS_API_KEY",
    "AZURE_API_KEY",
    "AZURE_RESOURCE_NAME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_PROFILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "VERTEX_LOCATION",
    "GITHUB_TOKEN",
    "HF_TOKEN",
    "OLLAMA_HOST",
)

_ENV_REF = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_LOG_FIELD = re.compile(r'(\w[\w.]*)=("(?:\\.|[^"\\])*"|\S*)')
_CONTEXT = re.compile(r"context[_ ]length|maximum context|context window|too many tokens|prompt is too long", re.I)
_RATE = re.compile(r"rate limit|too many requests|quota", re.I)
_OVERLOADED = re.compile(r"overloaded", re.I)
_AUTH = re.compile(r"api key|unauthori[sz]ed|authentication|invalid.*token", re.I)
_MODEL = re.compile(r"model[^\n]{0,120}(?:does not exist|not found|not supported)|model_not_found", re.I)
_NO_SESSION = re.compile(r"session[^\n]{0,80}not found|NotFoundError", re.I)


def classify_message(message: str, *, provider: str, status: int | None = None) -> LLMError:
    """An API error message (with its HTTP status when the CLI gave one) as an error of the tree."""
    text = f"{provider}: {message.strip()}"
    retry_after = process.parse_retry_after(message)
    if _CONTEXT.search(message):
        return ContextLengthExceeded(text, provider=provider)
    if status == 429 or (status is None and _RATE.search(message)):
        return RateLimited(text, provider=provider, retry_after=retry_after)
    if status is not None:
        return from_http_status(status, text, provider=provider, retry_after=retry_after)
    if _OVERLOADED.search(message):
        return Overloaded(text, provider=provider)
    if _MODEL.search(message):
        return ModelNotFound(text, provider=provider)
    if _AUTH.search(message):
        return AuthenticationError(text, provider=provider)
    return UpstreamError(text, provider=provider)


def classify_error_event(error: Mapping[str, Any], *, provider: str, stderr: str = "") -> LLMError:
    """The ``error`` of a ``{"type":"error"}`` event (``{"name": …, "data": {"message", "statusCode", …}}``)."""
    name = str(error.get("name") or "")
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    assert isinstance(data, dict)
    message = str(data.get("message") or name or json.dumps(error))
    status = data.get("statusCode") if isinstance(data.get("statusCode"), int) else None
    detail = "\n".join(part for part in (json.dumps(error), stderr) if part)
    if name == "ContextOverflowError":
        exc: LLMError = ContextLengthExceeded(f"{provider}: {message}", provider=provider)
    elif name == "ProviderAuthError":
        exc = AuthenticationError(f"{provider}: {message}", provider=provider)
    elif name == "UnknownError":
        # the real cause is only in the log: "error=\"ProviderModelNotFoundError: Model not found: x/y.\""
        cause = _failure_in_log(stderr)
        if cause and "ModelNotFound" in cause:
            exc = ModelNotFound(f"{provider}: {cause}", provider=provider)
        elif cause:
            exc = classify_message(cause, provider=provider)
        else:
            exc = UpstreamError(f"{provider}: {message}", provider=provider)
    else:
        body = data.get("responseBody") if isinstance(data.get("responseBody"), str) else ""
        exc = classify_message(f"{message} {body}" if body else message, provider=provider, status=status)
        exc.message = f"{provider}: {message}"
        exc.args = (exc.message,)
    exc.detail = detail
    return exc


def log_fields(line: str) -> dict[str, str]:
    """The ``key=value`` fields of one ``--print-logs`` line, quoted values unquoted."""
    fields: dict[str, str] = {}
    for key, value in _LOG_FIELD.findall(line):
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        fields[key] = value
    return fields


def _failure_in_log(stderr: str) -> str | None:
    """The ``error=`` of the last ``level=ERROR`` line that has one (``message=failed`` / ``message=process``)."""
    for line in reversed(stderr.splitlines()):
        if "level=ERROR" in line:
            fields = log_fields(line)
            error = fields.get("error") or fields.get("error.error")
            if error:
                return error
    return None


class RetryWatch:
    """Reads the CLI's error log as it arrives and ends a run the CLI is retrying (see the module docstring)."""

    def __init__(self, *, provider: str, deadline: float) -> None:
        self.provider = provider
        self.deadline = deadline
        self.attempts = 0

    def __call__(self, raw: bytes) -> process.StderrVerdict | None:
        if b"level=ERROR" not in raw:
            return None
        fields = log_fields(raw.decode("utf-8", "replace"))
        if fields.get("message") == "stream error":
            self.attempts += 1
            cause = fields.get("error.error") or "the model API failed"
            cause = cause.removeprefix("AI_APICallError: ")
            error = classify_message(cause, provider=self.provider)
            error.message += (
                f" (the CLI retries this error with no limit it can be given; the run was stopped after "
                f"{'the first attempt' if self.attempts == 1 else f'{self.attempts} attempts'})"
            )
            error.args = (error.message,)
            return process.StderrVerdict(error, after=0.0 if self.attempts > 1 else self.deadline)
        if fields.get("message") == "process" and "error" in fields:
            return process.StderrVerdict(None)  # the CLI gave up: its own error event follows on stdout
        return None


_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "end_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool-calls": "tool_calls",
    "tool_calls": "tool_calls",
    "content-filter": "content_filter",
    "content_filter": "content_filter",
    "error": "error",
}


class OpenCodeParser:
    """``run --format json`` lines of one run -> events (OpenCode and Kilo print the same events). API errors are
    raised from :meth:`finish`, with the log on stderr at hand."""

    def __init__(self, *, provider: str = "opencode", model: str | None = None, resume: str | None = None) -> None:
        self.provider = provider
        self.session_id: str | None = None
        self.model = model
        self.resume = resume
        self.unreadable = Unreadable()
        self.usage: Usage | None = None
        self.finish_reason: FinishReason = "stop"
        self.finished = False
        self.error: dict[str, Any] | None = None
        self._said_text = False
        self._said: dict[str, str] = {}  # part id -> text already yielded

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json_object(line)
        if event is None:
            self.unreadable.add(line)
            return ()
        if isinstance(event.get("sessionID"), str):
            self.session_id = event["sessionID"]
        kind = event.get("type")
        part = event.get("part") if isinstance(event.get("part"), dict) else {}
        assert isinstance(part, dict)
        if kind in ("text", "reasoning"):
            return self._part(part, reasoning=kind == "reasoning")
        if kind == "step_finish":
            self._step_finish(part)
        elif kind == "error":
            error = event.get("error")
            if self.error is None:  # the first error is the cause (a context overflow may log a second one)
                self.error = error if isinstance(error, dict) else {"name": "UnknownError", "data": {}}
        return ()

    def _part(self, part: dict[str, Any], *, reasoning: bool) -> Iterable[StreamEvent]:
        text = part.get("text")
        if not isinstance(text, str) or not text:
            return ()
        key = str(part.get("id"))
        done = self._said.get(key, "")
        if not text.startswith(done) or len(text) == len(done):
            return ()
        self._said[key] = text
        new = text[len(done) :]
        if reasoning:
            return (ReasoningDelta(new),)
        if not done and self._said_text:
            new = "\n\n" + new  # several text parts (steps around tool calls) read as paragraphs
        self._said_text = True
        return (TextDelta(new),)

    def _step_finish(self, part: dict[str, Any]) -> None:
        self.finished = True
        reason = part.get("reason")
        self.finish_reason = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
        tokens = part.get("tokens") if isinstance(part.get("tokens"), dict) else {}
        assert isinstance(tokens, dict)
        cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
        assert isinstance(cache, dict)
        read, write = int_or_zero(cache.get("read")), int_or_zero(cache.get("write"))
        cost = part.get("cost")
        step = Usage(
            input_tokens=int_or_zero(tokens.get("input")) + read + write,
            output_tokens=int_or_zero(tokens.get("output")),
            cached_tokens=read,
            reasoning_tokens=int_or_zero(tokens.get("reasoning")),
            cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        )
        self.usage = step if self.usage is None else self.usage + step

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if self.error is not None:
            raise classify_error_event(self.error, provider=self.provider, stderr=stderr)
        if returncode == 0 and self.finished:
            usage = (UsageEvent(self.usage),) if self.usage is not None else ()
            return (*usage, Done(finish_reason=self.finish_reason, model=self.model, session_id=self.session_id))
        if self.resume and _NO_SESSION.search(stderr):
            raise SessionNotFound(
                f"{self.provider}: session {self.resume!r} cannot be resumed", provider=self.provider, detail=stderr
            )
        cause = _failure_in_log(stderr)
        if cause:
            error = classify_message(cause, provider=self.provider)
            error.detail = stderr
            raise error
        if returncode == 0:
            raise UpstreamError(
                f"{self.provider} exited without finishing the turn" + self.unreadable.excerpt(),
                provider=self.provider,
                detail=stderr,
            )
        raise self.unreadable.annotate(process.classify_exit(returncode, stderr, provider=self.provider))


def user_provider_config(files: Iterable[Path]) -> dict[str, Any]:
    """The provider part (:data:`PROVIDER_KEYS`) of the user's config files, later files winning per key."""
    out: dict[str, Any] = {}
    for path in files:
        data = read_jsonc(path)
        for key in PROVIDER_KEYS:
            if key not in data:
                continue
            old, new = out.get(key), data[key]
            out[key] = {**old, **new} if isinstance(old, dict) and isinstance(new, dict) else new
    return out


def env_references(config: Mapping[str, Any]) -> list[str]:
    """The variable names a config refers to as ``{env:NAME}``."""
    return sorted(set(_ENV_REF.findall(json.dumps(config))))


class OpenCodeRunner(CLIRunner):
    """OpenCode ``run --format json``: whole text parts (no token streaming), system prompt as an agent, sessions,
    usage with cost."""

    name: ClassVar[str] = "opencode"
    display_name: ClassVar[str] = "OpenCode"
    capabilities: ClassVar[Capabilities] = Capabilities(
        verified=True,
        streaming=True,
        token_streaming=False,
        system_prompt=True,
        images=True,
        native_tools=False,
        agent_tools=True,
        sessions=True,
        usage=True,
        cost=True,
        model_listing=True,
    )
    #: None = the default model of the user's config (``model``)
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "opencode"
    package: ClassVar[str] = "opencode-ai"
    pass_env: ClassVar[tuple[str, ...]] = PROVIDER_KEY_VARS
    #: the CLI's directory name under the XDG directories, and the prefix of its variables
    app: ClassVar[str] = "opencode"
    env_prefix: ClassVar[str] = "OPENCODE"
    #: the file names of a global config the CLI reads from ``$XDG_CONFIG_HOME/<app>/``, in its order
    config_files: ClassVar[tuple[str, ...]] = ("config.json", "opencode.json", "opencode.jsonc")
    #: the CLI's switches for a quiet, offline-safe, tool-free run, without the prefix
    switches: ClassVar[tuple[str, ...]] = (
        "DISABLE_AUTOUPDATE",
        "DISABLE_MODELS_FETCH",
        "DISABLE_LSP_DOWNLOAD",
        "DISABLE_DEFAULT_PLUGINS",
        "DISABLE_SHARE",
        "DISABLE_CLAUDE_CODE",
        "DISABLE_AUTOCOMPACT",
        "DISABLE_EXTERNAL_SKILLS",
    )
    #: the same switches, only with a private home (with ``user_config`` the user's own config decides these)
    private_switches: ClassVar[tuple[str, ...]] = ("DISABLE_PROJECT_CONFIG",)

    def __init__(self, *, error_deadline: float = 1.0, **options: Unpack[RunnerOptions]) -> None:
        # user_config (base): run with the user's real home, config, agents, plugins, MCP servers and AGENTS.md
        super().__init__(**options)
        #: seconds a logged API error may stay unanswered by the CLI's own error event before the run is stopped
        self.error_deadline = error_deadline
        self._cli_home: Path | None = None

    # ------------------------------------------------------------------------------------------ the CLI home
    def user_config_dir(self) -> Path:
        xdg = self.getenv("XDG_CONFIG_HOME")
        return (Path(xdg) if xdg else self.home() / ".config") / self.app

    def user_data_dir(self) -> Path:
        xdg = self.getenv("XDG_DATA_HOME")
        return (Path(xdg) if xdg else self.home() / ".local" / "share") / self.app

    def user_config_paths(self) -> list[Path]:
        """The user's config files in the order the CLI merges them: the global ones, then ``<PREFIX>_CONFIG``."""
        paths = [self.user_config_dir() / name for name in self.config_files]
        custom = self.getenv(f"{self.env_prefix}_CONFIG")
        if custom:
            paths.append(Path(custom))
        return paths

    def user_setup(self) -> dict[str, Any]:
        """The user's login and choice of provider, from their config: :data:`PROVIDER_KEYS` only."""
        setup = user_provider_config(self.user_config_paths())
        content = self.getenv(f"{self.env_prefix}_CONFIG_CONTENT")
        if content:
            try:
                inline = json.loads(content)
            except ValueError:
                inline = None
            if isinstance(inline, dict):
                setup.update({k: inline[k] for k in PROVIDER_KEYS if k in inline})
        return setup

    def config(self, system: str | None = None) -> dict[str, Any]:
        """The config file of a run: the user's provider setup, the agent with the system prompt, tools off."""
        agent: dict[str, Any] = {
            "description": "llm-runners chat agent",
            "mode": "primary",
            "prompt": system or NO_SYSTEM_PROMPT,
        }
        config: dict[str, Any] = {"autoupdate": False, "share": "disabled"}
        if not self.user_config:
            config.update(self.user_setup())
        if not self.allow_tools:
            agent["tools"] = {"*": False}
            agent["permission"] = dict(DENY_ALL)
            config["permission"] = dict(DENY_ALL)
        config["agent"] = {AGENT: agent}
        config["default_agent"] = AGENT  # also for sessions started without --agent (``opencode acp``)
        return config

    def cli_home(self) -> Path:
        """The runner's private CLI home (made on first use, kept for the runner's lifetime so sessions can be
        resumed, brought up to date on every call: a login made after the runner started is picked up)."""
        if self._cli_home is None:
            self._cli_home = self.owned_tempdir("home-")
        self.prepare_home(self._cli_home)
        return self._cli_home

    def xdg_dirs(self, home: Path) -> dict[str, Path]:
        return {
            "XDG_CONFIG_HOME": home / ".config",
            "XDG_DATA_HOME": home / ".local" / "share",
            "XDG_CACHE_HOME": home / ".cache",
            "XDG_STATE_HOME": home / ".local" / "state",
        }

    def prepare_home(self, home: Path) -> None:
        """Lay out a private CLI home: the XDG directories, the user's ``auth.json`` linked into its data directory
        and the runner's config file (no system prompt) at ``<home>/llm-runners.json``. Idempotent and cheap."""
        dirs = self.xdg_dirs(home)
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        data = dirs["XDG_DATA_HOME"] / self.app
        data.mkdir(exist_ok=True)
        source, link = self.user_data_dir() / "auth.json", data / "auth.json"
        if source.is_file() and not os.path.lexists(link):
            link.symlink_to(source)
        write_if_changed(home / "llm-runners.json", json.dumps(self.config(), indent=2))

    def child_env(self) -> dict[str, str]:
        """The variables of every process of this runner (turns, ``--version``, ``models``; the ACP transport uses
        them too): the private home and config (unless ``user_config``), the CLI's quiet switches, and the
        variables the user's provider config names."""
        env = super().child_env()
        prefix = self.env_prefix
        for switch in self.switches:
            env.setdefault(f"{prefix}_{switch}", "1")
        if self.user_config:
            return env
        home = self.cli_home()
        for switch in self.private_switches:
            env.setdefault(f"{prefix}_{switch}", "1")
        env["HOME"] = str(home)
        env.update({name: str(path) for name, path in self.xdg_dirs(home).items()})
        env[f"{prefix}_CONFIG"] = str(home / "llm-runners.json")
        env.pop(f"{prefix}_CONFIG_CONTENT", None)
        env.pop(f"{prefix}_CONFIG_DIR", None)
        for name in env_references(self.user_setup()):
            value = self.getenv(name)
            if value is not None:
                env.setdefault(name, value)
        for name, path in self.cloud_logins().items():
            env.setdefault(name, str(path))
        return env

    def cloud_logins(self) -> dict[str, Path]:
        """The user's cloud logins that live in their real HOME, which the private home hides (Bedrock's
        ``~/.aws``, Vertex's application-default credentials), named by the variables the SDKs read instead."""
        home = self.home()
        gcloud = Path(self.getenv("CLOUDSDK_CONFIG") or home / ".config" / "gcloud")
        candidates = {
            "AWS_SHARED_CREDENTIALS_FILE": home / ".aws" / "credentials",
            "AWS_CONFIG_FILE": home / ".aws" / "config",
            "GOOGLE_APPLICATION_CREDENTIALS": gcloud / "application_default_credentials.json",
        }
        return {name: path for name, path in candidates.items() if not self.getenv(name) and path.is_file()}

    # ------------------------------------------------------------------------------------------ argv
    def cli_model(self, model: str | None) -> str | None:
        """``provider/model`` for the CLI: a bare name gets the provider of the configured default model."""
        if not model or "/" in model:
            return model
        default = self.user_setup().get("model")
        if isinstance(default, str) and "/" in default:
            return f"{default.split('/', 1)[0]}/{model}"
        return model

    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, "run", "--format", "json", "--title", "llm-runners", "--agent", AGENT]
        argv += ["--thinking", "--print-logs", "--log-level", "ERROR"]
        model = self.cli_model(turn.model)
        if model:
            argv += ["-m", model]
        if turn.resume:
            argv += ["--session", turn.resume]
        if turn.images and self.capabilities.images:
            # before the other options: ``-f`` takes every value up to the next option
            argv[2:2] = [arg for path in turn.images for arg in ("-f", str(path))]
        config = turn.tempfile("config.json", json.dumps(self.config(turn.system)))
        return Invocation(argv=argv, stdin=turn.prompt.encode("utf-8"), env={f"{self.env_prefix}_CONFIG": str(config)})

    def new_parser(self, turn: Turn) -> OpenCodeParser:
        model = self.cli_model(turn.model) or self.user_setup().get("model")
        return OpenCodeParser(provider=self.name, model=model if isinstance(model, str) else None, resume=turn.resume)

    def process_spec(self, turn: Turn, invocation: Invocation, cleanup: list[Path]) -> process.ProcessSpec:
        spec = super().process_spec(turn, invocation, cleanup)
        return dataclasses.replace(spec, stderr_watch=RetryWatch(provider=self.name, deadline=self.error_deadline))

    # ------------------------------------------------------------------------------------------ metadata
    def credential_files(self) -> list[Path]:
        """The logins (``auth.json``: ``key``, ``access``, ``refresh``) and the config files (a provider's
        ``apiKey``)."""
        return [self.user_data_dir() / "auth.json", *self.user_config_paths()]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        setup = self.user_setup()
        if setup.get("provider") or (self.user_data_dir() / "auth.json").is_file():
            return True, None
        if any(self.getenv(name) for name in PROVIDER_KEY_VARS):
            return True, None
        return False, (
            f"run `{self.binary_name} auth login`, set a provider's API key (e.g. ANTHROPIC_API_KEY), or define a "
            f"provider in {self.user_config_dir() / self.config_files[-1]}"
        )

    async def list_models(self) -> list[str] | None:
        try:
            output = await self.run_quiet([self.binary_path, "models"], limit=60.0)
        except LLMError:
            return None
        names = [line.strip() for line in output.splitlines() if re.fullmatch(r"[\w.@:-]+/\S+", line.strip())]
        return names or None

    async def aclose(self) -> None:
        """The base removes the private CLI home (its sessions with it; links are removed, never followed)."""
        self._cli_home = None
        await super().aclose()
