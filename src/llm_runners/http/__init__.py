"""HTTP API providers: OpenAI-compatible Chat Completions and Anthropic Messages, on httpx2."""

from .anthropic import AnthropicProvider
from .openai_compat import OpenAICompatProvider

__all__ = ["AnthropicProvider", "OpenAICompatProvider"]
