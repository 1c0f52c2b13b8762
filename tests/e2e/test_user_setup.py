"""The user's own CLI setup through the runners (issue 6), with the real pinned CLIs against the fake model API.

Each home here is a *user's* home: the endpoint and key live only in the user's own CLI configuration (Codex
``config.toml``, Claude Code ``settings.json``, Gemini ``.env`` + ``settings.json``), never in the runner's env. The
same files carry bait for what must stay out (an MCP server, a hook, a ``notify`` command, GEMINI.md, an
extension); each bait is proven live by a run with ``user_config=True``, where it does fire.

Then the fail-fast cases: not logged in -> AuthenticationError in under 5 s without starting the CLI; a closed port
-> an error naming the endpoint in under 15 s with the runners' default retry bound; and ``providers --json`` and
``/health`` telling ready from not ready in each of those homes.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from gemini_env import EXTENSION_MARKER, GEMINI_MD_MARKER, bait_user_config
from test_cli_command import command_env, run, write_config

from llm_runners.config import load_settings
from llm_runners.errors import AuthenticationError, LLMError, UpstreamError
from llm_runners.router import Router
from llm_runners.runners.base import RETRY_NOTICE, CLIRunner
from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.runners.codex import CodexRunner
from llm_runners.runners.gemini import GeminiRunner
from llm_runners.server import create_app
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.types import ChatRequest

pytestmark = pytest.mark.anyio

#: a stdio MCP server that only leaves a file behind when a CLI starts it (then waits for stdin to close)
MCP_SPY = "import sys, pathlib; pathlib.Path(sys.argv[1]).touch(); sys.stdin.read()"
#: what runs as a notify command / hook: leaves the file named by its first argument
TOUCH = "import sys, pathlib; pathlib.Path(sys.argv[1]).touch()"


def ask(text: str = "hi") -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}])


def closed_port_url(path: str = "") -> str:
    """A loopback URL nobody listens on (the port was bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def settle(files: list[Path], within: float) -> None:
    """Give a CLI's side effects (a hook, an MCP server, notify) ``within`` seconds to leave their files."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not all(f.exists() for f in files):
        time.sleep(0.05)


async def fails_fast(runner: CLIRunner, limit: float) -> tuple[LLMError, float]:
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        await runner.complete(ask())
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"{runner.name}: {type(info.value).__name__} after {elapsed:.1f} s: {info.value}"
    return info.value, elapsed


# ------------------------------------------------------------------------------------------------ codex


def codex_user_config(home: Path, base_url: str, *, key_var: str = "USER_FAKE_KEY") -> tuple[Path, Path]:
    """The user's ``~/.codex/config.toml``: their own provider (key in ``key_var``), plus an MCP server and a
    ``notify`` command. Returns (file the MCP server creates, file notify creates)."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    mcp_started, notified = home / "codex-mcp-started", home / "codex-notified"
    config = f"""
model = "fake-model"
model_provider = "userfake"
model_reasoning_effort = "low"
notify = [{json.dumps(sys.executable)}, "-c", {json.dumps(TOUCH)}, {json.dumps(str(notified))}]

[model_providers.userfake]
name = "The user's fake provider"
base_url = {json.dumps(base_url)}
env_key = "{key_var}"
wire_api = "responses"

[mcp_servers.spy]
command = {json.dumps(sys.executable)}
args = ["-c", {json.dumps(MCP_SPY)}, {json.dumps(str(mcp_started))}]

[analytics]
enabled = false
"""
    (codex_home / "config.toml").write_text(config)
    return mcp_started, notified


def codex_runner(tmp_home: Any, cli_bin: Callable[[str], Path], key: str | None = "dummy", **kw: Any) -> CodexRunner:
    env = {**tmp_home.env(), "CODEX_HOME": str(tmp_home.home / ".codex")}
    if key is not None:
        env["USER_FAKE_KEY"] = key
    return CodexRunner(binary=str(cli_bin("codex")), env=env, **kw)


@pytest.mark.parametrize("transport", ["exec", "app-server"])
@pytest.mark.parametrize("user_config", [False, True])
async def test_codex_provider_from_the_users_config_answers_and_its_tools_stay_out(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, user_config: bool, transport: str
) -> None:
    mcp_started, notified = codex_user_config(tmp_home.home, fake_api.openai_base_url)
    runner = codex_runner(tmp_home, cli_bin, user_config=user_config, transport=transport)
    health = await runner.health()
    assert (health.ready, health.authenticated) == (True, True), health
    answer = await runner.complete(ask())
    assert answer.content == "pong from fake"
    [request] = fake_api.main_requests()
    assert request.api == "openai_responses" and request.model == "fake-model"
    assert request.api_key == "dummy"  # USER_FAKE_KEY, named by the provider's env_key, passed the allow-list
    assert request.body.get("reasoning", {}).get("effort") == "low"  # a model setting of the user's file
    # the bait is real: with user_config the CLI starts the MCP server and runs notify; without, neither
    settle([mcp_started, notified], 5.0 if user_config else 1.0)
    assert mcp_started.exists() is user_config
    assert notified.exists() is user_config
    await runner.aclose()


async def test_codex_profile_of_the_users_config_is_applied(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    codex_user_config(tmp_home.home, "http://127.0.0.1:9/unused")
    config = tmp_home.home / ".codex" / "config.toml"
    config.write_text(
        'profile = "work"\n'
        + config.read_text()
        + f'\n[profiles.work]\nmodel = "profile-model"\nmodel_provider = "workfake"\n'
        f'\n[model_providers.workfake]\nname = "w"\nbase_url = "{fake_api.openai_base_url}"\nenv_key = "WORK_KEY"\n'
        'wire_api = "responses"\n'
    )
    runner = codex_runner(tmp_home, cli_bin, key=None)
    status = await runner.auth_status()
    assert status.authenticated is False and status.reason and "WORK_KEY" in status.reason
    runner.env["WORK_KEY"] = "work-key"
    runner._auth_checked = None  # the status is cached for AUTH_RECHECK seconds; a new runner would re-check too
    assert (await runner.complete(ask())).content == "pong from fake"
    [request] = fake_api.main_requests()
    assert (request.model, request.api_key) == ("profile-model", "work-key")
    await runner.aclose()


async def test_codex_not_logged_in_fails_at_once(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, procs: Any
) -> None:
    (tmp_home.home / ".codex").mkdir()
    runner = codex_runner(tmp_home, cli_bin, key=None)  # the built-in provider, no login, no key
    before = set(procs.descendants())
    error, _ = await fails_fast(runner, 5.0)
    assert isinstance(error, AuthenticationError) and "codex login" in error.message
    assert [p for p in procs.descendants() if p not in before] == []  # the CLI was never started
    # a custom provider whose key variable is missing says which variable
    codex_user_config(tmp_home.home, fake_api.openai_base_url)
    runner._auth_checked = None
    error, _ = await fails_fast(runner, 5.0)
    assert isinstance(error, AuthenticationError) and "USER_FAKE_KEY" in error.message
    assert fake_api.requests == []
    await runner.aclose()


async def test_codex_unreachable_api_fails_within_seconds(tmp_home: Any, cli_bin: Any) -> None:
    url = closed_port_url("/v1")
    codex_user_config(tmp_home.home, url)
    runner = codex_runner(tmp_home, cli_bin)  # default retries: 0
    error, elapsed = await fails_fast(runner, 15.0)
    assert not isinstance(error, AuthenticationError) and url in error.message, error
    # the built-in provider at an address of the user's (openai_base_url): bounded by the runner's parser
    (tmp_home.home / ".codex" / "config.toml").write_text(f'openai_base_url = "{url}"\n')
    builtin = CodexRunner(
        binary=str(cli_bin("codex")),
        env={**tmp_home.env(), "CODEX_HOME": str(tmp_home.home / ".codex"), "OPENAI_API_KEY": "sk-dummy"},
    )
    error, elapsed = await fails_fast(builtin, 15.0)
    assert url in error.message, error
    print(f"codex: closed port -> {type(error).__name__} in {elapsed:.1f} s")
    await runner.aclose()
    await builtin.aclose()


# ------------------------------------------------------------------------------------------------ claude


def claude_user_settings(home: Path, base_url: str, key: str = "dummy") -> tuple[Path, Path]:
    """The user's ``~/.claude/settings.json``: endpoint and key in ``env``, plus hooks and an MCP server (also in
    ``~/.claude.json``). Returns (file the hooks create, file the MCP server creates)."""
    hooked, mcp_started = home / "claude-hook-ran", home / "claude-mcp-started"
    hook = {"type": "command", "command": f"{sys.executable} -c '{TOUCH}' {hooked}"}
    server = {"type": "stdio", "command": sys.executable, "args": ["-c", MCP_SPY, str(mcp_started)]}
    settings = {
        "env": {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": key, "CLAUDE_CODE_MAX_RETRIES": "7"},
        "hooks": {
            "SessionStart": [{"hooks": [hook]}],
            "UserPromptSubmit": [{"hooks": [hook]}],
        },
        "mcpServers": {"spy": server},
        "permissions": {"allow": ["Bash(*)"]},
        "statusLine": {"type": "command", "command": f"{sys.executable} -c '{TOUCH}' {hooked}"},
    }
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    (home / ".claude" / "settings.json").write_text(json.dumps(settings))
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"spy": server}}))
    return hooked, mcp_started


def claude_runner(tmp_home: Any, cli_bin: Callable[[str], Path], **kw: Any) -> ClaudeCodeRunner:
    """No endpoint, key or retry setting in the runner's env: only the user's files say where to go."""
    kw.setdefault("timeout", 60.0)
    return ClaudeCodeRunner(binary=str(cli_bin("claude")), env=tmp_home.env(), cwd=str(tmp_home.workdir), **kw)


@pytest.mark.parametrize("user_config", [False, True])
async def test_claude_endpoint_and_key_from_the_users_settings_answer_and_hooks_stay_out(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, monkeypatch: Any, user_config: bool
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    hooked, mcp_started = claude_user_settings(tmp_home.home, fake_api.anthropic_base_url)
    runner = claude_runner(tmp_home, cli_bin, user_config=user_config)
    health = await runner.health()
    assert (health.ready, health.authenticated) == (True, True), health
    answer = await runner.complete(ask())
    assert answer.content == "pong from fake"
    [request] = fake_api.main_requests()
    assert request.api_key == "dummy"  # from the settings' env, the runner's env has none
    settle([hooked, mcp_started], 5.0 if user_config else 1.0)
    assert hooked.exists() is user_config  # the bait is real: the user's hooks run with user_config
    assert mcp_started.exists() is user_config
    await runner.aclose()


async def test_claude_not_logged_in_fails_at_once(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, monkeypatch: Any, procs: Any
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    (tmp_home.home / ".claude").mkdir()
    (tmp_home.home / ".claude" / "settings.json").write_text(json.dumps({"env": {"ANTHROPIC_BASE_URL": "x"}}))
    runner = claude_runner(tmp_home, cli_bin)
    before = set(procs.descendants())
    error, _ = await fails_fast(runner, 5.0)
    assert isinstance(error, AuthenticationError) and "claude login" in error.message
    assert [p for p in procs.descendants() if p not in before] == []
    assert fake_api.requests == []
    await runner.aclose()


async def test_claude_unreachable_api_fails_within_seconds(
    tmp_home: Any, cli_bin: Any, monkeypatch: Any, caplog: Any
) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    url = closed_port_url()
    claude_user_settings(tmp_home.home, url)
    # one retry allowed (the user's CLAUDE_CODE_MAX_RETRIES=7 is not carried): it is logged as it happens
    runner = claude_runner(tmp_home, cli_bin, retries=1)
    with caplog.at_level("WARNING", logger="llm_runners.runners.claude_code"):
        error, elapsed = await fails_fast(runner, 15.0)
    assert not isinstance(error, AuthenticationError) and url in error.message, error
    retries = [r.getMessage() for r in caplog.records if getattr(r, RETRY_NOTICE, False)]
    assert {r.name for r in caplog.records if getattr(r, RETRY_NOTICE, False)} == {"llm_runners.runners.claude_code"}
    assert len(retries) == 1 and retries[0].startswith("claude_code: retrying 1/1"), retries
    print(f"claude_code: closed port -> {type(error).__name__} in {elapsed:.1f} s")
    await runner.aclose()


# ------------------------------------------------------------------------------------------------ gemini


def gemini_user_setup(home: Path, base_url: str, *, key: str | None = "key-from-user-dotenv") -> Path:
    """The user's ``~/.gemini``: auth type and model in settings.json, endpoint and key in .env, plus GEMINI.md, an
    extension and a trusted MCP server (the baits of gemini_env). Returns the file the MCP server creates."""
    gemini = home / ".gemini"
    gemini.mkdir(parents=True, exist_ok=True)
    settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}, "model": {"name": "users-gemini-model"}}
    (gemini / "settings.json").write_text(json.dumps(settings))
    started = bait_user_config(home)
    lines = [f"GOOGLE_GEMINI_BASE_URL={base_url}"] + ([f"GEMINI_API_KEY={key}"] if key else [])
    (gemini / ".env").write_text("\n".join(lines) + "\n")
    return started


def gemini_runner(tmp_home: Any, cli_bin: Callable[[str], Path], **kw: Any) -> GeminiRunner:
    return GeminiRunner(binary=str(cli_bin("gemini")), env=tmp_home.env(), **kw)


@pytest.fixture
def no_gemini_env(monkeypatch: Any) -> None:
    for name in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GEMINI_MODEL",
    ):
        monkeypatch.delenv(name, raising=False)


async def test_gemini_auth_endpoint_and_model_from_the_users_setup_answer_and_the_rest_stays_out(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, no_gemini_env: None
) -> None:
    mcp_started = gemini_user_setup(tmp_home.home, fake_api.gemini_base_url)
    runner = gemini_runner(tmp_home, cli_bin)
    health = await runner.health()
    assert (health.ready, health.authenticated) == (True, True), health
    answer = await runner.complete(ask())
    assert answer.content == "pong from fake" and answer.model == "users-gemini-model"
    main = fake_api.last_main_request()
    assert (main.model, main.api_key) == ("users-gemini-model", "key-from-user-dotenv")
    body = json.dumps(main.body)
    assert GEMINI_MD_MARKER not in body and EXTENSION_MARKER not in body and not mcp_started.exists()
    assert main.tool_names() == []
    await runner.aclose()


async def test_gemini_not_logged_in_fails_at_once(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, no_gemini_env: None, procs: Any
) -> None:
    gemini_user_setup(tmp_home.home, fake_api.gemini_base_url, key=None)
    runner = gemini_runner(tmp_home, cli_bin)
    before = set(procs.descendants())
    error, _ = await fails_fast(runner, 5.0)
    assert isinstance(error, AuthenticationError) and "GEMINI_API_KEY" in error.message
    assert [p for p in procs.descendants() if p not in before] == []
    assert fake_api.requests == []
    await runner.aclose()


async def test_gemini_unreachable_api_fails_within_seconds(tmp_home: Any, cli_bin: Any, no_gemini_env: None) -> None:
    url = closed_port_url()
    gemini_user_setup(tmp_home.home, url)
    runner = gemini_runner(tmp_home, cli_bin)  # default retries: 0, so maxAttempts 1 (the CLI's default: 10)
    error, elapsed = await fails_fast(runner, 15.0)
    assert not isinstance(error, AuthenticationError) and url in error.message, error
    print(f"gemini: closed port -> {type(error).__name__} in {elapsed:.1f} s")
    await runner.aclose()


async def test_gemini_retries_are_bounded_and_logged(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, no_gemini_env: None, caplog: Any
) -> None:
    gemini_user_setup(tmp_home.home, fake_api.gemini_base_url, key="fake-err-500")
    runner = gemini_runner(tmp_home, cli_bin, retries=1)
    with caplog.at_level("WARNING", logger="llm_runners.runners.gemini"):
        error, elapsed = await fails_fast(runner, 60.0)
    assert isinstance(error, UpstreamError) and fake_api.gemini_base_url in error.message, error
    assert len(fake_api.main_requests()) == 2  # one retry, not the CLI's ten attempts
    retries = [r.getMessage() for r in caplog.records if getattr(r, RETRY_NOTICE, False)]
    assert {r.name for r in caplog.records if getattr(r, RETRY_NOTICE, False)} == {"llm_runners.runners.gemini"}
    assert retries == ["gemini: retrying after attempt 1 (with status 500)"], retries
    print(f"gemini: 500 with one retry -> {type(error).__name__} in {elapsed:.1f} s")
    await runner.aclose()


# ------------------------------------------------------------------------------ chat, providers, /health


def test_chat_prints_the_clis_retry_notices(tmp_path: Path, tmp_home: Any, cli_bin: Any) -> None:
    url = closed_port_url("/v1")
    codex_user_config(tmp_home.home, url)
    env = {**tmp_home.env(), "CODEX_HOME": str(tmp_home.home / ".codex"), "USER_FAKE_KEY": "dummy"}
    config = write_config(tmp_path / "c.toml", {"codex": {"binary": str(cli_bin("codex")), "env": env, "retries": 2}})
    started = time.monotonic()
    done = run(config, "chat", "-p", "codex", "hi", env=command_env(tmp_home))
    assert time.monotonic() - started < 30.0  # two retries with the CLI's backoff (the bound itself is tested above)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    notices = [re.match(r"codex: reconnecting\W*(\d/\d)", line, re.I) for line in lines[:-1]]
    assert [m.group(1) if m else None for m in notices] == ["1/2", "2/2"], lines
    assert lines[-1].startswith("llm-runners: codex: upstream_error: ") and url in lines[-1], lines


def setup_homes(tmp_path: Path, fake_api: FakeModelAPI, cli_bin: Any) -> tuple[Path, dict[str, bool]]:
    """A settings file with each runner twice: once in a home whose user setup answers, once in one that lacks its
    key. Returns the file and the expected readiness per provider."""
    providers: dict[str, dict[str, Any]] = {}
    expected: dict[str, bool] = {}
    for ready in (True, False):
        home = tmp_path / ("ready" if ready else "broken")
        base = {"HOME": str(home), "TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
        codex_user_config(home, fake_api.openai_base_url)
        claude_user_settings(home, fake_api.anthropic_base_url)
        gemini_user_setup(home, fake_api.gemini_base_url, key="k" if ready else None)
        if not ready:  # the user's settings lose their key; the codex key variable is not set
            (home / ".claude" / "settings.json").write_text(json.dumps({"env": {"ANTHROPIC_BASE_URL": "x"}}))
        suffix = "" if ready else "_broken"
        codex_env = {**base, "CODEX_HOME": str(home / ".codex"), **({"USER_FAKE_KEY": "k"} if ready else {})}
        providers["codex" + suffix] = {"type": "codex", "binary": str(cli_bin("codex")), "env": codex_env}
        providers["claude_code" + suffix] = {"type": "claude_code", "binary": str(cli_bin("claude")), "env": base}
        providers["gemini" + suffix] = {"type": "gemini", "binary": str(cli_bin("gemini")), "env": base}
        expected |= {name + suffix: ready for name in ("codex", "claude_code", "gemini")}
    return write_config(tmp_path / "c.toml", providers), expected


def test_providers_json_tells_ready_from_not_ready_in_each_home(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    config, expected = setup_homes(tmp_path, fake_api, cli_bin)
    env = command_env(tmp_home)
    done = run(config, "providers", "--json", env=env)
    assert done.returncode == 0, done.stderr
    listed = {h["provider"]: h for h in json.loads(done.stdout)}
    for name, ready in expected.items():
        h = listed[name]
        assert (h["installed"], h["ready"], h["authenticated"]) == (True, ready, ready), h
        assert (h["reason"] is None) is ready and (h["fix"] is None) is ready, h
    assert "USER_FAKE_KEY" in listed["codex_broken"]["reason"]
    assert "GEMINI_API_KEY" in listed["gemini_broken"]["reason"]
    assert "claude login" in listed["claude_code_broken"]["fix"]
    assert fake_api.requests == []  # health never costs a model call


async def test_health_endpoint_tells_ready_from_not_ready_in_each_home(
    tmp_path: Path, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    config, expected = setup_homes(tmp_path, fake_api, cli_bin)
    settings = load_settings(str(config), env={})
    router = Router.from_settings(settings)
    await router.health(per_provider_timeout=60.0)  # versions cached: /health's 10 s per provider is ample on 2 CPUs
    app = create_app(router, settings)
    transport = httpx2.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/health", params={"detail": "1"})  # readiness, as /ready (no keys configured)
        ready = await client.get("/ready")
    assert response.status_code == ready.status_code == 200  # some providers are ready
    assert response.json() == ready.json()
    reports = {p["provider"]: p for p in response.json()["providers"]}
    assert {name: reports[name]["ready"] for name in expected} == expected, reports
    assert all(reports[name].get("fix") for name, ready in expected.items() if not ready)
