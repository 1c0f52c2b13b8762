"""CLIs whose headless mode prints only the answer, as plain text (Kiro's ``chat --no-interactive``, Warp's
``oz agent run --output-format text``): the parser, where each stdout line is answer text as it comes, terminal
colour codes removed, and the exit code and stderr decide success (classified by
:func:`llm_runners.process.classify_exit`); and the runner base such a dialect is built on. There are no usage
figures and no session id in such output."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from .. import process
from ..errors import UpstreamError
from ..types import Capabilities, Done, StreamEvent, TextDelta
from .base import CLIRunner, Invocation, Turn

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def without_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class PlainTextParser:
    """stdout lines -> text; ``prefix`` is a marker the CLI prints before its answer (removed once, if there)."""

    def __init__(self, *, provider: str, model: str | None, prefix: str = "") -> None:
        self.provider = provider
        self.model = model
        self.prefix = prefix
        self.session_id: str | None = None
        self._lines = 0
        self._text = False

    def feed(self, line: bytes) -> Iterable[StreamEvent]:
        text = without_ansi(line.decode("utf-8", "replace")).rstrip("\r")
        if self._lines == 0:
            if not text.strip():
                return ()  # blank lines before the answer
            if self.prefix and text.startswith(self.prefix):
                text = text[len(self.prefix) :]
        self._lines += 1
        self._text = self._text or bool(text.strip())
        return (TextDelta(("\n" if self._lines > 1 else "") + text),)

    def finish(self, returncode: int, stderr: str) -> Iterable[StreamEvent]:
        if returncode != 0:
            raise process.classify_exit(returncode, without_ansi(stderr), provider=self.provider)
        if not self._text:
            raise UpstreamError(
                f"{self.provider} exited 0 without an answer", provider=self.provider, detail=stderr[-4000:] or None
            )
        return (Done(finish_reason="stop", model=self.model),)


class PlainTextRunner(CLIRunner):
    """A runner of a plain-text CLI: a dialect gives its binary, :meth:`command` and :attr:`prompt_flag`.

    The answer comes whole at the end (no token streaming), no session is kept (every turn replays the conversation),
    there are no usage figures, and the system prompt goes in front of the prompt. An API key in one of
    ``api_key_env`` counts as logged in; a login the CLI keeps elsewhere cannot be told without a model call."""

    #: the rest as the defaults say: the answer streams whole, no token streaming, images or sessions, not verified
    capabilities: ClassVar[Capabilities] = Capabilities(system_prompt=False, agent_tools=True, usage=False)
    default_model: ClassVar[str | None] = None
    package: ClassVar[str] = ""
    warmable: ClassVar[bool] = False
    resumable: ClassVar[bool] = False
    #: what stands in argv right before the prompt, which comes last
    prompt_flag: ClassVar[str]
    #: environment the CLI runs with, on top of the runner's
    run_env: ClassVar[dict[str, str]] = {}
    #: a marker the CLI prints before its answer (removed)
    answer_prefix: ClassVar[str] = ""

    def command(self, turn: Turn) -> list[str]:
        """argv from the binary to the last option, without ``--model`` and the prompt (raises InvalidRequest when
        the runner's settings forbid the run)."""
        raise NotImplementedError

    def invocation(self, turn: Turn) -> Invocation:
        argv = self.command(turn)
        if turn.model:
            argv += ["--model", turn.model]
        prompt = f"{turn.system}\n\n{turn.prompt}" if turn.system else turn.prompt
        argv += [*self.extra_args, self.prompt_flag, prompt]
        return Invocation(argv=argv, extra_args_placed=True, env=dict(self.run_env))

    def new_parser(self, turn: Turn) -> PlainTextParser:
        return PlainTextParser(provider=self.name, model=turn.model, prefix=self.answer_prefix)

    async def check_auth(self) -> tuple[bool | None, str | None]:
        if any(self.getenv(name) for name in self.api_key_env):
            return True, None
        return None, None
