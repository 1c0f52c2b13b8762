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

Several replicas (``state = "redis://…"``): the server gives the runners a store with a ``shared`` state
(:mod:`llm_runners.state`), and :meth:`SessionStore.aclaim` / :meth:`SessionStore.remember` go through it, so the
claim is atomic across replicas (``GETDEL``: one winner). Each entry is keyed by the runner's **scope** too
(:meth:`~llm_runners.runners.base.CLIRunner.session_scope`: host, CLI home and working directory, where the CLI
keeps its sessions): a replica that can reach the CLI's session files (same host, same ``HOME``, a configured
``cwd``) resumes a conversation another replica started; one that cannot finds no entry and replays the history.
Never an error, and never another caller's session (the conversation key and the history are in the key). The
shared write is started by :meth:`~SessionStore.remember` and awaited with :meth:`~SessionStore.flush` before the
turn's final event goes out, so the caller's next turn, on whichever replica, finds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .prompt import last_assistant_index
from .state import State
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
    """Thread-safe, bounded, in this process's memory; or, given ``shared``, on the shared state (see the module
    docstring). One store may serve many providers (the provider name is in the key)."""

    def __init__(self, *, max_entries: int = 10_000, ttl: float = 24 * 3600.0, shared: State | None = None) -> None:
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.ttl = ttl
        self.shared = shared.scoped("sessions") if shared is not None else None
        self._writes: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, provider: str, conversation: str | None, messages: Sequence[Message], scope: str) -> str:
        """The entry's key; the scope counts only on a shared state (in one process a session the CLI cannot
        find is replayed anyway, see the module docstring)."""
        key = history_key(provider, conversation, messages)
        if self.shared is None or not scope:
            return key
        return f"{key}:{hashlib.sha256(scope.encode()).hexdigest()[:16]}"

    def claim(self, provider: str, conversation: str | None, messages: Sequence[Message], *, scope: str = "") -> Claim:
        """Find (and take) the session that continues ``messages`` in this process's memory. Without one,
        everything is new."""
        last = last_assistant_index(messages)
        if last < 0:
            return Claim(None, 0)
        key = self._key(provider, conversation, messages[: last + 1], scope)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None or now - entry[1] > self.ttl:
            return Claim(None, 0)
        return Claim(entry[0], last + 1)

    async def aclaim(
        self, provider: str, conversation: str | None, messages: Sequence[Message], *, scope: str = ""
    ) -> Claim:
        """:meth:`claim`, through the shared state when there is one (one winner across every replica)."""
        if self.shared is None:
            return self.claim(provider, conversation, messages, scope=scope)
        last = last_assistant_index(messages)
        if last < 0:
            return Claim(None, 0)
        session_id = await self.shared.pop(self._key(provider, conversation, messages[: last + 1], scope))
        return Claim(session_id, last + 1) if session_id else Claim(None, 0)

    def remember(
        self,
        provider: str,
        conversation: str | None,
        messages: Sequence[Message],
        reply: Message,
        session_id: str,
        *,
        scope: str = "",
    ) -> None:
        """Store the session that now holds ``messages + [reply]`` (with a shared state: start writing it there;
        :meth:`flush` waits for the write)."""
        key = self._key(provider, conversation, [*messages, reply], scope)
        if self.shared is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # no event loop: a synchronous caller keeps it in this process
            else:
                task = loop.create_task(self.shared.set(key, session_id, ttl=self.ttl))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)
                return
        with self._lock:
            self._entries[key] = (session_id, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    async def flush(self) -> None:
        """Wait for the shared writes started so far (none without a shared state)."""
        if self._writes:
            await asyncio.shield(asyncio.gather(*self._writes, return_exceptions=True))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: the store runners use unless given their own
DEFAULT_STORE = SessionStore()
