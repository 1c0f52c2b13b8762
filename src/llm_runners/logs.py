"""Logging for the server and the command line: one handler on stderr, text or JSON lines.

``configure(level, fmt)`` installs it on the root logger, so every logger of the package (``llm_runners.server``,
``llm_runners.runners.<provider>`` with the CLIs' retry notices and the stderr tails of failed runs, at warning)
and uvicorn's own (``uvicorn.error``) end up in the same stream, in the same format.

A line's structured fields travel in ``extra={"fields": {...}}``. The text format appends them as ``key=value``
(values with spaces quoted); the JSON format makes them keys of the line's object, next to ``time``, ``level``,
``logger`` and ``message``::

    2026-12-01T20:01:02.345Z INFO llm_runners.access request request_id=req_… endpoint=chat.completions …
    {"time": "2026-12-01T20:01:02.345Z", "level": "info", "logger": "llm_runners.access", "message": "request", …}

stdlib only: the command line imports it before anything heavy.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

__all__ = ["FORMATS", "LEVELS", "JSONFormatter", "TextFormatter", "configure"]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

LogFormat = Literal["text", "json"]


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if not text or any(c in text for c in ' "=\n\r\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger> <message> key=value …``, one line per record (tracebacks indented below)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


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
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as ``fmt`` (``text`` or ``json``),
    replacing the root logger's handlers; returns the handler. Raises ``ValueError`` for an unknown level or
    format."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (use one of {', '.join(LEVELS)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (use text or json)")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's loggers carry their own handlers when uvicorn configured them; ours is the one place lines go
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    return handler
