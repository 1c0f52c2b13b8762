"""The ACP runner: one provider for every agent that speaks the Agent Client Protocol.

How a request is served:

- **Processes.** Up to ``pool_size`` agent processes (default 1), started through the process layer on first use
  (or at server start with ``warm=True``) and kept alive between turns. A turn goes to the process that holds its
  session, else to the least busy live process; a process that died is replaced on the next request. A process
  with no turn running for ``idle`` seconds is stopped.
- **Sessions.** One ACP session per conversation: the session store (:mod:`llm_runners.sessions`) says which
  session continues a request's history; the turn then sends only the new messages. A fresh conversation, or one
  whose session lived in a process that has since died or been stopped, gets a new session into which the whole
  history is replayed. ``session/new`` carries the operator's and the request's MCP servers. Sessions of ended
  conversations do not pile up in the agent: at most ``max_sessions`` stay open (least recently used closed
  first), and one unused for ``session_idle`` seconds is closed (``session/close`` where the agent advertises it:
  OpenCode, Kilo, Copilot; Gemini and Qwen have no such request, their sessions end with the process).
- **Prompt.** Text blocks, plus image blocks when the agent advertises image prompts. ACP has no system prompt
  field and the agents take theirs per process (a file or flag), so the system prompt goes in front of the first
  prompt of a session, marked as such (``Capabilities.system_prompt`` is False: it does not replace the agent's).
- **Models.** The session's model config option (``session/set_config_option``) or ``session/set_model``,
  whichever the agent advertises in ``session/new``; ``models()`` lists what it advertises.
- **Permissions.** Every ``session/request_permission`` is answered with a reject option unless ``allow_tools``.
- **Agent tools.** ``tool_call`` / ``tool_call_update`` become :class:`~llm_runners.types.AgentToolEvent` (shown by
  ``llm-runners chat``, logged; the HTTP front doors have no place for them and leave them out).
- **Retry loops.** An agent that retries a failing model API with no knob to stop it (Qwen, OpenCode, Kilo) is
  watched through its own log, per turn; a turn the exec runner would have stopped is cancelled with the error
  the log names (:class:`RetryBound`), and the process goes on serving its other sessions.
- **Cancellation.** A consumer that stops reading (client disconnect, timeout) sends ``session/cancel``; when the
  turn has not ended ``cancel_grace`` seconds later, the process is killed (its other sessions fail cleanly and
  are replayed into a new process on their next turn).
- **Concurrency.** Turns on different sessions of one process run at once: measured for every agent here (a
  second conversation answered while the first one's upstream request hangs); how many run and wait is the
  provider's ``max_concurrency`` / ``max_queue`` (:mod:`llm_runners.wrappers.limits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import acp
import anyio
from acp.schema import ImageContentBlock, TextContentBlock

from .. import process
from ..errors import InvalidRequest, LLMError, ModelNotFound, ProviderTimeout, UpstreamError
from ..prompt import conversation_messages, images_of, render_new_messages, render_transcript
from ..provider import Provider
from ..runners.base import EPHEMERAL_KEY, CLIRunner, check_model_name
from ..types import (
    Capabilities,
    ChatRequest,
    Done,
    Health,
    Message,
    ModelInfo,
    StreamEvent,
)
from .agent import END, AgentProcess, request_error
from .dialects import DIALECTS, AcpDialect
from .events import UpdateMapper

log = logging.getLogger(__name__)

#: ``ChatRequest.extra`` key: MCP servers (ACP ``McpServer`` objects) for a new session of this conversation
MCP_SERVERS_KEY = "mcp_servers"

#: seconds an agent gets to end a turn cancelled inside its retry loop (in the background: the caller has the error)
RETRY_CANCEL_GRACE = 30.0

SYSTEM_OPEN = "<system_instructions>"
SYSTEM_CLOSE = "</system_instructions>"


def with_system(system: str | None, prompt: str) -> str:
    """The first prompt of a session with the request's system prompt in front of it."""
    if not system:
        return prompt
    return f"{SYSTEM_OPEN}\n{system}\n{SYSTEM_CLOSE}\n\n{prompt}"


@dataclass
class ModelChoice:
    """How a session's model is chosen: a ``model`` config option, or ``session/set_model`` (``config_id`` None)."""

    config_id: str | None
    current: str | None
    #: (value, name) pairs the agent advertised
    options: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> ModelChoice | None:
        for option in result.get("configOptions") or ():
            if isinstance(option, dict) and (option.get("category") == "model" or option.get("id") == "model"):
                values = [
                    (str(o.get("value")), str(o.get("name") or o.get("value")))
                    for o in option.get("options") or ()
                    if isinstance(o, dict) and o.get("value")
                ]
                current = option.get("currentValue")
                return cls(str(option.get("id")), current if isinstance(current, str) else None, values)
        models = result.get("models")
        if isinstance(models, dict):
            values = [
                (str(m.get("modelId")), str(m.get("name") or m.get("modelId")))
                for m in models.get("availableModels") or ()
                if isinstance(m, dict) and m.get("modelId")
            ]
            current = models.get("currentModelId")
            return cls(None, current if isinstance(current, str) else None, values)
        return None

    def resolve(self, model: str) -> str | None:
        """The advertised value for a requested model name: the value itself, an option's name, the part after
        the provider (``fake/fake-model``), or Qwen's ``…|<model>(<auth>)``; None when none fits."""
        values = [v for v, _ in self.options]
        if model in values:
            return model
        for value, name in self.options:
            if name == model or value.rsplit("/", 1)[-1] == model or f"|{model}(" in value:
                return value
        return None

    def names(self) -> list[str]:
        return [v for v, _ in self.options]


@dataclass(frozen=True)
class Failed:
    """Put on a turn's queue: end the turn with this error (it is cancelled on the way out)."""

    error: LLMError


class RetryBound:
    """One turn's watch over the agent's log lines: a verdict of the dialect's retry watch puts :class:`Failed` on
    the turn's queue ``after`` its seconds unless a later verdict withdraws it (the exec runners' rule, per turn
    instead of per process: the process serves other sessions)."""

    #: seconds between two reads of a session log file, and the longest line kept of it
    POLL = 0.2
    MAX_LINE = 64 * 1024

    def __init__(self, watch: Callable[[bytes], process.StderrVerdict | None], queue: asyncio.Queue[object]) -> None:
        self._watch = watch
        self._queue = queue
        self._loop = asyncio.get_running_loop()
        self._pending: asyncio.TimerHandle | None = None
        self._stops: list[Callable[[], object]] = []

    def feed(self, line: bytes) -> None:
        verdict = self._watch(line)
        if verdict is None:
            return
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if verdict.error is not None:
            log.info("%s", verdict.error.message)
            failed = Failed(verdict.error)
            self._pending = self._loop.call_later(max(0.0, verdict.after), self._queue.put_nowait, failed)

    def on_stop(self, callback: Callable[[], object]) -> None:
        self._stops.append(callback)

    def tail(self, path: Path) -> None:
        """Follow the lines the agent appends to ``path`` from now on (it may not exist yet)."""
        try:
            start = path.stat().st_size
        except OSError:
            start = 0
        task = self._loop.create_task(self._follow(path, start))
        self.on_stop(task.cancel)

    async def _follow(self, path: Path, offset: int) -> None:
        rest = b""
        while True:
            await asyncio.sleep(self.POLL)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                continue
            offset += len(data)
            *lines, rest = (rest + data).split(b"\n")
            rest = rest[: self.MAX_LINE]  # a runaway line is cut, never held whole
            for line in lines:
                self.feed(line)

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        for stop in self._stops:
            stop()
        self._stops.clear()


@dataclass
class LiveSession:
    agent: AgentProcess
    session_id: str
    model: ModelChoice | None
    last_used: float = field(default_factory=time.monotonic)


class AcpRunner(Provider):
    """An ACP agent as a provider. ``agent`` names a dialect (``gemini``, ``opencode``, ``qwen``, ``kilo``,
    ``copilot``) or is one; the agent's setup comes from ``runner`` (default: that provider's exec runner built
    with ``options``)."""

    capabilities = Capabilities(
        streaming=True,
        token_streaming=True,
        system_prompt=False,
        images=True,
        native_tools=False,
        agent_tools=True,
        sessions=True,
        usage=True,
        model_listing=True,
    )

    def __init__(
        self,
        agent: str | AcpDialect,
        *,
        runner: CLIRunner | None = None,
        pool_size: int = 1,
        warm: bool = False,
        idle: float | None = 600.0,
        cancel_grace: float = 5.0,
        start_timeout: float = 60.0,
        mcp_servers: Sequence[Mapping[str, Any]] = (),
        transcript: str | Path | None = None,
        max_sessions: int = 64,
        session_idle: float | None = 1800.0,
        **options: Any,
    ) -> None:
        dialect = DIALECTS[agent] if isinstance(agent, str) else agent
        if runner is None:
            from ..runners import REGISTRY

            if dialect.name not in REGISTRY:
                raise ValueError(f"{dialect.name}: no runner knows how to set this CLI up (llm_runners.runners)")
            runner = REGISTRY[dialect.name](**options)
        elif options:
            raise TypeError(f"options {sorted(options)} go to the runner, which was given already")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.dialect = dialect
        self.cli = runner
        # a provider answers to its CLI's identity (class attributes on Provider, shadowed per instance)
        setattr(self, "name", runner.name)  # noqa: B010
        setattr(self, "display_name", f"{runner.display_name or runner.name} (ACP)")  # noqa: B010
        setattr(self, "default_model", runner.default_model)  # noqa: B010
        # verified as far as the CLI is: its ACP mode is proven by the same e2e tests as its exec mode, or not at all
        caps = self.capabilities.model_copy(
            update={"token_streaming": dialect.token_streaming, "verified": runner.capabilities.verified}
        )
        setattr(self, "capabilities", caps)  # noqa: B010
        self.pool_size = pool_size
        self.warm = warm
        self.idle = idle
        self.cancel_grace = cancel_grace
        self.start_timeout = start_timeout
        self.mcp_servers = [dict(s) for s in mcp_servers]
        self.transcript = Path(transcript) if transcript is not None else None
        self.agents: list[AgentProcess] = []
        self.max_sessions = max_sessions
        self.session_idle = session_idle
        #: the sessions kept open between turns, least recently used first
        self._live: OrderedDict[str, LiveSession] = OrderedDict()
        self._starting: asyncio.Lock | None = None
        self._advertised: list[str] = []
        self._idle_timers: dict[int, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------------------ processes
    def process_spec(self) -> process.ProcessSpec:
        cli = self.cli
        runner_args = self.dialect.runner_args(cli) if self.dialect.runner_args is not None else []
        return process.ProcessSpec(
            argv=[cli.binary_path, *self.dialect.args, *runner_args, *cli.extra_args],
            env={**cli.child_env(), **self.dialect.env},
            pass_env=cli.pass_env,
            cwd=cli.workdir,
            keep_stdin_open=True,
            timeout=None,  # the process outlives turns; each turn has its own limits
            idle_timeout=None,
            max_output_bytes=1 << 62,  # lines stream through; one line is bounded by max_line_bytes
            max_line_bytes=cli.max_line_bytes,
            provider=self.name,
        )

    async def start(self) -> None:
        """With ``warm``: start the pool's first process now (the server calls this at start-up), instead of on
        the first request."""
        if self.warm and not any(a.alive for a in self.agents):
            await self._agent(None)

    async def _agent(self, live: LiveSession | None) -> AgentProcess:
        """The process for a turn: the session's own, else the least busy live one, else a new one."""
        if live is not None and live.agent.alive:
            return live.agent
        self.agents = [a for a in self.agents if a.alive]
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            self.agents = [a for a in self.agents if a.alive]
            idle = [a for a in self.agents if a.active == 0]
            if idle:
                return idle[0]
            if len(self.agents) >= self.pool_size:
                return min(self.agents, key=lambda a: a.active)
            self.prepare()
            agent = AgentProcess(
                self.process_spec(),
                name=self.name,
                allow_tools=self.cli.allow_tools,
                transcript=self.transcript,
                auth_method=self.dialect.auth_method,
                start_timeout=self.start_timeout,
            )
            await agent.start()
            self.agents.append(agent)
            return agent

    def prepare(self) -> None:
        """Per-CLI preparation of the working directory before an agent starts (Gemini's workspace settings)."""
        write = getattr(self.cli, "_write_workspace_settings", None)
        if callable(write):
            write(self.cli.workdir)

    def _touch(self, agent: AgentProcess) -> None:
        """After a turn: schedule the idle stop of a process that has nothing to do."""
        agent.last_used = time.monotonic()
        if self.idle is None or agent.active:
            return
        key = id(agent)
        if (old := self._idle_timers.pop(key, None)) is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._idle_timers[key] = loop.call_later(self.idle, self._idle_check, agent)

    def _idle_check(self, agent: AgentProcess) -> None:
        self._idle_timers.pop(id(agent), None)
        if agent.active or not agent.alive or self.idle is None:
            return
        if time.monotonic() - agent.last_used >= self.idle - 0.01:
            log.info("%s: stopping the agent process %s after %g s idle", self.name, agent.pid, self.idle)
            self._background_close(agent)

    def _background_close(self, agent: AgentProcess) -> None:
        if agent in self.agents:
            self.agents.remove(agent)
        task = asyncio.get_running_loop().create_task(agent.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------------------------------ sessions
    def _keep(self, live: LiveSession) -> None:
        """Keep a session open for its conversation's next turn; close the ones over ``max_sessions`` (least
        recently used first) or unused for ``session_idle`` seconds."""
        live.last_used = time.monotonic()
        self._live[live.session_id] = live
        self._live.move_to_end(live.session_id)
        while len(self._live) > max(self.max_sessions, 0):
            self._close_session(self._live.popitem(last=False)[1], "too many open sessions")
        if self.session_idle is not None:
            stale = [s for s in self._live.values() if live.last_used - s.last_used >= self.session_idle]
            for old in stale:
                del self._live[old.session_id]
                self._close_session(old, f"unused for {self.session_idle:g} s")

    def _close_session(self, live: LiveSession, why: str) -> None:
        """Forget a session (its conversation's next turn replays into a new one) and ``session/close`` it where
        the agent supports that (OpenCode, Kilo, Copilot; Gemini and Qwen do not: it lives until the process
        ends)."""
        agent = live.agent
        caps = agent.info.agent_capabilities if agent.info is not None else None
        closable = bool(caps and caps.session_capabilities and caps.session_capabilities.close is not None)
        log.info("%s: session %s closed (%s)%s", self.name, live.session_id, why, "" if closable else " by us only")
        if not closable or not agent.alive:
            return

        async def close() -> None:
            try:
                await agent.call(
                    agent.conn.close_session(session_id=live.session_id), self.cancel_grace, "session/close"
                )
            except LLMError as exc:
                log.warning("%s: session/close of %s failed: %s", self.name, live.session_id, exc.message)

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _new_session(self, agent: AgentProcess, request: ChatRequest) -> LiveSession:
        servers = [*self.mcp_servers, *(request.extra.get(MCP_SERVERS_KEY) or ())]
        result = await agent.request(
            "session/new", {"cwd": str(self.cli.workdir), "mcpServers": servers}, self.start_timeout
        )
        if not isinstance(result, dict) or not isinstance(result.get("sessionId"), str):
            raise UpstreamError(f"{self.name}: session/new returned no sessionId: {result!r}", provider=self.name)
        choice = ModelChoice.of(result)
        if choice is not None and choice.options:
            self._advertised = choice.names()
        session_id = result["sessionId"]
        mode = self.dialect.mode
        if mode is not None and any(
            isinstance(o, dict) and o.get("id") == "mode" and any(v.get("value") == mode for v in o.get("options", []))
            for o in result.get("configOptions") or ()
        ):
            await agent.call(
                agent.conn.set_config_option(config_id="mode", session_id=session_id, value=mode),
                self.start_timeout,
                "session/set_config_option",
            )
        return LiveSession(agent, session_id, choice)

    async def _select_model(self, live: LiveSession, model: str | None) -> str | None:
        """Select ``model`` for the session; a warning when the agent offers no way to (Copilot over ACP: its
        model is the process's ``COPILOT_MODEL``)."""
        choice = live.model
        if model is None or (choice is not None and model == choice.current):
            return None
        if choice is None:
            return f"{self.name}: the agent offers no model selection over ACP; its configured model answered"
        value = choice.resolve(model)
        if value is not None and value == choice.current:
            return None
        if choice.config_id is not None:
            if value is None:
                shown = ", ".join(choice.names()[:20])
                raise ModelNotFound(
                    f"{self.name}: the agent offers no model {model!r} (it has: {shown})", provider=self.name
                )
            await live.agent.call(
                live.agent.conn.set_config_option(config_id=choice.config_id, session_id=live.session_id, value=value),
                self.start_timeout,
                "session/set_config_option",
            )
        else:
            value = value or model  # Gemini takes any model name it is given
            await live.agent.request(
                "session/set_model", {"sessionId": live.session_id, "modelId": value}, self.start_timeout
            )
        choice.current = value
        return None

    # ------------------------------------------------------------------------------------------ streaming
    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        check_model_name(request.model, self.name)
        self.cli.binary_path  # noqa: B018  (fail fast when the CLI is missing, before a session is claimed)
        self.cli.register_credentials()  # the agent's output may carry the user's login: masked from the start
        # the scope: this process's agents hold the sessions (another replica's are never reachable from here)
        scope = f"{self.cli.session_scope()}|{os.getpid()}"
        claim = await self.cli.sessions.aclaim(self.name, request.conversation, request.messages, scope=scope)
        live = self._live.pop(claim.session_id, None) if claim.session_id else None
        if live is not None and not live.agent.alive:
            live = None  # its process is gone: replay the conversation into a new session
        agent = await self._agent(live)
        agent.active += 1
        try:
            if live is None:
                live = await self._new_session(agent, request)
                sent = conversation_messages(request.messages)
                text = with_system(request.system or None, render_transcript(sent))
            else:
                sent = conversation_messages(request.messages[claim.first_new :])
                text = render_new_messages(sent)
            model = request.model or self.cli.model
            warning = await self._select_model(live, model)
            blocks = self._blocks(agent, text, sent)
            mapper = UpdateMapper(self.name, self.dialect.status_text)
            # aclosing: a consumer that stops at Done (collect) must end the turn now, not when the GC gets to it
            async with contextlib.aclosing(self._turn(live, blocks, mapper)) as events:
                async for event in events:
                    if isinstance(event, Done):
                        if not request.extra.get(EPHEMERAL_KEY):
                            reply = Message(role="assistant", content="".join(mapper.text))
                            self.cli.sessions.remember(
                                self.name, request.conversation, request.messages, reply, live.session_id, scope=scope
                            )
                            await self.cli.sessions.flush()
                            self._keep(live)
                        event = Done(
                            finish_reason=event.finish_reason,
                            model=(live.model.current if live.model else None) or (None if warning else model),
                            session_id=live.session_id,
                            warnings=(warning,) if warning else (),
                        )
                    yield event
        finally:
            agent.active -= 1
            if agent.alive:
                self._touch(agent)
            else:  # it died under the turn: reap it now (its sessions are replayed elsewhere on their next turn)
                if agent in self.agents:
                    self.agents.remove(agent)
                with anyio.CancelScope(shield=True):
                    await agent.close()

    def _blocks(self, agent: AgentProcess, text: str, sent: list[Message]) -> list[Any]:
        blocks: list[Any] = [TextContentBlock(type="text", text=text)]
        images = images_of(sent)
        if images and not agent.image_prompts:
            raise InvalidRequest(f"{self.name}: the agent does not take images over ACP", provider=self.name)
        for image in images:
            if image.data is None:
                raise InvalidRequest(
                    f"{self.name}: an image must be sent as data, not as a URL", provider=self.name, param="messages"
                )
            blocks.append(ImageContentBlock(type="image", data=image.base64(), mime_type=image.media_type))
        return blocks

    async def _turn(
        self, live: LiveSession, blocks: list[Any], mapper: UpdateMapper
    ) -> AsyncGenerator[StreamEvent, None]:
        agent, sid = live.agent, live.session_id
        queue: asyncio.Queue[object] = asyncio.Queue()
        agent.sinks[sid] = queue
        retries = self._watch_retries(agent, sid, queue)
        task = asyncio.ensure_future(agent.conn.prompt(session_id=sid, prompt=blocks))
        task.add_done_callback(lambda _: queue.put_nowait(END))
        deadline = time.monotonic() + self.cli.timeout
        failed = False
        try:
            while True:
                limit = deadline - time.monotonic()
                if self.cli.idle_timeout is not None:
                    limit = min(limit, self.cli.idle_timeout)
                try:
                    item = await asyncio.wait_for(queue.get(), max(limit, 0.0))
                except TimeoutError:
                    which = "total" if time.monotonic() >= deadline else "idle"
                    raise ProviderTimeout(
                        f"{self.name}: the turn hit its {which} timeout; cancelled", provider=self.name
                    ) from None
                if item is END:
                    break
                if isinstance(item, Failed):  # the agent's retry loop went on too long: cancel the turn
                    failed = True
                    raise item.error
                for event in mapper.feed(item):
                    yield event
            if not task.done():  # the process was closed under the turn
                raise agent.gone("session/prompt")
            try:
                result = task.result()
            except LLMError:
                raise
            except ConnectionError as exc:
                raise agent.gone("session/prompt") from exc
            except acp.RequestError as exc:
                raise request_error(
                    self.name, exc, "session/prompt", agent.stderr(), self.dialect.classify_error
                ) from exc
            except Exception as exc:
                raise UpstreamError(f"{self.name}: session/prompt failed: {exc!r}", provider=self.name) from exc
            events, finish = mapper.finish(result)
            for event in events:
                yield event
            yield Done(finish_reason=finish, session_id=sid)
        finally:
            if retries is not None:
                retries.stop()
            if agent.sinks.get(sid) is queue:
                del agent.sinks[sid]
            if not task.done() and failed:
                # the error goes to the caller now; the agent ends the turn when its retry backoff sleep ends
                # (OpenCode answered a cancel 6.6 s later), so that is waited for in the background
                cancel = asyncio.get_running_loop().create_task(
                    self._cancel(agent, sid, task, max(self.cancel_grace, RETRY_CANCEL_GRACE))
                )
                self._closing.add(cancel)
                cancel.add_done_callback(self._closing.discard)
            elif not task.done():
                with anyio.CancelScope(shield=True):
                    await self._cancel(agent, sid, task)

    def _watch_retries(self, agent: AgentProcess, sid: str, queue: asyncio.Queue[object]) -> RetryBound | None:
        """Feed this turn's log lines to the dialect's retry watch (see :mod:`.dialects`)."""
        factory = self.dialect.retry_watch
        watch = factory(self.cli) if factory is not None else None
        if watch is None:
            return None
        bound = RetryBound(watch, queue)
        if self.dialect.session_log is None:
            agent.log_sinks[sid] = bound.feed
            bound.on_stop(lambda: agent.log_sinks.pop(sid, None))
        else:
            bound.tail(self.dialect.session_log(self.cli, sid))
        return bound

    async def _cancel(
        self, agent: AgentProcess, sid: str, task: asyncio.Future[Any], grace: float | None = None
    ) -> None:
        """The consumer left mid-turn: ``session/cancel``, then kill the process if the turn does not end within
        ``grace`` (default ``cancel_grace``) seconds."""
        grace = self.cancel_grace if grace is None else grace
        try:
            await asyncio.wait_for(agent.conn.cancel(session_id=sid), grace)
            # the turn stopped when its prompt request is answered, with a result or an error (Qwen answers a
            # turn cancelled inside its retry loop with "Internal error")
            await asyncio.wait_for(asyncio.wait([task]), grace)
            log.info("%s: turn on session %s cancelled", self.name, sid)
            return
        except Exception as exc:  # any failure to stop the turn ends in the kill below
            log.warning(
                "%s: the turn on session %s did not stop after cancel (%r): killing the agent", self.name, sid, exc
            )
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if agent in self.agents:
            self.agents.remove(agent)
        await agent.close()

    # ------------------------------------------------------------------------------------------ metadata
    async def models(self) -> list[ModelInfo]:
        """What the agent advertises in ``session/new`` (a session is opened once to learn it)."""
        if not self._advertised:
            try:
                agent = await self._agent(None)
                agent.active += 1
                try:
                    await self._new_session(agent, ChatRequest(messages=[Message(role="user", content="-")]))
                finally:
                    agent.active -= 1
                    self._touch(agent)
            except LLMError as exc:
                log.warning("%s: cannot list the agent's models: %s", self.name, exc.message)
        names = self._advertised or [m for m in (self.default_model, *self.cli.known_models) if m]
        return [ModelInfo(id=n, provider=self.name) for n in dict.fromkeys(names)]

    async def health(self) -> Health:
        return await self.cli.health()

    async def aclose(self) -> None:
        for timer in self._idle_timers.values():
            timer.cancel()
        self._idle_timers.clear()
        agents, self.agents = self.agents, []
        self._live.clear()
        for agent in agents:
            await agent.close()
        for task in list(self._closing):
            with contextlib.suppress(BaseException):
                await task
        await self.cli.aclose()
