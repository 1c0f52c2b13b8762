"""What llm-runners costs on top of the CLI it wraps.

Runs the same Claude Code request three ways, in rotating order, against the fake model API on 127.0.0.1:

  direct   the exact argv, stdin, environment and working directory the claude_code runner would use, started with
           plain ``asyncio.create_subprocess_exec`` and read to the end;
  runner   ``ClaudeCodeRunner.complete()``: prompt rendering, session bookkeeping, the process layer, the
           stream-json parser and the collected ChatResponse;
  warm     the same with ``warm=1``: each request is handed to a spare claude started ahead of need. After each
           warm run the benchmark waits for the replacement spare to start up, so that start-up never overlaps a
           measured run (of any column); every warm run is checked to have been served by a spare.

It prints every run, the ratio of the medians llm-runners / direct (target <= 1.02: the cold runner's overhead)
and warm / direct (what a ready spare saves). The real CLI phones home, so the benchmark re-executes itself inside
a loopback-only network namespace (``unshare -n``) with a throw-away HOME.

    .venv/bin/python benchmarks/overhead.py [--runs 20]

``--cli opencode --cli cline`` (any of :data:`CLI_SETUPS`) measures those CLIs instead, two columns each (direct
and runner, the same way: the runner's exact argv, stdin, environment and working directory started directly,
against ``complete()``), alternating which goes first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLAUDE = ROOT / "tests" / "clis" / "node_modules" / ".bin" / "claude"
#: seconds left to a replacement spare to start up (~0.35 s of CPU) before the next measured run
SPARE_SETTLE = 1.0


def _isolated() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _reexec_isolated() -> None:
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    argv = [*unshare, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, *sys.argv]
    os.execvp(argv[0], argv)


async def _direct(argv: list[str], stdin: bytes | None, env: dict[str, str], cwd: Path) -> tuple[float, int]:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    out, _ = await proc.communicate(stdin or b"")
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or b"pong" not in out:
        raise SystemExit(f"direct claude run failed (exit {proc.returncode}): {out[-500:]!r}")
    return elapsed, len(out)


async def main(runs: int) -> None:
    from llm_runners import process
    from llm_runners.runners.claude_code import ClaudeCodeRunner
    from llm_runners.sessions import SessionStore
    from llm_runners.testing.fake_api import FakeModelAPI
    from llm_runners.types import ChatRequest, Message

    if not CLAUDE.exists():
        raise SystemExit(f"{CLAUDE} is missing: run scripts/setup first")
    with tempfile.TemporaryDirectory(prefix="llm-runners-bench-") as tmp, FakeModelAPI() as api:
        home = Path(tmp) / "home"
        home.mkdir()
        env = {
            "HOME": str(home),
            "TMPDIR": tmp,
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "dummy",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }  # the telemetry and update switches come from the runner's invocation, on both paths
        runner = ClaudeCodeRunner(binary=str(CLAUDE), env=env, sessions=SessionStore(), timeout=60)
        request = ChatRequest(
            messages=[Message(role="system", content="Be brief."), Message(role="user", content="Say pong.")]
        )

        async def direct_once() -> float:
            turn = runner._turn(request, None, 0)
            try:
                inv = runner.invocation(turn)
                child_env = process.build_env({**runner.child_env(), **inv.env}, runner.pass_env)
                elapsed, _ = await _direct([*inv.argv, *runner.extra_args], inv.stdin, child_env, turn.workdir)
            finally:
                shutil.rmtree(turn.assets)
            return elapsed

        async def runner_once(which: ClaudeCodeRunner = runner) -> float:
            start = time.perf_counter()
            response = await which.complete(request)
            elapsed = time.perf_counter() - start
            if "pong" not in response.content:
                raise SystemExit(f"runner answer unexpected: {response.content!r}")
            return elapsed

        warm = ClaudeCodeRunner(binary=str(CLAUDE), env=env, sessions=SessionStore(), timeout=60, warm=1, live_max=0)
        pool = warm.warm_pool
        assert pool is not None

        async def warm_once() -> float:
            spares = pool.pids()
            if len(spares) != 1:
                raise SystemExit(f"no spare ready before a warm run ({len(spares)} spares)")
            elapsed = await runner_once(warm)
            if any(pid in pool.pids() for pid in spares):
                raise SystemExit("the warm run was not served by the spare")
            await asyncio.sleep(SPARE_SETTLE)
            if not pool.pids():
                await asyncio.sleep(SPARE_SETTLE)  # a slow start on a busy machine
            return elapsed

        # one warm-up each: the first run of a fresh HOME writes Claude's config files; the warm runner's first
        # run is cold and starts its first spare
        await direct_once()
        await runner_once()
        await runner_once(warm)
        await asyncio.sleep(SPARE_SETTLE)
        direct: list[float] = []
        wrapped: list[float] = []
        warmed: list[float] = []
        kinds = {"direct": (direct_once, direct), "runner": (runner_once, wrapped), "warm": (warm_once, warmed)}
        order = list(kinds)
        print(f"{'run':>3}  {'direct s':>9}  {'llm-runners s':>13}  {'warm s':>7}")
        for i in range(runs):
            for name in order[i % 3 :] + order[: i % 3]:  # rotate which goes first
                once, results = kinds[name]
                results.append(await once())
            print(f"{i + 1:>3}  {direct[-1]:>9.3f}  {wrapped[-1]:>13.3f}  {warmed[-1]:>7.3f}")
        version = await runner.version()
        await runner.aclose()
        await warm.aclose()
    md, mw, mh = statistics.median(direct), statistics.median(wrapped), statistics.median(warmed)
    print()
    print(f"claude {version}, fake model API on 127.0.0.1, loopback-only namespace")
    print(f"median direct       {md * 1000:8.1f} ms")
    print(f"median llm-runners  {mw * 1000:8.1f} ms")
    print(f"median warm         {mh * 1000:8.1f} ms")
    print(f"ratio llm-runners / direct = {mw / md:.3f}  (target <= 1.02, {runs} rotating runs)")
    print(f"mean ratio of pairs = {statistics.mean(w / d for w, d in zip(wrapped, direct, strict=True)):.3f}")
    print(f"ratio warm / direct = {mh / md:.3f}  (warm=1, a ready spare per request)")


def _opencode_like(cli: str) -> Any:
    """A runner of OpenCode or Kilo whose user's config (in the throw-away HOME) defines the fake as its provider."""

    def make(home: Path, api: Any) -> Any:
        import json

        from llm_runners.runners import REGISTRY
        from llm_runners.sessions import SessionStore

        cls = REGISTRY[cli]
        config = home / ".config" / cls.app / "config.json"  # type: ignore[attr-defined]
        config.parent.mkdir(parents=True)
        provider = {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": api.openai_base_url, "apiKey": "k"}}
        provider["models"] = {"fake-model": {"name": "Fake"}}
        config.write_text(
            json.dumps({"model": "fake/fake-model", "enabled_providers": ["fake"], "provider": {"fake": provider}})
        )
        env = {"HOME": str(home), "TMPDIR": str(home)}
        return cls(
            binary=str(ROOT / "tests" / "clis" / "node_modules" / ".bin" / cli), env=env, sessions=SessionStore()
        )

    return make


def _copilot(home: Path, api: Any) -> Any:
    """Copilot with the fake as the user's BYOK provider (the runner then turns on its offline mode)."""
    from llm_runners.runners.copilot import CopilotRunner
    from llm_runners.sessions import SessionStore

    env = {
        "HOME": str(home),
        "TMPDIR": str(home),
        "COPILOT_PROVIDER_BASE_URL": api.openai_base_url,
        "COPILOT_PROVIDER_API_KEY": "k",
        "COPILOT_MODEL": "fake-model",
    }
    binary = str(ROOT / "tests" / "clis" / "node_modules" / ".bin" / "copilot")
    return CopilotRunner(binary=binary, env=env, sessions=SessionStore())


def _qwen(home: Path, api: Any) -> Any:
    """Qwen Code with the fake as the user's OpenAI-compatible provider."""
    from llm_runners.runners.qwen import QwenRunner
    from llm_runners.sessions import SessionStore

    env = {"HOME": str(home), "TMPDIR": str(home), "OPENAI_BASE_URL": api.openai_base_url, "OPENAI_API_KEY": "k"}
    env["OPENAI_MODEL"] = "fake-model"
    binary = str(ROOT / "tests" / "clis" / "node_modules" / ".bin" / "qwen")
    return QwenRunner(binary=binary, env=env, sessions=SessionStore())


def _cline(home: Path, api: Any) -> Any:
    """A Cline runner whose user's providers.json (in the throw-away HOME) names the fake, as ``cline auth`` does."""
    import json

    from llm_runners.runners.cline import ClineRunner
    from llm_runners.sessions import SessionStore

    settings = {"provider": "openai-compatible", "apiKey": "k", "model": "fake-model", "baseUrl": api.openai_base_url}
    providers = {"version": 1, "lastUsedProvider": "openai-compatible"}
    providers["providers"] = {
        "openai-compatible": {"settings": settings, "updatedAt": "2026-01-01T00:00:00.000Z", "tokenSource": "manual"}
    }
    path = home / ".cline" / "data" / "settings" / "providers.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(providers))
    env = {"HOME": str(home), "TMPDIR": str(home)}
    return ClineRunner(
        binary=str(ROOT / "tests" / "clis" / "node_modules" / ".bin" / "cline"), env=env, sessions=SessionStore()
    )


def _continue(home: Path, api: Any) -> Any:
    """A Continue runner whose user's ``~/.continue/config.yaml`` (in the throw-away HOME) defines the fake model."""
    import json

    from llm_runners.runners.continue_cli import ContinueRunner
    from llm_runners.sessions import SessionStore

    model = {"name": "fake", "provider": "openai", "model": "fake-model", "apiBase": api.openai_base_url, "apiKey": "k"}
    path = home / ".continue" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": "bench", "version": "1.0.0", "schema": "v1", "models": [model]}))
    env = {"HOME": str(home), "TMPDIR": str(home)}
    return ContinueRunner(
        binary=str(ROOT / "tests" / "clis" / "node_modules" / ".bin" / "cn"), env=env, sessions=SessionStore()
    )


#: CLI name -> a function (throw-away HOME, fake API) -> a runner set up to answer from the fake
CLI_SETUPS: dict[str, Any] = {
    "opencode": _opencode_like("opencode"),
    "kilo": _opencode_like("kilo"),
    "copilot": _copilot,
    "qwen": _qwen,
    "cline": _cline,
    "continue": _continue,
}


async def measure_cli(cli: str, runs: int) -> tuple[str, list[float], list[float]]:
    """``runs`` alternating pairs of a direct run and a runner run of ``cli``; (version, direct, runner) seconds."""
    from llm_runners import process
    from llm_runners.testing.fake_api import FakeModelAPI
    from llm_runners.types import ChatRequest, Message

    request = ChatRequest(messages=[Message(role="system", content="Be brief."), Message(role="user", content="Hi.")])
    with tempfile.TemporaryDirectory(prefix=f"llm-runners-bench-{cli}-") as tmp, FakeModelAPI() as api:
        runner = CLI_SETUPS[cli](Path(tmp), api)

        async def direct_once() -> float:
            turn = runner._turn(request, None, 0)
            try:
                inv = runner.invocation(turn)
                runner.new_parser(turn)  # the per-run preparation a dialect does there (Qwen links its debug log)
                child_env = process.build_env({**runner.child_env(), **inv.env}, runner.pass_env)
                elapsed, _ = await _direct([*inv.argv, *runner.extra_args], inv.stdin, child_env, turn.workdir)
            finally:
                shutil.rmtree(turn.assets)
            return elapsed

        async def runner_once() -> float:
            start = time.perf_counter()
            response = await runner.complete(request)
            if "pong" not in response.content:
                raise SystemExit(f"{cli} runner answer unexpected: {response.content!r}")
            return time.perf_counter() - start

        await direct_once()  # warm-up: the first run of a fresh home creates the CLI's database
        direct: list[float] = []
        wrapped: list[float] = []
        print(f"{cli}: {'run':>3}  {'direct s':>9}  {'llm-runners s':>13}")
        for i in range(runs):
            pair = [(direct_once, direct), (runner_once, wrapped)]
            for once, results in pair if i % 2 == 0 else pair[::-1]:
                results.append(await once())
            print(f"{cli}: {i + 1:>3}  {direct[-1]:>9.3f}  {wrapped[-1]:>13.3f}")
        version = await runner.version() or "?"
        await runner.aclose()
    return version, direct, wrapped


async def main_clis(clis: list[str], runs: int) -> None:
    results = [(cli, *await measure_cli(cli, runs)) for cli in clis]
    print()
    print(
        f"{'cli':<10} {'version':<10} {'direct ms':>10} {'runner ms':>10} {'runner/direct':>14}"
        f"  ({runs} alternating runs)"
    )
    for cli, version, direct, wrapped in results:
        md, mw = statistics.median(direct), statistics.median(wrapped)
        print(f"{cli:<10} {version:<10} {md * 1000:>10.1f} {mw * 1000:>10.1f} {mw / md:>14.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cli", action="append", choices=sorted(CLI_SETUPS), help="measure this CLI instead")
    args = parser.parse_args()
    if not _isolated():
        _reexec_isolated()
    sys.path.insert(0, str(ROOT / "src"))
    asyncio.run(main_clis(args.cli, args.runs) if args.cli else main(args.runs))
