"""The Responses store on a shared state: what one replica stores another reads back intact (images, tool
calls), and flush() waits for the shared write."""

from __future__ import annotations

import asyncio

import pytest

from llm_runners.server.openai_responses import ResponseStore, StoredResponse
from llm_runners.state import MemoryState
from llm_runners.types import ImagePart, Message, TextPart, ToolCall

pytestmark = pytest.mark.anyio


async def test_a_stored_response_reads_back_on_another_replica() -> None:
    shared = MemoryState()
    one, other = ResponseStore(shared=shared), ResponseStore(shared=shared)
    image = ImagePart(media_type="image/png", data=bytes(range(256)))
    messages = [
        Message(role="user", content=[TextPart(text="look"), image]),
        Message(role="assistant", content="calling", tool_calls=[ToolCall(id="c1", name="f", arguments='{"a":1}')]),
        Message(role="tool", content="42", tool_call_id="c1"),
    ]
    one.put("resp_1", StoredResponse(messages, "conv-1", {"id": "resp_1", "output": []}))
    await one.flush("resp_1")
    got = await other.get("resp_1")
    assert got is not None
    assert got.messages == messages and got.conversation == "conv-1" and got.body == {"id": "resp_1", "output": []}
    assert await other.get("resp_unknown") is None
    assert await shared.ttl("responses:resp_1") is not None


async def test_without_a_shared_state_the_store_is_this_replicas_lru() -> None:
    store = ResponseStore(max_items=2)
    for i in range(3):
        store.put(f"r{i}", StoredResponse([], "c", {}))
    await store.flush("r2")
    assert await store.get("r0") is None and await store.get("r2") is not None and len(store) == 2


async def test_an_unreadable_shared_copy_is_missing_not_an_error() -> None:
    shared = MemoryState()
    await shared.set("responses:resp_bad", "{not json")
    assert await ResponseStore(shared=shared).get("resp_bad") is None


async def test_input_items_read_back_and_a_delete_reaches_every_replica() -> None:
    shared = MemoryState()
    one, other = ResponseStore(shared=shared), ResponseStore(shared=shared)
    items = [{"type": "message", "id": "msg_1", "role": "user", "content": [], "status": "completed"}]
    one.put("resp_1", StoredResponse([], "c", {}, items))
    # deleted at once, while its shared write may still be under way: the write cannot bring it back
    assert await one.delete("resp_1")
    await asyncio.sleep(0.01)  # any write still pending has run
    assert await one.get("resp_1") is None and await other.get("resp_1") is None
    one.put("resp_2", StoredResponse([], "c", {}, items))
    await one.flush("resp_2")
    got = await other.get("resp_2")  # now in other's LRU too
    assert got is not None and got.input_items == items
    assert await one.delete("resp_2")
    assert await other.get("resp_2") is None  # its LRU copy is dropped on the deleted mark
    assert not await other.delete("resp_2") and not await one.delete("resp_2") and not await one.delete("resp_x")
    local = ResponseStore()
    local.put("r", StoredResponse([], "c", {}))
    assert await local.delete("r") and await local.get("r") is None and not await local.delete("r")
