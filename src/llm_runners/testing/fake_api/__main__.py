"""The fake model API as a command: test a client offline, with no Python of your own.

::

    python -m llm_runners.testing.fake_api [--host H] [--port N] [--reply TEXT] [--tool-call NAME:JSON ...]
                                           [--error 401|403|404|429|500|529|context] [--delay S]
                                           [--chunk-words N] [--log FILE]

Every main request (a conversation turn, in any of the four APIs) gets the same answer: ``--reply`` (default
``pong from fake``) streamed in chunks of ``--chunk-words`` words, then the ``--tool-call`` s, or the API's own error
``--error``, after ``--delay`` seconds. ``--log FILE`` appends one JSON line per answered request (time, method,
path, api, kind, model, stream, status). Prints ``fake model API listening on http://H:N`` once the port is bound,
so a script can pass ``--port 0`` and read the port back; stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
import time
from typing import Any, TextIO

from .recording import RecordedRequest
from .script import DEFAULT_TEXT, ERROR_KINDS, FakeToolCall, Reply
from .server import FakeModelAPI


def _tool_call(value: str) -> FakeToolCall:
    name, sep, arguments = value.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f'expected NAME:JSON, e.g. get_weather:\'{{"city": "Paris"}}\', got {value!r}')
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{name}: the arguments are not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"{name}: the arguments must be a JSON object, got {arguments!r}")
    return FakeToolCall(name, parsed)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {number}")
    return number


def chunks_of(text: str, words: int) -> list[str]:
    """``text`` in chunks of ``words`` words, each keeping its leading whitespace (they join back to ``text``)."""
    pieces = re.findall(r"\s*\S+", text)
    if not pieces:
        return [text] if text else []
    pieces[-1] += text[sum(map(len, pieces)) :]
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]


def build_reply(args: argparse.Namespace) -> Reply:
    text = DEFAULT_TEXT if args.reply is None else args.reply
    if args.error is not None:
        return Reply(error=args.error, delay=args.delay)
    chunks = chunks_of(text, args.chunk_words) if args.chunk_words else None
    return Reply(text=text, chunks=chunks, tool_calls=args.tool_call, delay=args.delay)


def _logger(out: TextIO) -> Any:
    lock = threading.Lock()

    def log(record: RecordedRequest) -> None:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": record.method,
            "path": record.path,
            "api": record.api,
            "kind": record.kind,
            "model": record.model,
            "stream": record.stream,
            "status": record.status,
        }
        with lock:
            out.write(json.dumps(line) + "\n")
            out.flush()

    return log


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm_runners.testing.fake_api",
        description="A fake model API (Anthropic, OpenAI Chat + Responses, Gemini) on one port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0 picks a free port (default 8089)")
    parser.add_argument("--reply", default=None, help=f"the answer's text (default {DEFAULT_TEXT!r})")
    parser.add_argument(
        "--tool-call",
        type=_tool_call,
        action="append",
        default=[],
        metavar="NAME:JSON",
        help='a tool call the model makes after its text (repeat for several), e.g. get_weather:\'{"city":"Paris"}\'',
    )
    parser.add_argument("--error", choices=ERROR_KINDS, default=None, help="answer every main request with this error")
    parser.add_argument("--delay", type=_seconds, default=0.0, help="seconds before the first byte of each answer")
    parser.add_argument(
        "--chunk-words", type=_positive_int, default=None, metavar="N", help="stream the text N words per chunk"
    )
    parser.add_argument("--log", default=None, metavar="FILE", help="append one JSON line per answered request")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    reply = build_reply(args)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    api = FakeModelAPI(host=args.host, port=args.port, default_reply=reply)
    log_file = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115  # open while serving
    try:
        if log_file is not None:
            api.on_answered = _logger(log_file)
        with api:
            print(f"fake model API listening on {api.url}", flush=True)
            stop.wait()
    finally:
        if log_file is not None:
            log_file.close()


if __name__ == "__main__":
    main()
