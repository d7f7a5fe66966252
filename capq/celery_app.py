"""celery_app: the Celery app factory, broker config and beat schedule; every role builds its app from settings."""

from __future__ import annotations

import functools

from celery import Celery
from kombu import Exchange, Queue

from capq.names import (
    ALIAS_COMPARE_TASK,
    COMPARE_TASK,
    EVAL_QUEUE,
    EVAL_TASK,
    MODEL_NAMES,
    QUALITY_TASK,
    RETENTION_TASK,
    TRANSLATE_QUEUE,
    TRANSLATE_TASK,
    caption_queues,
)
from capq.settings import Settings
from capq.tiers import TierCycle

# Named, not imported: the roles' task modules import this one, and the API image must not load a worker's.
TASK_MODULES = [
    "workers.tasks",
    "evaluation.tasks",
    "workers.retention",
    "evaluation.quality_tasks",
    "translation.tasks",
]


def _per_model(prefix: str, task: str, interval_s: float) -> dict:
    return {
        f"{prefix}-{model}": {
            "task": task,
            "schedule": float(interval_s),
            "kwargs": {"model": model},
            "options": {"queue": EVAL_QUEUE},
        }
        for model in MODEL_NAMES
    }


def beat_schedule(settings: Settings) -> dict:
    """celery beat's entries: evaluation and (issue 18) reference-free quality per model; retention (issue 15)."""
    schedule = _per_model("evaluate", EVAL_TASK, settings.eval_interval_s) | _per_model(
        "quality", QUALITY_TASK, settings.quality_interval_s
    )
    schedule["alias-compare"] = {
        "task": ALIAS_COMPARE_TASK,
        "schedule": float(settings.quality_interval_s),
        "options": {"queue": EVAL_QUEUE},
    }
    if settings.retention_days:
        schedule["retention"] = {
            "task": RETENTION_TASK,
            "schedule": float(settings.retention_interval_s),
            "options": {"queue": EVAL_QUEUE},
        }
    return schedule


def create_app(settings: Settings) -> Celery:
    app = Celery("capq", broker=settings.redis_url, include=TASK_MODULES)
    app.conf.update(
        # Results live in MongoDB; a result backend would only duplicate them.
        task_ignore_result=True,
        # Ack after the work is written: a worker lost mid-shard leaves the message to be redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message in hand at a time, so the tier order decides every pick.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            # kombu builds the cycle with no arguments: this app's tier weights are bound to it here.
            "queue_order_strategy": functools.partial(TierCycle, weights=dict(settings.tier_weights)),
            # No per-message priorities: tiers are queues. One step keeps each queue a single Redis list.
            "priority_steps": [0],
            # Must exceed the longest shard, or Redis redelivers work that is still running.
            "visibility_timeout": settings.visibility_timeout_s,
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=EVAL_QUEUE,
        # Issue 18: every queue declared (as Celery would create it), so Flower lists each one with no worker online.
        task_queues=[
            Queue(q, Exchange(q), routing_key=q)
            for q in [*(q for m in MODEL_NAMES for q in caption_queues(m)), EVAL_QUEUE, TRANSLATE_QUEUE]
        ],
        task_routes={
            EVAL_TASK: {"queue": EVAL_QUEUE},
            COMPARE_TASK: {"queue": EVAL_QUEUE},
            TRANSLATE_TASK: {"queue": TRANSLATE_QUEUE},
        },
        # Events feed Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
    )
    return app
