"""quality_tasks: the Celery task beat sends to measure one model's production captions without references."""
from __future__ import annotations

import logging

from celery import shared_task

from capq.names import QUALITY_TASK
from capq.settings import get_settings

log = logging.getLogger("capq.eval")


# Routed to capq.eval (the app's default queue), so the evaluation worker runs it.
@shared_task(name=QUALITY_TASK)
def measure(model: str | None = None) -> dict:
    """Store health signals (and CLIPScore, with CAPQ_CLIP_CHECKPOINT) of `model`'s newest captions."""
    # Imported here: beat and Flower load this module in the slim API image, which has no torch.
    from evaluation.quality import measure_quality

    docs = measure_quality(get_settings(), model=model, trigger="beat")
    summary = {"stored": [{"id": d["id"], "kind": d["kind"], "model": d["model"], "images": d["image_count"],
                           **d["scores"]} for d in docs]}
    log.info("quality of %s: %s", model or "all models", summary)
    return summary
