"""Codex warm vs cold: ``exec --json`` (a process per turn, ``exec resume`` from disk) against ``app-server``
(one long-lived process, a live thread per conversation), measured side by side against the fake model API.

Rows (medians over ``--runs`` conversations of five turns each, transports alternating run by run):

  turn 1            a fresh conversation: exec spawns ``codex exec``; app-server starts a thread on the running
                    server (its own start-up, once per runner, is reported on its own row)
  turns 2-5         each a continuation: exec spawns ``codex exec … resume <thread>``; app-server starts a turn on
                    the live thread
  streaming         the fake streams five chunks 0.8 s apart (3.2 s): how long before the end the first text
                    arrives (exec prints whole messages, so ~0; target for app-server >= 1 s)
  RSS               resident memory of the app-server process group after the runs

Target: turns 2-5 app-server / exec resume <= 0.3. The real CLI phones home, so the benchmark re-executes itself
inside a loopback-only network namespace (``unshare -n``) with a throw-away HOME.

    .venv/bin/python benchmarks/codex_warm.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CODEX = ROOT / "tests" / "clis" / "node_modules" / ".bin" / "codex"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # codex_env: the fake provider as the e2e tests configure it
TURNS = 5
STREAM_CHUNKS = [" one", " two", " three", " four", " five"]
STREAM_DELAY = 0.8


def _isolated() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _reexec_isolated() -> None:
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    argv = [*unshare, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, *sys.argv]
    os.execvp(argv[0], argv)


@dataclass
class Timings:
    first_text: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


@dataclass
class Transport:
    name: str
    turn1: Timings = field(default_factory=Timings)
    later: Timings = field(default_factory=Timings)
    stream_lead: list[float] = field(default_factory=list)  # seconds between first text and the end


def group_rss_kib(pgid: int) -> int:
    """Resident memory of every process in the group (the server and its helpers), in KiB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


async def turn(runner: Any, messages: list[dict[str, str]]) -> tuple[float, float, str]:
    """(time to first text, total time, text) of one streamed turn."""
    from llm_runners.types import ChatRequest, TextDelta

    start = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    async for event in runner.stream(ChatRequest(messages=messages)):
        if isinstance(event, TextDelta):
            if first is None:
                first = time.perf_counter() - start
            text.append(event.text)
    total = time.perf_counter() - start
    return (first if first is not None else total), total, "".join(text)


async def conversation(runner: Any, into: Transport) -> None:
    messages: list[dict[str, str]] = []
    for i in range(TURNS):
        messages.append({"role": "user", "content": f"turn {i + 1}"})
        first, total, text = await turn(runner, messages)
        if "pong" not in text:
            raise SystemExit(f"{into.name}: unexpected answer {text!r}")
        timings = into.turn1 if i == 0 else into.later
        timings.first_text.append(first)
        timings.total.append(total)
        messages.append({"role": "assistant", "content": text})


async def main(runs: int) -> None:
    from codex_env import codex_env, fake_provider_args

    from llm_runners.runners.codex import CodexRunner
    from llm_runners.runners.codex_app import CodexAppRunner
    from llm_runners.testing.fake_api import FakeModelAPI, Reply

    if not CODEX.exists():
        raise SystemExit(f"{CODEX} is missing: run scripts/setup first")
    with tempfile.TemporaryDirectory(prefix="llm-runners-bench-") as tmp, FakeModelAPI() as api:
        home = Path(tmp) / "home"
        home.mkdir()
        env = codex_env({"HOME": str(home), "TMPDIR": tmp})
        options: dict[str, Any] = {
            "binary": str(CODEX),
            "env": env,
            "model": "fake-model",
            "extra_args": fake_provider_args(api.openai_base_url),
        }
        exec_runner = CodexRunner(transport="exec", **options)
        app_runner = CodexRunner(transport="app-server", **options)
        assert isinstance(app_runner, CodexAppRunner)
        version = await exec_runner.version()

        start = time.perf_counter()
        server = await app_runner.server()
        server_start = time.perf_counter() - start

        results = {"exec": Transport("exec"), "app-server": Transport("app-server")}
        runners = {"exec": exec_runner, "app-server": app_runner}
        for run in range(runs):
            order = ["exec", "app-server"] if run % 2 == 0 else ["app-server", "exec"]
            for name in order:
                await conversation(runners[name], results[name])
            print(f"run {run + 1}/{runs} done", file=sys.stderr)
        for name in ("exec", "app-server"):
            for _ in range(max(1, runs // 2)):
                api.script(Reply(chunks=STREAM_CHUNKS, chunk_delay=STREAM_DELAY))
                first, total, _text = await turn(runners[name], [{"role": "user", "content": "stream"}])
                results[name].stream_lead.append(total - first)
        rss = group_rss_kib(server.proc.pid)
        await exec_runner.aclose()
        await app_runner.aclose()

    print(f"codex {version}, fake model API on 127.0.0.1, loopback only, {runs} conversations x {TURNS} turns")
    print(f"{'codex':<34}{'exec':>12}{'app-server':>12}{'ratio':>8}")

    def row(label: str, a: list[float], b: list[float]) -> None:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{label:<34}{ma * 1000:>10.0f}ms{mb * 1000:>10.0f}ms{mb / ma:>8.2f}")

    ex, app = results["exec"], results["app-server"]
    row("turn 1: first text", ex.turn1.first_text, app.turn1.first_text)
    row("turn 1: total", ex.turn1.total, app.turn1.total)
    row("turns 2-5: first text", ex.later.first_text, app.later.first_text)
    row("turns 2-5: total (target <= 0.3)", ex.later.total, app.later.total)
    lead_ex, lead_app = statistics.median(ex.stream_lead), statistics.median(app.stream_lead)
    stream_total = (len(STREAM_CHUNKS) - 1) * STREAM_DELAY  # the first chunk comes at once
    print(
        f"{f'first text before the end ({stream_total:.1f} s stream)':<34}{lead_ex:>11.2f}s{lead_app:>11.2f}s"
        f"  (target app-server >= 1 s)"
    )
    print(f"{'app-server start-up (once)':<34}{'':>12}{server_start * 1000:>10.0f}ms")
    print(f"{'app-server RSS (process group)':<34}{'':>12}{rss / 1024:>10.0f}MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not _isolated():
        _reexec_isolated()
    sys.path.insert(0, str(ROOT / "src"))
    asyncio.run(main(args.runs))
