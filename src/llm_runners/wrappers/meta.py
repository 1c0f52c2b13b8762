"""Response headers a wrapper reports for the one request it serves (which fallback entry answered, a cache hit).

Why a context variable: a streamed response's headers go out with its first event, long before the stream's
``Done`` (where the library sees the same facts), and the wrappers sit several providers below the front door.
The front door opens a fresh dict for its request (:func:`collect_headers`) and sends whatever the wrappers
noted (:func:`note_header`) with the status line. An async generator runs in the context of the task iterating
it, so a wrapper's stream notes into the dict of the request that reads it. Outside a front door (library use,
multiplexed calls) there is no dict and noting is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["CACHE_HEADER", "FALLBACK_ANSWERED_HEADER", "FALLBACK_FAILED_HEADER", "collect_headers", "note_header"]

#: ``hit`` / ``miss`` / ``bypass`` (:mod:`.cache`)
CACHE_HEADER = "x-llm-runners-cache"
#: the fallback entry that answered, ``provider:model`` (:mod:`.fallback`)
FALLBACK_ANSWERED_HEADER = "x-llm-runners-fallback-answered"
#: the entries that failed before it: ``entry=kind`` items joined by ``, `` (:mod:`.fallback`)
FALLBACK_FAILED_HEADER = "x-llm-runners-fallback-failed"

_headers: ContextVar[dict[str, str] | None] = ContextVar("llm_runners_response_headers", default=None)


def note_header(name: str, value: str) -> None:
    """Set response header ``name`` of the request being served (ASCII; a no-op outside a front door)."""
    headers = _headers.get()
    if headers is not None:
        headers[name] = value.replace("\r", " ").replace("\n", " ").encode("ascii", "replace").decode("ascii")


@contextmanager
def collect_headers() -> Iterator[dict[str, str]]:
    """A fresh dict for one request's noted headers, current while the block runs."""
    headers: dict[str, str] = {}
    token = _headers.set(headers)
    try:
        yield headers
    finally:
        _headers.reset(token)
