"""Codex on its long-lived ``codex app-server`` (``transport = "app-server"`` of the codex provider).

Facts measured on 0.169.0 against the fake API (transcripts in ``tests/fixtures/codex_app/``):

- ``codex app-server`` (stdio by default) speaks JSON-RPC as JSON lines *without* the ``"jsonrpc"`` field:
  ``initialize {clientInfo, capabilities}`` → response ``{userAgent, codexHome, …}``, then the ``initialized``
  notification. It takes the same ``-c`` / ``--enable`` / ``--disable`` options as ``exec``, but has no
  ``--ignore-user-config``: unless ``user_config`` is set the server runs with a private ``CODEX_HOME`` (owned by
  the runner) that holds only a link to the user's ``auth.json``, so the login carries over and the user's
  ``config.toml`` (MCP servers, hooks, profiles) stays out, as ``exec --ignore-user-config`` does. The rollouts
  then live as long as the runner.
- ``thread/start {cwd, model, sandbox, approvalPolicy, baseInstructions}`` → ``{thread: {id}}``: the thread id is
  the session id. ``baseInstructions`` REPLACES the ~17 KB base prompt (the upstream request then carries exactly
  one developer message: ours), like ``exec -c model_instructions_file``; with the tools-off options the request
  has ``tools: []`` and no permissions or environment preambles.
- ``turn/start {threadId, input: [{type: "text", text, text_elements: []}], model}`` answers ``{turn: {id}}`` at
  once; the turn then streams notifications carrying ``threadId`` and ``turnId``: ``item/started``,
  ``item/agentMessage/delta {itemId, delta}`` as the API streams (a delta every 0.8 s arrived every 0.8 s),
  ``item/completed`` (whole ``agentMessage`` text), ``thread/tokenUsage/updated {tokenUsage: {total, last}}``
  (``last`` = the model request just made), ``turn/completed {turn: {status: completed | failed | interrupted,
  error}}``. A ``model`` on ``turn/start`` that differs from the thread's adds a ``<model_switch>`` developer note.
- API errors: an ``error`` notification ``{error: {message, codexErrorInfo}, willRetry}`` then ``turn/completed``
  with ``status: "failed"`` and the same error; the messages are those of ``exec`` (401 ``unexpected status 401
  …``, 429 ``exceeded retry limit, last status: 429``, 500 "high demand", context "ran out of room", 404 "The
  model `x` does not exist"), ``codexErrorInfo`` adds ``contextWindowExceeded`` / ``modelNotFound`` /
  ``{httpConnectionFailed: {httpStatusCode}}``. ``willRetry: true`` marks a retry notice.
- ``thread/resume {threadId}`` in a new server process loads the rollout (and replays the last
  ``thread/tokenUsage/updated`` of the *earlier* turn: usage is taken per ``turnId``); an unknown id is the error
  ``-32600 no rollout found for thread id …``. ``turn/interrupt {threadId, turnId}`` answers ``{}`` and the turn
  completes with ``status: "interrupted"``. ``model/list`` lists the bundled catalog (``data``, ``nextCursor``;
  no context window). ``account/rateLimits/read`` needs a ChatGPT login (-32600 otherwise); it is read once per
  server, and ``account/rateLimits/updated`` (sent after an API answer carrying ``x-codex-primary-*`` /
  ``x-codex-secondary-*`` headers, even with an API key; ``usedPercent`` rounded to an integer) keeps the
  provider's quotas current (:mod:`llm_runners.quotas`).
- A ``turn/start`` on a thread whose turn is still running *adds input to that turn*: turns of one thread are
  serialised here. After ``thread/unsubscribe`` a ``turn/start`` is accepted but the connection hears none of the
  turn's notifications (nor after a later ``thread/resume``): the runner never unsubscribes, and a turn silent for
  ``TURN_START_WAIT`` fails instead of waiting for the idle timeout.
- Approval requests arrive as server requests (``item/commandExecution/requestApproval``, …); with
  ``approvalPolicy: "never"`` none came. Every one is declined unless ``allow_tools`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import signal
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import anyio
from typing_extensions import Unpack

from .. import process
from ..errors import (
    BinaryNotFound,
    InternalError,
    LLMError,
    Overloaded,
    ProviderTimeout,
    SessionNotFound,
    UpstreamError,
    from_http_status,
)
from ..quotas import Quota, QuotaBook
from ..types import Capabilities, Done, ModelInfo, ReasoningDelta, StreamEvent, TextDelta, Usage, UsageEvent
from .base import EPHEMERAL_KEY, RunnerOptions, Turn, int_or_zero, json_object
from .codex import BASE_ARGS, NO_TOOLS_ARGS, PROVIDER, CodexRunner, Transport, classify_error

log = logging.getLogger(__name__)

#: JSON-RPC error code of a busy app-server ("Server overloaded")
OVERLOADED = -32001
#: seconds a caller is told to wait after an overloaded answer that names no delay
OVERLOADED_RETRY_AFTER = 1.0
#: how long a request to the app-server itself (not a model turn) may take
REQUEST_TIMEOUT = 30.0
#: how long an interrupted turn may take to confirm, before the runner stops waiting
INTERRUPT_WAIT = 5.0
#: how long a started turn may stay silent before its first notification (codex sends ``turn/started`` within
#: milliseconds, before any model call; a connection that is not subscribed to the thread hears nothing at all)
TURN_START_WAIT = 30.0

_NO_ROLLOUT = "no rollout found"


def rpc_error(method: str, error: Mapping[str, Any]) -> LLMError:
    """A JSON-RPC error answer of the app-server as an LLMError: -32001 is Overloaded (with retry-after), an
    unknown thread is SessionNotFound, anything else is an UpstreamError naming the method."""
    code = error.get("code")
    message = str(error.get("message") or "no message")
    text = f"codex app-server: {method} failed: {message} (code {code})"
    if code == OVERLOADED:
        retry_after = process.parse_retry_after(message) or OVERLOADED_RETRY_AFTER
        return Overloaded(text, provider=PROVIDER, retry_after=retry_after, detail=json.dumps(dict(error)))
    if _NO_ROLLOUT in message:
        return SessionNotFound(text, provider=PROVIDER)
    return UpstreamError(text, provider=PROVIDER, detail=json.dumps(dict(error)))


def turn_error(error: Mapping[str, Any]) -> LLMError:
    """A failed turn's ``error`` (``{message, codexErrorInfo}``) classified like the exec runner's messages;
    ``codexErrorInfo`` decides when the message alone does not."""
    message = str(error.get("message") or "the turn failed")
    classified = classify_error(message, detail=json.dumps(dict(error)))
    info = error.get("codexErrorInfo")
    if type(classified) is UpstreamError and isinstance(info, dict):
        for value in info.values():
            status = value.get("httpStatusCode") if isinstance(value, dict) else None
            if isinstance(status, int) and status >= 400:
                better = from_http_status(status, classified.message, provider=PROVIDER)
                better.detail = classified.detail
                return better
    return classified


def _usage(raw: Mapping[str, Any]) -> Usage:
    return Usage(
        input_tokens=int_or_zero(raw.get("inputTokens")),
        cached_tokens=int_or_zero(raw.get("cachedInputTokens")),
        output_tokens=int_or_zero(raw.get("outputTokens")),
        reasoning_tokens=int_or_zero(raw.get("reasoningOutputTokens")),
    )


class TurnParser:
    """The notifications of one turn -> StreamEvents; raises the classified LLMError of a failed turn.

    Notifications of the thread that name another turn (the usage an ``thread/resume`` replays) are ignored.
    Usage is the sum of ``last`` over the turn's ``thread/tokenUsage/updated`` (one per model request)."""

    def __init__(
        self,
        *,
        thread_id: str,
        turn_id: str,
        model: str | None = None,
        max_retries: int | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.thread_id = thread_id
        self.turn_id = turn_id
        self.model = model
        #: end the turn after this many retry notices (None: let codex retry as it is configured)
        self.max_retries = max_retries
        self.on_retry = on_retry
        self.done = False
        #: a notification naming this turn arrived
        self.started = False
        self.status: str | None = None
        self.warnings: list[str] = []
        self.retries = 0
        self.usage: Usage | None = None
        self._streamed: dict[str, str] = {}  # agentMessage item id -> text yielded so far
        self._reasoned: set[str] = set()  # reasoning item ids that streamed deltas
        self._reasoning_part: tuple[str, str, object] | None = None
        self._said_text = False
        self._error: Mapping[str, Any] | None = None

    def feed(self, message: Mapping[str, Any]) -> list[StreamEvent]:
        method = message.get("method")
        params = message.get("params")
        if not isinstance(method, str) or not isinstance(params, dict):
            return []
        if params.get("threadId", self.thread_id) != self.thread_id:
            return []
        turn_id = params.get("turnId")
        if turn_id is None and isinstance(params.get("turn"), dict):
            turn_id = params["turn"].get("id")
        if turn_id is not None and turn_id != self.turn_id:
            return []
        if turn_id is not None:
            self.started = True
        if method == "item/agentMessage/delta":
            return self._text(str(params.get("itemId")), params.get("delta"))
        if method in ("item/reasoning/summaryTextDelta", "item/reasoning/textDelta"):
            return self._reasoning(method, params)
        if method == "item/completed":
            return self._completed(params.get("item"))
        if method == "thread/tokenUsage/updated":
            usage = params.get("tokenUsage")
            last = usage.get("last") if isinstance(usage, dict) else None
            if isinstance(last, dict):
                self._add_usage(_usage(last))
            return []
        if method == "error":
            error = params.get("error")
            if not isinstance(error, dict):
                return []
            if params.get("willRetry"):
                self._retry(error)
            else:
                self._error = error
            return []
        if method == "warning":
            if isinstance(params.get("message"), str):
                self.warnings.append(f"codex: {params['message']}")
            return []
        if method == "turn/completed":
            return self._turn_completed(params.get("turn"))
        return []

    def _retry(self, error: Mapping[str, Any]) -> None:
        """A ``Reconnecting... n/m`` notice (``willRetry``; the reason in ``additionalDetails``): reported, and
        past the bound the turn's error."""
        self.retries += 1
        reason = error.get("additionalDetails")
        if self.on_retry is not None:
            self.on_retry(f"{error.get('message')}" + (f" ({reason})" if reason else ""))
        if self.max_retries is not None and self.retries > self.max_retries:
            raise turn_error({**error, "message": reason or error.get("message")})

    def _text(self, item_id: str, delta: object) -> list[StreamEvent]:
        if not isinstance(delta, str) or not delta:
            return []
        before = self._streamed.get(item_id)
        self._streamed[item_id] = (before or "") + delta
        if before is None and self._said_text:
            delta = "\n\n" + delta  # several agent messages in one turn (around tool calls) read as paragraphs
        self._said_text = True
        return [TextDelta(delta)]

    def _reasoning(self, method: str, params: Mapping[str, Any]) -> list[StreamEvent]:
        """A summary or raw-reasoning delta; each new part (item, kind, index) starts a new paragraph."""
        delta = params.get("delta")
        if not isinstance(delta, str) or not delta:
            return []
        item_id = str(params.get("itemId"))
        part = (item_id, method, params.get("summaryIndex", params.get("contentIndex")))
        if part != self._reasoning_part and self._reasoning_part is not None:
            delta = "\n\n" + delta
        self._reasoning_part = part
        self._reasoned.add(item_id)
        return [ReasoningDelta(delta)]

    def _completed(self, item: object) -> list[StreamEvent]:
        """A completed item: whatever of its text did not stream as deltas (a reply that came whole)."""
        if not isinstance(item, dict):
            return []
        kind, item_id = item.get("type"), str(item.get("id"))
        if kind == "agentMessage" and isinstance(item.get("text"), str):
            text, streamed = item["text"], self._streamed.get(item_id, "")
            if text.startswith(streamed) and len(text) > len(streamed):
                return self._text(item_id, text[len(streamed) :])
        elif kind == "reasoning" and item_id not in self._reasoned:
            parts = [*_strings(item.get("summary")), *_strings(item.get("content"))]
            if parts:
                return [ReasoningDelta("\n\n".join(parts))]
        return []

    def _add_usage(self, usage: Usage) -> None:
        if self.usage is None:
            self.usage = usage
            return
        self.usage = Usage(
            input_tokens=self.usage.input_tokens + usage.input_tokens,
            output_tokens=self.usage.output_tokens + usage.output_tokens,
            cached_tokens=self.usage.cached_tokens + usage.cached_tokens,
            reasoning_tokens=self.usage.reasoning_tokens + usage.reasoning_tokens,
        )

    def _turn_completed(self, turn: object) -> list[StreamEvent]:
        self.done = True
        info = turn if isinstance(turn, dict) else {}
        self.status = str(info.get("status"))
        if self.status == "completed":
            events: list[StreamEvent] = [UsageEvent(self.usage)] if self.usage is not None else []
            events.append(
                Done(finish_reason="stop", model=self.model, session_id=self.thread_id, warnings=tuple(self.warnings))
            )
            return events
        error = info.get("error") if isinstance(info.get("error"), dict) else self._error
        if isinstance(error, dict):
            raise turn_error(error)
        if self.status == "interrupted":
            raise UpstreamError("codex app-server: the turn was interrupted", provider=PROVIDER)
        raise UpstreamError(f"codex app-server: the turn ended with status {self.status!r}", provider=PROVIDER)


def _feed(parser: TurnParser, message: Mapping[str, Any], _line: bytes) -> list[StreamEvent]:
    return parser.feed(message)


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


def approval_answer(method: str, allow_tools: bool) -> dict[str, Any] | None:
    """The result sent back for a server request (an approval), or None: answer with an error."""
    if method in ("item/commandExecution/requestApproval", "item/fileChange/requestApproval"):
        return {"decision": "accept" if allow_tools else "decline"}
    if method in ("execCommandApproval", "applyPatchApproval"):
        return {"decision": "approved" if allow_tools else {"denied": {"rejection": "tools are off (llm-runners)"}}}
    if method == "mcpServer/elicitation/request":
        return {"action": "decline", "content": None, "_meta": None}
    return None


#: seconds ``account/rateLimits/read`` may take when a server starts
RATE_LIMITS_WAIT = 5.0


def rate_limit_quotas(limits: Mapping[str, Any], source: str = "codex:account/rateLimits") -> list[Quota]:
    """A ``rateLimits`` snapshot (``account/rateLimits/updated`` / ``read``): its ``primary`` and ``secondary``
    windows (``usedPercent`` 0-100, ``windowDurationMins``, ``resetsAt`` Unix seconds) as quotas, per
    tests/fixtures/codex_app/rate-limits.json (0.169.0 against API answers carrying ``x-codex-*`` headers)."""
    out: list[Quota] = []
    number = (int, float)
    for window in ("primary", "secondary"):
        w = limits.get(window)
        if not isinstance(w, dict):
            continue
        used, minutes, resets = w.get("usedPercent"), w.get("windowDurationMins"), w.get("resetsAt")
        out.append(
            Quota(
                window=window,
                percent_used=float(used) if isinstance(used, number) else None,
                resets_at=float(resets) if isinstance(resets, number) else None,
                window_minutes=int(minutes) if isinstance(minutes, number) else None,
                status="rejected" if limits.get("rateLimitReachedType") else None,
                source=source,
            )
        )
    return out


def note_rate_limits(book: QuotaBook, limits: Mapping[str, Any]) -> None:
    for quota in rate_limit_quotas(limits):
        book.note(quota)


class AppServer:
    """One running ``codex app-server``: JSON-RPC requests, notifications routed to the thread that awaits them,
    server requests (approvals) answered. It dies with its process; the runner then starts another."""

    def __init__(
        self,
        proc: process.Process,
        *,
        allow_tools: bool,
        on_rate_limits: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.proc = proc
        self.allow_tools = allow_tools
        #: called with the ``rateLimits`` of each ``account/rateLimits/updated`` notification
        self.on_rate_limits = on_rate_limits
        self.loaded: set[str] = set()  # threads started or resumed in this process
        self.locks: dict[str, asyncio.Lock] = {}
        self.error: LLMError | None = None  # why the server is gone
        self._next_id = 0
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._queues: dict[str, asyncio.Queue[Mapping[str, Any] | None]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def alive(self) -> bool:
        return self.error is None and not self._reader.done()

    async def request(self, method: str, params: Mapping[str, Any] | None, *, limit: float = REQUEST_TIMEOUT) -> Any:
        if self.error is not None:
            raise self.error
        self._next_id += 1
        ident = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = (method, fut)
        try:
            await self._send({"id": ident, "method": method, "params": params})
            try:
                return await asyncio.wait_for(asyncio.shield(fut), limit)
            except TimeoutError:
                raise ProviderTimeout(
                    f"codex app-server: no answer to {method} within {limit:g} s", provider=PROVIDER
                ) from None
        finally:
            self._pending.pop(ident, None)

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        await self._send({"method": method} if params is None else {"method": method, "params": params})

    def subscribe(self, thread_id: str) -> asyncio.Queue[Mapping[str, Any] | None]:
        queue: asyncio.Queue[Mapping[str, Any] | None] = asyncio.Queue()
        self._queues[thread_id] = queue
        if self.error is not None:
            queue.put_nowait(None)
        return queue

    def unsubscribe(self, thread_id: str) -> None:
        self._queues.pop(thread_id, None)

    def lock(self, thread_id: str) -> asyncio.Lock:
        return self.locks.setdefault(thread_id, asyncio.Lock())

    async def _send(self, message: Mapping[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            await self.proc.send(data)
        except LLMError as exc:
            self._die(exc)
            raise self.error or exc from None

    async def _read(self) -> None:
        try:
            async for line in self.proc.lines():
                message = json_object(line)
                if message is None:
                    continue
                if "method" in message and "id" in message:
                    await self._answer(message)
                elif message.get("method") == "account/rateLimits/updated":
                    params = message.get("params")
                    limits = params.get("rateLimits") if isinstance(params, dict) else None
                    if isinstance(limits, dict) and self.on_rate_limits is not None:
                        self.on_rate_limits(limits)
                elif "method" in message:
                    params = message.get("params")
                    thread = params.get("threadId") if isinstance(params, dict) else None
                    queue = self._queues.get(thread) if isinstance(thread, str) else None
                    if queue is not None:
                        queue.put_nowait(message)
                else:
                    self._resolve(message)
            returncode = await self.proc.wait()
            self._die(
                UpstreamError(
                    f"codex app-server exited (code {returncode}){_stderr_suffix(self.proc)}",
                    provider=PROVIDER,
                    detail=self.proc.stderr_tail() or None,
                )
            )
        except LLMError as exc:
            self._die(exc)
        except Exception as exc:  # a bug here must not leave turns waiting forever
            self._die(InternalError(f"codex app-server reader failed: {exc!r}", provider=PROVIDER))
        finally:
            if self.error is None:  # cancelled by aclose()
                self._die(UpstreamError("codex app-server was closed", provider=PROVIDER))

    def _resolve(self, message: Mapping[str, Any]) -> None:
        ident = message.get("id")
        entry = self._pending.get(ident) if isinstance(ident, int) else None
        if entry is None:
            return
        method, fut = entry
        if fut.done():
            return
        if isinstance(message.get("error"), dict):
            fut.set_exception(rpc_error(method, message["error"]))
        else:
            fut.set_result(message.get("result"))

    async def _answer(self, message: Mapping[str, Any]) -> None:
        method = str(message.get("method"))
        result = approval_answer(method, self.allow_tools)
        log.info("codex app-server asked %s: answered %s", method, result)
        if result is not None:
            await self._send({"id": message["id"], "result": result})
        else:
            await self._send(
                {"id": message["id"], "error": {"code": -32601, "message": f"{method} is not supported by llm-runners"}}
            )

    def _die(self, error: LLMError) -> None:
        if self.error is not None:
            return
        self.error = error
        for _method, fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(error)
        for queue in self._queues.values():
            queue.put_nowait(None)

    async def aclose(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self.proc.kill()

    def abandon(self) -> None:
        """The runner was dropped without ``aclose()`` (or the interpreter exits): kill the server's group now,
        synchronously; its reader then ends at end of output."""
        pid = self.proc.pid
        if pid > 0 and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


#: stderr lines every start prints (the PATH-alias warning under a temp CODEX_HOME, the bundled bubblewrap notice)
_STARTUP_NOISE = re.compile(r"WARNING: proceeding, even though|could not find bubblewrap")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _stderr_suffix(proc: process.Process) -> str:
    """The last stderr line that says something, for the message of a server that exited."""
    lines = [_ANSI.sub("", line).strip() for line in proc.stderr_tail().splitlines()]
    lines = [line for line in lines if line and not _STARTUP_NOISE.search(line)]
    return f": {lines[-1][:300]}" if lines else ""


class CodexAppRunner(CodexRunner):
    """Codex on ``codex app-server``: one server process per runner, a thread per conversation, token streaming."""

    capabilities: ClassVar[Capabilities] = CodexRunner.capabilities.model_copy(update={"token_streaming": True})
    transport: ClassVar[str] = "app-server"

    def __init__(self, *, transport: Transport | None = None, **options: Unpack[RunnerOptions]) -> None:
        # the server itself is the warm process: ``warm`` starts no spares here, it starts the server when the
        # HTTP server starts (:meth:`start`) instead of on the first request; ``warm_idle`` has nothing to expire
        self.prestart = bool(options.pop("warm", 0))
        options.pop("warm_idle", None)
        super().__init__(transport=transport, **options)
        self._server: AppServer | None = None
        self._abandon: weakref.finalize[[], CodexAppRunner] | None = None
        self._starting: asyncio.Lock | None = None
        self._home: Path | None = None

    # ------------------------------------------------------------------------------------------ server
    def server_argv(self) -> list[str]:
        argv = [self.binary_path, "app-server", *self.setup_args()[0], *BASE_ARGS]  # the user's setup carried
        if not self.allow_tools:
            argv += NO_TOOLS_ARGS
        return [*argv, *self.extra_args]

    def server_env(self) -> dict[str, str]:
        env = {**self.child_env(), **self.setup_args()[1]}
        if not self.user_config:
            env["CODEX_HOME"] = str(self._private_home())
        return env

    def _private_home(self) -> Path:
        """A CODEX_HOME without the user's config.toml; the user's login is linked in."""
        if self._home is None:
            home = self.owned_tempdir("codex-home-")
            auth = self.codex_home() / "auth.json"
            if auth.is_file():
                os.symlink(auth, home / "auth.json")
            self._home = home
        return self._home

    async def server(self) -> AppServer:
        """The running app-server, started (or restarted after a crash) on demand."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is not None and self._server.alive:
                return self._server
            if self._server is not None:
                if self._abandon is not None:
                    self._abandon.detach()
                await self._server.aclose()
                self._server = None
            spec = process.ProcessSpec(
                argv=self.server_argv(),
                env=self.server_env(),
                pass_env=self.pass_env,
                cwd=self.workdir,
                keep_stdin_open=True,
                timeout=None,
                idle_timeout=None,
                max_output_bytes=2**62,  # a long-lived process: the line limit is the guard
                max_line_bytes=self.max_line_bytes,
                provider=self.name,
            )
            try:
                proc = await process.start(spec)
            except BinaryNotFound as exc:  # found, but it cannot run (bad interpreter, not an executable format)
                exc.message += f". Reinstall it with `npm install -g {self.package}` or set the runner's binary path."
                exc.args = (exc.message,)
                raise
            # the callback holds the quota book, not the runner: the server must not keep its runner alive
            notes = functools.partial(note_rate_limits, self.quota_book)
            server = AppServer(proc, allow_tools=self.allow_tools, on_rate_limits=notes)
            try:
                await server.request(
                    "initialize",
                    {
                        "clientInfo": {"name": "llm-runners", "title": None, "version": "1"},
                        "capabilities": {"experimentalApi": False, "requestAttestation": False},
                    },
                )
                await server.notify("initialized")
                await self._read_rate_limits(server)
            except BaseException:
                await server.aclose()
                raise
            self._server = server
            # the runner owns the server: dropped without aclose(), it takes the server with it
            self._abandon = weakref.finalize(self, server.abandon)
            return server

    # ------------------------------------------------------------------------------------------ quotas
    async def _read_rate_limits(self, server: AppServer) -> None:
        """``account/rateLimits/read`` once per server: the subscription's windows before the first turn. It
        needs a ChatGPT login; with an API key it is an error (-32600), and the windows come with the API's
        answers instead (``account/rateLimits/updated``)."""
        try:
            result = await server.request("account/rateLimits/read", None, limit=RATE_LIMITS_WAIT)
        except LLMError as exc:
            log.debug("codex app-server: account/rateLimits/read: %s", exc.message)
            return
        limits = result.get("rateLimits") if isinstance(result, dict) else None
        if isinstance(limits, dict):
            note_rate_limits(self.quota_book, limits)

    # ------------------------------------------------------------------------------------------ turns
    def _thread_params(self, turn: Turn) -> dict[str, Any]:
        params: dict[str, Any] = {
            "cwd": str(turn.workdir),
            "sandbox": "workspace-write" if self.allow_tools else "read-only",
            "approvalPolicy": "never",
        }
        if turn.model:
            params["model"] = turn.model
        if turn.system:
            params["baseInstructions"] = turn.system
        return params

    async def _open_thread(self, server: AppServer, turn: Turn) -> str:
        if turn.resume is not None:
            if turn.resume not in server.loaded:
                params = {**self._thread_params(turn), "threadId": turn.resume, "excludeTurns": True}
                await server.request("thread/resume", params)
                server.loaded.add(turn.resume)
            return turn.resume
        params = self._thread_params(turn)
        if turn.request.extra.get(EPHEMERAL_KEY):
            params["ephemeral"] = True
        result = await server.request("thread/start", params)
        thread_id = result["thread"]["id"] if isinstance(result, dict) else None
        if not isinstance(thread_id, str):
            raise UpstreamError(f"codex app-server: thread/start answered {result!r}", provider=PROVIDER)
        server.loaded.add(thread_id)
        return thread_id

    def _input(self, turn: Turn) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = [{"type": "text", "text": turn.prompt, "text_elements": []}]
        items += [{"type": "localImage", "path": str(path)} for path in turn.images]
        return items

    async def _run(self, turn: Turn) -> AsyncGenerator[StreamEvent, None]:
        try:
            # aclosing: a consumer that stops early (at Done, or gone mid-turn) ends the turn now, not at GC
            async with contextlib.aclosing(self._run_turn(turn)) as events:
                async for event in events:
                    yield event
        except LLMError as exc:
            self.name_endpoint(exc)  # an unreachable or failing API: say which URL (as the base does for exec)
            raise
        finally:
            process.release_paths([turn.assets])

    async def _run_turn(self, turn: Turn) -> AsyncGenerator[StreamEvent, None]:
        started = time.monotonic()
        server, thread_id, queue, turn_id = await self._start_turn(turn)
        parser = TurnParser(
            thread_id=thread_id,
            turn_id=turn_id,
            model=turn.model,
            max_retries=self.retries,  # the runner's retry bound and retry log (see runners.base)
            on_retry=self.log_retry,
        )
        try:
            while not parser.done:
                message = await self._next(queue, started, first=not parser.started)
                if message is None:
                    raise server.error or UpstreamError("codex app-server is gone", provider=PROVIDER)
                for event in self._parse(functools.partial(_feed, parser, message), None):
                    yield event
        finally:
            try:
                if not parser.done and server.alive:
                    await self._interrupt(server, queue, parser)
            finally:
                server.unsubscribe(thread_id)
                server.lock(thread_id).release()

    async def _start_turn(self, turn: Turn) -> tuple[AppServer, str, asyncio.Queue[Mapping[str, Any] | None], str]:
        """Open the thread and start the turn: (server, thread id, its notification queue, turn id), with the
        thread's lock held. A server found dead on the way (it crashed while idle) is restarted once."""
        for attempt in (1, 2):
            server = await self.server()
            try:
                thread_id = await self._open_thread(server, turn)
                lock = server.lock(thread_id)
                await lock.acquire()
                try:
                    queue = server.subscribe(thread_id)
                    params: dict[str, Any] = {"threadId": thread_id, "input": self._input(turn)}
                    if turn.model:
                        params["model"] = turn.model
                    result = await server.request("turn/start", params)
                    turn_id = result["turn"]["id"] if isinstance(result, dict) else None
                    if not isinstance(turn_id, str):
                        raise UpstreamError(f"codex app-server: turn/start answered {result!r}", provider=PROVIDER)
                except BaseException:
                    server.unsubscribe(thread_id)
                    lock.release()
                    raise
                return server, thread_id, queue, turn_id
            except LLMError:
                if server.alive or attempt == 2:
                    raise
                log.warning("codex app-server had exited (%s): starting another", server.error)
        raise AssertionError("unreachable")

    async def _next(
        self, queue: asyncio.Queue[Mapping[str, Any] | None], started: float, *, first: bool = False
    ) -> Mapping[str, Any] | None:
        """The next notification of the turn, within the idle and total timeouts (and, until the turn's first
        notification, within TURN_START_WAIT: a connection not subscribed to the thread hears nothing)."""
        limits = [self.idle_timeout] if self.idle_timeout is not None else []
        if self.timeout is not None:
            limits.append(max(0.0, started + self.timeout - time.monotonic()))
        if first:
            limits.append(TURN_START_WAIT)
        limit = min(limits) if limits else None
        try:
            return await asyncio.wait_for(queue.get(), limit)
        except TimeoutError:
            if first and limit == TURN_START_WAIT:
                raise UpstreamError(
                    f"codex app-server: the turn sent no notification within {TURN_START_WAIT:g} s", provider=PROVIDER
                ) from None
            total = self.timeout is not None and time.monotonic() - started >= self.timeout
            what = (
                f"still running after {self.timeout:g} s (total timeout)"
                if total
                else (f"no output for {self.idle_timeout:g} s (idle timeout)")
            )
            raise ProviderTimeout(f"codex app-server: turn {what}; turn interrupted", provider=PROVIDER) from None

    async def _interrupt(
        self, server: AppServer, queue: asyncio.Queue[Mapping[str, Any] | None], parser: TurnParser
    ) -> None:
        """Stop a turn nobody waits for any more (timeout, client gone), and wait briefly for its end, shielded
        from the caller's cancellation. A server that does not confirm in time is restarted."""
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(INTERRUPT_WAIT):
                    ids = {"threadId": parser.thread_id, "turnId": parser.turn_id}
                    await server.request("turn/interrupt", ids, limit=INTERRUPT_WAIT)
                    while not parser.done:
                        message = await queue.get()
                        if message is None:
                            return
                        with contextlib.suppress(LLMError):
                            parser.feed(message)
            except (LLMError, TimeoutError) as exc:
                log.warning("codex app-server did not interrupt turn %s (%s): restarting it", parser.turn_id, exc)
                await server.aclose()

    async def start(self) -> None:
        """With ``warm``: start the app-server ahead of the first request (the HTTP server calls this)."""
        if self.prestart:
            await self.server()

    # ------------------------------------------------------------------------------------------ metadata
    async def models(self) -> list[ModelInfo]:
        try:
            server = await self.server()
            models: list[ModelInfo] = []
            cursor: str | None = None
            for _page in range(20):
                result = await server.request("model/list", {"cursor": cursor} if cursor else {})
                data = result.get("data") if isinstance(result, dict) else None
                models += list(_model_infos(data if isinstance(data, list) else [], self.name))
                cursor = result.get("nextCursor") if isinstance(result, dict) else None
                if not isinstance(cursor, str) or not cursor:
                    break
        except LLMError as exc:
            log.info("codex app-server model/list failed (%s): the bundled catalog instead", exc.message)
            return await super().models()
        return models or await super().models()

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if self._abandon is not None:
            self._abandon.detach()
            self._abandon = None
        if server is not None:
            await server.aclose()
        self._home = None
        await super().aclose()


def _model_infos(data: Iterable[object], provider: str) -> Iterable[ModelInfo]:
    for m in data:
        if isinstance(m, dict) and isinstance(m.get("id"), str) and not m.get("hidden"):
            name = m.get("displayName")
            yield ModelInfo(id=m["id"], provider=provider, display_name=name if isinstance(name, str) else None)
