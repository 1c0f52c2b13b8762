"""Fixtures for the server tests: a real uvicorn server on 127.0.0.1, port 0, in a thread, serving scripted
providers (no subprocess), so the official SDKs can be used as clients."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator, Mapping

import pytest
import uvicorn
from server_helpers import Served, wait_until

from llm_runners import logs
from llm_runners.config import Settings
from llm_runners.provider import Provider
from llm_runners.router import Router
from llm_runners.server import create_app


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(providers, default=None, aliases=None, settings=None)`` starts a server and returns its address;
    ``serve(router=Router.from_settings(...), settings=...)`` serves a router built elsewhere."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(
        providers: Mapping[str, Provider] | Provider | None = None,
        *,
        router: Router | None = None,
        default: str | None = None,
        aliases: Mapping[str, str] | None = None,
        settings: Settings | None = None,
    ) -> Served:
        if isinstance(providers, Provider):
            providers = {providers.name: providers}
        if router is None:
            assert providers is not None, "serve() needs providers or a router"
            router = Router(providers, default, aliases)
        providers = providers if providers is not None else router.providers
        app = create_app(router, settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        assert wait_until(lambda: server.started, 10), "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        return Served(f"http://127.0.0.1:{port}", router, providers)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged while the test runs, formatted by our own formatters (text and JSON, as ``serve`` does)."""
    out = io.StringIO()
    handlers = []
    for formatter in (logs.TextFormatter(), logs.JSONFormatter()):
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter)
        handler.setLevel(logging.DEBUG)
        handlers.append(handler)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield out
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(level)
