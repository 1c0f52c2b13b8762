"""What differs between ACP agents: a small table, not a module per agent.

Everything else an agent needs (its binary, its private home and config, its environment, its auth variables)
comes from the provider's exec runner class (``llm_runners.runners.REGISTRY``): the ACP runner builds that runner
with the same options and takes ``binary_path``, ``child_env()``, ``pass_env`` and ``workdir`` from it, so each
CLI's offline setup is written once.

Facts (clis.md sections 5-10 and 14, and the transcripts in ``tests/fixtures/acp/``):

- Gemini CLI 0.61.0 ``gemini --acp``: models advertised in ``session/new`` ``models`` (``session/set_model``; no
  model config option); usage in the prompt result's ``_meta.quota.token_count``; an API error is a JSON-RPC error
  whose code is the HTTP status and whose message is the API's error JSON. Needs ``GEMINI_CLI_TRUST_WORKSPACE``.
- OpenCode 1.18.33 ``opencode acp`` and Kilo 7.7.7 ``kilo acp``: a ``model`` config option (values
  ``provider/model``) and a ``mode`` one (the primary agents: the exec runner's ``llm-runners`` agent, tools and
  permissions off, is selected); usage in the prompt result. OpenCode often sends a turn's chunks together at its end
  (2 s of upstream streaming arrived within 0.2 s in 3 of 4 runs, 1.4 s apart once); Kilo streams them as
  they come. ``session/cancel`` ends the turn (``stopReason: cancelled``) and drops the upstream request with a
  TCP reset (an earlier note here said they keep it open: the fake model API did not count a reset as a
  disconnect).
- Qwen Code 0.15.10 ``qwen --acp``: ``models`` (ids like ``$runtime|openai|fake-model(openai)``) and config options;
  usage in the ``_meta`` of an empty ``agent_message_chunk`` at the end, none in the result.
- Retry loops (measured over ACP, every request failing): Qwen tries a 429 / 500 7 times (~70 s), OpenCode 6
  times (~70 s), Copilot 6 times (~15 s, streaming ``Info: … Retrying...`` chunks); Gemini with the runner's
  ``maxAttempts`` once; Kilo twice. Nothing in ACP says a turn is retrying, so the runner reads each turn's log
  lines with the exec runner's own ``RetryWatch``: Qwen logs every session to ``<runtime>/debug/<session>.txt``,
  OpenCode and Kilo (``--print-logs --log-level ERROR``) print lines naming ``session.id=<session>`` on stderr.
- Copilot CLI 1.0.102 ``copilot --acp``: API errors are streamed as answer text (``Info: Request failed …``,
  ``Error: Authentication failed …``) and the turn ends ``end_turn`` without usage.
- Cline 3.0.65 ``cline --acp``: ``session/new`` requires ``authenticate`` with an account: not usable offline.
- Cursor Agent ``cursor-agent acp``, Goose ``goose acp`` and Kiro ``kiro-cli acp`` (from their published sources,
  not run here: agentclientprotocol/registry, block/goose ``crates/goose-cli/src/commands/acp.rs``, kiro.dev/docs/
  cli/acp). Kiro's default transport is ACP (its exec mode prints plain text with no sessions); Cursor's and
  Goose's is exec (their stream-json formats are documented, their ACP details are not).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import LLMError
from ..process import StderrVerdict
from ..runners import copilot, opencode, qwen
from ..runners.base import CLIRunner
from ..runners.gemini import classify_api_error
from ..runners.opencode import AGENT as OPENCODE_AGENT

#: one turn's watch over the agent's log lines (the exec runner's ``RetryWatch``): a verdict ends the turn
LogWatch = Callable[[bytes], StderrVerdict | None]


@dataclass(frozen=True)
class AcpDialect:
    #: the provider name, and the name of its exec runner in ``llm_runners.runners.REGISTRY``
    name: str
    #: argv after the binary
    args: tuple[str, ...]
    #: more argv that depends on the runner's options (Copilot's tool and user-config switches)
    runner_args: Callable[[CLIRunner], list[str]] | None = None
    #: variables the agent process gets on top of the exec runner's ``child_env()``
    env: Mapping[str, str] = field(default_factory=dict)
    #: a whole answer chunk matching this is a status line the agent streams instead of an error (Copilot); such
    #: chunks are held back, and a turn that ends without usage after one that says ``Error:`` is that error
    status_text: re.Pattern[str] | None = None
    #: the ACP ``authenticate`` method to call after ``initialize`` (None: the agent's own login/key is enough)
    auth_method: str | None = None
    #: the provider's transport unless its options say ``transport = "acp" | "exec"`` (chosen by measurement: see
    #: the README's provider table)
    default_transport: Literal["acp", "exec"] = "acp"
    #: the exec dialect's classifier for the error text the agent passes on (a JSON-RPC error's message), when
    #: it knows that text better than the generic rules
    classify_error: Callable[[str], LLMError] | None = None
    #: the value of the session's ``mode`` config option to select after ``session/new`` when the agent offers
    #: it (OpenCode / Kilo: the exec runner's own agent, whose tools and permissions are off)
    mode: str | None = None
    #: whether answer chunks arrive as the model generates them
    token_streaming: bool = True
    #: a fresh watch of one turn's log lines that bounds the agent's own retry loop (None: nothing to watch)
    retry_watch: Callable[[CLIRunner], LogWatch | None] | None = None
    #: the file the agent logs a session's lines to; None: its stderr lines that name the session id
    session_log: Callable[[CLIRunner, str], Path] | None = None


#: ``acp`` with the error log on stderr (each line names its ``session.id``)
OPENCODE_ACP = ("acp", "--print-logs", "--log-level", "ERROR")

COPILOT_STATUS = re.compile(r"\s*(?:Info|Error|Warning): .*", re.S)


def opencode_watch(runner: CLIRunner) -> LogWatch:
    return opencode.RetryWatch(provider=runner.name, deadline=getattr(runner, "error_deadline", 1.0))


def qwen_watch(runner: CLIRunner) -> LogWatch | None:
    deadline = getattr(runner, "error_deadline", 5.0)
    return qwen.RetryWatch(deadline=deadline) if deadline > 0 else None


def qwen_session_log(runner: CLIRunner, session_id: str) -> Path:
    """Qwen's debug log of one session (under the runner's ``QWEN_RUNTIME_DIR``)."""
    runtime: Path = getattr(runner, "runtime_dir")()  # noqa: B009  (a QwenRunner; typed as the base here)
    return runtime / "debug" / f"{session_id}.txt"


def copilot_args(runner: CLIRunner) -> list[str]:
    """The exec runner's switches that also hold in ACP mode: tools off (or all allowed), no GitHub MCP servers
    and instruction files unless ``user_config``, no telemetry."""
    args = ["--disable-client-telemetry"]
    if not runner.user_config:
        args += copilot.NO_USER_CONFIG_ARGS
    args.append("--allow-all-tools" if runner.allow_tools else f"--available-tools={copilot.NO_TOOL}")
    return args


DIALECTS: dict[str, AcpDialect] = {
    d.name: d
    for d in (
        AcpDialect(
            "gemini",
            ("--acp",),
            env={"GEMINI_CLI_TRUST_WORKSPACE": "true"},
            default_transport="exec",
            classify_error=lambda message: classify_api_error(message, 0),
        ),
        AcpDialect("opencode", OPENCODE_ACP, mode=OPENCODE_AGENT, token_streaming=False, retry_watch=opencode_watch),
        AcpDialect("kilo", OPENCODE_ACP, mode=OPENCODE_AGENT, retry_watch=opencode_watch),
        AcpDialect("qwen", ("--acp",), default_transport="exec", retry_watch=qwen_watch, session_log=qwen_session_log),
        AcpDialect(
            "copilot",
            ("--acp", "--no-auto-update"),
            runner_args=copilot_args,
            status_text=COPILOT_STATUS,
            default_transport="exec",
        ),  # from published sources only, like their exec runners (verified=False): see those modules' docstrings
        AcpDialect("cursor_agent", ("acp",), default_transport="exec"),
        AcpDialect("goose", ("acp",), default_transport="exec"),
        AcpDialect("kiro", ("acp",)),
    )
}
