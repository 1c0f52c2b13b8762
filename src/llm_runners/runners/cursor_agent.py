"""Cursor Agent (``cursor-agent``) as a provider. **Not verified**: the Cursor CLI is closed source and not on the
package registries here, so this dialect is written from Cursor's published documentation and tested on
transcripts written from it (``tests/fixtures/cursor_agent/``), never against the real binary.

Sources (as read; the quoted facts are what the code relies on):

- https://cursor.com/docs/cli/reference/output-format.md (also mirrored at docs.cursor.com/…/cli/reference/
  output-format): ``--output-format text|json|stream-json`` is valid with ``--print`` (or when print mode is
  inferred: non-TTY stdout or piped stdin). ``stream-json`` is NDJSON, one event per line: ``system`` (subtype
  ``init``: ``session_id``, ``model``, ``cwd``, ``apiKeySource``, ``permissionMode``), ``user`` (the prompt),
  ``assistant`` (``message.content[]`` text blocks; "one line per assistant message (the complete message between
  tool calls)"), ``tool_call`` (subtype ``started`` / ``completed``, ``call_id``, ``tool_call``), and on success a
  terminal ``result`` (``subtype: "success"``, ``is_error``, ``duration_ms``, ``result`` = "concatenation of all
  text deltas", ``session_id``, optional ``request_id``). "On failure, the process exits with a non-zero code" and
  the stream "may end early without a terminal event; the error message is written to stderr".
- Cursor CLI flag tables (https://cheatsheets.zip/cursor-cli and https://linuxcommandlibrary.com/man/cursor, both
  summarising ``cursor-agent --help``): ``-p/--print``, ``--stream-partial-output`` ("stream text deltas
  (stream-json only)"), ``--model``, ``--mode agent|plan|ask`` (``ask``: "Q&A, read-only"), ``--resume [chatId]``,
  ``--trust`` ("trust the workspace without prompting (required for headless runs)"), ``-f/--force`` ("run all tool
  calls without prompting"), ``--sandbox enabled|disabled``, ``--approve-mcps``, ``--api-key`` / ``CURSOR_API_KEY``,
  ``--list-models``; the binary is ``cursor-agent`` (newer installs also call it ``agent``); ``cursor-agent acp``
  speaks ACP (agentclientprotocol/registry, see clis.md section 15).

How a turn runs: ``cursor-agent -p --output-format stream-json --stream-partial-output --trust --mode ask
--sandbox enabled [--model M] [--resume=<chatId>] -- <prompt>``: the documented headless form takes the prompt
as an argument (the docs name no stdin prompt). Tools: ``--mode ask`` (read-only) without ``--force`` and
without ``--approve-mcps``: no writes, no shell, no MCP servers; Cursor has no documented switch that removes its
read tools as well, so file *reads* inside the isolated working directory remain possible. ``allow_tools`` uses
``--mode agent --force``. The chat id from ``system/init`` (or ``result``) is the session; the next turn passes
``--resume=<id>``. The partial-output deltas are read whichever way they come (a delta, the text so far, or the
whole message again at its end: only new text is passed on). No token usage is documented in the output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from .. import process
from ..errors import SessionNotFound, UpstreamError
from ..types import Capabilities, Done, StreamEvent, TextDelta
from .base import CLIRunner, Invocation, Turn, Unreadable, json_object

PROVIDER = "cursor_agent"


class CursorParser:
    """``stream-json`` lines -> text deltas; the ``result`` event ends a successful run."""

    def __init__(self, *, model: str | None, resume: str | None) -> None:
        self.session_id: str | None = None
        self.model = model
        self.resume = resume
        self.unreadable = Unreadable()
        self.result: dict[str, Any] | None = None
        self._said = ""  # the text of the current assistant message passed on so far

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        event = json_object(line)
        if event is None:
            self.unreadable.add(line)
            return ()
        if isinstance(event.get("session_id"), str) and event["session_id"]:
            self.session_id = event["session_id"]
        kind = event.get("type")
        if kind == "system" and isinstance(event.get("model"), str):
            self.model = event["model"] or self.model
        elif kind == "assistant":
            return self._assistant(event.get("message"))
        elif kind == "tool_call":
            self._said = ""  # a tool call ends an assistant message; the next one starts afresh
        elif kind == "result":
            self.result = event
        return ()

    def _assistant(self, message: object) -> Iterable[StreamEvent]:
        if not isinstance(message, dict):
            return ()
        text = "".join(
            block["text"]
            for block in message.get("content") or ()
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        )
        if not text or text == self._said:
            return ()  # the whole message repeated at its end
        # the text so far (pass on what is new), or a delta
        new = text[len(self._said) :] if self._said and text.startswith(self._said) else text
        self._said += new
        return (TextDelta(new),)

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        result = self.result
        if result is None or returncode != 0 or result.get("is_error") is True:
            if self.resume and "resume" in stderr.lower() and "not found" in stderr.lower():
                raise SessionNotFound(
                    f"cursor-agent: chat {self.resume!r} cannot be resumed", provider=PROVIDER, detail=stderr[-4000:]
                )
            if returncode == 0:
                text = str(result.get("result") or "") if result else ""
                error = process.classify_text(text or stderr, provider=PROVIDER)
                raise error or UpstreamError(
                    "cursor-agent ended without a successful result" + self.unreadable.excerpt(),
                    provider=PROVIDER,
                    detail=stderr[-4000:] or None,
                )
            raise self.unreadable.annotate(process.classify_exit(returncode, stderr, provider=PROVIDER))
        events: list[StreamEvent] = []
        if not self._said and isinstance(result.get("result"), str) and result["result"]:
            events.append(TextDelta(result["result"]))  # no assistant event came: the result holds the text
        events.append(Done(finish_reason="stop", model=self.model, session_id=self.session_id))
        return events


class CursorAgentRunner(CLIRunner):
    """Cursor Agent in print mode with stream-json (from its documentation; not verified against the binary)."""

    name: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Cursor Agent"
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True,
        token_streaming=True,  # --stream-partial-output
        system_prompt=False,  # no documented flag: the system prompt is rendered into the prompt
        images=False,
        agent_tools=True,
        sessions=True,
        usage=False,
        model_listing=True,
        verified=False,
    )
    default_model: ClassVar[str | None] = None
    binary_name: ClassVar[str] = "cursor-agent"
    package: ClassVar[str] = ""
    install: ClassVar[str] = "install the Cursor CLI: curl https://cursor.com/install -fsS | bash"
    #: the prompt is an argument, so nothing can be started ahead of it
    warmable: ClassVar[bool] = False
    pass_env: ClassVar[tuple[str, ...]] = ("CURSOR_API_KEY",)
    api_key_env: ClassVar[tuple[str, ...]] = ("CURSOR_API_KEY",)

    def invocation(self, turn: Turn) -> Invocation:
        argv = [self.binary_path, "-p", "--output-format", "stream-json", "--stream-partial-output", "--trust"]
        argv += ["--mode", "agent", "--force"] if self.allow_tools else ["--mode", "ask", "--sandbox", "enabled"]
        if turn.model:
            argv += ["--model", turn.model]
        if turn.resume:
            argv.append(f"--resume={turn.resume}")
        # no system-prompt flag: it goes in front of a session's first prompt (a resumed chat has it already)
        prompt = f"{turn.system}\n\n{turn.prompt}" if turn.system and not turn.resume else turn.prompt
        return Invocation(argv=[*argv, *self.extra_args, "--", prompt], extra_args_placed=True)

    def new_parser(self, turn: Turn) -> CursorParser:
        return CursorParser(model=turn.model, resume=turn.resume)

    async def list_models(self) -> list[str] | None:
        """``cursor-agent --list-models``: one model id per line (the first word of each non-empty line)."""
        try:
            output = await self.run_quiet([self.binary_path, "--list-models"], limit=30.0)
        except Exception:
            return None
        names = [line.split()[0] for line in output.splitlines() if line.strip() and not line.startswith(" ")]
        return [n for n in names if n[:1].isalnum()] or None

    async def check_auth(self) -> tuple[bool | None, str | None]:
        if self.getenv("CURSOR_API_KEY"):
            return True, None
        return None, None  # a login made with `cursor-agent login` lives where the docs do not say
