"""What the HTTP server costs, measured side by side in one run.

    .venv/bin/python benchmarks/server.py [--seconds 4] [--requests 2000] [--concurrency 50]

Three processes, so the load generator does not eat the CPU the server needs and the numbers are not distorted by
one event loop serving both ends:

- this one, the coordinator: measures the provider in-process, starts the others, prints the table;
- the server: ``create_app`` over ``Router.from_settings`` with the :class:`ScriptedProvider` (the full stack as
  deployed: auth and body-limit middleware, feature adapter, concurrency limit), under uvicorn on 127.0.0.1 with
  the event loop and HTTP parser it picks by itself (uvloop and httptools, project dependencies, when they import);
- the client: a minimal HTTP/1.1 client on raw asyncio streams over keep-alive connections (its own per-request
  cost is a few microseconds, far below an HTTP library's), sending pre-built requests.

Two servers run side by side, identical but for what an operator turns on: ``observed`` logs every request at info
(the ``llm_runners.access`` line, text format, to a file) and keeps the Prometheus metrics; ``bare`` logs at warning
and has metrics off. Their phases alternate, twice each, so both see the same machine; the better round of each
is kept.

Printed: p50/p99 latency at concurrency 1 in-process and through each server (the difference is what the server
adds; target <= 1 ms at p50), and requests per second at ``--concurrency`` through each server (target >= 2,000/s on
2 cores, and observed >= 90 % of bare), for JSON chat completions and for streamed ones. Each phase is bounded by
``--seconds`` and by ``--requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

BODY = {"model": "scripted", "messages": [{"role": "user", "content": "hello there, how are you today?"}]}
STREAM_BODY = {**BODY, "stream": True}


# ------------------------------------------------------------------------------------------------ server process


def serve(port: int, observed: bool, log_path: str) -> None:
    import uvicorn

    from llm_runners import logs
    from llm_runners.config import ProviderSettings, Settings
    from llm_runners.router import Router
    from llm_runners.server.app import create_app

    log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115  # open for the life of the process
    logs.configure("info" if observed else "warning", "text", stream=log_file)
    settings = Settings(
        port=port,
        providers={"scripted": ProviderSettings(options={"type": "scripted"}, max_concurrency=256, max_queue=256)},
        metrics=observed,
    )
    app = create_app(Router.from_settings(settings), settings)
    level = "info" if observed else "warning"
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, log_level=level, access_log=False, lifespan="on")


# ------------------------------------------------------------------------------------------------ client process


def _request_bytes(port: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked); returns the status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    start = lower.index(b"content-length:") + 15
    length = int(lower[start : lower.index(b"\r\n", start)])
    await reader.readexactly(length)
    return status


async def _worker(port: int, request: bytes, deadline: float, budget: list[int], out: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors = 0
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            t0 = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            out.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
    finally:
        writer.close()
    return errors


async def _load(port: int, stream: bool, concurrency: int, seconds: float, count: int) -> dict[str, Any]:
    request = _request_bytes(port, STREAM_BODY if stream else BODY)
    warm: list[float] = []
    await _worker(port, request, time.perf_counter() + 1.0, [min(200, count)], warm)
    latencies: list[float] = []
    budget = [count]
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(_worker(port, request, started + seconds, budget, latencies) for _ in range(concurrency))
    )
    wall = time.perf_counter() - started
    return {"n": len(latencies), "wall": wall, "errors": sum(errors), "latencies": latencies}


def client(port: int, stream: bool, concurrency: int, seconds: float, count: int) -> None:
    result = asyncio.run(_load(port, stream, concurrency, seconds, count))
    json.dump(result, sys.stdout)


# ------------------------------------------------------------------------------------------------ in-process


async def _in_process(stream: bool, seconds: float, count: int) -> list[float]:
    from llm_runners.provider import collect
    from llm_runners.testing.scripted import ScriptedProvider
    from llm_runners.types import ChatRequest

    provider = ScriptedProvider()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    for i in range(count + 200):
        if time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        request = ChatRequest.model_validate(BODY)
        if stream:
            await collect(provider.stream(request))
        else:
            await provider.complete(request)
        if i >= 200:  # warm-up excluded, as for the server
            latencies.append(time.perf_counter() - t0)
    return latencies


# ------------------------------------------------------------------------------------------------ coordinator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the server did not listen on {port} within {timeout} s")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_client(
    port: int, stream: bool, concurrency: int, seconds: float, count: int, server_pid: int | None = None
) -> dict[str, Any]:
    argv = [
        sys.executable,
        __file__,
        "--client",
        str(port),
        str(int(stream)),
        str(concurrency),
        str(seconds),
        str(count),
    ]
    before = _cpu_seconds(server_pid) if server_pid is not None else None
    out = subprocess.run(argv, check=True, capture_output=True, timeout=seconds + 60)
    after = _cpu_seconds(server_pid) if server_pid is not None else None
    result: dict[str, Any] = json.loads(out.stdout)
    # the server's CPU per request: what its throughput would be on a core of its own, whatever else runs
    result["cpu_us"] = (after - before) / result["n"] * 1e6 if before is not None and after is not None else None
    return result


def _implementations() -> str:
    """The event loop and HTTP parser uvicorn picks ("auto": uvloop and httptools when they import)."""
    names = []
    for fast, fallback in (("uvloop", "asyncio"), ("httptools", "h11")):
        try:
            __import__(fast)
            names.append(fast)
        except ImportError:
            names.append(fallback)
    return " + ".join(names)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _start_server(observed: bool, log_path: str) -> tuple[int, subprocess.Popen[bytes]]:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, __file__, "--serve", str(port), str(int(observed)), log_path]
    proc = subprocess.Popen(argv, env=env)
    _wait_listening(port, proc)
    return port, proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _rate(r: dict[str, Any]) -> float:
    return float(r["n"] / r["wall"]) if r["wall"] else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="upper bound per phase (default 4)")
    parser.add_argument("--requests", type=int, default=2000, help="upper bound of requests per phase (default 2000)")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()

    logs_dir = tempfile.mkdtemp(prefix="llm-runners-bench-")
    log_path = os.path.join(logs_dir, "observed.log")
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        servers["bare"] = _start_server(False, os.path.join(logs_dir, "bare.log"))
        servers["observed"] = _start_server(True, log_path)
        rows = []
        cpu: dict[bool, dict[str, list[float | None]]] = {st: {"bare": [], "observed": []} for st in (False, True)}
        for stream in (False, True):
            local = asyncio.run(_in_process(stream, args.seconds, args.requests))
            one: dict[str, dict[str, Any]] = {}
            many: dict[str, dict[str, Any]] = {}
            for _ in range(2):  # alternate, and keep each server's better round
                for name, (port, proc) in servers.items():
                    r1 = _run_client(port, stream, 1, args.seconds, args.requests)
                    if name not in one or _pct(r1["latencies"], 0.5) < _pct(one[name]["latencies"], 0.5):
                        one[name] = r1
                    rn = _run_client(port, stream, args.concurrency, args.seconds, args.requests * 5, proc.pid)
                    if name not in many or _rate(rn) > _rate(many[name]):
                        many[name] = rn
                    cpu[stream][name].append(rn["cpu_us"])
            rows.append((stream, local, one, many))
    finally:
        for _port, proc in servers.values():
            _stop(proc)
    with open(log_path, encoding="utf-8") as fh:
        logged = sum(1 for line in fh if " llm_runners.access request " in line)
    shutil.rmtree(logs_dir, ignore_errors=True)

    print(
        f"llm-runners server benchmark: ScriptedProvider, uvicorn ({_implementations()}) on 127.0.0.1, "
        f"{os.cpu_count()} CPUs"
    )
    print("bare = log level warning, metrics off; observed = a log line per request at info + /metrics on")
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'n':>8}{'errors':>8}{'CPU us/req':>12}")
    for stream, local, one, many in rows:
        kind = "streamed" if stream else "JSON"
        print(f"{kind} chat completion")
        print(f"  {'in-process, c=1':26}{_pct(local, 0.5):10.3f}{_pct(local, 0.99):10.3f}{'':>10}{len(local):8}{'':>8}")
        best_cpu: dict[str, float | None] = {}
        for name in servers:
            measured = [c for c in cpu[stream][name] if c is not None]
            best_cpu[name] = min(measured) if measured else None
            for label, r in ((f"{name}, c=1", one[name]), (f"{name}, c={args.concurrency}", many[name])):
                lat = r["latencies"]
                cpu_us = best_cpu[name] if r is many[name] else None
                cpu_text = f"{cpu_us:12.0f}" if cpu_us is not None else ""
                print(
                    f"  {label:26}{_pct(lat, 0.5):10.3f}{_pct(lat, 0.99):10.3f}{_rate(r):10.0f}{r['n']:8}"
                    f"{r['errors']:8}{cpu_text}"
                )
        for name in servers:
            added = _pct(one[name]["latencies"], 0.5) - _pct(local, 0.5)
            rate = _rate(many[name])
            print(
                f"  {name}: added by the server at p50: {added:.3f} ms (target <= 1 ms: "
                f"{'met' if added <= 1 else 'MISSED'}); throughput {rate:.0f}/s (target >= 2000/s: "
                f"{'met' if rate >= 2000 else 'MISSED'})"
            )
        ratio = _rate(many["observed"]) / _rate(many["bare"])
        print(f"  observed / bare throughput: {ratio:.3f} (target >= 0.90: {'met' if ratio >= 0.9 else 'MISSED'})")
        bare_cpu, observed_cpu = best_cpu["bare"], best_cpu["observed"]
        if bare_cpu and observed_cpu:  # on a shared machine the steadier figure: waiting for a core is not counted
            r = bare_cpu / observed_cpu
            print(
                f"  observed / bare throughput per CPU second (bare {bare_cpu:.0f} us vs observed "
                f"{observed_cpu:.0f} us per request): {r:.3f} (target >= 0.90: {'met' if r >= 0.9 else 'MISSED'})"
            )
    print(f"access lines the observed server logged: {logged}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--client":
        _, _, port_s, stream_s, conc_s, sec_s, count_s = sys.argv
        client(int(port_s), stream_s == "1", int(conc_s), float(sec_s), int(count_s))
    else:
        main()
