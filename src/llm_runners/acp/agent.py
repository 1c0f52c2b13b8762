"""One live ACP agent process: started through the process layer, spoken to with the official SDK's client side.

The process serves many sessions. Each session's ``session/update`` notifications go to the queue of the turn that
is running on it; ``session/request_permission`` is answered by the permission policy (reject, unless the
operator set ``allow_tools``); the client offers no file-system or terminal capability, so an agent uses its own
tools (off unless allowed) and never asks us to read, write or run anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import acp
import anyio
from acp.client.connection import ClientSideConnection
from acp.schema import (
    AllowedOutcome,
    ClientCapabilities,
    DeniedOutcome,
    FileSystemCapabilities,
    Implementation,
    InitializeResponse,
    PermissionOption,
    RequestPermissionResponse,
)

from .. import process
from ..errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ProviderTimeout,
    UpstreamError,
    from_http_status,
)
from ..runners.base import json_object
from .transport import ProcessTransport, Transcript

log = logging.getLogger(__name__)

#: what the turn's queue receives when the prompt request is over
END = object()


def permission_answer(options: Sequence[PermissionOption], allow: bool) -> RequestPermissionResponse:
    """Allow once when tools are allowed; otherwise the first reject option, or "cancelled" when there is none."""
    kinds = ("allow_once", "allow_always") if allow else ("reject_once", "reject_always")
    for kind in kinds:
        for option in options:
            if option.kind == kind:
                return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=option.option_id))
    return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))


class _Client:
    """The client side handlers the SDK calls for the agent's requests and notifications."""

    def __init__(self, agent: AgentProcess) -> None:
        self._agent = agent

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        queue = self._agent.sinks.get(session_id)
        if queue is not None:
            queue.put_nowait(update)
        else:
            log.debug("%s: update for session %s with no turn running: %s", self._agent.name, session_id, update)

    async def request_permission(
        self, session_id: str, tool_call: Any, options: list[PermissionOption], **kwargs: Any
    ) -> RequestPermissionResponse:
        answer = permission_answer(options, self._agent.allow_tools)
        chosen = getattr(answer.outcome, "option_id", None)
        kind = next((o.kind for o in options if o.option_id == chosen), "cancelled")
        self._agent.permissions.append((session_id, getattr(tool_call, "title", None), kind))
        log.info(
            "%s: session %s asked to run %r: answered %s",
            self._agent.name,
            session_id,
            getattr(tool_call, "title", tool_call),
            answer.outcome.model_dump(by_alias=True),
        )
        return answer


class AgentProcess:
    """A started (or starting) agent. ``alive`` turns False for good when the process ends or is killed."""

    def __init__(
        self,
        spec: process.ProcessSpec,
        *,
        name: str,
        allow_tools: bool,
        transcript: Path | None = None,
        auth_method: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        #: every stderr line goes to the turns' log watches too (:meth:`watch_log`); it never fails the process
        self.spec = dataclasses.replace(spec, stderr_watch=self._route_stderr)
        self.name = name
        self.allow_tools = allow_tools
        self.auth_method = auth_method
        self.start_timeout = start_timeout
        self.sinks: dict[str, asyncio.Queue[object]] = {}
        #: session id -> the running turn's log watch, fed the stderr lines that name that session
        self.log_sinks: dict[str, Callable[[bytes], None]] = {}
        #: every permission request and our answer: (session id, tool title, the chosen option's kind or
        #: "cancelled")
        self.permissions: list[tuple[str, str | None, str]] = []
        self.info: InitializeResponse | None = None
        self.active = 0
        self.last_used = 0.0
        self._transcript = Transcript(transcript)
        self._proc: process.Process | None = None
        self._transport: ProcessTransport | None = None
        self._conn: ClientSideConnection | None = None
        self._closed = False

    def _route_stderr(self, line: bytes) -> None:
        for session_id, feed in list(self.log_sinks.items()):
            if session_id.encode() in line:
                feed(line)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        proc, transport = self._proc, self._transport
        return (
            not self._closed
            and proc is not None
            and proc.returncode is None
            and transport is not None
            and not transport.closed
        )

    @property
    def conn(self) -> ClientSideConnection:
        if self._conn is None:
            raise UpstreamError(f"{self.name}: the agent is not running", provider=self.name)
        return self._conn

    @property
    def image_prompts(self) -> bool:
        caps = self.info.agent_capabilities if self.info is not None else None
        return bool(caps and caps.prompt_capabilities and caps.prompt_capabilities.image)

    async def start(self) -> None:
        try:
            self._proc = await process.start(self.spec)
            self._transport = ProcessTransport(self._proc, self._transcript)
            self._conn = acp.connect_to_agent(cast(acp.Client, _Client(self)), self._transport)
            capabilities = ClientCapabilities(
                fs=FileSystemCapabilities(read_text_file=False, write_text_file=False), terminal=False
            )
            self.info = await self.call(
                self.conn.initialize(
                    protocol_version=acp.PROTOCOL_VERSION,
                    client_capabilities=capabilities,
                    client_info=Implementation(name="llm-runners", version="0.1.0"),
                ),
                self.start_timeout,
                "initialize",
            )
            if self.auth_method:
                await self.call(self.conn.authenticate(method_id=self.auth_method), self.start_timeout, "authenticate")
        except BaseException:
            await self.close()
            raise

    async def request(self, method: str, params: dict[str, Any], limit: float | None) -> Any:
        """A request the SDK has no typed method for (``session/set_model``) or whose answer has fields its schema
        drops (``session/new``: ``models``), as plain JSON."""
        return await self.call(self.conn._conn.send_request(method, params), limit, method)

    async def call(self, awaitable: Any, limit: float | None, what: str) -> Any:
        """Await one request; a dead agent, a timeout or a JSON-RPC error become the error tree."""
        try:
            return await asyncio.wait_for(awaitable, limit)
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer to {what} within {limit:g} s", provider=self.name, detail=self.stderr()
            ) from None
        except ConnectionError as exc:
            raise self.gone(what) from exc
        except acp.RequestError as exc:
            raise request_error(self.name, exc, what, self.stderr()) from exc

    def gone(self, what: str) -> UpstreamError:
        proc = self._proc
        code = proc.returncode if proc is not None else None
        how = f"exited with code {code}" if code is not None else "closed its connection"
        return UpstreamError(
            f"{self.name}: the agent process {how} during {what}", provider=self.name, detail=self.stderr()
        )

    def stderr(self) -> str | None:
        return (self._proc.stderr_tail() or None) if self._proc is not None else None

    async def kill(self) -> None:
        """Kill the process group now (a turn that would not stop, a crash, shutdown)."""
        if self._proc is not None:
            await self._proc.kill()

    async def close(self) -> None:
        """Stop the agent: the SDK connection, then the process group; idempotent."""
        if self._closed:
            return
        self._closed = True
        for queue in self.sinks.values():
            queue.put_nowait(END)
        with anyio.CancelScope(shield=True):
            if self._proc is not None:
                await self._proc.kill()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
        self._transcript.close()


def request_error(
    name: str, exc: Any, what: str, stderr: str | None, classify: Callable[[str], LLMError] | None = None
) -> LLMError:
    """A JSON-RPC error answer -> the error tree: the dialect's own classifier when it has one, else an HTTP
    status in ``code`` (Gemini puts it there) and the generic rules on the text."""
    code = getattr(exc, "code", None)
    error: LLMError
    if classify is not None:
        raw = str(getattr(exc, "message", None) or exc)
        error = classify(raw)
        if type(error) is UpstreamError and isinstance(code, int) and 400 <= code <= 599:
            error = from_http_status(code, error.message, provider=name)  # the text named no kind; the code does
        error.detail = stderr or raw
        return error
    message = api_message(str(getattr(exc, "message", None) or exc))
    data = getattr(exc, "data", None)
    text = message if data is None else f"{message} {data}"
    if isinstance(code, int) and 400 <= code <= 599:
        named = process.classify_text(text, provider=name)
        if isinstance(named, ContextLengthExceeded):  # a plain 400 upstream: only the text says which
            error = named
        else:
            error = from_http_status(code, f"{name}: {message}", provider=name)
    elif "authenticat" in text.lower():
        error = AuthenticationError(
            f"{name}: {message} (the agent needs a login this runner cannot provide offline)", provider=name
        )
    else:
        error = process.classify_text(text, provider=name) or UpstreamError(
            f"{name}: {what} failed: {message}", provider=name
        )
    error.detail = stderr or text
    return error


def api_message(text: str) -> str:
    """The ``error.message`` of a model API's error JSON an agent passed on verbatim, else the text itself."""
    body = json_object(text.strip().encode())
    error = body.get("error") if body is not None else None
    inner = error.get("message") if isinstance(error, dict) else None
    return inner if isinstance(inner, str) and inner else text
