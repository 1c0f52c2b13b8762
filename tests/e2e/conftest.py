"""Shared harness for the end-to-end tests that drive the real, pinned CLIs against the fake model API.

Why it is strict:
- The CLIs phone home (telemetry, update checks, plugin registries). The e2e suite therefore runs ONLY inside a
  loopback-only network namespace; if any e2e test is selected and the current namespace has another interface,
  the whole run stops with the command to use instead. (``/sys/class/net`` is not a reliable witness: it shows the
  namespace sysfs was mounted in, so the interfaces are listed with ``if_nameindex()``, which asks the kernel about
  the current namespace.)
- CI must run everything: a missing CLI binary FAILS the test that needs it, it never skips.
- Each test gets a throw-away HOME, TMPDIR and working directory, so no test depends on another one or on the
  developer's own CLI logins and settings.

Per-CLI environment and config builders live in each CLI's own e2e module (or ``tests/e2e/<cli>_env.py``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import pytest

from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.testing.procs import alive, descendants

CLI_BIN_DIR = Path(__file__).resolve().parents[1] / "clis" / "node_modules" / ".bin"
E2E_DIR = Path(__file__).resolve().parent
RUN_HINT = "unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m pytest tests/e2e'"


# ------------------------------------------------------------------------------------------------ network guard


def network_interfaces() -> list[str]:
    """Interface names of the CURRENT network namespace."""
    return [name for _, name in socket.if_nameindex()]


def loopback_only() -> bool:
    return network_interfaces() == ["lo"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every e2e test, and refuse to run any of them outside a loopback-only namespace."""
    e2e = [item for item in items if E2E_DIR in Path(str(item.path)).resolve().parents]
    for item in e2e:
        item.add_marker(pytest.mark.e2e)
    if e2e and not loopback_only():
        pytest.exit(
            "the e2e tests drive real CLIs and must run in a loopback-only network namespace "
            f"(interfaces here: {', '.join(network_interfaces())}). Run: {RUN_HINT}",
            returncode=3,
        )


# ------------------------------------------------------------------------------------------------ binaries


def cli_path(name: str) -> Path:
    """Path of a pinned CLI in tests/clis/node_modules/.bin; fails the test (never skips) when absent."""
    path = CLI_BIN_DIR / name
    if not (path.exists() and os.access(path, os.X_OK)):
        pytest.fail(
            f"pinned CLI {name!r} is not installed at {path}: run scripts/setup (CI must run every e2e test)",
            pytrace=False,
        )
    return path


@pytest.fixture
def cli_bin() -> Callable[[str], Path]:
    """``cli_bin("claude")`` → the pinned binary's path (the test fails when it is missing)."""
    return cli_path


# ------------------------------------------------------------------------------------------------ throw-away state


@dataclass(frozen=True)
class TmpHome:
    """One test's private state: HOME, TMPDIR and an empty working directory (not a git repo)."""

    home: Path
    tmpdir: Path
    workdir: Path

    def env(self) -> dict[str, str]:
        """The variables every CLI needs to stay inside this test's state (add the CLI's own on top)."""
        return {
            "HOME": str(self.home),
            "TMPDIR": str(self.tmpdir),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
        }


@pytest.fixture
def tmp_home(tmp_path: Path) -> TmpHome:
    paths = TmpHome(home=tmp_path / "home", tmpdir=tmp_path / "tmp", workdir=tmp_path / "work")
    for p in (paths.home, paths.tmpdir, paths.workdir):
        p.mkdir()
    return paths


@pytest.fixture(scope="session")
def copilot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One unpack cache for every Copilot run of a session: the first run of a fresh cache unpacks ~238 MB."""
    return tmp_path_factory.mktemp("copilot-cache")


# ------------------------------------------------------------------------------------------------ fake model API


@pytest.fixture
def fake_api() -> Iterator[FakeModelAPI]:
    """The project's fake model API (Anthropic, OpenAI Responses/Chat, Gemini) on 127.0.0.1, a fresh port per test.

    It runs in a background thread, so sync and async tests and the CLI subprocesses all reach it; it is stopped
    (hung connections included) when the test ends.
    """
    with FakeModelAPI() as api:
        yield api


# ------------------------------------------------------------------------------------------------ process checks


def descendants_named(name: str) -> list[int]:
    """Live descendants of this test process whose command line mentions ``name`` (e.g. ``"claude"``)."""
    out = []
    for pid in descendants():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if name.encode() in cmdline:
            out.append(pid)
    return out


pid_alive = alive


def wait_until_gone(
    pids: list[int] | None = None, timeout: float = 1.0, exclude: AbstractSet[int] = frozenset()
) -> list[int]:
    """Poll until the given pids (default: all descendants of this process but ``exclude``) are gone; return the
    survivors."""
    deadline = time.monotonic() + timeout
    while True:
        if pids is not None:
            alive = [p for p in pids if pid_alive(p)]
        else:
            alive = [p for p in descendants() if p not in exclude]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


@pytest.fixture
def no_leftover_processes() -> Iterator[None]:
    """Assert that no child process of the test outlives it (principle: every child process has an owner)."""
    before = set(descendants())
    yield
    survivors = wait_until_gone(timeout=2.0, exclude=before)
    assert not survivors, f"child processes outlived the test: {survivors}"


@dataclass(frozen=True)
class ProcessProbe:
    """The process checks above as a fixture, so test modules need not import this conftest."""

    descendants: Callable[..., list[int]] = descendants
    named: Callable[[str], list[int]] = descendants_named
    pid_alive: Callable[[int], bool] = pid_alive
    wait_until_gone: Callable[..., list[int]] = wait_until_gone


@pytest.fixture
def procs() -> ProcessProbe:
    """``procs.descendants()``, ``procs.named("claude")``, ``procs.pid_alive(pid)``,
    ``procs.wait_until_gone(pids, timeout)``."""
    return ProcessProbe()
