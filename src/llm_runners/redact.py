"""Secrets out of everything we write: logs, error messages, ``/health`` and ``/ready``, ``/metrics``, the
``providers`` output.

Two nets, applied by :func:`redact`:

1. **Known values.** Every secret the package handles is registered once (:func:`register`): the server's API keys
   (``api_keys``), an HTTP provider's ``api_key``, and the value of every environment variable a CLI child gets whose
   name says it is a credential (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``, ``*AUTH*``:
   :func:`register_env`, called by the process layer for each child). Any occurrence is replaced.
2. **Shapes of credentials** we may never have been told about (a CLI that prints the token of its own login):
   ``sk-…`` (OpenAI, Anthropic), ``AIza…`` (Google), ``ghp_…`` / ``github_pat_…`` (GitHub), ``xox?-…`` (Slack),
   JWTs, and whatever follows ``Bearer`` or an ``api_key=`` / ``"token": "…"`` assignment.

The user's CLI credential files join the first net: each runner names the files its CLI keeps a login or keys in
(``CLIRunner.credential_files``) and registers their secrets (:func:`register_files`) before it first checks its
auth, and again when a file changed (a refreshed login). A string value is a secret when its key names a credential
(:data:`SECRET_KEY`: ``apiKey``, ``access_token``, ``OPENAI_API_KEY``, ``Authorization``…, and the bare ``access`` /
``refresh`` of an OAuth record), not when it merely mentions auth (``authType: "oauth-personal"``), nor when it only
names a variable (``env_key = "OPENAI_API_KEY"``). Nothing else of the files is kept; a missing, unreadable or
malformed file is skipped without a word (the auth check reports it).

Both become ``[redacted]``. Values shorter than 8 characters are not registered (they would mask ordinary words).
stdlib only: the command line and :mod:`llm_runners.logs` import it before anything heavy.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

__all__ = ["MASK", "SECRET_KEY", "SECRET_NAME", "redact", "register", "register_env", "register_files"]

MASK = "[redacted]"

#: environment variable names that hold credentials
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)

#: keys of a credential file's entries whose string values are secrets
SECRET_KEY = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTHORIZATION|BEARER|COOKIE|^(?:access|refresh)$", re.IGNORECASE
)
#: ``NAME=value`` (``.env``), ``name: value`` (YAML, flow mappings too) and ``"name": "value"`` (JSON with comments)
#: entries of a file that does not parse as JSON or TOML: group 1 the key, group 2 the value
_LINE = re.compile(
    r"""(?:^|[{,])[ \t]*(?:-[ \t]+)?(?:export[ \t]+)?["']?([\w.-]+)["']?[ \t]*[:=][ \t]*["']?([^"'\s,#{}\[\]]+)""",
    re.MULTILINE,
)
#: values that name where a secret is (``env_key = "OPENAI_API_KEY"``, ``"{env:ANTHROPIC_API_KEY}"``, ``$TOKEN``),
#: not secrets: masking them would hide the names our own fixes tell the user to set
_REFERENCE = re.compile(r"\$?\{?(?:env:)?[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\}?|\$\{?[A-Za-z_]\w*\}?|\{env:[^}]*\}")
#: credential files larger than this are not read (a login file is a few KB)
_FILE_LIMIT = 1 << 20

_SHAPES = re.compile(
    r"\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bAIza[0-9A-Za-z_-]{30,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
)
#: ``Bearer X``, ``api_key=X``, ``"apiKey": "X"``, ``token: X``…: group 1 is kept, group 2 masked
_ASSIGNED = re.compile(
    r"""((?:\bbearer\s+)|(?:(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|secret|password|token)["']?\s*[:=]\s*["']?))"""
    r"""([A-Za-z0-9._~+/=-]{8,})""",
    re.IGNORECASE,
)

_lock = threading.Lock()
_known: tuple[str, ...] = ()
#: the credential files read so far: path -> (mtime, size) when read, so an unchanged file is not read again
_files: dict[str, tuple[int, int]] = {}


def register(*values: str | None) -> None:
    """Remember secret values so :func:`redact` masks them wherever they appear."""
    global _known
    fresh = [v for v in values if v and len(v) >= 8 and v not in _known]
    if not fresh:
        return
    with _lock:
        _known = tuple(sorted({*_known, *fresh}, key=len, reverse=True))  # longest first: no partial masks


def register_env(env: Mapping[str, str], names: Iterable[str] | None = None) -> None:
    """Register the values of the variables in ``env`` whose names look like credentials (or only ``names``)."""
    keys = env.keys() if names is None else [n for n in names if n in env]
    register(*(env[k] for k in keys if SECRET_NAME.search(k)))


def register_files(paths: Iterable[str | Path]) -> None:
    """Register the secrets of credential files (JSON, TOML, ``.env`` or YAML): every string value whose key matches
    :data:`SECRET_KEY`. A file is read again only once it changed; missing, unreadable, oversized or malformed
    files are skipped silently."""
    for path in paths:
        name = os.fspath(path)
        try:
            info = os.stat(name)
            if not stat.S_ISREG(info.st_mode) or info.st_size > _FILE_LIMIT:
                continue
            stamp = (info.st_mtime_ns, info.st_size)
            if _files.get(name) == stamp:
                continue
            with open(name, encoding="utf-8", errors="replace") as f:
                text = f.read(_FILE_LIMIT)
        except OSError:
            continue
        _files[name] = stamp
        register(*_file_secrets(text))


def _file_secrets(text: str) -> Iterator[str]:
    data: object = None
    for parse in (json.loads, tomllib.loads):
        try:
            data = parse(text)
            break
        except (ValueError, RecursionError):
            continue
    if isinstance(data, dict | list):
        yield from _secrets_in(data)
    else:
        for m in _LINE.finditer(text):
            if SECRET_KEY.search(m.group(1)):
                yield from _with_bearer(m.group(2))


def _secrets_in(node: object) -> Iterator[str]:
    """The secrets of a parsed file: the strings held by credential-named keys (directly, or as the items of a list
    or the values of a mapping: ``copilot_tokens = {<user>: <token>}``), at any depth."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(key, str) and SECRET_KEY.search(key):
            held = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
            for v in held:
                if isinstance(v, str):
                    yield from _with_bearer(v)
        if isinstance(value, dict | list):
            yield from _secrets_in(value)


def _with_bearer(value: str) -> Iterator[str]:
    """The value, and its token alone when it is an ``Authorization`` header's ``Bearer <token>``; nothing when it
    only names a variable."""
    if _REFERENCE.fullmatch(value):
        return
    yield value
    scheme, _, token = value.partition(" ")
    if token and scheme.lower() in ("bearer", "basic", "token"):
        yield token.strip()


def redact(text: str) -> str:
    """``text`` with every registered secret and every credential-shaped string replaced by ``[redacted]``."""
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    if _SHAPES.search(text) is not None:
        text = _SHAPES.sub(MASK, text)
    if _ASSIGNED.search(text) is not None:
        text = _ASSIGNED.sub(lambda m: m.group(1) + MASK, text)
    return text
