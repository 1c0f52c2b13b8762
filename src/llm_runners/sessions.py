"""Session continuity: which CLI session continues which conversation.

Chat clients resend the whole history every turn. Replaying it into a CLI costs tokens and loses the CLI's own
state, so after each turn we remember ``hash(provider, conversation key, history + reply) -> CLI session id``.
When a request arrives whose history up to its last assistant message has such a hash, the CLI session is resumed
and only the messages after that assistant message are sent.

Rules:
- A session belongs to one conversation. The conversation key (``ChatRequest.conversation``) is part of the hash,
  so two conversations never share a session, even with identical text.
- An entry is *claimed* (removed) when a request resumes it. Two callers that send the same history without a
  conversation key therefore never drive one CLI session at once; the second one replays the history into a fresh
  session. A successful turn stores the new, longer history under the session id.
- Entries expire (``ttl``) and the store is bounded (least recently stored dropped first). An expired or unknown
  session falls back to replaying the history, and so does a CLI that says it no longer knows the session.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .prompt import last_assistant_index
from .types import ImagePart, Message, TextPart


def _canonical(message: Message) -> list[object]:
    parts: list[object] = []
    for p in message.content:
        if isinstance(p, TextPart):
            parts.append(["t", p.text.strip()])
        elif isinstance(p, ImagePart):
            digest = hashlib.sha256(p.data).hexdigest() if p.data is not None else p.url
            parts.append(["i", digest])
    calls = [[c.name, _compact_json(c.arguments)] for c in message.tool_calls]
    return [message.role, parts, calls, message.tool_call_id]


def _compact_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text


def history_key(provider: str, conversation: str | None, messages: Sequence[Message]) -> str:
    """A stable digest of a conversation's history. Assistant text is compared stripped, tool-call arguments as
    canonical JSON, so re-serialisation by a client does not break continuity."""
    payload = json.dumps([provider, conversation, [_canonical(m) for m in messages]], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a lookup: the session to resume (or None) and where the new messages start."""

    session_id: str | None
    first_new: int


class SessionStore:
    """In-memory, thread-safe, bounded. One store may serve many providers (the provider name is in the key)."""

    def __init__(self, *, max_entries: int = 10_000, ttl: float = 24 * 3600.0) -> None:
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.ttl = ttl

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, provider: str, conversation: str | None, messages: Sequence[Message]) -> Claim:
        """Find (and take) the session that continues ``messages``. Without one, everything is new."""
        last = last_assistant_index(messages)
        if last < 0:
            return Claim(None, 0)
        key = history_key(provider, conversation, messages[: last + 1])
        now = time.monotonic()
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None or now - entry[1] > self.ttl:
            return Claim(None, 0)
        return Claim(entry[0], last + 1)

    def remember(
        self, provider: str, conversation: str | None, messages: Sequence[Message], reply: Message, session_id: str
    ) -> None:
        """Store the session that now holds ``messages + [reply]``."""
        key = history_key(provider, conversation, [*messages, reply])
        with self._lock:
            self._entries[key] = (session_id, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: the store runners use unless given their own
DEFAULT_STORE = SessionStore()
