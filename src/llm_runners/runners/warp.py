"""Warp's agent CLI (``oz``, formerly ``warp-cli``) as a provider. **Not verified**: ``oz`` ships with the Warp
app or as Warp's own package, not on the registries here, so this dialect is written from Warp's published
documentation and tested on transcripts written from it (``tests/fixtures/warp/``), never against the real binary.

Sources (as read):

- https://docs.warp.dev/agents/cli/oz-cli.md and https://docs.warp.dev/reference/cli.md : ``oz`` runs agents
  locally (``oz agent run``) or in the cloud (``oz agent run-cloud``); ``warp-cli`` is the old name of the same
  binary; ``oz login`` or an API key in ``WARP_API_KEY`` authenticates.
- https://docs.warp.dev/reference/cli/agent-profiles/ : ``oz agent run --profile <id> --prompt "<text>"``; a
  profile controls file access, command execution, MCP servers, the model and directory allow/deny lists. "The
  default profile for CLI usage is broadly permissive and gives the agent the ability to read and write files,
  apply code diffs, and execute commands"; "the CLI will fail if the agent tries to execute a prohibited action".
- https://mintlify.wiki/warpdotdev/warp/cloud/overview (from warpdotdev/warp): global options ``--api-key``
  (``WARP_API_KEY``) and ``--output-format pretty|json|ndjson|text`` (``WARP_OUTPUT_FORMAT``).
- https://www.skills.sh/warpdotdev/oz-agent-skill/oz : "Prefer --output-format text to review the response".

How a turn runs: ``oz agent run --output-format text --profile <id> [--model M] --prompt <text>``; the answer is
stdout as plain text, an error the exit code and stderr. **Tools**: Warp's default profile runs commands and
writes files, and no documented flag turns that off, so the runner refuses to start a run without the operator's
``profile`` (the id of a profile made in the Warp app with file access, command execution and MCP servers off,
see ``oz agent profile list``) unless ``allow_tools`` is set. No session flag is documented for local runs, so
every turn replays the conversation; the system prompt goes in front of the prompt.
"""

from __future__ import annotations

from typing import ClassVar

from typing_extensions import Unpack

from ..errors import InvalidRequest
from ..types import Health
from .base import RunnerOptions, Turn
from .plain import PlainTextRunner

PROVIDER = "warp"

NO_PROFILE = (
    "set the warp runner's `profile` to the id of a Warp agent profile with file access, command execution and MCP "
    "servers off (`oz agent profile list`), or allow_tools = true to run with Warp's permissive default profile"
)


class WarpRunner(PlainTextRunner):
    """Warp's ``oz agent run`` (from its documentation; not verified against the binary). ``oz login`` keeps its
    credentials in the system keychain."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Warp (oz)"
    binary_name: ClassVar[str] = "oz"
    install: ClassVar[str] = "install Warp's CLI: https://docs.warp.dev/reference/cli (bundled with the Warp app)"
    pass_env: ClassVar[tuple[str, ...]] = ("WARP_API_KEY",)
    api_key_env: ClassVar[tuple[str, ...]] = ("WARP_API_KEY",)
    prompt_flag: ClassVar[str] = "--prompt"

    def __init__(self, *, profile: str | None = None, **options: Unpack[RunnerOptions]) -> None:
        super().__init__(**options)
        #: the Warp agent profile every run uses (its permissions are the only way to keep Warp's tools off)
        self.profile = profile

    def command(self, turn: Turn) -> list[str]:
        if self.profile is None and not self.allow_tools:
            raise InvalidRequest(f"warp: no tools-off agent profile configured; {NO_PROFILE}", provider=PROVIDER)
        argv = [self.binary_path, "agent", "run", "--output-format", "text"]
        return argv + (["--profile", self.profile] if self.profile is not None else [])

    async def health(self) -> Health:
        health = await super().health()
        if health.installed and self.profile is None and not self.allow_tools:
            return health.model_copy(
                update={"ready": False, "reason": "no tools-off agent profile configured", "fix": NO_PROFILE}
            )
        return health
