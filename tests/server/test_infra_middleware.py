"""APIKeyAuth and BodySizeLimit, in front of a small Starlette app, driven through httpx2's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from llm_runners.server.auth import APIKeyAuth, presented_key
from llm_runners.server.limits import BodySizeLimit, is_anthropic_path

pytestmark = pytest.mark.anyio


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"len": len(body)})


async def swallow(request: Request) -> Response:
    """An app that catches every error while reading the body and answers 400: the limit must still win."""
    try:
        await request.body()
    except Exception:
        return PlainTextResponse("app says bad request", status_code=400)
    return PlainTextResponse("ok")


async def root(request: Request) -> Response:
    return PlainTextResponse("")


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", echo, methods=["POST"]),
            Route("/v1/messages", echo, methods=["POST"]),
            Route("/v1/messages/count_tokens", echo, methods=["POST"]),
            Route("/swallow", swallow, methods=["POST"]),
            Route("/", root, methods=["GET", "HEAD"]),
            Route("/health", root, methods=["GET"]),
        ]
    )


def client(app: object) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ auth


async def test_auth_accepts_bearer_and_x_api_key() -> None:
    async with client(APIKeyAuth(make_app(), ["k1", "second-key"])) as c:
        r = await c.post("/v1/chat/completions", content=b"abc", headers={"Authorization": "Bearer second-key"})
        assert r.status_code == 200 and r.json() == {"len": 3}
        r = await c.post("/v1/messages", content=b"ab", headers={"x-api-key": "k1"})
        assert r.status_code == 200 and r.json() == {"len": 2}
        r = await c.post("/v1/messages", content=b"ab", headers={"Authorization": "bearer k1"})
        assert r.status_code == 200


async def test_auth_rejects_in_openai_shape() -> None:
    async with client(APIKeyAuth(make_app(), ["k1"])) as c:
        r = await c.post("/v1/chat/completions", headers={"Authorization": "Bearer k2"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {
        "error": {
            "message": "invalid API key",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
async def test_auth_rejects_in_anthropic_shape(path: str) -> None:
    async with client(APIKeyAuth(make_app(), ["k1"])) as c:
        r = await c.post(path)
    assert r.status_code == 401
    body = r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "missing API key" in body["error"]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic k1"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer k1x"},
        {"x-api-key": "k"},
        {"x-api-key": ""},
    ],
)
async def test_auth_rejects_bad_headers(headers: dict[str, str]) -> None:
    async with client(APIKeyAuth(make_app(), ["k1"])) as c:
        r = await c.post("/v1/chat/completions", headers=headers)
    assert r.status_code == 401


async def test_auth_exemptions() -> None:
    async with client(APIKeyAuth(make_app(), ["k1"])) as c:
        assert (await c.head("/")).status_code == 200  # Claude Code's probe
        assert (await c.get("/")).status_code == 401  # only HEAD is exempt
        assert (await c.get("/health")).status_code == 200  # a load balancer's liveness probe
        assert (await c.post("/health")).status_code == 401  # by method and path
    async with client(APIKeyAuth(make_app(), ["k1"], exempt=[("get", "/")])) as c:
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/health")).status_code == 401
        assert (await c.head("/")).status_code == 401


async def test_auth_without_keys_passes_everything() -> None:
    auth = APIKeyAuth(make_app(), [])
    assert not auth.enabled
    async with client(auth) as c:
        assert (await c.post("/v1/chat/completions", content=b"x")).status_code == 200


def test_presented_key_prefers_bearer() -> None:
    assert presented_key([(b"x-api-key", b"a"), (b"authorization", b"Bearer b")]) == b"b"
    assert presented_key([(b"x-api-key", b" a ")]) == b"a"
    assert presented_key([(b"authorization", b"Token b")]) is None


def test_accepts_checks_every_key() -> None:
    auth = APIKeyAuth(make_app(), ["a", "b", "c"])
    assert [auth.accepts(k) for k in (b"a", b"b", b"c", b"d", None)] == [True, True, True, False, False]


# ------------------------------------------------------------------------------------------------ body size


async def test_body_under_and_at_limit_passes() -> None:
    async with client(BodySizeLimit(make_app(), 10)) as c:
        r = await c.post("/v1/chat/completions", content=b"x" * 10)
    assert r.status_code == 200 and r.json() == {"len": 10}


async def test_content_length_over_limit_rejected_up_front() -> None:
    calls = 0
    inner = make_app()

    async def counting(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal calls
        if scope["type"] == "http":
            calls += 1
        await inner(scope, receive, send)

    async with client(BodySizeLimit(counting, 10)) as c:
        r = await c.post("/v1/chat/completions", content=b"x" * 11)
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert r.json()["error"]["code"] == "request_too_large"
        assert "10 bytes" in r.json()["error"]["message"]
        r = await c.post("/v1/messages", content=b"x" * 11)
        assert r.status_code == 413
        assert r.json() == {
            "type": "error",
            "error": {"type": "request_too_large", "message": r.json()["error"]["message"]},
        }
    assert calls == 0


async def chunks(n: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"y" * size


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/swallow", "/v1/messages"])
async def test_streamed_body_without_length_is_counted(path: str) -> None:
    async with client(BodySizeLimit(make_app(), 100)) as c:
        ok = await c.post(path, content=chunks(4, 25))
        assert ok.status_code == 200
        r = await c.post(path, content=chunks(5, 25))  # chunked: no Content-Length
    assert r.status_code == 413
    body = r.json()
    if path == "/v1/messages":
        assert body["error"]["type"] == "request_too_large"
    else:
        assert body["error"]["code"] == "request_too_large"


async def test_body_limit_passes_lifespan_and_other_scopes() -> None:
    seen: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope["type"])

    await BodySizeLimit(app, 1)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    await APIKeyAuth(app, ["k"])({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan", "lifespan"]


def test_body_limit_rejects_bad_max() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BodySizeLimit(make_app(), 0)


def test_is_anthropic_path() -> None:
    assert is_anthropic_path("/v1/messages")
    assert is_anthropic_path("/v1/messages/")
    assert is_anthropic_path("/v1/messages/count_tokens")
    assert is_anthropic_path("/prefix/v1/messages")
    assert is_anthropic_path("/messages") and is_anthropic_path("/messages/count_tokens")
    assert not is_anthropic_path("/v1/chat/completions")
    assert not is_anthropic_path("/v1/messagesx")
