"""The quality gate over scripted providers: empty and refusing answers retried with feedback."""

from __future__ import annotations

import pytest

from llm_runners.errors import GuardrailError, UpstreamError
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ChatRequest, TextDelta, ToolCall, Usage
from llm_runners.wrappers.quality import FEEDBACK, QualityGate

pytestmark = pytest.mark.anyio

REQ = ChatRequest(messages=[{"role": "user", "content": "What is 2+2?"}])  # type: ignore[list-item]


async def test_empty_answer_is_retried_with_feedback() -> None:
    inner = ScriptedProvider(
        [Reply(text="", usage=Usage(input_tokens=5, output_tokens=0)), Reply(text="4", usage=Usage(input_tokens=9))]
    )
    out = await QualityGate(inner).complete(REQ)
    assert out.content == "4" and len(inner.requests) == 2
    retry = inner.requests[1]
    assert retry.messages[-1].role == "user" and retry.messages[-1].text == FEEDBACK["empty"]
    assert out.usage is not None and out.usage.input_tokens == 14  # both tries counted
    assert any("asked again after a empty answer" in w for w in out.warnings)


async def test_refusal_pattern_retried_then_returned_with_a_warning() -> None:
    inner = ScriptedProvider(["I'm sorry, but I can't help with that."])
    out = await QualityGate(inner, retries=2).complete(REQ)
    assert len(inner.requests) == 3
    assert inner.requests[1].messages[-2].text.startswith("I'm sorry")  # the rejected answer is in the history
    assert any("failed the quality gate (refusal) after 3 tries" in w for w in out.warnings)


async def test_on_failure_error() -> None:
    inner = ScriptedProvider([""])
    with pytest.raises(GuardrailError) as info:
        await QualityGate(inner, retries=1, on_failure="error").complete(REQ)
    assert info.value.code == "quality" and len(inner.requests) == 2


async def test_configured_patterns_and_good_answers_pass() -> None:
    inner = ScriptedProvider(["As far as I know it is 4", "NOPE"])
    gate = QualityGate(inner, refusals=[r"^nope$"])
    assert (await gate.complete(REQ)).content == "As far as I know it is 4"
    assert len(inner.requests) == 1
    inner = ScriptedProvider(["nope", "4"])
    assert (await QualityGate(inner, refusals=[r"^nope$"]).complete(REQ)).content == "4"


async def test_tool_calls_are_not_empty() -> None:
    inner = ScriptedProvider([Reply(tool_calls=[ToolCall(id="c1", name="add")])])
    out = await QualityGate(inner).complete(REQ)
    assert len(inner.requests) == 1 and out.tool_calls


async def test_errors_pass_through_and_streams_are_untouched() -> None:
    with pytest.raises(UpstreamError):
        await QualityGate(ScriptedProvider([Reply(error=UpstreamError("x"))])).complete(REQ)
    inner = ScriptedProvider([""])
    events = [e async for e in QualityGate(inner).stream(REQ)]
    assert not [e for e in events if isinstance(e, TextDelta)] and len(inner.requests) == 1


async def test_slow_answers_are_judged_after_they_arrive() -> None:
    inner = ScriptedProvider([Reply(text="", delay=0.05), Reply(text="4", delay=0.05)])
    assert (await QualityGate(inner).complete(REQ)).content == "4"
