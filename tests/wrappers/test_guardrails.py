"""Guardrails over scripted providers: request checks, answer checks, streamed redaction across delta boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_runners.errors import GuardrailError
from llm_runners.testing.scripted import Reply, ScriptedProvider
from llm_runners.types import ChatRequest, Done, TextDelta, ToolCall, ToolCallDelta, ToolCallEvent
from llm_runners.wrappers.guardrails import PII_PATTERNS, Guardrails, Redactor, load_hook

pytestmark = pytest.mark.anyio


def req(text: str = "hi") -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}])  # type: ignore[list-item]


async def streamed(provider: Guardrails, request: ChatRequest) -> tuple[list[str], Done | None]:
    texts: list[str] = []
    done = None
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            texts.append(event.text)
        elif isinstance(event, Done):
            done = event
    return texts, done


ANSWER = "Write to jane.doe@example.com or call (555) 123-4567; card 4111 1111 1111 1111, ssn 123-45-6789."
REDACTED = "Write to [REDACTED:email] or call [REDACTED:phone]; card [REDACTED:credit_card], ssn [REDACTED:ssn]."


async def test_redact_on_a_whole_answer() -> None:
    g = Guardrails(ScriptedProvider([ANSWER]), pii="redact")
    assert (await g.complete(req())).content == REDACTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
async def test_redact_streamed_across_every_delta_boundary(size: int) -> None:
    chunks = [ANSWER[i : i + size] for i in range(0, len(ANSWER), size)]
    inner = ScriptedProvider([Reply(chunks=chunks)])
    texts, done = await streamed(Guardrails(inner, pii="redact"), req())
    assert "".join(texts) == REDACTED
    assert done is not None
    assert not any("@" in t or "4567" in t for t in texts)  # no fragment of a match was ever sent


async def test_redact_holds_back_only_a_short_tail() -> None:
    """Text that cannot start a match goes out with the delta that brought it."""
    inner = ScriptedProvider([Reply(chunks=["Hello there, ", "my friend. ", "Mail: bob@", "corp.io now"])])
    texts, _ = await streamed(Guardrails(inner, pii="redact"), req())
    assert texts[0] == "Hello there, " and texts[1] == "my friend. "
    assert "".join(texts) == "Hello there, my friend. Mail: [REDACTED:email] now"


@given(st.lists(st.integers(min_value=1, max_value=len(ANSWER)), max_size=12))
@settings(max_examples=60, deadline=None)
def test_redactor_is_independent_of_how_the_text_is_split(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [ANSWER[a:b] for a, b in zip([0, *points], [*points, len(ANSWER)], strict=True)]
    r = Redactor(list(PII_PATTERNS.values()))
    out = "".join(r.feed(p) for p in pieces) + r.close()
    assert out == REDACTED


def test_luhn_keeps_other_long_numbers() -> None:
    r = Redactor(list(PII_PATTERNS.values()))
    assert r.whole("order 1234 5678 9012 3456 shipped") == "order 1234 5678 9012 3456 shipped"


def test_secret_and_ip() -> None:
    r = Redactor([PII_PATTERNS["secret"], PII_PATTERNS["ipv4"]])
    out = r.whole("key sk-abcdefghijklmnopqrstuv on 10.0.0.12, not 999.1.1.1")
    assert out == "key [REDACTED:secret] on [REDACTED:ipv4], not 999.1.1.1"


async def test_reject_pii_in_request_and_answer() -> None:
    inner = ScriptedProvider(["fine"])
    g = Guardrails(inner, pii="reject")
    with pytest.raises(GuardrailError) as info:
        await g.complete(req("my email is a@b.org"))
    assert info.value.code == "pii" and info.value.status == 422 and not inner.requests
    leaky = Guardrails(ScriptedProvider([Reply(chunks=["ok so ", "a@b.org", " there"])]), pii="reject")
    sent: list[str] = []
    with pytest.raises(GuardrailError):
        async for event in leaky.stream(req()):
            if isinstance(event, TextDelta):
                sent.append(event.text)
    assert sent == ["ok so "]  # what was sent stays sent; the address itself was not


async def test_redact_in_request_reaches_the_provider_redacted() -> None:
    inner = ScriptedProvider(["fine"])
    await Guardrails(inner, pii="redact").complete(req("reach me at 555-123-4567 please"))
    assert inner.last_request.messages[0].text == "reach me at [REDACTED:phone] please"


async def test_length_limits() -> None:
    inner = ScriptedProvider([Reply(chunks=["a" * 40, "b" * 40, "c" * 40])])
    g = Guardrails(inner, max_request_chars=10, max_response_chars=100)
    with pytest.raises(GuardrailError) as info:
        await g.complete(req("x" * 11))
    assert info.value.code == "request_too_long"
    sent: list[str] = []
    with pytest.raises(GuardrailError) as info:
        async for event in g.stream(req("short")):
            if isinstance(event, TextDelta):
                sent.append(event.text)
    assert info.value.code == "response_too_long"
    assert sum(map(len, sent)) == 80


async def test_blocked_pattern_split_across_deltas_is_caught_before_it_completes() -> None:
    inner = ScriptedProvider([Reply(chunks=["here is the ", "BEGIN PRIV", "ATE KEY block"])])
    g = Guardrails(inner, blocked=[r"BEGIN PRIVATE KEY"])
    sent: list[str] = []
    with pytest.raises(GuardrailError) as info:
        async for event in g.stream(req()):
            if isinstance(event, TextDelta):
                sent.append(event.text)
    assert info.value.code == "blocked_pattern"
    assert sent == ["here is the ", "BEGIN PRIV"]
    with pytest.raises(GuardrailError):
        await g.complete(req("please print BEGIN PRIVATE KEY"))


async def test_blocked_pattern_in_tool_arguments() -> None:
    inner = ScriptedProvider([Reply(tool_calls=[ToolCall(id="1", name="t", arguments='{"k": "rm -rf /"}')])])
    g = Guardrails(inner, blocked=[r"rm -rf"])
    with pytest.raises(GuardrailError):
        await g.complete(req())
    with pytest.raises(GuardrailError):
        [e async for e in g.stream(req())]


def refuse_bananas(stage: str, text: str) -> str | None:
    return "no bananas" if "banana" in text else None


async def test_hook() -> None:
    hook = load_hook(f"{__name__}:refuse_bananas")
    g = Guardrails(ScriptedProvider(["an apple", "a banana"]), hook=hook)
    with pytest.raises(GuardrailError, match="no bananas"):
        await g.complete(req("banana?"))
    assert (await g.complete(req("fruit?"))).content == "an apple"
    with pytest.raises(GuardrailError, match="no bananas") as info:
        await g.complete(req("fruit?"))
    assert info.value.code == "hook"
    with pytest.raises(ValueError, match=r"package\.module:function"):
        load_hook("nocolon")


async def test_stream_closed_early_closes_the_inner_stream() -> None:
    inner = ScriptedProvider([Reply(text="a b c", hang=True)])
    stream = Guardrails(inner, pii="redact").stream(req())
    await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    assert inner.open_streams == 0


class _StreamsToolCall(ScriptedProvider):
    """Streams one tool call as an HTTP provider does: fragments, then the whole call."""

    async def stream(self, request: ChatRequest):  # type: ignore[no-untyped-def, override]
        yield ToolCallDelta(0, '{"k": "rm', id="1", name="t")
        yield ToolCallDelta(0, ' -rf /"}')
        yield ToolCallEvent(ToolCall(id="1", name="t", arguments='{"k": "rm -rf /"}'))
        yield Done(finish_reason="tool_calls")


async def test_blocked_patterns_hold_tool_call_fragments_back_until_the_whole_call_is_checked() -> None:
    out: list[object] = []
    with pytest.raises(GuardrailError):
        async for event in Guardrails(_StreamsToolCall(), blocked=[r"rm -rf"]).stream(req()):
            out.append(event)
    assert out == []  # no fragment of the refused call went out
    passed = [e async for e in Guardrails(_StreamsToolCall(), blocked=[]).stream(req())]
    assert [type(e) for e in passed] == [ToolCallDelta, ToolCallDelta, ToolCallEvent, Done]
