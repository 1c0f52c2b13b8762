"""The command line: ``llm-runners serve | chat | providers``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from . import __version__
from .errors import LLMError
from .types import ChatRequest, Done, Health, Message, ReasoningDelta, TextDelta, UsageEvent

DEFAULT_CHAT_PROVIDER = "claude_code"


def _provider_options(config: str | None, name: str) -> dict[str, Any]:
    from .config import load_settings

    settings = load_settings(config)
    entry = settings.providers.get(name)
    return dict(entry.options) if entry is not None else {}


def _make_runner(name: str, options: dict[str, Any]) -> Any:
    from .runners import runner_class

    try:
        cls = runner_class(name)
    except KeyError:
        from .runners import REGISTRY

        raise SystemExit(f"llm-runners: unknown provider {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return cls(**options)


# ---------------------------------------------------------------------------------------------------- chat


async def _chat(args: argparse.Namespace) -> int:
    from .config import load_settings

    settings = load_settings(args.config)
    name = args.provider or settings.default_provider or DEFAULT_CHAT_PROVIDER
    options = _provider_options(args.config, name)
    if args.allow_tools:
        options["allow_tools"] = True
    if args.timeout is not None:
        options["timeout"] = args.timeout
    runner = _make_runner(name, options)
    prompt = args.prompt if args.prompt != "-" else sys.stdin.read()
    messages = []
    if args.system:
        messages.append(Message(role="system", content=args.system))
    messages.append(Message(role="user", content=prompt))
    request = ChatRequest(messages=messages, model=args.model)
    out = sys.stdout
    usage = None
    ended_with_newline = True
    try:
        async with runner:
            async for event in runner.stream(request):
                if isinstance(event, TextDelta):
                    out.write(event.text)
                    out.flush()
                    ended_with_newline = event.text.endswith("\n")
                elif isinstance(event, ReasoningDelta) and args.show_reasoning:
                    sys.stderr.write(event.text)
                    sys.stderr.flush()
                elif isinstance(event, UsageEvent):
                    usage = event.usage if usage is None else usage + event.usage
                elif isinstance(event, Done):
                    for warning in event.warnings:
                        print(f"warning: {warning}", file=sys.stderr)
    except LLMError as exc:
        if not ended_with_newline:
            out.write("\n")
        print(f"llm-runners: {name}: {exc.kind}: {exc.message}", file=sys.stderr)
        return 1
    if not ended_with_newline:
        out.write("\n")
    if args.usage and usage is not None:
        cost = f", ${usage.cost_usd:.6f}" if usage.cost_usd is not None else ""
        print(
            f"[{usage.input_tokens} in ({usage.cached_tokens} cached), {usage.output_tokens} out{cost}]",
            file=sys.stderr,
        )
    return 0


# ---------------------------------------------------------------------------------------------------- providers


async def _providers(args: argparse.Namespace) -> int:
    from .runners import REGISTRY

    names = sorted(REGISTRY)
    results: dict[str, Health] = {}

    async def check(name: str) -> None:
        runner = _make_runner(name, _provider_options(args.config, name))
        try:
            results[name] = await runner.health()
        except LLMError as exc:
            results[name] = Health(provider=name, installed=False, ready=False, reason=exc.message)
        finally:
            await runner.aclose()

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(check, name)
    if args.json:
        print(json.dumps([results[n].model_dump() for n in names], indent=2))
        return 0
    for name in names:
        h = results[name]
        state = "ready" if h.ready else ("not ready" if h.installed else "not found")
        print(f"{name:<14} {state:<10} {h.version or '-':<12} {h.path or '-'}")
        if not h.ready:
            if h.reason:
                print(f"{'':<14} why: {h.reason}")
            if h.fix:
                print(f"{'':<14} fix: {h.fix}")
    return 0


# ---------------------------------------------------------------------------------------------------- serve


def _serve(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .server import serve

    try:
        return serve(host=args.host, port=args.port, default_provider=args.provider, config=args.config)
    except ConfigError as exc:  # bad settings or an unsafe bind: one line saying what to fix, no traceback
        print(f"llm-runners serve: {exc}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-runners", description="Every AI coding CLI as one LLM provider.")
    parser.add_argument("--version", action="version", version=f"llm-runners {__version__}")
    parser.add_argument("--config", default=os.environ.get("LLM_RUNNERS_CONFIG"), help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI/Anthropic-compatible HTTP server")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument("--provider", default=None, help="default provider for requests that name none")
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
    chat.set_defaults(func=lambda a: anyio.run(_chat, a))

    providers = sub.add_parser("providers", help="list every known CLI: found, version, ready or how to fix")
    providers.add_argument("--json", action="store_true")
    providers.set_defaults(func=lambda a: anyio.run(_providers, a))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
