"""tasks: the evaluation queue's Celery tasks (beat's evaluations, the API's comparisons), run by `capq eval worker`."""

from __future__ import annotations

import logging

from celery import shared_task

from capq.names import COMPARE_TASK, EVAL_TASK
from capq.settings import get_settings
from storage.comparisons import ComparisonStore

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


# Routed to capq.names.EVAL_QUEUE too: the API has no metric code, so it asks the evaluation worker (issue 13).
@shared_task(name=COMPARE_TASK)
def compare(request_id: str, a: str, b: str, preset: str | None = None) -> dict:
    """Compare model A with B for GET /v1/evaluations/compare; the answer goes to ComparisonStore under
    request_id, where the API awaits it."""
    from evaluation.run import CompareError, compare_models

    settings = get_settings()
    store = ComparisonStore(settings)
    if not store.waiting(request_id):
        # The API stopped waiting (or another delivery answered): the bootstrap would go unread.
        log.info("comparison %s of %s and %s skipped: nobody awaits it", request_id, a, b)
        return {"skipped": request_id}
    try:
        result = compare_models(settings, a, b, preset)
    except CompareError as exc:
        store.answer(request_id, error=str(exc))
        return {"refused": str(exc)}
    except Exception as exc:
        # The API can say the comparison failed at once instead of waiting out compare_wait_s.
        store.answer(request_id, failure=f"{type(exc).__name__} on the evaluation worker (see its log)")
        raise
    store.answer(request_id, result=result)
    log.info("comparison %s of %s and %s: %d image(s)", request_id, a, b, result["images"])
    return {"compared": [a, b], "images": result["images"]}
