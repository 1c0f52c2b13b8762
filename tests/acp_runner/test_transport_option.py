"""The ``transport`` option: a provider that speaks ACP is built as an AcpRunner around its exec runner's setup."""

from __future__ import annotations

import pytest

from llm_runners.acp import AcpRunner
from llm_runners.router import build_provider
from llm_runners.runners.copilot import CopilotRunner
from llm_runners.runners.gemini import GeminiRunner
from llm_runners.runners.qwen import QwenRunner


def test_gemini_defaults_to_exec_and_takes_acp_on_request() -> None:
    assert isinstance(build_provider("gemini", {}), GeminiRunner)
    assert isinstance(build_provider("gemini", {"transport": "exec"}), GeminiRunner)
    acp = build_provider(
        "gemini", {"transport": "acp", "pool_size": 2, "model": "gemini-2.5-flash", "binary": "/bin/sh"}
    )
    assert isinstance(acp, AcpRunner)
    assert acp.name == "gemini" and acp.pool_size == 2
    assert isinstance(acp.cli, GeminiRunner) and acp.cli.model == "gemini-2.5-flash"
    assert acp.process_spec().argv == ["/bin/sh", "--acp"]
    assert acp.process_spec().env["GEMINI_CLI_HOME"]  # the exec runner's private CLI home


@pytest.mark.parametrize(
    ("name", "default"),
    [("opencode", AcpRunner), ("kilo", AcpRunner), ("qwen", QwenRunner), ("copilot", CopilotRunner)],
)
def test_default_transport_per_cli(name: str, default: type) -> None:
    """The defaults the README's ACP table gives the reasons for."""
    assert type(build_provider(name, {})) is default
    other = build_provider(name, {"transport": "exec" if default is AcpRunner else "acp"})
    assert type(other) is not default
    assert other.name == name


def test_bad_transport_values_are_config_errors() -> None:
    with pytest.raises(ValueError, match="'acp' or 'exec'"):
        build_provider("gemini", {"transport": "pigeon"})
    with pytest.raises(ValueError, match="no ACP mode"):
        build_provider("claude_code", {"transport": "acp"})
    with pytest.raises(ValueError, match="bad options"):
        build_provider("gemini", {"transport": "acp", "no_such_option": 1})
