"""The ``state`` setting: file and environment, checked when loaded; the app opens the backend it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_runners.config import ConfigError, load_settings
from llm_runners.router import Router
from llm_runners.server import create_app
from llm_runners.state import MemoryState, RedisState
from llm_runners.testing.scripted import ScriptedProvider


def test_state_from_file_and_environment(tmp_path: Path) -> None:
    assert load_settings(None, env={}).state == "memory"
    config = tmp_path / "c.toml"
    config.write_text('state = "redis://127.0.0.1:6390/2"\n')
    assert load_settings(str(config), env={}).state == "redis://127.0.0.1:6390/2"
    assert load_settings(str(config), env={"LLM_RUNNERS_STATE": "memory"}).state == "memory"
    config.write_text('state = "postgres://x"\n')
    with pytest.raises(ConfigError, match="'state' must be \"memory\" or a redis:// URL"):
        load_settings(str(config), env={})
    with pytest.raises(ConfigError, match="LLM_RUNNERS_STATE"):
        load_settings(None, env={"LLM_RUNNERS_STATE": "nonsense"})


def test_the_app_opens_the_state_the_settings_name(tmp_path: Path) -> None:
    router = Router({"scripted": ScriptedProvider()}, "scripted")
    assert isinstance(create_app(router).state.shared, MemoryState)
    config = tmp_path / "c.toml"
    config.write_text('state = "redis://127.0.0.1:1/0"\n')
    app = create_app(router, load_settings(str(config), env={}))
    assert isinstance(app.state.shared, RedisState)
    given = MemoryState()
    assert create_app(router, state=given).state.shared is given
