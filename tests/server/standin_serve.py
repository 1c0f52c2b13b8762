"""A real ``llm-runners serve`` (a subprocess, its own TMPDIR) whose ``claude_code`` provider is the real Claude Code
runner pointed at a stand-in script, which does what the prompt's first word says:

- ``slow``: four deltas 0.4 s apart, then a normal end (``one two three four``);
- ``hang``: a partial delta, then nothing, ignoring SIGTERM (only the group's SIGKILL ends it);
- ``flood``: 1 KB deltas without end, as fast as the pipe takes them.

Every process of the stand-in carries its path on the command line (``running(server.script)``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_serve_command import _Server

CLAUDE = r"""#!{python} -IS
import json, signal, sys, time
line = json.loads(sys.stdin.buffer.readline())
content = line["message"]["content"]
text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
sid = sys.argv[sys.argv.index("--session-id") + 1] if "--session-id" in sys.argv else "s"
def event(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
def delta(t):
    event({{"type": "stream_event", "session_id": sid,
           "event": {{"type": "content_block_delta", "delta": {{"type": "text_delta", "text": t}}}}}})
event({{"type": "system", "subtype": "init", "session_id": sid, "model": "stand-in"}})
if text.startswith("hang"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    delta("partial")
    time.sleep(300)
if text.startswith("flood"):
    while True:
        delta("f" * 1000)
for part in ("one ", "two ", "three ", "four"):
    delta(part)
    time.sleep(0.4)
event({{"type": "result", "subtype": "success", "is_error": False, "result": "one two three four",
       "session_id": sid, "usage": {{"input_tokens": 1, "output_tokens": 4}}}})
"""


class StandInServer(_Server):
    script: Path
    tmp: Path


@contextmanager
def stand_in_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: str = "", limits: str = ""
) -> Iterator[StandInServer]:
    """``settings``: top-level TOML lines; ``limits``: lines of ``[providers.claude_code]``."""
    script = tmp_path / "claude-stand-in"
    script.write_text(CLAUDE.format(python=sys.executable))
    script.chmod(0o755)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    config = tmp_path / "llm-runners.toml"
    config.write_text(
        f'default_provider = "claude_code"\n{settings}\n\n[providers.claude_code]\n{limits}\n\n'
        f'[providers.claude_code.options]\nbinary = "{script}"\nwarm = 0\nidle_timeout = 300.0\n'
        f'env = {{ ANTHROPIC_API_KEY = "k", HOME = "{home}" }}\n'
    )
    monkeypatch.setenv("TMPDIR", str(tmp))  # the server's temp root goes there (_Server's env copies ours)
    s = StandInServer(config)
    s.script, s.tmp = script, tmp
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)
