"""The parser of a CLI whose headless mode prints only the answer, as plain text (Kiro's ``chat
--no-interactive``, Warp's ``oz agent run --output-format text``): each stdout line is answer text as it comes,
terminal colour codes removed; the exit code and stderr decide success (classified by
:func:`llm_runners.process.classify_exit`). There are no usage figures and no session id in such output."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .. import process
from ..errors import UpstreamError
from ..types import Done, StreamEvent, TextDelta

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def without_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class PlainTextParser:
    """stdout lines -> text; ``prefix`` is a marker the CLI prints before its answer (removed once, if there)."""

    def __init__(self, *, provider: str, model: str | None, prefix: str = "") -> None:
        self.provider = provider
        self.model = model
        self.prefix = prefix
        self.session_id: str | None = None
        self._lines = 0
        self._text = False

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        text = without_ansi(line.decode("utf-8", "replace")).rstrip("\r")
        if self._lines == 0:
            if not text.strip():
                return ()  # blank lines before the answer
            if self.prefix and text.startswith(self.prefix):
                text = text[len(self.prefix) :]
        self._lines += 1
        self._text = self._text or bool(text.strip())
        return (TextDelta(("\n" if self._lines > 1 else "") + text),)

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if returncode != 0:
            raise process.classify_exit(returncode, without_ansi(stderr), provider=self.provider)
        if not self._text:
            raise UpstreamError(
                f"{self.provider} exited 0 without an answer", provider=self.provider, detail=stderr[-4000:] or None
            )
        return (Done(finish_reason="stop", model=self.model),)
