"""CLI runners: one small dialect module per CLI, and the registry the router and the command line read.

Adding a CLI = one module here + one entry in ``_MODULES`` + one e2e test.
"""

from __future__ import annotations

import importlib

from .base import CLIRunner, Invocation, LineParser, Turn

#: provider name -> "module:Class"; imported lazily so one broken dialect cannot take the others down
_MODULES: dict[str, str] = {
    "claude_code": "llm_runners.runners.claude_code:ClaudeCodeRunner",
    "codex": "llm_runners.runners.codex:CodexRunner",
    "gemini": "llm_runners.runners.gemini:GeminiRunner",
}


def runner_class(name: str) -> type[CLIRunner]:
    target = _MODULES.get(name)
    if target is None:
        raise KeyError(name)
    module_name, _, attr = target.partition(":")
    cls: type[CLIRunner] = getattr(importlib.import_module(module_name), attr)
    return cls


def _load_registry() -> dict[str, type[CLIRunner]]:
    out: dict[str, type[CLIRunner]] = {}
    for name in _MODULES:
        try:
            out[name] = runner_class(name)
        except (ImportError, AttributeError):
            continue
    return out


class _Registry(dict[str, type[CLIRunner]]):
    """``REGISTRY``: name -> runner class, filled on first use."""

    _loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            self.update(_load_registry())

    def __getitem__(self, key: str) -> type[CLIRunner]:
        self._load()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def keys(self):  # type: ignore[no-untyped-def]
        self._load()
        return super().keys()

    def items(self):  # type: ignore[no-untyped-def]
        self._load()
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        self._load()
        return super().values()

    def get(self, key: str, default: type[CLIRunner] | None = None) -> type[CLIRunner] | None:  # type: ignore[override]
        self._load()
        return super().get(key, default)


REGISTRY: dict[str, type[CLIRunner]] = _Registry()

__all__ = ["REGISTRY", "CLIRunner", "Invocation", "LineParser", "Turn", "runner_class"]
