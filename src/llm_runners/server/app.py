"""The Starlette app: routes for the three wire formats, health, models; errors in each caller's envelope.

Routes (each also answers without the ``/v1`` prefix, for clients whose base URL has none):

=======================================  ===================================================
``POST /v1/chat/completions``            OpenAI Chat Completions (:mod:`.openai_chat`)
``POST /v1/responses``                   OpenAI Responses (:mod:`.openai_responses`)
``POST /v1/responses/input_tokens``      OpenAI Responses token count (the same estimate)
``GET  /v1/responses/{id}``              a stored response
``DELETE /v1/responses/{id}``            removes it from the store
``GET  /v1/responses/{id}/input_items``  its input items (a cursor page)
``POST /v1/responses/{id}/cancel``       a 400: there are no background responses to cancel
``POST /v1/messages``                    Anthropic Messages (:mod:`.anthropic_messages`)
``POST /v1/messages/count_tokens``       Anthropic token count (an estimate)
``GET  /v1/models``                      every provider's models as ``provider:model``, and the aliases
``GET  /v1/models/{id}``                 one of them (or any name the router would route)
``GET  /v1/usage``                       the caller's key: budgets and what it used; subscription quotas
``GET  /health``                         liveness: always 200, no key (``?detail=1`` with a key: readiness)
``GET  /ready``                          readiness per provider (and per ``[[mcp_servers]]`` entry); 503 when none
                                         is ready (details need the key)
``GET  /metrics``                        Prometheus metrics (:mod:`.observe`); the key unless ``metrics_public``
``GET|HEAD /``                           200: Claude Code probes ``HEAD /`` before every run
=======================================  ===================================================

Middleware (outermost first): request ids (``request-id`` / ``x-request-id``) and the request's log line and
metrics (:mod:`.observe`), API-key check, per-key budgets (:mod:`.budgets`), then the body-size limit. Errors
never escape as a bare 500: an
:class:`~llm_runners.errors.LLMError` is rendered with its status in the envelope of the caller's wire format (the
path's; on shared routes such as ``/v1/models``, Anthropic's for a caller sending ``anthropic-version`` or
``x-api-key``), anything else is logged and rendered as an ``InternalError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import process, redact
from ..config import Settings
from ..errors import InvalidRequest, LLMError, ModelNotFound, Overloaded
from ..provider import Provider
from ..router import SERVE_WARM, Router
from ..sessions import SessionStore
from ..state import State, open_state
from ..tools.agent import ServerTools
from .anthropic_messages import AnthropicMessages, CountTokens
from .auth import DEFAULT_EXEMPT, APIKeyAuth
from .budgets import KeyBudgets, UsageEndpoint
from .errors import Flavor, error_response
from .health import HealthEndpoints
from .limits import BodySizeLimit, RequestTooLarge, scope_flavor
from .observe import Observer, note_error
from .openai_chat import ChatCompletions
from .openai_responses import Responses, ResponseStore
from .request_id import RequestId
from .sse import RunningCalls

__all__ = ["create_app", "serve"]

if TYPE_CHECKING:
    from ..tools.mcp_bridge import MCPBridge

Handler = Callable[[Request], Awaitable[Any]]


def _guard(handler: Handler, flavor: Flavor | None) -> Callable[[Request], Awaitable[Any]]:
    """Run ``handler``; any exception it raises becomes an error response in ``flavor``'s envelope (``None``: a
    route every client may call, answered in the caller's own, see :func:`~.limits.scope_flavor`)."""

    async def endpoint(request: Request) -> Any:
        try:
            return await handler(request)
        except RequestTooLarge:
            raise  # BodySizeLimit answers 413 itself
        except Exception as exc:
            note_error(request.scope, exc)
            return error_response(exc, flavor or scope_flavor(request.scope))

    return endpoint


async def _root(request: Request) -> Response:
    return Response(b'{"service":"llm-runners"}', media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 / 500, in the envelope of the caller's wire format (path, else headers)."""
    flavor = scope_flavor(request.scope)
    note_error(request.scope, exc)
    if isinstance(exc, HTTPException):
        error: LLMError
        if exc.status_code == 404:
            error = ModelNotFound(f"no such endpoint: {request.method} {request.url.path}", code="not_found")
        else:
            error = InvalidRequest(f"{exc.detail}: {request.method} {request.url.path}", code="http_error")
        response = error_response(error, flavor)
        response.status_code = exc.status_code
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    return error_response(exc, flavor)


def create_app(
    router: Router,
    settings: Settings | None = None,
    *,
    store: ResponseStore | None = None,
    state: State | None = None,
) -> Starlette:
    """Build the server for ``router``. ``settings`` supplies keys, limits and the request timeout (defaults when
    omitted); ``store`` lets a caller size or share the Responses store. ``state`` is the shared state
    (:mod:`llm_runners.state`; by default opened from ``settings.state`` and closed with the app; one passed in
    is left open for its owner), kept as ``app.state.shared``."""
    settings = settings or Settings()
    redact.register(*settings.api_keys)
    owns_state = state is None
    shared = state if state is not None else open_state(settings.state)
    router.use_state(shared)  # with Redis, the cache and the circuit breakers are shared by every replica
    timeout = settings.request_timeout or None
    bridge = _mcp_bridge(settings)
    tools = ServerTools(bridge, settings)
    # in memory the LRU is the store and each runner keeps its own session map; with Redis every replica shares them
    responses = Responses(
        router,
        timeout,
        store or ResponseStore(shared=shared if shared.backend != "memory" else None),
        tools=tools,
    )
    if shared.backend != "memory":
        _share_sessions(router, SessionStore(shared=shared))
    chat = ChatCompletions(router, timeout, tools=tools)
    messages = AnthropicMessages(router, timeout, tools=tools)
    count = CountTokens()
    health = HealthEndpoints(router, bridge)
    observer = Observer(router, metrics=settings.metrics)
    usage = UsageEndpoint(router, settings, shared)

    routes: list[Route] = []
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/chat/completions", _guard(chat, "openai"), methods=["POST"]),
            Route(f"{prefix}/responses", _guard(responses, "openai"), methods=["POST"]),
            Route(f"{prefix}/responses/input_tokens", _guard(responses.input_tokens, "openai"), methods=["POST"]),
            Route(f"{prefix}/responses/{{response_id}}", _guard(responses.retrieve, "openai"), methods=["GET"]),
            Route(f"{prefix}/responses/{{response_id}}", _guard(responses.delete, "openai"), methods=["DELETE"]),
            Route(f"{prefix}/responses/{{response_id}}/cancel", _guard(responses.cancel, "openai"), methods=["POST"]),
            Route(
                f"{prefix}/responses/{{response_id}}/input_items",
                _guard(responses.input_items, "openai"),
                methods=["GET"],
            ),
            Route(f"{prefix}/messages", _guard(messages, "anthropic"), methods=["POST"]),
            Route(f"{prefix}/messages/count_tokens", _guard(count, "anthropic"), methods=["POST"]),
            Route(f"{prefix}/models", _guard(health.models, None), methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", _guard(health.model, None), methods=["GET"]),
            Route(f"{prefix}/usage", _guard(usage, "openai"), methods=["GET"]),
        ]
    routes += [
        Route("/health", _guard(health.health, None), methods=["GET"]),
        Route("/ready", _guard(health.ready, None), methods=["GET"]),
        Route("/", _root, methods=["GET", "HEAD"]),
    ]
    exempt = set(DEFAULT_EXEMPT)
    if settings.metrics:
        routes.append(Route("/metrics", _metrics_endpoint(observer), methods=["GET"]))
        if settings.metrics_public:
            exempt.add(("GET", "/metrics"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if bridge is not None:
                await bridge.start()  # a server that fails is logged and left out (see /ready)
            await router.start()
            yield
        finally:
            try:
                await router.aclose()
            finally:
                await tools.aclose()
                if owns_state:
                    await shared.aclose()
                if bridge is not None:
                    await bridge.aclose()

    middleware = [
        Middleware(RequestId, observer=observer),
        Middleware(APIKeyAuth, keys=settings.api_keys, exempt=exempt),
        Middleware(KeyBudgets, limits=settings.keys, state=shared, lease_ttl=(settings.request_timeout or 600) + 60),
        Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
        lifespan=lifespan,
    )
    app.state.router = router
    app.state.settings = settings
    app.state.calls = RunningCalls()
    app.state.responses = responses.store
    app.state.observer = observer
    app.state.shared = shared
    app.state.mcp_bridge = bridge
    app.state.tools = tools
    return app


def _mcp_bridge(settings: Settings) -> MCPBridge | None:
    """The ``[[mcp_servers]]`` of the settings as one tool box, started in the lifespan; None without any."""
    if not settings.mcp_servers:
        return None
    from ..tools.mcp_bridge import MCPBridge

    return MCPBridge(settings.mcp_servers)


def _share_sessions(router: Router, store: SessionStore) -> None:
    """Give every runner that keeps a session store (a CLI runner, an ACP runner's CLI) the shared one, so a
    conversation continued on another replica resumes there when that replica can reach the CLI's session."""
    for provider in router.providers.values():
        seen: Any = provider
        while seen is not None:
            for holder in (seen, getattr(seen, "cli", None)):
                if holder is not None and isinstance(getattr(holder, "sessions", None), SessionStore):
                    holder.sessions = store
            inner = getattr(seen, "inner", None)
            seen = inner if isinstance(inner, Provider) else None


def _metrics_endpoint(observer: Observer) -> Callable[[Request], Awaitable[Response]]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(request: Request) -> Response:
        text = redact.redact(generate_latest(observer.registry).decode("utf-8"))
        return Response(text.encode("utf-8"), media_type=CONTENT_TYPE_LATEST)

    return metrics


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    default_provider: str | None = None,
    config: str | None = None,
    log_level: str = "info",
    log_format: str = "text",
) -> int:
    """``llm-runners serve``: load settings (file + environment, then these overrides), refuse an unsafe bind,
    build the router and run uvicorn until SIGINT or SIGTERM, then shut down gracefully and return 0.

    With no ``[providers]`` in the settings, every runner in the registry is offered with its default options (those
    that fail to build are skipped with a log line). Warm is on: every CLI runner that can be kept warm gets
    ``warm = SERVE_WARM`` (one spare, and a live process per conversation where the CLI can keep one) unless its
    options set ``warm`` (``warm = 0``: every turn spawns cold). Every settings problem (a bad file, an unsafe
    bind, a provider that cannot be built) raises :class:`~llm_runners.config.ConfigError` before anything listens.

    Orphans: before anything starts, :func:`~llm_runners.process.reap_dead_instances` removes what a crashed
    instance left, then :func:`~llm_runners.process.guard` ties every child to this process (a watchdog kills them
    all if it dies, even by SIGKILL). Shutdown: SIGTERM / SIGINT stops accepting; requests still running get
    ``shutdown_grace`` seconds (settings), then are cancelled (so their CLI processes are killed); every child
    still registered is killed and the temp root removed; exit 0. A second signal exits at once with status 1,
    still killing every child and removing the temp root.
    """
    import uvicorn

    from .. import logs
    from ..config import ConfigError, check_bind_safety, load_settings

    logs.configure(log_level, log_format)
    settings = load_settings(config)
    if host:
        settings.host = host
    if port is not None:
        settings.port = port
    if default_provider:
        settings.default_provider = default_provider
    check_bind_safety(settings)
    try:
        router = Router.from_settings(settings, extra=_registry_defaults(settings), warm=SERVE_WARM)
    except ConfigError:
        raise
    except ValueError as exc:  # an unknown provider type, bad options, a default provider that is not configured
        raise ConfigError(f"{config or 'settings'}: {exc}") from None
    _warn_missing_binaries(router, configured=set(settings.providers))
    log = logging.getLogger("llm_runners.server")
    reaped = process.reap_dead_instances()
    if reaped:
        log.info("removed what %d crashed instance(s) left: %s", len(reaped), ", ".join(reaped))
    process.guard()
    _fixed_mmap_threshold()
    try:
        app = create_app(router, settings)
        # log_config=None: uvicorn's records go to our handler (logs.configure); access_log=False: our one line per
        # request (llm_runners.access) says more than uvicorn's access line
        server = _uvicorn_server(app.state.calls, settings.shutdown_grace)(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_config=None,
                log_level=log_level,
                access_log=False,
                # uvicorn's own cancellation (which cuts streams) only for calls that did not end when told to
                timeout_graceful_shutdown=max(0, round(settings.shutdown_grace + END_WAIT)),
            )
        )
        with _stop_on_signals():
            server.run()
    finally:
        process.unguard()
    log.info("server stopped")
    return 0


#: allocations from this size up are mapped on their own and unmapped when freed (glibc's ``M_MMAP_THRESHOLD``)
MMAP_THRESHOLD = 128 * 1024


def _fixed_mmap_threshold() -> None:
    """Pin glibc's mmap threshold at its default, so large transient buffers (pipe reads of a CLI's output, long
    lines) go back to the OS when freed. glibc otherwise raises the threshold to the size of each mapped block
    freed (up to 32 MB), after which such buffers come from the heap and stay there. Measured with
    ``benchmarks/soak.py --requests 200 --modes flood,chatty,ok``: RSS after warm-up -> after the run 90 -> 98 MB
    unpinned, 69 -> 70 MB pinned. A no-op where the C library has no ``mallopt`` (musl, macOS)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, MMAP_THRESHOLD)  # -3 = M_MMAP_THRESHOLD


#: seconds the calls still running when ``shutdown_grace`` is over get to send their error event and end
END_WAIT = 5.0


def shutting_down() -> Overloaded:
    """The error the calls still running at the end of the shutdown grace are ended with (503, transient: a client
    retries it, on another replica or once the server is back)."""
    return Overloaded("the server is shutting down; retry the request", code="server_shutting_down", retry_after=1)


def _uvicorn_server(calls: RunningCalls, grace: float) -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, where the calls still running ``grace`` seconds into the graceful shutdown are ended
        cleanly (:meth:`RunningCalls.end_all`: an error event and the end of the stream, or an error response), and
        a second SIGTERM / SIGINT exits at once (uvicorn's own forces only on a second SIGINT), after killing every
        child group and removing the temp root."""

        async def shutdown(self, sockets: Any = None) -> None:
            log = logging.getLogger("llm_runners.server")

            def end_running() -> None:
                if ended := calls.end_all(shutting_down()):
                    log.warning("shutdown grace of %g s is over: ending %d running request(s)", grace, ended)

            timer = asyncio.get_running_loop().call_later(max(0.0, grace), end_running)
            try:
                await super().shutdown(sockets)
            finally:
                timer.cancel()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit:
                logging.getLogger("llm_runners.server").warning("second signal: exiting at once")
                process.unguard()
                logging.shutdown()
                os._exit(1)
            super().handle_exit(sig, frame)

    return Server


class _Stopped(Exception):
    """Raised by our handler for SIGINT / SIGTERM outside uvicorn's own handling."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Make SIGINT and SIGTERM a clean stop (exit status 0).

    uvicorn catches both while it serves, shuts down gracefully, then re-raises the signal against the handlers it
    found, which by default means a ``KeyboardInterrupt`` traceback or death by SIGTERM. With ours installed, that
    re-raised signal (or one arriving before uvicorn took over) ends up here as a quiet return instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _warn_missing_binaries(router: Router, *, configured: set[str]) -> None:
    """Before the server binds: a configured CLI provider whose binary is not installed is a warning (its requests
    fail with ``binary_not_found`` and the fix until it is installed, the others are served); the runners offered
    by default, without a ``[providers]`` table, are listed in one info line."""
    from ..runners.base import CLIRunner

    log = logging.getLogger("llm_runners.server")
    offered: list[str] = []
    for name, provider in router.providers.items():
        runner: Any = provider
        while not isinstance(runner, CLIRunner) and isinstance(getattr(runner, "inner", None), Provider):
            runner = runner.inner
        if not isinstance(runner, CLIRunner) or runner.find_binary() is not None:
            continue
        binary = runner.binary or runner.binary_name
        if name in configured:
            log.warning(
                "provider %s: `%s` is not installed; its requests fail until it is (npm install -g %s)",
                name,
                binary,
                runner.package,
            )
        else:
            offered.append(f"{name} (`{binary}`)")
    if offered:
        log.info("not installed, so not ready: %s", ", ".join(offered))


def _registry_defaults(settings: Settings) -> dict[str, Any]:
    if settings.providers:
        return {}
    from ..router import build_provider
    from ..runners import REGISTRY

    out: dict[str, Any] = {}
    for name in REGISTRY:
        try:
            out[name] = build_provider(name, {}, warm=SERVE_WARM)
        except Exception as exc:
            logging.getLogger("llm_runners.server").warning("provider %s unavailable: %s", name, exc)
    return out
