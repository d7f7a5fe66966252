"""tasks: thin Celery tasks; all the work is in workers.pipeline."""

from __future__ import annotations

import functools
import logging
import time

from celery import shared_task

from capq import throughput
from capq.errors import InputError
from capq.logs import job_id_var
from capq.names import CAPTION_TASK, TRANSLATE_QUEUE, TRANSLATE_TASK
from capq.settings import get_settings
from capq.shard import BadShard, ShardMessage
from storage.errors import NotFound, ServiceUnreachable
from storage.jobs import JobStore
from workers import healing, metrics, pipeline, runtime
from workers.deadletters import DeadLetters

log = logging.getLogger("capq.worker")


def _dead_letter(task, args: list, error: str) -> None:
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    entry = DeadLetters(get_settings()).add(CAPTION_TASK, args, queue, error, task.request.retries)
    log.error("shard dead-lettered as %s: %s", entry, error)


def _care(task_id: str, job_id: str, shas: list[str], settings) -> pipeline.Care:
    """Issue 11: the deaths this shard's images caused, and each batch named (in Redis) as it starts."""
    holdings = healing.HOLDINGS
    if holdings is None:  # not under `capq worker` (no healing here)
        return pipeline.Care(poison_deaths=settings.poison_deaths)

    def batch_started(batch: list[str]) -> None:
        holdings.batch_started(task_id, job_id, batch)
        runtime.fault_hook(batch)

    return pipeline.Care(holdings.deaths(job_id, shas), settings.poison_deaths, batch_started)


@functools.lru_cache(maxsize=1024)
def _job_target(job_id: str) -> str | None:
    # A job's translation target is set once, at creation: cached for the life of the worker.
    return JobStore(get_settings()).get(job_id, ("translate",)).get("translate")


def after_shard(app, job_id: str, model: str, preset: str, shas: list[str]) -> None:
    """Called by a caption worker after a shard is stored: queue its translation if the job asked for one.
    Only a message is sent; the worker never waits on a provider, and a failure here never fails the shard."""
    try:
        target = _job_target(job_id)
        if target:
            app.send_task(TRANSLATE_TASK, args=[job_id, model, preset, list(shas), target], queue=TRANSLATE_QUEUE)
    except Exception as exc:  # storage or broker: the caption is stored, and readers translate on demand
        log.warning("job %s: translation not queued: %s", job_id, exc)


@shared_task(bind=True, name=CAPTION_TASK)
def caption_shard(self, *message) -> dict:
    """Caption one shard; `message` is a capq.shard.ShardMessage's args (any version this code reads)."""
    try:
        shard = ShardMessage.from_args(message)
    except BadShard as exc:
        log.error("shard message refused: %s", exc)
        _dead_letter(self, list(message), f"BadShard: {exc}")
        return {"dead": True}
    job_id, model, preset, shas, enqueued_at = shard.job_id, shard.model, shard.preset, shard.shas, shard.enqueued_at
    settings = get_settings()
    w = runtime.worker_of(self.app)  # attached by runtime.serve to the app running this task
    args = shard.to_args()
    job_id_var.set(job_id)
    if model != w.model:
        _dead_letter(self, args, f"misrouted: shard for {model} reached a {w.model} worker")
        return {"dead": True}
    if enqueued_at and not self.request.retries:
        tier = (self.request.delivery_info or {}).get("routing_key", "").rsplit(".", 1)[-1]
        metrics.QUEUE_WAIT.labels(model, tier).observe(max(0.0, time.time() - enqueued_at))
    try:
        result = pipeline.caption_shard(w, job_id, preset, shas, _care(self.request.id, job_id, shas, settings))
    except ServiceUnreachable as exc:
        # Passing fault: back off and retry; the shard is idempotent, so retrying redoes only open items.
        healing.note_outage(settings, exc)  # jobs say what they wait on; the healer clears it once it answers
        if self.request.retries >= settings.task_max_retries:
            metrics.SHARDS.labels(model, "dead").inc()
            _dead_letter(self, args, f"gave up after {self.request.retries} retries: {exc}")
            return {"dead": True}
        countdown = min(2**self.request.retries, settings.retry_backoff_max_s)
        log.warning("retrying shard in %ss: %s", countdown, exc)
        metrics.SHARDS.labels(model, "retried").inc()
        raise self.retry(exc=exc, countdown=countdown, max_retries=settings.task_max_retries) from exc
    except (NotFound, InputError) as exc:
        # Permanent: the job or preset does not exist (capq's own input errors only). Retrying cannot help. (Any
        # other error is a bug: it is
        # dead-lettered below too, but raised, so that it shows as a failed task with its traceback.)
        metrics.SHARDS.labels(model, "dead").inc()
        _dead_letter(self, args, f"{type(exc).__name__}: {exc}")
        return {"dead": True}
    except Exception as exc:
        metrics.SHARDS.labels(model, "dead").inc()
        _dead_letter(self, args, f"{type(exc).__name__}: {exc}")
        raise
    after_shard(self.app, job_id, model, preset, shas)  # Issue 14: queues the shard's translation if the job asked
    metrics.SHARDS.labels(model, "ok").inc()
    if result.wall_s:  # issue 18: the worker's live rate, for ETAs
        throughput.record(settings, model, w.worker_id, result.done + result.reused + result.failed, result.wall_s)
    metrics.IMAGES_CAPTIONED.labels(model, "model").inc(result.done)
    metrics.IMAGES_CAPTIONED.labels(model, "reused").inc(result.reused)
    usage_tier = (self.request.delivery_info or {}).get("routing_key", "").rsplit(".", 1)[-1] or "unknown"
    metrics.USAGE_IMAGES.labels(model, usage_tier).inc(result.done)
    metrics.USAGE_GPU_SECONDS.labels(model, usage_tier).inc(result.model_s)
    log.info("shard done: %s", result.as_dict())
    return result.as_dict()
