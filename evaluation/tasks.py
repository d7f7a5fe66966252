"""tasks: the Celery task celery beat sends to evaluate one model's stored captions, and the worker that runs it."""

from __future__ import annotations

import logging

from celery import shared_task

from capq.logs import setup_logging
from capq.names import EVAL_QUEUE, EVAL_TASK
from capq.settings import Settings, get_settings
from workers.consume import consume

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


def serve(settings: Settings, concurrency: int = 1, loglevel: str = "INFO") -> None:
    """Consume the evaluation queue in this process until shut down (`capq eval worker`)."""
    setup_logging(settings.log_json)
    # Each evaluation is CPU-bound Python plus a JVM: separate processes, not threads, when running several.
    pool = ["--pool", "solo"] if concurrency == 1 else ["--pool", "prefork", "--concurrency", str(concurrency)]
    consume(settings, "eval", [EVAL_QUEUE], pool, loglevel)
