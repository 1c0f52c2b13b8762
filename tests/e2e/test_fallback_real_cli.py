"""A fallback chain with real CLIs behind it, through the whole server: the first entry (the real ``claude``)
talks to a fake model API that answers 500, the second (the real ``gemini``) to one that answers. The openai SDK
is the client; the settings file is read the way ``llm-runners serve`` reads it. Loopback only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
from gemini_env import RUNNER_SETTINGS, gemini_env
from test_cli_command import claude_options, toml_value, write_config
from test_server_real_cli import serving

from llm_runners.testing.fake_api import FakeModelAPI, Reply

CHAIN = ["claude_code:claude-sonnet-4-5", "gemini:gemini-2.5-flash"]


def inline_table(value: Any) -> str:
    """A TOML inline table of ``value`` (nested tables included)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {inline_table(v)}" for k, v in value.items()) + "}"
    return toml_value(value)


def chain_config(tmp_path: Path, tmp_home: Any, cli_bin: Any, down: FakeModelAPI, up: FakeModelAPI) -> Path:
    path = write_config(tmp_path / "llm-runners.toml", {"claude_code": claude_options(tmp_home, cli_bin, down.url)})
    env = gemini_env(tmp_home.env(), up.gemini_base_url)
    lines = [
        "\n[providers.gemini.options]",
        f"binary = {toml_value(str(cli_bin('gemini')))}",
        f"settings = {inline_table(RUNNER_SETTINGS)}",
        "\n[providers.gemini.options.env]",
        *(f"{k} = {toml_value(v)}" for k, v in env.items()),
        "\n[fallbacks.fast]",
        f"models = {toml_value(CHAIN)}",
        "retries = 1",
        "backoff = 0.05",
    ]
    with path.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_first_entry_500_second_answers(
    tmp_path: Path, tmp_home: Any, cli_bin: Any, no_leftover_processes: None
) -> None:
    with FakeModelAPI() as down, FakeModelAPI() as up:
        down.default_reply = Reply(error="500")
        up.default_reply = Reply(text="answered by the second entry")
        with serving(chain_config(tmp_path, tmp_home, cli_bin, down, up)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=120)
            raw = client.chat.completions.with_raw_response.create(
                model="fast", messages=[{"role": "user", "content": "Say something."}]
            )
            out = raw.parse()
            assert out.choices[0].message.content == "answered by the second entry"
            assert raw.headers["x-llm-runners-fallback-answered"] == "gemini:gemini-2.5-flash"
            assert raw.headers["x-llm-runners-fallback-failed"] == "claude_code:claude-sonnet-4-5=upstream_error"
            assert len(down.main_requests()) == 2  # claude tried twice (one retry on a transient error)
            assert len(up.main_requests()) == 1
            assert "gemini-2.5-flash" in up.last_main_request().path

            # streamed: the header is there before the first byte, and the text is the second entry's
            with client.chat.completions.with_streaming_response.create(
                model="fast", messages=[{"role": "user", "content": "Again."}], stream=True
            ) as response:
                assert response.headers["x-llm-runners-fallback-answered"] == "gemini:gemini-2.5-flash"
                text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
            assert text == "answered by the second entry"
