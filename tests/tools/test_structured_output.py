"""Structured output: JSON extraction, validation and the JSON-only instruction."""

from __future__ import annotations

import json

import pytest

from llm_runners.errors import GuardrailError, InvalidRequest
from llm_runners.tools.structured import (
    JSONAnswerError,
    check_format,
    extract_json,
    json_instruction,
    validate_answer,
)
from llm_runners.types import ResponseFormat

PERSON = ResponseFormat(
    type="json_schema",
    name="person",
    json_schema={
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
)
OBJECT = ResponseFormat(type="json_object")


@pytest.mark.parametrize(
    "answer",
    [
        '{"name": "Ada", "age": 36}',
        '  \n{"name":"Ada","age":36}\n',
        '```json\n{"name": "Ada", "age": 36}\n```',
        'Here you go:\n```\n{"name": "Ada", "age": 36}\n```\nAnything else?',
        'Sure! {"name": "Ada", "age": 36} Hope that helps {smile}.',
        '[draft] {"name": "Ada", "age": 36}',
    ],
)
def test_schema_answer_is_extracted_and_canonical(answer: str) -> None:
    assert validate_answer(answer, PERSON) == '{"name":"Ada","age":36}'


def test_json_object_requires_an_object() -> None:
    assert validate_answer('{"a": [1, 2], "b": "é"}', OBJECT) == '{"a":[1,2],"b":"é"}'
    with pytest.raises(GuardrailError, match="no JSON object was found"):
        validate_answer("[1, 2, 3]", OBJECT)


def test_array_schema_accepts_an_array() -> None:
    fmt = ResponseFormat(type="json_schema", json_schema={"type": "array", "items": {"type": "integer"}})
    assert validate_answer("The list: [1, 2, 3].", fmt) == "[1,2,3]"


def test_schema_violation_gives_the_schema_message_and_path() -> None:
    with pytest.raises(GuardrailError) as info:
        validate_answer('{"name": "Ada", "age": "old"}', PERSON, provider="gemini")
    error = info.value
    assert error.status == 422 and error.provider == "gemini" and error.param == "response_format"
    assert error.message == (
        "the model's answer is not valid JSON for the requested schema: at $.age: 'old' is not of type 'integer'"
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "the answer is empty"),
        ("I cannot answer that.", "no JSON object was found"),
        ('{"name": "Ada", "age": NaN}', "no JSON object was found"),
        ('{"name": "Ada"', "no JSON object was found"),
    ],
)
def test_unusable_answers(answer: str, reason: str) -> None:
    with pytest.raises(JSONAnswerError, match=reason):
        extract_json(answer, want_object=True)


def test_missing_required_field() -> None:
    with pytest.raises(GuardrailError, match="'age' is a required property"):
        validate_answer('{"name": "Ada"}', PERSON)


def test_instruction_carries_the_schema() -> None:
    text = json_instruction(PERSON)
    assert text.startswith("Answer only with JSON that matches this JSON schema (person): ")
    assert json.dumps(PERSON.json_schema) in text
    assert "one valid JSON object" in json_instruction(OBJECT)


def test_check_format_rejects_bad_schemas() -> None:
    check_format(PERSON)
    check_format(OBJECT)
    with pytest.raises(InvalidRequest, match="needs a schema"):
        check_format(ResponseFormat(type="json_schema"))
    with pytest.raises(InvalidRequest, match="not a valid JSON schema"):
        check_format(ResponseFormat(type="json_schema", json_schema={"type": "no-such-type"}))
