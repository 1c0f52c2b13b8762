"""The stand-in ACP agent (llm_runners.testing.acp_agent) as a provider, for the ACP runner's unit tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, ClassVar

from llm_runners.acp import AcpDialect, AcpRunner
from llm_runners.runners.base import CLIRunner

STANDIN = AcpDialect("standin", ("-m", "llm_runners.testing.acp_agent"), status_text=None)


class StandInCLI(CLIRunner):
    """The 'CLI' is this interpreter; its ACP mode is the stand-in agent module."""

    name: ClassVar[str] = "standin"
    display_name: ClassVar[str] = "Stand-in agent"
    binary_name: ClassVar[str] = sys.executable
    package: ClassVar[str] = "llm-runners"


def make_runner(tmp_path: Path, *, dialect: AcpDialect = STANDIN, **kw: Any) -> tuple[AcpRunner, Path]:
    log = tmp_path / "agent.log"
    cli_kw = {k: kw.pop(k) for k in ("allow_tools", "timeout", "idle_timeout", "model", "sessions") if k in kw}
    cli = StandInCLI(
        binary=sys.executable, env={"ACP_STANDIN_LOG": str(log), "PYTHONPATH": ":".join(sys.path)}, **cli_kw
    )
    return AcpRunner(dialect, runner=cli, **kw), log


def agent_log(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if kind is None or e["kind"] == kind]
