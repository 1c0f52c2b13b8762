"""Chaos soak: a real ``llm-runners serve`` under a stream of requests to CLIs that misbehave, from clients that
misbehave too; afterwards nothing may be left behind.

    .venv/bin/python benchmarks/soak.py [--requests 2000] [--concurrency 50] [--seed 1] [--json out.json]

The server is the real command (``llm-runners serve``, its own process, guarded, with its own TMPDIR) configured
with the real dialect runners (Claude Code's stream-json, Codex's ``exec --json``, Gemini's stream-json, and a
Claude Code entry limited to 2 at once with a queue of 2, so some requests meet a full queue) pointed at one
stand-in script that speaks each dialect and does what the prompt tells it:

=============  =========================================================================================
ok             a normal answer naming the request (checked word for word)
slow           the same answer in five deltas 0.15 s apart
chatty         1 MB of deltas, then a normal end (checked by length)
hang_before    nothing on stdout; ignores SIGTERM; a grandchild in its group ignores it too (idle timeout)
hang_after     a partial answer, then the same hang
crash          a partial answer, then SIGKILL of itself
flood          a 20 MB line with no newline (the line limit)
garbage        unreadable lines, then exit 0
silent         exit 0 with nothing
fail           a rate-limit message on stderr, exit 1
=============  =========================================================================================

Requests mix the three front doors (Chat Completions, Messages, Responses), JSON and streams; about one in six
clients disconnects at a random point (half-way through sending the body, right after sending it, after the
status line, after some bytes of the body). Every other request must get an answer: for ``ok`` / ``slow`` /
``chatty`` the right one, for a fault a typed error (a 4xx/5xx in the front door's envelope, or a stream that ends
with the front door's error event), never a 500, never a stream cut without its end, and each within
``request_timeout`` + 1 s.

A warm-up (a tenth of the requests, at least 100, every mode equally often, so the big-buffer modes reach their
peak concurrency and the allocator its high-water mark) runs first; then the server's open file descriptors and RSS
are taken as the baseline (the RSS after each eighth of the soak is printed too: growth that levels off is the
allocator's, a leak keeps growing). After the soak and a settle: 0 child processes of the server (its watchdog aside),
0 stand-in processes anywhere, 0 temp dirs, fds and RSS within 10 % of the baseline. The figures are printed (and
written as JSON with ``--json``); the exit status is 0 only when every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_runners.testing import procs
from llm_runners.testing.standin import DIALECT_EVENTS

# ------------------------------------------------------------------------------------------------ the stand-in
STAND_IN = r"""#!{python} -IS
import json, os, re, signal, subprocess, sys, time, uuid

DIALECT = os.environ["STANDIN_DIALECT"]
args = sys.argv[1:]
raw = (sys.stdin.buffer.readline() if DIALECT == "claude_code" else sys.stdin.buffer.read()).decode()
if DIALECT == "claude_code":
    content = json.loads(raw)["message"]["content"]
    raw = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
found = re.search(r"soak (\S+) mode=(\w+)", raw)
rid, mode = found.groups() if found else ("?", "ok")
sid = args[args.index("--session-id") + 1] if "--session-id" in args else str(uuid.uuid4())
out = sys.stdout.buffer


{dialect_events}

def hang():
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    subprocess.Popen([sys.executable, "-IS", "-c", code, sys.argv[0]])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


answer = "answer-" + rid
if mode == "ok":
    start(); delta(answer, 0); end(answer)
elif mode == "slow":
    start()
    for n, part in enumerate(("answer", "-", rid)):
        delta(part, n)
        time.sleep(0.15)
    end(answer)
elif mode == "chatty":
    start()
    for n in range(2000):
        delta("c" * 500, n)
    end("c" * 1000000)
elif mode == "hang_before":
    hang()
elif mode == "hang_after":
    start(); delta("partial ", 0); hang()
elif mode == "crash":
    start(); delta("partial ", 0)
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "flood":
    start()
    chunk = b"f" * (1 << 20)
    for _ in range(20):
        out.write(chunk)
    out.flush()
elif mode == "garbage":
    out.write(b"Loading, please wait...\n" + os.urandom(2000).replace(b"\n", b".") + b"\n\xff\xfe garbage\n[1, 2]\n")
    out.flush()
elif mode == "silent":
    pass
elif mode == "fail":
    sys.stderr.write("Error: 429 Too Many Requests: rate limit exceeded, retry after 2s\n")
    sys.exit(1)
"""

#: mode -> weight in the mix
MODES = {
    "ok": 30,
    "slow": 8,
    "chatty": 4,
    "hang_before": 6,
    "hang_after": 6,
    "crash": 8,
    "flood": 3,
    "garbage": 6,
    "silent": 5,
    "fail": 5,
}
GOOD = {"ok", "slow", "chatty"}
#: disconnect point -> weight (None: the client stays to the end)
DISCONNECTS: dict[str | None, int] = {None: 84, "mid_request": 4, "after_request": 4, "after_status": 4, "mid_body": 4}
PROVIDERS = {"claude_code": 4, "codex": 3, "gemini": 3, "tight": 1}
FRONTS = ("chat", "messages", "responses")

REQUEST_TIMEOUT = 8.0  # the server's request_timeout
RUN_TIMEOUT = 6.0  # each runner's total timeout
IDLE_TIMEOUT = 2.0  # each runner's idle timeout
CLIENT_LIMIT = 30.0  # a request still unanswered after this counts as hung


# ------------------------------------------------------------------------------------------------ the server
def write_config(work: Path, stand_in: Path, home: Path) -> Path:
    keys = 'ANTHROPIC_API_KEY = "k", OPENAI_API_KEY = "k", GEMINI_API_KEY = "k"'
    lines = [f"request_timeout = {REQUEST_TIMEOUT}", "shutdown_grace = 5.0", "metrics = true", ""]
    for name, (kind, limit, queue) in {
        "claude_code": ("claude_code", 12, 200),
        "codex": ("codex", 12, 200),
        "gemini": ("gemini", 12, 200),
        "tight": ("claude_code", 2, 2),
    }.items():
        lines += [
            f"[providers.{name}]",
            f"max_concurrency = {limit}",
            f"max_queue = {queue}",
            f"[providers.{name}.options]",
            f'type = "{kind}"',
            f'binary = "{stand_in}"',
            f"timeout = {RUN_TIMEOUT}",
            f"idle_timeout = {IDLE_TIMEOUT}",
            "warm = 0",
            *(['transport = "exec"'] if kind in ("codex", "gemini") else []),
            f'env = {{ STANDIN_DIALECT = "{kind}", HOME = "{home}", {keys} }}',
            "",
        ]
    path = work / "soak.toml"
    path.write_text("\n".join(lines))
    return path


class Server:
    """``llm-runners serve`` as a subprocess with its own TMPDIR; stderr drained by a thread."""

    def __init__(self, config: Path, tmp: Path) -> None:
        cli = str(Path(sys.executable).with_name("llm-runners"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_RUNNERS_")}
        env["TMPDIR"] = str(tmp)
        self.tmp = tmp
        with socket.socket() as sock:  # a free port (the server logs its own only at info, which this keeps off)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [cli, "--config", str(config), "serve", "--port", str(self.port), "--log-level", "warning"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.lines) < 10_000:
                self.lines.append(line)

    def wait_ready(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start:\n" + "".join(self.lines))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    if sock.recv(12).endswith(b"200"):
                        return self.port
            except OSError:
                pass
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reader.join(5)
        return self.proc.wait()


# ------------------------------------------------------------------------------------------------ /proc figures
#: a directory a runner keeps for its life (``CLIRunner.owned_tempdir``), not one of a request
RUNNER_DIR = re.compile(r"llm-runners-\w+-(?:work|home|runtime|codex-home|warm|usage)-")


@dataclass
class State:
    children: int  # the server's descendants but its watchdog
    stand_ins: int  # stand-in processes anywhere (reparented ones included)
    temp_dirs: int  # entries in the server's TMPDIR and its instance root, but the root, its owner file, runner dirs
    runner_dirs: int  # the directories each runner keeps for its life (its working directory, a CLI home)
    fds: int
    rss_kb: int


def server_state(server: Server, marker: str) -> State:
    pid = server.proc.pid
    watchdogs = set(procs.running("import os, shutil, signal"))  # the server's watchdog (the process layer's)
    kids = [p for p in procs.descendants(pid) if p not in watchdogs]
    names: list[str] = []
    for entry in server.tmp.iterdir():
        if entry.name.startswith("llm-runners-serve-") and (entry / "owner").is_file():
            names += [e.name for e in entry.iterdir() if e.name != "owner"]
        else:
            names.append(entry.name)
    runner_dirs = sum(1 for name in names if RUNNER_DIR.match(name))
    rss = rss_kb(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return State(len(kids), len(procs.running(marker)), len(names) - runner_dirs, runner_dirs, fds, rss)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(server: Server, marker: str, seconds: float = 10.0) -> State:
    """The server's state once no child is left (or ``seconds`` passed)."""
    deadline = time.monotonic() + seconds
    while True:
        state = server_state(server, marker)
        if (state.children == state.stand_ins == state.temp_dirs == 0) or time.monotonic() > deadline:
            time.sleep(0.5)  # let the fds of the last ones close
            return server_state(server, marker)
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------ the clients
@dataclass
class Case:
    rid: str
    front: str
    provider: str
    mode: str
    stream: bool
    disconnect: str | None


@dataclass
class Outcome:
    case: Case
    status: int | None = None
    first: float = 0.0  # seconds to the status line
    elapsed: float = 0.0
    verdict: str = ""  # "answer" | "typed_error" | "disconnected" | a problem
    detail: str = ""


def plan(count: int, rng: random.Random, prefix: str, modes: dict[str, int]) -> list[Case]:
    def pick(weights: dict[Any, int]) -> Any:
        return rng.choices(list(weights), weights=list(weights.values()))[0]

    return [
        Case(f"{prefix}{n}", rng.choice(FRONTS), pick(PROVIDERS), pick(modes), rng.random() < 0.5, pick(DISCONNECTS))
        for n in range(count)
    ]


def request_bytes(case: Case, port: int) -> bytes:
    prompt = f"soak {case.rid} mode={case.mode}"
    messages = [{"role": "user", "content": prompt}]
    if case.front == "chat":
        path, body = "/v1/chat/completions", {"model": case.provider, "messages": messages}
    elif case.front == "messages":
        path, body = "/v1/messages", {"model": case.provider, "max_tokens": 64, "messages": messages}
    else:
        path, body = "/v1/responses", {"model": case.provider, "input": prompt, "store": False}
    body["stream"] = case.stream
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + payload


async def read_body(reader: asyncio.StreamReader, head: bytes) -> tuple[bytes, bool]:
    """The body; False when it was cut (connection closed before its end)."""
    lower = head.lower()
    chunks: list[bytes] = []
    try:
        if b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    return b"".join(chunks), True
                chunks.append(data[:-2])
        found = re.search(rb"content-length: *(\d+)", lower)
        if found:
            return await reader.readexactly(int(found.group(1))), True
        return await reader.read(), True
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return b"".join(chunks), False


def _error_type(body: Any, front: str) -> str | None:
    """The error's type when ``body`` is the front door's error envelope."""
    if not isinstance(body, dict):
        return None
    error = body.get("error") if front != "messages" or body.get("type") == "error" else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) and kind else None


def _sse(body: bytes) -> list[tuple[str | None, Any]]:
    events: list[tuple[str | None, Any]] = []
    for block in body.decode("utf-8", "replace").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if not data:
            continue
        text = "\n".join(data)
        try:
            events.append((name, json.loads(text) if text != "[DONE]" else "[DONE]"))
        except ValueError:
            events.append((name, text))
    return events


def _text_of_json(body: Any, front: str) -> str:
    if front == "chat":
        return str(body["choices"][0]["message"]["content"])
    if front == "messages":
        return "".join(b.get("text", "") for b in body["content"] if b.get("type") == "text")
    return "".join(
        c.get("text", "") for item in body["output"] if item.get("type") == "message" for c in item["content"]
    )


def judge(case: Case, status: int, body: bytes, complete: bool) -> tuple[str, str]:
    """(verdict, detail) for a response read to its end."""
    if status == 500:
        return "500", body[:300].decode("utf-8", "replace")
    if not complete:
        return "cut", f"status {status}, body cut after {len(body)} bytes"
    is_sse = case.stream and status == 200
    if not is_sse:
        try:
            obj = json.loads(body)
        except ValueError:
            return "bad_body", body[:300].decode("utf-8", "replace")
        if status != 200:
            kind = _error_type(obj, case.front)
            return ("typed_error", f"{status} {kind}") if kind else ("untyped_error", body[:300].decode())
        try:
            text = _text_of_json(obj, case.front)
        except (KeyError, IndexError, TypeError, AttributeError):
            return "bad_body", body[:300].decode("utf-8", "replace")
        return _judge_text(case, text)
    events = _sse(body)
    if not events:
        return "bad_stream", "no events"
    name, last = events[-1]
    text_parts: list[str] = []
    error: str | None = None
    for ev_name, data in events:
        if not isinstance(data, dict):
            continue
        if case.front == "chat":
            if "error" in data:
                error = _error_type(data, "chat")
            for choice in data.get("choices") or []:
                text_parts.append((choice.get("delta") or {}).get("content") or "")
        elif case.front == "messages":
            if ev_name == "error":
                error = _error_type(data, "messages")
            elif ev_name == "content_block_delta":
                text_parts.append(data["delta"].get("text", ""))
        else:
            if ev_name == "response.failed":
                error = str((data.get("response") or {}).get("error", {}).get("code"))
            elif ev_name == "response.output_text.delta":
                text_parts.append(data.get("delta", ""))
    ends = {
        "chat": last == "[DONE]" or (isinstance(last, dict) and "error" in last),
        "messages": name in ("message_stop", "error"),
        "responses": name in ("response.completed", "response.failed", "response.incomplete"),
    }[case.front]
    if not ends:
        return "bad_stream", f"stream ended with {name} {str(last)[:200]}"
    if error is not None:
        return "typed_error", f"stream error {error}"
    return _judge_text(case, "".join(text_parts))


def _judge_text(case: Case, text: str) -> tuple[str, str]:
    if case.mode not in GOOD:
        return "wrong_answer", f"a {case.mode} stand-in got an answer: {text[:100]!r}"
    if case.provider == "codex":  # Codex's answer is whole messages (items), joined by a blank line
        text = text.replace("\n\n", "")
    expected_ok = text == ("c" * 1_000_000 if case.mode == "chatty" else f"answer-{case.rid}")
    return ("answer", "") if expected_ok else ("wrong_answer", f"{text[:100]!r}")


async def run_case(case: Case, port: int, rng: random.Random, slack: float) -> Outcome:
    outcome = Outcome(case)
    t0 = time.monotonic()
    data = request_bytes(case, port)
    try:
        async with asyncio.timeout(CLIENT_LIMIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                if case.disconnect == "mid_request":
                    writer.write(data[: rng.randrange(1, len(data))])
                    await writer.drain()
                    outcome.verdict = "disconnected"
                    return outcome
                writer.write(data)
                await writer.drain()
                if case.disconnect == "after_request":
                    await asyncio.sleep(rng.uniform(0, 1.0))
                    outcome.verdict = "disconnected"
                    return outcome
                head = await reader.readuntil(b"\r\n\r\n")
                outcome.status = int(head[9:12])
                outcome.first = time.monotonic() - t0
                if case.disconnect == "after_status":
                    outcome.verdict = "disconnected"
                    return outcome
                if case.disconnect == "mid_body":
                    await reader.read(rng.randrange(1, 400))
                    outcome.verdict = "disconnected"
                    return outcome
                body, complete = await read_body(reader, head)
                outcome.elapsed = time.monotonic() - t0
                outcome.verdict, outcome.detail = judge(case, outcome.status, body, complete)
                if outcome.elapsed > REQUEST_TIMEOUT + slack:
                    outcome.detail = f"{outcome.verdict}: {outcome.detail}"
                    outcome.verdict = "late"
            finally:
                writer.close()
    except TimeoutError:
        outcome.verdict, outcome.detail = "hung", f"no complete answer in {CLIENT_LIMIT:g} s"
    except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
        outcome.verdict = "connection_error" if case.disconnect is None else "disconnected"
        outcome.detail = repr(exc)
    outcome.elapsed = outcome.elapsed or time.monotonic() - t0
    return outcome


async def run_all(
    cases: list[Case], port: int, concurrency: int, seed: int, slack: float, server_pid: int
) -> tuple[list[Outcome], float, list[float]]:
    """Every case, ``concurrency`` at a time; also the longest stall of this client's own event loop (time a
    late answer may have spent waiting for the client rather than the server) and the server's RSS in MB after
    each eighth of the cases (growth that levels off is the allocator's high-water mark; a leak keeps growing)."""
    queue = list(reversed(cases))
    outcomes: list[Outcome] = []
    lag = 0.0
    trace: list[float] = []
    step = max(1, len(cases) // 8)

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while queue:
            outcomes.append(await run_case(queue.pop(), port, rng, slack))
            if len(outcomes) % step == 0:
                trace.append(round(rss_kb(server_pid) / 1024, 1))

    async def ticker() -> None:
        nonlocal lag
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.05)
            lag = max(lag, time.monotonic() - t0 - 0.05)

    tick = asyncio.create_task(ticker())
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    tick.cancel()
    return outcomes, lag, trace


# ------------------------------------------------------------------------------------------------ main
@dataclass
class Report:
    requests: int
    concurrency: int
    seconds: float
    server_cpu_s: float
    slack_s: float
    client_stall_s: float
    faults_injected: int
    cli_faults: dict[str, int]
    client_disconnects: int
    verdicts: dict[str, int]
    by_mode: dict[str, dict[str, int]]
    statuses: dict[str, int]
    status_500: int
    problems: list[str]
    slowest_s: float
    baseline: dict[str, int]
    after: dict[str, int]
    rss_trace_mb: list[float]
    server_exit: int | None = None
    #: the end of the server's stderr (its warnings and errors), shown when a check fails
    server_log: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


def within(after: int, before: int, share: float = 0.10) -> bool:
    return after <= before * (1 + share)


def soak(
    requests: int,
    concurrency: int,
    seed: int,
    work: Path,
    modes: dict[str, int] = MODES,
    slack: float = 1.0,
    warmup: int = 100,
) -> Report:
    stand_in = work / "soak-stand-in"
    stand_in.write_text(STAND_IN.format(python=sys.executable, dialect_events=DIALECT_EVENTS))
    stand_in.chmod(0o755)
    home, tmp = work / "home", work / "tmp"
    home.mkdir()
    tmp.mkdir()
    server = Server(write_config(work, stand_in, home), tmp)
    marker = str(stand_in)
    try:
        port = server.wait_ready()
        rng = random.Random(seed)
        # every mode equally often, so the big-buffer ones (flood, chatty) reach their peak concurrency and the
        # allocator its high-water mark before the baseline: growth measured after that is what the soak adds
        warm = plan(warmup, rng, "w", dict.fromkeys(modes, 1))
        asyncio.run(run_all(warm, port, concurrency, seed + 1, slack, server.proc.pid))
        baseline = settle(server, marker)
        cases = plan(requests, rng, "r", modes)
        t0, cpu0 = time.monotonic(), cpu_seconds(server.proc.pid)
        outcomes, lag, trace = asyncio.run(run_all(cases, port, concurrency, seed + 2, slack, server.proc.pid))
        seconds, cpu = time.monotonic() - t0, cpu_seconds(server.proc.pid) - cpu0
        after = settle(server, marker)
    finally:
        code = server.stop()
    verdicts = Counter(o.verdict for o in outcomes)
    problems = [
        f"{o.case.rid} {o.case.front} {o.case.provider} {o.case.mode} stream={o.case.stream}: {o.verdict} {o.detail}"
        f" (status after {o.first:.2f} s, end after {o.elapsed:.2f} s)"
        for o in outcomes
        if o.verdict not in ("answer", "typed_error", "disconnected")
    ]
    cli_faults = Counter(c.mode for c in cases if c.mode not in GOOD)
    disconnects = sum(1 for c in cases if c.disconnect)
    report = Report(
        requests=len(outcomes),
        concurrency=concurrency,
        seconds=round(seconds, 1),
        server_cpu_s=round(cpu, 1),
        slack_s=slack,
        client_stall_s=round(lag, 2),
        faults_injected=sum(cli_faults.values()) + disconnects,
        cli_faults=dict(sorted(cli_faults.items())),
        client_disconnects=disconnects,
        verdicts=dict(sorted(verdicts.items())),
        by_mode={
            m: dict(sorted(Counter(o.verdict for o in outcomes if o.case.mode == m).items())) for m in sorted(modes)
        },
        statuses=dict(sorted(Counter(str(o.status) for o in outcomes if o.status is not None).items())),
        status_500=sum(1 for o in outcomes if o.status == 500),
        problems=problems[:50],
        slowest_s=round(max((o.elapsed for o in outcomes if o.case.disconnect is None), default=0.0), 2),
        baseline=asdict(baseline),
        after=asdict(after),
        rss_trace_mb=trace,
        server_exit=code,
        server_log=server.lines[-60:],
    )
    report.checks = {
        "every request answered or a typed error": not problems and len(outcomes) == requests,
        "no 500": report.status_500 == 0,
        "0 child processes": after.children == 0 and after.stand_ins == 0,
        "0 temp dirs": after.temp_dirs == 0,
        "fds within 10 %": within(after.fds, baseline.fds),
        "RSS within 10 %": within(after.rss_kb, baseline.rss_kb),
        "server exit 0": code == 0,
    }
    return report


def print_report(r: Report) -> None:
    print(f"requests            {r.requests} at concurrency {r.concurrency} in {r.seconds} s")
    print(f"server CPU          {r.server_cpu_s} s")
    print(f"faults injected     {r.faults_injected}: CLI {r.cli_faults}, client disconnects {r.client_disconnects}")
    print(f"verdicts            {r.verdicts}")
    for mode, verdicts in r.by_mode.items():
        print(f"  {mode:<17} {verdicts}")
    print(f"statuses            {r.statuses}")
    print(f"500s                {r.status_500}")
    print(f"slowest answer      {r.slowest_s} s (bound: request_timeout {REQUEST_TIMEOUT:g} s + {r.slack_s:g} s)")
    print(f"client loop stall   {r.client_stall_s} s at most (the load generator's own delay)")
    b, a = r.baseline, r.after
    print(f"orphans             children {a['children']}, stand-ins {a['stand_ins']}, temp dirs {a['temp_dirs']}")
    print(f"open fds            {b['fds']} after warm-up -> {a['fds']} after the soak")
    print(f"RSS                 {b['rss_kb'] / 1024:.1f} MB after warm-up -> {a['rss_kb'] / 1024:.1f} MB after")
    print(f"RSS during the run  {', '.join(f'{m:g}' for m in r.rss_trace_mb)} MB (after each eighth)")
    print(f"server exit         {r.server_exit}")
    for problem in r.problems:
        print(f"  problem: {problem}")
    if not r.ok and r.server_log:
        print("server log (its last lines):")
        for line in r.server_log:
            print(f"  | {line.rstrip()}")
    for name, passed in r.checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--modes", help="comma-separated stand-in modes to use (default: all, weighted)")
    parser.add_argument("--slack", type=float, default=1.0, help="seconds past request_timeout an answer may take")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests (default: a tenth, at least 100)")
    args = parser.parse_args(argv)
    modes = MODES if not args.modes else {m: MODES[m] for m in args.modes.split(",")}
    work = Path(tempfile.mkdtemp(prefix="llm-runners-soak-"))
    try:
        warmup = args.warmup if args.warmup is not None else max(100, args.requests // 10)
        report = soak(args.requests, args.concurrency, args.seed, work, modes, args.slack, warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
