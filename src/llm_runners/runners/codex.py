"""Codex CLI (``codex``, ``@openai/codex``) as a provider.

How a turn runs (facts measured on 0.169.0, see ``clis.md`` section 4):

- ``codex exec --json --skip-git-repo-check … -`` with the prompt on stdin (``-``), never in argv. A resumed turn
  is ``codex exec <options> resume <thread_id> -``: every exec option goes *before* ``resume``.
- No token streaming: ``exec --json`` prints each agent message whole in one ``item.completed`` even when the API
  streams it (verified with a fake streaming 1 s per chunk). ``item.updated`` exists only for to-do lists, and
  ``show_raw_agent_reasoning`` or ``--experimental-json`` (an alias of ``--json``) change nothing. So text is
  emitted the moment its item completes, and reasoning items become :class:`ReasoningDelta` the same way.
- The system prompt goes into a file named by ``-c model_instructions_file=…``, which REPLACES the ~17 KB base
  prompt (``-c base_instructions`` is silently ignored; ``developer_instructions`` would only add to it).
- Tools off (the default): the shell, view_image, goals, multi-agent, request_user_input, plan, skills and
  web-search tools are switched off and the permissions / environment-context preambles dropped, so the upstream
  request carries our developer message, our prompt and ``tools: []``. ``allow_tools`` keeps the CLI's tools in a
  ``workspace-write`` sandbox; ``danger-full-access`` only ever comes from the operator's ``extra_args``.
- The user's setup (see :mod:`llm_runners.runners.base`): ``--ignore-user-config``, then the carried part of the
  user's ``$CODEX_HOME/config.toml`` (model, model provider and provider definitions, reasoning settings, login
  method; profile applied) as ``-c`` overrides (:mod:`llm_runners.runners.codex_config`). MCP servers, ``notify``,
  hooks, shell environment policy and the rest stay out unless the operator opts in with ``user_config=True``.
  Auth comes from ``$CODEX_HOME/auth.json`` or the API-key variables; the active provider's ``env_key`` (and its
  ``env_http_headers`` sources) pass the environment allow-list. ``extra_args`` go before ``resume``, as ``exec``
  options (``exec resume`` rejects some of them, e.g. ``-s``, after ``resume``); their ``-c`` overrides count for
  health and the allow-list too.
- Retries: the active custom provider gets ``request_max_retries`` / ``stream_max_retries`` = the runner's
  ``retries``, and ``--disable unbounded_connection_retries`` stops the endless reconnect loop. A built-in provider
  (``openai``: 5 WebSocket attempts, then 5 HTTPS ones, ~30 s offline) cannot be given those keys, so the parser
  counts the ``Reconnecting... n/5`` notices (each logged as it comes) and ends the run after ``retries`` of them.
- Usage: ``turn.completed`` carries the *thread's running total*, not the turn's (a resumed turn reports the
  earlier turns again). The runner remembers the last total per thread and reports the difference; for a thread
  it has not seen (e.g. after a restart) the total is reported as given, with a warning.
- Errors: exit 1 in every case, the message in ``{"type":"error"}`` and ``turn.failed``; ``Reconnecting... n/5``
  error events are retries. The HTTP status is only sometimes in the text (``unexpected status 401 …``,
  ``exceeded retry limit, last status: 429 …``); a 500 reads "We’re currently experiencing high demand", a context
  overflow "Codex ran out of room in the model's context window", an unknown model is the API's own message. An
  unknown resume id exits 1 with ``no rollout found for thread id`` on stderr.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

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
from ..types import Capabilities, Done, ModelInfo, ReasoningDelta, StreamEvent, TextDelta, Usage, UsageEvent
from . import codex_config
from .base import AuthStatus, CLIRunner, Invocation, RunnerOptions, Turn, Unreadable, int_or_zero, json_object

PROVIDER = "codex"

#: how turns reach Codex: its long-lived ``app-server`` (token streaming, live threads) or one ``exec --json``
#: process per turn. The default is the app-server: measured with ``benchmarks/codex_warm.py``, a turn on a live
#: thread takes 0.15x the time of an ``exec resume`` (91 vs 622 ms), a new conversation 0.15x (97 vs 631 ms) once
#: the server runs (its start-up, ~0.6 s, is paid once per runner), and text streams as it is generated.
Transport = Literal["app-server", "exec"]
TRANSPORTS: tuple[str, ...] = ("app-server", "exec")
DEFAULT_TRANSPORT: Transport = "app-server"


#: every run: no analytics, no plugin marketplace (both phone home), bounded connection retries (unbounded ones
#: retry a refused connection forever)
BASE_ARGS: tuple[str, ...] = (
    "-c",
    "analytics.enabled=false",
    "--disable",
    "plugins",
    "--disable",
    "unbounded_connection_retries",
    "-c",
    'web_search="disabled"',
)

#: tools off: every tool the CLI would offer the model, and the preambles that describe them
NO_TOOLS_ARGS: tuple[str, ...] = (
    "--disable",
    "shell_tool",
    "--disable",
    "view_image",
    "--disable",
    "goals",
    "--disable",
    "multi_agent",
    "-c",
    "tools.experimental_request_user_input.enabled=false",
    "-c",
    "tools.update_plan.enabled=false",
    "-c",
    "skills.include_instructions=false",
    "-c",
    "include_permissions_instructions=false",
    "-c",
    "include_environment_context=false",
    "-c",
    "include_apps_instructions=false",
)

_RETRY_NOTICE = re.compile(r"^Reconnecting\.\.\.\s*(\d+/\d+)?\s*(?:\((.*)\))?", re.I | re.S)
_STATUS = re.compile(r"(?:unexpected status|last status:?)\s+(\d{3})\b", re.I)
_CONTEXT = re.compile(
    r"ran out of room in the model's context window|context[_ ]length[_ ]exceeded|exceeds the context window|"
    r"maximum context length",
    re.I,
)
_RATE = re.compile(r"rate limit|usage limit|too many requests|quota", re.I)
_MODEL = re.compile(
    r"model_not_found|\bmodel\b[^\n]{0,120}(?:does not exist|not found|is not supported|not available)", re.I
)
_AUTH = re.compile(r"unauthori[sz]ed|incorrect api key|invalid api key|not logged in|please log ?in", re.I)
_NO_ROLLOUT = re.compile(r"no rollout found for thread id", re.I)
_MAX_REMEMBERED_THREADS = 4096


def classify_error(message: str, *, detail: str | None = None) -> LLMError:
    """Map a Codex error message (an ``error`` / ``turn.failed`` event) to the error tree."""
    text = f"codex: {message.strip()}"
    status_match = _STATUS.search(message)
    status = int(status_match.group(1)) if status_match else None
    retry_after = process.parse_retry_after(message)
    error: LLMError
    if _CONTEXT.search(message):
        error = ContextLengthExceeded(text, provider=PROVIDER)
    elif status == 429 or (status is None and _RATE.search(message)):
        error = RateLimited(text, provider=PROVIDER, retry_after=retry_after)
    elif status is None and _MODEL.search(message):
        error = ModelNotFound(text, provider=PROVIDER)
    elif status is not None:
        error = from_http_status(status, text, provider=PROVIDER, retry_after=retry_after)
    elif _AUTH.search(message):
        error = AuthenticationError(text, provider=PROVIDER)
    else:  # high demand (a 500), a dropped stream, a refused connection, anything else the API did not answer
        error = UpstreamError(text, provider=PROVIDER)
    error.detail = detail or message
    return error


def _usage(raw: Mapping[str, Any]) -> Usage:
    return Usage(
        input_tokens=int_or_zero(raw.get("input_tokens")),
        cached_tokens=int_or_zero(raw.get("cached_input_tokens")),
        output_tokens=int_or_zero(raw.get("output_tokens")),
        reasoning_tokens=int_or_zero(raw.get("reasoning_output_tokens")),
    )


def _minus(total: Usage, earlier: Usage) -> Usage | None:
    """``total - earlier`` when ``total`` really is a later running total of the same thread, else None."""
    pairs = [
        (total.input_tokens, earlier.input_tokens),
        (total.output_tokens, earlier.output_tokens),
        (total.cached_tokens, earlier.cached_tokens),
        (total.reasoning_tokens, earlier.reasoning_tokens),
    ]
    if any(now < before for now, before in pairs):
        return None
    return Usage(
        input_tokens=total.input_tokens - earlier.input_tokens,
        output_tokens=total.output_tokens - earlier.output_tokens,
        cached_tokens=total.cached_tokens - earlier.cached_tokens,
        reasoning_tokens=total.reasoning_tokens - earlier.reasoning_tokens,
    )


class CodexParser:
    """``codex exec --json`` lines of one run -> events. API errors are raised from :meth:`finish`."""

    def __init__(
        self,
        *,
        model: str | None = None,
        resume: str | None = None,
        baseline: Usage | None = None,
        remember: Callable[[str, Usage], None] | None = None,
        max_retries: int | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.session_id: str | None = None
        self.unreadable = Unreadable()  # lines that were no JSON object, quoted in errors
        self.model = model
        self.resume = resume
        self.baseline = baseline
        self.remember = remember
        self.completed = False
        self.failure: str | None = None
        self.errors: list[str] = []  # fatal `error` events (retry notices excluded)
        self.retries = 0
        #: end the run after this many retry notices (None: let the CLI retry as it is configured)
        self.max_retries = max_retries
        self.on_retry = on_retry
        self.warnings: list[str] = []
        self._emitted: dict[tuple[str, str], str] = {}  # (kind, item id) -> text already yielded
        self._said_text = False

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json_object(line)
        if event is None:
            self.unreadable.add(line)
            return ()
        kind = event.get("type")
        if kind == "thread.started":
            if isinstance(event.get("thread_id"), str):
                self.session_id = event["thread_id"]
        elif kind in ("item.started", "item.updated", "item.completed"):
            item = event.get("item")
            if isinstance(item, dict):
                return self._item(item, final=kind == "item.completed")
        elif kind == "turn.completed":
            return self._turn_completed(event)
        elif kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.failure = message if isinstance(message, str) else json.dumps(error)
        elif kind == "error":
            message = event.get("message")
            if isinstance(message, str):
                notice = _RETRY_NOTICE.match(message)
                if notice:
                    self._retry(message, notice)
                else:
                    self.errors.append(message)
        return ()

    def _retry(self, message: str, notice: re.Match[str]) -> None:
        """A ``Reconnecting... n/m (reason)`` notice: logged, and past the bound the run's error."""
        self.retries += 1
        count, reason = notice.group(1), notice.group(2)
        if self.on_retry is not None:
            self.on_retry(f"reconnecting {count or self.retries}" + (f" ({reason})" if reason else ""))
        if self.max_retries is not None and self.retries > self.max_retries:
            raise classify_error(reason or message, detail=message)

    def _item(self, item: dict[str, Any], *, final: bool) -> Iterable[StreamEvent]:
        kind = item.get("type")
        text = item.get("text")
        if kind == "error":
            # e.g. "Model metadata for `x` not found. Defaulting to fallback metadata": the run goes on
            if final and isinstance(item.get("message"), str):
                self.warnings.append(f"codex: {item['message']}")
            return ()
        if kind not in ("agent_message", "reasoning") or not isinstance(text, str):
            return ()
        key = (kind, str(item.get("id")))
        done = self._emitted.get(key, "")
        if not text.startswith(done) or len(text) == len(done):
            return ()
        new = text[len(done) :]
        self._emitted[key] = text
        if kind == "reasoning":
            return (ReasoningDelta(new),)
        if not done and self._said_text:
            new = "\n\n" + new  # several agent messages in one turn (around tool calls) read as paragraphs
        self._said_text = True
        return (TextDelta(new),)

    def _turn_completed(self, event: dict[str, Any]) -> Iterable[StreamEvent]:
        self.completed = True
        raw = event.get("usage")
        if not isinstance(raw, dict):
            return ()
        total = _usage(raw)
        if self.remember is not None and self.session_id:
            self.remember(self.session_id, total)
        usage = total
        if self.resume is not None:
            delta = _minus(total, self.baseline) if self.baseline is not None else None
            if delta is not None:
                usage = delta
            else:
                self.warnings.append(
                    "codex: usage is the resumed thread's running total (its earlier turns included): the runner "
                    "did not see the thread's previous total"
                )
        return (UsageEvent(usage),)

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if self.failure is None and self.completed and returncode == 0:
            warnings = (*self.warnings, *(f"codex: {e}" for e in self.errors))
            return (Done(finish_reason="stop", model=self.model, session_id=self.session_id, warnings=warnings),)
        if self.failure is not None or self.errors:
            message = self.failure if self.failure is not None else self.errors[-1]
            raise classify_error(message, detail="\n".join([*self.errors, stderr]))
        if _NO_ROLLOUT.search(stderr):
            raise SessionNotFound(
                f"codex: thread {self.resume!r} cannot be resumed (no rollout found in CODEX_HOME)",
                provider=PROVIDER,
                detail=stderr,
            )
        config_error = _line_with(stderr, "Error loading config")
        if config_error:
            raise InvalidRequest(f"codex: {config_error}", provider=PROVIDER, detail=stderr)
        if returncode == 0:
            raise UpstreamError(
                "codex exited without completing the turn" + self.unreadable.excerpt(), provider=PROVIDER, detail=stderr
            )
        raise self.unreadable.annotate(process.classify_exit(returncode, stderr, provider=PROVIDER))


def _line_with(text: str, marker: str) -> str | None:
    for line in text.splitlines():
        if marker in line:
            return line.strip()
    return None


class CodexRunner(CLIRunner):
    """Codex ``exec --json``: whole messages (no token streaming), system prompt, sessions, images, reasoning.

    ``CodexRunner()`` builds the default transport, :class:`~llm_runners.runners.codex_app.CodexAppRunner` (the
    long-lived app-server); ``CodexRunner(transport="exec")`` this class."""

    name: ClassVar[str] = "codex"
    display_name: ClassVar[str] = "Codex CLI"
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
        model_listing=True,
    )
    #: None = the CLI's own default model (or the operator's config.toml with ``user_config=True``)
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "codex"
    package: ClassVar[str] = "@openai/codex"
    api_key_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY", "CODEX_API_KEY")
    pass_env: ClassVar[tuple[str, ...]] = (
        "CODEX_HOME",
        "OPENAI_API_KEY",
        "CODEX_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORGANIZATION",
        "OPENAI_PROJECT",
    )
    #: the listed (not hidden) models of Codex 0.169.0's bundled catalog, for when ``codex debug models`` fails
    known_models: ClassVar[tuple[str, ...]] = (
        "gpt-6-astra",
        "gpt-6.1-sol",
        "gpt-6.1-terra",
        "gpt-6-sol",
        "gpt-6-luna",
        "gpt-5.6-sol",
        "gpt-5.6-terra",
        "gpt-5.6-luna",
        "gpt-5.5",
    )

    #: which transport this class implements (``CodexRunner(transport=...)`` picks the class)
    transport: ClassVar[str] = "exec"
    #: every transport the codex provider has (the router passes a ``transport`` option among these through)
    transports: ClassVar[tuple[str, ...]] = TRANSPORTS

    def __new__(cls, *, transport: Transport | None = None, **options: Unpack[RunnerOptions]) -> CodexRunner:
        transport = DEFAULT_TRANSPORT if transport is None else transport
        if transport not in TRANSPORTS:
            raise ValueError(f"codex: transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if cls is CodexRunner and transport == "app-server":
            from .codex_app import CodexAppRunner  # here: codex_app builds on this module

            return super().__new__(CodexAppRunner)
        return super().__new__(cls)

    def __init__(self, *, transport: Transport | None = None, **options: Unpack[RunnerOptions]) -> None:
        # user_config (base): let codex read all of ``$CODEX_HOME/config.toml`` (off by default: only the carried
        # part is passed, see :mod:`llm_runners.runners.codex_config`)
        if transport is not None and transport != self.transport:
            raise ValueError(f"codex: {type(self).__name__} implements transport {self.transport!r}, not {transport!r}")
        super().__init__(**options)
        self._thread_usage: OrderedDict[str, Usage] = OrderedDict()

    # ------------------------------------------------------------------------------------------ user setup
    def user_setup(self) -> dict[str, Any]:
        """The carried part of the user's config.toml (all of it with ``user_config``), profile applied."""
        profile = codex_config.profile_from_args(self.extra_args)
        config = codex_config.read_config(self.codex_home())
        return config if self.user_config and not profile else codex_config.carried_config(config, profile)

    def effective_setup(self) -> dict[str, Any]:
        """What a run uses: the user's setup with the operator's ``-c`` overrides (``extra_args``) applied."""
        return codex_config.apply_overrides(self.user_setup(), self.extra_args)

    def endpoint(self) -> str | None:
        try:
            pid, definition = codex_config.active_provider(self.effective_setup())
        except codex_config.CodexConfigError:
            return None
        if definition is not None and isinstance(definition.get("base_url"), str):
            return str(definition["base_url"])
        if pid == "openai":
            base = self.effective_setup().get("openai_base_url")
            return base if isinstance(base, str) else "https://api.openai.com/v1"
        return None

    # ------------------------------------------------------------------------------------------ argv
    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, "exec", "--json", "--skip-git-repo-check"]
        if not self.user_config:
            argv.append("--ignore-user-config")
        setup_args, env = self.setup_args()
        argv += [*setup_args, *BASE_ARGS]
        argv += ["-s", "workspace-write" if self.allow_tools else "read-only"]
        if not self.allow_tools:
            argv += NO_TOOLS_ARGS
        if turn.system:
            path = turn.tempfile("system-prompt.md", turn.system)
            argv += ["-c", f"model_instructions_file={codex_config.toml_value(str(path))}"]
        if turn.model:
            argv += ["-m", turn.model]
        # `--image=<file>`: `-i <file>` takes several values and would swallow the `-` prompt argument
        argv += [f"--image={path}" for path in turn.images]
        argv += self.extra_args  # exec options: `exec resume` rejects some of them (e.g. -s) after `resume`
        if turn.resume:
            argv += ["resume", turn.resume]
        argv.append("-")
        return Invocation(argv=argv, stdin=turn.prompt.encode("utf-8"), env=env, extra_args_placed=True)

    def setup_args(self) -> tuple[list[str], dict[str, str]]:
        """The user's setup for a codex process of any transport: the ``-c`` overrides carrying it (none with
        ``user_config``, where codex reads the file itself) plus the retry bounds of the active provider, and the
        variables its definition names (``env_key``, ``env_http_headers``), which pass the allow-list this way."""
        try:
            setup = self.user_setup()
        except codex_config.CodexConfigError as exc:
            raise InvalidRequest(f"codex: {exc}", provider=PROVIDER) from None
        args = [] if self.user_config else codex_config.override_args(setup)
        pid, definition = codex_config.active_provider(codex_config.apply_overrides(setup, self.extra_args))
        if pid not in codex_config.BUILTIN_PROVIDERS:  # built-in providers refuse these keys
            args += ["-c", f"model_providers.{pid}.request_max_retries={self.retries}"]
            args += ["-c", f"model_providers.{pid}.stream_max_retries={self.retries}"]
        env = {}
        for name in codex_config.provider_env_names(definition or {}):
            value = self.getenv(name)
            if value is not None:
                env[name] = value
        return args, env

    def new_parser(self, turn: Turn) -> CodexParser:
        baseline = self._thread_usage.get(turn.resume) if turn.resume else None
        return CodexParser(
            model=turn.model,
            resume=turn.resume,
            baseline=baseline,
            remember=self._remember_usage,
            max_retries=self.retries,
            on_retry=self.log_retry,
        )

    def _remember_usage(self, thread_id: str, total: Usage) -> None:
        """Keep the thread's running total, so the next resumed turn can report only its own tokens."""
        self._thread_usage[thread_id] = total
        self._thread_usage.move_to_end(thread_id)
        while len(self._thread_usage) > _MAX_REMEMBERED_THREADS:
            self._thread_usage.popitem(last=False)

    # ------------------------------------------------------------------------------------------ metadata
    def codex_home(self) -> Path:
        codex_home = self.getenv("CODEX_HOME")
        return Path(codex_home) if codex_home else self.home() / ".codex"

    def credential_files(self) -> list[Path]:
        """The login (``OPENAI_API_KEY``, ``tokens.*``) and the config (``http_headers``, bearer tokens)."""
        return [self.codex_home() / "auth.json", self.codex_home() / "config.toml"]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        status = await self.auth_status()
        return status.authenticated, status.fix

    async def auth_status(self) -> AuthStatus:
        """Ready when the provider a run would use has its credentials: a custom provider its ``env_key``
        variable, the built-in ``openai`` (or a provider with ``requires_openai_auth``) a login or an API key."""
        try:
            setup = self.effective_setup()
        except codex_config.CodexConfigError as exc:
            return AuthStatus(False, f"Codex CLI: {exc}", "fix the file, or point CODEX_HOME at another one")
        pid, definition = codex_config.active_provider(setup)
        where = f"model provider {pid!r} ({self.codex_home() / 'config.toml'})"
        if definition is None and pid not in codex_config.BUILTIN_PROVIDERS:
            return AuthStatus(
                False,
                f"Codex CLI: {where} is not defined: no [model_providers.{pid}] table",
                f"define [model_providers.{pid}] or set model_provider to a defined one",
            )
        if pid in codex_config.BUILTIN_PROVIDERS - {"openai"}:
            return AuthStatus(True)  # local servers (ollama, lmstudio) need no key; Bedrock has its own chain
        if definition is not None and not definition.get("requires_openai_auth"):
            env_key = definition.get("env_key")
            if isinstance(env_key, str) and env_key and not self.getenv(env_key):
                return AuthStatus(
                    False,
                    f"Codex CLI: {where} reads its API key from {env_key}, which is not set",
                    f"set {env_key} in the server's environment or the runner's env",
                )
            return AuthStatus(True)
        if self.getenv("OPENAI_API_KEY") or self.getenv("CODEX_API_KEY"):
            return AuthStatus(True)
        if (self.codex_home() / "auth.json").is_file():
            return AuthStatus(True)
        return AuthStatus(False, "Codex CLI is not logged in", "run `codex login` or set OPENAI_API_KEY")

    async def _catalog(self) -> list[dict[str, Any]]:
        """The CLI's bundled model catalog (``codex debug models --bundled``: offline, no account needed)."""
        try:
            output = await self.run_quiet([self.binary_path, "debug", "models", "--bundled"], limit=30.0)
            data = json.loads(output)
        except (LLMError, ValueError):
            return []
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            return []
        return [
            m
            for m in models
            if isinstance(m, dict) and isinstance(m.get("slug"), str) and m.get("visibility", "list") == "list"
        ]

    async def list_models(self) -> list[str] | None:
        catalog = await self._catalog()
        return [m["slug"] for m in catalog] or None

    async def models(self) -> list[ModelInfo]:
        catalog = await self._catalog()
        if not catalog:
            return await super().models()
        return [
            ModelInfo(
                id=m["slug"],
                provider=self.name,
                display_name=m.get("display_name") if isinstance(m.get("display_name"), str) else None,
                context_window=m.get("context_window") if isinstance(m.get("context_window"), int) else None,
            )
            for m in catalog
        ]
