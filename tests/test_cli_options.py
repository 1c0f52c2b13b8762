"""The command line's options in every position the README shows, and the log configuration it installs."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from llm_runners import logs
from llm_runners.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "a.toml", "serve"],
        ["serve", "--config", "a.toml"],
        ["chat", "--config", "a.toml", "hi"],
        ["--config", "a.toml", "chat", "hi"],
        ["providers", "--config", "a.toml"],
        ["--config", "a.toml", "providers"],
    ],
)
def test_config_before_or_after_the_subcommand(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).config == "a.toml"


def test_log_options_on_the_subcommand_and_before_it() -> None:
    args = build_parser().parse_args(["serve", "--log-level", "DEBUG", "--log-format", "json"])
    assert (args.log_level, args.log_format) == ("debug", "json")
    args = build_parser().parse_args(["--log-format", "json", "serve"])
    assert args.log_format == "json" and args.log_level is None
    args = build_parser().parse_args(["serve"])
    assert args.log_format == "text"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.usefixtures("restore_logging")
def test_runner_warnings_reach_the_configured_handler_and_info_is_filtered_at_warning() -> None:
    stream = io.StringIO()
    handler = logs.configure("warning", "json", stream=stream)
    logging.getLogger("llm_runners.access").info("request")
    logging.getLogger("llm_runners.runners.claude_code").warning(
        "retrying", extra={"fields": {"attempt": 2, "status": 529}}
    )
    handler.close()
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["logger"] == "llm_runners.runners.claude_code" and line["level"] == "warning"
    assert line["message"] == "retrying" and line["attempt"] == 2 and line["status"] == 529


@pytest.mark.usefixtures("restore_logging")
def test_text_format_quotes_values_with_spaces() -> None:
    stream = io.StringIO()
    handler = logs.configure("info", "text", stream=stream)
    logging.getLogger("x").info("request", extra={"fields": {"error": 'no "answer" here', "ok": True, "n": None}})
    handler.flush()
    line = stream.getvalue().strip()
    assert line.endswith('INFO x request error="no \\"answer\\" here" ok=true')


def test_unknown_level_or_format() -> None:
    with pytest.raises(ValueError, match="log level"):
        logs.configure("loud", "text")
    with pytest.raises(ValueError, match="log format"):
        logs.configure("info", "xml")


@pytest.mark.usefixtures("restore_logging")
def test_info_lines_are_batched_but_never_lost_and_a_warning_goes_out_at_once() -> None:
    stream = io.StringIO()
    handler = logs.BufferedHandler(stream, interval=60, capacity=3)
    handler.setFormatter(logs.TextFormatter())
    log = logging.getLogger("batched")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("one")
    log.info("two")
    assert stream.getvalue() == ""  # waiting for the batch
    log.warning("three")  # a warning takes what waits with it
    assert [line.split()[-1] for line in stream.getvalue().splitlines()] == ["one", "two", "three"]
    for word in ("four", "five", "six"):
        log.info(word)
    assert stream.getvalue().splitlines()[-1].endswith("six")  # capacity reached
    log.info("seven")
    handler.close()  # what logging.shutdown does at exit
    assert stream.getvalue().splitlines()[-1].endswith("seven")
    log.removeHandler(handler)


@pytest.mark.usefixtures("restore_logging")
def test_the_flusher_thread_writes_a_lone_line_within_its_interval() -> None:
    stream = io.StringIO()
    handler = logs.BufferedHandler(stream, interval=0.05)
    handler.setFormatter(logs.TextFormatter())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "lonely", (), None)
    handler.handle(record)
    deadline = time.monotonic() + 10
    while "lonely" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "lonely" in stream.getvalue()
    handler.close()
