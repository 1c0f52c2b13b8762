"""``llm-runners serve`` as a real subprocess: unsafe or broken settings refuse to start with one line and a
non-zero status; a scripted provider from a TOML file serves the openai SDK; SIGINT and SIGTERM stop it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from server_helpers import CLI, ServeProcess, serve_env

_env = serve_env


def _refuses(*args: str) -> str:
    t0 = time.monotonic()
    done = subprocess.run([CLI, *args], env=_env(), capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t0 < 15
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_non_loopback_bind_without_a_key_refuses_to_start() -> None:
    line = _refuses("serve", "--host", "0.0.0.0", "--port", "0")
    assert line.startswith("llm-runners serve: refusing to listen on 0.0.0.0 without an API key")
    assert "LLM_RUNNERS_API_KEYS" in line


def test_broken_settings_refuse_to_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[providers.echo.options]\ntype = "nonesuch"\n')
    line = _refuses("--config", str(config), "serve", "--port", "0")
    assert "provider 'echo': unknown type 'nonesuch'" in line and str(config) in line
    line = _refuses("--config", str(tmp_path / "missing.toml"), "serve", "--port", "0")
    assert line.endswith("missing.toml: config file not found")


_Server = ServeProcess


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "llm-runners.toml"
    path.write_text(
        'default_provider = "echo"\n\n'
        "[providers.echo]\nmax_concurrency = 2\n\n"
        '[providers.echo.options]\ntype = "scripted"\nreplies = ["hello from the toml provider"]\n'
    )
    return path


@pytest.fixture
def server(config: Path) -> Iterator[_Server]:
    s = _Server(config)
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(5)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_answers_the_sdk_then_stops_cleanly(server: _Server, stop: signal.Signals) -> None:
    url = server.wait_ready()
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "hello from the toml provider"
    assert out.model == "echo"
    server.proc.send_signal(stop)
    t0 = time.monotonic()
    assert server.proc.wait(timeout=10) == 0, "".join(server.lines)
    assert time.monotonic() - t0 < 5
    server.reader.join(5)
    assert "Traceback" not in "".join(server.lines)


def test_serve_takes_its_options_after_the_subcommand_and_logs_json(config: Path) -> None:
    server = _Server(config, "serve", "--config", str(config), "--port", "0", "--log-format", "json")
    try:
        url = server.wait_ready()
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": "hi"}]
        )
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0
        server.reader.join(5)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(5)
    records = [json.loads(line) for line in server.lines]  # every line is JSON, uvicorn's own included
    assert any(r["logger"].startswith("uvicorn") and "running on" in r["message"] for r in records)
    access = [r for r in records if r["logger"] == "llm_runners.access"]
    assert len(access) == 1
    assert access[0]["request_id"] == raw.headers["x-request-id"] and access[0]["route"] == "echo:scripted-1"


def test_serve_help_lists_the_environment_variables() -> None:
    done = subprocess.run([CLI, "serve", "--help"], env=_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for name in (
        "LLM_RUNNERS_CONFIG",
        "LLM_RUNNERS_API_KEYS",
        "LLM_RUNNERS_HOST",
        "LLM_RUNNERS_PORT",
        "LLM_RUNNERS_DEFAULT_PROVIDER",
        "LLM_RUNNERS_STRICT",
        "LLM_RUNNERS_LOG_LEVEL",
        "LLM_RUNNERS_LOG_FORMAT",
    ):
        assert name in done.stdout
    for option in ("--config", "--log-level", "--log-format", "--host", "--port", "--provider"):
        assert option in done.stdout


def test_bad_log_options_are_refused() -> None:
    done = subprocess.run([CLI, "serve", "--log-format", "xml"], env=_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "invalid choice: 'xml'" in done.stderr
    env = {**_env(), "LLM_RUNNERS_LOG_LEVEL": "loud"}
    done = subprocess.run([CLI, "providers"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "LLM_RUNNERS_LOG_LEVEL" in done.stderr


def test_every_config_problem_is_reported_in_one_line_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "typos.toml"
    config.write_text(
        '[aliases]\nfast = "nope:haiku"\n\n'
        "[providers.claude_code.options]\ntimeot = 5\n\n"
        '[providers.echo.options]\ntype = "scripted"\n'
    )
    line = _refuses("serve", "--config", str(config), "--port", "0")
    assert line.startswith(f"llm-runners serve: {config}: ")
    assert "provider 'claude_code': unknown option 'timeot' (did you mean 'timeout'?)" in line
    assert "valid options: type, allow_tools, binary" in line and "TypeError" not in line
    assert "alias 'fast' -> 'nope:haiku': no provider 'nope'" in line


def test_a_missing_binary_is_a_warning_and_the_rest_is_served(tmp_path: Path) -> None:
    config = tmp_path / "missing.toml"
    config.write_text(
        'default_provider = "echo"\n\n'
        '[providers.claude_code.options]\nbinary = "/nonexistent/bin/claude"\n\n'
        '[providers.echo.options]\ntype = "scripted"\nreplies = ["still here"]\n'
    )
    server = _Server(config)
    try:
        url = server.wait_ready()
        warning = [line for line in server.lines if "WARNING" in line and "claude_code" in line]
        assert len(warning) == 1 and "`/nonexistent/bin/claude` is not installed" in warning[0]
        started = next(i for i, line in enumerate(server.lines) if "running on" in line)
        assert server.lines.index(warning[0]) < started  # said before the server listens
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        out = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "still here"
        with pytest.raises(openai.APIStatusError) as missing:
            client.chat.completions.create(model="claude_code", messages=[{"role": "user", "content": "hi"}])
        assert "not found" in missing.value.message
    finally:
        server.proc.kill()
        server.proc.wait(5)
