"""Warm vs cold, side by side in one run: what spares, live processes and long-lived servers save per turn.

Every case runs the same conversations of five turns against the fake model API on 127.0.0.1, cases in rotating
order conversation by conversation, and reports medians of:

  turn 1      a fresh conversation: a cold spawn, a spare started ahead of need, or a thread on a running server
  turns 2-5   each a continuation: a cold resume from disk (a new process) or a turn on a live process / thread
  RSS         resident memory of one live process (its whole process group), where the case keeps one

Then, per provider, each case against the provider's first (cold) case. Targets: claude_code turns 2-5 live / cold
resume <= 0.15; codex app-server / exec resume <= 0.3 (its streaming lead is in ``codex_warm.py``); the ACP agents
(gemini, opencode, qwen, kilo, copilot) acp / exec <= 0.2 for turn 1 and turns 2-5 (``acp_warm.py`` has their
time-to-first-text table with the agent's start-up on its own row).

Adding a row: append a :class:`Case` to :func:`cases` (a provider name, a label, how to build the provider from the
:class:`Bench`, and optionally how to check that each turn was served the way the label says, how to let background
start-ups settle before a measured turn, and which pids hold live processes). The real CLIs phone home, so the
benchmark re-executes itself inside a loopback-only network namespace (``unshare -n``) with throw-away HOMEs.

    .venv/bin/python benchmarks/warm.py [--runs 5] [--only claude_code]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codex_warm import Timings, _isolated, _reexec_isolated, group_rss_kib, turn

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "tests" / "clis" / "node_modules" / ".bin"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # codex_env: the fake provider as the e2e tests configure it
TURNS = 5
#: seconds left to a spare started in the background (~0.35 s of CPU) before the next measured turn
SETTLE = 1.0


@dataclass
class Bench:
    """What a case may build on: the fake API and a private directory."""

    api: Any
    tmp: Path

    def home(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(exist_ok=True)
        return path


@dataclass
class Case:
    provider: str
    label: str
    build: Callable[[Bench], Any]
    #: (provider, turn index) -> raises when the turn was not served the way the label says
    check: Callable[[Any, int, dict[str, Any]], None] | None = None
    #: awaited before each measured turn, e.g. until a spare started in the background is up
    settle: Callable[[Any], Awaitable[None]] | None = None
    #: the pids (process-group leaders) of the live processes the case holds now
    live_pids: Callable[[Any], list[int]] | None = None
    turn1: Timings = field(default_factory=Timings)
    later: Timings = field(default_factory=Timings)
    rss_kib: list[int] = field(default_factory=list)
    runner: Any = None


# ------------------------------------------------------------------------------------------------ claude_code
def _claude(bench: Bench, **options: Any) -> Any:
    from llm_runners.runners.claude_code import ClaudeCodeRunner
    from llm_runners.sessions import SessionStore

    home = bench.home(f"claude-{len(list(bench.tmp.iterdir()))}")
    env = {
        "HOME": str(home),
        "TMPDIR": str(bench.tmp),
        "ANTHROPIC_BASE_URL": bench.api.anthropic_base_url,
        "ANTHROPIC_API_KEY": "dummy",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    return ClaudeCodeRunner(binary=str(BIN / "claude"), env=env, sessions=SessionStore(), timeout=60, **options)


async def _spare_settled(runner: Any) -> None:
    """Until no spare start is pending; then SETTLE seconds when a new spare came up since the last look."""
    pool = runner.warm_pool
    seen = getattr(runner, "_bench_spares", set())
    while pool.pending:  # noqa: ASYNC110 - the start is a task of the pool's
        await asyncio.sleep(0.02)
    now = set(pool.pids())
    if now - seen:
        await asyncio.sleep(SETTLE)
    runner._bench_spares = now


def _claude_warm_check(runner: Any, index: int, state: dict[str, Any]) -> None:
    """Turn 1 taken by the spare that was waiting, turns 2-5 on that same process, kept live."""
    live = runner.live_pool.pids()
    if index == 0:
        spare = state.get("spare")
        if spare is None or spare not in live.values():
            raise SystemExit(f"claude_code warm: turn 1 was not served by the spare ({spare} not in {live})")
        state["pid"] = spare
    elif state["pid"] not in live.values():
        raise SystemExit(f"claude_code warm: turn {index + 1} did not run on the live process {state['pid']}")


def claude_cases() -> list[Case]:
    return [
        Case("claude_code", "cold", lambda b: _claude(b)),
        Case(
            "claude_code",
            "warm",
            lambda b: _claude(b, warm=1),
            check=_claude_warm_check,
            settle=_spare_settled,
            live_pids=lambda r: list(r.live_pool.pids().values()),
        ),
    ]


# ------------------------------------------------------------------------------------------------ codex
def _codex(bench: Bench, transport: str) -> Any:
    from codex_env import codex_env, fake_provider_args

    from llm_runners.runners.codex import CodexRunner

    home = bench.home(f"codex-{transport}")
    options: dict[str, Any] = {
        "binary": str(BIN / "codex"),
        "env": codex_env({"HOME": str(home), "TMPDIR": str(bench.tmp)}),
        "model": "fake-model",
        "extra_args": fake_provider_args(bench.api.openai_base_url),
    }
    return CodexRunner(transport=transport, **options)


def _codex_server_pid(runner: Any) -> list[int]:
    server = getattr(runner, "_server", None)
    proc = getattr(server, "proc", None)
    return [proc.pid] if proc is not None and proc.pid else []


def codex_cases() -> list[Case]:
    return [
        Case("codex", "exec", lambda b: _codex(b, "exec")),
        Case("codex", "app-server", lambda b: _codex(b, "app-server"), live_pids=_codex_server_pid),
    ]


# ------------------------------------------------------------------------------------------------ ACP agents
def _acp_pair(name: str) -> list[Case]:
    """The CLI's one-shot exec runner (a process per turn, resume from disk) and its ACP runner (one warm agent
    process, a live session per conversation), with the offline setup of ``acp_warm.py``."""
    from acp_warm import setups

    from llm_runners.acp import AcpRunner
    from llm_runners.runners import REGISTRY
    from llm_runners.sessions import SessionStore

    def build_exec(bench: Bench) -> Any:
        options = setups(bench.api, bench.tmp)[name]()
        return REGISTRY[name](binary=str(BIN / name), sessions=SessionStore(), **options)

    def build_acp(bench: Bench) -> Any:
        options = setups(bench.api, bench.tmp)[name]()
        return AcpRunner(name, binary=str(BIN / name), sessions=SessionStore(), **options)

    return [
        Case(name, "exec", build_exec),
        Case(name, "acp", build_acp, live_pids=lambda r: [a.pid for a in r.agents if a.pid]),
    ]


def acp_cases() -> list[Case]:
    return [case for name in ("gemini", "opencode", "qwen", "kilo", "copilot") for case in _acp_pair(name)]


def cases() -> list[Case]:
    """Every row of the table, grouped by provider; a provider's first case is the baseline of its ratios."""
    return [*claude_cases(), *codex_cases(), *acp_cases()]


# ------------------------------------------------------------------------------------------------ running
async def conversation(case: Case) -> None:
    runner = case.runner
    messages: list[dict[str, str]] = []
    state: dict[str, Any] = {}
    for index in range(TURNS):
        if case.settle is not None:
            await case.settle(runner)
        if index == 0 and getattr(runner, "warm_pool", None) is not None:
            state["spare"] = next(iter(runner.warm_pool.pids()), None)
        messages.append({"role": "user", "content": f"turn {index + 1}"})
        first, total, text = await turn(runner, messages)
        if "pong" not in text:
            raise SystemExit(f"{case.provider} {case.label}: unexpected answer {text!r}")
        if case.check is not None:
            case.check(runner, index, state)
        timings = case.turn1 if index == 0 else case.later
        timings.first_text.append(first)
        timings.total.append(total)
        messages.append({"role": "assistant", "content": text})
    if case.live_pids is not None:
        case.rss_kib += [group_rss_kib(pid) for pid in case.live_pids(runner)]


async def main(runs: int, only: str | None) -> None:
    from llm_runners.testing.fake_api import FakeModelAPI

    chosen = [c for c in cases() if only is None or c.provider == only]
    with tempfile.TemporaryDirectory(prefix="llm-runners-bench-") as tmp, FakeModelAPI() as api:
        bench = Bench(api=api, tmp=Path(tmp))
        for case in chosen:
            case.runner = case.build(bench)
            warm_up = Case(case.provider, case.label, case.build, settle=case.settle, runner=case.runner)
            await conversation(warm_up)  # first runs of a fresh HOME write config; warm cases fill their pools
        try:
            for run in range(runs):
                shift = run % len(chosen)
                for case in chosen[shift:] + chosen[:shift]:
                    await conversation(case)
                print(f"run {run + 1}/{runs} done", file=sys.stderr)
        finally:
            for case in chosen:
                await case.runner.aclose()
    report(chosen, runs)


def report(chosen: list[Case], runs: int) -> None:
    print(f"fake model API on 127.0.0.1, loopback only, {runs} conversations x {TURNS} turns per case (medians)")
    print(
        f"{'provider':<12}{'case':<12}{'turn 1 text':>13}{'turn 1 end':>13}{'2-5 text':>11}{'2-5 end':>11}"
        f"{'RSS/live':>10}"
    )

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    for case in chosen:
        rss = f"{statistics.median(case.rss_kib) / 1024:.0f} MB" if case.rss_kib else "-"
        print(
            f"{case.provider:<12}{case.label:<12}{ms(case.turn1.first_text):>11.0f}ms{ms(case.turn1.total):>11.0f}ms"
            f"{ms(case.later.first_text):>9.0f}ms{ms(case.later.total):>9.0f}ms{rss:>10}"
        )
    print("ratios to each provider's first case (turn 1 total, turns 2-5 total):")
    for provider in dict.fromkeys(c.provider for c in chosen):
        group = [c for c in chosen if c.provider == provider]
        base = group[0]
        for case in group[1:]:
            r1 = ms(case.turn1.total) / ms(base.turn1.total)
            r2 = ms(case.later.total) / ms(base.later.total)
            print(f"  {provider} {case.label} / {base.label}: turn 1 {r1:.2f}, turns 2-5 {r2:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--only", default=None, help="one provider's cases (claude_code, codex, gemini, opencode, qwen, kilo, copilot)"
    )
    args = parser.parse_args()
    if not _isolated():
        _reexec_isolated()
    sys.path.insert(0, str(ROOT / "src"))
    start = time.perf_counter()
    asyncio.run(main(args.runs, args.only))
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
