"""What one run of a CLI is (:class:`Turn`, :class:`Invocation`), and its *shape*: what a process already started
must equal to serve another turn.

This module is the common ground of the process lifecycles of :mod:`llm_runners.runners`: the base (one-shot runs),
:mod:`~llm_runners.runners.warm` (spares started ahead of need) and :mod:`~llm_runners.runners.live` (a process kept
per conversation) each import it, and none of them imports another.

The shape of a turn's process is its spec with two per-run names replaced by placeholders: the run's assets
directory (a ``--system-prompt-file`` lives there) and its session id; the contents of the asset files that argv or
env name count too (a different system prompt in a file of the same name is a different process). A prompt that
names its own asset files (an image path on stdin) has no shape: no process started for another turn can serve it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .. import process
from ..types import ChatRequest, ImagePart, Message

__all__ = ["Invocation", "Shape", "Turn", "TurnRunner", "shape_of"]


@dataclass
class Turn:
    """What one run of the CLI must do."""

    request: ChatRequest
    #: the text to send now: the whole rendered transcript when replaying, or only the new messages when resuming
    prompt: str
    #: the joined system messages, or None; each dialect delivers it its CLI's best way
    system: str | None
    #: request.model, else the runner's configured model, else None (the CLI's own default)
    model: str | None
    #: a CLI session id to resume, or None for a fresh session
    resume: str | None
    #: a fresh session id the dialect may impose on the CLI when ``resume`` is None
    session: str | None
    #: this turn's images as files (removed when the process ends), in the prompt's placeholder order
    images: list[Path]
    #: the same images as data, for CLIs that take them inline
    image_parts: list[ImagePart]
    #: the isolated working directory the CLI runs in
    workdir: Path
    #: per-run scratch directory (images, system-prompt files); removed when the process ends
    assets: Path
    #: the messages rendered into ``prompt``
    sent: list[Message] = field(default_factory=list)

    def tempfile(self, name: str, data: bytes | str) -> Path:
        """Write a per-run file (e.g. a system-prompt file) that is removed when the process ends."""
        path = self.assets / name
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        return path


@dataclass
class Invocation:
    argv: list[str]
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: True when the dialect already put the operator's ``extra_args`` where its CLI needs them; otherwise the base
    #: appends them to ``argv``
    extra_args_placed: bool = False


class TurnRunner(Protocol):
    """What a process lifecycle needs of a runner: its name, how a turn's process is started, a directory it owns."""

    @property
    def name(self) -> str: ...

    def invocation(self, turn: Turn) -> Invocation: ...

    def process_spec(self, turn: Turn, invocation: Invocation, cleanup: list[Path]) -> process.ProcessSpec: ...

    def owned_tempdir(self, label: str) -> Path: ...


#: argv, env, pass_env, cwd (with the per-run names replaced) and the hashes of the asset files they name
Shape = tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...], str, tuple[tuple[str, str], ...]]

# NUL cannot occur in argv (the process layer refuses it) nor in an environment value: no real text collides
_ASSETS = "\0assets\0"
_SESSION = "\0session\0"


def shape_of(spec: process.ProcessSpec, turn: Turn) -> Shape | None:
    """The shape of ``turn``'s process ``spec`` (see the module docstring); None when it has none."""
    assets, session = str(turn.assets), turn.session
    stdin = spec.stdin or b""
    if assets.encode() in stdin or (session and session.encode() in stdin):
        return None

    def neutral(text: str) -> str:
        text = text.replace(assets, _ASSETS)
        return text.replace(session, _SESSION) if session else text

    try:
        files = _named_files(turn.assets, [*spec.argv, *spec.env.values()])
    except OSError:  # an unreadable asset: run cold, where the CLI reports it
        return None
    return (
        tuple(neutral(a) for a in spec.argv),
        tuple(sorted((k, neutral(v)) for k, v in spec.env.items())),
        tuple(spec.pass_env),
        str(spec.cwd),
        files,
    )


def _named_files(assets: Path, texts: list[str]) -> tuple[tuple[str, str], ...]:
    """(name, sha256) of the asset files named in ``texts``; all of them when a text names the directory itself."""
    base = str(assets)
    whole = any(text[i + len(base) : i + len(base) + 1] != os.sep for text in texts for i in _occurrences(text, base))
    out: list[tuple[str, str]] = []
    with os.scandir(assets) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if whole or any(entry.path in text for text in texts):
                digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest() if entry.is_file() else "dir"
                out.append((entry.name, digest))
    return tuple(out)


def _occurrences(text: str, part: str) -> list[int]:
    found, i = [], text.find(part)
    while i >= 0:
        found.append(i)
        i = text.find(part, i + 1)
    return found
