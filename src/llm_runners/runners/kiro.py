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

from ..types import Capabilities
from .base import CLIRunner, Invocation, Turn
from .plain import PlainTextParser

PROVIDER = "kiro"


class KiroRunner(CLIRunner):
    """Kiro CLI's headless chat (from its documentation; not verified against the binary)."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Kiro CLI"
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True,
        token_streaming=False,
        system_prompt=False,
        images=False,
        agent_tools=True,
        sessions=False,
        usage=False,
        verified=False,
    )
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "kiro-cli"
    package: ClassVar[str] = ""
    install: ClassVar[str] = "install Kiro CLI: curl -fsSL https://cli.kiro.dev/install | bash"
    warmable: ClassVar[bool] = False
    resumable: ClassVar[bool] = False
    pass_env: ClassVar[tuple[str, ...]] = ("KIRO_API_KEY",)
    api_key_env: ClassVar[tuple[str, ...]] = ("KIRO_API_KEY",)

    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, "chat", "--no-interactive"]
        argv.append("--trust-all-tools" if self.allow_tools else "--trust-tools=")
        if turn.model:
            argv += ["--model", turn.model]
        prompt = f"{turn.system}\n\n{turn.prompt}" if turn.system else turn.prompt
        return Invocation(argv=[*argv, *self.extra_args, "--", prompt], extra_args_placed=True, env={"NO_COLOR": "1"})

    def new_parser(self, turn: Turn) -> PlainTextParser:
        return PlainTextParser(provider=PROVIDER, model=turn.model, prefix="> ")

    async def check_auth(self) -> tuple[bool | None, str | None]:
        if self.getenv("KIRO_API_KEY"):
            return True, None
        return None, None  # a `kiro-cli login` is kept where the docs do not say
