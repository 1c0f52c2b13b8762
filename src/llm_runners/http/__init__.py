"""HTTP API providers: OpenAI-compatible Chat Completions, Anthropic Messages and the Gemini API, on httpx2."""

from .anthropic import AnthropicProvider
from .gemini import GeminiProvider
from .openai_compat import OpenAICompatProvider

__all__ = ["AnthropicProvider", "GeminiProvider", "OpenAICompatProvider"]
