"""The router: which provider answers a model name, and with which model.

A caller's ``model`` is resolved, in this order:

1. empty / missing        -> the default provider with its own default model;
2. an alias               -> its target (aliases may chain, at most 8 steps), then resolved as below;
3. ``provider:model``     -> that provider with that model (``provider:`` alone = its default model);
4. a bare provider name   -> that provider with its default model;
5. a bare model name that exactly one provider lists in ``models()`` (or declares as ``default_model``) -> it;
6. any other bare name    -> the default provider with that model (the provider decides whether it knows it).

``x:y`` whose ``x`` is no provider is *not* sent to the default provider (unless some provider lists ``x:y`` as a
model): a typo in a provider name should fail loudly, not quietly reach another CLI. Every failure is a
:class:`~llm_runners.errors.ModelNotFound` naming the providers and aliases that exist.

A fallback chain (``[fallbacks]``, :mod:`~llm_runners.wrappers.fallback`) is a model name too, looked up right
after the aliases; its entries are resolved by these same rules, to the providers *below* the request wrappers
(cache, guardrails, quality gate), which wrap the chain as a whole instead.

Model listings are cached for ``models_ttl`` seconds so a bare model name does not ask every CLI on each request.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .errors import ModelNotFound
from .pricing import PriceTable
from .provider import Provider
from .types import Health, ModelInfo
from .wrappers.cache import Cache, CacheStats
from .wrappers.cost import Priced
from .wrappers.fallback import CircuitBreaker, Fallback
from .wrappers.features import FeatureAdapter
from .wrappers.guardrails import Guardrails, load_hook
from .wrappers.limits import ConcurrencyLimit
from .wrappers.quality import REFUSALS, QualityGate
from .wrappers.store import MemoryKeyValue, StateKeyValue, Switchable, TextKeyValue

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["Route", "Router", "build_provider", "check_aliases", "valid_options"]

log = logging.getLogger(__name__)

_MAX_ALIAS_DEPTH = 8


class Route:
    """The outcome of resolving a model name: the provider, its routing name and the model to ask it for."""

    __slots__ = ("model", "name", "provider")

    def __init__(self, name: str, provider: Provider, model: str | None) -> None:
        self.name = name
        self.provider = provider
        self.model = model

    @property
    def qualified(self) -> str:
        """``provider:model`` (or just ``provider`` when the provider has no default model)."""
        model = self.model or self.provider.default_model
        return f"{self.name}:{model}" if model else self.name

    def __repr__(self) -> str:
        return f"Route({self.name!r}, model={self.model!r})"


class Router:
    """Maps model names to providers (see the module docstring).

    When ``adapt`` is true each provider is wrapped in a ``FeatureAdapter`` (``strict`` passed through), so a
    feature a provider lacks is emulated, warned about or rejected instead of silently dropped.

    ``fallbacks`` maps a chain name to its entries (model names, resolved like a caller's) or to a ready
    :class:`Fallback` factory; ``wrap(name, provider)`` wraps every provider and every chain once more (the
    request wrappers: cache, guardrails, quality gate), while chain entries reach the providers as they were
    before ``wrap``.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        default: str | None = None,
        aliases: Mapping[str, str] | None = None,
        *,
        strict: bool = False,
        adapt: bool = True,
        models_ttl: float = 60.0,
        pricing: PriceTable | None = None,
        fallbacks: Mapping[str, Sequence[str] | Callable[[Router], Fallback]] | None = None,
        wrap: Callable[[str, Provider], Provider] | None = None,
        cache_stats: CacheStats | None = None,
    ) -> None:
        if default is not None and default not in providers:
            raise ValueError(f"default provider {default!r} is not configured (have: {', '.join(providers) or '-'})")
        if default is None and len(providers) == 1:
            default = next(iter(providers))
        check_aliases(aliases or {}, providers, default)
        check_fallbacks(fallbacks or {}, providers, aliases or {})
        #: the providers chain entries reach (below ``wrap``)
        self.inner: dict[str, Provider] = {
            name: (Priced(FeatureAdapter(p, strict=strict), pricing) if adapt else p) for name, p in providers.items()
        }
        keep: Callable[[str, Provider], Provider] = wrap or (lambda name, p: p)
        self.providers: dict[str, Provider] = {name: keep(name, p) for name, p in self.inner.items()}
        self.default = default
        self.aliases: dict[str, str] = dict(aliases or {})
        self.models_ttl = models_ttl
        self._listing: dict[str, tuple[float, list[ModelInfo]]] = {}
        #: fallback chains by name, ``wrap`` applied
        self.chains: dict[str, Provider] = {}
        #: the same chains without ``wrap`` (their counts, for /metrics)
        self.fallbacks: dict[str, Fallback] = {}
        for name, chain in (fallbacks or {}).items():
            built = chain(self) if callable(chain) else Fallback(name, list(chain), self.resolve_entry)
            self.fallbacks[name] = built
            self.chains[name] = keep(name, built)
        #: hit / miss / bypass counts of the response cache, when there is one
        self.cache_stats = cache_stats
        #: where the cache and the circuit breaker keep their state (:meth:`use_state` moves them)
        self.stores: list[Switchable] = []

    def use_state(self, state: TextKeyValue) -> None:
        """Keep the cache and the circuit breakers in the server's shared state when it is Redis (several replicas
        then share them); with the memory state they stay in this process's bounded stores."""
        if getattr(state, "backend", "memory") != "redis":
            return
        for store in self.stores:
            store.target = StateKeyValue(state)

    # -- building from settings -------------------------------------------------------------------------------
    @classmethod
    def from_settings(
        cls, settings: Settings, *, extra: Mapping[str, Provider] | None = None, warm: int | None = None
    ) -> Router:
        """Build every provider named in ``settings.providers`` (see :func:`build_provider`, which gets ``warm``),
        add ``extra`` (already built, e.g. scripted providers in tests), and wrap each in the feature adapter, the
        cost (the shipped prices with the settings' ``[pricing]`` on top) and the concurrency limit."""
        built: dict[str, Provider] = {}
        problems: list[str] = []
        for name, ps in settings.providers.items():
            try:
                built[name] = build_provider(name, ps.options, warm=warm)
            except ValueError as exc:  # every bad entry is reported at once, not only the first
                problems.append(str(exc))
        names = {*settings.providers, *(extra or {})}
        default = settings.default_provider or (next(iter(names)) if len(names) == 1 else None)
        try:
            check_aliases(settings.aliases, names, default)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        built.update(extra or {})
        wrapped: dict[str, Provider] = {}
        table = PriceTable(settings.pricing)
        for name, provider in built.items():
            ps = settings.provider(name)
            wrapped[name] = ConcurrencyLimit(
                Priced(FeatureAdapter(provider, strict=settings.strict), table),
                max_concurrency=ps.max_concurrency,
                max_queue=ps.max_queue,
            )
        check_fallbacks(settings.fallbacks, wrapped, settings.aliases)
        stores: list[Switchable] = []
        wrap, stats = request_wrappers(settings, stores)
        bs = settings.circuit_breaker
        breaker_store = Switchable(MemoryKeyValue())
        stores.append(breaker_store)
        breaker = CircuitBreaker(
            breaker_store, failures=bs.failures, cooldown=bs.cooldown, probe_timeout=bs.probe_timeout
        )

        def chain(name: str) -> Callable[[Router], Fallback]:
            fs = settings.fallbacks[name]
            return lambda router: Fallback(
                name,
                fs.models,
                router.resolve_entry,
                retries=fs.retries,
                backoff=fs.backoff,
                max_backoff=fs.max_backoff,
                max_retry_wait=fs.max_retry_wait,
                stop_on=frozenset(fs.stop_on),
                skip_above=fs.skip_above,
                breaker=breaker,
            )

        router = cls(
            wrapped,
            settings.default_provider,
            settings.aliases,
            strict=settings.strict,
            adapt=False,
            fallbacks={name: chain(name) for name in settings.fallbacks},
            wrap=wrap,
            cache_stats=stats,
        )
        router.stores = stores
        return router

    # -- resolution ---------------------------------------------------------------------------------------------
    def _not_found(self, what: str) -> ModelNotFound:
        have = ", ".join(sorted(self.providers)) or "none"
        msg = f"{what}. Providers: {have}"
        if self.aliases:
            msg += f"; aliases: {', '.join(sorted(self.aliases))}"
        msg += ". Use 'provider:model', a provider name, or an alias."
        return ModelNotFound(msg, param="model", code="model_not_found")

    def _default_route(self, model: str | None, asked: str) -> Route:
        if self.default is None:
            raise self._not_found(
                f"model {asked!r} matches no provider and no default provider is configured"
                if asked
                else "no model given and no default provider is configured"
            )
        return Route(self.default, self.providers[self.default], model)

    async def resolve(self, model: str | None) -> Route:
        """Resolve a caller's model name into a :class:`Route`; raises :class:`ModelNotFound`."""
        asked = model or ""
        name = asked.strip()
        for _ in range(_MAX_ALIAS_DEPTH):
            target = self.aliases.get(name)
            if target is None:
                break
            name = target
        else:
            raise self._not_found(f"alias {asked!r} does not resolve (a cycle?)")
        if not name:
            return self._default_route(None, asked)
        chain = self.chains.get(name)
        if chain is not None:
            return Route(name, chain, None)
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self.providers:
            return Route(prefix, self.providers[prefix], rest or None)
        if not sep and name in self.providers:
            return Route(name, self.providers[name], None)
        owner = await self._owner_of(name)
        if owner is not None:
            return Route(owner, self.providers[owner], name)
        if sep:
            raise self._not_found(f"unknown provider {prefix!r} in model {asked!r}")
        return self._default_route(name, asked)

    async def resolve_entry(self, entry: str) -> tuple[Provider, str | None]:
        """A fallback chain's entry: the provider below the request wrappers, and the model to ask it for."""
        route = await self.resolve(entry)
        if route.name not in self.inner:
            raise self._not_found(f"fallback entry {entry!r} names another chain; chains do not nest")
        return self.inner[route.name], route.model

    async def _owner_of(self, model: str) -> str | None:
        """The one provider that declares or lists ``model``; ``None`` when none or several do."""
        declared = [n for n, p in self.providers.items() if p.default_model == model]
        if len(declared) == 1:
            return declared[0]
        owners = []
        for name in self.providers:
            if any(m.id == model for m in await self._models_of(name)):
                owners.append(name)
        return owners[0] if len(owners) == 1 else None

    async def _models_of(self, name: str) -> list[ModelInfo]:
        now = time.monotonic()
        cached = self._listing.get(name)
        if cached is not None and now - cached[0] < self.models_ttl:
            return cached[1]
        try:
            with anyio.fail_after(10):
                listing = await self.providers[name].models()
        except Exception as exc:  # a provider that cannot list models simply owns no bare names
            log.warning("listing models of %s failed: %r", name, exc)
            listing = []
        self._listing[name] = (now, listing)
        return listing

    # -- listing --------------------------------------------------------------------------------------------------
    async def models(self) -> list[ModelInfo]:
        """Every provider's models, live (not cached), with ``provider:model`` ids, then the aliases."""
        out: list[ModelInfo] = []
        results: dict[str, list[ModelInfo]] = {}

        async def one(name: str) -> None:
            try:
                with anyio.fail_after(10):
                    results[name] = await self.providers[name].models()
            except Exception as exc:
                log.warning("listing models of %s failed: %r", name, exc)
                results[name] = []
            self._listing[name] = (time.monotonic(), results[name])

        async with anyio.create_task_group() as tg:
            for name in self.providers:
                tg.start_soon(one, name)
        for name in self.providers:
            for m in results[name]:
                out.append(
                    ModelInfo(
                        id=f"{name}:{m.id}", provider=name, display_name=m.display_name, context_window=m.context_window
                    )
                )
        for alias in sorted(self.aliases):
            out.append(ModelInfo(id=alias, provider="alias", display_name=self.aliases[alias]))
        for name in sorted(self.chains):
            out += await self.chains[name].models()
        return out

    async def health(self, per_provider_timeout: float = 10.0) -> list[Health]:
        """Each provider's health, asked concurrently; a provider that fails or hangs is reported not ready."""
        results: dict[str, Health] = {}

        async def one(name: str) -> None:
            try:
                with anyio.fail_after(per_provider_timeout):
                    results[name] = await self.providers[name].health()
            except Exception as exc:
                reason = "health check timed out" if isinstance(exc, TimeoutError) else f"health check failed: {exc}"
                results[name] = Health(
                    provider=name,
                    installed=False,
                    ready=False,
                    reason=reason,
                    fix=f"run `llm-runners providers` to diagnose {name}",
                )

        async with anyio.create_task_group() as tg:
            for name in self.providers:
                tg.start_soon(one, name)
        # by the configured name (an HTTP provider calls itself by its type, "openai_compat"), and verified or not
        return [
            results[n].model_copy(update={"provider": n, "verified": self.providers[n].capabilities.verified})
            for n in self.providers
        ]

    async def start(self) -> None:
        """Start every provider's warm resources; one that cannot start is logged and left to start on demand."""
        for name, provider in self.providers.items():
            try:
                await provider.start()
            except Exception as exc:
                log.warning("starting %s ahead of need failed (it starts on its first request): %r", name, exc)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception as exc:
                log.warning("closing %r failed: %r", provider, exc)


#: provider types that are not CLI runners: HTTP model APIs
HTTP_TYPES: dict[str, str] = {
    "openai_compat": "llm_runners.http:OpenAICompatProvider",
    "anthropic": "llm_runners.http:AnthropicProvider",
    "gemini_api": "llm_runners.http:GeminiProvider",
}


@dataclass(frozen=True)
class Preset:
    """A common OpenAI-compatible endpoint: ``type = "openrouter"`` instead of ``openai_compat`` + a base URL.
    Options still override both (``base_url`` for another host or port, ``api_key_env`` / ``api_key``)."""

    base_url: str
    #: the variable the key is read from when the options name none (None: the server takes no key by default)
    api_key_env: str | None


#: OpenAI-compatible presets, built as ``openai_compat`` with these filled in
PRESETS: dict[str, Preset] = {
    "openai": Preset("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "openrouter": Preset("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "groq": Preset("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "ollama": Preset("http://127.0.0.1:11434/v1", None),
    "vllm": Preset("http://127.0.0.1:8000/v1", "VLLM_API_KEY"),
    "lmstudio": Preset("http://127.0.0.1:1234/v1", None),
}


def check_fallbacks(fallbacks: Mapping[str, object], providers: Collection[str], aliases: Mapping[str, str]) -> None:
    """Refuse a chain named like a provider or an alias, and an entry that names a chain or a provider that is not
    configured (``x:model``). Raises ``ValueError`` listing every problem."""
    problems = []
    for name, chain in sorted(fallbacks.items()):
        if name in providers or name in aliases:
            problems.append(f"fallback chain {name!r} has the name of a {'provider' if name in providers else 'alias'}")
        entries = getattr(chain, "models", chain)
        if not isinstance(entries, list | tuple):
            continue
        for entry in entries:
            prefix, sep, _ = str(entry).strip().partition(":")
            if str(entry).strip() in fallbacks or prefix in fallbacks:
                problems.append(f"fallback chain {name!r}: entry {entry!r} is a chain (chains do not nest)")
            elif sep and prefix not in providers and prefix not in aliases:
                problems.append(f"fallback chain {name!r}: entry {entry!r} names no provider {prefix!r}")
    if problems:
        raise ValueError("; ".join(problems))


def request_wrappers(
    settings: Settings, stores: list[Switchable] | None = None
) -> tuple[Callable[[str, Provider], Provider] | None, CacheStats | None]:
    """The ``[cache]``, ``[guardrails]`` and ``[quality]`` wrappers as one function over a provider (None when
    none is configured), and the cache's counters; the cache's store is appended to ``stores``. Order, outermost
    first: cache, guardrails, quality gate, so a cached answer has passed the guardrails and a retried one is
    checked once."""
    cs, gs, qs = settings.cache, settings.guardrails, settings.quality
    if cs is None and gs is None and qs is None:
        return None, None
    hook = load_hook(gs.hook) if gs is not None and gs.hook else None
    stats = CacheStats() if cs is not None else None
    store = Switchable(MemoryKeyValue(cs.max_entries)) if cs is not None else None
    if store is not None and stores is not None:
        stores.append(store)
    for pattern in [*(gs.blocked if gs else ()), *((qs.refusals or ()) if qs else ())]:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None

    def wrap(name: str, provider: Provider) -> Provider:
        if qs is not None:
            provider = QualityGate(
                provider,
                retries=qs.retries,
                refusals=qs.refusals if qs.refusals is not None else REFUSALS,
                empty=qs.empty,
                scan_chars=qs.scan_chars,
                on_failure="error" if qs.on_failure == "error" else "return",
            )
        if gs is not None:
            provider = Guardrails(
                provider,
                max_request_chars=gs.max_request_chars,
                max_response_chars=gs.max_response_chars,
                blocked=gs.blocked,
                pii="redact" if gs.pii == "redact" else "reject" if gs.pii == "reject" else "off",
                pii_kinds=gs.pii_kinds,
                hook=hook,
                window=gs.window,
            )
        if cs is not None:
            provider = Cache(
                provider,
                store,
                label=name,
                ttl=cs.ttl,
                max_entry_bytes=cs.max_entry_bytes,
                sampled=cs.sampled,
                stats=stats,
            )
        return provider

    return wrap, stats


def check_aliases(aliases: Mapping[str, str], providers: Collection[str], default: str | None) -> None:
    """Refuse aliases that cannot resolve: a target naming a provider that is not configured (``x:model``), or a
    bare target that is neither a provider nor an alias while there is no default provider to take it as a model.
    Raises ``ValueError`` listing every such alias."""
    problems = []
    for alias, target in sorted(aliases.items()):
        prefix, sep, _ = target.strip().partition(":")
        if prefix in providers or prefix in aliases:
            continue
        if sep:
            problems.append(f"alias {alias!r} -> {target!r}: no provider {prefix!r}")
        elif default is None:
            problems.append(f"alias {alias!r} -> {target!r}: neither a provider nor an alias, and no default provider")
    if problems:
        have = ", ".join(sorted(providers)) or "none"
        raise ValueError(f"{'; '.join(problems)} (providers: {have})")


def valid_options(cls: type) -> list[str] | None:
    """The keyword options ``cls(...)`` takes: the named parameters of its ``__init__`` and of each base's that a
    ``**options`` passes on to; ``None`` when the chain ends in a ``**kwargs`` that takes anything."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return sorted(names)
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self")
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return sorted(names)
    return sorted(names)


def _unknown_options(name: str, cls: type, options: Mapping[str, Any]) -> ValueError | None:
    valid = valid_options(cls)
    if valid is None:
        return None
    unknown = sorted(set(options) - set(valid))
    if not unknown:
        return None
    hints = []
    for option in unknown:
        close = difflib.get_close_matches(option, valid, n=1)
        hints.append(f"{option!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ValueError(
        f"provider {name!r}: unknown option{'s' * (len(unknown) > 1)} {', '.join(hints)}; "
        f"valid options: {', '.join(['type', 'api_key_env', *valid] if 'api_key' in valid else ['type', *valid])}"
    )


#: spares per CLI runner that ``llm-runners serve`` starts unless a provider's options say ``warm``: one spare for
#: the next fresh conversation, and (with it) a live process per conversation for the runners that can keep one
SERVE_WARM = 1


def build_provider(name: str, options: Mapping[str, Any], *, warm: int | None = None) -> Provider:
    """Build one provider from its settings name and constructor options.

    The class is found by ``options["type"]`` when given (so two differently configured entries can use one
    runner), else by ``name``: ``scripted`` (the test provider), an HTTP API type (``openai_compat``,
    ``anthropic``, ``gemini_api``), an OpenAI-compatible preset (:data:`PRESETS`: ``openai``, ``openrouter``,
    ``groq``, ``ollama``, ``vllm``, ``lmstudio``), or a CLI runner from ``llm_runners.runners.REGISTRY``.
    ``api_key_env`` names an environment variable to read the ``api_key`` from, so keys need not sit in the file.
    A CLI that also speaks ACP takes
    ``transport = "acp" | "exec"`` (default: its dialect's ``default_transport``); ``acp`` builds an
    :class:`~llm_runners.acp.AcpRunner` around the same runner options. A runner class that implements
    transports of its own (``transports``: codex's ``"app-server"`` and ``"exec"``) gets the option itself.
    ``warm`` is the ``warm`` option of a warmable CLI runner whose options do not set it (``warm = 0`` turns it
    off); None leaves the runner's own default (no spares, no live processes).
    """
    opts = dict(options)
    kind = str(opts.pop("type", name))
    if kind == "scripted":
        from .testing.scripted import ScriptedProvider

        opts.setdefault("name", name)
        if (unknown := _unknown_options(name, ScriptedProvider, opts)) is not None:
            raise unknown
        return ScriptedProvider(**opts)
    from .acp import DIALECTS, AcpRunner  # here: the ACP runner imports the CLI runners
    from .runners import REGISTRY  # here, not at the top: the runners import the process layer and dialects

    #: transports the runner class implements itself (codex: "app-server" | "exec"), passed on as an option
    own: tuple[str, ...] = getattr(REGISTRY.get(kind), "transports", ())
    if warm is not None and "warm" not in opts and getattr(REGISTRY.get(kind), "warmable", False):
        opts["warm"] = warm  # the caller's default (the server's: SERVE_WARM) for a CLI that can be kept warm
    transport = None if opts.get("transport") in own else opts.pop("transport", None)
    if transport is not None or (kind in DIALECTS and "transport" not in opts):
        transport = str(transport or DIALECTS[kind].default_transport)
        if transport not in ("exec", "acp"):
            choices = " or ".join(repr(t) for t in (*own, "acp") if t != "exec") + " or 'exec'"
            raise ValueError(f"provider {name!r}: transport must be {choices}, not {transport!r}")
        if transport == "acp":
            if kind not in DIALECTS:
                raise ValueError(f"provider {name!r}: {kind} has no ACP mode (ACP agents: {', '.join(DIALECTS)})")
            try:
                return AcpRunner(kind, **opts)
            except TypeError as exc:
                raise ValueError(f"provider {name!r}: bad options {sorted(opts)}: {exc}") from exc
    if kind in PRESETS:  # an OpenAI-compatible endpoint by name: its base URL and key variable filled in
        preset = PRESETS[kind]
        kind = "openai_compat"
        opts.setdefault("base_url", preset.base_url)
        if preset.api_key_env and "api_key" not in opts:
            opts.setdefault("api_key_env", preset.api_key_env)
    key_env = opts.pop("api_key_env", None)
    if key_env is not None:
        opts["api_key"] = os.environ.get(str(key_env))

    registry: dict[str, type[Provider]] = dict(REGISTRY)
    if kind in HTTP_TYPES:
        module, _, attr = HTTP_TYPES[kind].partition(":")
        registry[kind] = getattr(importlib.import_module(module), attr)
    if kind not in registry:
        known = ", ".join(sorted([*registry, *HTTP_TYPES, *PRESETS, "scripted"]))
        raise ValueError(f"provider {name!r}: unknown type {kind!r} (known: {known})")
    cls = registry[kind]
    if (unknown := _unknown_options(name, cls, opts)) is not None:
        raise unknown
    try:
        return cls(**opts)
    except TypeError as exc:
        raise ValueError(f"provider {name!r}: bad options {sorted(opts)}: {exc}") from exc
