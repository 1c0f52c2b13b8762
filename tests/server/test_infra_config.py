from __future__ import annotations

from pathlib import Path

import pytest

from llm_runners.config import (
    ConfigError,
    ProviderSettings,
    Settings,
    check_bind_safety,
    is_loopback,
    load_settings,
)

FULL = """
host = "0.0.0.0"
port = 9001
api_keys = ["k1", "k2"]
default_provider = "claude_code"
strict = true
request_timeout = 30
max_body_bytes = 1024

[aliases]
fast = "claude_code:haiku"

[providers.claude_code]
max_concurrency = 2
max_queue = 5

[providers.claude_code.options]
model = "sonnet"
binary = "/opt/claude"

[providers.codex]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "llm-runners.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_file_or_env() -> None:
    assert load_settings(env={}) == Settings()


def test_full_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL), env={})
    assert s.host == "0.0.0.0" and s.port == 9001
    assert s.api_keys == ["k1", "k2"]
    assert s.default_provider == "claude_code"
    assert s.strict is True
    assert s.request_timeout == 30.0 and isinstance(s.request_timeout, float)
    assert s.max_body_bytes == 1024
    assert s.aliases == {"fast": "claude_code:haiku"}
    assert s.providers["claude_code"] == ProviderSettings(
        options={"model": "sonnet", "binary": "/opt/claude"}, max_concurrency=2, max_queue=5
    )
    assert s.providers["codex"] == ProviderSettings()
    assert s.provider("unknown") == ProviderSettings()


def test_environment_overrides_file(tmp_path: Path) -> None:
    env = {
        "LLM_RUNNERS_CONFIG": write(tmp_path, FULL),
        "LLM_RUNNERS_API_KEYS": " a , b,,",
        "LLM_RUNNERS_DEFAULT_PROVIDER": "codex",
        "LLM_RUNNERS_STRICT": "off",
        "LLM_RUNNERS_HOST": "127.0.0.2",
        "LLM_RUNNERS_PORT": "0",
    }
    s = load_settings(env=env)
    assert s.api_keys == ["a", "b"]
    assert s.default_provider == "codex"
    assert s.strict is False
    assert s.host == "127.0.0.2" and s.port == 0
    assert s.aliases == {"fast": "claude_code:haiku"}  # the rest still comes from the file


def test_explicit_path_wins_over_env_path(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("port = 1234\n")
    s = load_settings(str(other), env={"LLM_RUNNERS_CONFIG": write(tmp_path, FULL)})
    assert s.port == 1234 and s.host == "127.0.0.1"


def test_empty_api_keys_env_clears_file_keys(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL), env={"LLM_RUNNERS_API_KEYS": ""})
    assert s.api_keys == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("prot = 1\n", "unknown key 'prot'"),
        ("[providers.x]\nmax_concurency = 2\n", "unknown key 'providers.x.max_concurency'"),
        ('port = "80"\n', "'port' must be an integer, got str '80'"),
        ("port = 70000\n", "'port' must be a port number"),
        ("port = true\n", "'port' must be an integer"),
        ('api_keys = "abc"\n', "'api_keys' must be a list of strings"),
        ('api_keys = [""]\n', "must not contain empty keys"),
        ('strict = "yes"\n', "'strict' must be true or false"),
        ("request_timeout = 0\n", "'request_timeout' must be positive"),
        ("[aliases]\nfast = 3\n", "'aliases.fast' must be a string"),
        ("providers = 3\n", "'providers' must be a table"),
        ("[providers.x]\nmax_concurrency = 0\n", "'providers.x.max_concurrency' must be at least 1"),
        ("[providers.x]\noptions = 1\n", "'providers.x.options' must be a table"),
        ("max_body_bytes = -1\n", "'max_body_bytes' must be at least 1"),
        ("host = [\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert needle in str(info.value)
    assert path in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(str(tmp_path / "nope.toml"), env={})


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LLM_RUNNERS_PORT": "http"}, "LLM_RUNNERS_PORT must be an integer"),
        ({"LLM_RUNNERS_PORT": "99999"}, "must be a port number"),
        ({"LLM_RUNNERS_STRICT": "maybe"}, "LLM_RUNNERS_STRICT must be one of"),
    ],
)
def test_bad_environment(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env=env)


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_strict_true_spellings(value: str) -> None:
    assert load_settings(env={"LLM_RUNNERS_STRICT": value}).strict is True


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.4", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_bind_safety() -> None:
    check_bind_safety(Settings())  # loopback, no key: fine
    check_bind_safety(Settings(host="0.0.0.0", api_keys=["k"]))
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 without an API key: set api_keys"):
        check_bind_safety(Settings(host="0.0.0.0"))
