"""The text tool protocol: catalogue rendering, history rendering, one-shot and streaming parsing."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_runners.tools.protocol import (
    CLOSE,
    OPEN,
    ToolCallStreamParser,
    collect_text,
    format_call,
    parse_tool_calls,
    render_history,
    render_tool_instructions,
)
from llm_runners.types import Message, TextDelta, ToolCall, ToolCallEvent, ToolChoice, ToolSpec

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec(name="get_time", description="The time in a timezone.")


def _counter() -> itertools.count[int]:
    return itertools.count(1)


def _ids() -> object:
    counter = _counter()
    return lambda: f"call_{next(counter)}"


# --------------------------------------------------------------------------------------------- rendering


def test_catalogue_names_tools_schemas_and_call_format() -> None:
    text = render_tool_instructions([WEATHER, TIME])
    assert "## get_weather" in text and "## get_time" in text
    assert "Current weather for a city." in text
    assert json.dumps(WEATHER.parameters) in text
    assert OPEN in text and CLOSE in text
    assert "several tools" in text
    assert "MUST" not in text


def test_catalogue_required_and_named_and_none() -> None:
    required = render_tool_instructions([WEATHER, TIME], ToolChoice(mode="required"))
    assert "MUST call at least one tool" in required
    named = render_tool_instructions([WEATHER, TIME], ToolChoice(mode="tool", name="get_time"))
    assert "MUST call the tool get_time" in named
    assert "## get_weather" not in named and "## get_time" in named
    none = render_tool_instructions([WEATHER, TIME], ToolChoice(mode="none"))
    assert "Do not call any tool" in none and "get_weather" not in none


def test_history_renders_calls_and_results_as_text() -> None:
    messages = [
        Message(role="user", content="Weather in Paris and the time?"),
        Message(
            role="assistant",
            content="Checking.",
            tool_calls=[
                ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
                ToolCall(id="call_b", name="get_time", arguments="{}"),
            ],
        ),
        Message(role="tool", tool_call_id="call_a", content="18 C, sunny"),
        Message(role="tool", tool_call_id="call_b", content="12:00"),
        Message(role="user", content="Thanks"),
    ]
    out = render_history(messages)
    assert [m.role for m in out] == ["user", "assistant", "user", "user"]
    assert out[0] is messages[0] and out[3] is messages[4]
    assert out[1].tool_calls == []
    assert out[1].text == (
        'Checking.\n<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>\n'
        '<tool_call>{"name":"get_time","arguments":{}}</tool_call>'
    )
    assert (
        out[2].text == "Result of tool get_weather (call_a):\n18 C, sunny\n\nResult of tool get_time (call_b):\n12:00"
    )


def test_rendered_history_parses_back_to_the_same_calls() -> None:
    call = ToolCall(id="call_x", name="get_weather", arguments='{"city": "Ås \\"quoted\\"", "n": [1, 2]}')
    parsed = parse_tool_calls(format_call(call))
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [(call.name, json.loads(call.arguments))]
    assert parsed.content == ""


# --------------------------------------------------------------------------------------------- one-shot parsing


def test_parse_several_calls_with_prose() -> None:
    text = (
        "Let me check both.\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>\n```json\n{"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}\n```\n</tool_call>\n'
        "Done."
    )
    parsed = parse_tool_calls(text, {"get_weather", "get_time"}, id_factory=_ids())  # type: ignore[arg-type]
    assert parsed.content == "Let me check both.Done."
    assert [(c.id, c.name, c.arguments) for c in parsed.calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}'),
        ("call_2", "get_time", '{"tz":"UTC"}'),
    ]
    assert parsed.warnings == []


def test_default_ids_are_unique_call_ids() -> None:
    parsed = parse_tool_calls(f'{OPEN}{{"name":"a"}}{CLOSE}{OPEN}{{"name":"a","arguments":null}}{CLOSE}')
    ids = [c.id for c in parsed.calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2
    assert [c.arguments for c in parsed.calls] == ["{}", "{}"]


def test_array_body_gives_several_calls() -> None:
    parsed = parse_tool_calls(f'{OPEN}[{{"name":"a","arguments":{{"x":1}}}},{{"name":"b"}}]{CLOSE}')
    assert [(c.name, c.arguments) for c in parsed.calls] == [("a", '{"x":1}'), ("b", "{}")]


def test_malformed_calls_stay_text_with_a_warning() -> None:
    bad = [
        f"{OPEN}{{not json}}{CLOSE}",
        f'{OPEN}{{"arguments": {{}}}}{CLOSE}',
        f'{OPEN}{{"name": "x", "arguments": [1]}}{CLOSE}',
        f'{OPEN}{{"name": "x", "arguments": "not json"}}{CLOSE}',
        f"{OPEN}   {CLOSE}",
        f'{OPEN}{{"name": "unknown_tool"}}{CLOSE}',
    ]
    for block in bad:
        parsed = parse_tool_calls(f"before {block} after", {"x"})
        assert parsed.calls == [], block
        assert parsed.content == f"before {block} after"
        assert len(parsed.warnings) == 1 and "malformed tool call" in parsed.warnings[0]


def test_unclosed_call_is_text_with_warning() -> None:
    parsed = parse_tool_calls(f'Sure {OPEN}{{"name": "x"')
    assert parsed.calls == [] and parsed.content == f'Sure {OPEN}{{"name": "x"'
    assert "never closed" in parsed.warnings[0]


def test_plain_text_is_untouched() -> None:
    text = "  a < b and <tool> is not <tool_call without end  \n"
    parsed = parse_tool_calls(text)
    assert parsed.content == text and parsed.calls == []


# --------------------------------------------------------------------------------------------- streaming parsing


def _stream(parts: list[str], allowed: set[str] | None = None) -> tuple[list[TextDelta | ToolCallEvent], list[str]]:
    parser = ToolCallStreamParser(allowed)
    events: list[TextDelta | ToolCallEvent] = []
    for part in parts:
        events += parser.feed(part)
    events += parser.close()
    return events, parser.warnings


def test_stream_emits_prose_immediately_and_calls_on_close() -> None:
    parser = ToolCallStreamParser()
    assert parser.feed("Hello wor") == [TextDelta("Hello wor")]
    assert parser.feed("ld <tool_") == [TextDelta("ld")]  # " <tool_" could open a call: held back
    assert parser.feed('call>{"name": "a", ') == []
    events = parser.feed('"arguments": {"k": 2}}</tool_call> and more')
    assert [type(e) for e in events] == [ToolCallEvent, TextDelta]
    call = events[0]
    assert isinstance(call, ToolCallEvent) and call.call.name == "a" and call.call.arguments == '{"k":2}'
    assert events[1] == TextDelta("and more")
    assert parser.close() == []


def test_stream_releases_false_alarm() -> None:
    parser = ToolCallStreamParser()
    assert parser.feed("x <tool") == [TextDelta("x")]
    assert parser.feed("box>") == [TextDelta(" <toolbox>")]


def test_stream_malformed_and_unclosed() -> None:
    events, warnings = _stream(["a ", "<tool_call>oops</tool_call>", " b <tool_call>{"])
    assert collect_text(events) == "a <tool_call>oops</tool_call> b <tool_call>{"
    assert len(warnings) == 2


_CALLS = [
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
    '<tool_call>\n```json\n{"name":"get_time"}\n```\n</tool_call>',
    '<tool_call>[{"name":"get_time","arguments":"{}"},{"name":"get_weather","arguments":{"city":"<b>"}}]</tool_call>',
    "<tool_call>{broken</tool_call>",
    '<tool_call>{"name":"nope"}</tool_call>',
    "<tool_call>",
    "</tool_call>",
    "<tool_c",
]
_PROSE = st.text(alphabet=st.sampled_from(list('ab <>_/tolc\n{}" ')), max_size=12)
_PIECES = st.lists(st.one_of(_PROSE, st.sampled_from(_CALLS)), max_size=8)


@settings(max_examples=400, deadline=None)
@given(pieces=_PIECES, data=st.data())
def test_any_split_matches_one_shot(pieces: list[str], data: st.DataObject) -> None:
    text = "".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    allowed = {"get_weather", "get_time"}

    events, warnings = _stream(parts, allowed)
    expected = parse_tool_calls(text, allowed)

    assert collect_text(events) == expected.content
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in expected.calls]
    assert warnings == expected.warnings
    assert all(e.text for e in events if isinstance(e, TextDelta))
