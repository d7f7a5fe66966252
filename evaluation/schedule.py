"""schedule: the celery beat entries for periodic evaluation, one per model (no Celery import here)."""
from __future__ import annotations

from capq.names import ALIAS_COMPARE_TASK, EVAL_QUEUE, EVAL_TASK, MODEL_NAMES, QUALITY_TASK
from capq.settings import Settings


def _per_model(prefix: str, task: str, interval_s: float) -> dict:
    return {f"{prefix}-{model}": {"task": task, "schedule": float(interval_s), "kwargs": {"model": model},
                                  "options": {"queue": EVAL_QUEUE}} for model in MODEL_NAMES}


def beat_schedule(settings: Settings) -> dict:
    # Scores against references, and (issue 18) reference-free quality: health signals, CLIPScore.
    return (_per_model("evaluate", EVAL_TASK, settings.eval_interval_s)
            | _per_model("quality", QUALITY_TASK, settings.quality_interval_s)
            | {"alias-compare": {"task": ALIAS_COMPARE_TASK, "schedule": float(settings.quality_interval_s),
                                 "options": {"queue": EVAL_QUEUE}}})
