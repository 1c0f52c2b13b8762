"""The real CLIs as clients of our server: Claude Code against ``/v1/messages``, Codex against ``/v1/responses``.

The chain under test, all on 127.0.0.1:

    claude / codex  ->  llm-runners server (API key required)  ->  HTTP provider  ->  fake model API

so one turn exercises the front door with a real client's full request (Claude Code's ~70 KB body with 24 tools,
a system message inside ``messages``, thinking and cache-control fields; Codex's developer messages and its
non-function ``web_search`` tool), the router, an HTTP provider and the rendering of the answer back.

These drive real binaries that try to phone home, so they run only in a loopback-only network namespace (as
``scripts/test`` runs the suite); elsewhere they fail with the command to use, never skip.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_helpers import Served

from llm_runners.config import Settings
from llm_runners.http import AnthropicProvider, OpenAICompatProvider
from llm_runners.testing.fake_api import FakeModelAPI

pytestmark = pytest.mark.e2e

CLI_BIN = Path(__file__).resolve().parents[1] / "clis" / "node_modules" / ".bin"
SERVER_KEY = "llmr-test-key"
ANSWER = "relayed by llm-runners"


def _cli(name: str) -> str:
    if [n for _, n in socket.if_nameindex()] != ["lo"]:
        pytest.fail(
            "this test runs a real CLI and needs a loopback-only network namespace: "
            "unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m pytest tests/server/test_cli_clients.py'",
            pytrace=False,
        )
    path = CLI_BIN / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"pinned CLI {name!r} missing at {path}: run `npm ci` in tests/clis", pytrace=False)
    return str(path)


@pytest.fixture
def api() -> Iterator[FakeModelAPI]:
    with FakeModelAPI() as fake:
        yield fake


@pytest.fixture
def server(serve: Callable[..., Served], api: FakeModelAPI) -> Served:
    providers = {
        "anthropic": AnthropicProvider(api.anthropic_base_url, api_key="upstream-key", model="fake-model"),
        "openai": OpenAICompatProvider(api.openai_base_url, api_key="upstream-key", model="fake-model"),
    }
    return serve(providers, default="anthropic", settings=Settings(api_keys=[SERVER_KEY]))


def _home(tmp_path: Path) -> dict[str, str]:
    home, tmp, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for p in (home, tmp, work):
        p.mkdir()
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(tmp), "PWD": str(work)}


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


def _claude(server: Served, tmp_path: Path, key: str) -> subprocess.CompletedProcess[str]:
    env = {
        **_home(tmp_path),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    argv = [_cli("claude"), "-p", "say the magic words", "--output-format", "json", "--model", "anthropic:fake-model"]
    return _run(argv, env, env["PWD"])


def test_claude_code_completes_a_turn_through_the_server(server: Served, api: FakeModelAPI, tmp_path: Path) -> None:
    api.default_reply = ANSWER
    done = _claude(server, tmp_path, SERVER_KEY)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["is_error"] is False and result["result"] == ANSWER

    upstream = api.main_requests()
    assert upstream, "the fake model API got no request"
    last = upstream[-1]
    assert last.api == "anthropic" and last.model == "fake-model"
    assert last.headers["x-api-key"] == "upstream-key"  # the provider's key, not the caller's
    assert "say the magic words" in last.last_user_text()
    assert "Bash" in last.tool_names()  # Claude Code's tools reached the model as native tools


def test_claude_code_with_a_wrong_key_gets_401(server: Served, api: FakeModelAPI, tmp_path: Path) -> None:
    done = _claude(server, tmp_path, "not-the-key")
    assert done.returncode == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["is_error"] is True and result["api_error_status"] == 401
    assert api.main_requests() == []


# ------------------------------------------------------------------------------------------------ Codex


def test_codex_completes_a_turn_through_the_server(server: Served, api: FakeModelAPI, tmp_path: Path) -> None:
    api.default_reply = ANSWER
    env = _home(tmp_path)
    codex_home = tmp_path / "codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        'model = "openai:fake-model"\n'
        'model_provider = "llmr"\n'
        "[model_providers.llmr]\n"
        'name = "llm-runners"\n'
        f'base_url = "{server.v1}"\n'
        'env_key = "LLMR_API_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        "[analytics]\nenabled = false\n"
        "[features]\nplugins = false\n"
    )
    env |= {"CODEX_HOME": str(codex_home), "LLMR_API_KEY": SERVER_KEY}
    argv = [
        _cli("codex"),
        "exec",
        "--skip-git-repo-check",
        "--json",
        "--disable",
        "unbounded_connection_retries",
        "say the magic words",
    ]
    done = _run(argv, env, env["PWD"])
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    messages = [
        e["item"]["text"]
        for e in events
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]
    assert messages == [ANSWER]
    assert any(e.get("type") == "turn.completed" for e in events)

    last = api.main_requests()[-1]
    assert last.api == "openai_chat" and last.model == "fake-model"
    assert "say the magic words" in last.last_user_text()
    assert last.headers["authorization"] == "Bearer upstream-key"
