"""Subscription quotas from the real Claude Code 2.1.197: with a subscription token (no API key) it turns the
API's ``anthropic-ratelimit-unified-*`` headers into ``rate_limit_event`` lines; the runner keeps them as its
quota, wrappers answer for it, and the server shows it in ``GET /v1/usage`` and ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from llm_runners.config import Settings
from llm_runners.router import Router
from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.server import create_app
from llm_runners.sessions import SessionStore
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.types import ChatRequest, Message

pytestmark = pytest.mark.anyio


def _runner(tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Callable[[str], Path]) -> ClaudeCodeRunner:
    env = {
        **tmp_home.env(),
        "ANTHROPIC_BASE_URL": fake_api.anthropic_base_url,
        "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-fake",  # a subscription login, not an API key
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    return ClaudeCodeRunner(
        binary=str(cli_bin("claude")), env=env, cwd=str(tmp_home.workdir), sessions=SessionStore(), timeout=90.0
    )


async def test_claude_code_rate_limit_events_become_the_providers_quota(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, no_leftover_processes: None
) -> None:
    reset = int(time.time()) + 9000  # half-way through the 5 h window, so 95 % crosses the CLI's warning line
    fake_api.response_headers.update(
        {
            "anthropic-ratelimit-unified-status": "allowed",
            "anthropic-ratelimit-unified-reset": str(reset),
            "anthropic-ratelimit-unified-5h-utilization": "0.95",
            "anthropic-ratelimit-unified-5h-reset": str(reset),
        }
    )
    runner = _runner(tmp_home, fake_api, cli_bin)
    router = Router({"claude_code": runner}, "claude_code")  # wrapped as the server wraps it
    app = create_app(router, Settings())
    async with runner:
        assert runner.quotas() == [] and runner.quota_used() is None
        out = await router.providers["claude_code"].complete(ChatRequest(messages=[Message(role="user", content="hi")]))
        assert out.content
        [quota] = runner.quotas()
        assert quota.window == "five_hour" and quota.percent_used == 95.0 and quota.status == "allowed_warning"
        assert quota.resets_at == reset and quota.source == "claude_code:rate_limit_event"
        assert router.providers["claude_code"].quota_used() == 95.0  # the wrappers answer for the runner
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://server") as client:
            usage = (await client.get("/v1/usage")).json()
            assert usage["quotas"]["claude_code"]["percent_used"] == 95.0
            assert usage["quotas"]["claude_code"]["windows"][0]["resets_at"] == reset
            metrics = (await client.get("/metrics")).text
        assert 'llm_runners_quota_used_percent{provider="claude_code",window="five_hour"} 95.0' in metrics
        assert 'llm_runners_quota_resets_at_seconds{provider="claude_code",window="five_hour"}' in metrics


async def test_codex_app_server_rate_limit_notifications_become_the_providers_quota(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Any, no_leftover_processes: None
) -> None:
    from codex_env import codex_env, fake_provider_args

    from llm_runners.runners.codex import CodexRunner

    now = int(time.time())
    fake_api.response_headers.update(
        {
            "x-codex-primary-used-percent": "42.5",
            "x-codex-primary-window-minutes": "300",
            "x-codex-primary-reset-at": str(now + 3600),
            "x-codex-secondary-used-percent": "12",
            "x-codex-secondary-window-minutes": "10080",
            "x-codex-secondary-reset-at": str(now + 86_400),
        }
    )
    runner = CodexRunner(
        transport="app-server",
        binary=str(cli_bin("codex")),
        env=codex_env(tmp_home.env()),
        extra_args=fake_provider_args(fake_api.openai_base_url),
        model="fake-model",
    )
    async with runner:
        # account/rateLimits/read needs a ChatGPT login: with an API key it is refused, and the server still serves
        out = await runner.complete(ChatRequest(messages=[Message(role="user", content="hi")]))
        assert out.content == "pong from fake"
        quotas = {q.window: q for q in runner.quotas()}
        assert set(quotas) == {"primary", "secondary"}
        assert quotas["primary"].percent_used in (42.0, 43.0) and quotas["primary"].window_minutes == 300
        assert quotas["primary"].resets_at == now + 3600
        assert quotas["secondary"].percent_used == 12.0 and quotas["secondary"].window_minutes == 10080
        assert runner.quota_used() == quotas["primary"].percent_used
