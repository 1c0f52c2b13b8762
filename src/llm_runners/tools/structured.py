"""Structured output (``response_format``) for providers without a native JSON switch.

The model is told to answer with JSON only (:func:`json_instruction`); its answer is then searched for the JSON
(models wrap it in code fences or a sentence of prose more often than not), checked against the request's
``json_object`` / ``json_schema`` format, and returned as canonical compact JSON text (:func:`validate_answer`).
An answer that does not hold valid JSON raises :class:`~llm_runners.errors.GuardrailError` (422): the request
was fine, the model's answer failed an output check.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from ..errors import GuardrailError, InvalidRequest
from ..types import ResponseFormat

#: how many candidate ``{`` / ``[`` positions are tried before giving up on prose around the JSON
_MAX_CANDIDATES = 200

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(?P<body>.*?)```", re.S)


class JSONAnswerError(ValueError):
    """Why an answer holds no acceptable JSON (the message is shown to the caller)."""


def is_structured(fmt: ResponseFormat | None) -> bool:
    return fmt is not None and fmt.type != "text"


def check_format(fmt: ResponseFormat) -> None:
    """Reject a ``response_format`` that cannot be honoured (missing or invalid schema) before any model runs."""
    if fmt.type != "json_schema":
        return
    if fmt.json_schema is None:
        raise InvalidRequest("response_format json_schema needs a schema", param="response_format")
    try:
        jsonschema.validators.validator_for(fmt.json_schema).check_schema(fmt.json_schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(
            f"response_format.json_schema is not a valid JSON schema: {exc.message}", param="response_format"
        ) from None


def json_instruction(fmt: ResponseFormat) -> str:
    """The system-prompt text asking for a JSON-only answer."""
    rules = "Do not add any text before or after it and do not wrap it in a code fence."
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        schema = json.dumps(fmt.json_schema, ensure_ascii=False)
        named = f" ({fmt.name})" if fmt.name else ""
        return f"Answer only with JSON that matches this JSON schema{named}: {schema}\n{rules}"
    return f"Answer only with one valid JSON object. {rules}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def extract_json(text: str, *, want_object: bool = False) -> Any:
    """Find the one JSON value an answer holds: the whole text, a fenced block, or the first object/array in prose.

    ``want_object`` skips arrays (``json_object`` asks for an object).
    """
    stripped = text.strip()
    if not stripped:
        raise JSONAnswerError("the answer is empty")
    kinds: tuple[type, ...] = (dict,) if want_object else (dict, list)
    candidates = [stripped] + [m.group("body").strip() for m in _FENCE.finditer(text)]
    for candidate in candidates:
        try:
            value = _loads(candidate)
        except ValueError:
            continue
        if isinstance(value, kinds):
            return value
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    openers = "{" if want_object else "{["
    tried = 0
    for index, char in enumerate(stripped):
        if char not in openers:
            continue
        tried += 1
        if tried > _MAX_CANDIDATES:
            break
        try:
            value, _ = decoder.raw_decode(stripped, index)
        except ValueError:
            continue
        if isinstance(value, kinds):
            return value
    what = "JSON object" if want_object else "JSON object or array"
    raise JSONAnswerError(f"no {what} was found in the answer")


def _path(error: jsonschema.ValidationError) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return "$" + parts


def validate_value(value: Any, fmt: ResponseFormat) -> None:
    """Check a decoded value against the format; raise :class:`JSONAnswerError` with the schema's own message."""
    if fmt.type == "json_object" and not isinstance(value, dict):
        raise JSONAnswerError("a JSON object was requested")
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        validator = jsonschema.validators.validator_for(fmt.json_schema)(fmt.json_schema)
        error = best_match(validator.iter_errors(value))
        if error is not None:
            raise JSONAnswerError(f"at {_path(error)}: {error.message}")


def canonical_answer(text: str, fmt: ResponseFormat) -> str:
    """The canonical compact JSON text of an answer, or :class:`JSONAnswerError`."""
    value = extract_json(text, want_object=fmt.type == "json_object" or _schema_wants_object(fmt))
    validate_value(value, fmt)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def validate_answer(text: str, fmt: ResponseFormat, *, provider: str | None = None) -> str:
    """Like :func:`canonical_answer`, but a failure is the :class:`GuardrailError` the caller sees."""
    try:
        return canonical_answer(text, fmt)
    except JSONAnswerError as exc:
        raise invalid_answer(str(exc), fmt, provider=provider) from None


def invalid_answer(reason: str, fmt: ResponseFormat, *, provider: str | None = None) -> GuardrailError:
    what = "the requested schema" if fmt.type == "json_schema" else "a JSON object"
    return GuardrailError(
        f"the model's answer is not valid JSON for {what}: {reason}",
        provider=provider,
        code="invalid_json_output",
        param="response_format",
    )


def _schema_wants_object(fmt: ResponseFormat) -> bool:
    schema = fmt.json_schema if fmt.type == "json_schema" else None
    return isinstance(schema, dict) and schema.get("type") == "object"
