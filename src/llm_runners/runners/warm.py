"""Warm spare processes for CLI runners: opt-in with ``CLIRunner(warm=N)`` (DESIGN principle 9).

Most of a short CLI run is the CLI starting up (Claude Code: ~0.35 s of a ~0.4 s run, measured), and the three
dialects put the prompt only on stdin. So a runner can start the CLI ahead of need with everything but the prompt,
and let it wait on an open stdin: a *spare*. A request for a FRESH conversation whose process would be started
exactly like a spare takes it, writes the prompt, closes stdin and reads the answer as a cold run would.

Matching ("would be started exactly like"): the request's turn is built as usual, and its process spec compared
with the spare's after replacing two per-run names in argv and env by placeholders: the run's assets directory (a
``--system-prompt-file`` lives there) and its fresh session id. The contents of the asset files that argv or env
name are compared too (a different system prompt in a file of the same name is a different process). A prompt that
names its own asset files (an image path on stdin) is never served warm. On a match the turn adopts the spare's
session id and the request's own, unused assets are removed. Anything else (another model or system prompt, tools,
images in argv, a spare that died or expired) runs cold, and a resumed turn always runs cold: what ``--resume``
names is known only with the request.

Replacement: after a fresh-conversation run that succeeded, warm or cold, a spare for that request's shape is
started in the background, built from the same turn with an empty prompt, no images, a new session id and its own
assets directory. It is started only when that shape can be served warm at all (the request's and the spare's specs
match), and not after a failed run (a CLI failing on auth would fail in every spare too). At most ``N`` spares and
pending starts exist; a new shape evicts the oldest spare of another shape. A spare is not started while its own
request runs, so the two never compete for the CPU that request needs.

Ownership. Spares are processes waiting for a request: they belong to the runner, not to any request, and the
runner's pool owns each one until it hands it to a request, which then owns it like a process it started itself
(killed when the request ends, fails or is abandoned). That is how "no child process outlives its request" still
holds: no spare ever served or outlived a request; a spare only outlives requests it never saw, as the runner does.
The pool ends every spare it owns: ``aclose()`` kills them all and waits for pending starts (each kills what it
started once it sees the pool closed); a spare idle for ``warm_idle`` seconds is killed by a timer; a spare whose
process exited is discarded when next looked at; and a runner dropped without ``aclose()`` leaves its processes to
the process layer's ``__del__`` (SIGKILL of the group) and its directories to the runner's owned temp dir. After
``aclose()`` no spare process and no spare directory remains.

Not every CLI can wait: Gemini CLI stops waiting for piped stdin after 0.5 s and exits 42 ("No input provided
via stdin", measured on 0.61.0), so GeminiRunner does not take the ``warm`` option (Claude Code and Codex wait as
long as it takes). Each spare is a whole idle CLI process (memory, no CPU): spares count against a provider's
``max_concurrency`` together with running and live processes (:meth:`CLIRunner.limit_processes`), and a turn that
needs room closes them after the live ones. A spare of a CLI with ``live_turns`` keeps its stdin open when taken:
after its first turn it stays live for the conversation (:mod:`llm_runners.runners.live`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

from .. import process
from ..errors import LLMError
from .turn import Shape, Turn, TurnRunner, shape_of

__all__ = ["WarmPool"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class _Spare:
    proc: process.Process
    key: Shape
    session: str | None
    expiry: asyncio.TimerHandle | None = None


class WarmPool:
    """The spare processes of one runner (see the module docstring). ``len(pool)`` is the number of spares."""

    def __init__(self, runner: TurnRunner, *, size: int, idle: float) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"{runner.name}: warm must be a whole number of spare processes >= 0, got {size!r}")
        if not idle > 0:
            raise ValueError(f"{runner.name}: warm_idle must be a number of seconds > 0, got {idle!r}")
        self.runner = runner
        self.size = size
        self.idle = idle
        self._spares: list[_Spare] = []  # oldest first
        self._starting: set[asyncio.Task[None]] = set()
        self._killing: set[asyncio.Task[None]] = set()
        self._generation = 0  # bumped by aclose(): a start begun before it kills what it started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._root: Path | None = None

    def __len__(self) -> int:
        return len(self._spares)

    @property
    def pending(self) -> int:
        """Spare starts under way."""
        return len(self._starting)

    def pids(self) -> list[int]:
        """Process ids of the spares (for health pages and tests)."""
        return [spare.proc.pid for spare in self._spares]

    # ---------------------------------------------------------------------------------------------- matching
    async def take(
        self, key: Shape, spec: process.ProcessSpec, turn: Turn, *, keep_stdin: bool = False
    ) -> process.Process | None:
        """A spare started like ``spec``, handed the prompt (stdin written, then closed unless ``keep_stdin``: a
        CLI that reads a turn per line gets end of input after its turn, or stays live for the next one) and this
        request's limits; None when there is none. The turn adopts the spare's session id; its own assets are
        removed unused."""
        self._own_loop()
        for spare in [s for s in self._spares if s.key == key]:
            self._forget(spare)
            proc = spare.proc
            if proc.has_exited():
                await proc.kill()  # it died waiting: reaps it and removes its directory
                continue
            try:
                proc.spec.timeout = spec.timeout
                proc.spec.idle_timeout = spec.idle_timeout
                proc.reset_deadline(spec.timeout)  # the request's full budget, from now
                await proc.send(spec.stdin or b"")
                if not keep_stdin:
                    await proc.close_stdin()
            except LLMError:  # it exited just now: nothing was read yet, so a cold run is still a clean answer
                await proc.kill()
                continue
            except BaseException:
                await proc.kill()
                raise
            turn.session = spare.session
            process.release_paths([turn.assets])
            return proc
        return None

    # ---------------------------------------------------------------------------------------------- refilling
    def replenish(self, turn: Turn, key: Shape) -> None:
        """Start, in the background, a spare for the shape of ``turn`` (a fresh conversation that just succeeded)."""
        self._own_loop()
        for dead in [s for s in self._spares if s.proc.has_exited()]:
            self._retire(dead)
        evict = None
        if len(self._spares) + len(self._starting) >= self.size:
            evict = next((s for s in self._spares if s.key != key), None)
            if evict is None:
                return  # every slot already holds (or is starting) a spare of this shape
        try:
            spec, session = self._spare_spec(turn, key)
        except Exception as exc:  # the request succeeded: a spare that cannot be prepared only costs its speed-up
            log.warning("%s: no warm spare: %s", self.runner.name, exc)
            return
        if spec is None:
            return  # this shape cannot be served warm: keep what the pool holds
        if evict is not None:
            self._retire(evict)
        task = asyncio.get_running_loop().create_task(self._start(spec, key, session, self._generation))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    def _spare_spec(self, turn: Turn, key: Shape) -> tuple[process.ProcessSpec | None, str | None]:
        """The spare's process spec (None when this shape cannot be served warm) and its session id."""
        assets = Path(tempfile.mkdtemp(prefix="spare-", dir=self._spare_root()))
        try:
            shell = dataclasses.replace(
                turn, prompt="", images=[], image_parts=[], sent=[], session=str(uuid.uuid4()), assets=assets
            )
            spec = self.runner.process_spec(shell, self.runner.invocation(shell), [assets])
            if shape_of(spec, shell) != key:  # the request's shape puts more than the prompt in argv (images)
                shutil.rmtree(assets, ignore_errors=True)
                return None, None
        except BaseException:
            shutil.rmtree(assets, ignore_errors=True)
            raise
        spec = dataclasses.replace(spec, stdin=None, keep_stdin_open=True, timeout=None, idle_timeout=None)
        return spec, shell.session

    async def _start(self, spec: process.ProcessSpec, key: Shape, session: str | None, generation: int) -> None:
        if generation != self._generation:
            _remove(spec.cleanup)
            return
        try:
            proc = await process.start(spec)  # owns spec.cleanup from here on, even when it fails
        except Exception as exc:  # a spare that cannot start only costs its speed-up; the next cold run reports why
            log.warning("%s: warm spare did not start: %s", self.runner.name, exc)
            return
        if generation != self._generation:  # aclose() came while it started
            await proc.kill()
            return
        spare = _Spare(proc=proc, key=key, session=session)
        spare.expiry = asyncio.get_running_loop().call_later(self.idle, self._retire, spare)
        self._spares.append(spare)

    def _spare_root(self) -> Path:
        """One runner-owned directory for the spares' assets: gone with the runner even if a spare never ends."""
        if self._root is None or not self._root.is_dir():
            self._root = self.runner.owned_tempdir("warm-")
        return self._root

    # ---------------------------------------------------------------------------------------------- ending
    def shed(self, count: int) -> int:
        """Close up to ``count`` spares, oldest first (the runner needs room under its process limit)."""
        closed = 0
        while closed < count and self._spares:
            self._retire(self._spares[0])
            closed += 1
        return closed

    def _forget(self, spare: _Spare) -> None:
        if spare in self._spares:
            self._spares.remove(spare)
        if spare.expiry is not None:
            spare.expiry.cancel()
            spare.expiry = None

    def _retire(self, spare: _Spare) -> None:
        """Kill a spare in the background (idle expiry, eviction, a dead one): the pool keeps the task."""
        self._forget(spare)
        task = asyncio.get_running_loop().create_task(spare.proc.kill())
        self._killing.add(task)
        task.add_done_callback(self._killing.discard)

    def _own_loop(self) -> None:
        """Spares are tied to the event loop that started them. A runner used from a new loop (a second
        ``asyncio.run``) cannot await the old ones: their groups are killed outright and forgotten."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            for spare in self._spares:
                if spare.proc.pid > 0:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(spare.proc.pid, signal.SIGKILL)
                _remove(spare.proc.spec.cleanup)
            self._spares.clear()
            self._starting.clear()
            self._killing.clear()
            self._generation += 1
        self._loop = loop

    async def aclose(self) -> None:
        """Kill every spare and end every pending start; afterwards no spare process or directory remains. The
        pool stays usable: a later request refills it."""
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self._own_loop()  # spares of another loop: killed outright
        self._generation += 1
        while self._spares:
            self._retire(self._spares[0])
        pending = [*self._starting, *self._killing]
        if pending:
            # not cancelled: a start interrupted inside the spawn could leave a child nobody knows; it finishes
            # in milliseconds and then kills what it started
            await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))
        self._root = None  # removed with the runner's other owned directories


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
