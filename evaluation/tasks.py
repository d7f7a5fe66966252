"""tasks: the thin Celery task that celery beat triggers to evaluate one model's stored captions."""
from __future__ import annotations

import logging

from capq.names import EVAL_TASK
from capq.settings import get_settings
from evaluation.run import evaluate_groups
from evaluation.schedule import beat_schedule  # noqa: F401 - celery_app reads the schedule from here or schedule.py
from workers.celery_app import app

log = logging.getLogger("capq.eval")


# Routed to capq.names.EVAL_QUEUE by celery_app's task_routes (a task's own `queue` is deprecated in Celery).
@app.task(name=EVAL_TASK)
def evaluate(model: str | None = None) -> dict:
    """Evaluate `model` (all models when None), skipping groups unchanged since their last evaluation.

    Returns a small summary (task results are ignored; the evaluations themselves are in MongoDB).
    """
    report = evaluate_groups(get_settings(), model=model, trigger="beat", skip_if_unchanged=True)
    for s in report.skipped:
        log.info("evaluation skipped for %s %s %s: %s", s["model"], s["checkpoint"], s["config_hash"], s["reason"])
    summary = {"evaluated": [{"id": d["id"], "model": d["model"], "images": d["image_count"],
                              "bleu_4": d["scores"]["bleu_4"], "cider": d["scores"]["cider"]}
                             for d in report.evaluations],
               "skipped": len(report.skipped)}
    log.info("evaluation of %s: %s", model or "all models", summary)
    return summary
