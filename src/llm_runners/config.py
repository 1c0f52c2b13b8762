"""Server settings: one TOML file, then environment overrides.

Why a file *and* the environment: the file holds what an operator writes once (aliases, per-provider options and
limits); the environment holds what a deployment changes (keys, host, port) without editing the file.

The file (every key optional; unknown keys are an error, so a typo never silently does nothing)::

    host = "127.0.0.1"            # address to bind; anything but loopback needs api_keys
    port = 8080
    api_keys = ["sk-local-1"]     # empty = no auth, allowed on loopback only
    default_provider = "claude_code"
    strict = false                # true: a requested feature a provider lacks is an error, not a warning
    request_timeout = 600.0       # seconds, per request
    shutdown_grace = 30.0         # seconds in-flight requests get on SIGTERM / SIGINT before they are cancelled
    max_body_bytes = 33554432     # larger request bodies get 413
    metrics = true                # false: no /metrics and no metric updates
    metrics_public = false        # true: /metrics answers without an API key
    state = "memory"              # or "redis://127.0.0.1:6379/0": replicas share sessions, responses, budgets

    [keys."sk-local-1"]           # per-key budgets (llm_runners.server.budgets); the key must be in api_keys
    requests_per_minute = 60
    tokens_per_day = 2_000_000
    usd_per_month = 50
    max_concurrent = 4

    [pricing]                     # USD per million tokens, by model-name prefix; adds to / overrides the shipped
    "my-model" = { input = 1.0, output = 2.0, cache_read = 0.1, cache_write = 1.25 }   # table (llm_runners.pricing)

    [aliases]                     # model name a caller sends -> "provider:model"
    fast = "claude_code:haiku"
    smart = "codex:gpt-5"

    [providers.claude_code]       # one table per provider name
    max_concurrency = 4           # streams at once
    max_queue = 16                # callers waiting for a slot; more get 429

    [providers.claude_code.options]   # passed as keyword arguments to the provider's constructor
    model = "sonnet"

    [providers.openai_compat.options]
    base_url = "http://127.0.0.1:11434/v1"

    [fallbacks]                   # a chain is a model name: its entries are tried in order (wrappers.fallback)
    fast = ["claude_code:haiku", "gemini:gemini-2.5-flash", "local"]
    [fallbacks.safe]              # the table form, with the chain's own retry options
    models = ["codex", "claude_code"]
    retries = 1                   # tries per entry after the first, on transient errors
    backoff = 0.5                 # seconds, doubled per retry (full jitter), at most max_backoff
    max_backoff = 8.0
    max_retry_wait = 30.0         # a retry-after longer than this moves on to the next entry instead
    stop_on = ["invalid_request_error", "guardrail"]   # error kinds that end the chain at once
    skip_above = 90               # an entry whose CLI reports more of its quota used is tried last

    [circuit_breaker]             # shared by every chain's entries
    failures = 5                  # failures in a row that take an entry out
    cooldown = 30.0               # seconds out, then one request probes it

    [cache]                       # present = on (wrappers.cache)
    ttl = 300
    max_entries = 1000
    max_entry_bytes = 1048576
    sampled = false               # true: cache temperature > 0 requests too

    [guardrails]                  # present = on (wrappers.guardrails)
    max_request_chars = 200000
    max_response_chars = 100000
    blocked = ["(?i)BEGIN PRIVATE KEY"]
    pii = "redact"                # "off" | "reject" | "redact"
    pii_kinds = ["email", "phone", "credit_card", "ssn", "ipv4", "secret"]
    hook = "my_package.checks:check"   # check(stage, text) -> None or the reason to refuse

    [quality]                     # present = on (wrappers.quality)
    retries = 1
    refusals = ["(?i)^i can(no|')t help"]
    empty = true
    on_failure = "return"         # or "error" (422)
    [providers.codex]
    tool_execution = "server"     # the model's tool calls run on the [[mcp_servers]] below (default "client":
                                  # they go back to the caller); a request can ask for it with the body field
                                  # {"llm_runners": {"tool_execution": "server"}}

    [providers.claude_code]
    client_tools = "mcp"          # the caller's tools go to the CLI over MCP; its calls are held open until the
                                  # caller's next request brings the results (default "text": the text protocol)
    hold_timeout = 300.0          # seconds a held call waits, then the CLI turn is cancelled

    [[mcp_servers]]               # MCP tool servers, started once at server start (llm_runners.tools.mcp_bridge)
    name = "files"
    command = "npx"               # stdio: command, args, env (and cwd)
    args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
    env = { LOG_LEVEL = "warn" }

    [[mcp_servers]]
    name = "search"
    url = "http://127.0.0.1:9000/mcp"            # Streamable HTTP: url, headers
    headers = { Authorization = "Bearer sk-…" }

Environment (wins over the file):

=============================  ==========================================================
``LLM_RUNNERS_CONFIG``         path of the TOML file when ``load_settings`` gets no path
``LLM_RUNNERS_API_KEYS``       comma-separated keys (replaces ``api_keys``)
``LLM_RUNNERS_DEFAULT_PROVIDER`` provider used when a model names none
``LLM_RUNNERS_STRICT``         ``1/true/yes/on`` or ``0/false/no/off``
``LLM_RUNNERS_HOST``           bind address
``LLM_RUNNERS_PORT``           bind port
``LLM_RUNNERS_STATE``          ``memory`` or a ``redis://`` URL (replaces ``state``)
=============================  ==========================================================

Every problem raises :class:`ConfigError` naming the file, the key and what was expected.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "TOOL_EXECUTION",
    "BreakerSettings",
    "CacheSettings",
    "ConfigError",
    "FallbackSettings",
    "GuardrailSettings",
    "KeyLimits",
    "MCPServerSettings",
    "ProviderSettings",
    "QualitySettings",
    "Settings",
    "check_bind_safety",
    "is_loopback",
    "load_settings",
]


class ConfigError(ValueError):
    """A settings file or environment variable is missing, malformed or unsafe."""


#: who runs the model's tool calls: the caller ("client", the default) or the server, on its [[mcp_servers]]
TOOL_EXECUTION = ("client", "server")


@dataclass
class ProviderSettings:
    options: dict[str, Any] = field(default_factory=dict)  # passed to the provider constructor
    max_concurrency: int = 4
    max_queue: int = 16
    tool_execution: str = "client"  # "server": requests to this provider run the agent loop on [[mcp_servers]]
    #: how the caller's own tools reach a CLI that takes MCP servers: "text" (the text tool protocol, the default)
    #: or "mcp" (served to the CLI over MCP, its calls held open until the caller sends the results)
    client_tools: str = "text"
    hold_timeout: float = 300.0  # seconds a held client tool call waits for its result before the turn is cancelled


@dataclass
class MCPServerSettings:
    """One ``[[mcp_servers]]`` entry: a stdio server (``command``, ``args``, ``env``, ``cwd``) or a Streamable HTTP
    one (``url``, ``headers``)."""

    name: str
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FallbackSettings:
    """One ``[fallbacks]`` chain (:mod:`llm_runners.wrappers.fallback`)."""

    models: list[str] = field(default_factory=list)
    retries: int = 1
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_wait: float = 30.0
    stop_on: list[str] = field(default_factory=lambda: ["invalid_request_error", "guardrail"])
    skip_above: float | None = None  # percent of a subscription quota used: such an entry is tried last


@dataclass
class BreakerSettings:
    failures: int = 5
    cooldown: float = 30.0
    probe_timeout: float = 60.0


@dataclass
class CacheSettings:
    ttl: float = 300.0
    max_entries: int = 1000
    max_entry_bytes: int = 1 << 20
    sampled: bool = False


@dataclass
class GuardrailSettings:
    max_request_chars: int | None = None
    max_response_chars: int | None = None
    blocked: list[str] = field(default_factory=list)
    pii: str = "off"
    pii_kinds: list[str] | None = None
    hook: str | None = None
    window: int = 256


@dataclass
class QualitySettings:
    retries: int = 1
    refusals: list[str] | None = None
    empty: bool = True
    scan_chars: int = 300
    on_failure: str = "return"


@dataclass
class KeyLimits:
    """One ``[keys."<key>"]`` table: per-key budgets and rate limits (:mod:`llm_runners.server.budgets`)."""

    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    usd_per_month: float | None = None
    max_concurrent: int | None = None

    def any(self) -> bool:
        return any(v is not None for v in self.as_dict().values())

    def as_dict(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: list[str] = field(default_factory=list)  # empty = no auth (allowed on loopback only)
    default_provider: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # "fast" -> "claude_code:haiku"
    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    max_body_bytes: int = 32 * 1024 * 1024
    strict: bool = False
    request_timeout: float = 600.0
    shutdown_grace: float = 30.0
    metrics: bool = True
    metrics_public: bool = False
    #: API key -> its budgets and rate limits; every key here must also be in api_keys
    keys: dict[str, KeyLimits] = field(default_factory=dict)
    #: "memory" or a redis:// (rediss://, unix://) URL: where shared state lives (llm_runners.state)
    state: str = "memory"
    #: model-name prefix -> {"input", "output", "cache_read", "cache_write"} USD per million tokens
    pricing: dict[str, dict[str, float]] = field(default_factory=dict)
    fallbacks: dict[str, FallbackSettings] = field(default_factory=dict)
    circuit_breaker: BreakerSettings = field(default_factory=BreakerSettings)
    cache: CacheSettings | None = None  # None = no cache
    guardrails: GuardrailSettings | None = None
    quality: QualitySettings | None = None
    #: MCP tool servers started at server start, offered to the requests that run tools on the server
    mcp_servers: list[MCPServerSettings] = field(default_factory=list)

    def provider(self, name: str) -> ProviderSettings:
        """The settings of ``name``, or the defaults when the file has no table for it."""
        return self.providers.get(name) or ProviderSettings()


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def load_settings(path: str | None = None, env: Mapping[str, str] = os.environ) -> Settings:
    """Read ``path`` (or ``$LLM_RUNNERS_CONFIG``; neither = defaults), then apply the environment overrides."""
    path = path or env.get("LLM_RUNNERS_CONFIG") or None
    settings = _from_file(path) if path else Settings()
    _apply_env(settings, env)
    _check_keys(settings, path or "settings")
    return settings


# ------------------------------------------------------------------------------------------------ the file


def _from_file(path: str) -> Settings:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _settings_from_dict(raw, where=path)


def _settings_from_dict(raw: dict[str, Any], *, where: str) -> Settings:
    _no_unknown_keys(raw, {f.name for f in fields(Settings)}, where=where, table="")
    s = Settings()
    if "host" in raw:
        s.host = _str(raw["host"], where, "host")
        if not s.host:
            raise ConfigError(f"{where}: 'host' must not be empty")
    if "port" in raw:
        s.port = _port(raw["port"], where, "port")
    if "api_keys" in raw:
        keys = _list_of_str(raw["api_keys"], where, "api_keys")
        if any(not k.strip() for k in keys):
            raise ConfigError(f"{where}: 'api_keys' must not contain empty keys")
        s.api_keys = keys
    if "default_provider" in raw:
        s.default_provider = _str(raw["default_provider"], where, "default_provider") or None
    if "aliases" in raw:
        s.aliases = _dict_of_str(raw["aliases"], where, "aliases")
    if "providers" in raw:
        providers = _table(raw["providers"], where, "providers")
        s.providers = {name: _provider(value, where, f"providers.{name}") for name, value in providers.items()}
    if "max_body_bytes" in raw:
        s.max_body_bytes = _int(raw["max_body_bytes"], where, "max_body_bytes", minimum=1)
    if "strict" in raw:
        s.strict = _bool(raw["strict"], where, "strict")
    if "request_timeout" in raw:
        s.request_timeout = _number(raw["request_timeout"], where, "request_timeout")
    if "shutdown_grace" in raw:
        s.shutdown_grace = _number(raw["shutdown_grace"], where, "shutdown_grace")
    for key in ("metrics", "metrics_public"):
        if key in raw:
            setattr(s, key, _bool(raw[key], where, key))
    if "keys" in raw:
        s.keys = {
            key: _key_limits(value, where, f'keys."{key}"') for key, value in _table(raw["keys"], where, "keys").items()
        }
    if "state" in raw:
        s.state = _state_url(raw["state"], where, "state")
    if "pricing" in raw:
        s.pricing = {
            prefix: _price(value, where, f"pricing.{prefix}")
            for prefix, value in _table(raw["pricing"], where, "pricing").items()
        }
    _wrappers(s, raw, where)
    if "mcp_servers" in raw:
        s.mcp_servers = _mcp_servers(raw["mcp_servers"], where)
    return s


def _mcp_servers(value: Any, where: str) -> list[MCPServerSettings]:
    if not isinstance(value, list):
        raise _type_error(where, "mcp_servers", "an array of tables ([[mcp_servers]])", value)
    out: list[MCPServerSettings] = []
    for i, entry in enumerate(value):
        key = f"mcp_servers[{i}]"
        table = _table(entry, where, key)
        _no_unknown_keys(table, {f.name for f in fields(MCPServerSettings)}, where=where, table=key)
        name = _str(table.get("name"), where, f"{key}.name") if "name" in table else ""
        if not name:
            raise ConfigError(f"{where}: '{key}' needs a 'name'")
        if any(s.name == name for s in out):
            raise ConfigError(f"{where}: '{key}': the name {name!r} is used twice")
        server = MCPServerSettings(name=name)
        if "command" in table:
            server.command = _str(table["command"], where, f"{key}.command") or None
        if "url" in table:
            server.url = _str(table["url"], where, f"{key}.url") or None
        if (server.command is None) == (server.url is None):
            raise ConfigError(f"{where}: '{key}' ({name}) needs either 'command' (stdio) or 'url' (Streamable HTTP)")
        if "args" in table:
            server.args = _list_of_str(table["args"], where, f"{key}.args")
        if "env" in table:
            server.env = _dict_of_str(table["env"], where, f"{key}.env")
        if "cwd" in table:
            server.cwd = _str(table["cwd"], where, f"{key}.cwd") or None
        if "headers" in table:
            server.headers = _dict_of_str(table["headers"], where, f"{key}.headers")
        if server.url is not None and (server.args or server.env or server.cwd):
            raise ConfigError(f"{where}: '{key}' ({name}): args, env and cwd are for a stdio server (command)")
        if server.command is not None and server.headers:
            raise ConfigError(f"{where}: '{key}' ({name}): headers are for a Streamable HTTP server (url)")
        out.append(server)
    return out


PRICE_KEYS = ("input", "output", "cache_read", "cache_write")


def _price(value: Any, where: str, key: str) -> dict[str, float]:
    """One ``[pricing]`` entry: ``input`` and ``output`` required, ``cache_read`` / ``cache_write`` optional."""
    table = _table(value, where, key)
    _no_unknown_keys(table, set(PRICE_KEYS), where=where, table=key)
    out: dict[str, float] = {}
    for name in PRICE_KEYS:
        if name not in table:
            if name in ("input", "output"):
                raise ConfigError(f"{where}: '{key}' needs '{name}' (USD per million tokens)")
            continue
        number = table[name]
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            raise _type_error(where, f"{key}.{name}", "a number of USD per million tokens, 0 or more", number)
        out[name] = float(number)
    return out


def _provider(value: Any, where: str, key: str) -> ProviderSettings:
    table = _table(value, where, key)
    _no_unknown_keys(table, {f.name for f in fields(ProviderSettings)}, where=where, table=key)
    p = ProviderSettings()
    if "options" in table:
        p.options = dict(_table(table["options"], where, f"{key}.options"))
    if "max_concurrency" in table:
        p.max_concurrency = _int(table["max_concurrency"], where, f"{key}.max_concurrency", minimum=1)
    if "max_queue" in table:
        p.max_queue = _int(table["max_queue"], where, f"{key}.max_queue", minimum=0)
    if "client_tools" in table:
        p.client_tools = _str(table["client_tools"], where, f"{key}.client_tools")
        if p.client_tools not in ("text", "mcp"):
            raise ConfigError(f"{where}: '{key}.client_tools' must be 'text' or 'mcp', got {p.client_tools!r}")
    if "hold_timeout" in table:
        p.hold_timeout = _number(table["hold_timeout"], where, f"{key}.hold_timeout")
    if "tool_execution" in table:
        p.tool_execution = _str(table["tool_execution"], where, f"{key}.tool_execution")
        if p.tool_execution not in TOOL_EXECUTION:
            raise ConfigError(f"{where}: '{key}.tool_execution' must be 'client' or 'server', got {p.tool_execution!r}")
    return p


# ------------------------------------------------------------------------------------------------ environment


def _apply_env(s: Settings, env: Mapping[str, str]) -> None:
    if (keys := env.get("LLM_RUNNERS_API_KEYS")) is not None:
        s.api_keys = [k.strip() for k in keys.split(",") if k.strip()]
    if provider := env.get("LLM_RUNNERS_DEFAULT_PROVIDER", "").strip():
        s.default_provider = provider
    if (strict := env.get("LLM_RUNNERS_STRICT")) is not None:
        s.strict = _env_bool(strict, "LLM_RUNNERS_STRICT")
    if host := env.get("LLM_RUNNERS_HOST", "").strip():
        s.host = host
    if state := env.get("LLM_RUNNERS_STATE", "").strip():
        s.state = _state_url(state, "environment", "LLM_RUNNERS_STATE")
    if (port := env.get("LLM_RUNNERS_PORT", "").strip()) != "":
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"LLM_RUNNERS_PORT must be an integer port (0-65535), got {port!r}") from None
        s.port = _port(number, "environment", "LLM_RUNNERS_PORT")


def _key_limits(value: Any, where: str, key: str) -> KeyLimits:
    table = _table(value, where, key)
    _no_unknown_keys(table, {f.name for f in fields(KeyLimits)}, where=where, table=key)
    limits = KeyLimits()
    for name in ("requests_per_minute", "tokens_per_day", "max_concurrent"):
        if name in table:
            setattr(limits, name, _int(table[name], where, f"{key}.{name}", minimum=1))
    if "usd_per_month" in table:
        usd = table["usd_per_month"]
        if isinstance(usd, bool) or not isinstance(usd, int | float) or usd <= 0:
            raise _type_error(where, f"{key}.usd_per_month", "a positive number of USD", usd)
        limits.usd_per_month = float(usd)
    return limits


def _check_keys(s: Settings, where: str) -> None:
    unknown = [k for k in s.keys if k not in s.api_keys]
    if unknown:
        raise ConfigError(
            f"{where}: [keys] has {len(unknown)} key(s) that api_keys (or LLM_RUNNERS_API_KEYS) does not list: "
            "a budget applies to a key the server accepts"
        )


def _state_url(value: Any, where: str, key: str) -> str:
    url = _str(value, where, key).strip()
    if url != "memory" and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{where}: '{key}' must be \"memory\" or a redis:// URL, got {value!r}")
    return url


def _env_bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of 1/true/yes/on or 0/false/no/off, got {value!r}")


# ------------------------------------------------------------------------------------------------ bind safety


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``; any other name or address counts as reachable from outside."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind_safety(settings: Settings) -> None:
    """Refuse to serve CLIs logged in to the operator's accounts to the network without a key."""
    if not settings.api_keys and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to listen on {settings.host} without an API key: set api_keys in the config file or "
            "LLM_RUNNERS_API_KEYS=<key>[,<key>...], or bind 127.0.0.1"
        )


# ------------------------------------------------------------------------------------------------ type checks


def _type_error(where: str, key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: '{key}' must be {expected}, got {type(value).__name__} {value!r}")


def _no_unknown_keys(raw: Mapping[str, Any], known: set[str], *, where: str, table: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        prefix = f"{table}." if table else ""
        names = ", ".join(f"'{prefix}{k}'" for k in unknown)
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {names} (known: {', '.join(sorted(known))})"
        )


def _table(value: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _type_error(where, key, "a table", value)
    return value


def _str(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise _type_error(where, key, "a string", value)
    return value


def _bool(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(where, key, "true or false", value)
    return value


def _int(value: Any, where: str, key: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(where, key, "an integer", value)
    if value < minimum:
        raise ConfigError(f"{where}: '{key}' must be at least {minimum}, got {value}")
    return value


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(where, key, "a number of seconds", value)
    if value <= 0:
        raise ConfigError(f"{where}: '{key}' must be positive, got {value}")
    return float(value)


def _port(value: Any, where: str, key: str) -> int:
    port = _int(value, where, key, minimum=0)
    if port > 65535:
        raise ConfigError(f"{where}: '{key}' must be a port number (0-65535), got {port}")
    return port


def _list_of_str(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _type_error(where, key, "a list of strings", value)
    return list(value)


def _dict_of_str(value: Any, where: str, key: str) -> dict[str, str]:
    table = _table(value, where, key)
    for k, v in table.items():
        if not isinstance(v, str):
            raise _type_error(where, f"{key}.{k}", "a string", v)
    return dict(table)


# ------------------------------------------------------------------------------------------------ wrappers


def _wrappers(s: Settings, raw: dict[str, Any], where: str) -> None:
    """``[fallbacks]``, ``[circuit_breaker]``, ``[cache]``, ``[guardrails]``, ``[quality]``."""
    if "fallbacks" in raw:
        for name, value in _table(raw["fallbacks"], where, "fallbacks").items():
            key = f"fallbacks.{name}"
            if isinstance(value, list):
                value = {"models": value}
            chain = _dataclass(FallbackSettings(), value, where, key)
            if not chain.models or not all(isinstance(m, str) and m.strip() for m in chain.models):
                raise ConfigError(f"{where}: '{key}' needs a non-empty list of model names")
            s.fallbacks[name] = chain
    if "circuit_breaker" in raw:
        s.circuit_breaker = _dataclass(BreakerSettings(), raw["circuit_breaker"], where, "circuit_breaker")
    if "cache" in raw:
        s.cache = _dataclass(CacheSettings(), raw["cache"], where, "cache")
    if "guardrails" in raw:
        s.guardrails = _dataclass(GuardrailSettings(), raw["guardrails"], where, "guardrails")
        if s.guardrails.pii not in ("off", "reject", "redact"):
            pii = s.guardrails.pii
            raise ConfigError(f"{where}: 'guardrails.pii' must be 'off', 'reject' or 'redact', got {pii!r}")
    if "quality" in raw:
        s.quality = _dataclass(QualitySettings(), raw["quality"], where, "quality")
        if s.quality.on_failure not in ("return", "error"):
            raise ConfigError(f"{where}: 'quality.on_failure' must be 'return' or 'error'")


def _dataclass(default: Any, value: Any, where: str, key: str) -> Any:
    """``default`` with the keys of TOML table ``value`` applied, each checked against the default's type (a
    field defaulting to None takes its annotated type: ``int | None``, ``str | None``, ``list[str] | None``)."""
    table = _table(value, where, key)
    known = {f.name: f for f in fields(default)}
    _no_unknown_keys(table, set(known), where=where, table=key)
    for name, item in table.items():
        current = getattr(default, name)
        kind = str(known[name].type)
        full = f"{key}.{name}"
        if isinstance(current, bool) or kind == "bool":
            setattr(default, name, _bool(item, where, full))
        elif isinstance(current, float) or kind.startswith("float"):
            setattr(default, name, _number(item, where, full))
        elif isinstance(current, int) or kind.startswith("int"):
            setattr(default, name, _int(item, where, full, minimum=0))
        elif isinstance(current, list) or kind.startswith("list"):
            setattr(default, name, _list_of_str(item, where, full))
        else:
            setattr(default, name, _str(item, where, full))
    return default
