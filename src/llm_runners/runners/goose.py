"""Goose (``goose``, block/goose) as a provider. **Not verified**: Goose cannot be installed from the package
registries here, so this dialect is written from Goose's open-source code and tested on transcripts written from it
(``tests/fixtures/goose/``), never against the real binary.

Sources (block/goose, read through the code index; commit of each file in brackets):

- ``crates/goose-cli/src/cli.rs`` [4c39a776c0317a888067cdab5038bb3608ee64b8]: ``goose run`` takes the prompt from
  ``-i/--instructions FILE`` ("Use - for stdin") or ``-t/--text``; ``--system TEXT`` is "additional system prompt"
  (an addition, not a replacement); ``--output-format text|json|stream-json``; ``--model`` / ``--provider`` override
  ``GOOSE_MODEL`` / ``GOOSE_PROVIDER`` for the run; ``--no-profile`` ("don't load your default extensions", i.e. the
  user's MCP servers); ``--no-session``; ``-n/--name NAME`` names a new session and ``-r/--resume`` with ``--name``
  resumes the session of that name (``get_or_create_session_id``: ``--session-id`` is refused without
  ``--resume``); ``--max-turns``.
- ``crates/goose-cli/src/session/mod.rs`` [5152a3400a2e29f5cb5314be8b4b6b730b539922]: in ``stream-json`` mode each
  line is one ``StreamEvent`` serialised with ``tag = "type"``, snake case: ``{"type":"message","message":{…}}`` for
  every message the agent yields (a streaming provider yields each chunk as its own message), ``notification``
  (``extension_id`` + ``log`` / ``progress``), ``model_change`` (``model``, ``mode``), ``error`` (``error``: the
  error's text) and, last, ``complete`` (``total_tokens``: the session's total, or null). An agent error is the
  ``error`` event and ends the run; nothing else is printed in that mode.
- ``crates/goose/src/conversation/message.rs`` [6416fe74f076aa5779e877ef2161ec6826b27d08]: a message is
  ``{"id", "role", "created", "content": [...], "metadata": {"userVisible", "agentVisible"}}``; content items are
  tagged camelCase: ``text`` (``text``), ``thinking`` (``thinking``, ``signature``), ``toolRequest`` (``id``,
  ``toolCall: {"status": "success", "value": {"name", "arguments"}}``), ``toolResponse``, ``systemNotification`` …
  Text chunks keep their whitespace ("preserve whitespace in streaming text deltas").
- ``crates/goose/src/providers/errors.rs`` [073cc65212a3ad6cdb37dc699c70e826a2666799]: provider errors read
  ``Authentication error: …``, ``Context length exceeded: …``, ``Rate limit exceeded: …``, ``Server error: …``,
  ``Network error: …``, ``Request failed: … (status: 404 …)``, ``Credits exhausted: …``; those texts are what the
  ``error`` event carries, and what :func:`classify_error` maps onto the error tree.
- ``goose::config::GooseMode`` (imported by session/mod.rs): the ``GOOSE_MODE`` setting; ``chat`` is the mode in
  which the agent uses no tools.

How a turn runs: ``goose run --output-format stream-json -i - --no-profile`` with the prompt on stdin and
``GOOSE_MODE=chat`` (no tools, no user extensions; ``allow_tools`` sets ``GOOSE_MODE=auto``, ``user_config`` drops
``--no-profile``). A new conversation gets ``--name <uuid>``; the next turn ``--resume --name <uuid>`` (the session
store keeps the uuid). The system prompt goes through ``--system`` (an addition to Goose's own prompt). Usage: only
the session's total token count. Goose's provider retries print nothing, so the runner's timeouts bound them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from .. import process
from ..errors import (
    AuthenticationError,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    RateLimited,
    SessionNotFound,
    UpstreamError,
)
from ..types import Capabilities, Done, ReasoningDelta, StreamEvent, TextDelta, Usage, UsageEvent
from .base import EPHEMERAL_KEY, CLIRunner, Invocation, Turn, Unreadable, int_or_zero, json_object

PROVIDER = "goose"

_KINDS: tuple[tuple[re.Pattern[str], type[LLMError]], ...] = (
    (re.compile(r"^Authentication error:", re.I), AuthenticationError),
    (re.compile(r"^Context length exceeded:", re.I), ContextLengthExceeded),
    (re.compile(r"^(?:Rate limit exceeded|Credits exhausted):", re.I), RateLimited),
)
_NO_SESSION = re.compile(r"No session found", re.I)


def classify_error(text: str) -> LLMError:
    """A Goose ``error`` event's text (a ``ProviderError``'s display form, or any agent error) -> the error tree."""
    message = f"goose: {text.strip()}"
    for pattern, kind in _KINDS:
        if pattern.search(text.strip()):
            return kind(message, provider=PROVIDER)
    if _NO_SESSION.search(text):
        return SessionNotFound(message, provider=PROVIDER)
    if re.search(r"\(404\)|status: 404", text) and re.search(r"model", text, re.I):
        return ModelNotFound(message, provider=PROVIDER)
    generic = process.classify_text(text, provider=PROVIDER)
    if generic is not None:
        generic.message = message
        generic.args = (message,)
        return generic
    return UpstreamError(message, provider=PROVIDER)


class GooseParser:
    """``stream-json`` lines -> events; the ``error`` event is raised at exit."""

    def __init__(self, *, model: str | None, session: str | None) -> None:
        self.session_id = session
        self.model = model
        self.unreadable = Unreadable()
        self.error: LLMError | None = None
        self.complete: dict[str, Any] | None = None

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json_object(line)
        if event is None:
            self.unreadable.add(line)
            return ()
        kind = event.get("type")
        if kind == "message":
            return self._message(event.get("message"))
        if kind == "error" and self.error is None:
            self.error = classify_error(str(event.get("error") or "goose reported an error"))
        elif kind == "model_change" and isinstance(event.get("model"), str):
            self.model = event["model"] or self.model
        elif kind == "complete":
            self.complete = event
        return ()

    def _message(self, message: object) -> Iterable[StreamEvent]:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            return ()  # the user's own message, tool responses
        events: list[StreamEvent] = []
        for item in message.get("content") or ():
            if not isinstance(item, dict):
                continue
            if item.get("type") == "text" and isinstance(item.get("text"), str) and item["text"]:
                events.append(TextDelta(item["text"]))
            elif item.get("type") == "thinking" and isinstance(item.get("thinking"), str) and item["thinking"]:
                events.append(ReasoningDelta(item["thinking"]))
        return events

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if self.error is not None:
            self.error.detail = stderr[-4000:] or None
            raise self.error
        if self.complete is None:
            if returncode == 0:
                raise UpstreamError(
                    "goose exited without a complete event" + self.unreadable.excerpt(),
                    provider=PROVIDER,
                    detail=stderr[-4000:] or None,
                )
            if _NO_SESSION.search(stderr):
                raise SessionNotFound(f"goose: {stderr.strip()[-300:]}", provider=PROVIDER, detail=stderr[-4000:])
            raise self.unreadable.annotate(process.classify_exit(returncode, stderr, provider=PROVIDER))
        events: list[StreamEvent] = []
        total = int_or_zero(self.complete.get("total_tokens"))
        if total:
            # only the session's total is reported: it is counted as input (the split is unknown)
            events.append(UsageEvent(Usage(input_tokens=total)))
        events.append(Done(finish_reason="stop", model=self.model, session_id=self.session_id))
        return events


class GooseRunner(CLIRunner):
    """Goose's headless ``run`` in stream-json mode (from its source; not verified against the binary)."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Goose"
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True,
        token_streaming=True,  # one message event per streamed chunk
        system_prompt=False,  # --system adds to Goose's own prompt
        images=False,
        agent_tools=True,
        sessions=True,
        usage=True,
        verified=False,
    )
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "goose"
    package: ClassVar[str] = ""
    install: ClassVar[str] = (
        "install Goose: curl -fsSL https://github.com/block/goose/releases/download/stable/download_cli.sh | bash"
    )
    #: the session name (our uuid) is per conversation, so no spare could be started ahead of the prompt
    warmable: ClassVar[bool] = False
    pass_env: ClassVar[tuple[str, ...]] = (
        "GOOSE_PROVIDER",
        "GOOSE_MODEL",
        "OPENAI_API_KEY",
        "OPENAI_HOST",
        "OPENAI_BASE_PATH",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_HOST",
        "GOOGLE_API_KEY",
        "OLLAMA_HOST",
        "OPENROUTER_API_KEY",
        "DATABRICKS_HOST",
        "DATABRICKS_TOKEN",
        "XDG_CONFIG_HOME",
    )
    api_key_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY")

    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, "run", "--output-format", "stream-json", "-i", "-"]
        if not self.user_config:
            argv.append("--no-profile")
        if turn.model:
            argv += ["--model", turn.model]
        if turn.request.extra.get(EPHEMERAL_KEY) is True:
            argv.append("--no-session")
        elif turn.resume:
            argv += ["--resume", "--name", turn.resume]
        elif turn.session:
            argv += ["--name", turn.session]
        if turn.system:
            argv += ["--system", turn.system]
        env = {"GOOSE_MODE": "auto" if self.allow_tools else "chat", "NO_COLOR": "1"}
        return Invocation(argv=argv, stdin=turn.prompt.encode("utf-8"), env=env)

    def new_parser(self, turn: Turn) -> GooseParser:
        ephemeral = turn.request.extra.get(EPHEMERAL_KEY) is True
        return GooseParser(model=turn.model, session=None if ephemeral else (turn.resume or turn.session))

    def credential_files(self) -> list[Path]:
        """The config and, without a system keychain, the ``secrets.yaml`` beside it."""
        config_home = self.getenv("XDG_CONFIG_HOME")
        goose = (Path(config_home) if config_home else self.home() / ".config") / "goose"
        return [goose / "config.yaml", goose / "secrets.yaml"]

    async def check_auth(self) -> tuple[bool | None, str | None]:
        if self.getenv("GOOSE_PROVIDER"):
            return True, None
        config_home = self.getenv("XDG_CONFIG_HOME")
        config = Path(config_home) if config_home else self.home() / ".config"
        if (config / "goose" / "config.yaml").is_file():
            return True, None
        return False, "run `goose configure` to choose a provider and model (or set GOOSE_PROVIDER and GOOSE_MODEL)"
