"""Cline CLI (``cline``, npm ``cline``) as a provider.

How a turn runs (facts measured on 3.0.65, see ``clis.md`` section 9):

- ``cline --json --auto-approve false [-s SYSTEM] [-m MODEL] " "`` with the prompt on stdin, through a FIFO: the CLI
  ignores stdin unless fd 0 is one (a regular file is ignored too), and uvloop's own spawn (the fallback where there
  are no pidfds) makes a subprocess pipe a socket. The CLI joins the prompt argument and stdin (``arg + "\\n\\n" +
  stdin``) and trims the result, so a lone space as the argument sends our prompt as it is, minus leading and trailing
  whitespace. (The argument must contain whitespace, and ``--json`` refuses stdin without an argument; stdin also
  keeps long prompts out of argv.)
- ``--json`` prints NDJSON: ``agent_event``s (``content_start`` text deltas as the model streams them, ``usage``
  running totals, ``error``, ``done``) and one final ``run_result`` (``finishReason`` ``completed`` or ``error``,
  the run's usage with cache tokens and cost, the model). The CLI's session id is not in this output.
- ``-s`` replaces the whole system prompt (sent exactly). ``-m`` picks the model of the configured provider (the
  CLI writes it into providers.json: the private copy below takes it, the user's file never sees it).
- Sessions: ``--id`` forces interactive mode, so there is no non-interactive resume: every turn replays the whole
  conversation (``resumable = False``) and ``Done.session_id`` stays None.
- A private home, by default: the CLI reads ``~/.cline`` (providers, global settings, MCP servers, hooks, skills,
  plugins) and ``~/Documents/Cline`` (rules, workflows), so the runner points ``HOME`` at a directory of its own
  (``owned_tempdir``) whose ``.cline/data/settings/`` holds a copy of the user's ``providers.json`` (their login and
  choice of provider and model: a copy, because ``-m`` writes into it) and a ``global-settings.json`` of ours
  (telemetry and auto-update off, and with tools off every tool id in ``disabledTools``, so the upstream request
  declares no tools at all; a tool call the model makes anyway is rejected by the CLI as ``AI_NoSuchToolError``).
  ``user_config=True`` runs with the user's own HOME. Env for every process: ``CLINE_SESSION_BACKEND_MODE=local``
  (else a detached hub daemon outlives the run), ``CLINE_NO_AUTO_UPDATE=1``, ``CLINE_NO_INTERACTIVE=1``,
  ``DO_NOT_TRACK=1``. Feature-flag lookups of ``data.cline.bot`` cannot be turned off; they fail silently offline.
- Errors: exit 1, an ``agent_event`` ``error`` (``errorClass`` ``auth`` for a 401, ``unknown`` otherwise; a context
  overflow is a ``ContextWindowOverflowError``), ``run_result`` with ``finishReason:"error"`` and the message as
  ``text``, and the message as a JSON line on stderr. The HTTP status is never given, so the message text decides.
- The retry loop: a 5xx is retried silently 6 times over ~63 s (a 429 honours ``retry-after``: 6 requests in ~5 s);
  ``--retries`` counts agent mistakes, not HTTP retries, and nothing is printed or logged until the CLI gives up.
  So the runner bounds it with a deadline of its own (``retry_deadline``, 30 s by default): when the model API has
  sent nothing for that long after an iteration started, the run is killed with a :class:`ProviderTimeout` that says
  so. Cline ignores SIGTERM while it waits; the process layer's SIGKILL after the grace period ends it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from typing_extensions import Unpack

from .. import process
from ..errors import AuthenticationError, ContextLengthExceeded, LLMError, ProviderTimeout, UpstreamError
from ..types import Capabilities, Done, ReasoningDelta, StreamEvent, TextDelta, Usage, UsageEvent
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
    read_text,
    write_if_changed,
)

PROVIDER = "cline"

#: every tool id of Cline 3.0.65: the 25 it declares by default, plus ``apply_patch`` and ``skills`` that some
#: models and settings get; listed in ``disabledTools`` they are not declared upstream at all
TOOL_IDS: tuple[str, ...] = (
    "read_files",
    "search_codebase",
    "run_commands",
    "fetch_web_content",
    "editor",
    "apply_patch",
    "ask_question",
    "skills",
    "spawn_agent",
    "team_spawn_teammate",
    "team_shutdown_teammate",
    "team_status",
    "team_task",
    "team_run_task",
    "team_cancel_run",
    "team_list_runs",
    "team_await_runs",
    "team_send_message",
    "team_broadcast",
    "team_read_mailbox",
    "team_mission_log",
    "team_cleanup",
    "team_create_outcome",
    "team_attach_outcome_fragment",
    "team_review_outcome_fragment",
    "team_finalize_outcome",
    "team_list_outcomes",
)

#: the settings every private home gets: no telemetry, no self-update
BASE_SETTINGS: dict[str, Any] = {"telemetryOptOut": True, "autoUpdateEnabled": False}
#: the variables every process gets: local sessions (no hub daemon), no update check, never interactive, no tracking
OFFLINE_ENV: dict[str, str] = {
    "CLINE_SESSION_BACKEND_MODE": "local",
    "CLINE_NO_AUTO_UPDATE": "1",
    "CLINE_NO_INTERACTIVE": "1",
    "DO_NOT_TRACK": "1",
}
#: variables that would move the CLI's config or data elsewhere than the private home (dropped unless user_config)
LOCATION_VARS: tuple[str, ...] = (
    "CLINE_DIR",
    "CLINE_DATA_DIR",
    "CLINE_PROVIDER_SETTINGS_PATH",
    "CLINE_GLOBAL_SETTINGS_PATH",
    "CLINE_MCP_SETTINGS_PATH",
    "CLINE_HOOKS_DIR",
    "CLINE_RULES",
    "CLINE_SESSION_DATA_DIR",
)

_CONTEXT_ERROR = "ContextWindowOverflowError"


class ClineParser:
    """``--json`` lines of one run -> events. Errors are raised from :meth:`finish`, once the exit code is known."""

    def __init__(self, *, model: str | None = None) -> None:
        self.session_id: str | None = None
        self.model = model
        self.unreadable = Unreadable()
        self.result: dict[str, Any] | None = None
        #: the agent's ``done`` event: the answer is complete even if the CLI exits before ``run_result``
        self.done: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        #: monotonic time an iteration started and the model API has not answered yet, else None
        self.waiting_since: float | None = None

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        data = json_object(line)
        if data is None:
            self.unreadable.add(line)
            return ()
        kind = data.get("type")
        if kind == "run_result":
            self.waiting_since = None
            self.result = data
            return self._usage(data)
        if kind != "agent_event" or not isinstance(event := data.get("event"), dict):
            return ()
        etype = event.get("type")
        if etype == "iteration_start":
            self.waiting_since = time.monotonic()
        elif etype in ("content_start", "content_end", "usage"):
            self.waiting_since = None
        elif etype == "done":
            self.waiting_since = None
            self.done = event
        elif etype == "error":
            self.waiting_since = None
            if not event.get("recoverable"):
                self.error = event
        if etype == "content_start":
            text = event.get("text")
            if isinstance(text, str) and text:
                if event.get("contentType") == "text":
                    return (TextDelta(text),)
                if event.get("contentType") in ("reasoning", "thinking"):
                    return (ReasoningDelta(text),)
        return ()

    def _usage(self, result: Mapping[str, Any]) -> Iterable[StreamEvent]:
        model = result.get("model")
        if isinstance(model, dict) and isinstance(model.get("id"), str):
            self.model = model["id"]
        usage = result.get("usage")
        if result.get("finishReason") == "error" or not isinstance(usage, dict):
            return ()
        input_tokens = int_or_zero(usage.get("inputTokens"))
        cost = usage.get("totalCost")
        return (
            UsageEvent(
                Usage(
                    input_tokens=input_tokens,
                    output_tokens=int_or_zero(usage.get("outputTokens")),
                    cached_tokens=min(int_or_zero(usage.get("cacheReadTokens")), input_tokens),
                    cost_usd=float(cost)
                    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0
                    else None,
                )
            ),
        )

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        result = self.result
        if result is not None and result.get("finishReason") != "error" and returncode == 0:
            length = result.get("finishReason") in ("max_tokens", "length")
            return (Done(finish_reason="length" if length else "stop", model=self.model),)
        done = self.done
        if result is None and done is not None and done.get("reason") == "completed" and returncode == 0:
            # seen once on a loaded machine: the CLI exited 0 after ``done`` without printing ``run_result``
            return (*self._usage({"usage": done.get("usage")}), Done(finish_reason="stop", model=self.model))
        message = self._error_message(stderr)
        if message is None:
            if returncode == 0:
                raise UpstreamError(
                    "cline exited without a run result" + self.unreadable.excerpt(), provider=PROVIDER, detail=stderr
                )
            raise self.unreadable.annotate(process.classify_exit(returncode, stderr, provider=PROVIDER))
        raise classify_error(message, self.error, returncode, detail=stderr)

    def _error_message(self, stderr: str) -> str | None:
        """The CLI's own error message: the error event's, else run_result's text, else stderr's JSON error line."""
        error = self.error.get("error") if self.error else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if self.result is not None and isinstance(self.result.get("text"), str) and self.result["text"]:
            return str(self.result["text"])
        for line in reversed(stderr.splitlines()):
            data = json_object(line.encode())
            if data is not None and data.get("type") == "error" and isinstance(data.get("message"), str):
                return str(data["message"])
        return None


def classify_error(message: str, event: Mapping[str, Any] | None, returncode: int, *, detail: str) -> LLMError:
    """An error of the run: the CLI's ``errorClass`` and error name first, then the message text."""
    error = event.get("error") if event else None
    name = error.get("name") if isinstance(error, dict) else None
    first = message.splitlines()[0] if message else message
    if event is not None and event.get("errorClass") == "auth":
        return AuthenticationError(f"cline: {first}", provider=PROVIDER, detail=detail)
    if name == _CONTEXT_ERROR:
        return ContextLengthExceeded(f"cline: {first}", provider=PROVIDER, detail=detail)
    classified = process.classify_exit(returncode or 1, message, provider=PROVIDER)
    classified.detail = detail or message
    return classified


class ClineWatch:
    """Ends a run whose model API has sent nothing for ``deadline`` seconds since an iteration started: Cline is
    then inside its silent retry loop (or the API hangs), and would stay there for about a minute."""

    interval = 0.25

    def __init__(self, parser: ClineParser, deadline: float) -> None:
        self.parser = parser
        self.deadline = deadline

    def check(self) -> LLMError | None:
        since = self.parser.waiting_since
        if since is None or time.monotonic() - since < self.deadline:
            return None
        return ProviderTimeout(
            f"cline: no answer from the model API within {self.deadline:g} s; the CLI retries failing model "
            "requests silently (6 attempts over ~63 s), so the run was stopped",
            provider=PROVIDER,
        )


def user_providers_file(home: Path, getenv: Any) -> Path:
    """Where the user's CLI keeps its providers: the CLI's own lookup order."""
    if path := getenv("CLINE_PROVIDER_SETTINGS_PATH"):
        return Path(path)
    if data_dir := getenv("CLINE_DATA_DIR"):
        return Path(data_dir) / "settings" / "providers.json"
    config_dir = Path(getenv("CLINE_DIR") or home / ".cline")
    return config_dir / "data" / "settings" / "providers.json"


def configured_provider(providers_json: str) -> dict[str, Any] | None:
    """The settings of the provider the CLI will use (``lastUsedProvider``), or None when there is none."""
    try:
        data = json.loads(providers_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(providers := data.get("providers"), dict):
        return None
    entry = providers.get(data.get("lastUsedProvider"))
    settings = entry.get("settings") if isinstance(entry, dict) else None
    return settings if isinstance(settings, dict) else None


class ClineRunner(CLIRunner):
    """Cline CLI in ``--json`` mode: token streaming, system prompt replaced, history replayed every turn."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Cline CLI"
    capabilities: ClassVar[Capabilities] = Capabilities(
        verified=True,
        streaming=True,
        token_streaming=True,
        system_prompt=True,
        images=False,
        native_tools=False,
        agent_tools=True,
        sessions=False,
        usage=True,
        cost=True,
    )
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "cline"
    package: ClassVar[str] = "cline"
    #: the prompt goes in on stdin when the run starts; a spare would have to wait for it with ``--json``, which
    #: needs stdin or a prompt at start-up
    warmable: ClassVar[bool] = False
    resumable: ClassVar[bool] = False
    pass_env: ClassVar[tuple[str, ...]] = ("CLINE_API_KEY",)

    def __init__(self, *, retry_deadline: float = 30.0, **options: Unpack[RunnerOptions]) -> None:
        super().__init__(**options)
        #: seconds the model API may stay silent after an iteration started before the run is stopped (see module)
        self.retry_deadline = retry_deadline
        self._cli_home: Path | None = None

    # ------------------------------------------------------------------------------------------ private home
    def user_providers(self) -> Path:
        return user_providers_file(self.home(), self.getenv)

    def cli_home(self) -> Path:
        """The HOME runs use: the runner's private one (made on first use, brought up to date on every call), or
        the user's with ``user_config``."""
        if self.user_config:
            return self.home()
        if self._cli_home is None:
            self._cli_home = self.owned_tempdir("home-")
        self.prepare_home(self._cli_home)
        return self._cli_home

    def prepare_home(self, home: Path) -> None:
        """Lay out ``home/.cline/data/settings``: a copy of the user's providers.json and our global settings.
        Cheap and idempotent, so it runs before every process: a login made after the runner started is used."""
        settings_dir = home / ".cline" / "data" / "settings"
        providers = read_text(self.user_providers())
        if providers:
            write_if_changed(settings_dir / "providers.json", providers, mode=0o600)
        else:
            (settings_dir / "providers.json").unlink(missing_ok=True)
        settings = dict(BASE_SETTINGS)
        if not self.allow_tools:
            settings["disabledTools"] = list(TOOL_IDS)
        write_if_changed(settings_dir / "global-settings.json", json.dumps(settings, indent=2))

    def child_env(self) -> dict[str, str]:
        env = super().child_env()
        if not self.user_config:
            for name in LOCATION_VARS:
                env.pop(name, None)
            env["HOME"] = str(self.cli_home())
        return {**env, **OFFLINE_ENV}

    # ------------------------------------------------------------------------------------------ argv
    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, "--json"]
        if not self.allow_tools:
            argv += ["--auto-approve", "false"]
        if turn.system:
            argv += ["-s", turn.system]
        if turn.model:
            argv += ["-m", turn.model]
        argv += [*self.extra_args, " "]
        return Invocation(argv=argv, stdin=turn.prompt.encode("utf-8"), extra_args_placed=True)

    def process_spec(self, turn: Turn, invocation: Invocation, cleanup: list[Path]) -> process.ProcessSpec:
        """The prompt goes in through a FIFO: the CLI ignores stdin unless fd 0 is one (not a regular file either),
        and under uvloop (the server's event loop) a subprocess pipe is a socket."""
        return dataclasses.replace(super().process_spec(turn, invocation, cleanup), stdin_fifo=True)

    def new_parser(self, turn: Turn) -> ClineParser:
        return ClineParser(model=turn.model)

    def error_watch(self, turn: Turn, parser: LineParser) -> ErrorWatch | None:
        if not isinstance(parser, ClineParser) or self.retry_deadline <= 0:
            return None
        return ClineWatch(parser, self.retry_deadline)

    # ------------------------------------------------------------------------------------------ metadata
    def _provider_settings(self) -> dict[str, Any] | None:
        return configured_provider(read_text(self.user_providers()))

    def credential_files(self) -> list[Path]:
        return [self.user_providers()]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        if self.getenv("CLINE_API_KEY"):
            return True, None
        settings = self._provider_settings()
        if settings is None:
            return False, (
                f"configure a provider: `cline auth` (e.g. `cline auth openai -k <key> -m <model> -b <base url>`); "
                f"none in {self.user_providers()}"
            )
        return True, None

    async def list_models(self) -> list[str] | None:
        settings = self._provider_settings()
        model = settings.get("model") if settings else None
        return [model] if isinstance(model, str) and model else None

    async def aclose(self) -> None:
        self._cli_home = None
        await super().aclose()
