"""logs: structured JSON log lines that carry the job id, trace id and Celery task id of the work in hand."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from capq.redact import RedactingFilter
from capq.tracing import trace_id_var

job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("capq_job_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or job_id_var.get()
        if job_id:
            line["job_id"] = job_id
        trace_id = getattr(record, "trace_id", None) or trace_id_var.get()  # issue 18
        if trace_id:
            line["trace_id"] = trace_id
        try:
            from celery import current_task

            if current_task and current_task.request.id:
                line["task_id"] = current_task.request.id
        except Exception:  # logging must never raise
            pass
        if record.exc_info:
            line["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(json_lines: bool, level: int = logging.INFO, secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(secrets))  # no password of a connection URL reaches a log line
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
