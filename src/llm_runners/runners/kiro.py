"""Kiro CLI (``kiro-cli``) as a provider. **Not verified**: Kiro is installed by its own script, not from the
package registries here, so this dialect is written from Kiro's published documentation and tested on transcripts
written from it (``tests/fixtures/kiro/``), never against the real binary.

Sources (as read):

- https://kiro.dev/docs/cli/headless/ : headless mode is ``kiro-cli chat --no-interactive "<prompt>"``; it needs
  ``KIRO_API_KEY`` (or a login made with ``kiro-cli login``); "since there's no user to approve tool calls", tools
  must be trusted explicitly (``--trust-all-tools`` or ``--trust-tools``), so an untrusted tool call is refused.
- https://kiro.dev/docs/cli/reference/cli-commands/ : ``kiro-cli chat`` arguments (``--no-interactive``,
  ``--trust-tools=<names>`` where an empty list trusts none, ``--trust-all-tools``, ``--model``, ``--resume``, the
  global ``--agent``), and ``kiro-cli acp``.
- https://kiro.dev/docs/cli/reference/exit-codes : exit 0 success, 1 failure ("auth error, invalid args, operation
  failed"), 3 an MCP server failed to start (only with ``--require-mcp-startup``).
- https://docs.sortie-ai.com/reference/adapter-kiro/ : headless Kiro "emits no structured event stream": stdout is
  the plain answer, the outcome is the exit status and stderr.
- https://kiro.dev/changelog/cli/1-25 and https://kiro.dev/docs/cli/acp/ : ``kiro-cli acp`` (since 1.25) is an ACP
  agent over stdio with the standard methods plus session management; that is the default transport here
  (:mod:`llm_runners.acp.dialects`), which streams, keeps a session per conversation and answers every permission
  request with a reject.

The exec transport (``transport = "exec"``): ``kiro-cli chat --no-interactive --trust-tools= [--model M] --
<prompt>`` in the runner's empty working directory; the answer is stdout as plain text (colour codes removed), an
error is classified from the exit code and stderr. ``--resume`` only continues the last session of the working
directory, so the exec transport keeps no sessions: every turn replays the conversation. The system prompt goes
in front of the prompt (Kiro takes it from agent configuration files, which the runner leaves alone).
"""

from __future__ import annotations

from typing import ClassVar

from .base import Turn
from .plain import PlainTextRunner

PROVIDER = "kiro"


class KiroRunner(PlainTextRunner):
    """Kiro CLI's headless chat (from its documentation; not verified against the binary). Where ``kiro-cli
    login`` keeps its login the docs do not say."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Kiro CLI"
    binary_name: ClassVar[str] = "kiro-cli"
    install: ClassVar[str] = "install Kiro CLI: curl -fsSL https://cli.kiro.dev/install | bash"
    pass_env: ClassVar[tuple[str, ...]] = ("KIRO_API_KEY",)
    api_key_env: ClassVar[tuple[str, ...]] = ("KIRO_API_KEY",)
    prompt_flag: ClassVar[str] = "--"
    run_env: ClassVar[dict[str, str]] = {"NO_COLOR": "1"}
    answer_prefix: ClassVar[str] = "> "

    def command(self, turn: Turn) -> list[str]:
        trust = "--trust-all-tools" if self.allow_tools else "--trust-tools="
        return [self.binary_path, "chat", "--no-interactive", trust]
