"""Errors on the wire: every failure becomes an :class:`~llm_runners.errors.LLMError`, then its status and the
envelope of the front door that was called (the mapping itself lives once, in :mod:`llm_runners.errors`).

Also the small validators the front doors use to read JSON bodies: each raises ``InvalidRequest`` naming the
offending parameter (``messages[2].content[0].image_url``), so a caller never gets a bare 500 for bad input.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any, Literal, TypeAlias

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..errors import InternalError, InvalidRequest, LLMError

__all__ = [
    "Flavor",
    "error_body",
    "error_response",
    "from_validation",
    "opt_bool",
    "opt_dict",
    "opt_int",
    "opt_list",
    "opt_number",
    "opt_str",
    "parse_json",
    "read_json",
    "to_llm_error",
]

log = logging.getLogger("llm_runners.server")

Flavor: TypeAlias = Literal["openai", "anthropic"]


def to_llm_error(exc: BaseException) -> LLMError:
    """An LLMError as is; anything else is a bug on our side: logged with its traceback, shown as a terse 500."""
    if isinstance(exc, LLMError):
        return exc
    log.error("internal error while serving a request", exc_info=exc)
    return InternalError(f"internal server error ({type(exc).__name__}); see the server log")


def error_body(exc: LLMError, flavor: Flavor) -> bytes:
    envelope = exc.anthropic_envelope() if flavor == "anthropic" else exc.openai_envelope()
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def error_response(exc: BaseException, flavor: Flavor) -> Response:
    err = to_llm_error(exc)
    return Response(
        error_body(err, flavor), status_code=err.status, headers=err.headers(), media_type="application/json"
    )


def from_validation(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    """The first pydantic error as a one-line InvalidRequest with the parameter path."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ()))
    param = (prefix + loc).lstrip(".") or None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return InvalidRequest(f"{param}: {msg}" if param else msg, param=param)


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; anything else is a 400 saying what was wrong (see :func:`parse_json`)."""
    return parse_json(await request.body())


#: a ``\\uD800``–``\\uDFFF`` escape: the only way a lone surrogate gets into a body that is valid UTF-8
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _not_a_number(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"{literal} is out of range for a number")
    return value


def parse_json(raw: bytes) -> dict[str, Any]:
    """A request body → a JSON object, refusing with a 400 what would otherwise break later: bytes that are not
    UTF-8, nesting too deep to parse, ``NaN`` / ``Infinity`` and numbers beyond a double (which would be written back
    as invalid JSON), and lone surrogates (``"\\ud800"``: valid JSON text, but no UTF-8 encoding exists for it, so
    echoing it into an answer failed half-way)."""
    if not raw:
        raise InvalidRequest("the request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid UTF-8: {exc}") from None
    try:
        body = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError included
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, not {_type_name(body)}")
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(body, "")
        if where is not None:
            raise InvalidRequest(
                f"{where or 'the request body'}: a lone surrogate (\\ud800-\\udfff) is not valid Unicode",
                param=where or None,
            )
    return body


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The parameter path of the first string (or key) that holds a lone surrogate, if any."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return where
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{where}.{key}".lstrip(".") if isinstance(key, str) and key.isascii() else where
                stack.append((key, where))
                stack.append((sub, name))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
    return None


# ----------------------------------------------------------------------------------------------- validators


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _bad(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(f"{param}: expected {expected}, got {_type_name(value)}", param=param)


def opt_str(obj: dict[str, Any], key: str, param: str | None = None) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _bad(param or key, "a string", value)


def opt_bool(obj: dict[str, Any], key: str, param: str | None = None) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _bad(param or key, "a boolean", value)


def opt_dict(obj: dict[str, Any], key: str, param: str | None = None) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise _bad(param or key, "an object", value)


def opt_list(obj: dict[str, Any], key: str, param: str | None = None) -> list[Any] | None:
    value = obj.get(key)
    if value is None or isinstance(value, list):
        return value
    raise _bad(param or key, "an array", value)


def opt_number(obj: dict[str, Any], key: str, lo: float, hi: float, param: str | None = None) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    name = param or key
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name, f"a number between {lo:g} and {hi:g}", value)
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name}: {value} is out of range; expected {lo:g} to {hi:g}", param=name)
    return float(value)


def opt_int(obj: dict[str, Any], key: str, lo: int = 1, param: str | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    name = param or key
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _bad(name, "an integer", value)
    if value < lo:
        raise InvalidRequest(f"{name}: must be at least {lo}, got {value}", param=name)
    return value
