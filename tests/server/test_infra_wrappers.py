"""ConcurrencyLimit and fan_out, over a small in-test provider whose streams wait for the test's signal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from llm_runners.errors import InvalidRequest, ModelNotFound, RateLimited, UpstreamError
from llm_runners.provider import Provider
from llm_runners.types import (
    Capabilities,
    ChatRequest,
    ChatResponse,
    Done,
    Health,
    ModelInfo,
    StreamEvent,
    TextDelta,
)
from llm_runners.wrappers.limits import ConcurrencyLimit
from llm_runners.wrappers.multiplex import ErrorInfo, fan_out

pytestmark = pytest.mark.anyio

REQ = ChatRequest(messages=[{"role": "user", "content": "hi"}])  # type: ignore[list-item]


class Gated(Provider):
    """Each stream yields one delta, then waits on ``gate`` before finishing (or failing, if ``fail``)."""

    name = "gated"
    display_name = "Gated"
    capabilities = Capabilities(temperature=True)
    default_model = "g1"

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.fail = False
        self.started = 0
        self.closed = 0
        self.completes = 0
        self.aclosed = False

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.started += 1
        try:
            yield TextDelta("a")
            await self.gate.wait()
            if self.fail:
                raise UpstreamError("boom", provider=self.name)
            yield Done(model="g1")
        finally:
            self.closed += 1

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.completes += 1
        await self.gate.wait()
        return ChatResponse(content="one-shot")

    async def health(self) -> Health:
        return Health(provider=self.name, installed=True, ready=True)

    async def aclose(self) -> None:
        self.aclosed = True


async def first_event(stream: AsyncIterator[StreamEvent]) -> StreamEvent:
    return await stream.__anext__()


async def test_delegates_identity_and_metadata() -> None:
    inner = Gated()
    limited = ConcurrencyLimit(inner, 2, 1)
    assert limited.name == "gated" and limited.display_name == "Gated"
    assert limited.capabilities.temperature is True
    assert limited.default_model == "g1"
    assert await limited.models() == [ModelInfo(id="g1", provider="gated")]
    assert (await limited.health()).ready
    async with limited:
        pass
    assert inner.aclosed


async def test_full_queue_is_rate_limited_at_once_and_slots_free_up() -> None:
    inner = Gated()
    limited = ConcurrencyLimit(inner, max_concurrency=2, max_queue=1)
    s1, s2 = limited.stream(REQ), limited.stream(REQ)
    assert await first_event(s1) == TextDelta("a")
    assert await first_event(s2) == TextDelta("a")
    assert limited.in_flight == 2 and limited.waiting == 0

    queued: list[StreamEvent] = []

    async def third() -> None:
        s3 = limited.stream(REQ)
        queued.extend([e async for e in s3])

    async with anyio.create_task_group() as tg:
        tg.start_soon(third)
        await anyio.wait_all_tasks_blocked()
        assert limited.waiting == 1 and inner.started == 2  # queued, not started

        with pytest.raises(RateLimited) as info:
            await first_event(limited.stream(REQ))
        assert info.value.status == 429
        assert info.value.retry_after is not None and info.value.retry_after >= 1.0
        assert info.value.headers()["Retry-After"] == "1"
        assert "busy" in info.value.message

        inner.gate.set()  # the two running streams and then the queued one finish
        assert [e async for e in s1] == [Done(model="g1")]
        assert [e async for e in s2] == [Done(model="g1")]
    assert queued == [TextDelta("a"), Done(model="g1")]
    assert limited.in_flight == 0 and limited.waiting == 0
    assert inner.closed == 3


async def test_a_burst_gets_every_slot_and_every_queue_place() -> None:
    """Callers arriving in the same instant: the first ``max_concurrency`` take the slots without being counted as
    waiting, the next ``max_queue`` wait, only the rest are refused (a free slot's ``acquire()`` still yields, and
    counting those callers as waiting once cost the last queue places)."""
    inner = Gated()
    limited = ConcurrencyLimit(inner, max_concurrency=4, max_queue=16)
    outcomes: list[str] = []

    async def caller() -> None:
        try:
            events = [e async for e in limited.stream(REQ)]
        except RateLimited:
            outcomes.append("refused")
        else:
            outcomes.append("served" if events[-1] == Done(model="g1") else "bad")

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        assert limited.in_flight == 4 and limited.waiting == 16
        assert outcomes.count("refused") == 20
        inner.gate.set()
    assert outcomes.count("served") == 20 and len(outcomes) == 40


async def test_slot_released_on_error() -> None:
    inner = Gated()
    inner.fail = True
    inner.gate.set()
    limited = ConcurrencyLimit(inner, 1, 0)
    with pytest.raises(UpstreamError):
        async for _ in limited.stream(REQ):
            pass
    assert limited.in_flight == 0
    inner.fail = False
    assert [e async for e in limited.stream(REQ)][-1] == Done(model="g1")


async def test_slot_released_on_early_close() -> None:
    inner = Gated()
    limited = ConcurrencyLimit(inner, 1, 0)
    stream = limited.stream(REQ)
    await first_event(stream)
    assert limited.in_flight == 1
    with pytest.raises(RateLimited):  # max_queue=0: nobody may wait
        await first_event(limited.stream(REQ))
    await stream.aclose()  # type: ignore[attr-defined]
    assert limited.in_flight == 0
    assert inner.closed == 1  # the inner stream was closed too


async def test_slot_released_on_cancellation_while_streaming_and_while_queued() -> None:
    inner = Gated()
    limited = ConcurrencyLimit(inner, 1, 5)

    async def consume() -> None:
        async for _ in limited.stream(REQ):
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        tg.start_soon(consume)
        await anyio.wait_all_tasks_blocked()
        assert limited.in_flight == 1 and limited.waiting == 1
        tg.cancel_scope.cancel()
    assert limited.in_flight == 0 and limited.waiting == 0
    assert inner.closed == 1  # only one had started


async def test_fifo_order() -> None:
    inner = Gated()
    inner.gate.set()
    limited = ConcurrencyLimit(inner, 1, 10)
    order: list[int] = []
    holder = limited.stream(REQ)
    await first_event(holder)

    async def one(i: int) -> None:
        async for _ in limited.stream(REQ):
            pass
        order.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(one, i)
            await anyio.wait_all_tasks_blocked()  # each is queued before the next arrives
        assert limited.waiting == 5
        await holder.aclose()  # type: ignore[attr-defined]
    assert order == [0, 1, 2, 3, 4]


async def test_complete_uses_inner_complete_under_a_slot() -> None:
    inner = Gated()
    limited = ConcurrencyLimit(inner, 1, 0)
    async with anyio.create_task_group() as tg:
        results: list[ChatResponse] = []

        async def call() -> None:
            results.append(await limited.complete(REQ))

        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert limited.in_flight == 1 and inner.completes == 1
        with pytest.raises(RateLimited):
            await limited.complete(REQ)
        inner.gate.set()
    assert results == [ChatResponse(content="one-shot")]
    assert limited.in_flight == 0


async def test_retry_after_grows_with_recent_durations() -> None:
    limited = ConcurrencyLimit(Gated(), 2, 4)
    assert limited.retry_after() == 1.0
    limited._durations.extend([10.0, 20.0])
    limited._waiting = 3
    assert limited.retry_after() == pytest.approx((3 + 1) / 2 * 15.0)


def test_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        ConcurrencyLimit(Gated(), 0, 1)
    with pytest.raises(ValueError, match="max_queue"):
        ConcurrencyLimit(Gated(), 1, -1)


# ------------------------------------------------------------------------------------------------ fan_out


async def test_fan_out_runs_concurrently_and_keeps_order() -> None:
    both_started = anyio.Event()
    running = 0

    async def complete(model: str) -> ChatResponse:
        nonlocal running
        running += 1
        if running == 3:
            both_started.set()
        await both_started.wait()  # deadlocks unless all three run at once
        if model == "bad":
            raise ModelNotFound("no model 'bad'")
        if model == "bug":
            raise KeyError("oops")
        return ChatResponse(content=f"from {model}", model=model)

    with anyio.fail_after(5):
        results = await fan_out(complete, ["a", "bad", "bug"], per_model_timeout=None)
    assert [r.model for r in results] == ["a", "bad", "bug"]
    assert results[0].ok and results[0].response is not None and results[0].response.content == "from a"
    assert results[1].error_info == ErrorInfo("model_not_found", "no model 'bad'", 404, "invalid_request_error")
    assert results[1].response is None
    info = results[2].error_info
    assert info is not None and info.kind == "internal" and info.status == 500
    assert results[2].error is not None and "KeyError" in (results[2].error.detail or "")
    assert all(r.elapsed >= 0 for r in results)


async def test_fan_out_timeout_is_per_model() -> None:
    async def complete(model: str) -> ChatResponse:
        if model == "slow":
            await anyio.sleep(30)
        return ChatResponse(content=model)

    with anyio.fail_after(5):
        results = await fan_out(complete, ["slow", "fast"], per_model_timeout=0.2)
    assert results[0].error_info is not None and results[0].error_info.kind == "timeout"
    assert results[0].error_info.status == 504 and "0.2 s" in results[0].error_info.message
    assert results[1].response == ChatResponse(content="fast")


async def test_fan_out_needs_models() -> None:
    async def complete(model: str) -> ChatResponse:
        raise InvalidRequest("unused")

    with pytest.raises(ValueError, match="at least one model"):
        await fan_out(complete, [], None)
