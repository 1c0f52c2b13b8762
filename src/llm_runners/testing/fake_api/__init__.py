"""A fake model API for offline tests: Anthropic Messages, OpenAI Chat Completions, OpenAI Responses and Gemini on
one 127.0.0.1 port, for the real CLIs (Claude Code, Codex, Gemini CLI, the Chat-Completions CLIs), our HTTP
providers, the official SDKs and benchmarks.

::

    from llm_runners.testing import FakeModelAPI, FakeToolCall, Reply

    with FakeModelAPI() as api:                      # background thread, free port, stopped on exit
        env = {"ANTHROPIC_BASE_URL": api.anthropic_base_url, "ANTHROPIC_API_KEY": "dummy"}
        api.script("first answer", Reply(tool_calls=[FakeToolCall("Read", {"path": "x"})]), Reply(error="429"))
        ...                                          # run the CLI / provider
        req = api.main_requests()[0]
        assert "Be brief." in req.system_text() and req.model == "claude-opus-4-8"
        assert req.last_user_text().endswith("hi") and "Bash" in req.tool_names()

Routes (matched on the path suffix, query strings ignored):

- ``HEAD <any>``, ``GET /`` → 200, empty (Claude Code's connectivity probe).
- ``POST …/messages`` (JSON or SSE), ``POST …/messages/count_tokens`` → ``{"input_tokens": n}``.
- ``POST …/chat/completions`` (JSON or SSE; a usage-only chunk when ``stream_options.include_usage``).
- ``POST …/responses`` (JSON or SSE with the full event sequence Codex reads).
- ``POST …/models/{model}:generateContent`` | ``:streamGenerateContent`` (``?alt=sse``: SSE; otherwise one JSON
  array) | ``:countTokens`` → ``{"totalTokens": n}``.
- ``GET …/models`` (OpenAI list, with Anthropic's fields too), ``GET /v1beta/models`` (Gemini list).

Replies. Main requests take the scripted replies (:meth:`FakeModelAPI.script`) in order, then the default reply
(``"pong from fake"``, streamed as ``pong`` / `` from`` / `` fake``). Side calls never consume the script:
Gemini CLI's router (a ``generateContent`` whose JSON schema asks for ``complexity_score``) gets
``{"complexity_reasoning": …, "complexity_score": 10}``; title-generator calls get ``Fake title``; Qwen's memory
extractor gets the default reply. A :class:`Reply` sets text or chunks, tool calls, usage, finish, an error, delays
and hangs; usage defaults are deterministic (input = request bytes // 4, output = chunks + tool calls).

Errors by API key. A key ``fake-err-<kind>`` (sent as ``x-api-key``, ``x-goog-api-key``, ``Authorization:
Bearer`` or ``?key=``) makes every API request with it fail, without scripting, in the API's own error shape:

===================  ===========  ============  ===========  ==================================================
key                  Anthropic    OpenAI        Gemini       meaning
===================  ===========  ============  ===========  ==================================================
``fake-err-401``     401          401           401          bad key (``authentication_error`` /
                                                             ``invalid_api_key`` / ``UNAUTHENTICATED``)
``fake-err-403``     403          403           403          permission denied
``fake-err-404``     404          404           404          model not found
``fake-err-429``     429          429           429          rate limited, with ``retry-after: 1``
``fake-err-500``     500          500           500          server error
``fake-err-529``     529          503           503          overloaded
``fake-err-context`` 400          400           400          context length exceeded
``fake-err-hang``    —            —             —            accept, never answer, until the client disconnects
===================  ===========  ============  ===========  ==================================================

Any other ``fake-err-…`` key gets a 400 naming the valid ones. Every request is recorded
(:class:`RecordedRequest`): method, path, query, lower-cased headers, parsed body, which API and which kind of call.

Standalone: ``python -m llm_runners.testing.fake_api --port 8089`` (for benchmarks and manual tries).
"""

from .recording import RecordedRequest, RequestKind
from .script import DEFAULT_TEXT, ERROR_KINDS, ErrorKind, FakeToolCall, Reply, split_chunks
from .server import KEY_PREFIX, FakeModelAPI
from .wire import ApiName

__all__ = [
    "DEFAULT_TEXT",
    "ERROR_KINDS",
    "KEY_PREFIX",
    "ApiName",
    "ErrorKind",
    "FakeModelAPI",
    "FakeToolCall",
    "RecordedRequest",
    "Reply",
    "RequestKind",
    "split_chunks",
]
