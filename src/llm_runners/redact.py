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

Both become ``[redacted]``. Values shorter than 8 characters are not registered (they would mask ordinary words).
stdlib only: the command line and :mod:`llm_runners.logs` import it before anything heavy.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

__all__ = ["MASK", "SECRET_NAME", "redact", "register", "register_env"]

MASK = "[redacted]"

#: environment variable names that hold credentials
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)

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
