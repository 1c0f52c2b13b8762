"""The HTTP server: OpenAI Chat Completions, OpenAI Responses and Anthropic Messages over one router.

``create_app(router, settings)`` builds the Starlette app; run it with uvicorn.
"""

from .app import create_app, serve
from .openai_responses import ResponseStore

__all__ = ["ResponseStore", "create_app", "serve"]
