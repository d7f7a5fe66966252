"""quality_tasks: the Celery task beat sends to measure one model's production captions without references."""

from __future__ import annotations

import logging

from celery import shared_task

from capq.names import ALIAS_COMPARE_TASK, QUALITY_TASK
from capq.settings import get_settings

log = logging.getLogger("capq.eval")


# Routed to capq.eval (the app's default queue), so the evaluation worker runs it.
@shared_task(name=QUALITY_TASK)
def measure(model: str | None = None) -> dict:
    """Store health signals (and CLIPScore, with CAPQ_CLIP_CHECKPOINT) of `model`'s newest captions."""
    # Imported here: beat and Flower load this module in the slim API image, which has no torch.
    from evaluation.quality import measure_quality

    docs = measure_quality(get_settings(), model=model, trigger="beat")
    summary = {
        "stored": [
            {"id": d["id"], "kind": d["kind"], "model": d["model"], "images": d["image_count"], **d["scores"]}
            for d in docs
        ]
    }
    log.info("quality of %s: %s", model or "all models", summary)
    return summary


@shared_task(name=ALIAS_COMPARE_TASK)
def compare_aliases() -> dict:
    """Compare the arms of every model alias and store each comparison (the exporter's capq_alias_arm_* series)."""
    from evaluation.quality import compare_alias_arms
    from storage.aliases import AliasStore

    settings = get_settings()
    done = {}
    for alias in AliasStore(settings).list():
        result = compare_alias_arms(settings, alias["name"], store=True)
        done[alias["name"]] = {
            pair: {
                kind: {n: t["p_value"] for n, t in scores.items() if t["significant"]} for kind, scores in kinds.items()
            }
            for pair, kinds in result["diff"].items()
        }
    log.info("alias comparisons (significant p-values): %s", done)
    return {"aliases": done}
