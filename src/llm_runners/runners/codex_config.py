"""The part of the user's Codex ``config.toml`` that carries over into a run, and nothing else.

Codex reads ``$CODEX_HOME/config.toml`` (default ``~/.codex``). The runners start it with ``--ignore-user-config``
and hand it back only the keys that say *how it reaches its model and who the user is* (:data:`CARRIED_KEYS`: the
model, the model provider and every provider definition, reasoning settings, login method, base URLs), as ``-c``
overrides. Everything else in the file stays out: MCP servers, ``notify``, hooks, profiles' tool settings,
``shell_environment_policy``, approval and sandbox policies, project docs, skills, plugins, features.

A profile (``profile = "x"`` in the file, or ``--profile x`` / ``-p x`` among the operator's arguments) is applied
the way Codex applies it: its carried keys override the top-level ones. The operator's own ``-c key=value``
arguments are applied last (:func:`apply_overrides`), so health and the environment allow-list see the provider a
run really uses.

Used by the ``exec`` runner (:mod:`llm_runners.runners.codex`) and meant for any other Codex transport (the
app-server): ``override_args(user_setup(codex_home, profile))`` is the whole carried setup as ``-c`` arguments.
Facts from Codex 0.169.0: ``openai``, ``ollama`` and ``lmstudio`` are built-in provider ids that ``model_providers``
may not redefine (exit 1, "reserved built-in provider IDs"), and ``amazon-bedrock`` only accepts ``base_url``,
``auth``, ``http_headers`` and ``aws.*``; ``-c model_providers.<id>={…}`` (an inline table) defines a provider.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

__all__ = [
    "BUILTIN_PROVIDERS",
    "CARRIED_KEYS",
    "CodexConfigError",
    "active_provider",
    "apply_overrides",
    "carried_config",
    "override_args",
    "profile_from_args",
    "provider_env_names",
    "read_config",
    "toml_value",
    "user_setup",
]

#: the keys (top level, or in the selected profile) that say how Codex reaches its model and who the user is
CARRIED_KEYS: frozenset[str] = frozenset(
    {
        "model",
        "model_provider",
        "model_providers",
        "model_reasoning_effort",
        "model_reasoning_summary",
        "model_verbosity",
        "model_context_window",
        "model_auto_compact_token_limit",
        "model_supports_reasoning_summaries",
        "model_catalog_json",
        "service_tier",
        "openai_base_url",
        "chatgpt_base_url",
        "forced_login_method",
        "forced_chatgpt_workspace_id",
        "cli_auth_credentials_store",
        "oss_provider",
    }
)

#: provider ids Codex defines itself; ``openai`` needs a login (``auth.json``) or an API key, the others run locally
BUILTIN_PROVIDERS: frozenset[str] = frozenset({"openai", "ollama", "lmstudio", "amazon-bedrock"})

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class CodexConfigError(ValueError):
    """The user's config.toml cannot be read as TOML."""


def read_config(codex_home: Path) -> dict[str, Any]:
    """``<codex_home>/config.toml`` as a dict; ``{}`` when there is none."""
    path = codex_home / "config.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CodexConfigError(f"cannot read {path}: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CodexConfigError(f"{path} is not valid TOML: {exc}") from None


def carried_config(config: Mapping[str, Any], profile: str | None = None) -> dict[str, Any]:
    """Only the :data:`CARRIED_KEYS` of ``config``, with those of the profile (``profile``, else the file's own
    ``profile`` key) over them."""
    out = {k: v for k, v in config.items() if k in CARRIED_KEYS}
    name = profile or config.get("profile")
    profiles = config.get("profiles")
    chosen = profiles.get(name) if isinstance(name, str) and isinstance(profiles, dict) else None
    if isinstance(chosen, dict):
        for key, value in chosen.items():
            if key not in CARRIED_KEYS:
                continue
            old = out.get(key)
            out[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def user_setup(codex_home: Path, profile: str | None = None) -> dict[str, Any]:
    """The carried part of the user's config.toml (see the module docstring)."""
    return carried_config(read_config(codex_home), profile)


def profile_from_args(args: Sequence[str]) -> str | None:
    """The profile named by ``--profile x``, ``--profile=x`` or ``-p x`` among ``args``, else None."""
    for i, arg in enumerate(args):
        if arg in ("--profile", "-p") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--profile="):
            return arg.split("=", 1)[1]
    return None


def _parse_value(text: str) -> Any:
    """A ``-c`` value as Codex reads it: TOML when it parses, else the literal string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: Mapping[str, Any], args: Sequence[str]) -> dict[str, Any]:
    """``config`` with the ``-c key=value`` / ``--config key=value`` arguments among ``args`` applied (dotted keys
    create nested tables), as Codex applies them."""
    out: dict[str, Any] = json.loads(json.dumps(config, default=str))  # a deep copy of plain data
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            item = args[i + 1]
        elif arg.startswith("--config="):
            item = arg.split("=", 1)[1]
        else:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            continue
        *parents, leaf = [part.strip() for part in key.split(".")]
        table = out
        for part in parents:
            nxt = table.get(part)
            if not isinstance(nxt, dict):
                nxt = table[part] = {}
            table = nxt
        table[leaf] = _parse_value(value.strip())
    return out


def active_provider(config: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(id, definition) of the provider a run uses: ``model_provider`` (default ``openai``) and its
    ``model_providers`` table, None for a built-in provider or one that is not defined."""
    pid = config.get("model_provider")
    name = pid if isinstance(pid, str) and pid else "openai"
    providers = config.get("model_providers")
    definition = providers.get(name) if isinstance(providers, dict) else None
    return name, definition if isinstance(definition, dict) else None


def provider_env_names(definition: Mapping[str, Any]) -> list[str]:
    """The environment variables a provider definition names: its ``env_key`` and the sources of its
    ``env_http_headers``."""
    names = []
    if isinstance(definition.get("env_key"), str):
        names.append(definition["env_key"])
    headers = definition.get("env_http_headers")
    if isinstance(headers, dict):
        names += [v for v in headers.values() if isinstance(v, str)]
    return names


def _basic_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are a subset of TOML's, but TOML also forbids a raw DEL (U+007F)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _basic_string(name)


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (inline tables for dicts), the form a ``-c key=value`` argument takes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _basic_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Iterable):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"not a TOML value: {value!r}")


def override_args(config: Mapping[str, Any]) -> list[str]:
    """``config`` as ``-c key=value`` arguments: one per top-level key, one per provider definition."""
    args: list[str] = []
    for key, value in config.items():
        if key == "model_providers" and isinstance(value, Mapping):
            for pid, definition in value.items():
                args += ["-c", f"model_providers.{_key(str(pid))}={toml_value(definition)}"]
        else:
            args += ["-c", f"{_key(key)}={toml_value(value)}"]
    return args
