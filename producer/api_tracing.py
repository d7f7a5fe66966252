"""api_tracing: every API request runs under a trace id (the caller's X-Trace-Id or traceparent, else a new one),
returned in X-Trace-Id and logged with the request's outcome."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request

from capq import tracing
from capq.settings import Settings

log = logging.getLogger("capq.api")


def install(app: FastAPI, settings: Settings, auth) -> None:
    @app.middleware("http")
    async def _trace(request: Request, call_next):
        trace_id = tracing.accept(request.headers.get(tracing.HTTP_HEADER), request.headers.get("traceparent"))
        token = tracing.trace_id_var.set(trace_id or tracing.new_trace_id())
        t0, status = time.perf_counter(), 500
        try:
            with tracing.span(f"{request.method} {request.url.path}", settings):
                response = await call_next(request)
            status = response.status_code
            response.headers[tracing.HTTP_HEADER] = tracing.current()
            return response
        finally:
            # The route template, not the raw path (ids stay out of log fields that get indexed).
            route = getattr(request.scope.get("route"), "path", "unmatched")
            log.info("%s %s %s %.3fs", request.method, route, status, time.perf_counter() - t0)
            tracing.trace_id_var.reset(token)
