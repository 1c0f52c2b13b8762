"""Helpers shared by the server tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2

from llm_runners.errors import LLMError
from llm_runners.provider import Provider
from llm_runners.router import Router
from llm_runners.testing.scripted import ScriptedProvider
from llm_runners.types import ChatRequest, Message


@dataclass
class Served:
    url: str
    router: Router
    providers: Mapping[str, Provider]

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def scripted(self, name: str = "scripted") -> ScriptedProvider:
        p = self.providers[name]
        assert isinstance(p, ScriptedProvider)
        return p


def wait_until(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def failed_run(provider: Provider) -> LLMError:
    """The error of a one-message request to ``provider`` that must fail (the provider is closed afterwards)."""

    async def run() -> LLMError:
        try:
            await provider.complete(ChatRequest(messages=[Message(role="user", content="hi")]))
        except LLMError as exc:
            return exc
        finally:
            await provider.aclose()
        raise AssertionError(f"{provider.name}: the stand-in failed, the run did not")

    return anyio.run(run)


CLI = str(Path(sys.executable).with_name("llm-runners"))


def serve_env() -> dict[str, str]:
    """The caller's environment minus our own variables, so a developer's settings cannot change the outcome."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LLM_RUNNERS_")}


class ServeProcess:
    """A running ``llm-runners serve`` (port 0) whose stderr is drained by a thread (so it never blocks on a full
    pipe); ``args`` replace the default ``--config <config> serve --port 0``."""

    def __init__(self, config: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [CLI, *(args or ("--config", str(config), "serve", "--port", "0"))],
            env=dict(env) if env is not None else serve_env(),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line.replace("\\", ""))
            if found:
                self.url = found.group(1)

    def wait_ready(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.lines)
            if self.url is not None:
                try:
                    if httpx2.get(self.url + "/health", timeout=2).status_code == 200:
                        return self.url
                except httpx2.TransportError:
                    pass
            time.sleep(0.05)
        raise AssertionError("the server did not become healthy:\n" + "".join(self.lines))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def stop(self) -> None:
        """Kill it (if still running) and wait."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.reader.join(5)
