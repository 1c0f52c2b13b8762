"""Helpers shared by the server tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from llm_runners.provider import Provider
from llm_runners.router import Router
from llm_runners.testing.scripted import ScriptedProvider


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
