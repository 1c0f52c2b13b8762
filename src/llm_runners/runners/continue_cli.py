"""Continue CLI (``cn``, ``@continuedev/cli``) as a provider (provider name ``continue``).

How a turn runs (facts measured on 1.5.47, see ``clis.md`` section 11):

- ``cn --config <file> --verbose --exclude "*" [--resume] -p`` with the prompt on stdin (``-p`` last: with options
  after it, 1.5.47 ignored stdin and exited 1, "A prompt is required when using the -p/--print flag"). Headless
  ``-p`` prints the answer once, at the end, followed by a newline (no streaming mode: ``token_streaming=False``;
  the answer arrives as one delta). ``--format json`` is not used: it parses the model's answer as JSON and wraps
  it only when it is not, so a JSON answer would be indistinguishable from the wrapper.
- ``user_config=True`` passes the user's own ``config.yaml`` (MCP servers, rules, prompts and all) as ``--config``
  and the system prompt as ``--rule``; sessions stay in the runner's private dirs either way.
- The config file is written per run: the user's ``models`` (their provider definitions, keys and endpoints, from
  ``config.yaml`` in ``CONTINUE_GLOBAL_DIR``, else ``~/.continue``) and nothing else of theirs (no MCP servers,
  rules, prompts, context providers, docs). ``request.model`` picks the entry whose ``name`` or ``model`` matches,
  else it becomes the ``model`` of the first entry (``--model`` only takes hub slugs). The system prompt becomes the
  config's one rule: Continue has no way to replace its own ~1.3 KB system prompt, it appends rules to it in
  ``<context name="userRules">`` (``--rule`` would appear twice in 1.5.47, a config rule appears once), so
  ``system_prompt=False`` (an addition).
- Tools off: ``--exclude "*"`` removes every tool from the request (``tools: []``); without it 9 are sent and
  ``--readonly`` still sends them. A tool call the model makes anyway is dropped: the run ends after that one
  request with an empty answer, nothing executed. ``allow_tools`` leaves the CLI's own permission policy in charge.
- Sessions: the CLI can only ``--resume`` its *last* session (the newest file in ``<global dir>/sessions``), so each
  conversation gets a global dir of its own under the runner's private root (``CONTINUE_GLOBAL_DIR``), holding that
  one session: ``--resume`` there continues exactly it, and the CLI replays its history upstream. A fresh session
  is named by ``CONTINUE_CLI_TEST_SESSION_ID`` (the variable the CLI itself sets when it loads a session by id), so
  its file and id are ours. A session dir that is gone raises SessionNotFound (the base then replays the history).
- Usage: the output has none; the session file has it per assistant message (``usage.prompt_tokens`` …), read after
  the run. The cost there is the CLI's guess from its own price table, so none is reported.
- Errors: stdout empty, exit 1, ``{"status":"error","message":"401 Incorrect API key …"}`` on stderr; the message
  starts with the HTTP status (``Context length exceeded: Error: 400 …`` for a context overflow).
- The retry loop: a 5xx or 429 is retried 33 times over ~112 s with no knob. With ``--verbose`` the CLI logs each
  ``Retry attempt {"attempt":n,"delay":ms,"error":"500 …"}`` to ``<global dir>/logs/cn.log``; the runner watches that
  log and, ``retry_deadline`` seconds (10 by default) after the first retry, kills the run and reports the last error
  seen. The verbose log also holds the API key and the request bodies: it is removed when the run ends (the
  process layer's cleanup paths), and the key, passed to the CLI in its environment or written into the run's
  config, is masked in every error and log line (:mod:`llm_runners.redact`).
- No telemetry: ``CONTINUE_CLI_ENABLE_TELEMETRY=0``, ``CONTINUE_METRICS_ENABLED=0``. The version check of
  ``api.continue.dev`` is hard-coded and cannot be turned off; offline it fails silently.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import yaml
from typing_extensions import Unpack

from .. import process, redact
from ..errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    SessionNotFound,
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
    int_or_zero,
    json_object,
    read_text,
)

PROVIDER = "continue"

OFFLINE_ENV: dict[str, str] = {"CONTINUE_CLI_ENABLE_TELEMETRY": "0", "CONTINUE_METRICS_ENABLED": "0"}
#: the session id a fresh run gets (the CLI's own variable for it)
SESSION_VAR = "CONTINUE_CLI_TEST_SESSION_ID"
_STATUS = re.compile(r"(?:^|Error: )([1-5]\d\d)\b")
_CONTEXT = re.compile(r"context length exceeded|maximum context length|context_length_exceeded", re.I)
_RETRY_LINE = "Retry attempt"


def user_config_file(global_dir: Path) -> Path:
    return global_dir / "config.yaml"


def user_models(text: str) -> list[dict[str, Any]]:
    """The ``models`` entries of a Continue ``config.yaml`` (each a mapping), or [] when there are none."""
    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return []
    models = data.get("models") if isinstance(data, dict) else None
    return [dict(m) for m in models if isinstance(m, dict)] if isinstance(models, list) else []


def choose_model(models: list[dict[str, Any]], wanted: str | None) -> list[dict[str, Any]]:
    """The models with the wanted one first: an entry whose ``name`` or ``model`` is ``wanted``, else the first entry
    with ``model`` set to it. Without ``wanted`` the user's order stands."""
    if not wanted or not models:
        return models
    for i, entry in enumerate(models):
        if wanted in (entry.get("name"), entry.get("model")):
            return [entry, *models[:i], *models[i + 1 :]]
    first = {**models[0], "name": wanted, "model": wanted}
    return [first, *models[1:]]


def run_config(models: list[dict[str, Any]], system: str | None) -> str:
    """The config file of one run (JSON, which the CLI's YAML reader takes as it is)."""
    config: dict[str, Any] = {"name": "llm-runners", "version": "1.0.0", "schema": "v1", "models": models}
    if system:
        config["rules"] = [system]
    return json.dumps(config, indent=2)


def classify_message(message: str, *, detail: str | None = None) -> LLMError:
    """The CLI's error message (``401 Incorrect API key …``, ``Context length exceeded: Error: 400 …``)."""
    text = f"continue: {message.strip()}"
    error: LLMError
    if _CONTEXT.search(message):
        error = ContextLengthExceeded(text, provider=PROVIDER)
    elif m := _STATUS.search(message):
        error = from_http_status(
            int(m.group(1)), text, provider=PROVIDER, retry_after=process.parse_retry_after(message)
        )
    else:
        error = process.classify_exit(1, message, provider=PROVIDER)
    error.detail = detail or message
    return error


class ContinueParser:
    """Headless text output of one run -> the answer at exit, with the usage read from the session file."""

    def __init__(self, *, session_file: Path, session_id: str, model: str | None, log: Path) -> None:
        self.session_id: str | None = session_id
        self.session_file = session_file
        self.model = model
        self.log = log
        #: where this run's lines begin in the CLI's log (the file is shared by the turns of one conversation)
        self.log_offset = log.stat().st_size if log.is_file() else 0
        self.lines: list[str] = []

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        self.lines.append(line.decode("utf-8", "replace"))
        return ()

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if returncode != 0:
            raise self._error(returncode, stderr)
        events: list[StreamEvent] = []
        text = "\n".join(self.lines)
        if text:
            events.append(TextDelta(text))
        usage = self._usage()
        if usage is not None:
            events.append(UsageEvent(usage))
        events.append(Done(finish_reason="stop", model=self.model, session_id=self.session_id))
        return events

    def _error(self, returncode: int, stderr: str) -> LLMError:
        for line in reversed(stderr.splitlines()):
            data = json_object(line.encode())
            if data is not None and data.get("status") == "error" and isinstance(data.get("message"), str):
                return classify_message(str(data["message"]), detail=stderr)
        return process.classify_exit(returncode, stderr, provider=PROVIDER)

    def _usage(self) -> Usage | None:
        """The last assistant message's usage in the session file."""
        try:
            history = json.loads(self.session_file.read_text(encoding="utf-8")).get("history")
        except (OSError, ValueError, AttributeError):
            return None
        for item in reversed(history if isinstance(history, list) else []):
            message = item.get("message") if isinstance(item, dict) else None
            usage = message.get("usage") if isinstance(message, dict) and message.get("role") == "assistant" else None
            if isinstance(usage, dict):
                details = usage.get("prompt_tokens_details")
                prompt = int_or_zero(usage.get("prompt_tokens"))
                cached = int_or_zero(details.get("cached_tokens")) if isinstance(details, dict) else 0
                if isinstance(usage.get("model"), str):
                    self.model = usage["model"]
                return Usage(
                    input_tokens=prompt,
                    output_tokens=int_or_zero(usage.get("completion_tokens")),
                    cached_tokens=min(cached, prompt),
                )
        return None


class ContinueWatch:
    """Follows the CLI's log of one run: ``deadline`` seconds after its first ``Retry attempt`` line, the run is
    stopped with the last error the CLI retried."""

    interval = 0.25

    def __init__(self, parser: ContinueParser, deadline: float) -> None:
        self.parser = parser
        self.deadline = deadline
        self.offset = parser.log_offset
        self.first_retry: float | None = None
        self.retries = 0
        self.last_error: str | None = None
        self._partial = b""

    def check(self) -> LLMError | None:
        self._read()
        if self.first_retry is None or time.monotonic() - self.first_retry < self.deadline:
            return None
        error = classify_message(self.last_error or "the model API keeps failing")
        error.message += (
            f" (the CLI retried it {self.retries} time{'s' * (self.retries != 1)}; stopped after {self.deadline:g} s "
            "of its retry loop)"
        )
        error.args = (error.message,)
        return error

    def _read(self) -> None:
        try:
            with open(self.parser.log, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if _RETRY_LINE not in text:
                continue
            self.retries += 1
            if self.first_retry is None:
                self.first_retry = time.monotonic()
            start = text.find("{", text.index(_RETRY_LINE))
            info = json_object(text[start:].encode()) if start >= 0 else None
            if info is not None and isinstance(info.get("error"), str):
                self.last_error = info["error"]


class ContinueRunner(CLIRunner):
    """Continue CLI in headless mode: the answer at the end, system prompt as a rule, sessions per conversation."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Continue CLI"
    capabilities: ClassVar[Capabilities] = Capabilities(
        verified=True,
        streaming=True,
        token_streaming=False,
        system_prompt=False,
        images=False,
        native_tools=False,
        agent_tools=True,
        sessions=True,
        usage=True,
    )
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "cn"
    package: ClassVar[str] = "@continuedev/cli"
    #: the config file (models, the system prompt as a rule) and the session are chosen per run, before start-up
    warmable: ClassVar[bool] = False
    #: the variables a user's ``config.yaml`` commonly names for keys (``${{ secrets.X }}`` / env)
    pass_env: ClassVar[tuple[str, ...]] = (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "MISTRAL_API_KEY",
        "OPENROUTER_API_KEY",
        "CONTINUE_API_KEY",
    )

    def __init__(self, *, retry_deadline: float = 10.0, **options: Unpack[RunnerOptions]) -> None:
        super().__init__(**options)
        #: seconds of the CLI's retry loop (from its first retry) before the run is stopped (see module)
        self.retry_deadline = retry_deadline
        self._root: Path | None = None

    # ------------------------------------------------------------------------------------------ private dirs
    def user_global_dir(self) -> Path:
        """The user's Continue directory: ``CONTINUE_GLOBAL_DIR``, else ``~/.continue``."""
        configured = self.getenv("CONTINUE_GLOBAL_DIR")
        return Path(configured) if configured else self.home() / ".continue"

    def root(self) -> Path:
        """The runner's private directory: one global dir per conversation under ``sessions/``, and ``global/`` for
        helper runs."""
        if self._root is None:
            self._root = self.owned_tempdir("home-")
        return self._root

    def global_dir(self, session_id: str | None) -> Path:
        """The ``CONTINUE_GLOBAL_DIR`` of a conversation's session (or of helper runs)."""
        path = self.root() / ("sessions" / Path(session_id) if session_id else Path("global"))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def child_env(self) -> dict[str, str]:
        env = super().child_env()
        env["CONTINUE_GLOBAL_DIR"] = str(self.global_dir(None))
        return {**env, **OFFLINE_ENV}

    def models_config(self) -> list[dict[str, Any]]:
        models = user_models(read_text(user_config_file(self.user_global_dir())))
        redact.register(*(str(m["apiKey"]) for m in models if m.get("apiKey")))  # masked wherever it shows up
        return models

    # ------------------------------------------------------------------------------------------ argv
    def _session(self, turn: Turn) -> str:
        session = turn.resume or turn.session
        if session is None or "/" in session or session.startswith("."):
            raise SessionNotFound(f"continue: invalid session id {session!r}", provider=PROVIDER)
        return session

    def invocation(self, turn: Turn) -> Invocation:
        session = self._session(turn)
        global_dir = self.global_dir(session)
        if turn.resume and not (global_dir / "sessions" / f"{session}.json").is_file():
            raise SessionNotFound(f"continue: session {session!r} is gone", provider=PROVIDER)
        user_file = user_config_file(self.user_global_dir())
        if self.user_config and user_file.is_file():
            argv = [self.binary_path, "--config", str(user_file), "--verbose"]
            if turn.system:
                argv += ["--rule", turn.system]
        else:
            models = choose_model(self.models_config(), turn.model)
            if not models:
                raise AuthenticationError(
                    f"continue: no model configured: add one to {user_file} "
                    "(models: - name, provider, model, apiKey, apiBase)",
                    provider=PROVIDER,
                )
            config = turn.tempfile("config.yaml", run_config(models, turn.system))
            argv = [self.binary_path, "--config", str(config), "--verbose"]
        if not self.allow_tools:
            argv += ["--exclude", "*"]
        if turn.resume:
            argv.append("--resume")
        argv += [*self.extra_args, "-p"]  # last: with options after it, 1.5.47 ignores the prompt on stdin
        env = {"CONTINUE_GLOBAL_DIR": str(global_dir)}
        if not turn.resume:
            env[SESSION_VAR] = session
        return Invocation(argv=argv, stdin=turn.prompt.encode("utf-8"), env=env, extra_args_placed=True)

    def process_spec(self, turn: Turn, invocation: Invocation, cleanup: list[Path]) -> process.ProcessSpec:
        # --verbose (the retry watch reads it) logs the API key and the request bodies: the log goes with the run
        cleanup.append(self.global_dir(self._session(turn)) / "logs")
        return super().process_spec(turn, invocation, cleanup)

    def new_parser(self, turn: Turn) -> ContinueParser:
        session = self._session(turn)
        global_dir = self.global_dir(session)
        return ContinueParser(
            session_file=global_dir / "sessions" / f"{session}.json",
            session_id=session,
            model=turn.model,
            log=global_dir / "logs" / "cn.log",
        )

    def error_watch(self, turn: Turn, parser: LineParser) -> ErrorWatch | None:
        if not isinstance(parser, ContinueParser) or self.retry_deadline <= 0:
            return None
        return ContinueWatch(parser, self.retry_deadline)

    # ------------------------------------------------------------------------------------------ metadata
    def credential_files(self) -> list[Path]:
        """The user's config (its models' ``apiKey``; :meth:`models_config` registers them too)."""
        return [user_config_file(self.user_global_dir())]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        if self.models_config():
            return True, None
        return (
            False,
            f"add a model to {user_config_file(self.user_global_dir())} (models: - name, provider, model, apiKey)",
        )

    async def list_models(self) -> list[str] | None:
        names = [str(m.get("model") or m.get("name")) for m in self.models_config() if m.get("model") or m.get("name")]
        return names or None

    async def aclose(self) -> None:
        self._root = None
        await super().aclose()
