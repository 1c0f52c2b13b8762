"""Logging for the server and the command line: one handler on stderr, text or JSON lines.

``configure(level, fmt)`` installs it on the root logger, so every logger of the package (``llm_runners.server``,
``llm_runners.runners.<provider>`` with the CLIs' retry notices and the stderr tails of failed runs, at warning)
and uvicorn's own (``uvicorn.error``) end up in the same stream, in the same format.

A line's structured fields travel in ``extra={"fields": {...}}``. The text format appends them as ``key=value``
(values with spaces quoted); the JSON format makes them keys of the line's object, next to ``time``, ``level``,
``logger`` and ``message``::

    2026-12-01T20:01:02.345Z INFO llm_runners.access request request_id=req_… endpoint=chat.completions …
    {"time": "2026-12-01T20:01:02.345Z", "level": "info", "logger": "llm_runners.access", "message": "request", …}

Every line goes through :func:`llm_runners.redact.redact` last: no API key, token or CLI credential is written.

stdlib only: the command line imports it before anything heavy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from typing import Any, Literal, TextIO

from .redact import redact

__all__ = ["FORMATS", "LEVELS", "BufferedHandler", "JSONFormatter", "TextFormatter", "configure"]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

LogFormat = Literal["text", "json"]


_second: list[Any] = [-1, ""]  # the last second formatted, and its text: one strftime per second, not per line


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    if seconds != _second[0]:
        _second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_second[1]}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


_plain = re.compile(r'[^\s"=]+').fullmatch


def _text_value(value: Any) -> str:
    """A field's value for the text format: numbers and booleans as JSON writes them, strings bare unless they
    hold a space, a quote or an ``=`` (then as a JSON string)."""
    kind = type(value)
    if kind is str:
        return value if _plain(value) else json.dumps(value, ensure_ascii=False)
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return repr(value)
    return _text_value(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger> <message> key=value …``, one line per record (tracebacks indented below).

    It formats every request's line, so the common field types (str, int, float, bool) are written inline."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields and isinstance(fields, dict):
            parts = [line]
            for key, value in fields.items():
                kind = type(value)
                if kind is str:
                    parts.append(
                        f"{key}={value}" if _plain(value) else f"{key}={json.dumps(value, ensure_ascii=False)}"
                    )
                elif kind is bool:
                    parts.append(f"{key}=true" if value else f"{key}=false")
                elif kind is int or kind is float:
                    parts.append(f"{key}={value!r}")
                elif value is not None:
                    parts.append(f"{key}={_text_value(value)}")
            line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, then the record's fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, ensure_ascii=False, default=str))


class BufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes info and debug lines in batches: at most :attr:`interval` seconds late, at once
    when :attr:`capacity` lines are waiting, and a warning or worse at once together with everything before it.

    Why: a server at thousands of requests per second writes one access line per request, and a write to stderr
    per line (a system call each: stderr is line-buffered) costs as much as the line's formatting. Batched, the
    lines cost one write per batch. A daemon thread flushes the batch every ``interval``; ``logging.shutdown``
    (at exit) flushes what is left.
    """

    def __init__(self, stream: TextIO, *, interval: float = 0.2, capacity: int = 256) -> None:
        super().__init__(stream)
        self.interval = interval
        self.capacity = capacity
        self._pending: list[str] = []
        self._stopping = threading.Event()
        self._flusher = threading.Thread(target=self._flush_regularly, name="llm-runners-log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        if record.levelno >= logging.WARNING or len(self._pending) >= self.capacity:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # set by Handler.__init__
            if self._pending:
                text = "\n".join(self._pending) + "\n"
                self._pending.clear()
                try:
                    self.stream.write(text)
                except Exception:  # a closed or broken stream: the lines are lost, the server goes on
                    return
            with contextlib.suppress(ValueError, OSError):  # the same, for a stream closed while nothing was pending
                super().flush()

    def _flush_regularly(self) -> None:
        while not self._stopping.wait(self.interval):
            if self._pending:
                self.flush()

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as ``fmt`` (``text`` or ``json``),
    replacing the root logger's handlers; returns the handler (a :class:`BufferedHandler`). Raises ``ValueError``
    for an unknown level or format."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (use one of {', '.join(LEVELS)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (use text or json)")
    # nothing here prints a record's thread or process, and filling them in is a share of every line's cost
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, BufferedHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's loggers carry their own handlers when uvicorn configured them; ours is the one place lines go
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    return handler
