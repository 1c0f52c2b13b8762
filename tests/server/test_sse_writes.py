"""StreamingCall's writes, driven directly with a recording ASGI ``send``: events that are ready at once share one
write, nothing is held back while the provider waits, and a write that fails while the provider is half-way
through its next step leaves the provider's stream closed and counted as cancelled. Plus: the renderers' fast
paths for text deltas produce the same bytes as the generic encoders."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from llm_runners.errors import LLMError
from llm_runners.server.anthropic_messages import MessageStreamRenderer
from llm_runners.server.openai_chat import ChunkRenderer
from llm_runners.server.sse import StreamingCall
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ChatRequest, Message, ReasoningDelta, TextDelta

pytestmark = pytest.mark.anyio

REQUEST = ChatRequest(messages=[Message(role="user", content="x")])


async def _never_disconnects() -> dict[str, Any]:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


class Recorder:
    """An ASGI ``send`` that records messages; it can fail or block on the n-th body message."""

    def __init__(self, fail_at: int | None = None, block_at: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_at = fail_at
        self.block_at = block_at

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            n = len(self.bodies)
            if n == self.fail_at:
                raise OSError("client went away")
            if n == self.block_at:
                self.block_at = None
                await anyio.sleep_forever()  # a paused transport that never drains
        self.messages.append(message)


async def _run(provider: ScriptedProvider, send: Recorder, deadline: float = 10.0) -> None:
    call = StreamingCall(provider, REQUEST, ChunkRenderer("m", False), "openai", timeout=deadline, heartbeat=None)
    with anyio.fail_after(5):
        await call({"type": "http"}, _never_disconnects, send)


async def test_events_ready_at_once_go_out_in_one_write() -> None:
    send = Recorder()
    await _run(ScriptedProvider(["one two three four five"]), send)
    assert len(send.bodies) == 1, send.bodies
    body = send.bodies[0].decode()
    assert [w in body for w in ("one ", "two ", "five", '"finish_reason":"stop"', "[DONE]")] == [True] * 5
    assert send.messages[-1]["more_body"] is False


async def test_nothing_is_held_back_while_the_provider_waits() -> None:
    send = Recorder()
    await _run(ScriptedProvider([Reply(text="a b c", chunk_delay=0.05)]), send)
    # the provider waits before "b " and before "c": each wait flushes what was rendered; the rest is one write
    assert [b'"content":"a "' in send.bodies[0], len(send.bodies)] == [True, 3]
    assert b'"content":"b "' in send.bodies[1] and b'"content":"c"' in send.bodies[2]
    assert b"[DONE]" in send.bodies[2] and send.messages[-1]["more_body"] is False


async def test_a_failed_write_while_the_provider_waits_closes_its_stream() -> None:
    p = ScriptedProvider([Reply(text="a b", hang=True)])
    send = Recorder(fail_at=0)  # the flush of "a b" fails while the provider is suspended in its hang
    await _run(p, send)
    assert (p.open_streams, p.cancelled) == (0, 1)
    assert send.bodies == []


async def test_a_deadline_during_a_blocked_write_closes_the_stream_and_reports_the_timeout() -> None:
    p = ScriptedProvider([Reply(text="a b", hang=True)])
    send = Recorder(block_at=0)
    await _run(p, send, deadline=0.3)
    assert (p.open_streams, p.cancelled) == (0, 1)
    assert len(send.bodies) == 1 and send.messages[-1]["more_body"] is False
    final = send.bodies[0]
    assert b'"content":"a "' in final and b'"content":"b"' in final  # what could not be written is not lost
    assert b'"code":"timeout"' in final


@pytest.mark.parametrize("text", ["hi ", 'é ü 中文 \u2028 "q" \\ \n\t \x00 \x1f', "🙂", " "])
def test_text_delta_fast_paths_match_the_generic_encoding(text: str) -> None:
    chunks = ChunkRenderer("m", False)
    assert chunks.event(TextDelta(text)) == chunks._delta({"content": text})
    assert chunks.event(ReasoningDelta(text)) == chunks._delta({"reasoning_content": text})
    messages = MessageStreamRenderer("m", 1, [])
    messages.event(TextDelta("opens block 0"))
    messages.index = 7
    assert messages.event(TextDelta(text)) == messages._delta({"type": "text_delta", "text": text})


def test_recorder_is_not_an_llm_error_source() -> None:
    # guard for the tests above: the recorder's OSError is not an LLMError, so it is treated as a disconnect
    assert not issubclass(OSError, LLMError)
