"""The tokens in the user's CLI credential files are masked everywhere we write, even when they do not look like
credentials: log lines, the error of a failed run, ``/health`` and the ``providers`` output.

For each runner a throw-away HOME holds its credential files with marker values (``llmr-MARKER-…``, no known
credential shape, so only the registration of the files' secrets can mask them). A stand-in CLI prints every
marker: in its version (``--version``, which ``/health`` and ``providers`` show) and on stderr when it runs (the
failed run's error and log line)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from server_helpers import CLI, Served, failed_run, serve_env

from llm_runners.redact import MASK, redact
from llm_runners.runners import REGISTRY, CLIRunner

Serve = Callable[..., Served]

#: runner -> {file under HOME: content}, ``{<field>}`` standing for that field's marker
FILES: dict[str, dict[str, str]] = {
    "claude_code": {
        ".claude/.credentials.json": '{"claudeAiOauth": {"accessToken": "{access}", "refreshToken": "{refresh}", '
        '"expiresAt": 99999999999999, "scopes": ["user:inference"]}}',
        ".claude.json": '{"primaryApiKey": "{primary}", "hasCompletedOnboarding": true}',
    },
    "codex": {
        ".codex/auth.json": '{"OPENAI_API_KEY": "{apikey}", "tokens": {"id_token": "{id}", "access_token": "{access}",'
        ' "refresh_token": "{refresh}", "account_id": "acct"}, "last_refresh": "2026-01-01T00:00:00Z"}',
        ".codex/config.toml": '[model_providers.spare]\nname = "spare"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'env_key = "SPARE_API_KEY"\nexperimental_bearer_token = "{bearer}"\n'
        'http_headers = { "Authorization" = "Bearer {header}" }\n',
    },
    "gemini": {
        ".gemini/oauth_creds.json": '{"access_token": "{access}", "refresh_token": "{refresh}", "id_token": "{id}", '
        '"token_type": "Bearer", "expiry_date": 1}',
        ".gemini/settings.json": '{"security": {"auth": {"selectedType": "oauth-personal"}}}',
        ".gemini/.env": "GEMINI_API_KEY={envkey}\n",
    },
    "qwen": {
        ".qwen/oauth_creds.json": '{"access_token": "{access}", "refresh_token": "{refresh}", "token_type": "Bearer", '
        '"resource_url": "portal.qwen.ai", "expiry_date": 1}',
        ".qwen/settings.json": '{"security": {"auth": {"selectedType": "qwen-oauth", "apiKey": "{apikey}"}}}',
    },
    "opencode": {
        ".local/share/opencode/auth.json": '{"anthropic": {"type": "oauth", "access": "{access}", '
        '"refresh": "{refresh}", "expires": 1}, "openai": {"type": "api", "key": "{key}"}}',
    },
    "kilo": {
        ".local/share/kilo/auth.json": '{"kilo": {"type": "oauth", "access": "{access}", "refresh": "{refresh}", '
        '"expires": 1}, "openrouter": {"type": "api", "key": "{key}"}}',
    },
    "cline": {
        ".cline/data/settings/providers.json": '{"version": 1, "lastUsedProvider": "openai-compatible", "providers": '
        '{"openai-compatible": {"settings": {"provider": "openai-compatible", "apiKey": "{apikey}", "model": "m", '
        '"baseUrl": "http://127.0.0.1:9/v1"}, "tokenSource": "manual"}}}',
    },
    "copilot": {
        ".copilot/config.json": '{"last_logged_in_user": {"host": "https://github.com", "login": "me"}, '
        '"copilot_tokens": {"https://github.com:me": "{token}"}}',
    },
    "goose": {
        ".config/goose/config.yaml": "GOOSE_PROVIDER: openai\nGOOSE_MODEL: m\n",
        ".config/goose/secrets.yaml": "OPENAI_API_KEY: {apikey}\n",
    },
    "continue": {
        ".continue/config.yaml": "name: mine\nversion: 1.0.0\nschema: v1\nmodels:\n"
        '  - { name: m, provider: openai, model: m, apiBase: "http://127.0.0.1:9/v1", apiKey: {apikey} }\n',
    },
}
assert set(FILES) <= set(REGISTRY), set(FILES) - set(REGISTRY)

#: variables of the caller's environment that would point a runner elsewhere than the throw-away HOME
MOVED = (
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CODEX_HOME",
    "CLAUDE_CONFIG_DIR",
    "GEMINI_CLI_HOME",
    "QWEN_HOME",
    "COPILOT_HOME",
    "CONTINUE_GLOBAL_DIR",
    "CLINE_DIR",
    "CLINE_DATA_DIR",
    "CLINE_PROVIDER_SETTINGS_PATH",
)

#: runners whose version is cut after one word of the suffix (``9.9.9-llmr``): no marker gets into it
CUT_VERSION = ["copilot"]

STANDIN = """#!{python} -IS
import sys
markers = {markers!r}
if any(a in ("--version", "-v", "-V", "version") for a in sys.argv[1:]):
    print("9.9.9-" + "-".join(markers))
    sys.exit(0)
sys.stderr.write("".join("cached login: " + m + "\\n" for m in markers))
sys.exit(1)
"""


class Setup:
    """Throw-away HOMEs with marker-filled credential files, one per runner, and a stand-in CLI for each."""

    def __init__(self, root: Path) -> None:
        tag = uuid.uuid4().hex[:8]  # fresh markers per test: another test's registrations cannot mask these
        self.markers: dict[str, list[str]] = {}
        self.homes: dict[str, Path] = {}
        self.binaries: dict[str, Path] = {}
        for name, files in FILES.items():
            home = root / name / "home"
            marks: list[str] = []
            for rel, template in files.items():
                path = home / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                text = template
                for field in _fields(template):
                    marker = f"llmr-MARKER-{name}-{field}-{tag}"
                    marks.append(marker)
                    text = text.replace("{" + field + "}", marker)
                path.write_text(text)
            binary = root / name / "standin"
            binary.write_text(STANDIN.format(python=sys.executable, markers=marks))
            binary.chmod(0o755)
            self.markers[name], self.homes[name], self.binaries[name] = marks, home, binary

    def runner(self, name: str) -> CLIRunner:
        cls = REGISTRY[name]
        return cls(binary=str(self.binaries[name]), env={"HOME": str(self.homes[name])}, timeout=30)

    def assert_masked(self, text: str, where: str) -> None:
        for name, marks in self.markers.items():
            for marker in marks:
                assert marker not in text, f"{name}'s {marker} leaked into {where}: {text[:3000]}"


def _fields(template: str) -> list[str]:
    import re

    return re.findall(r"\{([a-z]+)\}", template)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    for var in MOVED:
        monkeypatch.delenv(var, raising=False)
    yield Setup(tmp_path)


def test_the_rule_registers_credentials_not_words(tmp_path: Path) -> None:
    """Credential-named keys only; ``authType: "oauth-personal"`` and variable names stay readable."""
    from llm_runners.redact import register_files

    path = tmp_path / "settings.json"
    path.write_text(
        '{"security": {"auth": {"selectedType": "oauth-personal-plain", "apiKey": "llmr-rule-key-0001"}},'
        ' "env_key": "SOME_API_KEY", "model": "a-model-name", "refreshToken": "llmr-rule-refresh-0002"}'
    )
    register_files([path, tmp_path / "missing.json", tmp_path])  # a missing file and a directory: ignored
    text = "oauth-personal-plain SOME_API_KEY a-model-name llmr-rule-key-0001 llmr-rule-refresh-0002"
    assert redact(text) == f"oauth-personal-plain SOME_API_KEY a-model-name {MASK} {MASK}"
    bad = tmp_path / "broken.json"
    bad.write_bytes(b"\xff\xfe{not json")
    register_files([bad])  # malformed: no error


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_failed_run_and_its_log_line_mask_the_credential_files(
    name: str, setup: Setup, log_lines: io.StringIO
) -> None:
    error = failed_run(setup.runner(name))
    shown = f"{error}\n{error.detail or ''}\n{json.dumps(error.openai_envelope())}"
    setup.assert_masked(shown, "the error")
    lines = log_lines.getvalue()
    setup.assert_masked(lines, "the log")
    assert "cached login: " + MASK in shown + lines  # the stand-in's stderr did reach the caller, masked


def test_health_masks_the_credential_files(setup: Setup, serve: Serve) -> None:
    s = serve({name: setup.runner(name) for name in FILES}, default="claude_code")
    seen = [httpx2.get(s.url + path).text for path in ("/health", "/health?detail=1", "/ready")]
    for text in seen:
        setup.assert_masked(text, "/health")
    versions = {p["provider"]: p.get("version") or "" for p in json.loads(seen[1])["providers"]}
    assert [n for n, v in versions.items() if not v.startswith("9.9.9-" + MASK)] == CUT_VERSION, versions


def test_providers_output_masks_the_credential_files(setup: Setup, tmp_path: Path) -> None:
    config = tmp_path / "providers.toml"
    config.write_text(
        "".join(
            f'[providers.{name}.options]\nbinary = "{setup.binaries[name]}"\n'
            f'env = {{ HOME = "{setup.homes[name]}" }}\n\n'
            for name in FILES
        )
    )
    env = {k: v for k, v in serve_env().items() if k not in MOVED}
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    for extra in ((), ("--json",)):
        done = subprocess.run(
            [CLI, "--config", str(config), "providers", *extra], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        setup.assert_masked(done.stdout + done.stderr, "the providers output")
        assert done.stdout.count("9.9.9-" + MASK) == len(FILES) - len(CUT_VERSION) if extra else MASK in done.stdout
