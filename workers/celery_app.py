"""celery_app: the one Celery app; producer, workers, beat and Flower all build it from settings."""
from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from capq.names import (EVAL_QUEUE, EVAL_TASK, MODEL_NAMES, RETENTION_TASK, TRANSLATE_QUEUE, TRANSLATE_TASK,
                        caption_queues)
from capq.settings import Settings, get_settings


def _retention_schedule(settings: Settings) -> dict:
    # Kept apart from the task module, which imports `app` (this module) itself.
    if not settings.retention_days:
        return {}
    return {"retention": {"task": RETENTION_TASK, "schedule": float(settings.retention_interval_s),
                          "options": {"queue": EVAL_QUEUE}}}


def create_app(settings: Settings) -> Celery:
    app = Celery("capq", broker=settings.redis_url,
                 include=["workers.tasks", "evaluation.tasks", "workers.retention", "evaluation.quality_tasks",
                          "translation.tasks"])
    app.conf.update(
        # Results live in MongoDB; a result backend would only duplicate them.
        task_ignore_result=True,
        # Ack after the work is written: a worker lost mid-shard leaves the message to be redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message in hand at a time, so the tier order decides every pick.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "queue_order_strategy": "workers.tiers:TierCycle",
            # No per-message priorities: tiers are queues. One step keeps each queue a single Redis list.
            "priority_steps": [0],
            # Must exceed the longest shard, or Redis redelivers work that is still running.
            "visibility_timeout": settings.visibility_timeout_s,
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=EVAL_QUEUE,
        # Issue 18: every queue declared (as Celery would create it), so Flower lists each one with no worker online.
        task_queues=[Queue(q, Exchange(q), routing_key=q)
                     for q in [*(q for m in MODEL_NAMES for q in caption_queues(m)), EVAL_QUEUE, TRANSLATE_QUEUE]],
        task_routes={EVAL_TASK: {"queue": EVAL_QUEUE}, TRANSLATE_TASK: {"queue": TRANSLATE_QUEUE}},
        # Events feed Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    # The schedule module must not import this one (it is read while `app` is being built).
    from evaluation.schedule import beat_schedule

    app.conf.beat_schedule = beat_schedule(settings)
    app.conf.beat_schedule |= _retention_schedule(settings)  # issue 15
    return app


app = create_app(get_settings())
