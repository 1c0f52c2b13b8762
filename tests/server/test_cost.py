"""Cost on every usage: the shipped price table, the config's overrides, the CLI's own figure, subscription runs
flagged ``estimated``, and the cost fields on each wire format (through the official SDKs)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import anthropic
import anyio
import openai
import pytest
from server_helpers import Served

from llm_runners.config import ConfigError, Settings, load_settings
from llm_runners.pricing import PRICES, Price, PriceTable
from llm_runners.router import Router
from llm_runners.runners.claude_code import ClaudeCodeRunner
from llm_runners.runners.codex import CodexRunner
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ChatRequest, Message, Usage, UsageEvent
from llm_runners.wrappers.cost import Priced


def test_longest_prefix_wins_case_insensitively() -> None:
    table = PriceTable()
    assert table.find("claude-sonnet-4-5-20250929") is PRICES["claude-sonnet-4"]
    assert table.find("claude-opus-4-1-20250805") is PRICES["claude-opus-4-1"]
    assert table.find("claude-opus-4-20250514") is PRICES["claude-opus-4-2025"]
    assert table.find("claude-opus-4-5-20251101") is PRICES["claude-opus-4-5"]
    assert table.find("GPT-5.1-Codex") is PRICES["gpt-5"]
    assert table.find("gpt-5-mini-2025-08-07") is PRICES["gpt-5-mini"]
    assert table.find("gemini-2.5-flash-lite") is PRICES["gemini-2.5-flash-lite"]
    assert table.find("gemini-2.5-flash-preview") is PRICES["gemini-2.5-flash"]
    assert table.find("sonnet") is PRICES["sonnet"]
    assert table.find("llama3.2") is None and table.find(None) is None and table.find("") is None


def test_cost_counts_fresh_input_cache_reads_writes_and_output() -> None:
    price = Price(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75)
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000, cache_write_tokens=100_000, output_tokens=20_000)
    # 500k fresh x 3 + 400k x 0.30 + 100k x 3.75 + 20k x 15, per million
    assert price.cost(usage) == pytest.approx(1.5 + 0.12 + 0.375 + 0.3)
    no_cache_prices = Price(input=2.0, output=8.0)
    assert no_cache_prices.cost(usage) == pytest.approx(2.0 + 0.16)  # reads and writes at the input price


def test_config_pricing_extends_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[pricing]\n"my-model" = { input = 1.0, output = 2.0 }\n'
        '"gpt-5" = { input = 10.0, output = 20.0, cache_read = 1.0, cache_write = 10.0 }\n'
    )
    table = PriceTable(load_settings(str(path), env={}).pricing)
    assert table.cost(Usage(input_tokens=1000, output_tokens=500), "my-model-v2") == pytest.approx(0.002)
    assert table.find("gpt-5.1") == Price(10.0, 20.0, 1.0, 10.0)
    assert table.find("gpt-5-mini") is PRICES["gpt-5-mini"]  # a longer shipped prefix still wins
    path.write_text('[pricing]\n"x" = { input = 1.0 }\n')
    with pytest.raises(ConfigError, match=re.escape("'pricing.x' needs 'output'")):
        load_settings(str(path), env={})
    path.write_text('[pricing]\n"x" = { input = 1.0, output = -2 }\n')
    with pytest.raises(ConfigError, match=re.escape("pricing.x.output")):
        load_settings(str(path), env={})
    path.write_text('[pricing]\n"x" = { input = 1.0, output = 2, cache = 3 }\n')
    with pytest.raises(ConfigError, match=re.escape("unknown key 'pricing.x.cache'")):
        load_settings(str(path), env={})


class _Subscribed(ScriptedProvider):
    def subscription_billed(self) -> bool:
        return True


def _request(model: str | None = None) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="hi")], model=model)


def _usages(provider: Priced, request: ChatRequest) -> list[Usage]:
    async def run() -> list[Usage]:
        return [e.usage async for e in provider.stream(request) if isinstance(e, UsageEvent)]

    return anyio.run(run)


def test_the_cli_figure_is_kept_and_flagged_estimated_on_a_subscription() -> None:
    reported = Usage(input_tokens=10, output_tokens=5, cost_usd=0.25)
    api = Priced(ScriptedProvider([Reply("x", usage=reported)]))
    assert _usages(api, _request("sonnet")) == [reported]  # an API bill: kept as it is
    subscribed = Priced(_Subscribed([Reply("x", usage=reported)]))
    (usage,) = _usages(subscribed, _request("sonnet"))
    assert usage.cost_usd == 0.25 and usage.cost_estimated is True


def test_a_missing_cost_is_computed_for_the_model_that_answered_or_left_unknown() -> None:
    usage = Usage(input_tokens=2_000_000, output_tokens=1_000_000)
    provider = Priced(ScriptedProvider([Reply("x", usage=usage, model="gpt-5-codex")]))
    (priced,) = _usages(provider, _request("whatever-was-asked"))
    assert priced.cost_usd == pytest.approx(2 * 1.25 + 10.0) and priced.cost_estimated is True
    unknown = Priced(ScriptedProvider([Reply("x", usage=usage)], default_model="llama3.2"))
    (left,) = _usages(unknown, _request())
    assert left.cost_usd is None and left.cost_estimated is False  # unknown, never a silent $0
    completed = anyio.run(Priced(ScriptedProvider([Reply("x", usage=usage)])).complete, _request("gemini-2.5-pro"))
    assert completed.usage is not None and completed.usage.cost_usd == pytest.approx(2 * 1.25 + 10.0)


def test_cli_runners_are_subscription_billed_unless_an_api_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "CODEX_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert ClaudeCodeRunner().subscription_billed() is True
    assert ClaudeCodeRunner(env={"ANTHROPIC_API_KEY": "sk-ant"}).subscription_billed() is False
    assert CodexRunner().subscription_billed() is True
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert CodexRunner().subscription_billed() is False
    assert ScriptedProvider().subscription_billed() is False


def _router(replies: list[Reply | str], *, default_model: str, pricing: dict[str, dict[str, float]]) -> Router:
    settings = Settings(pricing=pricing)
    scripted = ScriptedProvider(replies, default_model=default_model)
    return Router.from_settings(settings, extra={"scripted": scripted})


def test_every_wire_format_carries_the_cost(serve: Callable[..., Served]) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cached_tokens=500_000)
    expected = (500_000 * 1.25 + 500_000 * 0.125 + 100_000 * 10.0) / 1e6
    provider = ScriptedProvider([Reply("fine", usage=usage)], default_model="gpt-5")
    s = serve(provider)
    client = openai.OpenAI(base_url=s.v1, api_key="unused", max_retries=0)
    chat = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
    assert chat.usage is not None
    assert chat.usage.model_extra == {"cost_usd": pytest.approx(expected), "cost_estimated": True}
    chunks = list(
        client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1].usage
    assert last is not None and last.model_extra is not None and last.model_extra["cost_usd"] == pytest.approx(expected)
    response = client.responses.create(model="scripted", input="hi")
    assert response.usage is not None and response.usage.model_extra is not None
    assert response.usage.model_extra["cost_usd"] == pytest.approx(expected)
    message = anthropic.Anthropic(base_url=s.url, api_key="unused", max_retries=0).messages.create(
        model="scripted", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.usage.model_extra is not None
    assert message.usage.model_extra["cost_usd"] == pytest.approx(expected)
    assert message.usage.model_extra["cost_estimated"] is True


def test_the_router_from_settings_prices_with_the_configured_table() -> None:
    router = _router(
        [Reply("x", usage=Usage(input_tokens=1_000_000, output_tokens=0))],
        default_model="house-model",
        pricing={"house-": {"input": 7.0, "output": 1.0}},
    )

    async def run() -> float | None:
        route = await router.resolve("scripted")
        response = await route.provider.complete(_request())
        await router.aclose()
        return response.usage.cost_usd if response.usage else None

    assert anyio.run(run) == pytest.approx(7.0)
