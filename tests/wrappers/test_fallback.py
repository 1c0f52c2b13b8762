"""The fallback chain and its circuit breaker, over scripted providers (no subprocess, no network)."""

from __future__ import annotations

import anyio
import pytest

from llm_runners.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    RateLimited,
    UpstreamError,
)
from llm_runners.provider import collect
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ChatRequest, Done, TextDelta
from llm_runners.wrappers.fallback import CircuitBreaker, Fallback
from llm_runners.wrappers.meta import FALLBACK_ANSWERED_HEADER, FALLBACK_FAILED_HEADER, collect_headers

pytestmark = pytest.mark.anyio

REQ = ChatRequest(messages=[{"role": "user", "content": "hi"}])  # type: ignore[list-item]


class Sleeps:
    """Records the waits the chain asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def chain(
    *providers: ScriptedProvider, sleeps: Sleeps | None = None, breaker: CircuitBreaker | None = None, **kw: object
) -> Fallback:
    return Fallback(
        "fast",
        [f"{p.name}:m-{p.name}" for p in providers],
        providers={p.name: p for p in providers},
        sleep=sleeps or Sleeps(),
        jitter=lambda: 1.0,
        breaker=breaker,
        **kw,  # type: ignore[arg-type]
    )


async def test_first_entry_answers_and_the_model_is_the_entrys() -> None:
    a, b = ScriptedProvider(["from a"], name="a"), ScriptedProvider(["from b"], name="b")
    out = await chain(a, b).complete(REQ)
    assert out.content == "from a"
    assert a.last_request.model == "m-a" and not b.requests
    assert out.fallback is not None and out.fallback.answered == "a:m-a" and out.fallback.failed == ()


async def test_transient_errors_retried_with_backoff_then_next_entry() -> None:
    boom = Reply(error=UpstreamError("500 from upstream"))
    a = ScriptedProvider([boom, boom, boom], name="a")
    b = ScriptedProvider(["from b"], name="b")
    sleeps = Sleeps()
    fb = chain(a, b, sleeps=sleeps, retries=2, backoff=0.5, max_backoff=0.75)
    with collect_headers() as headers:
        out = await fb.complete(REQ)
    assert out.content == "from b"
    assert len(a.requests) == 3  # 1 + 2 retries
    assert sleeps.waits == [0.5, 0.75]  # doubled, capped at max_backoff (jitter pinned to its maximum)
    assert out.fallback is not None
    assert out.fallback.answered == "b:m-b"
    [failed] = out.fallback.failed
    assert (failed.entry, failed.kind, failed.tries) == ("a:m-a", "upstream_error", 3)
    assert headers == {FALLBACK_ANSWERED_HEADER: "b:m-b", FALLBACK_FAILED_HEADER: "a:m-a=upstream_error"}


async def test_jitter_is_applied_to_the_backoff() -> None:
    a = ScriptedProvider([Reply(error=UpstreamError("x")), "ok"], name="a")
    sleeps = Sleeps()
    fb = Fallback("c", ["a"], providers={"a": a}, sleep=sleeps, jitter=lambda: 0.25, backoff=2.0)
    assert (await fb.complete(REQ)).content == "ok"
    assert sleeps.waits == [0.5]


async def test_retry_after_is_honoured_and_a_long_one_moves_on() -> None:
    a = ScriptedProvider([Reply(error=RateLimited("slow down", retry_after=3.0)), "a ok"], name="a")
    sleeps = Sleeps()
    out = await chain(a, ScriptedProvider(["b"], name="b"), sleeps=sleeps).complete(REQ)
    assert out.content == "a ok" and sleeps.waits == [3.0]

    a = ScriptedProvider([Reply(error=RateLimited("come back tomorrow", retry_after=3600.0))], name="a")
    b = ScriptedProvider(["from b"], name="b")
    sleeps = Sleeps()
    out = await chain(a, b, sleeps=sleeps, max_retry_wait=30.0).complete(REQ)
    assert out.content == "from b" and sleeps.waits == [] and len(a.requests) == 1


async def test_permanent_errors_move_on_without_retry() -> None:
    for error in (AuthenticationError("not logged in"), ContextLengthExceeded("too long")):
        a = ScriptedProvider([Reply(error=error)], name="a")
        b = ScriptedProvider(["from b"], name="b")
        sleeps = Sleeps()
        out = await chain(a, b, sleeps=sleeps).complete(REQ)
        assert out.content == "from b" and len(a.requests) == 1 and sleeps.waits == []


async def test_invalid_request_stops_the_chain() -> None:
    a = ScriptedProvider([Reply(error=InvalidRequest("bad tools", param="tools"))], name="a")
    b = ScriptedProvider(["from b"], name="b")
    with pytest.raises(InvalidRequest, match="bad tools"):
        await chain(a, b).complete(REQ)
    assert not b.requests


async def test_all_failing_raises_the_last_error_naming_every_entry() -> None:
    a = ScriptedProvider([Reply(error=AuthenticationError("a key refused"))], name="a")
    b = ScriptedProvider([Reply(error=Overloaded("b overloaded", retry_after=1.0))], name="b")
    with pytest.raises(Overloaded) as info:
        await chain(a, b, retries=0).complete(REQ)
    assert "a:m-a: authentication_error (a key refused)" in info.value.message
    assert "b:m-b: overloaded (b overloaded)" in info.value.message
    assert info.value.status == 503 and info.value.provider == "fast"


async def test_never_retried_after_the_first_event() -> None:
    a = ScriptedProvider([Reply(text="one two three", error=UpstreamError("died mid-stream"), error_after=1)], name="a")
    b = ScriptedProvider(["from b"], name="b")
    got: list[str] = []
    with pytest.raises(UpstreamError, match="died mid-stream"):
        async for event in chain(a, b).stream(REQ):
            if isinstance(event, TextDelta):
                got.append(event.text)
    assert got == ["one "] and not b.requests and len(a.requests) == 1


async def test_streamed_answer_from_second_entry_carries_the_report() -> None:
    a = ScriptedProvider([Reply(error=UpstreamError("500"))], name="a")
    b = ScriptedProvider([Reply(text="streamed from b", chunk_delay=0.001)], name="b")
    events = [e async for e in chain(a, b, retries=0).stream(REQ)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "streamed from b"
    done = events[-1]
    assert isinstance(done, Done) and done.fallback is not None and done.fallback.answered == "b:m-b"


async def test_closing_early_closes_the_answering_stream() -> None:
    b = ScriptedProvider([Reply(text="a b c d", hang=True)], name="b")
    a = ScriptedProvider([Reply(error=UpstreamError("500"))], name="a")
    stream = chain(a, b, retries=0).stream(REQ)
    assert isinstance(await stream.__anext__(), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    assert b.open_streams == 0 and b.cancelled == 1 and a.open_streams == 0


async def test_slow_entry_is_cancelled_with_the_caller() -> None:
    a = ScriptedProvider([Reply(text="late", delay=30)], name="a")
    with anyio.move_on_after(0.2):
        await chain(a).complete(REQ)
    assert a.open_streams == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_circuit_opens_after_failures_then_half_open_probe_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown=10.0, clock=clock)
    boom = Reply(error=UpstreamError("down"))
    a = ScriptedProvider([boom, boom, boom, "a is back"], name="a")
    b = ScriptedProvider(["b"], name="b")
    fb = chain(a, b, breaker=breaker, retries=0)
    for _ in range(2):
        assert (await fb.complete(REQ)).content == "b"
    assert await breaker.state("a:m-a") == "open" and len(a.requests) == 2
    out = await fb.complete(REQ)  # skipped while open
    assert len(a.requests) == 2 and out.fallback is not None
    assert out.fallback.failed[0].kind == "circuit_open" and out.fallback.failed[0].tries == 0
    clock.now += 11
    assert await breaker.state("a:m-a") == "half_open"
    assert (await fb.complete(REQ)).content == "b"  # the probe fails: open again
    assert len(a.requests) == 3 and await breaker.state("a:m-a") == "open"
    clock.now += 11
    assert (await fb.complete(REQ)).content == "a is back"  # the probe succeeds: closed
    assert await breaker.state("a:m-a") == "closed"


async def test_one_probe_at_a_time_while_half_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=5.0, probe_timeout=30.0, clock=clock)
    await breaker.failure("x")
    clock.now += 6
    assert await breaker.allow("x") is None  # this caller probes
    wait = await breaker.allow("x")  # the next one skips while the probe runs
    assert wait is not None and 29 < wait <= 30


async def test_every_circuit_open_fails_fast_with_retry_after() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=20.0, clock=clock)
    a = ScriptedProvider([Reply(error=UpstreamError("down"))], name="a")
    fb = chain(a, breaker=breaker, retries=0)
    with pytest.raises(UpstreamError):
        await fb.complete(REQ)
    clock.now += 5
    with pytest.raises(Overloaded) as info:
        await fb.complete(REQ)
    assert info.value.code == "circuit_open" and info.value.retry_after == pytest.approx(15.0)
    assert len(a.requests) == 1


async def test_breaker_state_is_shared_through_the_store() -> None:
    clock = Clock()
    one = CircuitBreaker(failures=1, cooldown=20.0, clock=clock)
    other = CircuitBreaker(one.store, failures=1, cooldown=20.0, clock=clock)  # another replica, same state
    await one.failure("a")
    assert await other.state("a") == "open"


async def test_unreachable_store_means_no_breaker_not_no_answer() -> None:
    class Down:
        async def get(self, key: str) -> bytes | None:
            raise ConnectionError("redis is down")

        async def set(self, key: str, value: bytes, ttl: float) -> None:
            raise ConnectionError("redis is down")

    a = ScriptedProvider(["fine"], name="a")
    out = await chain(a, breaker=CircuitBreaker(Down())).complete(REQ)
    assert out.content == "fine"


async def test_collect_keeps_the_report() -> None:
    a = ScriptedProvider(["x"], name="a")
    out = await collect(chain(a).stream(REQ))
    assert out.fallback is not None and out.fallback.chain == "fast"


class Quota(ScriptedProvider):
    """A scripted provider that reports how much of its subscription quota is used."""

    def __init__(self, used: float | None, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.used = used

    def quota_used(self) -> float | None:
        return self.used


async def test_an_entry_above_its_quota_threshold_is_tried_last() -> None:
    a = Quota(97.0, ["from a"], name="a")
    b = ScriptedProvider(["from b"], name="b")
    fb = chain(a, b, skip_above=90)
    out = await fb.complete(REQ)
    assert out.content == "from b" and not a.requests
    assert out.fallback is not None and out.fallback.failed[0].kind == "quota"
    a.used = 50.0
    assert (await fb.complete(REQ)).content == "from a"
    # above the threshold but the only one left: still tried rather than failing
    a.used = 99.0
    b = ScriptedProvider([Reply(error=UpstreamError("b down"))], name="b")
    out = await chain(a, b, skip_above=90, retries=0).complete(REQ)
    assert out.content == "from a"
    assert [f.kind for f in out.fallback.failed] == ["quota", "upstream_error"]  # type: ignore[union-attr]
    assert fb.counts == {("a:m-a", "quota"): 1, ("b:m-b", "answered"): 1, ("a:m-a", "answered"): 1}
