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


def _claude_cli(home: Path, api: Any) -> Any:
    from llm_runners.runners.claude_code import ClaudeCodeRunner
    from llm_runners.sessions import SessionStore

    env = {"HOME": str(home), "TMPDIR": str(home), "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "dummy"}
    env["CLAUDE_CODE_MAX_RETRIES"] = "0"
    return ClaudeCodeRunner(binary=str(CLAUDE), env=env, sessions=SessionStore(), timeout=60)


def _codex(home: Path, api: Any) -> Any:
    """Codex's one-shot transport (``exec --json``, a process per turn), with the fake as the user's provider."""
    from codex_env import codex_env, fake_provider_args

    from llm_runners.runners.codex import CodexRunner
    from llm_runners.sessions import SessionStore

    return CodexRunner(
        transport="exec",
        binary=str(ROOT / "tests" / "clis" / "node_modules" / ".bin" / "codex"),
        env=codex_env({"HOME": str(home), "TMPDIR": str(home)}),
        model="fake-model",
        extra_args=fake_provider_args(api.openai_base_url),
        sessions=SessionStore(),
    )


def _gemini(home: Path, api: Any) -> Any:
    from gemini_env import RUNNER_SETTINGS, gemini_env

    from llm_runners.runners.gemini import GeminiRunner
    from llm_runners.sessions import SessionStore

    env = gemini_env({"HOME": str(home), "TMPDIR": str(home)}, api.gemini_base_url, "dummy")
    binary = str(ROOT / "tests" / "clis" / "node_modules" / ".bin" / "gemini")
    return GeminiRunner(
        binary=binary, env=env, settings=RUNNER_SETTINGS, model="gemini-2.5-flash", sessions=SessionStore()
    )


#: CLI name -> a function (throw-away HOME, fake API) -> a runner set up to answer from the fake
CLI_SETUPS: dict[str, Any] = {
    "claude_code": _claude_cli,
    "codex": _codex,
    "gemini": _gemini,
    "opencode": _opencode_like("opencode"),
    "kilo": _opencode_like("kilo"),
    "copilot": _copilot,
    "qwen": _qwen,
    "cline": _cline,
    "continue": _continue,
}


class _Lifetimes:
    """When each process the runner starts was asked for and when its exit was seen: the CLI's own time inside a
    runner run, so that what the runner adds around it can be told apart from the CLI's run-to-run noise."""

    def __init__(self) -> None:
        from llm_runners import process

        self.spans: list[list[float]] = []
        start, on_exit = process.start, process.Process._on_exit
        spans = self.spans

        async def timed_start(spec: Any) -> Any:
            span = [time.perf_counter(), 0.0]
            proc = await start(spec)
            proc._bench_span = span  # type: ignore[attr-defined]
            spans.append(span)
            return proc

        def timed_exit(proc: Any) -> None:
            span = getattr(proc, "_bench_span", None)
            if span is not None:
                span[1] = time.perf_counter()
            on_exit(proc)

        process.start = timed_start  # type: ignore[assignment]
        process.Process._on_exit = timed_exit  # type: ignore[method-assign]

    def take(self) -> float:
        """The CLI's time in the run just finished: first spawn asked for to last exit seen."""
        spans, self.spans[:] = list(self.spans), []
        if not spans or not all(end for _, end in spans):
            raise SystemExit("a runner run ended without its process's exit being seen")
        return max(end for _, end in spans) - min(begin for begin, _ in spans)


async def measure_cli(cli: str, runs: int, lifetimes: _Lifetimes) -> dict[str, Any]:
    """``runs`` alternating pairs of a direct run and a runner run of ``cli``."""
    from llm_runners import process
    from llm_runners.testing.fake_api import FakeModelAPI
    from llm_runners.types import ChatRequest, Message

    request = ChatRequest(messages=[Message(role="system", content="Be brief."), Message(role="user", content="Hi.")])
    with tempfile.TemporaryDirectory(prefix=f"llm-runners-bench-{cli}-") as tmp, FakeModelAPI() as api:
        runner = CLI_SETUPS[cli](Path(tmp), api)

        async def direct_once() -> float:
            """The process the runner would start, exactly (argv, environment, stdin, working directory), started
            with plain asyncio and read to the end."""
            turn = runner._turn(request, None, 0)
            try:
                inv = runner.invocation(turn)
                runner.new_parser(turn)  # the per-run preparation a dialect does there (Qwen links its debug log)
                spec = runner.process_spec(turn, inv, [])
                child_env = process.build_env(spec.env, spec.pass_env)
                elapsed, _ = await _direct(list(spec.argv), spec.stdin, child_env, Path(spec.cwd or turn.workdir))
            finally:
                shutil.rmtree(turn.assets, ignore_errors=True)
            return elapsed

        async def runner_once() -> tuple[float, float]:
            lifetimes.spans.clear()  # whatever ran before (a version check) is not this run
            start = time.perf_counter()
            response = await runner.complete(request)
            total = time.perf_counter() - start
            if "pong" not in response.content:
                raise SystemExit(f"{cli} runner answer unexpected: {response.content!r}")
            return total, total - lifetimes.take()

        await direct_once()  # warm-up: the first run of a fresh home creates the CLI's database and config files
        await runner_once()
        direct: list[float] = []
        wrapped: list[float] = []
        added: list[float] = []

        async def runner_run() -> None:
            total, extra = await runner_once()
            wrapped.append(total)
            added.append(extra)

        async def direct_run() -> None:
            direct.append(await direct_once())

        print(f"{cli}: {'run':>3}  {'direct s':>9}  {'llm-runners s':>13}  {'added ms':>9}")
        for i in range(runs):
            for once in (direct_run, runner_run) if i % 2 == 0 else (runner_run, direct_run):
                await once()
            print(f"{cli}: {i + 1:>3}  {direct[-1]:>9.3f}  {wrapped[-1]:>13.3f}  {added[-1] * 1000:>9.1f}")
        version = await runner.version() or "?"
        await runner.aclose()
    md, mw, ma = statistics.median(direct), statistics.median(wrapped), statistics.median(added)
    return {
        "cli": cli,
        "version": version,
        "direct_ms": md * 1000,
        "runner_ms": mw * 1000,
        "ratio": mw / md,
        "paired": statistics.median(w / d for w, d in zip(wrapped, direct, strict=True)),
        "added_ms": ma * 1000,
        "accounted": (md + ma) / md,
    }


async def main_clis(clis: list[str], runs: int) -> None:
    lifetimes = _Lifetimes()
    results = [await measure_cli(cli, runs, lifetimes) for cli in clis]
    print()
    print(f"{runs} alternating runs per CLI against the fake model API on 127.0.0.1 (loopback-only namespace)")
    head = f"{'cli':<12} {'version':<9} {'direct ms':>10} {'runner ms':>10} {'runner/direct':>14} {'paired':>7}"
    print(f"{head} {'added ms':>9} {'accounted':>10}")
    for r in results:
        print(
            f"{r['cli']:<12} {r['version']:<9} {r['direct_ms']:>10.1f} {r['runner_ms']:>10.1f} {r['ratio']:>14.3f}"
            f" {r['paired']:>7.3f} {r['added_ms']:>9.1f} {r['accounted']:>10.3f}"
        )
    print(
        "runner/direct: ratio of the medians; paired: median of each run's ratio to the direct run next to it;\n"
        "added ms: median of (runner run - the CLI's own time inside it: first spawn asked for to exit seen), what\n"
        "the runner adds before and after the CLI; accounted: (direct + added) / direct. Target: <= 1.02."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--cli", action="append", choices=[*sorted(CLI_SETUPS), "all"], help="measure this CLI instead (or all)"
    )
    args = parser.parse_args()
    if not _isolated():
        _reexec_isolated()
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # codex_env, gemini_env: the fake provider as the e2e tests set it
    clis = list(CLI_SETUPS) if args.cli and "all" in args.cli else args.cli
    asyncio.run(main_clis(clis, args.runs) if clis else main(args.runs))
