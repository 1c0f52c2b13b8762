"""The :class:`FakeModelAPI` server: routing, scripting, recording, and the background thread it runs in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .anthropic import AnthropicMessages
from .gemini import Gemini
from .http import MAX_HEADER_BYTES, BadRequest, HttpRequest, Responder, read_request, wait_for_eof
from .openai_chat import OpenAIChat
from .openai_responses import OpenAIResponses
from .recording import RecordedRequest, RequestKind, auxiliary_kind
from .script import DEFAULT_TEXT, ERROR_KINDS, Reply, Turn, as_reply
from .wire import ErrorContext, WireApi

log = logging.getLogger(__name__)

#: an API key ``fake-err-<kind>`` selects an error (``ERROR_KINDS``) or ``hang`` without any scripting
KEY_PREFIX = "fake-err-"
DEFAULT_MODELS = ("fake-model", "fake-model-2")

_ANTHROPIC, _CHAT, _RESPONSES, _GEMINI = AnthropicMessages(), OpenAIChat(), OpenAIResponses(), Gemini()
_GEMINI_PATH = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")


@dataclass(frozen=True)
class _Route:
    kind: RequestKind
    wire: WireApi | None = None
    #: Gemini puts model and action in the URL
    model: str | None = None
    action: str | None = None


def _route(method: str, path: str) -> _Route:
    path = path.rstrip("/") or "/"
    if method == "HEAD" or (method == "GET" and path == "/"):
        return _Route("probe")
    if method == "GET":
        if path.endswith("/models"):
            return _Route("models", _GEMINI if "v1beta" in path else None)
        return _Route("other")
    if method != "POST":
        return _Route("other")
    if match := _GEMINI_PATH.search(path):
        model, action = match.groups()
        return _Route("count_tokens" if action == "countTokens" else "main", _GEMINI, model, action)
    if path.endswith("/messages/count_tokens"):
        return _Route("count_tokens", _ANTHROPIC)
    for suffix, wire in (("/messages", _ANTHROPIC), ("/chat/completions", _CHAT), ("/responses", _RESPONSES)):
        if path.endswith(suffix):
            return _Route("main", wire)
    return _Route("other")


class FakeModelAPI:
    """A model API on 127.0.0.1 speaking Anthropic Messages, OpenAI Chat Completions, OpenAI Responses and Gemini.

    ``with FakeModelAPI() as api:`` starts it on a free port in a background thread with its own event loop, so
    sync tests, async tests and CLI subprocesses all reach it; leaving the block stops it and frees the port.
    Scripting and recording are thread-safe.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_reply: Reply | str = DEFAULT_TEXT,
        router_score: int = 10,
        models: Sequence[str] = DEFAULT_MODELS,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Condition()
        self._queue: deque[Reply] = deque()
        self._records: list[RecordedRequest] = []
        self._default = as_reply(default_reply)
        #: the ``complexity_score`` Gemini CLI's router gets (>= 1 keeps the CLI happy; 10 routes to a flash model)
        self.router_score = router_score
        self.models = list(models)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        #: headers added to every response, e.g. ``anthropic-ratelimit-unified-*`` (a subscription's quota)
        self.response_headers: dict[str, str] = {}
        #: called (in the server's thread) with each request once it is answered, e.g. to log it
        self.on_answered: Callable[[RecordedRequest], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> FakeModelAPI:
        if self._thread is not None:
            raise RuntimeError("FakeModelAPI is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._on_connection, self.host, self._requested_port, limit=MAX_HEADER_BYTES)
                )
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-model-api", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        assert self._server is not None
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and every open connection (hung ones included), then end the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = self._loop = self._server = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    def __enter__(self) -> FakeModelAPI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeModelAPI is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        """For ``ANTHROPIC_BASE_URL`` and ``anthropic.Anthropic(base_url=…)``: no ``/v1``."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """For ``OPENAI_BASE_URL``, Codex ``base_url`` and ``openai.OpenAI(base_url=…)``: with ``/v1``."""
        return f"{self.url}/v1"

    @property
    def gemini_base_url(self) -> str:
        """For ``GOOGLE_GEMINI_BASE_URL``: the root, the SDK adds ``/v1beta``."""
        return self.url

    # -- scripting ------------------------------------------------------------------------------------------
    def script(self, *replies: Reply | str) -> None:
        """Queue replies for the next main requests, in order (a ``str`` is a text reply). Router, title and
        memory calls never consume them. When the queue is empty the default reply answers."""
        resolved = [as_reply(r) for r in replies]
        with self._lock:
            self._queue.extend(resolved)

    @property
    def default_reply(self) -> Reply:
        with self._lock:
            return self._default

    @default_reply.setter
    def default_reply(self, reply: Reply | str) -> None:
        resolved = as_reply(reply)
        with self._lock:
            self._default = resolved

    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget scripted replies and recorded requests (the default reply stays)."""
        with self._lock:
            self._queue.clear()
            self._records.clear()

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self._default

    # -- recording ------------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, probes included, in arrival order."""
        with self._lock:
            return list(self._records)

    def main_requests(self) -> list[RecordedRequest]:
        """The conversation turns only: no probes, router, title, memory, count-tokens or model-list calls."""
        return [r for r in self.requests if r.kind == "main"]

    def last_main_request(self) -> RecordedRequest:
        main = self.main_requests()
        if not main:
            raise LookupError("the fake model API has received no main request")
        return main[-1]

    def wait_for_requests(
        self, count: int = 1, *, timeout: float = 5.0, main_only: bool = False
    ) -> list[RecordedRequest]:
        """Block until ``count`` requests (main ones only, if asked) arrived; ``TimeoutError`` otherwise.
        From async code run it in a worker thread, since it blocks."""

        def arrived() -> list[RecordedRequest]:
            return [r for r in self._records if r.kind == "main" or not main_only]

        with self._lock:
            if not self._lock.wait_for(lambda: len(arrived()) >= count, timeout):
                raise TimeoutError(f"expected {count} requests, got {len(arrived())} within {timeout} s")
            return arrived()

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._records.append(record)
            self._lock.notify_all()

    # -- serving --------------------------------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    request = await read_request(reader, writer)
                except BadRequest as exc:
                    body = json.dumps({"error": {"message": str(exc), "type": "invalid_request_error"}}).encode()
                    writer.write(
                        b"HTTP/1.1 %d Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                        b"connection: close\r\n\r\n%s" % (exc.status, len(body), body)
                    )
                    await writer.drain()
                    break
                if request is None:
                    break
                responder = Responder(writer, request, dict(self.response_headers))
                await self._handle(request, reader, responder)
                if not responder.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # only our own shutdown cancels connections; ending quietly keeps asyncio's
            # stream callback (which asks the task for its exception) from logging a traceback
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _handle(self, request: HttpRequest, reader: asyncio.StreamReader, responder: Responder) -> None:
        route = _route(request.method, request.path)
        body: Any = None
        if request.body:
            with contextlib.suppress(ValueError):
                body = json.loads(request.body)
        fields = body if isinstance(body, dict) else {}
        kind = route.kind
        if kind == "main" and route.wire is not None:
            if route.wire is _GEMINI and _GEMINI.is_router(fields):
                kind = "router"
            else:
                kind = auxiliary_kind(route.wire.system_text(fields)) or "main"
        model = route.model or (fields["model"] if isinstance(fields.get("model"), str) else None)
        stream = route.action == "streamGenerateContent" if route.wire is _GEMINI else fields.get("stream") is True
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            body=body,
            raw_body=request.body,
            api=route.wire.name if route.wire else None,
            kind=kind,
            model=model,
            stream=stream,
            _wire=route.wire,
        )
        self._record(record)
        responder.on_status = record.set_status
        try:
            await self._answer(request, route, record, reader, responder)
        except Exception:
            if responder.status:
                raise
            log.exception("fake model API failed on %s %s", request.method, request.path)
            await responder.send_json(
                500, {"error": {"message": "fake model API bug (see log)", "type": "server_error"}}
            )
        finally:
            if self.on_answered is not None:
                self.on_answered(record)

    async def _answer(
        self,
        request: HttpRequest,
        route: _Route,
        record: RecordedRequest,
        reader: asyncio.StreamReader,
        responder: Responder,
    ) -> None:
        if route.kind == "probe":
            await responder.send(200, b"", content_type="text/plain")
            return
        if route.kind == "models":
            await responder.send_json(200, self._model_list(gemini=route.wire is _GEMINI))
            return
        wire = route.wire
        if wire is None:
            message = f"fake model API: no route for {request.method} {request.path}"
            await responder.send_json(404, {"error": {"message": message, "type": "not_found_error"}})
            return
        key = record.api_key
        ctx = ErrorContext(record.model or "fake-model", key, max(1, len(request.body) // 4), None, 1)

        async def refuse(message: str) -> None:
            error = wire.error("invalid", ErrorContext(ctx.model, key, ctx.prompt_tokens, message, 1))
            await responder.send_json(error.status, error.body, error.headers)

        reply: Reply | None = None
        if key and key.startswith(KEY_PREFIX):
            selected = key[len(KEY_PREFIX) :]
            if selected == "hang":
                reply = Reply(hang="before")
            elif selected in ERROR_KINDS:
                reply = Reply(error=selected)  # type: ignore[arg-type]  # checked against ERROR_KINDS
            else:
                await refuse(f"unknown fake error key {key!r}: use {KEY_PREFIX}<{'|'.join((*ERROR_KINDS, 'hang'))}>")
                return
        if not isinstance(body := record.body, dict):
            await refuse("the request body must be a JSON object")
            return
        if reply is None:
            if record.kind == "count_tokens":
                count = {"totalTokens": ctx.prompt_tokens} if wire is _GEMINI else {"input_tokens": ctx.prompt_tokens}
                await responder.send_json(200, count)
                return
            if problem := wire.validate(body):
                await refuse(problem)
                return
            reply = self._reply_for(record.kind)
        await self._perform(reply, wire, record, request, ctx, reader, responder)

    def _reply_for(self, kind: RequestKind) -> Reply:
        if kind == "router":
            verdict = {"complexity_reasoning": "fake router: a simple request", "complexity_score": self.router_score}
            return Reply(text=json.dumps(verdict))
        if kind == "title":
            return Reply(text="Fake title")
        if kind == "memory":
            return self.default_reply
        return self._next_reply()

    async def _perform(
        self,
        reply: Reply,
        wire: WireApi,
        record: RecordedRequest,
        request: HttpRequest,
        ctx: ErrorContext,
        reader: asyncio.StreamReader,
        responder: Responder,
    ) -> None:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.hang == "before":
            await self._hang(record, reader, responder)
            return
        if reply.error is not None:
            ctx = ErrorContext(ctx.model, ctx.api_key, ctx.prompt_tokens, reply.error_message, reply.retry_after)
            error = wire.error(reply.error, ctx)
            await responder.send_json(error.status, error.body, error.headers)
            return
        turn = Turn.build(reply, model=ctx.model, request_size=len(request.body), tool_id_prefix=wire.tool_id_prefix)
        if not record.stream:
            await responder.send_json(200, wire.render_json(turn))
            return
        if wire is _GEMINI and request.query.get("alt") != "sse":
            await responder.send_json(200, _GEMINI.render_json_array(turn))
            return
        frames = wire.render_stream(turn, record.body)
        hang_at = next((i for i, f in enumerate(frames) if f.chunk), 0) if reply.hang == "mid" else -1
        await responder.start_stream()
        seen_chunk = False
        for index, frame in enumerate(frames):
            if frame.chunk:
                if seen_chunk and reply.chunk_delay:
                    await responder.write(b"", flush=True)
                    await asyncio.sleep(reply.chunk_delay)
                seen_chunk = True
            await responder.write(frame.data)
            if index == hang_at:
                await responder.write(b"", flush=True)
                await self._hang(record, reader, responder)
                return
        await responder.end()

    async def _hang(self, record: RecordedRequest, reader: asyncio.StreamReader, responder: Responder) -> None:
        responder.keep_alive = False
        await wait_for_eof(reader)
        record._disconnected.set()

    def _model_list(self, *, gemini: bool) -> dict[str, Any]:
        if gemini:
            return {
                "models": [
                    {
                        "name": f"models/{m}",
                        "displayName": m,
                        "inputTokenLimit": 1048576,
                        "outputTokenLimit": 65536,
                        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
                    }
                    for m in self.models
                ]
            }
        # OpenAI's list shape, with the fields Anthropic's /v1/models adds, so both SDKs can read it
        data = [
            {
                "id": m,
                "object": "model",
                "created": 0,
                "owned_by": "fake",
                "type": "model",
                "display_name": m,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for m in self.models
        ]
        first, last = (self.models[0], self.models[-1]) if self.models else (None, None)
        return {"object": "list", "data": data, "has_more": False, "first_id": first, "last_id": last}
