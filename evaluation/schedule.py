"""schedule: the celery beat entries for periodic evaluation, one per model (no Celery import here)."""
from __future__ import annotations

from capq.names import EVAL_QUEUE, EVAL_TASK, MODEL_NAMES, QUALITY_TASK
from capq.settings import Settings


def beat_schedule(settings: Settings) -> dict:
    return {
        f"evaluate-{model}": {
            "task": EVAL_TASK,
            "schedule": float(settings.eval_interval_s),
            "kwargs": {"model": model},
            "options": {"queue": EVAL_QUEUE},
        }
        for model in MODEL_NAMES
    } | {
        # Issue 18: reference-free quality (health signals, CLIPScore) of each model's newest captions.
        f"quality-{model}": {
            "task": QUALITY_TASK,
            "schedule": float(settings.quality_interval_s),
            "kwargs": {"model": model},
            "options": {"queue": EVAL_QUEUE},
        }
        for model in MODEL_NAMES
    }
