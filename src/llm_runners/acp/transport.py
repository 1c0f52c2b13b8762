"""The ACP SDK's message transport over a :class:`llm_runners.process.Process`.

The SDK can spawn an agent itself (``spawn_agent_process``); we never let it: the process layer starts the agent
(environment allow-list, isolated working directory, process-group kill) and this adapter hands the SDK the
process's stdin and stdout as a stream of JSON-RPC messages. The SDK's :class:`acp.connection.Connection` accepts
any object with ``send`` / ``receive`` / ``close`` in place of byte streams.

A transcript (``record``) is the ACP traffic in the fixture format of ``tests/fixtures/acp/``: one JSON line per
message, ``{"dir": "client->agent" | "agent->client", "t": <seconds since start>, "msg": {…}}``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import IO, Any

from .. import process
from ..runners.base import json_object

log = logging.getLogger(__name__)


class Transcript:
    """Appends every message to a JSON-lines file (``None``: records nothing)."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = path.open("a", encoding="utf-8") if path is not None else None
        self._start = time.monotonic()

    def add(self, direction: str, message: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = {"dir": direction, "t": round(time.monotonic() - self._start, 3), "msg": message}
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProcessTransport:
    """JSON-RPC messages over a running agent process: one JSON object per stdout line in, one per stdin line out.

    Lines that are not a JSON object (a banner, a stray log line) are logged and skipped, as the SDK's own stdio
    transport does. ``receive`` returns None at the end of stdout, which the SDK takes as the agent hanging up: its
    pending requests fail with ConnectionError."""

    def __init__(self, proc: process.Process, transcript: Transcript | None = None) -> None:
        self.proc = proc
        self.transcript = transcript or Transcript(None)
        self._lines = proc.lines()
        #: set when stdout ended or reading failed: the agent is gone
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        self.transcript.add("client->agent", message)
        await self.proc.send(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")

    async def receive(self) -> dict[str, Any] | None:
        try:
            async for line in self._lines:
                message = json_object(line)
                if message is None:
                    if line.strip():
                        log.debug(
                            "%s: skipped a stdout line that is no JSON-RPC message: %r", self.proc.name, line[:200]
                        )
                    continue
                self.transcript.add("agent->client", message)
                return message
        except Exception as exc:  # an output cap or a killed process: the agent is gone either way
            log.debug("%s: reading the agent's stdout failed: %r", self.proc.name, exc)
        self.closed = True
        return None

    async def close(self) -> None:
        self.closed = True
        await self.proc.close_stdin()
