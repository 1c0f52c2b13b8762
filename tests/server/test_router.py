"""Router resolution and building providers from settings."""

from __future__ import annotations

import pytest

from llm_runners.config import ProviderSettings, Settings
from llm_runners.errors import ModelNotFound
from llm_runners.router import Router, build_provider
from llm_runners.testing.scripted import ScriptedProvider


def _router(**kw: object) -> Router:
    providers = {
        "alpha": ScriptedProvider(name="alpha", default_model="a-1", models=["a-1", "a-big"]),
        "beta": ScriptedProvider(name="beta", default_model="b-1", models=["b-1", "shared"]),
        "gamma": ScriptedProvider(name="gamma", default_model="g-1", models=["g-1", "shared"]),
    }
    return Router(providers, **kw)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("asked", "provider", "model"),
    [
        ("alpha:custom", "alpha", "custom"),
        ("beta", "beta", None),
        ("beta:", "beta", None),
        ("a-big", "alpha", "a-big"),
        ("b-1", "beta", "b-1"),
        ("fast", "alpha", "a-big"),
        ("chain", "alpha", "a-big"),
        (None, "gamma", None),
        ("", "gamma", None),
        ("unlisted-model", "gamma", "unlisted-model"),
        ("shared", "gamma", "shared"),  # listed by two providers: ambiguous, so the default provider gets it
    ],
)
async def test_resolution_order(asked: str | None, provider: str, model: str | None) -> None:
    router = _router(default="gamma", aliases={"fast": "alpha:a-big", "chain": "fast"})
    route = await router.resolve(asked)
    assert (route.name, route.model) == (provider, model)


@pytest.mark.anyio
async def test_unknown_provider_prefix_fails_loudly_naming_what_exists() -> None:
    router = _router(default="gamma", aliases={"fast": "alpha"})
    with pytest.raises(ModelNotFound) as info:
        await router.resolve("alpah:x")
    assert "'alpah'" in info.value.message
    assert "alpha, beta, gamma" in info.value.message and "fast" in info.value.message


@pytest.mark.anyio
async def test_without_a_default_a_bare_unknown_name_is_not_found() -> None:
    router = _router()
    with pytest.raises(ModelNotFound):
        await router.resolve("whatever")
    with pytest.raises(ModelNotFound):
        await router.resolve(None)


@pytest.mark.anyio
async def test_alias_cycle_is_reported() -> None:
    router = _router(aliases={"a": "b", "b": "a"})
    with pytest.raises(ModelNotFound, match="cycle"):
        await router.resolve("a")


def test_bad_default_is_refused() -> None:
    with pytest.raises(ValueError, match="nope"):
        _router(default="nope")


@pytest.mark.anyio
async def test_from_settings_builds_scripted_entries_with_limits() -> None:
    settings = Settings(
        default_provider="one",
        providers={
            "one": ProviderSettings(options={"type": "scripted", "replies": ["hi"]}, max_concurrency=2),
            "two": ProviderSettings(options={"type": "scripted"}),
        },
        aliases={"x": "two"},
    )
    router = Router.from_settings(settings)
    assert sorted(router.providers) == ["one", "two"]
    route = await router.resolve("x")
    assert route.name == "two"
    assert [m.id for m in await router.models()] == ["one:scripted-1", "two:scripted-1", "x"]


def test_build_provider_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="scripted"):
        build_provider("mystery", {})


@pytest.mark.anyio
async def test_the_server_turns_warm_on_unless_the_options_say_otherwise() -> None:
    from llm_runners.router import SERVE_WARM
    from llm_runners.runners.claude_code import ClaudeCodeRunner
    from llm_runners.runners.gemini import GeminiRunner

    settings = Settings(
        providers={
            "claude_code": ProviderSettings(options={}, max_concurrency=3),
            "cold": ProviderSettings(options={"type": "claude_code", "warm": 0}),
            "gemini": ProviderSettings(options={}),  # cannot be kept warm: no option given
        }
    )
    router = Router.from_settings(settings, warm=SERVE_WARM)
    try:
        warm = build_provider("claude_code", {}, warm=SERVE_WARM)
        assert isinstance(warm, ClaudeCodeRunner)
        assert warm.warm_pool is not None and warm.warm_pool.size == SERVE_WARM == 1
        assert warm.live_pool is not None and warm.live_pool.size >= 1  # live conversations come with warm
        cold = build_provider("cold", {"type": "claude_code", "warm": 0}, warm=SERVE_WARM)
        assert isinstance(cold, ClaudeCodeRunner) and cold.warm_pool is None and cold.live_pool is None
        library = build_provider("claude_code", {})  # the library's (and `chat`'s) default: cold
        assert isinstance(library, ClaudeCodeRunner) and library.warm_pool is None and library.live_pool is None
        assert isinstance(build_provider("gemini", {}, warm=SERVE_WARM), GeminiRunner)
        # the routed claude_code counts its processes against its concurrency limit (3)
        assert router.providers["claude_code"].processes() == {"running": 0, "live": 0, "spare": 0}
        inner: object = router.providers["claude_code"]
        while not isinstance(inner, ClaudeCodeRunner):
            inner = inner.inner  # type: ignore[attr-defined]  # through the wrappers
        assert isinstance(inner, ClaudeCodeRunner) and inner.process_limit == 3 and inner.warm_pool is not None
    finally:
        await router.aclose()
