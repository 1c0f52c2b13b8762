"""Secrets never leak: API keys, bearer tokens and a CLI's credentials, as known marker values, never appear in log
lines, error messages (JSON and streamed), ``/health``, ``/ready``, ``/metrics`` or the ``providers`` output.

The markers: the server's own API key, an HTTP provider's ``api_key``, a CLI's key in its environment (all three
registered with :mod:`llm_runners.redact`), and a credential-shaped token nobody registered (a CLI printing the
token of its own login)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import pytest
from server_helpers import CLI, Served, failed_run, serve_env

from llm_runners.config import Settings
from llm_runners.errors import AuthenticationError
from llm_runners.http import OpenAICompatProvider
from llm_runners.redact import MASK, redact, register
from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.testing.scripted import Reply, ScriptedProvider

Serve = Callable[..., Served]

SERVER_KEY = "llmr-server-key-MARKER-7f3a9c"
PROVIDER_KEY = "llmr-provider-key-MARKER-2b8d41"
CLI_KEY = "llmr-cli-key-MARKER-91e0aa"
UNREGISTERED = "sk-ant-oat01-UNREGISTEREDmarker4242424242"
MARKERS = ("MARKER", "UNREGISTEREDmarker")


def assert_clean(text: str, where: str) -> None:
    for marker in MARKERS:
        assert marker not in text, f"{marker} leaked into {where}: {text[:2000]}"


def test_redact_masks_registered_values_and_credential_shapes_only() -> None:
    register("registered-secret-value-123")
    text = (
        "key registered-secret-value-123, Authorization: Bearer abc.def-ghi_jkl, sk-proj-ABCDEFGHIJKLMNOPQRSTUV, "
        'ghp_0123456789abcdefghijABCDEFGHIJ0123, {"apiKey": "xyz12345678"}, token=tok_98765432'
    )
    out = redact(text)
    for secret in ("registered-secret", "abc.def", "ABCDEFGHIJKLMNOP", "ghp_0123", "xyz1234", "tok_9876"):
        assert secret not in out
    assert out.count(MASK) == 6
    ordinary = "max_tokens=5 input_tokens: 100 task-1234567890abcdefghij request_id=req_0123456789abcdef Bearer x"
    assert redact(ordinary) == ordinary
    assert redact("short") == "short"
    register("short")  # under 8 characters: never registered (it would mask ordinary words)
    assert redact("a short word") == "a short word"


def test_server_keys_and_provider_errors_never_reach_answers_logs_health_or_metrics(
    serve: Serve, log_lines: io.StringIO
) -> None:
    leaky = ScriptedProvider(
        [
            Reply(
                text="partial answer",
                error=AuthenticationError(f"upstream said: key {SERVER_KEY} and {UNREGISTERED} are invalid"),
                error_after=1,
            )
        ],
        name="leaky",
    )
    dead = OpenAICompatProvider(base_url="http://127.0.0.1:9/v1", api_key=PROVIDER_KEY, model="m", max_retries=0)
    settings = Settings(api_keys=[SERVER_KEY], metrics=True)
    s = serve({"leaky": leaky, "dead": dead}, default="leaky", settings=settings)
    auth = {"authorization": f"Bearer {SERVER_KEY}"}
    seen: list[str] = []
    for stream in (False, True):
        body = {"model": "leaky", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx2.post(s.v1 + "/chat/completions", json=body, headers=auth)
        seen.append(r.text)
        assert r.status_code == (200 if stream else 401)  # streamed: the error event after the first text
        body = {"model": "leaky", "stream": stream, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        seen.append(httpx2.post(s.v1 + "/messages", json=body, headers={"x-api-key": SERVER_KEY}).text)
        body = {"model": "leaky", "stream": stream, "input": "hi"}
        seen.append(httpx2.post(s.v1 + "/responses", json=body, headers=auth).text)
    assert any("upstream said" in text and MASK in text for text in seen)  # the message is kept, the keys masked
    client = openai.OpenAI(base_url=s.v1, api_key=SERVER_KEY, max_retries=0)
    with pytest.raises(openai.APIError) as refused:
        client.chat.completions.create(model="dead:m", messages=[{"role": "user", "content": "hi"}])
    seen.append(str(refused.value))
    with pytest.raises(openai.AuthenticationError) as wrong:  # a wrong key is not echoed back either
        openai.OpenAI(base_url=s.v1, api_key="sk-wrongWRONGwrongMARKER000000", max_retries=0).models.list()
    seen.append(json.dumps(wrong.value.body))
    for path in ("/health", "/health?detail=1", "/ready", "/metrics", "/v1/models"):
        seen.append(httpx2.get(s.url + path, headers=auth).text)
    ready = httpx2.get(s.url + "/ready", headers=auth).json()
    assert {p["provider"] for p in ready["providers"]} == {"leaky", "dead"}
    for text in seen:
        assert_clean(text, "an answer")
    # the access log, with the key in a query string too (some clients put it there)
    httpx2.get(s.url + f"/v1/models?api_key={SERVER_KEY}&key={PROVIDER_KEY}", headers=auth)
    lines = log_lines.getvalue()
    assert "llm_runners.access" in lines and "chat.completions" in lines
    assert_clean(lines, "the log")


STANDIN = """#!{python} -IS
import os, sys
sys.stdin.readline()
key = os.environ.get("ANTHROPIC_API_KEY", "")
sys.stderr.write("Invalid API key: " + key + "\\n")
sys.stderr.write("request headers: {{'x-api-key': '" + key + "', 'authorization': 'Bearer " + key + "'}}\\n")
sys.stderr.write("cached login token {token}\\n")
sys.exit(1)
"""


def test_a_cli_that_echoes_its_key_in_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: io.StringIO
) -> None:
    binary = tmp_path / "claude-standin"
    binary.write_text(STANDIN.format(python=sys.executable, token=UNREGISTERED))
    binary.chmod(0o755)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CLI_KEY)
    runner = ClaudeCodeRunner(binary=str(binary), timeout=30)

    error = failed_run(runner)
    assert_clean(str(error), "the error message")
    assert_clean(error.detail or "", "the error detail")
    assert_clean(json.dumps(error.openai_envelope()) + json.dumps(error.anthropic_envelope()), "the envelopes")
    lines = log_lines.getvalue()
    assert "run failed" in lines  # the failed run's stderr tail is logged, masked
    assert_clean(lines, "the log")


def test_providers_output_never_shows_a_key(tmp_path: Path) -> None:
    config = tmp_path / "providers.toml"
    config.write_text(
        "[providers.dead.options]\n"
        'type = "openai_compat"\nbase_url = "http://127.0.0.1:9/v1"\n'
        f'api_key = "{PROVIDER_KEY}"\nmodel = "m"\n\n'
        "[providers.envkey.options]\n"
        'type = "anthropic"\nbase_url = "http://127.0.0.1:9"\napi_key_env = "LLMR_TEST_KEY"\n'
    )
    env = {**serve_env(), "LLMR_TEST_KEY": CLI_KEY, "ANTHROPIC_API_KEY": CLI_KEY, "PATH": "/usr/bin:/bin"}
    for extra in ((), ("--json",)):
        done = subprocess.run(
            [CLI, "--config", str(config), "providers", *extra], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "dead" in done.stdout and "envkey" in done.stdout
        assert_clean(done.stdout + done.stderr, "the providers output")
