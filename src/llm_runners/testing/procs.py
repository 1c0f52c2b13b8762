"""Process checks for tests: is a pid alive, which processes run a given file, which descend from a pid.

Read from /proc, which changes under the reader: a process can end between listing /proc and reading its
``stat``. Every read here takes that as "gone" instead of raising (a race that once failed CI).
"""

from __future__ import annotations

import os

from .. import process


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:  # gone (FileNotFoundError, or ProcessLookupError while reading)
        return None
    return data.rsplit(b")", 1)[1].split()


def state(pid: int | str) -> str | None:
    """The process state letter (``R``, ``S``, ``Z`` …), None once the pid is gone."""
    fields = _stat_fields(pid)
    return fields[0].decode() if fields else None


def alive(pid: int | None) -> bool:
    """True while the pid exists and is not a zombie."""
    return pid is not None and state(pid) not in (None, "Z")


def parent(pid: int | str) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def running(marker: object) -> list[int]:
    """Live processes whose command line contains ``marker`` (a path, usually a test's own stand-in script)."""
    needle = str(marker).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


def descendants(root: int | None = None) -> list[int]:
    """Live descendant pids of ``root`` (default: this process, whose orphan watchdog is left out: it is started by
    the first child and lives as long as the process, see :func:`llm_runners.process.watchdog_pid`)."""
    if root is None:
        root = os.getpid()
        watchdog = process.watchdog_pid()
        return [pid for pid in descendants(root) if pid != watchdog]
    parents = {int(e): p for e in os.listdir("/proc") if e.isdigit() and (p := parent(e)) is not None}
    found: list[int] = []
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier}
        found.extend(frontier)
    return [pid for pid in found if alive(pid)]
