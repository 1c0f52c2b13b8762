"""``llm-runners chat`` and ``llm-runners providers`` as real subprocesses, configured by a TOML file, in front of
the pinned real CLIs and the fake model API (loopback only).

What reached the model is asserted on the request the fake recorded; what the user sees is asserted on the
command's stdout, stderr and exit status. Expected failures must be one line on stderr and never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from llm_runners.runners import REGISTRY
from llm_runners.testing.fake_api import FakeModelAPI, Reply

CLI = str(Path(sys.executable).with_name("llm-runners"))
CLIS_DIR = Path(__file__).resolve().parents[1] / "clis"
#: provider -> (binary, npm package)
PINNED = {
    "claude_code": ("claude", "@anthropic-ai/claude-code"),
    "codex": ("codex", "@openai/codex"),
    "gemini": ("gemini", "@google/gemini-cli"),
}
#: variables of the caller's environment that would change what the CLIs or the command see
_SCRUBBED_PREFIXES = ("LLM_RUNNERS_", "ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "GEMINI_", "GOOGLE_")


def pinned_version(package: str) -> str:
    """The version npm installed from tests/clis (the lockfile's pin), read from the package itself."""
    data = json.loads((CLIS_DIR / "node_modules" / package / "package.json").read_text())
    return str(data["version"])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def write_config(path: Path, providers: Mapping[str, Mapping[str, Any]], **top: Any) -> Path:
    """A settings file: top-level keys, then ``[providers.<name>.options]`` (+ its ``env`` table) per provider."""
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, options in providers.items():
        lines.append(f"\n[providers.{name}.options]")
        lines += [f"{k} = {toml_value(v)}" for k, v in options.items() if k != "env"]
        if "env" in options:
            lines.append(f"\n[providers.{name}.options.env]")
            lines += [f"{k} = {toml_value(v)}" for k, v in options["env"].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def claude_options(tmp_home: Any, cli_bin: Any, base_url: str, key: str | None = "dummy", **kw: Any) -> dict[str, Any]:
    """clis.md section 3: the throw-away HOME, the fake as the API, retries off (an error costs one request)."""
    env = {**tmp_home.env(), "ANTHROPIC_BASE_URL": base_url, "CLAUDE_CODE_MAX_RETRIES": "0"}
    if key is not None:
        env["ANTHROPIC_API_KEY"] = key
    return {"binary": str(cli_bin("claude")), "cwd": str(tmp_home.workdir), "timeout": 60.0, "env": env, **kw}


def command_env(tmp_home: Any, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    return {**env, "HOME": str(tmp_home.home), **overrides}


def run(config: Path, *args: str, env: Mapping[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=60,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------------ chat


def test_chat_prints_the_answer_with_system_prompt_model_and_usage(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    fake_api.script(Reply(text="four", input_tokens=500, output_tokens=1, cached_tokens=120))
    config = write_config(
        tmp_path / "c.toml", {"claude_code": claude_options(tmp_home, cli_bin, fake_api.anthropic_base_url)}
    )
    system = "You are a terse pirate.\nAnswer in one word."
    done = run(
        config,
        *("chat", "--provider", "claude_code", "-s", system, "-m", "claude-sonnet-4-5", "--usage", "What is 2+2?"),
        env=command_env(tmp_home),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "four\n"
    assert done.stderr.startswith("[500 in (120 cached), 1 out, $"), done.stderr
    [request] = fake_api.main_requests()
    assert request.model == "claude-sonnet-4-5"
    assert request.body["system"][-1]["text"] == system  # the CLI's default prompt block replaced, byte for byte
    assert request.last_user_text().endswith("What is 2+2?")
    assert system not in request.last_user_text()
    # a one-shot question leaves no session file behind in the user's HOME
    assert not list((tmp_home.home / ".claude").glob("projects/**/*.jsonl"))


def test_chat_streams_to_the_terminal_while_the_cli_runs(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    chunks = ["Alpha", " beta", " gamma", " delta"]
    fake_api.script(Reply(chunks=chunks, chunk_delay=0.4))
    config = write_config(
        tmp_path / "c.toml", {"claude_code": claude_options(tmp_home, cli_bin, fake_api.anthropic_base_url)}
    )
    proc = subprocess.Popen(
        [CLI, "--config", str(config), "chat", "count"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=command_env(tmp_home),
    )
    try:
        assert proc.stdout is not None
        first = os.read(proc.stdout.fileno(), 1024)  # unbuffered: returns as soon as anything was written
        first_at, still_running = time.monotonic(), proc.poll() is None
        rest = proc.stdout.read()
        ended_at = time.monotonic()
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first.startswith(b"Alpha") and b"delta" not in first, first
    assert still_running, "the first chunk must be readable before the command exits"
    assert ended_at - first_at >= 0.6  # the rest came as the upstream sent it (3 x 0.4 s), not in one burst
    assert first + rest == b"Alpha beta gamma delta\n"


def test_chat_reads_the_prompt_from_stdin_and_uses_the_default_provider(tmp_path: Path, tmp_home: Any) -> None:
    """``-`` reads stdin; ``default_provider`` picks the provider; ``type = "scripted"`` builds like the server does
    (the scripted provider echoes the last user message when given no replies)."""
    config = write_config(tmp_path / "c.toml", {"echo": {"type": "scripted"}}, default_provider="echo")
    done = run(config, "chat", "-", env=command_env(tmp_home), stdin="a prompt\nover two lines")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "You said: a prompt\nover two lines\n"
    assert done.stderr == ""


def test_chat_through_a_configured_http_provider(tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI) -> None:
    """A provider whose table has a ``type`` (an HTTP API here) is built through the router's builder."""
    fake_api.script("answer over HTTP")
    config = write_config(
        tmp_path / "c.toml",
        {"local": {"type": "openai_compat", "base_url": fake_api.openai_base_url, "api_key": "dummy"}},
    )
    done = run(config, "chat", "-p", "local", "-m", "gpt-fake", "hello", env=command_env(tmp_home))
    assert (done.returncode, done.stdout) == (0, "answer over HTTP\n"), done.stderr
    request = fake_api.last_main_request()
    assert (request.api, request.model, request.last_user_text()) == ("openai_chat", "gpt-fake", "hello")


# ------------------------------------------------------------------------------------------------ chat errors


def test_chat_api_error_is_one_line_naming_the_kind(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        {"claude_code": claude_options(tmp_home, cli_bin, fake_api.anthropic_base_url, key="fake-err-401")},
    )
    done = run(config, "chat", "hi", env=command_env(tmp_home))
    line = one_error_line(done)
    assert done.returncode == 1
    assert line.startswith("llm-runners: claude_code: authentication_error: "), line
    assert "claude login" in line  # the fix comes with it
    assert done.stdout == ""
    assert len(fake_api.main_requests()) == 1  # retries off: one request


def test_chat_refuses_bad_input_with_one_line(tmp_path: Path, tmp_home: Any, cli_bin: Any) -> None:
    env = command_env(tmp_home)
    config = write_config(tmp_path / "c.toml", {"echo": {"type": "scripted"}})
    line = one_error_line(run(config, "chat", "-p", "nonesuch", "hi", env=env))
    assert line.startswith("llm-runners chat: unknown provider 'nonesuch'; known: "), line
    assert {"claude_code", "codex", "gemini", "echo"} <= set(line.split("known: ")[1].split(", "))
    line = one_error_line(run(config, "chat", "-p", "echo", "   ", env=env))
    assert line == "llm-runners chat: the prompt is empty"
    line = one_error_line(run(tmp_path / "missing.toml", "chat", "hi", env=env))
    assert line.endswith("missing.toml: config file not found")
    broken = write_config(tmp_path / "broken.toml", {"echo": {"type": "nonesuch"}})
    line = one_error_line(run(broken, "chat", "-p", "echo", "hi", env=env))
    assert "provider 'echo': unknown type 'nonesuch'" in line, line


def test_chat_with_a_missing_binary_says_how_to_install_it(tmp_path: Path, tmp_home: Any) -> None:
    missing = tmp_path / "not-installed" / "claude"
    config = write_config(tmp_path / "c.toml", {"claude_code": {"binary": str(missing)}})
    done = run(config, "chat", "hi", env=command_env(tmp_home))
    line = one_error_line(done)
    assert done.returncode == 1
    assert line.startswith("llm-runners: claude_code: binary_not_found: "), line
    assert str(missing) in line and "npm install -g @anthropic-ai/claude-code" in line


# ------------------------------------------------------------------------------------------------ providers


def test_providers_lists_the_pinned_clis_found_versioned_and_ready(
    tmp_path: Path, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any
) -> None:
    """claude is found on the runner's PATH, codex and gemini by their configured binary; a configured HTTP provider
    is listed under its own name. Versions are the pinned ones, read from the installed packages."""
    home = tmp_home.env()
    config = write_config(
        tmp_path / "c.toml",
        {
            "claude_code": {
                "env": {**home, "ANTHROPIC_API_KEY": "dummy", "PATH": f"{cli_bin('claude').parent}:/usr/bin:/bin"}
            },
            "codex": {"binary": str(cli_bin("codex")), "env": {**home, "OPENAI_API_KEY": "dummy"}},
            "gemini": {"binary": str(cli_bin("gemini")), "env": {**home, "GEMINI_API_KEY": "dummy"}},
            "local": {"type": "openai_compat", "base_url": fake_api.openai_base_url, "api_key": "dummy"},
        },
    )
    done = run(config, "providers", "--json", env=command_env(tmp_home))
    assert done.returncode == 0, done.stderr
    listed = {h["provider"]: h for h in json.loads(done.stdout)}
    # every known CLI runner is listed (configured or not), and the configured HTTP provider under its own name
    assert set(listed) == {*REGISTRY, "local"}
    for name, (binary, package) in PINNED.items():
        h = listed[name]
        assert (h["installed"], h["ready"], h["authenticated"]) == (True, True, True), h
        assert h["path"] == str(cli_bin(binary))
        assert h["version"] == pinned_version(package)
        assert h["verified"] is True
    assert (listed["local"]["ready"], listed["local"]["path"]) == (True, fake_api.openai_base_url)

    text = run(config, "providers", env=command_env(tmp_home))
    assert text.returncode == 0, text.stderr
    rows = {line.split()[0]: line.split() for line in text.stdout.splitlines() if not line.startswith(" ")}
    for name, (binary, package) in PINNED.items():
        assert rows[name] == [name, "ready", pinned_version(package), "verified", str(cli_bin(binary))]
    notes: dict[str, list[str]] = {}  # a row's indented lines (why:, fix:) belong to it
    current = ""
    for line in text.stdout.splitlines():
        if line.startswith(" "):
            notes[current].append(line.strip())
        else:
            current = line.split()[0]
            notes[current] = []
    assert all(not notes[name] for name in PINNED), {name: notes[name] for name in PINNED}


def test_providers_says_what_is_missing_and_how_to_fix_it(tmp_path: Path, tmp_home: Any, cli_bin: Any) -> None:
    """claude absent from PATH -> not found + the npm line; codex installed without a key or login -> not ready +
    the login line; gemini installed without a key, then logged in (credentials file) -> ready, no model call."""
    empty_path = tmp_path / "empty-bin"
    empty_path.mkdir()
    home = tmp_home.env()
    node_path = "/usr/bin:/bin"  # the CLIs are node scripts; the command itself sees only the empty PATH
    config = write_config(
        tmp_path / "c.toml",
        {
            "codex": {"binary": str(cli_bin("codex")), "env": {**home, "PATH": node_path}},
            "gemini": {"binary": str(cli_bin("gemini")), "env": {**home, "PATH": node_path}},
        },
    )
    env = command_env(tmp_home, PATH=str(empty_path))
    done = run(config, "providers", env=env)
    assert done.returncode == 0, done.stderr
    blocks: dict[str, list[str]] = {}
    last = ""
    for line in done.stdout.splitlines():
        if line.startswith(" "):
            blocks[last].append(line.strip())
        else:
            last = line.split()[0]
            blocks[last] = [line]
    assert blocks["claude_code"][0].split() == ["claude_code", "not", "found", "-", "verified", "-"]
    assert "fix: npm install -g @anthropic-ai/claude-code" in blocks["claude_code"]
    codex = blocks["codex"]
    assert codex[0].split() == [
        "codex",
        "not",
        "ready",
        pinned_version("@openai/codex"),
        "verified",
        str(cli_bin("codex")),
    ]
    assert "fix: run `codex login` or set OPENAI_API_KEY" in codex
    assert any(line.startswith("why: ") and "not logged in" in line for line in codex)
    assert blocks["gemini"][0].split()[:3] == ["gemini", "not", "ready"]
    assert any(line.startswith("fix: set GEMINI_API_KEY") for line in blocks["gemini"])

    (tmp_home.home / ".gemini").mkdir(exist_ok=True)
    (tmp_home.home / ".gemini" / "oauth_creds.json").write_text("{}")
    listed = {h["provider"]: h for h in json.loads(run(config, "providers", "--json", env=env).stdout)}
    assert (listed["gemini"]["ready"], listed["gemini"]["authenticated"], listed["gemini"]["fix"]) == (True, True, None)
    assert (listed["claude_code"]["installed"], listed["claude_code"]["fix"]) == (
        False,
        "npm install -g @anthropic-ai/claude-code",
    )
    assert (listed["codex"]["ready"], listed["codex"]["authenticated"]) == (False, False)


def test_providers_reports_a_broken_table_without_crashing(tmp_path: Path, tmp_home: Any) -> None:
    config = write_config(
        tmp_path / "c.toml",
        {"echo": {"type": "scripted"}, "typo": {"type": "nonesuch"}, "codex": {"binary": str(tmp_path / "no-codex")}},
    )
    done = run(config, "providers", "--json", env=command_env(tmp_home))
    assert done.returncode == 0, done.stderr
    listed = {h["provider"]: h for h in json.loads(done.stdout)}
    assert listed["echo"]["ready"] is True
    assert listed["typo"]["ready"] is False and "unknown type 'nonesuch'" in listed["typo"]["reason"]
    assert listed["typo"]["fix"] == f"fix [providers.typo] in {config}"
    assert listed["codex"]["installed"] is False and listed["codex"]["fix"] == "npm install -g @openai/codex"


@pytest.mark.parametrize("command", ["providers", "chat"])
def test_a_bad_settings_file_is_one_line(tmp_path: Path, tmp_home: Any, command: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("port = 'eighty'\n")
    line = one_error_line(run(config, command, *(["hi"] if command == "chat" else []), env=command_env(tmp_home)))
    assert line.startswith(f"llm-runners {command}: {config}: 'port' must be an integer"), line
