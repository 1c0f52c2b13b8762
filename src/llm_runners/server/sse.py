"""Running one provider call for one HTTP request: SSE framing, disconnects, deadlines, errors.

Both responses here are plain ASGI apps that *own* the provider call, rather than Starlette responses fed by a
generator, for three reasons:

- **Disconnects.** A task watches ``receive()`` for ``http.disconnect`` and cancels the call at once, so a CLI
  process is killed as soon as its caller goes away, even while the provider is silent (a generator-fed response
  only notices on its next write).
- **Real statuses for early errors.** The stream's first event is awaited before the response starts, so a
  provider that fails before saying anything (rate limit, missing binary, bad model) yields a proper 4xx/5xx with
  the front door's envelope, which the SDKs turn into typed exceptions. Errors after streaming began become an
  error event in the front door's SSE dialect, then a clean end of the body.
- **Speed.** Renderers hand back pre-encoded bytes; there is no per-event object layer between them and ``send``.
  Events the provider already has ready are rendered into one buffer and go out in one write; the buffer is written
  as soon as the provider has to wait for its next event (so nothing is held back), or when it reaches
  :data:`COALESCE_BYTES`. A CLI's burst of lines, or a scripted reply, costs one transport write, not one per event.

While streaming, a heartbeat (an SSE comment, or Anthropic's ``ping`` event) goes out after ``heartbeat`` seconds
of silence, so proxies and clients with idle timeouts keep the connection open while a CLI thinks.

**Shutdown.** Every call registers in its app's :class:`RunningCalls` (``app.state.calls``) while it runs. A server
that stops (``llm-runners serve`` after ``shutdown_grace``) calls :meth:`RunningCalls.end_all`: each call is ended
the way its deadline ends it — a stream that started gets the front door's error event and then the end of its
body, a call that has not answered yet gets the error response — instead of being cancelled half-way, which would
cut the stream with no error event and no end. The provider's stream is then closed, which kills its CLI process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import anyio
from starlette.types import Receive, Scope, Send

from ..errors import LLMError, ProviderTimeout, UpstreamError
from ..provider import Provider
from ..types import ChatRequest, ChatResponse, StreamEvent, ToolCall, ToolCallDelta, Usage
from ..wrappers.meta import collect_headers
from .errors import Flavor, error_body, to_llm_error
from .observe import note_error, note_usage

__all__ = [
    "WARNINGS_HEADER",
    "CompletionCall",
    "RunningCalls",
    "StreamRenderer",
    "StreamedCall",
    "StreamedCalls",
    "StreamingCall",
    "Watched",
    "cost_fields",
    "dumps",
    "json_string",
    "send_json",
    "sse_data",
    "sse_event",
    "warnings_headers",
]

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one encoder, not one per call

#: a str as a JSON string literal, quotes included (UTF-8 kept as is): for splicing one value into pre-encoded JSON
json_string: Callable[[str], str] = json.encoder.encode_basestring


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is (smaller and faster than ASCII escapes)."""
    return _ENCODER.encode(obj)


def cost_fields(usage: Usage) -> dict[str, Any]:
    """The cost every wire format's usage object carries next to its own fields (the SDKs keep unknown fields):
    ``cost_usd`` (``null`` when no price is known for the model) and ``cost_estimated`` (see
    :mod:`llm_runners.wrappers.cost`)."""
    return {"cost_usd": usage.cost_usd, "cost_estimated": usage.cost_estimated}


def sse_data(obj: Any) -> bytes:
    """``data: <json>`` framing (OpenAI Chat Completions)."""
    return b"data: " + dumps(obj).encode() + b"\n\n"


def sse_event(event: str, obj: Any) -> bytes:
    """``event: <name>`` + ``data: <json>`` framing (Anthropic Messages, OpenAI Responses)."""
    return b"event: " + event.encode() + b"\ndata: " + dumps(obj).encode() + b"\n\n"


@dataclass
class StreamedCall:
    """A tool call a renderer is streaming in fragments: its id and name, where the wire format put it (``slot``:
    the Chat Completions ``index``, the Messages content block, the Responses output index; ``item_id`` for
    Responses) and the argument text sent so far."""

    id: str
    name: str
    slot: int
    item_id: str = ""
    sent: list[str] = field(default_factory=list)

    def rest(self, call: ToolCall) -> str:
        """What the fragments lacked of the complete call's arguments (all of them when none were sent)."""
        sent = "".join(self.sent)
        if call.arguments.startswith(sent):
            return call.arguments[len(sent) :]
        return "" if sent else call.arguments


class StreamedCalls:
    """The tool calls of one answer that arrive as :class:`ToolCallDelta` fragments before their whole
    :class:`ToolCallEvent`, keyed by the provider's ordinal. A fragment of a call never announced (no id and name)
    is ignored: that call is rendered whole from its event, as calls without fragments are."""

    def __init__(self) -> None:
        self.by_ordinal: dict[int, StreamedCall] = {}

    def fragment(self, event: ToolCallDelta, slot: Callable[[], tuple[int, str]]) -> tuple[StreamedCall, bool] | None:
        """The call this fragment belongs to and whether it starts here (``slot()`` places a new one), or None."""
        known = self.by_ordinal.get(event.index)
        if known is not None:
            known.sent.append(event.arguments)
            return known, False
        if event.id is None or event.name is None:
            return None
        where, item_id = slot()
        known = self.by_ordinal[event.index] = StreamedCall(event.id, event.name, where, item_id, [event.arguments])
        return known, True

    def finished(self, call: ToolCall) -> StreamedCall | None:
        """The streamed record of a complete call, when its fragments went out."""
        for known in self.by_ordinal.values():
            if known.id == call.id:
                return known
        return None


class StreamRenderer(Protocol):
    """Turns stream events into one wire format's SSE bytes. ``done`` is true once the final event was rendered."""

    heartbeat: bytes
    done: bool

    def head(self) -> bytes:
        """Bytes sent before the first event (role chunk, ``message_start``, ``response.created``...)."""
        ...

    def event(self, event: StreamEvent) -> bytes:
        """The bytes for one event; ``b""`` when it renders to nothing (yet)."""
        ...

    def error(self, exc: LLMError) -> bytes:
        """The error event(s) that end a stream which already started."""
        ...


def _json_headers(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in extra.items()]
    return headers


async def send_json(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    hdrs = _json_headers(headers)
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, exc: LLMError, flavor: Flavor, noted: dict[str, str] | None = None) -> None:
    await send_json(send, exc.status, error_body(exc, flavor), {**exc.headers(), **(noted or {})})


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers.items()]


class RunningCalls:
    """The calls an app is running right now (``app.state.calls``), so a server shutting down can end them cleanly
    (see the module docstring)."""

    def __init__(self) -> None:
        self._calls: set[Watched] = set()

    def __len__(self) -> int:
        return len(self._calls)

    @contextlib.contextmanager
    def running(self, call: Watched) -> Iterator[None]:
        self._calls.add(call)
        try:
            yield
        finally:
            self._calls.discard(call)

    def end_all(self, error: LLMError) -> int:
        """End every running call with ``error``; returns how many were running."""
        calls = list(self._calls)
        for call in calls:
            call.end(error)
        return len(calls)


def _running_calls(scope: Scope) -> RunningCalls | None:
    calls = getattr(getattr(scope.get("app"), "state", None), "calls", None)
    return calls if isinstance(calls, RunningCalls) else None


class Watched:
    """Shared plumbing of the ASGI apps that own a provider call: the disconnect watcher, the safe ``send``, and
    the ending from outside (:meth:`end`)."""

    def __init__(self) -> None:
        self.disconnected = False
        self.started = False
        self.finished = False
        self.last_send = 0.0
        #: the error the call was ended with from outside (:meth:`end`), if it was
        self.ended_with: LLMError | None = None
        self._end_scope: anyio.CancelScope | None = None

    def end(self, error: LLMError) -> None:
        """End the call as its deadline would, with ``error`` (a server shutting down)."""
        if self.ended_with is None and not self.finished:
            self.ended_with = error
            if self._end_scope is not None:
                self._end_scope.cancel()

    def _ends(self, scope: anyio.CancelScope) -> anyio.CancelScope:
        """``scope`` (the call's deadline) is the one :meth:`end` cancels."""
        self._end_scope = scope
        if self.ended_with is not None:
            scope.cancel()
        return scope

    @contextlib.contextmanager
    def _registered(self, scope: Scope) -> Iterator[None]:
        calls = _running_calls(scope)
        if calls is None:
            yield
        else:
            with calls.running(self):
                yield

    def _start_watcher(
        self, receive: Receive, scope: anyio.CancelScope, send: Send | None, beat: bytes, interval: float | None
    ) -> asyncio.Task[None]:
        """The watcher runs as a bare asyncio task, not in an anyio task group: a task group's cancellation
        delivery costs tens of microseconds per request, a large share of the server's own time on the hot path.
        (The server runs under uvicorn, i.e. on asyncio.)"""
        return asyncio.get_running_loop().create_task(self._watch(receive, scope, send, beat, interval))

    async def _watch(
        self, receive: Receive, scope: anyio.CancelScope, send: Send | None, beat: bytes, interval: float | None
    ) -> None:
        """Cancel ``scope`` when the client goes away; send ``beat`` after ``interval`` s of silence."""
        while True:
            with anyio.move_on_after(interval if interval else float("inf")):
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.disconnected = True
                    scope.cancel()
                    return
                continue
            idle = time.monotonic() - self.last_send >= (interval or 0)
            if send is not None and self.started and not self.finished and idle:
                await self._send_body(send, beat)

    async def _send_body(self, send: Send, data: bytes, more: bool = True) -> None:
        self.last_send = time.monotonic()
        await send({"type": "http.response.body", "body": data, "more_body": more})


class _Call(Watched):
    """One provider, one request."""

    def __init__(self, provider: Provider, request: ChatRequest, flavor: Flavor, timeout: float | None) -> None:
        super().__init__()
        self.provider = provider
        self.request = request
        self.flavor = flavor
        self.timeout = timeout
        #: the error the response reports, if any (for the request's log line)
        self.error: LLMError | None = None
        #: response headers the wrappers noted for this request (:mod:`llm_runners.wrappers.meta`)
        self.noted: dict[str, str] = {}


class StreamingCall(_Call):
    """ASGI app: stream ``provider.stream(request)`` as SSE through ``renderer`` (see the module docstring)."""

    def __init__(
        self,
        provider: Provider,
        request: ChatRequest,
        renderer: StreamRenderer,
        flavor: Flavor,
        *,
        timeout: float | None = 600.0,
        heartbeat: float | None = 15.0,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(provider, request, flavor, timeout)
        self.renderer = renderer
        self.heartbeat = heartbeat
        #: awaited once before the first write that carries the final event (the Responses store's shared copy)
        self.settle = settle

    async def _send_body(self, send: Send, data: bytes, more: bool = True) -> None:
        if self.settle is not None and self.renderer.done:
            settle, self.settle = self.settle, None
            await settle()
        await super()._send_body(send, data, more)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with (
            self._registered(scope),
            collect_headers() as self.noted,
        ):  # what the wrappers report (fallback entry, cache), sent with the head
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        events = self.provider.stream(self.request)
        try:
            with anyio.CancelScope() as cancel:
                watcher = self._start_watcher(receive, cancel, send, self.renderer.heartbeat, self.heartbeat)
                try:
                    await self._run(events, send)
                except OSError:  # the client went away while we were writing
                    self.disconnected = True
                finally:
                    self.finished = True
                    watcher.cancel()
        finally:
            note_usage(scope, getattr(self.renderer, "usage", None))
            if self.error is not None:
                note_error(scope, self.error)
            with anyio.move_on_after(5, shield=True):
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def _run(self, events: AsyncIterator[StreamEvent], send: Send) -> None:
        renderer = self.renderer
        error: LLMError | None = None
        pending = b""  # rendered, not yet written: everything the provider had ready at once goes in one write
        with self._ends(anyio.move_on_after(self.timeout if self.timeout else float("inf"))) as deadline:
            try:
                first = await events.__anext__()
            except StopAsyncIteration:
                error = UpstreamError("the provider's stream ended without any event", provider=self.provider.name)
            except Exception as exc:
                error = to_llm_error(exc)
            if error is not None:
                self.error = error
                await _send_error(send, error, self.flavor, self.noted)
                return
            headers = _SSE_HEADERS + _encoded(self.noted) if self.noted else _SSE_HEADERS
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            self.started = True
            try:
                # inside the try: a first event that fails to render ends the stream with an error event too
                pending = renderer.head() + renderer.event(first)
                while True:
                    step = events.__anext__().__await__()
                    try:
                        waiting = step.send(None)  # run the provider up to its next event or its next wait
                    except StopIteration as ready:  # the next event was already there: it joins the same write
                        pending += renderer.event(ready.value)
                        if len(pending) >= COALESCE_BYTES:
                            await self._send_body(send, pending)
                            pending = b""
                        continue
                    if pending:  # the provider has to wait: what is rendered goes out now
                        await self._flush_while_suspended(step, send, pending)
                        pending = b""
                    pending = renderer.event(await _resume(step, waiting))
            except StopAsyncIteration:
                if not renderer.done:
                    error = UpstreamError(
                        "the provider's stream ended without a final event", provider=self.provider.name
                    )
            except OSError:
                raise
            except Exception as exc:
                error = to_llm_error(exc)
        if deadline.cancelled_caught:
            error = self.ended_with or ProviderTimeout(
                f"no complete answer within {self.timeout:g} s", provider=self.provider.name
            )
            if not self.started:
                self.error = error
                await _send_error(send, error, self.flavor, self.noted)
                return
        if error is not None:
            self.error = error
            pending += renderer.error(error)
        self.finished = True
        await self._send_body(send, pending, more=False)

    async def _flush_while_suspended(self, step: _Step, send: Send, data: bytes) -> None:
        """Write ``data`` while ``step`` (the provider's next event) is suspended half-way. If the write fails
        (client gone, deadline, cancellation), the step is cancelled and run to its end before the error goes on,
        so the provider's generator is left finished and clean, never stuck in the middle of an ``await``."""
        try:
            await self._send_body(send, data)
        except BaseException:
            await _abandon(step)
            raise


#: rendered bytes kept for one write at most (a provider that produces faster than this still streams)
COALESCE_BYTES = 64 * 1024

_Step = Generator[Any, Any, StreamEvent]


@types.coroutine
def _resume(step: _Step, waiting: Any) -> _Step:
    """The rest of ``await step`` after its first ``send(None)`` returned ``waiting`` (the future it waits on):
    what ``yield from`` would do, minus the first step already taken. Cancellation and other exceptions the task
    receives are passed into the step, as an ordinary ``await`` would."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:
            try:
                waiting = step.throw(exc)
            except StopIteration as done:
                return cast(StreamEvent, done.value)
            continue
        try:
            waiting = step.send(sent)
        except StopIteration as done:
            return cast(StreamEvent, done.value)


async def _abandon(step: _Step) -> None:
    """Cancel a step suspended half-way and let it finish its cleanup (bounded, shielded from our own cancel)."""
    with anyio.CancelScope(shield=True) as scope:
        scope.deadline = anyio.current_time() + 5
        try:
            waiting = step.throw(asyncio.CancelledError())
            await _resume(step, waiting)
        except (Exception, asyncio.CancelledError):
            pass


Render = Callable[[ChatResponse], tuple[bytes, dict[str, str]]]


class CompletionCall(_Call):
    """ASGI app: ``provider.complete(request)`` rendered by ``render`` into a JSON body and extra headers."""

    def __init__(
        self,
        provider: Provider,
        request: ChatRequest,
        render: Render,
        flavor: Flavor,
        *,
        timeout: float | None = 600.0,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(provider, request, flavor, timeout)
        self.render = render
        #: awaited after rendering, before the body is sent (the Responses store's shared copy)
        self.settle = settle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with (
            self._registered(scope),
            collect_headers() as self.noted,
        ):  # what the wrappers report (fallback entry, cache)
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        result: ChatResponse | None = None
        error: LLMError | None = None
        with anyio.CancelScope() as cancel:
            watcher = self._start_watcher(receive, cancel, None, b"", None)
            try:
                with self._ends(anyio.move_on_after(self.timeout if self.timeout else float("inf"))) as deadline:
                    try:
                        result = await self.provider.complete(self.request)
                    except Exception as exc:
                        error = to_llm_error(exc)
                if deadline.cancelled_caught:
                    error = self.ended_with or ProviderTimeout(
                        f"no answer within {self.timeout:g} s", provider=self.provider.name
                    )
            finally:
                watcher.cancel()
        if result is not None:
            note_usage(scope, result.usage)
        if error is not None:
            note_error(scope, error)
        if self.disconnected:
            return
        try:
            if result is not None and error is None:
                try:
                    body, headers = self.render(result)
                except Exception as exc:
                    error = to_llm_error(exc)
                    note_error(scope, error)
                else:
                    if self.settle is not None:
                        await self.settle()
                    await send_json(send, 200, body, {**headers, **self.noted} if self.noted else headers)
                    return
            await _send_error(send, error or UpstreamError("no answer"), self.flavor, self.noted)
        except OSError:
            self.disconnected = True


WARNINGS_HEADER = "x-llm-runners-warnings"


def warnings_headers(warnings: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Warnings for a JSON response, as one header (``; `` separated, non-ASCII replaced): headers are the one
    place every client library lets a caller see without changing the wire format's body schema."""
    if not warnings:
        return {}
    text = "; ".join(w.replace("\r", " ").replace("\n", " ") for w in warnings)
    return {WARNINGS_HEADER: text.encode("ascii", "replace").decode("ascii")}
