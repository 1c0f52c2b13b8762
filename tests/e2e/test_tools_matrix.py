"""Tools off, proven for every runner and transport (issue 13 §6), and tools on, so the proof can fail.

The fake model answers the first turn with calls of the CLI's own shell tool (``touch`` a marker file), its
file-write tool (create a file) and its file-read tool (on a secret in the working directory and one in the user's
HOME), then answers "done". With tools off (the default): no marker, no written file, neither secret in any
request that reached the model API. With ``allow_tools=True`` the same script shows the tools run, each effect
checked that the CLI can produce offline (``on``): a tool-name or argument mistake in this table would show as a
failure there, not as a false "off".

Each runner is built with its own e2e module's ``make_runner`` (the same offline setup as the rest of its tests);
tool names and argument names are the ones each pinned CLI declares upstream (checked in the ``on`` run).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import test_acp_agents
import test_acp_gemini
import test_claude_code
import test_cline
import test_codex
import test_codex_app
import test_continue
import test_copilot
import test_gemini
import test_opencode
import test_qwen
from opencode_env import KILO, OPENCODE

from llm_runners.errors import LLMError
from llm_runners.provider import Provider
from llm_runners.testing.fake_api import FakeModelAPI, FakeToolCall, Reply
from llm_runners.types import ChatRequest

pytestmark = pytest.mark.anyio

#: what a case's tools do when allowed: "shell" (the marker appears), "write" (the file appears), "read" (a
#: secret reaches the model API)
EFFECTS = frozenset({"shell", "write", "read"})


@dataclass(frozen=True)
class Paths:
    """One test's targets: the marker the shell touches, the file the write tool creates, the two secrets."""

    marker: Path
    written: Path
    work_secret: Path
    home_secret: Path

    def secrets(self) -> dict[Path, str]:
        return {self.work_secret: "WORKDIR-SECRET-5c1e", self.home_secret: "HOME-SECRET-83b0"}


@dataclass(frozen=True)
class Case:
    id: str
    #: (tmp_home, fake_api, cli_bin, copilot cache, allow_tools) -> the provider, working in tmp_home.workdir
    build: Callable[[Any, FakeModelAPI, Any, Path, bool], Provider]
    #: the calls the fake model makes: the shell, write and read tools in the CLI's own names and arguments
    calls: Callable[[Paths], list[FakeToolCall]]
    #: what the tools do offline with ``allow_tools=True`` (the rest, with the reason, in ``note``)
    on: frozenset[str] = EFFECTS
    note: str = ""


def _calls(
    shell: Callable[[str], FakeToolCall], write: Callable[[Path], FakeToolCall], read: Callable[[Path], FakeToolCall]
) -> Callable[[Paths], list[FakeToolCall]]:
    def calls(p: Paths) -> list[FakeToolCall]:
        return [shell(f"touch {p.marker}"), read(p.work_secret), write(p.written), read(p.home_secret)]

    return calls


CLAUDE = _calls(
    lambda cmd: FakeToolCall("Bash", {"command": cmd, "description": "touch"}),
    lambda path: FakeToolCall("Write", {"file_path": str(path), "content": "pwned"}),
    lambda path: FakeToolCall("Read", {"file_path": str(path)}),
)
CODEX = _calls(
    lambda cmd: FakeToolCall("exec_command", {"cmd": cmd}),
    lambda path: FakeToolCall("exec_command", {"cmd": f"echo pwned > {path}"}),  # its only writer is the shell
    lambda path: FakeToolCall("exec_command", {"cmd": f"cat {path}"}),
)
GEMINI = _calls(
    lambda cmd: FakeToolCall("run_shell_command", {"command": cmd}),
    lambda path: FakeToolCall("write_file", {"file_path": str(path), "content": "pwned"}),
    lambda path: FakeToolCall("read_file", {"file_path": str(path)}),
)
QWEN = _calls(
    lambda cmd: FakeToolCall("run_shell_command", {"command": cmd}),
    lambda path: FakeToolCall("write_file", {"file_path": str(path), "content": "pwned"}),
    lambda path: FakeToolCall("read_file", {"file_path": str(path)}),
)
COPILOT = _calls(
    lambda cmd: FakeToolCall("bash", {"command": cmd, "description": "touch"}),
    lambda path: FakeToolCall("create", {"path": str(path), "file_text": "pwned"}),
    lambda path: FakeToolCall("view", {"path": str(path)}),
)
OPENCODE_TOOLS = _calls(
    lambda cmd: FakeToolCall("bash", {"command": cmd, "description": "touch"}),
    lambda path: FakeToolCall("write", {"filePath": str(path), "content": "pwned"}),
    lambda path: FakeToolCall("read", {"filePath": str(path)}),
)
CONTINUE = _calls(
    lambda cmd: FakeToolCall("Bash", {"command": cmd}),
    lambda path: FakeToolCall("Write", {"filepath": str(path), "content": "pwned"}),
    lambda path: FakeToolCall("Read", {"filepath": str(path)}),
)
CLINE = _calls(
    lambda cmd: FakeToolCall("run_commands", {"commands": [cmd]}),
    lambda path: FakeToolCall("editor", {"path": str(path), "new_text": "pwned"}),
    lambda path: FakeToolCall("read_files", {"files": [{"path": str(path)}]}),
)


def _work(tmp_home: Any) -> str:
    return str(tmp_home.workdir)


def _acp(name: str) -> Callable[[Any, FakeModelAPI, Any, Path, bool], Provider]:
    agent = next(a for a in test_acp_agents.AGENTS if a.name == name)

    def build(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, cache: Path, allow: bool) -> Provider:
        return test_acp_agents.make_runner(agent, tmp_home, fake_api, cli_bin, allow_tools=allow, cwd=_work(tmp_home))

    return build


CASES = [
    Case(
        "claude_code",
        lambda h, api, b, c, allow: test_claude_code.make_runner(h, api, b, allow_tools=allow),
        CLAUDE,
        # allow_tools is --permission-mode acceptEdits: a ``touch`` in the working directory runs, a read outside
        # it asks for an approval -p mode cannot give (the HOME secret stays home)
    ),
    Case(
        "codex-exec",
        lambda h, api, b, c, allow: test_codex.make_runner(h, api, b, allow_tools=allow, cwd=_work(h)),
        CODEX,
    ),
    Case(
        "codex-app-server",
        lambda h, api, b, c, allow: test_codex_app.make_runner(h, api, b, allow_tools=allow, cwd=_work(h)),
        CODEX,
    ),
    Case(
        "gemini-exec",
        lambda h, api, b, c, allow: test_gemini.make_runner(h, api, b, allow_tools=allow, cwd=_work(h)),
        GEMINI,
        on=frozenset({"read"}),
        note="non-interactive mode leaves the shell and file-write tools out unless the approval mode is yolo",
    ),
    Case(
        "gemini-acp",
        lambda h, api, b, c, allow: test_acp_gemini.make_runner(h, api, b, allow_tools=allow, cwd=_work(h)),
        GEMINI,
    ),
    Case(
        "copilot-exec",
        lambda h, api, b, c, allow: test_copilot.make_runner(h, api, b, c, allow_tools=allow, cwd=_work(h)),
        COPILOT,
    ),
    Case("copilot-acp", _acp("copilot"), COPILOT),
    Case(
        "opencode-exec",
        lambda h, api, b, c, allow: test_opencode.make_runner(OPENCODE, h, api, b, allow_tools=allow, cwd=_work(h)),
        OPENCODE_TOOLS,
    ),
    Case("opencode-acp", _acp("opencode"), OPENCODE_TOOLS),
    Case(
        "kilo-exec",
        lambda h, api, b, c, allow: test_opencode.make_runner(KILO, h, api, b, allow_tools=allow, cwd=_work(h)),
        OPENCODE_TOOLS,
    ),
    Case("kilo-acp", _acp("kilo"), OPENCODE_TOOLS),
    Case(
        "qwen-exec",
        lambda h, api, b, c, allow: test_qwen.make_runner(h, api, b, allow_tools=allow, cwd=_work(h)),
        QWEN,
        on=frozenset({"write", "read"}),
        note="allow_tools is --approval-mode auto-edit: file edits run, a shell command is declined",
    ),
    Case("qwen-acp", _acp("qwen"), QWEN),
    Case(
        "continue",
        lambda h, api, b, c, allow: test_continue.make_runner(h, api, b, allow_tools=allow, cwd=_work(h)),
        CONTINUE,
        on=frozenset({"shell", "read"}),
        note="allow_tools leaves the CLI's policy in charge: headless mode does not declare Write (it would ask)",
    ),
    Case(
        "cline",
        lambda h, api, b, c, allow: test_cline.make_runner(h, api, b, allow_tools=allow, cwd=_work(h)),
        CLINE,
    ),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    value: Case = request.param
    return value


def paths(tmp_home: Any) -> Paths:
    p = Paths(
        marker=tmp_home.workdir / "made-by-the-shell",
        written=tmp_home.workdir / "made-by-the-write-tool.txt",
        work_secret=tmp_home.workdir / "secret.txt",
        home_secret=tmp_home.home / "secret.txt",
    )
    for path, secret in p.secrets().items():
        path.write_text(f"{secret}\n")
    return p


def leaked(fake_api: FakeModelAPI, p: Paths) -> set[Path]:
    bodies = [r.raw_body for r in fake_api.requests]
    return {path for path, secret in p.secrets().items() if any(secret.encode() in b for b in bodies)}


async def run(
    case: Case, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, cache: Path, allow: bool
) -> tuple[Paths, list[str]]:
    """The scripted turn; returns the targets and the answers an ACP runner gave to permission requests."""
    p = paths(tmp_home)
    answers: list[str] = []
    # one call per turn: a CLI that ends its run on a refused or undeclared tool (OpenCode on a read outside the
    # working directory, Continue on a tool it did not declare) still shows what the calls before it did
    fake_api.script(*(Reply(tool_calls=[call]) for call in case.calls(p)), "done")
    runner = case.build(tmp_home, fake_api, cli_bin, cache, allow)
    try:
        # refusing a tool it never offered may fail the turn (or end it empty); running it may not
        with contextlib.suppress(LLMError):
            await runner.complete(ChatRequest(messages=[{"role": "user", "content": "run, write and read, please"}]))
        answers = [kind for agent in getattr(runner, "agents", ()) for *_, kind in agent.permissions]
    finally:
        await runner.aclose()
    assert fake_api.main_requests(), "the fake model API was never asked"
    return p, answers


async def test_tools_off_nothing_runs_nothing_is_written_no_secret_leaves(
    case: Case, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path
) -> None:
    p, answers = await run(case, tmp_home, fake_api, cli_bin, copilot_cache, allow=False)
    assert not p.marker.exists(), "the shell tool ran"
    assert not p.written.exists(), "the write tool wrote"
    assert leaked(fake_api, p) == set(), "a secret reached the model API"
    assert all(kind.startswith("reject") or kind == "cancelled" for kind in answers), answers


async def test_tools_on_the_same_calls_do_run(
    case: Case, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, copilot_cache: Path
) -> None:
    p, _ = await run(case, tmp_home, fake_api, cli_bin, copilot_cache, allow=True)
    declared = sorted({n for r in fake_api.main_requests() for n in r.tool_names()})
    seen = {
        "shell": p.marker.exists(),
        "write": p.written.exists(),
        "read": bool(leaked(fake_api, p)),
    }
    expected = {effect: effect in case.on for effect in EFFECTS}
    last = [f"{role}: {text[:300]}" for role, text in fake_api.last_main_request().messages()]
    why = {"declared": declared, "last request": last, "tools": tool_schemas(fake_api)}
    assert seen == expected, json.dumps(why, indent=1)


def tool_schemas(fake_api: FakeModelAPI) -> list[str]:
    """The first request's tool definitions, shortened (to fix this table when a CLI renames a tool)."""
    tools = fake_api.main_requests()[0].body.get("tools") or []
    return [json.dumps(t)[:400] for t in tools]
