"""llm-runners as a gateway, side by side with a bare Starlette proxy and the LiteLLM proxy, in one run.

    .venv/bin/python benchmarks/gateway.py [--seconds 4] [--requests 2000] [--concurrency 50] [--no-litellm]

Every gateway forwards OpenAI Chat Completions to the same instant mock upstream on 127.0.0.1 (a raw asyncio
server answering every POST with one canned completion), each in a process of its own under uvicorn:

- ``starlette``: the floor: a Starlette route that reads the JSON body, posts it upstream with one shared httpx2
  client and returns the upstream's body; nothing else;
- ``llm-runners``: ``create_app`` over ``Router.from_settings`` with the ``openai_compat`` provider (the full stack:
  auth and body-limit middleware, feature adapter, cost, concurrency limit), wrappers off, metrics off;
- ``llm-runners+wrappers``: the same with a fallback chain as the model name (one entry, the same provider), the
  response cache on (every request is a miss: each carries its own message) and ``/metrics`` on;
- ``litellm``: the LiteLLM proxy (``litellm --config``, no database, one worker), installed by this script into a
  venv of its own under ``$XDG_CACHE_HOME/llm-runners-bench`` (default ``~/.cache``; outside the repository) with
  pip on first use. It is then run with its model-price download and telemetry off.

The load generator is the one of ``benchmarks/server.py`` (raw asyncio keep-alive connections in a process of its
own); every request body is distinct, so no cache can answer. Printed per gateway: latency p50/p99 at concurrency
1, throughput at ``--concurrency``, and both as ratios to ``starlette``; the added latency of wrappers on over
bare Starlette (target <= 1 ms at p50) and the throughput of wrappers on over LiteLLM's (target >= 10x). Phases
alternate between the gateways, twice each; the better round of each is kept. The machine's load average is
printed with the table: the figures are only as steady as the machine.

Run it inside a loopback-only namespace once LiteLLM is installed (``--install`` does only that, with network):
``unshare -n sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/gateway.py'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from server import _cpu_seconds, _free_port, _implementations, _pct, _rate, _read_response, _stop, _wait_listening

LITELLM_SPEC = "litellm[proxy]"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-runners-bench"
LITELLM_VENV = CACHE / "litellm-venv"
#: the bearer every request carries: LiteLLM's master key (it refuses to start without one); the others ignore it
KEY = os.environ.get("GATEWAY_BENCH_KEY") or "sk-" + secrets.token_hex(32)

ANSWER = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}


# ------------------------------------------------------------------------------------------------ mock upstream


def upstream(port: int) -> None:
    """An instant OpenAI-compatible upstream: any request gets the canned completion (keep-alive, HTTP/1.1)."""
    body = json.dumps(ANSWER).encode()
    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    models = json.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode()
    models_response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(models)).encode()
        + b"\r\n\r\n"
        + models
    )

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].lower()
                length = 0
                if b"content-length:" in head:
                    start = head.index(b"content-length:") + 15
                    stop = head.find(b"\r\n", start)
                    length = int(head[start : stop if stop > 0 else len(head)])
                if len(self.buf) < end + 4 + length:
                    return
                self.buf = self.buf[end + 4 + length :]
                self.transport.write(models_response if head.startswith(b"get") else response)

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    _loop_run(run())


def _loop_run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


# ------------------------------------------------------------------------------------------------ gateways


def starlette_proxy(port: int, upstream_url: str) -> None:
    import httpx2
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    client = httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=256, max_keepalive_connections=256))

    async def chat(request: Request) -> Response:
        body = await request.json()
        answer = await client.post(upstream_url + "/chat/completions", json=body)
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def llm_runners(port: int, upstream_url: str, wrappers: bool) -> None:
    import uvicorn

    from llm_runners import logs
    from llm_runners.config import CacheSettings, FallbackSettings, ProviderSettings, Settings
    from llm_runners.router import Router
    from llm_runners.server.app import create_app

    logs.configure("warning", "text")
    options = {"type": "openai_compat", "base_url": upstream_url, "api_key": "sk-mock", "model": "mock"}
    settings = Settings(
        port=port,
        providers={"up": ProviderSettings(options=options, max_concurrency=256, max_queue=256)},
        metrics=wrappers,
    )
    if wrappers:
        settings.fallbacks = {"chain": FallbackSettings(models=["up:mock"])}
        settings.cache = CacheSettings(ttl=300, max_entries=100_000)
    app = create_app(Router.from_settings(settings), settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, log_level="warning", access_log=False)


def install_litellm() -> Path:
    """The LiteLLM proxy's venv (created and filled with pip on first use); returns its ``litellm`` command."""
    command = LITELLM_VENV / "bin" / "litellm"
    if command.exists():
        return command
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"installing {LITELLM_SPEC} into {LITELLM_VENV} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, LITELLM_SPEC], check=True)
    return command


def _litellm_version() -> str:
    out = subprocess.run(
        [str(LITELLM_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


def _start(
    argv: list[str], port: int, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, stdout=subprocess.DEVNULL)
    _wait_listening(port, proc, timeout)
    return proc


def start_litellm(port: int, upstream_url: str, workdir: str) -> subprocess.Popen[bytes]:
    command = install_litellm()
    config = Path(workdir) / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: mock\n"
        "    litellm_params:\n"
        "      model: openai/mock\n"
        f"      api_base: {upstream_url}\n"
        "      api_key: sk-mock\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
    )
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no price-list download at start-up
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "HOME": workdir,
        "LITELLM_MASTER_KEY": KEY,
    }
    argv = [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    return _start(argv, port, env, timeout=600.0)


# ------------------------------------------------------------------------------------------------ load


def _requests(port: int, model: str, count: int, tag: str) -> list[bytes]:
    """``count`` distinct requests (each message carries its own number, so no cache answers one)."""
    out = []
    for i in range(count):
        payload = json.dumps(
            {"model": model, "messages": [{"role": "user", "content": f"hello there {tag} #{i}, how are you?"}]}
        ).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {KEY}\r\ncontent-length: {len(payload)}\r\n\r\n"
        )
        out.append(head.encode() + payload)
    return out


async def _worker(port: int, queue: list[bytes], deadline: float, out: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors = 0
    try:
        while queue and time.perf_counter() < deadline:
            request = queue.pop()
            t0 = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            out.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
    finally:
        writer.close()
    return errors


async def _load(port: int, model: str, concurrency: int, seconds: float, count: int, tag: str) -> dict[str, Any]:
    warm = _requests(port, model, 100, f"warm-{tag}")
    await _worker(port, warm, time.perf_counter() + 5.0, [])
    queue = _requests(port, model, count, tag)
    latencies: list[float] = []
    started = time.perf_counter()
    errors = await asyncio.gather(*(_worker(port, queue, started + seconds, latencies) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {"n": len(latencies), "wall": wall, "errors": sum(errors), "latencies": latencies}


def client(port: int, model: str, concurrency: int, seconds: float, count: int, tag: str) -> None:
    json.dump(asyncio.run(_load(port, model, concurrency, seconds, count, tag)), sys.stdout)


def _run_client(
    port: int, model: str, concurrency: int, seconds: float, count: int, tag: str, pid: int
) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--client", str(port), model, str(concurrency), str(seconds), str(count), tag]
    before = _cpu_seconds(pid)
    env = {**os.environ, "GATEWAY_BENCH_KEY": KEY}
    out = subprocess.run(argv, check=True, capture_output=True, timeout=seconds + 120, env=env)
    after = _cpu_seconds(pid)
    result: dict[str, Any] = json.loads(out.stdout)
    n = max(1, result["n"])
    result["cpu_us"] = (after - before) / n * 1e6 if before is not None and after is not None else None
    return result


# ------------------------------------------------------------------------------------------------ coordinator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="upper bound per phase (default 4)")
    parser.add_argument("--requests", type=int, default=2000, help="upper bound of requests per phase (default 2000)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-litellm", action="store_true", help="leave the LiteLLM proxy out")
    parser.add_argument("--install", action="store_true", help="only install the LiteLLM proxy's venv, then exit")
    args = parser.parse_args()
    if args.install:
        print(install_litellm())
        return

    workdir = tempfile.mkdtemp(prefix="llm-runners-gateway-")
    procs: list[subprocess.Popen[bytes]] = []
    gateways: dict[str, tuple[int, subprocess.Popen[bytes], str]] = {}
    me = [sys.executable, __file__]
    try:
        up_port = _free_port()
        procs.append(_start([*me, "--upstream", str(up_port)], up_port))
        up_url = f"http://127.0.0.1:{up_port}/v1"
        for name, argv, model in (
            ("starlette", ["--starlette"], "mock"),
            ("llm-runners", ["--llm-runners", "0"], "up:mock"),
            ("llm-runners+wrappers", ["--llm-runners", "1"], "chain"),
        ):
            port = _free_port()
            proc = _start([*me, *argv, str(port), up_url], port)
            procs.append(proc)
            gateways[name] = (port, proc, model)
        if not args.no_litellm:
            port = _free_port()
            proc = start_litellm(port, up_url, workdir)
            procs.append(proc)
            gateways["litellm"] = (port, proc, "mock")

        one: dict[str, dict[str, Any]] = {}
        many: dict[str, dict[str, Any]] = {}
        for round_ in range(2):  # alternate, and keep each gateway's better round
            for name, (port, proc, model) in gateways.items():
                tag = f"{name}-{round_}"
                r1 = _run_client(port, model, 1, args.seconds, args.requests, tag + "-c1", proc.pid)
                if name not in one or _pct(r1["latencies"], 0.5) < _pct(one[name]["latencies"], 0.5):
                    one[name] = r1
                rn = _run_client(port, model, args.concurrency, args.seconds, args.requests * 5, tag + "-cN", proc.pid)
                if name not in many or _rate(rn) > _rate(many[name]):
                    many[name] = rn
        load = os.getloadavg()
    finally:
        for proc in procs:
            _stop(proc)

    print(
        f"gateway benchmark: instant mock upstream on 127.0.0.1, uvicorn ({_implementations()}), {os.cpu_count()} "
        f"CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        + ("" if args.no_litellm else f", litellm {_litellm_version()}")
    )
    base1 = _pct(one["starlette"]["latencies"], 0.5)
    base99 = _pct(one["starlette"]["latencies"], 0.99)
    base_rate = _rate(many["starlette"])
    print(
        f"{'':22}{'p50 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}{'+p50 ms':>9}"
        f"{'req/s c=' + str(args.concurrency):>13}{'x':>7}{'errors':>8}{'CPU us/req':>12}"
    )
    for name in gateways:
        lat = one[name]["latencies"]
        p50, p99, rate = _pct(lat, 0.5), _pct(lat, 0.99), _rate(many[name])
        errors = one[name]["errors"] + many[name]["errors"]
        cpu = many[name]["cpu_us"]
        print(
            f"{name:22}{p50:9.3f}{p99:9.3f}{p50 / base1:8.2f}{p99 / base99:8.2f}{p50 - base1:9.3f}"
            f"{rate:13.0f}{rate / base_rate:7.2f}{errors:8}{(f'{cpu:12.0f}' if cpu is not None else '')}"
        )
    added = _pct(one["llm-runners+wrappers"]["latencies"], 0.5) - base1
    print(
        f"wrappers on (fallback + cache miss + metrics) add {added:.3f} ms at p50 over bare Starlette "
        f"(target <= 1 ms: {'met' if added <= 1 else 'MISSED'})"
    )
    if "litellm" in gateways:
        ratio = _rate(many["llm-runners+wrappers"]) / max(_rate(many["litellm"]), 1e-9)
        print(f"wrappers on / LiteLLM throughput: {ratio:.1f}x (target >= 10x: {'met' if ratio >= 10 else 'MISSED'})")
        ours, theirs = many["llm-runners+wrappers"]["cpu_us"], many["litellm"]["cpu_us"]
        if ours and theirs:  # on a shared machine the steadier figure: time spent waiting for a core is not counted
            r = theirs / ours
            print(
                f"wrappers on / LiteLLM throughput per CPU second ({ours:.0f} vs {theirs:.0f} us per request): "
                f"{r:.1f}x (target >= 10x: {'met' if r >= 10 else 'MISSED'})"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--upstream":
        upstream(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--starlette":
        starlette_proxy(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--llm-runners":
        llm_runners(int(sys.argv[3]), sys.argv[4], sys.argv[2] == "1")
    elif len(sys.argv) > 1 and sys.argv[1] == "--client":
        _, _, port_s, model, conc_s, sec_s, count_s, tag = sys.argv
        client(int(port_s), model, int(conc_s), float(sec_s), int(count_s), tag)
    else:
        main()
