"""The orphan guarantee of the process layer (``process.guard``) and the start-up reaper, with stand-in children.

A guarded parent is SIGKILLed with children in flight (each with a grandchild in its process group): its watchdog
kills every group and removes the instance's temp root. The reaper removes a dead instance's leftovers, never a live
instance's. The same with the real ``claude`` behind a real ``llm-runners serve``: tests/e2e/test_orphans.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm_runners import process
from llm_runners.testing.procs import alive as _alive
from llm_runners.testing.procs import running

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


# ------------------------------------------------------------------------------------------------ library use
# A stand-in Claude Code: answers a partial delta, starts a grandchild in its group, then hangs ignoring SIGTERM.
HANGING_CLAUDE = r"""#!{python} -IS
import json, signal, subprocess, sys, time
sys.stdin.buffer.readline()
def event(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
event({{"type": "system", "subtype": "init", "session_id": "s", "model": "stand-in"}})
event({{"type": "stream_event", "session_id": "s",
       "event": {{"type": "content_block_delta", "delta": {{"type": "text_delta", "text": "partial\n"}}}}}})
subprocess.Popen([sys.executable, "-IS", "-c", "import time; time.sleep(300)", sys.argv[0]])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(300)
"""

# a program using a runner directly (no guard() call): prints its pid's first delta, then waits to be killed
LIBRARY_PROGRAM = r"""
import asyncio, sys
from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.types import ChatRequest, Message, TextDelta

async def main():
    runner = ClaudeCodeRunner(binary=sys.argv[1], env={"ANTHROPIC_API_KEY": "k", "HOME": sys.argv[2]}, timeout=300,
                              idle_timeout=None)
    async for event in runner.stream(ChatRequest(messages=[Message(role="user", content="hi")])):
        if isinstance(event, TextDelta):
            print(event.text, end="", flush=True)

asyncio.run(main())
"""


def _hanging_claude(tmp: Path) -> Path:
    script = tmp / "hanging-claude"
    script.write_text(HANGING_CLAUDE.format(python=sys.executable))
    script.chmod(0o755)
    return script


def _killed_leaves_nothing(argv: list[str], tmp: Path, marker: Path) -> None:
    """Run ``argv`` with TMPDIR=tmp until it printed the stand-in's partial answer, SIGKILL it: within 2 s no
    process of the stand-in is left and the temp dirs of the run (working dir, run dir) are gone."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("LLM_RUNNERS_CONFIG", None)
    program = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert program.stdout is not None
        line = program.stdout.readline()
        assert line == b"partial\n", (line, program.stderr.read() if program.poll() is not None else b"")
        deadline = time.monotonic() + 10
        while len(pids := [p for p in running(marker) if p != program.pid]) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the stand-in and its grandchild (the program names the stand-in in its argv)
        assert len(pids) == 2
        assert [p.name for p in tmp.iterdir()], "the run made no temp dir, so the check below could not fail"
    finally:
        program.kill()
        program.wait(10)
    assert _wait_gone(pids, 2.0) == [], "the CLI outlived its SIGKILLed program by 2 s"
    deadline = time.monotonic() + 2
    while list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(tmp.iterdir()) == []


def test_sigkill_of_a_program_using_a_runner_leaves_no_cli_and_no_temp_dir(tmp_path: Path) -> None:
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    script = _hanging_claude(tmp_path)
    _killed_leaves_nothing([sys.executable, "-c", LIBRARY_PROGRAM, str(script), str(home)], tmp, script)


def test_sigkill_of_llm_runners_chat_leaves_no_cli_and_no_temp_dir(tmp_path: Path) -> None:
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    script = _hanging_claude(tmp_path)
    config = tmp_path / "llm-runners.toml"
    config.write_text(
        f'[providers.claude_code.options]\nbinary = "{script}"\nidle_timeout = 300.0\n'
        f'env = {{ ANTHROPIC_API_KEY = "k", HOME = "{home}" }}\n'
    )
    cli = str(Path(sys.executable).with_name("llm-runners"))
    _killed_leaves_nothing([cli, "--config", str(config), "chat", "-p", "claude_code", "hi"], tmp, script)


def test_a_library_process_killed_at_exit_and_its_watchdog_not_counted_as_a_child(tmp_path: Path) -> None:
    """A program that exits without closing its runner's process: the atexit guard kills the group (no wait for
    the CLI); the watchdog is the only extra child of a guarded process, and descendants() leaves it out."""
    script = _hanging_claude(tmp_path)
    program = PARENT.replace("root = process.guard()", "root = 'library'").replace(
        "await asyncio.sleep(300)", "from llm_runners.testing import procs; print(procs.descendants(), flush=True)"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    first, listed = done.stdout.splitlines()
    _, *pids = first.split()
    assert sorted(int(p) for p in pids) == sorted(json.loads(listed))  # the two children and their grandchildren
    assert _wait_gone([int(p) for p in pids], 2.0) == []
    assert not running(script)


# ------------------------------------------------------------------------------------------ every kind of process
# A stand-in Claude Code that answers every turn it reads on stdin and stays up: its process stays live after the
# first request (the live pool), and a second one is started as a spare (the warm pool).
LIVE_CLAUDE = r"""#!{python} -IS
import json, sys
out = sys.stdout.buffer
DIALECT = "claude_code"
sid = sys.argv[sys.argv.index("--session-id") + 1] if "--session-id" in sys.argv else "s"
{dialect_events}
for line in sys.stdin.buffer:
    start(); delta("ok"); end("ok")
"""

# A stand-in OpenCode / Kilo: says nothing, ignores SIGTERM, hangs.
SILENT = """#!{python} -IS
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(300)
"""

# A program that builds runners of every kind (Claude Code with a system prompt file, a live and a spare process;
# OpenCode and Kilo with their private homes; an ACP agent with the private home of its CLI), starts a request on
# each that hangs, lists the temp dirs it made, then waits to be killed.
EVERY_KIND = r"""
import asyncio, os, sys, tempfile
from pathlib import Path
from llm_runners.acp import AcpDialect, AcpRunner
from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.runners.kilo import KiloRunner
from llm_runners.runners.opencode import OpenCodeRunner
from llm_runners.testing.procs import running
from llm_runners.types import ChatRequest, Message

hanging, live, silent, home, log = sys.argv[1:6]
env = {"HOME": home, "ANTHROPIC_API_KEY": "k", "PYTHONPATH": os.pathsep.join(sys.path), "ACP_STANDIN_LOG": log}
options = dict(env=env, timeout=300, idle_timeout=None)

def ask(text, system=None):
    messages = [Message(role="system", content=system)] if system else []
    return ChatRequest(messages=[*messages, Message(role="user", content=text)])

async def until(check):
    for _ in range(1500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise SystemExit("timed out")

async def drain(runner, request):
    async for _ in runner.stream(request):
        pass

async def main():
    warm = ClaudeCodeRunner(binary=live, warm=1, live_max=1, **options)
    await warm.complete(ask("first"))  # its process stays live, and a spare starts
    await until(lambda: warm.processes() == {"running": 0, "live": 1, "spare": 1})
    tasks = [asyncio.ensure_future(drain(ClaudeCodeRunner(binary=hanging, **options), ask("hi", "be brief")))]
    for cls in (OpenCodeRunner, KiloRunner):
        tasks.append(asyncio.ensure_future(drain(cls(binary=silent, **options), ask("hi"))))
    agent = AcpRunner(AcpDialect("standin", ("-m", "llm_runners.testing.acp_agent"), status_text=None),
                      runner=OpenCodeRunner(binary=sys.executable, **options))
    tasks.append(asyncio.ensure_future(drain(agent, ask("[hang]"))))
    mine = lambda script: [p for p in running(script) if p != os.getpid()]  # the stand-in, not this program
    await until(lambda: len(mine(hanging)) == 2 and len(mine(silent)) == 2  # claude and its grandchild; 2 silent
                and Path(log).is_file() and "session/prompt" in Path(log).read_text())
    print(*sorted(p.name for p in Path(tempfile.gettempdir()).iterdir()), flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


def test_sigkill_of_a_program_with_every_kind_of_process_leaves_nothing(tmp_path: Path) -> None:
    """Cold, live, spare and ACP processes, private CLI homes, working and run dirs: a SIGKILL of the program
    that made them leaves, 2 s later, no process of it and nothing in its TMPDIR."""
    from llm_runners.testing.procs import descendants
    from llm_runners.testing.standin import DIALECT_EVENTS

    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    hanging = _hanging_claude(tmp_path)
    scripts = {"live": LIVE_CLAUDE.format(python=sys.executable, dialect_events=DIALECT_EVENTS), "silent": SILENT}
    paths = []
    for name, text in scripts.items():
        path = tmp_path / name
        path.write_text(text.format(python=sys.executable) if name == "silent" else text)
        path.chmod(0o755)
        paths.append(str(path))
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("LLM_RUNNERS_CONFIG", None)
    argv = [sys.executable, "-c", EVERY_KIND, str(hanging), *paths, str(home), str(tmp_path / "agent.log")]
    program = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert program.stdout is not None and program.stderr is not None
        made = program.stdout.readline().decode().split()
        assert made, program.stderr.read() if program.poll() is not None else b""
        pids = descendants(program.pid)
    finally:
        program.kill()
        program.wait(10)
    kinds = {"-".join(name.split("-")[2:-1]) for name in made if name.startswith("llm-runners-")}
    # the private homes (opencode, kilo and the ACP agent's), working dirs, the spares' and the hanging run's dirs
    assert {"opencode-home", "kilo-home", "claude_code-warm", "claude_code-run", "claude_code-work"} <= kinds, made
    # the watchdog; the hanging claude and its grandchild, the live and the spare claude, opencode, kilo, the agent
    assert len(pids) >= 8, pids
    assert _wait_gone(pids, 2.0) == [], "processes outlived their SIGKILLed program by 2 s"
    deadline = time.monotonic() + 2
    while list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_a_temp_dir_is_guarded_from_the_moment_it_is_made(tmp_path: Path) -> None:
    """``process.temp_dir`` (a run's files, a CLI home, a working directory) is registered before its process
    starts: a program SIGKILLed while its request waits (for a process slot, a spare) leaves nothing either."""
    program = (
        "import sys, time\nfrom llm_runners import process\n"
        "print(process.temp_dir('llm-runners-test-run-'), flush=True)\ntime.sleep(300)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    parent = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert parent.stdout is not None
        made = Path(parent.stdout.readline().strip())
        assert made.is_dir() and made.parent == tmp_path
    finally:
        parent.kill()
        parent.wait(10)
    deadline = time.monotonic() + 2
    while made.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(tmp_path.iterdir()) == []


def test_sigkill_of_the_programs_whole_process_group_leaves_nothing(tmp_path: Path) -> None:
    """``kill -9 -<pgid>`` (how a job control shell or a test harness kills a job) reaches every process of the
    program's group: the watchdog sits in a session of its own, so it survives to kill the CLIs and remove the
    temp dirs."""
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    script = _hanging_claude(tmp_path)
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("LLM_RUNNERS_CONFIG", None)
    program = subprocess.Popen(
        [sys.executable, "-c", LIBRARY_PROGRAM, str(script), str(home)],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,  # a group of its own, as a job has
    )
    try:
        assert program.stdout is not None
        assert program.stdout.readline() == b"partial\n"
        deadline = time.monotonic() + 10
        while len(pids := [p for p in running(script) if p != program.pid]) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(pids) == 2 and list(tmp.iterdir())
    finally:
        os.killpg(program.pid, signal.SIGKILL)
        program.wait(10)
    left = _wait_gone(pids, 2.0)
    for pid in left:  # a failing run leaves nothing behind either
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the CLI outlived its program's process group by 2 s"
    deadline = time.monotonic() + 2
    while list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(tmp.iterdir()) == []
