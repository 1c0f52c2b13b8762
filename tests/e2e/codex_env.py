"""Codex CLI's offline setup for the e2e tests (clis.md section 4).

The fake provider is given the way an operator would: ``-c`` overrides in ``extra_args`` (the route through the
user's own ``config.toml`` is tested in ``test_user_setup.py``). ``CODEX_HOME`` is still a
throw-away directory per test: it holds the session rollouts that ``exec resume`` reads. Retries are off
(``request_max_retries`` / ``stream_max_retries`` = 0) so an error case costs one request, not a backoff loop.
"""

from __future__ import annotations

from pathlib import Path

KEY_VAR = "FAKE_OPENAI_API_KEY"


def codex_env(home_env: dict[str, str], api_key: str = "dummy") -> dict[str, str]:
    """The runner env: the test's HOME/TMPDIR/XDG dirs, a fresh ``CODEX_HOME`` and the fake provider's key."""
    codex_home = Path(home_env["HOME"]) / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    return {**home_env, "CODEX_HOME": str(codex_home), KEY_VAR: api_key}


def fake_provider_args(base_url: str) -> list[str]:
    """``-c`` overrides that route Codex to the fake Responses API with retries off."""
    settings = {
        "model_provider": '"fake"',
        "model_providers.fake.name": '"Fake local"',
        "model_providers.fake.base_url": f'"{base_url}"',
        "model_providers.fake.env_key": f'"{KEY_VAR}"',
        "model_providers.fake.wire_api": '"responses"',
        "model_providers.fake.request_max_retries": "0",
        "model_providers.fake.stream_max_retries": "0",
    }
    args: list[str] = []
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    return args
