"""ACP agents warm vs the same CLI's one-shot run, side by side against the fake model API.

Per agent (Gemini CLI, OpenCode, Qwen Code, Kilo, Copilot CLI), medians over ``--runs``:

  fresh   time to first text of a new conversation: the exec runner spawns the CLI; the ACP runner opens a
          session on its warm agent process (started once, before the runs: its start-up is its own row)
  turn 2  time to first text of the second turn of a conversation: exec resumes the CLI's session in a new
          process; ACP prompts the live session
  RSS     resident memory of the warm agent's process group after the runs

Targets: ACP / exec <= 0.2 for both. The CLIs phone home, so the benchmark re-executes itself inside a
loopback-only network namespace (``unshare -n``) with throw-away homes.

    .venv/bin/python benchmarks/acp_warm.py [--runs 3] [--agents gemini,opencode,qwen,kilo,copilot]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codex_warm import _isolated, _reexec_isolated, group_rss_kib

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "tests" / "clis" / "node_modules" / ".bin"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # each CLI's offline setup, as the e2e tests configure it


def setups(api: Any, home: Path) -> dict[str, Callable[[], dict[str, Any]]]:
    """Runner options per agent, each call in a fresh user home under ``home``."""
    from copilot_env import copilot_env
    from gemini_env import RUNNER_SETTINGS, gemini_env
    from opencode_env import KILO, OPENCODE, write_user_config
    from qwen_env import qwen_env

    def base(name: str) -> dict[str, str]:
        user = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=home))
        (user / "tmp").mkdir()
        return {
            "HOME": str(user),
            "TMPDIR": str(user / "tmp"),
            "XDG_CONFIG_HOME": str(user / ".config"),
            "XDG_DATA_HOME": str(user / ".local" / "share"),
            "XDG_CACHE_HOME": str(user / ".cache"),
            "XDG_STATE_HOME": str(user / ".local" / "state"),
        }

    def gemini() -> dict[str, Any]:
        env = gemini_env(base("gemini"), api.gemini_base_url, "dummy")
        return {"env": env, "settings": RUNNER_SETTINGS, "model": "gemini-2.5-flash"}

    def opencode_like(flavor: Any) -> Callable[[], dict[str, Any]]:
        def setup() -> dict[str, Any]:
            env = base(flavor.cli)
            write_user_config(flavor, Path(env["HOME"]), api.openai_base_url)
            return {"env": env}

        return setup

    def qwen() -> dict[str, Any]:
        return {"env": qwen_env(base("qwen"), api.openai_base_url)}

    def copilot() -> dict[str, Any]:
        env = base("copilot")
        return {"env": copilot_env(env, api.openai_base_url, home / "copilot-cache")}

    return {
        "gemini": gemini,
        "opencode": opencode_like(OPENCODE),
        "qwen": qwen,
        "kilo": opencode_like(KILO),
        "copilot": copilot,
    }


async def first_text(provider: Any, request: Any) -> tuple[float, str]:
    """Seconds to the first text delta, and the whole answer."""
    from llm_runners.types import TextDelta

    start = time.monotonic()
    first: float | None = None
    text = []
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            first = first if first is not None else time.monotonic() - start
            text.append(event.text)
    if first is None:
        raise RuntimeError("no text")
    return first, "".join(text)


async def conversation(provider: Any, tag: str) -> tuple[float, float]:
    """(first text of turn 1, first text of turn 2) of one new conversation."""
    from llm_runners.types import ChatRequest

    first = ChatRequest(messages=[{"role": "user", "content": f"hi {tag}"}], conversation=tag)
    t1, answer = await first_text(provider, first)
    second = ChatRequest(
        messages=[*first.messages, {"role": "assistant", "content": answer}, {"role": "user", "content": "again"}],
        conversation=tag,
    )
    t2, _ = await first_text(provider, second)
    return t1, t2


async def bench(agents: list[str], runs: int) -> None:
    from llm_runners.acp import AcpRunner
    from llm_runners.runners import REGISTRY
    from llm_runners.sessions import SessionStore
    from llm_runners.testing.fake_api import FakeModelAPI

    home = Path(tempfile.mkdtemp(prefix="acp-bench-"))
    rows = []
    with FakeModelAPI() as api:
        table = setups(api, home)
        for name in agents:
            binary = str(BIN / name)
            exec_runner = REGISTRY[name](binary=binary, sessions=SessionStore(), **table[name]())
            acp = AcpRunner(name, binary=binary, sessions=SessionStore(), warm=True, **table[name]())
            started = time.monotonic()
            await acp.start()
            startup = time.monotonic() - started
            exec_t: list[tuple[float, float]] = []
            acp_t: list[tuple[float, float]] = []
            for run in range(runs):  # alternate, so load drifts hit both alike
                exec_t.append(await conversation(exec_runner, f"exec-{run}"))
                acp_t.append(await conversation(acp, f"acp-{run}"))
            pid = acp.agents[0].pid or 0
            rss = group_rss_kib(pid)
            await acp.aclose()
            await exec_runner.aclose()
            med = [statistics.median(t[i] for t in exec_t) for i in (0, 1)]
            amed = [statistics.median(t[i] for t in acp_t) for i in (0, 1)]
            rows.append((name, startup, med, amed, rss))
            print(f"  {name}: done", file=sys.stderr, flush=True)
    print(f"ACP warm vs one-shot exec, median time to first text over {runs} conversations (target ratio <= 0.2)")
    print(
        f"{'agent':10} {'ACP start':>9} | {'fresh exec':>10} {'ACP':>7} {'ratio':>6} | "
        f"{'turn 2 exec':>11} {'ACP':>7} {'ratio':>6} | {'RSS MiB':>7}"
    )
    for name, startup, med, amed, rss in rows:
        print(
            f"{name:10} {startup:8.2f}s | {med[0]:9.2f}s {amed[0]:6.2f}s {amed[0] / med[0]:6.2f} | "
            f"{med[1]:10.2f}s {amed[1]:6.2f}s {amed[1] / med[1]:6.2f} | {rss / 1024:7.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--agents", default="gemini,opencode,qwen,kilo,copilot")
    args = parser.parse_args()
    if not _isolated():
        _reexec_isolated()
    asyncio.run(bench(args.agents.split(","), args.runs))


if __name__ == "__main__":
    main()
