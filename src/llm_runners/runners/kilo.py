"""Kilo Code CLI (``kilo``, ``@kilocode/cli``) as a provider: an OpenCode fork, run the way :mod:`.opencode` runs
OpenCode, with these differences (facts measured on 7.7.7, see ``clis.md`` section 10):

- Variables are ``KILO_*`` (``KILO_CONFIG``, ``KILO_DISABLE_PROJECT_CONFIG`` …), directories ``$XDG_*/kilo``, and
  the global config may be ``kilo.json[c]``, ``opencode.json[c]`` or ``config.json``. Project config also comes
  from ``.kilo`` / ``.kilocode`` directories (off, as for OpenCode); ``~/.kilo`` and ``~/.kilocode`` stay out with
  the private home.
- More to switch off: the background daemon (``KILO_NO_DAEMON``; else a detached process outlives the run),
  telemetry (``KILO_TELEMETRY_LEVEL=off``: any value but ``all`` disables it), session ingest, presence and
  codebase indexing.
- The system prompt can only be *added*: the agent prompt is embedded after a ~1.6 KB Kilo preamble, so the
  capabilities say ``system_prompt=False``. The user message also gets an ``<environment_details>`` block.
- Tools off works as for OpenCode (``{"*": false}`` also removes the six Kilo-only tools such as
  ``background_process``); no title-generation request is made even without ``--title``.
- Retries: ``KILO_SESSION_RETRY_LIMIT=1`` is the CLI's own knob (a 500 then fails after 2 requests; 0 would
  mean "unset", 6 requests / 82 s); the error-log watch of the OpenCode runner ends the run earlier, after the
  first attempt.
- Start-up is slow: ~5.8 s for a one-word answer on 2 cores (an unexplained ~3.4 s gap inside the CLI).
- Without a provider of the user's (``enabled_providers`` or a ``provider`` entry) the built-in Kilo gateway is
  used: that *is* the user's choice when they logged in to Kilo (``auth.json``), and it looks up ``api.kilo.ai``.
"""

from __future__ import annotations

from typing import ClassVar

from ..types import Capabilities
from .opencode import OpenCodeRunner


class KiloRunner(OpenCodeRunner):
    """Kilo ``run --format json``: OpenCode's events; the system prompt only as an addition."""

    name: ClassVar[str] = "kilo"
    display_name: ClassVar[str] = "Kilo Code CLI"
    #: the system prompt is only an addition to Kilo's own preamble
    #: no images on this transport: Kilo 7.7.7 refuses a ``-f`` attachment while its ``read`` permission is denied,
    #: and allowing that permission offers the model the ``read`` tool (measured; see :mod:`.opencode`)
    capabilities: ClassVar[Capabilities] = OpenCodeRunner.capabilities.model_copy(
        update={"system_prompt": False, "images": False}
    )
    binary_name: ClassVar[str] = "kilo"
    package: ClassVar[str] = "@kilocode/cli"
    pass_env: ClassVar[tuple[str, ...]] = (*OpenCodeRunner.pass_env, "KILO_API_KEY", "KILO_ORG_ID")
    app: ClassVar[str] = "kilo"
    env_prefix: ClassVar[str] = "KILO"
    config_files: ClassVar[tuple[str, ...]] = (
        "config.json",
        "opencode.json",
        "opencode.jsonc",
        "kilo.json",
        "kilo.jsonc",
    )
    switches: ClassVar[tuple[str, ...]] = (
        *OpenCodeRunner.switches,
        "NO_DAEMON",
        "DISABLE_SESSION_INGEST",
        "DISABLE_PRESENCE",
        "DISABLE_CODEBASE_INDEXING",
    )
    #: the variables whose value is not "1"
    settings: ClassVar[dict[str, str]] = {"KILO_TELEMETRY_LEVEL": "off", "KILO_SESSION_RETRY_LIMIT": "1"}

    def child_env(self) -> dict[str, str]:
        env = super().child_env()
        for name, value in self.settings.items():
            env.setdefault(name, value)
        return env
