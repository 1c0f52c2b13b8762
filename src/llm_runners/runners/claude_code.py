"""Claude Code (``claude``, ``@anthropic-ai/claude-code``) as a provider.

How a turn runs (facts measured on 2.1.197, see ``clis.md`` section 3):

- ``claude -p --input-format stream-json --output-format stream-json --verbose --include-partial-messages``: the
  turn goes to stdin as ONE JSON user message (text block + inline base64 image blocks); stdin is closed once the
  turn's ``result`` event came (the CLI then exits 0), or kept open for the conversation's next turn (a live
  process, :mod:`llm_runners.runners.live`). Long prompts and images never touch argv. (See the note on session
  files below.)
- Token streaming comes from the ``stream_event`` wrappers (``content_block_delta`` ``text_delta`` /
  ``thinking_delta``). The complete ``assistant`` event that follows repeats the text; it is used only for a
  message whose deltas never came (and never for the ``<synthetic>`` messages that carry API errors).
- The ``result`` event carries usage, cost (``total_cost_usd``), ``is_error`` and ``api_error_status``. The CLI
  exits 1 on EVERY API error with the message on stdout, so errors are classified from ``result`` whatever the exit
  code; stderr only speaks for usage errors and ``No conversation found with session ID: …``.
- ``--system-prompt-file`` replaces the default prompt block exactly (the billing and identity blocks stay); a file
  keeps long system prompts off argv. ``--model`` is passed verbatim (aliases or full names).
- Sessions: ``--session-id <uuid>`` starts one with our id, ``--resume <id>`` continues it (the CLI re-sends the
  history upstream). An unknown id is SessionNotFound, and the base replays the history once.

Safety (the leanest set that is still safe):
- ``--tools ""``: no built-in tools at all, so the request upstream declares none (no Bash/Write, no agent list
  system message). ``--disallowedTools`` and ``--permission-mode`` are moot when no tool exists.
- ``--setting-sources ""``: none of the caller's user/project/local settings (hooks, permissions, env, plugins)
  and none of their CLAUDE.md files reach the run (verified: a ``~/.claude/CLAUDE.md`` and a parent-directory
  CLAUDE.md both disappear from the request). Unlike ``--bare`` this keeps OAuth (``claude login``) working.
- The user's setup (see :mod:`llm_runners.runners.base`): the endpoint/auth part of ``~/.claude/settings.json``
  (``$CLAUDE_CONFIG_DIR/settings.json``) goes back in through ``--settings <file>``, a per-run file holding only
  :func:`carried_settings`: the ``env`` entries that choose and reach the endpoint (``ANTHROPIC_*``,
  ``CLAUDE_CODE_USE_BEDROCK`` / ``_VERTEX`` / ``_FOUNDRY``, ``AWS_*``, ``CLOUD_ML_*``, ``GOOGLE_*``, ``VERTEX_*``)
  and ``apiKeyHelper``, ``model``, ``awsAuthRefresh``, ``awsCredentialExport``, ``forceLoginMethod``. Verified on
  2.1.197: ``--settings`` is read with ``--setting-sources ""`` and with ``--bare`` (its ``env`` and its
  ``apiKeyHelper`` both work), while hooks, permissions, MCP servers, plugins and the status line of the user's
  file never get there. An entry of the operator's ``env`` wins over the user's. ``user_config=True`` drops
  ``--setting-sources ""``, ``--strict-mcp-config`` and ``--bare``: the CLI reads all of the user's setup.
- Retries: ``CLAUDE_CODE_MAX_RETRIES`` = the runner's ``retries`` (default 10 in the CLI, ~3 min for a 401 or a
  500) unless the operator's env sets it; each ``api_retry`` event is logged as it comes.
- ``--strict-mcp-config`` without ``--mcp-config``: no MCP server from ``~/.claude.json`` or ``.mcp.json`` is
  started (verified: a user-scope stdio server is spawned without these flags).
- A request that brings tools over MCP (``extra["mcp_endpoint"]``, :mod:`llm_runners.mcp.toolhost`) adds
  ``--mcp-config <per-run file>`` naming only that loopback HTTP server (its bearer token in the file, never on
  argv), ``--allowed-tools mcp__<server>__<tool>,…`` for exactly its tools, and ``MCP_CONNECTION_NONBLOCKING=0``
  (2.1.197 otherwise sends the first model request before the server answered). ``--tools ""`` keeps MCP tools.
- ``--bare`` in addition when ``ANTHROPIC_API_KEY`` is set and tools are off: it reads auth only from that key (so
  it would break OAuth logins) but skips hooks, plugin sync, LSP and auto-memory: ~0.1 s faster per run (0.45 vs
  0.54 s). With tools on it is left out, since it also cuts the default tool set down to Bash, Edit and Read.
- The phone-home switches (telemetry, auto-updater, error reporting, non-essential traffic) are on unless the
  operator's env says otherwise: a provider must not update or report from inside a request.
- ``allow_tools=True`` restores the default tool set with ``--permission-mode acceptEdits``. That is not "edits
  only": file edits and reads in the working directory go through, and so do shell commands Claude Code counts
  as staying there (``tests/e2e/test_tools_matrix.py``: its Bash ``touch`` of a file in the working directory
  runs). What would need an interactive approval, such as reading a file outside the working directory, is
  denied, as ``-p`` mode cannot ask. Settings and MCP stay off either way; an operator adds them with
  ``extra_args``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

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
from ..mcp.toolhost import MCP_ENDPOINT_KEY
from ..quotas import Quota
from ..types import (
    Capabilities,
    Done,
    FinishReason,
    ImagePart,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Usage,
    UsageEvent,
)
from .base import (
    EPHEMERAL_KEY,
    AuthStatus,
    CLIRunner,
    Invocation,
    LineParser,
    Turn,
    Unreadable,
    int_or_zero,
    json_object,
)

PROVIDER = "claude_code"

#: set for every run unless the operator's env sets them: no telemetry, update or error-report traffic
OFFLINE_ENV: dict[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    # write the turn to the session file BEFORE the `result` event (see the note on session files below)
    "CLAUDE_CODE_EAGER_FLUSH": "1",
}

LOGIN_HINT = "run `claude login` or set ANTHROPIC_API_KEY"

# Session files: 2.1.197 batches its session-file writes on a 100 ms timer and exits as soon as it finds end of input
# after `result`, so with stdin closed up front the turn's user message is lost in ~1 run of 5 (7/30 and 0-8/40
# measured here), and the next `--resume` sends the history WITHOUT it. CLAUDE_CODE_EAGER_FLUSH=1 (read from the
# binary: it awaits the transcript flush before emitting `result`) makes that rarer but not rare enough: with stdin
# closed up front the whole session file was still missing after 2 of 12 and 2 of 16 runs (measured again while
# building live processes). Closing stdin only once `result` has been read costs nothing and gave 12/12 complete
# files (24/24 with a 0.1 s wait after `result`). So stdin stays open for the turn and the base closes it when the
# turn is over (`turn_over`), or keeps the process live for the conversation's next turn.

#: ``env`` entries of the user's settings that carry over: how the CLI reaches its model and authenticates
_CARRIED_ENV = re.compile(
    r"ANTHROPIC_\w+|CLAUDE_CODE_USE_(?:BEDROCK|VERTEX|FOUNDRY)|CLAUDE_CODE_SKIP_(?:BEDROCK|VERTEX|FOUNDRY)_AUTH|"
    r"CLAUDE_CODE_OAUTH_TOKEN|CLAUDE_CODE_API_KEY_HELPER_TTL_MS|AWS_\w+|CLOUD_ML_\w+|GOOGLE_\w+|VERTEX_\w+"
)
#: top-level keys of the user's settings that carry over (auth helpers, login method, the default model)
CARRIED_KEYS: tuple[str, ...] = (
    "apiKeyHelper",
    "model",
    "awsAuthRefresh",
    "awsCredentialExport",
    "forceLoginMethod",
    "forceLoginOrgUUID",
)
#: variables (in the environment or the carried settings) by which the CLI has credentials without a login file
_CREDENTIAL_VARS: tuple[str, ...] = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
)


def carried_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint/auth part of a Claude Code settings object (see the module docstring); nothing else."""
    out: dict[str, Any] = {k: settings[k] for k in CARRIED_KEYS if k in settings}
    env = settings.get("env")
    if isinstance(env, dict):
        kept = {k: str(v) for k, v in env.items() if isinstance(k, str) and _CARRIED_ENV.fullmatch(k)}
        if kept:
            out["env"] = kept
    return out


_NO_SESSION = re.compile(r"No conversation found with session ID: ?(\S*)")
_TOO_LONG = re.compile(r"prompt is too long|context.{0,20}(length|window)|too many tokens", re.I)
_NOT_LOGGED_IN = re.compile(r"not logged in|please run /login|invalid api key", re.I)

#: the synthetic assistant message's ``error`` code (when the CLI gives no HTTP status) -> error class
_SYNTHETIC_ERRORS: dict[str, type[LLMError]] = {
    "authentication_failed": AuthenticationError,
    "rate_limit": RateLimited,
    "model_not_found": ModelNotFound,
    "server_error": UpstreamError,
}

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",  # the CLI ran its own tools; the caller's turn still ended normally
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


def user_message(turn: Turn) -> dict[str, Any]:
    """The one stream-json input line of a turn: the prompt text, then each image as ``[image n]`` + its block
    (the rendered prompt refers to images by those placeholders)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": turn.prompt or " "}]
    for i, image in enumerate(turn.image_parts, start=1):
        content.append({"type": "text", "text": f"[image {i}]"})
        content.append(image_block(image))
    return {"type": "user", "message": {"role": "user", "content": content}}


def mcp_endpoint_args(turn: Turn, endpoint: Mapping[str, Any]) -> list[str]:
    """``--mcp-config`` for the request's loopback MCP endpoint (:mod:`llm_runners.mcp.toolhost`): a per-run file
    (the bearer token never goes on argv) naming one HTTP server, and ``--allowed-tools`` for its tools only, so
    the CLI calls them without asking (``-p`` mode cannot ask). ``--tools ""`` keeps MCP tools (verified)."""
    name = str(endpoint["name"])
    config = {"mcpServers": {name: {"type": "http", "url": endpoint["url"], "headers": dict(endpoint["headers"])}}}
    path = turn.tempfile("mcp-config.json", json.dumps(config))
    allowed = ",".join(f"mcp__{name}__{tool}" for tool in endpoint.get("tools") or ()) or f"mcp__{name}"
    return ["--mcp-config", str(path), "--allowed-tools", allowed]


def image_block(image: ImagePart) -> dict[str, Any]:
    if image.data is not None:
        source: dict[str, Any] = {"type": "base64", "media_type": image.media_type, "data": image.base64()}
    else:
        source = {"type": "url", "url": image.url}
    return {"type": "image", "source": source}


def rate_limit_quota(info: object) -> Quota | None:
    """A ``rate_limit_event``'s ``rate_limit_info`` (sent with a subscription login, never with an API key; see
    tests/fixtures/claude/README.md): ``utilization`` is a fraction, ``resetsAt`` Unix seconds."""
    if not isinstance(info, dict):
        return None
    window = info.get("rateLimitType")
    utilization = info.get("utilization")
    resets = info.get("resetsAt")
    status = info.get("status")
    number = (int, float)
    return Quota(
        window=window if isinstance(window, str) and window else "unified",
        percent_used=round(float(utilization) * 100, 2) if isinstance(utilization, number) else None,
        resets_at=float(resets) if isinstance(resets, number) else None,
        status=status if isinstance(status, str) else None,
        source="claude_code:rate_limit_event",
    )


class ClaudeCodeParser:
    """stream-json lines of one ``claude -p`` run -> events; errors are raised from :meth:`finish`."""

    def __init__(
        self,
        *,
        model: str | None = None,
        resume: str | None = None,
        on_retry: Callable[[str], None] | None = None,
        on_quota: Callable[[Quota], None] | None = None,
    ) -> None:
        self.session_id: str | None = None
        self.on_retry = on_retry
        self.on_quota = on_quota
        self.unreadable = Unreadable()  # lines that were no JSON object, quoted in errors
        self.requested_model = model
        self.resume = resume
        #: the model the API said it served (``message_start``), else the CLI's own idea of it
        self.api_model: str | None = None
        self.cli_model: str | None = None
        self.result: dict[str, Any] | None = None
        self.synthetic_error: str | None = None
        self.stop_reason: str | None = None
        self.warnings: list[str] = []
        self._streamed: set[str] = set()  # ids of messages whose text arrived as deltas
        self._current: str | None = None

    # ------------------------------------------------------------------------------------------ lines
    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json_object(line)
        if event is None:
            self.unreadable.add(line)
            return ()
        sid = event.get("session_id")
        if isinstance(sid, str) and sid:
            self.session_id = sid
        kind = event.get("type")
        if kind == "stream_event":
            inner = event.get("event")
            return self._stream_event(inner) if isinstance(inner, dict) else ()
        if kind == "assistant":
            return self._assistant(event.get("message"), event.get("error"))
        if kind == "system":
            self._system(event)
        elif kind == "result":
            self.result = event
        elif kind == "rate_limit_event":
            quota = rate_limit_quota(event.get("rate_limit_info"))
            if quota is not None and self.on_quota is not None:
                self.on_quota(quota)
        return ()

    def _stream_event(self, event: dict[str, Any]) -> Iterable[StreamEvent]:
        etype = event.get("type")
        if etype == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return ()
            if self._current is not None:
                self._streamed.add(self._current)
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
                return (TextDelta(delta["text"]),)
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str) and delta["thinking"]:
                return (ReasoningDelta(delta["thinking"]),)
        elif etype == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("id"), str):
                    self._current = message["id"]
                if isinstance(message.get("model"), str) and message["model"]:
                    self.api_model = message["model"]
        elif etype == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
        return ()

    def _assistant(self, message: object, error: object) -> Iterable[StreamEvent]:
        """A complete message. Its text already streamed as deltas, unless no delta of it ever came."""
        if not isinstance(message, dict):
            return ()
        if message.get("model") == "<synthetic>" or isinstance(error, str):
            if isinstance(error, str):
                self.synthetic_error = error
            return ()  # an API error dressed as a message: reported from `result`, never as answer text
        message_id = message.get("id")
        if isinstance(message_id, str):
            if message_id in self._streamed:
                return ()
            self._streamed.add(message_id)
        content = message.get("content")
        events: list[StreamEvent] = []
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "text" and block.get("text"):
                events.append(TextDelta(str(block["text"])))
            elif isinstance(block, dict) and block.get("type") == "thinking" and block.get("thinking"):
                events.append(ReasoningDelta(str(block["thinking"])))
        if isinstance(message.get("model"), str):
            self.api_model = message["model"]
        return events

    def _system(self, event: dict[str, Any]) -> None:
        subtype = event.get("subtype")
        if subtype == "init" and isinstance(event.get("model"), str):
            self.cli_model = event["model"]
        elif subtype == "api_retry":
            status = event.get("error_status")
            detail = (f", HTTP {status}" if status is not None else "") + (
                f", {event['error']}" if isinstance(event.get("error"), str) else ""
            )
            attempt = f"{event.get('attempt')}/{event.get('max_retries')}"
            self.warnings.append(f"claude retried the model API (attempt {attempt}{detail})")
            if self.on_retry is not None:
                delay = event.get("retry_delay_ms")
                wait = f" in {delay / 1000:.1f} s" if isinstance(delay, int | float) else ""
                self.on_retry(f"retrying {attempt}{wait}" + (f" ({detail[2:]})" if detail else ""))

    # ------------------------------------------------------------------------------------------ exit
    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        result = self.result
        missing = _NO_SESSION.search(stderr) or _NO_SESSION.search(" ".join(self._result_errors()))
        if missing:
            raise SessionNotFound(
                f"claude: no conversation found with session ID {missing.group(1) or self.resume}",
                provider=PROVIDER,
                detail=stderr or None,
            )
        if result is None:
            if returncode == 0:
                raise UpstreamError(
                    "claude exited without a result event" + self.unreadable.excerpt(),
                    provider=PROVIDER,
                    detail=stderr or None,
                )
            raise self.unreadable.annotate(process.classify_exit(returncode, stderr, provider=PROVIDER))
        if result.get("is_error") is True or str(result.get("subtype", "success")) != "success":
            raise self._error(result, stderr)
        events: list[StreamEvent] = []
        usage = self._usage(result)
        if usage is not None:
            events.append(UsageEvent(usage))
        stop = result.get("stop_reason") if isinstance(result.get("stop_reason"), str) else self.stop_reason
        denials = result.get("permission_denials")
        if isinstance(denials, list) and denials:
            names = sorted({str(d.get("tool_name")) for d in denials if isinstance(d, dict)})
            self.warnings.append(f"claude was denied tool permission for: {', '.join(names)}")
        events.append(
            Done(
                finish_reason=_FINISH.get(stop or "", "stop"),
                model=self.api_model or self._usage_model() or self.cli_model or self.requested_model,
                session_id=self.session_id,
                warnings=tuple(self.warnings),
            )
        )
        return events

    def _result_errors(self) -> list[str]:
        errors = self.result.get("errors") if self.result else None
        return [str(e) for e in errors] if isinstance(errors, list) else []

    def _usage_model(self) -> str | None:
        usage = self.result.get("modelUsage") if self.result else None
        if isinstance(usage, dict) and usage:
            return str(next(iter(usage)))
        return None

    @staticmethod
    def _usage(result: dict[str, Any]) -> Usage | None:
        """The CLI's own numbers. Anthropic's ``input_tokens`` excludes cache reads and writes; ``Usage`` counts
        the whole prompt, with the cache reads as ``cached_tokens`` (a subset), as the OpenAI formats do."""
        usage = result.get("usage")
        if not isinstance(usage, dict):
            return None
        cache_read = int_or_zero(usage.get("cache_read_input_tokens"))
        cache_write = int_or_zero(usage.get("cache_creation_input_tokens"))
        cost = result.get("total_cost_usd")
        return Usage(
            input_tokens=int_or_zero(usage.get("input_tokens")) + cache_read + cache_write,
            output_tokens=int_or_zero(usage.get("output_tokens")),
            cached_tokens=cache_read,
            cache_write_tokens=cache_write,
            cost_usd=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
        )

    def _error(self, result: dict[str, Any], stderr: str) -> LLMError:
        text = result.get("result")
        message = text if isinstance(text, str) and text else "; ".join(self._result_errors())
        message = message or f"claude reported an error ({result.get('subtype')})"
        msg = f"claude: {message}"
        status = result.get("api_error_status")
        detail = json.dumps(result)[:4000] + (f"\nstderr: {stderr}" if stderr else "")
        error: LLMError
        if result.get("terminal_reason") == "prompt_too_long" or _TOO_LONG.search(message):
            error = ContextLengthExceeded(msg, provider=PROVIDER)
        elif status == 401 or (status is None and _NOT_LOGGED_IN.search(message)):
            error = AuthenticationError(f"{msg} ({LOGIN_HINT})", provider=PROVIDER)
        elif isinstance(status, int) and not isinstance(status, bool):
            error = from_http_status(status, msg, provider=PROVIDER)
        elif self.synthetic_error in _SYNTHETIC_ERRORS:
            error = _SYNTHETIC_ERRORS[self.synthetic_error](msg, provider=PROVIDER)
        else:  # connection refused and anything else the model API did not answer
            error = UpstreamError(msg, provider=PROVIDER)
        error.detail = detail
        return error


class ClaudeCodeRunner(CLIRunner):
    """Claude Code in print mode with stream-json in and out: token streaming, system prompt, sessions, images."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Claude Code"
    capabilities: ClassVar[Capabilities] = Capabilities(
        verified=True,
        streaming=True,
        token_streaming=True,
        system_prompt=True,
        images=True,
        native_tools=False,
        mcp_tools=True,
        agent_tools=True,
        sessions=True,
        usage=True,
        cost=True,
    )
    #: None: the CLI picks (it depends on the account); Done reports the model actually used
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "claude"
    package: ClassVar[str] = "@anthropic-ai/claude-code"
    #: stream-json input keeps the process reading turns: one per stdin line, each ended by its own `result`
    live_turns: ClassVar[bool] = True
    api_key_env: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
    pass_env: ClassVar[tuple[str, ...]] = (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_MODEL",
        "ANTHROPIC_SMALL_FAST_MODEL",
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CLAUDE_CONFIG_DIR",
        "CLAUDE_CODE_MAX_RETRIES",
        "CLAUDE_CODE_USE_BEDROCK",
        "CLAUDE_CODE_USE_VERTEX",
        "CLAUDE_CODE_USE_FOUNDRY",
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "CLOUD_ML_REGION",
        "ANTHROPIC_VERTEX_PROJECT_ID",
        "GOOGLE_APPLICATION_CREDENTIALS",
    )
    #: the CLI cannot list models: its aliases, then the full names 2.1.197 knows
    known_models: ClassVar[tuple[str, ...]] = (
        "default",
        "opus",
        "sonnet",
        "haiku",
        "fable",
        "claude-opus-4-8",
        "claude-opus-4-7",
        "claude-opus-4-6",
        "claude-opus-4-5",
        "claude-opus-4-1",
        "claude-sonnet-5",
        "claude-sonnet-4-6",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-fable-5",
    )

    # ------------------------------------------------------------------------------------------ argv
    def invocation(self, turn: Turn) -> Invocation:
        argv = [
            self.binary_path,
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
        ]
        carried = {} if self.user_config else self.user_setup()
        if not self.user_config:
            argv += ["--setting-sources", "", "--strict-mcp-config"]
            if carried:
                path = turn.tempfile("user-settings.json", json.dumps(carried))
                argv += ["--settings", str(path)]
        if self.allow_tools:
            argv += ["--permission-mode", "acceptEdits"]
        else:
            argv += ["--tools", ""]
            if self._api_key_auth(carried) and not self.user_config:
                argv.append("--bare")  # not with tools: it cuts the default set down to Bash, Edit, Read
        endpoint = turn.request.extra.get(MCP_ENDPOINT_KEY)
        if isinstance(endpoint, dict):
            argv += mcp_endpoint_args(turn, endpoint)
        if turn.model:
            argv += ["--model", turn.model]
        if turn.system:
            argv += ["--system-prompt-file", str(turn.tempfile("system-prompt.md", turn.system))]
        if turn.resume:
            argv += ["--resume", turn.resume]
        elif turn.request.extra.get(EPHEMERAL_KEY) is True:
            argv.append("--no-session-persistence")
        elif turn.session:
            argv += ["--session-id", turn.session]
        env = {k: v for k, v in OFFLINE_ENV.items() if k not in self.env}
        if isinstance(endpoint, dict) and "MCP_CONNECTION_NONBLOCKING" not in self.env:
            env["MCP_CONNECTION_NONBLOCKING"] = "0"  # wait for the tools before the first model request
        if "CLAUDE_CODE_MAX_RETRIES" not in self.env:
            env["CLAUDE_CODE_MAX_RETRIES"] = str(self.retries)
        stdin = (json.dumps(user_message(turn), ensure_ascii=False) + "\n").encode("utf-8")
        return Invocation(argv=argv, stdin=stdin, env=env)

    def new_parser(self, turn: Turn) -> ClaudeCodeParser:
        return ClaudeCodeParser(
            model=turn.model, resume=turn.resume, on_retry=self.log_retry, on_quota=self.quota_book.note
        )

    def turn_over(self, parser: LineParser) -> bool:
        return isinstance(parser, ClaudeCodeParser) and parser.result is not None

    def _api_key_auth(self, carried: Mapping[str, Any]) -> bool:
        """Auth by API key or key helper, which ``--bare`` keeps (verified); an OAuth login it would lose."""
        env = carried.get("env") or {}
        return bool(self.getenv("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_API_KEY") or carried.get("apiKeyHelper"))

    # ------------------------------------------------------------------------------------------ user setup
    def config_dir(self) -> Path:
        config = self.getenv("CLAUDE_CONFIG_DIR")
        return Path(config) if config else self.home() / ".claude"

    def user_settings(self) -> dict[str, Any]:
        """The user's ``settings.json`` as an object; ``{}`` when it is missing or unreadable (as the CLI does)."""
        try:
            data = json.loads((self.config_dir() / "settings.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def user_setup(self) -> dict[str, Any]:
        """The carried part of the user's settings, minus the variables the operator's env sets (those win)."""
        carried = carried_settings(self.user_settings())
        env = carried.get("env")
        if isinstance(env, dict):
            env = {k: v for k, v in env.items() if k not in self.env}
            if env:
                carried["env"] = env
            else:
                del carried["env"]
        return carried

    def _setup_env(self) -> dict[str, str]:
        """The variables a run sees, as the CLI applies them: the settings' ``env`` over the environment's."""
        names = {*self.pass_env, "ANTHROPIC_BASE_URL", *_CREDENTIAL_VARS}
        env = {n: v for n in names if (v := self.getenv(n))}
        setup = self.user_settings() if self.user_config else self.user_setup()
        carried = setup.get("env")
        if isinstance(carried, dict):
            env.update({k: str(v) for k, v in carried.items() if k not in self.env})
        return env

    def endpoint(self) -> str | None:
        env = self._setup_env()
        if env.get("ANTHROPIC_BASE_URL"):
            return env["ANTHROPIC_BASE_URL"]
        if env.get("CLAUDE_CODE_USE_BEDROCK"):
            return "Amazon Bedrock" + (f" ({env['AWS_REGION']})" if env.get("AWS_REGION") else "")
        if env.get("CLAUDE_CODE_USE_VERTEX"):
            return "Google Vertex AI" + (f" ({env['CLOUD_ML_REGION']})" if env.get("CLOUD_ML_REGION") else "")
        return "https://api.anthropic.com"

    # ------------------------------------------------------------------------------------------ metadata
    def parse_version(self, output: str) -> str | None:
        m = re.search(r"(\d+\.\d+\.\d+[\w.+-]*)\s*\(Claude Code\)", output)
        return m.group(1) if m else super().parse_version(output)

    def credentials_file(self) -> Path:
        return self.config_dir() / ".credentials.json"

    def credential_files(self) -> list[Path]:
        """The login, the settings (their ``env`` may hold a key or token) and ``.claude.json`` (``primaryApiKey``),
        which the CLI keeps in the config dir when ``CLAUDE_CONFIG_DIR`` is set, else in HOME."""
        config = self.config_dir()
        return [
            self.credentials_file(),
            config / "settings.json",
            config / ".claude.json",
            self.home() / ".claude.json",
        ]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        status = await self.auth_status()
        return status.authenticated, status.fix

    async def auth_status(self) -> AuthStatus:
        """Ready with a key, token or cloud selection (environment or the user's settings ``env``), a key helper in
        the settings, or a login file; on macOS the login may be in the keychain, which cannot be checked."""
        env = self._setup_env()
        if any(env.get(v) for v in _CREDENTIAL_VARS):
            return AuthStatus(True)
        setup = self.user_settings() if self.user_config else self.user_setup()
        if setup.get("apiKeyHelper") or self.credentials_file().is_file():
            return AuthStatus(True)
        if sys.platform == "darwin":
            return AuthStatus(None)
        return AuthStatus(
            False,
            f"Claude Code is not logged in: no {self.credentials_file()}, no ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN"
            " in the environment or in the env of settings.json, no apiKeyHelper",
            LOGIN_HINT,
        )
