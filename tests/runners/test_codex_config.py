"""The carried part of a user's Codex config.toml, and its round trip through ``-c`` overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_runners.runners import codex_config
from llm_runners.runners.codex import CodexRunner

from .test_codex import make_turn

USER_CONFIG = """
model = "gpt-top"
model_provider = "corp"
profile = "work"
notify = ["notify-send", "done"]
approval_policy = "never"

[model_providers.corp]
name = "Corp gateway"
base_url = "https://llm.corp.example/v1"
env_key = "CORP_KEY"
env_http_headers = { "X-Team" = "CORP_TEAM" }
query_params = { "api-version" = "2026-01-01" }

[mcp_servers.files]
command = "mcp-files"

[shell_environment_policy]
inherit = "all"

[profiles.work]
model = "gpt-work"
model_reasoning_effort = "high"
sandbox_mode = "danger-full-access"
"""


def test_only_the_carried_keys_survive_and_the_profile_applies(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(USER_CONFIG)
    setup = codex_config.user_setup(tmp_path)
    assert setup == {
        "model": "gpt-work",
        "model_provider": "corp",
        "model_reasoning_effort": "high",
        "model_providers": tomllib.loads(USER_CONFIG)["model_providers"],
    }
    assert codex_config.user_setup(tmp_path, "nonesuch")["model"] == "gpt-top"
    assert codex_config.user_setup(tmp_path / "missing") == {}
    (tmp_path / "config.toml").write_text("model = ")
    with pytest.raises(codex_config.CodexConfigError, match="not valid TOML"):
        codex_config.user_setup(tmp_path)


def test_override_args_round_trip_through_codex_style_parsing(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(USER_CONFIG)
    setup = codex_config.user_setup(tmp_path)
    args = codex_config.override_args(setup)
    assert args[::2] == ["-c"] * (len(args) // 2)
    assert codex_config.apply_overrides({}, args) == setup


def test_operator_overrides_and_profile_flag(tmp_path: Path) -> None:
    args = ["--profile", "p1", "-c", "model_provider=fake", "-c", 'model_providers.fake.env_key="K"']
    assert codex_config.profile_from_args(args) == "p1"
    assert codex_config.profile_from_args(["--profile=p2"]) == "p2"
    applied = codex_config.apply_overrides({"model": "m"}, args)
    assert applied == {"model": "m", "model_provider": "fake", "model_providers": {"fake": {"env_key": "K"}}}
    assert codex_config.active_provider(applied) == ("fake", {"env_key": "K"})
    assert codex_config.active_provider({}) == ("openai", None)


@pytest.mark.anyio
async def test_runner_passes_the_provider_key_and_bounds_its_retries(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(USER_CONFIG)
    env = {"HOME": str(tmp_path), "CODEX_HOME": str(tmp_path), "CORP_KEY": "k", "CORP_TEAM": "t"}
    runner = CodexRunner(binary="/bin/true", env=env, retries=2)
    assert (await runner.auth_status()).authenticated is True
    assert runner.endpoint() == "https://llm.corp.example/v1"
    inv = runner.invocation(make_turn(tmp_path))
    assert inv.env == {"CORP_KEY": "k", "CORP_TEAM": "t"}
    overrides = [inv.argv[i + 1] for i, a in enumerate(inv.argv) if a == "-c"]
    assert "model_providers.corp.request_max_retries=2" in overrides
    assert not any(o.startswith(("notify", "mcp_servers", "shell_environment_policy", "approval")) for o in overrides)
    del runner.env["CORP_KEY"]
    runner.env["PATH"] = "/usr/bin"
    status = await runner.auth_status()
    assert status.authenticated is False and status.reason and "CORP_KEY" in status.reason


scalars = st.one_of(
    st.text(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
)
values: Any = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(values)
def test_toml_value_is_valid_toml_for_any_value(value: Any) -> None:
    assert tomllib.loads(f"v = {codex_config.toml_value(value)}")["v"] == value
