"""The orphan guarantee of the process layer (``process.guard``) and the start-up reaper, with stand-in children.

A guarded parent is SIGKILLed with children in flight (each with a grandchild in its process group): its watchdog
kills every group and removes the instance's temp root. The reaper removes a dead instance's leftovers, never a live
instance's. The same with the real ``claude`` behind a real ``llm-runners serve``: tests/e2e/test_orphans.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm_runners import process
from llm_runners.testing.procs import alive as _alive

# a guarded parent: starts two children (each a shell with a sleeping grandchild), prints their pids and its temp
# root, then waits to be killed
PARENT = r"""
import asyncio, sys
from llm_runners import process

async def main():
    root = process.guard()
    procs = [await process.start(process.ProcessSpec(["sh", "-c", "sleep 300 & echo $!; wait"], timeout=None))
             for _ in range(2)]
    pids = []
    for p in procs:
        pids.append(p.pid)
        pids.append(int(await p.lines().__anext__()))
    print(root, *pids, flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _guarded_parent(tmp: Path) -> tuple[subprocess.Popen[str], Path, list[int]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)}
    )
    assert parent.stdout is not None
    root, *pids = parent.stdout.readline().split()
    return parent, Path(root), [int(p) for p in pids]


def test_sigkill_of_a_guarded_parent_leaves_no_child_and_no_temp_dir(tmp_path: Path) -> None:
    parent, root, pids = _guarded_parent(tmp_path)
    assert len(pids) == 4 and all(_alive(p) for p in pids)
    assert root.parent == tmp_path and root.name.startswith(process.INSTANCE_PREFIX) and root.is_dir()
    parent.kill()
    parent.wait(10)
    assert _wait_gone(pids) == []
    deadline = time.monotonic() + 10
    while root.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not root.exists()


def test_reaper_removes_a_dead_instances_leftovers_but_not_a_live_ones(tmp_path: Path) -> None:
    # a dead instance: its root and a process marked with it (the watchdog could not run: it was killed as well)
    dead_owner = f"{os.getpid()}:1"  # our pid with a start time that is not ours: a pid since recycled
    dead_root = tmp_path / f"{process.INSTANCE_PREFIX}{dead_owner.replace(':', '-')}"
    dead_root.mkdir()
    (dead_root / "owner").write_text(dead_owner + "\n")
    (dead_root / "llm-runners-claude_code-run-x").mkdir()
    # a live instance (a guarded parent) with its children running
    parent, live_root, live_pids = _guarded_parent(tmp_path)
    # another program's directory with a similar name, and an unmarked process
    other = tmp_path / f"{process.INSTANCE_PREFIX}not-ours"
    other.mkdir()
    env = {**os.environ, process.OWNER_ENV: dead_owner}
    orphan = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        reaped = process.reap_dead_instances(tmp_path)
        assert reaped == [dead_owner]
        assert orphan.wait(10) == -signal.SIGKILL
        assert not dead_root.exists()
        assert live_root.is_dir() and all(_alive(p) for p in live_pids)
        assert other.is_dir() and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        orphan.kill()
        orphan.wait()
        parent.kill()
        parent.wait(10)
    assert _wait_gone(live_pids) == []


def test_unguard_kills_every_registered_group_and_removes_the_root(tmp_path: Path) -> None:
    script = PARENT.replace("await asyncio.sleep(300)", "process.unguard(); print('done', flush=True)")
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)}
    )
    assert parent.stdout is not None
    root, *pids = parent.stdout.readline().split()
    assert parent.stdout.readline().strip() == "done"
    assert parent.wait(10) == 0
    assert _wait_gone([int(p) for p in pids]) == []
    assert not Path(root).exists()
    assert tempfile.gettempdir() != root
