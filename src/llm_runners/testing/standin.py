"""Stand-in CLIs for tests and benchmarks: the event lines of the real dialects, for scripts that imitate a CLI.

:data:`DIALECT_EVENTS` is Python source that a stand-in script's template includes (``{dialect_events}``, filled in
with ``str.format``): it defines ``emit(line)``, ``event(obj)``, ``start()``, ``delta(text, n=0)`` and
``end(text)`` for the dialect the script's global ``DIALECT`` names (``claude_code``: Claude Code's stream-json;
``codex``: Codex's ``exec --json``; anything else: Gemini's stream-json), writing to the script's global ``out``
(binary stdout) in the session ``sid``. Used by tests/runners/test_robustness.py and benchmarks/soak.py.
"""

from __future__ import annotations

__all__ = ["DIALECT_EVENTS"]

DIALECT_EVENTS = r"""
def emit(line):
    out.write(line + b"\n")
    out.flush()


def event(obj):
    emit(json.dumps(obj).encode())


def start():
    if DIALECT == "claude_code":
        event({"type": "system", "subtype": "init", "session_id": sid, "model": "stand-in"})
        event({"type": "stream_event", "session_id": sid,
               "event": {"type": "message_start", "message": {"id": "msg_1", "model": "stand-in"}}})
    elif DIALECT == "codex":
        event({"type": "thread.started", "thread_id": sid})
        event({"type": "turn.started"})
    else:
        event({"type": "init", "session_id": sid, "model": "stand-in"})


def delta(text, n=0):
    if DIALECT == "claude_code":
        event({"type": "stream_event", "session_id": sid,
               "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}}})
    elif DIALECT == "codex":
        event({"type": "item.completed", "item": {"id": "item_%d" % n, "type": "agent_message", "text": text}})
    else:
        event({"type": "message", "role": "assistant", "content": text, "delta": True})


def end(text):
    if DIALECT == "claude_code":
        event({"type": "assistant", "session_id": sid,
               "message": {"id": "msg_1", "model": "stand-in", "content": [{"type": "text", "text": text}]}})
        event({"type": "result", "subtype": "success", "is_error": False, "result": text, "session_id": sid,
               "usage": {"input_tokens": 3, "output_tokens": 2}})
    elif DIALECT == "codex":
        event({"type": "turn.completed", "usage": {"input_tokens": 3, "output_tokens": 2}})
    else:
        event({"type": "result", "status": "success", "stats": {"input_tokens": 3, "output_tokens": 2}})
"""
