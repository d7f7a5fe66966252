"""tracing: one trace id per API request or CLI submission, carried through Celery headers to every task, caption and
log line; OpenTelemetry spans when CAPQ_TRACING_OTLP_ENDPOINT is set."""

from __future__ import annotations

import contextvars
import functools
import random
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("capq_trace_id", default=None)
CELERY_HEADER = "capq_trace_id"  # message header a shard or evaluation task carries its trace id in
HTTP_HEADER = "X-Trace-Id"  # a request may send one (else one is made); every response carries it
# Same shape as a W3C / OpenTelemetry trace id, so the two can be one and the same.
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def new_trace_id() -> str:
    return uuid.uuid4().hex


def accept(header: str | None, traceparent: str | None = None) -> str | None:
    """A caller's trace id (X-Trace-Id, else W3C traceparent) when well formed; anything else is ignored, so a
    caller cannot put arbitrary text into logs."""
    if header and _TRACE_ID.match(header.strip().lower()) and set(header.strip()) != {"0"}:
        return header.strip().lower()
    match = _TRACEPARENT.match((traceparent or "").strip().lower())
    return match.group(1) if match and set(match.group(1)) != {"0"} else None


def current() -> str | None:
    return trace_id_var.get()


@contextmanager
def bound(trace_id: str) -> Iterator[str]:
    """Run a block under `trace_id` (what it sends and logs carries it), then restore the id in hand before."""
    token = trace_id_var.set(trace_id)
    try:
        yield trace_id
    finally:
        trace_id_var.reset(token)


def celery_headers() -> dict:
    """Headers to send a task with, so that its worker logs under the same trace id."""
    tid = trace_id_var.get()
    return {CELERY_HEADER: tid} if tid else {}


@functools.cache
def _tracer(endpoint: str):
    """An OpenTelemetry tracer exporting over OTLP/HTTP (e.g. http://otel-collector:4318/v1/traces)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "capq"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=1000))
    return provider.get_tracer("capq")


def _parent_context():
    """Spans join the capq trace id: the current OpenTelemetry span when it is of this trace, else a remote parent
    carrying the id (so the API's and the workers' spans form one trace)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    tid = trace_id_var.get()
    if tid is None:
        return None
    active = trace.get_current_span().get_span_context()
    if active.is_valid and format(active.trace_id, "032x") == tid:
        return None
    parent = SpanContext(
        trace_id=int(tid, 16),
        span_id=random.getrandbits(63) + 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextmanager
def span(name: str, settings, **attributes) -> Iterator[object | None]:
    """An OpenTelemetry span under the current trace id when CAPQ_TRACING_OTLP_ENDPOINT is set; else nothing."""
    if not settings.tracing_otlp_endpoint:
        yield None
        return
    tracer = _tracer(settings.tracing_otlp_endpoint)
    with tracer.start_as_current_span(name, context=_parent_context(), attributes=attributes) as current_span:
        yield current_span


def connect_celery(settings=None) -> None:
    """In a worker: each task runs under its message's trace id (a new one when it has none, as beat's tasks), in
    a span of its own when CAPQ_TRACING_OTLP_ENDPOINT is set."""
    from celery.signals import task_postrun, task_prerun

    tokens: dict[str, tuple] = {}
    endpoint = getattr(settings, "tracing_otlp_endpoint", "")

    def before(task_id=None, task=None, **_):
        tid = getattr(task.request, CELERY_HEADER, None) or (task.request.headers or {}).get(CELERY_HEADER)
        token = trace_id_var.set(accept(tid) or new_trace_id())
        task_span = (
            _tracer(endpoint).start_span(
                task.name, context=_parent_context(), attributes={"celery.task_id": task_id or ""}
            )
            if endpoint
            else None
        )
        tokens[task_id] = (token, task_span)

    def after(task_id=None, **_):
        token, task_span = tokens.pop(task_id, (None, None))
        if task_span is not None:
            task_span.end()
        if token is not None:
            trace_id_var.reset(token)

    task_prerun.connect(before, weak=False)
    task_postrun.connect(after, weak=False)
