"""tasks: the Celery task celery beat sends to evaluate one model's stored captions (`capq eval worker` runs it)."""

from __future__ import annotations

import logging

from celery import shared_task

from capq.names import EVAL_TASK
from capq.settings import get_settings

log = logging.getLogger("capq.eval")


# Routed to capq.names.EVAL_QUEUE by celery_app's task_routes (a task's own `queue` is deprecated in Celery).
@shared_task(name=EVAL_TASK)
def evaluate(model: str | None = None) -> dict:
    """Evaluate `model` (all models when None), skipping groups unchanged since their last evaluation.

    Returns a small summary (task results are ignored; the evaluations themselves are in MongoDB).
    """
    # Imported here: beat and Flower load this module in the slim API image, which has no pycocoevalcap.
    from evaluation.run import evaluate_groups

    report = evaluate_groups(get_settings(), model=model, trigger="beat", skip_if_unchanged=True)
    for s in report.skipped:
        log.info("evaluation skipped for %s %s %s: %s", s["model"], s["checkpoint"], s["config_hash"], s["reason"])
    summary = {
        "evaluated": [
            {
                "id": d["id"],
                "model": d["model"],
                "images": d["image_count"],
                "bleu_4": d["scores"]["bleu_4"],
                "cider": d["scores"]["cider"],
            }
            for d in report.evaluations
        ],
        "skipped": len(report.skipped),
    }
    log.info("evaluation of %s: %s", model or "all models", summary)
    return summary
