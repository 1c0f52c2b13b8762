"""A deliberately small HTTP/1.1 server layer on asyncio streams.

Why not Starlette + uvicorn: the fake must stall a response until the client disconnects, stop in milliseconds
with such stalls open, and add as little overhead as possible to benchmarks. Owning the connection loop makes all
three direct: a hang is a read until EOF, shutdown cancels the connection tasks, and a reply is one write.
It understands what the SDKs and CLIs send: keep-alive, ``Content-Length`` or chunked bodies, ``Expect:
100-continue`` and gzip/deflate request bodies; responses are sized JSON or chunked event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_HEADER_BYTES = 1 << 20
MAX_BODY_BYTES = 64 << 20

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    529: "Overloaded",
}


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> HttpRequest | None:
    """Read one request; ``None`` on a clean end of the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest(400, "incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(413, "request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(400, f"malformed request line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest(400, f"malformed header line {line!r}")
            headers[name.strip().lower()] = value.strip()
    url = urlsplit(target)
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _read_body(reader, headers)
    return HttpRequest(method.upper(), url.path or "/", dict(parse_qsl(url.query)), headers, body, keep_alive)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        size_total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            size_total += size
            if size_total > MAX_BODY_BYTES:
                raise BadRequest(413, "request body too large")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, "request body too large")
        body = await reader.readexactly(length) if length else b""
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        try:
            return zlib.decompress(body, 47)  # 47: gzip or zlib header, auto-detected
        except zlib.error as exc:
            raise BadRequest(400, f"bad {encoding} body: {exc}") from None
    if encoding not in ("identity", ""):
        raise BadRequest(415, f"unsupported request Content-Encoding {encoding!r}")
    return body


class Responder:
    """Writes one response on a connection: either :meth:`send` (sized) or :meth:`start_stream` + :meth:`write` +
    :meth:`end` (chunked). A ``HEAD`` request gets the head only."""

    def __init__(
        self, writer: asyncio.StreamWriter, request: HttpRequest, extra_headers: dict[str, str] | None = None
    ) -> None:
        self._writer = writer
        #: added to every response's head (e.g. the rate-limit headers of a subscription)
        self.extra_headers = extra_headers or {}
        self._head_only = request.method == "HEAD"
        self.keep_alive = request.keep_alive
        self.status = 0
        #: told the status as the head is written, before the client can see it
        self.on_status: Callable[[int], None] | None = None

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        self.status = status
        if self.on_status is not None:
            self.on_status(status)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in {**headers, **self.extra_headers}.items()]
        lines.append("connection: keep-alive" if self.keep_alive else "connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        all_headers = {"content-type": content_type, "content-length": str(len(body)), **(headers or {})}
        self._writer.write(self._head(status, all_headers) + (b"" if self._head_only else body))
        await self._writer.drain()

    async def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        await self.send(status, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)

    async def start_stream(self, content_type: str = "text/event-stream") -> None:
        headers = {"content-type": content_type, "cache-control": "no-cache", "transfer-encoding": "chunked"}
        self._writer.write(self._head(200, headers))

    async def write(self, data: bytes, flush: bool = False) -> None:
        if data:
            self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        if flush:
            await self._writer.drain()

    async def end(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()


async def wait_for_eof(reader: asyncio.StreamReader) -> None:
    """Return when the client closes its side or resets the connection (whatever it sends meanwhile is discarded).
    OpenCode and Kilo (Bun) abort a request with a reset, not a FIN: that is the client going away too."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
