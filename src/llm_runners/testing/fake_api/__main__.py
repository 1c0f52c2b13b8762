"""``python -m llm_runners.testing.fake_api [--host H] [--port N] [--reply TEXT]``: serve until interrupted.

Prints ``fake model API listening on http://H:N`` once the port is bound, so a script can pass ``--port 0`` and
read the port back.
"""

from __future__ import annotations

import argparse
import signal
import threading

from .server import FakeModelAPI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llm_runners.testing.fake_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    parser.add_argument("--reply", default=None, help="default reply text (else 'pong from fake')")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    api = FakeModelAPI(host=args.host, port=args.port)
    if args.reply is not None:
        api.default_reply = args.reply
    with api:
        print(f"fake model API listening on {api.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
