"""Live processes: a conversation keeps its CLI process across turns (DESIGN principle 9).

A CLI that reads one user turn per stdin line and marks the end of each turn on stdout (Claude Code with
``--input-format stream-json``: one ``result`` event per turn, every turn in one session, exit 0 when stdin closes;
clis.md section 3) need not be started again for the next turn of the same conversation. After a turn that
succeeded, the runner *parks* its process here under the CLI session id the session store remembers for the
conversation. When the conversation's next turn claims that session, the runner *takes* the process back and
writes only the new user message to its stdin: no spawn, no resume from disk. Measured on Claude Code 2.1.197
against the fake API (``benchmarks/warm.py``, medians of 5 conversations x 5 turns, a 2-core machine at load 11):
turns 2-5 take 115 ms on the live process against 2,390 ms for a cold ``--resume`` (0.05x); unloaded, a live turn
took 0.04-0.06 s and a cold one 0.5 s.

Which turn a live process may serve: exactly the turn a cold ``--resume`` of its session would run, started the
same way apart from the session argument. The runner gives each turn a *shape* (:func:`~.turn.shape_of` of the
spec the turn would have as a fresh session, so ``--resume S`` and ``--session-id S`` compare equal); a live process
serves a turn only when the shapes match. Another model, system prompt, tool setting or working directory closes
the live process and runs the turn cold from its session id, which is what happened before live processes existed.

Bounds. At most ``size`` live processes (``live_max``); parking one more closes the least recently used. One idle
for ``idle`` seconds (``live_idle``) is closed by a timer. A closed conversation loses nothing: its session file is
complete (the runner sets ``CLAUDE_CODE_EAGER_FLUSH``, so the CLI has written the turn before it prints
``result``), and its next turn resumes cold from the session id. The runner closes live processes too when its
provider's concurrency limit needs room (:meth:`shed`), so live and spare processes count against it.

Ownership. A parked process belongs to the pool; a taken one to the request that took it, which kills it when the
turn fails, is abandoned (client disconnect) or times out, and parks it again when the turn succeeds. So no
process outlives the request it serves unless the pool owns it, and ``aclose()`` kills every process the pool owns.
A process that died while parked (crash, OOM kill) is found dead when taken: the turn runs cold. A process that
dies after the new message was written fails that turn like any cold run that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import OrderedDict

from .. import process
from ..errors import LLMError
from .turn import Shape

__all__ = ["LivePool", "default_live_max"]

#: resident memory of one live Claude Code 2.1.197 process (node, parked between turns), measured here: 197 MiB
#: (VmRSS 201692 kB after two turns against the fake API). Default bounds are sized from this figure.
LIVE_PROCESS_RSS = 197 * 1024 * 1024
#: share of the memory available at start-up that live processes may use by default
MEMORY_SHARE = 0.25
#: the default bound, whatever the memory
LIVE_MAX_CAP = 16
#: seconds a closed live process gets to exit on its own after end of input (it takes ~0.05 s) before it is killed
CLOSE_GRACE = 2.0


def default_live_max(rss: int = LIVE_PROCESS_RSS, meminfo: str = "/proc/meminfo") -> int:
    """``live_max`` when the operator gives none: a quarter of the available memory divided by one process's RSS,
    between 1 and :data:`LIVE_MAX_CAP` (22 GB available here -> 16; 4 GB -> 5); 4 when memory cannot be read."""
    try:
        with open(meminfo, encoding="ascii") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 4
    return max(1, min(LIVE_MAX_CAP, int(available * MEMORY_SHARE // rss)))


@dataclasses.dataclass(eq=False)
class _Live:
    proc: process.Process
    shape: Shape
    expiry: asyncio.TimerHandle | None = None


class LivePool:
    """The live processes of one runner, by CLI session id (see the module docstring). ``len(pool)`` is how many."""

    def __init__(self, name: str, *, size: int, idle: float) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"{name}: live_max must be a whole number of processes >= 0, got {size!r}")
        if not idle > 0:
            raise ValueError(f"{name}: live_idle must be a number of seconds > 0, got {idle!r}")
        self.name = name
        self.size = size
        self.idle = idle
        self._live: OrderedDict[str, _Live] = OrderedDict()  # least recently used first
        self._killing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._live)

    def pids(self) -> dict[str, int]:
        """Session id -> pid of each live process, least recently used first (for health pages and tests)."""
        return {session: live.proc.pid for session, live in self._live.items()}

    async def take(self, session: str, shape: Shape | None, spec: process.ProcessSpec) -> process.Process | None:
        """The live process of ``session``, handed the turn's new message (``spec.stdin``) and limits; None when
        there is none, or it cannot serve this turn (another shape: closed) or it died (reaped)."""
        self._own_loop()
        live = self._live.pop(session, None)
        if live is None:
            return None
        self._cancel_expiry(live)
        proc = live.proc
        if live.shape != shape or proc.has_exited():
            await proc.kill()
            return None
        try:
            proc.spec.timeout = spec.timeout
            proc.spec.idle_timeout = spec.idle_timeout
            proc.reset_deadline(spec.timeout)
            proc.reset_output_count()
            await proc.send(spec.stdin or b"")
        except LLMError:  # it exited just now, before reading the message: a cold resume is still a clean answer
            await proc.kill()
            return None
        except BaseException:
            await proc.kill()
            raise
        return proc

    def park(self, session: str, shape: Shape, proc: process.Process) -> None:
        """Keep ``proc`` (its turn just succeeded) for the session's next turn; the least recently used one beyond
        ``size`` is closed."""
        self._own_loop()
        old = self._live.pop(session, None)
        if old is not None and old.proc is not proc:
            self._retire(old)
        if self.size == 0 or proc.has_exited():
            self._kill(proc)
            return
        proc.reset_deadline(None)  # waiting for the next turn is not running: the idle timer bounds it
        live = _Live(proc=proc, shape=shape)
        live.expiry = asyncio.get_running_loop().call_later(self.idle, self._expire, session, live)
        self._live[session] = live
        while len(self._live) > self.size:
            self.shed(1)

    def shed(self, count: int) -> int:
        """Close up to ``count`` live processes, least recently used first; how many were closed."""
        closed = 0
        while closed < count and self._live:
            _, live = self._live.popitem(last=False)
            self._retire(live)
            closed += 1
        return closed

    def _expire(self, session: str, live: _Live) -> None:
        if self._live.get(session) is live:
            del self._live[session]
            self._retire(live)

    def _cancel_expiry(self, live: _Live) -> None:
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None

    def _retire(self, live: _Live) -> None:
        self._cancel_expiry(live)
        self._kill(live.proc)

    def _kill(self, proc: process.Process) -> None:
        """End a parked process in the background: stdin closed (the CLI's own orderly exit, with its session
        file written), killed if it has not exited within :data:`CLOSE_GRACE` seconds."""
        if proc.has_exited():
            task = proc.kill_soon()  # reaps it and removes its directories
            if task is None:
                return
        else:
            task = asyncio.get_running_loop().create_task(_close(proc))
        self._killing.add(task)
        task.add_done_callback(self._killing.discard)

    def _own_loop(self) -> None:
        """Live processes belong to the event loop that started them: from a new loop the old ones are killed
        outright and forgotten (their conversations resume cold)."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            for live in self._live.values():
                live.proc.abandon()
            self._live.clear()
            self._killing.clear()
        self._loop = loop

    async def aclose(self) -> None:
        """Kill every live process; afterwards none remains. The pool stays usable."""
        self._own_loop()
        self.shed(len(self._live))
        if self._killing:
            await asyncio.shield(asyncio.gather(*self._killing, return_exceptions=True))


async def _close(proc: process.Process) -> None:
    try:
        await proc.close_stdin()
        with contextlib.suppress(TimeoutError, LLMError):
            async with asyncio.timeout(CLOSE_GRACE):
                await proc.wait()
    finally:
        await proc.kill()
