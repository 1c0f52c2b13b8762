"""A stand-in ACP agent written with the official SDK's agent side: ``python -m llm_runners.testing.acp_agent``.

It answers every prompt with ``<model>|turn <n>|<prompt text>`` streamed word by word (so a test sees which
session, which model and which text reached it), keeps a history per session, and obeys markers in the prompt:

- ``[slow]`` 0.3 s between chunks; ``[hang]`` no answer until cancelled (then ``stopReason: cancelled``);
  ``[stubborn]`` hangs and ignores ``session/cancel``; ``[crash]`` exits mid-turn after one chunk;
- ``[think]`` a thought chunk first; ``[tool]`` asks permission for a shell command and answers with the option
  the client chose (``permission: <optionId>``) — it never runs anything — then reports the call ``completed``
  (allowed) or ``failed`` (rejected) in a ``tool_call_update``;
- ``[error]`` a JSON-RPC error with HTTP status 401 in ``code``; ``[texterror]`` Copilot's way: an
  ``Error: Authentication failed … (HTTP 401)`` chunk and ``end_turn`` without usage;
- ``[metausage]`` usage in an empty chunk's ``_meta`` (Qwen's way) instead of the result;
- ``[retrylog]`` a retry loop that only its log shows, until cancelled: every 0.2 s an OpenCode-style
  ``level=ERROR message="stream error" session.id=<session> …`` line on stderr, or with ``$ACP_STANDIN_LOGDIR``
  set a Qwen-style ``[RETRY] Attempt n failed with status 500 …`` line in ``$ACP_STANDIN_LOGDIR/<session>.txt``.

It advertises ``session/close`` (and forgets the session) unless ``$ACP_STANDIN_NO_CLOSE`` is set. Every request
it receives is appended to ``$ACP_STANDIN_LOG`` (JSON lines) when that is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import uuid
from typing import Any

import acp
from acp.schema import (
    AgentCapabilities,
    AgentMessageChunk,
    AgentThoughtChunk,
    CloseSessionResponse,
    Implementation,
    InitializeResponse,
    NewSessionResponse,
    PermissionOption,
    PromptCapabilities,
    PromptResponse,
    SessionCapabilities,
    SessionCloseCapabilities,
    SessionConfigOptionSelect,
    SessionConfigSelectOption,
    SetSessionConfigOptionResponse,
    TextContentBlock,
    ToolCallProgress,
    ToolCallStart,
    ToolCallUpdate,
    Usage,
)

MODELS = ("stand-in/model-a", "stand-in/model-b")


def _log(kind: str, **data: Any) -> None:
    path = os.environ.get("ACP_STANDIN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "pid": os.getpid(), **data}, default=str) + "\n")


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class StandInAgent:
    def __init__(self) -> None:
        self.conn: Any = None
        self.turns: dict[str, int] = {}
        self.model: dict[str, str] = {}
        self.cancelled: dict[str, asyncio.Event] = {}

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    def _model_option(self, session_id: str) -> SessionConfigOptionSelect:
        return SessionConfigOptionSelect(
            id="model",
            name="Model",
            category="model",
            type="select",
            current_value=self.model[session_id],
            options=[SessionConfigSelectOption(value=m, name=m.split("/")[-1]) for m in MODELS],
        )

    async def initialize(self, protocol_version: int, **kwargs: Any) -> InitializeResponse:
        _log("initialize", capabilities=kwargs.get("client_capabilities"))
        return InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(
                prompt_capabilities=PromptCapabilities(image=True),
                session_capabilities=SessionCapabilities(
                    close=None if os.environ.get("ACP_STANDIN_NO_CLOSE") else SessionCloseCapabilities()
                ),
            ),
            agent_info=Implementation(name="stand-in", version="1.0"),
        )

    async def new_session(self, cwd: str, mcp_servers: Any = None, **kwargs: Any) -> NewSessionResponse:
        session_id = f"sess-{uuid.uuid4().hex[:8]}"
        self.turns[session_id] = 0
        self.model[session_id] = MODELS[0]
        _log("session/new", session=session_id, cwd=cwd, mcp_servers=mcp_servers)
        return NewSessionResponse(session_id=session_id, config_options=[self._model_option(session_id)])

    async def set_config_option(
        self, config_id: str, session_id: str, value: str | bool, **kwargs: Any
    ) -> SetSessionConfigOptionResponse:
        _log("session/set_config_option", session=session_id, config=config_id, value=value)
        if value not in MODELS:
            raise acp.RequestError.invalid_params({"details": f"no model {value!r}"})
        self.model[session_id] = str(value)
        return SetSessionConfigOptionResponse(config_options=[self._model_option(session_id)])

    async def close_session(self, session_id: str, **kwargs: Any) -> CloseSessionResponse:
        _log("session/close", session=session_id)
        if self.turns.pop(session_id, None) is None:
            raise acp.RequestError.invalid_params({"details": f"no session {session_id!r}"})
        self.model.pop(session_id, None)
        return CloseSessionResponse()

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        _log("session/cancel", session=session_id)
        event = self.cancelled.get(session_id)
        if event is not None:
            event.set()

    async def _say(self, session_id: str, text: str, meta: dict[str, Any] | None = None) -> None:
        chunk = AgentMessageChunk(
            session_update="agent_message_chunk", content=TextContentBlock(type="text", text=text), field_meta=meta
        )
        await self.conn.session_update(session_id=session_id, update=chunk)

    async def _retry_loop(self, session_id: str, cancelled: asyncio.Event) -> PromptResponse:
        logdir = os.environ.get("ACP_STANDIN_LOGDIR")
        attempt = 0
        while not cancelled.is_set():
            attempt += 1
            if logdir:
                line = f"[RETRY] Attempt {attempt} failed with status 500. Retrying with backoff... Error: 500 stand-in"
                _append(os.path.join(logdir, f"{session_id}.txt"), line)
            else:
                print(
                    f'level=ERROR message="stream error" session.id={session_id} '
                    'error.error="AI_APICallError: The server had an error (stand-in 500)"',
                    file=sys.stderr,
                    flush=True,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancelled.wait(), 0.2)
        return PromptResponse(stop_reason="cancelled")

    async def prompt(self, prompt: list[Any], session_id: str, **kwargs: Any) -> PromptResponse:
        text = "\n".join(getattr(b, "text", "") for b in prompt if getattr(b, "type", None) == "text")
        images = [b.mime_type for b in prompt if getattr(b, "type", None) == "image"]
        self.turns[session_id] += 1
        turn = self.turns[session_id]
        _log("session/prompt", session=session_id, text=text, images=images, turn=turn)
        cancelled = self.cancelled.setdefault(session_id, asyncio.Event())
        cancelled.clear()
        if "[error]" in text:
            raise acp.RequestError(401, json.dumps({"error": {"code": 401, "message": "Incorrect API key provided"}}))
        if "[texterror]" in text:
            await self._say(session_id, "Info: Request failed due to a transient API error. Retrying...")
            await self._say(session_id, "Error: Authentication failed with provider at http://x/v1 (HTTP 401).")
            return PromptResponse(stop_reason="end_turn")
        if "[retrylog]" in text:
            return await self._retry_loop(session_id, cancelled)
        if "[think]" in text:
            thought = AgentThoughtChunk(
                session_update="agent_thought_chunk", content=TextContentBlock(type="text", text="pondering")
            )
            await self.conn.session_update(session_id=session_id, update=thought)
        if "[tool]" in text:
            call = ToolCallStart(session_update="tool_call", tool_call_id="t1", title="rm -rf /tmp/x", kind="execute")
            await self.conn.session_update(session_id=session_id, update=call)
            options = [
                PermissionOption(option_id="yes", name="Allow", kind="allow_once"),
                PermissionOption(option_id="no", name="Reject", kind="reject_once"),
            ]
            answer = await self.conn.request_permission(
                session_id=session_id,
                tool_call=ToolCallUpdate(tool_call_id="t1", title="rm -rf /tmp/x"),
                options=options,
            )
            chosen = getattr(answer.outcome, "option_id", answer.outcome.outcome)
            _log("permission", session=session_id, chosen=chosen)
            await self._say(session_id, f"permission: {chosen}")
            status = "completed" if chosen == "yes" else "failed"
            done = ToolCallProgress(session_update="tool_call_update", tool_call_id="t1", status=status)
            await self.conn.session_update(session_id=session_id, update=done)
            return PromptResponse(stop_reason="end_turn", usage=Usage(input_tokens=1, output_tokens=1, total_tokens=2))
        words = re.findall(r"\s*\S+", f"{self.model[session_id]}|turn {turn}|{text}")
        for i, word in enumerate(words):
            if i and "[slow]" in text:
                await asyncio.sleep(0.3)
            await self._say(session_id, word)
            if "[crash]" in text:
                os._exit(3)
            if i == 0 and ("[hang]" in text or "[stubborn]" in text):
                if "[stubborn]" in text:
                    await asyncio.sleep(3600)
                await cancelled.wait()
                return PromptResponse(stop_reason="cancelled")
        usage = Usage(input_tokens=len(text), output_tokens=len(words), total_tokens=len(text) + len(words))
        if "[metausage]" in text:
            await self._say(session_id, "", meta={"usage": usage.model_dump(by_alias=True, exclude_none=True)})
            return PromptResponse(stop_reason="end_turn")
        return PromptResponse(stop_reason="end_turn", usage=usage)


async def main() -> None:
    # session/close is in the SDK's unstable part
    await acp.run_agent(StandInAgent(), use_unstable_protocol=True)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
