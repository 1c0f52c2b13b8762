"""Gemini CLI (``gemini``, ``@google/gemini-cli``) as a provider.

How a turn runs (facts measured on 0.61.0, see ``clis.md`` section 5):

- ``gemini -p "" -o stream-json -m <model>`` with the whole prompt on stdin. The CLI joins stdin and ``-p`` as
  ``stdin + "\\n\\n\\n" + p``, but with an empty ``-p`` the user part upstream is byte-for-byte our prompt.
  ``-m`` is always passed: without it the CLI first makes a *router* call to pick a model (an extra round trip).
- ``stream-json`` prints one assistant ``message`` with ``delta:true`` per upstream chunk, then a ``result``
  event with the usage (``input_tokens`` includes ``cached``). Thought parts never appear in this output, so there
  is nothing to turn into reasoning deltas.
- The system prompt goes through ``GEMINI_SYSTEM_MD=<file>``, which replaces the whole ``systemInstruction``
  (there is no flag). The CLI still appends ``homedir()/.gemini/GEMINI.md`` to it, whatever the settings say.
- A private CLI home, by default: ``homedir()`` is ``GEMINI_CLI_HOME`` (else HOME), and everything user-level lives
  under it: GEMINI.md, settings.json (MCP servers, tools, model, hooks), extensions (their context files go into the
  first user message), commands, skills, agents, policies, ``.env``. The runner points ``GEMINI_CLI_HOME`` at a
  directory of its own (created on first use, removed by :meth:`GeminiRunner.aclose`) whose ``.gemini/`` holds
  only what auth needs (the user's setup, see :mod:`llm_runners.runners.base`): symlinks to the user's login files
  (:data:`AUTH_FILES`; the CLI writes refreshed tokens back with ``writeFile``, which follows the link), the auth,
  endpoint and model lines of the user's ``.env`` (:data:`AUTH_ENV_KEYS`) and a settings.json of our own that keeps
  the user's ``security.auth`` (the selected auth type; with ``GOOGLE_GEMINI_BASE_URL`` set the CLI refuses to run
  without it) and ``model.name``, which also becomes the runner's default model (``-m`` is always passed).
  ``user_config=True`` uses the user's real home.
- Retries: ``general.maxAttempts`` = ``retries`` + 1 in the runner's settings (the CLI's default is 10 attempts,
  ~200 s for a 500), unless the operator's ``settings`` say otherwise; the first retry waits ~5 s. The CLI prints
  each retry on stderr (``Attempt 1 failed with status 500. Retrying with backoff...``); those lines are logged as
  they come.
  Measured with ``maxAttempts: 2``: a refused connection fails after 7.7 s, a 500 after 6.9 s (1.7-2 s with 1).
  ``installation_id`` is not linked: it is only sent with usage statistics, which are off.
- Sessions: ``--session-id <uuid>`` starts one with our id, ``--resume <id>`` continues it. The CLI files them in
  the CLI home (``.gemini/projects.json`` names the project, ``.gemini/tmp/<project>/chats/session-*.jsonl`` holds
  the chat) per project (the working directory); the base keeps one working directory and this runner one CLI home
  per runner instance, so a resume finds its session.
- Safety: the runner's own empty working directory gets a *workspace* ``.gemini/settings.json`` (workspace settings
  override the user's) that registers none of the CLI's tools (``tools.core: []``), blocks the user's MCP servers,
  skills and hooks, and turns usage statistics and telemetry off. The upstream request then declares no functions.
  The private home's settings.json says the same, so this also holds in an operator's ``cwd`` (never written to);
  the operator's ``settings`` option is merged over both.
- Images: ``@<path>`` references in the prompt make the CLI read the file itself and send it as ``inlineData``
  (also with all tools off); it reads only inside the workspace, so the run's assets directory is added with
  ``--include-directories``. The CLI rewrites the reference to ``@<file name>`` in the text it sends.
- Errors: in stream-json mode the exit code is the HTTP status mod 256 and the ``result`` event carries
  ``status:"error"`` with the API error (usually its JSON) embedded in the message. Exit 41 is a missing auth
  method, 42 an unknown resume id. Stderr is always noisy (colour warning, ripgrep fallback) and is never an error
  by itself.
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
    RateLimited,
    SessionNotFound,
    UpstreamError,
    from_http_status,
)
from ..types import Capabilities, Done, StreamEvent, TextDelta, Usage, UsageEvent
from .base import (
    AuthStatus,
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
    read_text,
    write_if_changed,
)

#: names no MCP server or context file will ever have: an allow-list holding only this blocks every MCP server
_NO_MCP = "__llm_runners_no_mcp__"

#: the workspace settings that keep the CLI's own tools, MCP servers, skills and hooks out of a run
SAFE_SETTINGS: dict[str, Any] = {
    "tools": {"core": []},
    "mcp": {"allowed": [_NO_MCP]},
    "skills": {"enabled": False},
    "hooksConfig": {"enabled": False},
    "context": {"includeDirectoryTree": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
}
#: with the operator's ``allow_tools``: the CLI's defaults, only the phone-home switches off
TOOLS_SETTINGS: dict[str, Any] = {
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
}

#: the login files of the user's ``~/.gemini`` that the private home links to: Google login tokens (plain, or
#: encrypted with ``GEMINI_FORCE_ENCRYPTED_FILE_STORAGE``) and the cached account e-mail (else fetched again)
AUTH_FILES: tuple[str, ...] = ("oauth_creds.json", "gemini-credentials.json", "google_accounts.json")
#: the variables the private home's ``.env`` keeps from the user's ``~/.gemini/.env`` (else ``~/.env``)
AUTH_ENV_KEYS: frozenset[str] = frozenset(
    {
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_GCA",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_ACCESS_TOKEN",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_VERTEX_BASE_URL",
        "GEMINI_MODEL",
    }
)
#: a dotenv assignment (``KEY=v``, ``export KEY=v``, ``KEY: v``), as the CLI's dotenv parser reads them
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([\w.-]+)\s*(?:=|:\s)")
#: a retry notice on stderr: ``Attempt 1 failed with status 500. Retrying with backoff... <error>``
_RETRY_LINE = re.compile(r"^Attempt (\d+) failed(.*?)\. Retrying with backoff\.\.\.\s*(.*)")

_EXIT_AUTH_METHOD = 41
_EXIT_BAD_SESSION = 42
_CONTEXT = re.compile(r"input token count.*exceeds the maximum|exceeds the maximum number of tokens", re.I | re.S)
_QUOTA = re.compile(r"RESOURCE_EXHAUSTED|Resource has been exhausted|quota", re.I)
_NOT_FOUND = re.compile(r"\bNOT_FOUND\b|is not found for API version|model .* not found", re.I)
_AUTH_HINT = (
    "Gemini CLI has no usable auth method: set GEMINI_API_KEY (and security.auth.selectedType "
    '"gemini-api-key" in ~/.gemini/settings.json), or run `gemini` once interactively to log in with Google'
)


class GeminiParser:
    """stream-json lines of one run -> events. Errors are raised from :meth:`finish`, once the exit code is known."""

    def __init__(self, *, model: str | None = None, resume: str | None = None) -> None:
        self.session_id: str | None = None
        self.unreadable = Unreadable()  # lines that were no JSON object, quoted in errors
        self.model = model
        self.resume = resume
        self.success = False
        self.error: str | None = None

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json_object(line)
        if event is None:
            self.unreadable.add(line)
            return ()
        kind = event.get("type")
        if kind == "init":
            if isinstance(event.get("session_id"), str):
                self.session_id = event["session_id"]
            model = event.get("model")
            if isinstance(model, str) and model != "auto":
                self.model = model
        elif kind == "message":
            content = event.get("content")
            if event.get("role") == "assistant" and isinstance(content, str) and content:
                return (TextDelta(content),)
        elif kind == "result":
            return self._result(event)
        return ()

    def _result(self, event: dict[str, Any]) -> Iterable[StreamEvent]:
        if event.get("status") != "success":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.error = message if isinstance(message, str) else json.dumps(error)
            return ()
        self.success = True
        stats = event.get("stats")
        if not isinstance(stats, dict):
            return ()
        usage = Usage(
            input_tokens=int_or_zero(stats.get("input_tokens")),
            output_tokens=int_or_zero(stats.get("output_tokens")),
            cached_tokens=int_or_zero(stats.get("cached")),
        )
        return (UsageEvent(usage),)

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if self.success and returncode == 0:
            return (Done(finish_reason="stop", model=self.model, session_id=self.session_id),)
        if self.error is not None:
            raise classify_api_error(self.error, returncode, detail=stderr)
        if returncode == _EXIT_BAD_SESSION or "Error resuming session" in stderr:
            raise SessionNotFound(
                f"gemini: session {self.resume!r} cannot be resumed: {_last_line(stderr, 'Error resuming session')}",
                provider="gemini",
                detail=stderr,
            )
        if returncode == _EXIT_AUTH_METHOD or "Invalid auth method" in stderr:
            raise AuthenticationError(f"gemini: {_AUTH_HINT}", provider="gemini", detail=stderr)
        if returncode == 0:
            raise UpstreamError(
                "gemini exited without a result event" + self.unreadable.excerpt(), provider="gemini", detail=stderr
            )
        return_status = _status_from_exit(returncode)
        if return_status is not None:
            raise classify_api_error(_last_line(stderr, "") or "API error", returncode, detail=stderr)
        raise self.unreadable.annotate(process.classify_exit(returncode, stderr, provider="gemini"))


def classify_api_error(message: str, returncode: int, *, detail: str | None = None) -> LLMError:
    """Map the CLI's error text (``[API Error: {json}]…``) and its exit code (HTTP status mod 256) to the tree."""
    status, api_message, api_status = _embedded(message)
    if status is None:
        status = _status_from_exit(returncode)
    text = api_message or message.strip()
    if text.startswith("[API Error: ") and "]" in text:
        text = text[len("[API Error: ") : text.rindex("]")]
    msg = f"gemini: {text}"
    error: LLMError
    if _CONTEXT.search(message):
        error = ContextLengthExceeded(msg, provider="gemini")
    elif status == 429 or _QUOTA.search(message) or api_status == "RESOURCE_EXHAUSTED":
        error = RateLimited(msg, provider="gemini")
    elif status == 404 or api_status == "NOT_FOUND" or _NOT_FOUND.search(message):
        error = ModelNotFound(msg, provider="gemini")
    elif status is not None:
        error = from_http_status(status, msg, provider="gemini")
    elif "fetch failed" in message:
        error = UpstreamError(f"gemini: cannot reach the model API ({text})", provider="gemini")
    else:
        error = UpstreamError(msg, provider="gemini")
    error.detail = detail or message
    return error


def _embedded(message: str) -> tuple[int | None, str | None, str | None]:
    """(code, message, status) of an API error JSON embedded in the CLI's message, if there is one."""
    start, end = message.find("{"), message.rfind("}")
    if start < 0 or end <= start:
        return None, None, None
    try:
        data = json.loads(message[start : end + 1])
    except (ValueError, RecursionError):  # a deeply nested "JSON" is no API error either
        return None, None, None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    code = error.get("code")
    text = error.get("message")
    status = error.get("status")
    return (
        code if isinstance(code, int) else None,
        text if isinstance(text, str) else None,
        status if isinstance(status, str) else None,
    )


def _status_from_exit(returncode: int) -> int | None:
    """In json/stream-json modes the CLI exits with the HTTP status mod 256: 400-499 -> 144-243, 500-511 -> 244-255."""
    if 144 <= returncode <= 255:
        return returncode + 256
    return None


def _last_line(stderr: str, marker: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if marker in line:
            return line
    return lines[-1] if lines else ""


def auth_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The carried part of user settings: ``security.auth`` (selected, enforced or external auth type) and the
    model selection ``model.name``; nothing else."""
    out: dict[str, Any] = {}
    security = settings.get("security")
    auth = security.get("auth") if isinstance(security, dict) else None
    if isinstance(auth, dict) and auth:
        out["security"] = {"auth": dict(auth)}
    model = settings.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str) and model["name"]:
        out["model"] = {"name": model["name"]}
    return out


def env_values(text: str) -> dict[str, str]:
    """The assignments of a ``.env`` text (quotes around a value removed), as far as the runner needs them."""
    values = {}
    for line in text.splitlines():
        m = _ENV_LINE.match(line)
        if m:
            value = line[m.end() :].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[m.group(1)] = value
    return values


def auth_env(text: str) -> str:
    """The lines of a ``.env`` file that assign one of :data:`AUTH_ENV_KEYS`, verbatim; nothing else."""
    lines = []
    for line in text.splitlines():
        m = _ENV_LINE.match(line)
        if m and m.group(1) in AUTH_ENV_KEYS:
            lines.append(line)
    return "".join(line + "\n" for line in lines)


def user_auth_env(user_home: Path) -> str:
    """The auth lines of the ``.env`` the CLI would read from the user's home: ``.gemini/.env``, else ``.env``."""
    for candidate in (user_home / ".gemini" / ".env", user_home / ".env"):
        if candidate.is_file():
            return auth_env(read_text(candidate))
    return ""


def prepare_cli_home(home: Path, user_home: Path, settings: Mapping[str, Any]) -> None:
    """Lay out a private CLI home: ``<home>/.gemini/`` with ``settings`` plus the user's ``security.auth``,
    symlinks to the user's login files, and the auth lines of the user's ``.env``. Idempotent and cheap (a few
    stats), so it runs before every turn: a login made after the runner started is picked up.

    ``user_home`` is the user's own CLI home (the directory that contains their ``.gemini``)."""
    user_dir, own = user_home / ".gemini", home / ".gemini"
    own.mkdir(parents=True, exist_ok=True)
    settings_json = merged(auth_settings(read_jsonc(user_dir / "settings.json")), settings)
    write_if_changed(own / "settings.json", json.dumps(settings_json, indent=2))
    for name in AUTH_FILES:
        source, link = user_dir / name, own / name
        if source.is_file() and not os.path.lexists(link):
            link.symlink_to(source)
    env_text = user_auth_env(user_home)
    if env_text:
        write_if_changed(own / ".env", env_text, mode=0o600)
    else:
        (own / ".env").unlink(missing_ok=True)


class GeminiRunner(CLIRunner):
    """Gemini CLI in headless stream-json mode: token streaming, system prompt, sessions, images."""

    name: ClassVar[str] = "gemini"
    display_name: ClassVar[str] = "Gemini CLI"
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
    #: the CLI's own default Flash model in 0.61.0: fast and cheap for chat; naming it skips the router call
    default_model: ClassVar[str | None] = "gemini-3.5-flash"
    binary_name: ClassVar[str] = "gemini"
    #: 0.61.0 waits only 0.5 s for input on stdin, then exits 42 ("No input provided via stdin"): a spare would be
    #: gone before any request came
    warmable: ClassVar[bool] = False
    package: ClassVar[str] = "@google/gemini-cli"
    api_key_env: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    pass_env: ClassVar[tuple[str, ...]] = (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_VERTEX_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_GCA",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_ACCESS_TOKEN",
        "GEMINI_FORCE_ENCRYPTED_FILE_STORAGE",
        "GEMINI_FORCE_FILE_STORAGE",
        "GEMINI_CLI_HOME",
    )
    #: the model names Gemini CLI 0.61.0 knows (it cannot list models offline)
    known_models: ClassVar[tuple[str, ...]] = (
        "gemini-3.8-flash",
        "gemini-3.5-flash",
        "gemini-3.5-flash-lite",
        "gemini-3.1-flash-lite",
        "gemini-3.1-pro-preview",
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    )

    def __init__(self, *, settings: Mapping[str, Any] | None = None, **options: Unpack[RunnerOptions]) -> None:
        # user_config (base): run with the user's real CLI home (GEMINI.md, settings, MCP servers, extensions,
        # commands); off by default: the CLI would put them into every request
        super().__init__(**options)
        #: the operator's own CLI settings (e.g. ``{"general": {"maxAttempts": 1}}``), merged over the runner's into
        #: every settings file it writes: the private home's, and the workspace's unless the operator gave a ``cwd``
        self.settings: dict[str, Any] = dict(settings or {})
        self._cli_home: Path | None = None

    # ------------------------------------------------------------------------------------------ CLI home
    def user_cli_home(self) -> Path:
        """The user's own CLI home, the directory holding their ``.gemini``: ``GEMINI_CLI_HOME``, else HOME."""
        cli_home = self.getenv("GEMINI_CLI_HOME")
        return Path(cli_home) if cli_home else self.home()

    def cli_home(self) -> Path:
        """The CLI home runs use: the runner's private one (made on first use, kept for the runner's lifetime so
        sessions can be resumed, brought up to date on every call), or the user's with ``user_config``."""
        if self.user_config:
            return self.user_cli_home()
        if self._cli_home is None:
            self._cli_home = self.owned_tempdir("home-")
        prepare_cli_home(self._cli_home, self.user_cli_home(), self.own_settings())
        return self._cli_home

    def own_settings(self) -> dict[str, Any]:
        """The settings the runner writes: tools off (or the CLI's defaults with ``allow_tools``), no phone-home,
        ``retries`` + 1 attempts per API call, then the operator's ``settings``."""
        base = merged(
            TOOLS_SETTINGS if self.allow_tools else SAFE_SETTINGS, {"general": {"maxAttempts": self.retries + 1}}
        )
        return merged(base, self.settings)

    # ------------------------------------------------------------------------------------------ user setup
    def user_settings(self) -> dict[str, Any]:
        """The user's own ``~/.gemini/settings.json`` (comments allowed), ``{}`` when there is none."""
        return read_jsonc(self.user_cli_home() / ".gemini" / "settings.json")

    def _setup_env(self) -> dict[str, str]:
        """The carried variables a run sees: the auth lines of the user's ``.env``, under the environment's (the
        CLI's dotenv loader does not override variables that are set)."""
        env = env_values(user_auth_env(self.user_cli_home()))
        for name in (*self.pass_env, "GEMINI_MODEL"):
            value = self.getenv(name)
            if value:
                env[name] = value
        return env

    def user_default_model(self) -> str | None:
        """``GEMINI_MODEL`` (environment or ``.env``), else the user's ``model.name``: the CLI's own order after
        ``-m``."""
        model = self._setup_env().get("GEMINI_MODEL") or auth_settings(self.user_settings()).get("model", {}).get(
            "name"
        )
        return model if isinstance(model, str) and model else None

    def endpoint(self) -> str | None:
        env = self._setup_env()
        if (env.get("GOOGLE_GENAI_USE_VERTEXAI") or "").lower() in ("1", "true"):
            return env.get("GOOGLE_VERTEX_BASE_URL") or "Vertex AI"
        return env.get("GOOGLE_GEMINI_BASE_URL") or "https://generativelanguage.googleapis.com"

    def child_env(self) -> dict[str, str]:
        """``GEMINI_CLI_HOME`` for every process of this runner (turns, ``--version``); none with ``user_config``."""
        env = super().child_env()
        if not self.user_config:
            env["GEMINI_CLI_HOME"] = str(self.cli_home())
        return env

    # ------------------------------------------------------------------------------------------ argv
    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, "-p", "", "-o", "stream-json", "-m", turn.model or self.default_model or ""]
        if turn.resume:
            argv += ["--resume", turn.resume]
        elif turn.session:
            argv += ["--session-id", turn.session]
        if not self.allow_tools:
            argv += ["--allowed-mcp-server-names", _NO_MCP]
        if turn.images:
            argv += ["--include-directories", str(turn.assets)]
        env = {"GEMINI_CLI_TRUST_WORKSPACE": "true"}
        if turn.system:
            env["GEMINI_SYSTEM_MD"] = str(turn.tempfile("system.md", turn.system))
        self._write_workspace_settings(turn.workdir)
        prompt = turn.prompt + at_references(turn)
        return Invocation(argv=argv, stdin=prompt.encode("utf-8"), env=env)

    def process_spec(self, turn: Turn, invocation: Invocation, cleanup: list[Path]) -> process.ProcessSpec:
        """The turn's spec with a stderr watch that logs each retry notice as the CLI prints it."""
        return dataclasses.replace(super().process_spec(turn, invocation, cleanup), stderr_watch=self._stderr_line)

    def _stderr_line(self, raw: bytes) -> process.StderrVerdict | None:
        m = _RETRY_LINE.match(raw.decode("utf-8", "replace"))
        if m:
            status = m.group(2).strip()
            self.log_retry(f"retrying after attempt {m.group(1)}" + (f" ({status})" if status else ""))
        return None  # only reported: maxAttempts bounds the loop

    def new_parser(self, turn: Turn) -> GeminiParser:
        return GeminiParser(model=turn.model, resume=turn.resume)

    def _write_workspace_settings(self, workdir: Path) -> None:
        """Workspace settings override the user's; written only into the runner's own empty working directory,
        never into an operator's ``cwd``."""
        if self.cwd is not None:
            return
        write_if_changed(workdir / ".gemini" / "settings.json", json.dumps(self.own_settings(), indent=2))

    # ------------------------------------------------------------------------------------------ metadata
    def credential_files(self) -> list[Path]:
        """The login files, the settings and the two ``.env`` files the CLI reads its keys from."""
        home = self.user_cli_home()
        user_dir = home / ".gemini"
        return [*(user_dir / name for name in AUTH_FILES), user_dir / "settings.json", user_dir / ".env", home / ".env"]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        status = await self.auth_status()
        return status.authenticated, status.fix

    async def auth_status(self) -> AuthStatus:
        """What the user's CLI would do with its selected auth type (``security.auth.selectedType``) and the
        credentials it would find (environment, the user's ``.env``, login files)."""
        env = self._setup_env()
        user_dir = self.user_cli_home() / ".gemini"
        login = any((user_dir / name).is_file() for name in ("oauth_creds.json", "gemini-credentials.json"))
        api_key = bool(env.get("GEMINI_API_KEY"))
        vertex = bool(env.get("GOOGLE_API_KEY")) or bool(
            env.get("GOOGLE_CLOUD_PROJECT") and env.get("GOOGLE_CLOUD_LOCATION")
        )
        auth = auth_settings(self.user_settings()).get("security", {}).get("auth", {})
        selected = auth.get("selectedType") if isinstance(auth, dict) else None
        settings_file = user_dir / "settings.json"
        if selected == "gemini-api-key":
            if api_key:
                return AuthStatus(True)
            return AuthStatus(
                False,
                f"Gemini CLI: {settings_file} selects the gemini-api-key auth type, but GEMINI_API_KEY is not set",
                "set GEMINI_API_KEY (https://aistudio.google.com/apikey) in the environment or ~/.gemini/.env",
            )
        if selected == "oauth-personal":
            if login:
                return AuthStatus(True)
            return AuthStatus(
                False,
                f"Gemini CLI: {settings_file} selects the Google login, but {user_dir} holds no login",
                "run `gemini` once interactively to log in with Google",
            )
        if selected == "vertex-ai":
            if vertex:
                return AuthStatus(True)
            return AuthStatus(
                False,
                f"Gemini CLI: {settings_file} selects Vertex AI, but neither GOOGLE_API_KEY nor GOOGLE_CLOUD_PROJECT "
                "and GOOGLE_CLOUD_LOCATION are set",
                "set GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION (or GOOGLE_API_KEY)",
            )
        if isinstance(selected, str) and selected:
            return AuthStatus(None)  # compute-default-credentials and the like: known only to Google's servers
        if env.get("GOOGLE_GEMINI_BASE_URL"):
            return AuthStatus(
                False,
                "Gemini CLI: GOOGLE_GEMINI_BASE_URL is set but no auth type is selected, which 0.61.0 refuses "
                "(exit 41, 'Invalid auth method selected')",
                f'set security.auth.selectedType to "gemini-api-key" in {settings_file}',
            )
        if api_key or login or (env.get("GOOGLE_GENAI_USE_VERTEXAI") or "").lower() in ("1", "true"):
            return AuthStatus(True)
        if env.get("GOOGLE_API_KEY"):
            return AuthStatus(True)
        return AuthStatus(
            False,
            "Gemini CLI is not logged in: no GEMINI_API_KEY / GOOGLE_API_KEY, no Vertex AI selection, no Google login",
            "set GEMINI_API_KEY (https://aistudio.google.com/apikey) or run `gemini` once to log in with Google",
        )

    async def aclose(self) -> None:
        """The base removes the private CLI home (its sessions with it; links are removed, never followed)."""
        self._cli_home = None
        await super().aclose()
