"""What tokens cost: the list prices shipped with the package, and the cost of a :class:`~llm_runners.types.Usage`.

A price is looked up by the longest model-name prefix that has one (``claude-sonnet-4-5-20250929`` finds
``claude-sonnet-4``), case-insensitively; the short names the CLIs take (``sonnet``, ``opus``, ``haiku``) are
entries of their own. The config file's ``[pricing]`` table adds prefixes or replaces shipped ones::

    [pricing]
    "my-finetune" = { input = 2.0, output = 8.0, cache_read = 0.5 }

A usage's cost: ``(input - cache reads - cache writes) x input + cache reads x cache_read + cache writes x
cache_write + output x output``, per million tokens. Reasoning tokens are part of the output tokens and priced as
output, as every one of these APIs bills them. A missing ``cache_read`` / ``cache_write`` price is the input price.

The figures are the providers' published standard-tier list prices in USD per million tokens (prompts up to 200k
tokens where the price depends on length), as read on the pricing pages on 2025-11-20:

- Anthropic: https://docs.anthropic.com/en/docs/about-claude/pricing (cache writes: the 5-minute rate, 1.25x
  input; cache reads 0.1x input)
- OpenAI: https://openai.com/api/pricing (cached input; OpenAI bills no separate cache write, so it is the input
  price)
- Google: https://ai.google.dev/gemini-api/docs/pricing (context-cache reads; implicit caching has no write price)

They change: check them against those pages, and override in the config rather than trusting an old package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .types import Usage

__all__ = ["PRICES", "Price", "PriceTable"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        read = usage.cached_tokens
        written = usage.cache_write_tokens
        fresh = max(0, usage.input_tokens - read - written)
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        total = fresh * self.input + read * cache_read + written * cache_write + usage.output_tokens * self.output
        return total / 1_000_000


_OPUS_4 = Price(15.0, 75.0, cache_read=1.50, cache_write=18.75)  # Opus 4 and 4.1
_OPUS_45 = Price(5.0, 25.0, cache_read=0.50, cache_write=6.25)  # Opus 4.5 and later 4.x
_SONNET = Price(3.0, 15.0, cache_read=0.30, cache_write=3.75)  # Sonnet 3.7, 4, 4.5
_HAIKU_45 = Price(1.0, 5.0, cache_read=0.10, cache_write=1.25)
_HAIKU_35 = Price(0.80, 4.0, cache_read=0.08, cache_write=1.0)
_GPT5 = Price(1.25, 10.0, cache_read=0.125)
_GPT5_MINI = Price(0.25, 2.0, cache_read=0.025)
_GPT5_NANO = Price(0.05, 0.40, cache_read=0.005)

#: the shipped table (see the module docstring for the sources and the date)
PRICES: dict[str, Price] = {
    # Anthropic
    "claude-opus-4": _OPUS_45,  # a 4.x Opus newer than the entries below
    "claude-opus-4-0": _OPUS_4,
    "claude-opus-4-1": _OPUS_4,
    "claude-opus-4-2025": _OPUS_4,  # claude-opus-4-20250514
    "claude-opus-4-5": _OPUS_45,
    "claude-3-opus": _OPUS_4,
    "claude-sonnet-4": _SONNET,
    "claude-3-7-sonnet": _SONNET,
    "claude-3-5-sonnet": _SONNET,
    "claude-haiku-4": _HAIKU_45,
    "claude-3-5-haiku": _HAIKU_35,
    "claude-3-haiku": Price(0.25, 1.25, cache_read=0.03, cache_write=0.30),
    "opus": _OPUS_45,  # Claude Code's aliases: the current model of each family
    "sonnet": _SONNET,
    "haiku": _HAIKU_45,
    # OpenAI
    "gpt-5": _GPT5,  # gpt-5, gpt-5-codex, gpt-5.1, gpt-5.1-codex
    "gpt-5-mini": _GPT5_MINI,
    "gpt-5-codex-mini": _GPT5_MINI,
    "gpt-5.1-codex-mini": _GPT5_MINI,
    "codex-mini": Price(1.50, 6.0, cache_read=0.375),
    "gpt-5-nano": _GPT5_NANO,
    "gpt-4.1": Price(2.0, 8.0, cache_read=0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, cache_read=0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, cache_read=0.025),
    "gpt-4o": Price(2.50, 10.0, cache_read=1.25),
    "gpt-4o-mini": Price(0.15, 0.60, cache_read=0.075),
    "o3": Price(2.0, 8.0, cache_read=0.50),
    "o4-mini": Price(1.10, 4.40, cache_read=0.275),
    # Google
    "gemini-2.5-pro": Price(1.25, 10.0, cache_read=0.125),
    "gemini-2.5-flash": Price(0.30, 2.50, cache_read=0.03),
    "gemini-2.5-flash-lite": Price(0.10, 0.40, cache_read=0.01),
    "gemini-2.0-flash": Price(0.10, 0.40, cache_read=0.025),
    "gemini-2.0-flash-lite": Price(0.075, 0.30),
}


class PriceTable:
    """The shipped prices with ``overrides`` on top (``{prefix: {"input": ..., "output": ..., ...}}``, as the
    config's ``[pricing]`` table gives them)."""

    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        prices = {prefix.lower(): price for prefix, price in PRICES.items()}
        for prefix, entry in (overrides or {}).items():
            prices[prefix.lower()] = Price(
                input=float(entry["input"]),
                output=float(entry["output"]),
                cache_read=entry.get("cache_read"),
                cache_write=entry.get("cache_write"),
            )
        self.prices = prices
        self._longest = max((len(p) for p in prices), default=0)
        self._found: dict[str, Price | None] = {}

    def find(self, model: str | None) -> Price | None:
        """The price of the longest prefix of ``model`` in the table; ``None`` for an unknown or missing model."""
        if not model:
            return None
        key = model.lower()
        if key in self._found:
            return self._found[key]
        found = None
        for end in range(min(len(key), self._longest), 0, -1):
            found = self.prices.get(key[:end])
            if found is not None:
                break
        if len(self._found) < 1024:  # model names come from callers: remember a bounded number
            self._found[key] = found
        return found

    def cost(self, usage: Usage, model: str | None) -> float | None:
        price = self.find(model)
        return price.cost(usage) if price is not None else None
