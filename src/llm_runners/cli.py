"""The command line: ``llm-runners serve | chat | providers``.

Providers are built exactly as the server builds them (:func:`llm_runners.router.build_provider`), so every entry of
the settings file works here too: the CLI runners, HTTP APIs configured with ``type = "openai_compat"`` /
``"anthropic"``, and ``type = "scripted"``. Every expected failure (bad settings, an unknown provider, a missing
binary, an error from the model) is ONE line on stderr and a non-zero status, never a traceback:

====  ===========================================================================
0     the answer was printed (``chat``), the listing was printed (``providers``)
1     the provider failed (``llm-runners: <provider>: <error kind>: <message>``)
2     bad settings or arguments (unknown provider, unreadable config, empty prompt)
130   interrupted (Ctrl-C): the CLI process is killed with the request
====  ===========================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from . import __version__, logs
from .config import ConfigError, Settings, load_settings
from .errors import LLMError
from .types import AgentToolEvent, ChatRequest, Done, Health, Message, ReasoningDelta, TextDelta, Usage, UsageEvent

if TYPE_CHECKING:
    from .provider import Provider

DEFAULT_CHAT_PROVIDER = "claude_code"
#: the loggers the CLI runners report their CLI's retries on (``llm_runners.runners.<provider>``)
RUNNER_LOGGER = "llm_runners.runners"

#: seconds one provider's health check may take in ``providers`` before it is reported as hanging
HEALTH_TIMEOUT = 30.0


class CommandError(Exception):
    """Bad settings or arguments: printed as one line, exit status 2."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _known(settings: Settings) -> list[str]:
    from .runners import REGISTRY

    return sorted({*REGISTRY, *settings.providers})


def _build(name: str, settings: Settings) -> Provider:
    """The provider ``name``: its settings table when there is one (``type`` picks the class), else the CLI runner
    of that name with its defaults."""
    from .router import build_provider
    from .runners import REGISTRY

    entry = settings.providers.get(name)
    if entry is None and name not in REGISTRY:
        raise CommandError(f"unknown provider {name!r}; known: {', '.join(_known(settings))}")
    try:
        return build_provider(name, entry.options if entry is not None else {})
    except ValueError as exc:
        raise CommandError(_one_line(str(exc))) from None


# ---------------------------------------------------------------------------------------------------- chat


async def _chat(args: argparse.Namespace) -> int:
    from .runners.base import EPHEMERAL_KEY, RETRY_NOTICE, CLIRunner

    settings = _settings(args.config)
    name = args.provider or settings.default_provider or DEFAULT_CHAT_PROVIDER
    prompt = args.prompt if args.prompt != "-" else sys.stdin.read()
    if not prompt.strip():
        raise CommandError("the prompt is empty")
    if args.timeout is not None and args.timeout <= 0:
        raise CommandError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    provider = _build(name, settings)
    if isinstance(provider, CLIRunner):
        # the runner's own limits: on expiry the process group is killed and a ProviderTimeout raised
        provider.allow_tools = provider.allow_tools or args.allow_tools
        if args.timeout is not None:
            provider.timeout = args.timeout
        # one question, then exit: a spare or a live process (even if the settings ask for warm) would only be
        # started to be killed
        provider.warm_pool = provider.live_pool = None
    elif args.allow_tools:
        await provider.aclose()
        raise CommandError(f"--allow-tools: {name} is not a CLI runner and has no tools of its own")
    messages = []
    if args.system:
        messages.append(Message(role="system", content=args.system))
    messages.append(Message(role="user", content=prompt))
    # a one-shot question: no CLI session is remembered for a conversation that never continues
    request = ChatRequest(messages=messages, model=args.model, extra={EPHEMERAL_KEY: True})
    printer = _Printer(show_reasoning=args.show_reasoning)

    # the CLI's retry notices (WARNING) as plain lines among the answer, whatever the log level, and not as log
    # records as well; the log handlers still get what their level lets through
    root = logging.getLogger()
    threshold, handlers = root.getEffectiveLevel(), list(root.handlers)

    def other_record(record: logging.LogRecord) -> bool:
        return not getattr(record, RETRY_NOTICE, False) and record.levelno >= threshold

    runner_log = logging.getLogger(RUNNER_LOGGER)
    level = runner_log.level
    runner_log.setLevel(min(logging.WARNING, runner_log.getEffectiveLevel()))
    notices = _RetryNotices(printer)
    notices.addFilter(lambda record: bool(getattr(record, RETRY_NOTICE, False)))
    runner_log.addHandler(notices)
    for handler in handlers:
        handler.addFilter(other_record)
    try:
        async with provider:
            with anyio.fail_after(None if isinstance(provider, CLIRunner) else args.timeout):
                async for event in provider.stream(request):
                    printer.event(event)
    except LLMError as exc:
        printer.end()
        print(f"llm-runners: {name}: {exc.kind}: {_one_line(exc.message)}", file=sys.stderr)
        return 1
    except TimeoutError:
        printer.end()
        print(f"llm-runners: {name}: timeout: no complete answer within {args.timeout:g} s", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): the provider stream is closed, the CLI killed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        runner_log.removeHandler(notices)
        runner_log.setLevel(level)
        for handler in handlers:
            handler.removeFilter(other_record)
    printer.end()
    if args.usage and printer.usage is not None:
        u = printer.usage
        cost = f", ${u.cost_usd:.6f}" if u.cost_usd is not None else ""
        print(f"[{u.input_tokens} in ({u.cached_tokens} cached), {u.output_tokens} out{cost}]", file=sys.stderr)
    return 0


class _RetryNotices(logging.Handler):
    """The runners' retry notices (``codex: reconnecting 2/5 (…)``), one line each on stderr, as they happen."""

    def __init__(self, printer: _Printer) -> None:
        super().__init__(logging.WARNING)
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        self.printer.end()
        print(record.getMessage(), file=sys.stderr, flush=True)


class _Printer:
    """Writes the answer to stdout as it streams (flushed per delta), everything else to stderr."""

    def __init__(self, *, show_reasoning: bool) -> None:
        self.show_reasoning = show_reasoning
        self.usage: Usage | None = None
        self.ended_with_newline = True

    def event(self, event: object) -> None:
        if isinstance(event, TextDelta):
            sys.stdout.write(event.text)
            sys.stdout.flush()
            self.ended_with_newline = event.text.endswith("\n")
        elif isinstance(event, ReasoningDelta) and self.show_reasoning:
            sys.stderr.write(event.text)
            sys.stderr.flush()
        elif isinstance(event, AgentToolEvent) and event.status in ("completed", "failed"):
            print(f"[{event.kind or 'tool'}] {event.title or event.id}: {event.status}", file=sys.stderr)
        elif isinstance(event, UsageEvent):
            self.usage = event.usage if self.usage is None else self.usage + event.usage
        elif isinstance(event, Done):
            for warning in event.warnings:
                print(f"warning: {warning}", file=sys.stderr)

    def end(self) -> None:
        """End the answer's line, so the shell prompt (or an error line) starts on its own."""
        if not self.ended_with_newline:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.ended_with_newline = True


# ---------------------------------------------------------------------------------------------------- providers


async def _providers(args: argparse.Namespace) -> int:
    """Every known CLI runner and every configured provider, checked concurrently."""
    settings = _settings(args.config)
    names = _known(settings)
    results: dict[str, Health] = {}

    async def check(name: str) -> None:
        try:
            provider = _build(name, settings)
        except CommandError as exc:
            where = args.config or "the settings file"
            results[name] = Health(
                provider=name, installed=False, ready=False, reason=str(exc), fix=f"fix [providers.{name}] in {where}"
            )
            return
        try:
            with anyio.fail_after(HEALTH_TIMEOUT):
                health = await provider.health()
        except (LLMError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, LLMError) else f"health check hung for {HEALTH_TIMEOUT:g} s"
            health = Health(provider=name, installed=False, ready=False, reason=reason)
        finally:
            await provider.aclose()
        # keyed by the configured name (an HTTP provider reports its type, "openai_compat", as its own name)
        results[name] = health.model_copy(update={"provider": name, "verified": provider.capabilities.verified})

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(check, name)
    from .redact import redact

    if args.json:
        print(redact(json.dumps([results[n].model_dump() for n in names], indent=2)))
        return 0
    for name in names:
        h = results[name]
        state = "ready" if h.ready else ("not ready" if h.installed else "not found")
        proof = "verified" if h.verified else "unverified"
        print(redact(f"{name:<14} {state:<10} {h.version or '-':<12} {proof:<10} {h.path or '-'}"))
        if not h.ready:
            if h.reason:
                print(redact(f"{'':<14} why: {_one_line(h.reason)}"))
            if h.fix:
                print(redact(f"{'':<14} fix: {_one_line(h.fix)}"))
    return 0


# ---------------------------------------------------------------------------------------------------- serve


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    try:
        return serve(
            host=args.host,
            port=args.port,
            default_provider=args.provider,
            config=args.config,
            log_level=args.log_level or "info",
            log_format=args.log_format,
        )
    except ConfigError as exc:  # bad settings or an unsafe bind: one line saying what to fix, no traceback
        print(f"llm-runners serve: {exc}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------------- main

#: the environment variables the command line reads (``serve --help`` lists them)
ENVIRONMENT = (
    ("LLM_RUNNERS_CONFIG", "TOML configuration file (same as --config)"),
    ("LLM_RUNNERS_API_KEYS", "comma-separated API keys; required to bind anything but loopback"),
    ("LLM_RUNNERS_HOST", "address to bind (same as --host)"),
    ("LLM_RUNNERS_PORT", "port to bind (same as --port)"),
    ("LLM_RUNNERS_DEFAULT_PROVIDER", "provider for a model name that names none (same as --provider)"),
    ("LLM_RUNNERS_STRICT", "1: an unsupported request parameter is a 400 instead of a warning"),
    ("LLM_RUNNERS_LOG_LEVEL", f"{'|'.join(logs.LEVELS)} (same as --log-level)"),
    ("LLM_RUNNERS_LOG_FORMAT", "text|json (same as --log-format)"),
)


def _environment_help() -> str:
    width = max(len(name) for name, _ in ENVIRONMENT)
    rows = "\n".join(f"  {name:<{width}}  {what}" for name, what in ENVIRONMENT)
    return f"environment variables (options given on the command line win):\n{rows}"


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every subcommand takes, before or after its name. On the subcommands their default is
    SUPPRESS, so ``llm-runners --config X serve`` is not overwritten by the subcommand's own default."""

    def default(value: str | None) -> str | None:
        return value if top else argparse.SUPPRESS

    env = os.environ
    parser.add_argument("--config", default=default(env.get("LLM_RUNNERS_CONFIG")), help="TOML configuration file")
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        type=str.lower,
        default=default(env.get("LLM_RUNNERS_LOG_LEVEL", "").lower() or None),
        help="log records shown on stderr (default: info for serve, error otherwise)",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=default(env.get("LLM_RUNNERS_LOG_FORMAT", "").lower() or "text"),
        help="text lines or one JSON object per line (default text)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-runners", description="Every AI coding CLI as one LLM provider.")
    parser.add_argument("--version", action="version", version=f"llm-runners {__version__}")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the OpenAI/Anthropic-compatible HTTP server",
        description="Run the OpenAI/Anthropic-compatible HTTP server until SIGINT or SIGTERM.",
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument("--provider", default=None, help="default provider for requests that name none")
    _common_options(serve, top=False)
    serve.set_defaults(func=_serve)

    chat = sub.add_parser("chat", help="ask one question and stream the answer")
    chat.add_argument("prompt", help="the prompt; '-' reads it from standard input")
    chat.add_argument("--provider", "-p", default=None, help=f"provider (default {DEFAULT_CHAT_PROVIDER})")
    chat.add_argument("--model", "-m", default=None)
    chat.add_argument("--system", "-s", default=None, help="system prompt")
    chat.add_argument("--allow-tools", action="store_true", help="let the CLI use its own tools (files, shell)")
    chat.add_argument("--timeout", type=float, default=None, help="seconds before the CLI is killed")
    chat.add_argument("--usage", action="store_true", help="print token usage to stderr")
    chat.add_argument("--show-reasoning", action="store_true", help="print reasoning to stderr")
    _common_options(chat, top=False)
    chat.set_defaults(func=lambda a: anyio.run(_chat, a))

    providers = sub.add_parser("providers", help="list every known CLI: found, version, verified, ready or how to fix")
    providers.add_argument("--json", action="store_true")
    _common_options(providers, top=False)
    providers.set_defaults(func=lambda a: anyio.run(_providers, a))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_level is not None and args.log_level not in logs.LEVELS:  # from the environment
        parser.error(f"LLM_RUNNERS_LOG_LEVEL: invalid choice {args.log_level!r} (choose from {', '.join(logs.LEVELS)})")
    if args.log_format not in logs.FORMATS:
        parser.error(f"LLM_RUNNERS_LOG_FORMAT: invalid choice {args.log_format!r} (choose from text, json)")
    if args.command != "serve":  # serve configures logging itself, once its settings are read
        # error by default: an expected failure of chat or providers is one line of their own on stderr
        logs.configure(args.log_level or "error", args.log_format)
    try:
        code: int = args.func(args)
    except CommandError as exc:
        print(f"llm-runners {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
