"""Hypothesis strategies for fuzzing the server: request bodies built from the official SDKs' own request types
(their ``TypedDict`` params, walked field by field), and the garbage a broken or hostile client sends."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import typing_extensions
from hypothesis import strategies as st

#: any JSON value, small
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)

#: text that stresses encodings: astral characters, controls, RTL marks, NUL, SSE framing characters
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30) | st.sampled_from(
    ["\n\ndata: [DONE]\n\n", "\r\n", "\x00", "event: error\ndata: {}", "😀\u202e", "\u2028\u2029"]
)

_FORWARD = {"Required", "NotRequired", "ReadOnly"}


def _strip(tp: Any) -> tuple[Any, bool | None]:
    """``Required[X]`` → (X, True), ``NotRequired[X]`` → (X, False), ``Annotated[X, …]`` → X."""
    required: bool | None = None
    while True:
        origin = typing.get_origin(tp)
        name = getattr(origin, "_name", None) or getattr(origin, "__name__", None)
        if origin in (typing.Required, typing_extensions.Required) or name == "Required":
            tp, required = typing.get_args(tp)[0], True
        elif origin in (typing.NotRequired, typing_extensions.NotRequired) or name in _FORWARD:
            tp, required = typing.get_args(tp)[0], False if required is None else required
        elif origin is typing.Annotated or origin is typing_extensions.Annotated:
            tp = typing.get_args(tp)[0]
        else:
            return tp, required


def from_type(tp: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for JSON values of the SDK request type ``tp`` (TypedDicts, unions, literals, lists, dicts)."""
    tp, _ = _strip(tp)
    if depth > 6:
        return st.just(None) if _allows_none(tp) else _leaf(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return JSON
    if origin is typing.Literal or origin is typing_extensions.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([from_type(a, depth + 1) for a in args])
    if typing_extensions.is_typeddict(tp):
        return _typed_dict(tp, depth)
    if origin in (list, Sequence, Iterable, typing.Iterable, typing.Sequence, tuple) or tp in (list, tuple):
        item = args[0] if args else Any
        return st.lists(from_type(item, depth + 1), max_size=3)
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        value = args[1] if len(args) == 2 else Any
        return st.dictionaries(st.text(max_size=10), from_type(value, depth + 1), max_size=3)
    return _leaf(tp)


def _allows_none(tp: Any) -> bool:
    return tp is type(None) or (
        typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    )


def _leaf(tp: Any) -> st.SearchStrategy[Any]:
    if tp is str:
        return TEXT
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=-5, max_value=100_000)
    if tp is float:
        return st.floats(min_value=-3, max_value=3, allow_nan=False)
    if tp is type(None):
        return st.none()
    if tp in (bytes,):
        return st.text(max_size=10)
    if isinstance(tp, type) and issubclass(tp, str):
        return TEXT
    return JSON


def _typed_dict(tp: Any, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(tp, include_extras=True)
    total = getattr(tp, "__total__", True)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for key, hint in hints.items():
        inner, req = _strip(hint)
        strategy = from_type(inner, depth + 1)
        (required if (req if req is not None else total) else optional)[key] = strategy
    return st.fixed_dictionaries(required, optional=optional)


# ------------------------------------------------------------------------------------------------ garbage


def _mutate_at(value: Any, path: list[int], replacement: Any) -> Any:
    """``value`` with the node reached by ``path`` (indices into the sorted keys / items) replaced."""
    if not path:
        return replacement
    if isinstance(value, dict) and value:
        keys = sorted(value)
        key = keys[path[0] % len(keys)]
        return {**value, key: _mutate_at(value[key], path[1:], replacement)}
    if isinstance(value, list) and value:
        i = path[0] % len(value)
        return [*value[:i], _mutate_at(value[i], path[1:], replacement), *value[i + 1 :]]
    return replacement


WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([{}, [], "", 0, -1, 1e308, 2**64, "\ud800", [[[]]], {"type": None}]),
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A valid-shaped body with one node, at any depth, replaced by a value of the wrong type, and unknown
    fields sprinkled in."""
    body = draw(base)
    path = draw(st.lists(st.integers(min_value=0, max_value=50), max_size=5))
    body = _mutate_at(body, path, draw(WRONG))
    if isinstance(body, dict) and draw(st.booleans()):
        body = {**body, **draw(st.dictionaries(st.text(min_size=1, max_size=12), JSON, max_size=3))}
    return body


def encode(body: Any, surrogates: bool = False) -> bytes:
    """JSON bytes; lone surrogates survive as ``\\udXXX`` escapes (valid JSON text, not valid Unicode)."""
    return json.dumps(body, ensure_ascii=True, allow_nan=True).encode()


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes no correct client sends: broken JSON, invalid UTF-8, lone surrogate escapes, deep nesting, NaN."""
    kind = draw(st.sampled_from(["bytes", "truncated", "utf8", "surrogate", "deep", "nan", "scalar", "dupkeys"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":
        text = json.dumps({"model": "m", "messages": [{"role": "user", "content": draw(TEXT)}]})
        return text[: draw(st.integers(0, len(text) - 1))].encode()
    if kind == "utf8":
        prefix = b'{"model":"m","input":"'
        return (
            prefix + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80abc"])) + b'"}'
        )
    if kind == "surrogate":
        escape = draw(st.sampled_from(["\\ud800", "\\udfff", "\\ud83d", "\\ude00x", "\\u0000"]))
        return (
            '{"model":"m","max_tokens":5,"input":"a'
            + escape
            + '","messages":[{"role":"user","content":"b'
            + escape
            + '"}]}'
        ).encode()
    if kind == "deep":
        n = draw(st.sampled_from([100, 1000, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return ('{"model":"m","messages":' + opener * n + "1" + closer * n + "}").encode()
    if kind == "nan":
        return draw(
            st.sampled_from(
                [
                    b'{"model":"m","temperature":NaN,"input":"x","max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
                    b'{"model":"m","top_p":Infinity,"input":"x","max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
                    b'{"model":"m","max_tokens":1e999,"input":"x","messages":[{"role":"user","content":"x"}]}',
                    b'{"model":"m","max_output_tokens":-Infinity,"input":"x"}',
                ]
            )
        )
    if kind == "scalar":
        return draw(st.sampled_from([b"null", b"1", b'"x"', b"[]", b"true", b" ", b"\x00", b"{}"]))
    return b'{"model":"m","model":1,"input":"x","input":[],"messages":"x","messages":[{"role":"user","content":"x"}]}'
