"""A fake child for tests/test_process.py: one script, one mode per first argument.

Started as ``python -I -S child.py MODE ARGS…``; stdlib only, quick to start.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

OUT = sys.stdout.buffer
ERR = sys.stderr.buffer


def _sleeper(trap: bool) -> subprocess.Popen[bytes]:
    """A grandchild that sleeps (ignoring SIGTERM when ``trap``), sharing our process group and stdout."""
    code = "import signal, time\n"
    if trap:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(1000)\n"
    return subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=subprocess.DEVNULL)


def main(mode: str, args: list[str]) -> int:
    if mode == "args":  # echo argv, one per line
        for arg in args:
            OUT.write(arg.encode() + b"\n")
    elif mode == "ids":  # process group facts
        print(json.dumps({"pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0)}), flush=True)
    elif mode == "env":  # environment, working directory and its contents, what stdin is
        mode_bits = os.fstat(0).st_mode
        print(
            json.dumps(
                {
                    "env": dict(os.environ),
                    "cwd": os.getcwd(),
                    "listing": os.listdir("."),
                    # a pipe (asyncio) or a socket pair (uvloop): either way not the parent's terminal or file
                    "stdin_fifo": stat.S_ISFIFO(mode_bits) or stat.S_ISSOCK(mode_bits),
                    "stdin": sys.stdin.buffer.read().decode(),
                }
            ),
            flush=True,
        )
    elif mode == "cat":  # echo stdin line by line, flushing each (a warm, long-lived child)
        print("ready", flush=True)
        for line in sys.stdin.buffer:
            OUT.write(line)
            OUT.flush()
    elif mode == "write-then-read":  # write N bytes of stdout before reading stdin at all
        OUT.write(b"x" * int(args[0]) + b"\n")
        OUT.flush()
        data = sys.stdin.buffer.read()
        OUT.write(f"{len(data)} {data[:8].decode()} {data[-8:].decode()}\n".encode())
    elif mode == "hang":  # print our and a grandchild's pid, then hang; "trap" ignores SIGTERM in both
        trap = "trap" in args
        if trap:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = _sleeper(trap)
        print(f"{os.getpid()} {grandchild.pid}", flush=True)
        if "chatty" in args:  # keep printing partial-line output (never a newline)
            while True:
                OUT.write(b".")
                OUT.flush()
                time.sleep(0.05)
        time.sleep(1000)
    elif mode == "orphan":  # leave a grandchild holding stdout open and exit at once
        grandchild = _sleeper(trap=False)
        print(f"{os.getpid()} {grandchild.pid}", flush=True)
        os._exit(0)
    elif mode == "chunks":  # write hex-encoded chunks one by one, flushing and pausing between them
        for piece in args:
            OUT.write(bytes.fromhex(piece))
            OUT.flush()
            time.sleep(0.002)
    elif mode == "big-line":  # one line of N bytes, written in pieces, then "end"
        size = int(args[0])
        piece = b"y" * 100_003
        left = size
        while left > 0:
            OUT.write(piece[: min(left, len(piece))])
            left -= len(piece)
        OUT.write(b"\r\nend\n")
    elif mode == "flood":  # N bytes of stdout with no newline at all
        OUT.write(b"z" * int(args[0]))
    elif mode == "many":  # COUNT lines of SIZE bytes
        count, size = int(args[0]), int(args[1])
        line = b"l" * (size - 1) + b"\n"
        OUT.write(line * count)
    elif mode == "stderr-flood":  # N bytes of stderr (with invalid UTF-8), a marker, then one stdout line
        ERR.write(b"\xff\xfe noise " * (int(args[0]) // 13))
        ERR.write(b"\nLAST-STDERR-LINE\n")
        ERR.flush()
        print("done", flush=True)
    elif mode == "exit":  # write stderr text and exit with a code
        ERR.write(args[1].encode())
        return int(args[0])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    OUT.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
