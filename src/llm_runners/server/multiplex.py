"""Multiplex: ``"model"`` given as a JSON array asks every listed model the same question at once.

Works on all three front doors (``/v1/chat/completions``, ``/v1/messages``, ``/v1/responses``); everything else
in the body is parsed exactly as for one model. Rules:

- 1 to :data:`MAX_MODELS` entries, each a string resolved by the router like a single ``model`` (aliases,
  ``provider:model``, bare names); duplicates are allowed and are separate calls.
- All entries run concurrently, each bounded by the server's ``request_timeout``. One entry failing (an unknown
  model, a provider error, a timeout) never cancels or fails the others. A client disconnect cancels them all.
- ``stream: true`` is refused with a 400: interleaving several streams into one wire format's SSE would give
  every SDK a stream it cannot parse.
- Conversation keys: the first entry that goes to a provider keeps the request's conversation key (so that
  provider's CLI session carries on); a later entry to the *same* provider gets ``<key>#2``, ``<key>#3``... so two
  concurrent calls never resume one CLI session at once.

The answer is ``200`` with one JSON object, whatever each entry's outcome (errors of the request itself, such as a
malformed body, are still a plain 400 in the front door's envelope)::

    {
      "object": "multiplex",
      "elapsed_ms": 812.4,                      # wall time of the whole fan-out
      "results": [                              # one per entry, in the order given
        {
          "index": 0,
          "model": "claude_code:sonnet",        # the entry as sent
          "provider": "claude_code",            # null when the entry did not resolve
          "resolved": "claude_code:sonnet",     # provider:model actually asked; null when unresolved
          "status": 200,                        # the HTTP status a single-model request would have had
          "elapsed_ms": 790.1,                  # this entry's own time
          "warnings": [],                       # what a single request reports in x-llm-runners-warnings
          "body": {"object": "chat.completion", ...}
        },
        {"index": 1, "model": "nope:x", "provider": null, "resolved": null, "status": 404, "elapsed_ms": 0.0,
         "warnings": [], "body": {"error": {"message": "unknown provider 'nope' ...", "type": ..., ...}}}
      ]
    }

``body`` is byte for byte what that front door answers for a single model with that ``status``: a
``chat.completion``, an Anthropic ``message`` or a ``response`` object when ``status`` is 200, else that format's
error envelope. So a client reads a slot with the same code (or SDK model class) it already has, e.g.
``openai.types.chat.ChatCompletion.model_validate(slot["body"])``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

from ..errors import InvalidRequest, LLMError
from ..router import Route, Router
from ..types import ChatRequest, ChatResponse
from ..wrappers.multiplex import MultiplexResult, fan_out_calls
from .errors import Flavor, error_body, to_llm_error
from .sse import Render, Watched, dumps, send_json

__all__ = ["MAX_MODELS", "MultiplexCall", "Prepare", "multiplex_models"]

#: the most entries one request may fan out to (each may start a CLI process)
MAX_MODELS = 16

#: builds one entry's renderer from its own request copy, the entry as sent and its route
Prepare = Callable[[ChatRequest, str, Route], Render]


def multiplex_models(body: dict[str, Any]) -> list[str] | None:
    """The entries when ``body["model"]`` is an array (validated), else ``None`` (an ordinary request)."""
    value = body.get("model")
    if not isinstance(value, list):
        return None
    if not value:
        raise InvalidRequest("model: an array of models must name at least one model", param="model")
    if len(value) > MAX_MODELS:
        raise InvalidRequest(
            f"model: at most {MAX_MODELS} models per multiplex request, got {len(value)}", param="model"
        )
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            raise InvalidRequest(f"model[{i}]: expected a string (a model name)", param=f"model[{i}]")
    if body.get("stream") is True:
        raise InvalidRequest(
            "stream: a multiplex request (model given as an array) cannot be streamed; "
            "send stream: false, or one streamed request per model",
            param="stream",
        )
    return list(value)


class _Slot:
    """One entry: its route (or why it has none), its own request copy and renderer."""

    __slots__ = ("error", "render", "request", "route")

    def __init__(self) -> None:
        self.route: Route | None = None
        self.error: LLMError | None = None
        self.request: ChatRequest | None = None
        self.render: Render | None = None

    def call(self) -> Callable[[], Awaitable[ChatResponse]]:
        async def run() -> ChatResponse:
            if self.error is not None:
                raise self.error
            assert self.route is not None and self.request is not None
            return await self.route.provider.complete(self.request)

        return run


class MultiplexCall(Watched):
    """ASGI app: fan ``request`` out to ``models`` and answer the multiplex object (see the module docstring).

    ``prepare`` is the front door's: it turns an entry into the renderer of its single-model JSON body;
    ``warnings`` are the front door's parse warnings, reported in every slot.
    """

    def __init__(
        self,
        router: Router,
        request: ChatRequest,
        models: list[str],
        prepare: Prepare,
        flavor: Flavor,
        *,
        warnings: list[str] | None = None,
        timeout: float | None = 600.0,
    ) -> None:
        super().__init__()
        self.router = router
        self.request = request
        self.models = models
        self.prepare = prepare
        self.flavor = flavor
        self.warnings = list(warnings or ())
        self.timeout = timeout

    async def _slots(self) -> list[_Slot]:
        """Resolve every entry (each distinct name once) and give each its request copy and renderer."""
        resolved: dict[str, Route | LLMError] = {}
        per_provider: dict[str, int] = {}
        slots = []
        for asked in self.models:
            slot = _Slot()
            slots.append(slot)
            if asked not in resolved:
                try:
                    resolved[asked] = await self.router.resolve(asked)
                except Exception as exc:
                    resolved[asked] = to_llm_error(exc)
            outcome = resolved[asked]
            if isinstance(outcome, LLMError):
                slot.error = outcome
                continue
            seen = per_provider[outcome.name] = per_provider.get(outcome.name, 0) + 1
            conversation = self.request.conversation
            if conversation and seen > 1:
                conversation = f"{conversation}#{seen}"
            slot.route = outcome
            slot.request = self.request.model_copy(update={"model": outcome.model, "conversation": conversation})
            try:
                slot.render = self.prepare(slot.request, asked, outcome)
            except Exception as exc:
                slot.error = to_llm_error(exc)
        return slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._registered(scope):
            await self._call(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        results: list[MultiplexResult] = []
        slots: list[_Slot] = []
        with self._ends(anyio.CancelScope()) as cancel:
            watcher = self._start_watcher(receive, cancel, None, b"", None)
            try:
                slots = await self._slots()
                calls = [(asked, slot.call()) for asked, slot in zip(self.models, slots, strict=True)]
                results = await fan_out_calls(calls, self.timeout)
            finally:
                watcher.cancel()
        if self.disconnected:
            return
        if self.ended_with is not None and cancel.cancelled_caught:  # the server is stopping: one error answer
            with contextlib.suppress(OSError):
                error = self.ended_with
                await send_json(send, error.status, error_body(error, self.flavor), error.headers())
            return
        if cancel.cancelled_caught:
            return
        elapsed = (time.monotonic() - started) * 1000
        parts = [self._entry(i, slot, result) for i, (slot, result) in enumerate(zip(slots, results, strict=True))]
        head = dumps({"object": "multiplex", "elapsed_ms": round(elapsed, 3)})[:-1].encode()
        body = head + b',"results":[' + b",".join(parts) + b"]}"
        try:
            await send_json(send, 200, body, {})
        except OSError:
            self.disconnected = True

    def _entry(self, index: int, slot: _Slot, result: MultiplexResult) -> bytes:
        """One slot's JSON: the metadata, then the single-model body spliced in as already-encoded bytes."""
        error = result.error
        warnings = list(self.warnings)
        payload = b""
        if error is None and result.response is not None and slot.render is not None:
            warnings += result.response.warnings
            try:
                payload, _ = slot.render(result.response)
            except Exception as exc:
                error = to_llm_error(exc)
        elif error is None:
            error = to_llm_error(RuntimeError("multiplex entry finished without an answer"))
        if error is not None:
            payload = error_body(error, self.flavor)
        route = slot.route
        meta = {
            "index": index,
            "model": result.model,
            "provider": route.name if route is not None else None,
            "resolved": route.qualified if route is not None else None,
            "status": 200 if error is None else error.status,
            "elapsed_ms": round(result.elapsed * 1000, 3),
            "warnings": warnings,
        }
        return dumps(meta)[:-1].encode() + b',"body":' + payload + b"}"
