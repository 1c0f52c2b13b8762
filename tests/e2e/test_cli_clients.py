"""The real CLIs as clients of our server: Claude Code against ``/v1/messages``, Codex against ``/v1/responses``.

The chain under test, all on 127.0.0.1:

    claude / codex  ->  llm-runners server (API key required)  ->  HTTP provider  ->  fake model API

so one turn exercises the front door with a real client's full request (Claude Code's ~70 KB body with 24 tools,
a system message inside ``messages``, thinking and cache-control fields; Codex's developer messages and its
non-function ``web_search`` tool), the router, an HTTP provider and the rendering of the answer back.

These drive real binaries that try to phone home: like every e2e module they run only in a loopback-only network
namespace (``tests/e2e/conftest.py`` stops the run elsewhere, with the command to use). The server is built from a
settings file as ``llm-runners serve`` builds it, with two HTTP providers and an API key required.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_command import write_config
from test_server_real_cli import serving

from llm_runners.testing.fake_api import FakeModelAPI

SERVER_KEY = "llmr-test-key"
ANSWER = "relayed by llm-runners"


@pytest.fixture
def server(tmp_path: Path, fake_api: FakeModelAPI) -> Iterator[str]:
    """The server's URL: ``anthropic`` and ``openai`` HTTP providers in front of the fake API, ``SERVER_KEY``
    required."""
    upstream = {"api_key": "upstream-key", "model": "fake-model"}
    providers = {
        "anthropic": {"type": "anthropic", "base_url": fake_api.anthropic_base_url, **upstream},
        "openai": {"type": "openai_compat", "base_url": fake_api.openai_base_url, **upstream},
    }
    config = write_config(tmp_path / "llm-runners.toml", providers, default_provider="anthropic", api_keys=[SERVER_KEY])
    with serving(config) as url:
        yield url


def _env(tmp_home: Any) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **tmp_home.env()}


def _run(argv: list[str], env: dict[str, str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        start_new_session=True,
    )


# ------------------------------------------------------------------------------------------------ Claude Code


def _claude(server: str, tmp_home: Any, cli_bin: Any, key: str) -> subprocess.CompletedProcess[str]:
    env = {
        **_env(tmp_home),
        "ANTHROPIC_BASE_URL": server,
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    argv = [
        str(cli_bin("claude")),
        "-p",
        "say the magic words",
        "--output-format",
        "json",
        "--model",
        "anthropic:fake-model",
    ]
    return _run(argv, env, str(tmp_home.workdir))


def test_claude_code_completes_a_turn_through_the_server(
    server: str, fake_api: FakeModelAPI, tmp_home: Any, cli_bin: Any
) -> None:
    fake_api.default_reply = ANSWER
    done = _claude(server, tmp_home, cli_bin, SERVER_KEY)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["is_error"] is False and result["result"] == ANSWER

    upstream = fake_api.main_requests()
    assert upstream, "the fake model API got no request"
    last = upstream[-1]
    assert last.api == "anthropic" and last.model == "fake-model"
    assert last.headers["x-api-key"] == "upstream-key"  # the provider's key, not the caller's
    assert "say the magic words" in last.last_user_text()
    assert "Bash" in last.tool_names()  # Claude Code's tools reached the model as native tools


def test_claude_code_with_a_wrong_key_gets_401(
    server: str, fake_api: FakeModelAPI, tmp_home: Any, cli_bin: Any
) -> None:
    done = _claude(server, tmp_home, cli_bin, "not-the-key")
    assert done.returncode == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["is_error"] is True and result["api_error_status"] == 401
    assert fake_api.main_requests() == []


# ------------------------------------------------------------------------------------------------ Codex


def test_codex_completes_a_turn_through_the_server(
    server: str, fake_api: FakeModelAPI, tmp_home: Any, cli_bin: Any, tmp_path: Path
) -> None:
    fake_api.default_reply = ANSWER
    env = _env(tmp_home)
    codex_home = tmp_path / "codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        'model = "openai:fake-model"\n'
        'model_provider = "llmr"\n'
        "[model_providers.llmr]\n"
        'name = "llm-runners"\n'
        f'base_url = "{server}/v1"\n'
        'env_key = "LLMR_API_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        "[analytics]\nenabled = false\n"
        "[features]\nplugins = false\n"
    )
    env |= {"CODEX_HOME": str(codex_home), "LLMR_API_KEY": SERVER_KEY}
    argv = [
        str(cli_bin("codex")),
        "exec",
        "--skip-git-repo-check",
        "--json",
        "--disable",
        "unbounded_connection_retries",
        "say the magic words",
    ]
    done = _run(argv, env, str(tmp_home.workdir))
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    messages = [
        e["item"]["text"]
        for e in events
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]
    assert messages == [ANSWER]
    assert any(e.get("type") == "turn.completed" for e in events)

    last = fake_api.main_requests()[-1]
    assert last.api == "openai_chat" and last.model == "fake-model"
    assert "say the magic words" in last.last_user_text()
    assert last.headers["authorization"] == "Bearer upstream-key"
