"""OpenAI-compatible presets: ``type = "openrouter"`` builds openai_compat with the base URL and key variable."""

from __future__ import annotations

import pytest

from llm_runners.http import GeminiProvider, OpenAICompatProvider
from llm_runners.router import PRESETS, build_provider
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.types import ChatRequest, Message

EXPECTED = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "ollama": ("http://127.0.0.1:11434/v1", None),
    "vllm": ("http://127.0.0.1:8000/v1", "VLLM_API_KEY"),
    "lmstudio": ("http://127.0.0.1:1234/v1", None),
}


def test_the_six_presets_exist() -> None:
    assert set(PRESETS) == set(EXPECTED)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_preset_fills_base_url_and_key(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, key_env = EXPECTED[kind]
    if key_env:
        monkeypatch.setenv(key_env, f"key-for-{kind}")
    provider = build_provider("mine", {"type": kind, "model": "m1"})
    assert isinstance(provider, OpenAICompatProvider)
    assert provider.base_url == base_url and provider.model == "m1"
    assert provider.api_key == (f"key-for-{kind}" if key_env else None)
    # the settings name alone selects the preset too
    assert build_provider(kind, {}).base_url == base_url  # type: ignore[attr-defined]


def test_options_override_the_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "default-key")
    monkeypatch.setenv("MY_KEY", "my-key")
    provider = build_provider("x", {"type": "openrouter", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_KEY"})
    assert isinstance(provider, OpenAICompatProvider)
    assert provider.base_url == "http://127.0.0.1:9/v1" and provider.api_key == "my-key"
    assert build_provider("y", {"type": "openrouter", "api_key": "inline"}).api_key == "inline"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown option 'base_ur'"):
        build_provider("z", {"type": "groq", "base_ur": "http://127.0.0.1:9/v1"})


def test_gemini_api_type_reads_its_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    provider = build_provider("g", {"type": "gemini_api", "model": "gemini-2.5-flash"})
    assert isinstance(provider, GeminiProvider)
    assert provider.api_key == "g-key" and provider.base_url == "https://generativelanguage.googleapis.com"


@pytest.mark.anyio
async def test_a_preset_answers_against_the_fake_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "groq-key")
    with FakeModelAPI() as api:
        provider = build_provider("groq", {"base_url": api.openai_base_url, "model": "fake-model"})
        async with provider:
            response = await provider.complete(ChatRequest(messages=[Message(role="user", content="hi")]))
        assert response.content == "pong from fake"
        assert api.last_main_request().api_key == "groq-key"
