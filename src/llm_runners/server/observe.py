"""What the server tells an operator about each request: one log line, and the Prometheus metrics of ``/metrics``.

A :class:`Record` is made per HTTP request by the outermost middleware (:class:`~.request_id.RequestId`, which
also gives the request its id) and kept in the ASGI scope under :data:`RECORD_KEY`. The pieces that learn
something fill it in as the request goes: the front door the route and whether it streams (:func:`note_route`), the
call the usage (:func:`note_usage`), whoever renders an error its kind and message (:func:`note_error`); the
middleware itself sees the status, the first body byte and the end. When the response is finished the
:class:`Observer` writes the line and updates the metrics, once, off the streaming path.

The line (logger ``llm_runners.access``, info; ``logs`` renders the fields as ``key=value`` or JSON keys)::

    request request_id=req_… endpoint=chat.completions route=claude_code:sonnet stream=true status=200
            ttfb_ms=812.4 total_ms=1530.2 tokens_in=1204 tokens_out=88 cost_usd=0.004932 cost_estimated=true

and for a failure ``error_kind=rate_limit_exceeded error="provider 'codex' is busy: …"``. It carries no prompt or
answer text and no header value but the request id. Probes (``/health``, ``/ready``, ``/metrics``, ``/``) are
logged at debug, so a load balancer's probes do not drown the requests.

Metrics (prometheus-client, one registry per app):

=============================================================  ====================================================
``llm_runners_requests_total{provider,model,endpoint,status}``  finished model requests (count_tokens and model
                                                               listings included, probes not)
``llm_runners_request_duration_seconds{provider,endpoint}``    histogram, request start to last byte
``llm_runners_time_to_first_token_seconds{provider,endpoint}``  histogram, request start to the first body byte (a
                                                               stream's first byte carries its first event)
``llm_runners_tokens_total{provider,model,kind}``              ``input``, ``output``, ``cached``, ``reasoning``
``llm_runners_cost_usd_total{provider,model}``                 USD, the usage's ``cost_usd``
``llm_runners_inflight_requests{provider}``                    routed requests not finished yet
``llm_runners_processes{provider,state}``                      child processes by state (``running``,
                                                               ``live``, ``spare``), read from each provider's
                                                               :meth:`~llm_runners.provider.Provider.processes`
``llm_runners_queue_rejections_total{provider}``               requests refused because the provider's queue was
                                                               full (429 ``queue_full``)
``llm_runners_cache_requests_total{provider,result}``          response cache ``hit``, ``miss``, ``bypass``
                                                               (with ``[cache]``; :mod:`llm_runners.wrappers.cache`)
``llm_runners_fallback_attempts_total{chain,entry,outcome}``   per fallback entry: ``answered``, or the error kind
                                                               that moved the chain on (:mod:`~llm_runners.wrappers.
                                                               fallback`)
``llm_runners_quota_used_percent{provider,window}``            a subscription's rate-limit window, percent used,
                                                               as the CLI last reported it (:mod:`~llm_runners.quotas`)
``llm_runners_quota_resets_at_seconds{provider,window}``       Unix time that window resets
=============================================================  ====================================================

A request refused before routing (no key, a bad body) counts with ``provider="-"``. A provider's distinct model
labels are capped at :data:`MAX_MODELS`; later ones count as ``model="other"``, so callers inventing model names
cannot grow the registry without bound.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..errors import LLMError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..router import Router
    from ..types import Usage

__all__ = [
    "MAX_MODELS",
    "PROBE_PATHS",
    "RECORD_KEY",
    "Observer",
    "Record",
    "note_error",
    "note_route",
    "note_usage",
]

access_log = logging.getLogger("llm_runners.access")

RECORD_KEY = "llm_runners.record"

#: distinct model labels kept per provider; the rest count as "other"
MAX_MODELS = 100

#: answered without a log line at info: they are polled, and say nothing about the traffic
PROBE_PATHS = frozenset({"/health", "/ready", "/metrics", "/"})

_ENDPOINTS = (
    ("/chat/completions", "chat.completions"),
    ("/messages/count_tokens", "messages.count_tokens"),
    ("/messages", "messages"),
    ("/responses", "responses"),
    ("/models", "models"),
)

#: seconds; CLI answers take from a few hundred milliseconds to minutes
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def endpoint_of(path: str) -> str:
    """The front door a path belongs to (``chat.completions``, ``messages``, ``responses``, ...)."""
    p = path.rstrip("/") or "/"
    if p in PROBE_PATHS:
        return p.strip("/") or "root"
    for suffix, name in _ENDPOINTS:
        if p.endswith(suffix):
            return name
    if "/responses/" in p:
        return "responses.retrieve"
    return "other"


class Record:
    """What one request did (see the module docstring)."""

    __slots__ = (
        "endpoint",
        "error_kind",
        "error_message",
        "first_byte",
        "model",
        "probe",
        "provider",
        "request_id",
        "started",
        "status",
        "stream",
        "usage",
    )

    def __init__(self, request_id: str, path: str) -> None:
        self.request_id = request_id
        self.endpoint = endpoint_of(path)
        self.probe = (path.rstrip("/") or "/") in PROBE_PATHS
        self.started = time.perf_counter()
        self.first_byte: float | None = None
        self.status = 0
        self.provider = "-"
        self.model = ""
        self.stream = False
        self.usage: Usage | None = None
        self.error_kind: str | None = None
        self.error_message: str | None = None


def _record(scope: MutableMapping[str, Any]) -> Record | None:
    record = scope.get(RECORD_KEY)
    return record if isinstance(record, Record) else None


def note_route(scope: MutableMapping[str, Any], provider: str, model: str | None, stream: bool) -> None:
    """The front door resolved the request to ``provider`` / ``model``."""
    record = _record(scope)
    if record is not None:
        record.provider = provider
        record.model = model or ""
        record.stream = stream
        observer = scope.get(_OBSERVER_KEY)
        if isinstance(observer, Observer):
            observer.started(provider)


def note_usage(scope: MutableMapping[str, Any], usage: Usage | None) -> None:
    record = _record(scope)
    if record is not None and usage is not None:
        record.usage = usage


#: longest error message kept in a log line
_MAX_MESSAGE = 300


def note_error(scope: MutableMapping[str, Any], error: BaseException) -> None:
    """The error the response reports (the first one noted wins: it is the cause, later ones are consequences)."""
    record = _record(scope)
    if record is None or record.error_kind is not None:
        return
    if isinstance(error, LLMError):
        record.error_kind = error.kind
        message = error.message
    else:
        record.error_kind = "internal_error"
        message = type(error).__name__
    message = " ".join(message.split())
    record.error_message = message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"
    if isinstance(error, LLMError) and error.code == "queue_full":
        observer = scope.get(_OBSERVER_KEY)
        if isinstance(observer, Observer):
            observer.rejected(record.provider if record.provider != "-" else error.provider or "-")


_OBSERVER_KEY = "llm_runners.observer"


class _Histogram:
    """One histogram series: per-bucket counts (not cumulative) and the sum; Prometheus' cumulative ``le`` buckets
    are computed at scrape time."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(_BUCKETS, value)] += 1
        self.total += value


class Observer:
    """Turns finished :class:`Record` s into the log line and the metrics; owns the app's Prometheus registry.

    The metrics are plain counters in dicts, turned into Prometheus samples by a collector when ``/metrics`` is
    scraped: a request updates a few dict entries (well under a microsecond each) instead of locked metric
    objects, because this runs for every request on the server's one event loop thread.

    ``metrics=False`` skips every metric update (``/metrics`` is then a 404); the log line is written whenever
    ``llm_runners.access`` is enabled for info.
    """

    def __init__(self, router: Router, *, metrics: bool = True) -> None:
        self.router = router
        self.metrics = metrics
        self.registry = CollectorRegistry(auto_describe=True)
        self.inflight: dict[str, int] = {}
        self.rejections: dict[str, int] = {}
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.durations: dict[tuple[str, str], _Histogram] = {}
        self.first_token: dict[tuple[str, str], _Histogram] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.cost: dict[tuple[str, str], float] = {}
        self._models: dict[str, set[str]] = {}
        if metrics:
            self.registry.register(_Collector(self))

    def attach(self, scope: MutableMapping[str, Any], record: Record) -> None:
        scope[RECORD_KEY] = record
        scope[_OBSERVER_KEY] = self

    def started(self, provider: str) -> None:
        self.inflight[provider] = self.inflight.get(provider, 0) + 1

    def rejected(self, provider: str) -> None:
        self.rejections[provider] = self.rejections.get(provider, 0) + 1

    def finished(self, record: Record) -> None:
        """Called once per request, after its last byte (or its failure)."""
        now = time.perf_counter()
        if not record.status:  # the client went away before any answer (nginx's "client closed request")
            record.status = 499
        if record.provider != "-":
            self.inflight[record.provider] -= 1
        level = logging.DEBUG if record.probe else logging.INFO
        if access_log.isEnabledFor(level):
            self._log(record, now, level)
        if self.metrics and not record.probe:
            self._count(record, now)

    def _log(self, r: Record, now: float, level: int) -> None:
        model = r.model
        fields: dict[str, Any] = {
            "request_id": r.request_id,
            "endpoint": r.endpoint,
            "route": f"{r.provider}:{model}" if model else r.provider,
            "stream": r.stream,
            "status": r.status,
            "ttfb_ms": round((r.first_byte - r.started) * 1000, 1) if r.first_byte is not None else None,
            "total_ms": round((now - r.started) * 1000, 1),
        }
        u = r.usage
        if u is not None:
            fields["tokens_in"] = u.input_tokens
            fields["tokens_out"] = u.output_tokens
            if u.cost_usd is not None:
                fields["cost_usd"] = round(u.cost_usd, 6)
                fields["cost_estimated"] = u.cost_estimated
        if r.error_kind is not None:
            fields["error_kind"] = r.error_kind
            fields["error"] = r.error_message
        # makeRecord + handle rather than .log(): the same record, without the caller lookup (a walk up the stack)
        # that .log() does for every line
        record = access_log.makeRecord(access_log.name, level, __file__, 0, "request", (), None)
        record.fields = fields
        access_log.handle(record)

    def _model_label(self, provider: str, model: str) -> str:
        seen = self._models.setdefault(provider, set())
        if model in seen:
            return model
        if len(seen) >= MAX_MODELS:
            return "other"
        seen.add(model)
        return model

    def _count(self, r: Record, now: float) -> None:
        provider, endpoint = r.provider, r.endpoint
        model = self._model_label(provider, r.model) if r.model else ""
        key = (provider, model, endpoint, str(r.status))
        self.requests[key] = self.requests.get(key, 0) + 1
        series = (provider, endpoint)
        hist = self.durations.get(series)
        if hist is None:
            hist = self.durations[series] = _Histogram()
        hist.observe(now - r.started)
        if r.first_byte is not None:
            hist = self.first_token.get(series)
            if hist is None:
                hist = self.first_token[series] = _Histogram()
            hist.observe(r.first_byte - r.started)
        u = r.usage
        if u is not None:
            tokens = self.tokens
            for kind, value in (
                ("input", u.input_tokens),
                ("output", u.output_tokens),
                ("cached", u.cached_tokens),
                ("reasoning", u.reasoning_tokens),
            ):
                if value:
                    k = (provider, model, kind)
                    tokens[k] = tokens.get(k, 0) + value
            if u.cost_usd:
                c = (provider, model)
                self.cost[c] = self.cost.get(c, 0.0) + u.cost_usd


def _histogram(name: str, doc: str, series: dict[tuple[str, str], _Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["provider", "endpoint"])
    for labels, hist in sorted(series.items()):
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*_BUCKETS, math.inf), hist.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        family.add_metric(list(labels), buckets, hist.total)
    return family


class _Collector(Collector):
    """Every metric, built from the observer's counters at scrape time (see the module docstring)."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterator[Metric]:
        o = self.observer
        requests = CounterMetricFamily(
            "llm_runners_requests", "Finished requests.", labels=["provider", "model", "endpoint", "status"]
        )
        for request_labels, count in sorted(o.requests.items()):
            requests.add_metric(list(request_labels), count)
        yield requests
        yield _histogram("llm_runners_request_duration_seconds", "Request start to last byte.", o.durations)
        yield _histogram(
            "llm_runners_time_to_first_token_seconds", "Request start to the first body byte.", o.first_token
        )
        tokens = CounterMetricFamily("llm_runners_tokens", "Tokens by kind.", labels=["provider", "model", "kind"])
        for token_labels, count in sorted(o.tokens.items()):
            tokens.add_metric(list(token_labels), count)
        yield tokens
        cost = CounterMetricFamily("llm_runners_cost_usd", "Cost in USD.", labels=["provider", "model"])
        for labels, usd in sorted(o.cost.items()):
            cost.add_metric(list(labels), usd)
        yield cost
        inflight = GaugeMetricFamily(
            "llm_runners_inflight_requests", "Routed requests not finished.", labels=["provider"]
        )
        processes = GaugeMetricFamily(
            "llm_runners_processes", "Child processes by state.", labels=["provider", "state"]
        )
        rejections = CounterMetricFamily(
            "llm_runners_queue_rejections", "Requests refused by a full queue.", labels=["provider"]
        )
        quota_used = GaugeMetricFamily(
            "llm_runners_quota_used_percent",
            "Percent of a subscription's rate-limit window used, as the CLI last reported it.",
            labels=["provider", "window"],
        )
        quota_reset = GaugeMetricFamily(
            "llm_runners_quota_resets_at_seconds",
            "Unix time a subscription's rate-limit window resets.",
            labels=["provider", "window"],
        )
        for name, provider in o.router.providers.items():
            inflight.add_metric([name], o.inflight.get(name, 0))
            rejections.add_metric([name], o.rejections.get(name, 0))
            try:
                counts = provider.processes()
                quotas = provider.quotas()
            except Exception:  # a scrape never fails for one provider's bookkeeping
                counts, quotas = {}, []
            for state, count in sorted(counts.items()):
                processes.add_metric([name, state], count)
            for q in quotas:
                if q.percent_used is not None:
                    quota_used.add_metric([name, q.window], q.percent_used)
                if q.resets_at is not None:
                    quota_reset.add_metric([name, q.window], q.resets_at)
        for name in o.router.chains:
            inflight.add_metric([name], o.inflight.get(name, 0))
        yield inflight
        yield processes
        yield rejections
        yield quota_used
        yield quota_reset
        stats = o.router.cache_stats
        if stats is not None:
            cache = CounterMetricFamily(
                "llm_runners_cache_requests", "Response cache lookups.", labels=["provider", "result"]
            )
            for cache_labels, count in sorted(stats.counts.items()):
                cache.add_metric(list(cache_labels), count)
            yield cache
        if o.router.fallbacks:
            attempts = CounterMetricFamily(
                "llm_runners_fallback_attempts", "Fallback entries tried.", labels=["chain", "entry", "outcome"]
            )
            for chain, fallback in sorted(o.router.fallbacks.items()):
                for (entry, outcome), count in sorted(fallback.counts.items()):
                    attempts.add_metric([chain, entry, outcome], count)
            yield attempts
